package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/pipelines"
)

// echoEndpoint is the cheapest possible request: no model, the input back.
type echoEndpoint struct{}

func (echoEndpoint) ID() string { return "bench/echo" }
func (echoEndpoint) Run(_ context.Context, r *pipelines.Request) (any, error) {
	return json.RawMessage(r.Input), nil
}

func queueServer(b *testing.B) *httptest.Server {
	dir := b.TempDir()
	fs, err := files.Open(filepath.Join(dir, "files"))
	if err != nil {
		b.Fatal(err)
	}
	srv, err := api.Open(api.Config{Registry: pipelines.NewRegistry(echoEndpoint{}), Files: fs, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		QueueDB: filepath.Join(dir, "queue.db"), Workers: 2})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	b.Cleanup(func() { ts.Close(); srv.Close(context.Background()) })
	return ts
}

type submitted struct {
	RequestID   string `json:"request_id"`
	StatusURL   string `json:"status_url"`
	ResponseURL string `json:"response_url"`
}

func submit(c *http.Client, base string, n int) (submitted, error) {
	var s submitted
	resp, err := c.Post(base+"/bench/echo", "application/json", strings.NewReader(fmt.Sprintf(`{"n":%d}`, n)))
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return s, fmt.Errorf("submit: %s", resp.Status)
	}
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// BenchmarkQueueLatency is submit-to-COMPLETED for the cheapest request,
// followed through the SSE status stream (no polling interval in the way),
// on a durable (bbolt, fsync) queue over loopback HTTP.
func BenchmarkQueueLatency(b *testing.B) {
	ts := queueServer(b)
	c := ts.Client()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := submit(c, ts.URL, i)
		if err != nil {
			b.Fatal(err)
		}
		resp, err := c.Get(s.StatusURL + "/stream")
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		last := ""
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				last = line
			}
		}
		resp.Body.Close()
		if !strings.Contains(last, `"COMPLETED"`) {
			b.Fatalf("stream ended with %s", last)
		}
	}
}

// BenchmarkQueueThroughput sends 1000 requests from 32 concurrent clients,
// each polling status every 10 ms as a client would, and checks that every
// result comes back: nothing lost, nothing mixed up.
func BenchmarkQueueThroughput(b *testing.B) {
	const total, clients = 1000, 32
	for i := 0; i < b.N; i++ {
		ts := queueServer(b)
		c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
		var mu sync.Mutex
		var lat []time.Duration
		next := 0
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		start := time.Now()
		for w := 0; w < clients; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mu.Lock()
					n := next
					next++
					mu.Unlock()
					if n >= total {
						return
					}
					t0 := time.Now()
					s, err := submit(c, ts.URL, n)
					if err != nil {
						errs <- err
						return
					}
					for {
						resp, err := c.Get(s.StatusURL)
						if err != nil {
							errs <- err
							return
						}
						body, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if bytes.Contains(body, []byte(`"COMPLETED"`)) {
							break
						}
						time.Sleep(10 * time.Millisecond)
					}
					resp, err := c.Get(s.ResponseURL)
					if err != nil {
						errs <- err
						return
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || string(body) != fmt.Sprintf(`{"n":%d}`, n) {
						errs <- fmt.Errorf("request %d: %d %s", n, resp.StatusCode, body)
						return
					}
					mu.Lock()
					lat = append(lat, time.Since(t0))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		if len(lat) != total {
			b.Fatalf("%d of %d requests came back", len(lat), total)
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		b.ReportMetric(float64(total)/elapsed.Seconds(), "req/s")
		b.ReportMetric(float64(lat[total/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[total*95/100].Microseconds())/1000, "p95-ms")
		b.ReportMetric(float64(lat[total*99/100].Microseconds())/1000, "p99-ms")
	}
}
