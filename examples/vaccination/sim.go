package vaccination

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// StockSubject is the model's documented query: a request on it is
// answered by a depot agent with the [Stock], so that a driver checks the
// stock without reading the depot's store.
const StockSubject = "vaccination.depot.stock"

// Scenario is a campaign: who books at which tick, and when doses come.
type Scenario struct {
	Seed     uint64
	Patients int
	Ticks    int
	// Stock is the depot's opening stock.
	Stock int64
	// FeverPercent of the patients are turned away by the clinic.
	FeverPercent int
	// RestockEvery ticks, a restock of RestockDoses doses.
	RestockEvery int
	RestockDoses int64
}

// DefaultScenario is the campaign cmd/vaxsim runs without flags: more
// patients than doses, so the stock runs out and the order of contested
// reservations matters.
func DefaultScenario() Scenario {
	return Scenario{Seed: 1, Patients: 120, Ticks: 8, Stock: 40, FeverPercent: 15, RestockEvery: 3, RestockDoses: 20}
}

// starts returns the sagas the scenario starts at tick t (1-based), each
// scheduled for base+t, in the driver's start order.
func (sc Scenario) starts(t int, base int64, rank *int64) []client.Start {
	r := rand.New(rand.NewPCG(sc.Seed, uint64(t)))
	var out []client.Start
	add := func(sagaType string, ctx messages.Context) {
		*rank++
		out = append(out, client.Start{Saga: sagaType, ID: fmt.Sprintf("vax-%d-%d-%d", sc.Seed, base, *rank),
			Rank: *rank, Tick: base + int64(t), Context: ctx})
	}
	if sc.RestockEvery > 0 && t%sc.RestockEvery == 0 {
		add(Restock, messages.Context{}.MustSet(KeyDoses, sc.RestockDoses))
	}
	for p := range sc.Patients {
		// Each patient books at one tick of the campaign.
		if p%sc.Ticks != t-1 {
			continue
		}
		id := fmt.Sprintf("p-%04d", p)
		add(Vaccinate, messages.Context{}.MustSet(KeyPatient, id).MustSet(KeyFever, r.IntN(100) < sc.FeverPercent))
	}
	return out
}

// Report is what a run ended with.
type Report struct {
	// Counts are the sagas by status, and Digest the SHA-256 of the
	// run's outcome log, which two runs of one scenario share.
	Counts map[saga.Status]int
	Digest string
	Log    []byte
	// Vaccinated counts the vaccinations completed; TurnedAway, those the
	// clinic refused, whose dose went back to the stock.
	Vaccinated, TurnedAway int
	Stock                  Stock
}

// ErrInvariant is returned when the stock does not add up.
var ErrInvariant = errors.New("stock invariant broken")

// Simulate drives sc through c: it starts each tick's sagas ranked and
// scheduled for the tick, advances the clock with the quiet rule, lets the
// sagas still running end, and checks the stock against the outcomes. It
// returns an error wrapping [client.ErrNotQuiet] when an agent broke its
// word, and [ErrInvariant] when the stock does not add up.
func Simulate(ctx context.Context, c *client.Client, sc Scenario, q client.Quiet) (*Report, error) {
	base, err := c.WaitQuiet(ctx, q)
	if err != nil {
		return nil, err
	}
	// The stock as this campaign finds it: an earlier campaign on the
	// same server may have moved it.
	var before Stock
	for {
		before, err = stock(ctx, c)
		if !errors.Is(err, nats.ErrNoResponders) {
			break
		}
		// The depot's process is still starting.
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err != nil {
		return nil, err
	}
	var rank int64
	var ids []string
	for t := 1; t <= sc.Ticks; t++ {
		starts := sc.starts(t, base.Tick, &rank)
		_, errs := c.StartMany(ctx, starts, 0)
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		for _, s := range starts {
			ids = append(ids, s.ID)
		}
		if _, err := c.Advance(ctx, base.Tick+int64(t), q); err != nil {
			return nil, err
		}
	}
	for t := sc.Ticks + 1; ; t++ {
		sum, err := c.Summary(ctx)
		if err != nil {
			return nil, err
		}
		if sum.Active == 0 {
			break
		}
		if t > sc.Ticks+20 {
			return nil, fmt.Errorf("%d sagas still active 20 ticks after the campaign", sum.Active)
		}
		if _, err := c.Advance(ctx, base.Tick+int64(t), q); err != nil {
			return nil, err
		}
	}
	return report(ctx, c, sc, ids, before)
}

// report collects the outcomes of ids and checks the stock against them:
// what it received and dispensed since before.
func report(ctx context.Context, c *client.Client, sc Scenario, ids []string, before Stock) (*Report, error) {
	rep := &Report{Counts: map[saga.Status]int{}}
	var xs []saga.Execution
	var received int64
	for _, id := range ids {
		x, err := c.Status(ctx, id)
		if err != nil {
			return nil, err
		}
		xs = append(xs, x)
		rep.Counts[x.Status]++
		switch {
		case x.Saga == Vaccinate && x.Status == saga.Completed:
			rep.Vaccinated++
		case x.Saga == Vaccinate && len(x.Completed) == 2 && x.Status == saga.RolledBack:
			rep.TurnedAway++
		case x.Saga == Restock && x.Status == saga.Completed:
			received += sc.RestockDoses
		}
	}
	log, digest, err := saga.OutcomeLog(xs)
	if err != nil {
		return nil, err
	}
	rep.Log, rep.Digest = log, digest
	if rep.Stock, err = stock(ctx, c); err != nil {
		return nil, err
	}
	s := rep.Stock
	if s.Doses < 0 || s.Doses != s.Initial+s.Received-s.Dispensed ||
		s.Dispensed-before.Dispensed != int64(rep.Vaccinated) || s.Received-before.Received != received {
		return rep, fmt.Errorf("%+v (before the campaign %+v), %d vaccinated, %d received: %w", s, before, rep.Vaccinated, received, ErrInvariant)
	}
	return rep, nil
}

// stock asks the depot for its stock ([StockSubject]); a depot that has not
// stored one yet has none: the zero Stock.
func stock(ctx context.Context, c *client.Client) (Stock, error) {
	var resp struct {
		Stock *Stock `json:"stock"`
	}
	if err := c.Query(ctx, StockSubject, struct{}{}, &resp); err != nil {
		return Stock{}, err
	}
	if resp.Stock == nil {
		return Stock{}, nil
	}
	return *resp.Stock, nil
}

// quietFor is the default Quiet of a run: it sends the tick again every
// second while it waits, as docs/simulation.md asks, so that an agent
// started again meanwhile learns the time.
var quietFor = client.Quiet{Limit: time.Minute, Retick: time.Second}
