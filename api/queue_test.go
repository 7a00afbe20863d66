package api_test

// The queue's HTTP surface (queue.fal.run's shape), sync runs through the
// queue and auth. Ordering comes from gates in the fake endpoints, never
// from sleeps.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/pipelines"
)

const qwait = 5 * time.Second

// gatedEP runs requests named by their input {"name": …}; a name with a
// gate blocks until the gate closes or its context ends.
type gatedEP struct {
	id      string
	mu      sync.Mutex
	order   []string
	gates   map[string]chan struct{}
	ctxErrs map[string]error
	ended   map[string]chan struct{} // closed once a name's ctxErrs entry is set
	seen    map[string]bool
	started chan string
	// fail, when set, may answer an error for a name.
	fail func(name string) error
}

func newGated(id string) *gatedEP {
	return &gatedEP{id: id, gates: map[string]chan struct{}{}, ctxErrs: map[string]error{},
		ended: map[string]chan struct{}{}, seen: map[string]bool{}, started: make(chan string, 100)}
}

// endedLocked returns the channel closed when name's run saw its ctx end.
func (g *gatedEP) endedLocked(name string) chan struct{} {
	c, ok := g.ended[name]
	if !ok {
		c = make(chan struct{})
		g.ended[name] = c
	}
	return c
}

func (g *gatedEP) ID() string { return g.id }

func (g *gatedEP) Run(ctx context.Context, req *pipelines.Request) (any, error) {
	var in struct {
		Name string `json:"name"`
	}
	json.Unmarshal(req.Input, &in)
	g.mu.Lock()
	g.order = append(g.order, in.Name)
	gate := g.gates[in.Name]
	g.mu.Unlock()
	req.Logf(pipelines.Info, "running %s", in.Name)
	g.started <- in.Name
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			g.mu.Lock()
			if _, again := g.ctxErrs[in.Name]; !again {
				close(g.endedLocked(in.Name))
			}
			g.ctxErrs[in.Name] = ctx.Err()
			g.mu.Unlock()
			return nil, ctx.Err()
		}
	}
	if g.fail != nil {
		if err := g.fail(in.Name); err != nil {
			return nil, err
		}
	}
	return map[string]any{"name": in.Name, "request_id": req.ID}, nil
}

func (g *gatedEP) gate(name string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	c := make(chan struct{})
	g.gates[name] = c
	return c
}

func (g *gatedEP) ran() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.order...)
}

func (g *gatedEP) ctxErr(name string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ctxErrs[name]
}

func (g *gatedEP) waitStarted(t *testing.T, name string) {
	t.Helper()
	timeout := time.After(qwait)
	for {
		g.mu.Lock()
		ok := g.seen[name]
		g.mu.Unlock()
		if ok {
			return
		}
		select {
		case n := <-g.started:
			g.mu.Lock()
			g.seen[n] = true
			g.mu.Unlock()
		case <-timeout:
			t.Fatalf("%s never started (ran %v)", name, g.ran())
		}
	}
}

func in(name string) string { return fmt.Sprintf(`{"name":%q}`, name) }

// newQEnv is newEnv whose server (and queue) closes with the test, ending
// whatever still runs.
func newQEnv(t *testing.T, mod func(*api.Config), eps ...pipelines.Endpoint) *testEnv {
	t.Helper()
	e := newEnv(t, mod, eps...)
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		e.srv.Close(ctx)
	})
	return e
}

type submitted struct {
	ID  string
	App string
	r   *resp
}

// submit posts a queue request and checks fal's submit reply.
func (e *testEnv) submit(t *testing.T, host, path, body string, hdr ...string) submitted {
	t.Helper()
	r := e.do(http.MethodPost, host, path, body, hdr...)
	return checkSubmit(t, r, originFor(host))
}

func originFor(host string) string {
	switch {
	case host == "":
		return "http://example.com"
	case api.IsFalHost(host):
		h := strings.ToLower(host)
		if i := strings.LastIndex(h, ":"); i >= 0 {
			h = h[:i]
		}
		return "https://" + h
	}
	return "http://" + host
}

func checkSubmit(t *testing.T, r *resp, origin string) submitted {
	t.Helper()
	if r.Code != http.StatusOK {
		t.Fatalf("submit: %d %s", r.Code, r.Body.String())
	}
	id, _ := r.body["request_id"].(string)
	if !uuidRE.MatchString(id) {
		t.Fatalf("submit: request_id %v", r.body["request_id"])
	}
	if h := r.Header().Get("x-fal-request-id"); h != id {
		t.Errorf("submit: x-fal-request-id %q, request_id %q", h, id)
	}
	resp, _ := r.body["response_url"].(string)
	prefix := origin + "/"
	if !strings.HasPrefix(resp, prefix) || !strings.HasSuffix(resp, "/requests/"+id) {
		t.Fatalf("submit: response_url %q (origin %s)", resp, origin)
	}
	app := strings.TrimSuffix(strings.TrimPrefix(resp, prefix), "/requests/"+id)
	if r.body["status_url"] != resp+"/status" || r.body["cancel_url"] != resp+"/cancel" {
		t.Errorf("submit: status_url %v cancel_url %v", r.body["status_url"], r.body["cancel_url"])
	}
	if r.body["status"] != "IN_QUEUE" {
		t.Errorf("submit: status %v", r.body["status"])
	}
	if p, ok := r.body["queue_position"].(float64); !ok || p != float64(int(p)) || p < 0 {
		t.Errorf("submit: queue_position %v", r.body["queue_position"])
	}
	return submitted{ID: id, App: app, r: r}
}

