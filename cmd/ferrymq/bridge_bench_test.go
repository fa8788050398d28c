package main_test

// Measurements of the store-and-forward bridge on the real binary, for
// both upstream kinds: the local RabbitMQ (a fresh vhost) and a Mosquitto
// started by the benchmark. The upstream goes down and comes back:
// RabbitMQ refuses the bridge's connections while the vhost's
// max-connections limit is 0 (rabbitmqctl set_vhost_limits; with
// FERRYMQ_BENCH_AMQP_DOWN=proxy, or without rabbitmqctl, the bridge goes
// through an upstreamtest.Proxy instead, which costs CPU in the test
// process); Mosquitto is stopped and started again. Each sub-benchmark
// runs three phases:
//
//  1. ceiling: plain publishers send FERRYMQ_BENCH_BRIDGE_LIVE messages
//     straight to the upstream (QoS 1 / publisher confirms, 256 in
//     flight), counted by the same consumer as the bridge's messages: how
//     fast the upstream and the counting consumer go without ferrymq;
//  2. live: the upstream is up from the start; 4 publishers (QoS 1, 64 in
//     flight each) send FERRYMQ_BENCH_BRIDGE_LIVE (default 300,000)
//     64-byte messages to sensors/<n> as fast as ferrymq takes them; the
//     rule sensors/# -> site1/{1} forwards them; the rate is the messages
//     over the time from the first publish to the last arrival upstream;
//  3. drain: the upstream is down; the same publishers send
//     FERRYMQ_BENCH_BRIDGE_BACKLOG (default 1,000,000) messages, all
//     acknowledged; after FERRYMQ_BENCH_BRIDGE_IDLE (default 5 s) the
//     broker's memory while holding the backlog is read from /proc
//     (status, smaps_rollup, and smaps summed by kind of file); then the
//     upstream comes back and the time until every backlog message has
//     arrived upstream is measured, while a live publisher keeps sending
//     FERRYMQ_BENCH_BRIDGE_LIVE_RATE (default 1,000) msgs/s to
//     sensors/live/<n>: those must arrive too (after the backlog: the
//     outbox is forwarded in order).
//
// Every message carries its number in its payload, so the consumer
// counts distinct messages, duplicates (resends after a reconnect) and
// messages of a publisher arriving out of order. Counting consumers:
// RabbitMQ, an exclusive queue bound with site1.# on amq.topic, consumed
// with auto-ack (amqp091-go); Mosquitto, a persistent-session MQTT 3.1.1
// subscriber on site1/# at QoS 1 (it keeps its subscription while
// Mosquitto is down, so nothing forwarded right after the restart is
// missed). Each phase also logs the CPU use of every CPU, of the broker,
// of the test process and of the upstream, and the broker's system calls
// and context switches per message.
//
// The broker runs with --durability FERRYMQ_BENCH_DURABILITY (default
// sync, the default of ferrymq) and the bridge with its defaults
// (replay.max_inflight 256, or FERRYMQ_BENCH_BRIDGE_INFLIGHT) but a short
// reconnect backoff (100ms..500ms), so that the drain starts within half
// a second of the upstream coming back. Run (about 3 minutes for
// RabbitMQ, 2 for Mosquitto):
//
//	go test ./cmd/ferrymq -run '^$' -bench 'BenchmarkBridgeDrain$' -benchtime 1x -v
//	go test ./cmd/ferrymq -run '^$' -bench 'BenchmarkBridgeDrain$/amqp' -benchtime 1x -v
//
// pinned as the project measures (broker on CPU 1, the test process, its
// consumers and the Mosquitto it starts on CPU 0; the system's RabbitMQ
// is not pinned):
//
//	FERRYMQ_BENCH_BROKER_CPUS=1 taskset -c 0 go test ./cmd/ferrymq -run '^$' -bench 'BenchmarkBridgeDrain$' -benchtime 1x -v
//
// Investigation knobs: FERRYMQ_BENCH_BRIDGE_DRAIN_ONLY=1 runs phase 3
// only; FERRYMQ_BENCH_BRIDGE_PAGEOUT=1 asks the kernel to reclaim the
// pages of Badger's tables (.sst) before the drain, as memory pressure
// would, and logs the memory then; FERRYMQ_BENCH_BROKER_ENV adds
// variables to the broker's environment (e.g. "GODEBUG=gctrace=1", whose
// lines are logged, or "GOMEMLIMIT=40MiB"); FERRYMQ_BENCH_PERF=<dir>
// records the broker with "perf record -g" during the live and drain
// measurements. BenchmarkBridgeDrainInProcess (at the end) writes heap
// and CPU profiles of the same drain run in the test process.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/bridge"
	bamqp "github.com/ferrymq/ferrymq/bridge/amqp"
	bmqtt "github.com/ferrymq/ferrymq/bridge/mqtt"
	"github.com/ferrymq/ferrymq/broker"
	"github.com/ferrymq/ferrymq/internal/upstreamtest"
	"github.com/ferrymq/ferrymq/persist"
)

const (
	bridgeBenchPubs    = 4  // publishers of the live and backlog phases
	bridgeBenchWindow  = 64 // QoS 1 messages in flight per publisher
	bridgeBenchTopics  = 1000
	bridgeBenchPayload = 64
	bridgeBenchName    = "bench"
)

// Kinds of message (payload byte 8).
const (
	bridgeKindBacklog = iota // published by the backlog and live phases' publishers
	bridgeKindLive           // published while the backlog drains
	bridgeKindDirect         // published straight to the upstream (ceiling)
)

var benchBridgeConnectedRe = regexp.MustCompile(`msg="bridge connected"`)

