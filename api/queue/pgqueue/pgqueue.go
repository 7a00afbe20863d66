// Package pgqueue is a queue.Store kept in PostgreSQL and shared by many
// server processes: API nodes accept requests, worker nodes (any of them)
// claim and run them, and every node can answer for every request. Claims
// are leases renewed by heartbeats, so a request whose worker died is
// queued again (once) by whichever node notices; changes travel by
// LISTEN/NOTIFY, so followers and idle workers wake without polling.
package pgqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/falocal/falocal/api/queue"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options configure a node's queue.
type Options struct {
	// Workers (0: this node claims nothing, an API node), MaxQueued
	// (counted over the whole fleet), Log, OnComplete, OnFinish, Now.
	queue.Options
	// Node is this process's name in the fleet, unique (default
	// hostname-pid).
	Node string
	// Role is shown in the fleet view: "api", "worker" or "both".
	Role string
	// Endpoints lists the endpoint ids this node can run (nil: any).
	Endpoints func() []string
	// Resident lists the endpoints whose models this node holds in memory:
	// among requests of one priority it takes theirs first.
	Resident func() []string
	// Info is shown in the fleet view (device kind, free memory, …).
	Info func() map[string]any
	// OnPartial receives the partial outputs of the stream requests this
	// node accepted, published by whichever node runs them, at most once
	// each and before their completion is signalled to subscribers.
	OnPartial func(id string, b []byte)
	// Lease is how long a claim lasts without a heartbeat (default 15s);
	// heartbeats renew it every Lease/3.
	Lease time.Duration

	webhookClaim time.Duration // how long a webhook delivery is claimed (tests shorten it)
}

// Node is one server process of the fleet as its heartbeats describe it.
type Node struct {
	Name      string         `json:"name"`
	Role      string         `json:"role"`
	Endpoints []string       `json:"endpoints"` // nil: any
	Resident  []string       `json:"resident"`
	Info      map[string]any `json:"info,omitempty"`
	Running   int            `json:"running"`
	Seen      time.Time      `json:"seen"`
	Alive     bool           `json:"alive"` // seen within two of its leases
}

// Queue is a node's handle on the shared queue.
type Queue struct {
	pool  *pgxpool.Pool
	dsn   string
	run   queue.Runner
	opts  Options
	log   *slog.Logger
	lease time.Duration
	tick  time.Duration // reaper, deadline and webhook recovery period
	poll  time.Duration // idle workers look for work at least this often

	mu       sync.Mutex
	subs     map[string]map[chan struct{}]struct{}
	running  map[string]*job
	partials map[string]int64 // stream requests accepted here: last partial seq delivered
	// deliverMu serializes deliverPartial (the listener's and Wait's), so
	// no partial is delivered twice.
	deliverMu sync.Mutex
	cancels   map[string]time.Time // cancel notifications lately heard
	hooks     map[string]struct{}  // webhook deliveries this node claimed, not yet marked done
	marks     map[string]struct{}  // deliveries done whose MarkWebhookDone failed: maintenance records them
	draining  bool
	closed    bool
	listenErr error

	done     chan struct{} // closed by Drain: workers stop claiming
	wake     chan struct{}
	runCtx   context.Context // runners' parent: Stop cancels it when its ctx ends
	stopRun  context.CancelFunc
	hardCtx  context.Context // retries of result writes give up when it ends
	stopHard context.CancelFunc
	bgCtx    context.Context // listener, heartbeat and maintenance loops
	stopBg   context.CancelFunc
	workers  sync.WaitGroup
	bg       sync.WaitGroup
	stopOnce sync.Once
	lastWarn atomic.Int64
	lastFail atomic.Int64 // when the database was last out of reach (unix ns)

	// Tests: crashed stops every write and heartbeat as if the process
	// died; pauseBeat stops lease renewal only.
	crashed   atomic.Bool
	pauseBeat atomic.Bool
	// beforeInsert, in tests, runs inside Submit's transaction.
	beforeInsert func()
}

// job is a request this node runs.
type job struct {
	id       string
	attempts int
	ctxRun   context.Context
	cancel   context.CancelFunc
	byUser   bool
	ended    bool // the run returned; its result is being stored (q.mu)
	mu       sync.Mutex
	logs     []queue.LogEntry // not yet written (the database was unreachable)
	files    []string
}

var _ queue.Store = (*Queue)(nil)

