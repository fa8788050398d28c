package main_test

// Measurements of durable sessions on the real binary: restart time with
// many stored sessions, memory and drain rate of a large offline backlog,
// whether disk space comes back once it is drained, and durable
// throughput in the three durability modes. They print figures (b.Logf,
// b.ReportMetric) and assert only that every message arrives. None runs
// under -short; each takes one to two minutes:
//
//	go test ./cmd/ferrymq -run '^$' -bench BenchmarkRestart -benchtime 1x -v
//	go test ./cmd/ferrymq -run '^$' -bench BenchmarkBacklog -benchtime 1x -v
//	go test ./cmd/ferrymq -run '^$' -bench BenchmarkDurableThroughput -benchtime 1x -v
//
// For stable CPU figures pin the broker and the load to different cores:
//
//	FERRYMQ_BENCH_BROKER_CPUS=1 taskset -c 0 go test ./cmd/ferrymq -run '^$' -bench BenchmarkDurableThroughput -benchtime 1x -v
//
// Sizes can be changed through the environment: FERRYMQ_BENCH_SESSIONS
// and FERRYMQ_BENCH_PER_SESSION (BenchmarkRestart), FERRYMQ_BENCH_BACKLOG
// and FERRYMQ_BENCH_SPACE_WAIT (BenchmarkBacklog), FERRYMQ_BENCH_SECONDS
// (BenchmarkDurableThroughput).

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func benchEnvInt(tb testing.TB, name string, def int) int {
	if s := os.Getenv(name); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			tb.Fatalf("%s=%q: want a positive integer", name, s)
		}
		return n
	}
	return def
}

func benchEnvDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	if s := os.Getenv(name); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			tb.Fatalf("%s=%q: want a duration", name, s)
		}
		return d
	}
	return def
}

func benchSkipShort(b *testing.B) {
	if testing.Short() {
		b.Skip("a measurement of one to two minutes; not under -short")
	}
}

var benchRestoredRe = regexp.MustCompile(`msg="sessions restored" sessions=(\d+) .*queued_messages=(\d+) .*took=(\S+)`)

// benchRestartTimes are the figures of a restart: when the port took a TCP
// connection (bound, before the restore), when the broker answered an
// MQTT CONNECT (polling from just before exec), when its "started" line
// appeared, and what its "sessions restored" line says.
type benchRestartTimes struct {
	listen, accept, logged, took time.Duration
	sessions, queued             int
}

func restartBenchBroker(b *testing.B, listen, dataDir string) (*benchBroker, benchRestartTimes) {
	b.Helper()
	var rt benchRestartTimes
	type probe struct {
		bound, connack time.Time
		err            error
	}
	probed := make(chan probe, 1)
	stop := make(chan struct{})
	go func() {
		var pr probe
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", listen, 100*time.Millisecond)
			if err != nil {
				time.Sleep(time.Millisecond)
				continue
			}
			c.Close()
			if pr.bound.IsZero() {
				pr.bound = time.Now()
			}
			m, _, err := benchDial(listen, "restart-probe", true)
			if err != nil {
				time.Sleep(time.Millisecond)
				continue
			}
			pr.connack = time.Now()
			m.disconnect()
			probed <- pr
			return
		}
		pr.err = fmt.Errorf("%s answered no CONNECT within 2 minutes", listen)
		probed <- pr
	}()
	p := startBenchBroker(b, listen, dataDir, "sync")
	_, logged := p.waitLine(b, benchStartedRe, 2*time.Minute)
	var pr probe
	select {
	case pr = <-probed:
	case <-time.After(30 * time.Second):
		close(stop)
		b.Fatalf("%s logged that it started but answers no CONNECT", listen)
	}
	if pr.err != nil {
		b.Fatal(pr.err)
	}
	rt.listen, rt.accept, rt.logged = pr.bound.Sub(p.started), pr.connack.Sub(p.started), logged.Sub(p.started)
	m, _ := p.waitLine(b, benchRestoredRe, time.Second)
	rt.sessions, _ = strconv.Atoi(m[1])
	rt.queued, _ = strconv.Atoi(m[2])
	var err error
	if rt.took, err = time.ParseDuration(m[3]); err != nil {
		b.Fatalf("took=%q: %v", m[3], err)
	}
	return p, rt
}

