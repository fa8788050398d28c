package main_test

// Raw MQTT clients for TestCrashKill9. Their session state (outgoing
// messages and their phase, incoming QoS 2 packet ids awaiting PUBREL)
// lives in the test, so it survives every broker kill and reconnection
// exactly as a correct client's persistent state would.

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
)

// mconn is one MQTT connection: synchronous CONNECT/CONNACK, then a read
// loop handing every packet to a handler.
type mconn struct {
	nc   net.Conn
	v    packet.Version
	r    *packet.Reader
	wmu  sync.Mutex
	buf  []byte
	done chan struct{} // closed when the read loop ends
	err  error         // why it ended; valid once done is closed
}

// dialMQTT connects and returns the CONNACK. Any error (the broker may
// have been killed in the meantime) is returned, not reported.
func dialMQTT(addr string, c *packet.Connect) (*mconn, *packet.Connack, error) {
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, nil, err
	}
	m := &mconn{nc: nc, v: c.Version, r: packet.NewReader(nc, 0), done: make(chan struct{})}
	m.r.SetVersion(c.Version)
	if err := m.send(c); err != nil {
		nc.Close()
		return nil, nil, err
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	p, err := m.r.ReadPacket()
	nc.SetReadDeadline(time.Time{})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	ack, ok := p.(*packet.Connack)
	if !ok {
		nc.Close()
		return nil, nil, fmt.Errorf("got %s instead of CONNACK", p.Type())
	}
	if ack.ReasonCode != 0 {
		nc.Close()
		return nil, ack, fmt.Errorf("CONNACK refused: 0x%02x", byte(ack.ReasonCode))
	}
	return m, ack, nil
}

// connectPacket is a CONNECT for a session that outlives its connection
// (clean session 0; v5: clean start 0 and the longest session expiry),
// or for a clean one.
func connectPacket(v packet.Version, id string, persistent bool, receiveMax uint16) *packet.Connect {
	c := &packet.Connect{ProtocolName: "MQTT", Version: v, CleanStart: !persistent, KeepAlive: 60, ClientID: id}
	if v == packet.V5 {
		if persistent {
			c.Props.SetUint32(packet.PropSessionExpiry, 0xFFFFFFFF)
		}
		if receiveMax > 0 {
			c.Props.SetUint16(packet.PropReceiveMaximum, receiveMax)
		}
	}
	return c
}

// start runs the read loop.
func (m *mconn) start(handle func(packet.Packet)) {
	go func() {
		defer close(m.done)
		for {
			p, err := m.r.ReadPacket()
			if err != nil {
				m.err = err
				return
			}
			handle(p)
		}
	}()
}

// send writes packets in one write.
func (m *mconn) send(ps ...packet.Packet) error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	b := m.buf[:0]
	for _, p := range ps {
		var err error
		if b, err = packet.Encode(b, p, m.v); err != nil {
			return fmt.Errorf("encode %s: %w", p.Type(), err)
		}
	}
	m.buf = b
	m.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := m.nc.Write(b)
	return err
}

// waitDone waits up to d for the read loop to end and reports whether it did.
func (m *mconn) waitDone(d time.Duration) bool {
	select {
	case <-m.done:
		return true
	case <-time.After(d):
		return false
	}
}

// close closes the socket and waits for the read loop.
func (m *mconn) close() {
	m.nc.Close()
	<-m.done
}

// abnormalEnd reports a read loop end that a killed or closed peer does
// not explain (a packet the codec refuses, for instance).
func (m *mconn) abnormalEnd() error {
	err := m.err
	if err == nil || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "EOF") ||
		strings.Contains(err.Error(), "connection reset") {
		return nil
	}
	return err
}

// anomalies collects protocol violations seen by the clients' read loops.
type anomalies struct {
	mu   sync.Mutex
	list []string
}

func (a *anomalies) add(format string, args ...any) {
	a.mu.Lock()
	a.list = append(a.list, fmt.Sprintf(format, args...))
	a.mu.Unlock()
}

func (a *anomalies) all() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.list...)
}

// msgRec is what the test knows of one published message.
type msgRec struct {
	pub     string
	seq     int
	qos     byte
	retain  bool
	topic   string
	payload string
	round   int  // the round it was first sent in
	acked   bool // PUBACK (QoS 1) or PUBREC (QoS 2) with success arrived
}

