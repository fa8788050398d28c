package persist

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// FormatVersion is the store format this package reads and writes (the
// value of the format key; see the package documentation).
const FormatVersion uint64 = 1

// formatKey holds the format version as an 8-byte big-endian uint64.
var formatKey = []byte("format")

var (
	// ErrClosed is the result of a request made after Close started.
	ErrClosed = errors.New("persist: store closed")
	// ErrNewerFormat is wrapped by the error of Open on a store written
	// by a newer ferrymq.
	ErrNewerFormat = errors.New("persist: store written by a newer ferrymq")
	// ErrTooBig is the result of a request too big for one Badger
	// transaction.
	ErrTooBig = errors.New("persist: request too big for one transaction")
)

// Op is one write: a put of Value at Key, or a delete of Key.
type Op struct {
	Key    []byte
	Value  []byte
	Delete bool

	// rng makes the Op a range delete (see delRange): every key that
	// starts with Key, sorts at or above start (when not nil) and, when
	// end is not nil, below end.
	rng   bool
	start []byte
	end   []byte
}

// Put returns an Op that sets key to value.
func Put(key, value []byte) Op { return Op{Key: key, Value: value} }

// Del returns an Op that deletes key.
func Del(key []byte) Op { return Op{Key: key, Delete: true} }

// delRange returns an Op that deletes every key starting with prefix and,
// unless end is nil, below end. It may cover more keys than one Badger
// transaction holds, so it is not atomic: the writer runs the range
// deletes of a request first, in chunks of separate transactions, then
// commits the request's other ops in one transaction. An interrupted
// range delete leaves a smaller range, and running it again finishes it
// (it is idempotent); requests before and after it are still ordered
// around it. A request's other ops inside the range are lost if they come
// before the range op: callers drop them (a delete that follows a write
// wins), see Store.Commit.
func delRange(prefix, end []byte) Op {
	return Op{Key: prefix, Delete: true, rng: true, end: end}
}

// delRangeFrom is delRange starting at key start (not nil, with prefix
// prefix): the keys below it are neither deleted nor walked.
func delRangeFrom(prefix, start, end []byte) Op {
	return Op{Key: prefix, Delete: true, rng: true, start: start, end: end}
}

// inRange reports whether key is covered by the range delete op.
func (op *Op) inRange(key []byte) bool {
	return bytes.HasPrefix(key, op.Key) &&
		(op.start == nil || bytes.Compare(key, op.start) >= 0) &&
		(op.end == nil || bytes.Compare(key, op.end) < 0)
}

// request is one Apply call on its way to the writer.
type request struct {
	ops  []Op
	done func(error)
	// hasPut: some op is a put (refused while the store is full).
	// hasRange: some op is a range delete (committed on its own).
	hasPut, hasRange bool
	// refused: the writer found the store full for this request.
	refused bool
	// err, when set, fails the request in its turn without writing
	// (a request that could not be built).
	err error
}

// Stats are counters of the writer since Open.
type Stats struct {
	Requests uint64 // requests committed or failed by the writer
	Ops      uint64 // operations in them
	Commits  uint64 // Badger transactions committed (or attempted)
	Errors   uint64 // failed commits
	SyncErrs uint64 // failed periodic fsyncs (Batch durability)
	GCRuns   uint64 // value-log files rewritten by GC
	Flattens uint64 // compactions that dropped deleted records (space.go)
	// RefusedFull counts requests refused because the store was full.
	RefusedFull uint64
}