// BenchmarkRestart: 1,000 durable (clean session 0) subscribers on
// distinct topics go offline, 100 QoS 1 messages each are queued for them
// (sync durability), and the broker is restarted. It reports the time
// from exec to accepting connections, the restore time the broker logs,
// its memory after the restart, and how long the 100,000 messages take to
// reach the 1,000 subscribers reconnecting all at once.
func BenchmarkRestart(b *testing.B) {
	benchSkipShort(b)
	sessions := benchEnvInt(b, "FERRYMQ_BENCH_SESSIONS", 1000)
	perSession := benchEnvInt(b, "FERRYMQ_BENCH_PER_SESSION", 100)
	for range b.N {
		benchRestart(b, sessions, perSession)
	}
}

func benchRestart(b *testing.B, sessions, perSession int) {
	dir := b.TempDir()
	p := startBenchBroker(b, "", dir, "sync")
	addr := p.addr(b)
	id := func(i int) string { return fmt.Sprintf("restart-sub-%04d", i) }
	topic := func(i int) string { return fmt.Sprintf("restart/%04d", i) }

	start := time.Now()
	err := benchParallel(sessions, 16, func(i int) error {
		m, _, err := benchDial(addr, id(i), false)
		if err != nil {
			return err
		}
		defer m.disconnect()
		return m.subscribe(topic(i))
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%d durable sessions subscribed in %v", sessions, time.Since(start).Round(time.Millisecond))

	// 4 publishers, 100 in flight each, round-robin over the topics.
	const pubs, window = 4, 100
	payload := make([]byte, 64)
	total := sessions * perSession
	start = time.Now()
	err = benchParallel(pubs, pubs, func(k int) error {
		m, _, err := benchDial(addr, fmt.Sprintf("restart-pub-%d", k), true)
		if err != nil {
			return err
		}
		defer m.disconnect()
		pub := newBenchPublisher(m, window)
		for r := range perSession {
			for i := k; i < sessions; i += pubs {
				if err := pub.publish(topic(i), payload, false); err != nil {
					return fmt.Errorf("round %d topic %d: %w", r, i, err)
				}
			}
		}
		return pub.drain(time.Minute)
	})
	if err != nil {
		b.Fatal(err)
	}
	d := time.Since(start)
	b.Logf("%d QoS 1 messages queued in %v (%.0f msgs/s); broker %v", total, d.Round(time.Millisecond),
		float64(total)/d.Seconds(), p.mem(b))

	start = time.Now()
	p.stop(b, time.Minute)
	p.logProblems(b, "first run")
	app, alloc, err := benchDirUse(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("stopped in %v; data dir %s allocated, %s apparent", time.Since(start).Round(time.Millisecond),
		benchMiB(alloc), benchMiB(app))

	p, rt := restartBenchBroker(b, addr, dir)
	memAfter := p.mem(b)
	b.Logf("restart: port bound %v after exec, CONNACK %v after exec, started line at %v, broker's took=%v (sessions=%d queued_messages=%d); %v",
		rt.listen.Round(time.Millisecond), rt.accept.Round(time.Millisecond), rt.logged.Round(time.Millisecond),
		rt.took, rt.sessions, rt.queued, memAfter)
	if rt.sessions != sessions || rt.queued != total {
		b.Errorf("restored %d sessions with %d queued messages, want %d and %d", rt.sessions, rt.queued, sessions, total)
	}

	// Every subscriber comes back at once (16 connecting at a time) and
	// gets its queue.
	counts := make([]atomic.Int64, sessions)
	var got atomic.Int64
	conns := make([]*benchConn, sessions)
	var wg sync.WaitGroup
	start = time.Now()
	err = benchParallel(sessions, 16, func(i int) error {
		m, present, err := benchDial(addr, id(i), false)
		if err != nil {
			return err
		}
		if !present {
			return fmt.Errorf("%s: no session present after the restart", id(i))
		}
		conns[i] = m
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.receive(func([]byte) { counts[i].Add(1); got.Add(1) })
		}()
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	connected := time.Since(start)
	end := benchWaitCount(got.Load, int64(total), 30*time.Second)
	if end.IsZero() {
		b.Errorf("the subscribers got %d of %d messages", got.Load(), total)
		end = time.Now()
	}
	drain := end.Sub(start)
	memDrained := p.mem(b)
	for i := range conns {
		conns[i].disconnect()
	}
	wg.Wait()
	b.Logf("drain: all disconnected: broker %v", p.mem(b))
	short := 0
	for i := range counts {
		if counts[i].Load() < int64(perSession) {
			short++
		}
	}
	if short > 0 {
		b.Errorf("%d subscribers got fewer than %d messages", short, perSession)
	}
	b.Logf("drain: %d subscribers reconnected in %v, all %d messages received %v after the first connect (%.0f msgs/s); broker %v",
		sessions, connected.Round(time.Millisecond), got.Load(), drain.Round(time.Millisecond),
		float64(got.Load())/drain.Seconds(), memDrained)
	p.stop(b, time.Minute)
	p.logProblems(b, "after the restart")

	b.ReportMetric(float64(rt.accept.Microseconds())/1000, "accept-ms")
	b.ReportMetric(float64(rt.took.Microseconds())/1000, "took-ms")
	b.ReportMetric(float64(memAfter.rss)/(1<<20), "restart-RSS-MiB")
	b.ReportMetric(float64(memAfter.hwm)/(1<<20), "restart-HWM-MiB")
	b.ReportMetric(float64(got.Load())/drain.Seconds(), "drain-msgs/s")
}

// BenchmarkBacklog: one durable subscriber goes offline and 1,000,000 QoS
// 1 messages of 64 bytes are published to it (sync durability) by 4
// publishers with 64 in flight each. It reports the broker's peak memory
// (VmHWM) while holding the backlog, the rate at which the reconnecting
// subscriber drains it, and the disk use of the data directory: at its
// peak, after the drain, after watching it for FERRYMQ_BENCH_SPACE_WAIT
// (default 30 s) and after a restart.
func BenchmarkBacklog(b *testing.B) {
	benchSkipShort(b)
	msgs := benchEnvInt(b, "FERRYMQ_BENCH_BACKLOG", 1_000_000)
	wait := benchEnvDuration(b, "FERRYMQ_BENCH_SPACE_WAIT", 30*time.Second)
	for range b.N {
		benchBacklog(b, msgs, wait)
	}
}

func benchBacklog(b *testing.B, msgs int, wait time.Duration) {
	dir := b.TempDir()
	p := startBenchBroker(b, "", dir, "sync")
	addr := p.addr(b)
	const (
		sub    = "backlog-sub"
		topic  = "backlog/t"
		pubs   = 4
		window = 64
	)
	m, _, err := benchDial(addr, sub, false)
	if err != nil {
		b.Fatal(err)
	}
	if err := m.subscribe(topic); err != nil {
		b.Fatal(err)
	}
	m.disconnect()
	idle := p.mem(b)

	sm := startBenchSampler(p, dir)
	payload := make([]byte, 64)
	start := time.Now()
	err = benchParallel(pubs, pubs, func(k int) error {
		m, _, err := benchDial(addr, fmt.Sprintf("backlog-pub-%d", k), true)
		if err != nil {
			return err
		}
		defer m.disconnect()
		pub := newBenchPublisher(m, window)
		for i := k; i < msgs; i += pubs {
			if err := pub.publish(topic, payload, false); err != nil {
				return fmt.Errorf("message %d: %w", i, err)
			}
		}
		return pub.drain(time.Minute)
	})
	if err != nil {
		b.Fatal(err)
	}
	pubTime := time.Since(start)
	held := p.mem(b)
	sm.sample()
	sm.mu.Lock()
	holdHWM, holdDisk, holdApp := sm.hwm, sm.peakDisk, sm.peakApp
	sm.mu.Unlock()
	b.Logf("backlog: %d messages published in %v (%.0f msgs/s); broker idle %v, holding the backlog %v",
		msgs, pubTime.Round(time.Millisecond), float64(msgs)/pubTime.Seconds(), idle, held)

	var got atomic.Int64
	start = time.Now()
	m, present, err := benchDial(addr, sub, false)
	if err != nil {
		b.Fatal(err)
	}
	if !present {
		b.Fatal("no session present")
	}
	recvDone := make(chan error, 1)
	go func() { recvDone <- m.receive(func([]byte) { got.Add(1) }) }()
	end := benchWaitCount(got.Load, int64(msgs), 30*time.Second)
	if end.IsZero() {
		b.Errorf("the subscriber got %d of %d messages", got.Load(), msgs)
		end = time.Now()
	}
	drain := end.Sub(start)
	drainedMem := p.mem(b)
	// The broker has handled the last PUBACKs when it answers a PINGREQ.
	if err := m.ping(30 * time.Second); err != nil {
		b.Error(err)
	}
	m.disconnect()
	<-recvDone
	sm.finish()
	b.Logf("drain: %d messages in %v (%.0f msgs/s); broker %v",
		got.Load(), drain.Round(time.Millisecond), float64(got.Load())/drain.Seconds(), drainedMem)

	_, drainedAlloc, err := benchDirUse(dir)
	if err != nil {
		b.Fatal(err)
	}
	start = time.Now()
	var finalApp, finalAlloc int64
	var below time.Duration = -1
	for {
		finalApp, finalAlloc, err = benchDirUse(dir)
		if err != nil {
			b.Fatal(err)
		}
		if finalAlloc*10 < sm.peakDisk {
			below = time.Since(start)
			break
		}
		if time.Since(start) >= wait {
			break
		}
		time.Sleep(time.Second)
	}
	watched := time.Since(start)
	b.Logf("disk: peak %s allocated (%s apparent), %s while holding the backlog (%s apparent), %s after the drain",
		benchMiB(sm.peakDisk), benchMiB(sm.peakApp), benchMiB(holdDisk), benchMiB(holdApp), benchMiB(drainedAlloc))
	if below >= 0 {
		b.Logf("disk: below 10%% of the peak %v after the drain: %s allocated, %s apparent",
			below.Round(time.Second), benchMiB(finalAlloc), benchMiB(finalApp))
	} else {
		b.Logf("disk: NOT below 10%% of the peak %v after the drain: %s allocated (%.0f%%), %s apparent",
			watched.Round(time.Second), benchMiB(finalAlloc), 100*float64(finalAlloc)/float64(sm.peakDisk), benchMiB(finalApp))
	}
	b.Logf("memory: peak VmHWM %s (%s holding the backlog), peak VmRSS sampled %s",
		benchMiB(sm.hwm), benchMiB(holdHWM), benchMiB(sm.peakRSS))
	p.stop(b, time.Minute)
	p.logProblems(b, "backlog")
	stopApp, stopAlloc, err := benchDirUse(dir)
	if err != nil {
		b.Fatal(err)
	}

	// A restart over the drained store: what the tombstones cost.
	p, rt := restartBenchBroker(b, addr, dir)
	reApp, reAlloc, err := benchDirUse(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("after stop: %s allocated, %s apparent; restart: CONNACK %v after exec, took=%v, %v; %s allocated, %s apparent",
		benchMiB(stopAlloc), benchMiB(stopApp), rt.accept.Round(time.Millisecond), rt.took, p.mem(b),
		benchMiB(reAlloc), benchMiB(reApp))
	p.stop(b, time.Minute)
	p.logProblems(b, "restart after the drain")

	b.ReportMetric(float64(msgs)/pubTime.Seconds(), "publish-msgs/s")
	b.ReportMetric(float64(holdHWM)/(1<<20), "hold-HWM-MiB")
	b.ReportMetric(float64(sm.hwm)/(1<<20), "HWM-MiB")
	b.ReportMetric(float64(got.Load())/drain.Seconds(), "drain-msgs/s")
	b.ReportMetric(float64(sm.peakDisk)/(1<<20), "disk-peak-MiB")
	b.ReportMetric(float64(finalAlloc)/(1<<20), "disk-final-MiB")
}

// BenchmarkDurableThroughput: 20 publisher/subscriber pairs, QoS 1, 10
// messages in flight per publisher, the subscribers online with
// persistent sessions (clean session 0), with --durability sync, batch
// and memory in turn. It reports msgs/s and the broker's CPU time per
// message (user + system, /proc/<pid>/stat) over FERRYMQ_BENCH_SECONDS
// (default 10) after a 2 s warm-up, and the ratios to memory.
func BenchmarkDurableThroughput(b *testing.B) {
	benchSkipShort(b)
	secs := benchEnvInt(b, "FERRYMQ_BENCH_SECONDS", 10)
	type result struct{ rate, cpuPerMsg float64 }
	results := map[string]result{}
	modes := []string{"sync", "batch", "memory"}
	for _, mode := range modes {
		b.Run(mode, func(b *testing.B) {
			for range b.N {
				rate, cpu := benchThroughput(b, mode, time.Duration(secs)*time.Second)
				results[mode] = result{rate, cpu}
			}
		})
	}
	mem, ok := results["memory"]
	if !ok || mem.rate == 0 {
		return
	}
	for _, mode := range modes[:2] {
		if r, ok := results[mode]; ok {
			b.Logf("%s/memory: throughput %.2f, CPU per message %.2f", mode, r.rate/mem.rate, r.cpuPerMsg/mem.cpuPerMsg)
		}
	}
}

func benchThroughput(b *testing.B, mode string, measure time.Duration) (rate, cpuPerMsg float64) {
	const (
		pairs  = 20
		window = 10
	)
	dir := b.TempDir()
	p := startBenchBroker(b, "", dir, mode)
	addr := p.addr(b)

	var got atomic.Int64
	subs := make([]*benchConn, pairs)
	var wg sync.WaitGroup
	for i := range pairs {
		m, _, err := benchDial(addr, fmt.Sprintf("tp-sub-%02d", i), false)
		if err != nil {
			b.Fatal(err)
		}
		if err := m.subscribe(fmt.Sprintf("tp/%02d", i)); err != nil {
			b.Fatal(err)
		}
		subs[i] = m
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.receive(func([]byte) { got.Add(1) })
		}()
	}

	var stop atomic.Bool
	var sent atomic.Int64
	pubErr := make(chan error, 1)
	go func() {
		pubErr <- benchParallel(pairs, pairs, func(i int) error {
			m, _, err := benchDial(addr, fmt.Sprintf("tp-pub-%02d", i), true)
			if err != nil {
				return err
			}
			defer m.disconnect()
			pub := newBenchPublisher(m, window)
			topic := fmt.Sprintf("tp/%02d", i)
			payload := make([]byte, 64)
			for !stop.Load() {
				if err := pub.publish(topic, payload, false); err != nil {
					return err
				}
				sent.Add(1)
			}
			return pub.drain(time.Minute)
		})
	}()

	time.Sleep(2 * time.Second)
	n0, c0, t0 := got.Load(), p.cpu(b), time.Now()
	time.Sleep(measure)
	n1, c1, t1 := got.Load(), p.cpu(b), time.Now()
	mem := p.mem(b)
	stop.Store(true)
	if err := <-pubErr; err != nil {
		b.Fatal(err)
	}
	if benchWaitCount(got.Load, sent.Load(), 30*time.Second).IsZero() {
		b.Errorf("the subscribers got %d of %d messages", got.Load(), sent.Load())
	}
	for _, m := range subs {
		m.disconnect()
	}
	wg.Wait()
	p.stop(b, time.Minute)
	p.logProblems(b, mode)

	n := n1 - n0
	rate = float64(n) / t1.Sub(t0).Seconds()
	cpuPerMsg = float64((c1 - c0).Microseconds()) / float64(n)
	b.Logf("%s: %.0f msgs/s, broker CPU %.1f µs/msg (%.0f%% of a core), %v", mode, rate, cpuPerMsg,
		100*(c1-c0).Seconds()/t1.Sub(t0).Seconds(), mem)
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(cpuPerMsg, "cpu-µs/msg")
	return rate, cpuPerMsg
}
