package persist

// Damaged stores: detection, quarantine, refusal (DESIGN.md §4: "a store
// that fails to open because it is corrupt is moved aside (kept, named in
// the log) and the broker starts with an empty one, unless the operator
// asks it to refuse").

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/dgraph-io/ristretto/v2/z"
	"golang.org/x/sys/unix"
)

// ErrStoreCorrupt is wrapped by the error of OpenOrQuarantine (and
// VerifyStore) when the store's files are damaged: with refuse set, that
// error is returned instead of moving the store aside.
var ErrStoreCorrupt = errors.New("persist: store is damaged")

// quarantineTimeFormat is the UTC timestamp in a quarantined directory's
// name: <dir>.corrupt-20260102T150405Z.
const quarantineTimeFormat = "20060102T150405Z"

// OpenOrQuarantine opens the store like Open, but first checks that its
// files are intact (VerifyStore) and treats a damaged store specially:
//
//   - refuse false: the directory is renamed to <dir>.corrupt-<UTC time>
//     (kept for inspection, never deleted), the new name is logged at error
//     level and returned as moved, and a new empty store is opened at Dir.
//   - refuse true: nothing is moved and the error (wrapping
//     ErrStoreCorrupt and naming the directory) is returned.
//
// "Damaged" means the files themselves are bad: a garbled or truncated
// table (.sst) that the MANIFEST references, a garbled, truncated-to-nothing
// or missing MANIFEST while data files exist, tables the MANIFEST of a
// cleanly closed store does not know, a garbled KEYREGISTRY, garbled or
// truncated value-log (.vlog) or write-ahead-log (.mem) headers, values
// whose checksum fails, a panic inside Badger while opening, or an error
// wrapping ErrCorrupt. Everything else is returned as is and never moves
// the store: the directory locked by another process, permission denied,
// I/O errors, no space or memory, a store written by a newer ferrymq
// (ErrNewerFormat) or a newer Badger, and errors not known to mean damage.
// A log (.mem or .vlog) whose tail was cut by a crash is not damage: Badger
// truncates it to its last complete entry and the store opens with what was
// committed before it.
//
// Memory durability has no files: OpenOrQuarantine is then Open.
func OpenOrQuarantine(opts Options, refuse bool) (s *Store, moved string, err error) {
	return OpenOrQuarantineCheck(opts, refuse, nil)
}

// OpenOrQuarantineCheck is OpenOrQuarantine with a check run on the opened
// store, typically the broker's Load of its sessions and retained messages.
// If check returns an error for which IsCorrupt is true (a record that
// does not decode: ErrCorrupt), the store is closed and handled as a
// damaged one; with refuse false check is then run again on the new empty
// store. Any other error from check closes the store and is returned.
func OpenOrQuarantineCheck(opts Options, refuse bool, check func(*Store) error) (s *Store, moved string, err error) {
	if err := opts.Validate(); err != nil {
		return nil, "", err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.Durability == Memory {
		s, err := Open(opts)
		if err == nil {
			err = runCheck(s, check)
		}
		return s, "", err
	}
	dir := filepath.Clean(opts.Dir)

	clean, err := verifyStore(opts)
	var watch *unreadableWatch
	if err == nil {
		o := opts
		if !clean {
			// The values of a store that was not closed cleanly can only
			// be checked once Badger has replayed its logs, through the
			// store's own Badger, which reports an unreadable value only
			// in its log.
			watch = &unreadableWatch{}
			o.Logger = slog.New(watch.wrap(log.Handler()))
		}
		s, err = openRecovered(o)
	}
	if err == nil && watch != nil {
		if err = checkReplayed(s, watch, log); err != nil {
			s.Close()
			err = fmt.Errorf("%w: %s: %w", ErrStoreCorrupt, dir, err)
		}
	}
	if err == nil {
		err = runCheck(s, check)
	}
	if err == nil {
		return s, "", nil
	}
	if !IsCorrupt(err) {
		return nil, "", err
	}
	if refuse {
		if !errors.Is(err, ErrStoreCorrupt) {
			err = fmt.Errorf("%w: %s: %w", ErrStoreCorrupt, dir, err)
		}
		return nil, "", fmt.Errorf("%w (refusing to start: move or remove the directory, or let ferrymq quarantine it)", err)
	}
	moved, qerr := Quarantine(dir, time.Now())
	if qerr != nil {
		return nil, "", fmt.Errorf("%w; moving it aside failed: %w", err, qerr)
	}
	log.Error("store is damaged: moved it aside and started with an empty store",
		"component", "persist", "dir", dir, "moved_to", moved, "err", err)
	s, err = openRecovered(opts)
	if err == nil {
		err = runCheck(s, check)
	}
	if err != nil {
		return nil, moved, fmt.Errorf("persist: new store after moving the damaged one to %s: %w", moved, err)
	}
	return s, moved, nil
}

// runCheck runs check on s, closing s if it fails; a panic in check is a
// damaged store (a decoder meeting garbage).
func runCheck(s *Store, check func(*Store) error) (err error) {
	if check == nil {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: panic while reading it: %v", ErrStoreCorrupt, r)
		}
		if err != nil {
			s.Close()
		}
	}()
	return check(s)
}

