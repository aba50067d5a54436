package vaccination_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agentmain"
	"github.com/natsaga/natsaga/examples/vaccination"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestCampaignIsReproducible runs the default campaign end to end twice,
// once with one copy of each agent and once with three: the outcome logs
// are the same, byte for byte, and the stock adds up.
func TestCampaignIsReproducible(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	one, err := vaccination.Run(ctx, vaccination.Options{})
	require.NoError(t, err)
	three, err := vaccination.Run(ctx, vaccination.Options{Copies: 3})
	require.NoError(t, err)
	require.Equal(t, one.Digest, three.Digest)
	require.Equal(t, string(one.Log), string(three.Log))

	// The campaign is contested: the stock runs out, fevers turn patients
	// away and their doses go back.
	require.Positive(t, one.TurnedAway)
	require.Positive(t, one.Counts[saga.RolledBack]-one.TurnedAway, "some patients found no dose")
	require.Equal(t, int64(one.Vaccinated), one.Stock.Dispensed)
	require.Equal(t, one.Stock.Initial+one.Stock.Received-one.Stock.Dispensed, one.Stock.Doses)
}

// TestSecondCampaignOnOneServer runs two campaigns on one nats-server:
// the second starts from the stock the first left, and checks what it
// moved itself.
func TestSecondCampaignOnOneServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, url := testenv.Server(t)
	first, err := vaccination.Run(ctx, vaccination.Options{URL: url})
	require.NoError(t, err)
	second, err := vaccination.Run(ctx, vaccination.Options{URL: url})
	require.NoError(t, err)
	require.Equal(t, first.Stock.Dispensed+int64(second.Vaccinated), second.Stock.Dispensed)
	require.Equal(t, second.Stock.Initial+second.Stock.Received-second.Stock.Dispensed, second.Stock.Doses)
}

// TestServerWithACoordinatorAlready: Run starts a coordinator of its own;
// on a server where another holds the lease it stands by, and Run says
// so rather than wait for ever.
func TestServerWithACoordinatorAlready(t *testing.T) {
	_, url := testenv.Server(t)
	defs, err := vaccination.Definitions()
	require.NoError(t, err)
	testenv.Coordinator(t, url, defs)
	_, err = vaccination.Run(t.Context(), vaccination.Options{URL: url, ReadyWait: 500 * time.Millisecond})
	require.ErrorContains(t, err, "another coordinator holds the lease on "+url)
}

// TestAgentsAsProcesses runs the campaign with its agents as processes of
// their own, the programs of [vaccination.Program] (cmd/vaxagent), two
// copies of the clinic, and a coordinator started with no definitions (as
// `coordinator -definitions none` is), with which Run registers the
// campaign's: the outcome log is the one of the campaign run in one
// process.
func TestAgentsAsProcesses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, url := testenv.Server(t)
	var logs testenv.SyncBuffer
	for _, role := range []string{vaccination.Patient, vaccination.Depot, vaccination.Clinic, vaccination.Clinic} {
		startAgent(t, url, role, &logs)
	}
	testenv.Coordinator(t, url, nil)
	// The registration below adds the sagas' subjects to the command
	// stream: not while an agent creates its consumer of that stream, a
	// pair of requests that nats-server v2.15.2 (and v2.15.3) runs with a
	// data race in its file store, which the race detector reports.
	js, err := jetstream.New(testenv.Connect(t, url))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		st, err := js.Stream(ctx, messages.CommandStream)
		return err == nil && st.CachedInfo().State.Consumers == 3
	}, time.Minute, 10*time.Millisecond, "the three roles' agents have their consumers: %s", &logs)
	apart, err := vaccination.Run(ctx, vaccination.Options{URL: url, AgentsElsewhere: true, CoordinatorElsewhere: true})
	require.NoError(t, err, logs.String())
	together, err := vaccination.Run(ctx, vaccination.Options{})
	require.NoError(t, err)
	require.Equal(t, together.Digest, apart.Digest)
	require.Equal(t, string(together.Log), string(apart.Log))
}

// agentEnv, when set, makes the test binary the program of that role
// (cmd/vaxagent's), so that a test runs agents as processes of their own.
const agentEnv = "VAXAGENT_ROLE"

func TestMain(m *testing.M) {
	if role := os.Getenv(agentEnv); role != "" {
		r, err := vaccination.Program(role)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(agentmain.Main(r))
	}
	os.Exit(m.Run())
}

// startAgent runs role's program on url until the test ends, then stops
// it with SIGTERM and requires a clean exit.
func startAgent(t *testing.T, url, role string, logs io.Writer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-log-format", "json")
	cmd.Env = append(os.Environ(), agentEnv+"="+role, "NATS_URL="+url)
	cmd.Stderr = logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		require.NoError(t, cmd.Wait(), "%s's program did not stop cleanly", role)
	})
}

// TestNoCoordinatorElsewhere: told a coordinator runs elsewhere, Run says
// so when none answers within ReadyWait, rather than wait for ever.
func TestNoCoordinatorElsewhere(t *testing.T) {
	_, url := testenv.Server(t)
	_, err := vaccination.Run(t.Context(), vaccination.Options{URL: url, CoordinatorElsewhere: true, AgentsElsewhere: true,
		ReadyWait: 300 * time.Millisecond})
	require.EqualError(t, err, "the coordinator on "+url+": natsaga.register: nats: no responders available for request: context deadline exceeded")
}
