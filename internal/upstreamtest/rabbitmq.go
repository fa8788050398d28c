package upstreamtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultAMQPURL is the RabbitMQ the tests use unless FERRYMQ_AMQP_URL
// says otherwise: a local node with its default guest user (which RabbitMQ
// accepts on loopback only).
const DefaultAMQPURL = "amqp://guest:guest@127.0.0.1:5672/"

// Timeouts of the helpers: reaching the broker's port, one rabbitmqctl run
// (each starts an Erlang VM: about half a second), and the memory alarm
// clearing after a restore.
const (
	rabbitDialTimeout = 3 * time.Second
	rabbitctlTimeout  = 60 * time.Second
	alarmClearTimeout = 30 * time.Second
)

// RabbitMQ returns the URL of the RabbitMQ broker for the tests
// (DefaultAMQPURL, or FERRYMQ_AMQP_URL) after checking that its port
// accepts connections. When it does not, the test is skipped, or fails
// when FERRYMQ_REQUIRE_SERVICES=1 (CI). The test then holds the RabbitMQ
// lock shared until it ends, so that no memory alarm (RabbitMemoryAlarm)
// of another test binary holds up its publishes.
func RabbitMQ(t testing.TB) string {
	t.Helper()
	raw := os.Getenv("FERRYMQ_AMQP_URL")
	if raw == "" {
		raw = DefaultAMQPURL
	}
	addr, err := amqpAddr(raw)
	if err != nil {
		t.Fatalf("upstreamtest: FERRYMQ_AMQP_URL: %v", err)
	}
	c, err := net.DialTimeout("tcp", addr, rabbitDialTimeout)
	if err != nil {
		rabbitUnavailable(t, "no RabbitMQ at %s (start one with \"rabbitmq-server -detached\", or set FERRYMQ_AMQP_URL): %v", addr, err)
	}
	c.Close()
	holdRabbit(t)
	return raw
}

// rabbitUnavailable skips the test, or fails it when the services are
// required (FERRYMQ_REQUIRE_SERVICES=1).
func rabbitUnavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("FERRYMQ_REQUIRE_SERVICES") == "1" {
		t.Fatalf("upstreamtest: "+format+" (FERRYMQ_REQUIRE_SERVICES=1)", args...)
	}
	t.Skipf("upstreamtest: "+format, args...)
}

// AMQPAddr is the host:port that the amqp:// or amqps:// URL raw dials
// (for Proxy). It fails the test when raw is not such a URL.
func AMQPAddr(t testing.TB, raw string) string {
	t.Helper()
	addr, err := amqpAddr(raw)
	if err != nil {
		t.Fatalf("upstreamtest: %v", err)
	}
	return addr
}

// amqpAddr is the host:port an amqp:// or amqps:// URL dials.
func amqpAddr(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("parse %q: %w", raw, err)
	}
	port := u.Port()
	switch {
	case port != "":
	case u.Scheme == "amqp":
		port = "5672"
	case u.Scheme == "amqps":
		port = "5671"
	default:
		return "", fmt.Errorf("%q: not an amqp:// or amqps:// URL", raw)
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("%q: no host", raw)
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// UniqueName returns a name for an exchange, queue or vhost that no other
// test (nor another run of this one) uses: prefix, the test's name (cut
// short, characters other than letters, digits, "-" and "_" replaced) and
// random hex digits.
func UniqueName(t testing.TB, prefix string) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("upstreamtest: random name: %v", err)
	}
	name := []byte(t.Name())
	for i, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			name[i] = '-'
		}
	}
	if len(name) > 60 {
		name = name[:60]
	}
	return prefix + "-" + string(name) + "-" + hex.EncodeToString(b[:])
}

