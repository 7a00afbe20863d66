package api_test

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/pipelines"
)

func TestRoleConfig(t *testing.T) {
	for _, tc := range []struct {
		role, shared, err string
	}{
		{"", "", ""},
		{"both", "", ""},
		{"api", "", "needs a shared queue"},
		{"worker", "", "needs a shared queue"},
		{"gpu", "", `role "gpu"`},
	} {
		t.Run(tc.role, func(t *testing.T) {
			srv, err := api.Open(api.Config{Registry: pipelines.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
				Role: tc.role, SharedQueue: tc.shared})
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				srv.Close(t.Context())
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
}

// A server with a queue of its own is a fleet of one: /fleet shows it with
// what it can run, what it holds and the facts it was given.
func TestFleetOfOne(t *testing.T) {
	e := newEnv(t, func(c *api.Config) {
		c.Node = "box-1"
		c.CanRun = func() []string { return []string{"test/echo"} }
		c.Resident = func() []string { return []string{"test/echo"} }
		c.NodeInfo = func() map[string]any { return map[string]any{"device": "cpu"} }
	}, echoEP("test/echo"))
	r := e.do(http.MethodGet, "", "/fleet", "")
	if r.Code != http.StatusOK {
		t.Fatalf("GET /fleet: %d %s", r.Code, r.Body.String())
	}
	q, _ := r.body["queue"].(map[string]any)
	if q["queued"] != float64(0) || q["running"] != float64(0) {
		t.Errorf("queue = %v", r.body["queue"])
	}
	nodes, _ := r.body["nodes"].([]any)
	if len(nodes) != 1 {
		t.Fatalf("nodes = %v", r.body["nodes"])
	}
	n := nodes[0].(map[string]any)
	if n["name"] != "box-1" || n["role"] != "both" || n["alive"] != true {
		t.Errorf("node = %v", n)
	}
	if ids, _ := n["resident"].([]any); len(ids) != 1 || ids[0] != "test/echo" {
		t.Errorf("resident = %v", n["resident"])
	}
	if info, _ := n["info"].(map[string]any); info["device"] != "cpu" {
		t.Errorf("info = %v", n["info"])
	}
	m := e.do(http.MethodGet, "", "/metrics", "")
	for _, want := range []string{`falocal_fleet_nodes{role="both"} 1`, `falocal_fleet_node_resident_endpoints{node="box-1"} 1`, "falocal_queue_running 0"} {
		if !strings.Contains(m.Body.String(), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
