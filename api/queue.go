package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/falocal/falocal/api/queue"
	"github.com/falocal/falocal/pipelines"
)

// appOf is the [namespace/]owner/alias part of an endpoint id: the prefix of
// its status, result and cancel URLs (fal drops the path part there).
func appOf(id string) string {
	segs := strings.Split(strings.Trim(id, "/"), "/")
	n := 2
	if segs[0] == "workflows" || segs[0] == "comfy" {
		n = 3
	}
	if len(segs) < n {
		return strings.Join(segs, "/")
	}
	return strings.Join(segs[:n], "/")
}

// origin is the base URL the client reached us by.
func origin(r *http.Request) string {
	if isFalHost(r.Host) {
		// fal's names only exist over https; the client built its URL that way.
		return "https://" + strings.ToLower(hostOnly(r.Host))
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// newRecord builds a queue record for a request to endpoint ep.
func (s *Server) newRecord(r *http.Request, id string, ep pipelines.Endpoint, body []byte) queue.Record {
	rf := s.requestFiles(r)
	return queue.Record{ID: id, Endpoint: ep.ID(), App: appOf(ep.ID()), Input: body,
		Origin: origin(r), CDN: rf.cdnBase, Host: r.Host, CreatedAt: time.Now()}
}

// runRecord is the queue's Runner: it runs one request through its endpoint
// and turns the result or error into fal's reply.
func (s *Server) runRecord(ctx context.Context, rec *queue.Record, logf func(level, msg string), addFile func(id string)) queue.Outcome {
	ep, err := s.lookup(rec.Endpoint)
	if err != nil {
		return s.outcome(err, rec.ID)
	}
	if !rec.StartedAt.IsZero() && !rec.CreatedAt.IsZero() {
		s.m.Waited(rec.Endpoint, rec.StartedAt.Sub(rec.CreatedAt))
	}
	if s.cfg.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
	}
	req := &pipelines.Request{
		ID: rec.ID, Endpoint: rec.Endpoint, Input: rec.Input,
		Files: &requestFiles{s: s, cdnBase: rec.CDN, host: rec.Host, saved: addFile},
		Log: func(level pipelines.Level, msg string) {
			logf(string(level), msg)
			s.log.Debug("progress", "request_id", rec.ID, "level", level, "msg", msg)
		},
	}
	if rec.Stream {
		// The caller may be held by another server of a shared queue.
		publish := s.partial
		if s.shared != nil {
			publish = s.shared.Publish
		}
		req.Partial = func(out any) {
			if b, err := json.Marshal(out); err == nil {
				publish(rec.ID, b)
			}
		}
	}
	out, err := ep.Run(ctx, req)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = ctx.Err() // past its deadline, whatever the pipeline made of the interrupted run
	}
	if err != nil {
		return s.outcome(err, rec.ID)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return s.outcome(err, rec.ID)
	}
	return queue.Outcome{Output: b}
}

func (s *Server) outcome(err error, id string) queue.Outcome {
	status, body := s.errorBody(err, id, "")
	b, _ := json.Marshal(body)
	o := queue.Outcome{Status: status, Body: b}
	o.ErrorType, _ = body["error_type"].(string)
	if msg, ok := body["detail"].(string); ok {
		o.Error = msg
	} else {
		o.Error = "Invalid status code: " + strconv.Itoa(status)
	}
	return o
}

func queueError(err error) error {
	switch {
	case errors.Is(err, queue.ErrFull):
		return &pipelines.HTTPError{Status: http.StatusTooManyRequests, Type: "runner_scheduling_failure",
			Msg: "the queue is full; try again later", Err: err}
	case errors.Is(err, queue.ErrClosed):
		return &pipelines.HTTPError{Status: http.StatusServiceUnavailable, Type: "runner_scheduling_failure", Msg: "the server is shutting down"}
	case errors.Is(err, queue.ErrUnavailable):
		return &pipelines.HTTPError{Status: http.StatusServiceUnavailable, Type: "runner_scheduling_failure",
			Msg: "the shared queue is unreachable; try again shortly", Err: err}
	}
	return err
}

