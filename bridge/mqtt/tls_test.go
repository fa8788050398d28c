package mqtt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/internal/upstreamtest"
)

// selfSigned writes a certificate for 127.0.0.1 and its key to dir and
// returns a pool trusting it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ferrymq test upstream"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTLS: mqtts:// with the configured roots; an unknown certificate
// fails Connect with a clear error.
func TestTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	// The directives follow the listener line: they make it a TLS one.
	m := upstreamtest.StartMosquittoWith(t, upstreamtest.MosquittoOptions{
		Config: "certfile " + certFile + "\nkeyfile " + keyFile + "\nmax_inflight_messages 1000",
	})
	url := "mqtts://" + m.Addr()

	u := New(Config{URL: url, ClientID: "tls"}, upstreamtest.Logger(t))
	err := u.Connect(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "TLS handshake") {
		t.Fatalf("Connect without the roots = %v, want a TLS handshake error", err)
	}
	waitDone(t, u)

	in := make(inbox, 16)
	u = connect(t, Config{URL: url, TLS: &tls.Config{RootCAs: pool}, Receive: []Subscription{{Filter: "cmd/#", QoS: 1}}}, in.handle)
	forward(t, u, telemetry("tele/tls", 2000, 1), 256).check(t, isNil)

	// The downlink over TLS too (the test client speaks TLS as well).
	conn, err := tls.Dial("tcp", m.Addr(), &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	// tls.Conn writes a packet's pieces one by one: lock them together.
	app := paho.NewClient(paho.ClientConfig{Conn: packets.NewThreadSafeConn(conn)})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := app.Connect(ctx, &paho.Connect{ClientID: "app", CleanStart: true}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = app.Disconnect(&paho.Disconnect{}); <-app.Done() }()
	if _, err := app.Publish(ctx, &paho.Publish{Topic: "cmd/x", QoS: 1, Payload: []byte("over tls")}); err != nil {
		t.Fatal(err)
	}
	got := in.next(t)
	if string(got.Payload) != "over tls" {
		t.Fatalf("got %+v", got.Message)
	}
	got.Ack()
}
