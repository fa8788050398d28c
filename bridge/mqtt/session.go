package mqtt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/eclipse/paho.golang/packets"
	paholog "github.com/eclipse/paho.golang/paho/log"
	pahosession "github.com/eclipse/paho.golang/paho/session"

	"github.com/ferrymq/ferrymq/bridge"
)

// session is the Upstream seen as paho's session.SessionManager: the
// client-side MQTT session state of one connection. It is empty when the
// Upstream is built and forgotten with it, so nothing paho or an earlier
// connection left is ever resent: the bridge resends from its outbox.
type session Upstream

var _ pahosession.SessionManager = (*session)(nil)

// pending is one Publish until its confirm call.
type pending struct {
	confirm func(error)
	topic   string
	err     error  // the result, once done
	id      uint16 // packet identifier (QoS 1/2, once added)
	done    bool   // the upstream answered, or no answer is needed
	added   bool   // AddToSession took it: it is in out and queue
}

// ConAckReceived sets the connection's limits from the CONNACK: the window
// of unconfirmed publishes (Receive Maximum, at most Config.MaxInflight)
// and the packet identifiers 1..window. Nothing is resent.
func (s *session) ConAckReceived(_ io.Writer, _ *packets.Connect, ca *packets.Connack) error {
	u := (*Upstream)(s)
	l := limits{window: math.MaxUint16, maxQoS: 2, retain: true, sessionPresent: ca.SessionPresent, sessionExpiry: u.cfg.SessionExpiry}
	if p := ca.Properties; p != nil {
		if p.SessionExpiryInterval != nil {
			l.sessionExpiry = *p.SessionExpiryInterval
		}
		if p.ReceiveMaximum != nil && *p.ReceiveMaximum > 0 {
			l.window = int(*p.ReceiveMaximum)
		}
		if p.MaximumQOS != nil {
			l.maxQoS = *p.MaximumQOS
		}
		if p.RetainAvailable != nil {
			l.retain = *p.RetainAvailable != 0
		}
		if p.MaximumPacketSize != nil {
			l.maxPacket = *p.MaximumPacketSize
		}
	}
	l.window = min(l.window, u.cfg.MaxInflight)
	u.limits = l
	u.slots = make(chan struct{}, l.window)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.freeIDs = make([]uint16, l.window)
	for i := range u.freeIDs {
		u.freeIDs[i] = uint16(i + 1)
	}
	u.out = make(map[uint16]*pending, l.window)
	u.requests = make(map[uint16]chan<- packets.ControlPacket)
	return nil
}

// ConnectionLost is called by paho when the upstream sent DISCONNECT (dp)
// and when the client stops (nil: the cause was recorded already, by the
// reader, the pinger or Close).
func (s *session) ConnectionLost(dp *packets.Disconnect) error {
	u := (*Upstream)(s)
	if dp == nil {
		u.linkDown(errors.New("connection lost"))
		return nil
	}
	rs := ""
	if dp.Properties != nil {
		rs = dp.Properties.ReasonString
	}
	u.linkDown(fmt.Errorf("the upstream sent DISCONNECT, reason %s", reasonText(dp.ReasonCode, rs)))
	return nil
}

// AddToSession gives a packet identifier to a SUBSCRIBE (its SUBACK goes
// to resp) or to the PUBLISH of the Publish in progress (u.cur), which is
// then awaited in out and queued for its confirm call. It never waits:
// Publish took a slot of the window already.
func (s *session) AddToSession(_ context.Context, p pahosession.Packet, resp chan<- packets.ControlPacket) error {
	u := (*Upstream)(s)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.down {
		return pahosession.ErrNoConnection
	}
	pd := u.cur
	if p.Type() == packets.PUBLISH && pd == nil {
		return errors.New("mqtt: PUBLISH outside Publish")
	}
	if len(u.freeIDs) == 0 {
		return pahosession.ErrPacketIdentifiersExhausted
	}
	id := u.freeIDs[0]
	u.freeIDs = u.freeIDs[1:]
	p.SetIdentifier(id)
	if p.Type() != packets.PUBLISH {
		u.requests[id] = resp
		return nil
	}
	pd.id, pd.added = id, true
	u.out[id] = pd
	u.queue = append(u.queue, pd)
	return nil
}

