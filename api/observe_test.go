package api_test

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/internal/metrics"
	"github.com/falocal/falocal/pipelines"
)

// fal_max_queue_length refuses a submission that would wait behind that
// many requests, with a 429 and Retry-After.
func TestMaxQueueLength(t *testing.T) {
	g := newGated("fal-ai/x")
	gb := g.gate("blocker")
	e := newQEnv(t, func(c *api.Config) { c.Workers = 1; c.RetryAfter = 3 * time.Second }, g)
	e.submit(t, "", "/fal-ai/x", in("blocker"))
	g.waitStarted(t, "blocker")
	e.submit(t, "", "/fal-ai/x", in("one"))
	cases := []struct {
		q      string
		status int
	}{
		{"?fal_max_queue_length=1", http.StatusTooManyRequests},
		{"?fal_max_queue_length=2", http.StatusOK},
		{"?fal_max_queue_length=0", http.StatusUnprocessableEntity},
		{"", http.StatusOK},
	}
	for _, tc := range cases {
		r := e.do(http.MethodPost, "", "/fal-ai/x"+tc.q, in("x"))
		if r.Code != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.q, r.Code, r.Body.String(), tc.status)
		}
		if tc.status == http.StatusTooManyRequests {
			checkDetail(t, r, http.StatusTooManyRequests, "queue is full")
			if r.Header().Get("Retry-After") != "3" {
				t.Errorf("Retry-After %q", r.Header().Get("Retry-After"))
			}
		}
	}
	close(gb)
}

func TestReadyz(t *testing.T) {
	e := newQEnv(t, func(c *api.Config) { c.Preloading = true })
	get := func() (int, string) {
		r := e.do(http.MethodGet, "", "/readyz", "")
		return r.Code, r.Body.String()
	}
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "starting") {
		t.Errorf("before preload: %d %s", code, body)
	}
	if r := e.do(http.MethodGet, "", "/healthz", ""); r.Code != http.StatusOK {
		t.Errorf("healthz while preloading: %d", r.Code)
	}
	e.srv.SetReady(true)
	if code, body := get(); code != http.StatusOK || !strings.Contains(body, "ready") {
		t.Errorf("after preload: %d %s", code, body)
	}
	e.srv.Drain()
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Errorf("draining: %d %s", code, body)
	}
	// Without preloads the server is ready at once.
	e2 := newQEnv(t, nil)
	if r := e2.do(http.MethodGet, "", "/readyz", ""); r.Code != http.StatusOK {
		t.Errorf("no preload: %d", r.Code)
	}
}

func TestMetrics(t *testing.T) {
	g := newGated("fal-ai/metrics-test")
	gb := g.gate("blocker")
	g.fail = func(name string) error {
		if name == "bad" {
			return errBadInput
		}
		return nil
	}
	e := newQEnv(t, func(c *api.Config) { c.Workers = 1; c.MaxQueued = 1 }, g)
	blocker := e.submit(t, "", "/fal-ai/metrics-test", in("blocker"))
	g.waitStarted(t, "blocker")
	bad := e.submit(t, "", "/fal-ai/metrics-test", in("bad"))
	if r := e.do(http.MethodPost, "", "/fal-ai/metrics-test", in("refused")); r.Code != http.StatusTooManyRequests {
		t.Fatalf("refused: %d", r.Code)
	}
	m := e.do(http.MethodGet, "", "/metrics", "")
	if m.Code != 200 || !strings.Contains(m.Body.String(), "falocal_queue_depth 1\n") {
		t.Errorf("queue depth with one waiting:\n%s", grep(m.Body.String(), "falocal_queue"))
	}
	close(gb)
	e.waitDone(t, "", blocker)
	e.waitDone(t, "", bad)
	body := e.do(http.MethodGet, "", "/metrics", "").Body.String()
	for _, want := range []string{
		`falocal_requests_total{endpoint="fal-ai/metrics-test",outcome="ok"} 1`,
		`falocal_requests_total{endpoint="fal-ai/metrics-test",outcome="client_error"} 1`,
		`falocal_requests_rejected_total{endpoint="fal-ai/metrics-test",reason="queue_full"} 1`,
		`falocal_queue_wait_seconds_count{endpoint="fal-ai/metrics-test"} 2`,
		`falocal_compute_seconds_count{endpoint="fal-ai/metrics-test"} 2`,
		"falocal_queue_depth 0\n",
		"falocal_queue_capacity",
		"falocal_ready 1\n",
		"falocal_models_loaded",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, grep(body, "falocal_"))
		}
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Drain with requests in flight: new work is refused, running requests
// (queued and sync) finish and answer normally, the waiting one stays on
// disk and runs after the next start.
func TestDrainInFlight(t *testing.T) {
	db := t.TempDir() + "/queue.db"
	g := newGated("fal-ai/x")
	ga, gs := g.gate("a"), g.gate("sync")
	e := newEnv(t, func(c *api.Config) { c.QueueDB = db; c.Workers = 2 }, g)
	a := e.submit(t, "", "/fal-ai/x", in("a"))
	g.waitStarted(t, "a")
	syncDone := make(chan *resp, 1)
	go func() { syncDone <- e.do(http.MethodPost, "", "/run/fal-ai/x", in("sync")) }()
	g.waitStarted(t, "sync")
	waiting := e.submit(t, "", "/fal-ai/x", in("waiting"))

	e.srv.Drain()
	if r := e.do(http.MethodPost, "", "/fal-ai/x", in("late")); r.Code != http.StatusServiceUnavailable {
		t.Errorf("submit while draining: %d", r.Code)
	}
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), qwait)
		defer cancel()
		closed <- e.srv.Close(ctx)
	}()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with requests in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(ga)
	close(gs)
	if err := <-closed; err != nil {
		t.Fatalf("close: %v", err)
	}
	if r := <-syncDone; r.Code != http.StatusOK || r.body["name"] != "sync" {
		t.Errorf("in-flight sync run: %d %s", r.Code, r.Body.String())
	}
	if r := e.do(http.MethodGet, "", a.path(""), ""); r.Code != http.StatusOK || r.body["name"] != "a" {
		t.Errorf("in-flight queued run: %d %s", r.Code, r.Body.String())
	}
	if got := g.ran(); !reflect.DeepEqual(got, []string{"a", "sync"}) {
		t.Errorf("ran %v before shutdown; the waiting request must not start", got)
	}
	g2 := newGated("fal-ai/x")
	e2 := newQEnv(t, func(c *api.Config) { c.QueueDB = db }, g2)
	e2.waitDone(t, "", waiting)
	if r := e2.do(http.MethodGet, "", waiting.path(""), ""); r.Code != http.StatusOK || r.body["name"] != "waiting" {
		t.Errorf("waiting request after restart: %d %s", r.Code, r.Body.String())
	}
}

