package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/falocal/falocal/pipelines"
)

// Connection limits: what one client may hold of the server. The header
// and idle timeouts are http.Server's own (ReadHeaderTimeout, IdleTimeout);
// BodyDeadlines bounds how long a request body may stall, LimitConns how
// many connections may be open at once.

// BodyDeadlines wraps next so that a request body that stops arriving is
// cut: each read of the body may wait at most timeout for the client's
// next bytes, and, when minRate (bytes per second) is positive, the time
// spent waiting for the body may exceed timeout only by what minRate gives
// for the bytes received (timeout + received/minRate). A body that keeps
// arriving may take as long as it needs, whatever its size; one that stalls
// or trickles ends with a 408 (the handler's read fails with an error that
// fal's error bodies map to 408) and the connection is closed after the
// answer. A body the handler does not read (a request refused before its
// body) is held to the same timeout while net/http discards it. The time
// the handler spends between reads is not held against the client.
// timeout <= 0 returns next unchanged.
func BodyDeadlines(next http.Handler, timeout time.Duration, minRate int64) http.Handler {
	if timeout <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		b := &deadlineBody{body: r.Body, rc: http.NewResponseController(w), timeout: timeout, minRate: minRate}
		// Until the handler reads, the unread body is bounded too: net/http
		// discards it before it writes the answer.
		if err := b.rc.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			next.ServeHTTP(w, r) // a connection without deadlines (not net/http's)
			return
		}
		r.Body = b
		next.ServeHTTP(w, r)
	})
}

type deadlineBody struct {
	body    io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	minRate int64

	received int64
	waited   time.Duration // time spent inside reads of the body
	// rateBound: the last read was bounded by minRate, not by timeout.
	rateBound bool
	err       error
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	allowed := b.timeout
	if b.minRate > 0 {
		earned := time.Duration(float64(b.received) / float64(b.minRate) * float64(time.Second))
		allowed = min(allowed, b.timeout+earned-b.waited)
		b.rateBound = allowed < b.timeout
	}
	if allowed <= 0 {
		b.err = b.timedOut()
		return 0, b.err
	}
	start := time.Now()
	b.rc.SetReadDeadline(start.Add(allowed))
	n, err := b.body.Read(p)
	b.waited += time.Since(start)
	b.received += int64(n)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		// net/http now reads the connection in the background (to see the
		// client go away) while the handler runs: no deadline of ours may
		// cut that read.
		b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.err = b.timedOut()
		err = b.err
	}
	return n, err
}

func (b *deadlineBody) Close() error { return b.body.Close() }

func (b *deadlineBody) timedOut() error {
	msg := fmt.Sprintf("The request body stopped arriving: no data for %s", b.timeout)
	if b.rateBound {
		msg = fmt.Sprintf("The request body arrived slower than %d bytes per second", b.minRate)
	}
	return &BodyTimeoutError{msg: msg}
}

// BodyTimeoutError is what a read of a request body cut by BodyDeadlines
// returns: a timeout (net.Error) that fal's error bodies answer with 408.
type BodyTimeoutError struct{ msg string }

func (e *BodyTimeoutError) Error() string   { return e.msg }
func (e *BodyTimeoutError) Timeout() bool   { return true }
func (e *BodyTimeoutError) Temporary() bool { return false }

// Unwrap makes it os.ErrDeadlineExceeded and, for the API's error handler,
// a 408.
func (e *BodyTimeoutError) Unwrap() []error {
	return []error{os.ErrDeadlineExceeded, &echo.HTTPError{Code: http.StatusRequestTimeout, Message: e.msg}}
}

// bodyError maps a failed read of a request body: what the error handler
// answers by type stays (over the limit: 413; stalled: 408; the client
// gone or the request's deadline), any other failure — a malformed chunked
// encoding, a connection cut mid-body — is the client's, a 400.
func bodyError(err error) error {
	var mb *http.MaxBytesError
	var bt *BodyTimeoutError
	if errors.As(err, &mb) || errors.As(err, &bt) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &pipelines.HTTPError{Status: http.StatusBadRequest, Type: "bad_request", Msg: "Could not read the request body", Err: err}
}

// refuseWait bounds how long a refused connection is held while its
// request is read and the 503 written; at most maxRefusing are held at
// once, beyond that they are closed at once.
const (
	refuseWait  = 2 * time.Second
	maxRefusing = 64
)

// LimitConns wraps ln so that at most max connections accepted through it
// are open at once (a hijacked connection counts until it is closed). One
// past the limit is answered, in plain HTTP, 503 with a fal-shaped body
// ({"detail": ...}), Retry-After and Connection: close, after its request
// head is read (so that the answer is not lost to a reset), and closed; a
// TLS client past the limit is closed without an answer. The first refusal
// of a burst is logged, and how many there were once a connection frees a
// place. Close closes ln and every connection being refused, and returns
// once they are. max <= 0 returns ln unchanged.
func LimitConns(ln net.Listener, max int, log *slog.Logger) net.Listener {
	if max <= 0 {
		return ln
	}
	if log == nil {
		log = slog.Default()
	}
	return &connLimiter{Listener: ln, max: max, log: log, refusing: map[net.Conn]struct{}{}}
}

type connLimiter struct {
	net.Listener
	max int
	log *slog.Logger

	mu       sync.Mutex
	open     int
	refused  int // since the limit was last reached
	closed   bool
	refusing map[net.Conn]struct{}
	wg       sync.WaitGroup
}

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		if l.open < l.max && !l.closed {
			l.open++
			l.mu.Unlock()
			return &limitedConn{Conn: c, l: l}, nil
		}
		l.refused++
		if l.refused == 1 {
			l.log.Warn("refusing connections: the limit of open connections is reached", "max_conns", l.max)
		}
		if l.closed || len(l.refusing) >= maxRefusing {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.refusing[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.refuse(c)
	}
}

func (l *connLimiter) release() {
	l.mu.Lock()
	l.open--
	n := l.refused
	l.refused = 0
	l.mu.Unlock()
	if n > 0 {
		l.log.Info("accepting connections again", "refused", n, "max_conns", l.max)
	}
}

// refuse answers a connection past the limit and closes it.
func (l *connLimiter) refuse(c net.Conn) {
	defer func() {
		l.mu.Lock()
		delete(l.refusing, c)
		l.mu.Unlock()
		c.Close()
		l.wg.Done()
	}()
	c.SetDeadline(time.Now().Add(refuseWait))
	br := bufio.NewReaderSize(c, 4096)
	first, err := br.Peek(1)
	if err != nil || first[0] == 0x16 { // silent, gone, or a TLS handshake we will not answer
		return
	}
	// The request head, at most 4 KiB of it.
	for read := 0; read < 4096; {
		line, err := br.ReadSlice('\n')
		read += len(line)
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
		if len(line) <= 2 && (len(line) == 0 || line[0] == '\r' || line[0] == '\n') {
			break
		}
	}
	body := `{"detail":"The server has too many open connections (` + strconv.Itoa(l.max) + `); retry shortly"}`
	if _, err := io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"+
		"Connection: close\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body); err != nil {
		return
	}
	// Let the client read the answer before the close: send FIN, then
	// drain what it still sends until it closes or the deadline passes.
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.Copy(io.Discard, br)
}

func (l *connLimiter) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	l.closed = true
	for c := range l.refusing {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
	return err
}

// limitedConn gives its place back once closed.
type limitedConn struct {
	net.Conn
	l    *connLimiter
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.l.release)
	return err
}

// CloseWrite keeps net/http's graceful half-close working.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ReadFrom keeps the kernel's sendfile/splice path for plain responses.
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(c.Conn, r)
}
