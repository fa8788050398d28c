package mqtt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/internal/upstreamtest"
)

// waitTimeout bounds every wait of the tests.
const waitTimeout = 20 * time.Second

// inbox collects what an Upstream delivers.
type inbox chan *bridge.Inbound

func (in inbox) handle(m *bridge.Inbound) { in <- m }

// next waits for the next delivery.
func (in inbox) next(t testing.TB) *bridge.Inbound {
	t.Helper()
	select {
	case m := <-in:
		return m
	case <-time.After(waitTimeout):
		t.Fatalf("no downlink message within %v", waitTimeout)
		return nil
	}
}

// connect builds and connects an Upstream; it is closed (and Done awaited)
// at the end of the test.
func connect(t testing.TB, cfg Config, handle func(*bridge.Inbound)) *Upstream {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "ferrymq-" + strings.ReplaceAll(t.Name(), "/", "-")
	}
	u := New(cfg, upstreamtest.Logger(t))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := u.Connect(ctx, handle); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { closeAndWait(t, u) })
	return u
}

// closeAndWait closes u and waits for Done.
func closeAndWait(t testing.TB, u *Upstream) {
	t.Helper()
	if err := u.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	waitDone(t, u)
}

func waitDone(t testing.TB, u *Upstream) {
	t.Helper()
	select {
	case <-u.Done():
	case <-time.After(waitTimeout):
		t.Fatalf("Done not closed within %v", waitTimeout)
	}
}

// results records confirmations by message index.
type results struct {
	mu     sync.Mutex
	errs   []error
	calls  []int
	order  []int
	count  int
	allIn  chan struct{}
	expect int
}

func newResults(n int) *results {
	return &results{errs: make([]error, n), calls: make([]int, n), expect: n, allIn: make(chan struct{})}
}

func (r *results) confirm(i int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs[i] = err
	r.calls[i]++
	r.order = append(r.order, i)
	r.count++
	if r.count == r.expect {
		close(r.allIn)
	}
}

func (r *results) wait(t testing.TB) {
	t.Helper()
	select {
	case <-r.allIn:
	case <-time.After(waitTimeout):
		r.mu.Lock()
		defer r.mu.Unlock()
		t.Fatalf("%d of %d confirmations within %v", r.count, r.expect, waitTimeout)
	}
}

// check fails unless every message was confirmed exactly once, in order,
// and want(i, err) holds.
func (r *results) check(t testing.TB, want func(i int, err error) bool) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, n := range r.calls {
		if n != 1 {
			t.Fatalf("message %d confirmed %d times", i, n)
		}
		if !want(i, r.errs[i]) {
			t.Fatalf("message %d: unexpected confirmation %v", i, r.errs[i])
		}
	}
	for k, i := range r.order {
		if k != i {
			t.Fatalf("confirmation %d is for message %d: not in Publish order", k, i)
		}
	}
}

// forward publishes msgs with at most inflight unconfirmed, like the
// bridge's forwarder, and waits for every confirmation.
func forward(t testing.TB, u *Upstream, msgs []*bridge.Message, inflight int) *results {
	t.Helper()
	r := newResults(len(msgs))
	sem := make(chan struct{}, inflight)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for i, m := range msgs {
		sem <- struct{}{}
		if err := u.Publish(ctx, m, func(err error) { r.confirm(i, err); <-sem }); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	r.wait(t)
	return r
}

func telemetry(topic string, n int, qos byte) []*bridge.Message {
	msgs := make([]*bridge.Message, n)
	for i := range msgs {
		msgs[i] = &bridge.Message{
			Topic: topic, QoS: qos, Payload: fmt.Appendf(nil, "payload %d", i),
			ID: fmt.Sprintf("id-%d", i), Seq: uint64(i + 1),
		}
	}
	return msgs
}

// client is a plain MQTT 5 client for the other side of the tests.
type client struct {
	c    *paho.Client
	msgs chan *paho.Publish
}

// dialClient connects a paho.golang client (clean start) and subscribes
// it to subs.
func dialClient(t testing.TB, addr, id string, subs ...paho.SubscribeOptions) *client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	cl := &client{msgs: make(chan *paho.Publish, 100000)}
	cl.c = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			cl.msgs <- pr.Packet
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := cl.c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatalf("test client connect: %v", err)
	}
	t.Cleanup(func() {
		_ = cl.c.Disconnect(&paho.Disconnect{})
		<-cl.c.Done()
	})
	if len(subs) > 0 {
		if _, err := cl.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
			t.Fatalf("test client subscribe: %v", err)
		}
	}
	return cl
}

func (c *client) next(t testing.TB) *paho.Publish {
	t.Helper()
	select {
	case p := <-c.msgs:
		return p
	case <-time.After(waitTimeout):
		t.Fatalf("test client: no message within %v", waitTimeout)
		return nil
	}
}

func (c *client) publish(t testing.TB, p *paho.Publish) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := c.c.Publish(ctx, p); err != nil {
		t.Fatalf("test client publish: %v", err)
	}
}

func userProp(p *paho.Publish, key string) (string, bool) {
	if p.Properties == nil {
		return "", false
	}
	for _, u := range p.Properties.User {
		if u.Key == key {
			return u.Value, true
		}
	}
	return "", false
}

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, waitTimeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// noGoroutineGrowth fails when, after f, the goroutines do not come back
// to at most their number before (polling: some end just after Done).
func noGoroutineGrowth(t *testing.T, f func()) {
	t.Helper()
	before := runtime.NumGoroutine()
	f()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func isLinkLost(_ int, err error) bool { return errors.Is(err, bridge.ErrLinkLost) }
func isNil(_ int, err error) bool      { return err == nil }
