package main

// The server's connection limits, end to end: the real binary with small
// -idle-timeout, -body-timeout and -max-conns. The waits below only bound a
// test that would otherwise hang; nothing is timed.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const connWait = 30 * time.Second

type clientConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialServer(t *testing.T, base string) *clientConn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &clientConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (cc *clientConn) send(s string) {
	cc.t.Helper()
	if _, err := io.WriteString(cc.c, s); err != nil {
		cc.t.Fatalf("write: %v", err)
	}
}

func (cc *clientConn) response() (*http.Response, []byte) {
	cc.t.Helper()
	cc.c.SetReadDeadline(time.Now().Add(connWait))
	resp, err := http.ReadResponse(cc.r, nil)
	if err != nil {
		cc.t.Fatalf("no answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		cc.t.Fatalf("reading the answer: %v", err)
	}
	return resp, b
}

// closed waits for the server to close the connection.
func (cc *clientConn) closed() {
	cc.t.Helper()
	cc.c.SetReadDeadline(time.Now().Add(connWait))
	extra, err := io.ReadAll(cc.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		cc.t.Fatal("the server kept the connection open")
	}
	if len(extra) > 0 {
		cc.t.Errorf("%d bytes after the answer: %q", len(extra), extra)
	}
}

func falDetail(t *testing.T, b []byte) string {
	t.Helper()
	var v struct {
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(b, &v); err != nil || v.Detail == "" {
		t.Fatalf("not a fal error body: %s", b)
	}
	return v.Detail
}

func TestServeConnectionTimeouts(t *testing.T) {
	s := startServer(t, "--idle-timeout", "500ms", "--body-timeout", "1s", "--body-min-rate", "65536")

	t.Run("idle keep-alive closed", func(t *testing.T) {
		cc := dialServer(t, s.base)
		cc.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		if resp, b := cc.response(); resp.StatusCode != 200 || resp.Close {
			t.Fatalf("%d close=%v %s, want a 200 that keeps the connection", resp.StatusCode, resp.Close, b)
		}
		cc.closed()
	})

	t.Run("stalled body cut", func(t *testing.T) {
		cc := dialServer(t, s.base)
		cc.send("POST /run/fal-ai/imageutils/rembg HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
			"Content-Length: 1000\r\n\r\n{\"image_url\": \"data:image/png;base64,")
		resp, b := cc.response()
		if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(falDetail(t, b), "stopped arriving") {
			t.Fatalf("%d %s, want 408 saying the body stopped arriving", resp.StatusCode, b)
		}
		cc.closed()
	})

	t.Run("in a tunnel: stalled body cut, idle tunnel closed", func(t *testing.T) {
		pem, err := os.ReadFile(filepath.Join(s.dataDir, "tls", "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
		tunnel := func() *clientConn {
			cc := dialServer(t, s.base)
			cc.send("CONNECT queue.fal.run:443 HTTP/1.1\r\nHost: queue.fal.run:443\r\n\r\n")
			cc.c.SetReadDeadline(time.Now().Add(connWait))
			resp, err := http.ReadResponse(cc.r, &http.Request{Method: http.MethodConnect})
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("CONNECT: %v %v", resp, err)
			}
			tc := tls.Client(cc.c, &tls.Config{RootCAs: roots, ServerName: "queue.fal.run"})
			return &clientConn{t: t, c: tc, r: bufio.NewReader(tc)}
		}
		cc := tunnel()
		cc.send("POST /fal-ai/imageutils/rembg HTTP/1.1\r\nHost: queue.fal.run\r\nContent-Type: application/json\r\n" +
			"Content-Length: 1000\r\n\r\n{\"image_url\": \"data:image/png;base64,")
		resp, b := cc.response()
		if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(falDetail(t, b), "stopped arriving") {
			t.Fatalf("%d %s, want 408 saying the body stopped arriving", resp.StatusCode, b)
		}
		cc.closed()

		cc = tunnel()
		cc.send("GET /healthz HTTP/1.1\r\nHost: queue.fal.run\r\n\r\n")
		if resp, b := cc.response(); resp.StatusCode != 200 || resp.Close {
			t.Fatalf("%d close=%v %s, want a 200 that keeps the tunnel", resp.StatusCode, resp.Close, b)
		}
		cc.closed()
	})

	t.Run("steady upload completes", func(t *testing.T) {
		// 4 MiB, 32 KiB every 25 ms: about three body timeouts long, at
		// about 20 times the minimum rate, and with writes 40 times closer
		// together than the timeout.
		const size, chunk = 4 << 20, 32 << 10
		cc := dialServer(t, s.base)
		cc.send("POST /cdn/files/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n" +
			"X-Fal-File-Name: steady.bin\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n")
		block := bytes.Repeat([]byte{0x5a}, chunk)
		for sent := 0; sent < size; sent += chunk {
			if _, err := cc.c.Write(block); err != nil {
				break // cut: the answer says why
			}
			time.Sleep(25 * time.Millisecond)
		}
		resp, b := cc.response()
		var out struct {
			FileSize int `json:"file_size"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(b, &out) != nil || out.FileSize != size {
			t.Fatalf("%d %s, want 200 with file_size %d", resp.StatusCode, b, size)
		}
	})
}

// heldConn opens a keep-alive connection and has a request answered on it,
// so that the server has surely accepted it; it returns the status.
func heldConn(t *testing.T, base string) (*clientConn, int) {
	t.Helper()
	cc := dialServer(t, base)
	cc.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	resp, _ := cc.response()
	return cc, resp.StatusCode
}

// holdUntilServed retries heldConn while the server still counts a
// connection the client has already closed.
func holdUntilServed(t *testing.T, base string) *clientConn {
	t.Helper()
	deadline := time.Now().Add(connWait)
	for {
		cc, code := heldConn(t, base)
		if code == 200 {
			return cc
		}
		cc.c.Close()
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("a connection within the limit: %d, want 200", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServeMaxConns(t *testing.T) {
	s := startServer(t, "--max-conns", "3")
	// The health checks' keep-alive connection is the test's own.
	http.DefaultClient.CloseIdleConnections()
	first := holdUntilServed(t, s.base)
	holdUntilServed(t, s.base)
	holdUntilServed(t, s.base)

	extra := dialServer(t, s.base)
	extra.send("POST /run/fal-ai/imageutils/rembg HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	resp, b := extra.response()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !resp.Close {
		t.Fatalf("the 4th connection: %d %v %s, want 503 with Retry-After and Connection: close", resp.StatusCode, resp.Header, b)
	}
	if d := falDetail(t, b); !strings.Contains(d, "too many open connections") {
		t.Errorf("detail %q", d)
	}
	extra.closed()
	// The log reaches the test through a pipe, on its own time.
	for deadline := time.Now().Add(connWait); !strings.Contains(s.Log(), "refusing connections"); {
		if time.Now().After(deadline) {
			t.Fatalf("the refusal is not logged:\n%s", s.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Once one of the three goes, the server serves again.
	first.c.Close()
	holdUntilServed(t, s.base)
}
