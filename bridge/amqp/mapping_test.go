package amqp

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/bridge"
)

func TestTopicKeyMapping(t *testing.T) {
	for _, c := range []struct{ topic, key string }{
		{"a", "a"},
		{"a/b/c", "a.b.c"},
		{"v1.0/x", "v1/0.x"},
		{"/a/", ".a."},
		{"a//b", "a..b"},
		{"", ""},
		{"$SYS/x", "$SYS.x"},
		{"ünï/cödé", "ünï.cödé"},
	} {
		if got := TopicToKey(c.topic); got != c.key {
			t.Errorf("TopicToKey(%q) = %q, want %q", c.topic, got, c.key)
		}
		if got := KeyToTopic(c.key); got != c.topic {
			t.Errorf("KeyToTopic(%q) = %q, want %q", c.key, got, c.topic)
		}
	}
}

func TestFilterToBindingKey(t *testing.T) {
	for _, c := range []struct{ filter, key string }{
		{"a/b", "a.b"},
		{"cmd/+/x/#", "cmd.*.x.#"},
		{"#", "#"},
		{"+", "*"},
		{"+/+", "*.*"},
		{"v1.0/+", "v1/0.*"},
		{"a//#", "a..#"},
	} {
		got, err := FilterToBindingKey(c.filter)
		if err != nil || got != c.key {
			t.Errorf("FilterToBindingKey(%q) = %q, %v; want %q", c.filter, got, err, c.key)
		}
	}
	for _, bad := range []string{"", "a/#/b", "a+/b", "a/b#", "a/*/b", "*", strings.Repeat("a/", 128) + "b"} {
		if got, err := FilterToBindingKey(bad); err == nil {
			t.Errorf("FilterToBindingKey(%q) = %q, want an error", bad, got)
		}
	}
}

func TestExpiration(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, ""}, {-time.Second, ""}, {time.Nanosecond, "1"}, {time.Millisecond, "1"},
		{1500 * time.Microsecond, "2"}, {90 * time.Second, "90000"},
	} {
		if got := expiration(c.d); got != c.want {
			t.Errorf("expiration(%v) = %q, want %q", c.d, got, c.want)
		}
	}
	for _, c := range []struct {
		s    string
		want time.Duration
	}{
		{"", 0}, {"0", 0}, {"1", time.Millisecond}, {"90000", 90 * time.Second},
		{"-5", 0}, {"x", 0}, {"99999999999999999999", 0},
	} {
		if got := parseExpiration(c.s); got != c.want {
			t.Errorf("parseExpiration(%q) = %v, want %v", c.s, got, c.want)
		}
	}
}

func TestPublishing(t *testing.T) {
	m := &bridge.Message{
		Topic:           "dev/42/state",
		Payload:         []byte("on"),
		ID:              "m-1",
		Seq:             1<<63 + 5, // above int64: the header's bits carry it
		ResponseTopic:   "reply/dev.42",
		CorrelationData: []byte{0, 1, 0xff},
		ContentType:     "text/plain",
		Expiry:          2500 * time.Millisecond,
		User: []bridge.UserProperty{
			{Key: "a", Value: "1"}, {Key: "b", Value: "x"}, {Key: "a", Value: "2"},
			{Key: "a", Value: "3"}, {Key: SeqHeader, Value: "spoofed"},
		},
	}
	key, p, err := publishing(m)
	if err != nil {
		t.Fatal(err)
	}
	if key != "dev.42.state" {
		t.Errorf("key %q", key)
	}
	want := amqp091.Publishing{
		DeliveryMode:  amqp091.Persistent,
		MessageId:     "m-1",
		ContentType:   "text/plain",
		CorrelationId: "\x00\x01\xff",
		ReplyTo:       "reply.dev/42",
		Expiration:    "2500",
		Body:          []byte("on"),
		Headers: amqp091.Table{
			"a":       []any{"1", "2", "3"},
			"b":       "x",
			SeqHeader: int64(-(1 << 63) + 5),
		},
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("publishing:\n got %#v\nwant %#v", p, want)
	}
	if err := p.Headers.Validate(); err != nil {
		t.Errorf("headers: %v", err)
	}

	// And back, as a delivery of that publishing.
	d := amqp091.Delivery{
		RoutingKey: key, MessageId: p.MessageId, ContentType: p.ContentType,
		CorrelationId: p.CorrelationId, ReplyTo: p.ReplyTo, Expiration: p.Expiration,
		Headers: p.Headers, Body: p.Body,
	}
	got := message(&d)
	back := *m
	back.QoS = 1
	back.User = []bridge.UserProperty{{Key: "a", Value: "1"}, {Key: "a", Value: "2"}, {Key: "a", Value: "3"}, {Key: "b", Value: "x"}}
	if !reflect.DeepEqual(got, back) {
		t.Errorf("message:\n got %#v\nwant %#v", got, back)
	}
}