// BenchmarkBridgeDrain measures, for a RabbitMQ and a Mosquitto upstream,
// the live forwarding rate, the drain rate of a backlog and its ratio to
// the live rate, the broker's memory while it holds the backlog and its
// CPU time per message (see the top of this file).
func BenchmarkBridgeDrain(b *testing.B) {
	benchSkipShort(b)
	o := bridgeBenchOptions{
		backlog:    benchEnvInt(b, "FERRYMQ_BENCH_BRIDGE_BACKLOG", 1_000_000),
		live:       benchEnvInt(b, "FERRYMQ_BENCH_BRIDGE_LIVE", 300_000),
		liveRate:   benchEnvInt(b, "FERRYMQ_BENCH_BRIDGE_LIVE_RATE", 1000),
		inflight:   benchEnvInt(b, "FERRYMQ_BENCH_BRIDGE_INFLIGHT", 256),
		idle:       benchEnvDuration(b, "FERRYMQ_BENCH_BRIDGE_IDLE", 5*time.Second),
		durability: os.Getenv("FERRYMQ_BENCH_DURABILITY"),
		drainOnly:  os.Getenv("FERRYMQ_BENCH_BRIDGE_DRAIN_ONLY") == "1",
		pageout:    os.Getenv("FERRYMQ_BENCH_BRIDGE_PAGEOUT") == "1",
	}
	if o.durability == "" {
		o.durability = "sync"
	}
	b.Run("amqp", func(b *testing.B) {
		for range b.N {
			benchBridge(b, o, newAMQPBenchUpstream)
		}
	})
	b.Run("mqtt", func(b *testing.B) {
		for range b.N {
			benchBridge(b, o, newMQTTBenchUpstream)
		}
	})
}

type bridgeBenchOptions struct {
	backlog, live, liveRate, inflight int
	idle                              time.Duration
	durability                        string
	drainOnly                         bool // skip the ceiling and live phases
	pageout                           bool // page Badger's tables out before the drain
}

// bridgeBenchUpstream is an upstream broker with its counting consumer.
type bridgeBenchUpstream interface {
	// bridgeYAML returns the upstream keys of the bridge's configuration.
	bridgeYAML(clientID string) string
	// bridgeURL is the upstream URL the bridge dials.
	bridgeURL() string
	// down makes the upstream unreachable for the bridge (the consumer
	// keeps its queue or subscription); up brings it back.
	down(b *testing.B)
	up(b *testing.B)
	// direct publishes n messages made by payload(i) straight to the
	// upstream on topic site1/direct, QoS 1, with confirmations.
	direct(b *testing.B, n int, payload func(i int) []byte) error
	// counter returns the consumer's counter.
	counter() *bridgeBenchCounter
	// pgrep returns the pgrep arguments that find the upstream's
	// processes (for their CPU time).
	pgrep() []string
}

func benchBridge(b *testing.B, o bridgeBenchOptions, newUp func(b *testing.B) bridgeBenchUpstream) {
	up := newUp(b)
	cnt := up.counter()
	var ceiling, live, liveCPU float64
	if !o.drainOnly {
		// 1. The ceiling: the upstream and the consumer without ferrymq.
		ceiling = benchBridgeCeiling(b, up, cnt, o.live)
		// 2. Live forwarding.
		live, liveCPU = benchBridgeLive(b, o, up, cnt)
	}
	// 3. The backlog and its drain.
	d := benchBridgeBacklog(b, o, up, cnt)

	ratio := d.rate / live
	if o.drainOnly {
		b.Logf("SUMMARY %s: drain %.0f msgs/s (%.0f from connect; broker CPU %.1f µs/msg); holding %d messages: %v",
			b.Name(), d.rate, d.rateConn, d.cpu, o.backlog, d.held)
	} else {
		b.Logf("SUMMARY %s: ceiling %.0f msgs/s; live %.0f msgs/s (broker CPU %.1f µs/msg); drain %.0f msgs/s (%.0f from connect; broker CPU %.1f µs/msg) = %.2f x live; holding %d messages: %v",
			b.Name(), ceiling, live, liveCPU, d.rate, d.rateConn, d.cpu, ratio, o.backlog, d.held)
		b.ReportMetric(ceiling, "ceiling-msgs/s")
		b.ReportMetric(live, "live-msgs/s")
		b.ReportMetric(ratio, "drain/live")
		b.ReportMetric(liveCPU, "live-cpu-µs/msg")
	}
	if o.pageout {
		b.ReportMetric(float64(d.pagedOut.rss)/(1<<20), "paged-out-RSS-MiB")
	}
	b.ReportMetric(d.rate, "drain-msgs/s")
	b.ReportMetric(float64(d.held.rss)/(1<<20), "hold-RSS-MiB")
	b.ReportMetric(float64(d.held.hwm)/(1<<20), "hold-HWM-MiB")
	b.ReportMetric(float64(d.held.anon)/(1<<20), "hold-anon-MiB")
	b.ReportMetric(float64(d.held.file)/(1<<20), "hold-file-MiB")
	b.ReportMetric(float64(d.peakHWM)/(1<<20), "HWM-MiB")
	b.ReportMetric(d.cpu, "drain-cpu-µs/msg")
}

// benchBridgeCeiling publishes n messages straight to the upstream and
// returns the rate at which the consumer gets them.
func benchBridgeCeiling(b *testing.B, up bridgeBenchUpstream, cnt *bridgeBenchCounter, n int) float64 {
	tag := rand.Uint64()
	cnt.reset(tag, n)
	sys0 := benchReadCPUs(nil, up)
	start := time.Now()
	if err := up.direct(b, n, func(i int) []byte { return bridgeBenchMsg(tag, bridgeKindDirect, i) }); err != nil {
		b.Fatal(err)
	}
	pubTime := time.Since(start)
	end := benchWaitCount(cnt.uniqDirect.Load, int64(n), 30*time.Second)
	if end.IsZero() {
		b.Fatalf("ceiling: the consumer got %d of %d messages", cnt.uniqDirect.Load(), n)
	}
	sys1 := benchReadCPUs(nil, up)
	rate := float64(n) / end.Sub(start).Seconds()
	b.Logf("ceiling: %d messages published straight to the upstream in %v, all received %v after the first publish: %.0f msgs/s; %s; CPU use meanwhile: %s",
		n, pubTime.Round(time.Millisecond), end.Sub(start).Round(time.Millisecond), rate, cnt, sys1.since(sys0, n))
	return rate
}

