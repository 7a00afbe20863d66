package pgqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/falocal/falocal/api/queue"
	"github.com/jackc/pgx/v5"
)

// worker claims and runs requests until Drain.
func (q *Queue) worker() {
	defer q.workers.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-q.done:
			return
		default:
		}
		j, rec, err := q.claim()
		if err == nil && j != nil {
			q.signal() // there may be more: wake another idle worker
			q.execute(j, rec)
			continue
		}
		if err != nil {
			q.warn("queue: claim a request", err)
		}
		// Idle: the listener wakes us on new work; the timer covers
		// notifications lost while it reconnected.
		t.Reset(q.poll)
		select {
		case <-q.done:
			return
		case <-q.wake:
		case <-t.C:
		}
	}
}

// claim takes the first queued request this node can run: by priority,
// then those of models it holds in memory, then by arrival. SKIP LOCKED
// lets workers of every node claim at once without waiting on each other.
func (q *Queue) claim() (*job, queue.Record, error) {
	if q.crashed.Load() {
		return nil, queue.Record{}, nil
	}
	var endpoints []string // nil: any
	if q.opts.Endpoints != nil {
		endpoints = q.opts.Endpoints()
		if endpoints == nil {
			endpoints = []string{}
		}
	}
	resident := []string{}
	if q.opts.Resident != nil {
		if r := q.opts.Resident(); r != nil {
			resident = r
		}
	}
	ctx, cancel := q.ctx()
	defer cancel()
	now := q.opts.Now()
	var cancelReq bool
	rec, err := scanRecord(q.pool.QueryRow(ctx, `UPDATE falocal_requests SET status = 'IN_PROGRESS', worker = $1,
		lease_until = now() + $2::float8 * interval '1 second', started_at = $3, attempts = attempts + 1,
		logs = logs || $4::jsonb
		WHERE id = (SELECT id FROM falocal_requests WHERE status = 'IN_QUEUE'
			AND ($5::text[] IS NULL OR endpoint = ANY($5::text[]))
			AND (start_deadline IS NULL OR start_deadline > $3)
			ORDER BY priority, coalesce(endpoint = ANY($6::text[]), false) DESC, seq
			LIMIT 1 FOR UPDATE SKIP LOCKED)
		AND status = 'IN_QUEUE'
		RETURNING `+cols+`, cancel_requested`,
		q.opts.Node, seconds(q.lease), now, jsonb([]queue.LogEntry{q.logEntry("INFO", "request started")}), endpoints, resident),
		&cancelReq)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, rec, nil
	}
	if err != nil {
		return nil, rec, err
	}
	runCtx, stop := context.WithCancel(q.runCtx)
	j := &job{id: rec.ID, attempts: rec.Attempts, cancel: stop}
	q.mu.Lock()
	if old := q.running[rec.ID]; old != nil {
		// A run of an earlier claim of this node, whose lease was lost
		// and which the reaper queued again: this claim replaces it.
		q.log.Warn("queue: lease lost; interrupting the run (this node claimed the request again)", "id", rec.ID)
		old.cancel()
	}
	q.running[rec.ID] = j
	// A cancel heard between the claim and now would otherwise be missed.
	if _, ok := q.cancels[rec.ID]; ok || cancelReq {
		j.byUser = true
		stop()
	}
	q.mu.Unlock()
	rec.Input = append(json.RawMessage(nil), rec.Input...)
	j.ctxRun = runCtx
	return j, rec, nil
}

// fence is the condition that this node still owns the claim: after a
// lease expired and another node took the request over, every write of
// the old claim matches no row.
const fence = "id = $1 AND worker = $2 AND attempts = $3 AND status = 'IN_PROGRESS'"

