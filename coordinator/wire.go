package coordinator

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// Command batches on the wire (wire version 2, messages/batch.go).
//
// The commands a commit sends for one step of many sagas may travel as one
// message on the step's subject. Only a role whose consumer says it reads
// batches gets them (the consumer's metadata, messages.WireMetadata): the
// coordinator lists the command stream's consumers when a term begins and
// every wireRefresh after, and sends every other role one message per
// command. A serial role's commands keep the order the engine released
// them in, which a simulation's rank order depends on: a command joins the
// role's last batch only when it is for the same step and action;
// otherwise it begins the role's next batch. Another role's copies apply
// their commands side by side, in no order: its commands keep their order
// within each step, and a command joins the last batch of its step and
// action, whatever came between. A command alone, and
// every command while tracing (each carries its span's context in its own
// headers), goes out as a version-1 command.

// wireRefresh spaces the coordinator's reads of the roles' wire versions.
const wireRefresh = 250 * time.Millisecond

// batchReader is what the coordinator knows of a consumer of the command
// stream that reads batches.
type batchReader struct {
	// serial is set for a consumer pinned to one copy at a time (a
	// serial role): it applies its commands in stream order, which must
	// then be rank order across all its steps.
	serial bool
}

// learnWire reads which consumers of the command stream read batches,
// within wireRefresh: a coordinator not allowed to list them (its NATS
// user's permissions) is not held up, and sends single commands.
//
// It returns the filter subjects of every consumer, by name, and the
// names of those that read batches when last seen and no longer do: their
// role's agents were replaced by agents of wire version 1, which drop a
// batch (see resendAlone).
func (c *Coordinator) learnWire(ctx context.Context) (filters map[string][]string, stopped []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, wireRefresh)
	defer cancel()
	batches := map[string]batchReader{}
	filters = map[string][]string{}
	list := c.commands.ListConsumers(ctx)
	for info := range list.Info() {
		if v, err := strconv.Atoi(info.Config.Metadata[messages.WireMetadata]); err == nil && v >= messages.BatchVersion {
			batches[info.Name] = batchReader{serial: info.Config.PriorityPolicy == jetstream.PriorityPolicyPinned}
		}
		filters[info.Name] = info.Config.FilterSubjects
		if f := info.Config.FilterSubject; f != "" {
			filters[info.Name] = append(filters[info.Name], f)
		}
	}
	if err := list.Err(); err != nil {
		return nil, nil, fmt.Errorf("command stream consumers: %w", err)
	}
	c.batchConsumers.Store(&batches)
	c.wireMu.Lock()
	defer c.wireMu.Unlock()
	if c.readBatches == nil {
		c.readBatches = map[string]bool{}
	}
	// A consumer not listed (deleted, to be made again) keeps what it was.
	for name := range filters {
		_, reads := batches[name]
		if c.readBatches[name] && !reads {
			stopped = append(stopped, name)
		}
		c.readBatches[name] = reads
	}
	slices.Sort(stopped)
	return filters, stopped, nil
}

// resendAlone sends again, each alone, the commands in flight to the roles
// of consumers, which read batches no longer. The batches sent to such a
// role before, and in the wireRefresh before its agents changed were
// seen, reach its new agents, which speak wire version 1 and drop them
// (docs/protocol.md, "Command checks"): without it, those commands would
// wait for ever. Agents absorb the duplicates of those that were not lost.
func (c *Coordinator) resendAlone(ctx context.Context, consumers []string) {
	c.log.Warn("role no longer reads command batches: sending its commands in flight again, each alone", "consumers", consumers)
	c.enqueue(ctx, func(_ time.Time, out *saga.Outbox) func(error) {
		for _, cmd := range c.engine.Outstanding() {
			if slices.Contains(consumers, messages.CommandConsumer(c.engine.StepRole(cmd.SagaID, cmd.Step))) {
				out.Commands = append(out.Commands, cmd)
			}
		}
		return nil
	})
}

// followWire calls learnWire every wireRefresh until ctx ends, and checks
// that the roles' consumers take their steps' commands. A failed read
// keeps what was learnt before.
func (c *Coordinator) followWire(ctx context.Context) {
	t := time.NewTicker(wireRefresh)
	defer t.Stop()
	unserved := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			filters, stopped, err := c.learnWire(ctx)
			if err != nil {
				if ctx.Err() == nil {
					c.log.Debug("wire versions of the roles not read", "err", err)
				}
				continue
			}
			if len(stopped) > 0 {
				c.resendAlone(ctx, stopped)
			}
			c.checkServed(filters, unserved)
		}
	}
}

// batchLimit is the most commands the coordinator puts in one message to
// role: 1 for a role that reads no batches, and while tracing. ordered
// says whether the role's commands must keep their order across its
// steps: false only for a role that reads batches and is not serial.
func (c *Coordinator) batchLimit(role string) (limit int, ordered bool) {
	if c.opts.CommandBatch == 1 || c.tracing() {
		return 1, true
	}
	m := c.batchConsumers.Load()
	if m == nil {
		return 1, true
	}
	r, ok := (*m)[messages.CommandConsumer(role)]
	if !ok {
		return 1, true
	}
	return c.opts.CommandBatch, r.serial
}

// A wireCommand is a command to send, encoded.
type wireCommand struct {
	cmd  *messages.Command
	data []byte
	// role is the role that serves it, and limit the most commands a
	// message to that role may hold. ordered is set when the role's
	// commands must keep their order across its steps.
	role    string
	limit   int
	ordered bool
}

// groupCommands splits cmds into the messages that carry them, in the
// order to publish them: each group is one message, a batch when it holds
// more than one. A group holds commands of one role for one subject and
// action, at most the role's limit of them and maxBytes of them encoded
// (one command larger than that is a group alone). An ordered role's
// commands keep their order across its groups: a command joins the role's
// last group or begins the next. Another role's keep theirs within each
// subject only: a command joins the last group of its role and subject,
// whatever came between.
func groupCommands(cmds []wireCommand, maxBytes int) [][]wireCommand {
	var groups [][]wireCommand
	type open struct{ group, bytes int }
	// The open group of each role, or of each role and subject for a
	// role that is not ordered.
	type key struct {
		role, saga, step string
		action           messages.Action
	}
	last := map[key]open{}
	for _, w := range cmds {
		k := key{role: w.role}
		if !w.ordered {
			k.saga, k.step, k.action = w.cmd.Saga, w.cmd.Step, w.cmd.Action
		}
		if o, ok := last[k]; ok {
			g := groups[o.group]
			head := g[0].cmd
			if len(g) < w.limit && o.bytes+len(w.data)+1 <= maxBytes &&
				head.Saga == w.cmd.Saga && head.Step == w.cmd.Step && head.Action == w.cmd.Action {
				groups[o.group] = append(g, w)
				last[k] = open{o.group, o.bytes + len(w.data) + 1}
				continue
			}
		}
		groups = append(groups, []wireCommand{w})
		last[k] = open{len(groups) - 1, batchOverhead + len(w.data)}
	}
	return groups
}

// batchOverhead is the bytes of a batch's envelope, around its commands.
const batchOverhead = len(`{"v":2,"commands":[]}`)
