package api_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sync"
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
