package topics

import (
	"fmt"
	"math/rand"
	"sync"
	"testing"
)

// TestConcurrentTrie subscribes, unsubscribes and matches from several
// goroutines; run with -race. Each writer owns its client IDs, so at the end
// every client's subscriptions are known exactly.
func TestConcurrentTrie(t *testing.T) {
	tr := NewTrie()
	const writers, readers, ops = 4, 4, 2000
	var wg sync.WaitGroup
	final := make([]map[string]bool, writers)
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(int64(w)))
			mine := map[string]bool{}
			client := fmt.Sprint("w", w)
			for range ops {
				f := randomFilter(rng)
				if rng.Intn(3) == 0 {
					tr.Unsubscribe(client, f)
					delete(mine, f)
				} else {
					tr.Subscribe(Subscription{ClientID: client, Filter: f})
					mine[f] = true
				}
			}
			final[w] = mine
		})
	}
	for i := range readers {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(int64(100 + i)))
			var r Result
			for range ops {
				r.Reset()
				tr.Match(randomLevels(rng, false), &r)
				_ = tr.Len()
				_ = tr.Subscriptions(fmt.Sprint("w", rng.Intn(writers)))
			}
		})
	}
	wg.Wait()
	total := 0
	for w, mine := range final {
		subs := tr.Subscriptions(fmt.Sprint("w", w))
		if len(subs) != len(mine) {
			t.Errorf("writer %d: %d subscriptions, want %d", w, len(subs), len(mine))
		}
		for _, s := range subs {
			if !mine[s.Filter] {
				t.Errorf("writer %d: unexpected subscription %q", w, s.Filter)
			}
		}
		total += len(mine)
	}
	if tr.Len() != total {
		t.Errorf("Len = %d, want %d", tr.Len(), total)
	}
	for w := range writers {
		tr.UnsubscribeAll(fmt.Sprint("w", w))
	}
	if tr.Len() != 0 || tr.nodeCount() != 0 {
		t.Errorf("after UnsubscribeAll: Len %d, %d nodes", tr.Len(), tr.nodeCount())
	}
}

// TestConcurrentRetained sets, deletes and matches retained topics from
// several goroutines; the Match callback itself writes to the index, which
// must not deadlock.
func TestConcurrentRetained(t *testing.T) {
	ret := NewRetained[int]()
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(int64(g)))
			for i := range 2000 {
				topic := randomLevels(rng, false)
				switch rng.Intn(4) {
				case 0:
					ret.Delete(topic)
				case 1:
					ret.Get(topic)
				case 2:
					ret.Match(randomLevels(rng, true), func(tp string, v int) bool {
						ret.Set(tp, v+1) // re-entrant call: no lock is held
						return rng.Intn(2) == 0
					})
				default:
					ret.Set(topic, i)
				}
			}
		})
	}
	wg.Wait()
	n := 0
	ret.Match("#", func(string, int) bool { n++; return true })
	ret.Match("$SYS/#", func(string, int) bool { n++; return true })
	if n != ret.Len() {
		t.Errorf("Match(#)+Match($SYS/#) saw %d topics, Len = %d", n, ret.Len())
	}
}
