package broker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/persist"
	"github.com/ferrymq/ferrymq/session"
)

// startStore runs a broker on store st. stop shuts it down (also at
// cleanup, once).
func startStore(t testing.TB, st session.Store) (s *Server, stop func()) {
	t.Helper()
	return startStoreClock(t, st, time.Now)
}

// startStoreClock is startStore with a clock.
func startStoreClock(t testing.TB, st session.Store, now func() time.Time) (s *Server, stop func()) {
	t.Helper()
	cfg := Config{Listeners: []Listener{{Address: "127.0.0.1:0"}}}
	level := slog.LevelWarn
	if os.Getenv("FERRYMQ_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	s, err := New(cfg, Options{Logger: log, Store: st, Now: now})
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}
	t.Cleanup(stop)
	return s, stop
}

func pub(topic string, qos byte, id uint16, payload string) *packet.Publish {
	return &packet.Publish{Topic: topic, QoS: qos, PacketID: id, Payload: []byte(payload)}
}

// TestDurableAckWaitsForCommit: with the store's commit held, no PUBACK or
// PUBREC goes out, not even for a message with no durable destination
// queued behind one that has, and they come in packet order once it is
// released.
func TestDurableAckWaitsForCommit(t *testing.T) {
	fs := newFakeStore()
	s, _ := startStore(t, fs)
	sub, _ := connect(t, s, packet.V5, "sub", persistent(3600))
	sub.subscribe(1, packet.SubOption{Filter: "d/#", QoS: 2})
	goOffline(t, s, sub, "sub")
	p, _ := connect(t, s, packet.V5, "pub", nil)

	fs.hold()
	p.send(pub("d/1", 1, 1, "a"))
	p.send(pub("d/2", 2, 2, "b"))
	p.send(pub("elsewhere", 1, 3, "c")) // no durable destination: still after 1 and 2
	p.expectNothing(200 * time.Millisecond)
	fs.release()
	if a := p.readAck(packet.PUBACK); a.PacketID != 1 || a.ReasonCode != 0 {
		t.Fatalf("first answer %+v", a)
	}
	if a := p.readAck(packet.PUBREC); a.PacketID != 2 {
		t.Fatalf("second answer %+v", a)
	}
	if a := p.readAck(packet.PUBACK); a.PacketID != 3 {
		t.Fatalf("third answer %+v", a)
	}
	waitFor(t, "2 messages stored", func() bool { return fs.queued("sub") == 2 })
}

// TestDurableQoS2HeldUntilStored: a QoS 2 message reaches no subscriber
// before its publish is durable (exactly once across a crash), while QoS 1
// goes out from memory at once.
func TestDurableQoS2HeldUntilStored(t *testing.T) {
	fs := newFakeStore()
	s, _ := startStore(t, fs)
	s2, _ := connect(t, s, packet.V5, "s2", nil)
	s2.subscribe(1, packet.SubOption{Filter: "two/#", QoS: 2})
	s1, _ := connect(t, s, packet.V5, "s1", nil)
	s1.subscribe(1, packet.SubOption{Filter: "one/#", QoS: 1})
	p, _ := connect(t, s, packet.V5, "pub", persistent(3600)) // its QoS 2 ids are stored

	fs.hold()
	p.send(pub("two/x", 2, 7, "exactly once"))
	s2.expectNothing(150 * time.Millisecond)
	p.send(pub("one/x", 1, 8, "at least once"))
	if got := s1.readPublish(); string(got.Payload) != "at least once" {
		t.Fatalf("QoS 1 subscriber got %q", got.Payload)
	}
	p.expectNothing(50 * time.Millisecond) // neither answer before the commit
	fs.release()
	if got := s2.readPublish(); string(got.Payload) != "exactly once" || got.QoS != 2 {
		t.Fatalf("QoS 2 subscriber got %+v", got)
	}
	p.readAck(packet.PUBREC)
	p.readAck(packet.PUBACK)
}

