package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/session"
)

// fakeOutlet queues what is published under "up/" and refuses while
// refuse is set.
type fakeOutlet struct {
	mu        sync.Mutex
	refuse    bool
	next      uint64
	offered   []string
	committed map[uint64]error
}

func (o *fakeOutlet) Offer(m *session.Message, durable bool) (session.Change, bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !strings.HasPrefix(m.Topic, "up/") {
		return session.Change{}, false, nil
	}
	if o.refuse {
		return session.Change{}, false, fmt.Errorf("outbox full: %w", session.ErrFull)
	}
	o.offered = append(o.offered, m.Topic)
	if !durable {
		return session.Change{}, false, nil
	}
	o.next++
	return session.Change{Kind: session.PutOutbox, Bridge: "b", Seq: o.next, D: session.Delivery{Msg: m}}, true, nil
}

func (o *fakeOutlet) Committed(seq uint64, err error) {
	o.mu.Lock()
	o.committed[seq] = err
	o.mu.Unlock()
}

func (o *fakeOutlet) state() (int, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.offered), len(o.committed)
}

func startOutlet(t *testing.T, st session.Store, o Outlet) *Server {
	t.Helper()
	s, err := New(Config{Listeners: []Listener{{Address: "127.0.0.1:0"}}},
		Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Store: st})
	if err != nil {
		t.Fatal(err)
	}
	s.AddOutlet(o)
	stopped := make(chan struct{})
	s.OnStop(func() { close(stopped) })
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-stopped
	})
	return s
}

// TestOutletInPublishBatch: the outlet's change is committed with the
// publish, before PUBACK; Committed follows.
func TestOutletInPublishBatch(t *testing.T) {
	fs := newFakeStore()
	o := &fakeOutlet{committed: map[uint64]error{}}
	s := startOutlet(t, fs, o)
	c, _ := connect(t, s, packet.V5, "dev", nil)
	fs.hold()
	c.send(pub("up/1", 1, 1, "x"))
	waitFor(t, "the offer", func() bool { n, _ := o.state(); return n == 1 })
	c.expectNothing(50 * time.Millisecond) // no PUBACK before the commit
	fs.release()
	if a := c.readAck(packet.PUBACK); a.ReasonCode != 0 {
		t.Fatalf("PUBACK %+v", a)
	}
	waitFor(t, "Committed", func() bool { _, n := o.state(); return n == 1 })
	c.send(pub("other", 1, 2, "x"))
	c.readAck(packet.PUBACK)
	if n, _ := o.state(); n != 1 {
		t.Errorf("offers %d", n)
	}
}

// TestOutletRefuses: a refusing outlet gets v5 publishers 0x97 and 3.1.1
// ones disconnected, and the message goes nowhere.
func TestOutletRefuses(t *testing.T) {
	o := &fakeOutlet{committed: map[uint64]error{}, refuse: true}
	s := startOutlet(t, newFakeStore(), o)
	sub, _ := connect(t, s, packet.V5, "sub", nil)
	sub.subscribe(1, packet.SubOption{Filter: "up/#", QoS: 1})
	p5, _ := connect(t, s, packet.V5, "p5", nil)
	p5.send(pub("up/1", 1, 1, "x"))
	if a := p5.readAck(packet.PUBACK); a.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("v5 PUBACK %+v, want 0x97", a)
	}
	p5.send(pub("up/2", 2, 2, "x"))
	if a := p5.readAck(packet.PUBREC); a.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("v5 PUBREC %+v, want 0x97", a)
	}
	p5.send(pub("up/0", 0, 0, "x"))
	p3, _ := connect(t, s, packet.V311, "p3", nil)
	p3.send(pub("up/3", 1, 1, "x"))
	p3.expectClosed()
	sub.expectNothing(50 * time.Millisecond)
	if n := s.Stats().RefusedBridge; n != 4 {
		t.Errorf("RefusedBridge %d, want 4", n)
	}
	// Accepted again once the outlet has room; the refused QoS 2 id is free.
	o.mu.Lock()
	o.refuse = false
	o.mu.Unlock()
	p5.send(pub("up/2", 2, 2, "again"))
	if a := p5.readAck(packet.PUBREC); a.ReasonCode != 0 {
		t.Fatalf("PUBREC after room %+v", a)
	}
	p5.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 2})
	p5.readAck(packet.PUBCOMP)
	if got := sub.readPublish(); string(got.Payload) != "again" {
		t.Fatalf("subscriber got %q", got.Payload)
	}
}

// TestInject: an injected message reaches subscribers and outlets, done
// is called after its commit, and nothing is injected after Shutdown.
func TestInject(t *testing.T) {
	o := &fakeOutlet{committed: map[uint64]error{}}
	s := startOutlet(t, newFakeStore(), o)
	sub, _ := connect(t, s, packet.V5, "sub", persistent(60))
	sub.subscribe(1, packet.SubOption{Filter: "#", QoS: 1})
	done := make(chan error, 1)
	s.Inject(&session.Message{Topic: "up/cmd", Payload: []byte("go"), QoS: 1, Origin: "\x00bridge/x"}, func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := sub.readPublish(); got.Topic != "up/cmd" || got.QoS != 1 {
		t.Fatalf("subscriber got %+v", got)
	}
	if n, c := o.state(); n != 1 || c != 1 {
		t.Errorf("outlet offers %d commits %d", n, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.Shutdown(ctx)
	s.Inject(&session.Message{Topic: "x", QoS: 1}, func(err error) { done <- err })
	if err := <-done; !errors.Is(err, errInjectStopped) {
		t.Errorf("inject after shutdown: %v", err)
	}
}
