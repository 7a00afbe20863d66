package api_test

import (
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

func TestRunSync(t *testing.T) {
	var got *pipelines.Request
	e := newEnv(t, nil, ep("fal-ai/x", func(ctx context.Context, req *pipelines.Request) (any, error) {
		got = req
		var in map[string]any
		if err := json.Unmarshal(req.Input, &in); err != nil {
			return nil, err
		}
		return map[string]any{"echo": in["prompt"], "n": 3}, nil
	}))
	r := e.do(http.MethodPost, "", "/run/fal-ai/x", `{"prompt":"hi"}`)
	checkFalHeaders(t, r)
	if r.Code != http.StatusOK {
		t.Fatalf("status %d: %s", r.Code, r.Body.String())
	}
	if ct := r.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	want := map[string]any{"echo": "hi", "n": float64(3)}
	if !reflect.DeepEqual(r.body, want) {
		t.Errorf("body = %v, want %v", r.body, want)
	}
	if got == nil {
		t.Fatal("endpoint not called")
	}
	if got.Endpoint != "fal-ai/x" {
		t.Errorf("req.Endpoint = %q", got.Endpoint)
	}
	if got.ID != r.Header().Get("x-fal-request-id") {
		t.Errorf("req.ID %q differs from header %q", got.ID, r.Header().Get("x-fal-request-id"))
	}
	if string(got.Input) != `{"prompt":"hi"}` {
		t.Errorf("req.Input = %s", got.Input)
	}
	if got.Files == nil || got.Log == nil {
		t.Error("req.Files and req.Log must be set")
	}
	got.Logf(pipelines.Info, "progress %d", 1) // must not panic
}

func TestRunEndpointIDs(t *testing.T) {
	e := newEnv(t, nil, echoEP("fal-ai/x"), echoEP("fal-ai/birefnet/v2"), echoEP("fal-ai/imageutils/rembg"))
	for _, tc := range []struct{ path, id string }{
		{"/run/fal-ai/x", "fal-ai/x"},
		{"/run/fal-ai/x/", "fal-ai/x"},
		{"/run/fal-ai/birefnet/v2", "fal-ai/birefnet/v2"},
		{"/run/fal-ai/imageutils/rembg", "fal-ai/imageutils/rembg"},
		{"/run/fal-ai/imageutils/rembg?fal_webhook=x", "fal-ai/imageutils/rembg"},
	} {
		r := e.do(http.MethodPost, "", tc.path, `{}`)
		if r.Code != 200 || r.body["endpoint"] != tc.id {
			t.Errorf("%s: %d %s, want endpoint %s", tc.path, r.Code, r.Body.String(), tc.id)
		}
	}
}

func TestRequestIDsUnique(t *testing.T) {
	e := newEnv(t, nil, echoEP("fal-ai/x"))
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		r := e.do(http.MethodPost, "", "/run/fal-ai/x", `{}`)
		id := r.Header().Get("x-fal-request-id")
		if !uuidRE.MatchString(id) || seen[id] {
			t.Fatalf("request id %q not a fresh UUID", id)
		}
		if r.body["request_id"] != id {
			t.Fatalf("endpoint saw id %v, header %s", r.body["request_id"], id)
		}
		seen[id] = true
	}
}

