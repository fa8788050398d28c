package packet

func (c *Connect) plan(pl *plan) error {
	if c.Version != 0 {
		pl.ver = c.Version
	}
	if pl.ver == 0 {
		pl.ver = V311
	}
	pl.v5 = pl.ver >= V5
	pl.first = byte(CONNECT) << 4
	if c.WillFlag && c.WillQoS > 2 {
		return encErr(CONNECT, "will QoS", "QoS 3") // [MQTT-3.1.2-12]
	}
	user, pass := c.UsernameFlag || c.Username != "", c.PasswordFlag || len(c.Password) != 0
	if !pl.v5 && pass && !user {
		return encErr(CONNECT, "password", "password without user name in 3.x") // [MQTT-3.1.2-22] (3.1.1)
	}
	s := sizer{pt: CONNECT}
	s.str(len(c.protocolName(pl.ver)), "protocol name")
	s.n += 1 + 1 + 2 // level, flags, keep alive
	if pl.v5 {
		pl.props = s.props(&c.Props, maskConnect)
	}
	s.str(len(c.ClientID), "client identifier")
	if c.WillFlag {
		if pl.v5 {
			pl.will = s.props(&c.WillProps, maskWill)
		}
		s.str(len(c.WillTopic), "will topic")
		s.str(len(c.WillPayload), "will payload")
	}
	if user {
		s.str(len(c.Username), "user name")
	}
	if pass {
		s.str(len(c.Password), "password")
	}
	return s.done(pl)
}

func (c *Connect) protocolName(v Version) string {
	switch {
	case c.ProtocolName != "":
		return c.ProtocolName
	case v == V31:
		return "MQIsdp"
	default:
		return "MQTT"
	}
}

func (c *Connect) write(dst []byte, pl *plan) []byte {
	var flags byte
	if c.CleanStart {
		flags |= connCleanStart
	}
	if c.WillFlag {
		flags |= connWill | c.WillQoS<<3
		if c.WillRetain {
			flags |= connWillRetain
		}
	}
	user, pass := c.UsernameFlag || c.Username != "", c.PasswordFlag || len(c.Password) != 0
	if user {
		flags |= connUsername
	}
	if pass {
		flags |= connPassword
	}
	dst = appendString(dst, c.protocolName(pl.ver))
	dst = append(dst, byte(pl.ver), flags)
	dst = appendUint16(dst, c.KeepAlive)
	if pl.v5 {
		dst = c.Props.appendProps(dst, pl.props.mask, pl.props.n)
	}
	dst = appendString(dst, c.ClientID)
	if c.WillFlag {
		if pl.v5 {
			dst = c.WillProps.appendProps(dst, pl.will.mask, pl.will.n)
		}
		dst = appendString(dst, c.WillTopic)
		dst = appendBytes(dst, c.WillPayload)
	}
	if user {
		dst = appendString(dst, c.Username)
	}
	if pass {
		dst = appendBytes(dst, c.Password)
	}
	return dst
}

func (p *Subscribe) plan(pl *plan) error {
	pl.first = byte(SUBSCRIBE)<<4 | 0x02 // [MQTT-3.8.1-1]
	if p.PacketID == 0 {
		return encErr(SUBSCRIBE, "packet identifier", "must not be 0") // [MQTT-2.2.1-3]
	}
	if len(p.Subs) == 0 {
		return encErr(SUBSCRIBE, "payload", "no topic filter") // [MQTT-3.8.3-3]
	}
	s := sizer{pt: SUBSCRIBE, n: 2}
	if pl.v5 {
		if len(p.Props.SubscriptionIDs) > 1 {
			return encErr(SUBSCRIBE, "subscription identifier", "more than one") // [MQTT-3.8.2.1.2]
		}
		pl.props = s.props(&p.Props, maskSubscribe)
	}
	for i := range p.Subs {
		o := &p.Subs[i]
		if o.QoS > 2 {
			return encErr(SUBSCRIBE, "subscription options", "QoS 3")
		}
		if pl.v5 && o.RetainHandling > 2 {
			return encErr(SUBSCRIBE, "subscription options", "retain handling 3")
		}
		s.str(len(o.Filter), "topic filter")
		s.n++
	}
	return s.done(pl)
}