// benchBridgeLive measures live forwarding: the upstream up from the
// start, publishers as fast as the broker takes them.
func benchBridgeLive(b *testing.B, o bridgeBenchOptions, up bridgeBenchUpstream, cnt *bridgeBenchCounter) (rate, cpuPerMsg float64) {
	tag := rand.Uint64()
	cnt.reset(tag, o.live)
	dir := b.TempDir()
	p := startBridgeBenchBroker(b, dir, o.durability, bridgeBenchConfig(up.bridgeYAML("edge-bench-live"), o.inflight))
	addr := p.addr(b)
	p.waitLine(b, benchBridgeConnectedRe, 30*time.Second)

	perf := startBenchPerf(b, p, "live")
	sys0 := benchReadCPUs(p, up)
	c0, start := p.cpu(b), time.Now()
	if err := benchBridgePublish(addr, "live-pub", tag, o.live); err != nil {
		b.Fatal(err)
	}
	pubTime := time.Since(start)
	end := benchWaitCount(cnt.uniqBacklog.Load, int64(o.live), 30*time.Second)
	c1 := p.cpu(b)
	sys1 := benchReadCPUs(p, up)
	perf.stop(b)
	if end.IsZero() {
		b.Fatalf("live: the upstream got %d of %d messages; %s", cnt.uniqBacklog.Load(), o.live, cnt)
	}
	d := end.Sub(start)
	rate = float64(o.live) / d.Seconds()
	cpuPerMsg = float64((c1 - c0).Microseconds()) / float64(o.live)
	b.Logf("live: %d messages published in %v (%.0f msgs/s acknowledged), all upstream %v after the first publish: %.0f msgs/s; broker CPU %.1f µs/msg (%.0f%% of a core), %v; %s",
		o.live, pubTime.Round(time.Millisecond), float64(o.live)/pubTime.Seconds(), d.Round(time.Millisecond), rate,
		cpuPerMsg, 100*(c1-c0).Seconds()/d.Seconds(), p.mem(b), cnt)
	b.Logf("live: CPU use meanwhile: %s", sys1.since(sys0, o.live))
	p.stop(b, time.Minute)
	bridgeLogProblems(b, p, "live")
	benchLogBrokerEnvLines(b, p)
	return rate, cpuPerMsg
}

type bridgeDrainResult struct {
	rate, rateConn, cpu float64
	held, pagedOut      benchMem
	peakHWM             int64
}

// benchBridgeBacklog builds a backlog with the upstream down, measures
// the broker holding it, and its drain.
func benchBridgeBacklog(b *testing.B, o bridgeBenchOptions, up bridgeBenchUpstream, cnt *bridgeBenchCounter) (r bridgeDrainResult) {
	tag := rand.Uint64()
	cnt.reset(tag, o.backlog)
	up.down(b)
	dir := b.TempDir()
	p := startBridgeBenchBroker(b, dir, o.durability, bridgeBenchConfig(up.bridgeYAML("edge-bench-drain"), o.inflight))
	addr := p.addr(b)
	idle := p.mem(b)

	sm := startBenchSampler(p, dir)
	start := time.Now()
	if err := benchBridgePublish(addr, "backlog-pub", tag, o.backlog); err != nil {
		b.Fatal(err)
	}
	pubTime := time.Since(start)
	b.Logf("backlog: %d messages published in %v (%.0f msgs/s), all acknowledged; broker idle before: %v",
		o.backlog, pubTime.Round(time.Millisecond), float64(o.backlog)/pubTime.Seconds(), idle)
	time.Sleep(o.idle)
	r.held = p.mem(b)
	sm.sample()
	app, alloc, err := benchDirUse(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("holding the backlog (%v after the last PUBACK): %v; smaps_rollup: %s; resident file mappings: %s; data dir %s allocated, %s apparent",
		o.idle, r.held, benchSmapsRollup(p), benchSmapsFiles(p), benchMiB(alloc), benchMiB(app))
	if got := cnt.total.Load(); got != 0 {
		b.Fatalf("the upstream got %d messages while it was down", got)
	}
	if o.pageout {
		// What memory pressure would do: the kernel takes back the
		// clean pages of Badger's tables (they are re-read from the
		// page cache or the disk when the drain needs them).
		if err := benchPageout(p.pid(), ".sst"); err != nil {
			b.Fatalf("page out: %v", err)
		}
		r.pagedOut = p.mem(b)
		b.Logf("holding the backlog, after paging out Badger's tables (process_madvise MADV_PAGEOUT): %v; resident file mappings: %s",
			r.pagedOut, benchSmapsFiles(p))
	}

	// The live publisher runs from the moment the upstream comes back
	// until the backlog is drained.
	lp := startBridgeLivePublisher(b, addr, tag, o.liveRate)
	perf := startBenchPerf(b, p, "drain")
	up.up(b)
	// The upstream accepts connections from now on (rabbitmqctl takes a
	// second to lift the limit: the bridge may even have connected
	// already).
	sys0 := benchReadCPUs(p, up)
	c0, upAt := p.cpu(b), time.Now()
	p.waitLine(b, benchBridgeConnectedRe, 30*time.Second)
	connAt := time.Now()
	if total := cnt.total.Load(); total > 0 {
		b.Logf("drain: %d messages were upstream already when it was back", total)
	}
	end := benchWaitCount(cnt.uniqBacklog.Load, int64(o.backlog), 30*time.Second)
	c1 := p.cpu(b)
	sys1 := benchReadCPUs(p, up)
	perf.stop(b)
	liveSent, liveTime := lp.stop(b)
	if end.IsZero() {
		b.Fatalf("drain: the upstream got %d of %d backlog messages; %s", cnt.uniqBacklog.Load(), o.backlog, cnt)
	}
	liveAt := time.Now()
	liveEnd := benchWaitCount(cnt.uniqLive.Load, int64(liveSent), 30*time.Second)
	if liveEnd.IsZero() {
		b.Errorf("drain: the upstream got %d of the %d live messages", cnt.uniqLive.Load(), liveSent)
	}
	drained := p.mem(b)
	sm.finish()
	r.peakHWM = sm.hwm

	first := time.Unix(0, cnt.first.Load())
	d := end.Sub(upAt)
	r.rate = float64(o.backlog) / d.Seconds()
	r.rateConn = float64(o.backlog) / end.Sub(connAt).Seconds()
	r.cpu = float64((c1 - c0).Microseconds()) / float64(o.backlog+int(cnt.uniqLive.Load()))
	b.Logf("drain: upstream back at 0, bridge connected at %v, first message upstream at %v, all %d backlog messages at %v: %.0f msgs/s from the upstream's return, %.0f from the connection; broker CPU %.1f µs/msg (%.0f%% of a core)",
		connAt.Sub(upAt).Round(time.Millisecond), first.Sub(upAt).Round(time.Millisecond), o.backlog, d.Round(time.Millisecond),
		r.rate, r.rateConn, r.cpu, 100*(c1-c0).Seconds()/d.Seconds())
	b.Logf("drain: CPU use meanwhile: %s", sys1.since(sys0, o.backlog+liveSent))
	b.Logf("drain: live publisher sent %d messages in %v (%.0f msgs/s, all acknowledged); %d of them upstream %v after the backlog was drained",
		liveSent, liveTime.Round(time.Millisecond), float64(liveSent)/liveTime.Seconds(), cnt.uniqLive.Load(),
		liveEnd.Sub(liveAt).Round(time.Millisecond))
	b.Logf("drain: %s; broker after the drain %v (resident file mappings: %s), peak VmHWM %s, peak VmRSS sampled %s",
		cnt, drained, benchSmapsFiles(p), benchMiB(sm.hwm), benchMiB(sm.peakRSS))
	p.stop(b, time.Minute)
	bridgeLogProblems(b, p, "drain")
	benchLogBrokerEnvLines(b, p)
	return r
}

// bridgeBenchConfig is the configuration file of the benchmark's broker.
func bridgeBenchConfig(upstream string, inflight int) string {
	return fmt.Sprintf(`bridges:
  - name: %s
%s    forward:
      - from: "sensors/#"
        to: "site1/{1}"
        qos: 1
    replay: {max_inflight: %d}
    reconnect: {min: 100ms, max: 500ms}
`, bridgeBenchName, upstream, inflight)
}

// startBridgeBenchBroker runs "ferrymq run -c <config>" on 127.0.0.1:0,
// like startBenchBroker (pinned with FERRYMQ_BENCH_BROKER_CPUS).
func startBridgeBenchBroker(tb testing.TB, dataDir, durability, config string) *benchBroker {
	tb.Helper()
	cfgPath := filepath.Join(tb.TempDir(), "ferrymq.yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		tb.Fatal(err)
	}
	return execBenchBroker(tb, "run", "-c", cfgPath, "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--durability", durability)
}

// benchLogBrokerEnvLines logs the broker's stderr lines that are not its
// own log records (gctrace and the like, from FERRYMQ_BENCH_BROKER_ENV).
func benchLogBrokerEnvLines(tb testing.TB, p *benchBroker) {
	if os.Getenv("FERRYMQ_BENCH_BROKER_ENV") == "" {
		return
	}
	var out []string
	for _, l := range p.stderrLines() {
		if !strings.HasPrefix(l, "time=") {
			out = append(out, l)
		}
	}
	if len(out) > 40 {
		out = append(out[:20], append([]string{fmt.Sprintf("... %d lines ...", len(out)-40)}, out[len(out)-20:]...)...)
	}
	tb.Logf("broker's other stderr lines:\n%s", strings.Join(out, "\n"))
}

// benchSmapsRollup returns the main fields of /proc/<pid>/smaps_rollup.
func benchSmapsRollup(p *benchBroker) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", p.pid()))
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[2] == "kB" {
			switch f[0] {
			case "Rss:", "Pss_Anon:", "Pss_File:", "Shared_Clean:", "Private_Clean:", "Private_Dirty:", "Anonymous:":
				out = append(out, fmt.Sprintf("%s %s kB", strings.TrimSuffix(f[0], ":"), f[1]))
			}
		}
	}
	return strings.Join(out, ", ")
}

