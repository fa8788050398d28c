package amqp

import (
	"sync"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/topics"
)

// consume hands deliveries to handle until the channel ends. Deliveries
// still buffered when the link is lost are not handed over: they can no
// longer be acknowledged, and the broker redelivers them.
func (u *Upstream) consume(deliveries <-chan amqp091.Delivery, handle func(*bridge.Inbound)) {
	for d := range deliveries {
		select {
		case <-u.lost:
			continue
		default:
		}
		if err := topics.ValidTopicName(KeyToTopic(d.RoutingKey)); err != nil {
			u.reject(&d, err)
			continue
		}
		handle(u.inbound(d))
	}
	// The library closes deliveries when the channel closes (the watcher
	// reports why) and when the broker cancels the consumer (its queue
	// was deleted): either way the link is of no more use.
	if !u.sub.IsClosed() {
		u.linkDown(errCancelled)
	}
}

// reject refuses a delivery that cannot be published locally for good
// (without requeueing: the broker dead-letters it if the queue has a
// dead-letter exchange, drops it otherwise). Redelivering it would only
// fail again.
func (u *Upstream) reject(d *amqp091.Delivery, why error) {
	u.log.Warn("amqp downlink message rejected: its routing key is not an MQTT topic name",
		"routing_key", d.RoutingKey, "message_id", d.MessageId, "err", why)
	if err := d.Reject(false); err != nil {
		u.log.Debug("amqp downlink reject failed (the broker redelivers)", "routing_key", d.RoutingKey, "err", err)
	}
	u.flushNow()
}

// flushNow writes a downlink acknowledgement at once instead of within the
// coalescing delay (not the hot path). A failed write has already taken
// the link down: the broker redelivers what was not acknowledged.
func (u *Upstream) flushNow() {
	if err := u.Flush(); err != nil {
		u.log.Debug("amqp downlink flush failed (the broker redelivers)", "err", err)
	}
}

// inbound wraps a delivery for the bridge: Ack and Nack (requeue) act on
// the delivery once, whichever is called first.
func (u *Upstream) inbound(d amqp091.Delivery) *bridge.Inbound {
	in := &bridge.Inbound{Message: message(&d)}
	var once sync.Once
	in.Ack = func() {
		once.Do(func() {
			if err := d.Ack(false); err != nil {
				u.log.Debug("amqp downlink ack failed (the broker redelivers)", "topic", in.Topic, "err", err)
			}
			u.flushNow()
		})
	}
	in.Nack = func() {
		once.Do(func() {
			if err := d.Nack(false, true); err != nil {
				u.log.Debug("amqp downlink nack failed (the broker redelivers)", "topic", in.Topic, "err", err)
			}
			u.flushNow()
		})
	}
	return in
}
