package session

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// diskModel is the disk side of a durable queue for tests: records become
// visible when committed.
type diskModel struct {
	recs map[uint64]Delivery
}

func (m *diskModel) read(from, to uint64, max int, fn func(uint64, Delivery)) {
	var seqs []uint64
	for s := range m.recs {
		if s >= from && s < to {
			seqs = append(seqs, s)
		}
	}
	slices.Sort(seqs)
	for i, s := range seqs {
		if i == max {
			return
		}
		fn(s, m.recs[s])
	}
}

// refill runs one refill the way the broker does.
func refill(s *State, disk *diskModel, chunk int) int {
	from, to, ok := s.RefillRange()
	if !ok {
		return 0
	}
	n := 0
	var last uint64
	disk.read(from, to, chunk, func(seq uint64, d Delivery) {
		s.AppendRefill(seq, d)
		last = seq
		n++
	})
	if n == chunk {
		s.RefillDone(last + 1)
	} else {
		s.RefillDone(to)
	}
	return n
}

// TestDurableQueueModel drives a durable queue with random enqueues (kept
// or not), commits in random order, failed commits, dequeues, refills and
// spills, and checks that deliveries come out in seq order, each at most
// once, and every committed one exactly once.
func TestDurableQueueModel(t *testing.T) {
	for seed := range uint64(50) {
		r := rand.New(rand.NewPCG(seed, 1))
		s := New("c")
		disk := &diskModel{recs: map[uint64]Delivery{}}
		var pending []uint64
		failed := map[uint64]bool{}
		var got []uint64
		commitOne := func() {
			if len(pending) == 0 {
				return
			}
			i := r.IntN(len(pending))
			seq := pending[i]
			pending = slices.Delete(pending, i, i+1)
			if r.IntN(20) == 0 {
				failed[seq] = true
			} else {
				disk.recs[seq] = Delivery{Msg: msg("t"), QoS: 1}
			}
			s.Committed(seq)
		}
		for range 2000 {
			switch op := r.IntN(10); {
			case op < 4:
				keep := r.IntN(3) != 0 && s.MemQueueLen() < 8
				pending = append(pending, s.EnqueueDurable(Delivery{Msg: msg("t"), QoS: 1}, keep))
			case op < 6:
				commitOne()
			case op < 9:
				if s.MemQueueLen() == 0 {
					refill(s, disk, 1+r.IntN(5))
				}
				if seq, _, ok := s.DequeueSeq(); ok {
					got = append(got, seq)
					delete(disk.recs, seq) // delivered: the broker deletes it
				}
			default:
				s.SpillQueue()
			}
		}
		for len(pending) > 0 {
			commitOne()
		}
		for {
			if s.MemQueueLen() == 0 && refill(s, disk, 3) == 0 {
				break
			}
			for {
				seq, _, ok := s.DequeueSeq()
				if !ok {
					break
				}
				got = append(got, seq)
				delete(disk.recs, seq)
			}
		}
		if !slices.IsSorted(got) {
			t.Fatalf("seed %d: out of order: %v", seed, got)
		}
		if len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Fatalf("seed %d: a delivery came out twice", seed)
		}
		for seq := range s.nextSeq {
			if !failed[seq] && !slices.Contains(got, seq) {
				t.Fatalf("seed %d: committed seq %d never delivered", seed, seq)
			}
		}
		if s.QueueLen() != 0 || s.Spilled() {
			t.Fatalf("seed %d: queue not empty at the end: len %d", seed, s.QueueLen())
		}
	}
}

// TestDurableQueueRefillWaitsForPending: a refill never reads at or past
// a write still on its way.
func TestDurableQueueRefillWaitsForPending(t *testing.T) {
	s := New("c")
	a := s.EnqueueDurable(Delivery{Msg: msg("t")}, false)
	b := s.EnqueueDurable(Delivery{Msg: msg("t")}, false)
	s.Committed(b)
	if _, _, ok := s.RefillRange(); ok {
		t.Fatal("refill allowed while the oldest write is pending")
	}
	s.Committed(a)
	from, to, ok := s.RefillRange()
	if !ok || from != a || to != b+1 {
		t.Fatalf("range %d..%d %v, want %d..%d", from, to, ok, a, b+1)
	}
}
