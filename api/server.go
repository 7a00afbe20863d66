// Package api serves the fal wire protocol over echo: sync runs under /run/,
// files under /cdn/, host-based routing for fal's own host names, and fal's
// error bodies. It knows pipelines, never the engine.
//
// Files are named by the fal surface they serve: run.go (fal.run's sync
// calls), queue.go (queue.fal.run: submit, status, result, cancel),
// storage.go (rest.fal.ai's storage uploads), files.go (the /cdn/files
// downloads), inputs.go (input URLs a run opens, outputs it saves),
// webhooks.go (fal_webhook delivery and the JWKS), jsproxy.go (the JS
// client's /fal/proxy), auth.go (API keys), observe.go (/readyz,
// /metrics) and audit.go (the audit log). server.go, hosts.go, lookup.go and errors.go are shared.
package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/api/queue"
	"github.com/falocal/falocal/api/queue/pgqueue"
	"github.com/falocal/falocal/api/webhook"
	"github.com/falocal/falocal/internal/metrics"
	"github.com/falocal/falocal/pipelines"
)

// Config is everything the API needs; cmd/falocal fills it.
type Config struct {
	Registry *pipelines.Registry
	Files    *files.Store
	Logger   *slog.Logger
	// MaxBodyBytes caps a request body (JSON with data URIs included).
	MaxBodyBytes int64
	// MaxInputBytes caps one input file fetched from a URL or the file store.
	MaxInputBytes int64
	// MaxUploadBytes caps one uploaded file, all of its parts together
	// (default 1 GiB).
	MaxUploadBytes int64
	// RequestTimeout bounds one sync run (0 = none).
	RequestTimeout time.Duration
	// AllowFetch lists hosts whose http(s) URLs may be fetched as inputs.
	AllowFetch []string
	// HTTPClient fetches allow-listed URLs.
	HTTPClient *http.Client
	// Health returns extra facts for /healthz (runtime, version).
	Health func() map[string]any
	// Keys are the accepted "key_id:key_secret" credentials; none = no auth.
	Keys []string
	// QueueDB is the queue's database file; empty keeps requests in memory
	// only (tests).
	QueueDB string
	// SharedQueue, a postgres:// URL, shares the queue among every server
	// given the same database (api/queue/pgqueue) instead of QueueDB.
	SharedQueue string
	// SharedFiles says that other servers share Files (a fleet behind one
	// load balancer): upload sessions are then kept in the store too, so
	// that each call of an upload may reach any of them. A SharedQueue
	// implies it.
	SharedFiles bool
	// Role is what this server does in a fleet: RoleBoth (the default) takes
	// and runs requests; RoleAPI takes requests and runs none; RoleWorker
	// runs requests and serves only /healthz, /readyz, /metrics and /fleet.
	// RoleAPI and RoleWorker need a SharedQueue.
	Role string
	// Node names this server in the fleet view (default: host name and pid).
	Node string
	// CanRun lists the endpoint ids this server can run (nil: every
	// registered one); Resident those whose default model it holds in
	// memory now, which a worker of a shared queue claims first.
	CanRun   func() []string
	Resident func() []string
	// NodeInfo adds facts about this server to the fleet view (device, free
	// memory).
	NodeInfo func() map[string]any
	// Workers is how many requests run at once (sync and queued together).
	Workers int
	// MaxQueued bounds waiting requests (0 = unbounded).
	MaxQueued int
	// Webhooks delivers fal_webhook notifications; nil disables them.
	Webhooks *webhook.Deliverer
	// LocalOnly answers only requests addressed to loopback or fal's host
	// names and, from browsers, pages on this machine: the guard for a server
	// without keys against web pages and DNS rebinding. cmd/falocal sets it
	// whenever no keys are configured.
	LocalOnly bool
	// CACert is the local CA certificate (PEM) served at /ca.pem, for
	// clients that reach fal's host names through this server's TLS.
	CACert []byte
	// Preloading makes /readyz answer 503 until SetReady is called.
	Preloading bool
	// RetryAfter is what a full queue's 429 tells clients to wait
	// (default 5s).
	RetryAfter time.Duration
	// Metrics is what /metrics serves and the server records on; cmd/falocal
	// shares it with the engine. nil = a registry of the server's own.
	Metrics *metrics.Metrics
	// Audit, when set, gets one JSON line per completed request, sync or
	// queued (audit.go).
	Audit io.Writer
}

