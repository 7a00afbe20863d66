package localtls

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"
)

// sniffTimeout bounds how long a new connection may stay silent before its
// first byte decides plain HTTP or TLS. Only that connection waits: each is
// sniffed in its own goroutine.
var sniffTimeout = 30 * time.Second

// tlsRecordHandshake is the first byte of every TLS connection (a handshake
// record); no HTTP method starts with it.
const tlsRecordHandshake = 0x16

// Listen wraps inner so one port serves both plain HTTP and direct TLS (e.g.
// FAL_RUN_HOST=127.0.0.1:8080/run with SSL_CERT_FILE). Each accepted
// connection's first byte is read in its own goroutine, under a deadline, so
// a silent client never stalls Accept or other clients; one starting with
// 0x16 is returned as a *tls.Conn using TLSConfig (so net/http performs the
// handshake and sets Request.TLS), any other is returned as is, first byte
// included. Close closes inner and every connection still being sniffed.
func (c *CA) Listen(inner net.Listener) net.Listener {
	return &sniffListener{
		inner:   inner,
		cfg:     c.TLSConfig(),
		ready:   make(chan net.Conn),
		errc:    make(chan error),
		done:    make(chan struct{}),
		pending: map[net.Conn]struct{}{},
	}
}

type sniffListener struct {
	inner net.Listener
	cfg   *tls.Config
	ready chan net.Conn // sniffed connections, handed to Accept
	errc  chan error    // temporary Accept errors, passed on so callers back off

	start sync.Once
	stop  sync.Once
	done  chan struct{} // closed by Close or a permanent inner Accept error

	mu      sync.Mutex
	err     error                 // the permanent error, if any
	pending map[net.Conn]struct{} // connections still being sniffed
}

func (l *sniffListener) Accept() (net.Conn, error) {
	// Started on first Accept so an unused wrapper holds no goroutine.
	l.start.Do(func() { go l.acceptLoop() })
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errc:
		return nil, err
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.err != nil {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

func (l *sniffListener) acceptLoop() {
	for {
		conn, err := l.inner.Accept()
		if err != nil {
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				// Blocking until the caller takes it paces this loop by the
				// caller's back-off (as http.Server does) instead of spinning.
				select {
				case l.errc <- err:
					continue
				case <-l.done:
					return
				}
			}
			l.mu.Lock()
			if l.err == nil {
				l.err = err
			}
			l.mu.Unlock()
			l.shutdown()
			return
		}
		go l.sniff(conn)
	}
}

func (l *sniffListener) sniff(conn net.Conn) {
	l.mu.Lock()
	select {
	case <-l.done:
		l.mu.Unlock()
		conn.Close()
		return
	default:
	}
	l.pending[conn] = struct{}{}
	l.mu.Unlock()

	var first [1]byte
	conn.SetReadDeadline(time.Now().Add(sniffTimeout))
	_, err := io.ReadFull(conn, first[:])

	l.mu.Lock()
	delete(l.pending, conn)
	l.mu.Unlock()
	if err != nil { // silent past the deadline, closed, or listener shut down
		conn.Close()
		return
	}
	conn.SetReadDeadline(time.Time{}) // from here the server's own timeouts apply

	var out net.Conn = &prefixConn{Conn: conn, prefix: first[:]}
	if first[0] == tlsRecordHandshake {
		out = tls.Server(out, l.cfg)
	}
	select {
	case l.ready <- out:
	case <-l.done:
		conn.Close()
	}
}

func (l *sniffListener) shutdown() {
	l.stop.Do(func() {
		l.mu.Lock()
		close(l.done)
		for c := range l.pending {
			c.Close()
		}
		clear(l.pending)
		l.mu.Unlock()
	})
}

func (l *sniffListener) Close() error {
	err := l.inner.Close()
	l.shutdown()
	return err
}

func (l *sniffListener) Addr() net.Addr { return l.inner.Addr() }

// prefixConn replays bytes already read from Conn (the sniffed byte, or what
// a hijacked bufio.Reader had buffered) before reading Conn itself.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite keeps net/http's graceful half-close working on wrapped TCP
// connections.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil // nothing to half-close; the caller closes the conn later
}

// ReadFrom keeps the kernel's sendfile/splice path for plain responses.
func (c *prefixConn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(c.Conn, r)
}
