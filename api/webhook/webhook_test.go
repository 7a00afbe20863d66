package webhook

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newSigner(t *testing.T) *Signer {
	t.Helper()
	s, err := LoadOrCreate(filepath.Join(t.TempDir(), "keys", "webhook.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signedHeader builds the headers a delivery would carry.
func signedHeader(s *Signer, reqID, userID string, ts time.Time, body []byte) http.Header {
	h := http.Header{}
	h.Set(HeaderRequestID, reqID)
	h.Set(HeaderUserID, userID)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, s.Sign(reqID, userID, ts, body))
	return h
}

// The published JWKS alone must be enough to check a signature over fal's
// exact message format, without any of this package's parsing.
func TestSignatureVerifiesWithPublishedJWKS(t *testing.T) {
	s := newSigner(t)
	var doc struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(s.JWKS(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Keys) != 1 {
		t.Fatalf("keys = %d, want 1", len(doc.Keys))
	}
	k := doc.Keys[0]
	if k["kty"] != "OKP" || k["crv"] != "Ed25519" || k["kid"] != s.KeyID() || len(k) != 4 {
		t.Fatalf("jwk = %v", k)
	}
	pub, err := base64.RawURLEncoding.DecodeString(k["x"])
	if err != nil || len(pub) != ed25519.PublicKeySize {
		t.Fatalf("x = %q: %v", k["x"], err)
	}
	kidSum := sha256.Sum256(pub)
	if want := hex.EncodeToString(kidSum[:])[:16]; k["kid"] != want {
		t.Fatalf("kid = %s, want %s", k["kid"], want)
	}

	body := []byte(`{"request_id":"r1","status":"OK"}`)
	ts := time.Unix(1700000000, 0)
	sig, err := hex.DecodeString(s.Sign("r1", "u1", ts, body))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	msg := "r1\nu1\n1700000000\n" + hex.EncodeToString(sum[:])
	if !ed25519.Verify(pub, []byte(msg), sig) {
		t.Fatal("signature does not verify over the documented message")
	}
	if err := Verify(s.JWKS(), signedHeader(s, "r1", "u1", ts, body), body, ts.Add(time.Minute)); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

func TestVerifyRejectsTampering(t *testing.T) {
	s := newSigner(t)
	body := []byte(`{"status":"OK"}`)
	ts := time.Unix(1700000000, 0)
	now := ts.Add(10 * time.Second)
	good := func() http.Header { return signedHeader(s, "req-1", "user-1", ts, body) }

	cases := map[string]struct {
		hdr  http.Header
		body []byte
		want error
	}{
		"body":       {good(), []byte(`{"status":"ERROR"}`), ErrBadSignature},
		"timestamp":  {func() http.Header { h := good(); h.Set(HeaderTimestamp, "1700000001"); return h }(), body, ErrBadSignature},
		"request id": {func() http.Header { h := good(); h.Set(HeaderRequestID, "req-2"); return h }(), body, ErrBadSignature},
		"user id":    {func() http.Header { h := good(); h.Set(HeaderUserID, "user-2"); return h }(), body, ErrBadSignature},
		"signature":  {func() http.Header { h := good(); h.Set(HeaderSignature, "zz"); return h }(), body, ErrBadSignature},
		"missing":    {func() http.Header { h := good(); h.Del(HeaderSignature); return h }(), body, ErrMissingHeader},
	}
	for name, c := range cases {
		if err := Verify(s.JWKS(), c.hdr, c.body, now); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", name, err, c.want)
		}
	}
	// A different key must not verify.
	if err := Verify(newSigner(t).JWKS(), good(), body, now); !errors.Is(err, ErrBadSignature) {
		t.Errorf("foreign key: err = %v", err)
	}
}

func TestVerifyTimestampWindow(t *testing.T) {
	s := newSigner(t)
	body := []byte(`{}`)
	ts := time.Unix(1700000000, 0)
	h := signedHeader(s, "r", "u", ts, body)
	for _, off := range []time.Duration{-300 * time.Second, 0, 300 * time.Second} {
		if err := Verify(s.JWKS(), h, body, ts.Add(off)); err != nil {
			t.Errorf("offset %s: %v", off, err)
		}
	}
	for _, off := range []time.Duration{-301 * time.Second, 301 * time.Second, time.Hour} {
		if err := Verify(s.JWKS(), h, body, ts.Add(off)); !errors.Is(err, ErrStaleTimestamp) {
			t.Errorf("offset %s: err = %v, want stale", off, err)
		}
	}
}

// Receivers try every published key (rotation), skipping ones they cannot use.
func TestVerifyTriesEveryKey(t *testing.T) {
	s, other := newSigner(t), newSigner(t)
	var a, b map[string][]json.RawMessage
	_ = json.Unmarshal(other.JWKS(), &a)
	_ = json.Unmarshal(s.JWKS(), &b)
	keys := append([]json.RawMessage{json.RawMessage(`{"kty":"RSA","n":"AQAB","e":"AQAB"}`)}, a["keys"]...)
	keys = append(keys, b["keys"]...)
	doc, _ := json.Marshal(map[string]any{"keys": keys})

	body := []byte(`{}`)
	ts := time.Now()
	if err := Verify(doc, signedHeader(s, "r", "u", ts, body), body, ts); err != nil {
		t.Fatal(err)
	}
}

func TestLoadOrCreatePersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "webhook.pem")
	a, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, want 0600", fi.Mode().Perm())
	}
	b, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if a.KeyID() != b.KeyID() || string(a.JWKS()) != string(b.JWKS()) {
		t.Fatalf("key changed across loads: %s vs %s", a.KeyID(), b.KeyID())
	}
	// What the first signer signs, the reloaded key set verifies.
	ts := time.Now()
	if err := Verify(b.JWKS(), signedHeader(a, "r", "u", ts, nil), nil, ts); err != nil {
		t.Fatal(err)
	}
	// No temp files left beside the key.
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("dir has %d entries, want 1", len(ents))
	}

	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(bad); err == nil {
		t.Fatal("corrupt key file accepted")
	}
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m
}

