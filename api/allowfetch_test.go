package api_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/falocal/falocal/api"
)

// portUpstream stands in for every host and port: the client dials it
// whatever a URL names, and it records the Host of each request. /to?u=URL
// redirects to URL.
type portUpstream struct {
	ts    *httptest.Server
	mu    sync.Mutex
	hosts []string
}

func newPortUpstream(t *testing.T) *portUpstream {
	t.Helper()
	u := &portUpstream{}
	u.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.hosts = append(u.hosts, r.Host)
		u.mu.Unlock()
		if to := r.URL.Query().Get("u"); r.URL.Path == "/to" && to != "" {
			http.Redirect(w, r, to, http.StatusFound)
			return
		}
		w.Header().Set("Content-Type", "image/png")
		fmt.Fprint(w, "image-bytes")
	}))
	t.Cleanup(u.ts.Close)
	return u
}

func (u *portUpstream) client() *http.Client {
	addr := u.ts.Listener.Addr().String()
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		DisableKeepAlives: true,
	}}
}

func (u *portUpstream) take() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	h := u.hosts
	u.hosts = nil
	return h
}

// -allow-fetch matches host and port: "host" is the scheme's default port,
// "host:port" that port; another port of an allowed host is refused before
// anything is requested, directly or through a redirect.
func TestAllowFetchPorts(t *testing.T) {
	up := newPortUpstream(t)
	e := newEnv(t, func(c *api.Config) {
		c.HTTPClient = up.client()
		c.AllowFetch = []string{"img.invalid", "alt.invalid:8443"}
	})
	f := e.filesFor("127.0.0.1:8080")
	ctx := context.Background()
	for _, tc := range []struct {
		url  string
		ok   bool
		seen []string // hosts the upstream must have been asked for
	}{
		{"http://img.invalid/img", true, []string{"img.invalid"}},
		{"http://img.invalid:80/img", true, []string{"img.invalid:80"}},
		{"http://img.invalid:8080/img", false, nil},
		{"http://img.invalid:6379/img", false, nil},
		{"http://alt.invalid:8443/img", true, []string{"alt.invalid:8443"}},
		{"http://alt.invalid/img", false, nil},
		// Redirects are held to the same rule.
		{"http://img.invalid/to?u=http://alt.invalid:8443/img", true, []string{"img.invalid", "alt.invalid:8443"}},
		{"http://img.invalid/to?u=http://img.invalid:8080/img", false, []string{"img.invalid"}},
		{"http://img.invalid/to?u=http://alt.invalid/img", false, []string{"img.invalid"}},
		{"http://alt.invalid:8443/to?u=http://alt.invalid:9000/img", false, []string{"alt.invalid:8443"}},
	} {
		b, err := f.Open(ctx, tc.url, 1<<20)
		if tc.ok && (err != nil || string(b.Data) != "image-bytes") {
			t.Errorf("Open(%s) = %q, %v; want the image", tc.url, b.Data, err)
		}
		if !tc.ok && err == nil {
			t.Errorf("Open(%s) fetched %q; want a refusal", tc.url, b.Data)
		}
		if !tc.ok && err != nil && !strings.Contains(err.Error(), "not allowed") && !strings.Contains(err.Error(), "does not fetch") {
			t.Errorf("Open(%s): %v; want a refusal that says why", tc.url, err)
		}
		if got := up.take(); strings.Join(got, ",") != strings.Join(tc.seen, ",") {
			t.Errorf("Open(%s): upstream asked for %v, want %v", tc.url, got, tc.seen)
		}
	}
}
