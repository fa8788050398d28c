package topics

import (
	"strings"
	"sync"
)

// Retained is the retained-message index: at most one value per topic name,
// stored in a level trie so that a filter lookup walks only the branches the
// filter can match. V is whatever the broker keeps for a retained message.
// It is safe for concurrent use.
type Retained[V any] struct {
	mu   sync.RWMutex
	root rnode[V]
	n    int
	bufs sync.Pool // *[]retainedItem[V], Match's collection buffers
}

// maxPooledItems bounds the buffers kept for reuse by Match, so one huge
// match does not pin its memory.
const maxPooledItems = 4096

// rnode is one topic level of the retained index.
type rnode[V any] struct {
	parent   *rnode[V]
	level    string
	children map[string]*rnode[V]
	topic    string // full topic name, when set
	v        V
	set      bool
}

// retainedItem is one match collected under the read lock.
type retainedItem[V any] struct {
	topic string
	v     V
}

// NewRetained returns an empty index.
func NewRetained[V any]() *Retained[V] {
	return &Retained[V]{}
}

// Set stores v as the retained value of topic, replacing any previous one.
// topic should have passed ValidTopicName.
func (r *Retained[V]) Set(topic string, v V) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := &r.root
	for rest, more := topic, true; more; {
		var level string
		level, rest, more = cut(rest)
		c := n.children[level]
		if c == nil {
			c = &rnode[V]{parent: n, level: strings.Clone(level)}
			if n.children == nil {
				n.children = make(map[string]*rnode[V])
			}
			n.children[c.level] = c
		}
		n = c
	}
	if !n.set {
		n.set = true
		n.topic = strings.Clone(topic)
		r.n++
	}
	n.v = v
}

// find returns the node of topic, or nil. The caller holds the lock.
func (r *Retained[V]) find(topic string) *rnode[V] {
	n := &r.root
	for rest, more := topic, true; more && n != nil; {
		var level string
		level, rest, more = cut(rest)
		n = n.children[level]
	}
	return n
}

// Delete removes the retained value of topic and reports whether there was
// one. Nodes left empty are pruned.
func (r *Retained[V]) Delete(topic string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.find(topic)
	if n == nil || !n.set {
		return false
	}
	var zero V
	n.v, n.set, n.topic = zero, false, ""
	r.n--
	for n != &r.root && !n.set && len(n.children) == 0 {
		p := n.parent
		delete(p.children, n.level)
		if len(p.children) == 0 {
			p.children = nil
		}
		n = p
	}
	return true
}

// Get returns the retained value of topic.
func (r *Retained[V]) Get(topic string) (V, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if n := r.find(topic); n != nil && n.set {
		return n.v, true
	}
	var zero V
	return zero, false
}

// Len returns the number of retained topics.
func (r *Retained[V]) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.n
}

// Match calls fn for every retained topic matching filter, in no particular
// order, until fn returns false. The usual wildcard rules apply, including
// that a filter starting with '+' or '#' does not match topics starting with
// '$' [MQTT-4.7.2-1]. filter is a plain filter: strip a "$share/<group>/"
// prefix with ParseShared first if needed.
//
// The matches are collected under the read lock and fn is called after it
// is released, so fn may call any method of r (it sees a snapshot taken
// before the first call).
func (r *Retained[V]) Match(filter string, fn func(topic string, v V) bool) {
	if filter == "" {
		return
	}
	buf, _ := r.bufs.Get().(*[]retainedItem[V])
	if buf == nil {
		buf = new([]retainedItem[V])
	}
	r.mu.RLock()
	r.root.match(filter, true, buf)
	r.mu.RUnlock()
	defer r.putBuf(buf) // also when fn panics
	for _, it := range *buf {
		if !fn(it.topic, it.v) {
			return
		}
	}
}

// putBuf clears buf (so it keeps no values alive) and pools it.
func (r *Retained[V]) putBuf(buf *[]retainedItem[V]) {
	if cap(*buf) > maxPooledItems {
		return
	}
	clear(*buf)
	*buf = (*buf)[:0]
	r.bufs.Put(buf)
}

// match appends to out the set nodes under n matching the filter levels in
// rest. n is the root exactly when n.parent is nil.
func (n *rnode[V]) match(rest string, more bool, out *[]retainedItem[V]) {
	if !more {
		n.appendTo(out)
		return
	}
	root := n.parent == nil
	level, next, hasNext := cut(rest)
	switch level {
	case "#":
		n.appendTo(out) // "sport/#" matches "sport" [MQTT-4.7.1-1]; the root is never set
		for _, c := range n.children {
			if !root || !strings.HasPrefix(c.level, "$") { // [MQTT-4.7.2-1]
				c.appendAll(out)
			}
		}
	case "+":
		for _, c := range n.children {
			if !root || !strings.HasPrefix(c.level, "$") { // [MQTT-4.7.2-1]
				c.match(next, hasNext, out)
			}
		}
	default:
		if c := n.children[level]; c != nil {
			c.match(next, hasNext, out)
		}
	}
}

func (n *rnode[V]) appendTo(out *[]retainedItem[V]) {
	if n.set {
		*out = append(*out, retainedItem[V]{n.topic, n.v})
	}
}

// appendAll appends n and every set node below it.
func (n *rnode[V]) appendAll(out *[]retainedItem[V]) {
	n.appendTo(out)
	for _, c := range n.children {
		c.appendAll(out)
	}
}

// nodeCount returns the number of nodes below the root (tests).
func (r *Retained[V]) nodeCount() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.root.count()
}

func (n *rnode[V]) count() int {
	c := 0
	for _, ch := range n.children {
		c += 1 + ch.count()
	}
	return c
}
