package packet

import (
	"bytes"
	"testing"
)

// fixture is one raw packet and what decoding it must give.
type fixture struct {
	name     string
	v        Version
	hex      string
	want     Packet // nil: an error is expected
	code     ReasonCode
	field    string
	noncanon bool // valid, but Encode writes another (shorter) form
}

func mark(ids ...PropID) uint64 {
	var m uint64
	for _, id := range ids {
		m |= 1 << id
	}
	return m
}

var (
	hexConnectPropsV5 = props("11 00000e10", "21 0014", "27 00100000", "22 000a", "19 01", "17 00",
		"26"+s("a")+s("1"), "26"+s("a")+s("2"), "15"+s("SCRAM"), "16"+s("\x01\x02"))
	wantConnectPropsV5 = Properties{
		Present: mark(PropSessionExpiry, PropReceiveMaximum, PropMaximumPacketSize, PropTopicAliasMaximum,
			PropRequestResponseInfo, PropRequestProblemInfo, PropUserProperty, PropAuthMethod, PropAuthData),
		SessionExpiry: 3600, ReceiveMaximum: 20, MaximumPacketSize: 1 << 20, TopicAliasMaximum: 10,
		RequestResponseInfo: 1, RequestProblemInfo: 0,
		User:       []UserProperty{{"a", "1"}, {"a", "2"}},
		AuthMethod: "SCRAM", AuthData: []byte{1, 2},
	}
	hexWillPropsV5 = props("18 0000001e", "01 01", "02 0000003c", "03"+s("text/plain"), "08"+s("resp/t"),
		"09"+s("cd"), "26"+s("wk")+s("wv"))
	wantWillPropsV5 = Properties{
		Present: mark(PropWillDelay, PropPayloadFormat, PropMessageExpiry, PropContentType,
			PropResponseTopic, PropCorrelationData, PropUserProperty),
		WillDelay: 30, PayloadFormat: 1, MessageExpiry: 60, ContentType: "text/plain",
		ResponseTopic: "resp/t", CorrelationData: []byte("cd"), User: []UserProperty{{"wk", "wv"}},
	}
	hexConnackPropsV5 = props("11 00000000", "12"+s("auto-1"), "13 001e", "15"+s("SCRAM"), "16"+s("xy"),
		"1a"+s("ri"), "1c"+s("other:1883"), "1f"+s("ok"), "21 0064", "22 0005", "24 01", "25 00",
		"26"+s("k")+s("v"), "27 00010000", "28 01", "29 00", "2a 01")
	wantConnackPropsV5 = Properties{
		Present: mark(PropSessionExpiry, PropAssignedClientID, PropServerKeepAlive, PropAuthMethod,
			PropAuthData, PropResponseInfo, PropServerReference, PropReasonString, PropReceiveMaximum,
			PropTopicAliasMaximum, PropMaximumQoS, PropRetainAvailable, PropUserProperty,
			PropMaximumPacketSize, PropWildcardSubAvailable, PropSubIDAvailable, PropSharedSubAvailable),
		AssignedClientID: "auto-1", ServerKeepAlive: 30, AuthMethod: "SCRAM", AuthData: []byte("xy"),
		ResponseInfo: "ri", ServerReference: "other:1883", ReasonString: "ok", ReceiveMaximum: 100,
		TopicAliasMaximum: 5, MaximumQoS: 1, User: []UserProperty{{"k", "v"}},
		MaximumPacketSize: 65536, WildcardSubAvailable: 1, SharedSubAvailable: 1,
	}
	hexPublishPropsV5 = props("01 01", "02 00000078", "03"+s("json"), "08"+s("r/t"), "09"+s("id-1"),
		"0b 05", "0b 8001", "23 0007", "26"+s("k")+s("v"))
	wantPublishPropsV5 = Properties{
		Present: mark(PropPayloadFormat, PropMessageExpiry, PropContentType, PropResponseTopic,
			PropCorrelationData, PropSubscriptionID, PropTopicAlias, PropUserProperty),
		PayloadFormat: 1, MessageExpiry: 120, ContentType: "json", ResponseTopic: "r/t",
		CorrelationData: []byte("id-1"), SubscriptionIDs: []uint32{5, 128}, TopicAlias: 7,
		User: []UserProperty{{"k", "v"}},
	}
	hexAckPropsV5  = props("1f"+s("why"), "26"+s("k")+s("v"))
	wantAckPropsV5 = Properties{Present: mark(PropReasonString, PropUserProperty),
		ReasonString: "why", User: []UserProperty{{"k", "v"}}}
)

// The 3.1.1 (Figure 3.6) and 5.0 CONNECT variable header examples: name
// "MQTT", level, flags 0xCE (user name, password, will QoS 1, will, clean),
// keep alive 10; the 5.0 one with Session Expiry Interval 10.
const (
	specConnectVH311 = "0004 4d515454 04 ce 000a"
	specConnectVH5   = "0004 4d515454 05 ce 000a 05 11 0000000a"
)

