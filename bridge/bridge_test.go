package bridge

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/persist"
	"github.com/ferrymq/ferrymq/session"
)

// harness runs one bridge on a real store with a fake upstream, and plays
// the broker's part: Offer, commit, Committed.
type harness struct {
	t     testing.TB
	dir   string
	store *persist.Store
	srv   *fakeServer
	b     *Bridge
	cfg   Config
	now   atomic.Int64 // fake clock offset (ns) added to time.Now

	mu       sync.Mutex
	injected []*session.Message
	// holdDone, when set, keeps Inject's done callbacks (a slow commit)
	// in held instead of calling them.
	holdDone bool
	held     []func(error)
}

func testConfig() Config {
	return Config{
		Name:           "cloud",
		Upstream:       "mqtt://127.0.0.1:1883",
		ClientID:       "edge-01",
		Forward:        []ForwardRule{{From: "sensors/#", To: "site1/{1}"}},
		Receive:        []ReceiveRule{{From: "cmd/edge-01/#", To: "cmd/{1}"}},
		Reconnect:      Reconnect{Min: 5 * time.Millisecond, Max: 20 * time.Millisecond},
		ConfirmTimeout: 200 * time.Millisecond,
	}
}

func newHarness(t *testing.T, cfg Config) *harness {
	h := &harness{t: t, dir: t.TempDir(), srv: &fakeServer{}, cfg: cfg}
	h.open()
	t.Cleanup(h.close)
	return h
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// open opens the store and builds and starts the bridge.
func (h *harness) open() {
	h.t.Helper()
	s, err := persist.Open(persist.Options{Dir: h.dir, Durability: persist.Batch, Logger: quiet()})
	if err != nil {
		h.t.Fatal(err)
	}
	h.store = s
	b, err := New(h.cfg, Options{
		Log: s, Dial: h.srv.dial, Inject: h.inject, Logger: quiet(),
		Now:           func() time.Time { return time.Now().Add(time.Duration(h.now.Load())) },
		StatsInterval: -1,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.b = b
	b.Start()
}

func (h *harness) close() {
	if h.b != nil {
		h.b.Stop()
		h.b = nil
	}
	if h.store != nil {
		h.store.Close()
		h.store = nil
	}
}

// inject stands for broker.Server.Inject: it stores nothing.
func (h *harness) inject(m *session.Message, done func(error)) {
	h.mu.Lock()
	h.injected = append(h.injected, m)
	if h.holdDone {
		h.held = append(h.held, done)
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	if done != nil {
		done(nil)
	}
}

// publish offers a message as the broker does and waits for its commit.
func (h *harness) publish(topic string, payload []byte, qos byte) error {
	m := &session.Message{Topic: topic, Payload: payload, QoS: qos, Origin: "dev"}
	ch, queued, err := h.b.Offer(m, true)
	if err != nil || !queued {
		return err
	}
	done := make(chan error, 1)
	h.store.Commit(&session.Batch{Changes: []session.Change{ch}}, func(err error) {
		h.b.Committed(ch.Seq, err)
		done <- err
	})
	return <-done
}

func (h *harness) publishN(from, n int) {
	h.t.Helper()
	for i := from; i < from+n; i++ {
		if err := h.publish("sensors/t", []byte(strconv.Itoa(i)), 1); err != nil {
			h.t.Fatal(err)
		}
	}
}

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkStream checks that the upstream got payloads 0..n-1 in order at
// least once each, and returns the number of duplicates.
func checkStream(t *testing.T, got []Message, n int) (dups int) {
	t.Helper()
	next := 0
	seen := map[string]uint64{}
	for _, m := range got {
		v, err := strconv.Atoi(string(m.Payload))
		if err != nil {
			t.Fatalf("payload %q", m.Payload)
		}
		if seq, ok := seen[m.ID]; ok {
			if seq != m.Seq {
				t.Fatalf("id %s with seqs %d and %d", m.ID, seq, m.Seq)
			}
			dups++
			continue
		}
		seen[m.ID] = m.Seq
		if v != next {
			t.Fatalf("got %d, want %d (order)", v, next)
		}
		next++
	}
	if next != n {
		t.Fatalf("got %d distinct messages, want %d", next, n)
	}
	return dups
}

func (h *harness) outboxLen() int {
	_, _, n, err := h.store.OutboxBounds("cloud")
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

func TestForwardLive(t *testing.T) {
	h := newHarness(t, testConfig())
	h.publishN(0, 3000)
	waitFor(t, "3000 messages upstream", func() bool { return len(h.srv.received()) >= 3000 })
	got := h.srv.received()
	if d := checkStream(t, got, 3000); d != 0 {
		t.Errorf("%d duplicates", d)
	}
	if got[0].Topic != "site1/t" || got[0].QoS != 1 || got[0].ID == "" {
		t.Errorf("first message %+v", got[0])
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Fatalf("seq %d after %d", got[i].Seq, got[i-1].Seq)
		}
	}
	waitFor(t, "backlog empty", func() bool { s := h.b.Stats(); return s.BacklogMessages == 0 && s.BacklogBytes == 0 })
	waitFor(t, "outbox deleted", func() bool { return h.outboxLen() == 0 })
	if s := h.b.Stats(); s.Confirmed != 3000 || s.Forwarded != 3000 {
		t.Errorf("stats %+v", s)
	}
}

func TestBacklogWhileDownThenRestart(t *testing.T) {
	h := newHarness(t, testConfig())
	h.srv.setDown(true)
	h.publishN(0, 2000)
	if s := h.b.Stats(); s.BacklogMessages != 2000 || s.State == StateUp {
		t.Fatalf("stats while down %+v", s)
	}
	// The gateway restarts while the upstream is still down.
	h.close()
	h.open()
	if s := h.b.Stats(); s.BacklogMessages != 2000 || s.BacklogBytes == 0 {
		t.Fatalf("backlog after restart %+v", s)
	}
	h.publishN(2000, 1000)
	h.srv.setDown(false)
	waitFor(t, "3000 messages upstream", func() bool { return len(h.srv.received()) >= 3000 })
	if d := checkStream(t, h.srv.received(), 3000); d != 0 {
		t.Errorf("%d duplicates", d)
	}
	waitFor(t, "outbox deleted", func() bool { return h.outboxLen() == 0 })
}

func TestLinkLossResends(t *testing.T) {
	cfg := testConfig()
	cfg.Replay.MaxInflight = 50
	h := newHarness(t, cfg)
	h.srv.setFrozen(true)
	h.publishN(0, 500)
	// Frozen: confirmations never come; the confirm timeout drops the link.
	waitFor(t, "a confirm timeout", func() bool { return h.b.Stats().Timeouts > 0 })
	h.srv.setFrozen(false)
	h.publishN(500, 500)
	waitFor(t, "1000 messages upstream", func() bool {
		return len(h.srv.received()) >= 1000 && h.b.Stats().BacklogMessages == 0
	})
	got := h.srv.received()
	if d := checkStream(t, got, 1000); d > cfg.Replay.MaxInflight {
		t.Errorf("%d duplicates, more than the window %d", d, cfg.Replay.MaxInflight)
	}
	h.srv.setDown(true)
	h.srv.setDown(false)
	h.publishN(1000, 10)
	waitFor(t, "1010 messages", func() bool { return len(h.srv.received()) >= 1010 })
}

func TestBacklogPolicies(t *testing.T) {
	for _, policy := range []string{DropOldest, DropNew, Refuse} {
		t.Run(policy, func(t *testing.T) {
			cfg := testConfig()
			// Sizes count the upstream topic ("site1/t") and the payload.
			cfg.Backlog = Backlog{MaxBytes: 100 * int64(len("site1/t")+3), WhenFull: policy}
			h := newHarness(t, cfg)
			h.srv.setDown(true)
			refused := 0
			for i := range 250 {
				err := h.publish("sensors/t", fmt.Appendf(nil, "%03d", i), 1)
				switch {
				case errors.Is(err, session.ErrFull):
					refused++
				case err != nil:
					t.Fatal(err)
				}
			}
			s := h.b.Stats()
			switch policy {
			case DropOldest:
				waitFor(t, "the oldest dropped", func() bool { return h.b.Stats().DroppedFull == 150 })
			case DropNew:
				if s.DroppedFull != 150 {
					t.Errorf("dropped %d, want 150", s.DroppedFull)
				}
			case Refuse:
				if refused != 150 || s.RefusedFull != 150 {
					t.Errorf("refused %d (counted %d), want 150", refused, s.RefusedFull)
				}
			}
			h.srv.setDown(false)
			waitFor(t, "the backlog drained", func() bool { return h.b.Stats().BacklogMessages == 0 })
			got := h.srv.received()
			if len(got) != 100 {
				t.Fatalf("%d messages upstream, want 100", len(got))
			}
			first := 0
			if policy == DropOldest {
				first = 150
			}
			for i, m := range got {
				if want := fmt.Sprintf("%03d", first+i); string(m.Payload) != want {
					t.Fatalf("message %d is %s, want %s", i, m.Payload, want)
				}
			}
		})
	}
}

func TestMaxAge(t *testing.T) {
	cfg := testConfig()
	cfg.Backlog.MaxAge = time.Hour
	h := newHarness(t, cfg)
	h.srv.setDown(true)
	h.publishN(0, 10)
	h.now.Store(int64(2 * time.Hour))
	h.publishN(10, 5)
	waitFor(t, "old messages dropped", func() bool { return h.b.Stats().DroppedAge == 10 })
	h.srv.setDown(false)
	waitFor(t, "the rest forwarded", func() bool { return h.b.Stats().BacklogMessages == 0 })
	got := h.srv.received()
	if len(got) != 5 || string(got[0].Payload) != "10" {
		t.Fatalf("got %d messages, first %q", len(got), got[0].Payload)
	}
}

func TestDeadLetter(t *testing.T) {
	h := newHarness(t, testConfig())
	h.srv.mu.Lock()
	h.srv.reject = func(m *Message) bool { return string(m.Payload) == "bad" }
	h.srv.mu.Unlock()
	h.publishN(0, 10)
	if err := h.publish("sensors/t", []byte("bad"), 1); err != nil {
		t.Fatal(err)
	}
	h.publishN(10, 10)
	waitFor(t, "a dead letter and the rest", func() bool {
		s := h.b.Stats()
		return s.DeadLetter == 1 && s.BacklogMessages == 0
	})
	if d := checkStream(t, h.srv.received(), 20); d != 0 {
		t.Errorf("%d duplicates", d)
	}
	var dead []string
	waitFor(t, "the dead-letter log", func() bool {
		dead = dead[:0]
		h.store.ReadOutbox(DeadLetterLog("cloud"), 0, 0, func(_ uint64, _ int64, m *session.Message) bool {
			dead = append(dead, m.Topic+" "+string(m.Payload))
			return true
		})
		return len(dead) == 1
	})
	if dead[0] != "site1/t bad" {
		t.Errorf("dead letters %q", dead)
	}
	// The operator replays it (broker stopped): it is sent again.
	h.close()
	s, err := persist.Open(persist.Options{Dir: h.dir, Durability: persist.Batch, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	ListDeadLetters(s, "cloud", func(DeadLetter) bool { n++; return true })
	moved, err := ReplayDeadLetters(s, "cloud", time.Now())
	s.Close()
	if n != 1 || moved != 1 || err != nil {
		t.Fatalf("listed %d, replayed %d: %v", n, moved, err)
	}
	h.srv.mu.Lock()
	h.srv.reject = nil
	h.srv.mu.Unlock()
	h.open()
	waitFor(t, "the replayed message", func() bool { return len(h.srv.received()) == 21 })
	if got := h.srv.received(); string(got[20].Payload) != "bad" {
		t.Errorf("replayed %q", got[20].Payload)
	}
	n = 0
	ListDeadLetters(h.store, "cloud", func(DeadLetter) bool { n++; return true })
	if n != 0 {
		t.Errorf("%d dead letters left", n)
	}
}

func TestNoLoopAndQoS0(t *testing.T) {
	h := newHarness(t, testConfig())
	m := &session.Message{Topic: "sensors/x", Payload: []byte("from upstream"), QoS: 1, Origin: Origin("cloud")}
	if _, queued, err := h.b.Offer(m, true); queued || err != nil {
		t.Fatalf("own downlink message offered back: %v %v", queued, err)
	}
	waitFor(t, "link up", func() bool { return h.b.Stats().State == StateUp })
	if err := h.publish("sensors/q0", []byte("live"), 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the QoS 0 message", func() bool { return len(h.srv.received()) == 1 })
	h.srv.setDown(true)
	waitFor(t, "link down", func() bool { return h.b.Stats().State != StateUp })
	if err := h.publish("sensors/q0", []byte("lost"), 0); err != nil {
		t.Fatal(err)
	}
	if s := h.b.Stats(); s.DroppedOffline != 1 || s.BacklogMessages != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestDownlink(t *testing.T) {
	h := newHarness(t, testConfig())
	waitFor(t, "link up", func() bool { return h.b.Stats().State == StateUp })
	var acked, nacked atomic.Int32
	in := &Inbound{
		Message: Message{Topic: "cmd/edge-01/valve/open", Payload: []byte("1"), QoS: 1,
			ResponseTopic: "replies/abc", CorrelationData: []byte("c1")},
		Ack: func() { acked.Add(1) }, Nack: func() { nacked.Add(1) },
	}
	if !h.srv.send(in) {
		t.Fatal("no link")
	}
	other := &Inbound{Message: Message{Topic: "elsewhere"}, Ack: func() { acked.Add(1) }, Nack: func() { nacked.Add(1) }}
	h.srv.send(other)
	// Our own forwarded message coming back (an AMQP binding that matches
	// it) is acknowledged and dropped.
	echo := &Inbound{Message: Message{Topic: "cmd/edge-01/x", ID: "edge-01-abc-7"}, Ack: func() { acked.Add(1) }, Nack: func() { nacked.Add(1) }}
	h.srv.send(echo)
	if acked.Load() != 3 || nacked.Load() != 0 {
		t.Fatalf("acked %d nacked %d", acked.Load(), nacked.Load())
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.injected[0]
	if m.Topic != "cmd/valve/open" || m.QoS != 1 || m.Props.ResponseTopic != "replies/abc" || string(m.Props.CorrelationData) != "c1" || m.Origin != Origin("cloud") {
		t.Errorf("injected %+v", m)
	}
	if len(h.injected) != 1 {
		t.Errorf("%d injected", len(h.injected))
	}
	if s := h.b.Stats(); s.Received != 1 || s.DroppedUnmapped != 1 || s.DroppedEcho != 1 {
		t.Errorf("stats %+v", s)
	}
}

// TestStopAcksStoredDownlink: a bridge stopping while a downlink message
// is being stored waits for the commit and acknowledges it upstream before
// it closes the link, so the upstream does not send it again.
func TestStopAcksStoredDownlink(t *testing.T) {
	h := newHarness(t, testConfig())
	waitFor(t, "link up", func() bool { return h.b.Stats().State == StateUp })
	h.mu.Lock()
	h.holdDone = true
	h.mu.Unlock()
	linkOpen := func() bool {
		h.srv.mu.Lock()
		defer h.srv.mu.Unlock()
		return len(h.srv.links) > 0
	}
	acked := make(chan bool, 1)
	in := &Inbound{
		Message: Message{Topic: "cmd/edge-01/valve", Payload: []byte("1"), QoS: 1},
		Ack:     func() { acked <- linkOpen() },
		Nack:    func() { t.Error("nacked") },
	}
	if !h.srv.send(in) {
		t.Fatal("no link")
	}
	b := h.b
	stopped := make(chan struct{})
	go func() { b.Stop(); close(stopped) }()
	waitFor(t, "the forwarder stopping", func() bool { return b.Stats().State == StateDown })
	select {
	case <-stopped:
		t.Fatal("Stop returned before the downlink message was stored")
	default:
	}
	if !linkOpen() {
		t.Fatal("link closed before the downlink message was stored")
	}
	h.mu.Lock()
	held := h.held
	h.mu.Unlock()
	if len(held) != 1 {
		t.Fatalf("%d commits held", len(held))
	}
	held[0](nil)
	if !<-acked {
		t.Error("acknowledged after the link was closed")
	}
	<-stopped
	h.b = nil
}

// TestDeadLetterAcrossLinks: an upstream that drops the link after each
// rejection (Mosquitto after a denied publish) still gets the message
// dead-lettered after three rejections.
func TestDeadLetterAcrossLinks(t *testing.T) {
	h := newHarness(t, testConfig())
	var links []*fakeLink
	h.srv.mu.Lock()
	h.srv.reject = func(m *Message) bool {
		if string(m.Payload) != "bad" {
			return false
		}
		links = append([]*fakeLink(nil), h.srv.links...)
		return true
	}
	h.srv.mu.Unlock()
	if err := h.publish("sensors/t", []byte("bad"), 1); err != nil {
		t.Fatal(err)
	}
	for n := 0; h.b.Stats().DeadLetter == 0; n++ {
		h.srv.mu.Lock()
		ls := links
		h.srv.mu.Unlock()
		for _, l := range ls {
			go l.lose(errors.New("fake: disconnect after a refusal"))
		}
		if n > 20000 {
			t.Fatal("never dead-lettered")
		}
		time.Sleep(time.Millisecond)
	}
	h.publishN(0, 5)
	waitFor(t, "the rest", func() bool { return h.b.Stats().BacklogMessages == 0 })
}

// TestQueueQoS0: a rule with queue_qos0 keeps QoS 0 messages in the outbox
// while the link is down; they are forwarded with the rule's QoS.
func TestQueueQoS0(t *testing.T) {
	cfg := testConfig()
	cfg.Forward = []ForwardRule{{From: "sensors/#", QueueQoS0: true}}
	h := newHarness(t, cfg)
	h.srv.setDown(true)
	for i := range 5 {
		if err := h.publish("sensors/q0", []byte(strconv.Itoa(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if s := h.b.Stats(); s.BacklogMessages != 5 || s.DroppedOffline != 0 {
		t.Fatalf("stats %+v", s)
	}
	h.srv.setDown(false)
	waitFor(t, "the queued QoS 0 messages", func() bool { return len(h.srv.received()) == 5 })
	if got := h.srv.received(); got[0].Topic != "sensors/q0" || got[0].QoS != 1 {
		t.Errorf("forwarded %+v", got[0])
	}
}
