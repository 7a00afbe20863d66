package api

// fal's realtime protocol: a WebSocket on the run host at
// /{owner}/{alias}[/{path}]/realtime?fal_jwt_token=<token>[&max_buffering=N].
//
//	client → server: one binary frame per request, the msgpack-encoded input
//	  (a text frame is read as JSON); an optional request_id is echoed back.
//	server → client: a binary frame per result, the msgpack-encoded output,
//	  then {"type":"x-fal-message","action":"timings","timing":<seconds>}
//	  as a JSON text frame (both clients drop it).
//	errors: JSON text frames {"type":"x-fal-error","error":<code>,"reason":…};
//	  a failed request (VALIDATION_ERROR with fal's 422 detail, or another
//	  code) leaves the connection open; refusals (NOT_FOUND, NOT_REALTIME,
//	  Unauthorized) are followed by a close frame that carries the reason.
//	idle: after realtimeIdle without an input, {"error":"TIMEOUT"} and a
//	  normal close, as fal's apps do.
//
// Inputs run one at a time, in order, through the same queue and workers as
// every other request; up to max_buffering (1..60, default 1) wait, and an
// input arriving when that many wait replaces the oldest of them.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/falocal/falocal/pipelines"
)

// realtimeApps are the endpoints fal serves over its realtime protocol: the
// few-step text-to-image family. Only those this server has are reachable.
var realtimeApps = map[string]bool{
	"fal-ai/fast-turbo-diffusion": true,
	"fal-ai/fast-lcm-diffusion":   true,
	"fal-ai/fast-lightning-sdxl":  true,
	"fal-ai/lcm":                  true,
}

// realtimeIdle is how long a connection may go without an input
// (nanoseconds; tests shorten it).
var realtimeIdle atomic.Int64

func init() { realtimeIdle.Store(int64(60 * time.Second)) }

const (
	realtimeDrainPoll    = 250 * time.Millisecond
	realtimeMaxBuffering = 60
	// realtimeMaxMessage caps one input frame when MaxBodyBytes is larger.
	realtimeMaxMessage = 16 << 20
)

// rtMessage is one input waiting to run.
type rtMessage struct {
	input     map[string]any
	requestID any
}

// rtInbox holds the inputs waiting on one connection.
type rtInbox struct {
	mu      sync.Mutex
	pending []rtMessage
	max     int
	ready   chan struct{} // a token while pending is not empty
}

func (b *rtInbox) push(m rtMessage) {
	b.mu.Lock()
	if len(b.pending) >= b.max {
		b.pending = b.pending[1:]
	}
	b.pending = append(b.pending, m)
	b.mu.Unlock()
	select {
	case b.ready <- struct{}{}:
	default:
	}
}

func (b *rtInbox) pop() (rtMessage, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pending) == 0 {
		return rtMessage{}, false
	}
	m := b.pending[0]
	b.pending = b.pending[1:]
	if len(b.pending) > 0 {
		select {
		case b.ready <- struct{}{}:
		default:
		}
	}
	return m, true
}

