package mqtt

import (
	"io"
	"sync"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/bridge"
)

// inRecord is a received QoS 1/2 PUBLISH awaiting Inbound.Ack.
type inRecord struct {
	id      uint16
	qos     byte
	claimed bool // received handed it to an Inbound
	acked   bool
}

// received is paho's OnPublishReceived callback, on its router goroutine,
// in order of receipt: it hands the message to the deliver goroutine (so
// that a slow handle never keeps paho from stopping).
func (u *Upstream) received(pr paho.PublishReceived) (bool, error) {
	in := &bridge.Inbound{Message: message(pr.Packet)}
	var rec *inRecord
	if pr.Packet.QoS > 0 {
		u.ackMu.Lock()
		for _, r := range u.inAcks {
			if r.id == pr.Packet.PacketID && !r.claimed {
				r.claimed, rec = true, r
				break
			}
		}
		u.ackMu.Unlock()
	}
	var once sync.Once
	in.Ack = func() {
		once.Do(func() {
			if rec != nil {
				u.ackDown(rec)
			}
		})
	}
	in.Nack = func() {
		once.Do(func() {
			if rec != nil {
				// An MQTT client cannot refuse a message and keep it
				// upstream: any PUBACK, even with a failure code, makes
				// the upstream forget it. Dropping the link without
				// acknowledging makes it resend the message (and those
				// after it) on the next connection.
				u.linkDown(errNacked)
			}
		})
	}
	select {
	case u.delivers <- in:
	case <-u.lost:
	}
	return true, nil
}

// deliver calls handle for each received message, in order, until the link
// is lost: messages not delivered by then are not acknowledged, and the
// upstream resends them on the next connection.
func (u *Upstream) deliver() {
	for {
		select {
		case in := <-u.delivers:
			select {
			case <-u.lost:
				return
			default:
			}
			if u.handle != nil {
				u.handle(in)
			}
		case <-u.lost:
			return
		}
	}
}

// ackDown marks rec acknowledged and sends the acknowledgements (PUBACK
// for QoS 1, PUBREC for QoS 2) of the acknowledged messages at the head,
// in order of receipt as MQTT requires [MQTT-4.6.0-2], in one write.
func (u *Upstream) ackDown(rec *inRecord) {
	u.ackMu.Lock()
	defer u.ackMu.Unlock()
	rec.acked = true
	n := 0
	for n < len(u.inAcks) && u.inAcks[n].acked {
		n++
	}
	if n == 0 {
		return
	}
	acks := make([]interface {
		WriteTo(io.Writer) (int64, error)
	}, n)
	for i, r := range u.inAcks[:n] {
		if r.qos == 1 {
			acks[i] = &packets.Puback{PacketID: r.id, Properties: &packets.Properties{}}
		} else {
			acks[i] = &packets.Pubrec{PacketID: r.id, Properties: &packets.Properties{}}
		}
	}
	clear(u.inAcks[:n])
	u.inAcks = u.inAcks[n:]
	if len(u.inAcks) == 0 {
		u.inAcks = nil
	}
	u.mu.Lock()
	w, down := u.w, u.down
	u.mu.Unlock()
	if !down {
		w.send(acks...)
	}
}
