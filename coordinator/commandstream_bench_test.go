package coordinator_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
)

// BenchmarkCommandStreamUpdate measures what MaxCommandSubjects is chosen
// by: the time an embedded server takes to update a command stream of N
// subjects, each of the longest (145 bytes), to take two more, as a
// registration of a one-step saga does; and, reported as create-ms, to
// answer the creation of the stream as it is, as each term's set-up did.
//
//	go test -run '^$' -bench CommandStreamUpdate -benchtime 3x ./coordinator/
func BenchmarkCommandStreamUpdate(b *testing.B) {
	for _, n := range []int{256, 512, 1024, 2048, 4096} {
		b.Run(fmt.Sprintf("subjects=%d", n), func(b *testing.B) {
			_, url := testenv.Server(b)
			js, err := jetstream.New(testenv.Connect(b, url))
			require.NoError(b, err)
			// subject returns the i-th longest subject.
			subject := func(i int) string {
				pad := func(s string) string { return s + strings.Repeat("x", messages.MaxTokenLen-len(s)) }
				subs := messages.StepCommandSubjects(pad(fmt.Sprintf("s%d_", i/100)), pad(fmt.Sprintf("t%d_", i/2%50)))
				return subs[i%2]
			}
			cfg := jetstream.StreamConfig{Name: messages.CommandStream, Retention: jetstream.WorkQueuePolicy,
				Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute}
			for i := range n {
				cfg.Subjects = append(cfg.Subjects, subject(i))
			}
			// Past jetstream's default of 5 s: the largest take longer.
			ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
			defer cancel()
			_, err = js.CreateStream(ctx, cfg)
			require.NoError(b, err)
			start := time.Now()
			_, err = js.CreateStream(ctx, cfg)
			require.NoError(b, err)
			create := time.Since(start)
			for b.Loop() {
				cfg.Subjects = append(cfg.Subjects, subject(len(cfg.Subjects)), subject(len(cfg.Subjects)+1))
				_, err := js.UpdateStream(ctx, cfg)
				require.NoError(b, err)
			}
			b.ReportMetric(float64(create.Microseconds())/1000, "create-ms")
		})
	}
}
