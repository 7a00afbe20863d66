package api_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/falocal/falocal/api"
)

func TestSweepInterval(t *testing.T) {
	for _, c := range []struct{ retention, want time.Duration }{
		{15 * time.Second, 1500 * time.Millisecond},
		{2 * time.Second, time.Second},
		{time.Minute, 6 * time.Second},
		{7 * 24 * time.Hour, 10 * time.Minute},
	} {
		if got := api.SweepInterval(c.retention); got != c.want {
			t.Errorf("SweepInterval(%s) = %s, want %s", c.retention, got, c.want)
		}
	}
}

// With a short retention, a finished request and a stored file stay
// fetchable for the retention and are gone soon after it (within a small
// multiple of it), not at the next ten-minute sweep.
func TestRetentionSweeps(t *testing.T) {
	const keep = 2 * time.Second
	e := newQEnv(t, func(c *api.Config) { c.QueueDB = t.TempDir() + "/queue.db" }, echoEP("fal-ai/x"))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.srv.RunSweeps(ctx, keep)
	}()
	defer wg.Wait()
	defer cancel()

	m, err := e.store.Put([]byte("hello"), "text/plain", "a.txt")
	if err != nil {
		t.Fatal(err)
	}
	s := e.submit(t, "", "/fal-ai/x", in("short-lived"))
	e.waitDone(t, "", s)
	t0 := time.Now()
	result := "/fal-ai/x/requests/" + s.ID
	file := "/cdn/files/" + m.ID + "/" + m.Name
	if r := e.do(http.MethodGet, "", result, ""); r.Code != 200 {
		t.Fatalf("result within its retention: %d %s", r.Code, r.Body.String())
	}
	if r := e.do(http.MethodGet, "", file, ""); r.Code != 200 {
		t.Fatalf("file within its retention: %d", r.Code)
	}
	deadline := t0.Add(3 * keep)
	for {
		rr, rf := e.do(http.MethodGet, "", result, ""), e.do(http.MethodGet, "", file, "")
		if rr.Code == 404 && rf.Code == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after a retention of %s: result %d, file %d; want both gone", time.Since(t0).Round(time.Millisecond), keep, rr.Code, rf.Code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if took := time.Since(t0); took < keep-200*time.Millisecond {
		t.Errorf("gone after %s, before the retention of %s", took, keep)
	}
}
