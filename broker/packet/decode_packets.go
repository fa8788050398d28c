package packet

// decodePublish decodes PUBLISH [MQTT-3.3]. The topic is only checked to be
// a well-formed UTF-8 string; wildcards, empty topics and topic aliases are
// the broker's business. Payload aliases the body.
func decodePublish(d *decoder, flags byte, v5 bool) (Packet, error) {
	p := &Publish{Dup: flags&0x08 != 0, QoS: (flags >> 1) & 3, Retain: flags&0x01 != 0}
	var err error
	if p.Topic, err = d.str("topic name"); err != nil { // [MQTT-3.3.2-1]
		return nil, err
	}
	if p.QoS > 0 {
		if p.PacketID, err = d.packetID(); err != nil { // [MQTT-2.2.1-3]
			return nil, err
		}
	}
	if v5 {
		if err := d.props(&p.Props, maskPublish, packetFields); err != nil {
			return nil, err
		}
	}
	p.Payload = d.rest()
	return p, nil
}

// decodeAck decodes PUBACK, PUBREC, PUBREL and PUBCOMP. In 5.0 a remaining
// length of 2 means Success without properties and 3 means a reason code
// without properties [MQTT-3.4.2.1] (§3.4.2.2, §3.5.2.2, §3.6.2.2, §3.7.2.2).
func decodeAck(d *decoder, v5 bool) (Packet, error) {
	id, err := d.packetID()
	if err != nil {
		return nil, err
	}
	a := &Ack{Kind: d.pt, PacketID: id}
	if !v5 || d.left() == 0 {
		return ret(a, d.end())
	}
	codes := &pubackCodes
	if d.pt == PUBREL || d.pt == PUBCOMP {
		codes = &pubrelCodes
	}
	if a.ReasonCode, err = d.reasonCode(codes); err != nil {
		return nil, err
	}
	if d.left() == 0 {
		return a, nil
	}
	if err := d.props(&a.Props, maskAck, packetFields); err != nil {
		return nil, err
	}
	return ret(a, d.end())
}

// decodeSubscribe decodes SUBSCRIBE [MQTT-3.8]. Topic filter syntax, shared
// subscriptions and No Local on them are the broker's business.
func decodeSubscribe(d *decoder, v5 bool) (Packet, error) {
	id, err := d.packetID() // [MQTT-2.2.1-3]
	if err != nil {
		return nil, err
	}
	s := &Subscribe{PacketID: id}
	if v5 {
		// A second Subscription Identifier is a Protocol Error [MQTT-3.8.2.1.2]
		// (props only lets it repeat in PUBLISH).
		if err := d.props(&s.Props, maskSubscribe, packetFields); err != nil {
			return nil, err
		}
	}
	for d.left() > 0 {
		var o SubOption
		if o.Filter, err = d.str("topic filter"); err != nil { // [MQTT-3.8.3-1]
			return nil, err
		}
		opts, err := d.byte1("subscription options")
		if err != nil {
			return nil, err
		}
		if err := subOptions(d, &o, opts, v5); err != nil {
			return nil, err
		}
		s.Subs = append(s.Subs, o)
	}
	if len(s.Subs) == 0 {
		return nil, d.fail(ProtocolError, "payload", "no topic filter") // [MQTT-3.8.3-3]
	}
	return s, nil
}

// subOptions checks and splits a subscription options byte.
func subOptions(d *decoder, o *SubOption, opts byte, v5 bool) error {
	o.QoS = opts & 0x03
	if !v5 {
		if opts&0xFC != 0 { // 3.1.1 [MQTT-3-8.3-4]: reserved bits non-zero is malformed
			return d.fail(MalformedPacket, "subscription options", "reserved bits set")
		}
		if o.QoS == 3 { // 3.1.1 [MQTT-3-8.3-4]: QoS 3 is malformed
			return d.fail(MalformedPacket, "subscription options", "QoS 3")
		}
		return nil
	}
	if opts&0xC0 != 0 {
		return d.fail(MalformedPacket, "subscription options", "reserved bits 6-7 set") // [MQTT-3.8.3-5]
	}
	if o.QoS == 3 { // 5.0 §3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3"
		return d.fail(ProtocolError, "subscription options", "QoS 3")
	}
	o.NoLocal = opts&0x04 != 0
	o.RetainAsPublished = opts&0x08 != 0
	o.RetainHandling = (opts >> 4) & 0x03
	if o.RetainHandling == 3 { // 5.0 §3.8.3.1: Retain Handling 3 is a Protocol Error
		return d.fail(ProtocolError, "subscription options", "retain handling 3")
	}
	return nil
}

