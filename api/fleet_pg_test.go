package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
)

// fleetEPs are the endpoints of one node of the shared-queue test: echo,
// one that logs and sends a partial output, and one that runs until
// cancelled (started is told when it runs).
func fleetEPs(started chan<- string) []pipelines.Endpoint {
	return []pipelines.Endpoint{
		echoEP("test/echo"),
		ep("test/partial", func(ctx context.Context, req *pipelines.Request) (any, error) {
			req.Log(pipelines.Info, "halfway")
			if req.Partial != nil {
				req.Partial(map[string]any{"step": 1})
			}
			return map[string]any{"step": 2}, nil
		}),
		ep("test/block", func(ctx context.Context, req *pipelines.Request) (any, error) {
			started <- req.ID
			<-ctx.Done()
			return nil, ctx.Err()
		}),
	}
}

// TestSharedQueue runs an API node and a worker node over one PostgreSQL
// database: what the API node accepts, the worker runs; logs, partial
// outputs and cancels cross between them; the worker serves only its
// health and the fleet.
func TestSharedQueue(t *testing.T) {
	pg := testenv.Postgres(t)
	dsn := pg.NewDatabase(t)
	apiStarted, workerStarted := make(chan string, 4), make(chan string, 4)
	node := func(role, name string, started chan string) *testEnv {
		e := newEnv(t, func(c *api.Config) {
			c.SharedQueue, c.Role, c.Node, c.Workers = dsn, role, name, 2
		}, fleetEPs(started)...)
		t.Cleanup(func() { e.srv.Close(context.Background()) })
		return e
	}
	a := node(api.RoleAPI, "api-1", apiStarted)
	w := node(api.RoleWorker, "worker-1", workerStarted)

	t.Run("queued on one node, run on the other", func(t *testing.T) {
		s := checkSubmit(t, a.do(http.MethodPost, "", "/test/partial", `{"x":1}`), "http://example.com")
		final := a.waitDone(t, "", s)
		if final["status"] != "COMPLETED" {
			t.Fatalf("final event %v", final)
		}
		_, st := a.status(t, s.path("status")+"?logs=1")
		checkLogs(t, st["logs"], "request started", "halfway")
		r := a.do(http.MethodGet, "", s.path(""), "")
		if r.Code != http.StatusOK || r.body["step"] != float64(2) {
			t.Fatalf("result: %d %s", r.Code, r.Body.String())
		}
	})

	t.Run("sync stream gets the worker's partial output", func(t *testing.T) {
		r := a.do(http.MethodPost, "", "/run/test/partial/stream", `{}`)
		evs := readEvents(t, r.Body.Bytes())
		if r.Code != http.StatusOK || len(evs) != 2 || evs[0]["step"] != float64(1) || evs[1]["step"] != float64(2) {
			t.Fatalf("stream: %d %s", r.Code, r.Body.String())
		}
	})

	t.Run("cancel on the API node interrupts the worker", func(t *testing.T) {
		s := checkSubmit(t, a.do(http.MethodPost, "", "/test/block", `{}`), "http://example.com")
		select {
		case id := <-workerStarted:
			if id != s.ID {
				t.Fatalf("worker started %s, want %s", id, s.ID)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the worker never started the request")
		}
		if r := a.do(http.MethodPut, "", s.path("cancel"), ""); r.Code != http.StatusAccepted {
			t.Fatalf("cancel: %d %s", r.Code, r.Body.String())
		}
		a.waitDone(t, "", s)
		if r := a.do(http.MethodGet, "", s.path(""), ""); r.Code != 499 {
			t.Fatalf("result of a cancelled request: %d %s", r.Code, r.Body.String())
		}
	})

	t.Run("the worker serves only health and the fleet", func(t *testing.T) {
		for _, tc := range []struct {
			method, path string
			want         int
		}{
			{http.MethodGet, "/healthz", http.StatusOK},
			{http.MethodGet, "/readyz", http.StatusOK},
			{http.MethodGet, "/fleet", http.StatusOK},
			{http.MethodPost, "/run/test/echo", http.StatusNotFound},
			{http.MethodPost, "/test/echo", http.StatusNotFound},
			{http.MethodGet, "/", http.StatusNotFound},
		} {
			body := ""
			if tc.method == http.MethodPost {
				body = "{}"
			}
			if r := w.do(tc.method, "", tc.path, body); r.Code != tc.want {
				t.Errorf("%s %s on the worker: %d, want %d", tc.method, tc.path, r.Code, tc.want)
			}
		}
	})

	t.Run("fleet lists both nodes", func(t *testing.T) {
		r := a.do(http.MethodGet, "", "/fleet", "")
		roles := map[string]string{}
		nodes, _ := r.body["nodes"].([]any)
		for _, n := range nodes {
			m := n.(map[string]any)
			roles[m["name"].(string)], _ = m["role"].(string)
		}
		if roles["api-1"] != "api" || roles["worker-1"] != "worker" {
			t.Fatalf("fleet: %s", r.Body.String())
		}
		if m := a.do(http.MethodGet, "", "/metrics", ""); !strings.Contains(m.Body.String(), `falocal_fleet_nodes{role="worker"} 1`) {
			t.Errorf("/metrics lacks the worker count")
		}
	})

	t.Run("an outage answers 503, not a verdict", func(t *testing.T) {
		s := checkSubmit(t, a.do(http.MethodPost, "", "/test/echo", `{}`), "http://example.com")
		a.waitDone(t, "", s)
		pg.Stop(t)
		defer pg.Start(t)
		for _, tc := range []struct{ method, path string }{
			{http.MethodPut, s.path("cancel")},
			{http.MethodGet, s.path("status")},
			{http.MethodPost, "/test/echo"},
		} {
			body := ""
			if tc.method == http.MethodPost {
				body = "{}"
			}
			if r := a.do(tc.method, "", tc.path, body); r.Code != http.StatusServiceUnavailable {
				t.Errorf("%s %s while PostgreSQL is down: %d %s", tc.method, tc.path, r.Code, r.Body.String())
			}
		}
		// Not ready, without telling a caller with no key where the
		// database is.
		var r *resp
		waitUntil(t, func() bool {
			r = a.do(http.MethodGet, "", "/readyz", "")
			return r.Code == http.StatusServiceUnavailable
		})
		if r.body["status"] != "disconnected" || strings.Contains(r.Body.String(), strconv.Itoa(pg.Port)) {
			t.Errorf("/readyz while PostgreSQL is down: %s", r.Body.String())
		}
	})

	select {
	case id := <-apiStarted:
		t.Errorf("the API node ran request %s", id)
	default:
	}
	// The API node ran no endpoint at all.
	_ = httptest.NewRecorder
}

// waitUntil polls cond for up to 20 s.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20 s")
		}
	}
}
