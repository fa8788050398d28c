package main_test

// Fixtures of the bridge's end-to-end tests (bridge_e2e_test.go,
// bridge_e2e_more_test.go): the upstream (RabbitMQ behind a TCP proxy, or a
// Mosquitto of the test), the ferrymq binary run with a bridge
// configuration, what the upstream received and the checks on it, a minimal
// MQTT 5 subscriber for Mosquitto, and a watcher of the bridge's $SYS
// topics.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	amqp091 "github.com/rabbitmq/amqp091-go"

	bridgeamqp "github.com/ferrymq/ferrymq/bridge/amqp"
	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/internal/upstreamtest"
)

// The upstream kinds every test runs against.
const (
	kindAMQP = "amqp"
	kindMQTT = "mqtt"
)

var e2eKinds = []string{kindAMQP, kindMQTT}

// e2eBridgeName is the bridge's name in every test ($SYS/broker/bridge/cloud/...).
const e2eBridgeName = "cloud"

// e2eUpstream is the upstream broker of one test.
//
// AMQP: the machine's RabbitMQ, a fresh vhost (or the default one with
// unique names when rabbitmqctl cannot make one), a topic exchange of the
// test, and a TCP proxy between ferrymq and RabbitMQ: down, up, freeze and
// thaw act on the proxy. Consumers and requesters of the test connect
// directly.
//
// MQTT: a Mosquitto of the test. Down and up stop (SIGTERM: it saves its
// database) and start it, freeze and thaw send SIGSTOP and SIGCONT. With
// linkProxy the bridge reaches it through a TCP proxy (linkDown, linkUp
// take the bridge's link away without touching Mosquitto).
type e2eUpstream struct {
	t        *testing.T
	kind     string
	clientID string

	url      string // AMQP: direct URL (with the vhost)
	exchange string // AMQP
	proxy    *upstreamtest.TCPProxy

	mosq *upstreamtest.Mosquitto
}

func newE2EUpstream(t *testing.T, kind string, linkProxy bool) *e2eUpstream {
	t.Helper()
	return newE2EUpstreamWith(t, kind, linkProxy, upstreamtest.MosquittoOptions{})
}

// newE2EUpstreamWith is newE2EUpstream with a Mosquitto configuration
// (for an MQTT upstream).
func newE2EUpstreamWith(t *testing.T, kind string, linkProxy bool, mo upstreamtest.MosquittoOptions) *e2eUpstream {
	t.Helper()
	u := &e2eUpstream{t: t, kind: kind, clientID: "edge-01"}
	switch kind {
	case kindAMQP:
		u.url = upstreamtest.RabbitVhost(t)
		u.proxy = upstreamtest.Proxy(t, upstreamtest.AMQPAddr(t, u.url))
		u.exchange = upstreamtest.UniqueName(t, "e2e-x")
		// Unique in case the vhost is shared (no rabbitmqctl): the
		// downlink queue is named after it.
		u.clientID = upstreamtest.UniqueName(t, "edge")
		conn, ch := u.amqpChannel(t)
		if err := ch.ExchangeDeclare(u.exchange, "topic", true, false, false, false, nil); err != nil {
			t.Fatalf("declare exchange %s: %v", u.exchange, err)
		}
		conn.Close()
		t.Cleanup(func() {
			c, err := amqp091.Dial(u.url)
			if err != nil {
				return // the vhost is deleted anyway when it is the test's
			}
			defer c.Close()
			if ch, err := c.Channel(); err == nil {
				_, _ = ch.QueueDelete("ferrymq."+u.clientID+"."+e2eBridgeName, false, false, false)
				_ = ch.ExchangeDelete(u.exchange, false, false)
			}
		})
	case kindMQTT:
		u.mosq = upstreamtest.StartMosquittoWith(t, mo)
		if linkProxy {
			u.proxy = upstreamtest.Proxy(t, u.mosq.Addr())
		}
	default:
		t.Fatalf("unknown upstream kind %q", kind)
	}
	return u
}

