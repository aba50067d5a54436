package participant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/messages"
)

// queryTimeout bounds the reads of one query.
const queryTimeout = 5 * time.Second

// QueryConcurrency is how many queries one agent answers at once. A query
// spends its time waiting for its reads: a driver checking 100,000
// households asks 200 queries of 500, and answered one at a time they
// took minutes.
const QueryConcurrency = 16

// QueryFunc answers a query request req from the role's committed state:
// read decodes the state value of each of keys into value(i), leaving it
// untouched when the key has no value, and reports which have one. It
// reads them all in one request to the server ([Store.GetAll]), so a query
// reads what it needs in one call; read is safe for concurrent use. It
// returns the answer, encoded as JSON.
type QueryFunc func(ctx context.Context, req []byte, read func(keys []string, value func(i int) any) ([]bool, error)) any

// ServeQueries answers the requests on subject with answer, from role's
// committed state, until ctx ends; it returns nil then. A model documents
// subject and its payloads, so that a driver checks the model's state
// without reading an agent's private store. The copies of a role share the
// subject in a queue group: one answers each request. Each copy answers
// up to [QueryConcurrency] requests at once, so answer must be safe for
// concurrent use. A request larger than messages.MaxPayload is answered
// with a bad_request error, and an answer larger than the server carries
// with a too_large one, so that the asker asks for less. It waits
// for the role's state stream, and returns an error when it cannot open it
// or subscribe. It does not wait for an agent's [Options.Init]: started
// beside [Agent.Run] on a new role, it may answer before the opening values
// are stored (agentmain starts a role's Serve only once Init has run).
func ServeQueries(ctx context.Context, nc *nats.Conn, role, subject string, answer QueryFunc) error {
	if nc == nil {
		return errors.New("serve queries: no NATS connection (nil)")
	}
	st, err := OpenStore(ctx, nc, role, false, 1)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("queries %s: %w", subject, err)
	}
	// The subscription hands each request to a goroutine of its own, at
	// most QueryConcurrency at once; past that it waits, and the requests
	// wait in its buffer. Once it is closed, ServeQueries waits for those
	// under way.
	sem := make(chan struct{}, QueryConcurrency)
	var (
		mu     sync.Mutex
		closed bool
		wg     sync.WaitGroup
	)
	sub, err := nc.QueueSubscribe(subject, "queries-"+role, func(m *nats.Msg) {
		if m.Reply == "" {
			return
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if closed {
			<-sem
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			respondQuery(ctx, st, m, answer)
		})
	})
	if err != nil {
		return fmt.Errorf("queries %s: %w", subject, err)
	}
	<-ctx.Done()
	_ = sub.Unsubscribe()
	mu.Lock()
	closed = true
	mu.Unlock()
	wg.Wait()
	return nil
}

// answerSafely is answer(ctx, req, read), or, when the model's answer
// panics, an internal error naming where: one query never stops the
// process.
func answerSafely(ctx context.Context, req []byte, answer QueryFunc, read func(keys []string, value func(i int) any) ([]bool, error)) (out any) {
	defer func() {
		if v := recover(); v != nil {
			out = queryError(messages.CodeInternal, fmt.Sprintf("the query's answer panicked at %s: %v", agent.PanicSite(), v))
		}
	}()
	return answer(ctx, req, read)
}

// respondQuery answers the query m with answer.
func respondQuery(ctx context.Context, st *Store, m *nats.Msg, answer QueryFunc) {
	if messages.CheckReply(m.Reply) != nil {
		return // an answer there would be written into a stream
	}
	var out any
	switch {
	case messages.CheckUTF8(m.Data) != nil:
		out = badQuery("request is not valid UTF-8")
	case len(m.Data) > messages.MaxPayload:
		out = badQuery("request too large")
	default:
		qctx, cancel := context.WithTimeout(ctx, queryTimeout)
		defer cancel()
		out = answerSafely(qctx, m.Data, answer, func(keys []string, value func(i int) any) ([]bool, error) {
			return st.GetAll(qctx, keys, value)
		})
	}
	data, err := json.Marshal(out)
	if err != nil {
		// The model's answer does not encode: the asker is told so,
		// rather than wait for an answer that never comes.
		data, _ = json.Marshal(queryError(messages.CodeInternal, fmt.Sprintf("the answer does not encode: %v", err)))
	}
	if limit := maxAnswer(st.nc); len(data) > limit {
		// The server would refuse it, and the asker wait for nothing.
		data, _ = json.Marshal(queryError(messages.CodeTooLarge,
			fmt.Sprintf("the answer takes %d bytes, more than the %d the server's payload limit leaves it: ask for less at once", len(data), limit)))
	}
	_ = m.Respond(data)
}

// maxAnswer is the most bytes of an answer nc's server carries, less room
// for the answer's headers.
func maxAnswer(nc *nats.Conn) int { return int(nc.MaxPayload()) - 1<<10 }

// badQuery is the answer to a query refused before it is read.
func badQuery(message string) any { return queryError(messages.CodeBadRequest, message) }

func queryError(code, message string) any {
	return struct {
		V     int                 `json:"v"`
		Error *messages.WireError `json:"error"`
	}{messages.Version, &messages.WireError{Code: code, Message: message}}
}
