package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// MaxCommandSubjects bounds the subjects of the command stream: two for
// each step (its execute and compensate subjects) of every definition and
// version the coordinator runs, given at start, registered or stored, with
// those the stream holds already. A registration that would take the
// stream past it is refused, and so are definitions given at start; a
// stored definition that would is skipped as the coordinator recovers.
//
// The server checks a stream's subjects against one another each time the
// stream is created or updated, in a time that grows with about the
// square of their number, and the coordinator waits for it: its loop, for
// the update a registration needs; a term's set-up, for the creation.
// BenchmarkCommandStreamUpdate measures it on an embedded nats-server
// v2.15.2 with file storage, every subject of the longest (145 bytes).
// On the 2-core AMD EPYC VM of BENCHMARKS.md, 2026-12-04, in three runs
// (one of them under the race detector, as the tests run), an update
// that adds two subjects to a stream of N took:
//
//	N = 256:    0.02 s
//	N = 512:    0.07 to 0.24 s
//	N = 1,024:  0.28 to 0.48 s
//	N = 2,048:  1.2 to 2.8 s
//	N = 4,096:  4.3 to 11 s
//
// and the creation of a stream that exists as asked a half to a fifth of
// that. A registration of 4,000 subjects beside 18 took the server
// 15.6 s, past every timeout, and stopped the coordinator. At
// 1,024 an update stays under half a second, twice that in the machine's
// slow hours, well inside registerTimeout; and at 145 bytes a subject the
// configuration stays under 160 KB, inside the server's default payload
// limit (1 MiB).
const MaxCommandSubjects = 1024

// ErrTooManyCommandSubjects is wrapped, with [saga.ErrInvalidDefinition],
// by the error of definitions that would take the command stream past
// [MaxCommandSubjects] subjects, or its configuration past the server's
// payload limit. [Coordinator.Run] returns it when the definitions it is
// started with do, beside the subjects the stream holds.
var ErrTooManyCommandSubjects = errors.New("too many command subjects")

// configRoom is what a request to create or update the command stream
// takes beside its subjects.
const configRoom = 4 << 10

// commandSubjects is a list of command subjects, each once, in the order
// added.
type commandSubjects struct {
	list []string
	has  map[string]bool
	// bytes is the list's length as JSON: quotes and commas included.
	bytes int
}

func newCommandSubjects(subs ...string) *commandSubjects {
	s := &commandSubjects{has: map[string]bool{}}
	s.add(subs...)
	return s
}

func (s *commandSubjects) add(subs ...string) {
	for _, sub := range subs {
		if !s.has[sub] {
			s.has[sub] = true
			s.list = append(s.list, sub)
			s.bytes += len(sub) + 3
		}
	}
}

// lacking returns the command subjects of d's steps that s lacks.
func (s *commandSubjects) lacking(d *saga.Definition) []string {
	var out []string
	for _, st := range d.Steps {
		for _, sub := range messages.StepCommandSubjects(d.Subject, st.Name) {
			if !s.has[sub] && !slices.Contains(out, sub) {
				out = append(out, sub)
			}
		}
	}
	return out
}

// checkWith returns an error wrapping [ErrTooManyCommandSubjects] and
// [saga.ErrInvalidDefinition] when s with more would hold more than
// [MaxCommandSubjects] subjects, or more than maxBytes of them as JSON
// (0: no bound).
func (s *commandSubjects) checkWith(more []string, maxBytes int) error {
	n, bytes := len(s.list), s.bytes
	for _, sub := range more {
		if !s.has[sub] {
			n, bytes = n+1, bytes+len(sub)+3
		}
	}
	switch {
	case n > MaxCommandSubjects:
		return fmt.Errorf("the command stream would take %d subjects, more than its limit of %d "+
			"(two for each step of each saga definition and version, coordinator.MaxCommandSubjects): %w: %w",
			n, MaxCommandSubjects, ErrTooManyCommandSubjects, saga.ErrInvalidDefinition)
	case maxBytes > 0 && bytes > maxBytes:
		return fmt.Errorf("the command stream's %d subjects would take %d bytes, more than its limit of %d "+
			"(the server's payload limit, less %d bytes for the rest of its configuration): %w: %w",
			n, bytes, maxBytes, configRoom, ErrTooManyCommandSubjects, saga.ErrInvalidDefinition)
	}
	return nil
}