// Server is the HTTP API.
type Server struct {
	cfg  Config
	echo *echo.Echo
	log  *slog.Logger
	keys [][32]byte
	q    queue.Store
	// shared is q when it is a shared (PostgreSQL) queue, else nil.
	shared *pgqueue.Queue
	m      *metrics.Metrics
	// hooks owns the webhook deliveries in flight.
	hooks *deliveries
	// auditLog is nil without Config.Audit.
	auditLog *auditLog

	ready    atomic.Bool
	draining atomic.Bool
	// streams maps the id of a running /stream request to the channel its
	// partial outputs go to.
	streams sync.Map
}

// New is Open for configurations that cannot fail (no QueueDB).
func New(cfg Config) *Server {
	s, err := Open(cfg)
	if err != nil {
		panic(err)
	}
	return s
}

// Open builds the server, opens its queue (recovering requests accepted
// before a restart) and registers the routes.
func Open(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 64 << 20
	}
	if cfg.MaxInputBytes <= 0 {
		cfg.MaxInputBytes = 64 << 20
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 60 * time.Second}
	}
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 5 * time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	s := &Server{cfg: cfg, echo: e, log: cfg.Logger, keys: keyDigests(cfg.Keys), hooks: newDeliveries(), m: cfg.Metrics,
		auditLog: newAuditLog(cfg.Audit, cfg.Keys)}
	switch cfg.Role {
	case "":
		s.cfg.Role = RoleBoth
	case RoleBoth:
	case RoleAPI, RoleWorker:
		if cfg.SharedQueue == "" {
			return nil, fmt.Errorf("role %s needs a shared queue (postgres://…): with a queue of its own, no other server could take or run its requests", cfg.Role)
		}
	default:
		return nil, fmt.Errorf("role %q: want %s, %s or %s", cfg.Role, RoleAPI, RoleWorker, RoleBoth)
	}
	s.SetReady(!cfg.Preloading)
	s.m.SetQueueCapacity(cfg.MaxQueued)
	e.HTTPErrorHandler = s.handleError
	e.Pre(hostRouting)
	e.Use(s.requestID, s.accessLog, middleware.Recover(), cors(cfg.LocalOnly), s.localOnly)
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", s.metrics, s.requireKey)
	e.GET("/fleet", s.fleet, s.requireKey)
	e.RouteNotFound("/*", func(c echo.Context) error { return echo.ErrNotFound })
	if s.cfg.Role != RoleWorker {
		s.apiRoutes(e)
	}
	if err := s.openQueue(); err != nil {
		s.hooks.close(canceled)
		return nil, err
	}
	return s, nil
}

// apiRoutes are fal's surface, served by every role but worker.
func (s *Server) apiRoutes(e *echo.Echo) {
	e.POST("/run/*", s.run, s.requireKey)
	s.realtimeRoutes(e)
	e.GET("/cdn/files/:id/:name", s.serveFile)
	e.HEAD("/cdn/files/:id/:name", s.serveFile)
	s.storageRoutes(e)
	e.Any("/fal/proxy", s.proxy)
	e.GET("/ca.pem", s.caCert)
	e.GET("/.well-known/jwks.json", s.jwks)
	e.GET("/rest/.well-known/jwks.json", s.jwks)
	s.playgroundRoutes(e)
	s.openapiRoutes(e)
	e.POST("/*", s.submit, s.requireKey)
	e.GET("/*", s.queueGet, s.requireKey)
	e.PUT("/*", s.queuePut, s.requireKey)
}

// BackupQueue writes a consistent copy of the queue's database to w while
// the server runs (queue.Queue.Backup). A shared queue is PostgreSQL's to
// back up.
func (s *Server) BackupQueue(w io.Writer) (int64, error) {
	q, ok := s.q.(*queue.Queue)
	if !ok {
		return 0, errors.New("the queue is shared in PostgreSQL: back it up with pg_dump")
	}
	return q.Backup(w)
}

// Drain stops starting requests and ends status streams, so that an HTTP
// shutdown is not held up by them; running requests go on.
func (s *Server) Drain() {
	s.draining.Store(true)
	s.q.Drain()
}

