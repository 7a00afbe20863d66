package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/api/queue"
	"github.com/falocal/falocal/api/webhook"
)

// A shutdown (Drain, then Close, as on SIGTERM) while a slow receiver is
// taking a webhook lets the delivery finish and records it before the
// queue database closes: the next start does not send it again.
func TestShutdownDuringSlowWebhook(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var hits, answered atomic.Int32
	hit := make(chan struct{}, 10)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		hit <- struct{}{}
		select {
		case <-time.After(500 * time.Millisecond): // slow, but answers
		case <-r.Context().Done():
			return // the sender gave up: not delivered
		}
		answered.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer recv.Close()
	db := t.TempDir() + "/queue.db"
	cfg := func(c *api.Config) {
		c.QueueDB = db
		c.Webhooks = &webhook.Deliverer{Signer: webhook.NewSigner(priv), Client: recv.Client(), Backoff: []time.Duration{}}
	}
	e := newEnv(t, cfg, echoEP("fal-ai/x"))
	s := e.submit(t, "", "/fal-ai/x?fal_webhook="+url.QueryEscape(recv.URL+"/hook"), in("slow"))
	select {
	case <-hit:
	case <-time.After(qwait):
		t.Fatal("the webhook never reached the receiver")
	}
	e.srv.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := answered.Load(); n != 1 {
		t.Fatalf("Close returned with %d deliveries answered, want 1", n)
	}
	recs, err := queue.ReadAll(db)
	if err != nil {
		t.Fatal(err)
	}
	if r := recs[s.ID]; !r.WebhookDone {
		t.Errorf("delivery not recorded before the database closed: %+v", r)
	}

	e2 := newEnv(t, cfg, echoEP("fal-ai/x"))
	defer e2.srv.Close(context.Background())
	e2.waitDone(t, "", e2.submit(t, "", "/fal-ai/x", in("probe")))
	select {
	case <-hit:
		t.Errorf("the webhook was sent again after the restart")
	case <-time.After(time.Second):
	}
	if h, a := hits.Load(), answered.Load(); h != 1 || a != 1 {
		t.Errorf("receiver got %d deliveries (%d answered), want exactly 1", h, a)
	}
}

// SIGTERM while a request runs: it finishes during the drain, its webhook
// goes to a slow receiver, and Close returns only once that delivery is
// recorded; the next start sends nothing again.
func TestShutdownWebhookOfRequestFinishingInDrain(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var hits, answered atomic.Int32
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		answered.Add(1)
	}))
	defer recv.Close()
	db := t.TempDir() + "/queue.db"
	g := newGated("fal-ai/x")
	cfg := func(c *api.Config) {
		c.QueueDB = db
		c.Webhooks = &webhook.Deliverer{Signer: webhook.NewSigner(priv), Client: recv.Client(), Backoff: []time.Duration{}}
	}
	e := newEnv(t, cfg, g)
	gate := g.gate("long")
	s := e.submit(t, "", "/fal-ai/x?fal_webhook="+url.QueryEscape(recv.URL+"/hook"), in("long"))
	g.waitStarted(t, "long")

	e.srv.Drain()
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		closed <- e.srv.Close(ctx)
	}()
	time.Sleep(50 * time.Millisecond) // Close is waiting for the running request
	close(gate)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(qwait):
		t.Fatal("Close did not return")
	}
	if h, a := hits.Load(), answered.Load(); h != 1 || a != 1 {
		t.Fatalf("at Close: %d deliveries, %d answered; want 1 answered", h, a)
	}
	recs, err := queue.ReadAll(db)
	if err != nil {
		t.Fatal(err)
	}
	if r := recs[s.ID]; r.Status != queue.Completed || !r.WebhookDone {
		t.Errorf("on disk after Close: %s, webhook done %v; want COMPLETED and done", r.Status, r.WebhookDone)
	}
	e2 := newEnv(t, cfg, newGated("fal-ai/x"))
	defer e2.srv.Close(context.Background())
	time.Sleep(500 * time.Millisecond)
	if h := hits.Load(); h != 1 {
		t.Errorf("receiver got %d deliveries after the restart, want 1", h)
	}
}