// benchCPUs is a reading of the CPU time used: by each CPU of the machine
// (/proc/stat), by the broker, by this test process (its consumers,
// publishers and proxy) and by the upstream's processes.
type benchCPUs struct {
	at                     time.Time
	busy                   []int64 // per CPU, in USER_HZ ticks
	broker, self, upstream int64   // ticks
	// The broker's read and write system calls (/proc/<pid>/io) and
	// context switches (all its threads).
	syscr, syscw, ctxsw int64
}

func benchReadCPUs(p *benchBroker, up bridgeBenchUpstream) benchCPUs {
	c := benchCPUs{at: time.Now()}
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
				continue
			}
			var busy int64
			for i, v := range f[1:9] {
				n, _ := strconv.ParseInt(v, 10, 64)
				if i != 3 && i != 4 { // idle, iowait
					busy += n
				}
			}
			c.busy = append(c.busy, busy)
		}
	}
	if p != nil {
		c.broker = benchProcTicks(p.pid())
		c.syscr, c.syscw, c.ctxsw = benchProcSwitches(p.pid())
	}
	c.self = benchProcTicks(os.Getpid())
	for _, pid := range benchPgrep(up.pgrep()...) {
		c.upstream += benchProcTicks(pid)
	}
	return c
}

// benchProcSwitches returns the read and write system calls of a process
// and the context switches of all its threads.
func benchProcSwitches(pid int) (syscr, syscw, ctxsw int64) {
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) == 2 && f[0] == "syscr:" {
				syscr, _ = strconv.ParseInt(f[1], 10, 64)
			}
			if len(f) == 2 && f[0] == "syscw:" {
				syscw, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) == 2 && (f[0] == "voluntary_ctxt_switches:" || f[0] == "nonvoluntary_ctxt_switches:") {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				ctxsw += n
			}
		}
	}
	return syscr, syscw, ctxsw
}

