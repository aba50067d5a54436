package natsurl_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/natsurl"
)

// TestRedacted hides the password of each URL that has one, a token, and
// what comes before the @ of a URL that does not parse.
func TestRedacted(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                              "nats://127.0.0.1:4222",
		"nats://user:s3cret@host:4222":                       "nats://user:xxxxx@host:4222",
		"nats://a:p1@h1:4222,nats://h2:4222, nats://b:p2@h3": "nats://a:xxxxx@h1:4222,nats://h2:4222,nats://b:xxxxx@h3",
		"nats://s3cr3t-token@host":                           "nats://xxxxx@host",
		"nats://alice:s3cret@a b:4222":                       "nats://xxxxx@a b:4222",
		"alice:s3cret@a b:4222":                              "xxxxx@a b:4222",
	} {
		require.Equal(t, want, natsurl.Redacted(in), in)
	}
}