// openRecovered is Open with a panic inside Badger (it opens in the
// caller's goroutine) turned into a damaged-store error.
func openRecovered(opts Options) (s *Store, err error) {
	defer func() {
		if r := recover(); r != nil {
			s = nil
			err = fmt.Errorf("%w: %s: Badger panicked while opening it: %v", ErrStoreCorrupt, opts.Dir, firstLine(r))
		}
	}()
	return Open(opts)
}

// Quarantine renames dir to <dir>.corrupt-<now in UTC> (with a -N suffix
// if that name exists) and returns the new name. dir must not be in use.
func Quarantine(dir string, now time.Time) (string, error) {
	dir = filepath.Clean(dir)
	base := dir + ".corrupt-" + now.UTC().Format(quarantineTimeFormat)
	target := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
			break
		}
		target = base + "-" + strconv.Itoa(i)
	}
	if err := os.Rename(dir, target); err != nil {
		return "", fmt.Errorf("persist: move damaged store aside: %w", err)
	}
	if d, err := os.Open(filepath.Dir(dir)); err == nil {
		d.Sync() // make the rename durable; best effort
		d.Close()
	}
	return target, nil
}

// IsCorrupt reports whether err (from Open, OpenOrQuarantine, VerifyStore
// or a read) means the store's data is damaged, as opposed to a problem
// of the environment (lock, permissions, I/O, space) or of versions.
// Badger flattens most of its errors into strings, so besides
// ErrStoreCorrupt, ErrCorrupt and Badger's sentinel errors the decision
// uses the wording of Badger v4.9.6's errors.
func IsCorrupt(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrStoreCorrupt) || errors.Is(err, ErrCorrupt) {
		return true
	}
	if notDamage(err) {
		return false
	}
	if errors.Is(err, y.ErrChecksumMismatch) || errors.Is(err, badger.ErrEncryptionKeyMismatch) ||
		errors.Is(err, badger.ErrInvalidDataKeyID) {
		return true
	}
	return damageRE.MatchString(err.Error())
}

// notDamage reports errors that must never move a store aside.
func notDamage(err error) bool {
	if errors.Is(err, ErrNewerFormat) || errors.Is(err, fs.ErrPermission) || errors.Is(err, badger.ErrValueLogSize) {
		return true
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.EACCES, syscall.EPERM, syscall.EAGAIN, syscall.ENOSPC, syscall.EDQUOT, syscall.ENOMEM,
			syscall.EROFS, syscall.EIO, syscall.EMFILE, syscall.ENFILE, syscall.EBUSY:
			return true
		}
	}
	return environmentRE.MatchString(err.Error())
}

