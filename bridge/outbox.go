package bridge

import (
	"sync"

	"github.com/ferrymq/ferrymq/session"
)

// outbox is the in-memory side of one bridge's durable outbox log: it
// numbers new entries, learns when each is durable, keeps the newest
// committed ones in RAM for live forwarding and counts the backlog.
//
// Entries with seq < memFrom are resolved (committed, or failed and never
// written): the forwarder reads those from disk. mem holds the entries
// from memFrom on, in seq order, each pending (its batch not yet durable),
// committed or failed. The forwarder never reads past the first pending
// entry, so it never skips a write still in progress.
//
// Lock order: outbox.mu is a leaf; it is taken under no other bridge lock
// and nothing is called while it is held.
type outbox struct {
	mu      sync.Mutex
	next    uint64  // seq of the next entry
	memFrom uint64  // seq of mem[head]
	mem     []entry // mem[head:] are live
	head    int
	kept    int // committed entries of mem holding a message
	cursor  uint64
	// bytes and count are the backlog: entries offered and not yet
	// confirmed, dropped or failed.
	bytes, count int64
	wake         chan struct{} // 1-buffered: something to read
}

// entry states.
const (
	pending uint8 = iota
	committed
	failed
)

type entry struct {
	seq   uint64
	stamp int64
	size  int64
	msg   *session.Message // nil once trimmed: read it from disk
	state uint8
}

// memWindow is how many committed entries the outbox keeps in RAM ahead
// of the forwarder; older ones are read back from disk.
const memWindow = 1024

func newOutbox(next uint64) *outbox {
	return &outbox{next: next, memFrom: next, cursor: next, wake: make(chan struct{}, 1)}
}

// add numbers a new pending entry (the caller commits it with seq). With
// limit > 0 it refuses (ok false) an entry that would take the backlog
// over limit bytes. over reports whether the backlog is now above max.
func (o *outbox) add(m *session.Message, stamp, limit, max int64) (seq uint64, ok, over bool) {
	size := msgSize(m)
	o.mu.Lock()
	defer o.mu.Unlock()
	if limit > 0 && o.bytes+size > limit {
		return 0, false, true
	}
	seq = o.next
	o.next++
	o.mem = append(o.mem, entry{seq: seq, stamp: stamp, size: size, msg: m})
	o.bytes += size
	o.count++
	return seq, true, max > 0 && o.bytes > max
}

// msgSize is what a message counts against backlog.max_bytes.
func msgSize(m *session.Message) int64 { return int64(len(m.Topic) + len(m.Payload)) }

// resolve records the outcome of seq's commit.
func (o *outbox) resolve(seq uint64, err error) {
	o.mu.Lock()
	if seq >= o.memFrom {
		e := &o.mem[o.head+int(seq-o.memFrom)]
		if err != nil {
			e.state, e.msg = failed, nil
			o.bytes -= e.size
			o.count--
		} else {
			e.state = committed
			o.kept++
		}
		o.trim()
	}
	o.mu.Unlock()
	o.signal()
}

func (o *outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// trim drops resolved entries from the front of mem: failed ones, those
// the forwarder has passed, and the oldest committed ones beyond
// memWindow (they are on disk).
func (o *outbox) trim() {
	for o.head < len(o.mem) {
		e := &o.mem[o.head]
		if e.state == pending || (e.state == committed && e.seq >= o.cursor && o.kept <= memWindow) {
			break
		}
		if e.state == committed {
			o.kept--
		}
		*e = entry{}
		o.head++
		o.memFrom++
	}
	if o.head > 0 && o.head >= len(o.mem)/2 {
		n := copy(o.mem, o.mem[o.head:])
		clear(o.mem[n:])
		o.mem = o.mem[:n]
		o.head = 0
	}
}

// next returns what the forwarder reads at seq cursor: a committed entry
// held in RAM (ok), or diskTo > cursor when [cursor, diskTo) must be read
// from disk, or neither when nothing is ready yet. A failed entry is
// skipped (the returned entry has state failed and no message).
func (o *outbox) take(cursor uint64) (e entry, ok bool, diskTo uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cursor = cursor
	if cursor < o.memFrom {
		return entry{}, false, o.memFrom
	}
	i := o.head + int(cursor-o.memFrom)
	if i >= len(o.mem) || o.mem[i].state == pending {
		return entry{}, false, 0
	}
	e = o.mem[i]
	o.cursor = cursor + 1
	o.trim()
	return e, true, 0
}

// rewind moves the forwarder's position back (after a link loss).
func (o *outbox) rewind(cursor uint64) {
	o.mu.Lock()
	o.cursor = cursor
	o.mu.Unlock()
}

// settle removes entries from the backlog count (confirmed or dropped).
func (o *outbox) settle(n, bytes int64) {
	o.mu.Lock()
	o.count -= n
	o.bytes -= bytes
	o.mu.Unlock()
}

// backlog returns the backlog's size.
func (o *outbox) backlog() (count, bytes int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.count, o.bytes
}