// decodeSuback decodes SUBACK [MQTT-3.9].
func decodeSuback(d *decoder, v5 bool) (Packet, error) {
	id, err := d.packetID()
	if err != nil {
		return nil, err
	}
	s := &Suback{PacketID: id}
	codes := &v3SubackSet // 3.1.1 [MQTT-3.9.3-2]: 0x00, 0x01, 0x02, 0x80 only
	if v5 {
		codes = &subackCodes
		if err := d.props(&s.Props, maskAck, packetFields); err != nil {
			return nil, err
		}
	}
	if s.ReasonCodes, err = d.reasonCodes(codes); err != nil {
		return nil, err
	}
	return s, nil
}

// decodeUnsubscribe decodes UNSUBSCRIBE [MQTT-3.10].
func decodeUnsubscribe(d *decoder, v5 bool) (Packet, error) {
	id, err := d.packetID() // [MQTT-2.2.1-3]
	if err != nil {
		return nil, err
	}
	u := &Unsubscribe{PacketID: id}
	if v5 {
		if err := d.props(&u.Props, maskUnsubscribe, packetFields); err != nil {
			return nil, err
		}
	}
	for d.left() > 0 {
		f, err := d.str("topic filter") // [MQTT-3.10.3-1]
		if err != nil {
			return nil, err
		}
		u.Filters = append(u.Filters, f)
	}
	if len(u.Filters) == 0 {
		return nil, d.fail(ProtocolError, "payload", "no topic filter") // [MQTT-3.10.3-2]
	}
	return u, nil
}

// decodeUnsuback decodes UNSUBACK [MQTT-3.11]; 3.1.1 has no payload.
func decodeUnsuback(d *decoder, v5 bool) (Packet, error) {
	id, err := d.packetID()
	if err != nil {
		return nil, err
	}
	u := &Unsuback{PacketID: id}
	if !v5 {
		return ret(u, d.end())
	}
	if err := d.props(&u.Props, maskAck, packetFields); err != nil {
		return nil, err
	}
	if u.ReasonCodes, err = d.reasonCodes(&unsubackCode); err != nil {
		return nil, err
	}
	return u, nil
}

// decodeDisconnect decodes DISCONNECT [MQTT-3.14]. In 3.x it has no
// variable header. In 5.0 remaining length 0 means Normal Disconnection
// and 1 a reason code without properties (§3.14.2.1, §3.14.2.2).
func decodeDisconnect(d *decoder, v5 bool) (Packet, error) {
	if !v5 {
		return ret(&Disconnect{}, d.noBody())
	}
	return decodeCodeProps(d, &disconnCodes, maskDisconnect)
}

// decodeAuth decodes the 5.0 AUTH packet [MQTT-3.15]; in a 3.x connection
// type 15 is reserved and so malformed.
func decodeAuth(d *decoder, v5 bool) (Packet, error) {
	if !v5 {
		return nil, d.fail(MalformedPacket, "packet type", "AUTH is reserved before MQTT 5") // 3.1.1 §2.2.1
	}
	return decodeCodeProps(d, &authCodes, maskAuth)
}

// decodeCodeProps decodes the shared DISCONNECT/AUTH layout: optional
// reason code, then optional properties.
func decodeCodeProps(d *decoder, codes *codeSet, mask uint64) (Packet, error) {
	var code ReasonCode
	var props Properties
	if d.left() > 0 {
		var err error
		if code, err = d.reasonCode(codes); err != nil {
			return nil, err
		}
	}
	if d.left() > 0 {
		if err := d.props(&props, mask, packetFields); err != nil {
			return nil, err
		}
		if err := d.end(); err != nil {
			return nil, err
		}
	}
	if d.pt == AUTH {
		return &Auth{ReasonCode: code, Props: props}, nil
	}
	return &Disconnect{ReasonCode: code, Props: props}, nil
}
