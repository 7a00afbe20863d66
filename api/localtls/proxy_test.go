package localtls

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var falHosts = map[string]bool{"queue.fal.run": true, "fal.run": true, "rest.fal.ai": true, "v3.fal.media": true}

func allowFal(h string) bool { return falHosts[h] }

// recorder is the handler behind the proxy; it records every request it sees.
type recorder struct {
	mu   sync.Mutex
	seen []string // "METHOD host path tls|plain sni"
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind, sni := "plain", ""
	if r.TLS != nil {
		kind, sni = "tls", r.TLS.ServerName
	}
	line := strings.TrimSpace(fmt.Sprintf("%s %s %s %s %s", r.Method, r.Host, r.URL.Path, kind, sni))
	rc.mu.Lock()
	rc.seen = append(rc.seen, line)
	rc.mu.Unlock()
	io.WriteString(w, line)
}

func (rc *recorder) lines() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]string(nil), rc.seen...)
}

// proxyServer starts Proxy(rec) on 127.0.0.1 behind Listen, as the server
// would run it, and counts CONNECT requests reaching the outer server.
func proxyServer(t *testing.T, ca *CA, rec http.Handler, allow func(string) bool, wrap bool) (addr string, connects *atomic.Int32) {
	t.Helper()
	ln := listenLoopback(t)
	connects = new(atomic.Int32)
	p := ca.Proxy(rec, allow)
	var l net.Listener = ln
	if wrap {
		l = ca.Listen(ln)
	}
	serve(t, l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect {
			connects.Add(1)
		}
		p.ServeHTTP(w, r)
	}))
	return ln.Addr().String(), connects
}

func TestProxyRoundTrip(t *testing.T) {
	ca := newTestCA(t)
	rec := &recorder{}
	addr, connects := proxyServer(t, ca, rec, allowFal, true)
	proxyURL := &url.URL{Scheme: "http", Host: addr}

	tr := &http.Transport{
		Proxy:           http.ProxyURL(proxyURL),
		TLSClientConfig: &tls.Config{RootCAs: pool(ca)},
		// The transport must only ever dial the proxy; fail loudly otherwise.
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			if a != addr {
				return nil, fmt.Errorf("test: unexpected dial to %s", a)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, a)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}

	var reused []bool
	for _, path := range []string{"/x", "/y"} {
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = append(reused, i.Reused) }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "https://queue.fal.run"+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "GET queue.fal.run " + path + " tls queue.fal.run"; string(b) != want {
			t.Fatalf("handler saw %q, want %q", b, want)
		}
		if resp.TLS == nil || resp.TLS.PeerCertificates[0].DNSNames[0] != "queue.fal.run" {
			t.Fatalf("client TLS state %+v", resp.TLS)
		}
	}
	if n := connects.Load(); n != 1 {
		t.Errorf("%d CONNECTs for two requests; tunnel not kept alive", n)
	}
	if len(reused) != 2 || !reused[1] {
		t.Errorf("connection reuse %v", reused)
	}

	// Other allowed hosts get their own tunnel and leaf.
	if got := get(t, client, "https://rest.fal.ai/tokens/"); got != "GET rest.fal.ai /tokens/ tls rest.fal.ai" {
		t.Errorf("rest.fal.ai: %q", got)
	}

	// Non-CONNECT requests pass through unchanged, including the absolute
	// form a client sends to an HTTP proxy for http:// URLs.
	if got := get(t, client, "http://fal.run/plain"); got != "GET fal.run /plain plain" {
		t.Errorf("plain via proxy: %q", got)
	}
	direct := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	if got := get(t, direct, "http://"+addr+"/direct"); got != "GET "+addr+" /direct plain" {
		t.Errorf("direct: %q", got)
	}
}

// rawConnect sends a CONNECT line on a fresh connection and returns the
// response and the connection.
func rawConnect(t *testing.T, addr, target string) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	return resp, conn, br
}

func TestProxyRefuses(t *testing.T) {
	ca := newTestCA(t)
	rec := &recorder{}
	addr, _ := proxyServer(t, ca, rec, allowFal, true)

	for _, target := range []string{
		"example.com:443",    // not a fal host
		"queue.fal.run:80",   // fal host, wrong port
		"queue.fal.run:8443", // same
		"127.0.0.1:443",      // our own address is not on the list either
		"[::1]:443",
		"fal.run.example.com:443",
	} {
		resp, _, _ := rawConnect(t, addr, target)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "nothing is dialled") {
			t.Errorf("CONNECT %s: %s %q", target, resp.Status, body)
		}
	}
	// Nothing reached the handler, so nothing could have been forwarded or dialled.
	if seen := rec.lines(); len(seen) != 0 {
		t.Errorf("handler saw %v", seen)
	}

	// A nil allow refuses everything.
	addr2, _ := proxyServer(t, ca, rec, nil, false)
	if resp, _, _ := rawConnect(t, addr2, "fal.run:443"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("nil allow: %s", resp.Status)
	}

	// Through Go's transport the refusal surfaces as an error, not a response.
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: addr}), TLSClientConfig: &tls.Config{RootCAs: pool(ca)}}
	t.Cleanup(tr.CloseIdleConnections)
	if _, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://example.com/"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("transport to example.com: %v", err)
	}
}

// pipelinedConn sends the CONNECT together with the first TLS write (the
// ClientHello), as some clients do, and strips the CONNECT reply.
type pipelinedConn struct {
	net.Conn
	pending []byte
	br      *bufio.Reader
	status  int
}

func (c *pipelinedConn) Write(p []byte) (int, error) {
	if c.pending != nil {
		buf := append(c.pending, p...)
		c.pending = nil
		_, err := c.Conn.Write(buf)
		return len(p), err
	}
	return c.Conn.Write(p)
}

func (c *pipelinedConn) Read(p []byte) (int, error) {
	if c.status == 0 {
		resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			return 0, err
		}
		c.status = resp.StatusCode
		if c.status != http.StatusOK {
			return 0, fmt.Errorf("CONNECT: %s", resp.Status)
		}
	}
	return c.br.Read(p)
}

func TestProxyEarlyClientHelloAndSNI(t *testing.T) {
	ca := newTestCA(t)
	rec := &recorder{}
	addr, _ := proxyServer(t, ca, rec, allowFal, false)

	tunnel := func(target, sni string) (string, error) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		pc := &pipelinedConn{Conn: conn, br: bufio.NewReader(conn),
			pending: []byte("CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n")}
		tc := tls.Client(pc, &tls.Config{RootCAs: pool(ca), ServerName: sni})
		if err := tc.Handshake(); err != nil {
			return "", err
		}
		fmt.Fprintf(tc, "GET /early HTTP/1.1\r\nHost: %s\r\n\r\n", sni)
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}

	if got, err := tunnel("fal.run:443", "fal.run"); err != nil || got != "GET fal.run /early tls fal.run" {
		t.Errorf("pipelined CONNECT: %q %v", got, err)
	}
	// No port in the CONNECT target is accepted; an allowed SNI is preferred.
	if got, err := tunnel("fal.run", "queue.fal.run"); err != nil || got != "GET queue.fal.run /early tls queue.fal.run" {
		t.Errorf("SNI queue.fal.run in fal.run tunnel: %q %v", got, err)
	}
	// A disallowed SNI gets the CONNECT host's leaf, which the client rejects.
	if _, err := tunnel("fal.run:443", "example.com"); err == nil {
		t.Error("tunnel minted a leaf for a disallowed SNI")
	}
}