var errBadInput = pipelines.Invalid("name", "bad name")

// With keys, /metrics needs one (Prometheus: authorization type Key);
// /readyz and /healthz stay open for probes.
func TestMetricsAuth(t *testing.T) {
	e := newQEnv(t, func(c *api.Config) { c.Keys = []string{"id:secret"} })
	cases := []struct {
		path, auth string
		status     int
	}{
		{"/metrics", "", http.StatusUnauthorized},
		{"/metrics", "Key id:wrong", http.StatusForbidden},
		{"/metrics", "Key id:secret", http.StatusOK},
		{"/readyz", "", http.StatusOK},
		{"/healthz", "", http.StatusOK},
	}
	for _, tc := range cases {
		var hdr []string
		if tc.auth != "" {
			hdr = []string{"Authorization", tc.auth}
		}
		if r := e.do(http.MethodGet, "", tc.path, "", hdr...); r.Code != tc.status {
			t.Errorf("%s with %q: %d, want %d", tc.path, tc.auth, r.Code, tc.status)
		}
	}
}

// Two servers in one process keep their own series: requests, readiness
// and queue capacity of one never show on the other's /metrics, and a
// Metrics passed in is the one /metrics serves.
func TestMetricsPerServer(t *testing.T) {
	shared := metrics.New()
	a := newQEnv(t, func(c *api.Config) { c.MaxQueued = 7; c.Metrics = shared }, echoEP("fal-ai/only-a"))
	b := newQEnv(t, func(c *api.Config) { c.Preloading = true }, echoEP("fal-ai/only-b"))
	if r := a.do(http.MethodPost, "", "/run/fal-ai/only-a", `{}`); r.Code != 200 {
		t.Fatalf("run on a: %d %s", r.Code, r.Body.String())
	}
	if r := b.do(http.MethodPost, "", "/run/fal-ai/only-b", `{}`); r.Code != 200 {
		t.Fatalf("run on b: %d %s", r.Code, r.Body.String())
	}
	// a run's outcome is counted as its handler returns, which may be just
	// after the client has the answer: scrape until it shows (bounded)
	scrape := func(e *testEnv, endpoint string) string {
		var body string
		for deadline := time.Now().Add(5 * time.Second); ; {
			body = e.do(http.MethodGet, "", "/metrics", "").Body.String()
			if strings.Contains(body, `falocal_requests_total{endpoint="`+endpoint+`"`) || time.Now().After(deadline) {
				return body
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	ma, mb := scrape(a, "fal-ai/only-a"), scrape(b, "fal-ai/only-b")
	for _, c := range []struct {
		name, body string
		want, not  []string
	}{
		{"a", ma,
			[]string{`falocal_requests_total{endpoint="fal-ai/only-a",outcome="ok"} 1`, "falocal_queue_capacity 7\n", "falocal_ready 1\n"},
			[]string{"fal-ai/only-b"}},
		{"b", mb,
			[]string{`falocal_requests_total{endpoint="fal-ai/only-b",outcome="ok"} 1`, "falocal_queue_capacity 0\n", "falocal_ready 0\n"},
			[]string{"fal-ai/only-a"}},
	} {
		for _, w := range c.want {
			if !strings.Contains(c.body, w) {
				t.Errorf("%s's /metrics lacks %q:\n%s", c.name, w, grep(c.body, "falocal_"))
			}
		}
		for _, n := range c.not {
			if strings.Contains(c.body, n) {
				t.Errorf("%s's /metrics shows the other server's %q:\n%s", c.name, n, grep(c.body, n))
			}
		}
	}
	var d dto.Metric
	if err := shared.Requests.WithLabelValues("fal-ai/only-a", "ok").Write(&d); err != nil || d.GetCounter().GetValue() != 1 {
		t.Errorf("the Metrics passed in counted %v (%v), want 1", d.GetCounter().GetValue(), err)
	}
}
