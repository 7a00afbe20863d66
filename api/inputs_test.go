package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/pipelines"
)

// upstream is a loopback HTTP server that stands in for remote hosts: the
// client's transport dials it whatever host a URL names, so allow-listing can
// be tested with names like localtest.invalid without leaving the machine.
type upstream struct {
	ts    *httptest.Server
	dials atomic.Int32
	mu    sync.Mutex
	hosts []string // Host of each request it served
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	mux := http.NewServeMux()
	mux.HandleFunc("/img", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		fmt.Fprint(w, "image-bytes") // 11 bytes
	})
	mux.HandleFunc("/ten", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "0123456789")
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(make([]byte, 1<<20))
	})
	mux.HandleFunc("/missing", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	redirect := func(path, to string) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, to, http.StatusFound) })
	}
	redirect("/to-allowed", "http://a.wild.invalid/img")
	redirect("/to-denied", "http://denied.invalid/img")
	redirect("/to-own", "/img")
	redirect("/loop", "/loop")
	mux.HandleFunc("/to-loopback", func(w http.ResponseWriter, r *http.Request) {
		self := r.Context().Value(http.LocalAddrContextKey).(net.Addr).String()
		http.Redirect(w, r, "http://"+self+"/img", http.StatusFound)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	u.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.hosts = append(u.hosts, r.Host)
		u.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(u.ts.Close)
	if ip := u.ts.Listener.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		t.Fatalf("upstream listens on %v, not loopback", ip)
	}
	return u
}

// client dials the upstream listener for every host, and nothing else.
func (u *upstream) client() *http.Client {
	addr := u.ts.Listener.Addr().String()
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			u.dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		DialTLSContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return nil, fmt.Errorf("test: no TLS to %s", a)
		},
		DisableKeepAlives: true,
	}}
}

func (u *upstream) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.hosts...)
}

func (u *upstream) reset() {
	u.mu.Lock()
	u.hosts = nil
	u.mu.Unlock()
	u.dials.Store(0)
}

var allowList = []string{"localtest.invalid", " *.WILD.invalid ", ""}

func TestOpenOwnFiles(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, func(c *api.Config) { c.HTTPClient = up.client(); c.AllowFetch = allowList }, saveEP())
	local := saveVia(t, e, "127.0.0.1:8080", "local-bytes", "in.png", "image/png")
	lu, _ := url.Parse(local)
	idName := strings.TrimPrefix(lu.Path, "/cdn/files/")
	falURL := saveVia(t, e, "fal.run", "fal-bytes", "f.webp", "image/webp")
	fu, _ := url.Parse(falURL)
	falIDName := strings.TrimPrefix(fu.Path, "/files/")

	f := e.filesFor("127.0.0.1:8080")
	ctx := context.Background()
	for _, tc := range []struct{ url, data, ct string }{
		{local, "local-bytes", "image/png"},
		{"http://127.0.0.1:8080/cdn/files/" + idName + "?download=1", "local-bytes", "image/png"},
		{"https://127.0.0.1:8080/cdn/files/" + idName, "local-bytes", "image/png"},
		{"http://127.0.0.1:9999/cdn/files/" + idName, "local-bytes", "image/png"},
		{"http://127.0.0.2/cdn/files/" + idName, "local-bytes", "image/png"},
		{"http://localhost/cdn/files/" + idName, "local-bytes", "image/png"},
		{"http://localhost:8080/cdn/files/" + idName, "local-bytes", "image/png"},
		{"http://[::1]:8080/cdn/files/" + idName, "local-bytes", "image/png"},
		{falURL, "fal-bytes", "image/webp"},
		{"https://v3.fal.media:443/files/" + falIDName, "fal-bytes", "image/webp"},
		{"https://v3b.fal.media/files/" + falIDName, "fal-bytes", "image/webp"},
		{"https://fal.media/files/" + falIDName, "fal-bytes", "image/webp"},
		{"https://V3.FAL.MEDIA/files/" + idName, "local-bytes", "image/png"},
		{"http://127.0.0.1:8080/cdn/files/" + falIDName, "fal-bytes", "image/webp"},
	} {
		b, err := f.Open(ctx, tc.url, 1<<20)
		if err != nil {
			t.Errorf("Open(%s): %v", tc.url, err)
			continue
		}
		if string(b.Data) != tc.data || b.ContentType != tc.ct {
			t.Errorf("Open(%s) = %q %q, want %q %q", tc.url, b.Data, b.ContentType, tc.data, tc.ct)
		}
	}
	// The request's own host name counts even when it is not loopback.
	f2 := e.filesFor("myhost.lan:8080")
	for _, u := range []string{"http://myhost.lan:8080/cdn/files/" + idName, "http://MYHOST.LAN:8080/cdn/files/" + idName} {
		if b, err := f2.Open(ctx, u, 0); err != nil || string(b.Data) != "local-bytes" {
			t.Errorf("Open(%s) = %q, %v", u, b.Data, err)
		}
	}
	// ... but another non-loopback, non-fal host is not ours.
	if _, err := f2.Open(ctx, "http://otherhost.lan:8080/cdn/files/"+idName, 0); err == nil {
		t.Error("a foreign host's /cdn/files URL was read from the store")
	}
	if up.dials.Load() != 0 {
		t.Errorf("own-file URLs caused %d dials", up.dials.Load())
	}
}

