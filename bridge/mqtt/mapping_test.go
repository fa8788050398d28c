package mqtt

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/bridge"
)

func TestPublishingMapping(t *testing.T) {
	u := &Upstream{limits: limits{maxQoS: 2, retain: true}}
	pp, err := u.publishing(&bridge.Message{
		Topic: "a/b", QoS: 1, ID: "x", Seq: 42, Expiry: time.Millisecond,
		User: []bridge.UserProperty{{Key: IDProperty, Value: "stale"}, {Key: SeqProperty, Value: "1"}, {Key: "k", Value: "v"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if *pp.Properties.MessageExpiry != 1 {
		t.Fatalf("1 ms expiry became %d s, want 1 (rounded up)", *pp.Properties.MessageExpiry)
	}
	if got := fmt.Sprint(pp.Properties.User); got != "[{ferrymq-id x} {ferrymq-seq 42} {k v}]" {
		t.Fatalf("user properties %s", got)
	}
	// Without ID and Seq, user properties of those names pass through.
	pp, _ = u.publishing(&bridge.Message{Topic: "a", User: []bridge.UserProperty{{Key: IDProperty, Value: "kept"}}})
	if got := fmt.Sprint(pp.Properties.User); got != "[{ferrymq-id kept}]" || pp.Properties.MessageExpiry != nil {
		t.Fatalf("user properties %s, expiry %v", got, pp.Properties.MessageExpiry)
	}
	pp, _ = u.publishing(&bridge.Message{Topic: "a", Expiry: 1 << 62})
	if *pp.Properties.MessageExpiry != 1<<32-1 {
		t.Fatalf("a huge expiry became %d", *pp.Properties.MessageExpiry)
	}
	for _, m := range []*bridge.Message{
		{Topic: ""}, {Topic: "a\x00b"}, {Topic: "a", ContentType: "\xff"},
		{Topic: "a", CorrelationData: make([]byte, 70000)},
	} {
		if _, err := u.publishing(m); !errors.Is(err, bridge.ErrRejected) {
			t.Fatalf("%+v: %v, want ErrRejected", m, err)
		}
	}
}

func TestMessageMapping(t *testing.T) {
	exp := uint32(3)
	m := message(&paho.Publish{Topic: "t", QoS: 2, Retain: true, Payload: []byte("p"), Properties: &paho.PublishProperties{
		MessageExpiry: &exp,
		User: paho.UserProperties{
			{Key: SeqProperty, Value: "not a number"}, {Key: IDProperty, Value: "first"},
			{Key: IDProperty, Value: "second"}, {Key: SeqProperty, Value: "5"},
		},
	}})
	want := bridge.Message{Topic: "t", QoS: 2, Retain: true, Payload: []byte("p"), ID: "first", Seq: 5, Expiry: 3 * time.Second,
		User: []bridge.UserProperty{{Key: SeqProperty, Value: "not a number"}, {Key: IDProperty, Value: "second"}}}
	if fmt.Sprintf("%+v", m) != fmt.Sprintf("%+v", want) {
		t.Fatalf("got  %+v\nwant %+v", m, want)
	}
	if m := message(&paho.Publish{Topic: "t"}); m.Topic != "t" {
		t.Fatalf("without properties: %+v", m)
	}
}