// TestDurableRestart: a second broker on the same store has the offline
// session, its subscriptions, its queue (in order), the publisher's
// pending QoS 2 id and the retained messages.
func TestDurableRestart(t *testing.T) {
	fs := newFakeStore()
	s, stop := startStore(t, fs)
	sub, _ := connect(t, s, packet.V311, "sub", persistent(0))
	sub.subscribe(1, packet.SubOption{Filter: "r/#", QoS: 2})
	goOffline(t, s, sub, "sub")
	p, _ := connect(t, s, packet.V311, "pub", persistent(0))
	for i := 1; i <= 5; i++ {
		p.send(pub(fmt.Sprintf("r/%d", i), 1, uint16(i), fmt.Sprint(i)))
		p.readAck(packet.PUBACK)
	}
	p.send(pub("r/q2", 2, 9, "q2"))
	p.readAck(packet.PUBREC) // no PUBREL yet: id 9 stays pending across the restart
	rp := pub("ret/x", 1, 10, "kept")
	rp.Retain = true
	p.send(rp)
	p.readAck(packet.PUBACK)
	stop()

	fs.start()
	s, _ = startStore(t, fs)
	p, ack := connect(t, s, packet.V311, "pub", persistent(0))
	if !ack.SessionPresent {
		t.Fatal("publisher session not present after restart")
	}
	d := pub("r/q2", 2, 9, "q2")
	d.Dup = true
	p.send(d) // a resend of the pending id is not routed again
	p.readAck(packet.PUBREC)
	p.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 9})
	p.readAck(packet.PUBCOMP)

	sub, ack = connect(t, s, packet.V311, "sub", persistent(0))
	if !ack.SessionPresent {
		t.Fatal("subscriber session not present after restart")
	}
	want := []string{"1", "2", "3", "4", "5", "q2"}
	for _, w := range want {
		got := sub.readPublish()
		if string(got.Payload) != w {
			t.Fatalf("got %q, want %q", got.Payload, w)
		}
		if got.QoS == 2 {
			sub.send(&packet.Ack{Kind: packet.PUBREC, PacketID: got.PacketID})
			sub.readAck(packet.PUBREL)
			sub.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: got.PacketID})
		} else {
			sub.send(&packet.Ack{Kind: packet.PUBACK, PacketID: got.PacketID})
		}
	}
	sub.expectNothing(100 * time.Millisecond) // q2 exactly once
	waitFor(t, "queue emptied on disk", func() bool { return fs.queued("sub") == 0 })

	fresh, _ := connect(t, s, packet.V5, "fresh", nil)
	fresh.subscribe(1, packet.SubOption{Filter: "ret/#", QoS: 1})
	if got := fresh.readPublish(); string(got.Payload) != "kept" || !got.Retain {
		t.Fatalf("retained after restart: %+v", got)
	}
}

// TestDurableStoreFull: a commit refused for lack of space answers a v5
// publisher 0x97 and disconnects a 3.1.1 one (it keeps and resends its
// message); once space is back, publishing works again.
func TestDurableStoreFull(t *testing.T) {
	fs := newFakeStore()
	s, _ := startStore(t, fs)
	sub, _ := connect(t, s, packet.V5, "sub", persistent(3600))
	sub.subscribe(1, packet.SubOption{Filter: "f/#", QoS: 2})
	goOffline(t, s, sub, "sub")

	fs.failWith(fmt.Errorf("disk: %w", session.ErrFull))
	p5, _ := connect(t, s, packet.V5, "p5", nil)
	p5.send(pub("f/1", 1, 1, "x"))
	if a := p5.readAck(packet.PUBACK); a.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("v5 PUBACK %+v, want 0x97", a)
	}
	p5.send(pub("f/2", 2, 2, "x"))
	if a := p5.readAck(packet.PUBREC); a.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("v5 PUBREC %+v, want 0x97", a)
	}
	p3, _ := connect(t, s, packet.V311, "p3", nil)
	p3.send(pub("f/3", 1, 1, "x"))
	p3.expectClosed()
	if n := s.Stats().RefusedFull; n != 3 {
		t.Fatalf("RefusedFull %d, want 3", n)
	}
	// QoS 0 still flows to online subscribers; a retained one is not stored.
	live, _ := connect(t, s, packet.V5, "live", nil)
	live.subscribe(1, packet.SubOption{Filter: "live/#"})
	rq0 := pub("live/r", 0, 0, "q0")
	rq0.Retain = true
	p5.send(rq0)
	if got := live.readPublish(); string(got.Payload) != "q0" {
		t.Fatalf("QoS 0 while full: %+v", got)
	}
	waitFor(t, "the retained QoS 0 counted as not stored", func() bool { return s.Stats().DroppedFull == 1 })

	fs.failWith(nil)
	p5.send(pub("f/2", 2, 2, "again")) // the id was released with the failed PUBREC
	if a := p5.readAck(packet.PUBREC); a.ReasonCode != 0 {
		t.Fatalf("after recovery: %+v", a)
	}
	p5.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 2})
	p5.readAck(packet.PUBCOMP)
	waitFor(t, "the message stored", func() bool { return fs.queued("sub") == 1 })
}