// rtError is fal's error message on a realtime connection.
func rtError(code, reason string, extra map[string]any) map[string]any {
	m := map[string]any{"type": "x-fal-error", "error": code, "reason": reason}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// realtimeRoutes registers the realtime WebSocket on the run host (GET
// /run/*). The tokens /rest/tokens/ hands out are signed (storage.go), so
// that a server with keys checks them, whichever server of a fleet made
// them.
func (s *Server) realtimeRoutes(e *echo.Echo) {
	toks := &rtTokens{key: s.tokenKey()}
	e.GET("/run/*", func(c echo.Context) error { return s.realtime(c, toks) })
}

// rtTokens checks realtime tokens with the key they are signed with.
type rtTokens struct {
	key []byte
}

// valid reports whether tok is a realtime token that has not expired and
// allows the app of endpoint id (its alias, as fal's tokens name apps).
func (t *rtTokens) valid(tok, id string) bool {
	segs := strings.Split(appOf(id), "/")
	return realtimeTokenAllows(t.key, tok, segs[len(segs)-1], appOf(id))
}

// realtime serves GET /run/* : the WebSocket of fal's realtime protocol.
// Plain GETs keep the 405 they always had.
func (s *Server) realtime(c echo.Context, toks *rtTokens) error {
	r := c.Request()
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return echo.ErrMethodNotAllowed
	}
	id := strings.Trim(c.Param("*"), "/")
	id = strings.TrimSuffix(strings.TrimSuffix(id, "/realtime"), "/")
	q := r.URL.Query()
	buffering := 1
	if v := q.Get("max_buffering"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > realtimeMaxBuffering {
			return &pipelines.HTTPError{Status: http.StatusBadRequest, Msg: "max_buffering must be between 1 and 60 (inclusive)"}
		}
		buffering = n
	}
	// Browsers are held to this machine's pages by the localOnly middleware
	// when no keys are set; with keys, the token or key is the credential,
	// as on fal, whatever page the socket comes from.
	conn, err := websocket.Accept(c.Response(), r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return nil // Accept has answered
	}
	defer conn.CloseNow()
	limit := min(s.cfg.MaxBodyBytes, realtimeMaxMessage)
	conn.SetReadLimit(limit)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	refuse := func(msg map[string]any) error {
		sendJSON(ctx, conn, msg)
		reason, _ := msg["reason"].(string)
		conn.Close(websocket.StatusPolicyViolation, closeReason(reason))
		return nil
	}
	if !s.realtimeAuthorized(c, q.Get("fal_jwt_token"), id, toks) {
		m := rtError("Unauthorized", "a realtime connection needs a token from /tokens/ or an 'Authorization: Key' header", nil)
		m["status"] = "error" // what the JS client recognises
		return refuse(m)
	}
	ep, err := s.lookup(id)
	if err != nil {
		_, body := s.errorBody(err, nil, "")
		msg, _ := body["detail"].(string)
		return refuse(rtError("NOT_FOUND", msg, nil))
	}
	if !realtimeApps[ep.ID()] {
		return refuse(rtError("NOT_REALTIME", fmt.Sprintf(
			"'%s' has no realtime endpoint; realtime is served for: %s", ep.ID(), strings.Join(s.realtimeIDs(), ", ")), nil))
	}

	inbox := &rtInbox{max: buffering, ready: make(chan struct{}, 1)}
	readErr := make(chan error, 1)
	var readers sync.WaitGroup
	readers.Add(1)
	go func() { // owned by this handler: it ends when the connection does
		defer readers.Done()
		err := s.realtimeRead(ctx, conn, inbox)
		cancel() // the client is gone: its running input is cancelled
		readErr <- err
	}()
	defer readers.Wait()
	defer conn.CloseNow()

	idleFor := time.Duration(realtimeIdle.Load())
	idle := time.NewTimer(idleFor)
	defer idle.Stop()
	// A draining server ends its connections (net/http's shutdown does not
	// wait for upgraded ones).
	drain := time.NewTicker(realtimeDrainPoll)
	defer drain.Stop()
	goingAway := func() {
		sendJSON(ctx, conn, rtError("INTERNAL_ERROR", "the server is shutting down", nil))
		conn.Close(websocket.StatusGoingAway, "the server is shutting down")
	}
	for {
		select {
		case <-drain.C:
			if s.draining.Load() {
				goingAway()
				return nil
			}
			continue
		case err := <-readErr:
			if errors.Is(err, errMessageTooBig) {
				conn.Close(websocket.StatusMessageTooBig, fmt.Sprintf("a message may be at most %d bytes", limit))
			}
			return nil
		case <-idle.C:
			sendJSON(ctx, conn, rtError("TIMEOUT", "no inputs, reconnect when needed!", nil))
			conn.Close(websocket.StatusNormalClosure, "")
			return nil
		case <-inbox.ready:
		}
		for {
			m, ok := inbox.pop()
			if !ok {
				break
			}
			if s.draining.Load() {
				goingAway()
				return nil
			}
			if err := s.realtimeRun(ctx, c, conn, ep, m); err != nil {
				return nil
			}
		}
		if !idle.Stop() {
			select {
			case <-idle.C:
			default:
			}
		}
		idle.Reset(idleFor)
	}
}

var errMessageTooBig = errors.New("message too big")

// realtimeRead decodes the client's frames into inbox until the connection
// ends; a frame that does not decode gets an error message and is dropped.
func (s *Server) realtimeRead(ctx context.Context, conn *websocket.Conn, inbox *rtInbox) error {
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			var mb *websocket.CloseError
			if !errors.As(err, &mb) && strings.Contains(err.Error(), "read limited at") {
				return errMessageTooBig
			}
			return err
		}
		var in map[string]any
		if typ == websocket.MessageText {
			err = json.Unmarshal(data, &in)
		} else {
			err = msgpack.Unmarshal(data, &in)
		}
		if err != nil || in == nil {
			if sendJSON(ctx, conn, rtError("VALIDATION_ERROR", "each message must be one msgpack-encoded (or JSON) object", nil)) != nil {
				return err
			}
			continue
		}
		rid, hasID := in["request_id"]
		delete(in, "request_id")
		if !hasID {
			rid = nil
		}
		inbox.push(rtMessage{input: in, requestID: rid})
	}
}