func TestErrors(t *testing.T) {
	secret := "db password hunter2 at /var/lib/secret"
	eps := []pipelines.Endpoint{
		ep("t/invalid", func(context.Context, *pipelines.Request) (any, error) {
			return nil, pipelines.Invalid("image_url", "bad url")
		}),
		ep("t/invalid-multi", func(context.Context, *pipelines.Request) (any, error) {
			v := &pipelines.ValidationError{}
			v.Add("image_url", "missing", "Field required")
			v.Add("options.mode", "literal_error", "Input should be 'a' or 'b'")
			return nil, fmt.Errorf("wrapped: %w", v.Err())
		}),
		ep("t/decode", func(ctx context.Context, req *pipelines.Request) (any, error) {
			var in struct {
				N *int `json:"n"`
			}
			return nil, pipelines.DecodeInput(req.Input, &in)
		}),
		ep("t/http400", func(context.Context, *pipelines.Request) (any, error) {
			return nil, pipelines.Errorf(400, "bad thing %d", 7)
		}),
		ep("t/http503", func(context.Context, *pipelines.Request) (any, error) {
			return nil, pipelines.Unavailable("model not loaded", errors.New(secret))
		}),
		ep("t/http-wrapped", func(context.Context, *pipelines.Request) (any, error) {
			return nil, fmt.Errorf("ctx: %w", &pipelines.HTTPError{Status: 413, Type: "file_too_large", Msg: "too big"})
		}),
		ep("t/plain", func(context.Context, *pipelines.Request) (any, error) {
			return nil, errors.New(secret)
		}),
		ep("t/panic", func(context.Context, *pipelines.Request) (any, error) {
			panic(secret)
		}),
		ep("t/panic-nil-map", func(context.Context, *pipelines.Request) (any, error) {
			var m map[string]int
			m["x"] = 1
			return nil, nil
		}),
		ep("t/http-nostatus", func(context.Context, *pipelines.Request) (any, error) {
			return nil, &pipelines.HTTPError{Msg: "forgot the status: " + secret}
		}),
		ep("t/http-2xx", func(context.Context, *pipelines.Request) (any, error) {
			return nil, &pipelines.HTTPError{Status: 204, Msg: secret}
		}),
		ep("t/unmarshalable", func(context.Context, *pipelines.Request) (any, error) {
			return map[string]any{"f": func() {}}, nil
		}),
	}
	e := newEnv(t, nil, eps...)

	type check func(t *testing.T, r *resp)
	flat := func(status int, detail, errType string) check {
		return func(t *testing.T, r *resp) {
			d := checkDetail(t, r, status)
			if d != detail {
				t.Errorf("detail = %q, want %q", d, detail)
			}
			if strings.Contains(r.Body.String(), "hunter2") {
				t.Errorf("body leaks the Go error: %s", r.Body.String())
			}
			et, has := r.body["error_type"]
			if errType == "" {
				if has {
					t.Errorf("unexpected error_type %v", et)
				}
				if h := r.Header().Get("X-Fal-Error-Type"); h != "" {
					t.Errorf("unexpected X-Fal-Error-Type %q", h)
				}
				return
			}
			if et != errType {
				t.Errorf("error_type = %v, want %s", et, errType)
			}
			if h := r.Header().Get("X-Fal-Error-Type"); h != errType {
				t.Errorf("X-Fal-Error-Type = %q, want %s", h, errType)
			}
		}
	}
	unprocessable := func(want ...pipelines.FieldError) check {
		return func(t *testing.T, r *resp) {
			checkFalHeaders(t, r)
			if r.Code != 422 {
				t.Fatalf("status %d, want 422: %s", r.Code, r.Body.String())
			}
			var body struct {
				Detail []pipelines.FieldError `json:"detail"`
			}
			if err := json.Unmarshal(r.Body.Bytes(), &body); err != nil {
				t.Fatalf("422 body %s: %v", r.Body.String(), err)
			}
			if len(body.Detail) != len(want) {
				t.Fatalf("detail = %+v, want %+v", body.Detail, want)
			}
			for i := range want {
				if !reflect.DeepEqual(body.Detail[i], want[i]) {
					t.Errorf("detail[%d] = %+v, want %+v", i, body.Detail[i], want[i])
				}
			}
			if r.Header().Get("X-Fal-Error-Type") != "" {
				t.Error("422 must not carry X-Fal-Error-Type")
			}
		}
	}
	for _, tc := range []struct {
		name, path, body string
		check            check
	}{
		{"validation", "/run/t/invalid", `{}`,
			unprocessable(pipelines.FieldError{Loc: []any{"body", "image_url"}, Msg: "bad url", Type: "value_error"})},
		{"validation wrapped", "/run/t/invalid-multi", `{}`, unprocessable(
			pipelines.FieldError{Loc: []any{"body", "image_url"}, Msg: "Field required", Type: "missing"},
			pipelines.FieldError{Loc: []any{"body", "options", "mode"}, Msg: "Input should be 'a' or 'b'", Type: "literal_error"})},
		{"decode type", "/run/t/decode", `{"n":"x"}`,
			unprocessable(pipelines.FieldError{Loc: []any{"body", "n"}, Msg: "Input should be a valid integer", Type: "int_type"})},
		{"decode not json", "/run/t/decode", `not json`,
			unprocessable(pipelines.FieldError{Loc: []any{"body"}, Msg: "JSON decode error", Type: "json_invalid"})},
		{"decode empty", "/run/t/decode", ``,
			unprocessable(pipelines.FieldError{Loc: []any{"body"}, Msg: "JSON decode error", Type: "json_invalid"})},
		{"http 400", "/run/t/http400", `{}`, flat(400, "bad thing 7", "")},
		{"http 503 typed", "/run/t/http503", `{}`, flat(503, "model not loaded", "runner_scheduling_failure")},
		{"http wrapped typed", "/run/t/http-wrapped", `{}`, flat(413, "too big", "file_too_large")},
		{"plain error", "/run/t/plain", `{}`, flat(500, "Internal Server Error", "")},
		{"panic", "/run/t/panic", `{}`, flat(500, "Internal Server Error", "")},
		{"runtime panic", "/run/t/panic-nil-map", `{}`, flat(500, "Internal Server Error", "")},
		{"http error without status", "/run/t/http-nostatus", `{}`, flat(500, "Internal Server Error", "")},
		{"http error with 2xx status", "/run/t/http-2xx", `{}`, flat(500, "Internal Server Error", "")},
		{"unmarshalable output", "/run/t/unmarshalable", `{}`, flat(500, "Internal Server Error", "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, e.do(http.MethodPost, "", tc.path, tc.body))
		})
	}
}

