package broker

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/ferrymq/ferrymq/broker/packet"
	"github.com/ferrymq/ferrymq/persist"
	"github.com/ferrymq/ferrymq/session"
)

// BenchmarkDurableP2P is S3's shape in process: pairs of a QoS 1
// publisher (10 in flight) and a persistent subscriber that acknowledges
// everything, on the real store (sync) and in memory. One op is one
// message delivered and acknowledged end to end. For profiles of the
// durable path: -cpuprofile.
func BenchmarkDurableP2P(b *testing.B) {
	for _, mode := range []string{"sync", "memory"} {
		b.Run(mode, func(b *testing.B) {
			var st session.Store = session.Memory{}
			if mode == "sync" {
				ps, err := persist.Open(persist.Options{Dir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					b.Fatal(err)
				}
				st = ps
			}
			benchP2P(b, st, 4)
		})
	}
}

func benchP2P(b *testing.B, st session.Store, pairs int) {
	s, _ := startStore(b, st)
	per := b.N/pairs + 1
	var wg sync.WaitGroup
	b.ResetTimer()
	for p := range pairs {
		topic := fmt.Sprintf("p2p/%d", p)
		sub, _ := connect(b, s, packet.V5, "sub"+topic, persistent(3600))
		sub.subscribe(1, packet.SubOption{Filter: topic, QoS: 1})
		pub, _ := connect(b, s, packet.V5, "pub"+topic, nil)
		wg.Add(2)
		go func() { // subscriber: read and acknowledge
			defer wg.Done()
			for range per {
				got, err := sub.readErr(10e9)
				if err != nil {
					b.Error(err)
					return
				}
				if pp, ok := got.(*packet.Publish); ok {
					sub.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pp.PacketID})
				}
			}
		}()
		go func() { // publisher: 10 in flight
			defer wg.Done()
			acked := 0
			for i := range per {
				pub.send(&packet.Publish{Topic: topic, QoS: 1, PacketID: uint16(i%60000 + 1), Payload: []byte("0123456789abcdef")})
				if i >= 10 {
					if _, err := pub.readErr(10e9); err != nil {
						b.Error(err)
						return
					}
					acked++
				}
			}
			for acked < per {
				if _, err := pub.readErr(10e9); err != nil {
					b.Error(err)
					return
				}
				acked++
			}
		}()
	}
	wg.Wait()
}
