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