func (s submitted) path(rest string) string {
	p := "/" + s.App + "/requests/" + s.ID
	if rest != "" {
		p += "/" + rest
	}
	return p
}

// sse is one parsed status event.
type sse map[string]any

// readEvents parses an SSE body into its data events.
func readEvents(t *testing.T, body []byte) []sse {
	t.Helper()
	var out []sse
	for _, block := range strings.Split(string(body), "\n\n") {
		for _, line := range strings.Split(block, "\n") {
			if d, ok := strings.CutPrefix(line, "data: "); ok {
				var ev sse
				if err := json.Unmarshal([]byte(d), &ev); err != nil {
					t.Fatalf("event %q: %v", d, err)
				}
				out = append(out, ev)
			}
		}
	}
	return out
}

// waitDone follows the status stream until the request completes and
// returns the final event.
func (e *testEnv) waitDone(t *testing.T, host string, s submitted, hdr ...string) sse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), qwait)
	defer cancel()
	req := httptest.NewRequest(http.MethodGet, s.path("status/stream"), nil).WithContext(ctx)
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	r := e.serve(req)
	evs := readEvents(t, r.Body.Bytes())
	if len(evs) == 0 || evs[len(evs)-1]["status"] != "COMPLETED" {
		t.Fatalf("%s never completed: %d %s", s.ID, r.Code, r.Body.String())
	}
	return evs[len(evs)-1]
}

// status GETs a status URL and decodes it with integers kept exact.
func (e *testEnv) status(t *testing.T, path string, hdr ...string) (*resp, map[string]any) {
	t.Helper()
	r := e.do(http.MethodGet, "", path, "", hdr...)
	d := json.NewDecoder(bytes.NewReader(r.Body.Bytes()))
	d.UseNumber()
	var m map[string]any
	d.Decode(&m)
	return r, m
}

func checkLogs(t *testing.T, logs any, wantMsgs ...string) []any {
	t.Helper()
	list, ok := logs.([]any)
	if !ok {
		t.Fatalf("logs = %T %v, want a list", logs, logs)
	}
	var msgs []string
	for _, l := range list {
		m := l.(map[string]any)
		if m["source"] != "USER" {
			t.Errorf("log source %v", m["source"])
		}
		if lv, _ := m["level"].(string); lv == "" {
			t.Errorf("log without level: %v", m)
		}
		ts, _ := m["timestamp"].(string)
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("log timestamp %q is not ISO-8601: %v", ts, err)
		}
		msgs = append(msgs, m["message"].(string))
	}
	for _, w := range wantMsgs {
		found := false
		for _, m := range msgs {
			found = found || m == w
		}
		if !found {
			t.Errorf("logs %q lack %q", msgs, w)
		}
	}
	return list
}

