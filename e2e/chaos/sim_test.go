package chaos_test

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/procs"
)

// simHouseholds sizes the chaos simulation: about 6,000 sagas over 30
// ticks, long enough for every kill of the schedule to fall within it.
var simHouseholds = envInt("NATSAGA_CHAOS_SIM_HOUSEHOLDS", 1500)

// TestChaosSimulation runs a floodsim scenario against a system of
// separate processes twice with the same seed: once undisturbed, and once
// while the coordinator, every kind of agent and nats-server are killed
// with SIGKILL and restarted. Both runs write the same outcome log, byte
// for byte: the determinism contract of docs/simulation.md.
func TestChaosSimulation(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test skipped in -short mode")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	bins, err := procs.Build(ctx, filepath.Join(dir, "bin"), false,
		append(slices.Clone(procs.Programs), procs.NATSServer, "floodsim")...)
	require.NoError(t, err)

	clean := simulate(t, ctx, bins, filepath.Join(dir, "clean"), false)
	chaotic := simulate(t, ctx, bins, filepath.Join(dir, "chaos"), true)
	require.NotEmpty(t, clean)
	require.Equal(t, string(clean), string(chaotic), "the same seed gives the same outcome for every saga, crashes or not")
}

// simulate runs a system (nats-server, the coordinator, two copies of each
// agent) and floodsim's scenario of seed 1 and simHouseholds households
// against it, killing and restarting processes meanwhile when chaos is set:
// every kill of the schedule must fall within the run. It returns the
// outcome log.
func simulate(t *testing.T, ctx context.Context, bins map[string]string, dir string, chaos bool) []byte {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	sc, err := flood.NewScenario(flood.ScenarioOptions{Seed: 1, Households: simHouseholds})
	require.NoError(t, err)
	const copies = 2
	sys := startSystem(t, ctx, systemConfig{bins: bins, dir: dir, logPath: filepath.Join(dir, "processes.log"), label: filepath.Base(dir),
		copies: copies, ledger: map[string]int64{flood.Government: sc.GovernmentBudget, flood.Insurer: sc.InsurerFund}})
	defer sys.stop()

	outcomes := filepath.Join(dir, "outcomes.jsonl")
	sim, err := procs.Start("floodsim", bins["floodsim"], []string{"-spawn=false", "-expect-agents", strconv.Itoa(copies * len(roles)),
		"-seed", "1", "-households", strconv.Itoa(simHouseholds), "-outcomes", outcomes, "-tick-wait", "2m", "-agent-wait", "2m"}, sys.env, sys.log)
	require.NoError(t, err)

	began, kills := time.Now(), 0
	if chaos {
		// A seeded schedule of SIGKILLs, several for each kind of process,
		// about half a second apart, while the simulation runs.
		rng := rand.New(rand.NewPCG(uint64(chaosSeed), 2))
		victims := []string{"coordinator", "coordinator", "coordinator", "nats-server", "nats-server"}
		for _, role := range roles {
			victims = append(victims, role, role)
		}
		rng.Shuffle(len(victims), func(i, j int) { victims[i], victims[j] = victims[j], victims[i] })
		// The first kill waits for the run's first ticks.
		delay := time.Second
		next := func() time.Duration {
			d := delay
			delay = 300*time.Millisecond + time.Duration(rng.IntN(400))*time.Millisecond
			return d
		}
		for _, n := range sys.kill(ctx, killSchedule{victims: victims, rng: rng, delay: next, until: sim.Done(), began: began}) {
			kills += n
		}
		defer func() { require.Equal(t, len(victims), kills, "every kill of the schedule falls within the run") }()
	}
	select {
	case <-sim.Done():
	case <-ctx.Done():
		t.Fatal("the simulation did not finish in time")
	}
	require.NoError(t, sim.Err(), "floodsim failed; see the process logs")
	t.Logf("%s run: floodsim done after %.1fs, %d kills", filepath.Base(dir), time.Since(began).Seconds(), kills)
	log, err := os.ReadFile(outcomes)
	require.NoError(t, err)
	return log
}
