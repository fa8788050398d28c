package upstreamtest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoServer accepts connections on loopback and echoes every line back,
// until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// roundTrip writes line to c and reads the echo.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, line string) {
	t.Helper()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if got != line+"\n" {
		t.Fatalf("echo %q, want %q", got, line+"\n")
	}
}

func TestProxyForwardsDownUp(t *testing.T) {
	p := Proxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip(t, c, r, "hello")
	big := strings.Repeat("x", 200<<10)
	roundTrip(t, c, r, big)

	p.Down()
	if got, err := r.ReadString('\n'); err == nil {
		t.Fatalf("read after Down: %q, want an error", got)
	}
	if c2, err := net.Dial("tcp", p.Addr()); err == nil {
		c2.Close()
		t.Fatal("dial after Down succeeded")
	}
	if p.Conns() != 0 {
		t.Fatalf("%d connections after Down", p.Conns())
	}

	p.Up()
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatalf("dial after Up: %v", err)
	}
	defer c3.Close()
	roundTrip(t, c3, bufio.NewReader(c3), "again")
}

func TestProxyFreezeThaw(t *testing.T) {
	p := Proxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip(t, c, r, "before")

	p.Freeze()
	if _, err := io.WriteString(c, "held\n"); err != nil {
		t.Fatalf("write while frozen: %v", err)
	}
	// Nothing may come back while frozen. (A wrong proxy could only make
	// this pass by chance, never fail it by chance.)
	if err := c.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if got, err := r.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read while frozen: %q, %v; want a timeout", got, err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if p.Conns() != 1 {
		t.Fatalf("%d connections while frozen, want 1 (kept open)", p.Conns())
	}

	p.Thaw()
	got, err := r.ReadString('\n')
	if err != nil || got != "held\n" {
		t.Fatalf("after Thaw: %q, %v; want the held line", got, err)
	}
	roundTrip(t, c, r, "after")
}

func TestProxyCloseWhileFrozen(t *testing.T) {
	p := Proxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p.Freeze()
	if _, err := io.WriteString(c, "held\n"); err != nil {
		t.Fatal(err)
	}
	p.Close() // must not hang on the held bytes
	if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
		t.Fatal("read after Close succeeded")
	}
	p.Up() // does nothing after Close
	if c2, err := net.Dial("tcp", p.Addr()); err == nil {
		c2.Close()
		t.Fatal("dial after Close succeeded")
	}
}

func TestProxyURL(t *testing.T) {
	p := Proxy(t, "127.0.0.1:1")
	got := p.URL("amqp://guest:guest@127.0.0.1:5672/v1")
	want := "amqp://guest:guest@" + p.Addr() + "/v1"
	if got != want {
		t.Fatalf("URL = %q, want %q", got, want)
	}
}
