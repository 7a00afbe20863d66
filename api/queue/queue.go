// Package queue is fal's request queue: accepted requests and their results
// live in an embedded on-disk database (bbolt), so that a restart — even
// kill -9 — loses no accepted request. Workers run requests by priority
// (normal before low, then first come first served); callers follow a
// request by polling or subscribing, and can cancel it queued or running.
package queue

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Status is one of the three states fal clients know.
type Status string

// The only states a fal client accepts; failures are COMPLETED with an error.
const (
	InQueue    Status = "IN_QUEUE"
	InProgress Status = "IN_PROGRESS"
	Completed  Status = "COMPLETED"
)

// Priorities, as X-Fal-Queue-Priority names them.
const (
	Normal = 0
	Low    = 1
)

// LogEntry is a fal queue log line.
type LogEntry struct {
	Message   string `json:"message"`
	Level     string `json:"level"`
	Source    string `json:"source"`
	Timestamp string `json:"timestamp"`
}

// Outcome is how a run ended: an output body, or an error status and body.
type Outcome struct {
	Output    json.RawMessage // success: the model's output JSON
	Status    int             // error: HTTP status (0 = success)
	Body      json.RawMessage // error: fal's error body
	Error     string          // error: message for status.error
	ErrorType string          // error: fal error_type
}

// ErrorOutcome is an error status with fal's body for it.
func ErrorOutcome(status int, msg, errorType string) Outcome {
	return Outcome{Status: status, Error: msg, ErrorType: errorType,
		Body: mustJSON(map[string]string{"detail": msg, "error_type": errorType})}
}

// ShuttingDown is the outcome of a request the server stopped for good
// before it could finish, on either queue.
func ShuttingDown() Outcome {
	return ErrorOutcome(503, "the server is shutting down", "runner_disconnected")
}

// Record is one request, as stored.
type Record struct {
	ID       string          `json:"id"`
	Endpoint string          `json:"endpoint"`        // full endpoint id
	App      string          `json:"app"`             // [ns/]owner/alias: the status/result URL prefix
	Input    json.RawMessage `json:"input,omitempty"` // stored once, in the inputs bucket
	Priority int             `json:"priority"`
	Seq      uint64          `json:"seq"`
	Status   Status          `json:"status"`
	// Webhook is the fal_webhook URL; WebhookDone records its delivery.
	Webhook     string `json:"webhook,omitempty"`
	WebhookDone bool   `json:"webhook_done,omitempty"`
	// Origin is the base URL the client used (for URLs in replies); CDN the
	// base of output file URLs.
	Origin        string     `json:"origin"`
	CDN           string     `json:"cdn"`
	Host          string     `json:"host"`
	CreatedAt     time.Time  `json:"created_at"`
	StartedAt     time.Time  `json:"started_at,omitzero"`
	CompletedAt   time.Time  `json:"completed_at,omitzero"`
	StartDeadline time.Time  `json:"start_deadline,omitzero"`
	Attempts      int        `json:"attempts"`
	Logs          []LogEntry `json:"logs,omitempty"`
	Outcome       *Outcome   `json:"outcome,omitempty"`
	InferenceTime float64    `json:"inference_time,omitempty"`
	Files         []string   `json:"files,omitempty"` // output file ids, removed with the record
	// InputBytes is the input's size, kept after the input is let go (for
	// the audit log); Submit sets it.
	InputBytes int `json:"input_bytes,omitempty"`
	// Ephemeral requests (sync runs) are not written to disk: their caller
	// holds the connection and nobody can ask for them after a restart.
	Ephemeral bool `json:"-"`
	// MaxQueueLength, when positive, refuses the submission (ErrFull) if
	// that many requests already wait: fal's fal_max_queue_length.
	MaxQueueLength int `json:"-"`
	// Stream marks a sync /stream run, whose partial outputs a shared queue
	// carries from the node that runs it to the node that holds its caller.
	Stream bool `json:"stream,omitempty"`
}

// Failed reports whether the request completed with an error.
func (r *Record) Failed() bool { return r.Outcome != nil && r.Outcome.Status != 0 }

