package topics

import (
	"slices"
	"strings"
	"sync"
)

// Subscription is what the trie stores, one per (ClientID, Filter).
type Subscription struct {
	// ClientID identifies the session owning the subscription.
	ClientID string
	// Filter is the filter as subscribed, including any "$share/group/"
	// prefix. It is the key for Unsubscribe.
	Filter string
	// QoS is the maximum QoS granted for the subscription.
	QoS byte
	// NoLocal: do not deliver the client's own publications (v5).
	NoLocal bool
	// RetainAsPublished: keep the RETAIN flag when forwarding (v5).
	RetainAsPublished bool
	// RetainHandling is the v5 Retain Handling option (0, 1 or 2).
	RetainHandling byte
	// ID is the v5 subscription identifier, 0 = none.
	ID uint32
}

// Group is a matched shared subscription group: the broker delivers each
// message to one member.
type Group struct {
	// Name is the share name.
	Name string
	// Filter is the inner filter (without "$share/<Name>/").
	Filter string
	// Members are copies of all members' subscriptions, in subscription
	// order (a replaced subscription keeps its place).
	Members []Subscription
}

// Result collects a match. Reuse it across calls: Reset keeps the capacity
// of Subs, Groups and the Members of each group.
type Result struct {
	// Subs are the non-shared matches. A client with several matching
	// filters appears once per matching filter.
	Subs []Subscription
	// Groups has one entry per (share name, inner filter) that matches.
	Groups []Group
}

// Reset empties r, keeping its memory for the next Match. Slices read from r
// before Reset (including Group.Members) are overwritten by later matches.
func (r *Result) Reset() {
	r.Subs = r.Subs[:0]
	r.Groups = r.Groups[:0]
}

// addGroup appends a copy of g's members, reusing a Members buffer left in
// r.Groups' spare capacity by Reset.
func (r *Result) addGroup(g *group) {
	var members []Subscription
	if i := len(r.Groups); i < cap(r.Groups) {
		members = r.Groups[:i+1][i].Members[:0]
	}
	for _, e := range g.members.items {
		if e != nil {
			members = append(members, e.sub)
		}
	}
	r.Groups = append(r.Groups, Group{Name: g.name, Filter: g.filter, Members: members})
}

// entry is one stored subscription. It knows where it lives so removal needs
// no search.
type entry struct {
	sub   Subscription
	node  *node
	group *group // nil for a non-shared subscription
	idx   int    // position in node.subs.items or group.members.items
	seq   uint64 // subscription order, for Trie.Subscriptions
}

// entryList is an ordered list with O(1) amortised removal: removed slots
// become nil and the list is compacted (order kept) once they outnumber the
// live entries.
type entryList struct {
	items []*entry
	live  int
}

func (l *entryList) add(e *entry) {
	e.idx = len(l.items)
	l.items = append(l.items, e)
	l.live++
}

func (l *entryList) remove(e *entry) {
	l.items[e.idx] = nil
	l.live--
	switch {
	case l.live == 0:
		l.items = nil
	case e.idx == len(l.items)-1:
		n := e.idx
		for l.items[n-1] == nil {
			n--
		}
		l.items = l.items[:n]
	case l.live*2 < len(l.items):
		j := 0
		for _, x := range l.items {
			if x != nil {
				x.idx = j
				l.items[j] = x
				j++
			}
		}
		clear(l.items[j:])
		l.items = l.items[:j]
	}
}

// group is a shared subscription group stored at its inner filter's node.
type group struct {
	name    string
	filter  string
	members entryList
}

// node is one filter level. Wildcard children have their own fields so the
// hot path of Match needs one map lookup per level.
type node struct {
	parent   *node
	level    string
	children map[string]*node // literal levels
	plus     *node            // '+' child
	hash     *node            // '#' child
	subs     entryList        // non-shared subscriptions whose filter ends here
	groups   []*group         // shared groups whose inner filter ends here
}

func (n *node) empty() bool {
	return n.subs.live == 0 && len(n.groups) == 0 && len(n.children) == 0 &&
		n.plus == nil && n.hash == nil
}

// child returns the child for level, creating it when create is set.
func (n *node) child(level string, create bool) *node {
	var slot **node
	switch level {
	case "+":
		slot = &n.plus
	case "#":
		slot = &n.hash
	default:
		if c := n.children[level]; c != nil || !create {
			return c
		}
		c := &node{parent: n, level: strings.Clone(level)}
		if n.children == nil {
			n.children = make(map[string]*node)
		}
		n.children[c.level] = c
		return c
	}
	if *slot == nil && create {
		*slot = &node{parent: n, level: level}
	}
	return *slot
}

// removeChild unlinks the empty child c.
func (n *node) removeChild(c *node) {
	switch c.level {
	case "+":
		n.plus = nil
	case "#":
		n.hash = nil
	default:
		delete(n.children, c.level)
		if len(n.children) == 0 {
			n.children = nil
		}
	}
}

// collect appends every subscription stored at n to r.
func (n *node) collect(r *Result) {
	for _, e := range n.subs.items {
		if e != nil {
			r.Subs = append(r.Subs, e.sub)
		}
	}
	for _, g := range n.groups {
		r.addGroup(g)
	}
}

// Trie is the subscription index. It is safe for concurrent use: Match takes
// a read lock, the other methods that modify it the write lock.
type Trie struct {
	mu      sync.RWMutex
	root    node
	clients map[string]map[string]*entry // client ID -> filter -> entry
	count   int
	seq     uint64
}