func TestQueueLifecycle(t *testing.T) {
	g := newGated("fal-ai/x/sub")
	ga := g.gate("a")
	e := newQEnv(t, nil, g)

	a := e.submit(t, "", "/fal-ai/x/sub", in("a"))
	if a.App != "fal-ai/x" {
		t.Fatalf("app %q: status URLs drop the endpoint path", a.App)
	}
	g.waitStarted(t, "a")
	b := e.submit(t, "", "/fal-ai/x/sub", in("b"))
	if b.r.body["queue_position"] != float64(0) {
		t.Errorf("b queue_position %v, want 0", b.r.body["queue_position"])
	}
	c := e.submit(t, "", "/fal-ai/x/sub?x=1", in("c"))
	if c.r.body["queue_position"] != float64(1) {
		t.Errorf("c queue_position %v, want 1", c.r.body["queue_position"])
	}

	// Queued: 202, an integer position, and a logs key.
	r, m := e.status(t, c.path("status"))
	if r.Code != http.StatusAccepted || m["status"] != "IN_QUEUE" {
		t.Fatalf("c status: %d %s", r.Code, r.Body.String())
	}
	if n, ok := m["queue_position"].(json.Number); !ok || n.String() != "1" {
		t.Errorf("queue_position %#v, want the integer 1", m["queue_position"])
	}
	if l, ok := m["logs"]; !ok || l != nil {
		t.Errorf("logs without ?logs: %v (present %v), want null", l, ok)
	}
	if r.Header().Get("x-fal-request-id") != c.ID || m["request_id"] != c.ID {
		t.Errorf("status ids: header %q body %v, want %s", r.Header().Get("x-fal-request-id"), m["request_id"], c.ID)
	}
	for _, k := range []string{"response_url", "status_url", "cancel_url"} {
		if m[k] != c.r.body[k] {
			t.Errorf("status %s = %v, want %v", k, m[k], c.r.body[k])
		}
	}

	// Running.
	r, m = e.status(t, a.path("status"))
	if r.Code != http.StatusAccepted || m["status"] != "IN_PROGRESS" {
		t.Fatalf("a status: %d %s", r.Code, r.Body.String())
	}
	if _, ok := m["logs"]; !ok {
		t.Error("IN_PROGRESS status lacks the logs key")
	}
	for _, q := range []string{"?logs=1", "?logs=true", "?logs=TRUE"} {
		_, m = e.status(t, a.path("status")+q)
		checkLogs(t, m["logs"], "running a")
	}
	if _, m = e.status(t, a.path("status")+"?logs=0"); m["logs"] != nil {
		t.Errorf("?logs=0 returned logs %v", m["logs"])
	}
	rr := e.do(http.MethodGet, "", a.path(""), "")
	if d := checkDetail(t, rr, http.StatusBadRequest); d != "Request is still in progress" {
		t.Errorf("result before completion: %q", d)
	}
	if strings.TrimSpace(rr.Body.String()) != `{"detail":"Request is still in progress"}` {
		t.Errorf("result before completion body %s", rr.Body.String())
	}

	close(ga)
	for _, s := range []submitted{a, b, c} {
		e.waitDone(t, "", s)
		r, m = e.status(t, s.path("status")+"?logs=1")
		if r.Code != http.StatusOK || m["status"] != "COMPLETED" {
			t.Fatalf("%s completed status: %d %s", s.ID, r.Code, r.Body.String())
		}
		met, _ := m["metrics"].(map[string]any)
		if it, ok := met["inference_time"].(json.Number); !ok {
			t.Errorf("metrics %v lack inference_time", m["metrics"])
		} else if f, err := it.Float64(); err != nil || f < 0 {
			t.Errorf("inference_time %v", it)
		}
		if _, has := m["error"]; has {
			t.Errorf("successful request has error %v", m["error"])
		}
		if _, has := m["queue_position"]; has {
			t.Errorf("completed request has queue_position")
		}
		res := e.do(http.MethodGet, "", s.path(""), "")
		if res.Code != http.StatusOK || res.body["request_id"] != s.ID {
			t.Fatalf("%s result: %d %s", s.ID, res.Code, res.Body.String())
		}
		if res.Header().Get("x-fal-request-id") != s.ID {
			t.Errorf("result x-fal-request-id %q, want %s", res.Header().Get("x-fal-request-id"), s.ID)
		}
	}
	if got := g.ran(); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("ran %v", got)
	}
	if res := e.do(http.MethodGet, "", b.path(""), ""); res.body["name"] != "b" {
		t.Errorf("b result %s", res.Body.String())
	}
}

func TestQueueNotFound(t *testing.T) {
	g := newGated("fal-ai/x")
	e := newQEnv(t, nil, g, echoEP("fal-ai/other"))
	s := e.submit(t, "", "/fal-ai/x", in("a"))
	e.waitDone(t, "", s)
	unknown := "/fal-ai/x/requests/7c6d1a3e-0000-4000-8000-000000000000"
	for _, p := range []string{unknown + "/status", unknown, unknown + "/status/stream",
		"/fal-ai/other/requests/" + s.ID + "/status", "/fal-ai/other/requests/" + s.ID,
		"/fal-ai/other/requests/" + s.ID + "/status/stream", "/someone/else/requests/" + s.ID + "/status"} {
		r := e.do(http.MethodGet, "", p, "")
		if d := checkDetail(t, r, http.StatusNotFound); d != "Request not found" {
			t.Errorf("GET %s: %q", p, d)
		}
	}
	for _, p := range []string{unknown + "/cancel", "/fal-ai/other/requests/" + s.ID + "/cancel"} {
		r := e.do(http.MethodPut, "", p, "")
		if r.Code != http.StatusNotFound || r.body["status"] != "NOT_FOUND" {
			t.Errorf("PUT %s: %d %s", p, r.Code, r.Body.String())
		}
	}
	// Still there under its own app.
	if r := e.do(http.MethodGet, "", s.path("status"), ""); r.Code != 200 {
		t.Errorf("own app: %d", r.Code)
	}
	// Unknown and proprietary endpoints at submit.
	r := e.do(http.MethodPost, "", "/fal-ai/nope", "{}")
	checkDetail(t, r, 404, "'fal-ai/nope' is not served")
	r = e.do(http.MethodPost, "", "/fal-ai/sora-2/text-to-video", "{}")
	checkDetail(t, r, 404, "proprietary")
}

