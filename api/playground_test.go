package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/api"
)

// The page and its scripts load without a key (the page asks for one);
// its JSON routes and the queue need the key.
func TestPlaygroundStaticWithoutKey(t *testing.T) {
	e := newEnv(t, func(c *api.Config) {
		c.Keys = []string{"id:secret"}
		c.Health = func() map[string]any { return map[string]any{"version": "test"} }
	}, echoEP("test/echo"))
	for _, p := range []string{"/", "/playground/", "/playground/app.js", "/playground/style.css"} {
		r := e.do(http.MethodGet, "127.0.0.1:8080", p, "")
		if r.Code != http.StatusOK {
			t.Fatalf("GET %s = %d %s", p, r.Code, r.Body.String())
		}
		if csp := r.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy = %q", p, csp)
		}
	}
	if r := e.do(http.MethodGet, "127.0.0.1:8080", "/", ""); !strings.Contains(r.Body.String(), `src="/playground/app.js"`) {
		t.Errorf("GET / does not load the app: %s", r.Body.String())
	}
	// Paths of the playground that name no file answer fal's 404, not the page.
	checkDetail(t, e.do(http.MethodGet, "127.0.0.1:8080", "/playground/missing.js", ""), http.StatusNotFound)
	checkDetail(t, e.do(http.MethodGet, "127.0.0.1:8080", "/playground/api/info", ""), http.StatusUnauthorized, "Missing credentials")
	checkDetail(t, e.do(http.MethodGet, "127.0.0.1:8080", "/playground/api/history", ""), http.StatusUnauthorized)
	checkDetail(t, e.do(http.MethodGet, "127.0.0.1:8080", "/playground/api/info", "", "Authorization", "Key id:wrong"), http.StatusForbidden)

	r := e.do(http.MethodGet, "127.0.0.1:8080", "/playground/api/info", "", "Authorization", "Key id:secret")
	if r.Code != http.StatusOK {
		t.Fatalf("info = %d %s", r.Code, r.Body.String())
	}
	var info struct {
		Keys      bool
		Runtime   map[string]any
		Queue     map[string]int
		Endpoints []struct {
			ID     string
			Models any
			Usable bool
		}
	}
	if err := json.Unmarshal(r.Body.Bytes(), &info); err != nil {
		t.Fatal(err)
	}
	if !info.Keys || info.Runtime["version"] != "test" || info.Queue["workers"] != 1 {
		t.Errorf("info = %s", r.Body.String())
	}
	var ids []string
	for _, ep := range info.Endpoints {
		ids = append(ids, ep.ID)
		// Endpoints without installed models (these fakes) cannot describe
		// them and are not refused for it.
		if ep.Models != nil || !ep.Usable {
			t.Errorf("endpoint %s: models %v usable %v", ep.ID, ep.Models, ep.Usable)
		}
	}
	if strings.Join(ids, ",") != "test/capture,test/echo" {
		t.Errorf("endpoints = %v", ids)
	}
}

// The history lists a key's own queued requests, newest first, with
// their outputs and logs; another key sees none of them.
func TestPlaygroundHistory(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.Keys = []string{"a:1", "b:2"} }, echoEP("test/echo"))
	var last string
	for i := range 3 {
		r := e.do(http.MethodPost, "127.0.0.1:8080", "/test/echo", `{"n":`+string(rune('0'+i))+`}`, "Authorization", "Key a:1")
		if r.Code != http.StatusOK {
			t.Fatalf("submit = %d %s", r.Code, r.Body.String())
		}
		last = r.body["request_id"].(string)
		waitCompleted(t, e, "/test/echo/requests/"+last+"/status", "Key a:1")
	}
	type item struct {
		RequestID string `json:"request_id"`
		Endpoint  string
		App       string
		Status    string
		Output    map[string]any
		Logs      []any
	}
	var h struct{ Items []item }
	r := e.do(http.MethodGet, "127.0.0.1:8080", "/playground/api/history?limit=2", "", "Authorization", "Key a:1")
	if err := json.Unmarshal(r.Body.Bytes(), &h); err != nil || r.Code != http.StatusOK {
		t.Fatalf("history = %d %s", r.Code, r.Body.String())
	}
	if len(h.Items) != 2 || h.Items[0].RequestID != last || h.Items[0].Status != "COMPLETED" || h.Items[0].App != "test/echo" ||
		h.Items[0].Output["request_id"] != last || h.Items[0].Logs == nil {
		t.Fatalf("history = %s", r.Body.String())
	}
	r = e.do(http.MethodGet, "127.0.0.1:8080", "/playground/api/history", "", "Authorization", "Key b:2")
	if err := json.Unmarshal(r.Body.Bytes(), &h); err != nil || len(h.Items) != 0 {
		t.Fatalf("another key's history = %d %s", r.Code, r.Body.String())
	}
	checkDetail(t, e.do(http.MethodGet, "127.0.0.1:8080", "/playground/api/history?limit=0", "", "Authorization", "Key a:1"),
		http.StatusUnprocessableEntity, "limit")
}

func waitCompleted(t *testing.T, e *testEnv, path, key string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := e.do(http.MethodGet, "127.0.0.1:8080", path, "", "Authorization", key)
		if r.body["status"] == "COMPLETED" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not complete: %d %s", path, r.Code, r.Body.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
