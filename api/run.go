package api

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/falocal/falocal/api/queue"
)

// reply writes a completed request's result.
func reply(c echo.Context, r queue.Record) error {
	h := c.Response().Header()
	h.Set("x-fal-request-id", r.ID)
	if !r.Failed() {
		return c.JSONBlob(http.StatusOK, r.Outcome.Output)
	}
	var body map[string]any
	json.Unmarshal(r.Outcome.Body, &body)
	setErrorHeaders(h, body)
	return c.JSONBlob(r.Outcome.Status, r.Outcome.Body)
}

// run is fal.run's synchronous call (and its /stream variant). It goes
// through the same queue and workers as queued requests, so both count
// against the same limits; a client that goes away cancels its run.
func (s *Server) run(c echo.Context) error {
	id, streaming := strings.CutSuffix(c.Param("*"), "/stream")
	ep, err := s.lookup(id)
	if err != nil {
		return err
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	reqID := s.ownedID(c)
	r := c.Request()
	rec := s.newRecord(r, reqID, ep, body)
	rec.Ephemeral = true
	rec.Stream = streaming
	var partials chan []byte
	if streaming {
		partials = make(chan []byte, 4)
		s.streams.Store(reqID, partials)
		defer s.streams.Delete(reqID)
	}
	if _, err := s.q.Submit(rec); err != nil {
		s.rejected(id, err)
		return queueError(err)
	}
	type waited struct {
		rec queue.Record
		err error
	}
	finished := make(chan waited, 1)
	go func() {
		d, err := s.q.Wait(r.Context(), reqID)
		finished <- waited{d, err}
	}()
	w := c.Response()
	started := false
	start := func() {
		if !started {
			started = true
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("x-fal-request-id", reqID)
			w.WriteHeader(http.StatusOK)
		}
	}
	for {
		select {
		case b := <-partials:
			// Server-Sent Events: progressive outputs first...
			start()
			writeEvent(w, b)
		case f := <-finished:
			if f.err != nil {
				s.q.Cancel(reqID)
				if started {
					return nil
				}
				return queueError(f.err)
			}
			done := f.rec
			s.q.Forget(reqID)
			if !streaming || (done.Failed() && !started) {
				// fal's stream protocol has no error event: a stream that
				// fails before its first event is a normal JSON error,
				// which both clients surface
				return reply(c, done)
			}
			if done.Failed() {
				return nil // mid-stream: just close, as fal does
			}
			// Partials that arrived with the completion go first.
			for drained := false; !drained; {
				select {
				case b := <-partials:
					start()
					writeEvent(w, b)
				default:
					drained = true
				}
			}
			// ...then the full output, and close.
			start()
			writeEvent(w, done.Outcome.Output)
			return nil
		}
	}
}

// readBody reads a submit's JSON body (queue and sync alike), refusing one
// that does not parse.
func (s *Server) readBody(c echo.Context) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, s.cfg.MaxBodyBytes))
	if err != nil {
		return nil, bodyError(err)
	}
	if err := checkJSONBody(body); err != nil {
		return nil, err
	}
	return body, nil
}
