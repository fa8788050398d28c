package persist

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ferrymq/ferrymq/session"
	"github.com/ferrymq/ferrymq/topics"
	"github.com/tinylib/msgp/msgp"
)

var _ session.Store = (*Store)(nil)

// ErrCorrupt is wrapped by the error of a read (Load, LoadRetained,
// ReadQueue, ReadOutbox, OutboxBounds) that met a key or record it cannot
// decode. The error names the key.
var ErrCorrupt = errors.New("persist: corrupt record")

// corrupt returns the error for key whose value or shape is bad.
func corrupt(key []byte, err error) error {
	return fmt.Errorf("%w: key %q: %w", ErrCorrupt, key, err)
}

// Durable returns true: the store keeps what is committed (with Memory
// durability, until Close).
func (s *Store) Durable() bool { return true }

// Commit encodes the changes of b into one request and applies it (see
// Apply): done is called in the order of the Commit and Apply calls, with
// nil once the changes are as durable as Durability promises. Records are
// encoded before Commit returns, so the caller may reuse b and its
// messages at once. An empty b is an ordering barrier.
//
// The plain changes of b are committed in one transaction. DelSession and
// DelOutbox may delete more keys than a transaction holds: they run as
// range deletes just before that transaction, in their own transactions
// (see delRange). Such a batch is therefore not atomic (a crash or error
// may leave the range delete done and the rest not), but it is ordered
// with every other Commit and idempotent, so retrying it is safe. Changes
// of b that come before a DelSession or DelOutbox and fall in its range
// are dropped (the delete wins, as it would in order).
//
// A batch that adds data (see grows) is refused while the store is full
// (the error wraps session.ErrFull); one that deletes, moves a message
// into flight or rewrites a session record is not.
func (s *Store) Commit(b *session.Batch, done func(error)) {
	if b.Empty() {
		s.Apply(nil, done)
		return
	}
	var e encoder
	ops, err := e.encode(b.Changes)
	if err != nil {
		// Fail it in its turn, so done keeps the Commit order.
		s.enqueue(request{done: done, err: err})
		return
	}
	r := request{ops: ops, done: done, hasPut: grows(b.Changes)}
	for i := range ops {
		r.hasRange = r.hasRange || ops[i].rng
	}
	s.enqueue(r)
}

// grows reports whether changes add data that the disk quota must refuse
// while the store is full: new queued messages, retained messages, outbox
// entries, subscriptions and QoS 2 ids. Moving a queued message to the
// inflight set (PutInflight next to its DelQueued), updating its phase and
// rewriting a session record are allowed, or a full store could not drain.
func grows(chs []session.Change) bool {
	for i := range chs {
		switch chs[i].Kind {
		case session.PutQueued, session.PutRetained, session.PutOutbox, session.PutSub, session.PutQoS2In:
			return true
		}
	}
	return false
}

// encoder turns changes into Ops whose keys and values live in one
// buffer (one allocation for a typical batch).
type encoder struct {
	buf   []byte
	spans []span
	msg   MessageRecord
}

// span is one Op as offsets into the encoder's buffer: a put's key is
// buf[a:b] and its value buf[b:c]; a delete's key is buf[a:b]; a range
// delete's prefix is buf[a:b] and its end buf[b:c] (none when b == c),
// and, when d > c, its start buf[c:d].
type span struct {
	kind       spanKind
	a, b, c, d int
}

type spanKind uint8

const (
	spanPut spanKind = iota
	spanDel
	spanRange
)

