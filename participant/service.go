package participant

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/natsaga/natsaga/internal/discovery"
	"github.com/natsaga/natsaga/messages"
)

// serve adds the agent as an instance of the NATS micro service
// [messages.AgentService], its role, copy (the agent's name) and pid in the
// metadata. Its one endpoint, "stats", answers [messages.AgentStatsSubject]
// with the agent's [messages.AgentStats], with no queue group so that every
// agent answers; the same statistics are the endpoint's data in micro's
// STATS answer. No request whose reply subject is natsaga's own is
// answered (see package discovery); such requests are said at most once a
// minute. The caller stops the service.
func (a *Agent) serve() (*discovery.Service, error) {
	if err := messages.CheckToken("agent name", a.opts.Name); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	svc, err := discovery.Add(a.nc, discovery.Config{
		Name:        messages.AgentService,
		Version:     messages.ServiceVersion,
		Description: "natsaga agent of role " + a.opts.Role,
		Metadata:    a.Metadata(),
		Stats:       func() any { return a.Stats() },
		Warn:        a.warns.Warn,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	stats := func(m *nats.Msg) {
		if err := discovery.Respond(m, a.Stats()); err != nil {
			a.warns.Warn("stats not sent", "err", err)
		}
	}
	if err := svc.AddEndpoint("stats", messages.AgentStatsSubject, false, stats); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("agent: %w", err)
	}
	return svc, nil
}

// ErrOtherVersion is wrapped by the error [Agent.Run] returns when copies
// of its role that speak another wire version are running: a role must
// not be served by copies of two wire versions at once (a serial role so
// served was seen to pay twice). Stop them first.
var ErrOtherVersion = errors.New("copies of the role that speak another wire version are running")

// ErrOtherSerial is wrapped by the error [Agent.Run] returns when copies
// of its role that run serial while it does not, or the other way round
// ([Options.Serial]), are running: the copies of a role share one
// consumer, which a serial role pins to one copy at a time, and copies
// that disagree keep resetting it to their own. Start every copy of a
// role alike. A copy asks as it starts, and once more after it announces
// itself (copies started together pass each other's first check): then,
// of a pair that disagree, the one whose name sorts after the other's
// stops, its Run returning this error.
var ErrOtherSerial = errors.New("copies of the role that run serial otherwise are running")

// The version check's waits: it collects the running agents' micro INFO
// answers until versionQuiet has passed without one after the first, or
// versionWait in all. With no agent running, the server says so at once;
// with some, the first answer is awaited up to versionWait: on a loaded
// machine (the test suite under -race on two cores) it took more than
// versionQuiet, and a copy of another version went unseen.
const (
	versionQuiet = 100 * time.Millisecond
	versionWait  = time.Second
)

// checkCopies asks every running agent for its micro INFO, and returns
// an error wrapping [ErrOtherVersion] that names the copies of the agent's
// role whose service version has another major number (the wire version,
// [messages.ServiceVersion]) than this build's, if any, and otherwise one
// wrapping [ErrOtherSerial] that names those that announce another
// "serial" than this copy's. Agents of wire version 1 announced no
// service, and are not seen, nor the serial of copies that do not
// announce it; an answer that does not decode is skipped. It returns
// another error when it cannot ask.
func (a *Agent) checkCopies(ctx context.Context) error {
	copies, err := a.copies(ctx)
	if err != nil {
		return fmt.Errorf("agent: version check: %w", err)
	}
	own := major(messages.ServiceVersion)
	var others, otherSerial []string
	for _, info := range copies {
		switch {
		case major(info.Version) != own:
			others = append(others, fmt.Sprintf("%s (pid %s, version %s)",
				messages.Clip(info.Metadata["copy"]), messages.Clip(info.Metadata["pid"]), messages.Clip(info.Version)))
		case a.otherSerial(info):
			otherSerial = append(otherSerial, describeSerial(info))
		}
	}
	switch {
	case len(others) > 0:
		return fmt.Errorf("agent %s: %w: role %s, this copy speaks %s, and %s do not; stop them before starting copies of this version",
			a.opts.Name, ErrOtherVersion, a.opts.Role, messages.ServiceVersion, strings.Join(others, ", "))
	case len(otherSerial) > 0:
		return fmt.Errorf("agent %s: %w: role %s, this copy runs with serial %t, and %s; start every copy of a role alike",
			a.opts.Name, ErrOtherSerial, a.opts.Role, a.opts.Serial, strings.Join(otherSerial, ", "))
	}
	return nil
}

// copies asks every running agent for its micro INFO and returns the
// answers of the copies of the agent's role, this one's left out: those
// that come until versionQuiet has passed without one, or versionWait in
// all. An answer that does not decode is skipped.
func (a *Agent) copies(ctx context.Context) ([]micro.Info, error) {
	subject, err := micro.ControlSubject(micro.InfoVerb, messages.AgentService, "")
	if err != nil {
		return nil, err
	}
	inbox := a.nc.NewInbox()
	sub, err := a.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := a.nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, err
	}
	end := time.Now().Add(versionWait)
	var copies []micro.Info
	for first := true; ; first = false {
		until := time.Now().Add(versionQuiet)
		if first || until.After(end) {
			until = end
		}
		wctx, cancel := context.WithDeadline(ctx, until)
		m, err := sub.NextMsgWithContext(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return copies, nil // quiet, or the wait has passed
		}
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			return copies, nil // no agent runs: the server's no-responders status
		}
		var info micro.Info
		if messages.Decode(m.Data, &info) != nil || info.Type != micro.InfoResponseType || info.Name != messages.AgentService {
			continue
		}
		if info.Metadata["role"] == a.opts.Role && info.Metadata["copy"] != a.opts.Name {
			copies = append(copies, info)
		}
	}
}

