package packet

import (
	"strings"
	"testing"
)

// fullProps sets every property of mask to a distinctive non-default value
// and marks it, as Decode would return it.
func fullProps(mask uint64) Properties {
	var p Properties
	for id := PropID(1); id < 64; id++ {
		if mask&bit(id) == 0 {
			continue
		}
		switch propKinds[id] {
		case kindByte:
			p.SetByte(id, 1)
		case kindUint16:
			p.SetUint16(id, uint16(id)*100+1)
		case kindUint32:
			p.SetUint32(id, uint32(id)*100000+1)
		case kindVarint:
			p.SubscriptionIDs = []uint32{1, 300, MaxSubscriptionID}
			p.Mark(id)
		case kindString:
			p.setStr(id, "s-"+id.String()+"-ü€")
		case kindBinary:
			b := []byte{byte(id), 0, 0xff}
			if id == PropCorrelationData {
				p.CorrelationData = b
			} else {
				p.AuthData = b
			}
			p.Mark(id)
		case kindPair:
			p.User = []UserProperty{{"a", "1"}, {"a", "2"}, {"", ""}, {"ключ", "值"}}
			p.Mark(id)
		}
	}
	return p
}

// Every property is allowed on some packet, and fullProps knows them all.
func TestMasksCoverEveryProperty(t *testing.T) {
	all := uint64(maskConnect | maskWill | maskConnack | maskPublish | maskAck | maskSubscribe |
		maskUnsubscribe | maskDisconnect | maskAuth)
	for id := PropID(0); id < 64; id++ {
		known := propKinds[id] != kindUnknown
		if known != (all&bit(id) != 0) {
			t.Errorf("%v: known %v, in some mask %v", id, known, all&bit(id) != 0)
		}
	}
	if n := len(fullProps(all).User); n == 0 {
		t.Fatal("fullProps")
	}
}

type roundTrip struct {
	name string
	v5   Packet // encoded in 5.0, must decode to itself
	v3   Packet // the same packet encoded in 3.1.1 must decode to this; nil: Encode fails
}

