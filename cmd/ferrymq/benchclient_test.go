package main_test

// Helpers of the durable-session measurements (durable_bench_test.go): a
// ferrymq process watched through /proc, and a minimal MQTT 3.1.1 client
// cheap enough to load the broker from one core (QoS 1 only, no
// reconnection, no keep-alive).

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// benchBroker is a running ferrymq whose stderr lines are collected.
type benchBroker struct {
	cmd     *exec.Cmd
	started time.Time // just before exec
	mu      sync.Mutex
	lines   []string
	done    chan struct{}
	err     error // from Wait, once done is closed
}

// startBenchBroker runs "ferrymq run" on listen (127.0.0.1:0 when empty)
// with dataDir and durability, pinned with taskset to the CPUs in FERRYMQ_BENCH_BROKER_CPUS
// when set (e.g. "1"). It is killed at cleanup if still running.
func startBenchBroker(tb testing.TB, listen, dataDir, durability string) *benchBroker {
	tb.Helper()
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	return execBenchBroker(tb, "run", "--listen", listen, "--data-dir", dataDir, "--durability", durability)
}

// execBenchBroker runs ferrymq with args, pinned with taskset to the CPUs
// in FERRYMQ_BENCH_BROKER_CPUS when set, with the extra environment
// variables of FERRYMQ_BENCH_BROKER_ENV (e.g. "GODEBUG=gctrace=1"), and
// collects its stderr lines. It is killed at cleanup if still running.
func execBenchBroker(tb testing.TB, args ...string) *benchBroker {
	tb.Helper()
	name := ferrymqBin
	if cpus := os.Getenv("FERRYMQ_BENCH_BROKER_CPUS"); cpus != "" {
		args = append([]string{"-c", cpus, ferrymqBin}, args...)
		name = "taskset" // it execs ferrymq: the pid stays the same
	}
	p := &benchBroker{cmd: exec.Command(name, args...), done: make(chan struct{})}
	p.cmd.Env = childEnv()
	if extra := os.Getenv("FERRYMQ_BENCH_BROKER_ENV"); extra != "" {
		p.cmd.Env = append(p.cmd.Env, strings.Fields(extra)...)
	}
	p.cmd.Dir = tb.TempDir()
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *benchBroker) pid() int { return p.cmd.Process.Pid }

func (p *benchBroker) stderrLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// waitLine polls for a stderr line matching re for up to d and returns
// its submatches and when it was seen.
func (p *benchBroker) waitLine(tb testing.TB, re *regexp.Regexp, d time.Duration) ([]string, time.Time) {
	tb.Helper()
	deadline := time.Now().Add(d)
	seen := 0
	for {
		lines := p.stderrLines()
		for _, l := range lines[seen:] {
			if m := re.FindStringSubmatch(l); m != nil {
				return m, time.Now()
			}
		}
		seen = len(lines)
		select {
		case <-p.done:
			for _, l := range p.stderrLines()[seen:] {
				if m := re.FindStringSubmatch(l); m != nil {
					return m, time.Now()
				}
			}
			tb.Fatalf("ferrymq exited (%v) before logging %s; stderr:\n%s", p.err, re, strings.Join(p.stderrLines(), "\n"))
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no stderr line matching %s within %v; stderr:\n%s", re, d, strings.Join(p.stderrLines(), "\n"))
		}
		time.Sleep(time.Millisecond)
	}
}

var benchStartedRe = regexp.MustCompile(`msg="ferrymq started" addrs=(\S+)`)

// addr waits for the broker's "started" line and returns its address.
func (p *benchBroker) addr(tb testing.TB) string {
	tb.Helper()
	m, _ := p.waitLine(tb, benchStartedRe, 2*time.Minute)
	return m[1]
}

// stop sends SIGTERM and waits up to d for the exit.
func (p *benchBroker) stop(tb testing.TB, d time.Duration) {
	tb.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		tb.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(d):
		tb.Fatalf("ferrymq did not exit within %v of SIGTERM", d)
	}
	if p.err != nil {
		tb.Errorf("ferrymq exited with %v", p.err)
	}
}

// problems returns the broker's WARN and ERROR lines.
func (p *benchBroker) problems() []string {
	var out []string
	for _, l := range p.stderrLines() {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
	}
	return out
}