func TestQueueFailedRequest(t *testing.T) {
	g := newGated("fal-ai/x")
	g.fail = func(name string) error {
		switch name {
		case "typed":
			return &pipelines.HTTPError{Status: 413, Type: "file_too_large", Msg: "too big"}
		case "invalid":
			return pipelines.Invalid("image_url", "bad url")
		}
		return nil
	}
	e := newQEnv(t, nil, g)
	typed := e.submit(t, "", "/fal-ai/x", in("typed"))
	e.waitDone(t, "", typed)
	r, m := e.status(t, typed.path("status"))
	if r.Code != 200 || m["status"] != "COMPLETED" || m["error"] != "too big" || m["error_type"] != "file_too_large" {
		t.Errorf("typed status: %d %s", r.Code, r.Body.String())
	}
	res := e.do(http.MethodGet, "", typed.path(""), "")
	if d := checkDetail(t, res, 413); d != "too big" || res.body["error_type"] != "file_too_large" {
		t.Errorf("typed result %s", res.Body.String())
	}
	if res.Header().Get("X-Fal-Error-Type") != "file_too_large" || res.Header().Get("x-fal-request-id") != typed.ID {
		t.Errorf("typed result headers %v", res.Header())
	}

	inv := e.submit(t, "", "/fal-ai/x", in("invalid"))
	e.waitDone(t, "", inv)
	_, m = e.status(t, inv.path("status"))
	if m["status"] != "COMPLETED" || m["error"] != "Invalid status code: 422" {
		t.Errorf("invalid status %v", m)
	}
	if _, ok := m["error_type"]; !ok {
		t.Error("failed status lacks error_type")
	}
	res = e.do(http.MethodGet, "", inv.path(""), "")
	var body struct {
		Detail []pipelines.FieldError `json:"detail"`
	}
	if res.Code != 422 || json.Unmarshal(res.Body.Bytes(), &body) != nil || len(body.Detail) != 1 || body.Detail[0].Msg != "bad url" {
		t.Errorf("invalid result: %d %s", res.Code, res.Body.String())
	}
}

func TestQueueCancel(t *testing.T) {
	g := newGated("fal-ai/x")
	g.gate("running")
	e := newQEnv(t, nil, g)
	running := e.submit(t, "", "/fal-ai/x", in("running"))
	g.waitStarted(t, "running")
	queued := e.submit(t, "", "/fal-ai/x", in("queued"))

	cancel := func(s submitted) *resp {
		t.Helper()
		r := e.do(http.MethodPut, "", s.path("cancel"), "")
		if r.Header().Get("x-fal-request-id") != s.ID {
			t.Errorf("cancel x-fal-request-id %q", r.Header().Get("x-fal-request-id"))
		}
		return r
	}
	if r := cancel(queued); r.Code != http.StatusAccepted || r.body["status"] != "CANCELLATION_REQUESTED" {
		t.Fatalf("cancel queued: %d %s", r.Code, r.Body.String())
	}
	res := e.do(http.MethodGet, "", queued.path(""), "")
	checkDetail(t, res, 499)
	if res.body["error_type"] != "client_cancelled" {
		t.Errorf("cancelled result %s", res.Body.String())
	}
	if r := cancel(running); r.Code != http.StatusAccepted || r.body["status"] != "CANCELLATION_REQUESTED" {
		t.Fatalf("cancel running: %d %s", r.Code, r.Body.String())
	}
	fin := e.waitDone(t, "", running)
	if fin["error_type"] != "client_cancelled" {
		t.Errorf("cancelled running status %v", fin)
	}
	if !errors.Is(g.ctxErr("running"), context.Canceled) {
		t.Errorf("endpoint ctx: %v, want Canceled", g.ctxErr("running"))
	}
	res = e.do(http.MethodGet, "", running.path(""), "")
	checkDetail(t, res, 499)
	if res.body["error_type"] != "client_cancelled" {
		t.Errorf("cancelled running result %s", res.Body.String())
	}
	for _, s := range []submitted{running, queued} {
		if r := cancel(s); r.Code != http.StatusBadRequest || r.body["status"] != "ALREADY_COMPLETED" {
			t.Errorf("cancel completed: %d %s", r.Code, r.Body.String())
		}
	}
	if got := g.ran(); !reflect.DeepEqual(got, []string{"running"}) {
		t.Errorf("ran %v; a cancelled queued request must not run", got)
	}
}

func TestQueuePriority(t *testing.T) {
	g := newGated("fal-ai/x")
	gb := g.gate("blocker")
	e := newQEnv(t, func(c *api.Config) { c.Workers = 1 }, g)
	e.submit(t, "", "/fal-ai/x", in("blocker"))
	g.waitStarted(t, "blocker")
	l1 := e.submit(t, "", "/fal-ai/x", in("l1"), "X-Fal-Queue-Priority", "low")
	n1 := e.submit(t, "", "/fal-ai/x", in("n1"))
	n2 := e.submit(t, "", "/fal-ai/x", in("n2"), "X-Fal-Queue-Priority", "normal")
	l2 := e.submit(t, "", "/fal-ai/x", in("l2"), "X-Fal-Queue-Priority", "LOW")
	for _, bad := range []string{"high", "0", "urgent"} {
		r := e.do(http.MethodPost, "", "/fal-ai/x", in("bad"), "X-Fal-Queue-Priority", bad)
		if r.Code != http.StatusUnprocessableEntity {
			t.Errorf("priority %q: %d %s", bad, r.Code, r.Body.String())
		}
	}
	for s, want := range map[submitted]string{n1: "0", n2: "1", l1: "2", l2: "3"} {
		if _, m := e.status(t, s.path("status")); fmt.Sprint(m["queue_position"]) != want {
			t.Errorf("position %v, want %s", m["queue_position"], want)
		}
	}
	close(gb)
	e.waitDone(t, "", l2)
	if got, want := g.ran(), []string{"blocker", "n1", "n2", "l1", "l2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ran %v, want %v", got, want)
	}
}

