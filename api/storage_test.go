package api

// Storage upload flows, end to end over HTTP, as the JS and Python clients
// drive them. (An internal test: it moves storageClock.)

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/pipelines"
)

const stKey = "id:secret"

// stOpenEP opens its input "url" through pipelines.Files, as a model reads
// an input file, and answers what it got.
type stOpenEP struct{}

func (stOpenEP) ID() string { return "test/open" }

func (stOpenEP) Run(ctx context.Context, req *pipelines.Request) (any, error) {
	var in struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(req.Input, &in); err != nil {
		return nil, err
	}
	b, err := req.Files.Open(ctx, in.URL, 0)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b.Data)
	return map[string]any{"sha256": hex.EncodeToString(sum[:]), "content_type": b.ContentType}, nil
}

type stNoNet struct{ t *testing.T }

func (n stNoNet) RoundTrip(r *http.Request) (*http.Response, error) {
	n.t.Errorf("unexpected outbound request to %s", r.URL.Redacted())
	return nil, io.ErrUnexpectedEOF
}

type stEnv struct {
	t     *testing.T
	h     http.Handler
	store *files.Store
	root  string // the temp dir; the store is root/store
	dir   string
}

func newStEnv(t *testing.T, mod func(*Config)) *stEnv {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "store")
	store, err := files.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Registry:   pipelines.NewRegistry(stOpenEP{}),
		Files:      store,
		Logger:     slog.New(slog.DiscardHandler),
		HTTPClient: &http.Client{Transport: stNoNet{t}},
		Keys:       []string{stKey},
	}
	if mod != nil {
		mod(&cfg)
	}
	srv := New(cfg)
	if c, ok := any(srv).(interface{ Close(context.Context) error }); ok {
		t.Cleanup(func() { c.Close(context.Background()) })
	}
	return &stEnv{t: t, h: srv.Handler(), store: store, root: root, dir: dir}
}

// stClock moves storageClock for one test.
func stClock(t *testing.T) *time.Time {
	now := time.Now()
	storageClock = func() time.Time { return now }
	t.Cleanup(func() { storageClock = time.Now })
	return &now
}

type stResp struct {
	code int
	hdr  http.Header
	raw  []byte
	js   map[string]any
}

func (r *stResp) str(k string) string { s, _ := r.js[k].(string); return s }

// call sends a request to an absolute URL: its host is the Host the client
// sends (fal's names arrive that way through the TLS proxy). hdr are
// name, value pairs.
func (e *stEnv) call(method, rawURL string, body io.Reader, hdr ...string) *stResp {
	e.t.Helper()
	req := httptest.NewRequest(method, rawURL, body)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	r := &stResp{code: w.Code, hdr: w.Header(), raw: w.Body.Bytes()}
	if ct := w.Header().Get("Content-Type"); strings.HasPrefix(ct, "application/json") && bytes.HasPrefix(bytes.TrimSpace(r.raw), []byte("{")) {
		if err := json.Unmarshal(r.raw, &r.js); err != nil {
			e.t.Fatalf("%s %s: bad JSON %q: %v", method, rawURL, r.raw, err)
		}
	}
	return r
}

// ok asserts a 200 with a JSON object.
func (e *stEnv) ok(r *stResp, what string) *stResp {
	e.t.Helper()
	if r.code != http.StatusOK {
		e.t.Fatalf("%s: %d %s", what, r.code, r.raw)
	}
	if ct := r.hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") || r.js == nil {
		e.t.Fatalf("%s: Content-Type %q, body %s", what, ct, r.raw)
	}
	return r
}

// fail asserts a fal error {"detail": "..."} with status and text.
func (e *stEnv) fail(r *stResp, status int, contains, what string) {
	e.t.Helper()
	if r.code != status {
		e.t.Errorf("%s: status %d, want %d; body %s", what, r.code, status, r.raw)
		return
	}
	d, _ := r.js["detail"].(string)
	if d == "" || !strings.Contains(d, contains) {
		e.t.Errorf("%s: detail %q, want it to contain %q", what, d, contains)
	}
}

func (e *stEnv) postJSON(rawURL string, body any, hdr ...string) *stResp {
	e.t.Helper()
	b, _ := json.Marshal(body)
	return e.call(http.MethodPost, rawURL, bytes.NewReader(b), append([]string{"Content-Type", "application/json"}, hdr...)...)
}

