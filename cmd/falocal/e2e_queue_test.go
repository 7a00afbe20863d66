package main

// End-to-end tests of the queue and what surrounds it, on the real binary:
// a kill -9 and a graceful drain over the same queue.db, signed webhooks,
// API keys, the refusal to listen beyond loopback without keys, and direct
// TLS on the serving port. All traffic stays on 127.0.0.1.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"image"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/falocal/falocal/internal/testenv"
)

const rembgID = "fal-ai/imageutils/rembg"

// astronautBody is a rembg input with the pinned photograph as a data URI.
func astronautBody(t *testing.T) []byte {
	t.Helper()
	photo, err := os.ReadFile(testenv.Asset(t, "astronaut.png"))
	if err != nil {
		t.Fatal(err)
	}
	return mustJSON(map[string]any{"image_url": dataURI("image/png", photo)})
}

// do sends one request; hdr is name, value pairs.
func do(t *testing.T, c *http.Client, method, u string, body []byte, hdr ...string) reply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, u, err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

// submitted is fal's answer to a queue submit.
type submitted struct {
	RequestID     string `json:"request_id"`
	ResponseURL   string `json:"response_url"`
	StatusURL     string `json:"status_url"`
	CancelURL     string `json:"cancel_url"`
	QueuePosition int    `json:"queue_position"`
}

// rebase moves the request's URLs from one server base to another (after a
// restart on a new port).
func (r submitted) rebase(t *testing.T, from, to string) submitted {
	t.Helper()
	for _, u := range []*string{&r.ResponseURL, &r.StatusURL, &r.CancelURL} {
		rest, ok := strings.CutPrefix(*u, from+"/")
		if !ok {
			t.Fatalf("url %s is not under %s", *u, from)
		}
		*u = to + "/" + rest
	}
	return r
}

func submitQueue(t *testing.T, c *http.Client, u string, body []byte, hdr ...string) submitted {
	t.Helper()
	r := do(t, c, "POST", u, body, hdr...)
	if r.status != 200 {
		t.Fatalf("submit %s: %d %s", u, r.status, r.body)
	}
	var s submitted
	if err := json.Unmarshal(r.body, &s); err != nil || s.RequestID == "" ||
		!strings.HasSuffix(s.StatusURL, "/requests/"+s.RequestID+"/status") ||
		s.ResponseURL != strings.TrimSuffix(s.StatusURL, "/status") {
		t.Fatalf("submit %s: bad answer %s (%v)", u, r.body, err)
	}
	return s
}

type logLine struct {
	Message string `json:"message"`
	Level   string `json:"level"`
}

type queueStatus struct {
	Status    string    `json:"status"`
	RequestID string    `json:"request_id"`
	Logs      []logLine `json:"logs"`
	Error     string    `json:"error"`
	ErrorType string    `json:"error_type"`
}

func (q queueStatus) logsWith(level, substr string) int {
	n := 0
	for _, l := range q.Logs {
		if l.Level == level && strings.Contains(l.Message, substr) {
			n++
		}
	}
	return n
}

func getStatus(t *testing.T, c *http.Client, statusURL string, hdr ...string) queueStatus {
	t.Helper()
	r := do(t, c, "GET", statusURL+"?logs=1", nil, hdr...)
	if r.status != 200 && r.status != 202 {
		t.Fatalf("GET %s: %d %s", statusURL, r.status, r.body)
	}
	var st queueStatus
	if err := json.Unmarshal(r.body, &st); err != nil {
		t.Fatalf("GET %s: %v: %s", statusURL, err, r.body)
	}
	if (st.Status == "COMPLETED") != (r.status == 200) {
		t.Errorf("GET %s: HTTP %d for status %s", statusURL, r.status, st.Status)
	}
	return st
}

