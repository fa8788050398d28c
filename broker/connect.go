package broker

import (
	"fmt"
	"strconv"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/session"
	"github.com/ferrymq/ferrymq/topics"
)

// handleConnect runs the CONNECT rules, attaches the session, sends
// CONNACK and resumes any inflight and queued deliveries.
func (c *client) handleConnect(p *packet.Connect) error {
	c.version = p.Version
	c.problemInfo = p.Version == packet.V5 &&
		(!p.Props.Has(packet.PropRequestProblemInfo) || p.Props.RequestProblemInfo == 1)
	if p.Version == packet.V5 && p.Props.Has(packet.PropMaximumPacketSize) {
		c.maxOut = p.Props.MaximumPacketSize // known before a refusing CONNACK is sized
	}
	if code, err := c.checkConnect(p); err != nil {
		c.refuse(code, err)
		return err
	}
	lim := &c.srv.cfg.Limits
	c.id = p.ClientID
	var assigned string
	if c.id == "" {
		// v5 only (checked above): the server assigns a unique id [MQTT-3.1.3-6] [MQTT-3.1.3-7].
		c.id = "ferrymq-" + strconv.FormatUint(c.srv.nextID.Add(1), 36) + "-" +
			strconv.FormatInt(c.srv.now().UnixNano()%1e9, 36)
		assigned = c.id
	}
	c.keepAlive = time.Duration(p.KeepAlive) * time.Second
	serverKeepAlive := -1
	if lim.MaxKeepAlive > 0 && (p.KeepAlive == 0 || p.KeepAlive > lim.MaxKeepAlive) {
		// v5: tell the client the value to use [MQTT-3.2.2-21]; v3 was refused in checkConnect.
		c.keepAlive = time.Duration(lim.MaxKeepAlive) * time.Second
		serverKeepAlive = int(lim.MaxKeepAlive)
	}
	c.sendQuota = int(lim.MaxInflight)
	if p.Version == packet.V5 {
		if p.Props.Has(packet.PropReceiveMaximum) && int(p.Props.ReceiveMaximum) < c.sendQuota {
			c.sendQuota = int(p.Props.ReceiveMaximum) // [MQTT-3.3.4-9]
		}
		c.aliasMaxOut = min(p.Props.TopicAliasMaximum, lim.TopicAliasMaximum)
	}
	expiry := c.sessionExpiry(p)
	c.willMsg = c.srv.willFromConnect(p)

	t := c.srv.newTxn()
	ss, present, err := c.srv.attach(c, p.CleanStart, expiry, t)
	if err != nil {
		t.release()
		c.refuse(packet.ServerUnavailable, err)
		return fmt.Errorf("%v: %w", err, packet.ServerShuttingDown)
	}
	c.connected.Store(true)
	c.srv.stats.Connections.Add(1)

	ack := &packet.Connack{SessionPresent: present} // [MQTT-3.2.2-2] [MQTT-3.2.2-3]
	if p.Version == packet.V5 {
		ack.Props = c.connackProps(p, expiry, assigned, serverKeepAlive)
	}
	c.appendPacket(ack)
	c.logger().Debug("client connected", "version", p.Version, "clean", p.CleanStart,
		"keepalive", p.KeepAlive, "session_present", present)
	c.resume(ss, t)
	c.srv.commit(t, nil)
	c.markDirty(c)
	return nil
}

// checkConnect applies the CONNECT rules the codec cannot know. It returns
// the CONNACK reason code for a refusal.
func (c *client) checkConnect(p *packet.Connect) (packet.ReasonCode, error) {
	lim := &c.srv.cfg.Limits
	if p.ClientID == "" {
		if p.Version != packet.V5 && !p.CleanStart {
			// 3.1.1: an empty client id needs Clean Session [MQTT-3.1.3-8].
			return packet.ClientIDNotValid, protoErr(packet.ClientIDNotValid, "empty client id requires clean session")
		}
		if p.Version == packet.V31 {
			return packet.ClientIDNotValid, protoErr(packet.ClientIDNotValid, "MQTT 3.1 requires a client id")
		}
	}
	if p.WillFlag {
		if err := topics.ValidTopicName(p.WillTopic); err != nil {
			return packet.TopicNameInvalid, protoErr(packet.TopicNameInvalid, "will topic: %v", err)
		}
	}
	if p.Version == packet.V5 && p.Props.AuthMethod != "" {
		// No enhanced authentication method is supported [MQTT-4.12.0-1].
		return packet.BadAuthenticationMethod, protoErr(packet.BadAuthenticationMethod,
			"authentication method %q is not supported", p.Props.AuthMethod)
	}
	if !p.UsernameFlag && (c.lc.AllowAnonymous == nil || !*c.lc.AllowAnonymous) {
		return packet.NotAuthorized, protoErr(packet.NotAuthorized, "anonymous clients are not allowed on this listener")
	}
	if p.Version != packet.V5 && lim.MaxKeepAlive > 0 && (p.KeepAlive == 0 || p.KeepAlive > lim.MaxKeepAlive) {
		// A 3.1.1 client cannot be told another keep alive: refuse it, as Mosquitto does.
		return packet.ClientIDNotValid, protoErr(packet.ClientIDNotValid,
			"keep alive %d is above max_keepalive %d", p.KeepAlive, lim.MaxKeepAlive)
	}
	return 0, nil
}

// refuse sends a CONNACK with a failure code and lets the caller close
// [MQTT-3.2.2-6] [MQTT-3.2.2-7].
func (c *client) refuse(code packet.ReasonCode, err error) {
	ack := &packet.Connack{ReasonCode: code}
	if c.version == packet.V5 && c.problemInfo {
		ack.Props.ReasonString = err.Error()
		c.fitReason(ack, &ack.Props) // [MQTT-3.2.2-19]
	}
	c.sendNow(ack)
}

