package api

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/falocal/falocal/api/queue"
	"github.com/falocal/falocal/api/webhook"
)

// jwks publishes the webhook signing key, where fal publishes its own.
func (s *Server) jwks(c echo.Context) error {
	if s.cfg.Webhooks == nil || s.cfg.Webhooks.Signer == nil {
		return echo.ErrNotFound
	}
	return c.JSONBlob(http.StatusOK, s.cfg.Webhooks.Signer.JWKS())
}

// webhookTimeout bounds one delivery, retries included (the default
// schedule spends under 2 minutes waiting and 30 s at most per attempt); a
// delivery that runs out of it is given up, as one whose retries are spent.
const webhookTimeout = 30 * time.Minute

// deliveries owns the goroutines that deliver webhooks: each runs on ctx,
// which close cancels, and close waits for every one of them. A delivery
// cut short by close is not recorded as done, so the queue hands it over
// again at the next start (its record is durable until then).
type deliveries struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func newDeliveries() *deliveries {
	d := &deliveries{}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d
}

// start runs f on a goroutine of its own unless close has begun; it
// reports whether f was started.
func (d *deliveries) start(f func(ctx context.Context)) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f(d.ctx)
	}()
	return true
}

// close starts no more deliveries, lets those in flight finish while ctx
// allows, then cancels the rest and waits until all have returned.
func (d *deliveries) close(ctx context.Context) {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		d.cancel()
		<-done
	}
	d.cancel()
}

// onComplete is the queue's OnComplete: it must not block, so the delivery
// runs on a goroutine the server owns. Deliveries owed from before a
// restart are handed over during queue.Open, before s.q is set: they wait
// for ready (closed once it is), or for Close.
func (s *Server) onComplete(ready <-chan struct{}) func(queue.Record) {
	return func(r queue.Record) {
		if s.cfg.Webhooks == nil || r.Webhook == "" || r.Outcome == nil {
			return
		}
		started := s.hooks.start(func(ctx context.Context) {
			select {
			case <-ready:
			case <-ctx.Done():
				return
			}
			s.deliverWebhook(ctx, r)
		})
		if !started {
			s.log.Info("webhook: shutting down; it is delivered after the next start", "request_id", r.ID)
		}
	}
}

// deliverWebhook posts a completed queued request's fal_webhook and records
// that it is done (delivered, or given up after its retries). If ctx, the
// server's, ends first it records nothing: the delivery is made again after
// the next start.
func (s *Server) deliverWebhook(ctx context.Context, r queue.Record) {
	res := webhook.Result{RequestID: r.ID, OK: !r.Failed()}
	if res.OK {
		res.Payload = r.Outcome.Output
	} else {
		res.ErrorStatus, res.ErrorBody = r.Outcome.Status, r.Outcome.Body
	}
	dctx, cancel := context.WithTimeout(ctx, webhookTimeout)
	defer cancel()
	err := s.cfg.Webhooks.Deliver(dctx, r.Webhook, res)
	if err != nil && ctx.Err() != nil {
		s.log.Info("webhook delivery interrupted by shutdown; it is made again after the next start",
			"request_id", r.ID, "url", r.Webhook)
		return
	}
	if err != nil {
		s.log.Warn("webhook delivery failed", "request_id", r.ID, "url", r.Webhook, "err", err)
	}
	if err := s.q.MarkWebhookDone(r.ID); err != nil {
		s.log.Warn("webhook: record delivery", "request_id", r.ID, "err", err)
	}
}