func TestNotFound(t *testing.T) {
	x := echoEP("fal-ai/x")
	e := newEnv(t, nil, x, echoEP("fal-ai/birefnet"))
	for _, tc := range []struct{ method, path, detail string }{
		{"GET", "/x", "Path /x not found"},
		{"GET", "/fal-ai/x", "Path /fal-ai/x not found"},
		{"PUT", "/fal-ai/x", "Path /fal-ai/x not found"},
		{"GET", "/cdn/files", "Path /cdn/files not found"},
		{"DELETE", "/nope/deeper", "Path /nope/deeper not found"},
		{"GET", "/fal-ai/x/requests/0c6d1a3e-0000-4000-8000-000000000000/status", "Request not found"},
		{"GET", "/fal-ai/x/requests/0c6d1a3e-0000-4000-8000-000000000000", "Request not found"},
	} {
		r := e.do(tc.method, "", tc.path, "")
		if d := checkDetail(t, r, 404); d != tc.detail {
			t.Errorf("%s %s: detail %q, want %q", tc.method, tc.path, d, tc.detail)
		}
	}
	// A POST at the root is a queue submit (queue.fal.run's shape): ids
	// that are not served get fal's 404 with the reason.
	for _, id := range []string{"x", "fal-ai/nope", "fal-ai/x-y", "nope/deeper"} {
		r := e.do(http.MethodPost, "", "/"+id, "{}")
		checkDetail(t, r, 404, "Endpoint '"+id+"' is not served", "fal-ai/birefnet", "fal-ai/x")
	}
	// A served one is queued.
	s := e.submit(t, "", "/fal-ai/x", "{}")
	if s.App != "fal-ai/x" {
		t.Errorf("app %q", s.App)
	}
	e.waitDone(t, "", s)
	if x.calls.Load() != 1 {
		t.Errorf("fal-ai/x ran %d times, want 1", x.calls.Load())
	}
	// HEAD errors carry the status and headers, no body.
	r := e.do(http.MethodHead, "", "/x", "")
	checkFalHeaders(t, r)
	if r.Code != 404 || r.Body.Len() != 0 {
		t.Errorf("HEAD /x: %d %q", r.Code, r.Body.String())
	}
}

