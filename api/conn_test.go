package api_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/api"
)

// Short limits: the tests wait for them to pass. answerWait only bounds a
// test that would otherwise hang; nothing is timed.
const (
	testBodyTimeout = 300 * time.Millisecond
	answerWait      = 30 * time.Second
)

// serveConns serves h on a loopback listener wrapped by api.LimitConns(max)
// through a plain http.Server, stopped when the test ends.
func serveConns(t *testing.T, h http.Handler, max int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		hs.Serve(api.LimitConns(ln, max, slog.New(slog.DiscardHandler)))
		close(done)
	}()
	t.Cleanup(func() {
		hs.Close()
		<-done
	})
	return ln.Addr().String()
}

// rawConn is a client connection the test writes by hand.
type rawConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (rc *rawConn) write(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// answer reads one response (its body read in full).
func (rc *rawConn) answer() (*http.Response, []byte) {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(answerWait))
	resp, err := http.ReadResponse(rc.r, nil)
	if err != nil {
		rc.t.Fatalf("no answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatalf("reading the answer: %v", err)
	}
	return resp, b
}

// closedByServer waits for the server to close the connection.
func (rc *rawConn) closedByServer() {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(answerWait))
	extra, err := io.ReadAll(rc.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		rc.t.Fatal("the server kept the connection open")
	}
	if len(extra) > 0 {
		rc.t.Errorf("%d more bytes after the answer: %q", len(extra), extra)
	}
}

func detailOf(t *testing.T, b []byte) string {
	t.Helper()
	var v struct {
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(b, &v); err != nil || v.Detail == "" {
		t.Fatalf("not a fal error body: %s", b)
	}
	return v.Detail
}

// TestBodyStalled: a run whose body stops halfway gets a 408 once the body
// timeout passes, and its connection is closed.
func TestBodyStalled(t *testing.T) {
	e := newEnv(t, nil, echoEP("test/echo"))
	addr := serveConns(t, api.BodyDeadlines(e.h, testBodyTimeout, 0), 0)
	rc := dialRaw(t, addr)
	rc.write("POST /run/test/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":")
	resp, b := rc.answer()
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(detailOf(t, b), "stopped arriving") {
		t.Fatalf("%d %s, want 408 saying the body stopped arriving", resp.StatusCode, b)
	}
	rc.closedByServer()
}

// TestBodyUnread: a request refused before its body is read (no key) and
// whose body stops halfway still gets its answer, and the connection is
// closed: net/http waits for the unread body before it answers.
func TestBodyUnread(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.Keys = []string{"id:secret"} }, echoEP("test/echo"))
	addr := serveConns(t, api.BodyDeadlines(e.h, testBodyTimeout, 0), 0)
	rc := dialRaw(t, addr)
	rc.write("POST /run/test/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":")
	resp, b := rc.answer()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("%d %s, want 401", resp.StatusCode, b)
	}
	detailOf(t, b)
	rc.closedByServer()
}

// countBody answers how many body bytes it read; pause, if set, runs
// after the first read.
func countBody(pause func()) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 32<<10)
		var n int64
		for first := true; ; first = false {
			k, err := r.Body.Read(buf)
			n += int64(k)
			if first && pause != nil {
				pause()
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				var te interface{ Timeout() bool }
				if errors.As(err, &te) && te.Timeout() {
					w.WriteHeader(http.StatusRequestTimeout)
				} else {
					w.WriteHeader(http.StatusBadRequest)
				}
				fmt.Fprint(w, err)
				return
			}
		}
		fmt.Fprint(w, n)
	})
}

// slowUpload sends size bytes in chunks of chunk, one every gap, and
// returns the answer.
func slowUpload(t *testing.T, addr string, size, chunk int, gap time.Duration) (*http.Response, []byte) {
	t.Helper()
	rc := dialRaw(t, addr)
	rc.write("PUT /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n")
	block := bytes.Repeat([]byte{'x'}, chunk)
	for sent := 0; sent < size; sent += chunk {
		if _, err := rc.c.Write(block[:min(chunk, size-sent)]); err != nil {
			break // cut: the answer says why
		}
		time.Sleep(gap)
	}
	return rc.answer()
}