// logProblems logs how many WARN/ERROR lines the broker wrote, and the
// first few.
func (p *benchBroker) logProblems(tb testing.TB, name string) {
	tb.Helper()
	pr := p.problems()
	if len(pr) == 0 {
		tb.Logf("%s: no WARN or ERROR lines in the broker's log", name)
		return
	}
	tb.Logf("%s: %d WARN/ERROR lines in the broker's log, the first ones:\n%s", name, len(pr),
		strings.Join(pr[:min(len(pr), 5)], "\n"))
}

// benchMem is what /proc/<pid>/status says of a process's memory, in
// bytes: resident now, its peak, and the resident anonymous memory (Go's
// heap and stacks, Badger's memtables) and file pages (Badger mmaps its
// tables and value log) that make up VmRSS.
type benchMem struct{ rss, hwm, anon, file int64 }

func (m benchMem) String() string {
	return fmt.Sprintf("VmRSS %.1f MiB (anon %.1f, file %.1f), VmHWM %.1f MiB", float64(m.rss)/(1<<20),
		float64(m.anon)/(1<<20), float64(m.file)/(1<<20), float64(m.hwm)/(1<<20))
}

func (p *benchBroker) mem(tb testing.TB) benchMem {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		tb.Fatal(err)
	}
	var m benchMem
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || f[2] != "kB" {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			m.rss = n << 10
		case "VmHWM:":
			m.hwm = n << 10
		case "RssAnon:":
			m.anon = n << 10
		case "RssFile:":
			m.file = n << 10
		}
	}
	return m
}

// benchUserHZ is the unit of utime and stime in /proc/<pid>/stat (USER_HZ,
// 100 on every Linux architecture ferrymq supports).
const benchUserHZ = 100

// cpu returns the CPU time the broker used so far (user + system).
func (p *benchBroker) cpu(tb testing.TB) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid()))
	if err != nil {
		tb.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		tb.Fatalf("/proc/%d/stat: %v", p.pid(), err)
	}
	return time.Duration(ut+st) * time.Second / benchUserHZ
}

// benchDirUse returns the sum of the sizes of the files under dir and of
// their allocated blocks (Badger preallocates sparse files, so the two
// differ by tens of MiB).
func benchDirUse(dir string) (apparent, allocated int64, err error) {
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
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
		apparent += fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			allocated += st.Blocks * 512
		} else {
			allocated += fi.Size()
		}
		return nil
	})
	return apparent, allocated, err
}

func benchMiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// benchSampler records the peak memory of the broker and disk use of its
// data directory, sampled every 100 ms until finish.
type benchSampler struct {
	p        *benchBroker
	dir      string
	mu       sync.Mutex
	peakRSS  int64
	hwm      int64
	peakDisk int64 // allocated
	peakApp  int64 // apparent
	stop     chan struct{}
	done     chan struct{}
}

func startBenchSampler(p *benchBroker, dir string) *benchSampler {
	s := &benchSampler{p: p, dir: dir, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *benchSampler) sample() {
	var rss, hwm int64
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.p.pid())); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) == 3 && f[0] == "VmRSS:" {
				rss, _ = strconv.ParseInt(f[1], 10, 64)
			}
			if len(f) == 3 && f[0] == "VmHWM:" {
				hwm, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	app, alloc, _ := benchDirUse(s.dir)
	s.mu.Lock()
	s.peakRSS = max(s.peakRSS, rss<<10)
	s.hwm = max(s.hwm, hwm<<10)
	s.peakDisk = max(s.peakDisk, alloc)
	s.peakApp = max(s.peakApp, app)
	s.mu.Unlock()
}

func (s *benchSampler) finish() {
	close(s.stop)
	<-s.done
	s.sample()
}

// benchConn is one MQTT 3.1.1 connection.
type benchConn struct {
	c    net.Conn
	r    *bufio.Reader
	wmu  sync.Mutex
	w    *bufio.Writer
	buf  []byte        // the body of the last packet read
	pong chan struct{} // receive signals each PINGRESP
}

func benchAppendString(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
}

