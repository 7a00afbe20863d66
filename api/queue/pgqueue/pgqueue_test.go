package pgqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/falocal/falocal/api/queue"
	"github.com/falocal/falocal/internal/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// open starts a node on dsn, closed when the test ends.
func open(t *testing.T, dsn, name string, workers int, run queue.Runner, mod func(*Options)) *Queue {
	t.Helper()
	o := Options{Options: queue.Options{Workers: workers, Log: quiet}, Node: name, Lease: 3 * time.Second}
	if mod != nil {
		mod(&o)
	}
	if run == nil {
		run = echo(nil)
	}
	q, err := Open(context.Background(), dsn, run, o)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		q.Close(ctx)
	})
	return q
}

// counter counts runner invocations per request id.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) add(id string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[id]++
}

func (c *counter) get(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

// echo logs a line and answers with the request's id.
func echo(c *counter) queue.Runner {
	return func(ctx context.Context, r *queue.Record, logf func(string, string), addFile func(string)) queue.Outcome {
		c.add(r.ID)
		logf("INFO", "working on "+r.ID)
		addFile("file-" + r.ID)
		return queue.Outcome{Output: json.RawMessage(fmt.Sprintf(`{"id":%q}`, r.ID))}
	}
}

// blocking runs until its context ends, and reports that it started.
func blocking(started chan<- string) queue.Runner {
	return func(ctx context.Context, r *queue.Record, logf func(string, string), addFile func(string)) queue.Outcome {
		if started != nil {
			started <- r.ID
		}
		<-ctx.Done()
		return queue.Cancelled()
	}
}

func submit(t *testing.T, q *Queue, r queue.Record) int {
	t.Helper()
	if r.Endpoint == "" {
		r.Endpoint = "fal-ai/test"
		r.App = "fal-ai/test"
	}
	if r.Input == nil {
		r.Input = json.RawMessage(`{"prompt":"x"}`)
	}
	pos, err := q.Submit(r)
	if err != nil {
		t.Fatalf("submit %s: %v", r.ID, err)
	}
	return pos
}

func wait(t *testing.T, q *Queue, id string) queue.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := q.Wait(ctx, id)
	if err != nil {
		t.Fatalf("wait %s: %v (status %s)", id, err, r.Status)
	}
	return r
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func messages(r queue.Record) []string {
	var m []string
	for _, l := range r.Logs {
		m = append(m, l.Level+" "+l.Message)
	}
	return m
}

func hasLog(r queue.Record, sub string) bool {
	for _, m := range messages(r) {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}

// TestQueue shares one PostgreSQL server among subtests, each on its own
// database.
func TestQueue(t *testing.T) {
	pg := testenv.Postgres(t)

	t.Run("AcrossNodes", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		var apiFinish, workFinish atomic.Int32
		api := open(t, dsn, "api", 0, nil, func(o *Options) { o.OnFinish = func(queue.Record) { apiFinish.Add(1) } })
		release := make(chan struct{})
		open(t, dsn, "worker", 1, func(ctx context.Context, r *queue.Record, logf func(string, string), addFile func(string)) queue.Outcome {
			logf("INFO", "step 1")
			<-release
			logf("INFO", "step 2")
			return queue.Outcome{Output: json.RawMessage(`{"images": [1, 2]}`)}
		}, func(o *Options) {
			o.OnFinish = func(queue.Record) { workFinish.Add(1) }
			o.Info = func() map[string]any { return map[string]any{"device": "cpu"} }
		})
		ch, stop := api.Subscribe("a1")
		defer stop()
		submit(t, api, queue.Record{ID: "a1", Origin: "http://o", CDN: "http://c", Host: "h"})
		// The worker's log line reaches the API node's subscriber.
		waitFor(t, "step 1 through Subscribe", 10*time.Second, func() bool {
			select {
			case <-ch:
				r, _, err := api.Get("a1")
				return err == nil && hasLog(r, "step 1")
			case <-time.After(time.Second):
				return false
			}
		})
		r, _, _ := api.Get("a1")
		if r.Status != queue.InProgress || r.Attempts != 1 {
			t.Fatalf("running: status %s attempts %d", r.Status, r.Attempts)
		}
		if q, run := api.Depth(); q != 0 || run != 1 {
			t.Fatalf("depth %d %d", q, run)
		}
		close(release)
		r = wait(t, api, "a1")
		if r.Failed() || string(r.Outcome.Output) != `{"images":[1,2]}` {
			t.Fatalf("outcome %+v", r.Outcome)
		}
		if string(r.Input) != `{"prompt":"x"}` || r.InputBytes != len(`{"prompt":"x"}`) || r.Origin != "http://o" || r.CDN != "http://c" || r.Host != "h" {
			t.Fatalf("record %+v", r)
		}
		want := []string{"INFO request started", "INFO step 1", "INFO step 2"}
		if m := messages(r); len(m) != 4 || !slices.Equal(m[:3], want) || !strings.HasPrefix(m[3], "INFO request completed in ") {
			t.Fatalf("logs %q", m)
		}
		if r.StartedAt.IsZero() || r.CompletedAt.IsZero() || r.InferenceTime <= 0 {
			t.Fatalf("times %+v", r)
		}
		waitFor(t, "OnFinish on the worker", 5*time.Second, func() bool { return workFinish.Load() == 1 })
		if apiFinish.Load() != 0 || workFinish.Load() != 1 {
			t.Fatalf("OnFinish: api %d, worker %d", apiFinish.Load(), workFinish.Load())
		}
		if _, _, err := api.Get("nope"); !errors.Is(err, queue.ErrNotFound) {
			t.Fatalf("get unknown: %v", err)
		}
		fleet, err := api.Fleet(context.Background())
		if err != nil || len(fleet) != 2 || fleet[0].Name != "api" || fleet[0].Role != "api" || fleet[1].Role != "worker" || !fleet[1].Alive || fleet[1].Info["device"] != "cpu" {
			t.Fatalf("fleet %+v %v", fleet, err)
		}
		if err := api.Ready(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Outcomes", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		w := open(t, dsn, "w", 2, func(ctx context.Context, r *queue.Record, logf func(string, string), addFile func(string)) queue.Outcome {
			switch string(r.Input) {
			case `"panic"`:
				panic("boom")
			case `"fail"`:
				return queue.ErrorOutcome(422, "bad input", "validation")
			}
			return queue.Outcome{Output: json.RawMessage(`{}`)}
		}, nil)
		for _, c := range []struct {
			input, errType, last string
			status               int
		}{
			{`"ok"`, "", "INFO request completed in", 0},
			{`"panic"`, "internal_error", "ERROR Internal Server Error", 500},
			{`"fail"`, "validation", "ERROR bad input", 422},
		} {
			id := "o-" + strings.Trim(c.input, `"`)
			submit(t, w, queue.Record{ID: id, Input: json.RawMessage(c.input)})
			r := wait(t, w, id)
			m := messages(r)
			if r.Outcome.Status != c.status || r.Outcome.ErrorType != c.errType || !strings.HasPrefix(m[len(m)-1], c.last) {
				t.Errorf("%s: outcome %+v logs %q", c.input, r.Outcome, m)
			}
		}
	})

	t.Run("PrioritiesAndPositions", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		api := open(t, dsn, "api", 0, nil, nil)
		for _, c := range []struct {
			id       string
			priority int
			pos      int
		}{{"p1", queue.Normal, 0}, {"p2", queue.Low, 1}, {"p3", queue.Normal, 1}, {"p4", queue.Low, 3}} {
			if pos := submit(t, api, queue.Record{ID: c.id, Priority: c.priority}); pos != c.pos {
				t.Errorf("submit %s: position %d, want %d", c.id, pos, c.pos)
			}
		}
		for id, want := range map[string]int{"p1": 0, "p3": 1, "p2": 2, "p4": 3} {
			if _, pos, err := api.Get(id); err != nil || pos != want {
				t.Errorf("get %s: position %d (%v), want %d", id, pos, err, want)
			}
		}
		if q, run := api.Depth(); q != 4 || run != 0 {
			t.Errorf("depth %d %d", q, run)
		}
		var mu sync.Mutex
		var order []string
		open(t, dsn, "w", 1, func(ctx context.Context, r *queue.Record, logf func(string, string), addFile func(string)) queue.Outcome {
			mu.Lock()
			order = append(order, r.ID)
			mu.Unlock()
			return queue.Outcome{Output: json.RawMessage(`{}`)}
		}, nil)
		wait(t, api, "p4")
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(order, []string{"p1", "p3", "p2", "p4"}) {
			t.Errorf("order %v", order)
		}
	})

	t.Run("ResidentFirst", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		api := open(t, dsn, "api", 0, nil, nil)
		submit(t, api, queue.Record{ID: "r1", Endpoint: "fal-ai/cold"})
		submit(t, api, queue.Record{ID: "r2", Endpoint: "fal-ai/warm"})
		submit(t, api, queue.Record{ID: "r3", Endpoint: "fal-ai/other"})
		var mu sync.Mutex
		var order []string
		open(t, dsn, "w", 1, func(ctx context.Context, r *queue.Record, logf func(string, string), addFile func(string)) queue.Outcome {
			mu.Lock()
			order = append(order, r.ID)
			mu.Unlock()
			return queue.Outcome{Output: json.RawMessage(`{}`)}
		}, func(o *Options) {
			o.Endpoints = func() []string { return []string{"fal-ai/cold", "fal-ai/warm"} }
			o.Resident = func() []string { return []string{"fal-ai/warm"} }
		})
		wait(t, api, "r1")
		time.Sleep(300 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(order, []string{"r2", "r1"}) {
			t.Errorf("order %v", order)
		}
		if r, _, _ := api.Get("r3"); r.Status != queue.InQueue {
			t.Errorf("r3 (an endpoint the worker does not run): %s", r.Status)
		}
	})

	t.Run("Full", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		api := open(t, dsn, "api", 0, nil, func(o *Options) { o.MaxQueued = 5 })
		other := open(t, dsn, "api2", 0, nil, func(o *Options) { o.MaxQueued = 5 })
		// Concurrent submissions on two nodes never overshoot the limit.
		var ok, full atomic.Int32
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				q := api
				if i%2 == 1 {
					q = other
				}
				_, err := q.Submit(queue.Record{ID: fmt.Sprint("f", i), Endpoint: "e", App: "e"})
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, queue.ErrFull):
					full.Add(1)
				default:
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if ok.Load() != 5 || full.Load() != 15 {
			t.Fatalf("accepted %d, full %d", ok.Load(), full.Load())
		}
		dsn2 := pg.NewDatabase(t)
		q2 := open(t, dsn2, "api", 0, nil, nil)
		submit(t, q2, queue.Record{ID: "m1", MaxQueueLength: 2})
		submit(t, q2, queue.Record{ID: "m2", MaxQueueLength: 2})
		if _, err := q2.Submit(queue.Record{ID: "m3", Endpoint: "e", App: "e", MaxQueueLength: 2}); !errors.Is(err, queue.ErrFull) {
			t.Fatalf("max queue length: %v", err)
		}
		submit(t, q2, queue.Record{ID: "m4"}) // no limit asked
	})

	t.Run("StartDeadline", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		var finished atomic.Int32
		api := open(t, dsn, "api", 0, nil, func(o *Options) {
			o.Lease = 1500 * time.Millisecond
			o.OnFinish = func(queue.Record) { finished.Add(1) }
		})
		submit(t, api, queue.Record{ID: "d1", StartDeadline: time.Now().Add(300 * time.Millisecond)})
		r := wait(t, api, "d1")
		if r.Outcome.Status != 504 || r.Outcome.ErrorType != "request_timeout" || hasLog(r, "request started") {
			t.Fatalf("outcome %+v logs %q", r.Outcome, messages(r))
		}
		// OnFinish follows the commit that Wait may see first.
		waitFor(t, "OnFinish", 5*time.Second, func() bool { return finished.Load() == 1 })
	})

	t.Run("CancelQueued", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		api := open(t, dsn, "api", 0, nil, nil)
		submit(t, api, queue.Record{ID: "c1"})
		for _, c := range []struct {
			id   string
			want queue.CancelResult
		}{{"c1", queue.CancelRequested}, {"c1", queue.AlreadyCompleted}, {"nope", queue.NotFound}} {
			if res, err := api.Cancel(c.id); err != nil || res != c.want {
				t.Errorf("cancel %s: %v %v, want %v", c.id, res, err, c.want)
			}
		}
		r, _, _ := api.Get("c1")
		if r.Status != queue.Completed || r.Outcome.Status != 499 || r.Outcome.ErrorType != "client_cancelled" {
			t.Fatalf("record %+v", r)
		}
	})

	t.Run("CancelRunningAcrossNodes", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		api := open(t, dsn, "api", 0, nil, nil)
		started := make(chan string, 1)
		open(t, dsn, "w", 1, blocking(started), nil)
		submit(t, api, queue.Record{ID: "cr"})
		<-started
		if res, err := api.Cancel("cr"); err != nil || res != queue.CancelRequested {
			t.Fatalf("cancel: %v %v", res, err)
		}
		r := wait(t, api, "cr")
		if r.Outcome.Status != 499 || r.Outcome.ErrorType != "client_cancelled" {
			t.Fatalf("outcome %+v", r.Outcome)
		}
	})

	t.Run("WorkerDies", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		short := func(o *Options) { o.Lease = 1500 * time.Millisecond }
		api := open(t, dsn, "api", 0, nil, short)
		started := make(chan string, 1)
		w1 := open(t, dsn, "w1", 1, blocking(started), short)
		submit(t, api, queue.Record{ID: "once"})
		<-started
		w1.crash()
		var c counter
		w2 := open(t, dsn, "w2", 1, echo(&c), short)
		r := wait(t, api, "once")
		if r.Failed() || r.Attempts != 2 || c.get("once") != 1 || !hasLog(r, "WARN the worker running this request stopped; it was queued again") {
			t.Fatalf("record %+v logs %q", r.Outcome, messages(r))
		}
		w2.Close(context.Background())

		// Twice: not run a third time.
		w3 := open(t, dsn, "w3", 1, blocking(started), short)
		submit(t, api, queue.Record{ID: "twice"})
		<-started
		w3.crash()
		w4 := open(t, dsn, "w4", 1, blocking(started), short)
		<-started
		w4.crash()
		r = wait(t, api, "twice")
		if r.Outcome == nil || r.Outcome.Status != 503 || r.Outcome.ErrorType != "runner_disconnected" {
			t.Fatalf("outcome %+v logs %q", r.Outcome, messages(r))
		}
	})

	t.Run("OrphanedSyncRuns", func(t *testing.T) {
		// The node holding a sync run's caller dies: its queued sync run
		// is dropped unrun, its running one interrupted.
		t.Parallel()
		dsn := pg.NewDatabase(t)
		short := func(o *Options) { o.Lease = 1500 * time.Millisecond }
		api1 := open(t, dsn, "api1", 0, nil, short)
		api2 := open(t, dsn, "api2", 0, nil, short)
		started := make(chan string, 1)
		var interrupted atomic.Bool
		w1 := open(t, dsn, "w1", 1, func(ctx context.Context, r *queue.Record, logf func(string, string), addFile func(string)) queue.Outcome {
			started <- r.ID
			<-ctx.Done()
			interrupted.Store(true)
			return queue.Cancelled()
		}, short)
		submit(t, api1, queue.Record{ID: "running", Ephemeral: true})
		<-started
		submit(t, api1, queue.Record{ID: "queued", Ephemeral: true}) // w1 is busy
		api1.crash()
		waitFor(t, "the orphaned queued sync run dropped", 15*time.Second, func() bool {
			_, _, err := api2.Get("queued")
			return errors.Is(err, queue.ErrNotFound)
		})
		waitFor(t, "the orphaned running sync run interrupted", 15*time.Second, interrupted.Load)
		w1.Close(context.Background())
		select {
		case id := <-started:
			t.Fatalf("%s ran after its caller's node died", id)
		default:
		}
	})

	t.Run("SameNameRestarts", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		long := func(o *Options) { o.Lease = 30 * time.Second }
		started := make(chan string, 1)
		w := open(t, dsn, "node-a", 1, blocking(started), long)
		submit(t, w, queue.Record{ID: "sr"})
		<-started
		w.crash()
		// The next process of that name does not wait for the 30 s lease.
		again := open(t, dsn, "node-a", 1, nil, long)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := again.Wait(ctx, "sr")
		if err != nil || r.Failed() || r.Attempts != 2 || !hasLog(r, "it was queued again") {
			t.Fatalf("%v %+v %q", err, r.Outcome, messages(r))
		}
	})

	t.Run("FencedCompletion", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		short := func(o *Options) { o.Lease = 1500 * time.Millisecond }
		api := open(t, dsn, "api", 0, nil, short)
		release := make(chan struct{})
		started := make(chan string, 1)
		var staleFinish atomic.Int32
		w1 := open(t, dsn, "w1", 1, func(ctx context.Context, r *queue.Record, logf func(string, string), addFile func(string)) queue.Outcome {
			started <- r.ID
			<-release // ignores its context, like a stuck pipeline
			return queue.Outcome{Output: json.RawMessage(`{"from":"w1"}`)}
		}, func(o *Options) {
			short(o)
			o.OnFinish = func(queue.Record) { staleFinish.Add(1) }
		})
		w1.pauseBeat.Store(true)
		submit(t, api, queue.Record{ID: "fc"})
		<-started
		open(t, dsn, "w2", 1, func(ctx context.Context, r *queue.Record, logf func(string, string), addFile func(string)) queue.Outcome {
			return queue.Outcome{Output: json.RawMessage(`{"from":"w2"}`)}
		}, short)
		r := wait(t, api, "fc")
		close(release)
		time.Sleep(300 * time.Millisecond)
		r2, _, _ := api.Get("fc")
		if string(r.Outcome.Output) != `{"from":"w2"}` || string(r2.Outcome.Output) != `{"from":"w2"}` || staleFinish.Load() != 0 {
			t.Fatalf("outcome %s then %s, stale finish %d", r.Outcome.Output, r2.Outcome.Output, staleFinish.Load())
		}
		if n := strings.Count(strings.Join(messages(r2), "\n"), "request completed"); n != 1 {
			t.Fatalf("completed %d times: %q", n, messages(r2))
		}
	})

	t.Run("ManyOverThreeWorkers", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		var finished atomic.Int32
		count := func(o *Options) { o.OnFinish = func(queue.Record) { finished.Add(1) } }
		api := open(t, dsn, "api", 0, nil, count)
		var c counter
		for i := range 3 {
			open(t, dsn, fmt.Sprint("w", i), 2, echo(&c), count)
		}
		const n = 300
		for i := range n {
			submit(t, api, queue.Record{ID: fmt.Sprint("m", i), Priority: i % 2})
		}
		for i := range n {
			r := wait(t, api, fmt.Sprint("m", i))
			if r.Failed() || r.Attempts != 1 {
				t.Fatalf("m%d: %+v", i, r.Outcome)
			}
		}
		for i := range n {
			if got := c.get(fmt.Sprint("m", i)); got != 1 {
				t.Errorf("m%d ran %d times", i, got)
			}
		}
		waitFor(t, "every OnFinish", 5*time.Second, func() bool { return finished.Load() >= n })
		if finished.Load() != n {
			t.Errorf("finished %d times", finished.Load())
		}
	})

	t.Run("Webhooks", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		var mu sync.Mutex
		calls := map[string]int{}
		byName := map[string]*Queue{}
		hook := func(mark bool) func(o *Options) {
			return func(o *Options) {
				name := o.Node
				o.Lease = 1500 * time.Millisecond
				o.webhookClaim = time.Second
				o.OnComplete = func(r queue.Record) {
					mu.Lock()
					calls[r.ID]++
					self := byName[name]
					mu.Unlock()
					if mark {
						go self.MarkWebhookDone(r.ID)
					}
				}
			}
		}
		node := func(name string, workers int, mark bool) *Queue {
			// Registered before it can complete anything: under mu, which
			// OnComplete takes too.
			mu.Lock()
			defer mu.Unlock()
			q := open(t, dsn, name, workers, nil, hook(mark))
			byName[name] = q
			return q
		}
		api := node("api", 0, true)
		w := node("w", 2, true)
		for i := range 10 {
			submit(t, api, queue.Record{ID: fmt.Sprint("h", i), Webhook: "http://hook"})
		}
		submit(t, api, queue.Record{ID: "nohook"})
		for i := range 10 {
			wait(t, api, fmt.Sprint("h", i))
		}
		wait(t, api, "nohook")
		time.Sleep(1500 * time.Millisecond) // past the claim: no redelivery once done
		mu.Lock()
		for i := range 10 {
			if calls[fmt.Sprint("h", i)] != 1 {
				t.Errorf("h%d: OnComplete %d times", i, calls[fmt.Sprint("h", i)])
			}
		}
		if calls["nohook"] != 0 {
			t.Errorf("OnComplete without a webhook")
		}
		mu.Unlock()
		w.Close(context.Background())

		// A node that dies before MarkWebhookDone: another delivers again.
		dying := node("dying", 1, false)
		submit(t, api, queue.Record{ID: "redeliver", Webhook: "http://hook"})
		wait(t, api, "redeliver")
		waitFor(t, "the first delivery", 5*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return calls["redeliver"] == 1
		})
		time.Sleep(1500 * time.Millisecond) // its heartbeats keep the claim
		mu.Lock()
		if calls["redeliver"] != 1 {
			t.Fatalf("redelivered while the delivering node lives: %d", calls["redeliver"])
		}
		mu.Unlock()
		dying.crash()
		waitFor(t, "redelivery", 5*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return calls["redeliver"] == 2
		})
		waitFor(t, "webhook done", 5*time.Second, func() bool {
			r, _, _ := api.Get("redeliver")
			return r.WebhookDone
		})
	})

	t.Run("Partials", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		var mu sync.Mutex
		var got []string
		api := open(t, dsn, "api", 0, nil, func(o *Options) {
			o.OnPartial = func(id string, b []byte) {
				mu.Lock()
				got = append(got, id+":"+string(b))
				mu.Unlock()
			}
		})
		var self atomic.Pointer[Queue]
		w := open(t, dsn, "w", 1, func(ctx context.Context, r *queue.Record, logf func(string, string), addFile func(string)) queue.Outcome {
			for i := 1; i <= 3; i++ {
				self.Load().Publish(r.ID, []byte(fmt.Sprint("p", i)))
				time.Sleep(100 * time.Millisecond)
			}
			return queue.Outcome{Output: json.RawMessage(`{"done":true}`)}
		}, nil)
		self.Store(w)
		submit(t, api, queue.Record{ID: "s1", Stream: true, Ephemeral: true})
		r := wait(t, api, "s1")
		if !r.Stream || !r.Ephemeral || r.Failed() {
			t.Fatalf("record %+v", r)
		}
		waitFor(t, "the partials", 5*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got) == 3
		})
		mu.Lock()
		if !slices.Equal(got, []string{"s1:p1", "s1:p2", "s1:p3"}) {
			t.Errorf("partials %q", got)
		}
		mu.Unlock()
		api.Forget("s1")
		if _, _, err := api.Get("s1"); !errors.Is(err, queue.ErrNotFound) {
			t.Fatalf("after Forget: %v", err)
		}
	})

	t.Run("SweepRecent", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		api := open(t, dsn, "api", 1, nil, nil)
		base := time.Now().Add(-time.Minute)
		for i, id := range []string{"r1", "r2", "r3"} {
			r := queue.Record{ID: id, CreatedAt: base.Add(time.Duration(i) * time.Second)}
			if id == "r2" {
				r.Webhook = "http://hook"
			}
			submit(t, api, r)
		}
		submit(t, api, queue.Record{ID: "sync", Ephemeral: true})
		for _, id := range []string{"r1", "r2", "r3", "sync"} {
			wait(t, api, id)
		}
		recent, err := api.Recent(0, nil)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range recent {
			ids = append(ids, r.ID)
			if r.Input != nil || r.Status != queue.Completed {
				t.Errorf("recent %s: input %s status %s", r.ID, r.Input, r.Status)
			}
		}
		if !slices.Equal(ids, []string{"r3", "r2", "r1"}) {
			t.Errorf("recent %v", ids)
		}
		if recent, _ := api.Recent(1, func(id string) bool { return id != "r3" }); len(recent) != 1 || recent[0].ID != "r2" {
			t.Errorf("recent with keep and limit: %+v", recent)
		}
		n, files, err := api.Sweep(time.Now().Add(-time.Hour))
		if err != nil || n != 0 {
			t.Fatalf("sweep of nothing old: %d %v", n, err)
		}
		n, files, err = api.Sweep(time.Now().Add(time.Hour))
		slices.Sort(files)
		// r2's webhook is not done: it stays.
		if err != nil || n != 3 || !slices.Equal(files, []string{"file-r1", "file-r3", "file-sync"}) {
			t.Fatalf("sweep: %d %v %v", n, files, err)
		}
		if err := api.MarkWebhookDone("r2"); err != nil {
			t.Fatal(err)
		}
		if err := api.MarkWebhookDone("gone"); !errors.Is(err, queue.ErrNotFound) {
			t.Fatalf("mark unknown: %v", err)
		}
		if n, files, err = api.Sweep(time.Now().Add(time.Hour)); err != nil || n != 1 || !slices.Equal(files, []string{"file-r2"}) {
			t.Fatalf("sweep after webhook done: %d %v %v", n, files, err)
		}
	})

	t.Run("StopQueuesAgain", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		started := make(chan string, 1)
		w := open(t, dsn, "w", 2, blocking(started), nil)
		submit(t, w, queue.Record{ID: "durable"})
		<-started
		submit(t, w, queue.Record{ID: "sync", Ephemeral: true})
		<-started
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		w.Stop(ctx)
		select {
		case <-w.Draining():
		default:
			t.Fatal("not draining")
		}
		if _, err := w.Submit(queue.Record{ID: "late", Endpoint: "e", App: "e"}); !errors.Is(err, queue.ErrClosed) {
			t.Fatalf("submit while stopped: %v", err)
		}
		r, _, err := w.Get("durable")
		if err != nil || r.Status != queue.InQueue || r.Attempts != 0 || !hasLog(r, "WARN the server shut down while this request was running; it was queued again") {
			t.Fatalf("durable: %v %+v %q", err, r, messages(r))
		}
		r, _, _ = w.Get("sync")
		if r.Status != queue.Completed || r.Outcome.Status != 503 || r.Outcome.ErrorType != "runner_disconnected" {
			t.Fatalf("sync: %+v", r.Outcome)
		}
		w.Close(context.Background())
		if _, _, err := w.Get("durable"); !errors.Is(err, queue.ErrClosed) {
			t.Fatalf("get after close: %v", err)
		}
		if err := w.Ready(); !errors.Is(err, queue.ErrClosed) {
			t.Fatalf("ready after close: %v", err)
		}
		// Another node runs it.
		other := open(t, dsn, "other", 1, nil, nil)
		if r := wait(t, other, "durable"); r.Failed() || r.Attempts != 1 {
			t.Fatalf("rerun: %+v", r)
		}
	})

	t.Run("MigrateTogether", func(t *testing.T) {
		t.Parallel()
		dsn := pg.NewDatabase(t)
		var wg sync.WaitGroup
		for i := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				q, err := Open(context.Background(), dsn, echo(nil), Options{Options: queue.Options{Log: quiet}, Node: fmt.Sprint("n", i)})
				if err != nil {
					t.Error(err)
					return
				}
				q.Close(context.Background())
			}()
		}
		wg.Wait()
		q := open(t, dsn, "check", 0, nil, nil)
		var v int
		if err := q.pool.QueryRow(context.Background(), "SELECT version FROM falocal_schema").Scan(&v); err != nil || v != 1 {
			t.Fatalf("schema version %d %v", v, err)
		}
	})

	t.Run("Unreachable", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := Open(ctx, "postgres://postgres@127.0.0.1:1/x?sslmode=disable", echo(nil), Options{})
		if err == nil || !strings.Contains(err.Error(), "queue database: connect") {
			t.Fatalf("open: %v", err)
		}
	})
}

