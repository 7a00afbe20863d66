package api_test

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/falocal/falocal/api"
)

// With keys, /healthz answers every caller (probes) but gives its details —
// the runtime library's path, versions, served endpoints — only to a caller
// with a valid key. Without keys the caller is local and sees them.
func TestHealthzDetailsNeedAKey(t *testing.T) {
	const secretPath = "/home/someone/.cache/falocal/onnxruntime/libonnxruntime.so"
	health := func() map[string]any {
		return map[string]any{"version": "v9", "onnxruntime": map[string]any{"library": secretPath}}
	}
	e := newEnv(t, func(c *api.Config) { c.Keys = []string{"id:secret"}; c.Health = health }, echoEP("fal-ai/a"))
	for _, auth := range []string{"", "Key id:wrong", "Bearer id:secret", "Key"} {
		var hdr []string
		if auth != "" {
			hdr = []string{"Authorization", auth}
		}
		r := e.do(http.MethodGet, "", "/healthz", "", hdr...)
		if r.Code != http.StatusOK {
			t.Errorf("healthz with %q: %d", auth, r.Code)
		}
		if !reflect.DeepEqual(r.body, map[string]any{"status": "ok"}) || strings.Contains(r.Body.String(), secretPath) {
			t.Errorf("healthz with %q shows details: %s", auth, r.Body.String())
		}
	}
	r := e.do(http.MethodGet, "", "/healthz", "", "Authorization", "Key id:secret")
	if r.Code != http.StatusOK || r.body["version"] != "v9" || !strings.Contains(r.Body.String(), secretPath) || r.body["endpoints"] == nil {
		t.Errorf("healthz with the key: %d %s", r.Code, r.Body.String())
	}

	local := newEnv(t, func(c *api.Config) { c.LocalOnly = true; c.Health = health }, echoEP("fal-ai/a"))
	r = local.do(http.MethodGet, "127.0.0.1:8080", "/healthz", "")
	if r.Code != http.StatusOK || r.body["version"] != "v9" || r.body["endpoints"] == nil {
		t.Errorf("healthz without keys, from this machine: %d %s", r.Code, r.Body.String())
	}
}
