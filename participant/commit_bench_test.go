package participant

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/natsaga/natsaga/messages"
)

// BenchmarkCommit measures the ways an action that writes one value can
// commit on a file-backed stream like a role's state stream: the claim,
// value and record that agents wrote before; the value and record they
// write now; and the record and value as one atomic batch (nats-server
// 2.12's all-or-nothing publish), which batch.go explains is not used.
// Each op is one action on keys of its own, 16 actions at once.
//
//	go test ./participant -run '^$' -bench Commit -benchtime 3s
//
// Figures: BENCHMARKS.md, "Two writes for an action that writes".
func BenchmarkCommit(b *testing.B) {
	nc := connectEmbedded(b)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	cfg := StreamConfig("bench", 1)
	cfg.AllowAtomicPublish = true
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	record := []byte(`{"execute":{"outcome":"ok","output":{"status":"pending"},"seq":1,"at":"2026-12-02T04:00:00Z"}}`)
	value := []byte(`{"value":{"applications":{"s-1":"pending"},"elevated":false},"ops":{"s-1/apply/execute":{"status":"pending"}}}`)
	var next atomic.Int64
	publish := func(subject string, data []byte, seq uint64, ttl bool) uint64 {
		opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(seq)}
		if ttl {
			opts = append(opts, jetstream.WithMsgTTL(RecordTTL))
		}
		ack, err := js.Publish(ctx, subject, data, opts...)
		if err != nil {
			b.Error(err)
			return 0
		}
		return ack.Sequence
	}
	run := func(commit func(branch, data string)) func(*testing.B) {
		return func(b *testing.B) {
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					k := strconv.FormatInt(next.Add(1), 10)
					commit(messages.BranchSubject("bench", "s-"+k, "apply"), messages.DataSubject("bench", "h-"+k))
				}
			})
		}
	}
	b.Run("claim-value-record", run(func(branch, data string) {
		claim := publish(branch, []byte(`{"execute":{"pending":true,"seq":1}}`), 0, false)
		publish(data, value, 0, false)
		publish(branch, record, claim, true)
	}))
	b.Run("value-record", run(func(branch, data string) {
		publish(data, value, 0, false)
		publish(branch, record, 0, true)
	}))
	b.Run("atomic-batch", run(func(branch, data string) {
		r := nats.NewMsg(branch)
		r.Data = record
		r.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
		r.Header.Set(jetstream.MsgTTLHeader, RecordTTL.String())
		v := nats.NewMsg(data)
		v.Data = value
		v.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
		bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := jetstreamext.PublishMsgBatch(bctx, js, []*nats.Msg{r, v}, jetstreamext.BatchFlowControl{}); err != nil {
			b.Error(err)
		}
	}))
}
