package localtls

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// listenLoopback listens on 127.0.0.1 only: these tests never touch any
// other address.
func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// serve runs h on l and stops it at the end of the test.
func serve(t *testing.T, l net.Listener, h http.Handler) {
	t.Helper()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// whoHandler answers "tls" or "plain" and the Host it saw.
var whoHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	kind := "plain"
	if r.TLS != nil {
		kind = "tls"
	}
	io.WriteString(w, kind+" "+r.Host)
})

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	return string(b)
}

func TestListenServesTLSAndPlainOnOnePort(t *testing.T) {
	ca := newTestCA(t)
	ln := listenLoopback(t)
	serve(t, ca.Listen(ln), whoHandler)
	addr := ln.Addr().String()

	// A silent client first: it must not hold up anyone else.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool(ca), ServerName: "127.0.0.1"}}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}

	if got := get(t, client, "https://"+addr+"/x"); got != "tls "+addr {
		t.Fatalf("https: %q", got)
	}
	if got := get(t, client, "http://"+addr+"/x"); got != "plain "+addr {
		t.Fatalf("http: %q", got)
	}
	// Keep-alive on both kinds, still with the silent client connected.
	if got := get(t, client, "https://"+addr+"/y"); got != "tls "+addr {
		t.Fatalf("https again: %q", got)
	}

	// The certificate actually presented chains to our CA for 127.0.0.1.
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool(ca), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != "" && p != "http/1.1" {
		t.Errorf("ALPN %q", p)
	}
	conn.Close()

	// A client trusting another CA must fail.
	other := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool(newTestCA(t))}}, Timeout: 5 * time.Second}
	if _, err := other.Get("https://" + addr + "/"); err == nil {
		t.Error("foreign CA accepted our leaf")
	}
}

func TestListenSilentClientTimesOut(t *testing.T) {
	old := sniffTimeout
	sniffTimeout = 200 * time.Millisecond
	t.Cleanup(func() { sniffTimeout = old })

	ca := newTestCA(t)
	ln := listenLoopback(t)
	serve(t, ca.Listen(ln), whoHandler)

	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("silent client not dropped: %v", err)
	}
}

func TestListenCloseReleasesAcceptAndPending(t *testing.T) {
	ca := newTestCA(t)
	sniffing := make(chan struct{}, 1)
	ln := &sniffHook{Listener: listenLoopback(t), sniffing: sniffing}
	l := ca.Listen(ln)

	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if c != nil {
			c.Close()
		}
		accepted <- err
	}()
	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	select { // it reached the sniffer, pending, reading its first byte
	case <-sniffing:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection never reached the sniffer")
	}

	l.Close()
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked after Close")
	}
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("pending connection not closed by Close: %v", err)
	}
}

// sniffHook reports when the sniffer has a connection pending: it sets the
// read deadline for the first byte right after registering it, so Close
// must close it.
type sniffHook struct {
	net.Listener
	sniffing chan struct{}
}

func (h *sniffHook) Accept() (net.Conn, error) {
	c, err := h.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffHookConn{Conn: c, sniffing: h.sniffing}, nil
}

type sniffHookConn struct {
	net.Conn
	sniffing chan struct{}
}

func (c *sniffHookConn) SetReadDeadline(d time.Time) error {
	err := c.Conn.SetReadDeadline(d)
	select {
	case c.sniffing <- struct{}{}:
	default:
	}
	return err
}

func TestPrefixConn(t *testing.T) {
	ln := listenLoopback(t)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	defer server.Close()

	pc := &prefixConn{Conn: server, prefix: []byte("GE")}
	go func() {
		io.WriteString(client, "T /")
		client.(*net.TCPConn).CloseWrite()
	}()
	b, err := io.ReadAll(pc)
	if err != nil || string(b) != "GET /" {
		t.Fatalf("read %q %v", b, err)
	}
	// ReadFrom and CloseWrite reach the TCP connection: the peer sees the
	// bytes, then EOF while the connection stays open for reading.
	if n, err := pc.ReadFrom(strings.NewReader("reply")); n != 5 || err != nil {
		t.Fatalf("ReadFrom %d %v", n, err)
	}
	if err := pc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(client); err != nil || string(b) != "reply" {
		t.Fatalf("peer read %q %v", b, err)
	}
}
