package coordinator

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/kvlog"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/saga"
)

// TestMergeStored: which stored state is a saga's at recovery, from its
// last entry in the saga log and its entry in the bucket; which bucket
// revisions guard the writes that follow; which sagas the log then marks
// ended; and which the log holds as active.
func TestMergeStored(t *testing.T) {
	// x is a saga's state: "in_progress@3" has status in_progress and
	// seq 3.
	x := func(id, state string) saga.Execution {
		status, seq, _ := strings.Cut(state, "@")
		var n int
		_, err := fmt.Sscan(seq, &n)
		require.NoError(t, err)
		return saga.Execution{ID: id, Definition: "pay", Saga: "pay", Version: 1, Status: saga.Status(status), Current: 0, Seq: n}
	}
	cases := []struct {
		name   string
		log    string // the log's last entry: a state, "ended", "bad", or none
		bucket string // the bucket's entry: a state, or none
		want   string // the state taken, or none
		rev    bool   // whether the bucket's revision is kept
		ended  bool   // whether the log is to mark the saga ended
		live   bool   // whether the log holds it as active after
		kept   bool   // whether its entry is kept in the log as it is
	}{
		{name: "active, in the log only", log: "in_progress@2", want: "in_progress@2", live: true},
		{name: "ended, and marked ended in the log", log: "ended", bucket: "completed@3", want: "completed@3"},
		{name: "ended in the bucket at the command of its last entry, not yet marked", log: "in_progress@3", bucket: "completed@3",
			want: "completed@3", ended: true},
		{name: "ended in the bucket after its last entry, not yet marked", log: "compensating@4", bucket: "rolled_back@5",
			want: "rolled_back@5", ended: true},
		{name: "failed, then retried: the log's entry has the later command", log: "compensating@6", bucket: "failed@5",
			want: "compensating@6", rev: true, live: true},
		{name: "failed, and marked ended in the log", log: "ended", bucket: "failed@5", want: "failed@5", rev: true},
		{name: "active in the bucket, stored there before the log, then logged", log: "in_progress@2", bucket: "pending@0",
			want: "in_progress@2", rev: true, live: true},
		{name: "active in the bucket only, stored there before the log", bucket: "pending@0", want: "pending@0", rev: true},
		{name: "ended, its entry in the log purged", bucket: "completed@3", want: "completed@3"},
		{name: "its end expired from the bucket, marked ended in the log", log: "ended"},
		{name: "a log entry that is not a saga, nothing in the bucket: kept for an operator", log: "bad", live: true, kept: true},
		{name: "a log entry that is not a saga, ended in the bucket", log: "bad", bucket: "completed@3", want: "completed@3", ended: true},
		{name: "a log entry of an ended status: kept for an operator", log: "completed@3", live: true, kept: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &Coordinator{log: slog.New(slog.NewTextHandler(io.Discard, nil)), revs: map[string]uint64{}, sagas: newSagaLog()}
			const id = "s"
			bucket := map[string]bucketSaga{}
			if tc.bucket != "" {
				bucket[id] = bucketSaga{x: x(id, tc.bucket), rev: 7}
			}
			logged := map[string]logValue{}
			if tc.log != "" {
				var value []byte
				switch tc.log {
				case "ended":
					value = []byte(endedValue)
				case "bad":
					value = []byte(`[1]`)
				default:
					s := x(id, tc.log)
					var err error
					value, err = wirejson.AppendExecution(nil, &s)
					require.NoError(t, err)
				}
				c.sagas.took(9, []kvlog.Entry{{Key: id, Value: value}})
				logged[id] = logValue{value: value, seq: 9}
			}

			stored := c.mergeStored(bucket, logged)
			got := ""
			if len(stored) > 0 {
				require.Len(t, stored, 1)
				got = fmt.Sprintf("%s@%d", stored[0].Status, stored[0].Seq)
			}
			require.Equal(t, tc.want, got)
			rev, ok := c.revs[id]
			require.Equal(t, tc.rev, ok, "revision kept")
			if ok {
				require.Equal(t, uint64(7), rev)
			}
			require.Equal(t, tc.ended, len(c.sagas.ended) == 1, "to be marked ended: %v", c.sagas.ended)
			require.Equal(t, tc.live, c.sagas.logged(id), "held as active in the log")
			_, kept := c.sagas.skipped[id]
			require.Equal(t, tc.kept, kept, "kept as it is")
			if !tc.live {
				require.Zero(t, c.sagas.liveBytes)
			}
		})
	}
}