func TestOpenRefused(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, func(c *api.Config) { c.HTTPClient = up.client(); c.AllowFetch = allowList }, saveEP())
	own := saveVia(t, e, "127.0.0.1:8080", "x", "a.png", "image/png")
	ou, _ := url.Parse(own)
	id := strings.Split(ou.Path, "/")[3]
	upAddr := up.ts.Listener.Addr().String()
	f := e.filesFor("127.0.0.1:8080")
	for _, tc := range []struct{ url, contains string }{
		// Not allow-listed.
		{"https://example.com/a.png", "example.com"},
		{"http://denied.invalid/img", "denied.invalid"},
		{"http://sub.localtest.invalid/img", "sub.localtest.invalid"}, // exact entry: no subdomains
		{"http://localtest.invalid.evil.invalid/img", "localtest.invalid.evil.invalid"},
		{"http://wild.invalid/img", "wild.invalid"}, // *.domain is subdomains only
		{"http://evilwild.invalid/img", "evilwild.invalid"},
		{"http://10.0.0.1/cdn/files/" + id + "/a.png", "10.0.0.1"},
		{"http://169.254.169.254/latest/meta-data/", "169.254.169.254"},
		// Loopback and the request's own host are ours only under /cdn/files.
		{"http://" + upAddr + "/img", "127.0.0.1"},
		{"http://127.0.0.1:8080/healthz", "127.0.0.1"},
		{"http://localhost:8080/run/fal-ai/x", "localhost"},
		{"http://127.0.0.1:8080/cdn/files/../../etc/passwd", ""},
		{"http://127.0.0.1:8080/cdn/files/..%2F..%2Fetc/passwd", ""},
		{"https://v3.fal.media/cdn/files/" + id + "/a.png", "v3.fal.media"},
		{"https://fal.run/files/" + id + "/a.png", "fal.run"},
		{"https://queue.fal.run/files/" + id + "/a.png", "queue.fal.run"},
		// Not http(s) URLs at all.
		{"", "valid URL"},
		{"not a url", "valid URL"},
		{"/cdn/files/" + id + "/a.png", "valid URL"},
		{"file:///etc/passwd", "valid URL"},
		{"ftp://localtest.invalid/img", "valid URL"},
		{"gopher://localtest.invalid/img", "valid URL"},
		{"http://", "valid URL"},
		{"http:///cdn/files/" + id + "/a.png", "valid URL"},
		{"http://[::1", "valid URL"},
		// Ours, but not there.
		{"http://127.0.0.1:8080/cdn/files/" + strings.Repeat("0", 32) + "/a.png", "not found"},
		{"https://v3.fal.media/files/" + strings.Repeat("a", 32) + "/a.png", "not found"},
		{"http://127.0.0.1:8080/cdn/files/NOTANID/a.png", "not found"},
	} {
		b, err := f.Open(context.Background(), tc.url, 1<<20)
		if err == nil {
			t.Errorf("Open(%q) = %q, want an error", tc.url, b.Data)
			continue
		}
		if !strings.Contains(err.Error(), tc.contains) {
			t.Errorf("Open(%q): %v; want it to mention %q", tc.url, err, tc.contains)
		}
	}
	if n := up.dials.Load(); n != 0 {
		t.Errorf("refused URLs caused %d dials (hosts %v)", n, up.seen())
	}
}