func TestPayloadEnvelopes(t *testing.T) {
	ok := Payload(Result{RequestID: "r1", OK: true, Payload: json.RawMessage(`{"images":[{"url":"x"}]}`)})
	want := `{"request_id":"r1","gateway_request_id":"r1","status":"OK","error":null,"payload":{"images":[{"url":"x"}]}}`
	if string(ok) != want {
		t.Errorf("success:\n got %s\nwant %s", ok, want)
	}

	e := decode(t, Payload(Result{RequestID: "r2", ErrorStatus: 422,
		ErrorBody: json.RawMessage(`{"detail":[{"loc":["body","prompt"],"msg":"field required","type":"value_error.missing"}]}`)}))
	wantErr := map[string]any{
		"request_id": "r2", "gateway_request_id": "r2", "status": "ERROR",
		"error": "Invalid status code: 422",
		"payload": map[string]any{"detail": []any{map[string]any{
			"loc": []any{"body", "prompt"}, "msg": "field required", "type": "value_error.missing"}}},
	}
	if !reflect.DeepEqual(e, wantErr) {
		t.Errorf("error envelope = %v", e)
	}

	bad := decode(t, Payload(Result{RequestID: "r3", OK: true, Payload: json.RawMessage(`{"truncated":`)}))
	if bad["payload"] != nil || bad["status"] != "OK" || bad["error"] != nil {
		t.Errorf("non-JSON envelope = %v", bad)
	}
	if why, _ := bad["payload_error"].(string); why == "" {
		t.Errorf("payload_error missing: %v", bad)
	}
	if _, has := bad["payload"]; !has {
		t.Error("payload key must be present (null)")
	}

	empty := decode(t, Payload(Result{RequestID: "r4"}))
	if empty["error"] != "Invalid status code: 500" || empty["payload"] != nil || empty["payload_error"] != nil {
		t.Errorf("bare error envelope = %v", empty)
	}
}

// received records what a test receiver saw.
type received struct {
	mu   sync.Mutex
	hdrs []http.Header
	body [][]byte
}