// TestDurableQueueOnDisk: an offline durable session holds no queued
// message in RAM; 3 x the RAM window comes back in order, and the disk
// queue empties as the client acknowledges.
func TestDurableQueueOnDisk(t *testing.T) {
	fs := newFakeStore()
	s, _ := startStore(t, fs)
	sub, _ := connect(t, s, packet.V5, "sub", persistent(3600))
	sub.subscribe(1, packet.SubOption{Filter: "q/#", QoS: 1})
	goOffline(t, s, sub, "sub")
	p, _ := connect(t, s, packet.V5, "pub", nil)
	n := 3 * memWindow
	for i := range n {
		p.send(pub("q/x", 1, uint16(i%60000+1), fmt.Sprint(i)))
		p.readAck(packet.PUBACK)
	}
	ss := s.lookup("sub")
	ss.mu.Lock()
	inRAM, total := ss.st.MemQueueLen(), ss.st.QueueLen()
	ss.mu.Unlock()
	if inRAM != 0 || total != n {
		t.Fatalf("offline session holds %d in RAM, %d queued; want 0, %d", inRAM, total, n)
	}
	if got := fs.queued("sub"); got != n {
		t.Fatalf("%d stored, want %d", got, n)
	}
	sub, _ = connect(t, s, packet.V5, "sub", persistent(3600))
	for i := range n {
		got := sub.readPublish()
		if string(got.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q", i, got.Payload)
		}
		sub.send(&packet.Ack{Kind: packet.PUBACK, PacketID: got.PacketID})
	}
	waitFor(t, "disk queue drained", func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return len(fs.q["sub"]) == 0 && len(fs.infl["sub"]) == 0
	})
}

// TestDurableDiskQuotaRealStore: on the real store, a v5 publisher gets
// 0x97 once storage.max_disk is reached, a 3.1.1 one is disconnected, the
// broker keeps serving, and every message acknowledged before is
// delivered.
func TestDurableDiskQuotaRealStore(t *testing.T) {
	st, err := persist.Open(persist.Options{Dir: t.TempDir(), MaxDisk: 2 << 20,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := startStore(t, st)
	sub, _ := connect(t, s, packet.V5, "sub", persistent(3600))
	sub.subscribe(1, packet.SubOption{Filter: "big/#", QoS: 1})
	goOffline(t, s, sub, "sub")
	p5, _ := connect(t, s, packet.V5, "p5", nil)
	payload := string(make([]byte, 8<<10))
	accepted := 0
	for i := range 20000 {
		p5.send(pub("big/x", 1, uint16(i%60000+1), payload))
		a := p5.readAck(packet.PUBACK)
		if a.ReasonCode == packet.QuotaExceeded {
			break
		}
		if a.ReasonCode != 0 {
			t.Fatalf("PUBACK %+v", a)
		}
		accepted++
	}
	if accepted == 20000 {
		t.Fatal("never refused")
	}
	t.Logf("%d messages of 8 KiB accepted before 0x97 (max_disk 2 MiB)", accepted)
	p3, _ := connect(t, s, packet.V311, "p3", nil)
	p3.send(pub("big/y", 1, 1, "x"))
	p3.expectClosed()

	sub, _ = connect(t, s, packet.V5, "sub", persistent(3600))
	for i := range accepted {
		got := sub.readPublish()
		if len(got.Payload) != len(payload) {
			t.Fatalf("message %d: %d bytes", i, len(got.Payload))
		}
		sub.send(&packet.Ack{Kind: packet.PUBACK, PacketID: got.PacketID})
	}
	sub.expectNothing(100 * time.Millisecond)
}

// TestDurableExpiryAcrossRestart: a session's expiry counts from its
// disconnection, across a restart: one that expired while the broker was
// down is gone (and deleted from the store), one that did not is back.
func TestDurableExpiryAcrossRestart(t *testing.T) {
	fs := newFakeStore()
	clk := &skewClock{}
	s, stop := startStoreClock(t, fs, clk.now)
	short, _ := connect(t, s, packet.V5, "short", persistent(60))
	short.subscribe(1, packet.SubOption{Filter: "e/#", QoS: 1})
	goOffline(t, s, short, "short")
	long, _ := connect(t, s, packet.V5, "long", persistent(3600))
	long.subscribe(1, packet.SubOption{Filter: "e/#", QoS: 1})
	goOffline(t, s, long, "long")
	stop()

	clk.advance(10 * time.Minute) // the broker was down for 10 minutes
	fs.start()
	s, _ = startStoreClock(t, fs, clk.now)
	if s.lookup("short") != nil {
		t.Fatal("a session that expired while the broker was down was restored")
	}
	waitFor(t, "the expired session deleted from the store", func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		_, ok := fs.sess["short"]
		return !ok
	})
	p, _ := connect(t, s, packet.V5, "pub", nil)
	p.send(pub("e/1", 1, 1, "x"))
	p.readAck(packet.PUBACK)
	long, ack := connect(t, s, packet.V5, "long", persistent(3600))
	if !ack.SessionPresent {
		t.Fatal("the unexpired session is not present")
	}
	if got := long.readPublish(); string(got.Payload) != "x" {
		t.Fatalf("got %+v", got)
	}
	if _, ack := connect(t, s, packet.V5, "short", persistent(60)); ack.SessionPresent {
		t.Fatal("expired session present")
	}
}