var connectFixtures = []fixture{
	{name: "3.1.1 spec example", v: V311,
		hex: pk("10", specConnectVH311, s("fmq"), s("w/t"), s("bye"), s("user"), s("pw")),
		want: &Connect{ProtocolName: "MQTT", Version: V311, CleanStart: true, KeepAlive: 10, ClientID: "fmq",
			WillFlag: true, WillQoS: 1, WillTopic: "w/t", WillPayload: []byte("bye"),
			UsernameFlag: true, Username: "user", PasswordFlag: true, Password: []byte("pw")}},
	{name: "5.0 spec example", v: V311, // CONNECT ignores the version argument
		hex: pk("10", specConnectVH5, s("fmq"), "00", s("w/t"), s("bye"), s("user"), s("pw")),
		want: &Connect{ProtocolName: "MQTT", Version: V5, CleanStart: true, KeepAlive: 10,
			Props:    Properties{Present: mark(PropSessionExpiry), SessionExpiry: 10},
			ClientID: "fmq", WillFlag: true, WillQoS: 1, WillTopic: "w/t", WillPayload: []byte("bye"),
			UsernameFlag: true, Username: "user", PasswordFlag: true, Password: []byte("pw")}},
	{name: "3.1.1 minimal empty client id", v: V311, hex: "10 0c 0004 4d515454 04 02 003c 0000",
		want: &Connect{ProtocolName: "MQTT", Version: V311, CleanStart: true, KeepAlive: 60}},
	{name: "3.1 MQIsdp level 3", v: V311, hex: pk("10", s("MQIsdp"), "03 00 0000", s("old")),
		want: &Connect{ProtocolName: "MQIsdp", Version: V31, ClientID: "old"}},
	{name: "5.0 all connect and will properties, any order", v: V5, noncanon: true,
		hex: pk("10", s("MQTT"), "05 2e 001e", hexConnectPropsV5, s("c"), hexWillPropsV5, s("w"), s("")),
		want: &Connect{ProtocolName: "MQTT", Version: V5, CleanStart: true, KeepAlive: 30,
			Props: wantConnectPropsV5, ClientID: "c", WillFlag: true, WillQoS: 1, WillRetain: true,
			WillProps: wantWillPropsV5, WillTopic: "w"}},
	{name: "5.0 will QoS 2, empty password, password without user name allowed", v: V5,
		hex: pk("10", s("MQTT"), "05 54 0000 00", s("c"), "00", s("w"), s("p"), s("")),
		want: &Connect{ProtocolName: "MQTT", Version: V5, ClientID: "c", WillFlag: true, WillQoS: 2,
			WillTopic: "w", WillPayload: []byte("p"), PasswordFlag: true}},
	// [MQTT-3.1.2-1] [MQTT-3.1.2-2]
	{name: "MQTT level 3 unsupported [MQTT-3.1.2-2]", v: V311, hex: pk("10", s("MQTT"), "03 02 003c", s("c")),
		code: UnsupportedProtocolVersion, field: "protocol level"},
	{name: "MQTT level 6 unsupported [MQTT-3.1.2-2]", v: V5, hex: pk("10", s("MQTT"), "06 02 003c", s("c")),
		code: UnsupportedProtocolVersion, field: "protocol level"},
	{name: "MQIsdp level 4 unsupported", v: V311, hex: pk("10", s("MQIsdp"), "04 02 003c", s("c")),
		code: UnsupportedProtocolVersion, field: "protocol level"},
	{name: "unknown protocol name [MQTT-3.1.2-1]", v: V311, hex: pk("10", s("HTTP"), "04 02 003c", s("c")),
		code: UnsupportedProtocolVersion, field: "protocol name"},
	{name: "reserved flag bit 0 [MQTT-3.1.2-3]", v: V311, hex: pk("10", s("MQTT"), "04 03 003c", s("c")),
		code: MalformedPacket, field: "connect flags"},
	{name: "will QoS without will flag [MQTT-3.1.2-11] [MQTT-3.1.2-13]", v: V311,
		hex: pk("10", s("MQTT"), "04 0a 003c", s("c")), code: MalformedPacket, field: "connect flags"},
	{name: "will retain without will flag [MQTT-3.1.2-13] [MQTT-3.1.2-15]", v: V5,
		hex: pk("10", s("MQTT"), "05 22 003c 00", s("c")), code: MalformedPacket, field: "connect flags"},
	{name: "will QoS 3 [MQTT-3.1.2-14]", v: V311, hex: pk("10", s("MQTT"), "04 1e 003c", s("c"), s("w"), s("m")),
		code: MalformedPacket, field: "connect flags"},
	{name: "3.1.1 password without user name [MQTT-3.1.2-22]", v: V311,
		hex: pk("10", s("MQTT"), "04 42 003c", s("c"), s("p")), code: MalformedPacket, field: "connect flags"},
	{name: "client id invalid UTF-8 [MQTT-1.5.4-1]", v: V311, hex: pk("10", s("MQTT"), "04 02 003c", "0002 c328"),
		code: MalformedPacket, field: "client identifier"},
	{name: "client id surrogate [MQTT-1.5.4-1]", v: V311, hex: pk("10", s("MQTT"), "04 02 003c", "0003 eda080"),
		code: MalformedPacket, field: "client identifier"},
	{name: "client id U+0000 [MQTT-1.5.4-2]", v: V311, hex: pk("10", s("MQTT"), "04 02 003c", "0003 610062"),
		code: MalformedPacket, field: "client identifier"},
	{name: "client id length beyond body", v: V311, hex: pk("10", s("MQTT"), "04 02 003c", "0005 6162"),
		code: MalformedPacket, field: "client identifier"},
	{name: "missing keep alive", v: V311, hex: pk("10", s("MQTT"), "04 02 00"),
		code: MalformedPacket, field: "keep alive"},
	{name: "missing will topic", v: V311, hex: pk("10", s("MQTT"), "04 06 003c", s("c")),
		code: MalformedPacket, field: "will topic"},
	{name: "truncated password", v: V311, hex: pk("10", s("MQTT"), "04 c2 003c", s("c"), s("u"), "0004 70"),
		code: MalformedPacket, field: "password"},
	{name: "bytes after the packet", v: V311, hex: pk("10", s("MQTT"), "04 02 003c", s("c"), "00"),
		code: MalformedPacket, field: "remaining length"},
	{name: "fixed header flags not 0 [MQTT-2.1.3-1]", v: V311, hex: "11 0c 0004 4d515454 04 02 003c 0000",
		code: MalformedPacket, field: "fixed header flags"},
	{name: "5.0 receive maximum 0", v: V5, hex: pk("10", s("MQTT"), "05 02 003c", props("21 0000"), s("c")),
		code: ProtocolError, field: "receive maximum"},
	{name: "5.0 maximum packet size 0", v: V5, hex: pk("10", s("MQTT"), "05 02 003c", props("27 00000000"), s("c")),
		code: ProtocolError, field: "maximum packet size"},
	{name: "5.0 request problem information 2", v: V5, hex: pk("10", s("MQTT"), "05 02 003c", props("17 02"), s("c")),
		code: ProtocolError, field: "request problem information"},
	{name: "5.0 request response information 2", v: V5, hex: pk("10", s("MQTT"), "05 02 003c", props("19 02"), s("c")),
		code: ProtocolError, field: "request response information"},
	{name: "5.0 duplicate session expiry", v: V5,
		hex:  pk("10", s("MQTT"), "05 02 003c", props("11 00000001", "11 00000002"), s("c")),
		code: ProtocolError, field: "session expiry interval"},
	{name: "5.0 topic alias not allowed on CONNECT", v: V5, hex: pk("10", s("MQTT"), "05 02 003c", props("23 0001"), s("c")),
		code: MalformedPacket, field: "properties"},
	{name: "5.0 unknown property 0x7f", v: V5, hex: pk("10", s("MQTT"), "05 02 003c", props("7f 00"), s("c")),
		code: MalformedPacket, field: "properties"},
	{name: "5.0 property identifier 0", v: V5, hex: pk("10", s("MQTT"), "05 02 003c", props("00 00"), s("c")),
		code: MalformedPacket, field: "properties"},
	{name: "5.0 property length beyond body", v: V5, hex: pk("10", s("MQTT"), "05 02 003c", "20", s("c")),
		code: MalformedPacket, field: "property length"},
	{name: "5.0 property value cut by property length", v: V5,
		hex: pk("10", s("MQTT"), "05 02 003c", "03 11 0000", s("c")), code: MalformedPacket, field: "session expiry interval"},
	{name: "5.0 user property value missing", v: V5,
		hex: pk("10", s("MQTT"), "05 02 003c", props("26"+s("k")), s("c")), code: MalformedPacket, field: "user property value"},
	{name: "5.0 will delay not allowed on CONNECT", v: V5,
		hex: pk("10", s("MQTT"), "05 02 003c", props("18 00000001"), s("c")), code: MalformedPacket, field: "properties"},
	{name: "5.0 session expiry not allowed in will", v: V5,
		hex:  pk("10", s("MQTT"), "05 06 003c 00", s("c"), props("11 00000001"), s("w"), s("m")),
		code: MalformedPacket, field: "will properties"},
	{name: "5.0 will payload format 2", v: V5, hex: pk("10", s("MQTT"), "05 06 003c 00", s("c"), props("01 02"), s("w"), s("m")),
		code: ProtocolError, field: "will payload format indicator"},
	{name: "5.0 authentication data without method", v: V5,
		hex: pk("10", s("MQTT"), "05 02 003c", props("16"+s("x")), s("c")), code: ProtocolError, field: "authentication data"},
	{name: "5.0 response topic invalid UTF-8 in will", v: V5,
		hex:  pk("10", s("MQTT"), "05 06 003c 00", s("c"), props("08 0001 ff"), s("w"), s("m")),
		code: MalformedPacket, field: "will response topic"},
}

