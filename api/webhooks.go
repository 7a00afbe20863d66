package api

import (
	"context"
	"net/http"
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

// deliverWebhook posts a completed queued request's fal_webhook.
func (s *Server) deliverWebhook(r queue.Record) {
	if s.cfg.Webhooks == nil || r.Webhook == "" || r.Outcome == nil {
		return
	}
	res := webhook.Result{RequestID: r.ID, OK: !r.Failed()}
	if res.OK {
		res.Payload = r.Outcome.Output
	} else {
		res.ErrorStatus, res.ErrorBody = r.Outcome.Status, r.Outcome.Body
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Hour)
	defer cancel()
	if err := s.cfg.Webhooks.Deliver(ctx, r.Webhook, res); err != nil {
		s.log.Warn("webhook delivery failed", "request_id", r.ID, "url", r.Webhook, "err", err)
	}
	if err := s.q.MarkWebhookDone(r.ID); err != nil {
		s.log.Warn("webhook: record delivery", "request_id", r.ID, "err", err)
	}
}
