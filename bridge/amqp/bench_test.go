package amqp

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/ferrymq/ferrymq/bridge"
)

// BenchmarkPublish measures forwarding throughput as the bridge does it:
// 256 messages unconfirmed at a time, 256-byte payloads, persistent, into a
// durable queue (so each confirmation waits for RabbitMQ's disk write).
// It reports msgs/s.
func BenchmarkPublish(b *testing.B) {
	const window = 256
	e := newEnv(b)
	e.durableQueue("bench.#")
	u := connect(b, e.config(), nil)
	m := &bridge.Message{Topic: "bench/x", Payload: make([]byte, 256), QoS: 1, ID: "bench"}
	slots := make(chan struct{}, window)
	var failed atomic.Int64
	confirm := func(err error) {
		if err != nil {
			failed.Add(1)
		}
		<-slots
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(m.Payload)))
	b.ResetTimer()
	for range b.N {
		slots <- struct{}{}
		m.Seq++
		if err := u.Publish(ctx, m, confirm); err != nil {
			b.Fatalf("Publish: %v", err)
		}
	}
	for range window { // the last confirmations, timed too
		slots <- struct{}{}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d confirmations failed", n, b.N)
	}
}