// amqpChannel opens a direct connection to the test's vhost.
func (u *e2eUpstream) amqpChannel(t *testing.T) (*amqp091.Connection, *amqp091.Channel) {
	t.Helper()
	conn, err := amqp091.Dial(u.url)
	if err != nil {
		t.Fatalf("amqp dial: %v", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		t.Fatalf("amqp channel: %v", err)
	}
	return conn, ch
}

// bridgeURL is the upstream URL of the bridge's configuration.
func (u *e2eUpstream) bridgeURL() string {
	if u.kind == kindAMQP {
		return u.proxy.URL(u.url)
	}
	if u.proxy != nil {
		return "mqtt://" + u.proxy.Addr()
	}
	return u.mosq.URL()
}

// down takes the upstream away (AMQP: the proxy refuses and cuts; MQTT:
// Mosquitto stops).
func (u *e2eUpstream) down() {
	if u.kind == kindAMQP {
		u.proxy.Down()
	} else {
		u.mosq.Stop()
	}
}

func (u *e2eUpstream) up() {
	if u.kind == kindAMQP {
		u.proxy.Up()
	} else {
		u.mosq.Start()
	}
}

// linkDown cuts the bridge's link only (the upstream keeps running).
func (u *e2eUpstream) linkDown() {
	if u.proxy == nil {
		u.t.Fatal("linkDown: no proxy in front of the upstream")
	}
	u.proxy.Down()
}

func (u *e2eUpstream) linkUp() { u.proxy.Up() }

// freeze makes the link half-open (AMQP: the proxy holds every byte; MQTT:
// SIGSTOP to Mosquitto).
func (u *e2eUpstream) freeze() {
	if u.kind == kindAMQP {
		u.proxy.Freeze()
	} else {
		u.mosq.Freeze()
	}
}

func (u *e2eUpstream) thaw() {
	if u.kind == kindAMQP {
		u.proxy.Thaw()
	} else {
		u.mosq.Thaw()
	}
}

// e2eOpts are the bridge settings a test changes.
type e2eOpts struct {
	maxBytes    int64  // backlog.max_bytes (0: default)
	whenFull    string // backlog.when_full ("": default)
	maxInflight int    // replay.max_inflight (0: e2eInflight)
	// bidirectional adds shared/# both ways, unchanged: forwarded up and
	// received down.
	bidirectional bool
}

// Settings common to every test: quick reconnects, a short confirm
// timeout so that a half-open link is found quickly.
const (
	e2eInflight       = 256
	e2eConfirmTimeout = 2 * time.Second
)

// writeConfig writes a ferrymq configuration file with one bridge named
// "cloud" to this upstream: sensors/# -> site1/{1} and replies/# ->
// {topic} forwarded at QoS 1, cmd/edge-01/# received as cmd/{1}.
func (u *e2eUpstream) writeConfig(t *testing.T, dataDir string, o e2eOpts) string {
	t.Helper()
	if o.maxInflight == 0 {
		o.maxInflight = e2eInflight
	}
	var b strings.Builder
	fmt.Fprintf(&b, "listeners:\n  - address: 127.0.0.1:0\n")
	fmt.Fprintf(&b, "storage:\n  dir: %q\n  durability: sync\n", dataDir)
	fmt.Fprintf(&b, "bridges:\n  - name: %s\n    upstream: %q\n    client_id: %q\n", e2eBridgeName, u.bridgeURL(), u.clientID)
	if u.kind == kindAMQP {
		fmt.Fprintf(&b, "    exchange: %q\n", u.exchange)
	}
	b.WriteString("    forward:\n")
	b.WriteString("      - {from: \"sensors/#\", to: \"site1/{1}\", qos: 1}\n")
	b.WriteString("      - {from: \"replies/#\", to: \"{topic}\", qos: 1}\n")
	if o.bidirectional {
		b.WriteString("      - {from: \"shared/#\", to: \"{topic}\", qos: 1}\n")
	}
	b.WriteString("    receive:\n")
	b.WriteString("      - {from: \"cmd/edge-01/#\", to: \"cmd/{1}\", qos: 1}\n")
	if o.bidirectional {
		b.WriteString("      - {from: \"shared/#\", to: \"{topic}\", qos: 1}\n")
	}
	if o.maxBytes > 0 || o.whenFull != "" {
		b.WriteString("    backlog:\n")
		if o.maxBytes > 0 {
			fmt.Fprintf(&b, "      max_bytes: %d\n", o.maxBytes)
		}
		if o.whenFull != "" {
			fmt.Fprintf(&b, "      when_full: %s\n", o.whenFull)
		}
	}
	fmt.Fprintf(&b, "    replay: {max_inflight: %d}\n", o.maxInflight)
	b.WriteString("    reconnect: {min: 100ms, max: 1s}\n")
	fmt.Fprintf(&b, "    confirm_timeout: %v\n", e2eConfirmTimeout)
	path := filepath.Join(t.TempDir(), "ferrymq.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ---------------------------------------------------------------------------
// The ferrymq under test.

// e2eBroker is one run of the ferrymq binary with a configuration file.
type e2eBroker struct {
	t    *testing.T
	cfg  string
	p    *proc
	addr string
}

var (
	e2eConnectedRe = regexp.MustCompile(`msg="bridge connected"`)
	e2eLinkLostRe  = regexp.MustCompile(`msg="bridge link lost"`)
	e2eTimeRe      = regexp.MustCompile(`^time=(\S+)`)
)

// startE2EBroker runs "ferrymq run -c cfg" and waits for its address. On
// failure the test's log shows the broker's last lines.
func startE2EBroker(t *testing.T, cfg string) *e2eBroker {
	t.Helper()
	b := &e2eBroker{t: t, cfg: cfg, p: startFerrymq(t, "run", "-c", cfg)}
	m, _ := b.waitLine(t, startedRe, 0, 60*time.Second)
	b.addr = m[1]
	if host, _, err := net.SplitHostPort(b.addr); err != nil || host != "127.0.0.1" {
		t.Fatalf("ferrymq started on %q, want 127.0.0.1:<port>", b.addr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			lines := b.p.stderrLines()
			if len(lines) > 60 {
				lines = append([]string{"..."}, lines[len(lines)-60:]...)
			}
			t.Logf("ferrymq (%s) stderr:\n%s", b.addr, strings.Join(lines, "\n"))
		}
	})
	return b
}

// restart starts the binary again on the same configuration (and data
// directory) after it exited.
func (b *e2eBroker) restart(t *testing.T) *e2eBroker {
	t.Helper()
	if !b.p.exitedEarly() {
		t.Fatal("restart: ferrymq is still running")
	}
	return startE2EBroker(t, b.cfg)
}

// kill ends the broker with SIGKILL and waits for it.
func (b *e2eBroker) kill(t *testing.T) {
	t.Helper()
	if err := b.p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("ferrymq did not die of SIGKILL within 10 s")
	}
}

// stop ends the broker with SIGTERM; it must exit 0.
func (b *e2eBroker) stop(t *testing.T) {
	t.Helper()
	if err := b.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := b.p.waitExit(t, 30*time.Second); code != 0 {
		t.Fatalf("ferrymq exited %d after SIGTERM", code)
	}
}

// waitLine waits up to d for the n-th (0-based) stderr line matching re and
// returns its submatches and the line.
func (b *e2eBroker) waitLine(t *testing.T, re *regexp.Regexp, n int, d time.Duration) ([]string, string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		exited := b.p.exitedEarly()
		seen := 0
		for _, l := range b.p.stderrLines() {
			if m := re.FindStringSubmatch(l); m != nil {
				if seen == n {
					return m, l
				}
				seen++
			}
		}
		if exited {
			t.Fatalf("ferrymq exited (%v) before logging %s (#%d)", b.p.err, re, n+1)
		}
		if time.Now().After(deadline) {
			t.Fatalf("ferrymq logged %d lines matching %s within %v, want %d", seen, re, d, n+1)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// count is the number of stderr lines matching re so far.
func (b *e2eBroker) count(re *regexp.Regexp) int {
	n := 0
	for _, l := range b.p.stderrLines() {
		if re.MatchString(l) {
			n++
		}
	}
	return n
}

// logProblems logs the broker's WARN and ERROR lines (how many, the first
// few): expected ones (link lost, cannot connect) and anything else.
func (b *e2eBroker) logProblems(t *testing.T) {
	t.Helper()
	var pr []string
	for _, l := range b.p.stderrLines() {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			pr = append(pr, l)
		}
	}
	if len(pr) > 0 {
		t.Logf("ferrymq logged %d WARN/ERROR lines, the first ones:\n%s", len(pr), strings.Join(pr[:min(len(pr), 4)], "\n"))
	}
}

// lineTime is the time= of a slog text line.
func lineTime(t *testing.T, line string) time.Time {
	t.Helper()
	m := e2eTimeRe.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no time= in %q", line)
	}
	ts, err := time.Parse(time.RFC3339Nano, m[1])
	if err != nil {
		t.Fatalf("time= in %q: %v", line, err)
	}
	return ts
}

// ---------------------------------------------------------------------------
// The workload.

// e2ePayload identifies publisher p's i-th message: fixed width, so that
// every message of a run has the same size.
func e2ePayload(p, i int) string { return fmt.Sprintf("p%03d-%06d", p, i) }

func e2eTopic(p int) string { return fmt.Sprintf("sensors/p%03d", p) }

// e2eExpected lists publishers [0, pubs) with messages [from, to) each, in
// each publisher's order.
func e2eExpected(pubs, from, to int) []string {
	out := make([]string, 0, pubs*(to-from))
	for p := range pubs {
		for i := from; i < to; i++ {
			out = append(out, e2ePayload(p, i))
		}
	}
	return out
}

// publishLoad runs pubs MQTT 3.1.1 publishers at once on addr, each sending
// messages [from, to) at QoS 1 with up to window unacknowledged, and waits
// until every one is acknowledged.
func publishLoad(t *testing.T, addr string, pubs, from, to, window int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, pubs)
	for p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[p] = publishOne(addr, p, from, to, window)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("publishing: %v", err)
	}
}