func roundTrips() []roundTrip {
	subProps := fullProps(maskSubscribe)
	subProps.SubscriptionIDs = []uint32{MaxSubscriptionID}
	opts := []SubOption{{Filter: "a/+", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
		{Filter: "#", QoS: 2, RetainHandling: 1}, {Filter: "$share/g/x", QoS: 0}}
	v3opts := []SubOption{{Filter: "a/+", QoS: 1}, {Filter: "#", QoS: 2}, {Filter: "$share/g/x"}}
	rts := []roundTrip{
		{"CONNECT", &Connect{ProtocolName: "MQTT", Version: V5, CleanStart: true, KeepAlive: 65535,
			Props: fullProps(maskConnect), ClientID: "client-ü", WillFlag: true, WillQoS: 2, WillRetain: true,
			WillProps: fullProps(maskWill), WillTopic: "will/t", WillPayload: []byte{0, 1, 2},
			UsernameFlag: true, Username: "u", PasswordFlag: true, Password: []byte{0xff}},
			nil}, // the 3.x variant is in TestRoundTripConnectV3
		{"CONNACK", &Connack{SessionPresent: true, ReasonCode: NotAuthorized, Props: fullProps(maskConnack)},
			&Connack{SessionPresent: true, ReasonCode: NotAuthorized}},
		{"PUBLISH QoS 0", &Publish{Retain: true, Topic: "a/b", Props: fullProps(maskPublish), Payload: []byte("x")},
			&Publish{Retain: true, Topic: "a/b", Payload: []byte("x")}},
		{"PUBLISH QoS 1", &Publish{Dup: true, QoS: 1, Topic: "a/b", PacketID: 1, Props: fullProps(maskPublish)},
			&Publish{Dup: true, QoS: 1, Topic: "a/b", PacketID: 1}},
		{"PUBLISH QoS 2", &Publish{QoS: 2, Topic: "€", PacketID: 65535, Payload: make([]byte, 70000)},
			&Publish{QoS: 2, Topic: "€", PacketID: 65535, Payload: make([]byte, 70000)}},
		{"SUBSCRIBE", &Subscribe{PacketID: 2, Props: subProps, Subs: opts}, &Subscribe{PacketID: 2, Subs: v3opts}},
		{"SUBACK", &Suback{PacketID: 3, Props: fullProps(maskAck), ReasonCodes: []ReasonCode{0, 1, 2, 0x80, 0x97, 0xA2}},
			&Suback{PacketID: 3, ReasonCodes: []ReasonCode{0, 1, 2, 0x80, 0x80, 0x80}}},
		{"UNSUBSCRIBE", &Unsubscribe{PacketID: 4, Props: fullProps(maskUnsubscribe), Filters: []string{"a", "b/#"}},
			&Unsubscribe{PacketID: 4, Filters: []string{"a", "b/#"}}},
		{"UNSUBACK", &Unsuback{PacketID: 5, Props: fullProps(maskAck), ReasonCodes: []ReasonCode{0, 0x11, 0x87}},
			&Unsuback{PacketID: 5}},
		{"PINGREQ", &Pingreq{}, &Pingreq{}},
		{"PINGRESP", &Pingresp{}, &Pingresp{}},
		{"DISCONNECT", &Disconnect{ReasonCode: ServerMoved, Props: fullProps(maskDisconnect)}, &Disconnect{}},
		{"DISCONNECT code only", &Disconnect{ReasonCode: DisconnectWithWill}, &Disconnect{}},
		{"AUTH", &Auth{ReasonCode: ContinueAuthentication, Props: fullProps(maskAuth)}, nil},
		{"AUTH success", &Auth{}, nil},
	}
	codes := map[Type]ReasonCode{PUBACK: QuotaExceeded, PUBREC: NoMatchingSubscribers, PUBREL: PacketIDNotFound,
		PUBCOMP: PacketIDNotFound}
	for k := PUBACK; k <= PUBCOMP; k++ {
		rts = append(rts,
			roundTrip{k.String(), &Ack{Kind: k, PacketID: 9, ReasonCode: codes[k], Props: fullProps(maskAck)},
				&Ack{Kind: k, PacketID: 9}},
			roundTrip{k.String() + " code only", &Ack{Kind: k, PacketID: 9, ReasonCode: codes[k]}, &Ack{Kind: k, PacketID: 9}},
			roundTrip{k.String() + " short", &Ack{Kind: k, PacketID: 9}, &Ack{Kind: k, PacketID: 9}})
	}
	return rts
}

// decode(encode(p)) == p for every packet type with every property it can
// carry in 5.0, and with everything 5.0-only removed in 3.1.1.
func TestRoundTrip(t *testing.T) {
	for _, rt := range roundTrips() {
		t.Run(rt.name, func(t *testing.T) {
			enc, err := Encode(nil, rt.v5, V5)
			if err != nil {
				t.Fatalf("encode 5.0: %v", err)
			}
			got, err := decodeBytes(enc, V5)
			if err != nil {
				t.Fatalf("decode 5.0: %v", err)
			}
			if !packetsEqual(got, rt.v5) {
				t.Fatalf("5.0:\n got %#v\nwant %#v", got, rt.v5)
			}
			if _, ok := rt.v5.(*Connect); ok {
				return
			}
			enc, err = Encode(nil, rt.v5, V311)
			if rt.v3 == nil {
				if err == nil {
					t.Fatalf("3.1.1 encode succeeded: % x", enc)
				}
				return
			}
			if err != nil {
				t.Fatalf("encode 3.1.1: %v", err)
			}
			got, err = decodeBytes(enc, V311)
			if err != nil {
				t.Fatalf("decode 3.1.1: %v", err)
			}
			if !packetsEqual(got, rt.v3) {
				t.Fatalf("3.1.1:\n got %#v\nwant %#v", got, rt.v3)
			}
		})
	}
}

// CONNECT is written in its own Version; 3.x leaves out all properties.
func TestRoundTripConnectV3(t *testing.T) {
	for _, ver := range []Version{V311, V31} {
		c := &Connect{Version: ver, KeepAlive: 5, Props: fullProps(maskConnect), ClientID: "c",
			WillFlag: true, WillQoS: 1, WillProps: fullProps(maskWill), WillTopic: "w", WillPayload: []byte("p"),
			Username: "u", Password: []byte("pw")}
		enc, err := Encode(nil, c, V5) // the v argument does not matter
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeBytes(enc, V5)
		if err != nil {
			t.Fatal(err)
		}
		name := map[Version]string{V311: "MQTT", V31: "MQIsdp"}[ver]
		want := &Connect{ProtocolName: name, Version: ver, KeepAlive: 5, ClientID: "c", WillFlag: true, WillQoS: 1,
			WillTopic: "w", WillPayload: []byte("p"), UsernameFlag: true, Username: "u", PasswordFlag: true,
			Password: []byte("pw")}
		if !packetsEqual(got, want) {
			t.Errorf("v%d:\n got %#v\nwant %#v", ver, got, want)
		}
	}
}

// 3.1.1 CONNACK return codes come from ReasonCode.V3Connack; decoding maps
// them back to the v5 code with that return code.
func TestConnackV3Mapping(t *testing.T) {
	for _, tc := range []struct {
		in   ReasonCode
		wire byte
		back ReasonCode
	}{{Success, 0, Success}, {UnsupportedProtocolVersion, 1, UnsupportedProtocolVersion},
		{ClientIDNotValid, 2, ClientIDNotValid}, {ServerBusy, 3, ServerUnavailable},
		{BadUsernameOrPassword, 4, BadUsernameOrPassword}, {Banned, 5, NotAuthorized}} {
		enc, err := Encode(nil, &Connack{ReasonCode: tc.in}, V311)
		if err != nil || len(enc) != 4 || enc[3] != tc.wire {
			t.Errorf("%v: % x %v, want return code %d", tc.in, enc, err, tc.wire)
			continue
		}
		got, err := decodeBytes(enc, V311)
		if err != nil || got.(*Connack).ReasonCode != tc.back {
			t.Errorf("%v: decoded %#v %v, want %v", tc.in, got, err, tc.back)
		}
	}
}

func TestEncodeShortForms(t *testing.T) {
	for _, tc := range []struct {
		p   Packet
		v   Version
		hex string
	}{
		{&Ack{Kind: PUBACK, PacketID: 1}, V5, "40 02 0001"}, // [MQTT-3.4.2.1]
		{&Ack{Kind: PUBREL, PacketID: 1, ReasonCode: PacketIDNotFound}, V5, "62 03 0001 92"},
		{&Ack{Kind: PUBREC, PacketID: 1, ReasonCode: QuotaExceeded}, V311, "50 02 0001"},
		{&Disconnect{}, V5, "e0 00"},
		{&Disconnect{ReasonCode: DisconnectWithWill}, V5, "e0 01 04"},
		{&Disconnect{ReasonCode: ServerShuttingDown}, V311, "e0 00"},
		{&Auth{}, V5, "f0 00"},
		{&Auth{ReasonCode: ContinueAuthentication}, V5, "f0 02 18 00"},
		{&Connack{}, V5, "20 03 00 00 00"},
		{&Unsuback{PacketID: 2, ReasonCodes: []ReasonCode{0x11}}, V311, "b0 02 0002"},
		{&Suback{PacketID: 2, ReasonCodes: []ReasonCode{GrantedQoS1, TopicFilterInvalid}}, V311, "90 04 0002 01 80"},
		{&Publish{Topic: "t"}, V5, "30 04 0001 74 00"},
		{&Pingreq{}, V5, "c0 00"},
		{&Pingresp{}, V311, "d0 00"},
	} {
		got, err := Encode(nil, tc.p, tc.v)
		if want := unhex(t, tc.hex); err != nil || string(got) != string(want) {
			t.Errorf("%T v%d: % x %v, want % x", tc.p, tc.v, got, err, want)
		}
	}
}

// Encode writes only the properties the packet may carry, and string or
// binary properties that are set even without their Present bit.
func TestEncodePropertySelection(t *testing.T) {
	will := fullProps(maskWill) // has Will Delay Interval, not allowed on PUBLISH
	will.ReasonString = "dropped"
	will.SessionExpiry = 9
	will.Mark(PropSessionExpiry)
	p := &Publish{Topic: "t", Props: will}
	enc, err := Encode(nil, p, V5)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeBytes(enc, V5)
	if err != nil {
		t.Fatal(err)
	}
	gp := got.(*Publish).Props
	if gp.Has(PropWillDelay) || gp.Has(PropSessionExpiry) || gp.ReasonString != "" {
		t.Errorf("disallowed properties written: %#v", gp)
	}
	if gp.MessageExpiry != will.MessageExpiry || gp.ContentType != will.ContentType || len(gp.User) != len(will.User) {
		t.Errorf("allowed properties lost: %#v", gp)
	}
	// Present bit not set: strings and bytes are written when non-empty,
	// numbers are not.
	p = &Publish{Topic: "t", Props: Properties{ResponseTopic: "r", CorrelationData: []byte("c"), MessageExpiry: 5}}
	enc, _ = Encode(nil, p, V5)
	got, _ = decodeBytes(enc, V5)
	gp = got.(*Publish).Props
	if gp.Present != mark(PropResponseTopic, PropCorrelationData) || gp.ResponseTopic != "r" {
		t.Errorf("got %#v", gp)
	}
}

func TestEncodeErrors(t *testing.T) {
	long := strings.Repeat("x", 65536)
	for _, tc := range []struct {
		name  string
		p     Packet
		v     Version
		field string
	}{
		{"publish QoS 3", &Publish{QoS: 3, Topic: "t", PacketID: 1}, V5, "QoS"},
		{"publish packet id 0", &Publish{QoS: 1, Topic: "t"}, V311, "packet identifier"},
		{"topic too long", &Publish{Topic: long}, V311, "topic name"},
		{"user property too long", &Publish{Topic: "t", Props: Properties{User: []UserProperty{{long, ""}}}}, V5, "user property"},
		{"content type too long", &Publish{Topic: "t", Props: Properties{ContentType: long}}, V5, "content type"},
		{"correlation data too long", &Publish{Topic: "t", Props: Properties{CorrelationData: []byte(long)}}, V5, "correlation data"},
		{"subscription id 0", &Publish{Topic: "t", Props: Properties{SubscriptionIDs: []uint32{0}}}, V5, "subscription identifier"},
		{"subscription id too big", &Publish{Topic: "t", Props: Properties{SubscriptionIDs: []uint32{MaxSubscriptionID + 1}}}, V5, "subscription identifier"},
		{"ack kind", &Ack{Kind: PUBLISH, PacketID: 1}, V5, "kind"},
		{"ack packet id 0", &Ack{Kind: PUBACK}, V5, "packet identifier"},
		{"will QoS 3", &Connect{Version: V5, WillFlag: true, WillQoS: 3}, V5, "will QoS"},
		{"3.1.1 password without user", &Connect{Version: V311, Password: []byte("p")}, V311, "password"},
		{"client id too long", &Connect{Version: V311, ClientID: long}, V311, "client identifier"},
		{"subscribe empty", &Subscribe{PacketID: 1}, V5, "payload"},
		{"subscribe QoS 3", &Subscribe{PacketID: 1, Subs: []SubOption{{Filter: "a", QoS: 3}}}, V5, "subscription options"},
		{"subscribe retain handling 3", &Subscribe{PacketID: 1, Subs: []SubOption{{Filter: "a", RetainHandling: 3}}}, V5, "subscription options"},
		{"subscribe two ids", &Subscribe{PacketID: 1, Props: Properties{SubscriptionIDs: []uint32{1, 2}},
			Subs: []SubOption{{Filter: "a"}}}, V5, "subscription identifier"},
		{"subscribe id 0", &Subscribe{Subs: []SubOption{{Filter: "a"}}}, V5, "packet identifier"},
		{"unsubscribe empty", &Unsubscribe{PacketID: 1}, V311, "payload"},
		{"suback empty", &Suback{PacketID: 1}, V311, "reason codes"},
		{"suback 3.1.1 code 0x10", &Suback{PacketID: 1, ReasonCodes: []ReasonCode{0x10}}, V311, "reason codes"},
		{"unsuback 5.0 empty", &Unsuback{PacketID: 1}, V5, "reason codes"},
		{"auth in 3.1.1", &Auth{}, V311, ""},
		{"nil publish", (*Publish)(nil), V5, ""},
		{"nil packet", nil, V5, ""},
	} {
		dst := []byte("prefix")
		out, err := Encode(dst, tc.p, tc.v)
		if err == nil {
			t.Errorf("%s: no error, wrote % x", tc.name, out)
			continue
		}
		if string(out) != "prefix" {
			t.Errorf("%s: dst changed to %q", tc.name, out)
		}
		var pe *Error
		if tc.field != "" {
			checkErr(t, err, MalformedPacket, tc.field)
		} else if !asError(err, &pe) {
			t.Errorf("%s: %T is not *Error", tc.name, err)
		}
		if EncodedLen(tc.p, tc.v) != -1 {
			t.Errorf("%s: EncodedLen != -1", tc.name)
		}
	}
	s := sizer{n: MaxRemainingLength + 1}
	if err := s.done(&plan{}); err == nil {
		t.Error("remaining length over 268435455 accepted")
	}
}

func asError(err error, pe **Error) bool {
	e, ok := err.(*Error)
	*pe = e
	return ok
}

func TestEncodeAppends(t *testing.T) {
	dst := []byte{0xAA}
	out, err := Encode(dst, &Pingreq{}, V5)
	if err != nil || string(out) != "\xaa\xc0\x00" {
		t.Fatalf("% x %v", out, err)
	}
}

func TestEncodeNoAllocs(t *testing.T) {
	pkts := []Packet{
		&Publish{QoS: 1, Topic: "sensors/1/temp", PacketID: 7, Payload: make([]byte, 64)},
		&Publish{Topic: "t", Props: fullProps(maskPublish), Payload: make([]byte, 64)},
		&Ack{Kind: PUBACK, PacketID: 1},
		&Ack{Kind: PUBREC, PacketID: 1, ReasonCode: QuotaExceeded, Props: fullProps(maskAck)},
		&Suback{PacketID: 1, ReasonCodes: []ReasonCode{0, 1}},
		&Connack{Props: fullProps(maskConnack)},
		&Disconnect{ReasonCode: ServerShuttingDown},
		&Pingresp{},
	}
	buf := make([]byte, 0, 4096)
	for _, p := range pkts {
		for _, v := range []Version{V311, V5} {
			if n := testing.AllocsPerRun(100, func() { _, _ = Encode(buf[:0], p, v) }); n != 0 {
				t.Errorf("%T v%d: %v allocs", p, v, n)
			}
		}
	}
}

// Decoding a 3.1.1 PUBLISH costs the Publish and its topic string, nothing else.
func TestDecodePublishAllocs(t *testing.T) {
	raw, _ := Encode(nil, &Publish{QoS: 1, PacketID: 1, Topic: "a/b", Payload: make([]byte, 64)}, V311)
	h, _ := ParseFixedHeader(raw, 0)
	if n := testing.AllocsPerRun(100, func() { _, _ = Decode(h, raw[h.HeaderLen:], V311) }); n > 2 {
		t.Errorf("%v allocs, want <= 2", n)
	}
}