// expectFile asserts a file URL serves data with contentType, and that a
// model can open it as an input.
func (e *stEnv) expectFile(fileURL string, data []byte, contentType string) {
	e.t.Helper()
	r := e.call(http.MethodGet, fileURL, nil)
	if r.code != http.StatusOK || !bytes.Equal(r.raw, data) || r.hdr.Get("Content-Type") != contentType {
		e.t.Fatalf("GET %s: %d %q %q, want %q %q", fileURL, r.code, r.hdr.Get("Content-Type"), stTrunc(r.raw), stTrunc(data), contentType)
	}
	// The same client runs a model on it (fal's CDN names reach us from anywhere).
	runURL := "http://127.0.0.1:8080/run/test/open"
	if u, _ := url.Parse(fileURL); !isFalHost(u.Host) {
		runURL = "http://" + u.Host + "/run/test/open"
	}
	run := e.ok(e.postJSON(runURL, map[string]string{"url": fileURL}, "Authorization", "Key "+stKey), "run with "+fileURL)
	sum := sha256.Sum256(data)
	if run.str("sha256") != hex.EncodeToString(sum[:]) || run.str("content_type") != contentType {
		e.t.Errorf("model opened %s as %s", fileURL, run.raw)
	}
}

func (e *stEnv) expect404(fileURL string) {
	e.t.Helper()
	if r := e.call(http.MethodGet, fileURL, nil); r.code != http.StatusNotFound {
		e.t.Fatalf("GET %s before the upload completed: %d, want 404", fileURL, r.code)
	}
}

func stTrunc(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}

var (
	stHexID    = `[0-9a-f]{32}`
	stHexToken = `[0-9a-f]{64}`
)

func stMatch(t *testing.T, what, got, re string) {
	t.Helper()
	if !regexp.MustCompile("^" + re + "$").MatchString(got) {
		t.Errorf("%s = %q, want %s", what, got, re)
	}
}

// JS fal.storage.upload of a small blob: initiate, then a bare PUT.
func TestStorageJSUpload(t *testing.T) {
	e := newStEnv(t, nil)
	for _, tc := range []struct {
		rest, cdn string // where the client sends initiate; the URLs we expect
	}{
		{"http://127.0.0.1:8080/rest", `http://127\.0\.0\.1:8080/cdn`},
		{"https://rest.fal.ai", `https://v3\.fal\.media`},
		{"https://rest.alpha.fal.ai", `https://v3\.fal\.media`},
	} {
		data := []byte("\x89PNG\r\n\x1a\n" + tc.rest)
		init := e.ok(e.postJSON(tc.rest+"/storage/upload/initiate?storage_type=fal-cdn-v3",
			map[string]string{"content_type": "image/png", "file_name": "cat photo.png"},
			"Authorization", "Key "+stKey), "initiate via "+tc.rest)
		up, fileURL := init.str("upload_url"), init.str("file_url")
		stMatch(t, "upload_url", up, tc.cdn+`/uploads/`+stHexToken)
		stMatch(t, "file_url", fileURL, tc.cdn+`/files/`+stHexID+`/cat_photo\.png`)
		e.expect404(fileURL)
		// A browser preflights the PUT; CORS answers it.
		pre := e.call(http.MethodOptions, up, nil, "Origin", "http://app.test",
			"Access-Control-Request-Method", "PUT", "Access-Control-Request-Headers", "content-type")
		if pre.code >= 300 || pre.hdr.Get("Access-Control-Allow-Origin") == "" {
			t.Errorf("preflight of %s: %d %v", up, pre.code, pre.hdr)
		}
		// No Authorization: the URL is the capability.
		put := e.ok(e.call(http.MethodPut, up, bytes.NewReader(data), "Content-Type", "image/png"), "PUT "+up)
		if put.str("file_url") != fileURL {
			t.Errorf("PUT answered %s", put.raw)
		}
		e.expectFile(fileURL, data, "image/png")
		// A retried PUT (the answer got lost) gets the same answer and changes nothing.
		again := e.ok(e.call(http.MethodPut, up, strings.NewReader("again"), "Content-Type", "image/png"), "second PUT")
		if again.str("file_url") != fileURL {
			t.Errorf("second PUT answered %s", again.raw)
		}
		e.expectFile(fileURL, data, "image/png")
	}
	// Without a name the client's "<ms>.<ext>" arrives; with none at all we make one.
	r := e.ok(e.postJSON("http://h/rest/storage/upload/initiate", map[string]string{"content_type": "image/jpeg"}, "Authorization", "Key "+stKey), "nameless")
	stMatch(t, "file_url", r.str("file_url"), `http://h/cdn/files/`+stHexID+`/upload\.jpg`)
	// No content type anywhere: octet-stream.
	r = e.ok(e.postJSON("http://h/rest/storage/upload/initiate", map[string]string{"file_name": "x"}, "Authorization", "Key "+stKey), "typeless")
	e.ok(e.call(http.MethodPut, r.str("upload_url"), strings.NewReader("raw")), "typeless PUT")
	e.expectFile(r.str("file_url"), []byte("raw"), "application/octet-stream")
}

