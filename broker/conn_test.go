package broker

import (
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/broker/packet"
)

// The read deadline is moved lazily (at most once a second); a client that
// keeps sending within its keep alive must never be timed out by it
// [MQTT-3.1.2-24].
func TestKeepAliveNotEarly(t *testing.T) {
	s := startServer(t, nil)
	c, _ := connect(t, s, packet.V311, "pinger", func(p *packet.Connect) { p.KeepAlive = 1 })
	end := time.Now().Add(3 * time.Second)
	for time.Now().Before(end) {
		c.send(&packet.Pingreq{})
		if _, ok := c.read().(*packet.Pingresp); !ok {
			t.Fatal("no PINGRESP")
		}
		time.Sleep(400 * time.Millisecond) // the client's own pacing, below 1.5 x 1 s
	}
	if got := s.Stats().Connections; got != 1 {
		t.Fatalf("connections = %d, the pinging client was dropped", got)
	}
}

// A header announcing a large packet followed by silence must not make the
// connection allocate the whole announced size up front.
func TestLargePartialPacketGrowsLazily(t *testing.T) {
	s := startServer(t, func(c *Config) { c.Limits.MaxPacketSize = 8 << 20 })
	c, _ := connect(t, s, packet.V311, "big", nil)
	// PUBLISH QoS 0, remaining length 4 MiB (varint 0x80 0x80 0x80 0x02), then a few bytes.
	c.write([]byte{0x30, 0x80, 0x80, 0x80, 0x02, 0x00, 0x01, 'a', 1, 2, 3})
	ss := s.lookup("big")
	var capNow int
	waitFor(t, "partial packet buffered", func() bool {
		ss.mu.Lock()
		cl := ss.c
		ss.mu.Unlock()
		if cl == nil {
			return false
		}
		capNow = int(cl.bigBuf.Load())
		return capNow > 0
	})
	if capNow > 64<<10 {
		t.Fatalf("read buffer cap %d for a stalled 4 MiB packet; want <= 64 KiB", capNow)
	}
}
