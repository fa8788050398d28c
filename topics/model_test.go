package topics

import (
	"cmp"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
)

// naiveMatch is the reference matcher: split both strings at '/' and compare
// level by level.
func naiveMatch(filter, topic string) bool {
	fl := strings.Split(filter, "/")
	tl := strings.Split(topic, "/")
	dollar := strings.HasPrefix(topic, "$")
	for i, f := range fl {
		if i == 0 && dollar && (f == "+" || f == "#") {
			return false // [MQTT-4.7.2-1]
		}
		if f == "#" {
			return true
		}
		if i >= len(tl) || (f != "+" && f != tl[i]) {
			return false
		}
	}
	return len(fl) == len(tl)
}

// modelLevels are the levels random filters and topics are built from;
// wildcards are dropped for topics.
var modelLevels = []string{"a", "b", "", "$SYS", "+", "#"}

func randomLevels(rng *rand.Rand, wildcards bool) string {
	n := 1 + rng.Intn(4)
	levels := make([]string, n)
	for i := range levels {
		k := len(modelLevels)
		if !wildcards {
			k -= 2
		}
		levels[i] = modelLevels[rng.Intn(k)]
	}
	if s := strings.Join(levels, "/"); s != "" {
		return s
	}
	return randomLevels(rng, wildcards) // "" is neither a topic nor a filter
}

// randomFilter returns a valid filter, a quarter of them shared.
func randomFilter(rng *rand.Rand) string {
	for {
		f := randomLevels(rng, true)
		// Filters with '#' not last must be rejected, all others accepted.
		bad := strings.Contains(f, "#/")
		if err := ValidFilter(f); (err != nil) != bad {
			panic(fmt.Sprintf("ValidFilter(%q) = %v", f, err))
		}
		if bad {
			continue
		}
		if rng.Intn(4) == 0 {
			f = fmt.Sprintf("$share/g%d/%s", rng.Intn(2), f)
		}
		return f
	}
}

type modelKey struct{ client, filter string }

type modelSub struct {
	sub Subscription
	seq int
}

// trieModel is the naive reference for Trie.
type trieModel struct {
	subs map[modelKey]modelSub
	seq  int
}

func (m *trieModel) match(topic string) (subs []string, groups []string) {
	type gk struct{ name, filter string }
	members := map[gk][]modelSub{}
	for k, s := range m.subs {
		if name, inner, ok := ParseShared(k.filter); ok {
			if naiveMatch(inner, topic) {
				members[gk{name, inner}] = append(members[gk{name, inner}], s)
			}
		} else if naiveMatch(k.filter, topic) {
			subs = append(subs, fmt.Sprintf("%+v", s.sub))
		}
	}
	for g, ms := range members {
		slices.SortFunc(ms, func(a, b modelSub) int { return cmp.Compare(a.seq, b.seq) })
		groups = append(groups, fmt.Sprintf("%s %s %+v", g.name, g.filter, subsOf(ms)))
	}
	slices.Sort(subs)
	slices.Sort(groups)
	return subs, groups
}

func subsOf(ms []modelSub) []Subscription {
	out := make([]Subscription, len(ms))
	for i, m := range ms {
		out[i] = m.sub
	}
	return out
}

func trieMatch(tr *Trie, topic string, r *Result) (subs []string, groups []string) {
	r.Reset()
	tr.Match(topic, r)
	for _, s := range r.Subs {
		subs = append(subs, fmt.Sprintf("%+v", s))
	}
	for _, g := range r.Groups {
		groups = append(groups, fmt.Sprintf("%s %s %+v", g.Name, g.Filter, g.Members))
	}
	slices.Sort(subs)
	slices.Sort(groups)
	return subs, groups
}

// TestTrieModel runs random subscribe/unsubscribe/publish sequences against
// the trie and the naive model and compares every match, including shared
// groups and their member order.
func TestTrieModel(t *testing.T) {
	seeds, ops := 50, 2000
	if testing.Short() {
		seeds = 10
	}
	for seed := range seeds {
		rng := rand.New(rand.NewSource(int64(seed)))
		tr := NewTrie()
		m := &trieModel{subs: map[modelKey]modelSub{}}
		var r Result
		for op := range ops {
			if err := modelStep(rng, tr, m, &r); err != nil {
				t.Fatalf("seed %d op %d: %v", seed, op, err)
			}
		}
		for k := range m.subs {
			tr.Unsubscribe(k.client, k.filter)
		}
		if tr.Len() != 0 || tr.nodeCount() != 0 {
			t.Fatalf("seed %d: after unsubscribing all: Len %d, %d nodes", seed, tr.Len(), tr.nodeCount())
		}
	}
}

