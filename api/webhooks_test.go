package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/api/webhook"
	"github.com/falocal/falocal/pipelines"
)

type delivery struct {
	hdr  http.Header
	body []byte
}

func TestWebhooks(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan delivery, 10)
	var fails sync.Map
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		// The first attempt for /flaky fails: delivery retries.
		if r.URL.Path == "/flaky" {
			if _, again := fails.LoadOrStore("flaky", true); !again {
				w.WriteHeader(http.StatusBadGateway)
				return
			}
		}
		got <- delivery{r.Header.Clone(), b}
	}))
	defer recv.Close()
	if u, _ := url.Parse(recv.URL); u.Hostname() != "127.0.0.1" {
		t.Fatalf("receiver on %s", recv.URL)
	}
	g := newGated("fal-ai/x")
	g.fail = func(name string) error {
		if name == "bad" {
			return &pipelines.HTTPError{Status: 413, Type: "file_too_large", Msg: "too big"}
		}
		return nil
	}
	signer := webhook.NewSigner(priv)
	e := newQEnv(t, func(c *api.Config) {
		c.Webhooks = &webhook.Deliverer{Signer: signer, Backoff: []time.Duration{time.Millisecond, time.Millisecond}}
	}, g)
	jr := e.do(http.MethodGet, "", "/.well-known/jwks.json", "")
	if jr.Code != 200 {
		t.Fatalf("jwks: %d", jr.Code)
	}
	jwks := jr.Body.Bytes()
	if r := e.do(http.MethodGet, "", "/rest/.well-known/jwks.json", ""); r.Body.String() != string(jwks) {
		t.Errorf("rest jwks differs: %s", r.Body.String())
	}

	receive := func(s submitted) map[string]any {
		t.Helper()
		select {
		case d := <-got:
			if err := webhook.Verify(jwks, d.hdr, d.body, time.Now()); err != nil {
				t.Errorf("signature: %v", err)
			}
			if d.hdr.Get(webhook.HeaderRequestID) != s.ID {
				t.Errorf("webhook request id header %q, want %s", d.hdr.Get(webhook.HeaderRequestID), s.ID)
			}
			var env map[string]any
			if err := json.Unmarshal(d.body, &env); err != nil {
				t.Fatalf("envelope %s: %v", d.body, err)
			}
			if env["request_id"] != s.ID || env["gateway_request_id"] != s.ID {
				t.Errorf("envelope ids %v", env)
			}
			return env
		case <-time.After(qwait):
			t.Fatalf("no webhook for %s", s.ID)
		}
		return nil
	}
	ok := e.submit(t, "", "/fal-ai/x?fal_webhook="+url.QueryEscape(recv.URL+"/hook"), in("good"))
	env := receive(ok)
	if env["status"] != "OK" || env["error"] != nil {
		t.Errorf("success envelope %v", env)
	}
	if p, _ := env["payload"].(map[string]any); p["name"] != "good" || p["request_id"] != ok.ID {
		t.Errorf("payload %v", env["payload"])
	}

	bad := e.submit(t, "", "/fal-ai/x?fal_webhook="+url.QueryEscape(recv.URL+"/flaky"), in("bad"))
	env = receive(bad)
	if env["status"] != "ERROR" || env["error"] != "Invalid status code: 413" {
		t.Errorf("error envelope %v", env)
	}
	if p, _ := env["payload"].(map[string]any); p["detail"] != "too big" || p["error_type"] != "file_too_large" {
		t.Errorf("error payload %v", env["payload"])
	}

	// Refused hosts and bad URLs: 422 at submit, nothing queued.
	before := len(g.ran())
	for _, hook := range []string{"https://example.com/hook", "http://10.0.0.1/hook", "ftp://127.0.0.1/x", "not a url"} {
		r := e.do(http.MethodPost, "", "/fal-ai/x?fal_webhook="+url.QueryEscape(hook), in("refused"))
		if r.Code != http.StatusUnprocessableEntity {
			t.Errorf("webhook %q: %d %s", hook, r.Code, r.Body.String())
		}
	}
	// Sync runs ignore fal_webhook.
	if r := e.do(http.MethodPost, "", "/run/fal-ai/x?fal_webhook="+url.QueryEscape(recv.URL+"/sync"), in("sync")); r.Code != 200 {
		t.Errorf("sync run with fal_webhook: %d", r.Code)
	}
	if got := g.ran()[before:]; !reflect.DeepEqual(got, []string{"sync"}) {
		t.Errorf("ran %v after refused submits", got)
	}
	select {
	case d := <-got:
		t.Errorf("unexpected delivery %s", d.body)
	default:
	}

	// Without webhooks configured: 422, and no JWKS.
	e2 := newQEnv(t, nil, echoEP("fal-ai/x"))
	r := e2.do(http.MethodPost, "", "/fal-ai/x?fal_webhook="+url.QueryEscape(recv.URL+"/hook"), `{}`)
	if r.Code != http.StatusUnprocessableEntity {
		t.Errorf("webhooks disabled: %d %s", r.Code, r.Body.String())
	}
	if r := e2.do(http.MethodGet, "", "/.well-known/jwks.json", ""); r.Code != 404 {
		t.Errorf("jwks without a signer: %d", r.Code)
	}
}