// JS multipart (> 90 MiB in real life; the server does not care about
// sizes): sequential parts under the upload URL, then complete.
func TestStorageJSMultipart(t *testing.T) {
	e := newStEnv(t, nil)
	for _, rest := range []string{"http://localhost:9/rest", "https://rest.fal.ai"} {
		init := e.ok(e.postJSON(rest+"/storage/upload/initiate-multipart?storage_type=fal-cdn-v3",
			map[string]string{"content_type": "video/mp4", "file_name": "clip.mp4"}, "Authorization", "Key "+stKey), "initiate-multipart")
		up, fileURL := init.str("upload_url"), init.str("file_url")
		u, err := url.Parse(up)
		if err != nil || u.RawQuery != "" || strings.HasSuffix(u.Path, "/") {
			t.Fatalf("upload_url %q", up)
		}
		chunks := [][]byte{bytes.Repeat([]byte("a"), 1000), bytes.Repeat([]byte("b"), 1000), []byte("tail")}
		var parts []map[string]any
		for i, c := range chunks {
			// As the client builds it: origin + pathname + "/" + n + search.
			search := ""
			if u.RawQuery != "" {
				search = "?" + u.RawQuery
			}
			partURL := u.Scheme + "://" + u.Host + u.Path + fmt.Sprintf("/%d", i+1) + search
			r := e.ok(e.call(http.MethodPut, partURL, bytes.NewReader(c)), "PUT part")
			if n, _ := r.js["partNumber"].(float64); int(n) != i+1 || r.str("etag") == "" {
				t.Fatalf("part %d answered %s", i+1, r.raw)
			}
			if h := r.hdr.Get("ETag"); h != `"`+r.str("etag")+`"` {
				t.Errorf("ETag header %q vs body %q", h, r.str("etag"))
			}
			parts = append(parts, map[string]any{"partNumber": r.js["partNumber"], "etag": r.js["etag"]})
		}
		e.expect404(fileURL)
		done := e.ok(e.postJSON(u.Scheme+"://"+u.Host+u.Path+"/complete", map[string]any{"parts": parts}), "complete")
		if done.str("file_url") != fileURL {
			t.Errorf("complete answered %s", done.raw)
		}
		e.expectFile(fileURL, bytes.Join(chunks, nil), "video/mp4")
		// A retried complete gets the same answer; parts are refused now.
		if again := e.ok(e.postJSON(u.Scheme+"://"+u.Host+u.Path+"/complete", map[string]any{"parts": parts}), "second complete"); again.str("file_url") != fileURL {
			t.Errorf("second complete answered %s", again.raw)
		}
		e.fail(e.call(http.MethodPut, u.Scheme+"://"+u.Host+u.Path+"/1", strings.NewReader("late")), 400, "already completed", "part after complete")
		if _, err := os.Stat(filepath.Join(e.dir, "multipart")); err == nil {
			if ents, _ := os.ReadDir(filepath.Join(e.dir, "multipart")); len(ents) != 0 {
				t.Errorf("parts left after complete: %v", ents)
			}
		}
	}
}

// pyToken gets a CDN token as fal_client's CDNTokenManager does.
func (e *stEnv) pyToken(rest string) *stResp {
	e.t.Helper()
	return e.ok(e.call(http.MethodPost, rest+"/storage/auth/token?storage_type=fal-cdn-v3", strings.NewReader("{}"),
		"Authorization", "Key "+stKey, "Accept", "application/json", "Content-Type", "application/json"), "token")
}