var connackFixtures = []fixture{
	{name: "3.1.1 accepted", v: V311, hex: "20 02 00 00", want: &Connack{}},
	{name: "3.1.1 session present", v: V311, hex: "20 02 01 00", want: &Connack{SessionPresent: true}},
	{name: "3.1.1 unacceptable protocol version", v: V311, hex: "20 02 00 01", want: &Connack{ReasonCode: UnsupportedProtocolVersion}},
	{name: "3.1.1 identifier rejected", v: V311, hex: "20 02 00 02", want: &Connack{ReasonCode: ClientIDNotValid}},
	{name: "3.1.1 server unavailable", v: V311, hex: "20 02 00 03", want: &Connack{ReasonCode: ServerUnavailable}},
	{name: "3.1.1 bad user name or password", v: V311, hex: "20 02 00 04", want: &Connack{ReasonCode: BadUsernameOrPassword}},
	{name: "3.1.1 not authorized", v: V311, hex: "20 02 00 05", want: &Connack{ReasonCode: NotAuthorized}},
	{name: "3.1.1 reserved return code 6", v: V311, hex: "20 02 00 06", code: ProtocolError, field: "return code"},
	{name: "3.1.1 reserved acknowledge flags [MQTT-3.2.2-1]", v: V311, hex: "20 02 02 00", code: MalformedPacket, field: "acknowledge flags"},
	{name: "3.1.1 too long", v: V311, hex: "20 03 00 00 00", code: MalformedPacket, field: "remaining length"},
	{name: "3.1.1 too short", v: V311, hex: "20 01 00", code: MalformedPacket, field: "return code"},
	{name: "5.0 success", v: V5, hex: "20 03 00 00 00", want: &Connack{}},
	{name: "5.0 refused 0x84", v: V5, hex: "20 03 00 84 00", want: &Connack{ReasonCode: UnsupportedProtocolVersion}},
	{name: "5.0 all properties", v: V5, hex: pk("20", "01 00", hexConnackPropsV5),
		want: &Connack{SessionPresent: true, Props: wantConnackPropsV5}},
	{name: "5.0 property length missing", v: V5, hex: "20 02 00 00", code: MalformedPacket, field: "property length"},
	{name: "5.0 reason code 0x10 not a CONNACK code", v: V5, hex: "20 03 00 10 00", code: ProtocolError, field: "reason code"},
	{name: "5.0 maximum QoS 2", v: V5, hex: pk("20", "00 00", props("24 02")), code: ProtocolError, field: "maximum QoS"},
	{name: "5.0 retain available 2", v: V5, hex: pk("20", "00 00", props("25 02")), code: ProtocolError, field: "retain available"},
	{name: "5.0 wildcard available 2", v: V5, hex: pk("20", "00 00", props("28 02")), code: ProtocolError, field: "wildcard subscription available"},
	{name: "5.0 subscription id available 2", v: V5, hex: pk("20", "00 00", props("29 02")), code: ProtocolError, field: "subscription identifier available"},
	{name: "5.0 shared available 2", v: V5, hex: pk("20", "00 00", props("2a 02")), code: ProtocolError, field: "shared subscription available"},
	{name: "5.0 topic alias not allowed on CONNACK", v: V5, hex: pk("20", "00 00", props("23 0001")), code: MalformedPacket, field: "properties"},
	{name: "5.0 reason string not UTF-8", v: V5, hex: pk("20", "00 00", props("1f 0001 80")), code: MalformedPacket, field: "reason string"},
}

