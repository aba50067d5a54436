package participant

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
)

// BenchmarkSerialRole measures how fast one copy of a serial role applies
// a round of commands, half of them checks of a budget (reading only), half
// spends from it (writing), on an embedded server with file storage: run
// together (batch) and each alone. One op is one command; the figure to
// read is commands/s.
//
//	go test -run XXX -bench SerialRole -benchtime 20000x ./participant
func BenchmarkSerialRole(b *testing.B) {
	for _, bc := range []struct {
		name  string
		batch int
	}{{"batch", maxBatch}, {"alone", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			ns, err := embedded.Start(embedded.Options{StoreDir: b.TempDir()})
			require.NoError(b, err)
			defer ns.Shutdown()
			nc, err := nats.Connect(ns.ClientURL())
			require.NoError(b, err)
			defer nc.Close()
			js, err := jetstream.New(nc)
			require.NoError(b, err)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: messages.CommandStream, Retention: jetstream.WorkQueuePolicy,
				Subjects: append(messages.StepCommandSubjects("pay", "check"), messages.StepCommandSubjects("pay", "spend")...)})
			require.NoError(b, err)
			a, err := New(nc, Options{Role: till, Serial: true, Steps: []agent.Step{{Saga: "pay", Name: "check", Handler: check},
				{Saga: "pay", Name: "spend", Handler: spend}},
				Init: func(ctx context.Context, s agent.Seeder) error { _, err := s.Init(ctx, "budget", 1<<40); return err }})
			require.NoError(b, err)
			a.batch = bc.batch
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()

			b.ResetTimer()
			for i := range b.N {
				step := "check"
				if i%2 == 1 {
					step = "spend"
				}
				c := messages.Command{V: messages.Version, SagaID: fmt.Sprintf("s-%d", i), Saga: "pay", Step: step,
					Action: messages.Execute, Attempt: 1, Seq: 1, Context: messages.Context{"amount": []byte("1")}}
				data, err := wirejson.AppendCommand(nil, &c)
				require.NoError(b, err)
				_, err = js.PublishAsync(c.Subject(), data)
				require.NoError(b, err)
			}
			for a.Stats().Handled < int64(b.N) {
				select {
				case err := <-done:
					b.Fatalf("agent stopped: %v", err)
				case <-time.After(time.Millisecond):
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
			cancel()
			<-done
		})
	}
}