// Python's datetime.fromisoformat (3.8+) reads exactly this shape.
var stPyISO = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?\+00:00$`)

func TestStoragePythonUpload(t *testing.T) {
	e := newStEnv(t, nil)
	for _, tc := range []struct{ rest, base, upload, files string }{
		// The client always posts to https://v3.fal.media/files/upload.
		{"https://rest.fal.ai", "https://v3.fal.media", "https://v3.fal.media/files/upload", `https://v3\.fal\.media/files/`},
		// Pointed at our origin, base_url is our CDN.
		{"http://127.0.0.1:8080/rest", "http://127.0.0.1:8080/cdn", "http://127.0.0.1:8080/cdn/files/upload", `http://127\.0\.0\.1:8080/cdn/files/`},
	} {
		tok := e.pyToken(tc.rest)
		if tok.str("token_type") != "Bearer" || tok.str("base_url") != tc.base {
			t.Errorf("token via %s: %s", tc.rest, tok.raw)
		}
		stMatch(t, "token", tok.str("token"), stHexToken)
		exp := tok.str("expires_at")
		if !stPyISO.MatchString(exp) {
			t.Errorf("expires_at %q does not parse with Python's datetime.fromisoformat", exp)
		}
		if at, err := time.Parse(time.RFC3339, exp); err != nil || at.Before(time.Now().Add(30*time.Minute)) || at.After(time.Now().Add(2*time.Hour)) {
			t.Errorf("expires_at %q: %v", exp, err)
		}
		bearer := "Bearer " + tok.str("token")
		data := []byte("RIFF....WAVEfmt " + tc.rest)
		r := e.ok(e.call(http.MethodPost, tc.upload, bytes.NewReader(data),
			"Authorization", bearer, "Content-Type", "audio/wav", "X-Fal-File-Name", "voice.wav"), "upload")
		stMatch(t, "access_url", r.str("access_url"), tc.files+stHexID+`/voice\.wav`)
		e.expectFile(r.str("access_url"), data, "audio/wav")
		// upload_image() sends no name.
		r = e.ok(e.call(http.MethodPost, tc.upload, strings.NewReader("img"), "Authorization", bearer, "Content-Type", "image/png"), "nameless upload")
		stMatch(t, "access_url", r.str("access_url"), tc.files+stHexID+`/upload\.png`)
		e.expectFile(r.str("access_url"), []byte("img"), "image/png")
	}
}

func TestStoragePythonMultipart(t *testing.T) {
	e := newStEnv(t, nil)
	for _, rest := range []string{"https://rest.fal.ai", "http://[::1]:8080/rest"} {
		tok := e.pyToken(rest)
		bearer := "Bearer " + tok.str("token")
		cr := e.ok(e.call(http.MethodPost, tok.str("base_url")+"/files/upload/multipart", nil,
			"Authorization", bearer, "Accept", "application/json", "Content-Type", "application/zip", "X-Fal-File-Name", "weights.zip"), "multipart create")
		access, uploadID := cr.str("access_url"), cr.str("uploadId")
		stMatch(t, "uploadId", uploadID, stHexToken)
		if !strings.HasSuffix(access, "/weights.zip") || !strings.HasPrefix(access, tok.str("base_url")+"/files/") {
			t.Fatalf("access_url %q", access)
		}
		e.expect404(access)

		// Ten parts at once, answered in whatever order they finish.
		const n = 10
		chunks := make([][]byte, n)
		for i := range chunks {
			chunks[i] = bytes.Repeat([]byte{byte('0' + i)}, 100+i)
		}
		var mu sync.Mutex
		var parts []map[string]any
		var wg sync.WaitGroup
		for i := n - 1; i >= 0; i-- {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				req := httptest.NewRequest(http.MethodPut, fmt.Sprintf("%s/multipart/%s/%d", access, uploadID, i+1), bytes.NewReader(chunks[i]))
				req.Header.Set("Authorization", bearer)
				req.Header.Set("Content-Type", "application/zip")
				req.Header.Set("Accept-Encoding", "identity")
				w := httptest.NewRecorder()
				e.h.ServeHTTP(w, req)
				etag := w.Header().Get("etag")
				if w.Code != 200 || etag == "" {
					t.Errorf("part %d: %d %q %s", i+1, w.Code, etag, w.Body)
					return
				}
				mu.Lock()
				parts = append(parts, map[string]any{"partNumber": i + 1, "etag": etag}) // the header, quotes and all
				mu.Unlock()
			}(i)
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		sort.Slice(parts, func(i, j int) bool { return parts[i]["partNumber"].(int) > parts[j]["partNumber"].(int) })
		e.expect404(access)
		done := e.ok(e.postJSON(access+"/multipart/"+uploadID+"/complete", map[string]any{"parts": parts}, "Authorization", bearer), "complete")
		if done.str("access_url") != access {
			t.Errorf("complete answered %s", done.raw)
		}
		e.expectFile(access, bytes.Join(chunks, nil), "application/zip")
	}
}

