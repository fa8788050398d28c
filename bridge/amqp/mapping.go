package amqp

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/bridge"
)

// SeqHeader is the AMQP header that carries bridge.Message.Seq (a long-long
// integer); the message id is the AMQP message-id property.
const SeqHeader = "ferrymq-seq"

// swapSeparators exchanges "/" and "." so that the mapping between MQTT
// topics and AMQP routing keys is its own inverse: MQTT levels become AMQP
// words ("a/b" <-> "a.b") and a dot inside an MQTT level survives the round
// trip as a slash inside an AMQP word ("v1.0/x" <-> "v1/0.x").
func swapSeparators(s string) string {
	if !strings.ContainsAny(s, "/.") {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		switch c {
		case '/':
			b[i] = '.'
		case '.':
			b[i] = '/'
		}
	}
	return string(b)
}

// TopicToKey maps an MQTT topic to an AMQP routing key: "/" -> "." (and
// "." -> "/", so that KeyToTopic gives the topic back).
func TopicToKey(topic string) string { return swapSeparators(topic) }

// KeyToTopic maps an AMQP routing key to an MQTT topic: "." -> "/" (and
// "/" -> ".").
func KeyToTopic(key string) string { return swapSeparators(key) }

// FilterToBindingKey maps an MQTT topic filter to an AMQP topic-exchange
// binding key: levels are separated by "." instead of "/", "+" (one level)
// becomes "*" and "#" (any number of levels) stays "#".
func FilterToBindingKey(filter string) (string, error) {
	if filter == "" {
		return "", errors.New("amqp: empty receive filter")
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		switch {
		case l == "+":
			levels[i] = "*"
		case l == "#":
			if i != len(levels)-1 {
				return "", fmt.Errorf("amqp: receive filter %q: # must be the last level", filter)
			}
		case strings.ContainsAny(l, "+#"):
			return "", fmt.Errorf("amqp: receive filter %q: a wildcard must be a whole level", filter)
		case l == "*":
			// "*" is a wildcard in AMQP but an ordinary level in MQTT.
			return "", fmt.Errorf("amqp: receive filter %q: a level \"*\" cannot be bound on AMQP", filter)
		default:
			levels[i] = strings.ReplaceAll(l, ".", "/")
		}
	}
	key := strings.Join(levels, ".")
	if len(key) > 255 {
		return "", fmt.Errorf("amqp: receive filter %q: binding key longer than 255 bytes", filter)
	}
	return key, nil
}

// expiration is the AMQP expiration property (milliseconds, as a string)
// for an MQTT expiry; a positive expiry never rounds down to "0" (which
// would expire the message at once).
func expiration(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	ms := (d + time.Millisecond - 1) / time.Millisecond
	return strconv.FormatInt(int64(ms), 10)
}

func parseExpiration(s string) time.Duration {
	if s == "" {
		return 0
	}
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms < 0 || ms > int64(1<<63-1)/int64(time.Millisecond) {
		return 0
	}
	return time.Duration(ms) * time.Millisecond
}

// errTooLong reports a message that AMQP cannot carry: its short strings
// (routing key, message-id, reply-to, correlation-id, content-type, header
// names) are limited to 255 bytes. It is a permanent refusal.
func errTooLong(what string, n int) error {
	return fmt.Errorf("%w: %s is %d bytes, AMQP allows 255", bridge.ErrRejected, what, n)
}

// publishing builds the AMQP message for m and its routing key. It fails
// (with an error wrapping bridge.ErrRejected) when m cannot be represented:
// sending it anyway would corrupt the connection's frame stream.
func publishing(m *bridge.Message) (key string, p amqp091.Publishing, err error) {
	key = TopicToKey(m.Topic)
	p = amqp091.Publishing{
		DeliveryMode:  amqp091.Persistent,
		MessageId:     m.ID,
		ContentType:   m.ContentType,
		CorrelationId: string(m.CorrelationData),
		ReplyTo:       TopicToKey(m.ResponseTopic),
		Expiration:    expiration(m.Expiry),
		Body:          m.Payload,
	}
	for _, f := range [...]struct {
		what string
		v    string
	}{
		{"routing key", key}, {"message-id", p.MessageId}, {"content-type", p.ContentType},
		{"correlation-id", p.CorrelationId}, {"reply-to", p.ReplyTo},
	} {
		if len(f.v) > 255 {
			return "", p, errTooLong(f.what, len(f.v))
		}
	}
	p.Headers = make(amqp091.Table, len(m.User)+1)
	for _, u := range m.User {
		if u.Key == SeqHeader {
			continue
		}
		if len(u.Key) > 255 {
			return "", p, errTooLong("header name", len(u.Key))
		}
		// A table holds one value per name: repeated MQTT user
		// properties become an array, in their order.
		switch prev := p.Headers[u.Key].(type) {
		case nil:
			p.Headers[u.Key] = u.Value
		case string:
			p.Headers[u.Key] = []any{prev, u.Value}
		case []any:
			p.Headers[u.Key] = append(prev, u.Value)
		}
	}
	p.Headers[SeqHeader] = int64(m.Seq)
	return key, p, nil
}

// HeaderSeq reads a SeqHeader value in whatever integer type it came (a
// consumer gets the type the publisher chose; ferrymq sends int64).
func HeaderSeq(v any) (uint64, bool) {
	switch n := v.(type) {
	case int64:
		return uint64(n), true
	case int32:
		return uint64(n), true
	case int16:
		return uint64(n), true
	case int8:
		return uint64(n), true
	case int:
		return uint64(n), true
	case uint8:
		return uint64(n), true
	case uint16:
		return uint64(n), true
	case uint32:
		return uint64(n), true
	case uint64:
		return n, true
	case string:
		s, err := strconv.ParseUint(n, 10, 64)
		return s, err == nil
	}
	return 0, false
}

func headerString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// message converts an AMQP delivery to a bridge message: routing key ->
// topic, message-id -> ID, SeqHeader -> Seq, reply-to -> ResponseTopic,
// correlation-id -> CorrelationData, the other headers -> User (sorted by
// name; an array header gives one user property per element).
func message(d *amqp091.Delivery) bridge.Message {
	m := bridge.Message{
		Topic:         KeyToTopic(d.RoutingKey),
		Payload:       d.Body,
		QoS:           1,
		ID:            d.MessageId,
		ResponseTopic: KeyToTopic(d.ReplyTo),
		ContentType:   d.ContentType,
		Expiry:        parseExpiration(d.Expiration),
	}
	if d.CorrelationId != "" {
		m.CorrelationData = []byte(d.CorrelationId)
	}
	if len(d.Headers) == 0 {
		return m
	}
	names := make([]string, 0, len(d.Headers))
	for k, v := range d.Headers {
		if k == SeqHeader {
			if s, ok := HeaderSeq(v); ok {
				m.Seq = s
				continue
			}
		}
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if arr, ok := d.Headers[k].([]any); ok {
			for _, v := range arr {
				m.User = append(m.User, bridge.UserProperty{Key: k, Value: headerString(v)})
			}
			continue
		}
		m.User = append(m.User, bridge.UserProperty{Key: k, Value: headerString(d.Headers[k])})
	}
	return m
}

// returnMatches reports whether r is the basic.return of the publish with
// this routing key, message-id and sequence number.
func returnMatches(r *amqp091.Return, key, id string, seq uint64) bool {
	if r.RoutingKey != key || r.MessageId != id {
		return false
	}
	s, ok := HeaderSeq(r.Headers[SeqHeader])
	return ok && s == seq
}