func TestQueueRequestTimeout(t *testing.T) {
	t.Parallel()
	g := newGated("fal-ai/x")
	gb := g.gate("blocker")
	e := newQEnv(t, nil, g)
	e.submit(t, "", "/fal-ai/x", in("blocker"))
	g.waitStarted(t, "blocker")
	for _, bad := range []string{"0.5", "1", "abc", "-3"} {
		r := e.do(http.MethodPost, "", "/fal-ai/x", in("bad"), "X-Fal-Request-Timeout", bad)
		if r.Code != http.StatusUnprocessableEntity {
			t.Errorf("timeout %q: %d %s", bad, r.Code, r.Body.String())
		}
	}
	late := e.submit(t, "", "/fal-ai/x", in("late"), "X-Fal-Request-Timeout", "1.01")
	// The server set late's deadline before its submit returned, so it has
	// passed at submitted+1.01s however slow the submit was.
	submitted := time.Now()
	ok := e.submit(t, "", "/fal-ai/x", in("ok"), "X-Fal-Request-Timeout", "3600")
	// The one wait in this suite: a real deadline has to pass (the API's
	// smallest start timeout is just over a second). Not an ordering guess:
	// the bound above holds however the goroutines are scheduled.
	time.Sleep(time.Until(submitted.Add(1100 * time.Millisecond)))
	close(gb)
	fin := e.waitDone(t, "", late)
	if fin["error_type"] != "request_timeout" {
		t.Errorf("late status %v", fin)
	}
	res := e.do(http.MethodGet, "", late.path(""), "")
	checkDetail(t, res, http.StatusGatewayTimeout)
	if res.body["error_type"] != "request_timeout" || res.Header().Get("X-Fal-Request-Timeout-Type") != "user" {
		t.Errorf("late result %s %v", res.Body.String(), res.Header())
	}
	e.waitDone(t, "", ok)
	if got := g.ran(); !reflect.DeepEqual(got, []string{"blocker", "ok"}) {
		t.Errorf("ran %v; the late request must not run", got)
	}
}