// fal_client's "fal" repository: initiate?storage_type=gcs, then a PUT that
// carries the client's Key header too.
func TestStorageGCSFallback(t *testing.T) {
	e := newStEnv(t, nil)
	init := e.ok(e.postJSON("https://rest.fal.ai/storage/upload/initiate?storage_type=gcs",
		map[string]string{"file_name": "upload.bin", "content_type": "application/pdf"}, "Authorization", "Key "+stKey), "initiate gcs")
	e.ok(e.call(http.MethodPut, init.str("upload_url"), strings.NewReader("%PDF-1.7"),
		"Authorization", "Key "+stKey, "Content-Type", "application/pdf"), "gcs PUT")
	e.expectFile(init.str("file_url"), []byte("%PDF-1.7"), "application/pdf")
}

func TestStorageRealtimeToken(t *testing.T) {
	e := newStEnv(t, nil)
	for _, u := range []string{"https://rest.fal.ai/tokens/", "http://h/rest/tokens/", "http://h/rest/tokens"} {
		r := e.postJSON(u, map[string]any{"allowed_apps": []string{"flux"}, "token_expiration": 120}, "Authorization", "Key "+stKey)
		var tok string
		if r.code != 200 || !strings.HasPrefix(r.hdr.Get("Content-Type"), "application/json") || json.Unmarshal(r.raw, &tok) != nil {
			t.Fatalf("POST %s: %d %q %s", u, r.code, r.hdr.Get("Content-Type"), r.raw)
		}
		stMatch(t, "realtime token", tok, stHexToken)
		e.fail(e.postJSON(u, map[string]any{"allowed_apps": []string{"flux"}}), 401, "Missing credentials", "tokens without a key")
	}
	e.fail(e.postJSON("http://h/rest/tokens/", map[string]any{"token_expiration": -1}, "Authorization", "Key "+stKey), 400, "token_expiration", "negative expiration")
}

func TestStorageAuth(t *testing.T) {
	e := newStEnv(t, nil)
	for _, u := range []string{
		"https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3",
		"http://h/rest/storage/upload/initiate-multipart?storage_type=fal-cdn-v3",
		"http://h/rest/storage/auth/token?storage_type=fal-cdn-v3",
	} {
		e.fail(e.postJSON(u, map[string]string{}), 401, "Missing credentials", "no key: "+u)
		e.fail(e.postJSON(u, map[string]string{}, "Authorization", "Key id:wrong"), 403, "Invalid credentials", "bad key: "+u)
	}
	// The v3 CDN wants the Bearer token (or a key).
	clock := stClock(t)
	tok := e.pyToken("https://rest.fal.ai").str("token")
	up := "https://v3.fal.media/files/upload"
	e.fail(e.call(http.MethodPost, up, strings.NewReader("x")), 401, "Missing credentials", "v3 upload without a token")
	e.fail(e.call(http.MethodPost, up, strings.NewReader("x"), "Authorization", "Bearer "+strings.Repeat("0", 64)), 401, "Invalid or expired", "unknown token")
	e.fail(e.call(http.MethodPost, up, strings.NewReader("x"), "Authorization", "Key id:wrong"), 401, "Invalid or expired", "bad key on v3")
	e.fail(e.call(http.MethodPost, up+"/multipart", nil, "Authorization", "Token "+tok), 401, "Invalid or expired", "wrong scheme")
	e.ok(e.call(http.MethodPost, up, strings.NewReader("x"), "Authorization", "bearer "+tok), "lower-case scheme")
	e.ok(e.call(http.MethodPost, up, strings.NewReader("x"), "Authorization", "Key "+stKey), "key on v3")
	// Python refreshes at expires_at; the token stops working then.
	*clock = clock.Add(cdnTokenTTL + time.Second)
	e.fail(e.call(http.MethodPost, up, strings.NewReader("x"), "Authorization", "Bearer "+tok), 401, "Invalid or expired", "expired token")

	// Without configured keys (loopback) everything is open.
	open := newStEnv(t, func(c *Config) { c.Keys = nil })
	init := open.ok(open.postJSON("http://127.0.0.1/rest/storage/upload/initiate", map[string]string{"file_name": "a.txt", "content_type": "text/plain"}), "open initiate")
	open.ok(open.call(http.MethodPut, init.str("upload_url"), strings.NewReader("hi")), "open PUT")
	open.ok(open.call(http.MethodPost, "http://127.0.0.1/cdn/files/upload", strings.NewReader("hi")), "open v3 upload")
}

