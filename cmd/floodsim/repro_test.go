package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestReproducible runs the default scenario as `go run ./cmd/floodsim`
// does, twice with one copy of each agent, once with three copies of the
// household, government and insurer agents and once with four of every
// agent, the most the contract covers: the outcome logs are the same, byte
// for byte.
func TestReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the programs four times")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	runOnce := func(name string, copies, contractors int) (digest string, log []byte) {
		out := filepath.Join(dir, name+".outcomes")
		report := filepath.Join(dir, name+".json")
		args := []string{"-build-dir", bin, "-outcomes", out, "-json", report, "-seed", "1",
			"-household-agents", fmt.Sprint(copies), "-government-agents", fmt.Sprint(copies), "-insurer-agents", fmt.Sprint(copies),
			"-contractor-agents", fmt.Sprint(contractors)}
		c, err := parseFlags(args, env(), io.Discard)
		require.NoError(t, err)
		var stdout, stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		require.NoError(t, run(ctx, c, &stdout, &stderr), "%s\nstdout:\n%s\nstderr:\n%s", name, &stdout, &stderr)
		r := readReport(t, report)
		requireSound(t, r)
		log, err = os.ReadFile(out)
		require.NoError(t, err)
		require.Contains(t, stdout.String(), "outcome log SHA-256: "+r.OutcomesSHA256)
		return r.OutcomesSHA256, log
	}
	d1, log1 := runOnce("one-a", 1, 1)
	d2, log2 := runOnce("one-b", 1, 1)
	d3, log3 := runOnce("three", 3, 1)
	d4, log4 := runOnce("four", 4, 4)
	require.Equal(t, string(log1), string(log2), "two runs with one copy of each agent")
	require.Equal(t, string(log1), string(log3), "three copies of the household, government and insurer agents")
	require.Equal(t, string(log1), string(log4), "four copies of every agent")
	require.Equal(t, d1, d2)
	require.Equal(t, d1, d3)
	require.Equal(t, d1, d4)
	require.Len(t, d1, 64)
}

// TestContractorBoundary drives elevation sagas through the real agents,
// ticking as floodsim does, while a goroutine keeps a core busy: a contractor
// whose work equals its step's timeout (3 ticks) completes every time, and
// one that needs a tick more times out every time.
func TestContractorBoundary(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	var load sync.WaitGroup
	load.Go(func() {
		for ctx.Err() == nil {
		}
	})
	t.Cleanup(func() { stop(); load.Wait() })

	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, flood.Definitions())
	startAgents(t, url, 1_000_000_000_00, false, flood.Household, flood.Government, flood.Contractor)
	nc := testenv.Connect(t, url)
	cl, err := client.New(nc, client.Options{Logger: testenv.Logger(t)})
	require.NoError(t, err)

	const perCase = 60
	ticksOf := map[string]int64{}
	for i := range 2 * perCase {
		id := fmt.Sprintf("e-%03d", i)
		ticks := int64(3 + i%2) // the step timeout, or one more
		ticksOf[id] = ticks
		sctx := messages.Context{}.MustSet(flood.KeyHousehold, fmt.Sprintf("hh-%03d", i)).MustSet(flood.KeyContractorTicks, ticks)
		_, err := cl.Start(ctx, client.Start{Saga: flood.Elevation, ID: id, Rank: int64(i + 1), Tick: 1, Context: sctx})
		require.NoError(t, err)
	}
	for tick := int64(1); tick <= 8; tick++ {
		_, err := cl.Tick(ctx, tick)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			s, err := cl.WithAttempts(1).Summary(ctx)
			return err == nil && s.Due == 0
		}, 2*time.Minute, 5*time.Millisecond, "tick %d never became quiet", tick)
	}
	for id, ticks := range ticksOf {
		x, err := cl.Status(ctx, id)
		require.NoError(t, err)
		want := saga.Completed
		if ticks > 3 {
			want = saga.TimedOut
		}
		require.Equal(t, want, x.Status, "saga %s, contractor_ticks %d: %s", id, ticks, x.Error)
	}
}
