// Package jserr classifies the errors of JetStream's API that natsaga acts
// on.
package jserr

import (
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// Conflict reports whether err is JetStream's "wrong last sequence": a
// compare-and-swap write (an expected last sequence, per stream or per
// subject, as a KV update sends) lost to a write made since.
func Conflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
