package upstreamtest

import (
	"errors"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestAMQPAddr(t *testing.T) {
	for _, c := range []struct{ url, want string }{
		{"amqp://guest:guest@127.0.0.1:5672/", "127.0.0.1:5672"},
		{"amqp://h/", "h:5672"},
		{"amqps://u:p@h/v", "h:5671"},
		{"amqp://[::1]:5673/", "[::1]:5673"},
	} {
		got, err := amqpAddr(c.url)
		if err != nil || got != c.want {
			t.Errorf("amqpAddr(%q) = %q, %v; want %q", c.url, got, err, c.want)
		}
	}
	for _, bad := range []string{"http://h/", "amqp:///v", "://"} {
		if got, err := amqpAddr(bad); err == nil {
			t.Errorf("amqpAddr(%q) = %q, want an error", bad, got)
		}
	}
}

func TestUniqueName(t *testing.T) {
	a, b := UniqueName(t, "x"), UniqueName(t, "x")
	if a == b {
		t.Fatalf("two names alike: %q", a)
	}
	if !strings.HasPrefix(a, "x-TestUniqueName-") {
		t.Fatalf("name %q", a)
	}
	t.Run("sub/test name", func(t *testing.T) {
		n := UniqueName(t, "q")
		if strings.ContainsAny(n, "/ ") {
			t.Fatalf("name %q keeps separators", n)
		}
	})
}

// TestRabbitVhost checks that RabbitVhost creates a vhost the node lists
// and that two calls give two vhosts (AMQP connections to such a vhost are
// what bridge/amqp's tests make).
func TestRabbitVhost(t *testing.T) {
	a := RabbitVhost(t)
	b := RabbitVhost(t)
	ua, err := url.Parse(a)
	if err != nil {
		t.Fatal(err)
	}
	if rabbitctlUsable(a) == "" && a == b {
		t.Fatalf("two tests share vhost %q", ua.Path)
	}
	addr, err := amqpAddr(a)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if rabbitctlUsable(a) != "" {
		return
	}
	out, err := rabbitmqctl("list_vhosts", "name")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, strings.TrimPrefix(ua.Path, "/")) {
		t.Fatalf("vhost %q not listed: %s", ua.Path, out)
	}
}

// TestRabbitLock plays another test binary against this one: while the
// other holds the lock shared, going exclusive waits, holding the gate so
// that new tests queue behind it; once the other lets go, it gets the lock
// exclusive; at the end of the test everything is released.
func TestRabbitLock(t *testing.T) {
	rabbitLock.mu.Lock()
	users := rabbitLock.users
	rabbitLock.mu.Unlock()
	if users != 0 {
		t.Skipf("%d tests of this binary hold the lock", users)
	}
	old := rabbitLockDir
	rabbitLockDir = t.TempDir()
	t.Cleanup(func() { rabbitLockDir = old })
	open := func(path string) *os.File {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	other := open(rabbitLockPath())
	if err := flock(other, unix.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	probe, probeGate := open(rabbitLockPath()), open(rabbitLockPath()+".gate")
	var released atomic.Bool
	done, stop := make(chan struct{}), make(chan struct{})
	defer func() {
		close(stop)
		<-done
	}()
	go func() {
		defer close(done)
		// Wait until the alarm holds the gate, then let go.
		for flock(probeGate, unix.LOCK_SH|unix.LOCK_NB) == nil {
			flock(probeGate, unix.LOCK_UN)
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
		released.Store(true)
		flock(other, unix.LOCK_UN)
	}()
	t.Run("alarm", func(t *testing.T) {
		holdRabbit(t)
		exclusiveRabbit(t)
		if !released.Load() {
			t.Fatal("exclusive while another binary held the lock")
		}
		if err := flock(probe, unix.LOCK_SH|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
			t.Fatalf("shared lock while exclusive: %v", err)
		}
		if err := flock(probeGate, unix.LOCK_SH|unix.LOCK_NB); err != nil {
			t.Fatalf("the gate stays closed once exclusive: %v", err)
		}
		flock(probeGate, unix.LOCK_UN)
	})
	if err := flock(probe, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("lock not released at the end of the test: %v", err)
	}
}