var publishFixtures = []fixture{
	{name: "3.1.1 QoS 0", v: V311, hex: "30 0a 0003 612f62 68656c6c6f",
		want: &Publish{Topic: "a/b", Payload: []byte("hello")}},
	{name: "3.1.1 QoS 1 dup retain", v: V311, hex: pk("3b", s("a/b"), "1234", hx("x")),
		want: &Publish{Dup: true, QoS: 1, Retain: true, Topic: "a/b", PacketID: 0x1234, Payload: []byte("x")}},
	{name: "3.1.1 QoS 2 empty payload", v: V311, hex: pk("34", s("a"), "0001"),
		want: &Publish{QoS: 2, Topic: "a", PacketID: 1}},
	{name: "wildcards and empty topic are the broker's business", v: V311, hex: pk("30", s("a/#/+"), hx("p")),
		want: &Publish{Topic: "a/#/+", Payload: []byte("p")}},
	{name: "empty topic decodes", v: V5, hex: pk("30", s(""), props("23 0001"), hx("p")),
		want: &Publish{Props: Properties{Present: mark(PropTopicAlias), TopicAlias: 1}, Payload: []byte("p")}},
	{name: "QoS 3 [MQTT-3.3.1-4]", v: V311, hex: pk("36", s("a"), "0001"), code: MalformedPacket, field: "fixed header flags"},
	{name: "QoS 1 packet id 0 [MQTT-2.2.1-3]", v: V311, hex: pk("32", s("a"), "0000"), code: ProtocolError, field: "packet identifier"},
	{name: "QoS 1 packet id missing", v: V311, hex: pk("32", s("a"), "00"), code: MalformedPacket, field: "packet identifier"},
	{name: "topic invalid UTF-8 [MQTT-1.5.4-1]", v: V311, hex: pk("30", "0002 c0af"), code: MalformedPacket, field: "topic name"},
	{name: "topic U+0000 [MQTT-1.5.4-2]", v: V5, hex: pk("30", "0001 00", "00"), code: MalformedPacket, field: "topic name"},
	{name: "topic length beyond body", v: V311, hex: "30 03 0005 61", code: MalformedPacket, field: "topic name"},
	{name: "5.0 no properties", v: V5, hex: pk("30", s("t"), "00", hx("pl")), want: &Publish{Topic: "t", Payload: []byte("pl")}},
	{name: "5.0 all properties", v: V5, hex: pk("32", s("t"), "0009", hexPublishPropsV5, hx("pl")),
		want: &Publish{QoS: 1, Topic: "t", PacketID: 9, Props: wantPublishPropsV5, Payload: []byte("pl")}},
	{name: "5.0 topic alias 0 decodes", v: V5, hex: pk("30", s("t"), props("23 0000")),
		want: &Publish{Topic: "t", Props: Properties{Present: mark(PropTopicAlias)}}},
	{name: "5.0 property length missing", v: V5, hex: pk("30", s("t")), code: MalformedPacket, field: "property length"},
	{name: "5.0 duplicate topic alias", v: V5, hex: pk("30", s("t"), props("23 0001", "23 0002")), code: ProtocolError, field: "topic alias"},
	{name: "5.0 duplicate content type", v: V5, hex: pk("30", s("t"), props("03"+s("a"), "03"+s("b"))), code: ProtocolError, field: "content type"},
	{name: "5.0 subscription identifier 0", v: V5, hex: pk("30", s("t"), props("0b 00")), code: ProtocolError, field: "subscription identifier"},
	{name: "5.0 subscription identifier 5 bytes", v: V5, hex: pk("30", s("t"), props("0b ffffffff01")),
		code: MalformedPacket, field: "subscription identifier"},
	{name: "5.0 subscription identifier max 268435455", v: V5, hex: pk("30", s("t"), props("0b ffffff7f")),
		want: &Publish{Topic: "t", Props: Properties{Present: mark(PropSubscriptionID), SubscriptionIDs: []uint32{268435455}}}},
	{name: "5.0 payload format 2", v: V5, hex: pk("30", s("t"), props("01 02")), code: ProtocolError, field: "payload format indicator"},
	{name: "5.0 session expiry not allowed on PUBLISH", v: V5, hex: pk("30", s("t"), props("11 00000001")), code: MalformedPacket, field: "properties"},
	{name: "5.0 will delay not allowed on PUBLISH", v: V5, hex: pk("30", s("t"), props("18 00000001")), code: MalformedPacket, field: "properties"},
	{name: "5.0 correlation data beyond property length", v: V5, hex: pk("30", s("t"), "03 09 0005"), code: MalformedPacket, field: "correlation data"},
}

