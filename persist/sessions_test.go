package persist

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/session"
	"github.com/tinylib/msgp/msgp"
)

// fullMessage has every stored field set, with the presence bits the
// broker's publicationProps produces.
func fullMessage(topic string) *session.Message {
	m := &session.Message{
		Topic:   topic,
		Payload: []byte("payload of " + topic),
		QoS:     2,
		Retain:  true,
		Expiry:  time.Unix(1900000000, 123456789),
		Origin:  "origin/client",
	}
	m.Props.SetByte(packet.PropPayloadFormat, 1)
	m.Props.ContentType = "text/plain"
	m.Props.ResponseTopic = "resp/" + topic
	m.Props.CorrelationData = []byte{0, 1, 2}
	m.Props.Mark(packet.PropCorrelationData)
	m.Props.User = []packet.UserProperty{{Key: "a", Value: "1"}, {Key: "a", Value: "2"}, {Key: "", Value: ""}}
	return m
}

// sameMessage reports how a and b differ ("" when they do not).
func sameMessage(a, b *session.Message) string {
	switch {
	case (a == nil) != (b == nil):
		return "one is nil"
	case a == nil:
		return ""
	case a.Topic != b.Topic || !bytes.Equal(a.Payload, b.Payload) || a.QoS != b.QoS || a.Retain != b.Retain:
		return "topic, payload, QoS or retain"
	case !a.Expiry.Equal(b.Expiry):
		return "expiry " + a.Expiry.String() + " vs " + b.Expiry.String()
	case a.Origin != b.Origin:
		return "origin"
	case !reflect.DeepEqual(a.Props, b.Props):
		return fmt.Sprintf("props %+v vs %+v", a.Props, b.Props)
	}
	return ""
}

func TestMessageRecordRoundTrip(t *testing.T) {
	zeroFormat := &session.Message{Topic: "z"}
	zeroFormat.Props.SetByte(packet.PropPayloadFormat, 0)
	zeroFormat.Props.Mark(packet.PropCorrelationData) // present, empty
	for _, d := range []session.Delivery{
		{Msg: fullMessage("a/b"), QoS: 1, Retain: true, SubIDs: []uint32{7, 268435455}},
		{Msg: &session.Message{Topic: "t"}},
		{Msg: zeroFormat, QoS: 2},
	} {
		var r MessageRecord
		r.setDelivery(&d)
		b, err := r.MarshalMsg(nil)
		if err != nil {
			t.Fatal(err)
		}
		var back MessageRecord
		if err := unmarshal(&back, b); err != nil {
			t.Fatal(err)
		}
		got := back.delivery()
		if diff := sameMessage(got.Msg, d.Msg); diff != "" {
			t.Errorf("message %q: %s", d.Msg.Topic, diff)
		}
		if got.QoS != d.QoS || got.Retain != d.Retain || !reflect.DeepEqual(got.SubIDs, d.SubIDs) {
			t.Errorf("delivery parts %+v, want %+v", got, d)
		}
	}
}

// TestRecordsSkipUnknownFields checks that a field added by a newer
// ferrymq is ignored, not an error.
func TestRecordsSkipUnknownFields(t *testing.T) {
	b := msgp.AppendMapHeader(nil, 3)
	b = msgp.AppendString(b, "v")
	b = msgp.AppendUint8(b, 5)
	b = msgp.AppendString(b, "future")
	b = msgp.AppendArrayHeader(b, 2)
	b = msgp.AppendString(b, "x")
	b = msgp.AppendMapHeader(b, 0)
	b = msgp.AppendString(b, "e")
	b = msgp.AppendUint32(b, 60)
	var r SessionRecord
	if err := unmarshal(&r, b); err != nil {
		t.Fatal(err)
	}
	if r != (SessionRecord{Version: 5, Expiry: 60}) {
		t.Errorf("decoded %+v", r)
	}
	if err := unmarshal(&r, append(b, 0xc0)); err == nil {
		t.Error("trailing bytes accepted")
	}
}

func TestKeys(t *testing.T) {
	for _, name := range []string{"", "a", "a/b", "%", "%2F", "/", "a%25/%2f//", "ünï/cödé"} {
		esc := escapeName(name)
		if bytes.IndexByte([]byte(esc), '/') >= 0 {
			t.Errorf("escapeName(%q) = %q holds a /", name, esc)
		}
		back, err := unescapeName(esc)
		if err != nil || back != name {
			t.Errorf("unescapeName(escapeName(%q)) = %q, %v", name, back, err)
		}
	}
	for _, bad := range []string{"%", "%2", "%2f", "%41", "a/b"} {
		if _, err := unescapeName(bad); err == nil {
			t.Errorf("unescapeName(%q) accepted", bad)
		}
	}
	// Client "a" must not see the keys of client "a/b".
	qa := string(appendNamePrefix(nil, prefixQueue, "a"))
	if k := string(appendQueueKey(nil, "a/b", 1)); len(k) >= len(qa) && k[:len(qa)] == qa {
		t.Errorf("%q is a prefix of %q", qa, k)
	}
	for _, tc := range []struct {
		key    []byte
		prefix string
		name   string
		rest   string
	}{
		{appendQueueKey(nil, "c/1", 0x2F2F), prefixQueue, "c/1", "\x00\x00\x00\x00\x00\x00//"},
		{appendInflKey(nil, "%", 0x2F00), prefixInfl, "%", "/\x00"},
		{appendQoS2InKey(nil, "x", 7), prefixQoS2In, "x", "\x00\x07"},
		{appendSubKey(nil, "s", "$share/g/a/+/#"), prefixSub, "s", "$share/g/a/+/#"},
		{appendOutKey(nil, "up/1", 9), prefixOut, "up/1", "\x00\x00\x00\x00\x00\x00\x00\x09"},
	} {
		esc, rest, ok := splitName(tc.key, tc.prefix)
		name, err := unescapeName(esc)
		if !ok || err != nil || name != tc.name || string(rest) != tc.rest {
			t.Errorf("splitName(%q) = %q %q %v %v", tc.key, esc, rest, ok, err)
		}
	}
	if seq, ok := parseSeq(appendQueueKey(nil, "c", 1<<40)[len("v1/q/c/"):]); !ok || seq != 1<<40 {
		t.Errorf("parseSeq = %d, %v", seq, ok)
	}
	if _, ok := parseSeq([]byte{1, 2}); ok {
		t.Error("parseSeq accepted 2 bytes")
	}
	if pid, ok := parsePID([]byte{1, 2}); !ok || pid != 0x102 {
		t.Errorf("parsePID = %d, %v", pid, ok)
	}
	if _, _, ok := splitName([]byte("v1/sess/a"), prefixQueue); ok {
		t.Error("splitName accepted another prefix")
	}
	if k := string(appendSessKey(nil, "a/b")); k != "v1/sess/a%2Fb" {
		t.Errorf("session key %q", k)
	}
	if k := string(appendRetKey(nil, "a/b")); k != "v1/ret/a/b" {
		t.Errorf("retained key %q", k)
	}
	if e := string(prefixEnd([]byte("v1/q/a/"))); e != "v1/q/a0" {
		t.Errorf("prefixEnd = %q", e)
	}
	if e := prefixEnd([]byte{'a', 0xFF}); string(e) != "b" {
		t.Errorf("prefixEnd = %q", e)
	}
}