// Runner executes a request. It must return when ctx is done. logf adds a
// log line; addFile records an output file that shares the request's life.
type Runner func(ctx context.Context, r *Record, logf func(level, msg string), addFile func(id string)) Outcome

// Options configure a queue.
type Options struct {
	Workers   int // requests run at once
	MaxQueued int // pending requests accepted at most (0 = no limit)
	Log       *slog.Logger
	// OnComplete is called after a durable request with a webhook
	// completes, and at Open for each completed one whose webhook is not
	// marked done (MarkWebhookDone). It is called synchronously, from
	// whichever goroutine completed the request (Open's, for recovered
	// ones), so it must not block: the caller starts, owns and stops
	// whatever work it hands off (api.Server delivers on goroutines its
	// Close cancels and waits for).
	OnComplete func(r Record)
	// OnFinish is called (synchronously, so keep it cheap) whenever any
	// request completes, sync and cancelled ones included: for metrics.
	OnFinish func(r Record)
	// Now is the clock (tests).
	Now func() time.Time
}

// Errors callers map to HTTP answers.
var (
	ErrNotFound = errors.New("request not found")
	ErrFull     = errors.New("queue is full")
	ErrClosed   = errors.New("queue is closed")
)

var bucket = []byte("requests")

// inputs holds each request's input apart from its record: the record is
// rewritten at every state change, the (often megabyte-sized) input only
// once, at submission.
var inputs = []byte("inputs")

// Queue is the durable request queue.
type Queue struct {
	db   *bolt.DB
	run  Runner
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	live     map[string]*entry // queued, running and recently completed
	pending  pq
	seq      uint64
	wake     chan struct{}
	done     chan struct{} // closed by Drain: workers stop taking requests
	draining bool
	closed   bool // Stop (or Close) began
	dbClosed bool
	// dbUse is held (shared) by every transaction and (exclusively) by
	// Close: a transaction after Close fails with ErrClosed, and Close
	// waits for those under way.
	dbUse    sync.RWMutex
	reserved int            // submits between their limit check and their push
	wg       sync.WaitGroup // the workers and expireLoop
	stop     context.CancelFunc
	runCtx   context.Context
}

type entry struct {
	rec    Record
	cancel context.CancelFunc // set while running
	subs   map[chan struct{}]struct{}
	idx    int  // position in pending, -1 when not queued
	byUser bool // Cancel interrupted it (not a shutdown)
}

// Open opens (creating) the database at path (an empty path keeps
// everything in memory: not durable, for tests and throwaway servers), recovers its requests and
// starts the workers. Queued requests are queued again. A request that was
// running when the process died is queued again once; if it was already
// retried after an earlier crash it completes with an error instead, so a
// request that kills the server cannot do so forever.
func Open(path string, run Runner, opts Options) (*Queue, error) {
	if opts.Workers < 1 {
		opts.Workers = 1
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var db *bolt.DB
	if path != "" {
		// A damaged file is refused before bbolt maps it: bbolt trusts the
		// file, and a truncated one faults in its open path.
		if err := preflight(path); err != nil {
			return nil, err
		}
		var err error
		if err = guard(path, func() error {
			db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
			return err
		}); err != nil {
			return nil, fmt.Errorf("queue database %s: %w", path, err)
		}
	}
	q := &Queue{db: db, run: run, opts: opts, log: opts.Log, live: map[string]*entry{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	q.runCtx, q.stop = context.WithCancel(context.Background())
	if db != nil {
		if err := guard(path, q.recover); err != nil {
			db.Close()
			return nil, err
		}
	}
	for i := 0; i < opts.Workers; i++ {
		q.wg.Add(1)
		go q.worker()
	}
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		q.expireLoop(time.Second)
	}()
	return q, nil
}

// expireLoop completes queued requests whose start deadline has passed while
// every worker was busy, so their status says so without waiting for a worker.
func (q *Queue) expireLoop(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-q.done:
			return
		case <-t.C:
		}
		q.ExpireDeadlines()
	}
}