// benchAppendVarint appends n as an MQTT variable byte integer.
func benchAppendVarint(b []byte, n int) []byte {
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

// benchAppendPacket appends a packet: its first byte, the remaining length
// and body.
func benchAppendPacket(b []byte, first byte, body ...[]byte) []byte {
	n := 0
	for _, p := range body {
		n += len(p)
	}
	b = benchAppendVarint(append(b, first), n)
	for _, p := range body {
		b = append(b, p...)
	}
	return b
}

// benchDial connects id (clean session or not) and returns the connection
// and the session-present flag of its CONNACK.
func benchDial(addr, id string, clean bool) (*benchConn, bool, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, false, err
	}
	m := &benchConn{c: c, r: bufio.NewReaderSize(c, 64<<10), w: bufio.NewWriterSize(c, 64<<10),
		pong: make(chan struct{}, 1)}
	var flags byte
	if clean {
		flags = 0x02
	}
	vh := benchAppendString(nil, "MQTT")
	vh = append(vh, 4, flags, 0, 0) // level 4, no keep-alive
	if _, err := c.Write(benchAppendPacket(nil, 0x10, vh, benchAppendString(nil, id))); err != nil {
		c.Close()
		return nil, false, err
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	t, err := m.read()
	c.SetReadDeadline(time.Time{})
	switch {
	case err != nil:
	case t != 0x20 || len(m.buf) != 2:
		err = fmt.Errorf("got packet 0x%02x, want CONNACK", t)
	case m.buf[1] != 0:
		err = fmt.Errorf("CONNACK return code %d", m.buf[1])
	}
	if err != nil {
		c.Close()
		return nil, false, fmt.Errorf("%s: connect: %w", id, err)
	}
	return m, m.buf[0]&1 == 1, nil
}

// read reads one packet into m.buf and returns its first byte.
func (m *benchConn) read() (byte, error) {
	first, err := m.r.ReadByte()
	if err != nil {
		return 0, err
	}
	n, shift := 0, 0
	for {
		c, err := m.r.ReadByte()
		if err != nil {
			return 0, err
		}
		n |= int(c&0x7f) << shift
		if c&0x80 == 0 {
			break
		}
		if shift += 7; shift > 21 {
			return 0, errors.New("malformed remaining length")
		}
	}
	if cap(m.buf) < n {
		m.buf = make([]byte, n)
	}
	m.buf = m.buf[:n]
	if _, err := io.ReadFull(m.r, m.buf); err != nil {
		return 0, err
	}
	return first, nil
}

// subscribe subscribes to filter at QoS 1 and waits for the SUBACK
// (before any reader goroutine runs).
func (m *benchConn) subscribe(filter string) error {
	body := benchAppendString([]byte{0, 1}, filter)
	body = append(body, 1)
	if _, err := m.c.Write(benchAppendPacket(nil, 0x82, body)); err != nil {
		return err
	}
	m.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer m.c.SetReadDeadline(time.Time{})
	t, err := m.read()
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", filter, err)
	}
	if t != 0x90 || len(m.buf) != 3 || m.buf[2] > 2 {
		return fmt.Errorf("subscribe %s: got 0x%02x %v, want a SUBACK granting it", filter, t, m.buf)
	}
	return nil
}

// disconnect sends DISCONNECT and closes the connection.
func (m *benchConn) disconnect() {
	m.wmu.Lock()
	m.w.Write([]byte{0xe0, 0})
	m.w.Flush()
	m.wmu.Unlock()
	m.c.Close()
}

// ping sends a PINGREQ and waits up to d for the PINGRESP, which receive
// must be reading: the broker answers once it has handled every packet
// sent before (the PUBACKs among them).
func (m *benchConn) ping(d time.Duration) error {
	m.wmu.Lock()
	m.w.Write([]byte{0xc0, 0})
	err := m.w.Flush()
	m.wmu.Unlock()
	if err != nil {
		return err
	}
	select {
	case <-m.pong:
		return nil
	case <-time.After(d):
		return fmt.Errorf("no PINGRESP within %v", d)
	}
}