func (r *received) add(req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hdrs = append(r.hdrs, req.Header.Clone())
	r.body = append(r.body, b)
}

// server listens on 127.0.0.1 only.
func server(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(h)
	ts.Listener.Close()
	ts.Listener = l
	ts.Start()
	t.Cleanup(ts.Close)
	return ts
}

func tiny(n int) []time.Duration {
	b := make([]time.Duration, n)
	for i := range b {
		b[i] = time.Millisecond
	}
	return b
}

func TestDeliverRetriesUntilSuccess(t *testing.T) {
	s := newSigner(t)
	var rec received
	var calls atomic.Int32
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		rec.add(r)
		if calls.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	// A clock that jumps 7 s per attempt shows each one is re-signed.
	var tick atomic.Int64
	base := time.Now()
	d := &Deliverer{Signer: s, UserID: "local", Backoff: tiny(6),
		now: func() time.Time { return base.Add(time.Duration(tick.Add(1)) * 7 * time.Second) }}
	res := Result{RequestID: "req-9", OK: true, Payload: json.RawMessage(`{"a":1}`)}
	if err := d.Deliver(context.Background(), srv.URL+"/hook?x=1", res); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 3 {
		t.Fatalf("attempts = %d, want 3", calls.Load())
	}
	seen := map[string]bool{}
	for i, h := range rec.hdrs {
		if string(rec.body[i]) != string(Payload(res)) {
			t.Errorf("attempt %d body = %s", i, rec.body[i])
		}
		if h.Get("Content-Type") != "application/json" || h.Get(HeaderRequestID) != "req-9" || h.Get(HeaderUserID) != "local" {
			t.Errorf("attempt %d headers = %v", i, h)
		}
		ts, _ := strconv.ParseInt(h.Get(HeaderTimestamp), 10, 64)
		if err := Verify(s.JWKS(), h, rec.body[i], time.Unix(ts, 0)); err != nil {
			t.Errorf("attempt %d: %v", i, err)
		}
		seen[h.Get(HeaderTimestamp)] = true
	}
	if len(seen) != 3 {
		t.Errorf("timestamps not fresh per attempt: %v", seen)
	}
}

func TestDeliverGivesUp(t *testing.T) {
	var calls atomic.Int32
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	})
	d := &Deliverer{Signer: newSigner(t), Backoff: tiny(3)}
	err := d.Deliver(context.Background(), srv.URL, Result{RequestID: "r", OK: true})
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != 500 {
		t.Fatalf("err = %v, want StatusError 500", err)
	}
	if calls.Load() != 4 {
		t.Fatalf("attempts = %d, want 1 + len(Backoff) = 4", calls.Load())
	}

	// Network errors are retried too: a closed listener refuses every attempt.
	srv.Close()
	err = d.Deliver(context.Background(), srv.URL, Result{RequestID: "r", OK: true})
	if err == nil || errors.As(err, &se) {
		t.Fatalf("closed receiver: err = %v, want a network error", err)
	}
}

func TestDefaultBackoffSchedule(t *testing.T) {
	want := []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second, time.Minute}
	if !reflect.DeepEqual(DefaultBackoff, want) {
		t.Fatalf("DefaultBackoff = %v", DefaultBackoff)
	}
}

func TestDeliverStopsOnCancel(t *testing.T) {
	var calls atomic.Int32
	first := make(chan struct{})
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			close(first)
		}
		w.WriteHeader(http.StatusBadGateway)
	})
	ctx, cancel := context.WithCancel(context.Background())
	d := &Deliverer{Signer: newSigner(t), Backoff: []time.Duration{time.Hour}}
	done := make(chan error, 1)
	go func() { done <- d.Deliver(ctx, srv.URL, Result{RequestID: "r", OK: true}) }()
	<-first
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Deliver kept waiting after cancel")
	}
	if calls.Load() != 1 {
		t.Fatalf("attempts = %d, want 1", calls.Load())
	}

	// A receiver that hangs is abandoned when ctx ends mid-request.
	release := make(chan struct{})
	hang := server(t, func(w http.ResponseWriter, r *http.Request) {
		// Reading the body lets the server notice the client hanging up.
		_, _ = io.ReadAll(r.Body)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before hang.Close
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if err := d.Deliver(ctx2, hang.URL, Result{RequestID: "r", OK: true}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hanging receiver: err = %v", err)
	}
}

// guardClient fails any dial that is not to 127.0.0.1 and counts dials, so a
// bug cannot reach another address and a refused target shows zero dials.
func guardClient(dials *atomic.Int32) *http.Client {
	var dialer net.Dialer
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			host, _, _ := net.SplitHostPort(addr)
			if host != "127.0.0.1" {
				return nil, errors.New("test guard: dial to " + addr)
			}
			return dialer.DialContext(ctx, network, addr)
		},
	}}
}

