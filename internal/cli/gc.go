package cli

import "runtime/debug"

// GCPercent is the garbage collector's target, as GOGC would set it, that
// natsaga's long-lived programs run with when the environment does not
// set GOGC.
//
// Go's default, 100, collects whenever the heap has doubled since the
// last collection. natsaga's processes keep small live heaps (the
// coordinator about 1.6 KB a saga in flight, an agent a few MB) and
// allocate for every message, so at 100 they collect many times a second:
// a profile of a 10,000-household floodsim run found 6 to 12 % of each
// process's CPU in the collector's background workers, and more in
// assists. At 400 the heap may grow to five times its live size between
// collections instead of twice; [TuneGC] bounds that with a soft memory
// limit. BENCHMARKS.md ("Collecting less often") has the runs that chose
// 400.
const GCPercent = 400

// TuneGC sets the collector's target to [GCPercent] unless getenv("GOGC")
// sets one, and returns the target in force. Unless getenv("GOMEMLIMIT")
// sets a memory limit, it also sets a soft one of three quarters of the
// host's memory (the cgroup's limit, else the machine's): near it the
// collector runs as often as it must whatever the target, so that a
// process whose live heap is large (floodsim at 100,000 households) does
// not outgrow the host for the sake of collecting less often. Three
// quarters leaves the other processes of a run room; half cost a
// 100,000-household floodsim run 8 % of its CPU (BENCHMARKS.md).
func TuneGC(getenv func(string) string) int {
	if getenv("GOMEMLIMIT") == "" {
		if m := hostMemory(); m > 0 {
			tunedLimit.Store(m / 4 * 3)
			debug.SetMemoryLimit(m / 4 * 3)
		}
	}
	if getenv("GOGC") != "" {
		// The runtime read it at start; reading the target means
		// setting it, so it is set back at once.
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		return p
	}
	debug.SetGCPercent(GCPercent)
	return GCPercent
}
