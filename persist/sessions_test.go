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
