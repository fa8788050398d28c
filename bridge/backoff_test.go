package bridge

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// topRand always draws the largest value, so Next returns its ceiling.
func topRand(n int64) int64 { return n - 1 }

// randRecorder is a Rand that records the n it is asked for and answers
// with a fixed fraction of it.
type randRecorder struct {
	ns   []int64
	frac float64
}

func (r *randRecorder) rand(n int64) int64 {
	r.ns = append(r.ns, n)
	if r.frac >= 1 {
		return n - 1 // float64(n-1) may round up past MaxInt64
	}
	return int64(float64(n-1) * r.frac)
}

func TestBackoffGrowth(t *testing.T) {
	tests := []struct {
		name     string
		min, max time.Duration
		want     []time.Duration // successive ceilings
	}{
		{"doubles to the cap", time.Second, time.Minute,
			[]time.Duration{1e9, 2e9, 4e9, 8e9, 16e9, 32e9, 60e9, 60e9, 60e9}},
		{"cap is a power", time.Second, 4 * time.Second, []time.Duration{1e9, 2e9, 4e9, 4e9}},
		{"min = max", time.Second, time.Second, []time.Duration{1e9, 1e9, 1e9}},
		{"max below min", 3 * time.Second, time.Second, []time.Duration{3e9, 3e9}},
		{"zero means defaults", 0, 0, []time.Duration{1e9, 2e9, 4e9, 8e9, 16e9, 32e9, 64e9, 120e9, 120e9}},
		{"negative means defaults", -1, -1, []time.Duration{1e9, 2e9, 4e9}},
		{"zero max below min", 5 * time.Minute, 0, []time.Duration{5 * time.Minute, 5 * time.Minute}},
		{"nanoseconds", 1, 5, []time.Duration{1, 2, 4, 5, 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := Backoff{Min: tc.min, Max: tc.max, Rand: topRand}
			var got []time.Duration
			for range tc.want {
				c := b.Ceiling()
				if d := b.Next(); d != c {
					t.Fatalf("Next() = %v with the top draw, want the ceiling %v", d, c)
				}
				got = append(got, c)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("ceilings %v, want %v", got, tc.want)
			}
			if b.Attempts() != len(tc.want) {
				t.Errorf("Attempts() = %d, want %d", b.Attempts(), len(tc.want))
			}
		})
	}
}

// TestBackoffRandRange checks what Next asks Rand for (ceiling+1 values,
// [0, ceiling] inclusive) and that it passes the draw through.
func TestBackoffRandRange(t *testing.T) {
	r := &randRecorder{frac: 0.5}
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second, Rand: r.rand}
	var got []time.Duration
	for range 6 {
		got = append(got, b.Next())
	}
	wantN := []int64{100e6 + 1, 200e6 + 1, 400e6 + 1, 800e6 + 1, 1e9 + 1, 1e9 + 1}
	if !slices.Equal(r.ns, wantN) {
		t.Errorf("Rand asked for %v, want %v", r.ns, wantN)
	}
	want := []time.Duration{50e6, 100e6, 200e6, 400e6, 500e6, 500e6}
	if !slices.Equal(got, want) {
		t.Errorf("delays %v, want %v", got, want)
	}
	b = Backoff{Min: time.Second, Max: time.Minute, Rand: func(int64) int64 { return 0 }}
	for range 10 {
		if d := b.Next(); d != 0 {
			t.Fatalf("Next() = %v with a zero draw", d)
		}
	}
}

func TestBackoffClampsRand(t *testing.T) {
	for _, bad := range []int64{-1, math.MinInt64, 1e9 + 1, math.MaxInt64} {
		b := Backoff{Min: time.Second, Max: time.Second, Rand: func(int64) int64 { return bad }}
		if d := b.Next(); d < 0 || d > time.Second {
			t.Errorf("Rand returning %d: Next() = %v, outside [0, 1s]", bad, d)
		}
	}
}

// TestBackoffNoOverflow runs far more attempts than a shift can take,
// with bounds up to the largest Duration.
func TestBackoffNoOverflow(t *testing.T) {
	for _, bo := range []Backoff{
		{Min: 1, Max: math.MaxInt64},
		{Min: time.Hour, Max: math.MaxInt64},
		{Min: math.MaxInt64, Max: math.MaxInt64},
		{Min: 3, Max: math.MaxInt64 - 1},
		{Min: time.Second, Max: 2 * time.Minute},
	} {
		r := &randRecorder{frac: 1}
		b := bo
		b.Rand = r.rand
		prev := time.Duration(0)
		for k := range 1000 {
			c := b.Ceiling()
			d := b.Next()
			if c < prev || c > bo.Max || c < min(bo.Min, bo.Max) || d < 0 || d > c {
				t.Fatalf("%+v attempt %d: ceiling %v (previous %v), delay %v", bo, k, c, prev, d)
			}
			if n := r.ns[len(r.ns)-1]; n <= 0 {
				t.Fatalf("%+v attempt %d: Rand(%d)", bo, k, n)
			}
			prev = c
		}
		if prev != bo.Max {
			t.Errorf("%+v: ceiling %v after 1000 attempts, want Max", bo, prev)
		}
	}
}

func TestBackoffReset(t *testing.T) {
	b := Backoff{Min: time.Second, Max: time.Minute, Rand: topRand}
	for range 100 {
		b.Next()
	}
	if b.Ceiling() != time.Minute || b.Attempts() != 100 {
		t.Fatalf("after 100 attempts: ceiling %v, attempts %d", b.Ceiling(), b.Attempts())
	}
	b.Reset()
	if b.Attempts() != 0 || b.Ceiling() != time.Second {
		t.Fatalf("after Reset: ceiling %v, attempts %d", b.Ceiling(), b.Attempts())
	}
	if d1, d2 := b.Next(), b.Next(); d1 != time.Second || d2 != 2*time.Second {
		t.Errorf("after Reset: %v, %v; want 1s, 2s", d1, d2)
	}
}

// TestBackoffJitter checks that delays from a real (seeded) source cover
// the whole interval evenly: the point of full jitter.
func TestBackoffJitter(t *testing.T) {
	src := rand.New(rand.NewPCG(1, 2))
	const draws = 20000
	ceiling := 10 * time.Second
	b := Backoff{Min: ceiling, Max: ceiling, Rand: src.Int64N}
	var sum float64
	var buckets [10]int
	for range draws {
		d := b.Next()
		if d < 0 || d > ceiling {
			t.Fatalf("delay %v outside [0, %v]", d, ceiling)
		}
		sum += float64(d)
		buckets[min(int(d*10/ceiling), 9)]++
	}
	if mean := sum / draws / float64(ceiling); mean < 0.48 || mean > 0.52 {
		t.Errorf("mean delay %.3f of the ceiling, want about 0.5", mean)
	}
	for i, n := range buckets {
		if n < draws/10*8/10 || n > draws/10*12/10 {
			t.Errorf("tenth %d of the interval got %d of %d delays", i, n, draws)
		}
	}
	// The default source (math/rand/v2) is used when Rand is nil.
	b = Backoff{Min: time.Second, Max: time.Second}
	seen := map[time.Duration]bool{}
	for range 100 {
		d := b.Next()
		if d < 0 || d > time.Second {
			t.Fatalf("default source: delay %v outside [0, 1s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 90 {
		t.Errorf("default source: only %d distinct delays of 100", len(seen))
	}
}
