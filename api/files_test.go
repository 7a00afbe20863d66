package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/pipelines"
)

// saveEP saves the input's "data" as a file named "name" and answers its URL.
func saveEP() *fakeEP {
	return ep("t/save", func(ctx context.Context, req *pipelines.Request) (any, error) {
		var in struct{ Data, Name, Type string }
		if err := json.Unmarshal(req.Input, &in); err != nil {
			return nil, err
		}
		u, err := req.Files.Save(ctx, []byte(in.Data), in.Type, in.Name)
		if err != nil {
			return nil, err
		}
		return map[string]any{"url": u}, nil
	})
}

func saveVia(t *testing.T, e *testEnv, host, data, name, ctype string) string {
	t.Helper()
	in, _ := json.Marshal(map[string]string{"data": data, "name": name, "type": ctype})
	path := "/run/t/save"
	if h := strings.Split(host, ":")[0]; strings.HasSuffix(h, "fal.run") && h != "queue.fal.run" {
		path = "/t/save"
	}
	r := e.do(http.MethodPost, host, path, string(in))
	if r.Code != 200 {
		t.Fatalf("save on %q: %d %s", host, r.Code, r.Body.String())
	}
	u, _ := r.body["url"].(string)
	return u
}

func TestSaveURLs(t *testing.T) {
	e := newEnv(t, nil, saveEP())
	for _, tc := range []struct {
		host, name string
		want       string // regexp
	}{
		{"127.0.0.1:8080", "out.png", `^http://127\.0\.0\.1:8080/cdn/files/[0-9a-f]{32}/out\.png$`},
		{"localhost:9", "a b/../c.webp", `^http://localhost:9/cdn/files/[0-9a-f]{32}/c\.webp$`},
		{"myhost.lan", "", `^http://myhost\.lan/cdn/files/[0-9a-f]{32}/file$`},
		{"[::1]:8080", "x.jpg", `^http://\[::1\]:8080/cdn/files/[0-9a-f]{32}/x\.jpg$`},
		{"fal.run", "out.png", `^https://v3\.fal\.media/files/[0-9a-f]{32}/out\.png$`},
		{"fal.run:443", "out.png", `^https://v3\.fal\.media/files/[0-9a-f]{32}/out\.png$`},
		{"gateway.fal.run", "..\\..\\evil.png", `^https://v3\.fal\.media/files/[0-9a-f]{32}/evil\.png$`},
		{"queue.fal.run", "o.png", `^https://v3\.fal\.media/files/[0-9a-f]{32}/o\.png$`},
	} {
		u := saveVia(t, e, tc.host, "x", tc.name, "image/png")
		if !regexp.MustCompile(tc.want).MatchString(u) {
			t.Errorf("host %q name %q: url %q, want %s", tc.host, tc.name, u, tc.want)
		}
	}
}

