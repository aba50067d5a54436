package participant

// SetMaxRecordValues bounds the records s holds in memory, as
// Options.MaxRecordValues does for an agent's store. Call it before the
// store's first use.
func SetMaxRecordValues(s *Store, n int) { s.maxRecordValues = n }

// Tick returns a's clock.
func (a *Agent) Tick() int64 { return a.tick.Load() }
