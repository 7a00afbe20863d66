package localtls

import (
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Default timeouts of the HTTP server inside a tunnel. The handshake is
// bounded by the header timeout, so a client that CONNECTs and goes quiet is
// dropped.
const (
	tunnelHeaderTimeout = 30 * time.Second
	tunnelIdleTimeout   = 2 * time.Minute
)

// ProxyOptions are the limits of the HTTP server inside each tunnel, as the
// outer server has its own; a zero field keeps its default. A request
// body's own deadline is the handler's (api.BodyDeadlines around next).
type ProxyOptions struct {
	// ReadHeaderTimeout bounds the TLS handshake and each request's head
	// (default 30s).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a tunnel that waits this long for its next
	// request (default 2m).
	IdleTimeout time.Duration
}

// Proxy wraps next so that this server can be a client's HTTPS_PROXY without
// ever dialling anywhere. A CONNECT whose target host (lower-cased, no
// trailing dot) satisfies allow, on port 443 or with no port, is hijacked,
// answered "200 Connection established", TLS-terminated with a leaf for the
// host the client asked for (its SNI when allow accepts that too, else the
// CONNECT host), and the decrypted stream is served by next through its own http.Server (HTTP/1.1,
// keep-alive), so requests arrive with Host "queue.fal.run" etc. and
// Request.TLS set. Any other CONNECT gets 403; a nil allow refuses all.
// Other methods go to next unchanged. A tunnel lives until the client closes
// it or it idles out; the outer server's Shutdown does not wait for it.
func (c *CA) Proxy(next http.Handler, allow func(host string) bool) http.Handler {
	return c.ProxyWith(next, allow, ProxyOptions{})
}

// ProxyWith is Proxy with the tunnels' server limits set by o.
func (c *CA) ProxyWith(next http.Handler, allow func(host string) bool, o ProxyOptions) http.Handler {
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = tunnelHeaderTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = tunnelIdleTimeout
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			next.ServeHTTP(w, r)
			return
		}
		host, ok := connectTarget(r)
		if !ok || allow == nil || !allow(host) {
			http.Error(w, "falocal: CONNECT is served only for fal's host names on port 443; nothing is dialled", http.StatusForbidden)
			return
		}
		c.tunnel(w, r, host, next, allow, o)
	})
}

// connectTarget returns the normalised host of a CONNECT's authority, and
// whether its port is acceptable (443, or none given).
func connectTarget(r *http.Request) (string, bool) {
	authority := r.URL.Host // the request-target; net/http also copies it to r.Host
	if authority == "" {
		authority = r.Host
	}
	host, port, err := net.SplitHostPort(authority)
	if err != nil {
		// No port: the whole authority is the host (an IPv6 literal keeps
		// its brackets here).
		host, port = strings.TrimSuffix(strings.TrimPrefix(authority, "["), "]"), ""
		if strings.Contains(host, "[") || strings.Contains(host, "]") {
			return "", false
		}
	}
	host = normalizeHost(host)
	if host == "" || (port != "" && port != "443") {
		return "", false
	}
	return host, true
}

func (c *CA) tunnel(w http.ResponseWriter, r *http.Request, host string, next http.Handler, allow func(string) bool, o ProxyOptions) {
	hj, ok := w.(http.Hijacker)
	if !ok { // HTTP/2 CONNECT cannot be hijacked; we only offer HTTP/1.1
		http.Error(w, "falocal: CONNECT needs HTTP/1.1", http.StatusNotImplemented)
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		http.Error(w, "falocal: cannot take over the connection", http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	// The outer server may have set deadlines for the CONNECT request; the
	// inner server sets its own.
	conn.SetDeadline(time.Time{})
	if _, err := brw.WriteString("HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	// A client may send its ClientHello without waiting for our 200; the
	// hijacked reader may already hold it.
	var early []byte
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		early = append([]byte(nil), b...)
	}
	raw := &notifyConn{Conn: &prefixConn{Conn: conn, prefix: early}, closed: make(chan struct{})}

	cfg := c.TLSConfig()
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		// Prefer SNI (what the client will verify), but only for allowed
		// names, so a tunnel cannot be used to mint arbitrary leaves.
		if sni := normalizeHost(hello.ServerName); sni != "" && sni != host && allow(sni) {
			return c.Leaf(sni)
		}
		return c.Leaf(host)
	}
	srv := &http.Server{
		Handler:           next,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		IdleTimeout:       o.IdleTimeout,
		// Non-nil and empty: never switch to HTTP/2 inside the tunnel.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	// Serve returns once the single connection has been served and closed,
	// so this handler (and its goroutine) lasts exactly as long as the tunnel.
	srv.Serve(&oneConnListener{conn: tls.Server(raw, cfg), connClosed: raw.closed, closed: make(chan struct{})})
	srv.Close()
}

// notifyConn reports, by closing closed, when the inner server is done with
// the connection.
type notifyConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *notifyConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// oneConnListener hands one connection to an http.Server, then blocks Accept
// until that connection is closed, so Serve returns only when it is done.
type oneConnListener struct {
	mu         sync.Mutex
	conn       net.Conn // nil once handed out
	addr       net.Addr
	connClosed <-chan struct{}
	closeOnce  sync.Once
	closed     chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if c := l.conn; c != nil {
		l.conn, l.addr = nil, c.LocalAddr()
		l.mu.Unlock()
		return c, nil
	}
	l.mu.Unlock()
	select {
	case <-l.connClosed:
	case <-l.closed:
	}
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		l.mu.Lock()
		if l.conn != nil { // never handed out: nobody else will close it
			l.conn.Close()
			l.conn = nil
		}
		l.mu.Unlock()
	})
	return nil
}

func (l *oneConnListener) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		return l.conn.LocalAddr()
	}
	return l.addr
}
