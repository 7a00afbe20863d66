package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/falocal/falocal/api/queue"
	"github.com/falocal/falocal/pipelines"
)

// handleError writes every error in fal's shapes: {"detail": ...}, with a
// list of {loc, msg, type} for 422, and error_type where fal has one.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, body := s.errorBody(err, c.Get(requestIDKey), c.Request().URL.Path)
	setErrorHeaders(c.Response().Header(), body)
	if errors.Is(err, queue.ErrFull) {
		c.Response().Header().Set("Retry-After", strconv.Itoa(int(max(1, s.cfg.RetryAfter.Round(time.Second)/time.Second))))
	}
	if c.Request().Method == http.MethodHead {
		c.NoContent(status)
		return
	}
	c.JSON(status, body)
}

// setErrorHeaders adds fal's error headers for a body errorBody made.
func setErrorHeaders(h http.Header, body map[string]any) {
	if et, ok := body["error_type"].(string); ok {
		h.Set("X-Fal-Error-Type", et)
		if et == "request_timeout" {
			h.Set("X-Fal-Request-Timeout-Type", "user")
		}
	}
}

// errorBody maps an error to fal's status and body; reqID and path are for
// logs and the 404 message.
func (s *Server) errorBody(err error, reqID any, path string) (int, map[string]any) {
	var ve *pipelines.ValidationError
	var he *pipelines.HTTPError
	var ee *echo.HTTPError
	var mb *http.MaxBytesError
	switch {
	case errors.As(err, &ve):
		return http.StatusUnprocessableEntity, map[string]any{"detail": ve.Errors}
	case errors.As(err, &he) && he.Status >= 400 && he.Status <= 599:
		// (An HTTPError without an error status is a bug; it falls through
		// to the 500 below rather than reading as a success.)
		if he.Status >= 500 {
			s.log.Error("request failed", "request_id", reqID, "err", err)
		}
		b := map[string]any{"detail": he.Msg}
		if he.Type != "" {
			b["error_type"] = he.Type
		}
		return he.Status, b
	case errors.As(err, &mb):
		return http.StatusRequestEntityTooLarge, map[string]any{"detail": "Request body is larger than the server's limit", "error_type": "bad_request"}
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, map[string]any{"detail": "Request timed out", "error_type": "request_timeout"}
	case errors.Is(err, context.Canceled):
		return 499, map[string]any{"detail": "Request cancelled by the client.", "error_type": "client_cancelled"}
	case errors.As(err, &ee):
		switch ee.Code {
		case http.StatusNotFound:
			return http.StatusNotFound, map[string]any{"detail": "Path " + path + " not found"}
		case http.StatusMethodNotAllowed:
			return ee.Code, map[string]any{"detail": "Method Not Allowed"}
		case http.StatusRequestEntityTooLarge:
			return ee.Code, map[string]any{"detail": "Request body is larger than the server's limit", "error_type": "bad_request"}
		}
		if ee.Code < 500 {
			msg, _ := ee.Message.(string)
			if msg == "" {
				msg = http.StatusText(ee.Code)
			}
			return ee.Code, map[string]any{"detail": msg}
		}
	}
	s.log.Error("internal error", "request_id", reqID, "err", err)
	return http.StatusInternalServerError, map[string]any{"detail": "Internal Server Error"}
}