func TestOpenAllowListed(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, func(c *api.Config) { c.HTTPClient = up.client(); c.AllowFetch = allowList })
	f := e.filesFor("127.0.0.1:8080")
	ctx := context.Background()
	for _, tc := range []struct{ url, host string }{
		{"http://localtest.invalid/img", "localtest.invalid"},
		{"http://LocalTest.Invalid/img", "LocalTest.Invalid"},
		{"http://localtest.invalid:80/img", "localtest.invalid:80"}, // a host alone: its default port only (TestAllowFetchPorts)
		{"http://a.wild.invalid/img", "a.wild.invalid"},
		{"http://x.y.wild.invalid/img?sig=abc", "x.y.wild.invalid"},
	} {
		up.reset()
		b, err := f.Open(ctx, tc.url, 1<<20)
		if err != nil {
			t.Errorf("Open(%s): %v", tc.url, err)
			continue
		}
		if string(b.Data) != "image-bytes" || b.ContentType != "image/png" {
			t.Errorf("Open(%s) = %q %q", tc.url, b.Data, b.ContentType)
		}
		if s := up.seen(); len(s) != 1 || s[0] != tc.host {
			t.Errorf("Open(%s): upstream saw hosts %v, want [%s]", tc.url, s, tc.host)
		}
	}
	// Redirects: within the allow list they are followed, elsewhere refused
	// before any request reaches the target.
	up.reset()
	if b, err := f.Open(ctx, "http://localtest.invalid/to-allowed", 1<<20); err != nil || string(b.Data) != "image-bytes" {
		t.Errorf("allowed redirect: %q, %v", b.Data, err)
	}
	if s := up.seen(); len(s) != 2 || s[1] != "a.wild.invalid" {
		t.Errorf("allowed redirect: hosts %v", s)
	}
	up.reset()
	if b, err := f.Open(ctx, "http://localtest.invalid/to-own", 1<<20); err != nil || string(b.Data) != "image-bytes" {
		t.Errorf("same-host redirect: %q, %v", b.Data, err)
	}
	for _, path := range []string{"/to-denied"} {
		up.reset()
		_, err := f.Open(ctx, "http://localtest.invalid"+path, 1<<20)
		if err == nil || !strings.Contains(err.Error(), "denied.invalid") {
			t.Errorf("redirect %s: %v, want refusal naming denied.invalid", path, err)
		}
		if s := up.seen(); len(s) != 1 {
			t.Errorf("redirect %s: the target was requested: hosts %v", path, s)
		}
	}
	// A redirect to loopback (SSRF towards this machine) is refused too.
	up.reset()
	if b, err := f.Open(ctx, "http://localtest.invalid/to-loopback", 1<<20); err == nil {
		t.Errorf("redirect to loopback followed: %q", b.Data)
	}
	if s := up.seen(); len(s) != 1 {
		t.Errorf("redirect to loopback: hosts %v", s)
	}
}

func TestOpenRedirectLoop(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, func(c *api.Config) { c.HTTPClient = up.client(); c.AllowFetch = allowList })
	f := e.filesFor("127.0.0.1:8080")
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := f.Open(ctx, "http://localtest.invalid/loop", 1<<20)
	if err == nil {
		t.Fatal("redirect loop succeeded")
	}
	if ctx.Err() != nil {
		t.Fatalf("redirect loop ran until the deadline (%v, %d requests)", time.Since(start), len(up.seen()))
	}
	if n := len(up.seen()); n > 11 {
		t.Errorf("redirect loop made %d requests", n)
	}
}

func TestOpenLimits(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, func(c *api.Config) { c.HTTPClient = up.client(); c.AllowFetch = allowList }, saveEP())
	own := saveVia(t, e, "127.0.0.1:8080", "0123456789", "ten.bin", "")
	f := e.filesFor("127.0.0.1:8080")
	ctx := context.Background()
	for _, tc := range []struct {
		url     string
		limit   int64
		tooBig  bool
		otherOK bool // some other error is fine
	}{
		{"http://localtest.invalid/ten", 10, false, false},
		{"http://localtest.invalid/ten", 11, false, false},
		{"http://localtest.invalid/ten", 9, true, false},
		{"http://localtest.invalid/ten", 1, true, false},
		{"http://localtest.invalid/big", 1 << 19, true, false},
		{"http://localtest.invalid/big", 1 << 20, false, false},
		{own, 10, false, false},
		{own, 9, true, false},
		{own, 0, false, false},
	} {
		b, err := f.Open(ctx, tc.url, tc.limit)
		var he *pipelines.HTTPError
		switch {
		case tc.tooBig:
			if !errors.As(err, &he) || he.Status != http.StatusRequestEntityTooLarge {
				t.Errorf("Open(%s, %d) = %d bytes, %v; want a 413 HTTPError", tc.url, tc.limit, len(b.Data), err)
			}
		case err != nil:
			t.Errorf("Open(%s, %d): %v", tc.url, tc.limit, err)
		}
	}
	if _, err := f.Open(ctx, "http://localtest.invalid/missing", 1<<20); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("upstream 404: %v", err)
	}

	// The server-wide MaxInputBytes caps every input, whatever the pipeline asks.
	e2 := newEnv(t, func(c *api.Config) {
		c.HTTPClient = up.client()
		c.AllowFetch = allowList
		c.MaxInputBytes = 5
	}, saveEP())
	own2 := saveVia(t, e2, "127.0.0.1:8080", "0123456789", "ten.bin", "")
	f2 := e2.filesFor("127.0.0.1:8080")
	for _, u := range []string{"http://localtest.invalid/ten", own2} {
		for _, limit := range []int64{0, 1 << 20} {
			_, err := f2.Open(ctx, u, limit)
			var he *pipelines.HTTPError
			if !errors.As(err, &he) || he.Status != http.StatusRequestEntityTooLarge {
				t.Errorf("MaxInputBytes 5: Open(%s, %d): %v; want 413", u, limit, err)
			}
		}
	}
}

