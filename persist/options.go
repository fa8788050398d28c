package persist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Durability says when a write is acknowledged (its done callback called).
type Durability uint8

const (
	// Sync acknowledges a write after the batch holding it is fsynced: an
	// acknowledged write survives kill -9 and power cuts. Many concurrent
	// writes share one fsync (group commit). The default.
	Sync Durability = iota
	// Batch acknowledges a write once Badger has it in its write-ahead log
	// (written, not fsynced) and fsyncs every BatchInterval. It survives
	// kill -9 (the data is in the OS page cache) but a power cut loses up
	// to BatchInterval of acknowledged writes.
	Batch
	// Memory keeps everything in RAM (Badger's InMemory mode): no file is
	// created, Dir is ignored and a restart starts empty.
	Memory
)

// String returns the configuration name: "sync", "batch" or "memory".
func (d Durability) String() string {
	switch d {
	case Sync:
		return "sync"
	case Batch:
		return "batch"
	case Memory:
		return "memory"
	}
	return fmt.Sprintf("Durability(%d)", uint8(d))
}

// ParseDurability parses "sync", "batch" or "memory".
func ParseDurability(s string) (Durability, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "sync":
		return Sync, nil
	case "batch":
		return Batch, nil
	case "memory":
		return Memory, nil
	}
	return 0, fmt.Errorf("persist: unknown durability %q (want sync, batch or memory)", s)
}

// Defaults applied by Open to zero fields of Options.
const (
	DefaultBatchInterval = 100 * time.Millisecond
	DefaultMaxBatch      = 1000
	DefaultMaxBatchDelay = time.Millisecond
	DefaultGCInterval    = time.Minute
)

// Options configures a Store. The zero value of every field but Dir means
// its default; Dir is required unless Durability is Memory.
type Options struct {
	// Dir is the directory of the Badger store; it is created if missing.
	Dir string
	// Durability is Sync (default), Batch or Memory.
	Durability Durability
	// BatchInterval is how often Batch durability fsyncs (default 100 ms):
	// the window of acknowledged writes a power cut can lose. Unused in
	// the other modes.
	BatchInterval time.Duration
	// MaxBatch is the most operations the writer puts in one commit
	// (default 1000). A request is never split: a batch closes before the
	// request that would take it past MaxBatch, except that a lone request
	// bigger than MaxBatch is committed on its own.
	MaxBatch int
	// MaxBatchDelay is how long the writer keeps a batch open after its
	// first request to gather more (default 1 ms). Negative means no wait:
	// the batch holds whatever was already queued. While a commit is in
	// progress requests queue anyway, so under load batches fill without
	// the delay.
	MaxBatchDelay time.Duration
	// GCInterval is how often the store reclaims space (default 1
	// minute): it flattens the tables when deleted records wait to be
	// dropped (space.go), then rewrites value-log files while at least
	// half of a file is garbage (RunValueLogGC(0.5) until ErrNoRewrite).
	// Negative disables it. Unused with Memory durability.
	GCInterval time.Duration
	// MaxDisk is the most disk space (bytes) the store may use, counted
	// as the allocated blocks of the files in Dir; 0 means no limit.
	// Past it the store is full (see MinFree). Unused with Memory
	// durability.
	MaxDisk int64
	// MinFree is the free space (bytes) to keep on Dir's filesystem
	// (default DefaultMinFree, 64 MiB; negative: no check). Below it, or
	// past MaxDisk, the store is full: requests that store anything fail
	// with an error wrapping session.ErrFull, requests that only delete
	// go on. The limits are checked every few seconds, every second
	// while full; the store leaves the full state by itself when space
	// returns. An ENOSPC from Badger also makes the store full. Unused
	// with Memory durability.
	MinFree int64
	// Logger receives the store's and Badger's messages (default
	// slog.Default()). Badger's info messages are logged at debug level.
	Logger *slog.Logger

	// commitHook, when set (tests only), is called by the writer before
	// each commit with the number of requests in the batch; an error it
	// returns fails the whole batch as a Badger error would.
	commitHook func(requests int) error
	// statfs returns the free bytes of dir's filesystem (default
	// statfsFree; tests replace it).
	statfs func(dir string) (free uint64, err error)
	// quotaTick is the quota goroutine's period (default 1 s).
	quotaTick time.Duration
}

// Validate reports the first invalid field, if any.
func (o *Options) Validate() error {
	switch o.Durability {
	case Sync, Batch:
		if o.Dir == "" {
			return errors.New("persist: Dir is required with durability " + o.Durability.String())
		}
	case Memory:
	default:
		return fmt.Errorf("persist: invalid durability %d", uint8(o.Durability))
	}
	if o.BatchInterval < 0 {
		return fmt.Errorf("persist: BatchInterval %v is negative", o.BatchInterval)
	}
	if o.MaxBatch < 0 {
		return fmt.Errorf("persist: MaxBatch %d is negative", o.MaxBatch)
	}
	if o.MaxDisk < 0 {
		return fmt.Errorf("persist: MaxDisk %d is negative", o.MaxDisk)
	}
	if o.MaxBatchDelay > time.Second {
		return fmt.Errorf("persist: MaxBatchDelay %v is over 1s: every write would wait that long", o.MaxBatchDelay)
	}
	return nil
}

// withDefaults returns o with its zero fields set to their defaults.
func (o Options) withDefaults() Options {
	if o.BatchInterval == 0 {
		o.BatchInterval = DefaultBatchInterval
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.MaxBatchDelay == 0 {
		o.MaxBatchDelay = DefaultMaxBatchDelay
	}
	if o.GCInterval == 0 {
		o.GCInterval = DefaultGCInterval
	}
	if o.MinFree == 0 {
		o.MinFree = DefaultMinFree
	}
	if o.statfs == nil {
		o.statfs = statfsFree
	}
	if o.quotaTick <= 0 {
		o.quotaTick = defaultQuotaTick
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// badgerOptions is the small-memory Badger profile of DESIGN.md §4.
// Badger's defaults are sized for servers (64 MB memtables x5, a 256 MB
// block cache, 1 GB value-log files mmapped at twice their size).
func (o Options) badgerOptions() badger.Options {
	bo := badger.DefaultOptions(o.Dir)
	if o.Durability == Memory {
		bo = badger.DefaultOptions("").WithInMemory(true)
	}
	return bo.
		WithMemTableSize(4 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(6).
		WithValueThreshold(1 << 10).
		WithValueLogFileSize(16 << 20).
		// No compression and no block cache go together: Badger panics
		// with compression and a zero block cache.
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithNumCompactors(2).
		WithMetricsEnabled(false).
		// A garbled value in the value log is an error (ErrCorrupt for
		// its record), not garbage bytes handed to a client.
		WithVerifyValueChecksum(true).
		// The single writer never conflicts with itself.
		WithDetectConflicts(false).
		// Sync: every commit of the writer fsyncs. Batch: the writer
		// calls db.Sync every BatchInterval.
		WithSyncWrites(o.Durability == Sync).
		WithLogger(badgerLogger{o.Logger})
}

// badgerLogger routes Badger's log to slog.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) log(level slog.Level, format string, args []any) {
	if !b.l.Enabled(context.Background(), level) {
		return
	}
	b.l.Log(context.Background(), level, strings.TrimRight(fmt.Sprintf(format, args...), "\n"), "component", "badger")
}

func (b badgerLogger) Errorf(f string, a ...any)   { b.log(slog.LevelError, f, a) }
func (b badgerLogger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a) }
func (b badgerLogger) Infof(f string, a ...any)    { b.log(slog.LevelDebug, f, a) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.log(slog.LevelDebug, f, a) }