// ExpireDeadlines completes every queued request past its start deadline
// with fal's 504 request_timeout.
func (q *Queue) ExpireDeadlines() {
	now := q.opts.Now()
	q.mu.Lock()
	var late []*entry
	for _, e := range q.pending {
		if !e.rec.StartDeadline.IsZero() && now.After(e.rec.StartDeadline) {
			late = append(late, e)
		}
	}
	for _, e := range late {
		heap.Remove(&q.pending, e.idx)
	}
	q.mu.Unlock()
	for _, e := range late {
		q.finish(e, TimedOut(), 0)
	}
}

func (q *Queue) recover() error {
	var recs []Record
	migrate := map[string]bool{} // live records written with their input inline
	err := q.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		in, err := tx.CreateBucketIfNotExists(inputs)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				q.log.Error("queue: unreadable record dropped", "id", string(k), "err", err)
				return nil
			}
			inline := len(r.Input) > 0
			if !inline {
				r.Input = bytes.Clone(in.Get(k))
			}
			if r.Seq > q.seq {
				q.seq = r.Seq
			}
			if r.Status != Completed || (r.Webhook != "" && !r.WebhookDone) {
				recs = append(recs, r)
				migrate[r.ID] = inline
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	now := q.opts.Now()
	for _, r := range recs {
		switch r.Status {
		case InProgress:
			if r.Attempts >= 2 {
				r.Status = Completed
				r.CompletedAt = now
				r.Outcome = &Outcome{Status: 503, Error: "the server stopped twice while running this request; it was not retried again",
					ErrorType: "runner_disconnected",
					Body:      mustJSON(map[string]string{"detail": "the server stopped twice while running this request; it was not retried again", "error_type": "runner_disconnected"})}
				q.log.Warn("queue: request failed after repeated restarts", "id", r.ID)
			} else {
				r.Status = InQueue
				r.Logs = append(r.Logs, q.logEntry("WARN", "the server restarted while this request was running; it was queued again"))
				q.log.Info("queue: re-queued request interrupted by a restart", "id", r.ID)
			}
			if err := q.saveWith(&r, migrate[r.ID]); err != nil {
				return err
			}
		default:
			if migrate[r.ID] {
				// written before inputs had their own bucket: move it there
				// before a state change rewrites the record without it
				if err := q.saveWith(&r, true); err != nil {
					return err
				}
			}
		}
		e := &entry{rec: r, idx: -1}
		q.live[r.ID] = e
		if r.Status == InQueue {
			heap.Push(&q.pending, e)
		} else if r.Status == Completed && r.Webhook != "" && !r.WebhookDone && q.opts.OnComplete != nil {
			q.opts.OnComplete(r)
		}
	}
	if n := q.pending.Len(); n > 0 {
		q.log.Info("queue: recovered pending requests", "count", n)
	}
	return nil
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func (q *Queue) logEntry(level, msg string) LogEntry {
	return LogEntry{Message: msg, Level: level, Source: "USER", Timestamp: q.opts.Now().UTC().Format("2006-01-02T15:04:05.000000+00:00")}
}

// save writes a record's state (not its input, which saveWith wrote once).
func (q *Queue) save(r *Record) error { return q.saveWith(r, false) }

func (q *Queue) saveWith(r *Record, withInput bool) error {
	if r.Ephemeral || q.db == nil {
		return nil
	}
	c := *r
	c.Input = nil
	b, err := json.Marshal(&c)
	if err != nil {
		return err
	}
	return q.tx(true, func(tx *bolt.Tx) error {
		if withInput {
			if err := tx.Bucket(inputs).Put([]byte(r.ID), r.Input); err != nil {
				return err
			}
		}
		return tx.Bucket(bucket).Put([]byte(r.ID), b)
	})
}

// Submit accepts a request: once it returns nil the request is on disk.
// It returns the number of requests ahead of it.
func (q *Queue) Submit(r Record) (int, error) {
	q.mu.Lock()
	if q.draining {
		q.mu.Unlock()
		return 0, ErrClosed
	}
	// Slots being written count as taken, so concurrent submits cannot
	// overshoot the limit while the lock is released for the fsync.
	waiting := q.pending.Len() + q.reserved
	if (q.opts.MaxQueued > 0 && waiting >= q.opts.MaxQueued) || (r.MaxQueueLength > 0 && waiting >= r.MaxQueueLength) {
		q.mu.Unlock()
		return 0, ErrFull
	}
	q.reserved++
	q.seq++
	r.Seq = q.seq
	r.Status = InQueue
	r.InputBytes = len(r.Input)
	if r.CreatedAt.IsZero() {
		r.CreatedAt = q.opts.Now()
	}
	q.mu.Unlock()
	// Write outside the lock: an fsync must not stall status polls.
	if err := q.saveWith(&r, true); err != nil {
		q.mu.Lock()
		q.reserved--
		q.mu.Unlock()
		return 0, fmt.Errorf("queue: store request: %w", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.reserved--
	if q.draining {
		// Drain began during the write. A durable request is on disk and
		// runs after the next start; a sync caller must hear no now.
		if r.Ephemeral {
			return 0, ErrClosed
		}
		return 0, nil
	}
	e := &entry{rec: r, idx: -1}
	q.live[r.ID] = e
	heap.Push(&q.pending, e)
	q.signal()
	return q.position(e), nil
}

func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// position counts the pending requests that will run before e.
func (q *Queue) position(e *entry) int {
	n := 0
	for _, o := range q.pending {
		if o != e && o.less(e) {
			n++
		}
	}
	return n
}

// Get returns a snapshot of a request.
func (q *Queue) Get(id string) (Record, int, error) {
	q.mu.Lock()
	if e, ok := q.live[id]; ok {
		r := e.rec
		r.Logs = append([]LogEntry(nil), e.rec.Logs...)
		pos := 0
		if r.Status == InQueue {
			pos = q.position(e)
		}
		q.mu.Unlock()
		return r, pos, nil
	}
	q.mu.Unlock()
	var r Record
	if q.db == nil {
		return r, 0, ErrNotFound
	}
	err := q.tx(false, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucket).Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		if len(r.Input) == 0 {
			r.Input = bytes.Clone(tx.Bucket(inputs).Get([]byte(id)))
		}
		return nil
	})
	return r, 0, err
}

// Subscribe returns a channel that receives a signal whenever the request
// changes (status or logs), and a function to stop.
func (q *Queue) Subscribe(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	q.mu.Lock()
	defer q.mu.Unlock()
	e, ok := q.live[id]
	if !ok {
		close(ch) // not live: completed long ago or unknown; nothing will change
		return ch, func() {}
	}
	if e.subs == nil {
		e.subs = map[chan struct{}]struct{}{}
	}
	e.subs[ch] = struct{}{}
	return ch, func() {
		q.mu.Lock()
		delete(e.subs, ch)
		q.mu.Unlock()
	}
}

func (e *entry) notify() {
	for ch := range e.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// CancelResult is what a cancel achieved.
type CancelResult int

// Cancel outcomes, matching fal's cancel reply words.
const (
	CancelRequested CancelResult = iota
	AlreadyCompleted
	NotFound
)

// Cancel stops a queued request at once, or interrupts a running one.
func (q *Queue) Cancel(id string) (CancelResult, error) {
	q.mu.Lock()
	e, ok := q.live[id]
	if !ok {
		q.mu.Unlock()
		r, _, err := q.Get(id)
		if errors.Is(err, ErrNotFound) {
			return NotFound, nil
		}
		if err != nil {
			return NotFound, err
		}
		if r.Status == Completed {
			return AlreadyCompleted, nil
		}
		return NotFound, nil
	}
	switch e.rec.Status {
	case Completed:
		q.mu.Unlock()
		return AlreadyCompleted, nil
	case InProgress:
		e.byUser = true
		e.cancel()
		q.mu.Unlock()
		return CancelRequested, nil
	}
	if e.idx < 0 {
		if e.cancel != nil {
			// A worker has just taken it and is starting it.
			e.byUser = true
			e.cancel()
			q.mu.Unlock()
			return CancelRequested, nil
		}
		// Already taken off the queue by another Cancel or a passed start
		// deadline: it is being completed.
		q.mu.Unlock()
		return AlreadyCompleted, nil
	}
	heap.Remove(&q.pending, e.idx)
	q.mu.Unlock()
	q.finish(e, Cancelled(), 0)
	return CancelRequested, nil
}

// Cancelled is the outcome of a request its client cancelled.
func Cancelled() Outcome {
	return ErrorOutcome(499, "Request cancelled by the client.", "client_cancelled")
}

// TimedOut is the outcome of a request whose start deadline passed in the
// queue.
func TimedOut() Outcome {
	return ErrorOutcome(504, "Request timed out before it started", "request_timeout")
}

func (q *Queue) worker() {
	defer q.wg.Done()
	for {
		e, ctx := q.next()
		if e == nil {
			return
		}
		q.execute(e, ctx)
	}
}

// next blocks until a request is pending (or the queue closes) and marks it
// running under a context that Cancel and Close can end.
func (q *Queue) next() (*entry, context.Context) {
	for {
		q.mu.Lock()
		if q.draining {
			q.mu.Unlock()
			return nil, nil
		}
		if q.pending.Len() > 0 {
			e := heap.Pop(&q.pending).(*entry)
			now := q.opts.Now()
			if !e.rec.StartDeadline.IsZero() && now.After(e.rec.StartDeadline) {
				q.mu.Unlock()
				q.finish(e, TimedOut(), 0)
				continue
			}
			ctx, cancel := context.WithCancel(q.runCtx)
			e.cancel = cancel // from here Cancel interrupts instead of dequeuing
			if q.pending.Len() > 0 {
				q.signal() // more work: wake another worker
			}
			started := e.rec
			started.Status = InProgress
			started.StartedAt = now
			started.Attempts++
			started.Logs = append(append([]LogEntry(nil), e.rec.Logs...), q.logEntry("INFO", "request started"))
			q.mu.Unlock()
			// On disk first: a client must never see IN_PROGRESS that a
			// crash would forget.
			if err := q.save(&started); err != nil {
				q.log.Error("queue: store start", "id", started.ID, "err", err)
			}
			q.mu.Lock()
			e.rec.Status, e.rec.StartedAt, e.rec.Attempts = InProgress, now, started.Attempts
			e.rec.Logs = append(e.rec.Logs, started.Logs[len(started.Logs)-1])
			e.notify()
			q.mu.Unlock()
			return e, ctx
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-q.done:
		}
	}
}

func (q *Queue) execute(e *entry, ctx context.Context) {
	q.mu.Lock()
	rec := e.rec
	q.mu.Unlock()
	logf := func(level, msg string) {
		q.mu.Lock()
		e.rec.Logs = append(e.rec.Logs, q.logEntry(level, msg))
		e.notify()
		q.mu.Unlock()
	}
	addFile := func(id string) {
		q.mu.Lock()
		e.rec.Files = append(e.rec.Files, id)
		q.mu.Unlock()
	}
	start := time.Now()
	out := q.safeRun(ctx, &rec, logf, addFile)
	elapsed := time.Since(start).Seconds()
	e.cancel()
	q.mu.Lock()
	byUser := e.byUser
	q.mu.Unlock()
	if q.runCtx.Err() != nil && out.ErrorType == "client_cancelled" && !byUser {
		if !rec.Ephemeral {
			// Interrupted by a deliberate shutdown: queued again on disk for
			// the next start, and not counted as a crash.
			q.mu.Lock()
			e.rec.Status = InQueue
			e.rec.Attempts--
			e.rec.Logs = append(e.rec.Logs, q.logEntry("WARN", "the server shut down while this request was running; it was queued again"))
			back := e.rec
			back.Logs = append([]LogEntry(nil), e.rec.Logs...)
			q.mu.Unlock()
			if err := q.save(&back); err != nil {
				q.log.Error("queue: store interrupted request", "id", back.ID, "err", err)
			}
			return
		}
		out = ShuttingDown()
	}
	q.finish(e, out, elapsed)
}

// safeRun turns a panic in a pipeline into an internal error.
func (q *Queue) safeRun(ctx context.Context, r *Record, logf func(string, string), addFile func(string)) (out Outcome) {
	defer func() {
		if p := recover(); p != nil {
			q.log.Error("queue: run panicked", "id", r.ID, "panic", p)
			out = Outcome{Status: 500, Error: "Internal Server Error", ErrorType: "internal_error",
				Body: mustJSON(map[string]string{"detail": "Internal Server Error"})}
		}
	}()
	return q.run(ctx, r, logf, addFile)
}

func (q *Queue) finish(e *entry, out Outcome, elapsed float64) {
	q.mu.Lock()
	e.rec.Status = Completed
	e.rec.CompletedAt = q.opts.Now()
	e.rec.Outcome = &out
	e.rec.InferenceTime = elapsed
	e.rec.Input = nil // nobody asks for it again; do not hold it in memory
	if out.Status != 0 {
		e.rec.Logs = append(e.rec.Logs, q.logEntry("ERROR", out.Error))
	} else {
		e.rec.Logs = append(e.rec.Logs, q.logEntry("INFO", fmt.Sprintf("request completed in %.2fs", elapsed)))
	}
	rec := e.rec
	rec.Logs = append([]LogEntry(nil), e.rec.Logs...)
	q.mu.Unlock()
	if err := q.save(&rec); err != nil {
		q.log.Error("queue: store result", "id", rec.ID, "err", err)
	}
	q.mu.Lock()
	e.notify()
	q.mu.Unlock()
	if q.opts.OnFinish != nil {
		q.opts.OnFinish(rec)
	}
	if !rec.Ephemeral && rec.Webhook != "" && q.opts.OnComplete != nil {
		q.opts.OnComplete(rec)
	}
	q.forgetLater(e)
}

// forgetLater drops a completed request from memory after a while; it stays
// on disk until its retention ends.
func (q *Queue) forgetLater(e *entry) {
	if q.db == nil && !e.rec.Ephemeral {
		return // memory only: Sweep forgets it
	}
	time.AfterFunc(2*time.Minute, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if cur, ok := q.live[e.rec.ID]; ok && cur == e && len(e.subs) == 0 {
			delete(q.live, e.rec.ID)
		}
	})
}

// Forget drops a completed request from memory now (sync runs, whose
// caller has its answer); durable ones stay readable from disk.
func (q *Queue) Forget(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e, ok := q.live[id]; ok && e.rec.Status == Completed && len(e.subs) == 0 {
		delete(q.live, id)
	}
}

// MarkWebhookDone records that a request's webhook was delivered (or given up).
func (q *Queue) MarkWebhookDone(id string) error {
	q.mu.Lock()
	if e, ok := q.live[id]; ok {
		e.rec.WebhookDone = true
	}
	q.mu.Unlock()
	if q.db == nil {
		return nil
	}
	return q.tx(true, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		v := b.Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		r.WebhookDone = true
		nb, err := json.Marshal(r)
		if err != nil {
			return err
		}
		return b.Put([]byte(id), nb)
	})
}

