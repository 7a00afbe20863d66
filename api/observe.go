package api

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/falocal/falocal/api/queue"
)

// SetReady marks the configured preloads done (or not): /readyz follows it.
func (s *Server) SetReady(ok bool) {
	s.ready.Store(ok)
	s.m.SetReady(ok)
}

// readyz is 200 once the server can take work without a cold start of its
// preloaded models, 503 before that and while draining.
func (s *Server) readyz(c echo.Context) error {
	switch {
	case s.draining.Load():
		return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "draining", "detail": "the server is shutting down"})
	case !s.ready.Load():
		return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "starting", "detail": "models are being preloaded"})
	}
	if s.shared != nil {
		if err := s.shared.Ready(); err != nil {
			// Requests keep their state in the database; this node takes
			// no new work until it reaches the database again. The error
			// (hosts, user names) is for the log, not for callers without
			// a key.
			s.log.Debug("readyz: the shared queue is unreachable", "err", err)
			return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "disconnected", "detail": "the shared queue is unreachable"})
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"status": "ready"})
}

// metrics serves Prometheus' text format, with the queue gauges read now.
func (s *Server) metrics(c echo.Context) error {
	queued, running := s.q.Depth()
	s.m.SetQueueDepth(queued)
	s.m.SetQueueRunning(running)
	s.recordFleet(c.Request().Context())
	s.m.Handler().ServeHTTP(c.Response(), c.Request())
	return nil
}

// rejected counts a submission the queue refused.
func (s *Server) rejected(endpoint string, err error) {
	switch {
	case errors.Is(err, queue.ErrFull):
		s.m.RejectedRequest(endpoint, "queue_full")
	case errors.Is(err, queue.ErrClosed):
		s.m.RejectedRequest(endpoint, "shutting_down")
	}
}

// finished records a completed request (the queue calls it for all): the
// metrics and the audit log.
func (s *Server) finished(r queue.Record) {
	ran := !r.StartedAt.IsZero() && !r.CompletedAt.IsZero()
	s.m.Finished(r.Endpoint, outcomeLabel(r.Outcome), r.CompletedAt.Sub(r.StartedAt), ran)
	s.audit(r)
}

func outcomeLabel(o *queue.Outcome) string {
	switch {
	case o == nil || o.Status == 0:
		return "ok"
	case o.Status == 499:
		return "cancelled"
	case o.Status == http.StatusGatewayTimeout:
		return "timeout"
	case o.Status < 500:
		return "client_error"
	}
	return "server_error"
}
