package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/internal/upstreamtest"
)

// waitLimit bounds every wait of these tests: it only turns a hang into a
// failure (the conditions waited for normally come in milliseconds).
const waitLimit = 60 * time.Second

// env is one test's RabbitMQ: a topic exchange of the test's own (unique
// names keep tests apart on the shared vhost, without the second or so
// that a fresh vhost costs) and a plain AMQP client to look at what the
// adapter did.
type env struct {
	t        testing.TB
	url      string
	exchange string
	ch       *amqp091.Channel
	pub      *amqp091.Channel // in confirm mode
}

// newEnv connects the test's own client to the shared vhost and declares
// the test's exchange; newEnvAt does it on the vhost of url.
func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvAt(t, upstreamtest.RabbitMQ(t))
}

func newEnvAt(t testing.TB, url string) *env {
	t.Helper()
	conn, err := amqp091.Dial(url)
	if err != nil {
		t.Fatalf("test client: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("test client channel: %v", err)
	}
	pub, err := conn.Channel()
	if err != nil {
		t.Fatalf("test client channel: %v", err)
	}
	if err := pub.Confirm(false); err != nil {
		t.Fatalf("test client confirm mode: %v", err)
	}
	e := &env{t: t, url: url, exchange: upstreamtest.UniqueName(t, "x"), ch: ch, pub: pub}
	if err := ch.ExchangeDeclare(e.exchange, amqp091.ExchangeTopic, false, false, false, false, nil); err != nil {
		t.Fatalf("declare exchange: %v", err)
	}
	name := e.exchange
	t.Cleanup(func() {
		if err := ch.ExchangeDelete(name, false, false); err != nil {
			t.Errorf("delete exchange %s: %v", name, err)
		}
	})
	return e
}

// config is an upstream configuration for the test's exchange.
func (e *env) config() Config {
	return Config{Name: upstreamtest.UniqueName(e.t, "b"), URL: e.url, Exchange: e.exchange}
}

// queue declares a queue bound to the exchange with keys and returns its
// name. It is deleted at the end of the test.
func (e *env) queue(keys ...string) string {
	e.t.Helper()
	return e.declareQueue(false, keys)
}

// durableQueue is queue for a durable queue: persistent messages routed to
// it are written to disk before they are confirmed.
func (e *env) durableQueue(keys ...string) string {
	e.t.Helper()
	return e.declareQueue(true, keys)
}

func (e *env) declareQueue(durable bool, keys []string) string {
	e.t.Helper()
	q, err := e.ch.QueueDeclare(upstreamtest.UniqueName(e.t, "q"), durable, false, false, false, nil)
	if err != nil {
		e.t.Fatalf("declare queue: %v", err)
	}
	e.deleteQueueAtEnd(q.Name)
	for _, k := range keys {
		if err := e.ch.QueueBind(q.Name, k, e.exchange, false, nil); err != nil {
			e.t.Fatalf("bind queue: %v", err)
		}
	}
	return q.Name
}

func (e *env) deleteQueueAtEnd(name string) {
	e.t.Cleanup(func() {
		if _, err := e.ch.QueueDelete(name, false, false, false); err != nil && !errors.Is(err, amqp091.ErrClosed) {
			e.t.Errorf("delete queue %s: %v", name, err)
		}
	})
}

// depth is the number of ready messages in queue q.
func (e *env) depth(q string) int {
	e.t.Helper()
	st, err := e.ch.QueueDeclarePassive(q, false, false, false, false, nil)
	if err != nil {
		e.t.Fatalf("queue %s: %v", q, err)
	}
	return st.Messages
}

// publish sends a message to the test's exchange from the test's client
// (as an AMQP application would) and waits for the broker's confirm.
func (e *env) publish(key string, p amqp091.Publishing) {
	e.t.Helper()
	dc, err := e.pub.PublishWithDeferredConfirmWithContext(context.Background(), e.exchange, key, false, false, p)
	if err != nil {
		e.t.Fatalf("publish %s: %v", key, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if ok, err := dc.WaitContext(ctx); !ok || err != nil {
		e.t.Fatalf("publish %s: acked %v, %v", key, ok, err)
	}
}

// consume starts consuming q (auto-ack) and returns the deliveries.
func (e *env) consume(q string) <-chan amqp091.Delivery {
	e.t.Helper()
	d, err := e.ch.Consume(q, "", true, false, false, false, nil)
	if err != nil {
		e.t.Fatalf("consume %s: %v", q, err)
	}
	return d
}

// next returns the next delivery, failing the test when none comes.
func next(t testing.TB, d <-chan amqp091.Delivery) amqp091.Delivery {
	t.Helper()
	select {
	case m, ok := <-d:
		if !ok {
			t.Fatal("deliveries closed")
		}
		return m
	case <-time.After(waitLimit):
		t.Fatal("no delivery")
	}
	panic("unreachable")
}

// connect builds an upstream for cfg and connects it, with handle for the
// downlink (nil: none expected). It is closed at the end of the test.
func connect(t testing.TB, cfg Config, handle func(*bridge.Inbound)) *Upstream {
	t.Helper()
	u := New(cfg, upstreamtest.Logger(t))
	if handle == nil {
		handle = func(in *bridge.Inbound) { t.Errorf("unexpected downlink message on %s", in.Topic) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := u.Connect(ctx, handle); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { closeAndWait(t, u) })
	return u
}

// closeAndWait closes u and waits for Done (every confirm called).
func closeAndWait(t testing.TB, u *Upstream) {
	t.Helper()
	if err := u.Close(); err != nil {
		t.Logf("Close: %v", err)
	}
	waitClosed(t, u.Done(), "Done")
}

func waitClosed(t testing.TB, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(waitLimit):
		t.Fatalf("%s not closed after %v", what, waitLimit)
	}
}

// confirms records the confirmations of numbered publishes and checks
// that each comes once and in publish order.
type confirms struct {
	t    testing.TB
	mu   sync.Mutex
	errs map[int]error
	next int // the index the next confirmation must have
	n    int // how many were published
	all  chan struct{}
	bad  []string
}

func newConfirms(t testing.TB) *confirms {
	return &confirms{t: t, errs: make(map[int]error), all: make(chan struct{}, 1)}
}

// publish publishes m as number i (in order: 0, 1, ...), with done called
// after the confirmation was recorded.
func (c *confirms) publish(u *Upstream, m *bridge.Message, done func()) error {
	return c.publishCtx(context.Background(), u, m, done)
}

// publishCtx is publish with a context for Publish.
func (c *confirms) publishCtx(ctx context.Context, u *Upstream, m *bridge.Message, done func()) error {
	c.mu.Lock()
	i := c.n
	c.n++
	c.mu.Unlock()
	err := u.Publish(ctx, m, func(err error) {
		c.record(i, err)
		if done != nil {
			done()
		}
	})
	if err != nil {
		c.mu.Lock()
		c.n--
		c.mu.Unlock()
	}
	return err
}

func (c *confirms) record(i int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.errs[i]; dup {
		c.bad = append(c.bad, fmt.Sprintf("message %d confirmed twice", i))
	}
	if i != c.next {
		c.bad = append(c.bad, fmt.Sprintf("message %d confirmed when %d was next", i, c.next))
	}
	c.next = i + 1
	c.errs[i] = err
	if len(c.errs) == c.n {
		select {
		case c.all <- struct{}{}:
		default:
		}
	}
}

// wait waits until every published message has been confirmed and
// returns the outcomes by number.
func (c *confirms) wait() map[int]error {
	c.t.Helper()
	deadline := time.After(waitLimit)
	for {
		c.mu.Lock()
		got, n := len(c.errs), c.n
		c.mu.Unlock()
		if got == n {
			break
		}
		select {
		case <-c.all:
		case <-deadline:
			c.t.Fatalf("%d of %d confirmations after %v", got, n, waitLimit)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.bad {
		c.t.Error(b)
	}
	out := make(map[int]error, len(c.errs))
	for k, v := range c.errs {
		out[k] = v
	}
	return out
}

// count is how many confirmations came so far.
func (c *confirms) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.errs)
}

// msg is a forwarded message number i on topic.
func msg(topic string, i int) *bridge.Message {
	return &bridge.Message{
		Topic:   topic,
		Payload: fmt.Appendf(nil, "payload %d", i),
		QoS:     1,
		ID:      fmt.Sprintf("id-%d", i),
		Seq:     uint64(i + 1),
	}
}

// poll waits until cond holds, failing the test after waitLimit.
func poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, waitLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