// encode converts changes into ops, in order, dropping the ops that a
// later range delete of the same batch covers.
func (e *encoder) encode(changes []session.Change) ([]Op, error) {
	e.buf = make([]byte, 0, sizeHint(changes))
	for i := range changes {
		if err := e.change(&changes[i]); err != nil {
			return nil, fmt.Errorf("persist: change %d (kind %d): %w", i, changes[i].Kind, err)
		}
	}
	ops := make([]Op, 0, len(e.spans))
	for _, sp := range e.spans {
		k := e.buf[sp.a:sp.b:sp.b]
		switch sp.kind {
		case spanPut:
			ops = append(ops, Put(k, e.buf[sp.b:sp.c:sp.c]))
		case spanDel:
			ops = append(ops, Del(k))
		case spanRange:
			var end []byte
			if sp.c > sp.b {
				end = e.buf[sp.b:sp.c:sp.c]
			}
			r := delRange(k, end)
			if sp.d > sp.c {
				r = delRangeFrom(k, e.buf[sp.c:sp.d:sp.d], end)
			}
			ops = dropCovered(ops, &r)
			ops = append(ops, r)
		}
	}
	return ops, nil
}

// dropCovered removes from ops the plain ops that r covers.
func dropCovered(ops []Op, r *Op) []Op {
	out := ops[:0]
	for _, op := range ops {
		if op.rng || !r.inRange(op.Key) {
			out = append(out, op)
		}
	}
	clear(ops[len(out):])
	return out
}

// sizeHint estimates the encoded size of changes.
func sizeHint(changes []session.Change) int {
	n := 0
	for i := range changes {
		c := &changes[i]
		n += 48 + 2*len(c.ClientID) + len(c.Sub.Filter) + len(c.Topic) + 2*len(c.Bridge)
		if c.D.Msg != nil {
			n += c.D.Msg.Size() + 2*len(c.D.Msg.Topic)
		}
	}
	return n
}

// put records a put whose key starts at k0 and whose value follows it.
func (e *encoder) put(k0, k1 int) {
	e.spans = append(e.spans, span{kind: spanPut, a: k0, b: k1, c: len(e.buf)})
}

// del records a delete of the key that starts at k0.
func (e *encoder) del(k0 int) {
	e.spans = append(e.spans, span{kind: spanDel, a: k0, b: len(e.buf)})
}

// change appends the ops of one change.
func (e *encoder) change(c *session.Change) error {
	k0 := len(e.buf)
	switch c.Kind {
	case session.PutSession:
		e.buf = appendSessKey(e.buf, c.ClientID)
		return e.putSession(k0, &c.Info)
	case session.DelSession:
		e.buf = appendSessKey(e.buf, c.ClientID)
		e.del(k0)
		for _, p := range clientPrefixes {
			a := len(e.buf)
			e.buf = appendNamePrefix(e.buf, p, c.ClientID)
			e.spans = append(e.spans, span{kind: spanRange, a: a, b: len(e.buf), c: len(e.buf)})
		}
	case session.PutSub:
		e.buf = appendSubKey(e.buf, c.ClientID, c.Sub.Filter)
		return e.putSub(k0, c)
	case session.DelSub:
		e.buf = appendSubKey(e.buf, c.ClientID, c.Sub.Filter)
		e.del(k0)
	case session.PutQueued:
		e.buf = appendQueueKey(e.buf, c.ClientID, c.Seq)
		return e.putDelivery(k0, &c.D)
	case session.DelQueued:
		e.buf = appendQueueKey(e.buf, c.ClientID, c.Seq)
		e.del(k0)
	default:
		return e.change2(c, k0)
	}
	return nil
}