func TestUnknownAndProprietaryEndpoints(t *testing.T) {
	x := echoEP("fal-ai/x")
	e := newEnv(t, nil, x, echoEP("fal-ai/birefnet"))
	for _, id := range []string{"fal-ai/nope", "fal-ai/flux/dev", "fal-ai/x/extra", "fal-ai/xy", "someone/else", "fal-ai"} {
		r := e.do(http.MethodPost, "", "/run/"+id, `{}`)
		d := checkDetail(t, r, 404, "'"+id+"'", "fal-ai/birefnet", "fal-ai/x")
		if strings.Contains(d, "proprietary") {
			t.Errorf("%s: open/unknown id called proprietary: %q", id, d)
		}
	}
	for _, id := range []string{
		"fal-ai/kling-video/v1/standard/text-to-video",
		"fal-ai/kling-video/v2.1/master/image-to-video",
		"fal-ai/sora-2/text-to-video",
		"fal-ai/sora-2/image-to-video/pro",
		"fal-ai/flux-pro/v1.1-ultra",
		"fal-ai/flux-pro",
		"fal-ai/veo3",
		"fal-ai/elevenlabs/tts/eleven-v3",
		"fal-ai/nano-banana/edit",
		"fal-ai/minimax/hailuo-02/standard/text-to-video",
		"fal-ai/imagen4/preview",
		"fal-ai/gpt-image-1/text-to-image",
	} {
		r := e.do(http.MethodPost, "", "/run/"+id, `{}`)
		d := checkDetail(t, r, 404, id, "proprietary", "cannot run")
		if strings.Contains(d, "fal-ai/birefnet") {
			t.Errorf("%s: proprietary detail should not list served ids: %q", id, d)
		}
	}
	if n := x.calls.Load(); n != 0 {
		t.Errorf("fal-ai/x ran %d times for other ids", n)
	}
}

func TestBodyLimit(t *testing.T) {
	x := echoEP("fal-ai/x")
	e := newEnv(t, func(c *api.Config) { c.MaxBodyBytes = 1024 }, x)
	pad := func(n int) string { return `{"p":"` + strings.Repeat("a", n-8) + `"}` }
	if r := e.do(http.MethodPost, "", "/run/fal-ai/x", pad(1024)); r.Code != 200 {
		t.Fatalf("body at the limit: %d %s", r.Code, r.Body.String())
	}
	if x.calls.Load() != 1 {
		t.Fatal("endpoint not called at the limit")
	}
	for _, n := range []int{1025, 4096, 1 << 20} {
		r := e.do(http.MethodPost, "", "/run/fal-ai/x", pad(n))
		checkDetail(t, r, http.StatusRequestEntityTooLarge)
	}
	// Chunked (no Content-Length) bodies are limited too.
	req := httptest.NewRequest(http.MethodPost, "/run/fal-ai/x", io.MultiReader(strings.NewReader(pad(4096))))
	req.ContentLength = -1
	checkDetail(t, e.serve(req), http.StatusRequestEntityTooLarge)
	if n := x.calls.Load(); n != 1 {
		t.Errorf("endpoint ran %d times; oversized bodies must not reach it", n)
	}
}

func TestTimeout(t *testing.T) {
	blocked := func(ctx context.Context, req *pipelines.Request) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	wrapped := func(ctx context.Context, req *pipelines.Request) (any, error) {
		<-ctx.Done()
		return nil, fmt.Errorf("inference step 3: %w", ctx.Err())
	}
	fast := func(ctx context.Context, req *pipelines.Request) (any, error) {
		if _, ok := ctx.Deadline(); !ok {
			return nil, errors.New("no deadline on the run context")
		}
		return map[string]any{"ok": true}, nil
	}
	e := newEnv(t, func(c *api.Config) { c.RequestTimeout = 30 * time.Millisecond },
		ep("t/block", blocked), ep("t/wrapped", wrapped), ep("t/fast", fast))
	for _, id := range []string{"t/block", "t/wrapped"} {
		start := time.Now()
		r := e.do(http.MethodPost, "", "/run/"+id, `{}`)
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("%s: timeout took %v", id, el)
		}
		checkDetail(t, r, http.StatusGatewayTimeout)
		if r.body["error_type"] != "request_timeout" || r.Header().Get("X-Fal-Error-Type") != "request_timeout" {
			t.Errorf("%s: error_type %v / header %q", id, r.body["error_type"], r.Header().Get("X-Fal-Error-Type"))
		}
		if h := r.Header().Get("X-Fal-Request-Timeout-Type"); h != "user" {
			t.Errorf("%s: X-Fal-Request-Timeout-Type = %q, want user", id, h)
		}
	}
	if r := e.do(http.MethodPost, "", "/run/t/fast", `{}`); r.Code != 200 {
		t.Errorf("fast run: %d %s", r.Code, r.Body.String())
	}

	// Without a timeout the run context has no deadline.
	e2 := newEnv(t, nil, ep("t/nodeadline", func(ctx context.Context, req *pipelines.Request) (any, error) {
		if _, ok := ctx.Deadline(); ok {
			return nil, errors.New("unexpected deadline")
		}
		return map[string]any{}, nil
	}))
	if r := e2.do(http.MethodPost, "", "/run/t/nodeadline", `{}`); r.Code != 200 {
		t.Errorf("no timeout: %d %s", r.Code, r.Body.String())
	}
}

