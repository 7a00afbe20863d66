package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// wait bounds every blocking step, so a broken queue fails instead of hanging.
const wait = 5 * time.Second

// fakeRunner records what ran; a request with a gate blocks until the gate
// is closed or its context ends.
type fakeRunner struct {
	mu      sync.Mutex
	ran     []string
	gates   map[string]chan struct{}
	ctxErrs map[string]error // ctx.Err() seen by a run that ended on its ctx
	started chan string
	seen    map[string]bool // starts waitStarted has taken from started
	// fn, when set, computes the outcome after the gate.
	fn func(ctx context.Context, r *Record, logf func(level, msg string), addFile func(id string)) Outcome
}

func newRunner() *fakeRunner {
	return &fakeRunner{gates: map[string]chan struct{}{}, ctxErrs: map[string]error{}, seen: map[string]bool{}, started: make(chan string, 100)}
}

// gate makes request id block when it runs; close the result to release it.
func (f *fakeRunner) gate(id string) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := make(chan struct{})
	f.gates[id] = g
	return g
}

func (f *fakeRunner) run(ctx context.Context, r *Record, logf func(level, msg string), addFile func(id string)) Outcome {
	f.mu.Lock()
	f.ran = append(f.ran, r.ID)
	g := f.gates[r.ID]
	f.mu.Unlock()
	f.started <- r.ID
	if g != nil {
		select {
		case <-g:
		case <-ctx.Done():
			f.mu.Lock()
			f.ctxErrs[r.ID] = ctx.Err()
			f.mu.Unlock()
			return Outcome{Status: 499, Error: "interrupted", ErrorType: "client_cancelled", Body: json.RawMessage(`{"detail":"interrupted"}`)}
		}
	}
	if f.fn != nil {
		return f.fn(ctx, r, logf, addFile)
	}
	return Outcome{Output: json.RawMessage(fmt.Sprintf(`{"id":%q}`, r.ID))}
}

func (f *fakeRunner) ranIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ran)
}

func (f *fakeRunner) ctxErr(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ctxErrs[id]
}

// waitStarted waits until the runner starts id (in whatever order requests
// start).
func (f *fakeRunner) waitStarted(t *testing.T, id string) {
	t.Helper()
	timeout := time.After(wait)
	for {
		f.mu.Lock()
		seen := f.seen[id]
		f.mu.Unlock()
		if seen {
			return
		}
		select {
		case got := <-f.started:
			f.mu.Lock()
			f.seen[got] = true
			f.mu.Unlock()
		case <-timeout:
			t.Fatalf("request %s never started (ran %v)", id, f.ranIDs())
		}
	}
}

// clock is a settable clock for Options.Now.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func open(t *testing.T, path string, run Runner, opts Options) *Queue {
	t.Helper()
	if opts.Log == nil {
		opts.Log = quiet()
	}
	q, err := Open(path, run, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeNow(q) })
	return q
}

// closeNow closes q without letting running requests finish.
func closeNow(q *Queue) error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return q.Close(ctx)
}

func dbPath(t *testing.T) string { return filepath.Join(t.TempDir(), "queue.db") }

func rec(id string) Record {
	return Record{ID: id, Endpoint: "fal-ai/x/sub", App: "fal-ai/x", Input: json.RawMessage(`{"n":1}`)}
}

func submit(t *testing.T, q *Queue, r Record) int {
	t.Helper()
	pos, err := q.Submit(r)
	if err != nil {
		t.Fatalf("submit %s: %v", r.ID, err)
	}
	return pos
}

func waitDone(t *testing.T, q *Queue, id string) Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	r, err := q.Wait(ctx, id)
	if err != nil {
		t.Fatalf("wait %s: %v", id, err)
	}
	if r.Status != Completed {
		t.Fatalf("wait %s: status %s", id, r.Status)
	}
	return r
}