// Wait blocks until the request completes or ctx ends.
func (q *Queue) Wait(ctx context.Context, id string) (Record, error) {
	ch, stop := q.Subscribe(id)
	defer stop()
	for {
		r, _, err := q.Get(id)
		if err != nil || r.Status == Completed {
			return r, err
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case _, ok := <-ch:
			if !ok {
				r, _, err := q.Get(id)
				return r, err
			}
		}
	}
}

// Depth reports how many requests wait and how many run.
func (q *Queue) Depth() (queued, running int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range q.live {
		if e.rec.Status == InProgress {
			running++
		}
	}
	return q.pending.Len(), running
}

// Sweep deletes completed requests older than cutoff and returns the output
// file ids they owned, for the caller to delete.
func (q *Queue) Sweep(cutoff time.Time) (int, []string, error) {
	var files []string
	n := 0
	q.mu.Lock()
	for id, e := range q.live {
		r := &e.rec
		if r.Status == Completed && r.CompletedAt.Before(cutoff) && (r.Webhook == "" || r.WebhookDone) && len(e.subs) == 0 {
			delete(q.live, id)
			if q.db == nil {
				files = append(files, r.Files...)
				n++
			}
		}
	}
	q.mu.Unlock()
	if q.db == nil {
		return n, files, nil
	}
	err := q.tx(true, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var r Record
			if json.Unmarshal(v, &r) != nil {
				continue
			}
			if r.Status == Completed && r.CompletedAt.Before(cutoff) && (r.Webhook == "" || r.WebhookDone) {
				files = append(files, r.Files...)
				if err := tx.Bucket(inputs).Delete(k); err != nil {
					return err
				}
				if err := c.Delete(); err != nil {
					return err
				}
				n++
			}
		}
		return nil
	})
	return n, files, err
}

