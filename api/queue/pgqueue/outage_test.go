package pgqueue

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/falocal/falocal/api/queue"
	"github.com/falocal/falocal/internal/testenv"
)

// TestResultThroughOutage: a run that ends while PostgreSQL is down for
// longer than a lease keeps its claim: its result is stored when the
// database is back, and it does not run again.
func TestResultThroughOutage(t *testing.T) {
	pg := testenv.Postgres(t)
	dsn := pg.NewDatabase(t)
	lease := func(o *Options) { o.Lease = 1500 * time.Millisecond }
	api := open(t, dsn, "api", 0, nil, lease)
	var c counter
	started := make(chan struct{}, 1)
	finish := make(chan struct{})
	open(t, dsn, "w", 1, func(ctx context.Context, r *queue.Record, logf func(string, string), addFile func(string)) queue.Outcome {
		c.add(r.ID)
		if c.get(r.ID) == 1 {
			started <- struct{}{}
			select {
			case <-finish:
			case <-ctx.Done():
				return queue.Cancelled()
			}
		}
		return queue.Outcome{Output: json.RawMessage(`{"ok":true}`)}
	}, lease)
	submit(t, api, queue.Record{ID: "ro"})
	<-started
	pg.Stop(t)
	close(finish)               // the run ends while the database is away
	time.Sleep(6 * time.Second) // four leases
	pg.Start(t)
	r := wait(t, api, "ro")
	if r.Failed() || string(r.Outcome.Output) != `{"ok":true}` {
		t.Fatalf("outcome %+v logs %q", r.Outcome, messages(r))
	}
	if n := c.get("ro"); n != 1 || r.Attempts != 1 {
		t.Fatalf("ran %d times, attempts %d, logs %q", n, r.Attempts, messages(r))
	}
}

// TestMarkWebhookDoneThroughOutage: a delivery recorded while the database
// is away is recorded once it is back, not left claimed by this node.
func TestMarkWebhookDoneThroughOutage(t *testing.T) {
	pg := testenv.Postgres(t)
	dsn := pg.NewDatabase(t)
	delivered := make(chan string, 1)
	q := open(t, dsn, "n", 1, nil, func(o *Options) {
		o.Lease = time.Second
		o.OnComplete = func(r queue.Record) { delivered <- r.ID }
	})
	submit(t, q, queue.Record{ID: "wh", Webhook: "http://hook"})
	<-delivered
	pg.Stop(t)
	if err := q.MarkWebhookDone("wh"); !errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("mark during the outage: %v", err)
	}
	pg.Start(t)
	waitFor(t, "the delivery recorded", 15*time.Second, func() bool {
		r, _, err := q.Get("wh")
		return err == nil && r.WebhookDone
	})
}