// otherSerial reports whether info, a copy of the role, announces another
// serial than this copy's; one that announces none is not counted.
func (a *Agent) otherSerial(info micro.Info) bool {
	s, said := info.Metadata["serial"]
	return said && s != strconv.FormatBool(a.opts.Serial)
}

// describeSerial names a copy and the serial it announces, for an error.
func describeSerial(info micro.Info) string {
	return fmt.Sprintf("%s (pid %s, serial %s)", messages.Clip(info.Metadata["copy"]), messages.Clip(info.Metadata["pid"]),
		messages.Clip(info.Metadata["serial"]))
}

// copiesRecheck is how long after it announces itself a copy asks its
// role's copies again whether they run serial as it does.
var copiesRecheck = time.Second

// recheckCopies asks, copiesRecheck after the agent announced itself,
// whether copies of its role that run serial otherwise are running: two
// copies started at once pass each other's first check. Of a pair that
// disagree, the one whose name sorts after the other's stops, its serving
// ended with an error wrapping [ErrOtherSerial]; so every copy that runs
// on agrees with every other. It asks once.
func (a *Agent) recheckCopies(ctx context.Context, stop context.CancelCauseFunc) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(copiesRecheck):
	}
	copies, err := a.copies(ctx)
	if err != nil {
		return // stopping, or the server is away: the first check stands
	}
	var before []string
	for _, info := range copies {
		if a.otherSerial(info) && info.Metadata["copy"] < a.opts.Name {
			before = append(before, describeSerial(info))
		}
	}
	if len(before) == 0 {
		a.log.Debug("the role's copies run serial alike")
		return
	}
	err = fmt.Errorf("agent %s: %w: role %s, this copy runs with serial %t, and %s, which started with it and sort before it; "+
		"start every copy of a role alike", a.opts.Name, ErrOtherSerial, a.opts.Role, a.opts.Serial, strings.Join(before, ", "))
	a.log.Error("stopping", "err", err)
	stop(err)
}

// major returns the major number of a service version: what comes before
// its first dot.
func major(version string) string {
	m, _, _ := strings.Cut(version, ".")
	return m
}

// ownMetadata are the keys of the micro service's metadata the agent sets
// itself.
var ownMetadata = []string{"role", "copy", "pid", "serial"}

// Metadata is what the agent announces in its micro service's metadata:
// "role", "copy" (its name), "pid" and "serial" ("true" or "false",
// [Options.Serial]), and [Options.Metadata].
func (a *Agent) Metadata() map[string]string {
	md := maps.Clone(a.opts.Metadata)
	if md == nil {
		md = make(map[string]string, len(ownMetadata))
	}
	md["role"], md["copy"], md["pid"] = a.opts.Role, a.opts.Name, strconv.Itoa(os.Getpid())
	md["serial"] = strconv.FormatBool(a.opts.Serial)
	return md
}

// ErrStatsAnswer is wrapped by [CollectStats] for an answer it cannot read.
var ErrStatsAnswer = errors.New("bad agent stats answer")

// DefaultStatsMax is how long [CollectStats] collects answers when
// [StatsWait.Max] is 0.
const DefaultStatsMax = 2 * time.Second

