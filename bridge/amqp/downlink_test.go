package amqp

import (
	"reflect"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/internal/upstreamtest"
)

// inbox collects downlink messages handed to an Upstream's handler.
type inbox chan *bridge.Inbound

func (in inbox) handle(m *bridge.Inbound) { in <- m }

// next returns the next downlink message, failing the test when none comes.
func (in inbox) next(t testing.TB) *bridge.Inbound {
	t.Helper()
	select {
	case m := <-in:
		return m
	case <-time.After(waitLimit):
		t.Fatal("no downlink message")
	}
	panic("unreachable")
}

// downlinkConfig is a configuration receiving cmd/+/x and all/# into a
// queue of the test's own (deleted at its end).
func downlinkConfig(e *env) Config {
	cfg := e.config()
	cfg.Queue = upstreamtest.UniqueName(e.t, "dq")
	cfg.ReceiveKeys = []string{"cmd/+/x", "all/#"}
	cfg.Prefetch = 8
	e.deleteQueueAtEnd(cfg.Queue)
	return cfg
}

// TestDownlink: messages published upstream while no Upstream is
// connected wait in the durable queue and are handed over after Connect,
// mapped back to MQTT; a Nack'ed message and one not acknowledged before
// the link closed come again; acknowledged ones are gone.
func TestDownlink(t *testing.T) {
	e := newEnv(t)
	cfg := downlinkConfig(e)
	// A first connection declares and binds the queue, as a previous run
	// of the bridge would have.
	closeAndWait(t, connect(t, cfg, nil))

	e.publish("cmd.dev1.x", amqp091.Publishing{
		MessageId: "m1", ReplyTo: "reply.dev1", CorrelationId: "c-1", ContentType: "application/json",
		Expiration: "600000", Body: []byte(`{"on":true}`),
		Headers: amqp091.Table{SeqHeader: int64(41), "who": "ops"},
	})
	e.publish("cmd.dev1.y", amqp091.Publishing{MessageId: "not-bound"})
	e.publish("all.a.b", amqp091.Publishing{MessageId: "m2", Body: []byte("2")})
	e.publish("cmd.dev2.x", amqp091.Publishing{MessageId: "m3", Body: []byte("3")})
	if got := e.depth(cfg.Queue); got != 3 {
		t.Fatalf("queue depth %d, want 3", got)
	}

	in := make(inbox, 16)
	u := connect(t, cfg, in.handle)
	m1 := in.next(t)
	want := bridge.Message{
		Topic: "cmd/dev1/x", Payload: []byte(`{"on":true}`), QoS: 1, ID: "m1", Seq: 41,
		ResponseTopic: "reply/dev1", CorrelationData: []byte("c-1"), ContentType: "application/json",
		Expiry: 10 * time.Minute, User: []bridge.UserProperty{{Key: "who", Value: "ops"}},
	}
	if !reflect.DeepEqual(m1.Message, want) {
		t.Fatalf("downlink message\n got %#v\nwant %#v", m1.Message, want)
	}
	m2, m3 := in.next(t), in.next(t)
	if m2.ID != "m2" || m2.Topic != "all/a/b" || m3.ID != "m3" || m3.Topic != "cmd/dev2/x" {
		t.Fatalf("then %s on %s and %s on %s", m2.ID, m2.Topic, m3.ID, m3.Topic)
	}
	m1.Ack()
	m1.Ack() // a second call does nothing
	m2.Nack()
	if again := in.next(t); again.ID != "m2" {
		t.Fatalf("after Nack: %s, want m2 again", again.ID)
	} else {
		m2 = again
	}
	// m2 and m3 are not acknowledged when the link closes.
	closeAndWait(t, u)
	m2.Ack() // too late: the broker redelivers anyway
	if got := e.depth(cfg.Queue); got != 2 {
		t.Fatalf("queue depth %d after Close, want 2 (the unacknowledged ones)", got)
	}

	in = make(inbox, 16)
	u = connect(t, cfg, in.handle)
	seen := map[string]bool{}
	for range 2 {
		m := in.next(t)
		seen[m.ID] = true
		m.Ack()
	}
	if !seen["m2"] || !seen["m3"] {
		t.Fatalf("redelivered %v, want m2 and m3", seen)
	}
	closeAndWait(t, u)
	if got := e.depth(cfg.Queue); got != 0 {
		t.Fatalf("queue depth %d after the acknowledgements, want 0", got)
	}
	select {
	case m := <-in:
		t.Fatalf("unexpected %s on %s", m.ID, m.Topic)
	default:
	}
}

