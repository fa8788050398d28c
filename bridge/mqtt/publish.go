package mqtt

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/bridge"
)

// User property names of the message id and sequence number.
const (
	IDProperty  = "ferrymq-id"
	SeqProperty = "ferrymq-seq"
)

// Publish sends m with m.QoS and calls confirm once: nil on PUBACK (QoS 1)
// or PUBCOMP (QoS 2) with a reason code below 0x80, or once written (QoS
// 0); an error wrapping bridge.ErrRejected for a reason code >= 0x80 (the
// code is in the text) or for a message this upstream cannot take (an
// invalid topic, too large for its Maximum Packet Size, retained when it
// has no retain, QoS 1/2 when it takes QoS 0 only), which is then not sent;
// an error wrapping bridge.ErrLinkLost when the link was lost first. QoS 2
// goes out as QoS 1 to an upstream whose maximum is 1 (consumers dedupe on
// the id anyway). Confirmations come in Publish order, from one goroutine.
// Publish waits, honouring ctx, while ReceiveMaximum publishes are
// unconfirmed; it returns an error (and confirm is not called) when ctx
// ends first, the link is down, or m could not be sent. When ctx ends while
// the message is being written (a half-open link whose socket buffer is
// full), the link is dropped: Publish returns and confirm gets
// bridge.ErrLinkLost.
func (u *Upstream) Publish(ctx context.Context, m *bridge.Message, confirm func(error)) error {
	if !u.ready.Load() {
		if err := u.Err(); err != nil {
			return err
		}
		return errNotConnected
	}
	p := &pending{confirm: confirm, topic: m.Topic}
	pp, perr := u.publishing(m)

	u.pubMu.Lock()
	defer u.pubMu.Unlock()
	if perr != nil {
		p.err, p.done = perr, true
		return u.enqueue(p)
	}
	if pp.QoS == 0 {
		stop := u.writeGuard(ctx, m)
		_, err := u.client.PublishWithOptions(ctx, pp, paho.PublishOptions{})
		stop()
		if err != nil {
			return u.publishFailed(m, err)
		}
		p.done = true
		return u.enqueue(p)
	}
	select {
	case u.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-u.lost:
		return u.Err()
	}
	u.cur = p
	stop := u.writeGuard(ctx, m)
	_, err := u.client.PublishWithOptions(ctx, pp, paho.PublishOptions{Method: paho.PublishMethod_AsyncSend})
	stop()
	u.cur = nil
	if !p.added {
		<-u.slots
		if err == nil {
			err = errors.New("not added to the session")
		}
		return u.publishFailed(m, err)
	}
	// Added: the confirm call follows, even when the write failed (the
	// link is then lost and the confirmation says so).
	return nil
}

// writeGuard drops the link when ctx ends before stop is called: a write
// stuck on a half-open link ends with ctx, and a packet half written cannot
// be taken back.
func (u *Upstream) writeGuard(ctx context.Context, m *bridge.Message) (stop func() bool) {
	return context.AfterFunc(ctx, func() {
		u.linkDown(fmt.Errorf("publish to %q stuck writing: %w", m.Topic, context.Cause(ctx)))
	})
}

func (u *Upstream) publishFailed(m *bridge.Message, err error) error {
	if e := u.Err(); e != nil {
		return e
	}
	return fmt.Errorf("mqtt: publish to %q: %w", m.Topic, err)
}

// enqueue queues a publish that needs no answer from the upstream for its
// confirm call, behind the earlier ones.
func (u *Upstream) enqueue(p *pending) error {
	u.mu.Lock()
	if u.down {
		err := u.err
		u.mu.Unlock()
		return err
	}
	u.queue = append(u.queue, p)
	head := len(u.queue) == 1
	u.mu.Unlock()
	if head {
		u.signal()
	}
	return nil
}

// confirmLoop calls the confirmations in Publish order: each publish at
// the head of the queue once it is done, or with the link's error once the
// link is lost. It then waits for paho's client to stop and closes done.
func (u *Upstream) confirmLoop() {
	var batch []*pending
	for {
		u.mu.Lock()
		n := 0
		for n < len(u.queue) && (u.down || u.queue[n].done) {
			n++
		}
		batch = append(batch[:0], u.queue[:n]...)
		clear(u.queue[:n])
		u.queue = u.queue[n:]
		if len(u.queue) == 0 {
			u.queue = nil
		}
		finished := u.down && len(u.queue) == 0
		linkErr := u.err
		u.mu.Unlock()

		for _, p := range batch {
			err := p.err
			if !p.done {
				err = linkErr
			}
			p.confirm(err)
		}
		clear(batch)
		if finished {
			break
		}
		if n == 0 {
			<-u.wake
		}
	}
	<-u.client.Done()
	close(u.done)
}

