package session

import "slices"

// The queue holds deliveries waiting for an inflight slot or for the
// client to come back. A session kept in memory holds its whole queue in
// RAM, bounded in bytes (Enqueue). A durable session numbers every
// delivery (its seq, the key of its record on disk) and keeps in RAM at
// most a window of the oldest ones: once a delivery is not kept
// (EnqueueDurable with keep false: the client is offline or the window is
// full), every later one goes to disk only too, so order holds, until the
// window has been refilled from disk up to the newest (RefillRange,
// AppendRefill, RefillDone).
//
// A delivery's record may still be on its way to disk when it is queued.
// The session remembers those seqs (pending, cleared by Committed) and
// never reads the disk at or beyond the oldest of them, so a refill never
// skips a record that is about to appear.

// queued is one delivery in the RAM queue with its seq (0 in a session
// kept in memory only).
type queued struct {
	seq uint64
	d   Delivery
}

// Enqueue appends d to the RAM queue unless that would take the queue
// beyond maxBytes (0 = no bound); it reports whether d was queued. It is
// the queue of sessions kept in memory only.
func (s *State) Enqueue(d Delivery, maxBytes int64) bool {
	sz := int64(d.Msg.Size())
	if maxBytes > 0 && s.queueBytes+sz > maxBytes {
		return false
	}
	s.push(queued{d: d})
	return true
}

// EnqueueDurable numbers d for a durable session and returns its seq; the
// caller writes it to disk under that seq and calls Committed(seq) when
// the write is done (or failed). keep says whether the caller wants d in
// RAM (the client is online and the window has room); d stays on disk only
// when keep is false or earlier deliveries are on disk only.
func (s *State) EnqueueDurable(d Delivery, keep bool) uint64 {
	seq := s.nextSeq
	s.nextSeq++
	s.pending = append(s.pending, seq)
	if keep && !s.Spilled() {
		s.push(queued{seq: seq, d: d})
		s.diskFrom = s.nextSeq
		return seq
	}
	s.diskLen++
	return seq
}

// Committed records that the durable write of seq is over, successful or
// not (a failed one leaves a gap a refill skips).
func (s *State) Committed(seq uint64) {
	if i, ok := slices.BinarySearch(s.pending, seq); ok {
		s.pending = slices.Delete(s.pending, i, i+1)
		if len(s.pending) == 0 && cap(s.pending) > 64 {
			s.pending = nil
		}
	}
}

func (s *State) push(q queued) {
	s.queue = append(s.queue, q)
	s.queueBytes += int64(q.d.Msg.Size())
}

// QueueLen is the number of queued deliveries, in RAM and on disk only.
func (s *State) QueueLen() int { return len(s.queue) - s.queueHead + s.diskLen }

// MemQueueLen is the number of queued deliveries held in RAM.
func (s *State) MemQueueLen() int { return len(s.queue) - s.queueHead }

// QueueBytes is the approximate size of the RAM queue.
func (s *State) QueueBytes() int64 { return s.queueBytes }

// Spilled reports whether some queued deliveries are on disk only.
func (s *State) Spilled() bool { return s.diskFrom < s.nextSeq && s.diskLen > 0 }

// Peek returns the oldest delivery in RAM without removing it.
func (s *State) Peek() (Delivery, bool) {
	if s.queueHead >= len(s.queue) {
		return Delivery{}, false
	}
	return s.queue[s.queueHead].d, true
}

// Dequeue removes and returns the oldest delivery in RAM.
func (s *State) Dequeue() (Delivery, bool) {
	_, d, ok := s.DequeueSeq()
	return d, ok
}

// DequeueSeq removes and returns the oldest delivery in RAM with its seq.
func (s *State) DequeueSeq() (uint64, Delivery, bool) {
	if s.queueHead >= len(s.queue) {
		return 0, Delivery{}, false
	}
	q := s.queue[s.queueHead]
	s.queue[s.queueHead] = queued{}
	s.queueHead++
	s.queueBytes -= int64(q.d.Msg.Size())
	if s.queueHead == len(s.queue) {
		s.queueHead = 0
		if cap(s.queue) > 64 {
			s.queue = nil // release a burst's memory once drained
		} else {
			s.queue = s.queue[:0]
		}
	} else if s.queueHead > 1024 && s.queueHead*2 > len(s.queue) {
		s.queue = append([]queued(nil), s.queue[s.queueHead:]...)
		s.queueHead = 0
	}
	return q.seq, q.d, true
}

// RefillRange says which seqs to read from disk into the RAM queue: the
// RAM queue is empty, deliveries are on disk only, and from <= seq < to
// are all written (to stops at the oldest pending write). ok is false when
// there is nothing to read now.
func (s *State) RefillRange() (from, to uint64, ok bool) {
	if s.MemQueueLen() > 0 || !s.Spilled() {
		return 0, 0, false
	}
	from, to = s.diskFrom, s.nextSeq
	if i, _ := slices.BinarySearch(s.pending, from); i < len(s.pending) {
		to = s.pending[i]
	}
	return from, to, from < to
}

// AppendRefill appends a delivery read back from disk (in seq order).
func (s *State) AppendRefill(seq uint64, d Delivery) {
	s.push(queued{seq: seq, d: d})
	if s.diskLen > 0 {
		s.diskLen--
	}
}

// RefillDone records that every seq below next has been read back.
func (s *State) RefillDone(next uint64) {
	s.diskFrom = max(s.diskFrom, next)
	if s.diskFrom >= s.nextSeq {
		s.diskFrom = s.nextSeq
		s.diskLen = 0
	}
}

// SpillQueue drops the RAM queue of a durable session (its client went
// away): its deliveries are read back from disk when it returns.
func (s *State) SpillQueue() {
	n := s.MemQueueLen()
	if n == 0 {
		return
	}
	s.diskFrom = s.queue[s.queueHead].seq
	s.diskLen += n
	s.queue, s.queueHead, s.queueBytes = nil, 0, 0
}

// Restore sets the durable queue of a session loaded from disk: n
// deliveries with seqs from first on, and next above every stored seq.
func (s *State) Restore(next, first uint64, n int) {
	s.nextSeq = next
	s.diskFrom, s.diskLen = next, 0
	if n > 0 {
		s.diskFrom, s.diskLen = first, n
	}
}

// RestoreInflight adds an inflight message loaded from disk; call it in
// resend order.
func (s *State) RestoreInflight(f Inflight) {
	if s.inflight == nil {
		s.inflight = make(map[uint16]Inflight)
	}
	if _, dup := s.inflight[f.ID]; dup {
		return
	}
	s.inflight[f.ID] = f
	s.order = append(s.order, f.ID)
}

// RestoreQoS2 adds an incoming QoS 2 packet id loaded from disk.
func (s *State) RestoreQoS2(id uint16) { s.ReceiveQoS2(id) }