// benchPgrep returns the pids pgrep finds with args.
func benchPgrep(args ...string) []int {
	out, err := exec.Command("pgrep", args...).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// benchProcTicks is the user + system time of a process, in USER_HZ ticks.
func benchProcTicks(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st
}

// since describes the CPU use between c0 and c, as percentages of one CPU
// and in µs per message for n messages.
func (c benchCPUs) since(c0 benchCPUs, n int) string {
	secs := c.at.Sub(c0.at).Seconds() * benchUserHZ
	pct := func(d int64) string { return fmt.Sprintf("%.0f%%", 100*float64(d)/secs) }
	var cpus []string
	var busy int64
	for i := range min(len(c.busy), len(c0.busy)) {
		cpus = append(cpus, fmt.Sprintf("cpu%d %s", i, pct(c.busy[i]-c0.busy[i])))
		busy += c.busy[i] - c0.busy[i]
	}
	others := busy - (c.broker - c0.broker) - (c.self - c0.self) - (c.upstream - c0.upstream)
	per := func(d int64) string { return fmt.Sprintf("%.1f µs/msg", float64(d)*1e6/benchUserHZ/float64(n)) }
	out := fmt.Sprintf("%s busy; broker %s (%s), test process %s (%s), upstream %s (%s)", strings.Join(cpus, ", "),
		pct(c.broker-c0.broker), per(c.broker-c0.broker), pct(c.self-c0.self), per(c.self-c0.self),
		pct(c.upstream-c0.upstream), per(c.upstream-c0.upstream))
	out += fmt.Sprintf(", other processes %s", pct(max(others, 0)))
	if c.ctxsw > 0 {
		out += fmt.Sprintf("; broker per message: %.2f reads, %.2f writes (system calls), %.2f context switches",
			float64(c.syscr-c0.syscr)/float64(n), float64(c.syscw-c0.syscw)/float64(n), float64(c.ctxsw-c0.ctxsw)/float64(n))
	}
	return out
}

// benchPageout asks the kernel to reclaim the pages of process pid's file
// mappings whose path ends with suffix: process_madvise(2) with
// MADV_PAGEOUT (Linux 5.10 or later, and the rights to ptrace pid).
func benchPageout(pid int, suffix string) error {
	const (
		sysPidfdOpen      = 434 // the same number on every architecture
		sysProcessMadvise = 440
		madvPageout       = 21
	)
	if runtime.GOOS != "linux" {
		return errors.New("process_madvise is Linux only")
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return err
	}
	// struct iovec {void *base; size_t len}, as uintptrs: addresses in
	// the other process, which the GC must not see as pointers.
	var iovs []uintptr
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 || !strings.HasSuffix(f[5], suffix) {
			continue
		}
		var lo, hi uint64
		if _, err := fmt.Sscanf(f[0], "%x-%x", &lo, &hi); err != nil {
			return fmt.Errorf("%q: %w", f[0], err)
		}
		iovs = append(iovs, uintptr(lo), uintptr(hi-lo))
	}
	fd, _, e := syscall.Syscall(sysPidfdOpen, uintptr(pid), 0, 0)
	if e != 0 {
		return fmt.Errorf("pidfd_open: %w", e)
	}
	defer syscall.Close(int(fd))
	for len(iovs) > 0 {
		n := min(len(iovs)/2, 512)
		_, _, e := syscall.Syscall6(sysProcessMadvise, fd, uintptr(unsafe.Pointer(&iovs[0])), uintptr(n), madvPageout, 0, 0)
		if e != 0 {
			return fmt.Errorf("process_madvise: %w", e)
		}
		iovs = iovs[2*n:]
	}
	return nil
}

