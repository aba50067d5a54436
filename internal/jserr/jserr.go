// Package jserr classifies the errors of JetStream's API that natsaga acts
// on.
package jserr

import (
	"errors"
	"slices"

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

// passing are the JetStream error codes (nats-server's errors.json) of a
// cluster that cannot serve a request for now: not available (10008),
// incomplete results (10004), not assigned to this server (10007), no
// leader to handle it (10009), a stream or consumer offline (10118, 10119,
// 10194, 10195), a sequence not ready (10163).
var passing = []jetstream.ErrorCode{10008, 10004, 10007, 10009, 10118, 10119, 10194, 10195, 10163}

// Refused reports whether err is JetStream's API refusing a request in a
// way that waiting does not mend (replicas on a single server, a
// configuration it cannot serve), not a cluster that cannot serve it yet
// (while it elects its leaders, or a stream or consumer is offline during
// a restart).
func Refused(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && !slices.Contains(passing, api.ErrorCode)
}

// NotClustered reports whether err is JetStream refusing replicas on a
// server that is not part of a cluster (10074): a stream asked for more
// copies than a single server keeps, which no wait mends.
func NotClustered(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == replicasNotSupported
}

// replicasNotSupported is nats-server's JSStreamReplicasNotSupportedErr,
// which nats.go names no constant for.
const replicasNotSupported jetstream.ErrorCode = 10074
