package bridge

import (
	"testing"
	"time"
)

// BenchmarkDrain measures the forwarder and the store alone: a backlog of
// b.N 64-byte messages, built while the (fake, instantly confirming)
// upstream is down, drained once it is up.
func BenchmarkDrain(b *testing.B) {
	h := &harness{t: b, srv: &fakeServer{}, cfg: testConfig(), dir: b.TempDir()}
	h.open()
	defer h.close()
	h.srv.setDown(true)
	payload := make([]byte, 64)
	for i := 0; i < b.N; i++ {
		if err := h.publish("sensors/t", payload, 1); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	h.srv.setDown(false)
	for h.b.Stats().BacklogMessages > 0 {
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
