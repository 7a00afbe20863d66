package api

// fal's upload flows across a fleet: two servers share one file store and
// one webhook key, and each call of a flow goes to either of them, as
// behind a load balancer without session affinity.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/api/webhook"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
)

// stTurboEP stands in for a realtime app: it answers its prompt.
type stTurboEP struct{}

func (stTurboEP) ID() string { return "fal-ai/fast-turbo-diffusion" }

func (stTurboEP) Run(ctx context.Context, req *pipelines.Request) (any, error) {
	var in map[string]any
	json.Unmarshal(req.Input, &in)
	return map[string]any{"prompt": in["prompt"]}, nil
}

// stRealtime opens a realtime connection to e with tok and sends a prompt:
// it reports the answer's prompt, or the error that refused the connection.
func stRealtime(t *testing.T, e *stEnv, tok string) (prompt, refusal string) {
	t.Helper()
	ts := httptest.NewServer(e.h)
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/run/fal-ai/fast-turbo-diffusion/realtime?fal_jwt_token="+tok, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	b, _ := msgpack.Marshal(map[string]any{"prompt": "ok"})
	if err := c.Write(ctx, websocket.MessageBinary, b); err != nil {
		return "", err.Error()
	}
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var m map[string]any
		if typ == websocket.MessageBinary {
			err = msgpack.Unmarshal(b, &m)
		} else {
			err = json.Unmarshal(b, &m)
		}
		if err != nil {
			t.Fatalf("frame %q: %v", b, err)
		}
		if m["type"] == "x-fal-message" {
			continue
		}
		if e, ok := m["error"].(string); ok {
			return "", e
		}
		p, _ := m["prompt"].(string)
		return p, ""
	}
}

func newStSigner(t *testing.T) *webhook.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return webhook.NewSigner(priv)
}

// newStFleetEnv is a server of a fleet on store, signing with signer.
func newStFleetEnv(t *testing.T, store *files.Store, signer *webhook.Signer) (*stEnv, *Server) {
	t.Helper()
	srv := New(Config{
		Registry:    pipelines.NewRegistry(stOpenEP{}, stTurboEP{}),
		Files:       store,
		Logger:      slog.New(slog.DiscardHandler),
		HTTPClient:  &http.Client{Transport: stNoNet{t}},
		Keys:        []string{stKey},
		Webhooks:    &webhook.Deliverer{Signer: signer},
		SharedFiles: true,
	})
	t.Cleanup(func() { srv.Close(context.Background()) })
	return &stEnv{t: t, h: srv.Handler(), store: store}, srv
}

// stFleet is two servers over one store, the store's leftover parts and
// records (listed by left), and a third server on the same store with
// another webhook key.
type stFleet struct {
	a, b, other *stEnv
	sa, sb      *Server
	left        func() []string
}