// receive reads PUBLISHes until the connection ends, acknowledging the
// QoS 1 ones and calling got (when not nil) with each topic. It batches
// its PUBACKs: they are flushed whenever no more input is buffered.
func (m *benchConn) receive(got func(topic []byte)) error {
	for {
		t, err := m.read()
		if err != nil {
			return err
		}
		if t == 0xd0 {
			select {
			case m.pong <- struct{}{}:
			default:
			}
			continue
		}
		if t>>4 != 3 {
			continue
		}
		if len(m.buf) < 2 {
			return errors.New("short PUBLISH")
		}
		tl := int(binary.BigEndian.Uint16(m.buf))
		if len(m.buf) < 2+tl {
			return errors.New("short PUBLISH topic")
		}
		if got != nil {
			got(m.buf[2 : 2+tl])
		}
		if qos := (t >> 1) & 3; qos == 1 {
			if len(m.buf) < 4+tl {
				return errors.New("short PUBLISH packet id")
			}
			if err := m.puback(m.buf[2+tl], m.buf[3+tl]); err != nil {
				return err
			}
		}
	}
}

// puback acknowledges the QoS 1 PUBLISH with packet id hi<<8|lo; the
// buffered writes go out once no more packets wait to be read.
func (m *benchConn) puback(hi, lo byte) error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	m.w.Write([]byte{0x40, 2, hi, lo})
	if m.r.Buffered() == 0 {
		return m.w.Flush()
	}
	return nil
}

// benchPublisher publishes QoS 1 messages on one connection with at most
// window of them unacknowledged.
type benchPublisher struct {
	m      *benchConn
	window chan struct{}
	acked  atomic.Int64
	errc   chan error // the reader's end
	pid    uint16
	pkt    []byte
}

func newBenchPublisher(m *benchConn, window int) *benchPublisher {
	p := &benchPublisher{m: m, window: make(chan struct{}, window), errc: make(chan error, 1)}
	go func() {
		for {
			t, err := m.read()
			if err != nil {
				p.errc <- err
				return
			}
			if t == 0x40 {
				p.acked.Add(1)
				<-p.window
			}
		}
	}()
	return p
}

// publish sends one message, waiting for a free slot in the window; its
// writes are flushed when the window is full or flush says so.
func (p *benchPublisher) publish(topic string, payload []byte, flush bool) error {
	select {
	case p.window <- struct{}{}:
	default:
		p.m.wmu.Lock()
		err := p.m.w.Flush()
		p.m.wmu.Unlock()
		if err != nil {
			return err
		}
		select {
		case p.window <- struct{}{}:
		case err := <-p.errc:
			return fmt.Errorf("benchPublisher: %w", err)
		case <-time.After(60 * time.Second):
			return errors.New("benchPublisher: no PUBACK for 60 s")
		}
	}
	p.pid++
	if p.pid == 0 {
		p.pid = 1
	}
	vh := benchAppendString(p.pkt[:0], topic)
	vh = binary.BigEndian.AppendUint16(vh, p.pid)
	p.m.wmu.Lock()
	defer p.m.wmu.Unlock()
	var hdr [5]byte
	h := benchAppendVarint(append(hdr[:0], 0x32), len(vh)+len(payload))
	p.m.w.Write(h)
	p.m.w.Write(vh)
	p.m.w.Write(payload)
	p.pkt = vh
	if flush {
		return p.m.w.Flush()
	}
	return nil
}

// drain flushes and waits up to d until every message sent is acked.
func (p *benchPublisher) drain(d time.Duration) error {
	p.m.wmu.Lock()
	err := p.m.w.Flush()
	p.m.wmu.Unlock()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(d)
	for len(p.window) > 0 {
		select {
		case err := <-p.errc:
			return fmt.Errorf("benchPublisher: %w", err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("benchPublisher: %d messages not acknowledged within %v", len(p.window), d)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// benchParallel runs fn(i) for i in [0, n) on workers goroutines and returns
// the errors joined.
func benchParallel(n, workers int, fn func(i int) error) error {
	var (
		next atomic.Int64
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// benchWaitCount polls until count() reaches want or nothing moved for
// stall; it returns when it reached want (zero if it did not).
func benchWaitCount(count func() int64, want int64, stall time.Duration) time.Time {
	last, lastMove := count(), time.Now()
	for {
		n := count()
		if n >= want {
			return time.Now()
		}
		if n != last {
			last, lastMove = n, time.Now()
		} else if time.Since(lastMove) > stall {
			return time.Time{}
		}
		time.Sleep(time.Millisecond)
	}
}