// Store is the durable store. It is safe for concurrent use.
//
// Goroutines: Open starts up to three, all owned by the Store and stopped
// by Close — the writer (the only goroutine that writes to Badger) and,
// unless Durability is Memory, the disk quota checker and (unless
// GCInterval is negative) the value-log GC ticker.
type Store struct {
	db   *badger.DB
	opts Options
	log  *slog.Logger
	// maxSize and maxCount are Badger's per-transaction limits.
	maxSize, maxCount int64

	// mu guards closed and queue. Apply appends to queue and signals
	// wake; the writer takes the whole queue at once. Nobody holds mu
	// for longer than a slice append or copy.
	mu     sync.Mutex
	closed bool
	queue  []request
	// wake holds a token when the queue may have grown since the writer
	// last took it (1-buffered: Apply never blocks on it).
	wake chan struct{}

	writerDone chan struct{}
	gcStop     chan struct{}
	gcDone     chan struct{}
	quotaStop  chan struct{}
	quotaDone  chan struct{}
	closeOnce  sync.Once
	closeErr   error

	requests, ops, commits, errs, syncErrs, gcRuns, gcAttempts, flattens atomic.Uint64
	syncs                                                                atomic.Uint64 // periodic fsyncs (Batch)

	// The full state (quota.go): set by the quota goroutine or by an
	// ENOSPC commit, read by the writer for every request that puts.
	full        atomic.Bool
	fullReason  atomic.Pointer[string]
	noSpaceAt   atomic.Int64 // Unix nanoseconds of the last ENOSPC, 0: none pending
	refusedFull atomic.Uint64
	// afterBatch, when set, runs on the writer after the done callbacks
	// of each batch (SetAfterBatch).
	afterBatch atomic.Pointer[func()]
	// Between measurements the writer estimates: the last measured use
	// and free space (-1: unknown) and the bytes written since.
	baseUsed, baseFree, grown atomic.Int64
	// quotaMu serializes quota evaluations and guards quotaErrLogged.
	quotaMu        sync.Mutex
	quotaErrLogged bool
}

// Open opens (creating if needed) the store described by opts, checks its
// format version and disk space, and starts its goroutines.
func Open(opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	db, err := badger.Open(opts.badgerOptions())
	if err != nil {
		return nil, fmt.Errorf("persist: open %s: %w", opts.Dir, err)
	}
	if err := checkFormat(db); err != nil {
		db.Close()
		if opts.Dir != "" {
			return nil, fmt.Errorf("persist: %s: %w", opts.Dir, err)
		}
		return nil, err
	}
	s := &Store{
		db:         db,
		opts:       opts,
		log:        opts.Logger.With("component", "persist"),
		maxSize:    db.MaxBatchSize(),
		maxCount:   db.MaxBatchCount(),
		wake:       make(chan struct{}, 1),
		writerDone: make(chan struct{}),
	}
	s.baseUsed.Store(-1)
	s.baseFree.Store(-1)
	if opts.quotaChecked() {
		s.checkQuota() // a store opened on a full disk is full at once
		s.quotaStop = make(chan struct{})
		s.quotaDone = make(chan struct{})
		go s.quotaLoop()
	}
	go s.writer()
	if opts.Durability != Memory && opts.GCInterval > 0 {
		s.gcStop = make(chan struct{})
		s.gcDone = make(chan struct{})
		go s.gcLoop()
	}
	return s, nil
}

// checkFormat writes the format key of a new store and refuses a store
// with a newer format.
func checkFormat(db *badger.DB) error {
	var (
		found bool
		ver   uint64
	)
	err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(formatKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		return item.Value(func(v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("%w: the format key holds %d bytes, want 8", ErrCorrupt, len(v))
			}
			ver = binary.BigEndian.Uint64(v)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("persist: read format version: %w", err)
	}
	switch {
	case !found:
		// A new store. (A store with data but no format key cannot exist:
		// the key is written before any other.)
		return db.Update(func(txn *badger.Txn) error {
			return txn.Set(formatKey, binary.BigEndian.AppendUint64(nil, FormatVersion))
		})
	case ver > FormatVersion:
		return fmt.Errorf("%w: its format version is %d, this binary reads up to %d; upgrade ferrymq or use another directory",
			ErrNewerFormat, ver, FormatVersion)
	case ver < FormatVersion:
		// No older format exists yet; migrations go here.
		return fmt.Errorf("persist: store format version %d has no migration to %d", ver, FormatVersion)
	}
	return nil
}

// Apply queues ops to be committed atomically by the writer and calls done
// exactly once with the result: nil once the ops are as durable as
// Durability promises, else the error (nothing of this request is then
// stored, and the caller must not acknowledge).
//
// Apply never blocks: the queue is unbounded (callers bound what they
// queue). done callbacks are called on the writer goroutine in the order of
// the Apply calls, errors included (ErrTooBig, a failed commit, a refusal
// wrapping session.ErrFull while the store is full and the request puts
// something); done must not block, and it may call Apply (not Close).
// Once Close has started, Apply calls
// done(ErrClosed) itself, before returning. The store keeps ops until done
// is called: the caller must not modify the slices before that. A request
// with no ops is valid: its done comes after every earlier request's done.
func (s *Store) Apply(ops []Op, done func(error)) {
	r := request{ops: ops, done: done}
	for i := range ops {
		r.hasPut = r.hasPut || !ops[i].Delete
		r.hasRange = r.hasRange || ops[i].rng
	}
	s.enqueue(r)
}

// enqueue hands r to the writer, or fails it with ErrClosed.
func (s *Store) enqueue(r request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		r.done(ErrClosed)
		return
	}
	s.queue = append(s.queue, r)
	s.mu.Unlock()
	s.signal()
}

