package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/natsaga/natsaga/messages"
)

// eventsOptions are the flags of "natsaga events".
type eventsOptions struct {
	saga, status string
	all, follow  bool
	n            int
}

func (o *eventsOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.saga, "saga", "", "only sagas of this type")
	fs.StringVar(&o.status, "status", "", "only this status (in_progress, compensating, completed, rolled_back, timed_out, failed)")
	fs.IntVar(&o.n, "n", 0, "print the latest N events kept, then stop (unless -f)")
	fs.BoolVar(&o.all, "all", false, "print every event kept, oldest first, then stop (unless -f)")
	fs.BoolVar(&o.follow, "f", false, "after -n or -all, go on printing new events until interrupted")
}

func (o *eventsOptions) validate(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments %v", args)
	}
	for what, v := range map[string]string{"saga": o.saga, "status": o.status} {
		if v != "" {
			if err := messages.CheckToken(what, v); err != nil {
				return err
			}
		}
	}
	if o.n < 0 {
		return errors.New("-n must not be negative")
	}
	if o.n > 0 && o.all {
		return errors.New("-n and -all: choose one")
	}
	return nil
}

// streamEvents prints the saga events of the event stream that o selects,
// as a table or, with asJSON, one JSON object a line: the latest o.n kept,
// every one kept (o.all), or new ones; it stops once those kept are
// printed unless o.follow is set or neither o.n nor o.all is, and at the
// end of ctx.
func streamEvents(ctx context.Context, nc *nats.Conn, o eventsOptions, asJSON bool, stdout io.Writer) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	sagaTok, statusTok := "*", "*"
	if o.saga != "" {
		sagaTok = o.saga
	}
	if o.status != "" {
		statusTok = o.status
	}
	filter := messages.EventSubject(sagaTok, statusTok)
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverNewPolicy}
	// kept is how many kept events to print before the new ones: those
	// the stream holds now, or the latest o.n of them.
	kept, skip := 0, 0
	if o.all || o.n > 0 {
		stream, err := js.Stream(ctx, messages.EventStream)
		if err != nil {
			return fmt.Errorf("events: %w", err)
		}
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter(filter))
		if err != nil {
			return fmt.Errorf("events: %w", err)
		}
		for _, n := range info.State.Subjects {
			kept += int(n)
		}
		if o.n > 0 && kept > o.n {
			skip, kept = kept-o.n, o.n
		}
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
		if sagaTok == "*" && statusTok == "*" && skip > 0 {
			// Unfiltered, the stream's sequence numbers are contiguous:
			// start at the first event wanted.
			cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
			cfg.OptStartSeq = info.State.LastSeq - uint64(kept) + 1
			skip = 0
		}
		if kept == 0 && !o.follow {
			return nil
		}
	}
	cons, err := js.OrderedConsumer(ctx, messages.EventStream, cfg)
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	follow := o.follow || (!o.all && o.n == 0)
	if !asJSON {
		fmt.Fprintf(stdout, "%-6s  %-36s  %-10s  %-13s  %s\n", "TICK", "SAGA_ID", "TYPE", "STATUS", "REASON")
	}
	for printed := 0; follow || printed < kept; {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("events: %w", err)
		}
		if skip > 0 {
			skip--
			continue
		}
		printed++
		if asJSON {
			fmt.Fprintln(stdout, string(m.Data()))
			continue
		}
		var ev messages.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			fmt.Fprintf(stdout, "%-6s  %s\n", "?", m.Data())
			continue
		}
		fmt.Fprintf(stdout, "%-6d  %-36s  %-10s  %-13s  %s\n", ev.Tick, ev.SagaID, ev.Saga, ev.Status, clip(ev.Reason, 100))
	}
	return nil
}

// servicesWait is how long "natsaga services" gathers answers.
const servicesWait = time.Second

// listServices prints the natsaga micro services that answer an INFO
// request within servicesWait.
func listServices(ctx context.Context, nc *nats.Conn, o *options, stdout, _ io.Writer) error {
	var infos []micro.Info
	for _, name := range []string{messages.CoordinatorService, messages.AgentService} {
		subj, err := micro.ControlSubject(micro.InfoVerb, name, "")
		if err != nil {
			return err
		}
		inbox := nc.NewInbox()
		sub, err := nc.SubscribeSync(inbox)
		if err != nil {
			return err
		}
		if err := nc.PublishRequest(subj, inbox, nil); err != nil {
			_ = sub.Unsubscribe()
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, servicesWait)
		for {
			m, err := sub.NextMsgWithContext(wctx)
			if err != nil {
				break
			}
			var info micro.Info
			if json.Unmarshal(m.Data, &info) == nil && info.Name == name {
				infos = append(infos, info)
			}
		}
		cancel()
		_ = sub.Unsubscribe()
	}
	if o.json {
		out, _ := json.MarshalIndent(infos, "", "  ")
		fmt.Fprintln(stdout, string(out))
		return nil
	}
	t := table(stdout)
	fmt.Fprintln(t, "SERVICE\tID\tVERSION\tROLE/STATE\tCOPY\tENDPOINTS")
	for _, in := range infos {
		var eps []string
		for _, e := range in.Endpoints {
			eps = append(eps, e.Name)
		}
		role := in.Metadata["role"] // an agent's
		if role == "" {
			role = in.Metadata["state"] // a coordinator's: active or standby
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\n", in.Name, in.ID, in.Version, orDash(role), orDash(in.Metadata["copy"]), fmt.Sprint(eps))
	}
	_ = t.Flush()
	fmt.Fprintf(stdout, "%d services\n", len(infos))
	return nil
}
