package coordinator

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/saga"
)

// SetReadHook makes c call hook in each of its reads of the bucket that
// answer requests, with the read's context, before it reads: a test holds
// reads in flight with it. Call it before Run.
func SetReadHook(c *Coordinator, hook func(ctx context.Context)) { c.reads.hook = hook }

// MaxFinishedLists is how many lists of finished sagas are read at once.
const MaxFinishedLists = maxFinishedLists

// LearnWire makes c read the roles' wire versions now, rather than at its
// next refresh.
func LearnWire(ctx context.Context, c *Coordinator) error {
	_, _, err := c.learnWire(ctx)
	return err
}

// BatchLimit is the most commands c puts in one message to role, and
// whether the role's commands keep their order across its steps.
func BatchLimit(c *Coordinator, role string) (int, bool) { return c.batchLimit(role) }

// SetCompactFloor sets the bytes the saga log may hold beyond twice the
// active sagas' before it is compacted, and returns a function that sets
// it back. Call it before any coordinator runs.
func SetCompactFloor(n int64) (restore func()) {
	old := compactFloor
	compactFloor = n
	return func() { compactFloor = old }
}

// Respond answers m with v as c answers every request.
func Respond(c *Coordinator, m *nats.Msg, v any) { c.respond(m, v) }

// SetAfterAcquire makes c call hook each time a term of Run has taken
// the lease, before it renews it or does anything else: a test holds the
// coordinator there, as a process that stood still would be. Call it
// before Run.
func SetAfterAcquire(c *Coordinator, hook func()) { c.afterAcquire = hook }

// SetBeforeCommit makes c call hook as each batch's commit begins, with
// the batch's outbox: a test holds the commit there. Call it before Run.
func SetBeforeCommit(c *Coordinator, hook func(out *saga.Outbox)) { c.beforeCommit = hook }

// HoldLoop holds c's loop until the returned release is called: the
// inputs handed in meanwhile are applied together, in one batch, once it
// is released. It reports false when the loop is not running.
func HoldLoop(ctx context.Context, c *Coordinator) (release func(), ok bool) {
	held := make(chan struct{})
	ok = c.enqueue(ctx, func(time.Time, *saga.Outbox) func(error) {
		<-held
		return nil
	})
	return func() { close(held) }, ok
}

// Queued is how many inputs wait for c's loop.
func Queued(c *Coordinator) int { return len(c.term.Load().in) }

// SetOldAgentsAfter sets how long a coordinator waits for a role's record
// stream before it says the role's agents may be older, and returns a
// function that sets it back. Call it before any coordinator runs.
func SetOldAgentsAfter(d time.Duration) (restore func()) {
	old := oldAgentsAfter
	oldAgentsAfter = d
	return func() { oldAgentsAfter = old }
}

// SetNoJetStreamPause sets the wait between two terms while the server has
// no JetStream, until the test ends. Call it before any coordinator runs.
func SetNoJetStreamPause(t interface{ Cleanup(func()) }, d time.Duration) {
	was := noJetStreamPause
	noJetStreamPause = d
	t.Cleanup(func() { noJetStreamPause = was })
}

// DefinitionFile is d as the bucket stores it: the bytes
// Options.MaxDefinitionBytes counts.
func DefinitionFile(d saga.Definition) ([]byte, error) { return definitionFile(d) }

// LatestEnded returns the bucket subjects of the latest n sagas that ended
// with st, as the index of lists holds them, and whether it can tell.
func LatestEnded(c *Coordinator, st saga.Status, n int) ([]string, bool) {
	return c.latestEnded.subjects(st, n)
}

// WireRefresh spaces the coordinator's reads of the roles' wire versions.
const WireRefresh = wireRefresh