// Close with a webhook delivery in flight (a receiver that never answers)
// returns once its ctx ends, cancelling the delivery, and leaves none of
// the server's goroutines behind. The delivery is not recorded as done, so
// the next start on the same database makes it again, with the result.
func TestCloseWithWebhookInFlight(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var block atomic.Bool
	block.Store(true)
	hit := make(chan struct{}, 10)
	got := make(chan delivery, 10)
	release := make(chan struct{})
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if block.Load() {
			hit <- struct{}{}
			select { // answers nothing until the sender gives up
			case <-r.Context().Done():
			case <-release: // the test is over
			}
			return
		}
		got <- delivery{r.Header.Clone(), b}
	}))
	defer recv.Close()
	defer close(release)
	db := t.TempDir() + "/queue.db"
	signer := webhook.NewSigner(priv)
	before := serverGoroutines()
	cfg := func(c *api.Config) {
		c.QueueDB = db
		c.Webhooks = &webhook.Deliverer{Signer: signer, Client: recv.Client(), Backoff: []time.Duration{time.Millisecond}}
	}
	e := newEnv(t, cfg, echoEP("fal-ai/x"))
	s := e.submit(t, "", "/fal-ai/x?fal_webhook="+url.QueryEscape(recv.URL+"/hook"), in("late"))
	select {
	case <-hit:
	case <-time.After(qwait):
		t.Fatal("the webhook never reached the receiver")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	if err := e.srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took > 2*time.Second {
		t.Errorf("Close took %s with a delivery in flight and a 100ms deadline", took)
	}
	checkNoServerGoroutines(t, before)

	// The next start delivers it, with the request's result.
	block.Store(false)
	e2 := newEnv(t, cfg, echoEP("fal-ai/x"))
	var d delivery
	select {
	case d = <-got:
	case <-time.After(qwait):
		t.Fatal("no webhook after the restart")
	}
	if err := webhook.Verify(signer.JWKS(), d.hdr, d.body, time.Now()); err != nil {
		t.Errorf("signature: %v", err)
	}
	var env struct {
		RequestID string `json:"request_id"`
		Status    string `json:"status"`
		Payload   struct {
			Input struct{ Name string } `json:"input"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(d.body, &env); err != nil {
		t.Fatalf("envelope %s: %v", d.body, err)
	}
	if env.RequestID != s.ID || env.Status != "OK" || env.Payload.Input.Name != "late" {
		t.Errorf("redelivered envelope %s, want request %s, OK, input late", d.body, s.ID)
	}
	// Close waits for the delivery to be recorded; a third start has
	// nothing left to deliver.
	if err := e2.srv.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	e3 := newEnv(t, cfg, echoEP("fal-ai/x"))
	defer e3.srv.Close(context.Background())
	e3.waitDone(t, "", e3.submit(t, "", "/fal-ai/x", in("probe")))
	select {
	case d := <-got:
		t.Errorf("delivered again after it was recorded: %s", d.body)
	case <-time.After(200 * time.Millisecond):
	}
}

// serverGoroutines returns the stacks, by goroutine header line, of the
// goroutines of API servers, their queues and webhook deliveries.
func serverGoroutines() map[string]string {
	owned := []string{
		"falocal/api.(*deliveries)", "falocal/api.(*Server).deliverWebhook", "falocal/api/webhook.(*Deliverer)",
		"falocal/api/queue.(*Queue).worker", "falocal/api/queue.(*Queue).expireLoop",
	}
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, o := range owned {
			if strings.Contains(g, o) {
				head, _, _ := strings.Cut(g, " [")
				out[head] = g
				break
			}
		}
	}
	return out
}

// checkNoServerGoroutines fails if a server goroutine that was not in
// before (other tests leave servers open) still runs. One that has just
// signalled its WaitGroup may still be returning, so it looks again for a
// moment.
func checkNoServerGoroutines(t *testing.T, before map[string]string) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(time.Second); ; {
		left = left[:0]
		for head, g := range serverGoroutines() {
			if _, old := before[head]; !old {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%d goroutines of the server left after Close:\n%s", len(left), strings.Join(left, "\n\n"))
}
