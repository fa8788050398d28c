package persist

// "Space comes back": a million deliveries are queued for one session and
// then drained the way the broker drains a durable queue, and the disk use
// of the store is watched until it falls below a tenth of its peak. This
// is a measurement, not a test: it prints figures and fails only on
// errors. Run it on demand (each variant takes one to two minutes):
//
//	go test ./persist -run '^$' -bench BenchmarkSpaceComesBack/as-is -benchtime 1x -v
//
// FERRYMQ_SPACE_MSGS (default 1000000), FERRYMQ_SPACE_PAYLOAD (bytes,
// default 64; above 1 KiB the values go to Badger's value log) and
// FERRYMQ_SPACE_WAIT (how long to watch the disk use after the drain,
// default 60s) change the run.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/session"
)

// spaceDirUse is the disk use of a directory: the sum of its files' sizes
// (apparent) and of their allocated blocks, in total and per file kind.
// Badger preallocates sparse files (the value log, the memtables' logs),
// so an empty store has about 42 MiB of apparent size in a few blocks.
type spaceDirUse struct {
	apparent, allocated int64
	files               int
	byKind              map[string][2]int64 // ".sst" -> {allocated, apparent}
}

func spaceMeasureDir(dir string) (spaceDirUse, error) {
	u := spaceDirUse{byKind: make(map[string][2]int64)}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed by Badger meanwhile
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		alloc := fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			alloc = st.Blocks * 512
		}
		kind := filepath.Ext(d.Name())
		if kind == "" {
			kind = d.Name()
		}
		k := u.byKind[kind]
		k[0] += alloc
		k[1] += fi.Size()
		u.byKind[kind] = k
		u.apparent += fi.Size()
		u.allocated += alloc
		u.files++
		return nil
	})
	return u, err
}

func spaceMiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func (u spaceDirUse) String() string {
	kinds := make([]string, 0, len(u.byKind))
	for k := range u.byKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var b strings.Builder
	fmt.Fprintf(&b, "allocated %s, apparent %s, %d files (allocated/apparent:", spaceMiB(u.allocated), spaceMiB(u.apparent), u.files)
	for _, k := range kinds {
		if v := u.byKind[k]; v[1] >= 64<<10 {
			fmt.Fprintf(&b, " %s %s/%s", k, spaceMiB(v[0]), spaceMiB(v[1]))
		}
	}
	b.WriteString(")")
	return b.String()
}

// spaceLevels describes the LSM tree of s: each level holding tables,
// with the size of the deleted or overwritten entries Badger counts in
// them (StaleDatSize).
func spaceLevels(s *Store) string {
	var b strings.Builder
	for _, l := range s.db.Levels() {
		if l.NumTables > 0 {
			fmt.Fprintf(&b, " L%d: %d tables %s (stale %s);", l.Level, l.NumTables, spaceMiB(l.Size), spaceMiB(l.StaleDatSize))
		}
	}
	return strings.TrimSuffix(b.String(), ";")
}

// spaceEnvInt and spaceEnvDuration read a parameter from the environment.
func spaceEnvInt(tb testing.TB, name string, def int) int {
	if s := os.Getenv(name); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			tb.Fatalf("%s=%q: want a positive integer", name, s)
		}
		return n
	}
	return def
}

func spaceEnvDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	if s := os.Getenv(name); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			tb.Fatalf("%s=%q: want a duration", name, s)
		}
		return d
	}
	return def
}

// spacePipeline commits batches with at most depth of them in flight, as
// the broker does (many events committed concurrently, grouped by the
// writer).
type spacePipeline struct {
	s     *Store
	slots chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	err   error
}

func newSpacePipeline(s *Store, depth int) *spacePipeline {
	return &spacePipeline{s: s, slots: make(chan struct{}, depth)}
}

func (p *spacePipeline) commit(b *session.Batch) {
	p.slots <- struct{}{}
	p.wg.Add(1)
	p.s.Commit(b, func(err error) {
		if err != nil {
			p.mu.Lock()
			p.err = errors.Join(p.err, err)
			p.mu.Unlock()
		}
		<-p.slots
		p.wg.Done()
	})
}

