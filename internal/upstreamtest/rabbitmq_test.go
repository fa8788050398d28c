package upstreamtest

import (
	"net"
	"net/url"
	"strings"
	"testing"
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