var ackFixtures = []fixture{
	{name: "3.1.1 PUBACK", v: V311, hex: "40 02 0001", want: &Ack{Kind: PUBACK, PacketID: 1}},
	{name: "3.1.1 PUBREC", v: V311, hex: "50 02 0002", want: &Ack{Kind: PUBREC, PacketID: 2}},
	{name: "3.1.1 PUBREL", v: V311, hex: "62 02 0003", want: &Ack{Kind: PUBREL, PacketID: 3}},
	{name: "3.1.1 PUBCOMP", v: V311, hex: "70 02 ffff", want: &Ack{Kind: PUBCOMP, PacketID: 0xffff}},
	{name: "PUBREL flags 0000 [MQTT-3.6.1-1]", v: V311, hex: "60 02 0001", code: MalformedPacket, field: "fixed header flags"},
	{name: "PUBACK flags 0010 [MQTT-2.1.3-1]", v: V5, hex: "42 02 0001", code: MalformedPacket, field: "fixed header flags"},
	{name: "PUBCOMP flags 0001 [MQTT-2.1.3-1]", v: V5, hex: "71 02 0001", code: MalformedPacket, field: "fixed header flags"},
	{name: "3.1.1 PUBACK with reason code", v: V311, hex: "40 03 0001 00", code: MalformedPacket, field: "remaining length"},
	{name: "PUBACK packet id 0 [MQTT-2.2.1-3]", v: V311, hex: "40 02 0000", code: ProtocolError, field: "packet identifier"},
	{name: "PUBACK too short", v: V5, hex: "40 01 00", code: MalformedPacket, field: "packet identifier"},
	{name: "5.0 PUBACK short form [MQTT-3.4.2.1]", v: V5, hex: "40 02 0001", want: &Ack{Kind: PUBACK, PacketID: 1}},
	{name: "5.0 PUBACK code without properties", v: V5, hex: "40 03 0001 10",
		want: &Ack{Kind: PUBACK, PacketID: 1, ReasonCode: NoMatchingSubscribers}},
	{name: "5.0 PUBACK success and empty properties", v: V5, hex: "40 04 0001 00 00",
		want: &Ack{Kind: PUBACK, PacketID: 1}, noncanon: true},
	{name: "5.0 PUBREC with properties", v: V5, hex: pk("50", "0007 97", hexAckPropsV5),
		want: &Ack{Kind: PUBREC, PacketID: 7, ReasonCode: QuotaExceeded, Props: wantAckPropsV5}},
	{name: "5.0 PUBREL packet id not found", v: V5, hex: "62 03 0007 92",
		want: &Ack{Kind: PUBREL, PacketID: 7, ReasonCode: PacketIDNotFound}},
	{name: "5.0 PUBCOMP with user property only", v: V5, hex: pk("70", "0007 00", props("26"+s("k")+s("v"))),
		want: &Ack{Kind: PUBCOMP, PacketID: 7, Props: Properties{Present: mark(PropUserProperty), User: []UserProperty{{"k", "v"}}}}},
	{name: "5.0 PUBACK code 0x92 not allowed", v: V5, hex: "40 03 0001 92", code: ProtocolError, field: "reason code"},
	{name: "5.0 PUBCOMP code 0x10 not allowed", v: V5, hex: "70 03 0001 10", code: ProtocolError, field: "reason code"},
	{name: "5.0 PUBACK topic alias not allowed", v: V5, hex: pk("40", "0001 00", props("23 0001")), code: MalformedPacket, field: "properties"},
	{name: "5.0 PUBACK property length beyond", v: V5, hex: "40 04 0001 00 05", code: MalformedPacket, field: "property length"},
	{name: "5.0 PUBACK bytes after properties", v: V5, hex: "40 05 0001 00 00 00", code: MalformedPacket, field: "remaining length"},
	{name: "5.0 PUBACK duplicate reason string", v: V5, hex: pk("40", "0001 80", props("1f"+s("a"), "1f"+s("b"))),
		code: ProtocolError, field: "reason string"},
}