// signal wakes the writer without blocking.
func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Stats returns the writer's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Requests: s.requests.Load(),
		Ops:      s.ops.Load(),
		Commits:  s.commits.Load(),
		Errors:   s.errs.Load(),
		SyncErrs: s.syncErrs.Load(),
		GCRuns:   s.gcRuns.Load(),
		Flattens: s.flattens.Load(),

		RefusedFull: s.refusedFull.Load(),
	}
}

// DB returns the underlying Badger database for reads. Writes must go
// through Apply.
func (s *Store) DB() *badger.DB { return s.db }

// Close stops accepting requests (later ones fail with ErrClosed), lets the
// writer commit every request already accepted, stops the GC and quota
// goroutines, fsyncs and closes Badger. It is safe to call more than once,
// but not from a done callback (it waits for the writer).
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.signal()
		<-s.writerDone
		if s.gcStop != nil {
			close(s.gcStop)
			<-s.gcDone
		}
		if s.quotaStop != nil {
			close(s.quotaStop)
			<-s.quotaDone
		}
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// writer is the state of the writer goroutine: the requests it took from
// the queue and has not finished yet (pending[head:]) and its timers.
type writer struct {
	s          *Store
	pending    []request
	head       int
	pendingOps int // ops in pending[head:]
	timer      *time.Timer
	syncC      <-chan time.Time
}

// writer is the only goroutine that writes to Badger. It gathers requests
// into batches and commits each batch in as few transactions as Badger's
// limits allow (one, unless the batch is huge).
func (s *Store) writer() {
	defer close(s.writerDone)
	w := &writer{s: s, timer: time.NewTimer(time.Hour)}
	w.timer.Stop()
	if s.opts.Durability == Batch {
		t := time.NewTicker(s.opts.BatchInterval)
		defer t.Stop()
		w.syncC = t.C
	}
	for {
		closed := w.take()
		if w.head == len(w.pending) {
			if closed {
				s.sync()
				return
			}
			select {
			case <-s.wake:
			case <-w.syncC:
				s.sync()
			}
			continue
		}
		if !closed {
			w.gather()
		}
		w.commitNext()
		// Under steady load the writer never idles: fsync on time anyway.
		select {
		case <-w.syncC:
			s.sync()
		default:
		}
	}
}

// take moves the requests queued by Apply to pending and reports whether
// Close has started.
func (w *writer) take() (closed bool) {
	s := w.s
	s.mu.Lock()
	for _, r := range s.queue {
		w.pendingOps += len(r.ops)
	}
	w.pending = append(w.pending, s.queue...)
	clear(s.queue)
	if cap(s.queue) > 4096 {
		s.queue = nil // a burst's backlog is not kept
	} else {
		s.queue = s.queue[:0]
	}
	closed = s.closed
	s.mu.Unlock()
	return closed
}

// gather waits up to MaxBatchDelay for more requests while the pending
// ones hold fewer than MaxBatch ops.
func (w *writer) gather() {
	o := w.s.opts
	if o.MaxBatchDelay <= 0 || w.pendingOps >= o.MaxBatch {
		return
	}
	w.timer.Reset(o.MaxBatchDelay)
	defer w.timer.Stop()
	for w.pendingOps < o.MaxBatch {
		select {
		case <-w.s.wake:
			if w.take() {
				return // closing: commit what there is
			}
		case <-w.timer.C:
			return
		}
	}
}