// RabbitVhost returns the URL of a fresh vhost on the RabbitMQ of RabbitMQ,
// for this test alone (the URL's user gets all permissions on it), and
// deletes the vhost at the end of the test. It needs rabbitmqctl and a
// broker on this machine; otherwise (a remote FERRYMQ_AMQP_URL, no
// rabbitmqctl, not allowed to run it) it logs why and returns RabbitMQ's
// URL, where tests keep apart by using UniqueName for what they declare.
func RabbitVhost(t testing.TB) string {
	t.Helper()
	base := RabbitMQ(t)
	if why := rabbitctlUsable(base); why != "" {
		t.Logf("upstreamtest: no fresh vhost (%s): using %s with unique names", why, redact(base))
		return base
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("upstreamtest: %v", err)
	}
	user := u.User.Username()
	if user == "" {
		user = "guest"
	}
	vhost := UniqueName(t, "ferrymq-test")
	if _, err := rabbitmqctl("add_vhost", vhost); err != nil {
		rabbitctlFailed(t, err)
		return base
	}
	t.Cleanup(func() {
		if _, err := rabbitmqctl("delete_vhost", vhost); err != nil {
			t.Errorf("upstreamtest: %v", err)
		}
	})
	if _, err := rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*"); err != nil {
		t.Fatalf("upstreamtest: %v", err)
	}
	u.Path = "/" + vhost
	u.RawPath = ""
	return u.String()
}

// RabbitMemoryAlarm sets off a memory alarm on the local RabbitMQ node
// (vm_memory_high_watermark near zero), so that the broker blocks its
// publishing connections (connection.blocked); the returned function, also
// run at the end of the test, restores the watermark and waits until the
// alarm is cleared. The alarm holds up every publisher of the node, so the
// test first takes the RabbitMQ lock exclusive: it waits until the tests of
// other test binaries that use RabbitMQ are done, and those that start
// meanwhile wait for the restore. (Tests of the same binary are not held
// back: do not run them in parallel with this one.) The test is skipped
// when rabbitmqctl cannot be used (or fails with FERRYMQ_REQUIRE_SERVICES=1
// when it fails).
func RabbitMemoryAlarm(t testing.TB) (restore func()) {
	t.Helper()
	base := RabbitMQ(t)
	if why := rabbitctlUsable(base); why != "" {
		t.Skipf("upstreamtest: cannot set off a memory alarm: %s", why)
	}
	exclusiveRabbit(t)
	old, err := rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
	if err != nil {
		rabbitctlFailed(t, err)
		t.Skipf("upstreamtest: %v", err)
	}
	if _, err := strconv.ParseFloat(old, 64); err != nil {
		t.Skipf("upstreamtest: the memory watermark is %q, not a fraction: not touching it", old)
	}
	restored := false
	restore = func() {
		if restored {
			return
		}
		restored = true
		if _, err := rabbitmqctl("set_vm_memory_high_watermark", old); err != nil {
			t.Errorf("upstreamtest: restore the memory watermark: %v", err)
			return
		}
		if err := waitNoAlarm(); err != nil {
			t.Errorf("upstreamtest: %v", err)
		}
	}
	t.Cleanup(restore)
	if _, err := rabbitmqctl("set_vm_memory_high_watermark", "0.0000001"); err != nil {
		t.Fatalf("upstreamtest: %v", err)
	}
	return restore
}

// The RabbitMQ lock: every test using RabbitMQ holds it shared (one flock
// per test binary, counted), a memory alarm holds it exclusive. The gate
// gives the alarm precedence: it holds the gate exclusive while it waits
// for the lock, and tests take the gate (shared, briefly) before the lock,
// so that they queue behind the alarm instead of starving it.
var rabbitLock struct {
	mu    sync.Mutex
	f     *os.File // the lock, held while users > 0; nil when it cannot be used
	users int
	held  map[testing.TB]bool // the tests counted in users
}

// rabbitLockDir holds the lock files (a variable for the lock's own test).
var rabbitLockDir = os.TempDir()

// rabbitLockPath is the lock file (its gate is the same path + ".gate").
func rabbitLockPath() string { return filepath.Join(rabbitLockDir, "ferrymq-rabbitmq.lock") }

