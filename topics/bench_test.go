package topics

import (
	"fmt"
	"testing"
)

// benchTrie builds 100,000 device-style subscriptions: 80% exact
// ("site/<n>/dev/<m>/temp"), 15% with '+', 5% with '#'.
func benchTrie(tb testing.TB) *Trie {
	tr := NewTrie()
	metrics := []string{"temp", "hum", "co2", "power", "state"}
	for i := range 100_000 {
		site, dev := i%1000, i/1000
		var f string
		switch {
		case i < 80_000:
			f = fmt.Sprintf("site/%d/dev/%d/temp", site, dev)
		case i < 90_000:
			f = fmt.Sprintf("site/%d/dev/+/%s", site, metrics[dev%len(metrics)])
		case i < 95_000:
			f = fmt.Sprintf("site/+/dev/%d/%s", i%100, metrics[dev%len(metrics)])
		case i < 98_000:
			f = fmt.Sprintf("site/%d/#", site)
		default:
			f = fmt.Sprintf("site/%d/dev/%d/#", site, dev-91)
		}
		tr.Subscribe(Subscription{ClientID: fmt.Sprint("client-", i), Filter: f, QoS: 1})
	}
	if tr.Len() != 100_000 {
		tb.Fatalf("Len = %d", tr.Len())
	}
	return tr
}

// BenchmarkMatch matches one exact device topic against 100,000
// subscriptions with a reused Result.
func BenchmarkMatch(b *testing.B) {
	tr := benchTrie(b)
	var r Result
	b.ReportAllocs()
	for b.Loop() {
		r.Reset()
		tr.Match("site/42/dev/7/temp", &r)
	}
	b.ReportMetric(float64(len(r.Subs)), "matches")
}

// BenchmarkMatchParallel is BenchmarkMatch from GOMAXPROCS goroutines, to
// show the read lock does not serialise matching.
func BenchmarkMatchParallel(b *testing.B) {
	tr := benchTrie(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var r Result
		for pb.Next() {
			r.Reset()
			tr.Match("site/42/dev/7/temp", &r)
		}
	})
}

// BenchmarkMatchShared matches a topic reaching a 100-member shared group.
func BenchmarkMatchShared(b *testing.B) {
	tr := NewTrie()
	for i := range 100 {
		tr.Subscribe(Subscription{ClientID: fmt.Sprint("worker-", i), Filter: "$share/workers/jobs/+"})
	}
	var r Result
	b.ReportAllocs()
	for b.Loop() {
		r.Reset()
		tr.Match("jobs/42", &r)
	}
}

// BenchmarkSubscribe adds distinct device-style subscriptions to one trie.
func BenchmarkSubscribe(b *testing.B) {
	subs := make([]Subscription, b.N)
	for i := range subs {
		subs[i] = Subscription{
			ClientID: fmt.Sprint("client-", i),
			Filter:   fmt.Sprintf("site/%d/dev/%d/temp", i%1000, i/1000),
		}
	}
	tr := NewTrie()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		tr.Subscribe(subs[i])
	}
}

// BenchmarkRetainedMatch looks up filters in an index of 100,000 retained
// device topics ("site/<n>/dev/<m>/<metric>").
func BenchmarkRetainedMatch(b *testing.B) {
	ret := NewRetained[int]()
	metrics := []string{"temp", "hum", "co2", "power", "state"}
	for i := range 100_000 {
		ret.Set(fmt.Sprintf("site/%d/dev/%d/%s", i%1000, (i/1000)%20, metrics[i/20_000]), i)
	}
	if ret.Len() != 100_000 {
		b.Fatalf("Len = %d", ret.Len())
	}
	for _, filter := range []string{"site/42/dev/7/temp", "site/42/dev/+/temp", "site/+/dev/7/temp", "site/42/#"} {
		b.Run(filter, func(b *testing.B) {
			n := 0
			b.ReportAllocs()
			for b.Loop() {
				n = 0
				ret.Match(filter, func(string, int) bool { n++; return true })
			}
			b.ReportMetric(float64(n), "matches")
		})
	}
}