// TestRestart restarts PostgreSQL while requests are queued and running.
func TestRestart(t *testing.T) {
	pg := testenv.Postgres(t)
	var finished atomic.Int32
	mod := func(o *Options) {
		o.Lease = 5 * time.Second
		o.OnFinish = func(queue.Record) { finished.Add(1) }
	}
	api := open(t, pg.URL, "api", 0, nil, mod)
	var c counter
	run := func(ctx context.Context, r *queue.Record, logf func(string, string), addFile func(string)) queue.Outcome {
		c.add(r.ID)
		logf("INFO", "working")
		select {
		case <-time.After(400 * time.Millisecond):
		case <-ctx.Done():
			return queue.Cancelled()
		}
		logf("INFO", "done")
		return queue.Outcome{Output: json.RawMessage(`{}`)}
	}
	open(t, pg.URL, "w1", 2, run, mod)
	open(t, pg.URL, "w2", 2, run, mod)
	const n = 30
	for i := range n {
		submit(t, api, queue.Record{ID: fmt.Sprint("x", i)})
	}
	waitFor(t, "some running", 10*time.Second, func() bool {
		_, running := api.Depth()
		return running > 0
	})
	pg.Stop(t)
	waitFor(t, "Ready to report the outage", 5*time.Second, func() bool { return api.Ready() != nil })
	if _, err := api.Submit(queue.Record{ID: "during", Endpoint: "e", App: "e"}); !errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("submit during the outage: %v", err)
	}
	if _, _, err := api.Get("x0"); !errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("get during the outage: %v", err)
	}
	if err := api.Ready(); !errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("ready during the outage: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	pg.Start(t)
	waitFor(t, "Ready again", 10*time.Second, func() bool { return api.Ready() == nil })
	for i := range n {
		r := wait(t, api, fmt.Sprint("x", i))
		if r.Failed() {
			t.Errorf("x%d: %+v", i, r.Outcome)
		}
	}
	for i := range n {
		if got := c.get(fmt.Sprint("x", i)); got != 1 {
			t.Errorf("x%d ran %d times", i, got)
		}
	}
	waitFor(t, "every completion reported", 5*time.Second, func() bool { return finished.Load() == n })
	time.Sleep(200 * time.Millisecond)
	if finished.Load() != n {
		t.Errorf("finished %d times", finished.Load())
	}
}