var subscribeFixtures = []fixture{
	{name: "3.1.1 two filters", v: V311, hex: pk("82", "0001", s("a/b"), "01", s("c/#"), "02"),
		want: &Subscribe{PacketID: 1, Subs: []SubOption{{Filter: "a/b", QoS: 1}, {Filter: "c/#", QoS: 2}}}},
	{name: "flags 0000 [MQTT-3.8.1-1]", v: V311, hex: pk("80", "0001", s("a"), "00"), code: MalformedPacket, field: "fixed header flags"},
	{name: "3.1.1 no filter [MQTT-3.8.3-3]", v: V311, hex: "82 02 0001", code: ProtocolError, field: "payload"},
	{name: "5.0 no filter [MQTT-3.8.3-3]", v: V5, hex: "82 03 0001 00", code: ProtocolError, field: "payload"},
	{name: "packet id 0 [MQTT-2.2.1-3]", v: V311, hex: pk("82", "0000", s("a"), "00"), code: ProtocolError, field: "packet identifier"},
	{name: "3.1.1 reserved option bits [MQTT-3-8.3-4]", v: V311, hex: pk("82", "0001", s("a"), "04"), code: MalformedPacket, field: "subscription options"},
	{name: "3.1.1 QoS 3 [MQTT-3-8.3-4]", v: V311, hex: pk("82", "0001", s("a"), "03"), code: MalformedPacket, field: "subscription options"},
	{name: "options byte missing", v: V311, hex: pk("82", "0001", s("a")), code: MalformedPacket, field: "subscription options"},
	{name: "filter invalid UTF-8", v: V311, hex: pk("82", "0001", "0001 fe", "00"), code: MalformedPacket, field: "topic filter"},
	{name: "5.0 all options and properties", v: V5,
		hex: pk("82", "000a", props("0b 2a", "26"+s("k")+s("v")), s("a/+"), "2d", s("$share/g/x"), "12"),
		want: &Subscribe{PacketID: 10,
			Props: Properties{Present: mark(PropSubscriptionID, PropUserProperty), SubscriptionIDs: []uint32{42},
				User: []UserProperty{{"k", "v"}}},
			Subs: []SubOption{{Filter: "a/+", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
				{Filter: "$share/g/x", QoS: 2, RetainHandling: 1}}}},
	{name: "5.0 reserved bits 6-7 [MQTT-3.8.3-5]", v: V5, hex: pk("82", "0001 00", s("a"), "40"), code: MalformedPacket, field: "subscription options"},
	{name: "5.0 QoS 3 is a protocol error", v: V5, hex: pk("82", "0001 00", s("a"), "03"), code: ProtocolError, field: "subscription options"},
	{name: "5.0 retain handling 3", v: V5, hex: pk("82", "0001 00", s("a"), "30"), code: ProtocolError, field: "subscription options"},
	{name: "5.0 two subscription identifiers", v: V5, hex: pk("82", "0001", props("0b 01", "0b 02"), s("a"), "00"),
		code: ProtocolError, field: "subscription identifier"},
	{name: "5.0 subscription identifier 0", v: V5, hex: pk("82", "0001", props("0b 00"), s("a"), "00"),
		code: ProtocolError, field: "subscription identifier"},
	{name: "5.0 reason string not allowed on SUBSCRIBE", v: V5, hex: pk("82", "0001", props("1f"+s("r")), s("a"), "00"),
		code: MalformedPacket, field: "properties"},
}

var subackFixtures = []fixture{
	{name: "3.1.1 all return codes", v: V311, hex: "90 06 0001 00 01 02 80",
		want: &Suback{PacketID: 1, ReasonCodes: []ReasonCode{0, 1, 2, 0x80}}},
	{name: "3.1.1 reserved return code [MQTT-3.9.3-2]", v: V311, hex: "90 03 0001 87", code: ProtocolError, field: "reason code"},
	{name: "3.1.1 no return code", v: V311, hex: "90 02 0001", code: ProtocolError, field: "reason codes"},
	{name: "5.0 codes", v: V5, hex: "90 05 0001 00 00 97", want: &Suback{PacketID: 1, ReasonCodes: []ReasonCode{0, QuotaExceeded}}},
	{name: "5.0 with properties", v: V5, hex: pk("90", "0002", hexAckPropsV5, "a2"),
		want: &Suback{PacketID: 2, Props: wantAckPropsV5, ReasonCodes: []ReasonCode{WildcardSubsNotSupported}}},
	{name: "5.0 code 0x04 not allowed", v: V5, hex: "90 04 0001 00 04", code: ProtocolError, field: "reason code"},
	{name: "5.0 property length missing", v: V5, hex: "90 02 0001", code: MalformedPacket, field: "property length"},
}

var unsubscribeFixtures = []fixture{
	{name: "3.1.1 two filters", v: V311, hex: pk("a2", "0003", s("a/b"), s("c/#")),
		want: &Unsubscribe{PacketID: 3, Filters: []string{"a/b", "c/#"}}},
	{name: "flags 0000 [MQTT-3.10.1-1]", v: V311, hex: pk("a0", "0003", s("a")), code: MalformedPacket, field: "fixed header flags"},
	{name: "3.1.1 no filter [MQTT-3.10.3-2]", v: V311, hex: "a2 02 0003", code: ProtocolError, field: "payload"},
	{name: "5.0 no filter [MQTT-3.10.3-2]", v: V5, hex: "a2 03 0003 00", code: ProtocolError, field: "payload"},
	{name: "packet id 0", v: V5, hex: pk("a2", "0000 00", s("a")), code: ProtocolError, field: "packet identifier"},
	{name: "5.0 user properties", v: V5, hex: pk("a2", "0003", props("26"+s("k")+s("v"), "26"+s("k")+s("w")), s("x")),
		want: &Unsubscribe{PacketID: 3, Props: Properties{Present: mark(PropUserProperty),
			User: []UserProperty{{"k", "v"}, {"k", "w"}}}, Filters: []string{"x"}}},
	{name: "5.0 subscription identifier not allowed", v: V5, hex: pk("a2", "0003", props("0b 01"), s("x")),
		code: MalformedPacket, field: "properties"},
	{name: "filter cut short", v: V311, hex: pk("a2", "0003", "0003 61"), code: MalformedPacket, field: "topic filter"},
}

var unsubackFixtures = []fixture{
	{name: "3.1.1", v: V311, hex: "b0 02 0004", want: &Unsuback{PacketID: 4}},
	{name: "3.1.1 extra byte", v: V311, hex: "b0 03 0004 00", code: MalformedPacket, field: "remaining length"},
	{name: "5.0 codes", v: V5, hex: "b0 05 0004 00 00 11", want: &Unsuback{PacketID: 4, ReasonCodes: []ReasonCode{0, NoSubscriptionExisted}}},
	{name: "5.0 with properties", v: V5, hex: pk("b0", "0004", hexAckPropsV5, "87"),
		want: &Unsuback{PacketID: 4, Props: wantAckPropsV5, ReasonCodes: []ReasonCode{NotAuthorized}}},
	{name: "5.0 no reason code", v: V5, hex: "b0 03 0004 00", code: ProtocolError, field: "reason codes"},
	{name: "5.0 code 0x02 not allowed", v: V5, hex: "b0 04 0004 00 02", code: ProtocolError, field: "reason code"},
}

var smallFixtures = []fixture{
	{name: "PINGREQ", v: V311, hex: "c0 00", want: &Pingreq{}},
	{name: "PINGRESP", v: V5, hex: "d0 00", want: &Pingresp{}},
	{name: "5.0 PINGREQ", v: V5, hex: "c0 00", want: &Pingreq{}},
	{name: "3.1.1 PINGRESP", v: V311, hex: "d0 00", want: &Pingresp{}},
	{name: "PINGRESP with body", v: V5, hex: "d0 02 0000", code: MalformedPacket, field: "remaining length"},
	{name: "PINGREQ with body", v: V311, hex: "c0 01 00", code: MalformedPacket, field: "remaining length"},
	{name: "PINGREQ flags [MQTT-2.1.3-1]", v: V311, hex: "c1 00", code: MalformedPacket, field: "fixed header flags"},
	{name: "PINGRESP flags [MQTT-2.1.3-1]", v: V5, hex: "d8 00", code: MalformedPacket, field: "fixed header flags"},
	{name: "3.1.1 DISCONNECT", v: V311, hex: "e0 00", want: &Disconnect{}},
	{name: "3.1.1 DISCONNECT with body", v: V311, hex: "e0 01 00", code: MalformedPacket, field: "remaining length"},
	{name: "DISCONNECT flags [MQTT-2.1.3-1]", v: V5, hex: "e2 00", code: MalformedPacket, field: "fixed header flags"},
	{name: "5.0 DISCONNECT normal", v: V5, hex: "e0 00", want: &Disconnect{}},
	{name: "5.0 DISCONNECT with will", v: V5, hex: "e0 01 04", want: &Disconnect{ReasonCode: DisconnectWithWill}},
	{name: "5.0 DISCONNECT code and empty properties", v: V5, hex: "e0 02 8e 00",
		want: &Disconnect{ReasonCode: SessionTakenOver}, noncanon: true},
	{name: "5.0 DISCONNECT all properties", v: V5,
		hex: pk("e0", "9c", props("11 0000003c", "1c"+s("srv2"), "1f"+s("moved"), "26"+s("k")+s("v"))),
		want: &Disconnect{ReasonCode: UseAnotherServer, Props: Properties{
			Present:       mark(PropSessionExpiry, PropServerReference, PropReasonString, PropUserProperty),
			SessionExpiry: 60, ServerReference: "srv2", ReasonString: "moved", User: []UserProperty{{"k", "v"}}}}},
	{name: "5.0 DISCONNECT code 0x01 not allowed", v: V5, hex: "e0 01 01", code: ProtocolError, field: "reason code"},
	{name: "5.0 DISCONNECT topic alias not allowed", v: V5, hex: pk("e0", "00", props("23 0001")), code: MalformedPacket, field: "properties"},
	{name: "5.0 DISCONNECT bytes after properties", v: V5, hex: "e0 03 00 00 00", code: MalformedPacket, field: "remaining length"},
	{name: "3.1.1 AUTH is reserved", v: V311, hex: "f0 00", code: MalformedPacket, field: "packet type"},
	{name: "AUTH flags [MQTT-2.1.3-1]", v: V5, hex: "f1 00", code: MalformedPacket, field: "fixed header flags"},
	{name: "5.0 AUTH success short form", v: V5, hex: "f0 00", want: &Auth{}},
	{name: "5.0 AUTH continue", v: V5, hex: pk("f0", "18", props("15"+s("SCRAM"), "16"+s("\x00\xff"), "1f"+s("r"), "26"+s("k")+s("v"))),
		want: &Auth{ReasonCode: ContinueAuthentication, Props: Properties{
			Present:    mark(PropAuthMethod, PropAuthData, PropReasonString, PropUserProperty),
			AuthMethod: "SCRAM", AuthData: []byte{0, 0xff}, ReasonString: "r", User: []UserProperty{{"k", "v"}}}}},
	{name: "5.0 AUTH re-authenticate no properties", v: V5, hex: "f0 02 19 00", want: &Auth{ReasonCode: ReAuthenticate}},
	{name: "5.0 AUTH code without property length", v: V5, hex: "f0 01 19", want: &Auth{ReasonCode: ReAuthenticate}, noncanon: true},
	{name: "5.0 AUTH code 0x87 not allowed", v: V5, hex: "f0 02 87 00", code: ProtocolError, field: "reason code"},
	{name: "5.0 AUTH session expiry not allowed", v: V5, hex: pk("f0", "18", props("11 00000001")), code: MalformedPacket, field: "properties"},
	{name: "reserved type 0 [MQTT-2.1.2]", v: V311, hex: "00 00", code: MalformedPacket, field: "packet type"},
	{name: "remaining length of 5 bytes [MQTT-1.5.5]", v: V311, hex: "30 ff ff ff ff 7f", code: MalformedPacket, field: "remaining length"},
	// Crashers and odd inputs found by FuzzDecode are appended below.
}

// allFixtures is every table, in order.
func allFixtures() []fixture {
	var all []fixture
	for _, tab := range [][]fixture{connectFixtures, connackFixtures, publishFixtures, ackFixtures,
		subscribeFixtures, subackFixtures, unsubscribeFixtures, unsubackFixtures, smallFixtures, fuzzFixtures} {
		all = append(all, tab...)
	}
	return all
}

func TestFixtures(t *testing.T) {
	for _, fx := range allFixtures() {
		t.Run(fx.name, func(t *testing.T) {
			raw := unhex(t, fx.hex)
			got, err := decodeBytes(raw, fx.v)
			if fx.want == nil {
				if err == nil {
					t.Fatalf("decoded %#v, want error %v", got, fx.code)
				}
				checkErr(t, err, fx.code, fx.field)
				return
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !packetsEqual(got, fx.want) {
				t.Fatalf("decode:\n got %#v\nwant %#v", got, fx.want)
			}
			ev := fx.v
			if c, ok := got.(*Connect); ok {
				ev = c.Version
			}
			enc, err := Encode(nil, got, ev)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if n := EncodedLen(got, ev); n != len(enc) {
				t.Errorf("EncodedLen = %d, Encode wrote %d", n, len(enc))
			}
			if !fx.noncanon && !bytes.Equal(enc, raw) {
				t.Errorf("encode:\n got % x\nwant % x", enc, raw)
			}
			again, err := decodeBytes(enc, fx.v)
			if err != nil || !packetsEqual(again, fx.want) {
				t.Errorf("re-decode: %v\n got %#v\nwant %#v", err, again, fx.want)
			}
		})
	}
}

// A CONNECT refused for its protocol is returned with its name and level
// so the broker can answer 0x01 (3.x) or 0x84 (5.0) [MQTT-3.1.2-2].
func TestConnectUnsupportedReturnsVersion(t *testing.T) {
	p, err := decodeBytes(unhex(t, pk("10", s("MQTT"), "03 02 003c", s("c"))), V5)
	checkErr(t, err, UnsupportedProtocolVersion, "protocol level")
	c, ok := p.(*Connect)
	if !ok || c.ProtocolName != "MQTT" || c.Version != 3 {
		t.Fatalf("got %#v, want *Connect{MQTT, 3}", p)
	}
	// A later error also returns the version (to choose the CONNACK format).
	p, err = decodeBytes(unhex(t, pk("10", s("MQTT"), "05 03 003c 00", s("c"))), V311)
	checkErr(t, err, MalformedPacket, "connect flags")
	if c, ok := p.(*Connect); !ok || c.Version != V5 || c.ClientID != "" {
		t.Fatalf("got %#v, want *Connect{Version: 5} only", p)
	}
	// Other packets return nil on error.
	if p, err := decodeBytes(unhex(t, "40 02 0000"), V5); p != nil || err == nil {
		t.Fatalf("got %#v, %v", p, err)
	}
}

func TestDecodeBodyLengthMismatch(t *testing.T) {
	_, err := Decode(FixedHeader{Type: PINGREQ, Remaining: 1, HeaderLen: 2}, nil, V311)
	checkErr(t, err, MalformedPacket, "remaining length")
}

// Byte fields alias the body; strings do not.
func TestDecodeAliasing(t *testing.T) {
	raw := unhex(t, pk("30", s("t"), hx("payload")))
	p, err := decodeBytes(raw, V311)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-1] = 'X'
	raw[3] = 'Z' // topic byte
	pub := p.(*Publish)
	if string(pub.Payload) != "payloaX" || pub.Topic != "t" {
		t.Fatalf("payload %q topic %q: payload must alias, topic must be copied", pub.Payload, pub.Topic)
	}
	// Capacity is capped: appending to a field never writes into the
	// caller's buffer beyond the body.
	buf := append(unhex(t, pk("10", s("MQTT"), "04 c2 003c", s("c"), s("u"), s("pw"))), 0xEE, 0xEE)
	h, _ := ParseFixedHeader(buf, 0)
	p, err = Decode(h, buf[h.HeaderLen:h.Size()], V311)
	if err != nil {
		t.Fatal(err)
	}
	c := p.(*Connect)
	_ = append(c.Password, 'X')
	if buf[len(buf)-2] != 0xEE || cap(c.Password) != len(c.Password) {
		t.Fatalf("append to Password wrote past the body")
	}
	b := []byte{0, 1, 't', 'p', 0xEE}
	pp, err := Decode(FixedHeader{Type: PUBLISH, Remaining: 4, HeaderLen: 2}, b[:4], V311)
	if err != nil {
		t.Fatal(err)
	}
	_ = append(pp.(*Publish).Payload, 'X')
	if b[4] != 0xEE {
		t.Fatal("append to Payload wrote past the body")
	}
}
