package bridge

import (
	"math"
	"math/rand/v2"
	"time"
)

// Backoff spaces the reconnection attempts of one bridge: exponential
// backoff with full jitter. Attempt k (counted from 0 since the last
// Reset) waits a uniformly random delay in [0, min(Max, Min·2^k)].
//
// Why full jitter: an upstream outage cuts every gateway of a fleet off at
// the same moment. With a fixed or purely exponential backoff they all
// retry in lockstep, at Min, 2·Min, 4·Min, ..., and the recovering broker
// takes every TLS handshake and session takeover of the fleet in the same
// instant, again and again, which can knock it over again. Drawing each
// delay uniformly from the whole interval spreads the fleet evenly across
// it, so the broker sees a steady rate of attempts instead of waves;
// "equal jitter" (half fixed, half random) still leaves the first half of
// every interval empty and bunches the attempts in the second. The price
// is that one gateway may retry sooner than Min, which is harmless: the
// ceiling keeps growing while the upstream stays away.
//
// Backoff never sleeps: Next returns the delay and the reconnect loop
// waits it out with its own timer, so it can stop on shutdown and tests
// need no clock. A Backoff is not safe for concurrent use; its zero value
// uses the default bounds.
type Backoff struct {
	// Min is the ceiling of the first delay. Zero (or negative) means
	// DefaultReconnectMin.
	Min time.Duration
	// Max caps the ceiling. Zero (or negative) means DefaultReconnectMax;
	// below Min it is Min.
	Max time.Duration
	// Rand returns a uniformly random integer in [0, n) for n > 0, like
	// math/rand/v2's Int64N, which nil means. Tests inject a
	// deterministic one. A result outside [0, n) is clamped into it.
	Rand func(n int64) int64

	attempts int // Next calls since the last Reset
}

// Next returns the delay to wait before the next connection attempt and
// counts the attempt: uniform in [0, Ceiling()], with Ceiling taken before
// counting.
func (b *Backoff) Next() time.Duration {
	ceiling := b.Ceiling()
	if b.attempts < math.MaxInt {
		b.attempts++
	}
	return b.draw(ceiling)
}

// Reset starts the growth again from Min. Call it after a connection
// that stayed up, e.g. one that confirmed a message or lasted longer
// than Max; not as soon as a connection is made: an upstream that accepts
// and then drops us at once must keep getting slower retries, not a
// retry every Min.
func (b *Backoff) Reset() { b.attempts = 0 }

// Attempts returns how many delays Next has returned since the last
// Reset, for logs.
func (b *Backoff) Attempts() int { return b.attempts }

// Ceiling returns the largest delay the next call of Next can return:
// min(Max, Min·2^k) after k attempts, computed without overflow (the
// shift is never taken past Max).
func (b *Backoff) Ceiling() time.Duration {
	lo, hi := b.bounds()
	k := b.attempts
	// lo·2^k > hi exactly when lo > hi>>k; a shift of 63 or more leaves
	// nothing of hi (and of any positive lo).
	if k >= 63 || lo > hi>>k {
		return hi
	}
	return lo << k
}

// bounds returns Min and Max with their defaults, 0 < lo <= hi.
func (b *Backoff) bounds() (lo, hi time.Duration) {
	lo, hi = b.Min, b.Max
	if lo <= 0 {
		lo = DefaultReconnectMin
	}
	if hi <= 0 {
		hi = DefaultReconnectMax
	}
	return lo, max(hi, lo)
}

// draw returns a uniformly random duration in [0, ceiling], ceiling > 0.
func (b *Backoff) draw(ceiling time.Duration) time.Duration {
	n := int64(ceiling)
	if n < math.MaxInt64 {
		n++ // [0, ceiling] has ceiling+1 values; at MaxInt64 drop one
	}
	random := b.Rand
	if random == nil {
		random = rand.Int64N
	}
	return time.Duration(min(max(random(n), 0), n-1))
}