// sessionExpiry is the effective Session Expiry Interval: v5 from the
// property (absent = 0) [MQTT-3.1.2-11]; 3.1.1 clean = 0, persistent =
// never; capped by limits.max_session_expiry.
func (c *client) sessionExpiry(p *packet.Connect) uint32 {
	var e uint32
	switch {
	case p.Version == packet.V5:
		e = p.Props.SessionExpiry
	case !p.CleanStart:
		e = session.NeverExpire
	}
	if m := c.srv.cfg.Limits.MaxSessionExpiry; m > 0 && e > m {
		e = m
	}
	return e
}

// connackProps are the v5 CONNACK properties telling the client our limits.
func (c *client) connackProps(p *packet.Connect, expiry uint32, assigned string, serverKeepAlive int) packet.Properties {
	lim := &c.srv.cfg.Limits
	var pr packet.Properties
	if expiry != p.Props.SessionExpiry {
		pr.SetUint32(packet.PropSessionExpiry, expiry) // [MQTT-3.2.2-... server's value]
	}
	if assigned != "" {
		pr.AssignedClientID = assigned
	}
	if serverKeepAlive >= 0 {
		pr.SetUint16(packet.PropServerKeepAlive, uint16(serverKeepAlive))
	}
	pr.SetUint16(packet.PropReceiveMaximum, lim.ReceiveMaximum)
	pr.SetUint32(packet.PropMaximumPacketSize, lim.MaxPacketSize)
	pr.SetUint16(packet.PropTopicAliasMaximum, lim.TopicAliasMaximum)
	if p.Props.RequestResponseInfo == 1 {
		pr.ResponseInfo = "response/" + c.id // a topic prefix the client may use for replies
	}
	return pr
}

// resume resends inflight messages with DUP set (PUBREL for those past
// PUBREC) [MQTT-4.4.0-1] and then delivers the queue.
func (c *client) resume(ss *sess, t *txn) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	c.wmu.Lock()
	now := c.srv.now()
	ss.st.DropExpired(now, func(f session.Inflight) {
		if ss.durable {
			t.add(session.Change{Kind: session.DelInflight, ClientID: c.id, PacketID: f.ID})
		}
	})
	var unsent []session.Inflight
	ss.st.Inflights(func(f session.Inflight) {
		if f.Phase == session.AwaitPubcomp {
			c.appendLocked(&packet.Ack{Kind: packet.PUBREL, PacketID: f.ID})
			return
		}
		if !c.encodePublishLocked(f.D, f.ID, true) && !c.closed {
			unsent = append(unsent, f)
		}
	})
	// Too large for the client's new Maximum Packet Size (or expired):
	// treated as delivered [MQTT-3.1.2-25], so it does not hold a slot.
	for _, f := range unsent {
		if f.D.QoS == 2 {
			ss.st.Pubrec(f.ID, true)
		} else {
			ss.st.Puback(f.ID)
		}
		if ss.durable {
			t.add(session.Change{Kind: session.DelInflight, ClientID: c.id, PacketID: f.ID})
		}
	}
	c.wmu.Unlock()
	c.pumpLocked(ss, t)
}

// handle dispatches one decoded packet.
func (c *client) handle(p packet.Packet) error {
	if !c.connected.Load() {
		cp, ok := p.(*packet.Connect)
		if !ok {
			return errNotConnect // [MQTT-3.1.0-1]
		}
		return c.handleConnect(cp)
	}
	switch p := p.(type) {
	case *packet.Publish:
		return c.handlePublish(p)
	case *packet.Ack:
		return c.handleAck(p)
	case *packet.Subscribe:
		return c.handleSubscribe(p)
	case *packet.Unsubscribe:
		return c.handleUnsubscribe(p)
	case *packet.Pingreq:
		c.appendPacket(&packet.Pingresp{}) // [MQTT-3.12.4-1]
		c.markDirty(c)
		return nil
	case *packet.Disconnect:
		return c.handleDisconnect(p)
	case *packet.Connect:
		return errSecondConnect
	case *packet.Auth:
		// No authentication method was accepted, so AUTH is a protocol error [MQTT-4.12.0-... ].
		return protoErr(packet.ProtocolError, "AUTH without an authentication method")
	default:
		return protoErr(packet.ProtocolError, "unexpected %s from a client", p.Type())
	}
}

// handleDisconnect processes a client's DISCONNECT: a normal one discards
// the will [MQTT-3.14.4-3], 0x04 keeps it; v5 may change the session expiry,
// but not from 0 to non-zero [MQTT-3.14.2-2].
func (c *client) handleDisconnect(p *packet.Disconnect) error {
	if c.version == packet.V5 && p.Props.Has(packet.PropSessionExpiry) {
		ss := c.ss
		ss.mu.Lock()
		if ss.st.Expiry == 0 && p.Props.SessionExpiry != 0 {
			ss.mu.Unlock()
			return protoErr(packet.ProtocolError, "session expiry set on DISCONNECT after 0 on CONNECT")
		}
		e := p.Props.SessionExpiry
		if m := c.srv.cfg.Limits.MaxSessionExpiry; m > 0 && e > m {
			e = m
		}
		ss.st.Expiry = e
		ss.mu.Unlock()
	}
	if p.ReasonCode != packet.DisconnectWithWill {
		c.takeWill()
	}
	c.cleanDisconn.Store(true)
	if p.ReasonCode.IsError() {
		c.logger().Info("client disconnected with error", "reason", p.ReasonCode.String(), "reason_string", p.Props.ReasonString)
	}
	return nil
}