func get(t *testing.T, q *Queue, id string) (Record, int) {
	t.Helper()
	r, pos, err := q.Get(id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return r, pos
}

// onDisk reads the database file directly (the queue must be closed).
func onDisk(t *testing.T, path string) map[string]Record {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]Record{}
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b == nil {
			return nil
		}
		in := tx.Bucket(inputs)
		return b.ForEach(func(k, v []byte) error {
			var r Record
			if json.Unmarshal(v, &r) == nil {
				if len(r.Input) != 0 {
					t.Errorf("record %s carries its input: the input is written once, apart", k)
				}
				r.Input = bytes.Clone(in.Get(k))
				out[string(k)] = r
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func checkOutcome(t *testing.T, r Record, status int, errType string) {
	t.Helper()
	if r.Status != Completed || r.Outcome == nil {
		t.Fatalf("%s: status %s outcome %v, want COMPLETED", r.ID, r.Status, r.Outcome)
	}
	if r.Outcome.Status != status || r.Outcome.ErrorType != errType {
		t.Fatalf("%s: outcome %d %q, want %d %q", r.ID, r.Outcome.Status, r.Outcome.ErrorType, status, errType)
	}
	if status != 0 {
		var body map[string]any
		if err := json.Unmarshal(r.Outcome.Body, &body); err != nil {
			t.Fatalf("%s: error body %s: %v", r.ID, r.Outcome.Body, err)
		}
		if d, _ := body["detail"].(string); d == "" {
			t.Errorf("%s: error body without detail: %s", r.ID, r.Outcome.Body)
		}
		if !r.Failed() || r.Outcome.Error == "" {
			t.Errorf("%s: Failed() = %v, Error %q", r.ID, r.Failed(), r.Outcome.Error)
		}
	} else if r.Failed() {
		t.Errorf("%s: Failed() on success", r.ID)
	}
}

func logLevels(r Record, level string) []string {
	var out []string
	for _, l := range r.Logs {
		if l.Level == level {
			out = append(out, l.Message)
		}
	}
	return out
}

// A queued request survives a restart and runs with the new Runner; an
// interrupted running one is queued again once, with a WARN line.
func TestPersistAcrossReopen(t *testing.T) {
	path := dbPath(t)
	f1 := newRunner()
	f1.gate("a")
	q := open(t, path, f1.run, Options{Workers: 1})
	r := rec("a")
	r.Webhook = "http://127.0.0.1:1/hook"
	r.Origin, r.CDN, r.Host = "http://example.com", "http://example.com/cdn", "example.com"
	submit(t, q, r)
	f1.waitStarted(t, "a")
	b := rec("b")
	b.Priority = Low
	b.Input = json.RawMessage(`{"prompt":"héllo"}`)
	if pos := submit(t, q, b); pos != 0 {
		t.Errorf("b queue position %d, want 0", pos)
	}
	if err := closeNow(q); err != nil {
		t.Fatal(err)
	}
	if err := closeNow(q); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := q.Submit(rec("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("submit after close: %v, want ErrClosed", err)
	}
	disk := onDisk(t, path)
	// A deliberate shutdown queues the running request again without
	// counting the attempt.
	if disk["a"].Status != InQueue || disk["a"].Attempts != 0 {
		t.Fatalf("a on disk: %s attempts %d, want IN_QUEUE 0", disk["a"].Status, disk["a"].Attempts)
	}
	if disk["b"].Status != InQueue || string(disk["b"].Input) != `{"prompt":"héllo"}` || disk["b"].Priority != Low {
		t.Fatalf("b on disk: %+v", disk["b"])
	}

	f2 := newRunner()
	q2 := open(t, path, f2.run, Options{Workers: 1})
	ra := waitDone(t, q2, "a")
	rb := waitDone(t, q2, "b")
	checkOutcome(t, ra, 0, "")
	checkOutcome(t, rb, 0, "")
	if string(ra.Outcome.Output) != `{"id":"a"}` {
		t.Errorf("a output %s", ra.Outcome.Output)
	}
	if ra.Attempts != 1 || rb.Attempts != 1 {
		t.Errorf("attempts a=%d b=%d, want 1 and 1", ra.Attempts, rb.Attempts)
	}
	if w := logLevels(ra, "WARN"); len(w) != 1 || !strings.Contains(w[0], "shut down") {
		t.Errorf("a WARN lines %q, want one about the shutdown", w)
	}
	if w := logLevels(rb, "WARN"); len(w) != 0 {
		t.Errorf("b (queued, not running) got WARN lines %q", w)
	}
	if ra.Webhook != r.Webhook || ra.Origin != r.Origin || ra.CDN != r.CDN || ra.Host != r.Host || ra.App != "fal-ai/x" || ra.Endpoint != "fal-ai/x/sub" {
		t.Errorf("a fields lost across reopen: %+v", ra)
	}
	if got := f2.ranIDs(); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("second runner ran %v, want [a b]", got)
	}
	if got := f1.ranIDs(); !reflect.DeepEqual(got, []string{"a"}) {
		t.Errorf("first runner ran %v, want [a]", got)
	}
	// Sequence numbers continue after the recovered ones.
	submit(t, q2, rec("c"))
	rc := waitDone(t, q2, "c")
	if rc.Seq <= rb.Seq {
		t.Errorf("seq after reopen %d, not above %d", rc.Seq, rb.Seq)
	}
}

// writeDisk stores records as a killed process would have left them.
func writeDisk(t *testing.T, path string, recs ...Record) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		for _, r := range recs {
			v, _ := json.Marshal(r)
			if err := b.Put([]byte(r.ID), v); err != nil {
				return err
			}
		}
		return b.Put([]byte("garbage"), []byte("{not json"))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// After a crash (kill -9: records left IN_PROGRESS), a request that was
// running is queued again once with a WARN line; one that was already
// re-run after an earlier crash completes with runner_disconnected instead.
func TestRecoverAfterCrash(t *testing.T) {
	path := dbPath(t)
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	once := rec("once")
	once.Status, once.Attempts, once.Seq, once.StartedAt = InProgress, 1, 7, t0
	once.Logs = []LogEntry{{Message: "request started", Level: "INFO", Source: "USER"}}
	twice := rec("twice")
	twice.Status, twice.Attempts, twice.Seq, twice.StartedAt = InProgress, 2, 3, t0
	twice.Logs = []LogEntry{{Message: "restarted before", Level: "WARN", Source: "USER"}}
	queued := rec("queued")
	queued.Status, queued.Seq = InQueue, 9
	writeDisk(t, path, once, twice, queued)

	f := newRunner()
	var hooked atomic.Int32
	q := open(t, path, f.run, Options{Workers: 1, OnComplete: func(Record) { hooked.Add(1) }})
	r := waitDone(t, q, "twice")
	checkOutcome(t, r, 503, "runner_disconnected")
	if w := logLevels(r, "WARN"); len(w) != 1 {
		t.Errorf("twice: WARN lines %q; it must not be re-queued again", w)
	}
	r = waitDone(t, q, "once")
	checkOutcome(t, r, 0, "")
	if w := logLevels(r, "WARN"); len(w) != 1 || !strings.Contains(w[0], "restarted") {
		t.Errorf("once: WARN lines %q, want one about the restart", w)
	}
	if r.Attempts != 2 {
		t.Errorf("once: attempts %d, want 2", r.Attempts)
	}
	checkOutcome(t, waitDone(t, q, "queued"), 0, "")
	// The interrupted request keeps its place (seq 7) before the queued one.
	if got := f.ranIDs(); !reflect.DeepEqual(got, []string{"once", "queued"}) {
		t.Errorf("ran %v, want [once queued]; twice must not run", got)
	}
	// New requests are numbered after the recovered ones.
	submit(t, q, rec("new"))
	if r := waitDone(t, q, "new"); r.Seq <= 9 {
		t.Errorf("seq after recovery %d", r.Seq)
	}
	if _, _, err := q.Get("garbage"); err == nil {
		t.Error("an unreadable record was served")
	}
	closeNow(q)
	if d := onDisk(t, path)["twice"]; d.Status != Completed || d.Outcome == nil || d.Outcome.Status != 503 {
		t.Errorf("twice on disk: %+v", d)
	}
	if n := hooked.Load(); n != 0 {
		t.Errorf("OnComplete called %d times without webhooks", n)
	}
}

// A request interrupted by shutdown twice in a row is not run a third time.
// Deliberate shutdowns are not crashes: however often one interrupts a
// request, it runs again after the next start.
func TestGracefulInterruptsDoNotGiveUp(t *testing.T) {
	path := dbPath(t)
	for i := 0; i < 3; i++ {
		f := newRunner()
		f.gate("a")
		q := open(t, path, f.run, Options{})
		if i == 0 {
			submit(t, q, rec("a"))
		}
		f.waitStarted(t, "a")
		closeNow(q)
		if d := onDisk(t, path)["a"]; d.Status != InQueue || d.Attempts != 0 {
			t.Fatalf("stop %d: a on disk %s attempts %d", i+1, d.Status, d.Attempts)
		}
	}
	f := newRunner()
	q := open(t, path, f.run, Options{})
	checkOutcome(t, waitDone(t, q, "a"), 0, "")
}

func TestEphemeralNeverWritten(t *testing.T) {
	path := dbPath(t)
	f := newRunner()
	g := f.gate("sync")
	var hooks atomic.Int32
	q := open(t, path, f.run, Options{OnComplete: func(Record) { hooks.Add(1) }})
	r := rec("sync")
	r.Ephemeral = true
	r.Webhook = "http://127.0.0.1:1/ignored"
	submit(t, q, r)
	f.waitStarted(t, "sync")
	if got, _ := get(t, q, "sync"); got.Status != InProgress {
		t.Fatalf("status %s", got.Status)
	}
	close(g)
	checkOutcome(t, waitDone(t, q, "sync"), 0, "")
	submit(t, q, rec("durable"))
	waitDone(t, q, "durable")
	closeNow(q)
	disk := onDisk(t, path)
	if _, ok := disk["sync"]; ok {
		t.Error("ephemeral request written to disk")
	}
	if _, ok := disk["durable"]; !ok {
		t.Error("durable request not on disk")
	}
	if hooks.Load() != 0 {
		t.Error("OnComplete called for an ephemeral request")
	}
	q2 := open(t, path, newRunner().run, Options{})
	if _, _, err := q2.Get("sync"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ephemeral after reopen: %v, want ErrNotFound", err)
	}
}

func TestPriorityAndPositions(t *testing.T) {
	for _, path := range []string{"", "disk"} {
		t.Run("path="+path, func(t *testing.T) {
			if path != "" {
				path = dbPath(t)
			}
			f := newRunner()
			g := f.gate("blocker")
			q := open(t, path, f.run, Options{Workers: 1})
			if pos := submit(t, q, rec("blocker")); pos != 0 {
				t.Errorf("blocker position %d", pos)
			}
			f.waitStarted(t, "blocker")
			low := func(id string) Record { r := rec(id); r.Priority = Low; return r }
			// Position at submit: how many pending requests run first.
			for _, tc := range []struct {
				r   Record
				pos int
			}{{low("l1"), 0}, {rec("n1"), 0}, {low("l2"), 2}, {rec("n2"), 1}, {rec("n3"), 2}} {
				if pos := submit(t, q, tc.r); pos != tc.pos {
					t.Errorf("%s submitted at position %d, want %d", tc.r.ID, pos, tc.pos)
				}
			}
			want := map[string]int{"n1": 0, "n2": 1, "n3": 2, "l1": 3, "l2": 4}
			for id, p := range want {
				r, pos := get(t, q, id)
				if r.Status != InQueue || pos != p {
					t.Errorf("%s: %s position %d, want IN_QUEUE %d", id, r.Status, pos, p)
				}
			}
			if r, pos := get(t, q, "blocker"); r.Status != InProgress || pos != 0 {
				t.Errorf("blocker: %s %d", r.Status, pos)
			}
			if queued, running := q.Depth(); queued != 5 || running != 1 {
				t.Errorf("Depth = %d, %d; want 5, 1", queued, running)
			}
			// Cancelling one moves those behind it up.
			if res, err := q.Cancel("n2"); err != nil || res != CancelRequested {
				t.Fatalf("cancel n2: %v %v", res, err)
			}
			if _, pos := get(t, q, "l1"); pos != 2 {
				t.Errorf("l1 after a cancel: position %d, want 2", pos)
			}
			close(g)
			for _, id := range []string{"n1", "n3", "l1", "l2"} {
				checkOutcome(t, waitDone(t, q, id), 0, "")
			}
			if got, want := f.ranIDs(), []string{"blocker", "n1", "n3", "l1", "l2"}; !reflect.DeepEqual(got, want) {
				t.Errorf("ran %v, want %v", got, want)
			}
		})
	}
}

// With several workers, requests run at once.
func TestWorkersRunConcurrently(t *testing.T) {
	f := newRunner()
	ga, gb := f.gate("a"), f.gate("b")
	q := open(t, "", f.run, Options{Workers: 2})
	submit(t, q, rec("a"))
	submit(t, q, rec("b"))
	f.waitStarted(t, "a")
	f.waitStarted(t, "b")
	if queued, running := q.Depth(); queued != 0 || running != 2 {
		t.Errorf("Depth = %d, %d; want 0, 2", queued, running)
	}
	close(ga)
	close(gb)
	waitDone(t, q, "a")
	waitDone(t, q, "b")
}

func TestCancel(t *testing.T) {
	for _, path := range []string{"", "disk"} {
		t.Run("path="+path, func(t *testing.T) {
			if path != "" {
				path = dbPath(t)
			}
			f := newRunner()
			f.gate("running")
			q := open(t, path, f.run, Options{Workers: 1})
			submit(t, q, rec("running"))
			f.waitStarted(t, "running")
			submit(t, q, rec("queued"))

			// Queued: completes at once, never runs.
			if res, err := q.Cancel("queued"); err != nil || res != CancelRequested {
				t.Fatalf("cancel queued: %v %v", res, err)
			}
			r, _ := get(t, q, "queued")
			checkOutcome(t, r, 499, "client_cancelled")
			if r.Attempts != 0 || !r.StartedAt.IsZero() {
				t.Errorf("cancelled queued request has attempts %d started %v", r.Attempts, r.StartedAt)
			}
			if res, _ := q.Cancel("queued"); res != AlreadyCompleted {
				t.Errorf("second cancel: %v, want AlreadyCompleted", res)
			}

			// Running: its context ends; the runner's answer is the outcome.
			if res, err := q.Cancel("running"); err != nil || res != CancelRequested {
				t.Fatalf("cancel running: %v %v", res, err)
			}
			r = waitDone(t, q, "running")
			if !errors.Is(f.ctxErr("running"), context.Canceled) {
				t.Errorf("runner ctx error %v, want Canceled", f.ctxErr("running"))
			}
			checkOutcome(t, r, 499, "client_cancelled")

			// Completed and unknown.
			submit(t, q, rec("done"))
			waitDone(t, q, "done")
			if res, err := q.Cancel("done"); err != nil || res != AlreadyCompleted {
				t.Errorf("cancel completed: %v %v", res, err)
			}
			if res, err := q.Cancel("nope"); err != nil || res != NotFound {
				t.Errorf("cancel unknown: %v %v", res, err)
			}
			if got, want := f.ranIDs(), []string{"running", "done"}; !reflect.DeepEqual(got, want) {
				t.Errorf("ran %v, want %v", got, want)
			}
			if path == "" {
				return
			}
			// After a restart the completed records are read from disk.
			closeNow(q)
			q2 := open(t, path, newRunner().run, Options{})
			if res, err := q2.Cancel("done"); err != nil || res != AlreadyCompleted {
				t.Errorf("cancel completed after reopen: %v %v", res, err)
			}
			r, _ = get(t, q2, "queued")
			checkOutcome(t, r, 499, "client_cancelled")
		})
	}
}

// Concurrent cancels of one queued request: one wins, none panics.
func TestCancelConcurrent(t *testing.T) {
	f := newRunner()
	g := f.gate("blocker")
	q := open(t, "", f.run, Options{Workers: 1})
	submit(t, q, rec("blocker"))
	f.waitStarted(t, "blocker")
	for i := range 20 {
		id := fmt.Sprint("q", i)
		submit(t, q, rec(id))
		var wg sync.WaitGroup
		var requested atomic.Int32
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if res, err := q.Cancel(id); err != nil {
					t.Error(err)
				} else if res == CancelRequested {
					requested.Add(1)
				}
			}()
		}
		wg.Wait()
		if n := requested.Load(); n != 1 {
			t.Errorf("%s: %d cancels requested, want 1", id, n)
		}
		r, _ := get(t, q, id)
		checkOutcome(t, r, 499, "client_cancelled")
	}
	close(g)
	waitDone(t, q, "blocker")
}

func TestStartDeadline(t *testing.T) {
	c := newClock()
	f := newRunner()
	g := f.gate("blocker")
	q := open(t, dbPath(t), f.run, Options{Workers: 1, Now: c.Now})
	submit(t, q, rec("blocker"))
	f.waitStarted(t, "blocker")
	late := rec("late")
	late.StartDeadline = c.Now().Add(time.Minute)
	submit(t, q, late)
	ok := rec("ok")
	ok.StartDeadline = c.Now().Add(time.Hour)
	submit(t, q, ok)
	c.Advance(2 * time.Minute)
	// Expired while the only worker is still busy: completed without it.
	q.ExpireDeadlines()
	if r, _ := get(t, q, "late"); r.Status != Completed {
		t.Fatalf("late is %s while the worker is busy, want COMPLETED", r.Status)
	}
	close(g)
	r := waitDone(t, q, "late")
	checkOutcome(t, r, 504, "request_timeout")
	checkOutcome(t, waitDone(t, q, "ok"), 0, "")
	if got, want := f.ranIDs(), []string{"blocker", "ok"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ran %v, want %v", got, want)
	}
	// Already past at submit: never runs either.
	past := rec("past")
	past.StartDeadline = c.Now().Add(-time.Second)
	submit(t, q, past)
	checkOutcome(t, waitDone(t, q, "past"), 504, "request_timeout")
	if slices.Contains(f.ranIDs(), "past") {
		t.Error("a request past its start deadline ran")
	}
}

func TestMaxQueued(t *testing.T) {
	f := newRunner()
	g := f.gate("blocker")
	q := open(t, "", f.run, Options{Workers: 1, MaxQueued: 2})
	submit(t, q, rec("blocker"))
	f.waitStarted(t, "blocker") // running requests do not count
	submit(t, q, rec("a"))
	submit(t, q, rec("b"))
	if _, err := q.Submit(rec("c")); !errors.Is(err, ErrFull) {
		t.Fatalf("third pending: %v, want ErrFull", err)
	}
	if _, _, err := q.Get("c"); !errors.Is(err, ErrNotFound) {
		t.Errorf("refused request is known: %v", err)
	}
	// A cancel frees a place.
	q.Cancel("a")
	submit(t, q, rec("c"))
	close(g)
	waitDone(t, q, "c")
	submit(t, q, rec("d"))
	waitDone(t, q, "d")
}

func TestSubscribe(t *testing.T) {
	f := newRunner()
	gb := f.gate("blocker")
	step := make(chan struct{})
	logged := make(chan struct{}, 1)
	f.fn = func(ctx context.Context, r *Record, logf func(level, msg string), addFile func(string)) Outcome {
		if r.ID != "a" {
			return Outcome{Output: json.RawMessage(`{}`)}
		}
		for _, l := range [][2]string{{"INFO", "step one"}, {"DEBUG", "step two"}, {}} {
			select {
			case <-step:
			case <-ctx.Done():
				return Outcome{Status: 499, Error: "interrupted"}
			}
			if l[1] == "" {
				break
			}
			logf(l[0], l[1])
			logged <- struct{}{}
		}
		return Outcome{Output: json.RawMessage(`{"done":true}`)}
	}
	// The gate releases into fn, so a's gate is a pass-through.
	close(f.gate("a"))
	q := open(t, "", f.run, Options{Workers: 1})
	submit(t, q, rec("blocker"))
	f.waitStarted(t, "blocker")
	submit(t, q, rec("a"))
	ch, stop := q.Subscribe("a")
	defer stop()
	other, stopOther := q.Subscribe("a")
	stopOther()

	next := func(what string) {
		t.Helper()
		select {
		case _, ok := <-ch:
			if !ok {
				t.Fatalf("%s: channel closed", what)
			}
		case <-time.After(wait):
			t.Fatalf("%s: no notification", what)
		}
	}
	select {
	case <-ch:
		t.Fatal("notification before anything changed")
	default:
	}
	close(gb)
	next("start")
	if r, _ := get(t, q, "a"); r.Status != InProgress {
		t.Fatalf("after start notification: %s", r.Status)
	}
	step <- struct{}{}
	<-logged
	next("first log")
	r, _ := get(t, q, "a")
	if l := r.Logs[len(r.Logs)-1]; l.Message != "step one" || l.Level != "INFO" || l.Source != "USER" {
		t.Fatalf("last log %+v", l)
	}
	step <- struct{}{}
	<-logged
	next("second log")
	r, _ = get(t, q, "a")
	if l := r.Logs[len(r.Logs)-1]; l.Message != "step two" || l.Level != "DEBUG" {
		t.Fatalf("last log %+v", l)
	}
	if _, err := time.Parse(time.RFC3339Nano, r.Logs[0].Timestamp); err != nil {
		t.Errorf("timestamp %q is not ISO-8601: %v", r.Logs[0].Timestamp, err)
	}
	step <- struct{}{}
	next("completion")
	if r, _ := get(t, q, "a"); r.Status != Completed {
		t.Fatalf("after completion notification: %s", r.Status)
	}
	select {
	case <-other:
		t.Error("an unsubscribed channel was notified")
	default:
	}
	// Unknown requests: a closed channel, nothing will change.
	unk, stopUnk := q.Subscribe("nope")
	defer stopUnk()
	select {
	case _, ok := <-unk:
		if ok {
			t.Error("unknown request: channel delivered a value")
		}
	default:
		t.Error("unknown request: channel not closed")
	}
}

func TestWait(t *testing.T) {
	f := newRunner()
	g := f.gate("a")
	q := open(t, "", f.run, Options{})
	submit(t, q, rec("a"))
	f.waitStarted(t, "a")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r, err := q.Wait(ctx, "a"); !errors.Is(err, context.Canceled) || r.Status != InProgress {
		t.Errorf("Wait with a done ctx: %s %v", r.Status, err)
	}
	got := make(chan Record, 1)
	go func() {
		r, err := q.Wait(context.Background(), "a")
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	close(g)
	select {
	case r := <-got:
		checkOutcome(t, r, 0, "")
	case <-time.After(wait):
		t.Fatal("Wait did not return")
	}
	// Already complete: returns at once.
	checkOutcome(t, waitDone(t, q, "a"), 0, "")
	if _, err := q.Wait(context.Background(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Wait unknown: %v", err)
	}
}

func TestPanickingRunner(t *testing.T) {
	var buf syncBuffer
	f := newRunner()
	f.fn = func(ctx context.Context, r *Record, logf func(level, msg string), addFile func(string)) Outcome {
		if r.ID == "boom" {
			panic("kaboom")
		}
		return Outcome{Output: json.RawMessage(`{}`)}
	}
	q := open(t, "", f.run, Options{Workers: 1, Log: slog.New(slog.NewTextHandler(&buf, nil))})
	for i := range 3 {
		id := fmt.Sprint("ok", i)
		submit(t, q, rec("boom"+fmt.Sprint(i)))
		submit(t, q, rec(id))
		checkOutcome(t, waitDone(t, q, id), 0, "")
	}
	submit(t, q, rec("boom"))
	r := waitDone(t, q, "boom")
	checkOutcome(t, r, 500, "internal_error")
	if strings.Contains(string(r.Outcome.Body), "kaboom") {
		t.Errorf("panic value leaks into the body: %s", r.Outcome.Body)
	}
	if !strings.Contains(buf.String(), "kaboom") {
		t.Error("panic not logged")
	}
	submit(t, q, rec("after"))
	checkOutcome(t, waitDone(t, q, "after"), 0, "")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSweep(t *testing.T) {
	for _, path := range []string{"", "disk"} {
		t.Run("path="+path, func(t *testing.T) {
			if path != "" {
				path = dbPath(t)
			}
			c := newClock()
			f := newRunner()
			f.fn = func(ctx context.Context, r *Record, logf func(level, msg string), addFile func(string)) Outcome {
				addFile(r.ID + "-f1")
				addFile(r.ID + "-f2")
				return Outcome{Output: json.RawMessage(`{}`)}
			}
			hooked := make(chan string, 10)
			q := open(t, path, f.run, Options{Now: c.Now, OnComplete: func(r Record) { hooked <- r.ID }})
			submit(t, q, rec("old"))
			hook := rec("hook")
			hook.Webhook = "http://127.0.0.1:1/"
			submit(t, q, hook)
			waitDone(t, q, "old")
			if r := waitDone(t, q, "hook"); !slices.Equal(r.Files, []string{"hook-f1", "hook-f2"}) {
				t.Errorf("files %v", r.Files)
			}
			c.Advance(time.Hour)
			submit(t, q, rec("new"))
			waitDone(t, q, "new")
			select {
			case id := <-hooked:
				if id != "hook" {
					t.Errorf("OnComplete for %s", id)
				}
			case <-time.After(wait):
				t.Fatal("OnComplete not called")
			}

			n, files, err := q.Sweep(c.Now().Add(-time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if n != 1 || !slices.Equal(files, []string{"old-f1", "old-f2"}) {
				t.Errorf("Sweep = %d %v, want 1 [old-f1 old-f2]", n, files)
			}
			if _, _, err := q.Get("old"); !errors.Is(err, ErrNotFound) {
				t.Errorf("swept request: %v", err)
			}
			for _, id := range []string{"hook", "new"} {
				if _, _, err := q.Get(id); err != nil {
					t.Errorf("%s after sweep: %v", id, err)
				}
			}
			if err := q.MarkWebhookDone("hook"); err != nil {
				t.Fatal(err)
			}
			if r, _ := get(t, q, "hook"); !r.WebhookDone {
				t.Error("WebhookDone not set")
			}
			n, files, err = q.Sweep(c.Now().Add(-time.Minute))
			if err != nil || n != 1 || !slices.Equal(files, []string{"hook-f1", "hook-f2"}) {
				t.Errorf("second Sweep = %d %v %v", n, files, err)
			}
			if _, _, err := q.Get("hook"); !errors.Is(err, ErrNotFound) {
				t.Errorf("swept webhook request: %v", err)
			}
			if n, _, _ := q.Sweep(c.Now().Add(-time.Minute)); n != 0 {
				t.Errorf("third Sweep removed %d", n)
			}
			if path == "" {
				return
			}
			closeNow(q)
			disk := onDisk(t, path)
			if len(disk) != 1 || disk["new"].ID != "new" {
				t.Errorf("on disk after sweep: %v", disk)
			}
		})
	}
}

// Sweep leaves requests that are queued or running alone.
func TestSweepKeepsUnfinished(t *testing.T) {
	c := newClock()
	f := newRunner()
	g := f.gate("running")
	q := open(t, dbPath(t), f.run, Options{Workers: 1, Now: c.Now})
	submit(t, q, rec("running"))
	f.waitStarted(t, "running")
	submit(t, q, rec("queued"))
	c.Advance(time.Hour)
	if n, _, err := q.Sweep(c.Now()); err != nil || n != 0 {
		t.Errorf("Sweep = %d %v", n, err)
	}
	close(g)
	waitDone(t, q, "running")
	waitDone(t, q, "queued")
}

func TestMarkWebhookDone(t *testing.T) {
	path := dbPath(t)
	f := newRunner()
	hooked := make(chan string, 10)
	onComplete := func(r Record) { hooked <- r.ID }
	q := open(t, path, f.run, Options{OnComplete: onComplete})
	for _, id := range []string{"done", "pending", "undelivered"} {
		r := rec(id)
		r.Webhook = "http://127.0.0.1:1/" + id
		submit(t, q, r)
	}
	submit(t, q, rec("plain"))
	for _, id := range []string{"done", "pending", "undelivered", "plain"} {
		waitDone(t, q, id)
	}
	got := map[string]bool{}
	for range 3 {
		select {
		case id := <-hooked:
			got[id] = true
		case <-time.After(wait):
			t.Fatalf("OnComplete calls: %v", got)
		}
	}
	if !got["done"] || !got["pending"] || !got["undelivered"] {
		t.Fatalf("OnComplete for %v", got)
	}
	if err := q.MarkWebhookDone("done"); err != nil {
		t.Fatal(err)
	}
	if err := q.MarkWebhookDone("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("MarkWebhookDone unknown: %v", err)
	}
	closeNow(q)
	if d := onDisk(t, path); !d["done"].WebhookDone || d["pending"].WebhookDone {
		t.Errorf("on disk: done %v pending %v", d["done"].WebhookDone, d["pending"].WebhookDone)
	}

	// After a restart, undelivered webhooks are delivered again, with the
	// completed record.
	f2 := newRunner()
	recs := make(chan Record, 10)
	q2 := open(t, path, f2.run, Options{OnComplete: func(r Record) { recs <- r }})
	again := map[string]Record{}
	for range 2 {
		select {
		case r := <-recs:
			again[r.ID] = r
		case <-time.After(wait):
			t.Fatalf("OnComplete after reopen: %v", again)
		}
	}
	for _, id := range []string{"pending", "undelivered"} {
		r, ok := again[id]
		if !ok {
			t.Fatalf("OnComplete after reopen for %v, want pending and failed", again)
		}
		checkOutcome(t, r, 0, "")
		if r.Webhook != "http://127.0.0.1:1/"+id {
			t.Errorf("%s webhook %q", id, r.Webhook)
		}
	}
	q2.MarkWebhookDone("pending")
	q2.MarkWebhookDone("undelivered")
	if len(f2.ranIDs()) != 0 {
		t.Errorf("completed requests ran again: %v", f2.ranIDs())
	}
	closeNow(q2)
	select {
	case r := <-recs:
		t.Errorf("extra OnComplete for %s", r.ID)
	default:
	}
	// Once all are done, a restart calls nothing.
	q3 := open(t, path, newRunner().run, Options{OnComplete: func(r Record) { recs <- r }})
	submit(t, q3, rec("probe"))
	waitDone(t, q3, "probe")
	closeNow(q3)
	select {
	case r := <-recs:
		t.Errorf("OnComplete after all were done: %s", r.ID)
	default:
	}
}

// closing waits until Close has marked q closed.
func closing(t *testing.T, q *Queue) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		q.mu.Lock()
		c := q.closed
		q.mu.Unlock()
		if c {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("Close never began")
		}
		time.Sleep(time.Millisecond)
	}
}

// Close lets a running request finish when ctx allows; queued ones stay
// queued on disk and run after the next start.
func TestCloseLetsRunningFinish(t *testing.T) {
	path := dbPath(t)
	f := newRunner()
	g := f.gate("a")
	q := open(t, path, f.run, Options{Workers: 1})
	submit(t, q, rec("a"))
	f.waitStarted(t, "a")
	submit(t, q, rec("b"))
	closed := make(chan error, 1)
	go func() {
		// Far longer than the test waits: Close must return as soon as a
		// finishes, not when ctx ends.
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		closed <- q.Close(ctx)
	}()
	closing(t, q)
	if _, err := q.Submit(rec("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("submit while closing: %v, want ErrClosed", err)
	}
	select {
	case <-closed:
		t.Fatal("Close returned while a request was running")
	default:
	}
	if r, _ := get(t, q, "a"); r.Status != InProgress {
		t.Errorf("a while closing: %s", r.Status)
	}
	close(g)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("Close did not return")
	}
	if f.ctxErr("a") != nil {
		t.Errorf("a was interrupted: %v", f.ctxErr("a"))
	}
	if got := f.ranIDs(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("ran %v; b must not start during Close", got)
	}
	disk := onDisk(t, path)
	if d := disk["a"]; d.Status != Completed || d.Outcome == nil || d.Outcome.Status != 0 {
		t.Errorf("a on disk: %s %+v", d.Status, d.Outcome)
	}
	if d := disk["b"]; d.Status != InQueue {
		t.Errorf("b on disk: %s, want IN_QUEUE", d.Status)
	}
	f2 := newRunner()
	q2 := open(t, path, f2.run, Options{})
	checkOutcome(t, waitDone(t, q2, "b"), 0, "")
	if r, _ := get(t, q2, "a"); r.Status != Completed || len(logLevels(r, "WARN")) != 0 {
		t.Errorf("a after reopen: %s, WARN %q", r.Status, logLevels(r, "WARN"))
	}
	if got := f2.ranIDs(); !slices.Equal(got, []string{"b"}) {
		t.Errorf("after reopen ran %v, want [b]", got)
	}
}

func TestCloseInterruptsRunning(t *testing.T) {
	path := dbPath(t)
	f := newRunner()
	f.gate("a")
	q := open(t, path, f.run, Options{})
	submit(t, q, rec("a"))
	f.waitStarted(t, "a")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(f.ctxErr("a"), context.Canceled) {
		t.Errorf("runner ctx: %v, want Canceled", f.ctxErr("a"))
	}
	if d := onDisk(t, path)["a"]; d.Status != InQueue || d.Outcome != nil {
		t.Fatalf("a on disk: %s %+v, want IN_QUEUE", d.Status, d.Outcome)
	}
	f2 := newRunner()
	q2 := open(t, path, f2.run, Options{})
	checkOutcome(t, waitDone(t, q2, "a"), 0, "")
	if !slices.Equal(f2.ranIDs(), []string{"a"}) {
		t.Errorf("after reopen ran %v", f2.ranIDs())
	}
}

// A sync (ephemeral) request interrupted by shutdown completes with 503, so
// its waiting caller gets an answer.
func TestCloseEphemeralGets503(t *testing.T) {
	f := newRunner()
	f.gate("sync")
	q := open(t, dbPath(t), f.run, Options{})
	r := rec("sync")
	r.Ephemeral = true
	submit(t, q, r)
	f.waitStarted(t, "sync")
	got := make(chan Record, 1)
	go func() {
		r, _ := q.Wait(context.Background(), "sync")
		got <- r
	}()
	closeNow(q)
	select {
	case r := <-got:
		checkOutcome(t, r, 503, "runner_disconnected")
	case <-time.After(wait):
		t.Fatal("Wait did not return after Close")
	}
}

func TestMemoryMode(t *testing.T) {
	f := newRunner()
	var hooks atomic.Int32
	q := open(t, "", f.run, Options{OnComplete: func(Record) { hooks.Add(1) }})
	if q.db != nil {
		t.Fatal("memory mode opened a database")
	}
	submit(t, q, rec("a"))
	r := waitDone(t, q, "a")
	checkOutcome(t, r, 0, "")
	if r.Attempts != 1 || r.StartedAt.IsZero() || r.CompletedAt.Before(r.StartedAt) {
		t.Errorf("record %+v", r)
	}
	if logs := logLevels(r, "INFO"); len(logs) < 2 {
		t.Errorf("INFO logs %q, want start and completion lines", logs)
	}
	if err := q.MarkWebhookDone("a"); err != nil {
		t.Errorf("MarkWebhookDone: %v", err)
	}
	if res, _ := q.Cancel("a"); res != AlreadyCompleted {
		t.Errorf("cancel: %v", res)
	}
	if n, _, err := q.Sweep(time.Now().Add(time.Hour)); n != 1 || err != nil {
		t.Errorf("Sweep: %d %v", n, err)
	}
	if _, _, err := q.Get("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after sweep: %v", err)
	}
	if err := closeNow(q); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestOpenBadPath(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "missing", "dir", "q.db"), newRunner().run, Options{Log: quiet()}); err == nil {
		t.Fatal("Open in a missing directory succeeded")
	}
}

// A queue.db written before inputs had their own bucket (input inside the
// record) is read with its inputs, which move to the inputs bucket.
func TestInlineInputMigrates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := rec("old")
	old.Input = json.RawMessage(`{"prompt":"from before"}`)
	old.Status, old.Seq = InQueue, 1
	b, _ := json.Marshal(old)
	db.Update(func(tx *bolt.Tx) error {
		bk, _ := tx.CreateBucketIfNotExists(bucket)
		return bk.Put([]byte("old"), b)
	})
	db.Close()
	f := newRunner()
	gate := f.gate("old")
	q := open(t, path, f.run, Options{Workers: 1})
	r, _, err := q.Get("old")
	if err != nil || string(r.Input) != `{"prompt":"from before"}` {
		t.Fatalf("recovered %q, %v", r.Input, err)
	}
	close(gate)
	waitDone(t, q, "old")
	closeNow(q)
	if d := onDisk(t, path); string(d["old"].Input) != `{"prompt":"from before"}` {
		t.Fatalf("on disk after migration: %q", d["old"].Input)
	}
}