// benchSmapsFiles sums the resident size of the broker's file mappings
// (/proc/<pid>/smaps) by kind of file: Badger's tables (.sst), value log
// (.vlog), memtable logs (.mem) and the rest.
func benchSmapsFiles(p *benchBroker) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", p.pid()))
	if err != nil {
		return err.Error()
	}
	type sum struct{ n, size, rss int64 }
	sums := map[string]*sum{}
	var cur *sum
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && strings.Contains(f[0], "-") && strings.Count(f[1], "") == 5 {
			cur = nil
			if len(f) >= 6 && strings.HasPrefix(f[5], "/") {
				kind := filepath.Ext(f[5])
				if kind == "" || strings.Contains(f[5], "/ferrymq") {
					kind = filepath.Base(f[5])
				}
				if sums[kind] == nil {
					sums[kind] = &sum{}
				}
				cur = sums[kind]
				cur.n++
			}
			continue
		}
		if cur != nil && len(f) == 3 && f[2] == "kB" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "Size:":
				cur.size += n << 10
			case "Rss:":
				cur.rss += n << 10
			}
		}
	}
	var out []string
	for kind, s := range sums {
		out = append(out, fmt.Sprintf("%s: %d mapped, %s of %s resident", kind, s.n, benchMiB(s.rss), benchMiB(s.size)))
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// bridgeLogProblems is logProblems without the expected warnings of a
// bridge whose upstream is down (they are counted).
func bridgeLogProblems(tb testing.TB, p *benchBroker, name string) {
	tb.Helper()
	var pr []string
	refused := 0
	for _, l := range p.problems() {
		if strings.Contains(l, `msg="bridge cannot connect to its upstream"`) {
			refused++
			continue
		}
		pr = append(pr, l)
	}
	if len(pr) == 0 {
		tb.Logf("%s: no WARN or ERROR lines in the broker's log but %d failed connection attempts", name, refused)
		return
	}
	tb.Logf("%s: %d failed connection attempts, and %d other WARN/ERROR lines in the broker's log, the first ones:\n%s",
		name, refused, len(pr), strings.Join(pr[:min(len(pr), 5)], "\n"))
}

// bridgeBenchMsg is the 64-byte payload of message i of a run: the run's
// tag, the kind and the number, zeros after.
func bridgeBenchMsg(tag uint64, kind byte, i int) []byte {
	p := make([]byte, bridgeBenchPayload)
	binary.BigEndian.PutUint64(p, tag)
	p[8] = kind
	binary.BigEndian.PutUint64(p[9:], uint64(i))
	return p
}

// benchBridgePublish publishes messages 0..n-1 of a run from
// bridgeBenchPubs connections (publisher k sends k, k+pubs, ...) to
// sensors/<i mod bridgeBenchTopics> and waits until all are acknowledged.
func benchBridgePublish(addr, prefix string, tag uint64, n int) error {
	return benchParallel(bridgeBenchPubs, bridgeBenchPubs, func(k int) error {
		m, _, err := benchDial(addr, fmt.Sprintf("%s-%d", prefix, k), true)
		if err != nil {
			return err
		}
		defer m.disconnect()
		pub := newBenchPublisher(m, bridgeBenchWindow)
		topics := make([]string, bridgeBenchTopics)
		for i := range topics {
			topics[i] = fmt.Sprintf("sensors/%d", i)
		}
		payload := bridgeBenchMsg(tag, bridgeKindBacklog, 0)
		for i := k; i < n; i += bridgeBenchPubs {
			binary.BigEndian.PutUint64(payload[9:], uint64(i))
			if err := pub.publish(topics[i%bridgeBenchTopics], payload, false); err != nil {
				return fmt.Errorf("message %d: %w", i, err)
			}
		}
		return pub.drain(time.Minute)
	})
}

// bridgeLivePublisher publishes at a steady rate on one connection.
type bridgeLivePublisher struct {
	stopc chan struct{}
	done  chan struct{}
	start time.Time
	sent  int
	err   error
}

func startBridgeLivePublisher(b *testing.B, addr string, tag uint64, rate int) *bridgeLivePublisher {
	m, _, err := benchDial(addr, "live-during-drain", true)
	if err != nil {
		b.Fatal(err)
	}
	lp := &bridgeLivePublisher{stopc: make(chan struct{}), done: make(chan struct{}), start: time.Now()}
	go func() {
		defer close(lp.done)
		defer m.disconnect()
		pub := newBenchPublisher(m, 1000)
		const tick = 10 * time.Millisecond
		t := time.NewTicker(tick)
		defer t.Stop()
		payload := bridgeBenchMsg(tag, bridgeKindLive, 0)
		for {
			select {
			case <-lp.stopc:
				lp.err = pub.drain(time.Minute)
				return
			case <-t.C:
			}
			// Catch up with the schedule (the ticker drops ticks).
			due := int(time.Since(lp.start) * time.Duration(rate) / time.Second)
			for lp.sent < due {
				binary.BigEndian.PutUint64(payload[9:], uint64(lp.sent))
				topic := fmt.Sprintf("sensors/live/%d", lp.sent%10)
				if err := pub.publish(topic, payload, lp.sent+1 == due); err != nil {
					lp.err = err
					return
				}
				lp.sent++
			}
		}
	}()
	return lp
}

// stop ends the publisher once its messages are acknowledged and returns
// how many it sent and for how long.
func (lp *bridgeLivePublisher) stop(b *testing.B) (int, time.Duration) {
	d := time.Since(lp.start)
	close(lp.stopc)
	<-lp.done
	if lp.err != nil {
		b.Errorf("live publisher: %v", lp.err)
	}
	return lp.sent, d
}

// bridgeBenchCounter counts what the upstream consumer receives: distinct
// messages of the current run by kind, duplicates, messages of one
// publisher arriving before an earlier one, and messages of other runs.
type bridgeBenchCounter struct {
	mu      sync.Mutex
	tag     uint64
	seen    [3][]uint64 // bitmaps by kind
	last    [bridgeBenchPubs]int64
	lastLiv int64

	uniqBacklog, uniqLive, uniqDirect atomic.Int64
	total, dups, outOfOrder, foreign  atomic.Int64
	first                             atomic.Int64 // unix ns of the run's first message
}

// reset starts a run: tag marks its messages, n of kind backlog are
// expected.
func (c *bridgeBenchCounter) reset(tag uint64, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tag = tag
	for k := range c.seen {
		c.seen[k] = make([]uint64, (n+63)/64)
	}
	for i := range c.last {
		c.last[i] = -1
	}
	c.lastLiv = -1
	for _, v := range []*atomic.Int64{&c.uniqBacklog, &c.uniqLive, &c.uniqDirect, &c.total, &c.dups, &c.outOfOrder, &c.foreign, &c.first} {
		v.Store(0)
	}
}

func (c *bridgeBenchCounter) add(payload []byte) {
	if len(payload) != bridgeBenchPayload {
		c.foreign.Add(1)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if binary.BigEndian.Uint64(payload) != c.tag || payload[8] > bridgeKindDirect {
		c.foreign.Add(1)
		return
	}
	if c.total.Add(1) == 1 {
		c.first.Store(time.Now().UnixNano())
	}
	kind, i := payload[8], int(binary.BigEndian.Uint64(payload[9:]))
	bm := c.seen[kind]
	if w := i / 64; w >= len(bm) {
		bm = append(bm, make([]uint64, w+1-len(bm)+len(bm)/2)...)
		c.seen[kind] = bm
	}
	w, bit := i/64, uint64(1)<<(i%64)
	if bm[w]&bit != 0 {
		c.dups.Add(1)
		return
	}
	bm[w] |= bit
	switch kind {
	case bridgeKindBacklog:
		if k := i % bridgeBenchPubs; int64(i) < c.last[k] {
			c.outOfOrder.Add(1)
		} else {
			c.last[k] = int64(i)
		}
		c.uniqBacklog.Add(1)
	case bridgeKindLive:
		if int64(i) < c.lastLiv {
			c.outOfOrder.Add(1)
		} else {
			c.lastLiv = int64(i)
		}
		c.uniqLive.Add(1)
	default:
		c.uniqDirect.Add(1)
	}
}

func (c *bridgeBenchCounter) String() string {
	return fmt.Sprintf("consumer: %d received (%d distinct, %d live, %d direct), %d duplicates, %d out of order, %d of other runs",
		c.total.Load(), c.uniqBacklog.Load(), c.uniqLive.Load(), c.uniqDirect.Load(), c.dups.Load(), c.outOfOrder.Load(), c.foreign.Load())
}

// amqpBenchUpstream is the local RabbitMQ: a fresh vhost, reached by the
// bridge through a proxy; the consumer connects directly.
type amqpBenchUpstream struct {
	vhost string
	name  string                 // the vhost's name, when down/up use its connection limit
	proxy *upstreamtest.TCPProxy // else the bridge goes through this
	conn  *amqp091.Connection
	cnt   bridgeBenchCounter
}

func newAMQPBenchUpstream(b *testing.B) bridgeBenchUpstream {
	u := &amqpBenchUpstream{vhost: upstreamtest.RabbitVhost(b)}
	if vu, err := url.Parse(u.vhost); err == nil && strings.HasPrefix(vu.Path, "/ferrymq-test-") &&
		os.Getenv("FERRYMQ_BENCH_AMQP_DOWN") != "proxy" {
		u.name = strings.TrimPrefix(vu.Path, "/")
		b.Logf("RabbitMQ down and up: vhost %s refuses connections while its max-connections limit is 0", u.name)
	} else {
		u.proxy = upstreamtest.Proxy(b, upstreamtest.AMQPAddr(b, u.vhost))
		b.Logf("RabbitMQ down and up: the bridge goes through a proxy (%s), stopped and started again", u.proxy.Addr())
	}
	conn, err := amqp091.Dial(u.vhost)
	if err != nil {
		b.Fatal(err)
	}
	u.conn = conn
	b.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.Qos(10000, 0, false); err != nil {
		b.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "site1.#", "amq.topic", false, nil); err != nil {
		b.Fatal(err)
	}
	deliveries, err := ch.Consume(q.Name, "bench-counter", true, true, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for d := range deliveries {
			u.cnt.add(d.Body)
		}
	}()
	return u
}

func (u *amqpBenchUpstream) bridgeURL() string {
	if u.proxy != nil {
		return u.proxy.URL(u.vhost)
	}
	return u.vhost
}

func (u *amqpBenchUpstream) bridgeYAML(clientID string) string {
	return fmt.Sprintf("    upstream: %q\n    client_id: %s\n    exchange: amq.topic\n", u.bridgeURL(), clientID)
}

func (u *amqpBenchUpstream) down(b *testing.B) {
	if u.proxy != nil {
		u.proxy.Down()
		return
	}
	// The vhost, limit included, is deleted at the end of the test.
	benchRabbitmqctl(b, "set_vhost_limits", "-p", u.name, `{"max-connections": 0}`)
}

func (u *amqpBenchUpstream) up(b *testing.B) {
	if u.proxy != nil {
		u.proxy.Up()
		return
	}
	benchRabbitmqctl(b, "clear_vhost_limits", "-p", u.name)
}

func benchRabbitmqctl(tb testing.TB, args ...string) {
	out, err := exec.Command("rabbitmqctl", append([]string{"-q"}, args...)...).CombinedOutput()
	if err != nil {
		tb.Fatalf("rabbitmqctl %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func (u *amqpBenchUpstream) counter() *bridgeBenchCounter { return &u.cnt }
func (u *amqpBenchUpstream) pgrep() []string              { return []string{"-x", "beam.smp"} }

// direct publishes with publisher confirms, persistent, at most 256
// unconfirmed, on a connection of its own.
func (u *amqpBenchUpstream) direct(b *testing.B, n int, payload func(i int) []byte) error {
	conn, err := amqp091.Dial(u.vhost)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		return err
	}
	const window = 256
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, window))
	ctx := context.Background()
	wait := func() error {
		select {
		case c, ok := <-confirms:
			if !ok {
				return errors.New("amqp: channel closed")
			}
			if !c.Ack {
				return fmt.Errorf("amqp: message %d nacked", c.DeliveryTag)
			}
			return nil
		case <-time.After(30 * time.Second):
			return errors.New("amqp: no confirmation for 30 s")
		}
	}
	for i := range n {
		if i >= window {
			if err := wait(); err != nil {
				return err
			}
		}
		err := ch.PublishWithContext(ctx, "amq.topic", "site1.direct", false, false,
			amqp091.Publishing{Body: payload(i), DeliveryMode: amqp091.Persistent})
		if err != nil {
			return err
		}
	}
	for range min(n, window) {
		if err := wait(); err != nil {
			return err
		}
	}
	return nil
}

// mqttBenchUpstream is a Mosquitto started by the benchmark, stopped and
// started again to cut the link; its consumer has a persistent session.
type mqttBenchUpstream struct {
	mq   *upstreamtest.Mosquitto
	cnt  bridgeBenchCounter
	sub  *benchConn
	done chan struct{}
}

const mqttBenchConsumer = "bench-counter"

func newMQTTBenchUpstream(b *testing.B) bridgeBenchUpstream {
	u := &mqttBenchUpstream{mq: upstreamtest.StartMosquitto(b)}
	m, _, err := benchDial(u.mq.Addr(), mqttBenchConsumer, false)
	if err != nil {
		b.Fatal(err)
	}
	if err := m.subscribe("site1/#"); err != nil {
		b.Fatal(err)
	}
	u.consume(m)
	b.Cleanup(u.disconnect)
	return u
}

// consume reads m's PUBLISHes into the counter until m is closed.
func (u *mqttBenchUpstream) consume(m *benchConn) {
	u.sub, u.done = m, make(chan struct{})
	go func() {
		defer close(u.done)
		benchReceivePayloads(m, u.cnt.add)
	}()
}

func (u *mqttBenchUpstream) disconnect() {
	if u.sub != nil {
		u.sub.disconnect()
		<-u.done
		u.sub = nil
	}
}

func (u *mqttBenchUpstream) bridgeURL() string { return u.mq.URL() }

func (u *mqttBenchUpstream) bridgeYAML(clientID string) string {
	return fmt.Sprintf("    upstream: %q\n    client_id: %s\n", u.mq.URL(), clientID)
}

func (u *mqttBenchUpstream) counter() *bridgeBenchCounter { return &u.cnt }
func (u *mqttBenchUpstream) pgrep() []string {
	return []string{"-f", filepath.Join(u.mq.Dir(), "mosquitto.conf")}
}

func (u *mqttBenchUpstream) down(b *testing.B) {
	u.disconnect()
	u.mq.Stop()
}

// up starts Mosquitto again and reconnects the consumer to its session
// (what the bridge sends before is queued for it).
func (u *mqttBenchUpstream) up(b *testing.B) {
	u.mq.Start()
	m, present, err := benchDial(u.mq.Addr(), mqttBenchConsumer, false)
	if err != nil {
		b.Fatal(err)
	}
	if !present {
		b.Fatal("the consumer's session did not survive the Mosquitto restart")
	}
	u.consume(m)
}

func (u *mqttBenchUpstream) direct(b *testing.B, n int, payload func(i int) []byte) error {
	return benchParallel(bridgeBenchPubs, bridgeBenchPubs, func(k int) error {
		m, _, err := benchDial(u.mq.Addr(), fmt.Sprintf("direct-pub-%d", k), true)
		if err != nil {
			return err
		}
		defer m.disconnect()
		pub := newBenchPublisher(m, bridgeBenchWindow)
		for i := k; i < n; i += bridgeBenchPubs {
			if err := pub.publish("site1/direct", payload(i), false); err != nil {
				return err
			}
		}
		return pub.drain(time.Minute)
	})
}

// benchReceivePayloads reads PUBLISHes until the connection ends, calls
// got with each payload and acknowledges QoS 1 ones (PUBACKs flushed when
// no more input is buffered).
func benchReceivePayloads(m *benchConn, got func(payload []byte)) error {
	for {
		t, err := m.read()
		if err != nil {
			return err
		}
		if t>>4 != 3 {
			continue
		}
		qos := (t >> 1) & 3
		if len(m.buf) < 2 {
			return errors.New("short PUBLISH")
		}
		off := 2 + int(binary.BigEndian.Uint16(m.buf))
		if qos > 0 {
			off += 2
		}
		if len(m.buf) < off {
			return errors.New("short PUBLISH")
		}
		got(m.buf[off:])
		if qos == 1 {
			if err := m.puback(m.buf[off-2], m.buf[off-1]); err != nil {
				return err
			}
		}
	}
}

// benchPerf is a "perf record" of the broker (FERRYMQ_BENCH_PERF).
type benchPerf struct {
	cmd *exec.Cmd
	out string
}

func startBenchPerf(tb testing.TB, p *benchBroker, what string) *benchPerf {
	dir := os.Getenv("FERRYMQ_BENCH_PERF")
	if dir == "" {
		return nil
	}
	name := strings.NewReplacer("/", "-").Replace(tb.Name()) + "-" + what
	out := filepath.Join(dir, name+".perf.data")
	cmd := exec.Command("perf", "record", "-g", "-F", "999", "-o", out, "-p", fmt.Sprint(p.pid()))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Logf("perf: %v", err)
		return nil
	}
	time.Sleep(200 * time.Millisecond) // perf attaches
	return &benchPerf{cmd: cmd, out: out}
}

func (pf *benchPerf) stop(tb testing.TB) {
	if pf == nil {
		return
	}
	_ = pf.cmd.Process.Signal(syscall.SIGINT)
	_ = pf.cmd.Wait()
	tb.Logf("perf: recorded %s (perf report -i %s --no-children)", pf.out, pf.out)
}

// BenchmarkBridgeDrainInProcess runs the backlog phase of
// BenchmarkBridgeDrain with the broker, its store and the bridge in the
// test process, to profile them: it writes to FERRYMQ_BENCH_OUT (required)
// a heap profile while the backlog is held (after a GC), a CPU profile of
// the drain and a heap profile after it. Figures measured this way include
// the test's own clients: use BenchmarkBridgeDrain for them.
//
//	FERRYMQ_BENCH_OUT=/tmp/prof go test ./cmd/ferrymq -run '^$' -bench BenchmarkBridgeDrainInProcess/mqtt -benchtime 1x -v
//	go tool pprof -sample_index=inuse_space -top /tmp/prof/BenchmarkBridgeDrainInProcess-mqtt-hold.heap
func BenchmarkBridgeDrainInProcess(b *testing.B) {
	benchSkipShort(b)
	out := os.Getenv("FERRYMQ_BENCH_OUT")
	if out == "" {
		b.Skip("set FERRYMQ_BENCH_OUT to the directory for the profiles")
	}
	n := benchEnvInt(b, "FERRYMQ_BENCH_BRIDGE_BACKLOG", 1_000_000)
	inflight := benchEnvInt(b, "FERRYMQ_BENCH_BRIDGE_INFLIGHT", 256)
	for _, kind := range []string{"amqp", "mqtt"} {
		b.Run(kind, func(b *testing.B) {
			newUp := newAMQPBenchUpstream
			if kind == "mqtt" {
				newUp = newMQTTBenchUpstream
			}
			for range b.N {
				benchBridgeInProcess(b, newUp(b), n, inflight, out)
			}
		})
	}
}

func benchBridgeInProcess(b *testing.B, up bridgeBenchUpstream, n, inflight int, out string) {
	cnt := up.counter()
	tag := rand.Uint64()
	cnt.reset(tag, n)
	up.down(b)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := persist.Open(persist.Options{Dir: b.TempDir(), Durability: persist.Sync, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := broker.New(broker.Config{Listeners: []broker.Listener{{Address: "127.0.0.1:0"}}},
		broker.Options{Logger: log, Store: store})
	if err != nil {
		b.Fatal(err)
	}
	qos := byte(1)
	cfg := bridge.Config{
		Name: bridgeBenchName, Upstream: bridge.UpstreamURL(up.bridgeURL()), ClientID: "edge-bench-inproc",
		Forward:   []bridge.ForwardRule{{From: "sensors/#", To: "site1/{1}", QoS: &qos}},
		Replay:    bridge.Replay{MaxInflight: inflight},
		Reconnect: bridge.Reconnect{Min: 100 * time.Millisecond, Max: 500 * time.Millisecond},
	}
	ep, err := cfg.Upstream.Parse()
	if err != nil {
		b.Fatal(err)
	}
	dial := func() bridge.Upstream {
		return bmqtt.New(bmqtt.Config{Name: cfg.Name, URL: ep.URL(), ClientID: cfg.ClientID}, log)
	}
	if ep.AMQP() {
		cfg.Exchange = "amq.topic"
		dial = func() bridge.Upstream {
			return bamqp.New(bamqp.Config{Name: cfg.Name, URL: ep.URL(), Exchange: cfg.Exchange}, log)
		}
	}
	br, err := bridge.New(cfg, bridge.Options{Log: store, Dial: dial, Inject: srv.Inject, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	srv.AddOutlet(br)
	srv.OnStop(br.Stop)
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	br.Start()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			b.Error(err)
		}
		if err := store.Close(); err != nil {
			b.Error(err)
		}
	}()
	addr := srv.Addrs()[0].String()

	start := time.Now()
	if err := benchBridgePublish(addr, "backlog-pub", tag, n); err != nil {
		b.Fatal(err)
	}
	b.Logf("backlog: %d messages published in %v", n, time.Since(start).Round(time.Millisecond))
	time.Sleep(5 * time.Second)
	name := filepath.Join(out, strings.NewReplacer("/", "-").Replace(b.Name()))
	benchWriteHeap(b, name+"-hold.heap")
	self := &benchBroker{cmd: &exec.Cmd{Process: &os.Process{Pid: os.Getpid()}}}
	b.Logf("holding the backlog: test process %v; Go heap %s", self.mem(b), benchMemStats())

	f, err := os.Create(name + "-drain.cpu")
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	start = time.Now()
	up.up(b)
	end := benchWaitCount(cnt.uniqBacklog.Load, int64(n), 30*time.Second)
	pprof.StopCPUProfile()
	f.Close()
	if end.IsZero() {
		b.Fatalf("drain: the upstream got %d of %d messages", cnt.uniqBacklog.Load(), n)
	}
	b.Logf("drain: %d messages in %v (%.0f msgs/s); test process %v; Go heap %s", n, end.Sub(start).Round(time.Millisecond),
		float64(n)/end.Sub(start).Seconds(), self.mem(b), benchMemStats())
	benchWriteHeap(b, name+"-drained.heap")
	b.Logf("profiles: %s-{hold.heap,drain.cpu,drained.heap}", name)
}

// benchWriteHeap writes a heap profile after a GC.
func benchWriteHeap(tb testing.TB, path string) {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		tb.Fatal(err)
	}
}

func benchMemStats() string {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return fmt.Sprintf("in use %s, from the OS %s (released %s), stacks %s, GC cycles %d",
		benchMiB(int64(ms.HeapInuse)), benchMiB(int64(ms.HeapSys)), benchMiB(int64(ms.HeapReleased)),
		benchMiB(int64(ms.StackInuse)), ms.NumGC)
}