func publishOne(addr string, p, from, to, window int) error {
	m, _, err := benchDial(addr, fmt.Sprintf("e2e-pub-%03d", p), true)
	if err != nil {
		return err
	}
	defer m.disconnect()
	bp := newBenchPublisher(m, window)
	topic := e2eTopic(p)
	for i := from; i < to; i++ {
		if err := bp.publish(topic, []byte(e2ePayload(p, i)), false); err != nil {
			return fmt.Errorf("publisher %d, message %d: %w", p, i, err)
		}
	}
	if err := bp.drain(2 * time.Minute); err != nil {
		return fmt.Errorf("publisher %d: %w", p, err)
	}
	return nil
}

// ---------------------------------------------------------------------------
// What the upstream received.

// e2eMsg is one message as an upstream consumer received it: topic in MQTT
// form, the bridge's stable id and sequence number.
type e2eMsg struct {
	topic, payload, id string
	seq                uint64
	hasSeq             bool
	dup                bool // MQTT DUP flag, AMQP redelivered
}

// e2eSink collects what a consumer received, in arrival order.
type e2eSink struct {
	mu       sync.Mutex
	msgs     []e2eMsg
	seen     map[string]struct{}
	distinct atomic.Int64
	errs     []string // consumer problems (e.g. a lost upstream session)
}