// completeFixture starts a JS multipart upload with parts 1 and 2.
func (e *stEnv) completeFixture() (base string, etags []string) {
	e.t.Helper()
	init := e.ok(e.postJSON("http://h/rest/storage/upload/initiate-multipart", map[string]string{"file_name": "f.bin"}, "Authorization", "Key "+stKey), "initiate")
	base = init.str("upload_url")
	for i, c := range []string{"one", "two"} {
		r := e.ok(e.call(http.MethodPut, fmt.Sprintf("%s/%d", base, i+1), strings.NewReader(c)), "part")
		etags = append(etags, r.str("etag"))
	}
	return base, etags
}

func TestStorageCompleteErrors(t *testing.T) {
	e := newStEnv(t, nil)
	base, et := e.completeFixture()
	type p = map[string]any
	for _, tc := range []struct {
		body     any
		contains string
	}{
		{p{"parts": []p{}}, "No parts"},
		{p{}, "No parts"},
		{p{"parts": []p{{"partNumber": 1, "etag": et[0]}, {"partNumber": 2, "etag": et[0]}}}, "etag of part 2 does not match"},
		{p{"parts": []p{{"partNumber": 1, "etag": et[0]}, {"partNumber": 2, "etag": ""}}}, "etag of part 2"},
		{p{"parts": []p{{"partNumber": 1, "etag": et[0]}, {"partNumber": 2, "etag": "../../../etc/passwd"}}}, "etag of part 2"},
		{p{"parts": []p{{"partNumber": 2, "etag": et[1]}}}, "Part 1 is missing"},
		{p{"parts": []p{{"partNumber": 1, "etag": et[0]}, {"partNumber": 3, "etag": et[1]}}}, "Part 2 is missing"},
		{p{"parts": []p{{"partNumber": 1, "etag": et[0]}, {"partNumber": 2, "etag": et[1]}, {"partNumber": 3, "etag": et[1]}}}, "Part 3 was not uploaded"},
		{p{"parts": []p{{"partNumber": 1, "etag": et[0]}, {"partNumber": 1, "etag": et[0]}}}, "listed twice"},
		{p{"parts": []p{{"partNumber": 0, "etag": et[0]}}}, "Invalid partNumber"},
		{"not an object", "Invalid JSON"},
	} {
		e.fail(e.postJSON(base+"/complete", tc.body), 400, tc.contains, fmt.Sprint(tc.body))
	}
	for _, n := range []string{"0", "-1", "abc", "10001", "1.5", "01"} {
		e.fail(e.call(http.MethodPut, base+"/"+n, strings.NewReader("x")), 400, "Invalid part number", "part "+n)
	}
	// The session survived the refusals; parts may be re-sent, the latest counts.
	r := e.ok(e.call(http.MethodPut, base+"/2", strings.NewReader("TWO")), "re-send part 2")
	e.fail(e.postJSON(base+"/complete", p{"parts": []p{{"partNumber": 1, "etag": et[0]}, {"partNumber": 2, "etag": et[1]}}}), 400, "does not match", "stale etag")
	e.ok(e.postJSON(base+"/complete", p{"parts": []p{{"partNumber": 2, "etag": `W/"` + strings.ToUpper(r.str("etag")) + `"`}, {"partNumber": 1, "etag": et[0]}}}), "complete")
	init := e.ok(e.postJSON("http://h/rest/storage/upload/initiate-multipart", map[string]string{}, "Authorization", "Key "+stKey), "initiate")
	// A single-PUT URL takes no parts, a multipart URL no single PUT.
	single := e.ok(e.postJSON("http://h/rest/storage/upload/initiate", map[string]string{}, "Authorization", "Key "+stKey), "initiate").str("upload_url")
	e.fail(e.call(http.MethodPut, single+"/1", strings.NewReader("x")), 404, "Upload not found", "part to a single upload")
	e.fail(e.call(http.MethodPut, init.str("upload_url"), strings.NewReader("x")), 404, "Upload not found", "single PUT to a multipart upload")
}