// Drain stops starting requests: running ones go on, queued durable ones
// stay on disk for the next start, and waiting sync requests (whose callers
// would otherwise hang) are answered with a 503.
func (q *Queue) Drain() {
	q.mu.Lock()
	if q.draining {
		q.mu.Unlock()
		return
	}
	q.draining = true
	close(q.done)
	var waiting []*entry
	for _, e := range q.pending {
		if e.rec.Ephemeral {
			waiting = append(waiting, e)
		}
	}
	for _, e := range waiting {
		heap.Remove(&q.pending, e.idx)
	}
	q.mu.Unlock()
	for _, e := range waiting {
		q.finish(e, ShuttingDown(), 0)
	}
}

// Draining reports whether Drain was called.
func (q *Queue) Draining() <-chan struct{} { return q.done }

// Stop drains, lets running requests finish while ctx allows and
// interrupts the rest (they are queued again on disk for the next start).
// When it returns no goroutine of the queue runs. The database stays open
// until Close, so records can still be read and webhook deliveries
// recorded (MarkWebhookDone).
func (q *Queue) Stop(ctx context.Context) {
	q.Drain()
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	done := make(chan struct{})
	go func() { q.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		q.stop()
		<-done
	}
	q.stop()
}

// Close stops the queue (see Stop) and closes the database once the
// transactions under way are done; later reads and writes (a status poll
// still being answered, a late MarkWebhookDone) fail with ErrClosed.
func (q *Queue) Close(ctx context.Context) error {
	q.Stop(ctx)
	q.dbUse.Lock()
	defer q.dbUse.Unlock()
	q.mu.Lock()
	if q.dbClosed {
		q.mu.Unlock()
		return nil
	}
	q.dbClosed = true
	q.mu.Unlock()
	if q.db == nil {
		return nil
	}
	return q.db.Close()
}