func TestDisallowedHostRefusedWithoutConnection(t *testing.T) {
	var hits, dials atomic.Int32
	srv := server(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	d := &Deliverer{Signer: newSigner(t), Client: guardClient(&dials), Backoff: tiny(2),
		Allowed: func(string) bool { return false }}
	if err := d.Check(srv.URL); !errors.Is(err, ErrHostNotAllowed) {
		t.Fatalf("Check: %v", err)
	}
	if err := d.Deliver(context.Background(), srv.URL, Result{RequestID: "r", OK: true}); !errors.Is(err, ErrHostNotAllowed) {
		t.Fatalf("Deliver: %v", err)
	}
	if hits.Load() != 0 || dials.Load() != 0 {
		t.Fatalf("hits = %d, dials = %d; want none", hits.Load(), dials.Load())
	}
}

func TestRedirectToDisallowedHostRefused(t *testing.T) {
	var dials atomic.Int32
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://blocked.invalid/hook", http.StatusTemporaryRedirect)
	})
	d := &Deliverer{Signer: newSigner(t), Client: guardClient(&dials), Backoff: tiny(3),
		Allowed: func(h string) bool { return h == "127.0.0.1" }}
	err := d.Deliver(context.Background(), srv.URL, Result{RequestID: "r", OK: true})
	if !errors.Is(err, ErrHostNotAllowed) {
		t.Fatalf("err = %v, want ErrHostNotAllowed", err)
	}
	if dials.Load() != 1 {
		t.Fatalf("dials = %d, want only the one to 127.0.0.1", dials.Load())
	}
}

func TestCheck(t *testing.T) {
	d := &Deliverer{} // nil Allowed: loopback only
	for _, u := range []string{"http://127.0.0.1:8080/hook", "https://localhost/x", "http://[::1]:9/", "HTTP://127.0.0.2/"} {
		if err := d.Check(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	bad := map[string]error{
		"ftp://127.0.0.1/":         ErrInvalidURL,
		"127.0.0.1:8080/hook":      ErrInvalidURL,
		"http:///nohost":           ErrInvalidURL,
		"http://%zz/":              ErrInvalidURL,
		"http://example.com/hook":  ErrHostNotAllowed,
		"http://10.0.0.1/hook":     ErrHostNotAllowed,
		"http://localhost.evil/":   ErrHostNotAllowed,
		"http://127.0.0.1.nip.io/": ErrHostNotAllowed,
	}
	for u, want := range bad {
		if err := d.Check(u); !errors.Is(err, want) {
			t.Errorf("%s: err = %v, want %v", u, err, want)
		}
	}
	// A custom rule sees the bare host name, without port or brackets.
	var got []string
	d.Allowed = func(h string) bool { got = append(got, h); return true }
	_ = d.Check("https://Hooks.Example.com:8443/a")
	_ = d.Check("http://[::1]:80/")
	if !reflect.DeepEqual(got, []string{"Hooks.Example.com", "::1"}) {
		t.Errorf("Allowed saw %v", got)
	}
}

func TestNewSignerMatchesLoaded(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s := NewSigner(priv)
	if len(s.KeyID()) != 16 || !s.PublicKey().Equal(priv.Public()) {
		t.Fatalf("kid = %q", s.KeyID())
	}
}