func TestStorageOversize(t *testing.T) {
	e := newStEnv(t, func(c *Config) { c.MaxUploadBytes = 10 })
	key := []string{"Authorization", "Key " + stKey}
	init := e.ok(e.postJSON("http://h/rest/storage/upload/initiate", map[string]string{"file_name": "a.txt", "content_type": "text/plain"}, key...), "initiate")
	up, fileURL := init.str("upload_url"), init.str("file_url")
	e.fail(e.call(http.MethodPut, up, strings.NewReader("01234567890")), 413, "larger than", "11 bytes, known length")
	// Streamed without a length: caught while reading.
	e.fail(e.call(http.MethodPut, up, io.MultiReader(strings.NewReader("0123456789"), strings.NewReader("0"))), 413, "larger than", "11 bytes, chunked")
	e.expect404(fileURL)
	e.ok(e.call(http.MethodPut, up, io.MultiReader(strings.NewReader("01234"), strings.NewReader("56789"))), "10 bytes")
	e.expectFile(fileURL, []byte("0123456789"), "text/plain")

	tok := e.pyToken("http://h/rest").str("token")
	e.fail(e.call(http.MethodPost, "http://h/cdn/files/upload", strings.NewReader("01234567890"), "Authorization", "Bearer "+tok), 413, "larger than", "v3 upload")

	// Parts count together.
	mp := e.ok(e.postJSON("http://h/rest/storage/upload/initiate-multipart", map[string]string{}, key...), "initiate-multipart").str("upload_url")
	p1 := e.ok(e.call(http.MethodPut, mp+"/1", strings.NewReader("123456")), "part 1")
	e.fail(e.call(http.MethodPut, mp+"/2", strings.NewReader("123456")), 413, "larger than", "part 2 over the total")
	e.fail(e.call(http.MethodPut, mp+"/2", io.MultiReader(strings.NewReader("123456"))), 413, "larger than", "part 2 over the total, chunked")
	e.fail(e.call(http.MethodPut, mp+"/3", strings.NewReader("01234567890")), 413, "larger than", "one part over the cap")
	p2 := e.ok(e.call(http.MethodPut, mp+"/2", strings.NewReader("7890")), "part 2 that fits")
	// Replacing a part frees its share.
	e.ok(e.call(http.MethodPut, mp+"/1", strings.NewReader("12")), "smaller part 1")
	e.fail(e.call(http.MethodPut, mp+"/3", strings.NewReader("12345")), 413, "larger than", "part 3 over what is left")
	p1 = e.ok(e.call(http.MethodPut, mp+"/1", strings.NewReader("123456")), "part 1 back")
	done := e.ok(e.postJSON(mp+"/complete", map[string]any{"parts": []map[string]any{
		{"partNumber": 1, "etag": p1.str("etag")}, {"partNumber": 2, "etag": p2.str("etag")}}}), "complete at the cap")
	e.expectFile(done.str("file_url"), []byte("1234567890"), "application/octet-stream")
}

func TestStorageTraversal(t *testing.T) {
	e := newStEnv(t, nil)
	key := []string{"Authorization", "Key " + stKey}
	r := e.ok(e.postJSON("http://h/rest/storage/upload/initiate", map[string]string{"file_name": "../../../etc/passwd"}, key...), "initiate")
	stMatch(t, "file_url", r.str("file_url"), `http://h/cdn/files/`+stHexID+`/passwd`)
	e.ok(e.call(http.MethodPut, r.str("upload_url"), strings.NewReader("root")), "PUT")
	tok := e.pyToken("http://h/rest").str("token")
	bearer := []string{"Authorization", "Bearer " + tok}
	v3 := e.ok(e.call(http.MethodPost, "http://h/cdn/files/upload", strings.NewReader("x"), append(bearer, "X-Fal-File-Name", `..\..\win.ini`)...), "v3 upload")
	stMatch(t, "access_url", v3.str("access_url"), `http://h/cdn/files/`+stHexID+`/win\.ini`)
	mp := e.ok(e.call(http.MethodPost, "http://h/cdn/files/upload/multipart", nil, append(bearer, "X-Fal-File-Name", "../x.bin")...), "v3 multipart")
	access, uid := mp.str("access_url"), mp.str("uploadId")
	stMatch(t, "access_url", access, `http://h/cdn/files/`+stHexID+`/x\.bin`)
	id := strings.Split(strings.TrimPrefix(access, "http://h/cdn/files/"), "/")[0]

	for _, u := range []string{
		"http://h/cdn/uploads/../../../etc/passwd",
		"http://h/cdn/uploads/..%2F..%2F..%2Fetc%2Fpasswd",
		"http://h/cdn/uploads/" + strings.Repeat("A", 64),
		"http://h/cdn/uploads/" + strings.Repeat("0", 63),
		"http://h/cdn/uploads/%2e%2e",
		"http://h/cdn/uploads/" + uid, // an uploadId is not an upload URL
		"http://h/cdn/uploads/" + uid + "/1",
	} {
		if r := e.call(http.MethodPut, u, strings.NewReader("evil")); r.code != 404 && r.code != 400 && r.code != 401 {
			t.Errorf("PUT %s: %d %s", u, r.code, r.raw)
		}
	}
	for _, u := range []string{
		"http://h/cdn/files/../../x/multipart/" + uid + "/1",
		"http://h/cdn/files/" + id + "/other.bin/multipart/" + uid + "/1", // not its file URL
		"http://h/cdn/files/" + strings.Repeat("0", 32) + "/x.bin/multipart/" + uid + "/1",
		"http://h/cdn/files/" + id + "/x.bin/multipart/..%2F..%2Fx/1",
		"http://h/cdn/files/" + id + "/x.bin/multipart/" + strings.Repeat("0", 64) + "/1",
		"http://h/cdn/files/" + id + "/x.bin/multipart/" + uid + "/..%2F1",
	} {
		if r := e.call(http.MethodPut, u, strings.NewReader("evil"), bearer...); r.code != 404 && r.code != 400 && r.code != 401 {
			t.Errorf("PUT %s: %d %s", u, r.code, r.raw)
		}
	}
	// The only files are the store's own, inside the store.
	var got []string
	filepath.WalkDir(e.root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(e.root, p)
			got = append(got, rel)
		}
		return nil
	})
	for _, g := range got {
		if !regexp.MustCompile(`^store/` + stHexID + `\.(bin|json)$`).MatchString(filepath.ToSlash(g)) {
			t.Errorf("unexpected file %s", g)
		}
	}
	if len(got) != 4 {
		t.Errorf("files on disk: %v, want the 2 uploads", got)
	}
}