func modelStep(rng *rand.Rand, tr *Trie, m *trieModel, r *Result) error {
	client := fmt.Sprint("c", rng.Intn(6))
	switch op := rng.Intn(100); {
	case op < 40:
		s := Subscription{ClientID: client, Filter: randomFilter(rng), QoS: byte(rng.Intn(3)), ID: uint32(rng.Intn(3))}
		k := modelKey{client, s.Filter}
		old, had := m.subs[k]
		if !had {
			old.seq = m.seq
			m.seq++
		}
		m.subs[k] = modelSub{s, old.seq}
		if got := tr.Subscribe(s); got != had {
			return fmt.Errorf("Subscribe(%+v) replaced = %v, want %v", s, got, had)
		}
	case op < 65:
		f := randomFilter(rng)
		_, had := m.subs[modelKey{client, f}]
		delete(m.subs, modelKey{client, f})
		if got := tr.Unsubscribe(client, f); got != had {
			return fmt.Errorf("Unsubscribe(%s, %q) = %v, want %v", client, f, got, had)
		}
	case op < 67:
		want := 0
		for k := range m.subs {
			if k.client == client {
				delete(m.subs, k)
				want++
			}
		}
		if got := tr.UnsubscribeAll(client); got != want {
			return fmt.Errorf("UnsubscribeAll(%s) = %d, want %d", client, got, want)
		}
	default:
		topic := randomLevels(rng, false)
		ws, wg := m.match(topic)
		gs, gg := trieMatch(tr, topic, r)
		if !slices.Equal(ws, gs) || !slices.Equal(wg, gg) {
			return fmt.Errorf("Match(%q):\n got  %v %v\n want %v %v", topic, gs, gg, ws, wg)
		}
	}
	if tr.Len() != len(m.subs) {
		return fmt.Errorf("Len = %d, want %d", tr.Len(), len(m.subs))
	}
	return nil
}

// TestRetainedModel compares the retained index with a map and naiveMatch
// under random set/delete/match sequences.
func TestRetainedModel(t *testing.T) {
	seeds, ops := 50, 2000
	if testing.Short() {
		seeds = 10
	}
	for seed := range seeds {
		rng := rand.New(rand.NewSource(int64(seed)))
		ret := NewRetained[int]()
		model := map[string]int{}
		for op := range ops {
			if err := retainedStep(rng, ret, model, op); err != nil {
				t.Fatalf("seed %d op %d: %v", seed, op, err)
			}
		}
		for topic := range model {
			ret.Delete(topic)
		}
		if ret.Len() != 0 || ret.nodeCount() != 0 {
			t.Fatalf("seed %d: after deleting all: Len %d, %d nodes", seed, ret.Len(), ret.nodeCount())
		}
	}
}

func retainedStep(rng *rand.Rand, ret *Retained[int], model map[string]int, op int) error {
	topic := randomLevels(rng, false)
	switch k := rng.Intn(10); {
	case k < 4:
		model[topic] = op
		ret.Set(topic, op)
	case k < 6:
		_, had := model[topic]
		delete(model, topic)
		if got := ret.Delete(topic); got != had {
			return fmt.Errorf("Delete(%q) = %v, want %v", topic, got, had)
		}
	case k < 7:
		want, wok := model[topic]
		if got, ok := ret.Get(topic); got != want || ok != wok {
			return fmt.Errorf("Get(%q) = %d, %v; want %d, %v", topic, got, ok, want, wok)
		}
	default:
		filter := randomFilter(rng)
		if _, inner, ok := ParseShared(filter); ok {
			filter = inner
		}
		var want, got []string
		for tp, v := range model {
			if naiveMatch(filter, tp) {
				want = append(want, fmt.Sprint(tp, "=", v))
			}
		}
		ret.Match(filter, func(tp string, v int) bool {
			got = append(got, fmt.Sprint(tp, "=", v))
			return true
		})
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("Match(%q) = %v, want %v", filter, got, want)
		}
	}
	if ret.Len() != len(model) {
		return fmt.Errorf("Len = %d, want %d", ret.Len(), len(model))
	}
	return nil
}
