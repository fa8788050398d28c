package bridge

import (
	"strings"
	"sync"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/session"
)

// handleInbound publishes a downlink message locally with the first
// receive rule that maps its topic, and acknowledges it upstream only once
// it is durable here (Nack otherwise: the upstream keeps it). A message no
// rule maps is acknowledged and counted: it can never be delivered.
func (b *Bridge) handleInbound(in *Inbound) {
	if in.ID != "" && strings.HasPrefix(in.ID, b.idPrefix()) {
		// Our own forwarded message, routed back to us by the upstream
		// (an AMQP binding that also matches what we publish; MQTT
		// subscriptions use No Local): never publish it here again.
		b.stats.DroppedEcho.Add(1)
		in.Ack()
		return
	}
	i, topic := FirstMatch(b.recv, in.Topic)
	if i < 0 {
		b.stats.DroppedUnmapped.Add(1)
		b.log.Warn("downlink message matches no receive rule; dropped", "topic", in.Topic)
		in.Ack()
		return
	}
	m := fromMessage(&in.Message, b.opts.Now())
	m.Topic, m.Origin = topic, b.origin
	m.QoS = min(max(in.QoS, 1), b.recvQS[i])
	if b.recvQS[i] == 0 {
		m.QoS = 0
	}
	b.inject.add()
	b.opts.Inject(m, func(err error) {
		defer b.inject.done()
		if err != nil {
			b.log.Warn("downlink message not stored; the upstream keeps it", "topic", topic, "err", err)
			in.Nack()
			return
		}
		b.stats.Received.Add(1)
		in.Ack()
	})
}

// fromMessage converts an upstream message to a local one.
func fromMessage(in *Message, now time.Time) *session.Message {
	m := &session.Message{Topic: in.Topic, Payload: in.Payload, QoS: in.QoS, Retain: in.Retain}
	p := &m.Props
	p.ResponseTopic, p.ContentType = in.ResponseTopic, in.ContentType
	if in.CorrelationData != nil {
		p.CorrelationData = in.CorrelationData
		p.Mark(packet.PropCorrelationData)
	}
	for _, u := range in.User {
		p.User = append(p.User, packet.UserProperty{Key: u.Key, Value: u.Value})
	}
	if in.Expiry > 0 {
		m.Expiry = now.Add(in.Expiry)
	}
	return m
}

// stopSettle bounds how long a stopping bridge waits for the downlink
// messages it handed to the broker to be stored, so that their
// acknowledgements still reach the upstream before the link closes.
const stopSettle = 2 * time.Second

// injecting counts downlink messages handed to Inject and not yet answered
// (stored or refused).
type injecting struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n reaches 0 while wait waits
}

func (p *injecting) add() {
	p.mu.Lock()
	p.n++
	p.mu.Unlock()
}

func (p *injecting) done() {
	p.mu.Lock()
	p.n--
	if p.n == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	p.mu.Unlock()
}

// wait returns once nothing is pending, or after timeout (false).
func (p *injecting) wait(timeout time.Duration) bool {
	p.mu.Lock()
	if p.n == 0 {
		p.mu.Unlock()
		return true
	}
	if p.idle == nil {
		p.idle = make(chan struct{})
	}
	idle := p.idle
	p.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-idle:
		return true
	case <-t.C:
		return false
	}
}
