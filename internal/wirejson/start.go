package wirejson

import (
	"encoding/json"
	"fmt"

	"github.com/natsaga/natsaga/messages"
)

// RawStartBatch is a [messages.StartBatch] with each start left as it
// came, so that a start that does not decode refuses that start alone.
type RawStartBatch struct {
	V      int               `json:"v"`
	Starts []json.RawMessage `json:"starts"`
}

var rawStartBatchCodec = newCodec(
	integer("V", func(b *RawStartBatch) *int { return &b.V }),
	rawList("Starts", func(b *RawStartBatch) *[]json.RawMessage { return &b.Starts }),
)

var batchedStartCodec = newCodec(
	str("Saga", func(s *messages.BatchedStart) *string { return &s.Saga }),
	str("SagaID", func(s *messages.BatchedStart) *string { return &s.SagaID }),
	integer64("Rank", func(s *messages.BatchedStart) *int64 { return &s.Rank }),
	integer64("Tick", func(s *messages.BatchedStart) *int64 { return &s.Tick }),
	rawMap("Context", func(s *messages.BatchedStart) *messages.Context { return &s.Context }),
)

var startRequestCodec = newCodec(
	integer("V", func(s *messages.StartRequest) *int { return &s.V }),
	str("SagaID", func(s *messages.StartRequest) *string { return &s.SagaID }),
	integer64("Rank", func(s *messages.StartRequest) *int64 { return &s.Rank }),
	integer64("Tick", func(s *messages.StartRequest) *int64 { return &s.Tick }),
	rawMap("Context", func(s *messages.StartRequest) *messages.Context { return &s.Context }),
)

// DecodeStartRequest reads a start request, one JSON value and nothing
// after it, as json.Unmarshal does, without reflection. It returns an
// error wrapping [ErrSyntax] or [ErrType] where json.Unmarshal returns one.
func DecodeStartRequest(data []byte) (messages.StartRequest, error) {
	s, err := startRequestCodec.decodeAll(data)
	if err != nil {
		return messages.StartRequest{}, fmt.Errorf("decode start request: %w", err)
	}
	return s, nil
}

// DecodeStartBatch reads a start batch, one JSON value and nothing after
// it, into what json.Unmarshal makes of it, without reflection: each
// start's bytes, slices of data, to be read by [DecodeBatchedStart]. It
// returns an error wrapping [ErrSyntax] or [ErrType] where json.Unmarshal
// returns one.
func DecodeStartBatch(data []byte) (RawStartBatch, error) {
	b, err := rawStartBatchCodec.decodeAll(data)
	if err != nil {
		return RawStartBatch{}, fmt.Errorf("decode start batch: %w", err)
	}
	return b, nil
}

// DecodeBatchedStart reads one start of a batch as json.Unmarshal does,
// without reflection. It returns an error wrapping [ErrSyntax] or
// [ErrType] where json.Unmarshal returns one.
func DecodeBatchedStart(data []byte) (messages.BatchedStart, error) {
	s, err := batchedStartCodec.decodeAll(data)
	if err != nil {
		return messages.BatchedStart{}, fmt.Errorf("decode start: %w", err)
	}
	return s, nil
}

// rawList binds a list of raw JSON values, read as slices of the input.
func rawList[T any](goName string, p func(*T) *[]json.RawMessage) binding[T] {
	return binding[T]{goName: goName,
		enc: func(dst []byte, v *T) ([]byte, error) {
			return appendList(dst, *p(v), func(dst []byte, x *json.RawMessage) ([]byte, error) { return AppendRaw(dst, *x) })
		},
		dec: func(d *Decoder, v *T) error {
			return list(d, p(v), func(e *json.RawMessage) error {
				b, err := d.Raw()
				*e = b
				return err
			})
		},
		empty: func(v *T) bool { return len(*p(v)) == 0 },
	}
}
