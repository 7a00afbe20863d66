package api_test

import (
	"net/http/httptest"
	"testing"

	"github.com/falocal/falocal/api"
)

// TestLocalOnly: a server without keys must not be drivable by other web
// sites (CSRF) or through a DNS-rebinding name, while local clients and the
// TLS proxy (fal's host names) keep working.
func TestLocalOnly(t *testing.T) {
	env := newEnv(t, func(c *api.Config) { c.LocalOnly = true })
	for _, c := range []struct {
		host, origin string
		want         int
	}{
		{"127.0.0.1:8080", "", 200},
		{"localhost:8080", "http://localhost:3000", 200},
		{"[::1]:8080", "", 200},
		{"queue.fal.run", "", 200},
		{"evil.example", "", 403},
		{"rebind.attacker.example:8080", "", 403},
		{"127.0.0.1:8080", "https://attacker.example", 403},
	} {
		req := httptest.NewRequest("GET", "/healthz", nil)
		req.Host = c.host
		if c.origin != "" {
			req.Header.Set("Origin", c.origin)
		}
		w := httptest.NewRecorder()
		env.srv.Handler().ServeHTTP(w, req)
		if w.Code != c.want {
			t.Errorf("Host %s Origin %q: %d, want %d (%s)", c.host, c.origin, w.Code, c.want, w.Body)
		}
		if c.want == 200 && c.origin != "" && w.Header().Get("Access-Control-Allow-Origin") != c.origin {
			t.Errorf("Origin %s not allowed by CORS", c.origin)
		}
	}
	// A preflight from another site is not approved.
	req := httptest.NewRequest("OPTIONS", "/fal-ai/x", nil)
	req.Host = "127.0.0.1:8080"
	req.Header.Set("Origin", "https://attacker.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	w := httptest.NewRecorder()
	env.srv.Handler().ServeHTTP(w, req)
	if got := w.Header().Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("preflight from another site allowed: %q", got)
	}
}