// change2 is change for the kinds after DelQueued.
func (e *encoder) change2(c *session.Change, k0 int) error {
	switch c.Kind {
	case session.PutInflight:
		e.buf = appendInflKey(e.buf, c.ClientID, c.PacketID)
		return e.putInflight(k0, c)
	case session.DelInflight:
		e.buf = appendInflKey(e.buf, c.ClientID, c.PacketID)
		e.del(k0)
	case session.PutQoS2In:
		e.buf = appendQoS2InKey(e.buf, c.ClientID, c.PacketID)
		e.put(k0, len(e.buf)) // empty value
	case session.DelQoS2In:
		e.buf = appendQoS2InKey(e.buf, c.ClientID, c.PacketID)
		e.del(k0)
	case session.PutRetained:
		if c.D.Msg == nil {
			return errors.New("no message")
		}
		e.buf = appendRetKey(e.buf, c.D.Msg.Topic)
		return e.putMessage(k0, c.D.Msg)
	case session.DelRetained:
		e.buf = appendRetKey(e.buf, c.Topic)
		e.del(k0)
	case session.PutOutbox:
		if c.D.Msg == nil {
			return errors.New("no message")
		}
		e.buf = appendOutKey(e.buf, c.Bridge, c.Seq)
		e.msg.Stamp = c.Stamp
		return e.putMessage(k0, c.D.Msg)
	case session.DelOutbox:
		e.delOutbox(k0, c)
	default:
		return errors.New("unknown change kind")
	}
	return nil
}

// marshal appends the encoding of rec as the value of the key
// buf[k0:len(buf)] and records the put.
func (e *encoder) marshal(k0 int, rec interface {
	MarshalMsg([]byte) ([]byte, error)
}) error {
	k1 := len(e.buf)
	var err error
	if e.buf, err = rec.MarshalMsg(e.buf); err != nil {
		return err
	}
	e.put(k0, k1)
	return nil
}

func (e *encoder) putSession(k0 int, in *session.Info) error {
	rec := SessionRecord{Version: in.Version, Expiry: in.Expiry}
	if !in.DisconnectedAt.IsZero() {
		rec.DisconnectedAt = in.DisconnectedAt.UnixNano()
	}
	return e.marshal(k0, &rec)
}

func (e *encoder) putSub(k0 int, c *session.Change) error {
	s := &c.Sub
	rec := SubscriptionRecord{QoS: s.QoS, NoLocal: s.NoLocal, RetainAsPublished: s.RetainAsPublished,
		RetainHandling: s.RetainHandling, ID: s.ID}
	return e.marshal(k0, &rec)
}

func (e *encoder) putDelivery(k0 int, d *session.Delivery) error {
	if d.Msg == nil {
		return errors.New("no message")
	}
	e.msg.setDelivery(d)
	err := e.marshal(k0, &e.msg)
	e.msg = MessageRecord{User: e.msg.User[:0]} // drop references, keep storage
	return err
}

// pointDeletes is the largest DelOutbox range deleted key by key, in the
// batch's own transaction (a larger one is a range delete, see delRange).
const pointDeletes = 4096

// delOutbox encodes DelOutbox: seqs From..Seq-1 of Bridge.
func (e *encoder) delOutbox(k0 int, c *session.Change) {
	if c.From >= c.Seq {
		return
	}
	if c.Seq-c.From <= pointDeletes {
		for seq := c.From; seq < c.Seq; seq++ {
			a := len(e.buf)
			e.buf = appendOutKey(e.buf, c.Bridge, seq)
			e.spans = append(e.spans, span{kind: spanDel, a: a, b: len(e.buf)})
		}
		return
	}
	e.buf = appendNamePrefix(e.buf, prefixOut, c.Bridge)
	k1 := len(e.buf)
	e.buf = appendOutKey(e.buf, c.Bridge, c.Seq)
	sp := span{kind: spanRange, a: k0, b: k1, c: len(e.buf), d: len(e.buf)}
	if c.From > 0 {
		e.buf = appendOutKey(e.buf, c.Bridge, c.From)
		sp.d = len(e.buf)
	}
	e.spans = append(e.spans, sp)
}

func (e *encoder) putMessage(k0 int, m *session.Message) error {
	e.msg.setMessage(m)
	err := e.marshal(k0, &e.msg)
	e.msg = MessageRecord{User: e.msg.User[:0]}
	return err
}

func (e *encoder) putInflight(k0 int, c *session.Change) error {
	rec := InflightRecord{Seq: c.Seq, Phase: uint8(c.Phase)}
	if c.D.Msg != nil {
		e.msg.setDelivery(&c.D)
		rec.Msg = &e.msg
	}
	err := e.marshal(k0, &rec)
	e.msg = MessageRecord{User: e.msg.User[:0]}
	return err
}