func (q *Queue) execute(j *job, rec queue.Record) {
	logf := func(level, msg string) {
		j.mu.Lock()
		j.logs = append(j.logs, q.logEntry(level, msg))
		pending := j.logs
		j.mu.Unlock()
		if q.crashed.Load() {
			return
		}
		ctx, cancel := q.ctx()
		defer cancel()
		_, err := q.pool.Exec(ctx, "UPDATE falocal_requests SET logs = logs || $4::jsonb WHERE "+fence,
			j.id, q.opts.Node, j.attempts, jsonb(pending))
		if err != nil {
			// Kept for the next write (the result's at the latest).
			q.warn("queue: store a log line", err)
			return
		}
		j.mu.Lock()
		j.logs = j.logs[len(pending):]
		j.mu.Unlock()
	}
	addFile := func(id string) {
		j.mu.Lock()
		j.files = append(j.files, id)
		j.mu.Unlock()
		if q.crashed.Load() {
			return
		}
		ctx, cancel := q.ctx()
		defer cancel()
		// At once, so Sweep finds the file even if this node dies; the
		// result's write adds any that failed here.
		if _, err := q.pool.Exec(ctx, "UPDATE falocal_requests SET files = array_append(files, $4) WHERE "+fence,
			j.id, q.opts.Node, j.attempts, id); err != nil {
			q.warn("queue: store an output file", err)
		}
	}
	start := time.Now()
	out := q.safeRun(j.ctxRun, &rec, logf, addFile)
	elapsed := time.Since(start).Seconds()
	j.cancel()
	q.mu.Lock()
	j.ended = true
	byUser := j.byUser
	q.mu.Unlock()
	// The job stays in running until its result is stored, so heartbeats
	// renew its lease while a database outage holds the write up: else a
	// reaper would queue the finished request again and it would run twice.
	defer func() {
		q.mu.Lock()
		if q.running[j.id] == j { // not a later claim of the same request
			delete(q.running, j.id)
		}
		q.mu.Unlock()
	}()
	if q.crashed.Load() {
		return
	}
	j.mu.Lock()
	logs, files := append([]queue.LogEntry(nil), j.logs...), append([]string(nil), j.files...)
	j.mu.Unlock()
	if q.runCtx.Err() != nil && out.ErrorType == "client_cancelled" && !byUser {
		if !rec.Ephemeral {
			// Interrupted by a deliberate shutdown: queued again for any
			// node, and not counted as a crash.
			logs = append(logs, q.logEntry("WARN", "the server shut down while this request was running; it was queued again"))
			q.retry(j.id, "queue again after shutdown", func(ctx context.Context) error {
				tag, err := q.pool.Exec(ctx, `UPDATE falocal_requests SET status = 'IN_QUEUE', attempts = attempts - 1,
					worker = NULL, lease_until = NULL, logs = logs || $4::jsonb,
					files = files || ARRAY(SELECT f FROM unnest($5::text[]) f WHERE NOT f = ANY(files))
					WHERE `+fence, j.id, q.opts.Node, j.attempts, jsonb(logs), nonNil(files))
				if err == nil && tag.RowsAffected() == 0 {
					q.log.Info("queue: request taken over by another node; not queued again", "id", j.id)
				}
				return err
			})
			return
		}
		out = queue.ShuttingDown()
	}
	final := q.logEntry("INFO", fmt.Sprintf("request completed in %.2fs", elapsed))
	if out.Status != 0 {
		final = q.logEntry("ERROR", out.Error)
	}
	logs = append(logs, final)
	var recs []queue.Record
	q.retry(j.id, "store result", func(ctx context.Context) error {
		var err error
		recs, err = q.finishWithLogs(ctx, "id = $1 AND worker = $2 AND attempts = $3 AND status = 'IN_PROGRESS'",
			out, elapsed, logs, files, j.id, q.opts.Node, j.attempts)
		return err
	})
	q.mu.Lock()
	if q.running[j.id] == j {
		delete(q.running, j.id)
	}
	q.mu.Unlock()
	if len(recs) == 0 {
		q.log.Warn("queue: result dropped: another node owns this request now", "id", j.id)
		return
	}
	q.finished(recs)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// retry runs a write until it succeeds: a result must survive a short
// database outage (a restart). It gives up when Stop's grace ends, after
// one try at least.
func (q *Queue) retry(id, what string, f func(ctx context.Context) error) {
	wait := 50 * time.Millisecond
	for {
		ctx, cancel := q.ctx()
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		q.warn("queue: "+what+" (retrying)", err)
		select {
		case <-q.hardCtx.Done():
			q.log.Error("queue: "+what+": given up at shutdown; the lease's expiry queues it again", "id", id, "err", err)
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// safeRun turns a panic in a pipeline into an internal error.
func (q *Queue) safeRun(ctx context.Context, r *queue.Record, logf func(string, string), addFile func(string)) (out queue.Outcome) {
	defer func() {
		if p := recover(); p != nil {
			q.log.Error("queue: run panicked", "id", r.ID, "panic", p)
			b, _ := json.Marshal(map[string]string{"detail": "Internal Server Error"})
			out = queue.Outcome{Status: 500, Error: "Internal Server Error", ErrorType: "internal_error", Body: b}
		}
	}()
	return q.run(ctx, r, logf, addFile)
}

// Publish stores a partial output of a stream request this node runs; the
// node that accepted it hands it to its OnPartial.
func (q *Queue) Publish(id string, partial []byte) {
	q.mu.Lock()
	j, ok := q.running[id]
	q.mu.Unlock()
	if !ok || q.crashed.Load() {
		return
	}
	ctx, cancel := q.ctx()
	defer cancel()
	if _, err := q.pool.Exec(ctx, "UPDATE falocal_requests SET partial = $4, partial_seq = partial_seq + 1 WHERE "+fence,
		id, q.opts.Node, j.attempts, partial); err != nil {
		q.warn("queue: publish a partial output", err)
	}
}

// heartbeatLoop renews this node's row and the leases of what it runs.
func (q *Queue) heartbeatLoop() {
	defer q.bg.Done()
	t := time.NewTicker(q.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-q.bgCtx.Done():
			return
		case <-t.C:
		}
		if q.crashed.Load() {
			continue
		}
		ctx, cancel := q.ctx()
		if err := q.beat(ctx); err != nil {
			q.failed(err)
			q.warn("queue: heartbeat", err)
		}
		cancel()
	}
}

// beat writes the node row and renews leases. A lease found lost (another
// node took the request over) interrupts the run; a cancel missed while
// the listener was away is caught here.
func (q *Queue) beat(ctx context.Context) error {
	q.mu.Lock()
	ids := make([]string, 0, len(q.running))
	jobs := map[string]*job{}
	for id, j := range q.running {
		ids = append(ids, id)
		jobs[id] = j
	}
	hooks := make([]string, 0, len(q.hooks))
	for id := range q.hooks {
		hooks = append(hooks, id)
	}
	q.mu.Unlock()
	var endpoints []string
	if q.opts.Endpoints != nil {
		endpoints = nonNil(q.opts.Endpoints())
	}
	resident := []string{}
	if q.opts.Resident != nil {
		resident = nonNil(q.opts.Resident())
	}
	info := map[string]any{}
	if q.opts.Info != nil {
		if i := q.opts.Info(); i != nil {
			info = i
		}
	}
	if _, err := q.pool.Exec(ctx, `INSERT INTO falocal_nodes (name, role, endpoints, resident, info, running, lease_seconds, seen)
		VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, now())
		ON CONFLICT (name) DO UPDATE SET role = $2, endpoints = $3, resident = $4, info = $5::jsonb, running = $6,
			lease_seconds = $7, seen = now()`,
		q.opts.Node, q.opts.Role, endpoints, resident, jsonb(info), len(ids), seconds(q.lease)); err != nil {
		return err
	}
	if len(hooks) > 0 {
		// Deliveries under way stay this node's while it lives.
		if _, err := q.pool.Exec(ctx, `UPDATE falocal_requests SET webhook_claim_until = now() + $2::float8 * interval '1 second'
			WHERE id = ANY($1) AND NOT webhook_done`, hooks, seconds(q.opts.webhookClaim)); err != nil {
			return err
		}
	}
	if len(ids) == 0 || q.pauseBeat.Load() {
		return nil
	}
	rows, err := q.pool.Query(ctx, `UPDATE falocal_requests SET lease_until = now() + $3::float8 * interval '1 second'
		WHERE id = ANY($1) AND worker = $2 AND status = 'IN_PROGRESS' RETURNING id, attempts, cancel_requested`,
		ids, q.opts.Node, seconds(q.lease))
	if err != nil {
		return err
	}
	held := map[string]bool{}
	for rows.Next() {
		var id string
		var attempts int
		var cancelReq bool
		if err := rows.Scan(&id, &attempts, &cancelReq); err != nil {
			rows.Close()
			return err
		}
		if j := jobs[id]; j != nil && j.attempts == attempts {
			held[id] = true
			if cancelReq {
				q.cancelLocal(id)
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for id, j := range jobs {
		q.mu.Lock()
		still := q.running[id] == j && !j.ended // not one that completed meanwhile
		q.mu.Unlock()
		if !held[id] && still {
			q.log.Warn("queue: lease lost; interrupting the run (another node owns the request now)", "id", id)
			j.cancel()
		}
	}
	return nil
}

// maintenanceLoop, on every node: expires start deadlines, queues again
// (or fails) requests whose worker stopped renewing its lease, and takes
// over webhook deliveries whose node died.
func (q *Queue) maintenanceLoop() {
	defer q.bg.Done()
	t := time.NewTicker(q.tick)
	defer t.Stop()
	n := 0
	for {
		select {
		case <-q.bgCtx.Done():
			return
		case <-t.C:
		}
		if q.crashed.Load() {
			continue
		}
		ctx, cancel := q.ctx()
		// Leases that ran out while the database was out of reach say
		// nothing of their workers: reap once every node had a lease's
		// time to renew its own.
		reap := time.Since(time.Unix(0, q.lastFail.Load())) > q.lease
		if err := q.maintain(ctx, n%600 == 0, reap); err != nil {
			q.failed(err)
			q.warn("queue: maintenance", err)
		}
		cancel()
		n++
		q.mu.Lock()
		for id, at := range q.cancels {
			if time.Since(at) > time.Minute {
				delete(q.cancels, id)
			}
		}
		q.mu.Unlock()
	}
}

// failed notes when the database was last out of reach (see maintain).
func (q *Queue) failed(err error) {
	if unavailable(err) {
		q.lastFail.Store(time.Now().UnixNano())
	}
}

func (q *Queue) maintain(ctx context.Context, gcNodes, reap bool) error {
	// Start deadlines, by this node's clock (as the API set them).
	recs, err := q.finishWhere(ctx, "status = 'IN_QUEUE' AND start_deadline <= $1", queue.TimedOut(), 0, nil, q.opts.Now())
	if err != nil {
		return err
	}
	q.finished(recs)
	if reap {
		if err := q.reap(ctx); err != nil {
			return err
		}
	}
	if q.opts.OnComplete != nil {
		// Deliveries whose claim expired: the node delivering died.
		rows, err := q.pool.Query(ctx, `UPDATE falocal_requests SET webhook_claim_until = now() + $1::float8 * interval '1 second'
			WHERE id IN (SELECT id FROM falocal_requests WHERE status = 'COMPLETED' AND webhook <> '' AND NOT webhook_done
				AND NOT ephemeral AND webhook_claim_until < now() ORDER BY seq LIMIT 100 FOR UPDATE SKIP LOCKED)
			RETURNING `+cols, seconds(q.opts.webhookClaim))
		if err != nil {
			return err
		}
		recs, err := collect(rows)
		if err != nil {
			return err
		}
		for _, r := range recs {
			r.Input = nil
			q.mu.Lock()
			q.hooks[r.ID] = struct{}{}
			q.mu.Unlock()
			q.log.Info("queue: delivering the webhook of a request whose node stopped", "id", r.ID)
			q.opts.OnComplete(r)
		}
	}
	q.mu.Lock()
	marks := make([]string, 0, len(q.marks))
	for id := range q.marks {
		marks = append(marks, id)
	}
	q.mu.Unlock()
	if len(marks) > 0 {
		if _, err := q.pool.Exec(ctx, "UPDATE falocal_requests SET webhook_done = true WHERE id = ANY($1)", marks); err != nil {
			return err
		}
		q.mu.Lock()
		for _, id := range marks {
			delete(q.marks, id)
			delete(q.hooks, id)
		}
		q.mu.Unlock()
	}
	if gcNodes {
		if _, err := q.pool.Exec(ctx, "DELETE FROM falocal_nodes WHERE seen < now() - interval '1 day'"); err != nil {
			return err
		}
	}
	return nil
}

// reap handles expired leases, by the database's clock (one clock for the
// fleet). A cancel asked of a dead worker is honoured, not run again.
func (q *Queue) reap(ctx context.Context) error {
	// A sync run's caller waits on the node that accepted it: once that node
	// has not been seen for two leases, nobody will read the answer. Queued
	// ones are dropped, running ones asked to stop (their worker sees it at
	// its next heartbeat).
	const orphan = `ephemeral AND accepted_by <> '' AND NOT EXISTS
		(SELECT 1 FROM falocal_nodes n WHERE n.name = accepted_by AND n.seen > now() - make_interval(secs => $1))`
	gone := (2 * q.lease).Seconds()
	if _, err := q.pool.Exec(ctx, "DELETE FROM falocal_requests WHERE status = 'IN_QUEUE' AND "+orphan, gone); err != nil {
		return err
	}
	if _, err := q.pool.Exec(ctx, "UPDATE falocal_requests SET cancel_requested = true WHERE status = 'IN_PROGRESS' AND NOT cancel_requested AND "+orphan, gone); err != nil {
		return err
	}
	recs, err := q.finishWhere(ctx, "status = 'IN_PROGRESS' AND lease_until < now() AND cancel_requested", queue.Cancelled(), 0, nil)
	if err != nil {
		return err
	}
	q.finished(recs)
	rows, err := q.pool.Query(ctx, `UPDATE falocal_requests SET status = 'IN_QUEUE', worker = NULL, lease_until = NULL,
		logs = logs || $1::jsonb
		WHERE status = 'IN_PROGRESS' AND lease_until < now() AND attempts < 2 RETURNING id, worker`,
		jsonb([]queue.LogEntry{q.logEntry("WARN", "the worker running this request stopped; it was queued again")}))
	if err != nil {
		return err
	}
	for rows.Next() {
		var id string
		var w *string
		if rows.Scan(&id, &w) == nil {
			q.log.Info("queue: re-queued request whose worker stopped", "id", id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	out := queue.ErrorOutcome(503, "the server stopped twice while running this request; it was not retried again", "runner_disconnected")
	// attempts >= 2: a first lease that expired between the statement
	// above and this one (each has its own now()) is queued again by the
	// next pass, not failed.
	recs, err = q.finishWhere(ctx, "status = 'IN_PROGRESS' AND lease_until < now() AND attempts >= 2", out, 0, nil)
	if err != nil {
		return err
	}
	for _, r := range recs {
		q.log.Warn("queue: request failed after its workers stopped twice", "id", r.ID)
	}
	q.finished(recs)
	return nil
}

// connectListener opens the dedicated LISTEN connection.
func (q *Queue) connectListener(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, q.dsn)
	if err != nil {
		return nil, err
	}
	for _, ch := range []string{chanChanged, chanWork, chanCancel} {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			conn.Close(ctx)
			return nil, err
		}
	}
	return conn, nil
}

// listen dispatches notifications, and reconnects (with backoff) when the
// connection drops; then everyone re-reads, since what was sent meanwhile
// is lost.
func (q *Queue) listen(conn *pgx.Conn) {
	defer q.bg.Done()
	wait := 50 * time.Millisecond
	for {
		if conn == nil {
			var err error
			conn, err = q.connectListener(q.bgCtx)
			if err != nil {
				if q.bgCtx.Err() != nil {
					return
				}
				q.setListenErr(err)
				q.failed(err)
				select {
				case <-q.bgCtx.Done():
					return
				case <-time.After(wait):
				}
				wait = min(wait*2, 2*time.Second)
				continue
			}
			q.setListenErr(nil)
			q.log.Info("queue: listening again")
			q.wakeAll()
		}
		wait = 50 * time.Millisecond
		for {
			n, err := conn.WaitForNotification(q.bgCtx)
			if err != nil {
				if q.bgCtx.Err() == nil {
					q.setListenErr(err)
					q.failed(err)
					q.log.Warn("queue: listener disconnected", "err", err)
				}
				break
			}
			q.dispatch(n.Channel, n.Payload)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn.Close(ctx)
		cancel()
		conn = nil
		if q.bgCtx.Err() != nil {
			return
		}
	}
}

func (q *Queue) setListenErr(err error) {
	q.mu.Lock()
	q.listenErr = err
	q.mu.Unlock()
}

func (q *Queue) dispatch(channel, payload string) {
	switch channel {
	case chanChanged:
		q.mu.Lock()
		_, watched := q.partials[payload]
		q.mu.Unlock()
		if watched {
			// Before the subscribers: a stream's caller gets every partial
			// before it learns of the completion.
			q.deliverPartial(payload)
		}
		q.notify(payload)
	case chanWork:
		q.signal()
	case chanCancel:
		q.cancelLocal(payload)
	}
}

// wakeAll makes every subscriber and an idle worker re-read.
func (q *Queue) wakeAll() {
	q.mu.Lock()
	var ids []string
	for id := range q.partials {
		ids = append(ids, id)
	}
	q.mu.Unlock()
	for _, id := range ids {
		q.deliverPartial(id)
	}
	q.mu.Lock()
	for _, m := range q.subs {
		for ch := range m {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	q.mu.Unlock()
	q.signal()
}

// deliverPartial hands a stream request's newest partial output to
// OnPartial if it is newer than the last one delivered. The listener
// goroutine and Wait call it, one at a time, so none is delivered twice.
func (q *Queue) deliverPartial(id string) {
	q.deliverMu.Lock()
	defer q.deliverMu.Unlock()
	q.mu.Lock()
	last, ok := q.partials[id]
	q.mu.Unlock()
	if !ok {
		return
	}
	ctx, cancel := q.ctx()
	defer cancel()
	var status string
	var seq int64
	var b []byte
	err := q.pool.QueryRow(ctx, `SELECT status, partial_seq, CASE WHEN partial_seq > $2 THEN partial END
		FROM falocal_requests WHERE id = $1`, id, last).Scan(&status, &seq, &b)
	if errors.Is(err, pgx.ErrNoRows) {
		q.mu.Lock()
		delete(q.partials, id)
		q.mu.Unlock()
		return
	}
	if err != nil {
		q.warn("queue: read a partial output", err)
		return
	}
	q.mu.Lock()
	_, still := q.partials[id]
	if still {
		if status == string(queue.Completed) {
			delete(q.partials, id) // nothing comes after the completion
		} else {
			q.partials[id] = seq
		}
	}
	q.mu.Unlock()
	if still && seq > last && b != nil {
		q.opts.OnPartial(id, b)
	}
}
