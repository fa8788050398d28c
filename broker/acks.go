package broker

import (
	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/session"
)

// handleAck processes PUBACK, PUBREC, PUBREL and PUBCOMP from a client.
// An acknowledgement frees an inflight slot, so the queue is pumped. In a
// durable session the answers we send (PUBCOMP, PUBREL) wait until the
// state they announce is stored.
func (c *client) handleAck(a *packet.Ack) error {
	ss := c.ss
	t := c.srv.newTxn()
	cid := c.id
	switch a.Kind {
	case packet.PUBREL:
		// Incoming QoS 2, step 3: forget the id, answer PUBCOMP [MQTT-4.3.3-11].
		ss.mu.Lock()
		known := ss.st.ReleaseQoS2(a.PacketID)
		if known && ss.durable {
			t.add(session.Change{Kind: session.DelQoS2In, ClientID: cid, PacketID: a.PacketID})
		}
		ss.mu.Unlock()
		code := packet.Success
		if !known {
			code = packet.PacketIDNotFound
		}
		c.ackAfter(t, packet.Ack{Kind: packet.PUBCOMP, PacketID: a.PacketID, ReasonCode: code})
		return nil
	case packet.PUBACK, packet.PUBCOMP:
		ss.mu.Lock()
		var err error
		if a.Kind == packet.PUBACK {
			err = ss.st.Puback(a.PacketID) // QoS 1 delivery ends [MQTT-4.3.2-...]
		} else {
			err = ss.st.Pubcomp(a.PacketID)
		}
		if err == nil {
			if ss.durable {
				t.add(session.Change{Kind: session.DelInflight, ClientID: cid, PacketID: a.PacketID})
			}
			c.pumpLocked(ss, t)
		}
		ss.mu.Unlock()
		c.srv.commit(t, nil)
		if err != nil {
			c.logger().Debug("acknowledgement for unknown packet id", "packet", a.Kind.String(), "id", a.PacketID)
		}
		c.markDirty(c)
		return nil
	case packet.PUBREC:
		return c.handlePubrec(a, t)
	}
	t.release()
	return protoErr(packet.ProtocolError, "unexpected %s", a.Kind)
}

// handlePubrec is outgoing QoS 2, step 2: answer PUBREL [MQTT-4.3.3-4], or
// end the delivery when the client refused it with a failure code.
func (c *client) handlePubrec(a *packet.Ack, t *txn) error {
	ss := c.ss
	failed := a.ReasonCode.IsError()
	ss.mu.Lock()
	f, _ := ss.st.Get(a.PacketID)
	err := ss.st.Pubrec(a.PacketID, failed)
	if err == nil && ss.durable {
		if failed {
			t.add(session.Change{Kind: session.DelInflight, ClientID: c.id, PacketID: a.PacketID})
		} else {
			t.add(session.Change{Kind: session.PutInflight, ClientID: c.id, PacketID: a.PacketID,
				Phase: session.AwaitPubcomp, Seq: f.Seq})
		}
	}
	if failed {
		c.pumpLocked(ss, t)
	}
	ss.mu.Unlock()
	if failed {
		c.srv.commit(t, nil)
		c.markDirty(c)
		return nil
	}
	code := packet.Success
	if err != nil {
		code = packet.PacketIDNotFound
	}
	c.ackAfter(t, packet.Ack{Kind: packet.PUBREL, PacketID: a.PacketID, ReasonCode: code})
	return nil
}
