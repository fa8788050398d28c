package amqp

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/internal/upstreamtest"
)

// TestPublishConfirmsInOrder forwards 10,000 messages with 256 unconfirmed
// at a time: every one is confirmed without error, in order, and a queue
// bound to the exchange receives them all, in order, persistent, with
// their message-id and sequence header.
func TestPublishConfirmsInOrder(t *testing.T) {
	const n, window = 10000, 256
	e := newEnv(t)
	q := e.queue("load.#")
	u := connect(t, e.config(), nil)
	c := newConfirms(t)
	slots := make(chan struct{}, window)
	for i := range n {
		slots <- struct{}{}
		m := msg(fmt.Sprintf("load/%d", i%7), i)
		if err := c.publish(u, m, func() { <-slots }); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	for i, err := range c.wait() {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	d := e.consume(q)
	for i := range n {
		m := next(t, d)
		want := msg(fmt.Sprintf("load/%d", i%7), i)
		seq, _ := HeaderSeq(m.Headers[SeqHeader])
		if m.RoutingKey != TopicToKey(want.Topic) || m.MessageId != want.ID || seq != want.Seq ||
			string(m.Body) != string(want.Payload) || m.DeliveryMode != amqp091.Persistent {
			t.Fatalf("delivery %d: key %q id %q seq %d body %q mode %d; want %q %q %d %q",
				i, m.RoutingKey, m.MessageId, seq, m.Body, m.DeliveryMode, TopicToKey(want.Topic), want.ID, want.Seq, want.Payload)
		}
	}
	if got := e.depth(q); got != 0 {
		t.Fatalf("%d messages left in the queue", got)
	}
}

// TestPublishUnroutable interleaves routable messages with messages no
// queue is bound for: each unroutable one is confirmed with an error
// wrapping ErrRejected, and the messages around it are confirmed
// normally and delivered.
func TestPublishUnroutable(t *testing.T) {
	const n = 600
	e := newEnv(t)
	q := e.queue("ok.#")
	u := connect(t, e.config(), nil)
	c := newConfirms(t)
	routable := func(i int) bool { return i%3 != 1 && i%17 != 0 }
	for i := range n {
		topic := "ok/" + fmt.Sprint(i)
		if !routable(i) {
			topic = "nobody/" + fmt.Sprint(i)
		}
		if err := c.publish(u, msg(topic, i), nil); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	want := 0
	for i, err := range c.wait() {
		switch {
		case routable(i) && err != nil:
			t.Errorf("routable message %d: %v", i, err)
		case !routable(i) && !errors.Is(err, bridge.ErrRejected):
			t.Errorf("unroutable message %d: %v, want ErrRejected", i, err)
		case !routable(i) && !strings.Contains(err.Error(), "NO_ROUTE"):
			t.Errorf("unroutable message %d: %v, want the broker's reason", i, err)
		}
		if routable(i) {
			want++
		}
	}
	d := e.consume(q)
	for i := range n {
		if !routable(i) {
			continue
		}
		if m := next(t, d); m.MessageId != fmt.Sprintf("id-%d", i) {
			t.Fatalf("delivery %s, want id-%d", m.MessageId, i)
		}
	}
	if got := e.depth(q); got != 0 {
		t.Fatalf("%d more messages in the queue", got)
	}
}

// TestPublishTooLong: a message whose routing key does not fit an AMQP
// short string is confirmed with ErrRejected without being sent, and the
// link goes on.
func TestPublishTooLong(t *testing.T) {
	e := newEnv(t)
	q := e.queue("#")
	u := connect(t, e.config(), nil)
	c := newConfirms(t)
	for i, topic := range []string{"a", strings.Repeat("x", 300), "b"} {
		if err := c.publish(u, msg(topic, i), nil); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	errs := c.wait()
	if errs[0] != nil || errs[2] != nil || !errors.Is(errs[1], bridge.ErrRejected) {
		t.Fatalf("confirmations %v", errs)
	}
	d := e.consume(q)
	for _, id := range []string{"id-0", "id-2"} {
		if m := next(t, d); m.MessageId != id {
			t.Fatalf("delivery %s, want %s", m.MessageId, id)
		}
	}
	if got := e.depth(q); got != 0 {
		t.Fatalf("%d more messages in the queue", got)
	}
	if u.Err() != nil {
		t.Fatalf("link down: %v", u.Err())
	}
}

// TestLinkLost takes the upstream away (through a proxy) while messages
// wait for their confirmations: every one is confirmed with ErrLinkLost,
// Done is closed, Err says why, and Publish refuses. Once the upstream is
// back, a new link works.
func TestLinkLost(t *testing.T) {
	e := newEnv(t)
	e.queue("#")
	cfg := e.config()
	p := upstreamtest.Proxy(t, upstreamtest.AMQPAddr(t, cfg.URL))
	cfg.URL = p.URL(cfg.URL)
	u := connect(t, cfg, nil)
	c := newConfirms(t)
	if err := c.publish(u, msg("a", 0), nil); err != nil {
		t.Fatal(err)
	}
	if errs := c.wait(); errs[0] != nil {
		t.Fatalf("before: %v", errs[0])
	}
	// Frozen first, so that no confirmation can slip through before the
	// link drops.
	p.Freeze()
	for i := 1; i <= 100; i++ {
		if err := c.publish(u, msg("a", i), nil); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	p.Down()
	for i, err := range c.wait() {
		if i > 0 && !errors.Is(err, bridge.ErrLinkLost) {
			t.Errorf("message %d: %v, want ErrLinkLost", i, err)
		}
	}
	waitClosed(t, u.Done(), "Done")
	if err := u.Err(); !errors.Is(err, bridge.ErrLinkLost) {
		t.Fatalf("Err = %v, want ErrLinkLost", err)
	}
	err := u.Publish(context.Background(), msg("a", 101), func(error) { t.Error("confirm called after a refused Publish") })
	if !errors.Is(err, bridge.ErrLinkLost) {
		t.Fatalf("Publish after the loss: %v, want ErrLinkLost", err)
	}
	if err := u.Close(); err != nil {
		t.Logf("Close after the loss: %v", err)
	}

	// The upstream comes back: a new link works (the bridge reconnects
	// with a new Upstream).
	p.Thaw()
	p.Up()
	u = connect(t, cfg, nil)
	c = newConfirms(t)
	if err := c.publish(u, msg("a", 102), nil); err != nil {
		t.Fatal(err)
	}
	if errs := c.wait(); errs[0] != nil {
		t.Fatalf("after the restart: %v", errs[0])
	}
}

// TestFrozenLinkClose: on a half-open link (the proxy forwards nothing)
// confirmations stop; Close still returns, fails every pending
// confirmation with ErrLinkLost, closes the socket and ends the adapter's
// goroutines.
func TestFrozenLinkClose(t *testing.T) {
	e := newEnv(t)
	e.queue("#")
	cfg := e.config()
	p := upstreamtest.Proxy(t, upstreamtest.AMQPAddr(t, cfg.URL))
	cfg.URL = p.URL(cfg.URL)
	before := runtime.NumGoroutine()
	u := New(cfg, upstreamtest.Logger(t))
	if err := u.Connect(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	c := newConfirms(t)
	p.Freeze()
	for i := range 300 {
		if err := c.publish(u, msg("f", i), nil); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	if got := c.count(); got != 0 {
		t.Fatalf("%d confirmations through a frozen link", got)
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		if err := u.Close(); err != nil {
			t.Logf("Close on a half-open link: %v", err)
		}
	}()
	waitClosed(t, closed, "Close")
	waitClosed(t, u.Done(), "Done")
	for i, err := range c.wait() {
		if !errors.Is(err, bridge.ErrLinkLost) {
			t.Errorf("message %d: %v, want ErrLinkLost", i, err)
		}
	}
	// The bytes held by the proxy now reach the broker; the client end is
	// closed, so the proxied connection ends.
	p.Thaw()
	poll(t, "proxied connection closed", func() bool { return p.Conns() == 0 })
	poll(t, "goroutines ended", func() bool { return runtime.NumGoroutine() <= before })
}

// TestMissingExchange: Connect says which exchange is missing, and the
// Upstream is spent.
func TestMissingExchange(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Exchange = upstreamtest.UniqueName(t, "missing")
	u := New(cfg, upstreamtest.Logger(t))
	err := u.Connect(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), cfg.Exchange) || !strings.Contains(err.Error(), "NOT_FOUND") {
		t.Fatalf("Connect: %v, want NOT_FOUND naming %s", err, cfg.Exchange)
	}
	waitClosed(t, u.Done(), "Done")
	if u.Err() == nil {
		t.Fatal("Err is nil after a failed Connect")
	}
	if err := u.Publish(context.Background(), msg("a", 0), func(error) { t.Error("confirm called") }); err == nil {
		t.Fatal("Publish after a failed Connect succeeded")
	}
	if err := u.Close(); err != nil {
		t.Fatalf("Close after a failed Connect: %v", err)
	}
}

// TestConnectRefused: nothing listens; Connect fails with the address.
func TestConnectRefused(t *testing.T) {
	p := upstreamtest.Proxy(t, "127.0.0.1:1")
	p.Down()
	u := New(Config{Name: "x", URL: "amqp://guest:guest@" + p.Addr() + "/"}, upstreamtest.Logger(t))
	err := u.Connect(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), p.Addr()) {
		t.Fatalf("Connect: %v, want an error naming %s", err, p.Addr())
	}
	waitClosed(t, u.Done(), "Done")
}

// TestCloseBeforeConnect: Close on a fresh Upstream ends it; Connect then
// refuses.
func TestCloseBeforeConnect(t *testing.T) {
	u := New(Config{Name: "x", URL: "amqp://127.0.0.1:1/"}, upstreamtest.Logger(t))
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, u.Done(), "Done")
	if err := u.Connect(context.Background(), nil); err == nil {
		t.Fatal("Connect after Close succeeded")
	}
	if !errors.Is(u.Err(), bridge.ErrLinkLost) {
		t.Fatalf("Err = %v", u.Err())
	}
}

// TestBlocked sets off a memory alarm: the broker blocks the publishing
// connection and Blocked says so; once the alarm clears it is false again
// and the message held meanwhile is confirmed.
func TestBlocked(t *testing.T) {
	e := newEnv(t)
	e.queue("#")
	u := connect(t, e.config(), nil)
	restore := upstreamtest.RabbitMemoryAlarm(t)
	c := newConfirms(t)
	// RabbitMQ blocks a connection when it publishes during an alarm.
	if err := c.publish(u, msg("b", 0), nil); err != nil {
		t.Fatal(err)
	}
	poll(t, "Blocked", u.Blocked)
	restore()
	poll(t, "unblocked", func() bool { return !u.Blocked() })
	if errs := c.wait(); errs[0] != nil {
		t.Fatalf("confirmation after the alarm: %v", errs[0])
	}
}

// TestPublishNacked: a queue full with the reject-publish overflow policy
// makes the broker nack: those messages are confirmed with ErrNacked (to
// be resent), the others normally, and the link stays up.
func TestPublishNacked(t *testing.T) {
	const max = 5
	e := newEnv(t)
	q, err := e.ch.QueueDeclare(upstreamtest.UniqueName(t, "q"), false, false, false, false,
		amqp091.Table{"x-max-length": int32(max), "x-overflow": "reject-publish"})
	if err != nil {
		t.Fatal(err)
	}
	e.deleteQueueAtEnd(q.Name)
	if err := e.ch.QueueBind(q.Name, "full", e.exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	u := connect(t, e.config(), nil)
	c := newConfirms(t)
	for i := range 2 * max {
		if err := c.publish(u, msg("full", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	for i, err := range c.wait() {
		switch {
		case i < max && err != nil:
			t.Errorf("message %d: %v", i, err)
		case i >= max && !errors.Is(err, ErrNacked):
			t.Errorf("message %d: %v, want ErrNacked", i, err)
		}
	}
	if u.Err() != nil {
		t.Fatalf("link down: %v", u.Err())
	}
}

// TestHeartbeatDetectsFrozenLink: with nothing arriving on a half-open
// link, the missed heartbeats end it by themselves: Done closes with
// ErrLinkLost and the pending confirmation fails.
func TestHeartbeatDetectsFrozenLink(t *testing.T) {
	e := newEnv(t)
	e.queue("#")
	cfg := e.config()
	cfg.Heartbeat = time.Second
	p := upstreamtest.Proxy(t, upstreamtest.AMQPAddr(t, cfg.URL))
	cfg.URL = p.URL(cfg.URL)
	u := connect(t, cfg, nil)
	c := newConfirms(t)
	p.Freeze()
	if err := c.publish(u, msg("h", 0), nil); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, u.Done(), "Done")
	if errs := c.wait(); !errors.Is(errs[0], bridge.ErrLinkLost) {
		t.Fatalf("confirmation: %v, want ErrLinkLost", errs[0])
	}
	if err := u.Err(); !errors.Is(err, bridge.ErrLinkLost) {
		t.Fatalf("Err = %v", err)
	} else {
		t.Logf("Err: %v", err)
	}
}