// Idle sessions and their parts go after a day; so do parts a restart left.
func TestStorageStaleSessions(t *testing.T) {
	e := newStEnv(t, nil)
	// A restart left parts behind (a day old on disk).
	orphan, _ := files.NewID()
	if _, err := e.store.PutPart(orphan, 1, strings.NewReader("old"), 0); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-uploadTTL - time.Hour)
	os.Chtimes(filepath.Join(e.dir, "multipart", orphan), old, old)
	clock := stClock(t)
	key := []string{"Authorization", "Key " + stKey}
	mp := e.ok(e.postJSON("http://h/rest/storage/upload/initiate-multipart", map[string]string{}, key...), "initiate-multipart").str("upload_url")
	if _, err := os.Stat(filepath.Join(e.dir, "multipart", orphan)); !os.IsNotExist(err) {
		t.Errorf("orphaned parts not swept: %v", err)
	}
	p1 := e.ok(e.call(http.MethodPut, mp+"/1", strings.NewReader("one")), "part 1")
	single := e.ok(e.postJSON("http://h/rest/storage/upload/initiate", map[string]string{}, key...), "initiate").str("upload_url")
	ents, _ := os.ReadDir(filepath.Join(e.dir, "multipart"))
	if len(ents) != 1 {
		t.Fatalf("part dirs: %v", ents)
	}
	partDir := filepath.Join(e.dir, "multipart", ents[0].Name())
	// A live session's parts survive the disk sweep even when old on disk.
	os.Chtimes(partDir, old, old)
	*clock = clock.Add(sweepPartsEvery + time.Minute)
	e.pyToken("http://h/rest")
	if _, err := os.Stat(partDir); err != nil {
		t.Fatalf("live parts swept: %v", err)
	}
	// Activity keeps a session alive...
	*clock = clock.Add(uploadTTL - 2*time.Hour)
	e.ok(e.call(http.MethodPut, mp+"/2", strings.NewReader("two")), "part 2 a day after start")
	// ...idleness ends it.
	*clock = clock.Add(uploadTTL + time.Minute)
	e.pyToken("http://h/rest") // any storage call prunes
	if _, err := os.Stat(partDir); !os.IsNotExist(err) {
		t.Errorf("stale parts still on disk: %v", err)
	}
	e.fail(e.call(http.MethodPut, mp+"/3", strings.NewReader("x")), 404, "Upload not found", "part to a stale session")
	e.fail(e.postJSON(mp+"/complete", map[string]any{"parts": []map[string]any{{"partNumber": 1, "etag": p1.str("etag")}}}), 404, "Upload not found", "complete of a stale session")
	e.fail(e.call(http.MethodPut, single, strings.NewReader("x")), 404, "Upload not found", "PUT to a stale upload URL")
}