func TestPublishingMinimal(t *testing.T) {
	key, p, err := publishing(&bridge.Message{Topic: "t", Seq: 7})
	if err != nil {
		t.Fatal(err)
	}
	if key != "t" || p.ReplyTo != "" || p.CorrelationId != "" || p.Expiration != "" || p.MessageId != "" {
		t.Errorf("key %q publishing %#v", key, p)
	}
	if !reflect.DeepEqual(p.Headers, amqp091.Table{SeqHeader: int64(7)}) {
		t.Errorf("headers %#v", p.Headers)
	}
	m := message(&amqp091.Delivery{RoutingKey: "t"})
	if m.CorrelationData != nil || m.User != nil || m.Seq != 0 {
		t.Errorf("message %#v", m)
	}
}

func TestPublishingTooLong(t *testing.T) {
	long := strings.Repeat("x", 256)
	ok := strings.Repeat("x", 255)
	for name, m := range map[string]*bridge.Message{
		"routing key":    {Topic: long},
		"message-id":     {Topic: "t", ID: long},
		"content-type":   {Topic: "t", ContentType: long},
		"correlation-id": {Topic: "t", CorrelationData: []byte(long)},
		"reply-to":       {Topic: "t", ResponseTopic: long},
		"header name":    {Topic: "t", User: []bridge.UserProperty{{Key: long, Value: "v"}}},
	} {
		_, _, err := publishing(m)
		if !errors.Is(err, bridge.ErrRejected) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s of 256 bytes: %v, want ErrRejected naming it", name, err)
		}
	}
	m := &bridge.Message{
		Topic: ok, ID: ok, ContentType: ok, CorrelationData: []byte(ok), ResponseTopic: ok,
		User: []bridge.UserProperty{{Key: ok, Value: long + long}},
	}
	if _, _, err := publishing(m); err != nil {
		t.Errorf("255-byte short strings: %v", err)
	}
}

func TestMessageHeaders(t *testing.T) {
	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	d := amqp091.Delivery{
		RoutingKey: "a.b",
		Headers: amqp091.Table{
			SeqHeader: int32(12),
			"s":       "v",
			"n":       int64(-3),
			"bytes":   []byte("raw"),
			"time":    at,
			"list":    []any{"x", int32(2)},
			"bool":    true,
			"nil":     nil,
		},
	}
	m := message(&d)
	if m.Topic != "a/b" || m.Seq != 12 {
		t.Errorf("topic %q seq %d", m.Topic, m.Seq)
	}
	want := []bridge.UserProperty{
		{Key: "bool", Value: "true"}, {Key: "bytes", Value: "raw"},
		{Key: "list", Value: "x"}, {Key: "list", Value: "2"},
		{Key: "n", Value: "-3"}, {Key: "nil", Value: ""}, {Key: "s", Value: "v"},
		{Key: "time", Value: "2024-05-06T07:08:09Z"},
	}
	if !reflect.DeepEqual(m.User, want) {
		t.Errorf("user properties\n got %v\nwant %v", m.User, want)
	}
	// A sequence header of another type is an ordinary header.
	m = message(&amqp091.Delivery{Headers: amqp091.Table{SeqHeader: "12"}})
	if m.Seq != 12 {
		t.Errorf("string seq: %d", m.Seq)
	}
	m = message(&amqp091.Delivery{Headers: amqp091.Table{SeqHeader: 1.5}})
	if m.Seq != 0 || len(m.User) != 1 || m.User[0].Key != SeqHeader {
		t.Errorf("float seq: %d %v", m.Seq, m.User)
	}
}

func TestReturnMatches(t *testing.T) {
	r := amqp091.Return{RoutingKey: "a.b", MessageId: "id", Headers: amqp091.Table{SeqHeader: int64(5)}}
	if !returnMatches(&r, "a.b", "id", 5) {
		t.Error("same message does not match")
	}
	for _, c := range []struct {
		key, id string
		seq     uint64
	}{{"a.c", "id", 5}, {"a.b", "id2", 5}, {"a.b", "id", 6}} {
		if returnMatches(&r, c.key, c.id, c.seq) {
			t.Errorf("matches %v", c)
		}
	}
	r.Headers = nil
	if returnMatches(&r, "a.b", "id", 0) {
		t.Error("a return without the sequence header matches")
	}
}