// commitNext commits the next batch of pending requests: as many whole
// requests as fit in MaxBatch ops, at least one.
func (w *writer) commitNext() {
	end, n := w.head, 0
	for end < len(w.pending) {
		k := len(w.pending[end].ops)
		if end > w.head && n+k > w.s.opts.MaxBatch {
			break
		}
		n += k
		end++
	}
	w.s.process(w.pending[w.head:end])
	if f := w.s.afterBatch.Load(); f != nil {
		(*f)()
	}
	clear(w.pending[w.head:end]) // drop references to the callers' ops
	w.head, w.pendingOps = end, w.pendingOps-n
	switch {
	case w.head == len(w.pending):
		w.pending, w.head = w.pending[:0], 0
		if cap(w.pending) > 4096 {
			w.pending = nil
		}
	case w.head > 1024 && 2*w.head > len(w.pending):
		k := copy(w.pending, w.pending[w.head:])
		clear(w.pending[k:])
		w.pending, w.head = w.pending[:k], 0
	}
}

// process commits batch, in order. Consecutive plain requests share
// transactions; a request that fails without writing (it could not be
// built, or it puts while the store is full) or holds a range delete is
// handled on its own, after the requests before it finished.
func (s *Store) process(batch []request) {
	start := 0
	for i := range batch {
		r := &batch[i]
		r.refused = r.err == nil && r.hasPut && s.refusing(r)
		if r.err == nil && !r.hasRange && !r.refused {
			continue
		}
		s.commit(batch[start:i])
		s.processAlone(batch[i : i+1])
		start = i + 1
	}
	s.commit(batch[start:])
}

// processAlone finishes the single request one[0]: fails it or runs its
// range deletes and then commits its other ops.
func (s *Store) processAlone(one []request) {
	r := &one[0]
	switch {
	case r.err != nil:
		s.report(r, r.err)
		return
	case r.refused:
		s.refuse(r)
		return
	}
	for i := range r.ops {
		if op := &r.ops[i]; op.rng {
			if err := s.deleteRange(op.Key, op.start, op.end); err != nil {
				s.finish(one, s.noSpace(err))
				return
			}
		}
	}
	s.commit(one)
}

// sync fsyncs Badger in Batch durability (a no-op otherwise: Sync commits
// are already fsynced, Memory has no files).
func (s *Store) sync() {
	if s.opts.Durability != Batch {
		return
	}
	s.syncs.Add(1)
	if err := s.db.Sync(); err != nil {
		s.syncErrs.Add(1)
		s.log.Error("periodic fsync failed: writes acknowledged since the last fsync may be lost on a power cut", "err", err)
	}
}

// estimate is the size Badger's transaction accounting gives op (Entry
// estimateSizeAndSetThreshold plus 10 bytes of key version).
func estimate(op Op) int64 {
	if op.rng {
		return 0 // run before the transaction, see delRange
	}
	k, v := int64(len(op.Key)), int64(len(op.Value))
	if v < 1<<10 { // the profile's ValueThreshold
		return k + v + 2 + 10
	}
	return k + 12 + 2 + 10
}

// A new Badger write transaction starts its accounting with one entry and
// len("!badger!txn")+10 bytes (for the commit marker it adds).
const (
	txnBaseCount = 1
	txnBaseSize  = 32
)

// commit writes batch in consecutive transactions, each holding whole
// requests and staying within Badger's limits, and calls every request's
// done with the result of the transaction that held it.
func (s *Store) commit(batch []request) {
	for len(batch) > 0 {
		size, count := int64(txnBaseSize), int64(txnBaseCount)
		i := 0
		for ; i < len(batch); i++ {
			var rs, rc int64
			for _, op := range batch[i].ops {
				if !op.rng {
					rs += estimate(op)
					rc++
				}
			}
			if size+rs >= s.maxSize || count+rc >= s.maxCount {
				break
			}
			size += rs
			count += rc
		}
		if i == 0 { // the first request alone is too big
			s.finish(batch[:1], fmt.Errorf("%w: %d ops", ErrTooBig, len(batch[0].ops)))
			batch = batch[1:]
			continue
		}
		s.finish(batch[:i], s.noSpace(s.commitTxn(batch[:i])))
		batch = batch[i:]
	}
}