var (
	// environmentRE matches Badger's (flattened) errors about the
	// environment or versions, and the strerror texts of the errnos above.
	environmentRE = regexp.MustCompile(`Cannot acquire directory lock|` +
		`permission denied|operation not permitted|resource temporarily unavailable|` +
		`no space left on device|disk quota exceeded|cannot allocate memory|read-only file system|` +
		`input/output error|too many open files|device or resource busy|` +
		`manifest has unsupported version|external magic number doesn't match|` +
		`store written by a newer ferrymq`)
	// damageRE matches Badger v4.9.6's errors about bad file contents.
	damageRE = regexp.MustCompile(`checksum mismatch|checksum validation failed|` +
		`manifest has bad magic|Manifest file might be corrupted|MANIFEST invalid|` +
		`MANIFEST removes non-existing table|invalid manifestChange op|` +
		`file does not exist for table|failed to initialize table|failed to read index|` +
		`Data corrupted|block out of index|invalid checksum length|` +
		`Encryption key mismatch|Invalid datakey id|Invalid read|` +
		`proto: cannot parse|persist: format key holds`)
)

// VerifyStore checks the files of the store in opts.Dir without
// modifying them and returns an error wrapping ErrStoreCorrupt if they are
// damaged (nil for a missing or empty directory, a new store). It holds
// the directory lock Badger uses while it reads, so it fails (without
// ErrStoreCorrupt) if another process has the store open.
//
// It checks, in the calling goroutine and recovering Badger's panics:
// the MANIFEST (present whenever data files are, and readable), that every
// table it references exists, opens and passes the checksum of every
// block, and, in a store that was closed cleanly (no .mem files), that
// there are no tables the MANIFEST does not know (Badger would delete
// them) and that every value reads back with a valid checksum (a
// read-only Badger scan). Opening Badger itself would open tables in
// goroutines of its own, where a panic on a damaged table cannot be
// recovered: this check is what keeps such a table from crashing the
// process. It reads every table once, and every value of a cleanly closed
// store once.
func VerifyStore(opts Options) error {
	_, err := verifyStore(opts)
	return err
}

// verifyStore is VerifyStore; clean reports a store that was closed
// cleanly (or is new).
func verifyStore(opts Options) (clean bool, err error) {
	if opts.Durability == Memory {
		return true, nil
	}
	opts = opts.withDefaults()
	dir := filepath.Clean(opts.Dir)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("persist: %w", err)
	}
	var (
		ssts        = map[uint64]string{}
		vlogs, mems int
		manifest    bool
	)
	for _, e := range ents {
		name := e.Name()
		switch {
		case name == "MANIFEST":
			manifest = true
		case strings.HasSuffix(name, ".sst"):
			if id, ok := table.ParseFileID(name); ok {
				ssts[id] = filepath.Join(dir, name)
			}
		case strings.HasSuffix(name, ".vlog"):
			vlogs++
		case strings.HasSuffix(name, ".mem"):
			mems++
		}
	}
	if len(ssts) == 0 && vlogs == 0 && mems == 0 {
		return true, nil // new, or never held data: Badger (re)creates what it needs
	}
	clean = mems == 0
	corrupt := func(format string, args ...any) (bool, error) {
		return clean, fmt.Errorf("%w: %s: %s", ErrStoreCorrupt, dir, fmt.Sprintf(format, args...))
	}
	if !manifest {
		// Badger would start a new MANIFEST and delete every table.
		return corrupt("the MANIFEST is missing but %d tables, %d value logs and %d write-ahead logs exist", len(ssts), vlogs, mems)
	}

	unlock, err := lockDir(dir)
	if err != nil {
		return clean, err
	}
	bo := opts.badgerOptions()
	m, err := readManifest(filepath.Join(dir, "MANIFEST"), bo)
	if err != nil {
		unlock()
		if notDamage(err) {
			return clean, fmt.Errorf("persist: %s: MANIFEST: %w", dir, err)
		}
		return corrupt("MANIFEST: %v", err)
	}
	for id, tm := range m.Tables {
		path, ok := ssts[id]
		if !ok {
			unlock()
			return corrupt("table %d, listed in the MANIFEST, is missing", id)
		}
		if err := verifyTable(path, tm, bo); err != nil {
			unlock()
			if notDamage(err) {
				return clean, fmt.Errorf("persist: %s: %w", path, err)
			}
			return corrupt("table %s: %v", filepath.Base(path), err)
		}
	}
	if clean {
		for id := range ssts {
			if _, ok := m.Tables[id]; !ok {
				unlock()
				return corrupt("table %d is not in the MANIFEST of a cleanly closed store (entries of the MANIFEST are lost)", id)
			}
		}
	}
	unlock()
	if clean {
		// Badger reads a value log cut short or garbled back as wrong
		// bytes, silently, unless it verifies value checksums: read every
		// value once, read-only, before Badger may truncate anything.
		return true, verifyValues(dir, bo, opts.Logger)
	}
	return false, nil
}