// submit is the queue's POST /{owner}/{alias}[/{path}].
func (s *Server) submit(c echo.Context) error {
	r := c.Request()
	id := strings.Trim(c.Param("*"), "/")
	ep, err := s.lookup(id)
	if err != nil {
		return err
	}
	prio := queue.Normal
	switch p := strings.ToLower(r.Header.Get("X-Fal-Queue-Priority")); p {
	case "", "normal":
	case "low":
		prio = queue.Low
	default:
		return pipelines.Invalid("", fmt.Sprintf("X-Fal-Queue-Priority must be 'normal' or 'low', not %q", p))
	}
	webhook := c.QueryParam("fal_webhook")
	if webhook != "" {
		if s.cfg.Webhooks == nil {
			return pipelines.Invalid("fal_webhook", "webhooks are not enabled on this server")
		}
		if err := s.cfg.Webhooks.Check(webhook); err != nil {
			return pipelines.Invalid("fal_webhook", err.Error())
		}
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	reqID := s.ownedID(c)
	rec := s.newRecord(r, reqID, ep, body)
	rec.Priority = prio
	rec.Webhook = webhook
	if t := r.Header.Get("X-Fal-Request-Timeout"); t != "" {
		secs, err := strconv.ParseFloat(t, 64)
		if err != nil || !(secs > 1 && secs <= 7*24*3600) { // also refuses NaN and Inf
			return pipelines.Invalid("", "X-Fal-Request-Timeout must be a number of seconds above 1 (at most a week)")
		}
		rec.StartDeadline = rec.CreatedAt.Add(time.Duration(secs * float64(time.Second)))
	}
	if v := c.QueryParam("fal_max_queue_length"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return pipelines.Invalid("fal_max_queue_length", "fal_max_queue_length must be a positive integer")
		}
		rec.MaxQueueLength = n
	}
	pos, err := s.q.Submit(rec)
	if err != nil {
		s.rejected(id, err)
		return queueError(err)
	}
	base := rec.Origin + "/" + rec.App + "/requests/" + rec.ID
	return c.JSON(http.StatusOK, map[string]any{
		"status": queue.InQueue, "request_id": rec.ID, "gateway_request_id": rec.ID,
		"response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel",
		"queue_position": pos,
	})
}

// queuePath splits …/{app}/requests/{id}[/rest…], where app is the
// endpoint's app ([namespace/]owner/alias, as the submit reply's URLs have
// it) or its full id (owner/alias/path).
func queuePath(p string) (app, id, rest string, ok bool) {
	segs := strings.Split(strings.Trim(p, "/"), "/")
	for i := 2; i+1 < len(segs); i++ {
		if segs[i] == "requests" {
			return strings.Join(segs[:i], "/"), segs[i+1], strings.Join(segs[i+2:], "/"), true
		}
	}
	return "", "", "", false
}

// lookupRecord finds a request and checks that it belongs to app (the
// endpoint's app or full id) and to the caller's key: another key's request
// answers as an unknown one.
func (s *Server) lookupRecord(c echo.Context, app, id string) (queue.Record, int, error) {
	notFound := &pipelines.HTTPError{Status: http.StatusNotFound, Msg: "Request not found"}
	if !s.owns(c, id) {
		return queue.Record{}, 0, notFound
	}
	rec, pos, err := s.q.Get(id)
	if errors.Is(err, queue.ErrNotFound) || (err == nil && rec.App != app && rec.Endpoint != app) {
		return rec, 0, notFound
	}
	c.Response().Header().Set("x-fal-request-id", id)
	return rec, pos, queueError(err)
}

func wantLogs(c echo.Context) bool {
	switch strings.ToLower(c.QueryParam("logs")) {
	case "1", "true":
		return true
	}
	return false
}

// queueGet serves status, status/stream and result.
func (s *Server) queueGet(c echo.Context) error {
	app, id, rest, ok := queuePath(c.Request().URL.Path)
	if !ok {
		return echo.ErrNotFound
	}
	rec, pos, err := s.lookupRecord(c, app, id)
	if err != nil {
		return err
	}
	switch rest {
	case "":
		if rec.Status != queue.Completed {
			return &pipelines.HTTPError{Status: http.StatusBadRequest, Msg: "Request is still in progress"}
		}
		return reply(c, rec)
	case "status":
		code := http.StatusAccepted
		if rec.Status == queue.Completed {
			code = http.StatusOK
		}
		rec.Origin = origin(c.Request()) // the origin the client uses now (it may have changed since submit)
		return c.JSON(code, statusBody(rec, pos, wantLogs(c), 0))
	case "status/stream":
		return s.statusStream(c, id, wantLogs(c))
	}
	return echo.ErrNotFound
}