// NewTrie returns an empty trie.
func NewTrie() *Trie {
	return &Trie{clients: make(map[string]map[string]*entry)}
}

// Subscribe stores s, keyed by (s.ClientID, s.Filter). A subscription with
// the same client and identical filter is replaced, keeping its place in its
// shared group, and replaced is true [MQTT-3.8.4-3]. s.Filter should have
// passed ValidFilter; a "$share/<group>/<filter>" filter joins that group.
func (t *Trie) Subscribe(s Subscription) (replaced bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	byFilter := t.clients[s.ClientID]
	if e := byFilter[s.Filter]; e != nil {
		e.sub = s // [MQTT-3.8.4-3]
		return true
	}
	name, inner, shared := ParseShared(s.Filter)
	path := s.Filter
	if shared {
		path = inner // stored under the inner filter [MQTT-4.8.2-2]
	}
	n := &t.root
	for rest, more := path, true; more; {
		var level string
		level, rest, more = cut(rest)
		n = n.child(level, true)
	}
	e := &entry{sub: s, node: n, seq: t.seq}
	t.seq++
	if shared {
		e.group = n.group(name, inner)
		e.group.members.add(e)
	} else {
		n.subs.add(e)
	}
	if byFilter == nil {
		byFilter = make(map[string]*entry)
		t.clients[s.ClientID] = byFilter
	}
	byFilter[s.Filter] = e
	t.count++
	return false
}

// group returns n's shared group called name, creating it.
func (n *node) group(name, inner string) *group {
	for _, g := range n.groups {
		if g.name == name {
			return g
		}
	}
	g := &group{name: strings.Clone(name), filter: strings.Clone(inner)}
	n.groups = append(n.groups, g)
	return g
}

// Unsubscribe removes the subscription of clientID whose filter is exactly
// filter (as subscribed, including any $share prefix) and reports whether it
// existed. Nodes left empty are pruned.
func (t *Trie) Unsubscribe(clientID, filter string) (existed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	byFilter := t.clients[clientID]
	e := byFilter[filter]
	if e == nil {
		return false
	}
	t.remove(e)
	delete(byFilter, filter)
	if len(byFilter) == 0 {
		delete(t.clients, clientID)
	}
	return true
}

// UnsubscribeAll removes every subscription of clientID and returns how many
// there were. It costs O(that number), not O(trie size).
func (t *Trie) UnsubscribeAll(clientID string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	byFilter := t.clients[clientID]
	for _, e := range byFilter {
		t.remove(e)
	}
	delete(t.clients, clientID)
	return len(byFilter)
}

// remove unlinks e from its node or group and prunes empty nodes. The caller
// maintains t.clients.
func (t *Trie) remove(e *entry) {
	n := e.node
	if g := e.group; g != nil {
		g.members.remove(e)
		if g.members.live == 0 {
			i := slices.Index(n.groups, g)
			n.groups = slices.Delete(n.groups, i, i+1)
			if len(n.groups) == 0 {
				n.groups = nil
			}
		}
	} else {
		n.subs.remove(e)
	}
	for n != &t.root && n.empty() {
		n.parent.removeChild(n)
		n = n.parent
	}
	t.count--
}

// Subscriptions returns copies of clientID's subscriptions in the order they
// were first made.
func (t *Trie) Subscriptions(clientID string) []Subscription {
	t.mu.RLock()
	byFilter := t.clients[clientID]
	entries := make([]*entry, 0, len(byFilter))
	for _, e := range byFilter {
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b *entry) int { return compareSeq(a.seq, b.seq) })
	out := make([]Subscription, len(entries))
	for i, e := range entries {
		out[i] = e.sub
	}
	t.mu.RUnlock()
	return out
}

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Len returns the number of stored subscriptions, shared ones included.
func (t *Trie) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.count
}

// Match appends to r every subscription whose filter matches topic: the
// non-shared ones to r.Subs, and one Group per matching (share name, inner
// filter) to r.Groups. It does not Reset r. topic should have passed
// ValidTopicName; an empty topic matches nothing.
func (t *Trie) Match(topic string, r *Result) {
	if topic == "" {
		return
	}
	t.mu.RLock()
	// Filters starting with a wildcard do not match "$..." topics [MQTT-4.7.2-1].
	t.root.match(topic, true, topic[0] == '$', r)
	t.mu.RUnlock()
}

// match visits n, whose path has matched the topic's levels so far. rest
// holds the remaining levels when more is true; dollar is set only at the
// root, for a topic starting with '$'.
func (n *node) match(rest string, more, dollar bool, r *Result) {
	if !more {
		n.collect(r)
		if n.hash != nil {
			n.hash.collect(r) // "sport/#" matches "sport" [MQTT-4.7.1-1]
		}
		return
	}
	if n.hash != nil && !dollar { // [MQTT-4.7.2-1]
		n.hash.collect(r)
	}
	level, next, hasNext := cut(rest)
	if c := n.children[level]; c != nil {
		c.match(next, hasNext, false, r)
	}
	if n.plus != nil && !dollar { // [MQTT-4.7.2-1]
		n.plus.match(next, hasNext, false, r)
	}
}

// nodeCount returns the number of nodes below the root (tests).
func (t *Trie) nodeCount() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.root.count()
}

func (n *node) count() int {
	c := 0
	for _, ch := range n.children {
		c += 1 + ch.count()
	}
	for _, ch := range []*node{n.plus, n.hash} {
		if ch != nil {
			c += 1 + ch.count()
		}
	}
	return c
}