// holdRabbit makes t hold the RabbitMQ lock shared until it ends (once per
// test, however often it is called). When the lock files cannot be used,
// it logs why and goes on without.
func holdRabbit(t testing.TB) {
	l := &rabbitLock
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held[t] {
		return
	}
	if l.users == 0 {
		f, err := os.OpenFile(rabbitLockPath(), os.O_RDWR|os.O_CREATE, 0o666)
		if err == nil {
			err = gated(t, f, unix.LOCK_SH)
			if err != nil {
				f.Close()
			}
		}
		if err != nil {
			t.Logf("upstreamtest: RabbitMQ lock not used: %v", err)
			f = nil
		}
		l.f = f
		l.held = make(map[testing.TB]bool)
	}
	l.users++
	l.held[t] = true
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.held, t)
		if l.users--; l.users == 0 && l.f != nil {
			l.f.Close() // releases the flock
			l.f = nil
		}
	})
}

// exclusiveRabbit turns the lock held for t exclusive (waiting for the
// tests of other binaries to end), and back to shared before t releases
// it.
func exclusiveRabbit(t testing.TB) {
	t.Helper()
	l := &rabbitLock
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return
	}
	// Not shared while waiting: two binaries waiting for an alarm each
	// would otherwise hold up each other.
	if err := flock(l.f, unix.LOCK_UN); err != nil {
		t.Fatalf("upstreamtest: RabbitMQ lock: %v", err)
	}
	if err := gated(t, l.f, unix.LOCK_EX); err != nil {
		t.Fatalf("upstreamtest: RabbitMQ lock: %v", err)
	}
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if err := flock(l.f, unix.LOCK_SH); err != nil { // a downgrade: never waits
			t.Errorf("upstreamtest: RabbitMQ lock: %v", err)
		}
	})
}

// gated takes the lock f (how: LOCK_SH or LOCK_EX) through the gate: shared
// lockers hold the gate shared for a moment, the exclusive one holds it
// exclusive until it has the lock. It logs when it has to wait.
func gated(t testing.TB, f *os.File, how int) error {
	gate, err := os.OpenFile(rabbitLockPath()+".gate", os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return err
	}
	defer gate.Close() // releases the gate
	gateHow := unix.LOCK_SH
	if how == unix.LOCK_EX {
		gateHow = unix.LOCK_EX
	}
	for _, s := range []struct {
		f   *os.File
		how int
	}{{gate, gateHow}, {f, how}} {
		if err := flock(s.f, s.how|unix.LOCK_NB); err == nil {
			continue
		} else if !errors.Is(err, unix.EWOULDBLOCK) {
			return err
		}
		t.Logf("upstreamtest: waiting for the RabbitMQ lock (%s): another test binary holds it", s.f.Name())
		if err := flock(s.f, s.how); err != nil {
			return err
		}
	}
	return nil
}

// flock is unix.Flock on f, retried when interrupted.
func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			if err != nil {
				return fmt.Errorf("flock %s: %w", f.Name(), err)
			}
			return nil
		}
	}
}

// waitNoAlarm polls the node until it has no resource alarm.
func waitNoAlarm() error {
	deadline := time.Now().Add(alarmClearTimeout)
	for {
		out, err := rabbitmqctl("eval", "rabbit_alarm:get_alarms().")
		if err != nil {
			return err
		}
		if out == "[]" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("RabbitMQ alarms still set after %v: %s", alarmClearTimeout, out)
		}
	}
}

// rabbitctlUsable says why rabbitmqctl cannot manage the broker of raw
// ("" when it can): it must be installed and the broker local.
func rabbitctlUsable(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return err.Error()
	}
	if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "the broker is not on this machine"
	}
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		return "rabbitmqctl not found"
	}
	return ""
}

// rabbitctlFailed reports a failed rabbitmqctl run: fatal when the services
// are required, logged otherwise (the caller falls back).
func rabbitctlFailed(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("FERRYMQ_REQUIRE_SERVICES") == "1" {
		t.Fatalf("upstreamtest: %v (FERRYMQ_REQUIRE_SERVICES=1)", err)
	}
	t.Logf("upstreamtest: %v", err)
}

// rabbitmqctl runs rabbitmqctl -q with args and returns its trimmed output.
func rabbitmqctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), rabbitctlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-q"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) || ctx.Err() != nil {
			return "", fmt.Errorf("rabbitmqctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return "", fmt.Errorf("rabbitmqctl %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// redact hides the password of a URL for the test log.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(bad URL)"
	}
	return u.Redacted()
}