// ledger records every published message by payload.
type ledger struct {
	mu   sync.Mutex
	msgs map[string]*msgRec
}

func (l *ledger) add(m *msgRec) {
	l.mu.Lock()
	l.msgs[m.payload] = m
	l.mu.Unlock()
}

func (l *ledger) ack(payload string) {
	l.mu.Lock()
	l.msgs[payload].acked = true
	l.mu.Unlock()
}

func (l *ledger) snapshot() []msgRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]msgRec, 0, len(l.msgs))
	for _, m := range l.msgs {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].pub != out[j].pub {
			return out[i].pub < out[j].pub
		}
		return out[i].seq < out[j].seq
	})
	return out
}

// outMsg is a message the publisher has sent and not completed.
type outMsg struct {
	rec *msgRec
	id  uint16
	rel bool // QoS 2: PUBREC arrived, PUBREL sent, waiting for PUBCOMP
}

func (o *outMsg) publish(dup bool) *packet.Publish {
	return &packet.Publish{Dup: dup, QoS: o.rec.qos, Retain: o.rec.retain, Topic: o.rec.topic,
		PacketID: o.id, Payload: []byte(o.rec.payload)}
}

// publisher is a QoS 1/2 publisher with a persistent session whose
// outgoing state survives reconnections.
type publisher struct {
	name     string
	v        packet.Version
	window   int
	book     *ledger
	problems *anomalies

	mu        sync.Mutex
	cond      *sync.Cond
	out       map[uint16]*outMsg
	lastID    uint16
	seq       int
	retainOut bool // a retained message is outstanding: the next waits
	durable   bool // the broker acknowledged something: its session must survive
	dead      bool // the current connection is gone
	acks      int
	connects  int
}

func newPublisher(name string, v packet.Version, window int, book *ledger, problems *anomalies) *publisher {
	p := &publisher{name: name, v: v, window: window, book: book, problems: problems, out: map[uint16]*outMsg{}}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// liveTopic is where the publisher keeps one retained message up to date.
func (p *publisher) liveTopic() string { return "crash/ret/live/" + p.name }

// next makes the next message and takes a packet id for it (p.mu held).
func (p *publisher) next(round int) *outMsg {
	p.seq++
	qos := byte(1 + p.seq%2)
	rec := &msgRec{pub: p.name, seq: p.seq, qos: qos, round: round,
		topic:   fmt.Sprintf("crash/q%d/%s/%d", qos, p.name, p.seq%3),
		payload: fmt.Sprintf("%s-q%d-%06d", p.name, qos, p.seq)}
	if p.seq%29 == 0 && !p.retainOut {
		// One retained update at a time, so that a resend never puts an
		// older value back over an acknowledged newer one.
		rec.qos, rec.retain, rec.topic = 1, true, p.liveTopic()
		rec.payload = fmt.Sprintf("%s-live-%06d", p.name, p.seq)
		p.retainOut = true
	}
	for {
		// Packet ids cycle through a small range, as many clients'
		// do: an id the broker failed to forget collides soon.
		p.lastID++
		if int(p.lastID) > 4*p.window {
			p.lastID = 1
		}
		if p.out[p.lastID] == nil {
			break
		}
	}
	o := &outMsg{rec: rec, id: p.lastID}
	p.out[o.id] = o
	p.book.add(rec)
	return o
}

// outstanding is what must be resent on a new connection, in the order
// first sent: PUBREL for messages past PUBREC, PUBLISH with DUP for the
// others [MQTT-4.4.0-1].
func (p *publisher) outstanding() []packet.Packet {
	var os []*outMsg
	for _, o := range p.out {
		os = append(os, o)
	}
	sort.Slice(os, func(i, j int) bool { return os[i].rec.seq < os[j].rec.seq })
	var ps []packet.Packet
	for _, o := range os {
		if o.rel {
			ps = append(ps, &packet.Ack{Kind: packet.PUBREL, PacketID: o.id})
		} else {
			ps = append(ps, o.publish(true))
		}
	}
	return ps
}

func (p *publisher) pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.out)
}