// scan calls fn for every item under prefix, in key order, within txn.
// values says whether the values are read (prefetched).
func scan(txn *badger.Txn, prefix string, values bool, fn func(*badger.Item) error) error {
	opts := badger.IteratorOptions{Prefix: []byte(prefix), PrefetchValues: values, PrefetchSize: 64}
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Seek(opts.Prefix); it.ValidForPrefix(opts.Prefix); it.Next() {
		if err := fn(it.Item()); err != nil {
			return err
		}
	}
	return nil
}

// decodeItem decodes the value of item into rec (zero), wrapping any
// failure in ErrCorrupt.
func decodeItem(item *badger.Item, rec msgp.Unmarshaler) error {
	err := item.Value(func(v []byte) error { return unmarshal(rec, v) })
	if err != nil {
		return corrupt(item.Key(), err)
	}
	return nil
}

// Load calls fn for each stored session, in client id order, with its
// subscriptions, inflight messages (in Seq order), incoming QoS 2 ids and
// queue bounds. It reads one consistent snapshot, one pass per key prefix,
// and holds every session (not the queued messages) in memory until fn
// is called. Records under a client that has no session record are
// orphans (left by a crash in the middle of a DelSession): Load logs them
// and deletes them through the writer, ordered before any later Commit.
// A key or record it cannot decode makes it return an error wrapping
// ErrCorrupt.
func (s *Store) Load(fn func(*session.Saved) error) error {
	l := loader{byEsc: make(map[string]*session.Saved), orphans: make(map[string]int)}
	err := s.db.View(func(txn *badger.Txn) error {
		for _, pass := range []func(*badger.Txn) error{l.sessions, l.subs, l.queues, l.inflight, l.qos2in} {
			if err := pass(txn); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("persist: load sessions: %w", err)
	}
	s.deleteOrphans(l.orphans)
	saved := make([]*session.Saved, 0, len(l.byEsc))
	for _, sv := range l.byEsc {
		sv.NextSeq = sv.QueueNext
		for _, f := range sv.Inflight {
			sv.NextSeq = max(sv.NextSeq, f.Seq+1)
		}
		slices.SortStableFunc(sv.Inflight, func(a, b session.SavedInflight) int { return cmp.Compare(a.Seq, b.Seq) })
		saved = append(saved, sv)
	}
	// Escaping changes the order of some ids ("a+" < "a/" but "a%2F" <
	// "a+"), so sort by the ids themselves.
	slices.SortFunc(saved, func(a, b *session.Saved) int { return strings.Compare(a.ClientID, b.ClientID) })
	for _, sv := range saved {
		if err := fn(sv); err != nil {
			return err
		}
	}
	return nil
}

// loader holds the sessions Load has found, by escaped client id, and the
// orphan records (count by escaped client id).
type loader struct {
	byEsc   map[string]*session.Saved
	orphans map[string]int
}

// owner returns the session of the key under prefix, or nil (counting an
// orphan) when the client has no session record.
func (l *loader) owner(key []byte, prefix string) (*session.Saved, []byte, error) {
	esc, rest, ok := splitName(key, prefix)
	if !ok {
		return nil, nil, corrupt(key, errors.New("malformed key"))
	}
	sv := l.byEsc[esc]
	if sv == nil {
		l.orphans[esc]++
	}
	return sv, rest, nil
}

func (l *loader) sessions(txn *badger.Txn) error {
	return scan(txn, prefixSess, true, func(item *badger.Item) error {
		key := item.Key()
		esc := string(key[len(prefixSess):])
		id, err := unescapeName(esc)
		if err != nil {
			return corrupt(key, err)
		}
		var rec SessionRecord
		if err := decodeItem(item, &rec); err != nil {
			return err
		}
		sv := &session.Saved{ClientID: id, Info: session.Info{Version: rec.Version, Expiry: rec.Expiry}}
		if rec.DisconnectedAt != 0 {
			sv.Info.DisconnectedAt = time.Unix(0, rec.DisconnectedAt)
		}
		l.byEsc[esc] = sv
		return nil
	})
}

func (l *loader) subs(txn *badger.Txn) error {
	return scan(txn, prefixSub, true, func(item *badger.Item) error {
		sv, filter, err := l.owner(item.Key(), prefixSub)
		if sv == nil {
			return err
		}
		var rec SubscriptionRecord
		if err := decodeItem(item, &rec); err != nil {
			return err
		}
		sv.Subs = append(sv.Subs, topics.Subscription{
			ClientID: sv.ClientID, Filter: string(filter), QoS: rec.QoS, NoLocal: rec.NoLocal,
			RetainAsPublished: rec.RetainAsPublished, RetainHandling: rec.RetainHandling, ID: rec.ID,
		})
		return nil
	})
}

func (l *loader) queues(txn *badger.Txn) error {
	return scan(txn, prefixQueue, false, func(item *badger.Item) error {
		sv, rest, err := l.owner(item.Key(), prefixQueue)
		if sv == nil {
			return err
		}
		seq, ok := parseSeq(rest)
		if !ok {
			return corrupt(item.Key(), errors.New("malformed seq"))
		}
		if sv.QueueLen == 0 {
			sv.QueueFirst = seq
		}
		sv.QueueNext = seq + 1
		sv.QueueLen++
		return nil
	})
}

func (l *loader) inflight(txn *badger.Txn) error {
	return scan(txn, prefixInfl, true, func(item *badger.Item) error {
		sv, rest, err := l.owner(item.Key(), prefixInfl)
		if sv == nil {
			return err
		}
		pid, ok := parsePID(rest)
		if !ok {
			return corrupt(item.Key(), errors.New("malformed packet id"))
		}
		var rec InflightRecord
		if err := decodeItem(item, &rec); err != nil {
			return err
		}
		f := session.SavedInflight{Seq: rec.Seq}
		f.ID, f.Phase, f.Inflight.Seq = pid, session.Phase(rec.Phase), rec.Seq
		if rec.Msg != nil {
			f.D = rec.Msg.delivery()
		}
		sv.Inflight = append(sv.Inflight, f)
		return nil
	})
}

func (l *loader) qos2in(txn *badger.Txn) error {
	return scan(txn, prefixQoS2In, false, func(item *badger.Item) error {
		sv, rest, err := l.owner(item.Key(), prefixQoS2In)
		if sv == nil {
			return err
		}
		pid, ok := parsePID(rest)
		if !ok {
			return corrupt(item.Key(), errors.New("malformed packet id"))
		}
		sv.QoS2In = append(sv.QoS2In, pid)
		return nil
	})
}

// deleteOrphans logs the orphan records and deletes them through the
// writer (range deletes of every client prefix, as DelSession does).
func (s *Store) deleteOrphans(orphans map[string]int) {
	for esc, n := range orphans {
		ops := make([]Op, 0, len(clientPrefixes))
		for _, p := range clientPrefixes {
			ops = append(ops, delRange([]byte(p+esc+"/"), nil))
		}
		name, _ := unescapeName(esc) // esc came from a key; shown as is if malformed
		if name == "" {
			name = esc
		}
		s.log.Warn("deleting records of a client that has no session record (an interrupted session delete)",
			"client", name, "records", n)
		s.Apply(ops, func(err error) {
			if err != nil {
				s.log.Error("deleting orphan records failed; the next start retries", "client", name, "err", err)
			}
		})
	}
}

// LoadRetained calls fn for each stored retained message, in topic order.
func (s *Store) LoadRetained(fn func(*session.Message) error) error {
	err := s.db.View(func(txn *badger.Txn) error {
		return scan(txn, prefixRet, true, func(item *badger.Item) error {
			var rec MessageRecord
			if err := decodeItem(item, &rec); err != nil {
				return err
			}
			m := rec.message()
			if m.Topic == "" {
				m.Topic = string(item.Key()[len(prefixRet):])
			}
			return fn(m)
		})
	})
	if err != nil {
		return fmt.Errorf("persist: load retained: %w", err)
	}
	return nil
}

// ReadQueue calls fn, in seq order, for at most max (no limit when max <=
// 0) queued deliveries of clientID with from <= seq < to. Only committed
// records exist to be read; seqs missing in the range are skipped. fn runs
// inside a read transaction and must not block for long.
func (s *Store) ReadQueue(clientID string, from, to uint64, max int, fn func(seq uint64, d session.Delivery)) error {
	if from >= to {
		return nil
	}
	prefix := appendNamePrefix(nil, prefixQueue, clientID)
	err := s.readSeqs(prefix, from, to, max, func(seq uint64, rec *MessageRecord) bool {
		fn(seq, rec.delivery())
		return true
	})
	if err != nil {
		return fmt.Errorf("persist: read queue of %q: %w", clientID, err)
	}
	return nil
}

// ReadOutbox calls fn, in seq order, for the outbox entries of bridge
// from seq from on, at most max of them (no limit when max <= 0), until
// fn returns false. stamp is when the entry entered the outbox (Unix
// nanoseconds, 0 if unknown).
func (s *Store) ReadOutbox(bridge string, from uint64, max int, fn func(seq uint64, stamp int64, m *session.Message) bool) error {
	prefix := appendNamePrefix(nil, prefixOut, bridge)
	err := s.readSeqs(prefix, from, math.MaxUint64, max, func(seq uint64, rec *MessageRecord) bool {
		return fn(seq, rec.Stamp, rec.message())
	})
	if err != nil {
		return fmt.Errorf("persist: read outbox of %q: %w", bridge, err)
	}
	return nil
}

// readSeqs decodes the MessageRecords under prefix whose 8-byte seq
// suffix is in [from, to), for at most max (<= 0: all) of them, until fn
// returns false.
func (s *Store) readSeqs(prefix []byte, from, to uint64, max int, fn func(uint64, *MessageRecord) bool) error {
	start := binary.BigEndian.AppendUint64(slices.Clip(prefix), from)
	size := 64
	if max > 0 {
		size = min(max, size)
	}
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: size})
		defer it.Close()
		n := 0
		for it.Seek(start); it.ValidForPrefix(prefix) && (max <= 0 || n < max); it.Next() {
			item := it.Item()
			seq, ok := parseSeq(item.Key()[len(prefix):])
			if !ok {
				return corrupt(item.Key(), errors.New("malformed seq"))
			}
			if seq >= to {
				return nil
			}
			var rec MessageRecord
			if err := decodeItem(item, &rec); err != nil {
				return err
			}
			n++
			if !fn(seq, &rec) {
				return nil
			}
		}
		return nil
	})
}

// OutboxBounds returns the seq of the first outbox entry of bridge, the
// seq after its last, and how many entries it holds (all 0 when empty).
// It reads keys only.
func (s *Store) OutboxBounds(bridge string) (first, next uint64, n int, err error) {
	prefix := string(appendNamePrefix(nil, prefixOut, bridge))
	err = s.db.View(func(txn *badger.Txn) error {
		return scan(txn, prefix, false, func(item *badger.Item) error {
			seq, ok := parseSeq(item.Key()[len(prefix):])
			if !ok {
				return corrupt(item.Key(), errors.New("malformed seq"))
			}
			if n == 0 {
				first = seq
			}
			next, n = seq+1, n+1
			return nil
		})
	})
	if err != nil {
		return 0, 0, 0, fmt.Errorf("persist: outbox bounds of %q: %w", bridge, err)
	}
	return first, next, n, nil
}
