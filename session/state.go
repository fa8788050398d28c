package session

import (
	"errors"
	"time"
)

// Phase is where an outbound QoS 1/2 message stands in its handshake.
type Phase uint8

// Outbound handshake phases.
const (
	AwaitPuback  Phase = iota // QoS 1 sent, waiting for PUBACK
	AwaitPubrec               // QoS 2 sent, waiting for PUBREC
	AwaitPubcomp              // PUBREL sent, waiting for PUBCOMP
)

// Inflight is an outbound QoS 1/2 message that holds a packet identifier.
type Inflight struct {
	ID    uint16
	D     Delivery
	Phase Phase
	// Seq is the delivery's number in a durable session's queue (0 in a
	// session kept in memory only).
	Seq uint64
}

// Errors returned by State.
var (
	// ErrNoPacketID means all 65535 identifiers are in use.
	ErrNoPacketID = errors.New("session: no free packet identifier")
	// ErrUnknownID means an acknowledgement named an identifier that is not
	// in flight or is in another phase.
	ErrUnknownID = errors.New("session: packet identifier not in flight")
)

// State is one client's session. It is not safe for concurrent use: the
// broker holds its lock around every call.
type State struct {
	ClientID string
	// Expiry is the Session Expiry Interval in seconds; NeverExpire for a
	// 3.1.1 persistent session without a cap.
	Expiry uint32

	nextID   uint16
	inflight map[uint16]Inflight // by value: no allocation per message
	order    []uint16            // inflight ids in send order (resend order)

	queue      []queued // FIFO of deliveries held in memory, waiting for an inflight slot or a connection
	queueHead  int
	queueBytes int64

	// Durable queue (queue.go): deliveries are numbered; those from
	// diskFrom on are only on disk (spilled) and read back in order.
	nextSeq  uint64
	diskFrom uint64
	diskLen  int      // deliveries on disk only (approximate after failed writes)
	pending  []uint64 // seqs whose durable write is not yet done, ascending

	inQoS2 map[uint16]struct{} // incoming QoS 2 ids awaiting PUBREL
}

// NeverExpire is the Session Expiry Interval that means "never" (0xFFFFFFFF).
const NeverExpire = ^uint32(0)

// New returns an empty session for clientID.
func New(clientID string) *State { return &State{ClientID: clientID} }

// nextPacketID allocates a packet identifier not in use by any outbound
// message [MQTT-2.2.1-2]. Identifiers are non-zero [MQTT-2.2.1-3].
func (s *State) nextPacketID() (uint16, error) {
	if len(s.inflight) >= 65535 {
		return 0, ErrNoPacketID
	}
	for {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if _, used := s.inflight[s.nextID]; !used {
			return s.nextID, nil
		}
	}
}

// Send moves d into the inflight window with a fresh packet identifier
// and returns that identifier.
func (s *State) Send(d Delivery) (uint16, error) { return s.SendSeq(0, d) }

// SendSeq is Send for the delivery numbered seq in a durable queue.
func (s *State) SendSeq(seq uint64, d Delivery) (uint16, error) {
	id, err := s.nextPacketID()
	if err != nil {
		return 0, err
	}
	if s.inflight == nil {
		s.inflight = make(map[uint16]Inflight)
	}
	f := Inflight{ID: id, D: d, Phase: AwaitPuback, Seq: seq}
	if d.QoS == 2 {
		f.Phase = AwaitPubrec
	}
	s.inflight[id] = f
	s.order = append(s.order, id)
	return id, nil
}

// InflightLen is the number of outbound messages holding an identifier.
func (s *State) InflightLen() int { return len(s.inflight) }

// Puback completes a QoS 1 delivery. It returns ErrUnknownID when id is not
// awaiting PUBACK.
func (s *State) Puback(id uint16) error {
	f, ok := s.inflight[id]
	if !ok || f.Phase != AwaitPuback {
		return ErrUnknownID
	}
	s.remove(id)
	return nil
}

// Get returns the inflight message with identifier id.
func (s *State) Get(id uint16) (Inflight, bool) {
	f, ok := s.inflight[id]
	return f, ok
}

// Pubrec moves a QoS 2 delivery to the PUBREL phase. A PUBREC with a
// failure code (>= 0x80) ends the delivery instead: failed reports that.
// A repeated PUBREC for a message already in the PUBREL phase is accepted.
func (s *State) Pubrec(id uint16, failed bool) error {
	f, ok := s.inflight[id]
	if !ok || f.Phase == AwaitPuback {
		return ErrUnknownID
	}
	if failed {
		s.remove(id)
		return nil
	}
	f.Phase = AwaitPubcomp
	f.D = Delivery{} // the message is no longer needed: only PUBREL is resent [MQTT-4.3.3-5]
	s.inflight[id] = f
	return nil
}

// Pubcomp completes a QoS 2 delivery.
func (s *State) Pubcomp(id uint16) error {
	f, ok := s.inflight[id]
	if !ok || f.Phase != AwaitPubcomp {
		return ErrUnknownID
	}
	s.remove(id)
	return nil
}

func (s *State) remove(id uint16) {
	delete(s.inflight, id)
	for i, v := range s.order {
		if v == id {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
	if len(s.inflight) == 0 && len(s.order) == 0 && cap(s.order) > 64 {
		s.order = nil // a burst's large slice is not kept; small ones are reused
	}
}

// Inflights calls fn for every inflight message in send order (for resend
// on reconnect [MQTT-4.4.0-1]).
func (s *State) Inflights(fn func(Inflight)) {
	for _, id := range s.order {
		fn(s.inflight[id])
	}
}

// DropExpired removes inflight messages not yet acknowledged whose message
// has expired (only in phases where the message itself would be resent),
// calling dropped (if not nil) for each. It returns how many were removed.
func (s *State) DropExpired(now time.Time, dropped func(Inflight)) int {
	n := 0
	for _, id := range append([]uint16(nil), s.order...) {
		f := s.inflight[id]
		if f.Phase != AwaitPubcomp && f.D.Msg != nil && f.D.Msg.Expired(now) {
			s.remove(id)
			n++
			if dropped != nil {
				dropped(f)
			}
		}
	}
	return n
}

// ReceiveQoS2 records an incoming QoS 2 packet identifier. It reports
// whether the id was new; a duplicate must not be routed again, only
// acknowledged [MQTT-4.3.3-9].
func (s *State) ReceiveQoS2(id uint16) (isNew bool) {
	if _, dup := s.inQoS2[id]; dup {
		return false
	}
	if s.inQoS2 == nil {
		s.inQoS2 = make(map[uint16]struct{})
	}
	s.inQoS2[id] = struct{}{}
	return true
}

// ReleaseQoS2 forgets an incoming QoS 2 id on PUBREL; it reports whether
// the id was known [MQTT-4.3.3-11].
func (s *State) ReleaseQoS2(id uint16) bool {
	if _, ok := s.inQoS2[id]; !ok {
		return false
	}
	delete(s.inQoS2, id)
	if len(s.inQoS2) == 0 {
		s.inQoS2 = nil
	}
	return true
}

// PendingQoS2 is the number of incoming QoS 2 messages awaiting PUBREL.
func (s *State) PendingQoS2() int { return len(s.inQoS2) }

// Clear drops all state (Clean Start on an existing session). Delivery
// numbers keep increasing.
func (s *State) Clear() {
	id, seq := s.ClientID, s.nextSeq
	*s = State{ClientID: id, nextSeq: seq, diskFrom: seq}
}
