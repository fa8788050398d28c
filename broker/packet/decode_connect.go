package packet

// Connect flag bits [MQTT-3.1.2.3].
const (
	connReserved   = 0x01
	connCleanStart = 0x02
	connWill       = 0x04
	connWillQoS    = 0x18
	connWillRetain = 0x20
	connPassword   = 0x40
	connUsername   = 0x80
)

// decodeConnect decodes CONNECT [MQTT-3.1]. On failure after the protocol
// name and level were read it returns a *Connect holding just those two.
func decodeConnect(d *decoder) (Packet, error) {
	name, err := d.str("protocol name")
	if err != nil {
		return nil, err
	}
	level, err := d.byte1("protocol level")
	if err != nil {
		return nil, err
	}
	c := &Connect{ProtocolName: name, Version: Version(level)}
	if name != "MQTT" && name != "MQIsdp" {
		// [MQTT-3.1.2-1]: not MQTT; answered like an unsupported level.
		return c, d.fail(UnsupportedProtocolVersion, "protocol name", "unknown protocol name")
	}
	if !(name == "MQTT" && (level == 4 || level == 5)) && !(name == "MQIsdp" && level == 3) {
		return c, d.fail(UnsupportedProtocolVersion, "protocol level", "unsupported protocol level") // [MQTT-3.1.2-2]
	}
	if err := decodeConnectBody(d, c); err != nil {
		return &Connect{ProtocolName: name, Version: Version(level)}, err
	}
	return c, nil
}

// decodeConnectBody decodes everything after the protocol level.
func decodeConnectBody(d *decoder, c *Connect) error {
	v5 := c.Version >= V5
	flags, err := d.byte1("connect flags")
	if err != nil {
		return err
	}
	if err := connectFlags(d, c, flags); err != nil {
		return err
	}
	if c.KeepAlive, err = d.uint16("keep alive"); err != nil {
		return err
	}
	if v5 {
		if err := d.props(&c.Props, maskConnect, packetFields); err != nil {
			return err
		}
		if c.Props.Has(PropAuthData) && !c.Props.Has(PropAuthMethod) {
			// §3.1.2.11.10: Authentication Data without Authentication Method.
			return d.fail(ProtocolError, "authentication data", "present without authentication method")
		}
	}
	// The Client Identifier MUST be present [MQTT-3.1.3-3]; whether an
	// empty or long one is acceptable is the broker's decision.
	if c.ClientID, err = d.str("client identifier"); err != nil {
		return err
	}
	if c.WillFlag {
		if v5 {
			if err := d.props(&c.WillProps, maskWill, willFields); err != nil {
				return err
			}
		}
		if c.WillTopic, err = d.str("will topic"); err != nil { // [MQTT-3.1.3-10] UTF-8
			return err
		}
		if c.WillPayload, err = d.binary("will payload"); err != nil {
			return err
		}
	}
	if c.UsernameFlag {
		if c.Username, err = d.str("user name"); err != nil { // [MQTT-3.1.3-11]
			return err
		}
	}
	if c.PasswordFlag {
		if c.Password, err = d.binary("password"); err != nil {
			return err
		}
	}
	return d.end()
}

// connectFlags splits and checks the Connect Flags byte.
func connectFlags(d *decoder, c *Connect, flags byte) error {
	if flags&connReserved != 0 {
		return d.fail(MalformedPacket, "connect flags", "reserved bit 0 is set") // [MQTT-3.1.2-3]
	}
	c.CleanStart = flags&connCleanStart != 0
	c.WillFlag = flags&connWill != 0
	c.WillQoS = (flags & connWillQoS) >> 3
	c.WillRetain = flags&connWillRetain != 0
	c.PasswordFlag = flags&connPassword != 0
	c.UsernameFlag = flags&connUsername != 0
	if !c.WillFlag && c.WillQoS != 0 {
		// [MQTT-3.1.2-11] (5.0) / [MQTT-3.1.2-13] (3.1.1): no will, QoS must be 0.
		return d.fail(MalformedPacket, "connect flags", "will QoS set without will flag")
	}
	if !c.WillFlag && c.WillRetain {
		// [MQTT-3.1.2-13] (5.0) / [MQTT-3.1.2-15] (3.1.1): no will, retain must be 0.
		return d.fail(MalformedPacket, "connect flags", "will retain set without will flag")
	}
	if c.WillQoS == 3 {
		return d.fail(MalformedPacket, "connect flags", "will QoS 3") // [MQTT-3.1.2-12] (5.0) / [MQTT-3.1.2-14] (3.1.1)
	}
	if c.Version < V5 && c.PasswordFlag && !c.UsernameFlag {
		// [MQTT-3.1.2-22] (3.1.1); 5.0 allows a password without a user name.
		return d.fail(MalformedPacket, "connect flags", "password flag set without user name flag")
	}
	return nil
}

// v3ConnackCodes maps a 3.1.1 CONNACK return code to the v5 reason code
// whose V3Connack is that return code.
var v3ConnackCodes = [...]ReasonCode{Success, UnsupportedProtocolVersion, ClientIDNotValid,
	ServerUnavailable, BadUsernameOrPassword, NotAuthorized}

// ConnackFromV3 maps a 3.1.1 CONNACK return code (0..5) to the reason code
// Decode puts in Connack.ReasonCode; ok is false for reserved values.
// It is the inverse of ReasonCode.V3Connack on 0..5.
func ConnackFromV3(code byte) (c ReasonCode, ok bool) {
	if int(code) >= len(v3ConnackCodes) {
		return 0, false
	}
	return v3ConnackCodes[code], true
}

// decodeConnack decodes CONNACK [MQTT-3.2]. In 3.x the return code is
// mapped to the matching v5 reason code (see ConnackFromV3).
func decodeConnack(d *decoder, v5 bool) (Packet, error) {
	flags, err := d.byte1("acknowledge flags")
	if err != nil {
		return nil, err
	}
	if flags&0xFE != 0 {
		return nil, d.fail(MalformedPacket, "acknowledge flags", "reserved bits set") // [MQTT-3.2.2-1]
	}
	c := &Connack{SessionPresent: flags&1 != 0}
	if !v5 {
		rc, err := d.byte1("return code")
		if err != nil {
			return nil, err
		}
		var ok bool
		if c.ReasonCode, ok = ConnackFromV3(rc); !ok {
			return nil, d.fail(ProtocolError, "return code", "reserved return code") // 3.1.1 §3.2.2.3
		}
		return ret(c, d.end())
	}
	if c.ReasonCode, err = d.reasonCode(&connackCodes); err != nil {
		return nil, err
	}
	if err := d.props(&c.Props, maskConnack, packetFields); err != nil {
		return nil, err
	}
	return ret(c, d.end())
}
