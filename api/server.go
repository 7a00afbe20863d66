// Package api serves the fal wire protocol over echo: sync runs under /run/,
// files under /cdn/, host-based routing for fal's own host names, and fal's
// error bodies. It knows pipelines, never the engine.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/pipelines"
)

// Config is everything the API needs; cmd/server fills it.
type Config struct {
	Registry *pipelines.Registry
	Files    *files.Store
	Logger   *slog.Logger
	// MaxBodyBytes caps a request body (JSON with data URIs included).
	MaxBodyBytes int64
	// MaxInputBytes caps one input file fetched from a URL or the file store.
	MaxInputBytes int64
	// RequestTimeout bounds one sync run (0 = none).
	RequestTimeout time.Duration
	// AllowFetch lists hosts whose http(s) URLs may be fetched as inputs.
	AllowFetch []string
	// HTTPClient fetches allow-listed URLs.
	HTTPClient *http.Client
	// Health returns extra facts for /healthz (runtime, version).
	Health func() map[string]any
}

// Server is the HTTP API.
type Server struct {
	cfg  Config
	echo *echo.Echo
	log  *slog.Logger
}

// New builds the server and its routes.
func New(cfg Config) *Server {
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
	s := &Server{cfg: cfg, echo: e, log: cfg.Logger}
	e.HTTPErrorHandler = s.handleError
	e.Pre(hostRouting)
	e.Use(s.requestID, s.accessLog, middleware.Recover(), cors())
	e.GET("/healthz", s.healthz)
	e.POST("/run/*", s.run)
	e.GET("/cdn/files/:id/:name", s.serveFile)
	e.HEAD("/cdn/files/:id/:name", s.serveFile)
	e.RouteNotFound("/*", func(c echo.Context) error { return echo.ErrNotFound })
	return s
}

// Handler returns the root http.Handler.
func (s *Server) Handler() http.Handler { return s.echo }

func (s *Server) healthz(c echo.Context) error {
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

func cors() echo.MiddlewareFunc {
	expose := []string{"x-fal-request-id", "x-fal-request-timeout-type", "x-fal-error-type"}
	mw := middleware.CORSWithConfig(middleware.CORSConfig{
		AllowOriginFunc:  func(string) (bool, error) { return true, nil },
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

// Shutdown is a convenience for tests that run the echo server directly.
func (s *Server) Shutdown(ctx context.Context) error { return s.echo.Shutdown(ctx) }