// TestBodySlowButSteady: an upload of several MB that takes many times the
// body timeout completes, as long as its bytes keep arriving (at more than
// the minimum rate); one that trickles below the rate is cut.
func TestBodySlowButSteady(t *testing.T) {
	const size = 4 << 20
	// A second's timeout, far from the 20 ms between the client's writes,
	// so that a busy machine cannot make the steady upload look stalled.
	addr := serveConns(t, api.BodyDeadlines(countBody(nil), time.Second, 256<<10), 0)
	// 32 KiB every 20 ms: about 2.6 s in all, at about 6 times 256 KiB/s.
	resp, b := slowUpload(t, addr, size, 32<<10, 20*time.Millisecond)
	if resp.StatusCode != 200 || string(b) != strconv.Itoa(size) {
		t.Fatalf("%d %s, want 200 %d", resp.StatusCode, b, size)
	}
	// 8 KiB every 100 ms (80 KiB/s): each read is well inside the timeout,
	// the rate is not.
	addr = serveConns(t, api.BodyDeadlines(countBody(nil), testBodyTimeout, 256<<10), 0)
	resp, b = slowUpload(t, addr, size, 8<<10, 100*time.Millisecond)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "slower than 262144 bytes per second") {
		t.Fatalf("%d %s, want 408 for a body slower than the minimum rate", resp.StatusCode, b)
	}
}

// TestBodyHandlerPause: time the handler spends between reads is not the
// client's: a body already sent is read after a pause longer than the
// timeout.
func TestBodyHandlerPause(t *testing.T) {
	addr := serveConns(t, api.BodyDeadlines(countBody(func() { time.Sleep(3 * testBodyTimeout) }), testBodyTimeout, 256<<10), 0)
	resp, b := slowUpload(t, addr, 1<<20, 1<<20, 0)
	if resp.StatusCode != 200 || string(b) != strconv.Itoa(1<<20) {
		t.Fatalf("%d %s, want 200 %d", resp.StatusCode, b, 1<<20)
	}
}

// hold opens a keep-alive connection and has one request answered on it,
// so that the server has surely accepted (and counted) it.
func hold(t *testing.T, addr string) (*rawConn, int) {
	rc := dialRaw(t, addr)
	rc.write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	resp, _ := rc.answer()
	return rc, resp.StatusCode
}

// TestLimitConns: with two connections open, a third is answered 503 in
// fal's shape and closed; once one of the two closes, a new one is served.
func TestLimitConns(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	addr := serveConns(t, ok, 2)
	first, code1 := hold(t, addr)
	_, code2 := hold(t, addr)
	if code1 != 200 || code2 != 200 {
		t.Fatalf("the first two connections got %d and %d", code1, code2)
	}
	third := dialRaw(t, addr)
	third.write("POST /run/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}")
	resp, b := third.answer()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !resp.Close {
		t.Fatalf("third connection: %d %v, want 503 with Retry-After and Connection: close", resp.StatusCode, resp.Header)
	}
	if d := detailOf(t, b); !strings.Contains(d, "too many open connections") {
		t.Errorf("detail %q", d)
	}
	third.closedByServer()

	first.c.Close()
	// The server notices the close on its own time: a new connection is
	// refused until it has.
	deadline := time.Now().Add(answerWait)
	for {
		_, code := hold(t, addr)
		if code == 200 {
			break
		}
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("after a close: %d, want 200", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A body that cannot be read (a malformed chunked encoding) is the
// client's error, a 400, not the server's.
func TestBodyUnreadable(t *testing.T) {
	e := newEnv(t, nil, echoEP("test/echo"))
	addr := serveConns(t, api.BodyDeadlines(e.h, time.Minute, 0), 0)
	rc := dialRaw(t, addr)
	rc.write("POST /run/test/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
	resp, b := rc.answer()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(detailOf(t, b), "Could not read the request body") {
		t.Errorf("%d %s, want 400 saying the body could not be read", resp.StatusCode, b)
	}
}
