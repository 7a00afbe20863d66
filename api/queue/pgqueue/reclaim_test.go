package pgqueue

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/falocal/falocal/api/queue"
	"github.com/falocal/falocal/internal/testenv"
)

// TestReclaimedBySameNode: a request whose lease this node lost (its
// heartbeats stalled) and that one of its own workers claimed again must
// keep the new claim's lease renewed when the stale run returns, and the
// stale run must be interrupted.
func TestReclaimedBySameNode(t *testing.T) {
	pg := testenv.Postgres(t)
	dsn := pg.NewDatabase(t)
	var n atomic.Int32
	staleDone := make(chan struct{})
	staleStopped := make(chan struct{}, 1)
	release := make(chan struct{})
	second := make(chan struct{}, 1)
	run := func(ctx context.Context, r *queue.Record, logf func(string, string), addFile func(string)) queue.Outcome {
		switch n.Add(1) {
		case 1:
			select {
			case <-ctx.Done():
				staleStopped <- struct{}{}
			case <-staleDone:
			}
			return queue.Outcome{Output: json.RawMessage(`{"from":"stale"}`)}
		default:
			second <- struct{}{}
			<-release
			return queue.Outcome{Output: json.RawMessage(`{"from":"second"}`)}
		}
	}
	w := open(t, dsn, "w", 2, run, func(o *Options) { o.Lease = 1500 * time.Millisecond })
	var once atomic.Bool
	free := func() {
		if once.CompareAndSwap(false, true) {
			close(release)
		}
	}
	t.Cleanup(free) // before the node's Close
	w.pauseBeat.Store(true)
	submit(t, w, queue.Record{ID: "rc"})
	select {
	case <-second: // the lease expired, the reaper queued it again, the other worker took it
	case <-time.After(10 * time.Second):
		r, _, err := w.Get("rc")
		t.Fatalf("not claimed again: %v %s %q lastFail %v ago", err, r.Status, messages(r), time.Since(time.Unix(0, w.lastFail.Load())))
	}
	w.pauseBeat.Store(false)
	select {
	case <-staleStopped: // the claim that replaced it interrupts the stale run
	case <-time.After(3 * time.Second):
		close(staleDone)
		t.Error("the stale run was not interrupted")
	}
	// The second claim's lease stays renewed after the stale run ended.
	time.Sleep(3 * time.Second)
	r, _, err := w.Get("rc")
	if err != nil || r.Status != queue.InProgress {
		t.Fatalf("after the stale run ended: %v status %s outcome %+v logs %q", err, r.Status, r.Outcome, messages(r))
	}
	free()
	r = wait(t, w, "rc")
	if r.Failed() || string(r.Outcome.Output) != `{"from":"second"}` || r.Attempts != 2 {
		t.Fatalf("outcome %+v attempts %d logs %q", r.Outcome, r.Attempts, messages(r))
	}
}

// TestSubmitDuringDrain: a sync request whose insert races Drain is
// refused (ErrClosed, as the bbolt queue does) and left neither queued nor
// running.
func TestSubmitDuringDrain(t *testing.T) {
	pg := testenv.Postgres(t)
	dsn := pg.NewDatabase(t)
	api := open(t, dsn, "api", 0, nil, nil)
	api.beforeInsert = func() { api.Drain() }
	_, err := api.Submit(queue.Record{ID: "sd", Endpoint: "e", App: "e", Input: json.RawMessage(`{}`), Ephemeral: true})
	if !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("submit: %v", err)
	}
	r, _, err := api.Get("sd")
	if err == nil && r.Status != queue.Completed {
		t.Fatalf("left %s", r.Status)
	}
	// A durable one is kept for the workers of the fleet.
	api.beforeInsert = nil
	other := open(t, dsn, "other", 0, nil, nil)
	other.beforeInsert = func() { other.Drain() }
	if _, err := other.Submit(queue.Record{ID: "dd", Endpoint: "e", App: "e", Input: json.RawMessage(`{}`)}); err != nil {
		t.Fatalf("durable submit: %v", err)
	}
	if r, _, err := other.Get("dd"); err != nil || r.Status != queue.InQueue {
		t.Fatalf("durable: %v %s", err, r.Status)
	}
}