func newE2ESink() *e2eSink { return &e2eSink{seen: map[string]struct{}{}} }

func (s *e2eSink) add(m e2eMsg) {
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	if _, ok := s.seen[m.payload]; !ok {
		s.seen[m.payload] = struct{}{}
		s.distinct.Add(1)
	}
	s.mu.Unlock()
}

func (s *e2eSink) failf(format string, args ...any) {
	s.mu.Lock()
	s.errs = append(s.errs, fmt.Sprintf(format, args...))
	s.mu.Unlock()
}

func (s *e2eSink) has(payload string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.seen[payload]
	return ok
}

func (s *e2eSink) snapshot() ([]e2eMsg, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]e2eMsg(nil), s.msgs...), append([]string(nil), s.errs...)
}

// wait polls until n distinct messages arrived; it fails when nothing new
// arrived for stall, or when the broker died.
func (s *e2eSink) wait(t *testing.T, what string, n int64, b *e2eBroker, stall time.Duration) {
	t.Helper()
	last, lastMove := s.distinct.Load(), time.Now()
	for {
		c := s.distinct.Load()
		if c >= n {
			return
		}
		if c != last {
			last, lastMove = c, time.Now()
		}
		if time.Since(lastMove) > stall {
			t.Fatalf("%s: %d of %d messages arrived upstream, none for %v", what, c, n, stall)
		}
		if b != nil && b.p.exitedEarly() {
			t.Fatalf("%s: ferrymq exited (%v) with %d of %d messages upstream", what, b.p.err, c, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitFor polls until payload arrived (see wait).
func (s *e2eSink) waitFor(t *testing.T, payload string, b *e2eBroker, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !s.has(payload) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not arrive upstream within %v", payload, d)
		}
		if b != nil && b.p.exitedEarly() {
			t.Fatalf("ferrymq exited (%v) before %s arrived upstream", b.p.err, payload)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// e2eResult sums up what verify found.
type e2eResult struct {
	received, distinct, dups int
	// The sequence numbers of the first occurrences: their range, and how
	// many came after a higher one (the bridge sends in order).
	seqMin, seqMax uint64
	seqInversions  int
}

// checkSeq checks that the sequence numbers of the distinct messages are
// gapless (nothing was dropped) and came in order.
func (r e2eResult) checkSeq(t *testing.T) {
	t.Helper()
	if n := r.seqMax - r.seqMin + 1; r.distinct > 0 && n != uint64(r.distinct) {
		t.Errorf("sequence numbers %d..%d for %d distinct messages: gaps or extras", r.seqMin, r.seqMax, r.distinct)
	}
	if r.seqInversions > 0 {
		t.Errorf("%d messages arrived first after one with a higher sequence number", r.seqInversions)
	}
}

// verify checks what arrived against expected (payloads, each publisher's
// in its order): every one arrived and nothing else, each publisher's
// first occurrences in order, every message with the bridge's id and
// sequence, one id and one sequence number per message (duplicates are
// resends of the same entry), on the topic its rule maps to.
func (s *e2eSink) verify(t *testing.T, expected []string) e2eResult {
	t.Helper()
	return s.verifyOpt(t, expected, nil)
}

// verifyOpt is verify where the messages optional reports true for may be
// missing (each publisher's order still holds for those that arrived).
func (s *e2eSink) verifyOpt(t *testing.T, expected []string, optional func(payload string) bool) e2eResult {
	t.Helper()
	msgs, errs := s.snapshot()
	for _, e := range errs {
		t.Errorf("consumer: %s", e)
	}
	// Position of each expected payload in its publisher's sequence.
	pos := make(map[string]int, len(expected))
	next := map[string]int{}
	for _, p := range expected {
		pub := p[:strings.IndexByte(p, '-')]
		pos[p] = next[pub]
		next[pub]++
	}
	const maxReports = 10
	reports := map[string]int{}
	report := func(kind, format string, args ...any) {
		reports[kind]++
		if reports[kind] <= maxReports {
			t.Errorf(format, args...)
		}
	}
	last := map[string]int{}
	idOf := make(map[string]string, len(expected))
	payloadOfID := make(map[string]string, len(expected))
	payloadOfSeq := make(map[uint64]string, len(expected))
	res := e2eResult{received: len(msgs)}
	var lastSeq uint64
	for _, m := range msgs {
		if m.id == "" || !m.hasSeq {
			report("noid", "message %s (topic %s) arrived without the bridge's id (%q) or sequence (present: %v)", m.payload, m.topic, m.id, m.hasSeq)
		}
		// A duplicate is a message whose id came before: the same
		// outbox entry sent again, so the same payload and sequence.
		if p, ok := payloadOfID[m.id]; ok && m.id != "" {
			res.dups++
			if p != m.payload {
				report("idreuse", "id %q carried by %s and %s", m.id, p, m.payload)
			}
			continue
		}
		if id, ok := idOf[m.payload]; ok {
			res.dups++
			report("id", "message %s arrived again with another id: %q then %q", m.payload, id, m.id)
			continue
		}
		idOf[m.payload] = m.id
		payloadOfID[m.id] = m.payload
		if m.hasSeq {
			if p, ok := payloadOfSeq[m.seq]; ok {
				report("seq", "sequence %d carried by %s and %s", m.seq, p, m.payload)
			}
			payloadOfSeq[m.seq] = m.payload
			if len(payloadOfSeq) == 1 {
				res.seqMin, res.seqMax = m.seq, m.seq
			}
			res.seqMin, res.seqMax = min(res.seqMin, m.seq), max(res.seqMax, m.seq)
			if m.seq < lastSeq {
				res.seqInversions++
			}
			lastSeq = max(lastSeq, m.seq)
		}
		i, ok := pos[m.payload]
		if !ok {
			report("unexpected", "unexpected message %q (topic %s, id %s)", m.payload, m.topic, m.id)
			continue
		}
		res.distinct++
		pub := m.payload[:strings.IndexByte(m.payload, '-')]
		if want := "site1/" + pub; m.topic != want {
			report("topic", "message %s on topic %q, want %q", m.payload, m.topic, want)
		}
		if l, ok := last[pub]; ok && i <= l {
			report("order", "publisher %s: message %s (#%d) arrived first after #%d", pub, m.payload, i, l)
		}
		last[pub] = i
	}
	if res.distinct != len(expected) {
		missing := 0
		var some []string
		for _, p := range expected {
			if _, ok := idOf[p]; !ok && (optional == nil || !optional(p)) {
				missing++
				if len(some) < 10 {
					some = append(some, p)
				}
			}
		}
		if missing > 0 {
			t.Errorf("%d of %d messages arrived upstream: %d missing, e.g. %v", res.distinct, len(expected), missing, some)
		}
	}
	for k, n := range reports {
		if n > maxReports {
			t.Errorf("... %d problems of kind %q in all", n, k)
		}
	}
	return res
}

// ---------------------------------------------------------------------------
// Upstream consumers.

// consume starts a consumer of filter on the upstream, ready before it
// returns: AMQP a durable queue bound on the exchange, MQTT a persistent
// session (Clean Start false after the first connection, session expiry an
// hour) that reconnects whenever Mosquitto comes back.
func (u *e2eUpstream) consume(t *testing.T, filter string) *e2eSink {
	t.Helper()
	return u.consumeAs(t, filter, "e2e-sink")
}

// consumeAs is consume with the MQTT client id of the consumer.
func (u *e2eUpstream) consumeAs(t *testing.T, filter, id string) *e2eSink {
	t.Helper()
	sink := newE2ESink()
	if u.kind == kindAMQP {
		u.consumeAMQP(t, filter, sink)
	} else {
		startV5Sub(t, u.mosq.Addr(), id, filter, sink)
	}
	return sink
}

// mqttToBinding maps an MQTT filter to an AMQP binding key (no dots in
// the filters used here).
func mqttToBinding(filter string) string {
	return strings.NewReplacer("/", ".", "+", "*").Replace(filter)
}

// amqpKeyToTopic maps a routing key back to an MQTT topic ("/" <-> ".").
func amqpKeyToTopic(key string) string {
	b := []byte(key)
	for i, c := range b {
		switch c {
		case '.':
			b[i] = '/'
		case '/':
			b[i] = '.'
		}
	}
	return string(b)
}

func (u *e2eUpstream) consumeAMQP(t *testing.T, filter string, sink *e2eSink) {
	t.Helper()
	conn, ch := u.amqpChannel(t)
	q := upstreamtest.UniqueName(t, "e2e-sink")
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatalf("declare queue: %v", err)
	}
	if err := ch.QueueBind(q, mqttToBinding(filter), u.exchange, false, nil); err != nil {
		t.Fatalf("bind queue: %v", err)
	}
	if err := ch.Qos(2000, 0, false); err != nil {
		t.Fatalf("qos: %v", err)
	}
	deliveries, err := ch.Consume(q, "", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for d := range deliveries {
			m := e2eMsg{topic: amqpKeyToTopic(d.RoutingKey), payload: string(d.Body), id: d.MessageId, dup: d.Redelivered}
			m.seq, m.hasSeq = bridgeamqp.HeaderSeq(d.Headers[bridgeamqp.SeqHeader])
			sink.add(m)
		}
	}()
	t.Cleanup(func() {
		_, _ = ch.QueueDelete(q, false, false, false)
		conn.Close()
		<-done
	})
}

// v5Sub is a minimal MQTT 5 subscriber (over the broker's own packet
// codec) with a persistent session that reconnects until the test ends:
// it survives Mosquitto stopping, restarting and freezing, acknowledges
// every QoS 1 message at once, and reads the bridge's user properties.
// (paho.golang has data races on its connection-loss path.)
type v5Sub struct {
	addr, id, filter string
	sink             *e2eSink
	stop             chan struct{}
	done             chan struct{}
	mu               sync.Mutex
	conn             net.Conn
	connects         atomic.Int64
}

func startV5Sub(t *testing.T, addr, id, filter string, sink *e2eSink) *v5Sub {
	t.Helper()
	s := &v5Sub{addr: addr, id: id, filter: filter, sink: sink, stop: make(chan struct{}), done: make(chan struct{})}
	// The first session is made here, so the subscription exists before
	// the test publishes.
	r, err := s.connect(true)
	if err != nil {
		t.Fatalf("v5 subscriber: %v", err)
	}
	go s.run(r)
	t.Cleanup(func() {
		close(s.stop)
		s.mu.Lock()
		if s.conn != nil {
			s.conn.Close()
		}
		s.mu.Unlock()
		<-s.done
	})
	return s
}

func (s *v5Sub) write(c net.Conn, p packet.Packet) error {
	b, err := packet.Encode(nil, p, packet.V5)
	if err != nil {
		return err
	}
	_, err = c.Write(b)
	return err
}

// connect opens a connection (the first one subscribes) and returns its
// reader.
func (s *v5Sub) connect(first bool) (*packet.Reader, error) {
	c, err := net.DialTimeout("tcp", s.addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*packet.Reader, error) {
		c.Close()
		return nil, err
	}
	// Clean Start false from the first connection on: Mosquitto 2.0.11
	// does not save a session begun with Clean Start 1 to its database,
	// whatever its expiry, so it would not survive a restart.
	cp := &packet.Connect{Version: packet.V5, CleanStart: false, ClientID: s.id}
	cp.Props.SetUint32(packet.PropSessionExpiry, 3600)
	cp.Props.SetUint16(packet.PropReceiveMaximum, 1000)
	if err := s.write(c, cp); err != nil {
		return fail(err)
	}
	r := packet.NewReader(c, 0)
	r.SetVersion(packet.V5)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	p, err := r.ReadPacket()
	if err != nil {
		return fail(fmt.Errorf("CONNACK: %w", err))
	}
	ca, ok := p.(*packet.Connack)
	if !ok || ca.ReasonCode != 0 {
		return fail(fmt.Errorf("got %v, want a successful CONNACK", p))
	}
	if !first && !ca.SessionPresent {
		s.sink.failf("%s reconnected without its session: messages queued for it are lost", s.id)
	}
	if first {
		sub := &packet.Subscribe{PacketID: 1, Subs: []packet.SubOption{{Filter: s.filter, QoS: 1}}}
		if err := s.write(c, sub); err != nil {
			return fail(err)
		}
		p, err := r.ReadPacket()
		if err != nil {
			return fail(fmt.Errorf("SUBACK: %w", err))
		}
		if sa, ok := p.(*packet.Suback); !ok || len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0] != 1 {
			return fail(fmt.Errorf("got %+v, want SUBACK granting QoS 1", p))
		}
	}
	c.SetReadDeadline(time.Time{})
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
	s.connects.Add(1)
	return r, nil
}

func (s *v5Sub) stopped() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// run reads until the connection fails, then reconnects, until stop.
func (s *v5Sub) run(r *packet.Reader) {
	defer close(s.done)
	for {
		s.mu.Lock()
		c := s.conn
		s.mu.Unlock()
		s.read(c, r)
		c.Close()
		for {
			if s.stopped() {
				return
			}
			var err error
			if r, err = s.connect(false); err == nil {
				break
			}
			select {
			case <-s.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

func (s *v5Sub) read(c net.Conn, r *packet.Reader) {
	for {
		p, err := r.ReadPacket()
		if err != nil {
			return
		}
		pub, ok := p.(*packet.Publish)
		if !ok {
			continue
		}
		m := e2eMsg{topic: pub.Topic, payload: string(pub.Payload), dup: pub.Dup}
		for _, up := range pub.Props.User {
			switch up.Key {
			case "ferrymq-id":
				m.id = up.Value
			case "ferrymq-seq":
				if n, err := strconv.ParseUint(up.Value, 10, 64); err == nil {
					m.seq, m.hasSeq = n, true
				}
			}
		}
		s.sink.add(m)
		if pub.QoS == 1 {
			if err := s.write(c, &packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID}); err != nil {
				return
			}
		}
	}
}

// ---------------------------------------------------------------------------
// The bridge's $SYS topics.

// sysWatch keeps the latest value of each $SYS/broker/bridge/<name>/...
// topic of a ferrymq (published every 10 s).
type sysWatch struct {
	mu sync.Mutex
	v  map[string]string
}

func watchSys(t *testing.T, addr, id string) *sysWatch {
	t.Helper()
	w := &sysWatch{v: map[string]string{}}
	prefix := "$SYS/broker/bridge/" + e2eBridgeName + "/"
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("$SYS watcher: connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	tok := c.Subscribe(prefix+"#", 0, func(_ mqtt.Client, m mqtt.Message) {
		w.mu.Lock()
		w.v[strings.TrimPrefix(m.Topic(), prefix)] = string(m.Payload())
		w.mu.Unlock()
	})
	waitToken(t, "subscribe $SYS", tok)
	return w
}

func (w *sysWatch) get(key string) (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	v, ok := w.v[key]
	return v, ok
}

func (w *sysWatch) int(key string) (int64, bool) {
	v, ok := w.get(key)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// waitInt polls until key's value satisfies ok (the statistics come every
// 10 s) and returns it; it fails after d.
func (w *sysWatch) waitInt(t *testing.T, key string, ok func(int64) bool, d time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if n, has := w.int(key); has && ok(n) {
			return n
		}
		if time.Now().After(deadline) {
			v, has := w.get(key)
			t.Fatalf("$SYS/broker/bridge/%s/%s = %q (present: %v) after %v", e2eBridgeName, key, v, has, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// e2eCtx is a context for one client operation.
func e2eCtx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// ---------------------------------------------------------------------------
// paho.golang (MQTT 5) clients, for what must be checked with another
// implementation than ours: publishers refused with 0x97, the device and
// the requester of a request/reply. None of them sees its connection
// drop while the test looks (paho.golang v0.23.0 has data races there).

// v5Dial connects an MQTT 5 client with Clean Start and no session expiry;
// onPublish (if not nil) gets every message, acknowledged when it returns.
func v5Dial(t *testing.T, addr, id string, onPublish func(*paho.Publish)) *paho.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: dial %s: %v", id, addr, err)
	}
	cfg := paho.ClientConfig{
		ClientID:           id,
		Conn:               conn,
		OnClientError:      func(error) {},
		OnServerDisconnect: func(*paho.Disconnect) {},
	}
	if onPublish != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				onPublish(pr.Packet)
				return true, nil
			},
		}
	}
	c := paho.NewClient(cfg)
	ctx, cancel := e2eCtx(10 * time.Second)
	defer cancel()
	if ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		conn.Close()
		t.Fatalf("%s: connect: %v (CONNACK %+v)", id, err, ack)
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
		}
	})
	return c
}

// v5Subscribe subscribes c to filter at QoS 1.
func v5Subscribe(t *testing.T, c *paho.Client, filter string) {
	t.Helper()
	ctx, cancel := e2eCtx(10 * time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] != 1 {
		t.Fatalf("subscribe %s: SUBACK %v, want QoS 1 granted", filter, sa.Reasons)
	}
}
