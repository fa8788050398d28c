package broker

import (
	"github.com/ferrymq/ferrymq/broker/packet"
)

// handleAck processes PUBACK, PUBREC, PUBREL and PUBCOMP from a client.
// An acknowledgement frees an inflight slot, so the queue is pumped.
func (c *client) handleAck(a *packet.Ack) error {
	ss := c.ss
	switch a.Kind {
	case packet.PUBREL:
		// Incoming QoS 2, step 3: forget the id, answer PUBCOMP [MQTT-4.3.3-11].
		ss.mu.Lock()
		known := ss.st.ReleaseQoS2(a.PacketID)
		ss.mu.Unlock()
		code := packet.Success
		if !known {
			code = packet.PacketIDNotFound
		}
		c.appendPacket(&packet.Ack{Kind: packet.PUBCOMP, PacketID: a.PacketID, ReasonCode: code})
		c.markDirty(c)
		return nil
	case packet.PUBACK, packet.PUBCOMP:
		ss.mu.Lock()
		var err error
		if a.Kind == packet.PUBACK {
			err = ss.st.Puback(a.PacketID) // [MQTT-4.3.2-... QoS 1 delivery ends]
		} else {
			err = ss.st.Pubcomp(a.PacketID)
		}
		if err == nil {
			c.pumpLocked(ss)
		}
		ss.mu.Unlock()
		if err != nil {
			c.logger().Debug("acknowledgement for unknown packet id", "packet", a.Kind.String(), "id", a.PacketID)
		}
		c.markDirty(c)
		return nil
	case packet.PUBREC:
		// Outgoing QoS 2, step 2: answer PUBREL [MQTT-4.3.3-4], or end the
		// delivery when the client refused it with a failure code.
		ss.mu.Lock()
		err := ss.st.Pubrec(a.PacketID, a.ReasonCode.IsError())
		if a.ReasonCode.IsError() {
			c.pumpLocked(ss)
		}
		ss.mu.Unlock()
		if a.ReasonCode.IsError() {
			c.markDirty(c)
			return nil
		}
		code := packet.Success
		if err != nil {
			code = packet.PacketIDNotFound
		}
		c.appendPacket(&packet.Ack{Kind: packet.PUBREL, PacketID: a.PacketID, ReasonCode: code})
		c.markDirty(c)
		return nil
	}
	return protoErr(packet.ProtocolError, "unexpected %s", a.Kind)
}
