package participant

// maxCached bounds the state values a store keeps in memory (its cache),
// and the keys it keeps a list of settled actions for (see [Store]): a
// var, so that tests can make it small (SetMaxCached).
//
// State keys come from client data (a household id in a saga's context),
// so their number is not the store's to choose: without a bound, a copy
// kept every value it had ever read (340,000 households took a household
// copy from 28 MB to 1.76 GB). 65,536 is far above the keys a role writes
// over and over (a ledger, a budget: a handful), and meant to be above the
// households a copy serves in the few ticks between two steps of one
// household's saga in a floodsim-sized run (about 7,500 sagas a tick), so
// that the later step still finds the value. It costs about 1.4 KiB a key for a household value of 270 bytes
// (value and list together, measured), so about 90 MiB when full. A value
// may be as large as a message, so the values' bytes are bounded too
// (maxCachedBytes). A value let go costs one direct get when it is next
// read, as after [Store.forgetAll], which every conflict already does to
// the whole cache.
var maxCached = 1 << 16

// maxCachedBytes bounds the bytes of the state values the cache holds
// (values, and the outputs their envelopes name: [envelopeSize]): 65,536
// household values of 270 bytes take 17 MiB, and 65,536 of 256 KiB would
// take 16 GiB. A var, as maxCached is.
var maxCachedBytes = 128 << 20

// recent is a map that holds the keys put last: at most max of them, the
// one put longest ago let go first. Each put is noted, in order (as
// kvlog's held values are): a key put again is noted again, its earlier
// note then stale. Beyond max keys, the first notes are taken until a
// key's last note is; and once the notes are twice max, the stale ones
// are dropped, at most once every max puts. With a size, the keys put
// longest ago are let go too while the values' sizes add up to more than
// maxBytes; the key put last is always held. A get costs what a map's
// does; a put an append, amortised, and about three map lookups. The
// caller guards it.
type recent[V any] struct {
	m     map[string]aged[V]
	notes []note // from head on: every key's last put, and stale ones
	head  int
	at    uint64 // the last put's
	max   int
	// size, when set, is a value's size; bytes is the sum of the sizes
	// of the values held.
	size     func(V) int
	maxBytes int
	bytes    int
}

type aged[V any] struct {
	v  V
	at uint64
}

type note struct {
	key string
	at  uint64
}

func newRecent[V any](max int) recent[V] {
	return recent[V]{m: map[string]aged[V]{}, max: max}
}

// newSizedRecent is newRecent that holds values whose sizes add up to at
// most maxBytes, but for the one put last.
func newSizedRecent[V any](max, maxBytes int, size func(V) int) recent[V] {
	r := newRecent[V](max)
	r.size, r.maxBytes = size, maxBytes
	return r
}

// sizeOf is v's size, 0 without a size.
func (r *recent[V]) sizeOf(v V) int {
	if r.size == nil {
		return 0
	}
	return r.size(v)
}

// over reports whether more is held than max keys or maxBytes allow.
func (r *recent[V]) over() bool {
	return len(r.m) > r.max || (r.size != nil && r.bytes > r.maxBytes && len(r.m) > 1)
}

func (r *recent[V]) get(key string) (V, bool) {
	e, ok := r.m[key]
	return e.v, ok
}

// live reports whether n is its key's last put.
func (r *recent[V]) live(n note) bool {
	e, ok := r.m[n.key]
	return ok && e.at == n.at
}

// put sets key's value, as the one put last, and lets the key put
// longest ago go beyond max.
func (r *recent[V]) put(key string, v V) {
	r.at++
	if old, ok := r.m[key]; ok {
		r.bytes -= r.sizeOf(old.v)
	}
	r.m[key] = aged[V]{v: v, at: r.at}
	r.bytes += r.sizeOf(v)
	r.notes = append(r.notes, note{key: key, at: r.at})
	for r.over() {
		n := r.notes[r.head]
		r.notes[r.head] = note{}
		r.head++
		if r.live(n) {
			r.delete(n.key)
		}
	}
	if len(r.notes) > 2*r.max+64 {
		// At most max are live: the next drop is max puts away.
		kept := r.notes[:0]
		for _, n := range r.notes[r.head:] {
			if r.live(n) {
				kept = append(kept, n)
			}
		}
		clear(r.notes[len(kept):])
		r.notes, r.head = kept, 0
	}
}

// delete lets key go; its note goes with the trim.
func (r *recent[V]) delete(key string) {
	if old, ok := r.m[key]; ok {
		r.bytes -= r.sizeOf(old.v)
		delete(r.m, key)
	}
}

// clear lets every key go.
func (r *recent[V]) clear() {
	r.bytes = 0
	clear(r.m)
	clear(r.notes)
	r.notes, r.head = r.notes[:0], 0
}

func (r *recent[V]) len() int { return len(r.m) }
