package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// Definitions registered at run time are stored in the saga bucket, one key
// per version ([messages.DefinitionKey]) holding a definitions file of that
// one definition, and registered again by the coordinator that recovers the
// bucket, before the sagas that may run by them.

// registerTimeout bounds the stores of one register request.
const registerTimeout = 10 * time.Second

// onRegister registers the definitions of a [messages.RegisterRequest]: all
// of them or, on an error, none that were not stored already.
func (c *Coordinator) onRegister(m *nats.Msg) {
	var req messages.RegisterRequest
	if err := messages.Decode(m.Data, &req); err != nil {
		c.respond(m, messages.RegisterResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	defs, err := saga.ParseFile(req.Definitions)
	if err != nil {
		c.respond(m, messages.RegisterResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	// The engine is the loop's: the checks, the stores and the update run
	// there, so that no start sees a definition that is not stored, and
	// the stream takes the new steps' commands before any is sent. A
	// registration is rare; the loop waits for its stores.
	c.enqueue(func(time.Time, *saga.Outbox) func(error) {
		resp, err := c.register(defs)
		if err != nil {
			c.log.Warn("register refused", "err", err)
			resp = messages.RegisterResponse{V: messages.Version, Error: wireError(err)}
		}
		c.respond(m, resp)
		return nil
	})
}

// register checks, stores and registers defs. It runs on the loop.
func (c *Coordinator) register(defs []saga.Definition) (messages.RegisterResponse, error) {
	resp := messages.RegisterResponse{V: messages.Version}
	unchanged := make([]bool, len(defs))
	for i, d := range defs {
		u, err := c.engine.CheckUpdate(d)
		if err != nil {
			return resp, err
		}
		unchanged[i] = u
	}
	ctx, cancel := context.WithTimeout(context.Background(), registerTimeout)
	defer cancel()
	for i, d := range defs {
		if unchanged[i] {
			continue
		}
		data, err := json.Marshal(saga.FileOf([]saga.Definition{d}))
		if err != nil {
			return resp, fmt.Errorf("register %q: %w", d.Name, err)
		}
		// Create, not Put: a version once stored never changes; a race
		// with another writer of the same version is refused.
		if _, err := c.kv.Create(ctx, messages.DefinitionKey(d.Name, version(d)), data); err != nil {
			return resp, fmt.Errorf("register %q version %d: %w", d.Name, version(d), err)
		}
	}
	before := c.roles()
	for i, d := range defs {
		latest, err := c.engine.Update(d)
		if err != nil {
			// Checked above; nothing else changes the engine meanwhile.
			return resp, fmt.Errorf("register %q: %w", d.Name, err)
		}
		resp.Registered = append(resp.Registered, messages.RegisteredSaga{
			Name: d.Name, Version: version(d), Latest: latest || c.isLatest(d), Unchanged: unchanged[i],
		})
		if !unchanged[i] {
			c.log.Info("definition registered", "saga", d.Name, "version", version(d), "latest", latest)
		}
	}
	if _, err := c.js.CreateOrUpdateStream(ctx, c.commandStreamConfig()); err != nil {
		return resp, fmt.Errorf("register: stream %s: %w", messages.CommandStream, err)
	}
	for _, r := range c.roles() {
		if !slices.Contains(before, r) {
			select {
			case c.newRoles <- r:
			case <-ctx.Done():
				return resp, fmt.Errorf("register: role %s: %w", r, ctx.Err())
			}
		}
	}
	return resp, nil
}

// isLatest reports whether d's version is the latest of its name.
func (c *Coordinator) isLatest(d saga.Definition) bool {
	cur, ok := c.engine.Definition(d.Name)
	return ok && cur.Version == version(d)
}

// restoreDefinition registers the definition stored under key. A stored
// version that differs from the one the coordinator was started with is an
// error: one of them needs a new version.
func (c *Coordinator) restoreDefinition(key string, data []byte) error {
	defs, err := saga.ParseFile(data)
	if err != nil {
		return fmt.Errorf("stored definition %s: %w", key, err)
	}
	for _, d := range defs {
		if _, err := c.engine.Update(d); err != nil {
			if errors.Is(err, saga.ErrDuplicateDefinition) {
				return fmt.Errorf("stored definition %s differs from the one given at start; give one of them a new version: %w", key, err)
			}
			return fmt.Errorf("stored definition %s: %w", key, err)
		}
	}
	return nil
}

// version is d's version, 1 when it says 0.
func version(d saga.Definition) int64 { return max(d.Version, 1) }