// tx runs f in a read-write (write) or read-only transaction, or fails
// with ErrClosed once Close has closed the database.
func (q *Queue) tx(write bool, f func(*bolt.Tx) error) error {
	q.dbUse.RLock()
	defer q.dbUse.RUnlock()
	q.mu.Lock()
	closed := q.dbClosed
	q.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if write {
		return q.db.Update(f)
	}
	return q.db.View(f)
}

// pq orders pending entries: normal before low priority, then by arrival.
type pq []*entry

func (e *entry) less(o *entry) bool {
	if e.rec.Priority != o.rec.Priority {
		return e.rec.Priority < o.rec.Priority
	}
	return e.rec.Seq < o.rec.Seq
}

func (p pq) Len() int           { return len(p) }
func (p pq) Less(i, j int) bool { return p[i].less(p[j]) }
func (p pq) Swap(i, j int) {
	p[i], p[j] = p[j], p[i]
	p[i].idx, p[j].idx = i, j
}
func (p *pq) Push(x any) {
	e := x.(*entry)
	e.idx = len(*p)
	*p = append(*p, e)
}
func (p *pq) Pop() any {
	old := *p
	n := len(old)
	e := old[n-1]
	old[n-1] = nil
	e.idx = -1
	*p = old[:n-1]
	return e
}