// Notification channels (see schema/001_init.sql).
const (
	chanChanged = "falocal_changed"
	chanWork    = "falocal_work"
	chanCancel  = "falocal_cancel"
)

// cols are a record's columns, in scanRecord's order.
const cols = `id, endpoint, app, input, priority, seq, status, webhook, webhook_done, origin, cdn, host,
	created_at, started_at, completed_at, start_deadline, attempts, logs, outcome, inference_time, files,
	input_bytes, ephemeral, stream`

// colsNoInput leaves the (possibly large) input out.
const colsNoInput = `id, endpoint, app, NULL::bytea, priority, seq, status, webhook, webhook_done, origin, cdn, host,
	created_at, started_at, completed_at, start_deadline, attempts, logs, outcome, inference_time, files,
	input_bytes, ephemeral, stream`

// Open connects to the database at dsn, brings its schema up to date and
// starts this node's loops and, with Workers > 0, its workers.
func Open(ctx context.Context, dsn string, run queue.Runner, opts Options) (*Queue, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Workers < 0 {
		opts.Workers = 0
	}
	if opts.Lease <= 0 {
		opts.Lease = 15 * time.Second
	}
	if opts.webhookClaim <= 0 {
		opts.webhookClaim = 2 * time.Minute
	}
	if opts.Node == "" {
		h, _ := os.Hostname()
		opts.Node = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	if opts.Role == "" {
		opts.Role = "api"
		if opts.Workers > 0 {
			opts.Role = "worker"
		}
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("queue database: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("queue database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("queue database: connect: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("queue database: schema: %w", err)
	}
	q := &Queue{pool: pool, dsn: dsn, run: run, opts: opts, log: opts.Log, lease: opts.Lease,
		subs: map[string]map[chan struct{}]struct{}{}, running: map[string]*job{}, partials: map[string]int64{},
		cancels: map[string]time.Time{}, hooks: map[string]struct{}{}, marks: map[string]struct{}{},
		done: make(chan struct{}), wake: make(chan struct{}, 1)}
	q.tick = min(time.Second, q.lease/3)
	q.poll = min(2*time.Second, q.lease)
	q.runCtx, q.stopRun = context.WithCancel(context.Background())
	q.hardCtx, q.stopHard = context.WithCancel(context.Background())
	q.bgCtx, q.stopBg = context.WithCancel(context.Background())
	// Listening before anything else, so no change after Open goes unheard.
	conn, err := q.connectListener(ctx)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("queue database: listen: %w", err)
	}
	if err := q.beat(ctx); err != nil {
		conn.Close(ctx)
		pool.Close()
		return nil, fmt.Errorf("queue database: register node: %w", err)
	}
	// Requests an earlier process of this name was running cannot still
	// run: their leases end now, and the reaper queues them again (once)
	// without waiting for the expiry.
	if _, err := pool.Exec(ctx, `UPDATE falocal_requests SET lease_until = now() - interval '1 second'
		WHERE worker = $1 AND status = 'IN_PROGRESS'`, opts.Node); err != nil {
		conn.Close(ctx)
		pool.Close()
		return nil, fmt.Errorf("queue database: recover: %w", err)
	}
	q.bg.Add(3)
	go q.listen(conn)
	go q.heartbeatLoop()
	go q.maintenanceLoop()
	for i := 0; i < opts.Workers; i++ {
		q.workers.Add(1)
		go q.worker()
	}
	return q, nil
}

// ctx is the context of one API call: the Store interface has none.
func (q *Queue) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

func (q *Queue) isClosed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

// dbErr turns an error of a call racing Close into ErrClosed, and one of
// an unreachable database into queue.ErrUnavailable (the caller may try
// again: nothing was lost).
func (q *Queue) dbErr(err error) error {
	if err == nil {
		return nil
	}
	if q.isClosed() {
		return queue.ErrClosed
	}
	if unavailable(err) {
		return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
	}
	return err
}

// unavailable reports whether err is the database being out of reach (down,
// restarting, refusing connections, too slow) rather than a statement
// failing.
func unavailable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// connection exceptions, shutdown and startup, too many connections
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P") || pe.Code == "53300"
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	return errors.As(err, &ne) || errors.As(err, &ce) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) || pgconn.SafeToRetry(err) ||
		strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "closed pool")
}