// lockDir takes the exclusive lock Badger takes (flock on the directory).
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("persist: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("persist: %s: Cannot acquire directory lock: another process is using this store: %w", dir, err)
	}
	return func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// readManifest replays the MANIFEST read-only.
func readManifest(path string, bo badger.Options) (m badger.Manifest, err error) {
	f, err := os.Open(path)
	if err != nil {
		return m, err
	}
	defer f.Close()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic while reading it: %v", firstLine(r))
		}
	}()
	m, _, err = badger.ReplayManifestFile(f, bo.ExternalMagicVersion, bo)
	return m, err
}

// verifyTable opens one table read-only and checks every block. It never
// calls DecrRef, which deletes the file.
func verifyTable(path string, tm badger.TableManifest, bo badger.Options) (err error) {
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		if errors.Is(err, syscall.EINVAL) { // mmap of an empty file
			return fmt.Errorf("empty file: %w", err)
		}
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in Badger while reading it: %v", firstLine(r))
		}
		func() {
			defer func() { recover() }()
			mf.Close(-1) // -1: do not truncate
		}()
	}()
	if tm.KeyID != 0 {
		return fmt.Errorf("encrypted with key %d, but ferrymq never encrypts: Invalid datakey id", tm.KeyID)
	}
	t, err := table.OpenTable(mf, table.Options{
		ReadOnly:           true,
		TableSize:          uint64(bo.BaseTableSize),
		BlockSize:          bo.BlockSize,
		BloomFalsePositive: bo.BloomFalsePositive,
		ChkMode:            options.NoVerification,
		Compression:        tm.Compression,
	})
	if err != nil {
		return err
	}
	return t.VerifyChecksum()
}

// verifyValues opens the store read-only with value checksums on and
// reads every key and value.
func verifyValues(dir string, bo badger.Options, log *slog.Logger) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: Badger panicked reading it: %v", ErrStoreCorrupt, dir, firstLine(r))
		}
	}()
	watch := &unreadableWatch{}
	db, err := badger.Open(bo.WithReadOnly(true).WithVerifyValueChecksum(true).
		WithLogger(verifyLogger{log: log, watch: watch}))
	if err != nil && (errors.Is(err, badger.ErrTruncateNeeded) || strings.Contains(err.Error(), "truncate required")) {
		// A crash may leave a log with a torn tail, but a clean close
		// leaves every log exactly as long as its entries.
		return fmt.Errorf("%w: %s: a log of a cleanly closed store is cut short or garbled: %v", ErrStoreCorrupt, dir, err)
	}
	if err != nil {
		if IsCorrupt(err) {
			return fmt.Errorf("%w: %s: %v", ErrStoreCorrupt, dir, err)
		}
		return fmt.Errorf("persist: %s: %w", dir, err)
	}
	defer db.Close()
	err = scanValues(db, watch, nil)
	if err == nil {
		return nil
	}
	if notDamage(err) {
		return fmt.Errorf("persist: %s: %w", dir, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrStoreCorrupt, dir, err)
}