func TestOpenHonoursContext(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, func(c *api.Config) { c.HTTPClient = up.client(); c.AllowFetch = allowList })
	f := e.filesFor("127.0.0.1:8080")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := f.Open(ctx, "http://localtest.invalid/slow", 1<<20)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow fetch: %v, want DeadlineExceeded", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("slow fetch took %v", time.Since(start))
	}
}

// openEP opens the input's "url" the way pipelines.LoadImage does and
// answers what it got.
func openEP() *fakeEP {
	return ep("t/open", func(ctx context.Context, req *pipelines.Request) (any, error) {
		var in struct {
			URL   string `json:"url"`
			Limit int64  `json:"limit"`
		}
		if err := pipelines.DecodeInput(req.Input, &in); err != nil {
			return nil, err
		}
		b, err := req.Files.Open(ctx, in.URL, in.Limit)
		if err != nil {
			var he *pipelines.HTTPError
			if ctx.Err() != nil || errors.As(err, &he) {
				return nil, err
			}
			return nil, pipelines.Invalid("url", err.Error())
		}
		return map[string]any{"size": len(b.Data), "content_type": b.ContentType}, nil
	})
}

// Inputs through the whole HTTP path: a file output by one run is the input
// of the next, refused hosts are 422, oversized inputs 413, and a slow fetch
// hits the request timeout (504).
func TestRunWithInputURLs(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, func(c *api.Config) {
		c.HTTPClient = up.client()
		c.AllowFetch = allowList
	}, saveEP(), openEP())
	run := func(host, u string, limit int64) *resp {
		in, _ := json.Marshal(map[string]any{"url": u, "limit": limit})
		path := "/run/t/open"
		if host == "fal.run" {
			path = "/t/open"
		}
		return e.do(http.MethodPost, host, path, string(in))
	}
	for _, host := range []string{"127.0.0.1:8080", "fal.run"} {
		out := saveVia(t, e, host, "chained", "c.png", "image/png")
		r := run(host, out, 1<<20)
		if r.Code != 200 || r.body["size"] != float64(7) || r.body["content_type"] != "image/png" {
			t.Errorf("%s: chained input: %d %s", host, r.Code, r.Body.String())
		}
		checkDetail(t, run(host, out, 3), http.StatusRequestEntityTooLarge)
	}
	r := run("", "https://example.com/x.png", 1<<20)
	if r.Code != 422 || !strings.Contains(r.Body.String(), `"loc":["body","url"]`) || !strings.Contains(r.Body.String(), "example.com") {
		t.Errorf("refused host: %d %s", r.Code, r.Body.String())
	}
	if r := run("", "http://localtest.invalid/img", 1<<20); r.Code != 200 || r.body["size"] != float64(11) {
		t.Errorf("allowed host: %d %s", r.Code, r.Body.String())
	}
	checkDetail(t, run("", "http://localtest.invalid/big", 1000), http.StatusRequestEntityTooLarge)
	e = newEnv(t, func(c *api.Config) {
		c.HTTPClient = up.client()
		c.AllowFetch = allowList
		c.RequestTimeout = 50 * time.Millisecond
	}, openEP())
	r = run("", "http://localtest.invalid/slow", 1<<20)
	checkDetail(t, r, http.StatusGatewayTimeout)
	if r.Header().Get("X-Fal-Request-Timeout-Type") != "user" {
		t.Error("slow input fetch: no X-Fal-Request-Timeout-Type")
	}
}