// Files saved during a run are served at the URL the run returned, over a
// real connection, and a client following fal's CDN URL (through the TLS
// proxy) reaches them too.
func TestServeSavedFiles(t *testing.T) {
	e := newEnv(t, nil, saveEP())
	ts := httptest.NewServer(e.h)
	defer ts.Close()
	host := strings.TrimPrefix(ts.URL, "http://")

	get := func(method, raw string, hostHdr string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, raw, nil)
		if err != nil {
			t.Fatal(err)
		}
		if hostHdr != "" {
			req.Host = hostHdr
		}
		res, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}

	for _, tc := range []struct{ data, name, ctype, wantCT string }{
		{"PNG fake bytes", "out.png", "image/png", "image/png"},
		{"RIFF....WEBP", "x.webp", "image/webp", "image/webp"},
		{"<html><script>alert(1)</script>", "page.html", "", "application/octet-stream"},
		{"", "empty.bin", "application/x-empty", "application/x-empty"},
	} {
		// Saved through the test server itself so the URL is the real one.
		in, _ := json.Marshal(map[string]string{"data": tc.data, "name": tc.name, "type": tc.ctype})
		res, err := ts.Client().Post(ts.URL+"/run/t/save", "application/json", strings.NewReader(string(in)))
		if err != nil {
			t.Fatal(err)
		}
		var out struct{ URL string }
		json.NewDecoder(res.Body).Decode(&out)
		res.Body.Close()
		if !strings.HasPrefix(out.URL, "http://"+host+"/cdn/files/") {
			t.Fatalf("url %q not on %s", out.URL, host)
		}
		res, body := get("GET", out.URL, "")
		if res.StatusCode != 200 || body != tc.data {
			t.Errorf("GET %s: %d %q, want %q", out.URL, res.StatusCode, body, tc.data)
		}
		if ct := res.Header.Get("Content-Type"); ct != tc.wantCT {
			t.Errorf("GET %s: Content-Type %q, want %q", out.URL, ct, tc.wantCT)
		}
		if !uuidRE.MatchString(res.Header.Get("x-fal-request-id")) {
			t.Errorf("GET %s: no x-fal-request-id", out.URL)
		}
		res, body = get("HEAD", out.URL, "")
		if res.StatusCode != 200 || body != "" || res.Header.Get("Content-Type") != tc.wantCT {
			t.Errorf("HEAD %s: %d %q %q", out.URL, res.StatusCode, body, res.Header.Get("Content-Type"))
		}
		// The same file through fal's CDN names (Host header as the TLS proxy sends it).
		u, _ := url.Parse(out.URL)
		falPath := strings.TrimPrefix(u.Path, "/cdn")
		for _, h := range []string{"v3.fal.media", "v3b.fal.media:443", "fal.media"} {
			res, body = get("GET", ts.URL+falPath, h)
			if res.StatusCode != 200 || body != tc.data {
				t.Errorf("GET %s%s: %d %q", h, falPath, res.StatusCode, body)
			}
		}
	}

	// A fal-host run hands out a v3.fal.media URL that the CDN name serves.
	u := saveVia(t, e, "fal.run", "via fal", "f.txt", "text/plain")
	pu, _ := url.Parse(u)
	res, body := get("GET", ts.URL+pu.Path, pu.Host)
	if res.StatusCode != 200 || body != "via fal" || res.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("GET %s via Host %s: %d %q", pu.Path, pu.Host, res.StatusCode, body)
	}
	// Range requests work (clients resume video downloads).
	req, _ := http.NewRequest("GET", ts.URL+"/cdn"+pu.Path, nil)
	req.Header.Set("Range", "bytes=4-6")
	rr, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rr.Body)
	rr.Body.Close()
	if rr.StatusCode != http.StatusPartialContent || string(b) != "fal" {
		t.Errorf("Range: %d %q", rr.StatusCode, b)
	}
}

func TestServeFileNotFound(t *testing.T) {
	e := newEnv(t, nil, saveEP())
	u := saveVia(t, e, "127.0.0.1:1", "data", "", "text/plain") // stored name "file"
	pu, _ := url.Parse(u)
	id := strings.Split(pu.Path, "/")[3]
	otherID := strings.Repeat("0", 32)
	for _, p := range []string{
		"/cdn/files/" + id + "/other.png",
		"/cdn/files/" + id + "/FILE",
		"/cdn/files/" + id + "/file.",
		"/cdn/files/" + id + "/_file",
		"/cdn/files/" + id + "/..",         // cleans to "file", but is not its name
		"/cdn/files/" + id + "/%2e%2e",     // same, encoded
		"/cdn/files/" + id + "/a%2Ffile",   // cleans to "file"
		"/cdn/files/" + id + "/..%5Cfile",  // backslash
		"/cdn/files/" + id,                 // no name
		"/cdn/files/" + id + "/",           // empty name
		"/cdn/files/" + id + "/file/extra", // extra segment
		"/cdn/files/" + otherID + "/file",  // unknown id
		"/cdn/files/" + strings.ToUpper(id) + "/file",
		"/cdn/files/" + id[:31] + "/file",
		"/cdn/files/" + id + "0/file",
		"/cdn/files/" + id + ".json/file",
		"/cdn/files/" + id + ".bin/file",
	} {
		r := e.do(http.MethodGet, "", p, "")
		checkDetail(t, r, 404)
		if strings.Contains(r.Body.String(), "data") && !strings.Contains(r.Body.String(), "detail") {
			t.Errorf("%s leaked the file", p)
		}
	}
	// The right name works.
	if r := e.do(http.MethodGet, "", "/cdn/files/"+id+"/file", ""); r.Code != 200 || r.Body.String() != "data" {
		t.Errorf("own file: %d %q", r.Code, r.Body.String())
	}
	// After the store loses it, it is a 404.
	os.Remove(filepath.Join(e.dir, id+".json"))
	checkDetail(t, e.do(http.MethodGet, "", "/cdn/files/"+id+"/file", ""), 404)
}