// TestDownlinkQueueDeleted: when the downlink queue is deleted under the
// consumer the broker cancels it: the link is reported lost.
func TestDownlinkQueueDeleted(t *testing.T) {
	e := newEnv(t)
	cfg := downlinkConfig(e)
	u := connect(t, cfg, make(inbox, 1).handle)
	if _, err := e.ch.QueueDelete(cfg.Queue, false, false, false); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, u.Done(), "Done")
	if err := u.Err(); err == nil {
		t.Fatal("Err is nil")
	} else {
		t.Logf("Err: %v", err)
	}
}

// TestDownlinkInvalidTopic: a routing key that is no MQTT topic name (a
// wildcard character in it) cannot be published locally: the adapter
// rejects it without requeueing instead of handing it over.
func TestDownlinkInvalidTopic(t *testing.T) {
	e := newEnv(t)
	cfg := downlinkConfig(e)
	closeAndWait(t, connect(t, cfg, nil))
	e.publish("all.+", amqp091.Publishing{MessageId: "bad"})
	e.publish("all.ok", amqp091.Publishing{MessageId: "good"})
	in := make(inbox, 4)
	u := connect(t, cfg, in.handle)
	m := in.next(t)
	if m.ID != "good" {
		t.Fatalf("handed %s on %q, want only good", m.ID, m.Topic)
	}
	m.Ack()
	closeAndWait(t, u)
	if got := e.depth(cfg.Queue); got != 0 {
		t.Fatalf("queue depth %d, want 0", got)
	}
}

// TestOwnVhostDefaultExchange runs both directions on a fresh vhost with
// the default exchange (amq.topic) and queue name: request/reply
// properties, expiry and headers cross as AMQP applications see them.
func TestOwnVhostDefaultExchange(t *testing.T) {
	e := newEnvAt(t, upstreamtest.RabbitVhost(t))
	e.exchange = DefaultExchange
	cfg := Config{Name: upstreamtest.UniqueName(t, "b"), URL: e.url, ReceiveKeys: []string{"dev/+/cmd"}}
	e.deleteQueueAtEnd("ferrymq." + cfg.Name)
	q := e.queue("dev.*.state")
	in := make(inbox, 4)
	u := connect(t, cfg, in.handle)

	c := newConfirms(t)
	up := &bridge.Message{
		Topic: "dev/7/state", Payload: []byte("on"), ID: "u1", Seq: 9,
		ResponseTopic: "dev/7/cmd", CorrelationData: []byte("corr"), ContentType: "text/plain",
		Expiry: time.Hour, User: []bridge.UserProperty{{Key: "k", Value: "v"}},
	}
	if err := c.publish(u, up, nil); err != nil {
		t.Fatal(err)
	}
	if errs := c.wait(); errs[0] != nil {
		t.Fatal(errs[0])
	}
	d := next(t, e.consume(q))
	if d.Exchange != DefaultExchange || d.RoutingKey != "dev.7.state" || d.ReplyTo != "dev.7.cmd" ||
		d.CorrelationId != "corr" || d.Expiration != "3600000" || d.ContentType != "text/plain" ||
		d.MessageId != "u1" || d.Headers["k"] != "v" || d.Headers[SeqHeader] != int64(9) {
		t.Fatalf("delivered %+v", d)
	}

	// The reply, as an AMQP service sends it.
	e.publish(d.ReplyTo, amqp091.Publishing{CorrelationId: d.CorrelationId, Body: []byte("ok")})
	m := in.next(t)
	if m.Topic != "dev/7/cmd" || string(m.CorrelationData) != "corr" || string(m.Payload) != "ok" {
		t.Fatalf("reply %+v", m.Message)
	}
	m.Ack()
}
