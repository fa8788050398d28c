package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// fakeServer is an upstream broker for unit tests: every link the bridge
// dials (fakeLink) reaches it. It records what arrives, confirms at once
// (or never, while frozen), rejects what reject says, and refuses
// connections while down.
type fakeServer struct {
	mu     sync.Mutex
	down   bool
	frozen bool
	reject func(*Message) bool
	got    []Message
	links  []*fakeLink
	dials  int
}

func (s *fakeServer) dial() Upstream {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dials++
	l := &fakeLink{srv: s, done: make(chan struct{})}
	return l
}

func (s *fakeServer) setDown(down bool) {
	s.mu.Lock()
	s.down = down
	links := s.links
	if down {
		s.links = nil
	}
	s.mu.Unlock()
	if down {
		for _, l := range links {
			l.lose(errors.New("fake: server went down"))
		}
	}
}

func (s *fakeServer) setFrozen(v bool) {
	s.mu.Lock()
	s.frozen = v
	s.mu.Unlock()
}

func (s *fakeServer) received() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.got...)
}

// send delivers a downlink message to the connected links' handlers.
func (s *fakeServer) send(in *Inbound) bool {
	s.mu.Lock()
	var h func(*Inbound)
	if len(s.links) > 0 {
		h = s.links[len(s.links)-1].handle
	}
	s.mu.Unlock()
	if h == nil {
		return false
	}
	h(in)
	return true
}

type fakeLink struct {
	srv     *fakeServer
	handle  func(*Inbound)
	mu      sync.Mutex
	pending []func(error)
	lost    bool
	err     error
	done    chan struct{}
	once    sync.Once
}

func (l *fakeLink) Connect(ctx context.Context, handle func(*Inbound)) error {
	s := l.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		l.once.Do(func() { close(l.done) })
		return errors.New("fake: connection refused")
	}
	l.handle = handle
	s.links = append(s.links, l)
	return nil
}

func (l *fakeLink) Publish(ctx context.Context, m *Message, confirm func(error)) error {
	l.mu.Lock()
	if l.lost {
		l.mu.Unlock()
		return fmt.Errorf("%w: fake", ErrLinkLost)
	}
	s := l.srv
	s.mu.Lock()
	frozen := s.frozen
	rejected := s.reject != nil && s.reject(m)
	if !frozen && !rejected {
		s.got = append(s.got, *m)
	}
	s.mu.Unlock()
	if frozen {
		l.pending = append(l.pending, confirm)
		l.mu.Unlock()
		return nil
	}
	l.mu.Unlock()
	if rejected {
		confirm(fmt.Errorf("%w: fake says no", ErrRejected))
	} else {
		confirm(nil)
	}
	return nil
}

func (l *fakeLink) lose(err error) {
	l.mu.Lock()
	if l.lost {
		l.mu.Unlock()
		return
	}
	l.lost, l.err = true, fmt.Errorf("%w: %v", ErrLinkLost, err)
	p := l.pending
	l.pending = nil
	l.mu.Unlock()
	for _, c := range p {
		c(l.err)
	}
	l.once.Do(func() { close(l.done) })
}

func (l *fakeLink) Blocked() bool         { return false }
func (l *fakeLink) Done() <-chan struct{} { return l.done }
func (l *fakeLink) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *fakeLink) Close() error {
	l.lose(errors.New("closed"))
	s := l.srv
	s.mu.Lock()
	for i, o := range s.links {
		if o == l {
			s.links = append(s.links[:i], s.links[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
	return nil
}