// handle processes the broker's answers (read loop).
func (p *publisher) handle(m *mconn, pk packet.Packet) {
	a, ok := pk.(*packet.Ack)
	if !ok {
		p.problems.add("%s: unexpected %s from the broker", p.name, pk.Type())
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	o := p.out[a.PacketID]
	var reply packet.Packet
	switch {
	case a.Kind == packet.PUBACK && o != nil && o.rec.qos == 1:
		if a.ReasonCode >= 0x80 {
			p.problems.add("%s: PUBACK 0x%02x for %s", p.name, byte(a.ReasonCode), o.rec.payload)
		} else {
			p.book.ack(o.rec.payload)
			p.durable = true
		}
		if o.rec.retain {
			p.retainOut = false
		}
		delete(p.out, a.PacketID)
	case a.Kind == packet.PUBREC && o != nil && o.rec.qos == 2:
		if a.ReasonCode >= 0x80 {
			p.problems.add("%s: PUBREC 0x%02x for %s", p.name, byte(a.ReasonCode), o.rec.payload)
			delete(p.out, a.PacketID)
			break
		}
		if !o.rel {
			p.book.ack(o.rec.payload)
			p.durable = true
			o.rel = true
		}
		reply = &packet.Ack{Kind: packet.PUBREL, PacketID: a.PacketID}
	case a.Kind == packet.PUBCOMP && o != nil && o.rel:
		delete(p.out, a.PacketID)
	default:
		what := "no message"
		if o != nil {
			what = fmt.Sprintf("%s (qos %d, rel %v)", o.rec.payload, o.rec.qos, o.rel)
		}
		p.problems.add("%s: unexpected %s for packet id %d: %s", p.name, a.Kind, a.PacketID, what)
		return
	}
	p.acks++
	p.cond.Broadcast()
	if reply != nil {
		// A failed write means the connection is gone; the read loop ends too.
		_ = m.send(reply)
	}
}

// session connects, resends what is outstanding and then either publishes
// new messages until the connection dies (publish) or waits until nothing
// is outstanding and disconnects. It reports whether it connected.
func (p *publisher) session(addr string, round int, publish bool) bool {
	m, ack, err := dialMQTT(addr, connectPacket(p.v, p.name, true, 0))
	if err != nil {
		if ack != nil {
			p.problems.add("%s: round %d: %v", p.name, round, err)
		}
		return false
	}
	p.mu.Lock()
	p.connects++
	if p.durable && !ack.SessionPresent {
		p.problems.add("%s: round %d: CONNACK without session present: the broker lost an acknowledged session", p.name, round)
	}
	p.dead = false
	resend := p.outstanding()
	p.mu.Unlock()

	m.start(func(pk packet.Packet) { p.handle(m, pk) })
	go func() {
		<-m.done
		p.mu.Lock()
		p.dead = true
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	defer func() {
		if err := m.abnormalEnd(); err != nil {
			p.problems.add("%s: round %d: read: %v", p.name, round, err)
		}
	}()
	if len(resend) > 0 && m.send(resend...) != nil {
		<-m.done
		return true
	}
	if !publish {
		stuck := time.AfterFunc(20*time.Second, func() {
			p.problems.add("%s: round %d: %d messages still unacknowledged after 20 s", p.name, round, p.pending())
			m.nc.Close()
		})
		defer stuck.Stop()
		p.mu.Lock()
		for !p.dead && len(p.out) > 0 {
			p.cond.Wait()
		}
		dead := p.dead
		p.mu.Unlock()
		if !dead {
			_ = m.send(&packet.Disconnect{})
		}
		m.close()
		return true
	}
	for {
		p.mu.Lock()
		for !p.dead && len(p.out) >= p.window {
			p.cond.Wait()
		}
		if p.dead {
			p.mu.Unlock()
			break
		}
		o := p.next(round)
		p.mu.Unlock()
		if m.send(o.publish(false)) != nil {
			break
		}
	}
	// The broker is being killed: read its last answers until the
	// connection ends.
	<-m.done
	m.nc.Close()
	return true
}

// subscriber is a persistent subscriber: a correct QoS 1/2 receiver whose
// state (QoS 2 packet ids answered with PUBREC and not yet released)
// survives reconnections, so that a resent QoS 2 message is not delivered
// twice [MQTT-4.3.3].
type subscriber struct {
	name     string
	v        packet.Version
	problems *anomalies

	mu         sync.Mutex
	pendingRel map[uint16]string // QoS 2 ids we sent PUBREC for: payload
	got        map[string]int    // deliveries per payload
	redeliv    int               // QoS 2 resends suppressed by pendingRel
	last       time.Time         // last PUBLISH received
	durable    bool              // its subscriptions were acknowledged
	subacks    chan *packet.Suback

	// ackLag > 0 holds answers back and writes them every ackLag, so that
	// messages are inflight when the broker dies.
	ackLag  time.Duration
	replies []packet.Packet
}

func newSubscriber(name string, v packet.Version, problems *anomalies) *subscriber {
	return &subscriber{name: name, v: v, problems: problems, pendingRel: map[uint16]string{},
		got: map[string]int{}, subacks: make(chan *packet.Suback, 1)}
}

func (s *subscriber) handle(m *mconn, pk packet.Packet) {
	var reply packet.Packet
	s.mu.Lock()
	switch pk := pk.(type) {
	case *packet.Publish:
		payload := string(pk.Payload)
		s.last = time.Now()
		want := byte(1)
		if strings.HasPrefix(pk.Topic, "crash/q2/") {
			want = 2
		}
		if pk.QoS != want {
			s.problems.add("%s: %s on %s came with QoS %d, want %d", s.name, payload, pk.Topic, pk.QoS, want)
		}
		switch pk.QoS {
		case 0:
			s.got[payload]++
		case 1:
			s.got[payload]++
			reply = &packet.Ack{Kind: packet.PUBACK, PacketID: pk.PacketID}
		case 2:
			if prev, ok := s.pendingRel[pk.PacketID]; ok {
				// A resend of a message we have: not a new delivery.
				s.redeliv++
				if prev != payload {
					s.problems.add("%s: packet id %d reused for %s while %s awaits PUBREL", s.name, pk.PacketID, payload, prev)
				}
			} else {
				s.got[payload]++
				s.pendingRel[pk.PacketID] = payload
			}
			reply = &packet.Ack{Kind: packet.PUBREC, PacketID: pk.PacketID}
		}
	case *packet.Ack:
		if pk.Kind != packet.PUBREL {
			s.problems.add("%s: unexpected %s id %d", s.name, pk.Kind, pk.PacketID)
			break
		}
		delete(s.pendingRel, pk.PacketID)
		reply = &packet.Ack{Kind: packet.PUBCOMP, PacketID: pk.PacketID}
	case *packet.Suback:
		select {
		case s.subacks <- pk:
		default:
			s.problems.add("%s: unexpected SUBACK", s.name)
		}
	default:
		s.problems.add("%s: unexpected %s", s.name, pk.Type())
	}
	if reply != nil && s.ackLag > 0 {
		s.replies = append(s.replies, reply)
		reply = nil
	}
	s.mu.Unlock()
	if reply != nil {
		_ = m.send(reply)
	}
}

// flushReplies writes the held-back answers every ackLag until m ends.
func (s *subscriber) flushReplies(m *mconn) {
	t := time.NewTicker(s.ackLag)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			s.mu.Lock()
			s.replies = nil // never written: the broker will resend
			s.mu.Unlock()
			return
		case <-t.C:
		}
		s.mu.Lock()
		rs := s.replies
		s.replies = nil
		s.mu.Unlock()
		if len(rs) > 0 {
			_ = m.send(rs...)
		}
	}
}

// connect opens a connection on the subscriber's session. what names the
// moment for problem reports.
func (s *subscriber) connect(addr, what string) (*mconn, error) {
	var rm uint16
	if s.v == packet.V5 {
		rm = 20 // a small Receive Maximum: fewer inflight, more queued
	}
	m, ack, err := dialMQTT(addr, connectPacket(s.v, s.name, true, rm))
	if err != nil {
		if ack != nil {
			s.problems.add("%s: %s: %v", s.name, what, err)
		}
		return nil, err
	}
	s.mu.Lock()
	if s.durable && !ack.SessionPresent {
		s.problems.add("%s: %s: CONNACK without session present: the broker lost the subscriber's session", s.name, what)
	}
	s.mu.Unlock()
	m.start(func(pk packet.Packet) { s.handle(m, pk) })
	if s.ackLag > 0 {
		go s.flushReplies(m)
	}
	return m, nil
}

// stats returns a copy of the deliveries, how many are pending PUBREL
// and when the last PUBLISH arrived.
func (s *subscriber) stats() (got map[string]int, pendingRel int, last time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	got = make(map[string]int, len(s.got))
	for k, v := range s.got {
		got[k] = v
	}
	return got, len(s.pendingRel), s.last
}