// checkReplayed reads every value of a store opened after an unclean
// shutdown. Values Badger cannot read are damage with Sync durability:
// Badger fsyncs the value log before it appends the pointers to its
// write-ahead log. With Batch durability nothing orders the two files'
// writeback, so a power cut may keep a pointer to a value that never
// reached the disk, a write that had not been fsynced yet: those keys are
// deleted (and logged) rather than the store moved aside.
func checkReplayed(s *Store, watch *unreadableWatch, log *slog.Logger) error {
	var lost [][]byte
	err := scanValues(s.db, watch, func(key []byte) { lost = append(lost, key) })
	if err == nil || s.opts.Durability != Batch || len(lost) == 0 || int64(len(lost)) != watch.n.Load() {
		return err
	}
	for len(lost) > 0 {
		n := min(len(lost), 500)
		ops := make([]Op, n)
		for i, k := range lost[:n] {
			ops[i] = Del(k)
		}
		done := make(chan error, 1)
		s.Apply(ops, func(err error) { done <- err })
		if err := <-done; err != nil {
			return fmt.Errorf("deleting keys whose values were lost: %w", err)
		}
		lost = lost[n:]
	}
	log.Error("unclean shutdown with batch durability: values written since the last fsync were lost; their keys are deleted",
		"component", "persist", "dir", s.opts.Dir, "keys", watch.n.Load(), "first", watch.firstMsg())
	return nil
}

// scanValues reads every key's latest value. Badger v4 does not return
// the error of a value it cannot read (a value-log entry missing, cut off
// or, with VerifyValueChecksum, garbled): it logs "Unable to read" and
// yields an empty value. watch counts those log lines.
func scanValues(db *badger.DB, watch *unreadableWatch, unreadable func(key []byte)) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in Badger while reading it: %v", firstLine(r))
		}
	}()
	before := watch.n.Load()
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			n := watch.n.Load()
			if err := item.Value(func([]byte) error { return nil }); err != nil {
				return fmt.Errorf("key %q: %w", item.Key(), err)
			}
			if unreadable != nil && watch.n.Load() != n {
				unreadable(item.KeyCopy(nil))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if n := watch.n.Load() - before; n > 0 {
		return fmt.Errorf("%d values cannot be read from the value log (first: %s)", n, watch.firstMsg())
	}
	return nil
}

// unreadableWatch counts Badger's "Unable to read" log messages.
type unreadableWatch struct {
	n     atomic.Int64
	first atomic.Value // string
}

func (w *unreadableWatch) see(msg string) bool {
	if !strings.HasPrefix(msg, "Unable to read") {
		return false
	}
	if w.n.Add(1) == 1 {
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		w.first.Store(msg)
	}
	return true
}

func (w *unreadableWatch) firstMsg() string {
	s, _ := w.first.Load().(string)
	return s
}

// wrap returns a handler passing every record to h and counting Badger's
// "Unable to read" messages.
func (w *unreadableWatch) wrap(h slog.Handler) slog.Handler { return watchHandler{h, w} }

type watchHandler struct {
	slog.Handler
	w *unreadableWatch
}

func (h watchHandler) Enabled(ctx context.Context, l slog.Level) bool {
	// Badger's errors must reach Handle even if h would drop them.
	return l >= slog.LevelError || h.Handler.Enabled(ctx, l)
}

func (h watchHandler) Handle(ctx context.Context, r slog.Record) error {
	h.w.see(r.Message)
	if !h.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h watchHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return watchHandler{h.Handler.WithAttrs(as), h.w}
}

func (h watchHandler) WithGroup(name string) slog.Handler {
	return watchHandler{h.Handler.WithGroup(name), h.w}
}

// verifyLogger is Badger's logger while VerifyStore reads the store: its
// messages go to debug level (the verdict is logged once, by the caller)
// and unreadable values are counted.
type verifyLogger struct {
	log   *slog.Logger
	watch *unreadableWatch
}

func (b verifyLogger) logf(format string, args []any) {
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	b.watch.see(msg)
	if b.log != nil && b.log.Enabled(context.Background(), slog.LevelDebug) {
		b.log.Debug(msg, "component", "badger", "phase", "verify")
	}
}

func (b verifyLogger) Errorf(f string, a ...any)   { b.logf(f, a) }
func (b verifyLogger) Warningf(f string, a ...any) { b.logf(f, a) }
func (b verifyLogger) Infof(f string, a ...any)    { b.logf(f, a) }
func (b verifyLogger) Debugf(f string, a ...any)   { b.logf(f, a) }

// firstLine condenses a recovered panic value to one line of at most 300
// bytes (Badger panics with long multi-line dumps).
func firstLine(r any) string {
	s := strings.Join(strings.Fields(fmt.Sprint(r)), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