func (p *Subscribe) write(dst []byte, pl *plan) []byte {
	dst = appendUint16(dst, p.PacketID)
	if pl.v5 {
		dst = p.Props.appendProps(dst, pl.props.mask, pl.props.n)
	}
	for i := range p.Subs {
		o := &p.Subs[i]
		opts := o.QoS
		if pl.v5 {
			opts |= o.RetainHandling << 4
			if o.NoLocal {
				opts |= 0x04
			}
			if o.RetainAsPublished {
				opts |= 0x08
			}
		}
		dst = append(appendString(dst, o.Filter), opts)
	}
	return dst
}

func (p *Suback) plan(pl *plan) error {
	pl.first = byte(SUBACK) << 4
	if p.PacketID == 0 {
		return encErr(SUBACK, "packet identifier", "must not be 0")
	}
	if len(p.ReasonCodes) == 0 {
		return encErr(SUBACK, "reason codes", "no reason code")
	}
	s := sizer{pt: SUBACK, n: 2 + len(p.ReasonCodes)}
	if pl.v5 {
		pl.props = s.props(&p.Props, maskAck)
	} else {
		for _, c := range p.ReasonCodes {
			if c > GrantedQoS2 && c < 0x80 {
				return encErr(SUBACK, "reason codes", c.String()+" has no 3.1.1 return code")
			}
		}
	}
	return s.done(pl)
}

func (p *Suback) write(dst []byte, pl *plan) []byte {
	dst = appendUint16(dst, p.PacketID)
	if pl.v5 {
		dst = p.Props.appendProps(dst, pl.props.mask, pl.props.n)
		for _, c := range p.ReasonCodes {
			dst = append(dst, byte(c))
		}
		return dst
	}
	for _, c := range p.ReasonCodes {
		if c.IsError() {
			c = UnspecifiedError // 3.1.1 [MQTT-3.9.3-2]: 0x80 is the only failure code
		}
		dst = append(dst, byte(c))
	}
	return dst
}

func (p *Unsubscribe) plan(pl *plan) error {
	pl.first = byte(UNSUBSCRIBE)<<4 | 0x02 // [MQTT-3.10.1-1]
	if p.PacketID == 0 {
		return encErr(UNSUBSCRIBE, "packet identifier", "must not be 0") // [MQTT-2.2.1-3]
	}
	if len(p.Filters) == 0 {
		return encErr(UNSUBSCRIBE, "payload", "no topic filter") // [MQTT-3.10.3-2]
	}
	s := sizer{pt: UNSUBSCRIBE, n: 2}
	if pl.v5 {
		pl.props = s.props(&p.Props, maskUnsubscribe)
	}
	for _, f := range p.Filters {
		s.str(len(f), "topic filter")
	}
	return s.done(pl)
}

func (p *Unsubscribe) write(dst []byte, pl *plan) []byte {
	dst = appendUint16(dst, p.PacketID)
	if pl.v5 {
		dst = p.Props.appendProps(dst, pl.props.mask, pl.props.n)
	}
	for _, f := range p.Filters {
		dst = appendString(dst, f)
	}
	return dst
}

func (p *Unsuback) plan(pl *plan) error {
	pl.first = byte(UNSUBACK) << 4
	if p.PacketID == 0 {
		return encErr(UNSUBACK, "packet identifier", "must not be 0")
	}
	s := sizer{pt: UNSUBACK, n: 2}
	if pl.v5 {
		if len(p.ReasonCodes) == 0 {
			return encErr(UNSUBACK, "reason codes", "no reason code")
		}
		pl.props = s.props(&p.Props, maskAck)
		s.n += len(p.ReasonCodes)
	}
	return s.done(pl)
}

func (p *Unsuback) write(dst []byte, pl *plan) []byte {
	dst = appendUint16(dst, p.PacketID)
	if !pl.v5 {
		return dst // 3.1.1 UNSUBACK has no payload
	}
	dst = p.Props.appendProps(dst, pl.props.mask, pl.props.n)
	for _, c := range p.ReasonCodes {
		dst = append(dst, byte(c))
	}
	return dst
}