// A name long enough to be shortened must still be served at its URL.
func TestServeLongName(t *testing.T) {
	e := newEnv(t, nil, saveEP())
	name := strings.Repeat("a", 60) + "." + strings.Repeat("b", 99)
	u := saveVia(t, e, "127.0.0.1:1", "long", name, "text/plain")
	pu, _ := url.Parse(u)
	if r := e.do(http.MethodGet, "", pu.Path, ""); r.Code != 200 || r.Body.String() != "long" {
		t.Errorf("GET %s: %d %q", pu.Path, r.Code, r.Body.String())
	}
}

// Traversal attempts never leave the store: a planted, validly shaped file
// pair beside the store directory must never be served.
func TestServeFileTraversal(t *testing.T) {
	root := t.TempDir()
	storeDir := filepath.Join(root, "store")
	st, err := files.Open(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	// The planted pair: if any path reached it, the secret would come back.
	const secret = "TOP-SECRET-CONTENT"
	meta, _ := json.Marshal(files.Meta{ID: "secret", Name: "passwd", ContentType: "text/plain", Size: int64(len(secret)), Created: time.Now()})
	for _, f := range []struct{ name, data string }{
		{"secret.json", string(meta)}, {"secret.bin", secret},
		{"passwd", secret}, {"passwd.json", string(meta)}, {"passwd.bin", secret},
	} {
		if err := os.WriteFile(filepath.Join(root, f.name), []byte(f.data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e2 := newEnv(t, func(c *api.Config) { c.Files = st }, saveEP())
	good := saveVia(t, e2, "127.0.0.1:1", "ok", "passwd", "text/plain")
	gu, _ := url.Parse(good)
	id := strings.Split(gu.Path, "/")[3]
	paths := []string{
		"/cdn/files/../../etc/passwd",
		"/cdn/files/../secret/passwd",
		"/cdn/files/..%2Fsecret/passwd",
		"/cdn/files/..%2fsecret/passwd",
		"/cdn/files/%2e%2e%2fsecret/passwd",
		"/cdn/files/%2E%2E/secret",
		"/cdn/files/..%5csecret/passwd",
		"/cdn/files/..%252Fsecret/passwd",
		"/cdn/files/%2e%2e/%2e%2e%2fetc%2fpasswd",
		"/cdn/files/..%2F..%2F..%2F..%2Fetc/passwd",
		"/cdn/files/" + id + "/..%2F..%2Fsecret",
		"/cdn/files/" + id + "/../../secret",
		"/cdn/files/" + id + "/..%2F..%2Fpasswd",
		"/cdn/files/" + id + "%2F..%2F..%2Fsecret/passwd",
		"/cdn/files/secret/passwd",
		"/cdn/files/.%2Fsecret/passwd",
		"/cdn/files//secret/passwd",
		"/cdn/files/%00/passwd",
		"/cdn/files/" + id + "%00/passwd",
	}
	for _, p := range paths {
		for _, host := range []string{"", "v3.fal.media"} {
			target := p
			if host != "" {
				target = strings.TrimPrefix(p, "/cdn")
			}
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.URL, err = url.Parse(target)
			if err != nil {
				continue // not a request a client could send
			}
			req.RequestURI = target
			if host != "" {
				req.Host = host
			}
			r := e2.serve(req)
			if strings.Contains(r.Body.String(), secret) {
				t.Errorf("%s%s served the planted file", host, target)
			}
			if r.Code != http.StatusNotFound {
				t.Errorf("%s%s: %d %s", host, target, r.Code, r.Body.String())
			}
		}
	}
	// Over a real connection too (the Go client sends paths as written).
	ts := httptest.NewServer(e2.h)
	defer ts.Close()
	for _, p := range paths {
		res, err := rawGet(ts.Listener.Addr().String(), p)
		if err != nil {
			t.Fatalf("raw GET %s: %v", p, err)
		}
		if strings.Contains(res, secret) {
			t.Errorf("raw GET %s served the planted file", p)
		}
		if !strings.HasPrefix(res, "HTTP/1.1 404") {
			t.Errorf("raw GET %s: %s", p, strings.SplitN(res, "\r\n", 2)[0])
		}
	}
}

// rawGet sends one GET with the request target exactly as given.
func rawGet(addr, target string) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, addr); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}
