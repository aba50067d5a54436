package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// Definitions are stored in the saga bucket, one key per version
// ([messages.DefinitionKey]) holding a definitions file of that one
// definition: those registered at run time when they are registered, those
// given at start when the coordinator becomes active. The coordinator that
// recovers the bucket registers every stored version again, before the
// sagas that may run by them, so that a saga runs to its end by the version
// it started with whatever versions the coordinator is started with.

// registerTimeout bounds the stream update and the stores of one register
// request, so that a registration refused for a server too slow to take
// it is answered within the client's default request timeout (5 s).
const registerTimeout = 4 * time.Second

// onRegister registers the definitions of a [messages.RegisterRequest]: all
// of them or, on an error, none that were not stored already.
func (c *Coordinator) onRegister(ctx context.Context, m *nats.Msg) {
	refuse := func(err error) {
		c.warns.Warn("register refused", "err", err)
		c.respond(m, messages.RegisterResponse{V: messages.Version, Error: wireError(err)})
	}
	var req messages.RegisterRequest
	if err := messages.Decode(m.Data, &req); err != nil {
		refuse(err)
		return
	}
	defs, err := saga.ParseFile(req.Definitions)
	if err != nil {
		refuse(err)
		return
	}
	// The engine is the loop's: the checks, the update and the stores run
	// there, so that no start sees a definition that is not stored, and
	// the stream takes the new steps' commands before any is sent. A
	// registration is rare; the loop waits for it.
	c.enqueue(ctx, func(time.Time, *saga.Outbox) func(error) {
		resp, err := c.register(ctx, defs)
		if err != nil {
			refuse(err)
			return nil
		}
		c.respond(m, resp)
		return nil
	})
}