// Close stops the queue: running requests get until ctx ends to finish;
// queued ones stay on disk for the next start. Webhook deliveries in
// flight, those of requests finishing meanwhile included, get until ctx
// ends too, then are cancelled; one cut short is made again after the next
// start. When Close returns, no goroutine of the server runs.
func (s *Server) Close(ctx context.Context) error {
	s.q.Stop(ctx)
	s.hooks.close(ctx)
	return s.q.Close(ctx)
}

// canceled is a context that is already done.
var canceled = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// Sweep removes requests and files older than cutoff.
func (s *Server) Sweep(cutoff time.Time) (requests, files int, err error) {
	n, ids, err := s.q.Sweep(cutoff)
	if err != nil {
		return 0, 0, err
	}
	for _, id := range ids {
		s.cfg.Files.Delete(id)
	}
	f, err := s.cfg.Files.Sweep(cutoff)
	return n, f + len(ids), err
}

func (s *Server) caCert(c echo.Context) error {
	if len(s.cfg.CACert) == 0 {
		return echo.ErrNotFound
	}
	return c.Blob(http.StatusOK, "application/x-pem-file", s.cfg.CACert)
}

// Handler returns the root http.Handler.
func (s *Server) Handler() http.Handler { return s.echo }

func (s *Server) healthz(c echo.Context) error {
	if !s.healthDetails(c) {
		return c.JSON(http.StatusOK, map[string]any{"status": "ok"})
	}
	out := map[string]any{"status": "ok", "endpoints": s.cfg.Registry.IDs()}
	if s.cfg.Health != nil {
		for k, v := range s.cfg.Health() {
			out[k] = v
		}
	}
	return c.JSON(http.StatusOK, out)
}

// requestIDKey holds the request id in the echo context.
const requestIDKey = "request_id"

func (s *Server) requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := newID()
		c.Set(requestIDKey, id)
		c.Response().Header().Set("x-fal-request-id", id)
		return next(c)
	}
}

func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		r := c.Request()
		s.log.Info("request", "request_id", c.Get(requestIDKey), "method", r.Method, "host", r.Host,
			"path", r.URL.Path, "status", c.Response().Status, "ms", time.Since(start).Milliseconds())
		return nil
	}
}

// cors answers browsers as fal does (any origin, with credentials), or in
// local-only mode only pages served from this machine.
func cors(localOnly bool) echo.MiddlewareFunc {
	expose := []string{"x-fal-request-id", "x-fal-request-timeout-type", "x-fal-error-type"}
	mw := middleware.CORSWithConfig(middleware.CORSConfig{
		AllowOriginFunc:  func(o string) (bool, error) { return !localOnly || localOrigin(o), nil },
		AllowCredentials: true,
		AllowMethods:     []string{"GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD"},
		ExposeHeaders:    expose,
	})
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		h := mw(next)
		return func(c echo.Context) error {
			// echo exposes headers on actual responses only; fal's
			// preflight answers carry the list too.
			if r := c.Request(); r.Method == http.MethodOptions && r.Header.Get(echo.HeaderOrigin) != "" {
				c.Response().Header().Set(echo.HeaderAccessControlExposeHeaders, strings.Join(expose, ","))
			}
			return h(c)
		}
	}
}

// localOnly protects a server without keys from the web: a page on another
// site (or a DNS-rebinding name for 127.0.0.1) must not drive it, so
// requests must name a loopback or fal host, and browser requests must come
// from a local origin. With keys, the keys do that job.
func (s *Server) localOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !s.cfg.LocalOnly {
			return next(c)
		}
		r := c.Request()
		if h := hostOnly(r.Host); !isLoopbackName(h) && !isFalHost(h) {
			return &pipelines.HTTPError{Status: http.StatusForbidden,
				Msg: "this server has no API keys, so it answers only requests addressed to localhost (Host: " + r.Host + ")"}
		}
		if o := r.Header.Get("Origin"); o != "" && !localOrigin(o) {
			return &pipelines.HTTPError{Status: http.StatusForbidden,
				Msg: "this server has no API keys, so it answers only pages served from this machine (Origin: " + o + ")"}
		}
		return next(c)
	}
}

func localOrigin(o string) bool {
	u, err := url.Parse(o)
	return err == nil && isLoopbackName(u.Hostname())
}

// Shutdown is a convenience for tests that run the echo server directly.
func (s *Server) Shutdown(ctx context.Context) error { return s.echo.Shutdown(ctx) }