// PacketReceived handles every packet that carries a packet identifier:
// acknowledgements of our publishes, SUBACK/UNSUBACK, PUBREL, and QoS 1/2
// PUBLISHes, which are recorded for Inbound.Ack and passed on to paho's
// router (pubs). It runs on paho's reader goroutine.
func (s *session) PacketReceived(cp *packets.ControlPacket, pubs chan<- *packets.Publish) error {
	u := (*Upstream)(s)
	switch p := cp.Content.(type) {
	case *packets.Puback:
		u.finish(p.PacketID, p.ReasonCode, "PUBACK", p.Properties, true)
	case *packets.Pubrec:
		if p.ReasonCode >= 0x80 {
			// The flow ends here: no PUBREL [MQTT-4.3.3-4].
			u.finish(p.PacketID, p.ReasonCode, "PUBREC", p.Properties, true)
			return nil
		}
		u.mu.Lock()
		_, known := u.out[p.PacketID]
		w := u.w
		u.mu.Unlock()
		rel := &packets.Pubrel{PacketID: p.PacketID, Properties: &packets.Properties{}}
		if !known {
			rel.ReasonCode = 0x92 // packet identifier not found
		}
		w.send(rel)
	case *packets.Pubcomp:
		if u.swept1(p.PacketID) {
			return nil
		}
		// PUBCOMP can only say 0x92 (the upstream forgot the id after its
		// PUBREC accepted the message): not a refusal of the message.
		u.finish(p.PacketID, p.ReasonCode, "PUBCOMP", p.Properties, false)
	case *packets.Suback, *packets.Unsuback:
		u.mu.Lock()
		id := cp.PacketID()
		r, ok := u.requests[id]
		if ok {
			delete(u.requests, id)
			u.freeIDs = append(u.freeIDs, id)
		}
		u.mu.Unlock()
		if ok {
			r <- *cp
		}
	case *packets.Pubrel:
		// Our PUBREC went out on Inbound.Ack: the message is stored.
		u.mu.Lock()
		w := u.w
		u.mu.Unlock()
		w.send(&packets.Pubcomp{PacketID: p.PacketID, Properties: &packets.Properties{}})
	case *packets.Publish:
		if p.QoS > 0 {
			u.ackMu.Lock()
			u.inAcks = append(u.inAcks, &inRecord{id: p.PacketID, qos: p.QoS})
			u.ackMu.Unlock()
		}
		pubs <- p
	}
	return nil
}

// finish records the upstream's answer to the publish with packet
// identifier id and frees the identifier and its slot. A reason code >=
// 0x80 is a rejection (wrapping bridge.ErrRejected when permanent).
func (u *Upstream) finish(id uint16, code byte, what string, props *packets.Properties, permanent bool) {
	u.mu.Lock()
	p, ok := u.out[id]
	if !ok || u.down {
		u.mu.Unlock()
		return
	}
	delete(u.out, id)
	u.freeIDs = append(u.freeIDs, id)
	p.done = true
	if code >= 0x80 {
		rs := ""
		if props != nil {
			rs = props.ReasonString
		}
		if permanent {
			p.err = fmt.Errorf("%w: %s reason %s (topic %q)", bridge.ErrRejected, what, reasonText(code, rs), p.topic)
		} else {
			p.err = fmt.Errorf("mqtt: %s reason %s (topic %q)", what, reasonText(code, rs), p.topic)
		}
	}
	head := u.queue[0] == p
	u.mu.Unlock()
	<-u.slots
	if head {
		u.signal()
	}
}

// Ack is paho's hook after its handlers ran: a no-op, since we
// acknowledge on Inbound.Ack (ackDown).
func (s *session) Ack(*packets.Publish) error { return nil }

// Close is not called: paho closes only a session it created.
func (s *session) Close() error { return nil }

// SetErrorLogger is a no-op: errors reach the Upstream's log as link
// losses and confirmations.
func (s *session) SetErrorLogger(paholog.Logger) {}

// SetDebugLogger is a no-op.
func (s *session) SetDebugLogger(paholog.Logger) {}

// sweepQoS2 sends a PUBREL for every packet identifier of the window and
// waits for their PUBCOMPs. When the upstream kept our session, it may
// hold QoS 2 publishes of an earlier connection that it acknowledged with
// PUBREC but never saw released; a new PUBLISH reusing such an identifier
// would be taken for a duplicate and dropped [MQTT-4.3.3-10] while we
// confirm it. The earlier connection used identifiers of the window only
// (see ConAckReceived), so releasing them all is enough. An unknown
// identifier gets PUBCOMP 0x92; a released message is delivered, and is
// also resent by the bridge (consumers dedupe on ferrymq-id). This costs
// about 4 bytes per identifier on every reconnect with a session present.
func (u *Upstream) sweepQoS2(ctx context.Context) error {
	n := u.limits.window
	rels := make([]interface {
		WriteTo(io.Writer) (int64, error)
	}, n)
	u.mu.Lock()
	u.sweep = make(map[uint16]struct{}, n)
	u.swept = make(chan struct{})
	for i := range n {
		id := uint16(i + 1)
		u.sweep[id] = struct{}{}
		rels[i] = &packets.Pubrel{PacketID: id, Properties: &packets.Properties{}}
	}
	swept, w := u.swept, u.w
	u.mu.Unlock()
	w.send(rels...)
	select {
	case <-swept:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-u.lost:
		return u.Err()
	}
}

// swept1 reports whether PUBCOMP id answers a PUBREL of the sweep.
func (u *Upstream) swept1(id uint16) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.sweep[id]; !ok {
		return false
	}
	delete(u.sweep, id)
	if len(u.sweep) == 0 {
		close(u.swept)
	}
	return true
}