func TestStorageFleetLocal(t *testing.T) {
	dir := t.TempDir()
	open := func() *files.Store {
		s, err := files.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	left := func() []string {
		ents, _ := os.ReadDir(filepath.Join(dir, "multipart"))
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	testStorageFleet(t, open, left)
}

func TestStorageFleetS3(t *testing.T) {
	srv := testenv.S3(t)
	open := func() *files.Store {
		c, err := files.ParseS3URL(srv.URL("fleet/"))
		if err != nil {
			t.Fatal(err)
		}
		c.AccessKey, c.SecretKey = srv.AccessKey, srv.SecretKey
		s, err := files.OpenS3Store(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	testStorageFleet(t, open, func() []string { return srv.Keys(t, "fleet/multipart/") })
}

func testStorageFleet(t *testing.T, open func() *files.Store, left func() []string) {
	signer := newStSigner(t)
	f := &stFleet{left: left}
	f.a, f.sa = newStFleetEnv(t, open(), signer)
	f.b, f.sb = newStFleetEnv(t, open(), signer)
	f.other, _ = newStFleetEnv(t, open(), newStSigner(t))
	t.Run("js-single", f.jsSingle)
	t.Run("js-multipart", f.jsMultipart)
	t.Run("python-single", f.pySingle)
	t.Run("python-multipart", f.pyMultipart)
	t.Run("realtime", f.realtime)
	t.Run("foreign-and-tampered", f.refused)
	t.Run("expiry", f.expiry)
}

var stKeyHdr = []string{"Authorization", "Key " + stKey}

// both asserts that both servers serve the file.
func (f *stFleet) both(fileURL string, data []byte, contentType string) {
	f.a.expectFile(fileURL, data, contentType)
	f.b.expectFile(fileURL, data, contentType)
}

func (f *stFleet) noneLeft(t *testing.T) {
	t.Helper()
	if l := f.left(); len(l) != 0 {
		t.Errorf("parts or sessions left in the store: %v", l)
	}
}

func (f *stFleet) jsSingle(t *testing.T) {
	a, b := f.a, f.b
	init := a.ok(a.postJSON("https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3",
		map[string]string{"content_type": "image/png", "file_name": "cat.png"}, stKeyHdr...), "initiate on A")
	up, fileURL := init.str("upload_url"), init.str("file_url")
	a.expect404(fileURL)
	b.expect404(fileURL)
	data := []byte("\x89PNG\r\n\x1a\nfleet")
	if r := b.ok(b.call(http.MethodPut, up, bytes.NewReader(data), "Content-Type", "image/png"), "PUT on B"); r.str("file_url") != fileURL {
		t.Errorf("PUT on B answered %s", r.raw)
	}
	// The client retries on A (its answer got lost): the same answer, the same file.
	if r := a.ok(a.call(http.MethodPut, up, strings.NewReader("again"), "Content-Type", "image/png"), "PUT again on A"); r.str("file_url") != fileURL {
		t.Errorf("PUT again on A answered %s", r.raw)
	}
	f.both(fileURL, data, "image/png")
	f.noneLeft(t)
}

func (f *stFleet) jsMultipart(t *testing.T) {
	a, b := f.a, f.b
	init := a.ok(a.postJSON("http://h/rest/storage/upload/initiate-multipart",
		map[string]string{"content_type": "video/mp4", "file_name": "clip.mp4"}, stKeyHdr...), "initiate-multipart on A")
	up, fileURL := init.str("upload_url"), init.str("file_url")
	chunks := [][]byte{bytes.Repeat([]byte("a"), 5<<20), bytes.Repeat([]byte("b"), 5<<20+7), []byte("tail")}
	var parts []map[string]any
	for i, c := range chunks {
		e := []*stEnv{b, a, b}[i]
		r := e.ok(e.call(http.MethodPut, fmt.Sprintf("%s/%d", up, i+1), bytes.NewReader(c)), "PUT part")
		parts = append(parts, map[string]any{"partNumber": r.js["partNumber"], "etag": r.js["etag"]})
	}
	// Part 3 retried on A with other bytes, then once more with its own:
	// the etag listed decides, whichever server holds the version.
	a.ok(a.call(http.MethodPut, up+"/3", strings.NewReader("other")), "PUT part 3 again on A")
	b.expect404(fileURL)
	done := b.ok(b.postJSON(up+"/complete", map[string]any{"parts": parts}), "complete on B")
	if done.str("file_url") != fileURL {
		t.Errorf("complete answered %s", done.raw)
	}
	if again := a.ok(a.postJSON(up+"/complete", map[string]any{"parts": parts}), "complete again on A"); again.str("file_url") != fileURL {
		t.Errorf("second complete answered %s", again.raw)
	}
	a.fail(a.call(http.MethodPut, up+"/1", strings.NewReader("late")), 400, "already completed", "part after complete on A")
	f.both(fileURL, bytes.Join(chunks, nil), "video/mp4")
	f.noneLeft(t)

	// A complete that names a part nobody stored is refused.
	up = b.ok(b.postJSON("http://h/rest/storage/upload/initiate-multipart", map[string]string{}, stKeyHdr...), "initiate-multipart on B").str("upload_url")
	p1 := a.ok(a.call(http.MethodPut, up+"/1", strings.NewReader("one")), "part 1 on A")
	a.fail(b.postJSON(up+"/complete", map[string]any{"parts": []map[string]any{
		{"partNumber": 1, "etag": p1.str("etag")}, {"partNumber": 2, "etag": p1.str("etag")}}}), 400, "Part 2 was not uploaded", "unknown part")
	a.fail(b.postJSON(up+"/complete", map[string]any{"parts": []map[string]any{
		{"partNumber": 1, "etag": strings.Repeat("0", 32)}}}), 400, "etag", "wrong etag")
	b.ok(b.postJSON(up+"/complete", map[string]any{"parts": []map[string]any{{"partNumber": 1, "etag": p1.str("etag")}}}), "complete on B")
	f.noneLeft(t)
}

func (f *stFleet) pySingle(t *testing.T) {
	tok := f.a.pyToken("https://rest.fal.ai")
	data := []byte("RIFF....WAVEfmt fleet")
	r := f.b.ok(f.b.call(http.MethodPost, "https://v3.fal.media/files/upload", bytes.NewReader(data),
		"Authorization", "Bearer "+tok.str("token"), "Content-Type", "audio/wav", "X-Fal-File-Name", "voice.wav"), "upload on B")
	f.both(r.str("access_url"), data, "audio/wav")
}

func (f *stFleet) pyMultipart(t *testing.T) {
	a, b := f.a, f.b
	bearer := "Bearer " + b.pyToken("http://127.0.0.1:8080/rest").str("token")
	cr := a.ok(a.call(http.MethodPost, "http://127.0.0.1:8080/cdn/files/upload/multipart", nil,
		"Authorization", bearer, "Content-Type", "application/zip", "X-Fal-File-Name", "weights.zip"), "multipart create on A")
	access, uploadID := cr.str("access_url"), cr.str("uploadId")
	chunks := [][]byte{bytes.Repeat([]byte("x"), 1000), bytes.Repeat([]byte("y"), 1000), bytes.Repeat([]byte("z"), 10)}
	var parts []map[string]any
	for i, c := range chunks {
		e := []*stEnv{b, a, b}[i]
		r := e.call(http.MethodPut, fmt.Sprintf("%s/multipart/%s/%d", access, uploadID, i+1), bytes.NewReader(c),
			"Authorization", bearer, "Content-Type", "application/zip")
		if r.code != http.StatusOK || r.hdr.Get("ETag") == "" {
			t.Fatalf("part %d: %d %s", i+1, r.code, r.raw)
		}
		parts = append(parts, map[string]any{"partNumber": i + 1, "etag": r.hdr.Get("ETag")})
	}
	// Under another file URL the uploadId is unknown, on either server.
	other := strings.Replace(access, "weights.zip", "other.zip", 1)
	a.fail(a.postJSON(other+"/multipart/"+uploadID+"/complete", map[string]any{"parts": parts}, "Authorization", bearer), 404, "Upload not found", "complete under another name")
	done := b.ok(b.postJSON(access+"/multipart/"+uploadID+"/complete", map[string]any{"parts": parts}, "Authorization", bearer), "complete on B")
	if done.str("access_url") != access {
		t.Errorf("complete answered %s", done.raw)
	}
	f.both(access, bytes.Join(chunks, nil), "application/zip")
	f.noneLeft(t)
}

func (f *stFleet) realtimeToken(e *stEnv, body map[string]any) string {
	f.a.t.Helper()
	r := e.postJSON("http://h/rest/tokens/", body, stKeyHdr...)
	var tok string
	if r.code != http.StatusOK || json.Unmarshal(r.raw, &tok) != nil {
		f.a.t.Fatalf("token: %d %s", r.code, r.raw)
	}
	stMatch(f.a.t, "realtime token", tok, stHexToken)
	return tok
}

func (f *stFleet) realtime(t *testing.T) {
	onB := &rtTokens{key: f.sb.tokenKey()}
	tok := f.realtimeToken(f.a, map[string]any{"allowed_apps": []string{"fast-turbo-diffusion"}, "token_expiration": 120})
	if p, refusal := stRealtime(t, f.b, tok); p != "ok" {
		t.Errorf("realtime on B with A's token: %q %q", p, refusal)
	}
	if _, refusal := stRealtime(t, f.b, f.realtimeToken(f.other, map[string]any{})); refusal != "Unauthorized" {
		t.Errorf("realtime on B with another key's token: refusal %q, want Unauthorized", refusal)
	}
	if !onB.valid(tok, "fal-ai/fast-turbo-diffusion") {
		t.Errorf("B refuses A's token for its app")
	}
	if onB.valid(tok, "fal-ai/fast-sdxl") || onB.valid(tok, "fal-ai/fast-lcm-diffusion") {
		t.Errorf("B takes A's token for another app")
	}
	// Several apps, named by alias or owner/alias; no apps: any.
	tok = f.realtimeToken(f.a, map[string]any{"allowed_apps": []string{"fast-sdxl", "fal-ai/fast-lcm-diffusion", "x", "y", "z"}})
	for _, id := range []string{"fal-ai/fast-sdxl", "fal-ai/fast-lcm-diffusion"} {
		if !onB.valid(tok, id) {
			t.Errorf("B refuses a token of several apps for %s", id)
		}
	}
	if onB.valid(tok, "fal-ai/fast-turbo-diffusion") {
		t.Errorf("B takes a token of other apps")
	}
	if tok = f.realtimeToken(f.a, map[string]any{}); !onB.valid(tok, "fal-ai/fast-sdxl") {
		t.Errorf("B refuses a token of no apps")
	}
	// Another fleet's token, a tampered one, a CDN token.
	if onB.valid(f.realtimeToken(f.other, map[string]any{}), "fal-ai/fast-sdxl") {
		t.Errorf("B takes a token of a server with another key")
	}
	for i := 0; i < 64; i += 9 {
		if onB.valid(stFlip(tok, i), "fal-ai/fast-sdxl") {
			t.Errorf("B takes a token with hex digit %d changed", i)
		}
	}
	if onB.valid(f.a.pyToken("http://h/rest").str("token"), "fal-ai/fast-sdxl") {
		t.Errorf("B takes a CDN token as a realtime token")
	}
}

// stFlip changes hex digit i of s.
func stFlip(s string, i int) string {
	c := byte('0')
	if s[i] == '0' {
		c = '1'
	}
	return s[:i] + string(c) + s[i+1:]
}

func (f *stFleet) refused(t *testing.T) {
	a, b, other := f.a, f.b, f.other
	up := "https://v3.fal.media/files/upload"
	foreign := other.pyToken("https://rest.fal.ai").str("token")
	b.fail(b.call(http.MethodPost, up, strings.NewReader("x"), "Authorization", "Bearer "+foreign), 401, "Invalid or expired", "another key's token")
	tok := a.pyToken("https://rest.fal.ai").str("token")
	for i := 0; i < 64; i += 5 {
		b.fail(b.call(http.MethodPost, up, strings.NewReader("x"), "Authorization", "Bearer "+stFlip(tok, i)), 401, "Invalid or expired",
			fmt.Sprintf("token with hex digit %d changed", i))
	}
	b.fail(b.call(http.MethodPost, up, strings.NewReader("x"), "Authorization", "Bearer "+f.realtimeToken(a, map[string]any{})), 401,
		"Invalid or expired", "realtime token as a CDN token")

	// Upload URLs of another key, tampered or of another kind are unknown.
	init := other.ok(other.postJSON("http://h/rest/storage/upload/initiate", map[string]string{"file_name": "a.txt"}, stKeyHdr...), "initiate elsewhere")
	b.fail(b.call(http.MethodPut, init.str("upload_url"), strings.NewReader("x")), 404, "Upload not found", "another key's upload URL")
	init = a.ok(a.postJSON("http://h/rest/storage/upload/initiate", map[string]string{"file_name": "a.txt"}, stKeyHdr...), "initiate on A")
	u := init.str("upload_url")
	b.fail(b.call(http.MethodPut, stFlip(u, len(u)-1), strings.NewReader("x")), 404, "Upload not found", "tampered upload URL")
	b.fail(b.call(http.MethodPut, u+"/1", strings.NewReader("x")), 404, "Upload not found", "part to a single upload on B")
	b.ok(b.call(http.MethodPut, u, strings.NewReader("x")), "the upload itself on B")
	v3 := b.ok(b.call(http.MethodPost, "http://h/cdn/files/upload/multipart", nil, "Authorization", "Bearer "+tok), "v3 multipart on B")
	b.fail(a.call(http.MethodPut, "http://h/cdn/uploads/"+v3.str("uploadId")+"/1", strings.NewReader("x")), 404, "Upload not found", "an uploadId is not an upload URL")
}

func (f *stFleet) expiry(t *testing.T) {
	a, b := f.a, f.b
	clock := stClock(t)
	tok := a.pyToken("https://rest.fal.ai").str("token")
	rt := f.realtimeToken(a, map[string]any{"token_expiration": 60})
	init := a.ok(a.postJSON("http://h/rest/storage/upload/initiate-multipart", map[string]string{}, stKeyHdr...), "initiate on A")
	up := init.str("upload_url")
	p1 := b.ok(b.call(http.MethodPut, up+"/1", strings.NewReader("one")), "part 1 on B")

	*clock = clock.Add(2 * time.Minute)
	if (&rtTokens{key: f.sb.tokenKey()}).valid(rt, "fal-ai/fast-sdxl") {
		t.Errorf("an expired realtime token is taken")
	}
	// B kept the session alive for A: activity anywhere counts.
	*clock = clock.Add(uploadTTL - time.Hour)
	p2 := b.ok(b.call(http.MethodPut, up+"/2", strings.NewReader("two")), "part 2 on B")
	*clock = clock.Add(2 * time.Hour)
	p3 := a.ok(a.call(http.MethodPut, up+"/3", strings.NewReader("three")), "part 3 on A, a day after start")

	*clock = clock.Add(cdnTokenTTL)
	b.fail(b.call(http.MethodPost, "https://v3.fal.media/files/upload", strings.NewReader("x"), "Authorization", "Bearer "+tok), 401, "Invalid or expired", "expired token")
	*clock = clock.Add(uploadTTL)
	parts := []map[string]any{{"partNumber": 1, "etag": p1.str("etag")}, {"partNumber": 2, "etag": p2.str("etag")}, {"partNumber": 3, "etag": p3.str("etag")}}
	b.fail(b.postJSON(up+"/complete", map[string]any{"parts": parts}), 404, "Upload not found", "complete of a stale session on B")
	a.fail(a.postJSON(up+"/complete", map[string]any{"parts": parts}), 404, "Upload not found", "complete of a stale session on A")

	// The store's sweep of idle uploads takes the session's record too.
	if _, err := a.store.SweepParts(time.Now().Add(time.Minute), nil); err != nil {
		t.Fatal(err)
	}
	f.noneLeft(t)
	b.fail(b.call(http.MethodPut, up+"/4", strings.NewReader("x")), 404, "Upload not found", "part after the sweep")
}