// publishing builds the PUBLISH for m, or says why this upstream cannot
// take it (wrapping bridge.ErrRejected: sending it anyway would make the
// upstream drop the connection, again at every resend).
func (u *Upstream) publishing(m *bridge.Message) (*paho.Publish, error) {
	reject := func(format string, args ...any) (*paho.Publish, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{bridge.ErrRejected}, args...)...)
	}
	qos := m.QoS
	switch {
	case qos > 2:
		return reject("QoS %d (topic %q)", qos, m.Topic)
	case qos > u.limits.maxQoS && u.limits.maxQoS == 0:
		return reject("the upstream takes QoS 0 only, the message has QoS %d (topic %q)", qos, m.Topic)
	case qos > u.limits.maxQoS:
		qos = u.limits.maxQoS
	}
	if m.Retain && !u.limits.retain {
		return reject("the upstream does not take retained messages (topic %q)", m.Topic)
	}
	if why := topicNameProblem(m.Topic); why != "" {
		return reject("topic %q: %s", m.Topic, why)
	}
	if m.ResponseTopic != "" {
		if why := topicNameProblem(m.ResponseTopic); why != "" {
			return reject("response topic %q: %s", m.ResponseTopic, why)
		}
	}
	props := &paho.PublishProperties{
		ResponseTopic:   m.ResponseTopic,
		CorrelationData: m.CorrelationData,
		ContentType:     m.ContentType,
		User:            make(paho.UserProperties, 0, len(m.User)+2),
	}
	if m.Expiry > 0 {
		secs := uint32(min((m.Expiry+time.Second-1)/time.Second, math.MaxUint32))
		props.MessageExpiry = &secs
	}
	if m.ID != "" {
		props.User = append(props.User, paho.UserProperty{Key: IDProperty, Value: m.ID})
	}
	if m.Seq != 0 {
		props.User = append(props.User, paho.UserProperty{Key: SeqProperty, Value: strconv.FormatUint(m.Seq, 10)})
	}
	for _, p := range m.User {
		if (p.Key == IDProperty && m.ID != "") || (p.Key == SeqProperty && m.Seq != 0) {
			continue
		}
		props.User = append(props.User, paho.UserProperty{Key: p.Key, Value: p.Value})
	}
	if why := stringsProblem(m, props); why != "" {
		return reject("%s (topic %q)", why, m.Topic)
	}
	pp := &paho.Publish{QoS: qos, Retain: m.Retain, Topic: m.Topic, Properties: props, Payload: m.Payload}
	if u.limits.maxPacket > 0 {
		if n := packetSize(pp); n > int(u.limits.maxPacket) {
			return reject("%d bytes, over the upstream's Maximum Packet Size %d (topic %q)", n, u.limits.maxPacket, m.Topic)
		}
	}
	return pp, nil
}

// topicNameProblem says what makes t an invalid MQTT topic name ("" when
// valid) [MQTT-4.7.3].
func topicNameProblem(t string) string {
	switch {
	case t == "":
		return "empty"
	case strings.ContainsAny(t, "+#"):
		return "wildcards in a topic name"
	}
	return stringProblem(t)
}

// stringProblem says what makes s an invalid MQTT UTF-8 string.
func stringProblem(s string) string {
	switch {
	case len(s) > math.MaxUint16:
		return "longer than 65535 bytes"
	case !utf8.ValidString(s):
		return "not UTF-8"
	case strings.IndexByte(s, 0) >= 0:
		return "contains U+0000"
	}
	return ""
}

// stringsProblem checks the other strings of a PUBLISH.
func stringsProblem(m *bridge.Message, props *paho.PublishProperties) string {
	if why := stringProblem(m.ContentType); why != "" {
		return "content type " + why
	}
	if len(m.CorrelationData) > math.MaxUint16 {
		return "correlation data longer than 65535 bytes"
	}
	for _, p := range props.User {
		if why := stringProblem(p.Key); why != "" {
			return fmt.Sprintf("user property name %q: %s", p.Key, why)
		}
		if why := stringProblem(p.Value); why != "" {
			return fmt.Sprintf("user property %q value: %s", p.Key, why)
		}
	}
	return ""
}

// packetSize is the encoded size of pp (with a packet identifier).
func packetSize(pp *paho.Publish) int {
	pb := pp.Packet()
	pb.PacketID = 1
	n := 0
	for _, b := range pb.Buffers() {
		n += len(b)
	}
	vbi := 1
	for x := n; x >= 128; x >>= 7 {
		vbi++
	}
	return 1 + vbi + n
}

// message converts a received PUBLISH: "ferrymq-id" -> ID and
// "ferrymq-seq" -> Seq (the first of each; a sequence that is not a
// decimal number stays a user property), the other user properties in
// order, the Message Expiry Interval -> Expiry.
func message(p *paho.Publish) bridge.Message {
	m := bridge.Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain}
	props := p.Properties
	if props == nil {
		return m
	}
	m.ResponseTopic = props.ResponseTopic
	m.CorrelationData = props.CorrelationData
	m.ContentType = props.ContentType
	if props.MessageExpiry != nil {
		m.Expiry = time.Duration(*props.MessageExpiry) * time.Second
	}
	var haveID, haveSeq bool
	for _, up := range props.User {
		switch {
		case up.Key == IDProperty && !haveID:
			m.ID, haveID = up.Value, true
			continue
		case up.Key == SeqProperty && !haveSeq:
			if s, err := strconv.ParseUint(up.Value, 10, 64); err == nil {
				m.Seq, haveSeq = s, true
				continue
			}
		}
		m.User = append(m.User, bridge.UserProperty{Key: up.Key, Value: up.Value})
	}
	return m
}