// The status stream over a real connection: events as they happen, logs
// incremental, non-ASCII escaped, ending after COMPLETED.
func TestQueueStatusStream(t *testing.T) {
	step := make(chan struct{})
	logged := make(chan struct{}, 1)
	e := newQEnv(t, nil, ep("fal-ai/x", func(ctx context.Context, req *pipelines.Request) (any, error) {
		for _, msg := range []string{"one", "two: héllo ✓ 🎉"} {
			select {
			case <-step:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			req.Logf(pipelines.Info, "%s", msg)
		}
		select {
		case <-step:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		logged <- struct{}{}
		return map[string]any{"text": "été"}, nil
	}))
	ts := httptest.NewServer(e.h)
	defer ts.Close()
	s := e.submit(t, "", "/fal-ai/x", `{}`)
	// A failing check must not leave the read hanging.
	ctx, cancel := context.WithTimeout(context.Background(), 2*qwait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+s.path("status/stream")+"?logs=1", nil)
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q", ct)
	}
	if res.Header.Get("x-fal-request-id") != s.ID {
		t.Errorf("stream x-fal-request-id %q", res.Header.Get("x-fal-request-id"))
	}
	br := bufio.NewReader(res.Body)
	var raw bytes.Buffer
	var events []sse
	var logs []any
	// next reads events until one satisfies ok.
	next := func(what string, ok func(sse) bool) {
		t.Helper()
		for {
			var data string
			for {
				line, err := br.ReadString('\n')
				raw.WriteString(line)
				if err != nil {
					t.Fatalf("%s: stream ended: %v (got %s)", what, err, raw.String())
				}
				line = strings.TrimRight(line, "\n")
				if line == "" && data != "" {
					break
				}
				if d, ok := strings.CutPrefix(line, "data: "); ok {
					data = d
				}
			}
			var ev sse
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
			events = append(events, ev)
			logs = append(logs, checkLogs(t, ev["logs"])...)
			if ok(ev) {
				return
			}
		}
	}
	hasLog := func(msg string) func(sse) bool {
		return func(sse) bool {
			for _, l := range logs {
				if l.(map[string]any)["message"] == msg {
					return true
				}
			}
			return false
		}
	}
	next("in progress", func(ev sse) bool { return ev["status"] == "IN_PROGRESS" })
	step <- struct{}{}
	next("first log", hasLog("one"))
	step <- struct{}{}
	next("second log", hasLog("two: héllo ✓ 🎉"))
	step <- struct{}{}
	<-logged
	next("completed", func(ev sse) bool { return ev["status"] == "COMPLETED" })
	if rest, err := io.ReadAll(br); err != nil || len(bytes.TrimSpace(rest)) != 0 {
		t.Errorf("after COMPLETED: %q %v; the stream must end", rest, err)
	}
	last := events[len(events)-1]
	if _, ok := last["metrics"].(map[string]any)["inference_time"]; !ok {
		t.Errorf("last event lacks metrics: %v", last)
	}
	for _, ev := range events[:len(events)-1] {
		if ev["status"] == "COMPLETED" {
			t.Error("COMPLETED before the last event")
		}
	}
	// Incremental: the events' logs together are the full log, once each.
	_, m := e.status(t, s.path("status")+"?logs=1")
	full, _ := json.Marshal(m["logs"])
	got, _ := json.Marshal(logs)
	if !bytes.Equal(full, got) {
		t.Errorf("stream logs\n%s\nwant (status logs)\n%s", got, full)
	}
	for _, b := range raw.Bytes() {
		if b >= 0x80 {
			t.Fatalf("stream carries raw non-ASCII: %s", raw.String())
		}
	}
	for _, esc := range []string{`h\u00e9llo`, `\u2713`, `\ud83c\udf89`} {
		if !strings.Contains(raw.String(), esc) {
			t.Errorf("stream lacks %s: %s", esc, raw.String())
		}
	}
}

// A stream opened after completion sends the final event and ends.
func TestQueueStatusStreamCompleted(t *testing.T) {
	e := newQEnv(t, nil, echoEP("fal-ai/x"))
	s := e.submit(t, "", "/fal-ai/x", `{}`)
	e.waitDone(t, "", s)
	r := e.do(http.MethodGet, "", s.path("status/stream"), "")
	evs := readEvents(t, r.Body.Bytes())
	if len(evs) != 1 || evs[0]["status"] != "COMPLETED" || evs[0]["logs"] != nil {
		t.Errorf("events %v", evs)
	}
}

// Sync runs go through the same workers: with one worker a sync run waits
// behind a running queued request, ahead of queued low-priority ones.
func TestSyncRunSharesWorkers(t *testing.T) {
	g := newGated("fal-ai/x")
	gb := g.gate("blocker")
	e := newQEnv(t, func(c *api.Config) { c.Workers = 1 }, g)
	e.submit(t, "", "/fal-ai/x", in("blocker"))
	g.waitStarted(t, "blocker")
	probe := e.submit(t, "", "/fal-ai/x", in("probe"), "X-Fal-Queue-Priority", "low")

	done := make(chan *httptest.ResponseRecorder, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // a failed check must not leave the run waiting
	go func() {
		w := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/run/fal-ai/x", strings.NewReader(in("sync"))).WithContext(ctx)
		e.h.ServeHTTP(w, req)
		done <- w
	}()
	waitPosition(t, e, probe, "1") // the sync run is queued ahead of the probe
	if got := g.ran(); !reflect.DeepEqual(got, []string{"blocker"}) {
		t.Fatalf("ran %v while the only worker was busy", got)
	}
	select {
	case w := <-done:
		t.Fatalf("sync run answered while waiting: %d %s", w.Code, w.Body.String())
	default:
	}
	close(gb)
	select {
	case w := <-done:
		if w.Code != 200 || !strings.Contains(w.Body.String(), `"name":"sync"`) {
			t.Fatalf("sync run: %d %s", w.Code, w.Body.String())
		}
	case <-time.After(qwait):
		t.Fatal("sync run never answered")
	}
	e.waitDone(t, "", probe)
	if got := g.ran(); !reflect.DeepEqual(got, []string{"blocker", "sync", "probe"}) {
		t.Errorf("ran %v", got)
	}
}

// waitPosition polls a queued request's status until its position is want.
func waitPosition(t *testing.T, e *testEnv, s submitted, want string) {
	t.Helper()
	deadline := time.Now().Add(qwait)
	for {
		_, m := e.status(t, s.path("status"))
		if fmt.Sprint(m["queue_position"]) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue_position %v, want %s", m["queue_position"], want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRunStream(t *testing.T) {
	e := newQEnv(t, nil, echoEP("fal-ai/x"), ep("t/fail", func(context.Context, *pipelines.Request) (any, error) {
		return nil, pipelines.Errorf(400, "bad thing")
	}))
	r := e.do(http.MethodPost, "", "/run/fal-ai/x/stream", `{"prompt":"ünï"}`)
	if r.Code != 200 || !strings.HasPrefix(r.Header().Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %q %s", r.Code, r.Header().Get("Content-Type"), r.Body.String())
	}
	evs := readEvents(t, r.Body.Bytes())
	if len(evs) != 1 || evs[0]["endpoint"] != "fal-ai/x" || evs[0]["request_id"] != r.Header().Get("x-fal-request-id") {
		t.Fatalf("events %s", r.Body.String())
	}
	if in, _ := json.Marshal(evs[0]["input"]); string(in) != `{"prompt":"ünï"}` {
		t.Errorf("input %s", in)
	}
	if strings.ContainsFunc(r.Body.String(), func(c rune) bool { return c >= 0x80 }) {
		t.Errorf("stream carries raw non-ASCII: %s", r.Body.String())
	}
	// Errors are plain JSON errors.
	r = e.do(http.MethodPost, "", "/run/t/fail/stream", `{}`)
	if d := checkDetail(t, r, 400); d != "bad thing" {
		t.Errorf("stream error %q", d)
	}
	checkDetail(t, e.do(http.MethodPost, "", "/run/fal-ai/nope/stream", `{}`), 404, "not served")
}

// A client that goes away cancels its sync run, running or still queued.
func TestSyncClientDisconnect(t *testing.T) {
	g := newGated("fal-ai/x")
	g.gate("sync")
	g.gate("stream")
	gb := g.gate("blocker")
	e := newQEnv(t, func(c *api.Config) { c.Workers = 1 }, g)
	ts := httptest.NewServer(e.h)
	defer ts.Close()
	post := func(ctx context.Context, path, name string) chan error {
		errc := make(chan error, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+path, strings.NewReader(in(name)))
			res, err := ts.Client().Do(req)
			if err == nil {
				res.Body.Close()
			}
			errc <- err
		}()
		return errc
	}

	// Running: the endpoint's ctx ends (plain and streaming runs).
	for _, tc := range []struct{ path, name string }{{"/run/fal-ai/x", "sync"}, {"/run/fal-ai/x/stream", "stream"}} {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := post(ctx, tc.path, tc.name)
		g.waitStarted(t, tc.name)
		cancel()
		if err := <-errc; err == nil {
			t.Fatalf("%s: request succeeded after cancel", tc.path)
		}
		g.mu.Lock()
		ended := g.endedLocked(tc.name)
		g.mu.Unlock()
		select {
		case <-ended:
		case <-time.After(qwait):
		}
		if !errors.Is(g.ctxErr(tc.name), context.Canceled) {
			t.Fatalf("%s: endpoint ctx: %v, want Canceled", tc.path, g.ctxErr(tc.name))
		}
	}

	// Queued: it leaves the queue and never runs.
	e.submit(t, "", "/fal-ai/x", in("blocker"))
	g.waitStarted(t, "blocker")
	probe := e.submit(t, "", "/fal-ai/x", in("probe"), "X-Fal-Queue-Priority", "low")
	for _, path := range []string{"/run/fal-ai/x", "/run/fal-ai/x/stream"} {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := post(ctx, path, "queued-sync")
		waitPosition(t, e, probe, "1")
		cancel()
		<-errc
		waitPosition(t, e, probe, "0")
	}
	close(gb)
	e.waitDone(t, "", probe)
	if got := g.ran(); !reflect.DeepEqual(got, []string{"sync", "stream", "blocker", "probe"}) {
		t.Errorf("ran %v; the abandoned queued sync run must not run", got)
	}
}

func TestQueueAuth(t *testing.T) {
	const key = "id:secret"
	g := newGated("fal-ai/x")
	e := newQEnv(t, func(c *api.Config) { c.Keys = []string{key} }, g)
	right := []string{"Authorization", "Key " + key}
	s := e.submit(t, "", "/fal-ai/x", in("a"), right...)
	e.waitDone(t, "", s, right...)
	for _, tc := range []struct {
		method, path, body string
		ok                 int
	}{
		{"POST", "/fal-ai/x", in("b"), 200},
		{"GET", s.path("status"), "", 200},
		{"GET", s.path("status/stream"), "", 200},
		{"GET", s.path(""), "", 200},
		{"PUT", s.path("cancel"), "", 400}, // ALREADY_COMPLETED: it got through
		{"POST", "/run/fal-ai/x", in("c"), 200},
		{"POST", "/run/fal-ai/x/stream", in("d"), 200},
	} {
		name := tc.method + " " + tc.path
		if r := e.do(tc.method, "", tc.path, tc.body); r.Code != 401 {
			t.Errorf("%s without a key: %d", name, r.Code)
		} else {
			checkDetail(t, r, 401, "Missing credentials")
		}
		for _, bad := range []string{"Key id:wrong", "Key " + key + "x", "Bearer " + key, "Key"} {
			r := e.do(tc.method, "", tc.path, tc.body, "Authorization", bad)
			if r.Code != 401 && r.Code != 403 {
				t.Errorf("%s with %q: %d", name, bad, r.Code)
			}
		}
		r := e.do(tc.method, "", tc.path, tc.body, "Authorization", "Key id:wrong")
		checkDetail(t, r, 403, "Invalid credentials")
		if r := e.do(tc.method, "", tc.path, tc.body, right...); r.Code != tc.ok {
			t.Errorf("%s with the key: %d %s", name, r.Code, r.Body.String())
		}
		if r := e.do(tc.method, "", tc.path, tc.body, "authorization", "key "+key); r.Code != tc.ok {
			t.Errorf("%s with a lower-case scheme: %d", name, r.Code)
		}
	}
	// Through the JS proxy the key is checked on the inner request.
	r := e.do(http.MethodPost, "", "/fal/proxy", in("p"), "x-fal-target-url", "https://queue.fal.run/fal-ai/x")
	checkDetail(t, r, 401)
	r = e.do(http.MethodPost, "", "/fal/proxy", in("p"), "x-fal-target-url", "https://queue.fal.run/fal-ai/x", "Authorization", "Key "+key)
	checkSubmit(t, r, "http://example.com")
}

// A queued request survives a server restart on the same database.
func TestQueueSurvivesRestart(t *testing.T) {
	db := t.TempDir() + "/queue.db"
	g := newGated("fal-ai/x")
	g.gate("a")
	e := newEnv(t, func(c *api.Config) { c.QueueDB = db }, g)
	a := e.submit(t, "", "/fal-ai/x", in("a"))
	g.waitStarted(t, "a")
	b := e.submit(t, "", "/fal-ai/x", in("b"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	g2 := newGated("fal-ai/x")
	e2 := newQEnv(t, func(c *api.Config) { c.QueueDB = db }, g2)
	for _, s := range []submitted{a, b} {
		e2.waitDone(t, "", s)
		if r := e2.do(http.MethodGet, "", s.path(""), ""); r.Code != 200 || r.body["request_id"] != s.ID {
			t.Errorf("%s after restart: %d %s", s.ID, r.Code, r.Body.String())
		}
	}
	_, m := e2.status(t, a.path("status")+"?logs=1")
	list := checkLogs(t, m["logs"], "running a")
	warn := 0
	for _, l := range list {
		if l.(map[string]any)["level"] == "WARN" {
			warn++
		}
	}
	if warn != 1 {
		t.Errorf("%d WARN lines for the interrupted request, want 1", warn)
	}
	if got := g2.ran(); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("ran after restart %v", got)
	}
}

// A full queue answers 429 with Retry-After (fal's clients retry it), a
// closed server 503, both runner_scheduling_failure, on submit and sync
// runs alike; fal_max_queue_length refuses a submission that would wait
// behind that many.
func TestQueueFullAndClosed(t *testing.T) {
	g := newGated("fal-ai/x")
	gb := g.gate("blocker")
	e := newQEnv(t, func(c *api.Config) { c.Workers = 1; c.MaxQueued = 1 }, g)
	e.submit(t, "", "/fal-ai/x", in("blocker"))
	g.waitStarted(t, "blocker")
	queued := e.submit(t, "", "/fal-ai/x", in("queued"))
	for _, p := range []string{"/fal-ai/x", "/run/fal-ai/x", "/run/fal-ai/x/stream"} {
		r := e.do(http.MethodPost, "", p, in("refused"))
		checkDetail(t, r, http.StatusTooManyRequests, "full")
		if r.body["error_type"] != "runner_scheduling_failure" {
			t.Errorf("%s: %s", p, r.Body.String())
		}
		if got := r.Header().Get("Retry-After"); got != "5" {
			t.Errorf("%s: Retry-After %q, want 5", p, got)
		}
	}
	close(gb)
	e.waitDone(t, "", queued)
	ctx, cancel := context.WithTimeout(context.Background(), qwait)
	defer cancel()
	if err := e.srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/fal-ai/x", "/run/fal-ai/x"} {
		r := e.do(http.MethodPost, "", p, in("closed"))
		checkDetail(t, r, http.StatusServiceUnavailable, "shutting down")
	}
	// Finished requests can still be read.
	if r := e.do(http.MethodGet, "", queued.path(""), ""); r.Code != 200 {
		t.Errorf("result after close: %d", r.Code)
	}
	if got := g.ran(); !reflect.DeepEqual(got, []string{"blocker", "queued"}) {
		t.Errorf("ran %v", got)
	}
}

// Namespaced apps (workflows/…, comfy/…) keep three segments in their
// status URLs; other ids keep two.
func TestQueueNamespacedApps(t *testing.T) {
	e := newQEnv(t, nil, echoEP("workflows/me/flow"), echoEP("comfy/me/graph/v2"), echoEP("fal-ai/a/b/c"))
	for id, app := range map[string]string{"workflows/me/flow": "workflows/me/flow", "comfy/me/graph/v2": "comfy/me/graph", "fal-ai/a/b/c": "fal-ai/a"} {
		s := e.submit(t, "", "/"+id, `{}`)
		if s.App != app {
			t.Errorf("%s: app %q, want %q", id, s.App, app)
		}
		e.waitDone(t, "", s)
		if r := e.do(http.MethodGet, "", s.path(""), ""); r.Code != 200 || r.body["endpoint"] != id {
			t.Errorf("%s result: %d %s", id, r.Code, r.Body.String())
		}
	}
}