// commitTxn commits the requests of part in one transaction.
func (s *Store) commitTxn(part []request) (err error) {
	s.commits.Add(1)
	if h := s.opts.commitHook; h != nil {
		if err := h(len(part)); err != nil {
			return err
		}
	}
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	for _, r := range part {
		for _, op := range r.ops {
			switch {
			case op.rng:
				continue
			case op.Delete:
				err = txn.Delete(op.Key)
			default:
				err = txn.Set(op.Key, op.Value)
			}
			if err != nil {
				return fmt.Errorf("persist: %w", err)
			}
		}
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("persist: commit: %w", err)
	}
	return nil
}

// finish reports the result of a commit to every request of part.
func (s *Store) finish(part []request, err error) {
	if err != nil {
		s.errs.Add(1)
		s.log.Error("commit failed; its writers are told", "requests", len(part), "err", err)
	}
	for i := range part {
		s.report(&part[i], err)
	}
}

// report counts r and calls its done with err.
func (s *Store) report(r *request, err error) {
	s.requests.Add(1)
	s.ops.Add(uint64(len(r.ops)))
	r.done(err)
}

// deleteRange deletes every key starting with prefix and, unless end is
// nil, below end, in transactions within Badger's limits (see delRange).
func (s *Store) deleteRange(prefix, start, end []byte) error {
	from := prefix
	if start != nil {
		from = start
	}
	for {
		keys, more, err := s.rangeChunk(prefix, from, end)
		if err != nil {
			return fmt.Errorf("persist: range delete %q: %w", prefix, err)
		}
		if len(keys) > 0 {
			if err := s.deleteKeys(keys); err != nil {
				return err
			}
		}
		if !more {
			return nil
		}
		// Seek just past the last key deleted: the tombstones behind
		// are never walked again.
		from = append(keys[len(keys)-1], 0)
	}
}

// rangeChunk returns the keys from from on that deleteRange(prefix, end)
// covers, as many as one transaction can delete; more reports that the
// range holds further keys.
func (s *Store) rangeChunk(prefix, from, end []byte) (keys [][]byte, more bool, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		size, count := int64(txnBaseSize), int64(txnBaseCount)
		for it.Seek(from); it.ValidForPrefix(prefix); it.Next() {
			k := it.Item().Key()
			if end != nil && bytes.Compare(k, end) >= 0 {
				return nil
			}
			sz := estimate(Del(k))
			if size+sz >= s.maxSize || count+1 >= s.maxCount {
				more = true
				return nil
			}
			size, count = size+sz, count+1
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	return keys, more, err
}

// deleteKeys deletes keys in one transaction.
func (s *Store) deleteKeys(keys [][]byte) error {
	s.commits.Add(1)
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return fmt.Errorf("persist: range delete: %w", err)
		}
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("persist: range delete commit: %w", err)
	}
	return nil
}

// gcLoop runs value-log GC every GCInterval until Close.
func (s *Store) gcLoop() {
	defer close(s.gcDone)
	t := time.NewTicker(s.opts.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-s.gcStop:
			return
		case <-t.C:
			s.compactStale()
			s.runGC()
		}
	}
}

// runGC rewrites value-log files until Badger finds none worth it.
func (s *Store) runGC() {
	for {
		select {
		case <-s.gcStop:
			return
		default:
		}
		s.gcAttempts.Add(1)
		err := s.db.RunValueLogGC(0.5)
		switch {
		case err == nil:
			s.gcRuns.Add(1)
			continue
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
		default:
			s.log.Warn("value-log GC failed", "err", err)
		}
		return
	}
}

// SetAfterBatch registers fn to run on the writer goroutine after the
// done callbacks of each batch of requests: a caller whose callbacks
// produce output (the broker's acknowledgements) can write it once per
// batch instead of once per callback. fn must not block.
func (s *Store) SetAfterBatch(fn func()) { s.afterBatch.Store(&fn) }
