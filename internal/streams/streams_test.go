package streams_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/streams"
	"github.com/natsaga/natsaga/internal/testenv"
)

// updates returns the stream update requests for name sent on nc's server,
// as they pass.
func updates(t *testing.T, nc *nats.Conn, name string) *nats.Subscription {
	t.Helper()
	sub, err := nc.SubscribeSync("$JS.API.STREAM.UPDATE." + name)
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	return sub
}

// TestEnsureUpdatesOnlyAChangedStream: a stream already as asked is left
// alone; one asked with another configuration is updated; one missing is
// created. The first update request seen is the changed one's.
func TestEnsureUpdatesOnlyAChangedStream(t *testing.T) {
	nc, js := testenv.JetStream(t)
	ctx := context.Background()
	cfg := jetstream.StreamConfig{Name: "S", Subjects: []string{"a.>"}, Storage: jetstream.FileStorage}
	sub := updates(t, nc, "S")

	_, _, err := streams.Ensure(ctx, js, cfg)
	require.NoError(t, err)
	_, _, err = streams.Ensure(ctx, js, cfg)
	require.NoError(t, err)
	cfg.Subjects = append(cfg.Subjects, "b.>")
	s, cut, err := streams.Ensure(ctx, js, cfg)
	require.NoError(t, err)
	require.Empty(t, cut, "more subjects cut nothing")
	require.Equal(t, []string{"a.>", "b.>"}, s.CachedInfo().Config.Subjects)

	m, err := sub.NextMsg(5 * time.Second)
	require.NoError(t, err)
	require.Contains(t, string(m.Data), `"b.\u003e"`, "the first update is the changed configuration's")
}

// TestEnsureSaysWhatAHandCut: a stream whose limits keep less than
// natsaga's (an operator's edit) is set back, and Ensure names each limit
// cut, with both values; limits that keep more are not cuts.
func TestEnsureSaysWhatAHandCut(t *testing.T) {
	_, js := testenv.JetStream(t)
	ctx := context.Background()
	cfg := jetstream.StreamConfig{Name: "C", Subjects: []string{"c"}, Storage: jetstream.FileStorage, MaxAge: time.Hour, MaxMsgsPerSubject: 1}
	_, _, err := streams.Ensure(ctx, js, cfg)
	require.NoError(t, err)
	cut := cfg
	cut.MaxMsgs, cut.MaxBytes, cut.MaxAge = 5, 1<<20, time.Minute
	_, err = js.UpdateStream(ctx, cut)
	require.NoError(t, err)
	s, said, err := streams.Ensure(ctx, js, cfg)
	require.NoError(t, err)
	require.Equal(t, []string{"max_msgs 5, not unlimited", "max_bytes 1048576, not unlimited", "max_age 1m0s, not 1h0m0s"}, said)
	require.Equal(t, int64(-1), s.CachedInfo().Config.MaxMsgs, "set back")

	for _, tc := range []struct {
		name       string
		have, want jetstream.StreamConfig
		cut        []string
	}{
		{"as natsaga's", cfg, cfg, nil},
		{"longer age", jetstream.StreamConfig{MaxAge: 2 * time.Hour}, jetstream.StreamConfig{MaxAge: time.Hour}, nil},
		{"an age where none", jetstream.StreamConfig{MaxAge: time.Hour}, jetstream.StreamConfig{}, []string{"max_age 1h0m0s, not unlimited"}},
		{"unlimited as -1 or 0", jetstream.StreamConfig{MaxMsgs: -1, MaxBytes: 0}, jetstream.StreamConfig{MaxMsgs: 0, MaxBytes: -1}, nil},
		{"more per subject", jetstream.StreamConfig{MaxMsgsPerSubject: 0}, jetstream.StreamConfig{MaxMsgsPerSubject: 1}, nil},
		{"fewer messages", jetstream.StreamConfig{MaxMsgs: 10}, jetstream.StreamConfig{MaxMsgs: 1000}, []string{"max_msgs 10, not 1000"}},
	} {
		require.Equal(t, tc.cut, streams.Cut(tc.have, tc.want), tc.name)
	}
}

func TestEnsureKeyValueUpdatesOnlyAChangedBucket(t *testing.T) {
	nc, js := testenv.JetStream(t)
	ctx := context.Background()
	cfg := jetstream.KeyValueConfig{Bucket: "B", History: 1, Storage: jetstream.FileStorage}
	sub := updates(t, nc, "KV_B")

	_, err := streams.EnsureKeyValue(ctx, js, cfg)
	require.NoError(t, err)
	_, err = streams.EnsureKeyValue(ctx, js, cfg)
	require.NoError(t, err)
	cfg.History = 3
	kv, err := streams.EnsureKeyValue(ctx, js, cfg)
	require.NoError(t, err)
	st, err := kv.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(3), st.History())

	m, err := sub.NextMsg(5 * time.Second)
	require.NoError(t, err)
	require.Contains(t, string(m.Data), `"max_msgs_per_subject":3`, "the first update is the changed configuration's")
}

// TestReadStopsAtTheEndOfWhatIsStored: a read takes the messages its
// filter selects, in order, up to the last stored, and returns; one that
// finds none returns at once; each may stop it early; a context that ends
// ends it with its error.
func TestReadStopsAtTheEndOfWhatIsStored(t *testing.T) {
	_, js := testenv.JetStream(t)
	ctx := context.Background()
	_, _, err := streams.Ensure(ctx, js, jetstream.StreamConfig{Name: "R", Subjects: []string{"r.>"}, Storage: jetstream.MemoryStorage})
	require.NoError(t, err)
	read := func(ctx context.Context, filter string, upTo int) ([]string, error) {
		var got []string
		err := streams.Read(ctx, js, "R", jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}},
			func(m jetstream.Msg, meta *jetstream.MsgMetadata) bool {
				got = append(got, string(m.Data()))
				require.Equal(t, uint64(len(got)), meta.Sequence.Consumer)
				return len(got) < upTo
			})
		info, ierr := js.Stream(context.Background(), "R")
		require.NoError(t, ierr)
		require.Zero(t, info.CachedInfo().State.Consumers, "the read's consumer is deleted once it ends")
		return got, err
	}

	got, err := read(ctx, "r.>", 10)
	require.NoError(t, err)
	require.Empty(t, got, "an empty stream")
	for i, subject := range []string{"r.a", "r.b", "r.a", "r.a", "r.b"} {
		_, err := js.Publish(ctx, subject, []byte{'0' + byte(i)})
		require.NoError(t, err)
	}
	got, err = read(ctx, "r.a", 10)
	require.NoError(t, err)
	require.Equal(t, []string{"0", "2", "3"}, got)
	got, err = read(ctx, "r.>", 2)
	require.NoError(t, err)
	require.Equal(t, []string{"0", "1"}, got, "each stopped the read")
	got, err = read(ctx, "r.none", 10)
	require.NoError(t, err)
	require.Empty(t, got, "a filter that selects nothing")

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = read(cancelled, "r.>", 10)
	require.ErrorIs(t, err, context.Canceled)
}
