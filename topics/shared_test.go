package topics

import (
	"fmt"
	"slices"
	"testing"
)

// TestSharedGroups proves that $share filters [MQTT-4.8.2-1] [MQTT-4.8.2-2]
// are matched by their inner filter and reported as one Group per (share
// name, inner filter), apart from non-shared subscriptions.
func TestSharedGroups(t *testing.T) {
	tr := NewTrie()
	tr.Subscribe(Subscription{ClientID: "c1", Filter: "$share/g1/sensors/+/temp", QoS: 1})
	tr.Subscribe(Subscription{ClientID: "c2", Filter: "$share/g1/sensors/+/temp", QoS: 2})
	tr.Subscribe(Subscription{ClientID: "c3", Filter: "$share/g2/sensors/+/temp"})
	tr.Subscribe(Subscription{ClientID: "c1", Filter: "$share/g1/sensors/#"})
	tr.Subscribe(Subscription{ClientID: "c4", Filter: "sensors/+/temp"})
	tr.Subscribe(Subscription{ClientID: "c5", Filter: "$share/g1/other"})
	var r Result
	tr.Match("sensors/kitchen/temp", &r)
	if got := subKeys(r.Subs); !slices.Equal(got, []string{"c4 sensors/+/temp"}) {
		t.Errorf("Subs = %v", got)
	}
	got := groupKeys(r.Groups)
	want := []string{
		"g1 sensors/# [c1]",
		"g1 sensors/+/temp [c1 c2]",
		"g2 sensors/+/temp [c3]",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Groups = %v, want %v", got, want)
	}
	for _, g := range r.Groups {
		for _, m := range g.Members {
			if m.Filter != "$share/"+g.Name+"/"+g.Filter {
				t.Errorf("member filter %q in group %s %s", m.Filter, g.Name, g.Filter)
			}
		}
	}
	if tr.Len() != 6 {
		t.Errorf("Len = %d", tr.Len())
	}
}

// TestSharedDollarRule: the inner filter follows [MQTT-4.7.2-1].
func TestSharedDollarRule(t *testing.T) {
	tr := NewTrie()
	tr.Subscribe(Subscription{ClientID: "c", Filter: "$share/g/#"})
	tr.Subscribe(Subscription{ClientID: "c", Filter: "$share/g/$SYS/#"})
	var r Result
	tr.Match("$SYS/uptime", &r)
	if got := groupKeys(r.Groups); !slices.Equal(got, []string{"g $SYS/# [c]"}) {
		t.Errorf("Groups = %v", got)
	}
}

// TestSharedMemberOrder: members stay in subscription order through
// replacement and removal (including the compaction of removed slots).
func TestSharedMemberOrder(t *testing.T) {
	tr := NewTrie()
	const n = 40
	for i := range n {
		tr.Subscribe(Subscription{ClientID: fmt.Sprintf("c%02d", i), Filter: "$share/g/t"})
	}
	tr.Subscribe(Subscription{ClientID: "c05", Filter: "$share/g/t", QoS: 2}) // replace in place
	var want []string
	for i := range n {
		id := fmt.Sprintf("c%02d", i)
		if i%3 == 0 || i > 30 {
			tr.Unsubscribe(id, "$share/g/t")
			continue
		}
		want = append(want, id)
	}
	tr.Subscribe(Subscription{ClientID: "late", Filter: "$share/g/t"})
	want = append(want, "late")
	var r Result
	tr.Match("t", &r)
	if len(r.Groups) != 1 {
		t.Fatalf("%d groups", len(r.Groups))
	}
	var got []string
	for _, m := range r.Groups[0].Members {
		got = append(got, m.ClientID)
		if m.ClientID == "c05" && m.QoS != 2 {
			t.Error("replacement lost")
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("members = %v\nwant      %v", got, want)
	}
	// The group disappears with its last member.
	for _, id := range want {
		tr.Unsubscribe(id, "$share/g/t")
	}
	r.Reset()
	tr.Match("t", &r)
	if len(r.Groups) != 0 || tr.nodeCount() != 0 {
		t.Errorf("after removing all members: %d groups, %d nodes", len(r.Groups), tr.nodeCount())
	}
}

// TestResultReuse: a reset Result reuses Members buffers without mixing
// groups up.
func TestResultReuse(t *testing.T) {
	tr := NewTrie()
	for i := range 3 {
		tr.Subscribe(Subscription{ClientID: fmt.Sprint("a", i), Filter: "$share/a/x"})
	}
	tr.Subscribe(Subscription{ClientID: "b0", Filter: "$share/b/y"})
	var r Result
	tr.Match("x", &r)
	r.Reset()
	tr.Match("y", &r)
	if got := groupKeys(r.Groups); !slices.Equal(got, []string{"b y [b0]"}) {
		t.Errorf("Groups = %v", got)
	}
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset()
		tr.Match("x", &r)
		tr.Match("y", &r)
	})
	if allocs != 0 {
		t.Errorf("Match with a warm Result allocates %v times", allocs)
	}
}

func groupKeys(groups []Group) []string {
	out := make([]string, len(groups))
	for i, g := range groups {
		ids := make([]string, len(g.Members))
		for j, m := range g.Members {
			ids[j] = m.ClientID
		}
		out[i] = fmt.Sprintf("%s %s %v", g.Name, g.Filter, ids)
	}
	slices.Sort(out)
	return out
}