// register checks defs, adds their steps' subjects to the command stream,
// stores them and registers them, in that order: nothing is stored, and
// nothing runs, unless the stream takes their commands. It runs on the
// loop; the end of ctx, the term's, cuts it short.
//
// A registration refused after the stream's update leaves the stream
// with the new subjects (it never removes one: see
// [Coordinator.ensureCommandStream]); no command is sent on them, but they
// count towards [MaxCommandSubjects].
func (c *Coordinator) register(ctx context.Context, defs []saga.Definition) (messages.RegisterResponse, error) {
	resp := messages.RegisterResponse{V: messages.Version}
	unchanged := make([]bool, len(defs))
	var changed []saga.Definition
	var files [][]byte // changed's, as stored
	for i, d := range defs {
		u, err := c.engine.CheckUpdate(d)
		if err != nil {
			return resp, err
		}
		unchanged[i] = u
		if u {
			continue
		}
		if err := c.checkSize(&d); err != nil {
			return resp, err
		}
		data, err := definitionFile(d)
		if err != nil {
			return resp, fmt.Errorf("register %q: %w", d.Name, err)
		}
		changed, files = append(changed, d), append(files, data)
	}
	if err := c.checkDefinitionBytes(files); err != nil {
		return resp, err
	}
	term := ctx
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	if _, err := c.ensureCommandStream(ctx, changed...); err != nil {
		return resp, fmt.Errorf("register: %w", err)
	}
	// created are the keys this call stored, taken back if a later one
	// fails: a refused file changes nothing.
	var created []string
	for i, d := range changed {
		data := files[i]
		// Create, not Put: a version once stored never changes; a race
		// with another writer of the same version is refused, unless it
		// stored the same content (as an earlier call of this file,
		// refused after, may have).
		key := messages.DefinitionKey(d.Name, version(d))
		if _, err := c.kv.Create(ctx, key, data); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) && c.storedAs(ctx, key, d) {
				continue
			}
			c.unstore(created)
			return resp, fmt.Errorf("register %q version %d: %w", d.Name, version(d), err)
		}
		created = append(created, key)
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
			c.defined(d)
		}
	}
	for _, data := range files {
		c.definitionBytes += int64(len(data))
	}
	c.noteSteps()
	for _, r := range c.roles() {
		if !slices.Contains(before, r) {
			// Registered by now: a term that ends first needs no reader
			// of the role's records, the next one reads every role's.
			select {
			case c.newRoles <- r:
			case <-term.Done():
				return resp, nil
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

// storeDefinitions stores every version of Options.Definitions that the
// bucket does not hold yet, as register stores one: a coordinator started
// later with other versions then still finds the versions the stored
// sagas run by. A version stored already with the same content is left as
// it is; one stored with other content is an error wrapping
// [ErrDefinitionConflict]. It runs once the lease is held, before the
// recovery reads the bucket.
func (c *Coordinator) storeDefinitions(ctx context.Context) error {
	for _, d := range c.opts.Definitions {
		key := messages.DefinitionKey(d.Name, version(d))
		data, err := definitionFile(d)
		if err != nil {
			return fmt.Errorf("store definition %q: %w", d.Name, err)
		}
		if err := c.keepsRoles(ctx, d); err != nil {
			return err
		}
		// Create, not Put: a version once stored never changes.
		_, err = c.kv.Create(ctx, key, data)
		if err == nil {
			c.log.Info("definition stored", "saga", d.Name, "version", version(d))
			continue
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("store definition %q version %d: %w", d.Name, version(d), err)
		}
		if err := c.sameAsStored(ctx, d, key, data); err != nil {
			return err
		}
	}
	return nil
}

// checkDefinitions returns an error wrapping [ErrDefinitionConflict] when
// a version of Options.Definitions is stored with other content, and one
// wrapping [ErrDefinitionTooLarge] when its sagas might not be stored: a
// standby checks so as it sets up, rather than fail when it takes over.
func (c *Coordinator) checkDefinitions(ctx context.Context) error {
	for _, d := range c.opts.Definitions {
		if err := c.checkSize(&d); err != nil {
			return err
		}
		key := messages.DefinitionKey(d.Name, version(d))
		data, err := definitionFile(d)
		if err != nil {
			return fmt.Errorf("definition %q: %w", d.Name, err)
		}
		if err := c.keepsRoles(ctx, d); err != nil {
			return err
		}
		if err := c.sameAsStored(ctx, d, key, data); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
	}
	return nil
}

// keepsRoles returns an error wrapping [ErrDefinitionConflict] when d,
// not stored yet, gives one of its steps to another role than a stored
// version of d does: a step keeps its role in every version, as a
// registration is told ([saga.ErrStepMoved]), since its commands'
// subjects are its role's. A version stored already is left to
// [Coordinator.sameAsStored]: a release before the rule may have stored
// such versions, whose sagas still run.
func (c *Coordinator) keepsRoles(ctx context.Context, d saga.Definition) error {
	own := messages.DefinitionKey(d.Name, version(d))
	if _, err := c.kv.Get(ctx, own); err == nil {
		return nil
	}
	lister, err := c.kv.ListKeysFiltered(ctx, messages.DefinitionKeyPrefix+d.Name+".*")
	if err != nil {
		return fmt.Errorf("stored versions of definition %q: %w", d.Name, err)
	}
	var keys []string
	for key := range lister.Keys() {
		keys = append(keys, key)
	}
	for _, key := range keys {
		if key == own {
			continue
		}
		e, err := c.kv.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("stored definition %s: %w", key, err)
		}
		stored, err := saga.ParseFile(e.Value())
		if err != nil || len(stored) != 1 {
			continue // skipped as the recovery skips it
		}
		one := saga.New(saga.Options{})
		if one.Register(stored[0]) != nil {
			continue
		}
		if _, err := one.CheckUpdate(d); errors.Is(err, saga.ErrStepMoved) {
			return fmt.Errorf("definition %q version %d given at start, beside version %d stored under %s: %w: %w",
				d.Name, version(d), version(stored[0]), key, err, ErrDefinitionConflict)
		}
	}
	return nil
}

// sameAsStored returns nil when key, the stored version of d, holds data or
// the same definition, and an error wrapping [ErrDefinitionConflict] when
// it holds another.
func (c *Coordinator) sameAsStored(ctx context.Context, d saga.Definition, key string, data []byte) error {
	e, err := c.kv.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("stored definition %s: %w", key, err)
	}
	if !bytes.Equal(e.Value(), data) && !c.startedWith(e.Value()) {
		return fmt.Errorf("definition %q version %d given at start differs from the one stored under %s, "+
			"given or registered before; give the changed one a new version: %w", d.Name, version(d), key, ErrDefinitionConflict)
	}
	return nil
}

// storedAs reports whether the bucket holds d, by the engine's rule of
// "the same content", under key.
func (c *Coordinator) storedAs(ctx context.Context, key string, d saga.Definition) bool {
	e, err := c.kv.Get(ctx, key)
	if err != nil {
		return false
	}
	defs, err := saga.ParseFile(e.Value())
	if err != nil || len(defs) != 1 {
		return false
	}
	one := saga.New(saga.Options{})
	if one.Register(defs[0]) != nil {
		return false
	}
	unchanged, err := one.CheckUpdate(d)
	return err == nil && unchanged
}

// unstore deletes keys, definitions a refused registration stored; one
// that cannot be deleted stays, as the same content registered again
// finds it ([Coordinator.storedAs]).
func (c *Coordinator) unstore(keys []string) {
	ctx, cancel := context.WithTimeout(context.Background(), registerTimeout)
	defer cancel()
	for _, key := range keys {
		if err := c.kv.Delete(ctx, key); err != nil {
			c.log.Warn("definition of a refused registration not taken back", "key", key, "err", err)
		}
	}
}

// startedWith reports whether data, a stored definitions file of one
// definition, holds a definition the coordinator was started with, by the
// engine's rule of "the same content": the same file written by another
// release of natsaga may differ in its bytes.
func (c *Coordinator) startedWith(data []byte) bool {
	defs, err := saga.ParseFile(data)
	if err != nil || len(defs) != 1 {
		return false
	}
	unchanged, err := c.engine.CheckUpdate(defs[0])
	return err == nil && unchanged
}

// definitionFile returns the definitions file d is stored as. It returns
// an error when d does not read back from it as itself, as a definition
// whose name breaks the file's grammar does not: the coordinator that
// recovers the bucket would not find the version its sagas run by.
func definitionFile(d saga.Definition) ([]byte, error) {
	data, err := json.Marshal(saga.FileOf([]saga.Definition{d}))
	if err != nil {
		return nil, fmt.Errorf("definition %q: %w", d.Name, err)
	}
	back, err := saga.ParseFile(data)
	if err != nil {
		return nil, fmt.Errorf("definition %q cannot be stored as a definitions file: %w", d.Name, err)
	}
	e := saga.New(saga.Options{})
	if err := e.Register(d); err != nil {
		return nil, err
	}
	if unchanged, err := e.CheckUpdate(back[0]); err != nil || !unchanged {
		return nil, fmt.Errorf("definition %q does not read back as itself from its definitions file: %w", d.Name, saga.ErrInvalidDefinition)
	}
	return data, nil
}

// restoreDefinition registers the definition stored under key, and adds
// its steps' subjects to subs, those the command stream will take. A
// stored version that differs from the one the coordinator was started
// with is an error: one of them needs a new version. So is one whose
// subjects would take the command stream past [MaxCommandSubjects], or
// past the bytes the server's payload limit allows: a coordinator before
// the limit may have stored more than the stream can take.
func (c *Coordinator) restoreDefinition(key string, data []byte, subs *commandSubjects) error {
	defs, err := saga.ParseFile(data)
	if err != nil {
		return fmt.Errorf("stored definition %s: %w", key, err)
	}
	for _, d := range defs {
		if err := c.checkSize(&d); err != nil {
			return fmt.Errorf("stored definition %s: %w", key, err)
		}
		more := subs.lacking(&d)
		if err := subs.checkWith(more, c.maxSubjectBytes()); err != nil && len(more) > 0 {
			return fmt.Errorf("stored definition %s: its %d new command subjects do not fit: %w", key, len(more), err)
		}
		unchanged, err := c.engine.CheckUpdate(d)
		if errors.Is(err, saga.ErrStepMoved) {
			// Stored by a release before the rule: its sagas still run.
			c.log.Warn("stored definition gives a step to another role than another version does; its sagas run as stored, but the two roles' consumers cannot both take the step's commands",
				"key", messages.Clip(key), "err", err)
		}
		if _, err := c.engine.Reload(d); err != nil {
			switch {
			case errors.Is(err, saga.ErrTaken):
				return fmt.Errorf("stored definition %s cannot run beside those given at start or stored before it "+
					"(its name or subject is another definition's): %w", key, err)
			case errors.Is(err, saga.ErrOtherContent):
				return fmt.Errorf("stored definition %s cannot run beside those given at start or stored before it "+
					"(the same version with other content: give one of them a new version): %w", key, err)
			}
			return fmt.Errorf("stored definition %s: %w", key, err)
		}
		subs.add(more...)
		c.defined(d)
		if !unchanged {
			// Held whatever the bound: its sagas may run. A registration
			// is refused while the stored ones take more.
			c.definitionBytes += int64(len(data) / len(defs))
		}
	}
	return nil
}

// ErrDefinitionsFull is wrapped, with [messages.ErrTooLarge], by the error
// of a registration that would take the definitions the coordinator
// holds past Options.MaxDefinitionBytes.
var ErrDefinitionsFull = errors.New("the coordinator holds its limit of definitions")

// checkDefinitionBytes returns an error wrapping [ErrDefinitionsFull] when
// the definitions files of a registration, new to the engine, would take
// what it holds past Options.MaxDefinitionBytes.
func (c *Coordinator) checkDefinitionBytes(files [][]byte) error {
	n := int64(0)
	for _, data := range files {
		n += int64(len(data))
	}
	if n == 0 {
		return nil // nothing new: held already
	}
	if limit := c.opts.MaxDefinitionBytes; limit >= 0 && c.definitionBytes+n > limit {
		return fmt.Errorf("registering %d bytes of new definition versions beside the %d bytes held would pass the coordinator's "+
			"-max-definition-bytes, %d: every version registered is held for the sagas it may run (reuse a version's number "+
			"only for its same content, or raise the limit): %w: %w", n, c.definitionBytes, limit, ErrDefinitionsFull, messages.ErrTooLarge)
	}
	return nil
}

// ErrDefinitionTooLarge is wrapped, with [saga.ErrInvalidDefinition], by
// the error of a definition whose sagas might not fit in one message of
// the server: its steps' names, twice over (a saga rolled back lists its
// completed steps and its compensated ones), take more than an eighth of
// the server's payload limit. A saga's context and its steps' outputs take
// at most half of that limit, its history a quarter (the engine's
// MaxContext is a quarter); the last eighth is left for its ids, reasons
// and ticks. A saga that does not fit could not be stored, and would stop
// the coordinator's every term. [Coordinator.Run] returns it when a
// definition it is started with is so; a registration is refused, and a
// stored definition skipped.
var ErrDefinitionTooLarge = errors.New("definition too large for the server's payload limit")

// checkSize returns an error wrapping [ErrDefinitionTooLarge] when the
// lists of d's steps in a saga may take more than an eighth of the
// server's payload limit.
func (c *Coordinator) checkSize(d *saga.Definition) error {
	n := 0
	for _, st := range d.Steps {
		n += 2 * (len(st.Name) + 3) // "name", in completed_steps and compensated_steps
	}
	if limit := int(c.nc.MaxPayload() / 8); n > limit {
		return fmt.Errorf("definition %q: the names of its %d steps take %d bytes in a saga's completed and compensated steps, "+
			"more than an eighth of the server's payload limit, %d: give it fewer steps or shorter names: %w: %w",
			d.Name, len(d.Steps), n, limit, ErrDefinitionTooLarge, saga.ErrInvalidDefinition)
	}
	return nil
}

// version is d's version, 1 when it says 0.
func version(d saga.Definition) int64 { return max(d.Version, 1) }
