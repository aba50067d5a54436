package participant

import "time"

// SetMaxRecordValues bounds the records s holds in memory, as
// Options.MaxRecordValues does for an agent's store. Call it before the
// store's first use.
func SetMaxRecordValues(s *Store, n int) { s.maxRecordValues = n }

// Tick returns a's clock.
func (a *Agent) Tick() int64 { return a.tick.Load() }

// SetStoreCheck spaces an agent's looks at its role's streams d apart
// until the test ends.
func SetStoreCheck(t interface{ Cleanup(func()) }, d time.Duration) {
	was := storeCheck
	storeCheck = d
	t.Cleanup(func() { storeCheck = was })
}

// SetSlowHandler makes the agents made from now on say a handler call
// that runs for after, looking every every, until the test ends.
func SetSlowHandler(t interface{ Cleanup(func()) }, after, every time.Duration) {
	wasAfter, wasEvery := slowHandler, slowCheck
	slowHandler, slowCheck = after, every
	t.Cleanup(func() { slowHandler, slowCheck = wasAfter, wasEvery })
}

// SetMaxCached bounds the state values, and the settled lists, of the
// stores opened from now on to n keys each, until the test ends.
func SetMaxCached(t interface{ Cleanup(func()) }, n int) {
	was := maxCached
	maxCached = n
	t.Cleanup(func() { maxCached = was })
}

// Cached returns how many keys s holds a value of in memory, and a list
// of settled actions for.
func Cached(s *Store) (values, settled int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cache.len(), s.settled.len()
}

// SetExclusive makes s its role's only writer, trusting its cache, as a
// serial copy's store is.
func SetExclusive(s *Store) { s.exclusive = true }

// SetCopiesRecheck sets how long after it announces itself an agent asks
// its role's copies again whether they run serial alike, and returns a
// func that puts it back.
func SetCopiesRecheck(d time.Duration) (undo func()) {
	before := copiesRecheck
	copiesRecheck = d
	return func() { copiesRecheck = before }
}