// queuePut serves cancel.
func (s *Server) queuePut(c echo.Context) error {
	app, id, rest, ok := queuePath(c.Request().URL.Path)
	if !ok || rest != "cancel" {
		return echo.ErrNotFound
	}
	if _, _, err := s.lookupRecord(c, app, id); err != nil {
		var he *pipelines.HTTPError
		if errors.As(err, &he) && he.Status == http.StatusNotFound {
			return c.JSON(http.StatusNotFound, map[string]string{"status": "NOT_FOUND"})
		}
		return err // the queue's database out of reach: a 503, not a verdict
	}
	res, err := s.q.Cancel(id)
	if err != nil {
		return queueError(err)
	}
	switch res {
	case queue.CancelRequested:
		return c.JSON(http.StatusAccepted, map[string]string{"status": "CANCELLATION_REQUESTED"})
	case queue.AlreadyCompleted:
		return c.JSON(http.StatusBadRequest, map[string]string{"status": "ALREADY_COMPLETED"})
	}
	return c.JSON(http.StatusNotFound, map[string]string{"status": "NOT_FOUND"})
}

// statusBody is fal's queue status object. logsFrom > 0 returns only the log
// lines from that index on (the stream sends increments).
func statusBody(r queue.Record, pos int, logs bool, logsFrom int) map[string]any {
	base := r.Origin + "/" + r.App + "/requests/" + r.ID
	b := map[string]any{
		"status": r.Status, "request_id": r.ID,
		"response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel",
		"logs": nil,
	}
	if logs {
		l := r.Logs
		if logsFrom > 0 && logsFrom <= len(l) {
			l = l[logsFrom:]
		}
		if l == nil {
			l = []queue.LogEntry{}
		}
		b["logs"] = l
	}
	switch r.Status {
	case queue.InQueue:
		b["queue_position"] = pos
	case queue.Completed:
		b["metrics"] = map[string]any{"inference_time": r.InferenceTime}
		if r.Failed() {
			b["error"] = r.Outcome.Error
			b["error_type"] = r.Outcome.ErrorType
		}
	}
	return b
}

// statusStream is the SSE status stream: an event per change (with only the
// new log lines), ending after COMPLETED.
func (s *Server) statusStream(c echo.Context, id string, logs bool) error {
	w := c.Response()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	ch, stop := s.q.Subscribe(id)
	defer stop()
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	// Queue positions change without a notification: look again now and then.
	poll := time.NewTicker(500 * time.Millisecond)
	defer poll.Stop()
	sent, lastPos := 0, -1
	var last queue.Status
	now := origin(c.Request())
	for {
		rec, pos, err := s.q.Get(id)
		if errors.Is(err, queue.ErrNotFound) || errors.Is(err, queue.ErrClosed) {
			return nil
		}
		if err == nil {
			rec.Origin = now
			if rec.Status != last || (logs && len(rec.Logs) > sent) || (rec.Status == queue.InQueue && pos != lastPos) {
				b, _ := json.Marshal(statusBody(rec, pos, logs, sent))
				writeEvent(w, b)
				last, sent, lastPos = rec.Status, len(rec.Logs), pos
			}
			if rec.Status == queue.Completed {
				return nil
			}
		}
		// Otherwise a shared queue's database is out of reach for a moment:
		// the stream waits for it, as the request does.
		select {
		case <-c.Request().Context().Done():
			return nil
		case <-s.q.Draining():
			return nil // shutting down: the client reconnects or polls
		case <-keepAlive.C:
			io.WriteString(w, ": keep-alive\n\n")
			w.Flush()
		case <-poll.C:
		case _, ok := <-ch:
			if !ok {
				ch = nil // not live any more: the poll ticker takes over
			}
		}
	}
}

// writeEvent writes one SSE data event. Non-ASCII is escaped: the JS client
// decodes network chunks without streaming UTF-8, so a character split
// across chunks would break.
func writeEvent(w *echo.Response, data []byte) {
	io.WriteString(w, "data: ")
	w.Write(asciiJSON(data))
	io.WriteString(w, "\n\n")
	w.Flush()
}

func asciiJSON(b []byte) []byte {
	ascii := true
	for _, c := range b {
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		b = b[n:]
		switch {
		case r < utf8.RuneSelf:
			out = append(out, byte(r))
		case r > 0xFFFF:
			r -= 0x10000
			out = fmt.Appendf(out, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		default:
			out = fmt.Appendf(out, `\u%04x`, r)
		}
	}
	return out
}
