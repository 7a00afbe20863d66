package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/pipelines"
)

// fakeEP is an endpoint whose Run is a closure.
type fakeEP struct {
	id    string
	calls atomic.Int32
	run   func(ctx context.Context, req *pipelines.Request) (any, error)
}

func (e *fakeEP) ID() string { return e.id }

func (e *fakeEP) Run(ctx context.Context, req *pipelines.Request) (any, error) {
	e.calls.Add(1)
	if e.run == nil {
		return map[string]any{"ok": true}, nil
	}
	return e.run(ctx, req)
}

func ep(id string, run func(ctx context.Context, req *pipelines.Request) (any, error)) *fakeEP {
	return &fakeEP{id: id, run: run}
}

// echoEP answers with its id and the raw input.
func echoEP(id string) *fakeEP {
	return ep(id, func(ctx context.Context, req *pipelines.Request) (any, error) {
		return map[string]any{"endpoint": req.Endpoint, "input": req.Input, "request_id": req.ID}, nil
	})
}

// captureEP keeps the pipelines.Files of the last request it served.
type captureEP struct {
	mu    sync.Mutex
	files pipelines.Files
}

func (c *captureEP) ID() string { return "test/capture" }

func (c *captureEP) Run(ctx context.Context, req *pipelines.Request) (any, error) {
	c.mu.Lock()
	c.files = req.Files
	c.mu.Unlock()
	return map[string]any{}, nil
}

type testEnv struct {
	t       *testing.T
	srv     *api.Server
	h       http.Handler
	store   *files.Store
	dir     string
	capture *captureEP
}

// newEnv builds a server over a fresh store with eps (plus the capture
// endpoint); mod may adjust the config.
func newEnv(t *testing.T, mod func(*api.Config), eps ...pipelines.Endpoint) *testEnv {
	t.Helper()
	dir := t.TempDir()
	store, err := files.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	capture := &captureEP{}
	eps = append(eps, capture)
	cfg := api.Config{
		Registry: pipelines.NewRegistry(eps...),
		Files:    store,
		Logger:   slog.New(slog.DiscardHandler),
		// No test may reach the network through the default client.
		HTTPClient: &http.Client{Transport: refuseTransport{t}},
	}
	if mod != nil {
		mod(&cfg)
	}
	srv := api.New(cfg)
	return &testEnv{t: t, srv: srv, h: srv.Handler(), store: store, dir: dir, capture: capture}
}

// refuseTransport fails the test if anything tries to use it.
type refuseTransport struct{ t *testing.T }

func (r refuseTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.t.Errorf("unexpected outbound request to %s", req.URL.Redacted())
	return nil, io.ErrUnexpectedEOF
}

type resp struct {
	*httptest.ResponseRecorder
	body map[string]any
}

// do serves one request in process. host may be "" (example.com default).
func (e *testEnv) do(method, host, target string, body string, hdr ...string) *resp {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, r)
	if host != "" {
		req.Host = host
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.serve(req)
}

func (e *testEnv) serve(req *http.Request) *resp {
	e.t.Helper()
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	out := &resp{ResponseRecorder: w}
	if strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") && w.Body.Len() > 0 {
		if err := json.Unmarshal(w.Body.Bytes(), &out.body); err != nil {
			e.t.Fatalf("%s %s: body is not a JSON object: %v: %s", req.Method, req.URL, err, w.Body.String())
		}
	}
	return out
}

// filesFor returns the pipelines.Files a request on host would get.
func (e *testEnv) filesFor(host string) pipelines.Files {
	e.t.Helper()
	r := e.do(http.MethodPost, host, "/run/test/capture", "{}")
	if r.Code != http.StatusOK {
		e.t.Fatalf("capture run on %q: %d %s", host, r.Code, r.Body.String())
	}
	e.capture.mu.Lock()
	defer e.capture.mu.Unlock()
	return e.capture.files
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// checkFalHeaders asserts what every response must carry.
func checkFalHeaders(t *testing.T, r *resp) {
	t.Helper()
	if id := r.Header().Get("x-fal-request-id"); !uuidRE.MatchString(id) {
		t.Errorf("x-fal-request-id = %q, want a UUID", id)
	}
}

// checkDetail asserts a flat fal error body {"detail": "<msg>"}.
func checkDetail(t *testing.T, r *resp, status int, contains ...string) string {
	t.Helper()
	checkFalHeaders(t, r)
	if r.Code != status {
		t.Fatalf("status = %d, want %d; body %s", r.Code, status, r.Body.String())
	}
	if ct := r.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	d, ok := r.body["detail"].(string)
	if !ok {
		t.Fatalf("detail is %T, want string; body %s", r.body["detail"], r.Body.String())
	}
	for _, c := range contains {
		if !strings.Contains(d, c) {
			t.Errorf("detail %q does not contain %q", d, c)
		}
	}
	return d
}
