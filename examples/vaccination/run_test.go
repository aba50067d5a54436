package vaccination_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/examples/vaccination"
	"github.com/natsaga/natsaga/internal/testenv"
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
