package kvlog_test

import (
	"context"
	"encoding/json"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/internal/kvlog"
	"github.com/natsaga/natsaga/internal/wirejson"
)

// BenchmarkRecord measures writing barrier records, each to a key of its
// own, from many goroutines at once on one embedded server with a
// file-backed stream: a message per record on a subject of its own, each
// guarded by its subject's last sequence (how a role's state stream keeps
// them), against a log that commits the records made at once in one
// message. Each op is one record; the sub-benchmark's name is how many
// goroutines write at once
// (GOMAXPROCS times the parallelism).
//
//	go test ./internal/kvlog -run '^$' -bench Record -benchtime 3s
//
// Figures: BENCHMARKS.md, "Many records a message".
func BenchmarkRecord(b *testing.B) {
	url := server(b)
	js := jsFor(b, url)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BRANCHES", Subjects: []string{"branch.>"},
		Storage: jetstream.FileStorage, MaxMsgsPerSubject: 1, AllowMsgTTL: true}); err != nil {
		b.Fatal(err)
	}
	l := open(b, url)
	record := []byte(`{"execute":{"outcome":"ok","output":{"status":"pending"},"seq":1,"at":"2026-12-02T04:00:00Z"}}`)
	var next atomic.Int64
	for _, writers := range []int{16, 64, 256} {
		name := strconv.Itoa(writers)
		b.Run("subject-each/"+name, func(b *testing.B) {
			b.SetParallelism(max(writers/runtime.GOMAXPROCS(0), 1))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					k := strconv.FormatInt(next.Add(1), 10)
					if _, err := js.Publish(ctx, "branch.s-"+k+".apply", record, jetstream.WithExpectLastSequencePerSubject(0)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		b.Run("log/"+name, func(b *testing.B) {
			before := l.Last()
			b.SetParallelism(max(writers/runtime.GOMAXPROCS(0), 1))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					k := strconv.FormatInt(next.Add(1), 10)
					if _, err := l.Put(ctx, kvlog.Entry{Key: "s-" + k + "/apply", Value: record}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/float64(l.Last()-before), "records/msg")
		})
	}
}

// BenchmarkAppendMessage measures writing a message of 256 barrier
// records, as a copy of a role writes what it commits at once. Each op is
// one message, into a new buffer as a publish needs.
//
//	go test ./internal/kvlog -run '^$' -bench AppendMessage -count 5
func BenchmarkAppendMessage(b *testing.B) {
	es := records(256)
	for b.Loop() {
		kvlog.AppendMessage(nil, "NbU3j88k8WXdZJGjAHIKnY", es)
	}
}

// records returns n barrier records of household sagas, as a log holds
// them.
func records(n int) []kvlog.Entry {
	es := make([]kvlog.Entry, n)
	for i := range es {
		es[i] = kvlog.Entry{Key: "01JEXAMPLE" + strconv.Itoa(100000+i) + "/household_applies",
			Value: []byte(`{"execute":{"outcome":"ok","output":{"household":"h` + strconv.Itoa(i) + `","status":"pending"},"seq":1,"at":"2026-12-02T04:00:00.123456789Z"}}`)}
	}
	return es
}

// BenchmarkDecode measures reading a message of 256 barrier records, as
// every copy of a role reads each message of its log: kvlog.Decode
// (wirejson) against encoding/json into the same types. Each op is one
// message.
//
//	go test ./internal/kvlog -run '^$' -bench Decode -count 5
func BenchmarkDecode(b *testing.B) {
	data := kvlog.AppendMessage(nil, "nuid", records(256))
	b.Run("wirejson", func(b *testing.B) {
		for b.Loop() {
			if _, err := kvlog.Decode(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			var m wirejson.LogMessage
			if err := json.Unmarshal(data, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}