func (p *spacePipeline) wait() error {
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// spaceSampler records the largest disk use of dir, sampled every 250 ms.
type spaceSampler struct {
	dir  string
	mu   sync.Mutex
	peak spaceDirUse
	stop chan struct{}
	done chan struct{}
}

func startSpaceSampler(dir string) *spaceSampler {
	sm := &spaceSampler{dir: dir, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(sm.done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			sm.sample()
			select {
			case <-sm.stop:
				return
			case <-t.C:
			}
		}
	}()
	return sm
}

func (sm *spaceSampler) sample() {
	u, err := spaceMeasureDir(sm.dir)
	if err != nil {
		return
	}
	sm.mu.Lock()
	if u.allocated > sm.peak.allocated {
		sm.peak = u
	}
	sm.mu.Unlock()
}

func (sm *spaceSampler) finish() spaceDirUse {
	close(sm.stop)
	<-sm.done
	sm.sample()
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.peak
}

// spaceRun is what one queue-then-drain run measured.
type spaceRun struct {
	msgs                            int
	fill, drain                     time.Duration
	afterFill, peak, drained, final spaceDirUse
	below10                         time.Duration // after the drain; -1: not within the wait
	watched                         time.Duration
}

// spaceQueueThenDrain queues msgs deliveries for one client (payload
// bytes each; one PutQueued per commit, up to 256 commits in flight, as
// the publishes of several publishers arrive) and then drains them as the
// broker sends a durable queue to its client with 128 (the default
// limits.max_inflight) in flight: each send is DelQueued + PutInflight
// (with the message), each PUBACK a DelInflight committed with the next
// send. Then it calls after (when not nil) and watches the disk use for up
// to wait, until it falls below a tenth of its peak.
func spaceQueueThenDrain(tb testing.TB, s *Store, dir string, msgs, payload int, wait time.Duration, after func()) spaceRun {
	tb.Helper()
	const (
		client   = "space-sub"
		window   = 128
		inFlight = 256
	)
	r := spaceRun{msgs: msgs, below10: -1}
	sm := startSpaceSampler(dir)
	msg := &session.Message{Topic: "space/t", Payload: make([]byte, payload), QoS: 1}
	d := session.Delivery{Msg: msg, QoS: 1}

	start := time.Now()
	p := newSpacePipeline(s, inFlight)
	var b session.Batch
	for seq := uint64(1); seq <= uint64(msgs); seq++ {
		b.Add(session.Change{Kind: session.PutQueued, ClientID: client, Seq: seq, D: d})
		p.commit(&b) // encoded before Commit returns: b is reused
		b.Reset()
	}
	if err := p.wait(); err != nil {
		tb.Fatalf("queueing: %v", err)
	}
	r.fill = time.Since(start)
	var err error
	if r.afterFill, err = spaceMeasureDir(dir); err != nil {
		tb.Fatal(err)
	}

	start = time.Now()
	p = newSpacePipeline(s, window)
	pid := func(seq uint64) uint16 { return uint16(seq%window) + 1 }
	for seq := uint64(1); seq <= uint64(msgs); seq++ {
		if seq > window {
			b.Add(session.Change{Kind: session.DelInflight, ClientID: client, PacketID: pid(seq)})
		}
		b.Add(session.Change{Kind: session.DelQueued, ClientID: client, Seq: seq})
		b.Add(session.Change{Kind: session.PutInflight, ClientID: client, PacketID: pid(seq),
			Phase: session.AwaitPuback, Seq: seq, D: d})
		p.commit(&b)
		b.Reset()
	}
	for seq := uint64(msgs) + 1; seq <= uint64(msgs)+window; seq++ {
		b.Add(session.Change{Kind: session.DelInflight, ClientID: client, PacketID: pid(seq)})
	}
	p.commit(&b)
	b.Reset()
	if err := p.wait(); err != nil {
		tb.Fatalf("draining: %v", err)
	}
	r.drain = time.Since(start)
	r.peak = sm.finish()
	if r.drained, err = spaceMeasureDir(dir); err != nil {
		tb.Fatal(err)
	}
	if n := countKeys(tb, s, prefixQueue) + countKeys(tb, s, prefixInfl); n != 0 {
		tb.Fatalf("%d queue and inflight records left after the drain", n)
	}

	start = time.Now()
	if after != nil {
		after()
	}
	for {
		u, err := spaceMeasureDir(dir)
		if err != nil {
			tb.Fatal(err)
		}
		r.final, r.watched = u, time.Since(start)
		if u.allocated*10 < r.peak.allocated {
			r.below10 = r.watched
			break
		}
		if r.watched >= wait {
			break
		}
		time.Sleep(time.Second)
	}
	return r
}

func (r spaceRun) log(tb testing.TB, name string) {
	tb.Helper()
	tb.Logf("%s: queued %d in %v (%.0f/s), drained in %v (%.0f/s)", name, r.msgs,
		r.fill.Round(time.Millisecond), float64(r.msgs)/r.fill.Seconds(),
		r.drain.Round(time.Millisecond), float64(r.msgs)/r.drain.Seconds())
	tb.Logf("%s: after queueing: %v", name, r.afterFill)
	tb.Logf("%s: peak:           %v", name, r.peak)
	tb.Logf("%s: after draining: %v", name, r.drained)
	tb.Logf("%s: %v later: %v = %.1f%% of the peak (allocated)", name, r.watched.Round(time.Second), r.final,
		100*float64(r.final.allocated)/float64(r.peak.allocated))
	if r.below10 >= 0 {
		tb.Logf("%s: below 10%% of the peak %v after the drain", name, r.below10.Round(time.Second))
	} else {
		tb.Logf("%s: NOT below 10%% of the peak within %v", name, r.watched.Round(time.Second))
	}
}

// BenchmarkSpaceComesBack queues a million 64-byte deliveries for one
// session through Store.Commit, drains them as the broker would, and
// reports the disk use of the store at its peak and after the drain: sync
// durability, the options the broker uses, but value-log GC every 5 s
// instead of 5 minutes to give it its chance.
//
// The variants: as-is leaves it to Badger. flatten calls DB.Flatten once
// the drain is over. ticker calls the store's compactStale every 5 s from the
// start, under load too, as the store's GC ticker would. flush-flatten
// also makes Badger flush its memtable first (through DropPrefix of a
// sentinel key, which blocks writes meanwhile): with payloads above 1 KiB
// the tombstones still in the memtable keep value-log files alive.
func BenchmarkSpaceComesBack(b *testing.B) {
	if testing.Short() {
		b.Skip("a measurement of one to two minutes per variant; not under -short")
	}
	msgs := spaceEnvInt(b, "FERRYMQ_SPACE_MSGS", 1_000_000)
	payload := spaceEnvInt(b, "FERRYMQ_SPACE_PAYLOAD", 64)
	wait := spaceEnvDuration(b, "FERRYMQ_SPACE_WAIT", 60*time.Second)
	for _, variant := range []string{"as-is", "flatten", "ticker", "flush-flatten"} {
		b.Run(variant, func(b *testing.B) {
			for range b.N {
				spaceComesBack(b, variant, msgs, payload, wait)
			}
		})
	}
}

func spaceComesBack(b *testing.B, variant string, msgs, payload int, wait time.Duration) {
	dir := b.TempDir()
	s := openTest(b, Options{Dir: dir, GCInterval: 5 * time.Second})
	var after func()
	switch variant {
	case "flatten":
		after = func() {
			b.Logf("%s: before Flatten:%s", variant, spaceLevels(s))
			start := time.Now()
			if err := s.db.Flatten(1); err != nil {
				b.Errorf("Flatten: %v", err)
			}
			b.Logf("%s: Flatten took %v; after:%s", variant, time.Since(start).Round(time.Millisecond), spaceLevels(s))
		}
	case "flush-flatten":
		after = func() {
			// DropPrefix flushes the memtables when the prefix holds a
			// key. It blocks writes meanwhile: only the store's writer
			// goroutine could do this while the store is in use.
			start := time.Now()
			if err := applySync(s, Put([]byte("v1/flush/x"), nil)); err != nil {
				b.Fatal(err)
			}
			if err := s.db.DropPrefix([]byte("v1/flush/")); err != nil {
				b.Errorf("DropPrefix: %v", err)
			}
			if err := s.db.Flatten(1); err != nil {
				b.Errorf("Flatten: %v", err)
			}
			b.Logf("%s: DropPrefix and Flatten took %v; after:%s", variant, time.Since(start).Round(time.Millisecond), spaceLevels(s))
		}
	case "ticker":
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			t := time.NewTicker(5 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
				}
				before := spaceLevels(s)
				start := time.Now()
				n := s.flattens.Load()
				s.compactStale()
				if s.flattens.Load() != n {
					b.Logf("%s: flattened in %v after %d ops: before:%s; after:%s", variant,
						time.Since(start).Round(time.Millisecond), s.ops.Load(), before, spaceLevels(s))
				}
			}
		}()
		defer func() { close(stop); <-done }()
	}
	r := spaceQueueThenDrain(b, s, dir, msgs, payload, wait, after)
	r.log(b, variant)
	b.Logf("%s: levels:%s; value-log GC rewrote %d files in %d attempts", variant, spaceLevels(s),
		s.gcRuns.Load(), s.gcAttempts.Load())
	b.ReportMetric(float64(r.peak.allocated)/(1<<20), "peak-MiB")
	b.ReportMetric(float64(r.final.allocated)/(1<<20), "final-MiB")
	b.ReportMetric(100*float64(r.final.allocated)/float64(r.peak.allocated), "final-%-of-peak")
	b.ReportMetric(float64(r.msgs)/r.fill.Seconds(), "queue-msgs/s")
	b.ReportMetric(float64(r.msgs)/r.drain.Seconds(), "drain-msgs/s")

	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	u, err := spaceMeasureDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%s: after Close: %v", variant, u)
}
