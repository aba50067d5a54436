package coordinator_test

import (
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// jobMoved is a version 2 of jobV1 that gives its step "file" to another
// role, and adds a step: natsaga.register took it before a version could
// not move a step, so buckets written then may hold it.
const jobMoved = `{"roles":["clerk","auditor"],"sagas":[{"name":"job","subject":"job","version":2,
	"steps":[{"name":"open","role":"clerk"},{"name":"file","role":"auditor"},{"name":"close","role":"clerk"}]}]}`

// TestStoredVersionThatMovedAStepIsRecovered: a bucket written before the
// rule holds version 1 and a version 2 that gives a step to another role.
// A coordinator that recovers it must still run both: the sagas of each
// finish by their version, and a start takes the latest. Skipping either
// strands its sagas in the bucket.
func TestStoredVersionThatMovedAStepIsRecovered(t *testing.T) {
	_, url := testenv.Server(t)
	v1 := parseDefs(t, jobV1)
	stop := startCoordinator(t, url, v1)
	nc := testenv.Connect(t, url)
	f := newForeign(t, nc)
	old := testenv.Start(t, nc, "job", nil)
	f.ok(t, f.next(t, old, "open"))
	f.next(t, old, "file")
	stop()

	// What an earlier release's natsaga.register stored.
	moved := parseDefs(t, jobMoved)
	data, err := json.Marshal(saga.FileOf(moved))
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(t.Context(), messages.SagaBucket)
	require.NoError(t, err)
	_, err = kv.Create(t.Context(), messages.DefinitionKey("job", 2), data)
	require.NoError(t, err)

	startCoordinator(t, url, v1) // restarted as it was
	// The saga of version 1 is recovered: its outstanding command is sent
	// again, and it finishes by version 1.
	f.ok(t, f.next(t, old, "file"))
	testenv.WaitStatus(t, nc, old, saga.Completed)
	// A start runs by version 2, the latest.
	id := testenv.Start(t, nc, "job", nil)
	f.ok(t, f.next(t, id, "open"))
	f.ok(t, f.next(t, id, "file"))
	f.ok(t, f.next(t, id, "close"))
	testenv.WaitStatus(t, nc, id, saga.Completed)
}