// StatsWait says how long [CollectStats] collects answers. The zero value
// collects every answer that comes within [DefaultStatsMax].
type StatsWait struct {
	// Want is how many agents are known to run; 0 means no number is
	// known, and answers are collected for Max.
	Want int
	// Grace is how long answers are still collected once Want agents have
	// answered, for agents that joined since: every running agent answers
	// the one request at once, so the late ones come soon after. 0 stops
	// at the Want-th answer.
	Grace time.Duration
	// Max bounds the whole wait, whether or not Want agents answer. 0
	// means DefaultStatsMax.
	Max time.Duration
}

// CollectStats asks every running agent for its statistics through NATS
// micro (a STATS request to [messages.AgentService]), and collects the
// answers as w says: until w.Want agents have answered and w.Grace has
// passed since, or w.Max has passed, whichever is first. Each agent
// counts once. It returns an error wrapping [messages.ErrBadRequest] for
// a negative field of w, and an error when it cannot ask or ctx ends; a
// malformed answer is skipped and reported through skipped, when not nil.
func CollectStats(ctx context.Context, nc *nats.Conn, w StatsWait, skipped func(error)) ([]messages.AgentStats, error) {
	if w.Want < 0 || w.Grace < 0 || w.Max < 0 {
		return nil, fmt.Errorf("agent stats: negative want, grace or max: %w", messages.ErrBadRequest)
	}
	if w.Max == 0 {
		w.Max = DefaultStatsMax
	}
	subject, err := micro.ControlSubject(micro.StatsVerb, messages.AgentService, "")
	if err != nil {
		return nil, fmt.Errorf("agent stats: %w", err)
	}
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("agent stats: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, fmt.Errorf("agent stats: %w", err)
	}
	end := time.Now().Add(w.Max)
	seen := map[string]bool{}
	var stats []messages.AgentStats
	for {
		wctx, cancel := context.WithDeadline(ctx, end)
		m, err := sub.NextMsgWithContext(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return stats, fmt.Errorf("agent stats: %w", ctx.Err())
			}
			return stats, nil // the wait has passed
		}
		s, err := decodeStats(m.Data)
		if err != nil {
			if skipped != nil {
				skipped(err)
			}
			continue
		}
		if seen[s.Agent] {
			continue
		}
		seen[s.Agent] = true
		stats = append(stats, s)
		if w.Want > 0 && len(stats) == w.Want {
			if w.Grace == 0 {
				return stats, nil
			}
			if grace := time.Now().Add(w.Grace); grace.Before(end) {
				end = grace
			}
		}
	}
}

// decodeStats reads an agent's statistics from its micro STATS answer: the
// data of its "stats" endpoint.
func decodeStats(data []byte) (messages.AgentStats, error) {
	var ms micro.Stats
	if err := messages.Decode(data, &ms); err != nil {
		return messages.AgentStats{}, fmt.Errorf("%w: %w", ErrStatsAnswer, err)
	}
	if ms.Type != micro.StatsResponseType || ms.Name != messages.AgentService {
		return messages.AgentStats{}, fmt.Errorf("%w: type %q from %q", ErrStatsAnswer, ms.Type, ms.Name)
	}
	for _, e := range ms.Endpoints {
		if e == nil || e.Name != "stats" {
			continue
		}
		var s messages.AgentStats
		if err := messages.Decode(e.Data, &s); err != nil {
			return s, fmt.Errorf("%w: %w", ErrStatsAnswer, err)
		}
		if s.Agent == "" {
			return s, fmt.Errorf("%w: no agent name", ErrStatsAnswer)
		}
		return s, nil
	}
	return messages.AgentStats{}, fmt.Errorf("%w: no stats endpoint from %s", ErrStatsAnswer, ms.ID)
}

// ErrNotServing is wrapped by [Agent.Health] while the agent does not
// serve.
var ErrNotServing = errors.New("agent not serving")

// Health returns nil while Run pulls commands: its store, consumer and
// micro service are set up, and its consumer pulls. Otherwise it returns
// an error wrapping [ErrNotServing]: before the set-up, and while the
// consumer cannot be opened again after it was lost (JetStream gone from
// the server, a cluster without a quorum, the command stream deleted),
// naming why. It is safe for concurrent use.
func (a *Agent) Health() error {
	if !a.serving.Load() {
		return fmt.Errorf("%w: %s", ErrNotServing, a.opts.Name)
	}
	if err := a.pulling.Load(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrNotServing, a.opts.Name, *err)
	}
	return nil
}
