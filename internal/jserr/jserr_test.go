package jserr_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/jserr"
	"github.com/natsaga/natsaga/internal/testenv"
)

func TestConflict(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "conflict"})
	require.NoError(t, err)
	rev, err := kv.Create(ctx, "k", []byte("1"))
	require.NoError(t, err)
	_, err = kv.Update(ctx, "k", []byte("2"), rev)
	require.NoError(t, err)

	_, err = kv.Update(ctx, "k", []byte("3"), rev)
	require.True(t, jserr.Conflict(err), "an update at a stale revision: %v", err)
	require.True(t, jserr.Conflict(fmt.Errorf("store: %w", err)), "wrapped")
	_, err = kv.Create(ctx, "k", []byte("4"))
	require.True(t, jserr.Conflict(err), "a create of a key that exists: %v", err)
	_, err = kv.Get(ctx, "missing")
	require.False(t, jserr.Conflict(err), "%v", err)
	require.False(t, jserr.Conflict(nil))
	require.False(t, jserr.Conflict(context.Canceled))
}