func TestClientCancel(t *testing.T) {
	started := make(chan struct{})
	e := newEnv(t, nil, ep("t/block", func(ctx context.Context, req *pipelines.Request) (any, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequest(http.MethodPost, "/run/t/block", strings.NewReader(`{}`)).WithContext(ctx)
	go func() { <-started; cancel() }()
	r := e.serve(req)
	checkDetail(t, r, 499)
	if r.body["error_type"] != "client_cancelled" {
		t.Errorf("error_type %v", r.body["error_type"])
	}
	if r.Header().Get("X-Fal-Request-Timeout-Type") != "" {
		t.Error("a client cancel is not a timeout")
	}
}

// Over a real connection: a panicking endpoint answers 500 and the server
// keeps serving, on the same connection and on new ones.
func TestPanicKeepsServing(t *testing.T) {
	e := newEnv(t, nil, echoEP("fal-ai/x"), ep("t/panic", func(context.Context, *pipelines.Request) (any, error) {
		panic("boom")
	}))
	ts := httptest.NewServer(e.h)
	defer ts.Close()
	post := func(path string) (int, string) {
		res, err := ts.Client().Post(ts.URL+path, "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if !uuidRE.MatchString(res.Header.Get("x-fal-request-id")) {
			t.Errorf("POST %s: no request id", path)
		}
		return res.StatusCode, string(b)
	}
	for i := 0; i < 3; i++ {
		if code, body := post("/run/t/panic"); code != 500 || strings.TrimSpace(body) != `{"detail":"Internal Server Error"}` {
			t.Fatalf("panic: %d %s", code, body)
		}
		if code, body := post("/run/fal-ai/x"); code != 200 {
			t.Fatalf("after panic: %d %s", code, body)
		}
	}
}

func TestMethodNotAllowedHasRequestID(t *testing.T) {
	e := newEnv(t, nil, echoEP("fal-ai/x"))
	for _, tc := range []struct{ method, path string }{
		{"GET", "/run/fal-ai/x"},
		{"PUT", "/run/fal-ai/x"},
		{"POST", "/healthz"},
		{"POST", "/cdn/files/0123456789abcdef0123456789abcdef/a.png"},
	} {
		r := e.do(tc.method, "", tc.path, "")
		checkFalHeaders(t, r)
		if r.Code < 400 || r.Code >= 500 {
			t.Errorf("%s %s: %d", tc.method, tc.path, r.Code)
		}
		if _, ok := r.body["detail"].(string); !ok {
			t.Errorf("%s %s: body %s", tc.method, tc.path, r.Body.String())
		}
	}
}

func TestHealthz(t *testing.T) {
	e := newEnv(t, func(c *api.Config) {
		c.Health = func() map[string]any { return map[string]any{"version": "v9", "status": "overridden?"} }
	}, echoEP("fal-ai/b"), echoEP("fal-ai/a"))
	r := e.do(http.MethodGet, "", "/healthz", "")
	checkFalHeaders(t, r)
	if r.Code != 200 {
		t.Fatalf("healthz %d", r.Code)
	}
	eps, _ := r.body["endpoints"].([]any)
	want := []any{"fal-ai/a", "fal-ai/b", "test/capture"}
	if !reflect.DeepEqual(eps, want) {
		t.Errorf("endpoints = %v, want %v", eps, want)
	}
	if r.body["version"] != "v9" {
		t.Errorf("health extras missing: %v", r.body)
	}
}

func TestHostRouting(t *testing.T) {
	x := echoEP("fal-ai/x")
	e := newEnv(t, nil, x, echoEP("fal-ai/x/sub"))
	type want struct {
		status   int
		endpoint string // endpoint expected to run, when status is 200
		queued   bool   // a queue submit (a POST at the root)
	}
	for _, tc := range []struct {
		host, method, path string
		want               want
	}{
		{"fal.run", "POST", "/fal-ai/x", want{200, "fal-ai/x", false}},
		{"fal.run:443", "POST", "/fal-ai/x", want{200, "fal-ai/x", false}},
		{"FAL.RUN", "POST", "/fal-ai/x/sub", want{200, "fal-ai/x/sub", false}},
		{"fal.run:8443", "POST", "/fal-ai/x/sub?x=1", want{200, "fal-ai/x/sub", false}},
		{"gateway.fal.run", "POST", "/fal-ai/x", want{200, "fal-ai/x", false}},
		{"a.b.fal.run:443", "POST", "/fal-ai/x", want{200, "fal-ai/x", false}},
		{"fal.run", "POST", "/run/fal-ai/x", want{200, "fal-ai/x", false}},
		{"fal.run", "POST", "/fal-ai/unknown", want{404, "", false}},
		{"fal.run", "GET", "/healthz", want{405, "", false}}, // it is /run/healthz
		// queue.fal.run is the root: a POST there is a queue submit.
		{"queue.fal.run", "POST", "/fal-ai/x", want{200, "fal-ai/x", true}},
		{"queue.fal.run:443", "POST", "/fal-ai/x/sub", want{200, "fal-ai/x/sub", true}},
		{"queue.fal.run", "POST", "/fal-ai/unknown", want{404, "", false}},
		{"queue.fal.run", "GET", "/healthz", want{200, "", false}},
		{"queue.fal.run", "POST", "/run/fal-ai/x", want{200, "fal-ai/x", false}},
		// rest.fal.ai lives under /rest.
		{"rest.fal.ai", "GET", "/healthz", want{404, "", false}},
		{"rest.fal.ai:443", "POST", "/fal-ai/x", want{404, "", false}},
		{"rest.alpha.fal.ai", "GET", "/healthz", want{404, "", false}},
		// Not fal's names: no rewriting, so a POST is a queue submit at
		// the root, as on any host.
		{"notfal.run", "POST", "/fal-ai/x", want{200, "fal-ai/x", true}},
		{"fal.run.example.com", "POST", "/fal-ai/x", want{200, "fal-ai/x", true}},
		{"fal.running", "POST", "/fal-ai/x", want{200, "fal-ai/x", true}},
		{"example.com", "POST", "/fal-ai/x", want{200, "fal-ai/x", true}},
		{"127.0.0.1:8080", "POST", "/fal-ai/x", want{200, "fal-ai/x", true}},
		{"127.0.0.1:8080", "POST", "/fal-ai/unknown", want{404, "", false}},
		{"127.0.0.1:8080", "GET", "/healthz", want{200, "", false}},
		{"v3.fal.media", "GET", "/healthz", want{404, "", false}},
	} {
		t.Run(tc.host+tc.path, func(t *testing.T) {
			before := x.calls.Load()
			r := e.do(tc.method, tc.host, tc.path, `{}`)
			checkFalHeaders(t, r)
			if r.Code != tc.want.status {
				t.Fatalf("%s %s%s: %d, want %d: %s", tc.method, tc.host, tc.path, r.Code, tc.want.status, r.Body.String())
			}
			if tc.want.queued {
				// The submit reply, with URLs on the name the client used;
				// the result (fetched on that host) is the endpoint's.
				s := checkSubmit(t, r, originFor(tc.host))
				if s.App != "fal-ai/x" {
					t.Errorf("app %q, want fal-ai/x", s.App)
				}
				e.waitDone(t, tc.host, s)
				r = e.do(http.MethodGet, tc.host, s.path(""), "")
				if r.Code != 200 {
					t.Fatalf("result: %d %s", r.Code, r.Body.String())
				}
			} else if r.body["status"] == "IN_QUEUE" {
				t.Fatalf("queued, want a sync answer: %s", r.Body.String())
			}
			if tc.want.endpoint != "" && r.body["endpoint"] != tc.want.endpoint {
				t.Errorf("ran %v, want %s", r.body["endpoint"], tc.want.endpoint)
			}
			if tc.want.endpoint != "fal-ai/x" && x.calls.Load() != before {
				t.Error("fal-ai/x ran but should not have")
			}
		})
	}
}

func TestCORS(t *testing.T) {
	x := echoEP("fal-ai/x")
	e := newEnv(t, nil, x)
	const origin = "https://app.example.org"
	exposes := func(t *testing.T, r *resp) {
		t.Helper()
		var names []string
		for _, v := range r.Header().Values("Access-Control-Expose-Headers") {
			for _, n := range strings.Split(v, ",") {
				names = append(names, strings.ToLower(strings.TrimSpace(n)))
			}
		}
		if !strings.Contains(","+strings.Join(names, ",")+",", ",x-fal-request-id,") {
			t.Errorf("Access-Control-Expose-Headers %v lacks x-fal-request-id", names)
		}
	}
	for _, host := range []string{"", "fal.run"} {
		path := "/run/fal-ai/x"
		if host == "fal.run" {
			path = "/fal-ai/x"
		}
		r := e.do(http.MethodOptions, host, path, "",
			"Origin", origin, "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization,content-type")
		checkFalHeaders(t, r)
		if r.Code != http.StatusNoContent && r.Code != http.StatusOK {
			t.Fatalf("preflight %q: %d", host, r.Code)
		}
		if got := r.Header().Get("Access-Control-Allow-Origin"); got != origin {
			t.Errorf("preflight Allow-Origin = %q, want %q", got, origin)
		}
		if r.Header().Get("Access-Control-Allow-Credentials") != "true" {
			t.Error("preflight lacks Allow-Credentials: true")
		}
		if m := r.Header().Get("Access-Control-Allow-Methods"); !strings.Contains(m, "POST") {
			t.Errorf("Allow-Methods = %q", m)
		}
		if h := strings.ToLower(r.Header().Get("Access-Control-Allow-Headers")); !strings.Contains(h, "authorization") {
			t.Errorf("Allow-Headers = %q", h)
		}
		exposes(t, r)
	}
	if x.calls.Load() != 0 {
		t.Fatal("a preflight ran the endpoint")
	}
	// The actual request, success and error alike.
	for _, path := range []string{"/run/fal-ai/x", "/run/fal-ai/nope"} {
		r := e.do(http.MethodPost, "", path, `{}`, "Origin", origin)
		if got := r.Header().Get("Access-Control-Allow-Origin"); got != origin {
			t.Errorf("%s: Allow-Origin = %q", path, got)
		}
		if r.Header().Get("Access-Control-Allow-Credentials") != "true" {
			t.Errorf("%s: no Allow-Credentials", path)
		}
		exposes(t, r)
	}
}

// Many concurrent runs that save and read files (meaningful under -race).
func TestConcurrentRuns(t *testing.T) {
	e := newEnv(t, nil, ep("t/roundtrip", func(ctx context.Context, req *pipelines.Request) (any, error) {
		data := []byte("payload-" + req.ID)
		u, err := req.Files.Save(ctx, data, "text/plain", "p.txt")
		if err != nil {
			return nil, err
		}
		b, err := req.Files.Open(ctx, u, 1<<20)
		if err != nil {
			return nil, err
		}
		if string(b.Data) != string(data) {
			return nil, fmt.Errorf("read back %q", b.Data)
		}
		return map[string]any{"url": u}, nil
	}))
	var wg sync.WaitGroup
	errs := make(chan string, 32)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := httptest.NewRecorder()
			e.h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/run/t/roundtrip", strings.NewReader(`{}`)))
			if w.Code != 200 {
				errs <- w.Body.String()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Error(s)
	}
}