// realtimeRun runs one input and sends its output or error; an error
// returned means the connection is gone.
func (s *Server) realtimeRun(ctx context.Context, c echo.Context, conn *websocket.Conn, ep pipelines.Endpoint, m rtMessage) error {
	if _, ok := m.input["sync_mode"]; !ok {
		// Realtime results arrive inline, not as links to fetch again.
		m.input["sync_mode"] = true
	}
	body, err := json.Marshal(jsonSafe(m.input))
	if err != nil {
		return sendJSON(ctx, conn, rtError("VALIDATION_ERROR", err.Error(), nil))
	}
	reqID := newID()
	rec := s.newRecord(c.Request(), reqID, ep, body)
	rec.Ephemeral = true
	start := time.Now()
	if _, err := s.q.Submit(rec); err != nil {
		s.rejected(ep.ID(), err)
		_, b := s.errorBody(queueError(err), reqID, "")
		msg, _ := b["detail"].(string)
		return sendJSON(ctx, conn, rtError("INTERNAL_ERROR", msg, withID(nil, m.requestID)))
	}
	done, err := s.q.Wait(ctx, reqID)
	if err != nil {
		s.q.Cancel(reqID)
		return err
	}
	s.q.Forget(reqID)
	if done.Failed() {
		var b map[string]any
		json.Unmarshal(done.Outcome.Body, &b)
		if done.Outcome.Status == http.StatusUnprocessableEntity {
			return sendJSON(ctx, conn, rtError("VALIDATION_ERROR", validationReason(b["detail"]),
				withID(map[string]any{"detail": b["detail"]}, m.requestID)))
		}
		code := "INTERNAL_ERROR"
		if done.Outcome.Status < 500 {
			code = "BAD_REQUEST"
		}
		extra := map[string]any{"status": done.Outcome.Status}
		if et, ok := b["error_type"]; ok {
			extra["error_type"] = et
		}
		return sendJSON(ctx, conn, rtError(code, done.Outcome.Error, withID(extra, m.requestID)))
	}
	var out map[string]any
	dec := json.NewDecoder(bytes.NewReader(done.Outcome.Output))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil || out == nil {
		return sendJSON(ctx, conn, rtError("INTERNAL_ERROR", "the endpoint's output is not an object", nil))
	}
	out = msgpackNumbers(out).(map[string]any)
	if m.requestID != nil {
		out["request_id"] = m.requestID
	}
	b, err := msgpack.Marshal(out)
	if err != nil {
		return sendJSON(ctx, conn, rtError("INTERNAL_ERROR", err.Error(), nil))
	}
	if err := conn.Write(ctx, websocket.MessageBinary, b); err != nil {
		return err
	}
	return sendJSON(ctx, conn, map[string]any{"type": "x-fal-message", "action": "timings", "timing": time.Since(start).Seconds()})
}

func withID(m map[string]any, id any) map[string]any {
	if id == nil {
		return m
	}
	if m == nil {
		m = map[string]any{}
	}
	m["request_id"] = id
	return m
}

// validationReason makes one line of fal's 422 detail list.
func validationReason(detail any) string {
	list, ok := detail.([]any)
	if !ok {
		if s, ok := detail.(string); ok {
			return s
		}
		return "invalid input"
	}
	var parts []string
	for _, d := range list {
		e, _ := d.(map[string]any)
		var loc []string
		if l, ok := e["loc"].([]any); ok {
			for _, x := range l {
				if x != "body" {
					loc = append(loc, fmt.Sprint(x))
				}
			}
		}
		msg, _ := e["msg"].(string)
		if len(loc) > 0 {
			msg = strings.Join(loc, ".") + ": " + msg
		}
		parts = append(parts, msg)
	}
	return strings.Join(parts, "; ")
}

// jsonSafe turns msgpack's byte strings into text so that the input reads
// as JSON the endpoints understand.
func jsonSafe(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = jsonSafe(e)
		}
	case []any:
		for i, e := range x {
			x[i] = jsonSafe(e)
		}
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = jsonSafe(e)
		}
		return m
	case []byte:
		return string(x)
	}
	return v
}

// msgpackNumbers gives JSON's numbers msgpack's types: integers stay
// integers, the rest are floats.
func msgpackNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = msgpackNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = msgpackNumbers(e)
		}
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

func sendJSON(ctx context.Context, conn *websocket.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return conn.Write(ctx, websocket.MessageText, b)
}

// closeReason fits a reason into a close frame (at most 123 bytes).
func closeReason(s string) string {
	if len(s) <= 123 {
		return s
	}
	s = s[:120]
	for !utf8Start(s) {
		s = s[:len(s)-1]
	}
	return s + "..."
}

func utf8Start(s string) bool {
	if s == "" {
		return true
	}
	for i := len(s) - 1; i >= 0 && i >= len(s)-4; i-- {
		b := s[i]
		if b < 0x80 {
			return true
		}
		if b >= 0xC0 {
			n := 2
			if b >= 0xF0 {
				n = 4
			} else if b >= 0xE0 {
				n = 3
			}
			return len(s)-i == n
		}
	}
	return false
}

// realtimeIDs lists the realtime endpoints this server has.
func (s *Server) realtimeIDs() []string {
	var out []string
	for _, id := range s.cfg.Registry.IDs() {
		if realtimeApps[id] {
			out = append(out, id)
		}
	}
	if len(out) == 0 {
		return []string{"none installed"}
	}
	return out
}

// realtimeAuthorized: without keys every connection passes (the server is
// local only then); with keys, a configured key in the Authorization header
// (Python's use_jwt=False) or a token the server handed out.
func (s *Server) realtimeAuthorized(c echo.Context, token, id string, toks *rtTokens) bool {
	if len(s.keys) == 0 {
		return true
	}
	h := c.Request().Header.Get("Authorization")
	if scheme, cred, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Key") && s.validKey(strings.TrimSpace(cred)) {
		return true
	}
	return token != "" && toks.valid(token, id)
}