// checkCommandSubjects returns the error of [commandSubjects.checkWith]
// for defs alone, as given at start: their count only, since the
// server's payload limit is not known yet. It counts every definition's
// subjects, so that the error says how many they are.
func checkCommandSubjects(defs []saga.Definition) error {
	s := newCommandSubjects()
	for i := range defs {
		s.add(s.lacking(&defs[i])...)
	}
	return s.checkWith(nil, 0)
}

// maxSubjectBytes bounds the command stream's subjects, as JSON, to what
// the server takes in a request with the rest of the configuration.
func (c *Coordinator) maxSubjectBytes() int {
	return max(int(c.nc.MaxPayload())-configRoom, configRoom)
}

// commandSubjects returns the command stream, nil when there is none,
// the subjects it holds (but the one the server gives a stream created
// with none, its name: not a command subject), and those with the
// subjects of every step of every version the engine knows.
func (c *Coordinator) commandSubjects(ctx context.Context) (jetstream.Stream, []string, *commandSubjects, error) {
	s, err := c.js.Stream(ctx, messages.CommandStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = nil, nil
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("stream %s: %w", messages.CommandStream, err)
	}
	var held []string
	if s != nil {
		held = slices.DeleteFunc(slices.Clone(s.CachedInfo().Config.Subjects), func(sub string) bool { return sub == messages.CommandStream })
	}
	subs := newCommandSubjects(held...)
	for _, d := range c.engine.Versions() {
		subs.add(subs.lacking(d)...)
	}
	return s, held, subs, nil
}

// ensureCommandStream creates the command stream, or adds to its subjects
// those of every step of every version the engine knows, and of more,
// that it lacks; it never removes one. A standby started with fewer
// definitions, or before it has read the versions registered at run time,
// would otherwise take from the active coordinator the subjects of steps
// it still sends commands for. A command for a step of no definition is
// refused at publish, not kept for an agent that will never come.
//
// A stream that has every subject already, as asked otherwise, is left
// alone without a request. One that would take more than
// [MaxCommandSubjects] subjects, or more bytes of them than the server's
// payload limit allows, is not changed: the error wraps
// [ErrTooManyCommandSubjects]. A stream that holds more already, from a
// coordinator before the limit, keeps them while nothing is added.
func (c *Coordinator) ensureCommandStream(ctx context.Context, more ...saga.Definition) (jetstream.Stream, error) {
	s, held, subs, err := c.commandSubjects(ctx)
	if err != nil {
		return nil, err
	}
	for i := range more {
		subs.add(subs.lacking(&more[i])...)
	}
	if len(subs.list) > len(held) {
		if err := subs.checkWith(nil, c.maxSubjectBytes()); err != nil {
			return nil, err
		}
	}
	cfg := jetstream.StreamConfig{Name: messages.CommandStream, Subjects: subs.list, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Replicas: max(c.opts.Replicas, 1), Duplicates: 2 * time.Minute}
	if s != nil && asAsked(s.CachedInfo().Config, cfg) {
		return s, nil
	}
	s, err = c.ensureStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", messages.CommandStream, err)
	}
	return s, nil
}

// asAsked reports whether has, the command stream's configuration, is
// want's: the same subjects in the same order (or, want giving none, the
// one the server gives), and the same retention, storage, replicas and
// duplicate window.
func asAsked(has, want jetstream.StreamConfig) bool {
	subjects := slices.Equal(has.Subjects, want.Subjects) ||
		len(want.Subjects) == 0 && slices.Equal(has.Subjects, []string{messages.CommandStream})
	return subjects && has.Retention == want.Retention && has.Storage == want.Storage &&
		has.Replicas == want.Replicas && has.Duplicates == want.Duplicates
}
