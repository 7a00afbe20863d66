package localtls

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestProxyTunnelIdleTimeout: a tunnel whose client stops sending requests
// is closed after ProxyOptions.IdleTimeout, as the outer server closes an
// idle keep-alive connection.
func TestProxyTunnelIdleTimeout(t *testing.T) {
	ca := newTestCA(t)
	ln := listenLoopback(t)
	serve(t, ca.Listen(ln), ca.ProxyWith(whoHandler, allowFal, ProxyOptions{IdleTimeout: 200 * time.Millisecond}))
	resp, conn, _ := rawConnect(t, ln.Addr().String(), "queue.fal.run:443")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %s", resp.Status)
	}
	// A bound for a test that would otherwise hang, not a timing.
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	tc := tls.Client(conn, &tls.Config{RootCAs: pool(ca), ServerName: "queue.fal.run"})
	req, _ := http.NewRequest(http.MethodGet, "https://queue.fal.run/x", nil)
	if err := req.Write(tc); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(tc)
	r, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	if string(body) != "tls queue.fal.run" {
		t.Fatalf("through the tunnel: %q", body)
	}
	// Idle now: the server closes the tunnel.
	_, err = br.ReadByte()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the idle tunnel was not closed")
	}
	if err == nil {
		t.Fatal("the server sent more after the answer")
	}
}
