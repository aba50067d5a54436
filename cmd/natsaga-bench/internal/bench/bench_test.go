package bench

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/testenv"
)

func TestParseStat(t *testing.T) {
	line := "4242 (a (weird) name) S 1 2 3 0 -1 4194304 101 0 0 0 250 37 0 0 20 0 9 0 281448 3133440 414\n"
	d, err := parseStat([]byte(line))
	require.NoError(t, err)
	require.Equal(t, 287*clockTick, d)
	_, err = parseStat([]byte("garbage"))
	require.Error(t, err)
	_, err = parseStat([]byte("1 (x) S 1 2"))
	require.Error(t, err)
}

func TestProcessCPUOfThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	_, err := ProcessCPU(os.Getpid())
	require.NoError(t, err)
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	require.Equal(t, 50*time.Millisecond, Percentile(ds, 50))
	require.Equal(t, 99*time.Millisecond, Percentile(ds, 99))
	require.Equal(t, 100*time.Millisecond, Percentile(ds, 100))
	require.Equal(t, time.Millisecond, Percentile(ds, 0.1))
	require.Zero(t, Percentile(nil, 50))
}

func TestWaitersEndBeforeStartResponse(t *testing.T) {
	w := &waiters{wait: map[string]chan bool{}, early: map[string]bool{}}
	w.finished("a", true)
	require.True(t, <-w.expect("a"))
	ch := w.expect("b")
	w.finished("b", false)
	require.False(t, <-ch)
	require.Empty(t, w.wait)
	require.Empty(t, w.early)
}

// TestRun drives a trivial target, a responder that answers each start
// with an id and announces the saga's end at once, and checks the window's
// figures add up.
func TestRun(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	var n int
	_, err := nc.Subscribe("test.start", func(m *nats.Msg) {
		n++
		id := strconv.Itoa(n)
		_ = m.Respond([]byte(id))
		_ = nc.Publish("test.end", []byte(id))
	})
	require.NoError(t, err)
	var opened, closed bool
	res, err := Run(context.Background(), nc, Target{
		StartSubject:  "test.start",
		StartData:     func(int) []byte { return nil },
		Started:       func(data []byte) (string, error) { return string(data), nil },
		EventSubjects: []string{"test.end"},
		Finished:      func(data []byte) (string, bool) { return string(data), true },
	}, LoadOptions{InFlight: 4, Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond, Timeout: 5 * time.Second,
		OnWindow: func(open bool) {
			if open {
				opened = true
			} else {
				closed = true
			}
		}})
	require.NoError(t, err)
	require.True(t, opened && closed)
	require.Positive(t, res.Completed)
	require.Zero(t, res.Errors)
	require.Len(t, res.Latencies, res.Completed)
	require.Positive(t, res.PerSecond())
	require.LessOrEqual(t, res.Percentile(50), res.Percentile(99))
}
