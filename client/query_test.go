package client_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
)

// TestQuery asks a role's state query through the client: an answer is
// decoded; a request the query refuses, and an error of the model's own,
// come back as a *client.Error with their code; an error of another shape
// as an error saying so.
func TestQuery(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	store, err := participant.OpenStore(ctx, nc, "till", true, 1)
	require.NoError(t, err)
	_, err = store.Init(ctx, "count", 7)
	require.NoError(t, err)
	type answer struct {
		Count int                 `json:"count"`
		Error *messages.WireError `json:"error,omitempty"`
	}
	served := make(chan error, 1)
	go func() {
		served <- participant.ServeQueries(ctx, nc, "till", "till.count",
			func(_ context.Context, req []byte, read func([]string, func(int) any) ([]bool, error)) any {
				var q struct{ Key string }
				switch string(req) {
				case `"text"`:
					return map[string]string{"error": "no such key"}
				case `"codeless"`:
					return map[string]any{"error": map[string]string{"message": "no such key"}}
				}
				if json.Unmarshal(req, &q) != nil || q.Key != "count" {
					return answer{Error: &messages.WireError{Code: messages.CodeNotFound, Message: "no such key"}}
				}
				var a answer
				if _, err := read([]string{q.Key}, func(int) any { return &a.Count }); err != nil {
					return answer{Error: &messages.WireError{Code: messages.CodeInternal, Message: err.Error()}}
				}
				return a
			})
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-served)
	})

	c, err := client.New(testenv.Connect(t, url), client.Options{Logger: testenv.Logger(t)})
	require.NoError(t, err)
	var a answer
	require.NoError(t, c.Query(ctx, "till.count", map[string]string{"Key": "count"}, &a), "answered once an agent serves it")
	require.Equal(t, 7, a.Count)

	err = c.Query(ctx, "till.count", map[string]string{"Key": "other"}, &a)
	var ce *client.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "till.count: not_found: no such key", err.Error())
	require.ErrorIs(t, err, client.ErrNotFound)

	// An error of another shape is an error still, not an empty answer.
	err = c.Query(ctx, "till.count", "text", &a)
	require.EqualError(t, err, `till.count: the answer's error "\"no such key\"" is not an object with a code and a message`)
	err = c.Query(ctx, "till.count", "codeless", &a)
	require.EqualError(t, err, `till.count: the answer's error "{\"message\":\"no such key\"}" is not an object with a code and a message`)

	err = c.Query(ctx, "till.count", strings.Repeat("q", messages.MaxPayload), &a)
	require.ErrorIs(t, err, client.ErrBadRequest, "refused by ServeQueries: %v", err)
}
