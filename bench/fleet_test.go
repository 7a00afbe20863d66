package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
)

// stampLog notes, for every node's endpoint, when each request's Run began
// and ended and where, so that a client in the same process can time
// submit → worker start on one monotonic clock and see what each worker
// was doing meanwhile. sleep stands in for a model's fixed latency without
// using CPU.
type stampLog struct {
	sleep time.Duration
	mu    sync.Mutex
	runs  map[string]stampRun // by request id
}

type stampRun struct {
	node       string
	start, end time.Time
}

func newStampLog(sleep time.Duration) *stampLog {
	return &stampLog{sleep: sleep, runs: map[string]stampRun{}}
}

func (l *stampLog) run(id string) (stampRun, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.runs[id]
	return r, ok
}

// idleWaits is, per request, the longest time it sat in the database (from
// its submit POST's answer to its Run) while some one worker was idle:
// between that worker's Run ending and its next beginning. That gap also
// holds the worker's own completion write and claim, so it is an upper
// bound; a request that waits for an idle worker to notice it shows up here
// as a gap near the endpoint's latency rather than a few ms.
func (l *stampLog) idleWaits(ts []fleetTimes) []time.Duration {
	l.mu.Lock()
	byNode := map[string][]stampRun{}
	for _, r := range l.runs {
		byNode[r.node] = append(byNode[r.node], r)
	}
	l.mu.Unlock()
	type span struct{ from, to time.Time }
	var idle [][]span
	forever := time.Now().Add(time.Hour)
	for _, runs := range byNode {
		sort.Slice(runs, func(i, j int) bool { return runs[i].start.Before(runs[j].start) })
		var sp []span
		for i, r := range runs {
			to := forever
			if i+1 < len(runs) {
				to = runs[i+1].start
			}
			sp = append(sp, span{r.end, to})
		}
		idle = append(idle, sp)
	}
	out := make([]time.Duration, len(ts))
	for i, t := range ts {
		from, to := t.at.Add(t.posted), t.at.Add(t.started)
		for _, sp := range idle {
			for _, s := range sp {
				if d := minTime(to, s.to).Sub(maxTime(from, s.from)); d > out[i] {
					out[i] = d
				}
			}
		}
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// stampEndpoint is one node's echo endpoint, writing to a shared stampLog.
// It answers to echoEndpoint's id so that submit reaches it.
type stampEndpoint struct {
	log  *stampLog
	node string
}

func (e *stampEndpoint) ID() string { return echoEndpoint{}.ID() }

func (e *stampEndpoint) Run(ctx context.Context, r *pipelines.Request) (any, error) {
	start := time.Now()
	if e.log.sleep > 0 {
		select {
		case <-time.After(e.log.sleep):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	e.log.mu.Lock()
	e.log.runs[r.ID] = stampRun{node: e.node, start: start, end: time.Now()}
	e.log.mu.Unlock()
	return echoEndpoint{}.Run(ctx, r)
}

// startFleet runs one RoleAPI server and `workers` RoleWorker servers, each
// with one worker slot, over the PostgreSQL database dsn, each an api.Server
// of its own (own connection pool and LISTEN connection) behind an httptest
// server of its own, and returns the API server's URL.
func startFleet(b *testing.B, dsn string, log *stampLog, workers int) string {
	b.Helper()
	open := func(role, node string) string {
		fs, err := files.Open(filepath.Join(b.TempDir(), "files"))
		if err != nil {
			b.Fatal(err)
		}
		srv, err := api.Open(api.Config{Registry: pipelines.NewRegistry(&stampEndpoint{log, node}), Files: fs, Logger: slog.New(slog.DiscardHandler),
			SharedQueue: dsn, Role: role, Node: node, Workers: 1})
		if err != nil {
			b.Fatal(err)
		}
		ts := httptest.NewServer(srv.Handler())
		b.Cleanup(func() { ts.Close(); srv.Close(context.Background()) })
		return ts.URL
	}
	base := open(api.RoleAPI, "api-1")
	for i := 1; i <= workers; i++ {
		open(api.RoleWorker, fmt.Sprintf("worker-%d", i))
	}
	return base
}

// awaitCompleted follows a request's SSE status stream to its end (no
// polling interval in the way) and checks that it ended COMPLETED.
func awaitCompleted(c *http.Client, statusURL string) error {
	resp, err := c.Get(statusURL + "/stream")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	last := ""
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			last = line
		}
	}
	if !strings.Contains(last, `"COMPLETED"`) {
		return fmt.Errorf("status stream ended with %q (%v)", last, sc.Err())
	}
	return nil
}

// fleetTimes are one request's times from just before its submit POST.
type fleetTimes struct {
	at      time.Time     // the submit POST was sent
	posted  time.Duration // the POST's answer (the request is in the database)
	started time.Duration // the endpoint's Run began on a worker
	done    time.Duration // COMPLETED arrived on the status stream
}

// fleetRun sends total requests from `clients` closed-loop clients (each
// submits its next request when its last is COMPLETED), checks every
// result, and returns the wall time and each request's times.
func fleetRun(c *http.Client, base string, log *stampLog, clients, total int) (time.Duration, []fleetTimes, error) {
	var (
		mu    sync.Mutex
		next  int
		times []fleetTimes
		first error
		wg    sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
	}
	start := time.Now()
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				n := next
				next++
				stop := n >= total || first != nil
				mu.Unlock()
				if stop {
					return
				}
				t0 := time.Now()
				s, err := submit(c, base, n)
				if err != nil {
					fail(err)
					return
				}
				posted := time.Since(t0)
				if err := awaitCompleted(c, s.StatusURL); err != nil {
					fail(fmt.Errorf("request %d: %w", n, err))
					return
				}
				done := time.Since(t0)
				run, ok := log.run(s.RequestID)
				if !ok {
					fail(fmt.Errorf("request %d (%s) completed but its Run never began", n, s.RequestID))
					return
				}
				resp, err := c.Get(s.ResponseURL)
				if err != nil {
					fail(err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(body) != fmt.Sprintf(`{"n":%d}`, n) {
					fail(fmt.Errorf("request %d: result %d %s", n, resp.StatusCode, body))
					return
				}
				mu.Lock()
				times = append(times, fleetTimes{at: t0, posted: posted, started: run.start.Sub(t0), done: done})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return time.Since(start), times, first
}

// pct is the q-quantile (0..1, nearest rank) of d in milliseconds; it sorts d.
func pct(d []time.Duration, q float64) float64 {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := int(q*float64(len(d))+0.5) - 1
	i = max(0, min(i, len(d)-1))
	return float64(d[i].Microseconds()) / 1000
}

func column(ts []fleetTimes, f func(fleetTimes) time.Duration) []time.Duration {
	d := make([]time.Duration, len(ts))
	for i, t := range ts {
		d[i] = f(t)
	}
	return d
}

// fleetClient allows one idle connection per client, so that keep-alive
// connections are reused rather than redialled under concurrency.
func fleetClient(clients int) *http.Client {
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
}

// BenchmarkFleetQueueOverhead is the shared queue's overhead for the
// cheapest request: sequential submissions to a RoleAPI server, run by one
// RoleWorker server over the same PostgreSQL database. start-* is submit
// POST → the endpoint's Run on the worker: per request, post-* (the submit
// POST's answer) plus dispatch-* (from that answer to Run). done-* is
// submit → COMPLETED on the SSE stream, comparable with
// BenchmarkQueueLatency (bbolt, one process). notify-* is a bare
// LISTEN/NOTIFY round trip between two connections to the same server: the
// floor under any hand-off that waits for a notification.
func BenchmarkFleetQueueOverhead(b *testing.B) {
	const warmup, perIter = 20, 200
	pg := testenv.Postgres(b)
	log := newStampLog(0)
	base := startFleet(b, pg.NewDatabase(b), log, 1)
	c := fleetClient(1)
	if _, _, err := fleetRun(c, base, log, 1, warmup); err != nil {
		b.Fatal(err)
	}
	b.Logf("load %s", loadavg())
	b.ResetTimer()
	var all []fleetTimes
	for i := 0; i < b.N; i++ {
		_, ts, err := fleetRun(c, base, log, 1, perIter)
		if err != nil {
			b.Fatal(err)
		}
		all = append(all, ts...)
	}
	b.StopTimer()
	started := column(all, func(t fleetTimes) time.Duration { return t.started })
	done := column(all, func(t fleetTimes) time.Duration { return t.done })
	posted := column(all, func(t fleetTimes) time.Duration { return t.posted })
	b.ReportMetric(pct(started, 0.5), "start-p50-ms")
	b.ReportMetric(pct(started, 0.99), "start-p99-ms")
	b.ReportMetric(pct(started, 1), "start-max-ms")
	var sum time.Duration
	for _, d := range done {
		sum += d
	}
	// The mean too: BenchmarkQueueLatency's ns/op is one.
	b.ReportMetric(float64(sum.Microseconds())/1000/float64(len(done)), "done-mean-ms")
	b.ReportMetric(pct(done, 0.5), "done-p50-ms")
	b.ReportMetric(pct(done, 0.99), "done-p99-ms")
	b.ReportMetric(pct(posted, 0.5), "post-p50-ms")
	b.ReportMetric(pct(posted, 0.99), "post-p99-ms")
	dispatch := column(all, func(t fleetTimes) time.Duration { return t.started - t.posted })
	b.ReportMetric(pct(dispatch, 0.5), "dispatch-p50-ms")
	b.ReportMetric(pct(dispatch, 0.99), "dispatch-p99-ms")
	notify := notifyRoundTrips(b, pg.URL, 200)
	b.ReportMetric(pct(notify, 0.5), "notify-p50-ms")
	b.ReportMetric(pct(notify, 0.99), "notify-p99-ms")
	b.Logf("load %s, %d requests", loadavg(), len(all))
}

// notifyRoundTrips times n NOTIFYs from one connection until another,
// listening, receives each.
func notifyRoundTrips(b *testing.B, dsn string, n int) []time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	listen, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer listen.Close(context.Background())
	send, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer send.Close(context.Background())
	if _, err := listen.Exec(ctx, "LISTEN bench_rt"); err != nil {
		b.Fatal(err)
	}
	d := make([]time.Duration, n)
	for i := range d {
		t0 := time.Now()
		if _, err := send.Exec(ctx, "SELECT pg_notify('bench_rt', $1)", fmt.Sprint(i)); err != nil {
			b.Fatal(err)
		}
		if _, err := listen.WaitForNotification(ctx); err != nil {
			b.Fatal(err)
		}
		d[i] = time.Since(t0)
	}
	return d
}

// BenchmarkFleetScaling is throughput against the number of RoleWorker
// servers (one slot each) behind one RoleAPI server, for an endpoint that
// takes a fixed 100 ms without CPU, so that only the queue's hand-offs limit
// it. Twice as many closed-loop clients as workers keep a request waiting
// for every worker. x-vs-1 is req/s over the 1-worker case's; efficiency is
// req/s over the ideal workers/100 ms. wait-* is submit → Run begins,
// dispatch-* its part after the submit POST answered, idle-* the longest
// time a request sat in the database while some worker was idle
// (stampLog.idleWaits). The last case holds exactly as many clients as
// workers: no request should wait for a worker while one is idle, so wait-*
// should stay at the queue's overhead, not approach 100 ms.
func BenchmarkFleetScaling(b *testing.B) {
	const sleep, perWorker = 100 * time.Millisecond, 20
	pg := testenv.Postgres(b)
	var one float64
	for _, tc := range []struct{ workers, clients int }{{1, 2}, {2, 4}, {4, 8}, {8, 16}, {8, 8}} {
		b.Run(fmt.Sprintf("workers=%d-clients=%d", tc.workers, tc.clients), func(b *testing.B) {
			log := newStampLog(sleep)
			base := startFleet(b, pg.NewDatabase(b), log, tc.workers)
			c := fleetClient(tc.clients)
			// Every worker and connection warmed once before timing.
			if _, _, err := fleetRun(c, base, log, tc.clients, 2*tc.clients); err != nil {
				b.Fatal(err)
			}
			b.Logf("load %s", loadavg())
			b.ResetTimer()
			var (
				all     []fleetTimes
				elapsed time.Duration
			)
			for i := 0; i < b.N; i++ {
				d, ts, err := fleetRun(c, base, log, tc.clients, perWorker*tc.workers)
				if err != nil {
					b.Fatal(err)
				}
				elapsed += d
				all = append(all, ts...)
			}
			b.StopTimer()
			rate := float64(len(all)) / elapsed.Seconds()
			b.ReportMetric(rate, "req/s")
			b.ReportMetric(rate/(float64(tc.workers)/sleep.Seconds()), "efficiency")
			if tc.workers == 1 {
				one = rate
			}
			if one > 0 && tc.clients == 2*tc.workers {
				b.ReportMetric(rate/one, "x-vs-1")
			}
			wait := column(all, func(t fleetTimes) time.Duration { return t.started })
			b.ReportMetric(pct(wait, 0.5), "wait-p50-ms")
			b.ReportMetric(pct(wait, 0.99), "wait-p99-ms")
			b.ReportMetric(pct(wait, 1), "wait-max-ms")
			// The wait's share after the submit POST answered: the queue's
			// hand-off, apart from the API server's HTTP handling.
			dispatch := column(all, func(t fleetTimes) time.Duration { return t.started - t.posted })
			b.ReportMetric(pct(dispatch, 0.99), "dispatch-p99-ms")
			b.ReportMetric(pct(dispatch, 1), "dispatch-max-ms")
			idle := log.idleWaits(all)
			b.ReportMetric(pct(idle, 0.99), "idle-p99-ms")
			b.ReportMetric(pct(idle, 1), "idle-max-ms")
			b.Logf("load %s, %d requests", loadavg(), len(all))
		})
	}
}
