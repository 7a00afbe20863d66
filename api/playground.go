package api

// The playground: a page at / that runs the served endpoints through this
// server's own queue API, with forms made from /openapi.json. Its static
// files are embedded and served without a key (the page must load to ask
// for one) and hold nothing private; its two JSON routes (info, history)
// need a key like the queue does.

import (
	"bufio"
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/falocal/falocal/api/queue"
	"github.com/falocal/falocal/pipelines"
)

//go:embed playground
var playgroundFiles embed.FS

// playgroundCSP keeps the page to its own origin: scripts, styles and API
// calls; images and audio may also come from data: and blob: URLs (previews
// and sync_mode outputs) and from wherever output file URLs point.
const playgroundCSP = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data: blob: http: https:; media-src 'self' data: blob: http: https:; " +
	"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (s *Server) playgroundRoutes(e *echo.Echo) {
	static, _ := fs.Sub(playgroundFiles, "playground")
	files := http.FileServerFS(static)
	serve := func(c echo.Context) error {
		name := strings.TrimPrefix(c.Request().URL.Path, "/playground")
		if name == "" || name == "/" {
			name = "/index.html"
		}
		if _, err := fs.Stat(static, strings.TrimPrefix(name, "/")); err != nil {
			return echo.ErrNotFound
		}
		h := c.Response().Header()
		h.Set("Content-Security-Policy", playgroundCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		r := c.Request().Clone(c.Request().Context())
		r.URL.Path = name
		if name == "/index.html" {
			// FileServer redirects /index.html to ./; serve the bytes directly.
			b, err := fs.ReadFile(static, "index.html")
			if err != nil {
				return err
			}
			return c.HTMLBlob(http.StatusOK, b)
		}
		files.ServeHTTP(c.Response(), r)
		return nil
	}
	e.GET("/", serve)
	e.GET("/playground", serve)
	e.GET("/playground/api/info", s.playgroundInfo, s.requireKey)
	e.GET("/playground/api/history", s.playgroundHistory, s.requireKey)
	e.GET("/playground/*", serve)
}

// playgroundEndpoint is one served endpoint on the home page.
type playgroundEndpoint struct {
	ID string `json:"id"`
	// Models is nil when the endpoint's pipeline cannot describe them.
	Models *pipelines.EndpointModels `json:"models"`
	// Usable is false when no installed model serves the default input.
	Usable bool `json:"usable"`
}

func (s *Server) playgroundInfo(c echo.Context) error {
	queued, running := s.q.Depth()
	out := map[string]any{
		"queue":      map[string]any{"queued": queued, "running": running, "workers": max(s.cfg.Workers, 1), "max_queued": s.cfg.MaxQueued},
		"keys":       len(s.keys) > 0,
		"started_at": serverStart.UTC().Format(time.RFC3339),
	}
	if s.cfg.Health != nil {
		out["runtime"] = s.cfg.Health()
	}
	if m := hostMemory(); m != nil {
		out["memory"] = m
	}
	eps := []playgroundEndpoint{}
	for _, id := range s.cfg.Registry.IDs() {
		ep := playgroundEndpoint{ID: id, Usable: true}
		m, ok, err := s.cfg.Registry.DescribeModels(id)
		if err != nil {
			s.log.Warn("playground: cannot describe models", "endpoint", id, "err", err)
		}
		if ok {
			ep.Models = &m
			ep.Usable = m.Default != ""
		}
		eps = append(eps, ep)
	}
	out["endpoints"] = eps
	return c.JSON(http.StatusOK, out)
}

// serverStart is when this process started serving (near enough: when the
// package was loaded).
var serverStart = time.Now()

// hostMemory reads the machine's total and available memory (Linux); nil
// elsewhere.
func hostMemory() map[string]int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		name := map[string]string{"MemTotal": "total_bytes", "MemAvailable": "available_bytes"}[k]
		if name == "" {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err == nil {
			out[name] = n << 10
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// playgroundItem is one request of the history.
type playgroundItem struct {
	RequestID     string           `json:"request_id"`
	Endpoint      string           `json:"endpoint"`
	App           string           `json:"app"`
	Status        queue.Status     `json:"status"`
	CreatedAt     time.Time        `json:"created_at"`
	CompletedAt   *time.Time       `json:"completed_at,omitempty"`
	InferenceTime float64          `json:"inference_time,omitempty"`
	Error         string           `json:"error,omitempty"`
	Output        json.RawMessage  `json:"output,omitempty"`
	Logs          []queue.LogEntry `json:"logs"`
}

// historyOutputMax leaves out outputs bigger than this (sync_mode data
// URIs); the page fetches those from the result URL when opened.
const historyOutputMax = 256 << 10

func (s *Server) playgroundHistory(c echo.Context) error {
	limit := 20
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 200 {
			return &pipelines.HTTPError{Status: http.StatusUnprocessableEntity, Msg: "limit must be an integer from 1 to 200"}
		}
		limit = n
	}
	recs, err := s.q.Recent(limit, func(id string) bool { return s.owns(c, id) })
	if err != nil {
		return queueError(err)
	}
	items := make([]playgroundItem, 0, len(recs))
	for _, r := range recs {
		it := playgroundItem{RequestID: r.ID, Endpoint: r.Endpoint, App: r.App, Status: r.Status, CreatedAt: r.CreatedAt,
			InferenceTime: r.InferenceTime, Logs: r.Logs}
		if it.Logs == nil {
			it.Logs = []queue.LogEntry{}
		}
		if !r.CompletedAt.IsZero() {
			t := r.CompletedAt
			it.CompletedAt = &t
		}
		if r.Outcome != nil {
			if r.Failed() {
				it.Error = r.Outcome.Error
			} else if len(r.Outcome.Output) <= historyOutputMax {
				it.Output = r.Outcome.Output
			}
		}
		items = append(items, it)
	}
	return c.JSON(http.StatusOK, map[string]any{"items": items})
}
