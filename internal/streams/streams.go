// Package streams creates natsaga's streams and its bucket, and leaves
// one that is already as asked alone.
//
// jetstream's CreateOrUpdateStream updates a stream that exists, even to
// the configuration it has. In nats-server v2.15.2 such an update races
// with the creation of a consumer on the same stream (the race detector
// found it in floodsim's TestReproducible, where agent copies opened
// their role's state stream while the coordinator created its consumer of
// the records). Every natsaga process opens the streams it uses when it
// starts, so the common case, a stream already as asked, must not update.
package streams

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// Ensure returns the stream cfg names: created when it does not exist,
// updated when it exists with another configuration, and left as it is
// otherwise.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return js.UpdateStream(ctx, cfg)
	}
	return s, err
}

// EnsureKeyValue is [Ensure] for a key-value bucket.
func EnsureKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		return js.UpdateKeyValue(ctx, cfg)
	}
	return kv, err
}