// waitStatus polls until the request reaches want (or COMPLETED, which ends
// every wait).
func waitStatus(t *testing.T, c *http.Client, statusURL, want string, timeout time.Duration, hdr ...string) queueStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := getStatus(t, c, statusURL, hdr...)
		if st.Status == want || st.Status == "COMPLETED" {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still %s after %s, want %s", statusURL, st.Status, timeout, want)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// resultImage fetches a completed request's result and its image.
func resultImage(t *testing.T, c *http.Client, responseURL string, hdr ...string) imageOut {
	t.Helper()
	r := do(t, c, "GET", responseURL, nil, hdr...)
	if r.status != 200 {
		t.Fatalf("GET %s: %d %s", responseURL, r.status, r.body)
	}
	var out struct{ Image imageOut }
	if err := json.Unmarshal(r.body, &out); err != nil || out.Image.ContentType != "image/png" || out.Image.URL == "" {
		t.Fatalf("GET %s: result %s (%v)", responseURL, r.body, err)
	}
	return out.Image
}

func hostPort(t *testing.T, base string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// TestE2EQueueRestartAfterKill: kill -9 while one request runs and two wait;
// after a restart over the same data directory all three complete, and the
// interrupted one says in its logs that it was queued again.
func TestE2EQueueRestartAfterKill(t *testing.T) {
	s := startServer(t, "--workers", "1")
	body := astronautBody(t)
	var reqs []submitted
	for range 3 {
		reqs = append(reqs, submitQueue(t, nil, s.base+"/"+rembgID, body))
	}
	if reqs[2].QueuePosition < 1 {
		t.Errorf("third request has queue position %d with one worker busy", reqs[2].QueuePosition)
	}
	if st := waitStatus(t, nil, reqs[0].StatusURL, "IN_PROGRESS", 30*time.Second); st.Status != "IN_PROGRESS" {
		t.Fatalf("first request %s before the kill; want it running", st.Status)
	}
	// No wait for the disk: the queue stores IN_PROGRESS before any client
	// can see it (api/queue's worker saves the started record first), and a
	// run takes seconds, so it is still running at the kill.
	for i, r := range reqs {
		want := "IN_QUEUE"
		if i == 0 {
			want = "IN_PROGRESS"
		}
		if st := getStatus(t, nil, r.StatusURL); st.Status != want {
			t.Fatalf("request %d is %s just before the kill, want %s", i, st.Status, want)
		}
	}
	s.Kill(t)
	if _, err := http.Get(s.base + "/healthz"); err == nil {
		t.Fatal("server still answers after SIGKILL")
	}

	// Same address: the URLs the submit returned stay valid.
	s2 := testenv.StartServerAt(t, s.dataDir, hostPort(t, s.base), "--workers", "1")
	for i, r := range reqs {
		st := waitStatus(t, nil, r.StatusURL, "COMPLETED", 90*time.Second)
		if st.Error != "" || st.ErrorType != "" {
			t.Errorf("request %d failed after the restart: %s (%s)", i, st.Error, st.ErrorType)
			continue
		}
		warns := st.logsWith("WARN", "restarted")
		if i == 0 && warns != 1 {
			t.Errorf("interrupted request has %d restart WARN lines, want 1: %+v", warns, st.Logs)
		}
		if i > 0 && warns != 0 {
			t.Errorf("queued request %d has a restart WARN line: %+v", i, st.Logs)
		}
		img := resultImage(t, nil, r.ResponseURL)
		if !strings.HasPrefix(img.URL, s2.Base+"/cdn/files/") {
			t.Errorf("request %d: image url %s", i, img.URL)
		}
		if i == 0 {
			checkAstronaut(t, fetchImage(t, img))
		} else {
			fetchImage(t, img)
		}
	}
	if !strings.Contains(s2.Log(), "re-queued") {
		t.Errorf("restarted server did not log the re-queue")
	}
}

// TestE2EQueueGracefulDrain: SIGTERM lets the running request finish, keeps
// the waiting ones on disk, and exits 0; they run after the next start.
func TestE2EQueueGracefulDrain(t *testing.T) {
	s := startServer(t, "--workers", "1")
	body := astronautBody(t)
	var reqs []submitted
	for range 3 {
		reqs = append(reqs, submitQueue(t, nil, s.base+"/"+rembgID, body))
	}
	if st := waitStatus(t, nil, reqs[0].StatusURL, "IN_PROGRESS", 30*time.Second); st.Status != "IN_PROGRESS" {
		t.Fatalf("first request %s before SIGTERM; want it running", st.Status)
	}
	if code := s.Stop(t, syscall.SIGTERM, 60*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0:\n%s", code, s.Log())
	}
	if !strings.Contains(s.Log(), "shutting down") {
		t.Errorf("no shutdown line in the log")
	}

	// A new port: the URLs are rebuilt on the new base.
	s2 := testenv.StartServerAt(t, s.dataDir, "", "--workers", "1")
	for i := range reqs {
		reqs[i] = reqs[i].rebase(t, s.base, s2.Base)
	}
	// Checked at once: a re-run could not have finished yet.
	first := getStatus(t, nil, reqs[0].StatusURL)
	if first.Status != "COMPLETED" || first.Error != "" {
		t.Fatalf("running request not completed before exit: %+v", first)
	}
	if n := first.logsWith("WARN", "restarted"); n != 0 {
		t.Errorf("drained request says it was interrupted: %+v", first.Logs)
	}
	if n := first.logsWith("INFO", "request started"); n != 1 {
		t.Errorf("drained request started %d times: %+v", n, first.Logs)
	}
	// Draining takes no new work: both waiting requests are still waiting.
	for i, r := range reqs[1:] {
		if st := getStatus(t, nil, r.StatusURL); st.Status == "COMPLETED" {
			t.Errorf("waiting request %d ran during the drain: %+v", i+1, st)
		}
	}
	img := resultImage(t, nil, reqs[0].ResponseURL)
	checkAstronaut(t, fetchImage(t, onBase(t, img, s.base, s2.Base)))
	for i, r := range reqs[1:] {
		st := waitStatus(t, nil, r.StatusURL, "COMPLETED", 90*time.Second)
		if st.Error != "" {
			t.Errorf("waiting request %d failed after the restart: %s", i+1, st.Error)
			continue
		}
		img := resultImage(t, nil, r.ResponseURL)
		fetchImage(t, onBase(t, img, s.base, s2.Base))
	}
}

// onBase checks that an output file URL is on the old base (the origin the
// request was submitted to, which the server keeps for its outputs) or on
// the new one, and returns it on the new one, where the file is served now.
func onBase(t *testing.T, img imageOut, old, cur string) imageOut {
	t.Helper()
	for _, b := range []string{cur, old} {
		if rest, ok := strings.CutPrefix(img.URL, b+"/cdn/files/"); ok {
			img.URL = cur + "/cdn/files/" + rest
			return img
		}
	}
	t.Fatalf("image url %s is on neither %s nor %s", img.URL, old, cur)
	return img
}

type delivery struct {
	header http.Header
	body   []byte
}

// TestE2EWebhook: fal_webhook gets fal's envelope, signed with the key the
// server publishes as a JWKS; bad input gets an ERROR envelope; webhooks to
// other hosts are refused at submit.
func TestE2EWebhook(t *testing.T) {
	got := make(chan delivery, 8)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil || r.Method != "POST" || r.URL.Path != "/hook" {
			t.Errorf("receiver: %s %s (%v)", r.Method, r.URL.Path, err)
		}
		got <- delivery{r.Header.Clone(), b}
	}))
	defer recv.Close()
	if !strings.HasPrefix(recv.URL, "http://127.0.0.1:") {
		t.Fatalf("receiver on %s, want loopback", recv.URL)
	}
	s := startServer(t)
	hook := "?fal_webhook=" + url.QueryEscape(recv.URL+"/hook")
	good := submitQueue(t, nil, s.base+"/"+rembgID+hook, astronautBody(t))
	bad := submitQueue(t, nil, s.base+"/"+rembgID+hook, []byte(`{"image_url": 5}`))

	r := do(t, nil, "GET", s.base+"/.well-known/jwks.json", nil)
	var set struct {
		Keys []struct{ Kty, Crv, X string }
	}
	if err := json.Unmarshal(r.body, &set); r.status != 200 || err != nil || len(set.Keys) == 0 ||
		set.Keys[0].Kty != "OKP" || set.Keys[0].Crv != "Ed25519" {
		t.Fatalf("jwks: %d %s", r.status, r.body)
	}
	pub, err := base64.RawURLEncoding.DecodeString(set.Keys[0].X)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		t.Fatalf("jwks key x=%q: %v", set.Keys[0].X, err)
	}

	byID := map[string]delivery{}
	timeout := time.After(90 * time.Second)
	for len(byID) < 2 {
		select {
		case d := <-got:
			id := d.header.Get("X-Fal-Webhook-Request-Id")
			if _, dup := byID[id]; dup {
				t.Errorf("second delivery for %s", id)
			}
			byID[id] = d
		case <-timeout:
			t.Fatalf("webhooks received for %d of 2 requests", len(byID))
		}
	}

	type envelope struct {
		RequestID        string          `json:"request_id"`
		GatewayRequestID string          `json:"gateway_request_id"`
		Status           string          `json:"status"`
		Error            *string         `json:"error"`
		Payload          json.RawMessage `json:"payload"`
	}
	check := func(id string) envelope {
		t.Helper()
		d, ok := byID[id]
		if !ok {
			t.Fatalf("no webhook for %s (got %v)", id, byID)
		}
		h := d.header
		for _, name := range []string{"X-Fal-Webhook-Request-Id", "X-Fal-Webhook-User-Id", "X-Fal-Webhook-Timestamp", "X-Fal-Webhook-Signature"} {
			if len(h.Values(name)) == 0 {
				t.Errorf("webhook for %s lacks %s", id, name)
			}
		}
		ts, err := strconv.ParseInt(h.Get("X-Fal-Webhook-Timestamp"), 10, 64)
		if d := time.Since(time.Unix(ts, 0)); err != nil || d > 5*time.Minute || d < -5*time.Minute {
			t.Errorf("timestamp %q is not now", h.Get("X-Fal-Webhook-Timestamp"))
		}
		sig, err := hex.DecodeString(h.Get("X-Fal-Webhook-Signature"))
		if err != nil {
			t.Fatalf("signature %q: %v", h.Get("X-Fal-Webhook-Signature"), err)
		}
		msg := func(body []byte) []byte {
			sum := sha256.Sum256(body)
			return []byte(h.Get("X-Fal-Webhook-Request-Id") + "\n" + h.Get("X-Fal-Webhook-User-Id") + "\n" +
				h.Get("X-Fal-Webhook-Timestamp") + "\n" + hex.EncodeToString(sum[:]))
		}
		if !ed25519.Verify(pub, msg(d.body), sig) {
			t.Errorf("webhook for %s: signature does not verify with the JWKS key", id)
		}
		if ed25519.Verify(pub, msg(append(d.body, ' ')), sig) {
			t.Errorf("webhook for %s: signature verifies a different body", id)
		}
		var env envelope
		if err := json.Unmarshal(d.body, &env); err != nil {
			t.Fatalf("webhook body %s: %v", d.body, err)
		}
		if env.RequestID != id || env.GatewayRequestID != id {
			t.Errorf("envelope ids %q/%q, want %q", env.RequestID, env.GatewayRequestID, id)
		}
		return env
	}

	env := check(good.RequestID)
	var out struct{ Image imageOut }
	if env.Status != "OK" || env.Error != nil || json.Unmarshal(env.Payload, &out) != nil || out.Image.URL == "" {
		t.Errorf("success envelope %s", byID[good.RequestID].body)
	} else {
		checkAstronaut(t, fetchImage(t, out.Image))
	}
	env = check(bad.RequestID)
	var detail struct {
		Detail json.RawMessage `json:"detail"`
	}
	if env.Status != "ERROR" || env.Error == nil || *env.Error != "Invalid status code: 422" ||
		json.Unmarshal(env.Payload, &detail) != nil || len(detail.Detail) == 0 || !strings.Contains(string(detail.Detail), "image_url") {
		t.Errorf("error envelope %s", byID[bad.RequestID].body)
	}

	// The webhook agrees with the queue.
	if st := getStatus(t, nil, bad.StatusURL); st.Status != "COMPLETED" || st.Error == "" {
		t.Errorf("bad request status %+v", st)
	}

	// A webhook elsewhere than loopback is refused before anything is queued.
	r = do(t, nil, "POST", s.base+"/"+rembgID+"?fal_webhook="+url.QueryEscape("http://example.com/hook"), astronautBody(t))
	if r.status != 422 || !strings.Contains(string(r.body), "fal_webhook") {
		t.Errorf("non-loopback webhook: %d %s, want 422 naming fal_webhook", r.status, r.body)
	}
	select {
	case d := <-got:
		t.Errorf("unexpected extra delivery %s", d.body)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestE2EAuth: with -keys every API route wants fal's Key header; health,
// the CA certificate and output files do not.
func TestE2EAuth(t *testing.T) {
	s := startServer(t, "--keys", "id:secret")
	body := astronautBody(t)
	key := []string{"Authorization", "Key id:secret"}
	run := s.base + "/run/" + rembgID

	wantDenied := func(what string, r reply, status int) {
		t.Helper()
		var b struct {
			Detail string `json:"detail"`
		}
		if r.status != status || json.Unmarshal(r.body, &b) != nil || b.Detail == "" {
			t.Errorf("%s: %d %s, want %d with fal's {detail}", what, r.status, r.body, status)
		}
	}
	wantDenied("run without key", do(t, nil, "POST", run, body), 401)
	wantDenied("run with Bearer", do(t, nil, "POST", run, body, "Authorization", "Bearer id:secret"), 401)
	wantDenied("run with wrong secret", do(t, nil, "POST", run, body, "Authorization", "Key id:wrong"), 403)
	wantDenied("submit without key", do(t, nil, "POST", s.base+"/"+rembgID, body), 401)
	wantDenied("submit with wrong secret", do(t, nil, "POST", s.base+"/"+rembgID, body, "Authorization", "Key id:wrong"), 403)

	r := do(t, nil, "POST", run, body, key...)
	if r.status != 200 {
		t.Fatalf("run with key: %d %s", r.status, r.body)
	}
	var out struct{ Image imageOut }
	json.Unmarshal(r.body, &out)
	fetchImage(t, out.Image) // no key

	sub := submitQueue(t, nil, s.base+"/"+rembgID, body, key...)
	wantDenied("status without key", do(t, nil, "GET", sub.StatusURL, nil), 401)
	wantDenied("status with wrong secret", do(t, nil, "GET", sub.StatusURL, nil, "Authorization", "Key id:wrong"), 403)
	wantDenied("result without key", do(t, nil, "GET", sub.ResponseURL, nil), 401)
	wantDenied("cancel without key", do(t, nil, "PUT", sub.CancelURL, nil), 401)
	if st := waitStatus(t, nil, sub.StatusURL, "COMPLETED", 60*time.Second, key...); st.Error != "" {
		t.Fatalf("queued request failed: %+v", st)
	}
	fetchImage(t, resultImage(t, nil, sub.ResponseURL, key...))
	if r := do(t, nil, "PUT", sub.CancelURL, nil, key...); r.status != 400 || !strings.Contains(string(r.body), "ALREADY_COMPLETED") {
		t.Errorf("cancel with key: %d %s, want 400 ALREADY_COMPLETED", r.status, r.body)
	}

	for _, p := range []string{"/healthz", "/ca.pem"} {
		if r := do(t, nil, "GET", s.base+p, nil); r.status != 200 {
			t.Errorf("GET %s without key: %d %s", p, r.status, r.body)
		}
	}
}

// TestE2EExposure: listening beyond loopback without API keys is refused at
// start, with a message that says how to fix it.
func TestE2EExposure(t *testing.T) {
	bin, lib := testenv.Binary(t), testenv.ORTLibrary(t)
	for _, listen := range []string{"0.0.0.0:0", "[::]:0"} {
		t.Run(listen, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "serve", "--listen", listen, "--data-dir", testenv.NewDataDir(t),
				"--cache-dir", t.TempDir(), "--ort-library", lib)
			for _, e := range os.Environ() {
				if !strings.HasPrefix(e, "FALOCAL_KEYS=") && !strings.HasPrefix(e, "FALOCAL_LISTEN=") {
					cmd.Env = append(cmd.Env, e)
				}
			}
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("server kept running on %s without keys:\n%s", listen, out)
			}
			var ee *exec.ExitError
			if err == nil || !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("exit %v, want a non-zero exit:\n%s", err, out)
			}
			if !strings.Contains(string(out), "-keys") {
				t.Errorf("message does not name -keys:\n%s", out)
			}
			if strings.Contains(string(out), "serving") {
				t.Errorf("it served before refusing:\n%s", out)
			}
		})
	}
}