func (q *Queue) logEntry(level, msg string) queue.LogEntry {
	return queue.LogEntry{Message: msg, Level: level, Source: "USER", Timestamp: q.opts.Now().UTC().Format("2006-01-02T15:04:05.000000+00:00")}
}

func jsonb(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func seconds(d time.Duration) float64 { return d.Seconds() }

type scanner interface{ Scan(dest ...any) error }

func scanRecord(row scanner, extra ...any) (queue.Record, error) {
	var (
		r                            queue.Record
		seq                          int64
		status                       string
		input, logs, outcome         []byte
		started, completed, deadline *time.Time
	)
	dest := append([]any{&r.ID, &r.Endpoint, &r.App, &input, &r.Priority, &seq, &status, &r.Webhook, &r.WebhookDone,
		&r.Origin, &r.CDN, &r.Host, &r.CreatedAt, &started, &completed, &deadline, &r.Attempts, &logs, &outcome,
		&r.InferenceTime, &r.Files, &r.InputBytes, &r.Ephemeral, &r.Stream}, extra...)
	if err := row.Scan(dest...); err != nil {
		return r, err
	}
	r.Seq = uint64(seq)
	r.Status = queue.Status(status)
	if input != nil {
		r.Input = json.RawMessage(input)
	}
	if started != nil {
		r.StartedAt = *started
	}
	if completed != nil {
		r.CompletedAt = *completed
	}
	if deadline != nil {
		r.StartDeadline = *deadline
	}
	if len(logs) > 0 {
		if err := json.Unmarshal(logs, &r.Logs); err != nil {
			return r, fmt.Errorf("request %s: logs: %w", r.ID, err)
		}
	}
	if len(outcome) > 0 {
		var o queue.Outcome
		if err := json.Unmarshal(outcome, &o); err != nil {
			return r, fmt.Errorf("request %s: outcome: %w", r.ID, err)
		}
		r.Outcome = &o
	}
	return r, nil
}

func collect(rows pgx.Rows) ([]queue.Record, error) {
	defer rows.Close()
	var out []queue.Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Submit accepts a request: once it returns nil the request is committed.
// It returns the number of requests queued ahead of it, fleet-wide.
func (q *Queue) Submit(r queue.Record) (int, error) {
	q.mu.Lock()
	if q.closed || q.draining {
		q.mu.Unlock()
		return 0, queue.ErrClosed
	}
	watch := r.Stream && q.opts.OnPartial != nil
	if watch {
		// Before the insert: no partial may come before the interest.
		q.partials[r.ID] = 0
	}
	q.mu.Unlock()
	r.Status = queue.InQueue
	r.InputBytes = len(r.Input)
	if r.CreatedAt.IsZero() {
		r.CreatedAt = q.opts.Now()
	}
	if r.Logs == nil {
		r.Logs = []queue.LogEntry{}
	}
	ctx, cancel := q.ctx()
	defer cancel()
	var pos int
	err := pgx.BeginFunc(ctx, q.pool, func(tx pgx.Tx) error {
		if q.opts.MaxQueued > 0 || r.MaxQueueLength > 0 {
			// One submitter at a time between the count and the insert,
			// so concurrent ones (on any node) cannot overshoot the limit.
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(lockSubmit)); err != nil {
				return err
			}
			var waiting int
			if err := tx.QueryRow(ctx, "SELECT count(*) FROM falocal_requests WHERE status = 'IN_QUEUE'").Scan(&waiting); err != nil {
				return err
			}
			if (q.opts.MaxQueued > 0 && waiting >= q.opts.MaxQueued) || (r.MaxQueueLength > 0 && waiting >= r.MaxQueueLength) {
				return queue.ErrFull
			}
		}
		if q.beforeInsert != nil {
			q.beforeInsert()
		}
		var seq int64
		err := tx.QueryRow(ctx, `INSERT INTO falocal_requests (id, endpoint, app, input, input_bytes, priority, status,
			webhook, origin, cdn, host, created_at, start_deadline, ephemeral, stream, accepted_by, logs)
			VALUES ($1, $2, $3, $4, $5, $6, 'IN_QUEUE', $7, $8, $9, $10, $11, $12, $13, $14, $15, $16::jsonb) RETURNING seq`,
			r.ID, r.Endpoint, r.App, []byte(r.Input), r.InputBytes, r.Priority, r.Webhook, r.Origin, r.CDN, r.Host,
			r.CreatedAt, nullTime(r.StartDeadline), r.Ephemeral, r.Stream, q.opts.Node, jsonb(r.Logs)).Scan(&seq)
		if err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT count(*) FROM falocal_requests WHERE status = 'IN_QUEUE'
			AND (priority < $1 OR (priority = $1 AND seq < $2))`, r.Priority, seq).Scan(&pos)
	})
	if err != nil {
		if watch {
			q.mu.Lock()
			delete(q.partials, r.ID)
			q.mu.Unlock()
		}
		if errors.Is(err, queue.ErrFull) {
			return 0, err
		}
		return 0, fmt.Errorf("queue: store request: %w", q.dbErr(err))
	}
	q.mu.Lock()
	draining := q.draining
	q.mu.Unlock()
	if draining && r.Ephemeral {
		// Drain began during the insert, and its answer to this node's
		// waiting sync requests may have missed this one: its caller is
		// told no now (as by the bbolt queue), so it must not wait or run.
		tag, err := q.pool.Exec(ctx, "DELETE FROM falocal_requests WHERE id = $1 AND status = 'IN_QUEUE'", r.ID)
		if err == nil && tag.RowsAffected() == 0 {
			// Another node took it already: interrupt it.
			_, err = q.pool.Exec(ctx, "UPDATE falocal_requests SET cancel_requested = true WHERE id = $1 AND status = 'IN_PROGRESS'", r.ID)
		}
		if err != nil {
			q.log.Warn("queue: withdraw a sync request submitted while draining", "id", r.ID, "err", err)
		}
		q.Forget(r.ID) // one Drain answered already
		return 0, queue.ErrClosed
	}
	return pos, nil
}

// Get returns a request and, while it is queued, how many wait before it.
func (q *Queue) Get(id string) (queue.Record, int, error) {
	if q.isClosed() {
		return queue.Record{}, 0, queue.ErrClosed
	}
	ctx, cancel := q.ctx()
	defer cancel()
	var pos int
	r, err := scanRecord(q.pool.QueryRow(ctx, `SELECT `+cols+`,
		CASE WHEN r.status = 'IN_QUEUE' THEN (SELECT count(*) FROM falocal_requests o WHERE o.status = 'IN_QUEUE'
			AND (o.priority < r.priority OR (o.priority = r.priority AND o.seq < r.seq))) ELSE 0 END
		FROM falocal_requests r WHERE id = $1`, id), &pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return queue.Record{}, 0, queue.ErrNotFound
	}
	if err != nil {
		return queue.Record{}, 0, q.dbErr(err)
	}
	return r, pos, nil
}

// Subscribe signals every change of the request (status, logs, partial
// output), wherever it happens, until stop is called.
func (q *Queue) Subscribe(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		close(ch)
		return ch, func() {}
	}
	m := q.subs[id]
	if m == nil {
		m = map[chan struct{}]struct{}{}
		q.subs[id] = m
	}
	m[ch] = struct{}{}
	return ch, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if m := q.subs[id]; m != nil {
			delete(m, ch)
			if len(m) == 0 {
				delete(q.subs, id)
			}
		}
	}
}

func (q *Queue) notify(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for ch := range q.subs[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Wait blocks until the request completes or ctx ends. A database outage
// does not end it: it reads again once the database is back.
func (q *Queue) Wait(ctx context.Context, id string) (queue.Record, error) {
	ch, stop := q.Subscribe(id)
	defer stop()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		r, _, err := q.Get(id)
		switch {
		case errors.Is(err, queue.ErrNotFound) || errors.Is(err, queue.ErrClosed):
			return r, err
		case err == nil && r.Status == queue.Completed:
			// Woken by an earlier notification, this read may see the
			// completion before the listener has handed over the last
			// partial output of a stream: hand it over first.
			q.deliverPartial(id)
			return r, nil
		case err != nil && ctx.Err() != nil:
			return r, err
		}
		// A safety net: notifications sent while the listener was
		// reconnecting are lost (it wakes everyone after, but cheaply
		// re-reading now and then costs little).
		t.Reset(q.poll)
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-ch:
		case <-t.C:
		}
	}
}

// Cancel completes a queued request at once or asks the node running a
// running one to interrupt it.
func (q *Queue) Cancel(id string) (queue.CancelResult, error) {
	if q.isClosed() {
		return queue.NotFound, queue.ErrClosed
	}
	ctx, cancel := q.ctx()
	defer cancel()
	for try := 0; try < 5; try++ {
		recs, err := q.finishWhere(ctx, "id = $1 AND status = 'IN_QUEUE'", queue.Cancelled(), 0, nil, id)
		if err != nil {
			return queue.NotFound, q.dbErr(err)
		}
		if len(recs) > 0 {
			q.finished(recs)
			return queue.CancelRequested, nil
		}
		tag, err := q.pool.Exec(ctx, "UPDATE falocal_requests SET cancel_requested = true WHERE id = $1 AND status = 'IN_PROGRESS'", id)
		if err != nil {
			return queue.NotFound, q.dbErr(err)
		}
		if tag.RowsAffected() > 0 {
			// The trigger tells the running node; if it is this one, do
			// not wait for the round trip.
			q.cancelLocal(id)
			return queue.CancelRequested, nil
		}
		var status string
		err = q.pool.QueryRow(ctx, "SELECT status FROM falocal_requests WHERE id = $1", id).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			return queue.NotFound, nil
		}
		if err != nil {
			return queue.NotFound, q.dbErr(err)
		}
		if status == string(queue.Completed) {
			return queue.AlreadyCompleted, nil
		}
		// It changed state between the statements: try again.
	}
	return queue.NotFound, errors.New("queue: cancel: the request keeps changing state")
}

func (q *Queue) cancelLocal(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.cancels[id] = time.Now()
	if j, ok := q.running[id]; ok {
		j.byUser = true
		j.cancel()
	}
}

// finishWhere completes the rows that where selects (its $1… are args) with
// out, and returns them. The final log line and the webhook claim are
// written with the result, so a node that dies after the commit leaves
// nothing half done.
func (q *Queue) finishWhere(ctx context.Context, where string, out queue.Outcome, elapsed float64, files []string, args ...any) ([]queue.Record, error) {
	final := q.logEntry("INFO", fmt.Sprintf("request completed in %.2fs", elapsed))
	if out.Status != 0 {
		final = q.logEntry("ERROR", out.Error)
	}
	return q.finishWithLogs(ctx, where, out, elapsed, []queue.LogEntry{final}, files, args...)
}

func (q *Queue) finishWithLogs(ctx context.Context, where string, out queue.Outcome, elapsed float64, logs []queue.LogEntry, files []string, args ...any) ([]queue.Record, error) {
	o, _ := json.Marshal(out)
	if files == nil {
		files = []string{}
	}
	rows, err := q.pool.Query(ctx, `UPDATE falocal_requests SET status = 'COMPLETED', completed_at = $1, outcome = $2,
		inference_time = $3, logs = logs || $4::jsonb, lease_until = NULL,
		files = files || ARRAY(SELECT f FROM unnest($5::text[]) f WHERE NOT f = ANY(files)),
		webhook_claim_until = CASE WHEN webhook <> '' AND NOT ephemeral THEN now() + $6::float8 * interval '1 second' END
		WHERE `+renumber(where)+` RETURNING `+cols,
		append([]any{q.opts.Now(), o, elapsed, jsonb(logs), files, q.claimSeconds()}, args...)...)
	if err != nil {
		return nil, err
	}
	return collect(rows)
}

// claimSeconds is how long a webhook delivery this node starts is its
// own: none when it delivers none (no OnComplete), so another node's
// recovery loop takes it at once.
func (q *Queue) claimSeconds() float64 {
	if q.opts.OnComplete == nil {
		return 0
	}
	return seconds(q.opts.webhookClaim)
}

// renumber moves where's placeholders ($1 on, as callers write them) past
// the six finishWithLogs uses.
func renumber(where string) string {
	out := make([]byte, 0, len(where))
	for i := 0; i < len(where); i++ {
		c := where[i]
		if c == '$' && i+1 < len(where) && where[i+1] >= '0' && where[i+1] <= '9' {
			j := i + 1
			n := 0
			for j < len(where) && where[j] >= '0' && where[j] <= '9' {
				n = n*10 + int(where[j]-'0')
				j++
			}
			out = fmt.Appendf(out, "$%d", n+6)
			i = j - 1
			continue
		}
		out = append(out, c)
	}
	return string(out)
}

// finished runs this node's completion callbacks for requests it completed.
func (q *Queue) finished(recs []queue.Record) {
	for _, r := range recs {
		r.Input = nil
		if r.Webhook != "" && !r.Ephemeral && q.opts.OnComplete != nil {
			q.mu.Lock()
			q.hooks[r.ID] = struct{}{}
			q.mu.Unlock()
		}
		if q.opts.OnFinish != nil {
			q.opts.OnFinish(r)
		}
		if r.Webhook != "" && !r.Ephemeral && q.opts.OnComplete != nil {
			q.opts.OnComplete(r)
		}
	}
}

// Forget deletes a completed sync (ephemeral) request: its caller has its
// answer.
func (q *Queue) Forget(id string) {
	q.mu.Lock()
	delete(q.partials, id)
	closed := q.closed
	q.mu.Unlock()
	if closed {
		return
	}
	ctx, cancel := q.ctx()
	defer cancel()
	if _, err := q.pool.Exec(ctx, "DELETE FROM falocal_requests WHERE id = $1 AND ephemeral AND status = 'COMPLETED'", id); err != nil {
		// Sweep deletes it later.
		q.log.Warn("queue: forget sync request", "id", id, "err", err)
	}
}

// MarkWebhookDone records that a request's webhook was delivered or given
// up, so no node delivers it again.
func (q *Queue) MarkWebhookDone(id string) error {
	if q.isClosed() {
		return queue.ErrClosed
	}
	ctx, cancel := q.ctx()
	defer cancel()
	tag, err := q.pool.Exec(ctx, "UPDATE falocal_requests SET webhook_done = true WHERE id = $1", id)
	if err != nil {
		if unavailable(err) {
			// Recorded once the database is back: else the claim this
			// node renews would keep any other from delivering it, and
			// the request from being swept, for as long as it runs.
			q.mu.Lock()
			q.marks[id] = struct{}{}
			q.mu.Unlock()
		}
		return q.dbErr(err)
	}
	q.mu.Lock()
	delete(q.hooks, id)
	q.mu.Unlock()
	if tag.RowsAffected() == 0 {
		return queue.ErrNotFound
	}
	return nil
}

// depthQuery counts through the partial indexes of queued and running
// requests, not reading the completed ones (most of the table).
const depthQuery = `SELECT (SELECT count(*) FROM falocal_requests WHERE status = 'IN_QUEUE'),
	(SELECT count(*) FROM falocal_requests WHERE status = 'IN_PROGRESS')`

// Depth counts the queued and running requests of the whole fleet (0, 0
// while the database is unreachable).
func (q *Queue) Depth() (queued, running int) {
	if q.isClosed() {
		return 0, 0
	}
	ctx, cancel := q.ctx()
	defer cancel()
	err := q.pool.QueryRow(ctx, depthQuery).Scan(&queued, &running)
	if err != nil {
		q.log.Warn("queue: depth", "err", err)
		return 0, 0
	}
	return queued, running
}

// Sweep deletes completed requests older than cutoff whose webhook is done
// (or absent), and sync requests older than cutoff whatever their state,
// and returns the output file ids they owned.
func (q *Queue) Sweep(cutoff time.Time) (int, []string, error) {
	if q.isClosed() {
		return 0, nil, queue.ErrClosed
	}
	ctx, cancel := q.ctx()
	defer cancel()
	rows, err := q.pool.Query(ctx, `DELETE FROM falocal_requests
		WHERE (status = 'COMPLETED' AND completed_at < $1 AND (webhook = '' OR webhook_done))
			OR (ephemeral AND created_at < $1)
		RETURNING files`, cutoff)
	if err != nil {
		return 0, nil, q.dbErr(err)
	}
	defer rows.Close()
	n := 0
	var files []string
	for rows.Next() {
		var f []string
		if err := rows.Scan(&f); err != nil {
			return n, files, q.dbErr(err)
		}
		files = append(files, f...)
		n++
	}
	return n, files, q.dbErr(rows.Err())
}

// Recent lists up to limit durable requests, newest first, that keep says
// to keep (nil keeps all), without their inputs.
func (q *Queue) Recent(limit int, keep func(id string) bool) ([]queue.Record, error) {
	if q.isClosed() {
		return nil, queue.ErrClosed
	}
	ctx, cancel := q.ctx()
	defer cancel()
	rows, err := q.pool.Query(ctx, `SELECT `+colsNoInput+` FROM falocal_requests WHERE NOT ephemeral ORDER BY created_at DESC, seq DESC`)
	if err != nil {
		return nil, q.dbErr(err)
	}
	defer rows.Close()
	var out []queue.Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, q.dbErr(err)
		}
		if keep != nil && !keep(r.ID) {
			continue
		}
		out = append(out, r)
		if limit > 0 && len(out) >= limit {
			break
		}
	}
	return out, q.dbErr(rows.Err())
}

// Drain stops this node's workers claiming requests; running ones go on.
// The sync requests this node accepted that still wait are answered with
// a 503, as their callers are about to be disconnected.
func (q *Queue) Drain() {
	q.mu.Lock()
	if q.draining {
		q.mu.Unlock()
		return
	}
	q.draining = true
	close(q.done)
	q.mu.Unlock()
	if q.crashed.Load() {
		return
	}
	ctx, cancel := q.ctx()
	defer cancel()
	recs, err := q.finishWhere(ctx, "status = 'IN_QUEUE' AND ephemeral AND accepted_by = $1", queue.ShuttingDown(), 0, nil, q.opts.Node)
	if err != nil {
		q.log.Warn("queue: answer waiting sync requests", "err", err)
	}
	q.finished(recs)
}

// Draining is closed once Drain is called.
func (q *Queue) Draining() <-chan struct{} { return q.done }

// Stop drains, lets the requests this node runs finish while ctx allows,
// then interrupts them: durable ones are queued again for any node, sync
// ones complete with a 503. When it returns no goroutine of the queue
// runs; the pool stays open until Close.
func (q *Queue) Stop(ctx context.Context) {
	q.Drain()
	done := make(chan struct{})
	go func() { q.workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		q.stopRun()
		q.stopHard()
		<-done
	}
	q.stopRun()
	q.stopOnce.Do(func() {
		q.stopBg()
		q.bg.Wait()
		q.stopHard()
	})
}

// Close stops the queue (see Stop) and closes the pool; later calls fail
// with ErrClosed.
func (q *Queue) Close(ctx context.Context) error {
	q.Stop(ctx)
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	subs := q.subs
	q.subs = map[string]map[chan struct{}]struct{}{}
	q.mu.Unlock()
	// Nothing will signal them again; waiters re-read and get ErrClosed.
	for _, m := range subs {
		for ch := range m {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	q.pool.Close()
	return nil
}

// Ready is nil while the pool reaches the database and the listener is
// connected.
func (q *Queue) Ready() error {
	q.mu.Lock()
	closed, lerr := q.closed, q.listenErr
	q.mu.Unlock()
	if closed {
		return queue.ErrClosed
	}
	if lerr != nil {
		return fmt.Errorf("%w: listen: %w", queue.ErrUnavailable, lerr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := q.pool.Ping(ctx); err != nil {
		return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
	}
	return nil
}

// Fleet lists the nodes seen in the last hour.
func (q *Queue) Fleet(ctx context.Context) ([]Node, error) {
	if q.isClosed() {
		return nil, queue.ErrClosed
	}
	rows, err := q.pool.Query(ctx, `SELECT n.name, n.role, n.endpoints, n.resident, n.info,
		(SELECT count(*) FROM falocal_requests r WHERE r.status = 'IN_PROGRESS' AND r.worker = n.name),
		n.seen, n.seen + 2 * n.lease_seconds * interval '1 second' > now()
		FROM falocal_nodes n WHERE n.seen > now() - interval '1 hour' ORDER BY n.name`)
	if err != nil {
		return nil, q.dbErr(err)
	}
	defer rows.Close()
	var out []Node
	for rows.Next() {
		var n Node
		var info []byte
		if err := rows.Scan(&n.Name, &n.Role, &n.Endpoints, &n.Resident, &info, &n.Running, &n.Seen, &n.Alive); err != nil {
			return nil, q.dbErr(err)
		}
		if len(info) > 0 {
			if err := json.Unmarshal(info, &n.Info); err != nil {
				return nil, err
			}
		}
		out = append(out, n)
	}
	return out, q.dbErr(rows.Err())
}

// warn logs a failure of a background loop, at most every 10 s (an outage
// would repeat it at every tick).
func (q *Queue) warn(msg string, err error) {
	now := time.Now().UnixNano()
	last := q.lastWarn.Load()
	if now-last < int64(10*time.Second) || !q.lastWarn.CompareAndSwap(last, now) {
		return
	}
	q.log.Warn(msg, "err", err)
}