// TestE2EDirectTLS: the serving port also speaks TLS with a certificate from
// the local CA (FAL_RUN_HOST=127.0.0.1:port/run with SSL_CERT_FILE).
func TestE2EDirectTLS(t *testing.T) {
	s := startServer(t)
	r := do(t, nil, "GET", s.base+"/ca.pem", nil)
	pool := x509.NewCertPool()
	if r.status != 200 || !pool.AppendCertsFromPEM(r.body) {
		t.Fatalf("GET /ca.pem: %d %.200s", r.status, r.body)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 2 * time.Minute}
	defer c.CloseIdleConnections()
	hbase := "https://" + hostPort(t, s.base)

	// The CA is what makes it trusted: the system roots refuse it.
	if resp, err := http.Get(hbase + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("the server's certificate verified against the system roots")
	}

	req, _ := http.NewRequest("POST", hbase+"/run/"+rembgID, bytes.NewReader(astronautBody(t)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("https run: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.TLS == nil || resp.StatusCode != 200 {
		t.Fatalf("https run: tls=%v %d %s", resp.TLS != nil, resp.StatusCode, b)
	}
	var out struct{ Image imageOut }
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.Image.URL, hbase+"/cdn/files/") {
		t.Fatalf("image url %s, want https on %s", out.Image.URL, hbase)
	}
	fr, err := c.Get(out.Image.URL)
	if err != nil {
		t.Fatalf("GET %s: %v", out.Image.URL, err)
	}
	data, _ := io.ReadAll(fr.Body)
	fr.Body.Close()
	if fr.StatusCode != 200 || fr.Header.Get("Content-Type") != "image/png" || len(data) != out.Image.FileSize {
		t.Fatalf("GET %s: %d %q %d bytes", out.Image.URL, fr.StatusCode, fr.Header.Get("Content-Type"), len(data))
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	checkAstronaut(t, img)
}
