package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/falocal/falocal/api/queue"
	"github.com/falocal/falocal/internal/testenv"
)

// queueDB writes a queue database of n queued requests under dir.
func queueDB(t *testing.T, dir string, n int) string {
	t.Helper()
	path := filepath.Join(dir, "queue.db")
	q, err := queue.Open(path, func(ctx context.Context, _ *queue.Record, _ func(string, string), _ func(string)) queue.Outcome {
		<-ctx.Done()
		return queue.Outcome{Status: 499, ErrorType: "client_cancelled"}
	}, queue.Options{Workers: 1, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		in := fmt.Sprintf(`{"prompt":"%0400d"}`, i)
		if _, err := q.Submit(queue.Record{ID: fmt.Sprintf("req-%04d", i), Input: json.RawMessage(in)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return path
}

func runQueue(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"queue"}, args...), &out, &errb)
	return code, out.String() + errb.String()
}

func TestQueueCheckRepair(t *testing.T) {
	dir := t.TempDir()
	path := queueDB(t, dir, 300)

	code, out := runQueue(t, "check", "-data-dir", dir)
	if code != 0 || !strings.Contains(out, "readable requests: 300") || !strings.Contains(out, "sound") {
		t.Fatalf("check of a sound database: %d\n%s", code, out)
	}
	if code, out := runQueue(t, "repair", "-data-dir", dir); code != 0 || !strings.Contains(out, "nothing to repair") {
		t.Fatalf("repair of a sound database: %d\n%s", code, out)
	}

	fi, _ := os.Stat(path)
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	code, out = runQueue(t, "check", "-data-dir", dir)
	if code != 1 || !strings.Contains(out, "damage:") || !strings.Contains(out, "truncated") || !strings.Contains(out, "falocal queue repair") {
		t.Fatalf("check of a truncated database: %d\n%s", code, out)
	}
	code, out = runQueue(t, "repair", "-data-dir", dir)
	if code != 0 || !strings.Contains(out, "repaired:") || !strings.Contains(out, "queue.db.damaged-") {
		t.Fatalf("repair: %d\n%s", code, out)
	}
	kept, _ := filepath.Glob(path + ".damaged-*")
	if len(kept) != 1 {
		t.Fatalf("damaged files kept: %v", kept)
	}
	if k, _ := os.Stat(kept[0]); k.Size() != fi.Size()/2 {
		t.Errorf("kept file is %d bytes, want the truncated %d", k.Size(), fi.Size()/2)
	}
	if code, out := runQueue(t, "check", "-data-dir", dir); code != 0 || !strings.Contains(out, "sound") {
		t.Errorf("check after repair: %d\n%s", code, out)
	}

	// Zero length: refused, and repaired into an empty queue on request.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := runQueue(t, "check", "-data-dir", dir); code != 1 || !strings.Contains(out, "empty") {
		t.Errorf("check of an empty file: %d\n%s", code, out)
	}

	if code, out := runQueue(t, "check", "-data-dir", t.TempDir()); code != 1 || !strings.Contains(out, "no queue database") {
		t.Errorf("check without a database: %d\n%s", code, out)
	}
	if code, out := runQueue(t, "fix"); code != 1 || !strings.Contains(out, "usage: falocal queue check|repair") {
		t.Errorf("unknown subcommand: %d\n%s", code, out)
	}
}

// A server holding the database: check and repair refuse.
func TestQueueCheckInUse(t *testing.T) {
	dir := t.TempDir()
	path := queueDB(t, dir, 3)
	q, err := queue.Open(path, func(ctx context.Context, _ *queue.Record, _ func(string, string), _ func(string)) queue.Outcome {
		<-ctx.Done()
		return queue.Outcome{}
	}, queue.Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		q.Close(ctx)
	}()
	for _, sub := range []string{"check", "repair"} {
		if code, out := runQueue(t, sub, "-data-dir", dir); code != 1 || !strings.Contains(out, "in use by a running server") {
			t.Errorf("%s while in use: %d\n%s", sub, code, out)
		}
	}
}

// The real binary over a truncated queue.db: it refuses to start with a
// message naming the file and the recovery commands (no panic), 'falocal
// queue repair' fixes it, and the server then starts.
func TestE2EDamagedQueue(t *testing.T) {
	bin, lib := testenv.Binary(t), testenv.ORTLibrary(t)
	dir := testenv.NewDataDir(t)
	path := queueDB(t, dir, 300)
	fi, _ := os.Stat(path)
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	serve := exec.Command(bin, "serve", "--listen", testenv.FreeAddr(t), "--data-dir", dir, "--cache-dir", t.TempDir(), "--ort-library", lib)
	out, err := serve.CombinedOutput()
	if code := serve.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("serve over a truncated queue.db: exit %d (%v), want 1:\n%s", code, err, out)
	}
	for _, want := range []string{path + " is damaged", "truncated", "falocal queue check", "falocal queue repair", "backup"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("refusal does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "goroutine ") || strings.Contains(string(out), "panic") {
		t.Errorf("refusal with a stack trace:\n%s", out)
	}
	repair := exec.Command(bin, "queue", "repair", "--data-dir", dir)
	if out, err := repair.CombinedOutput(); err != nil || !strings.Contains(string(out), "repaired:") {
		t.Fatalf("queue repair: %v\n%s", err, out)
	}
	s := testenv.StartServerAt(t, dir, "")
	if code := s.Stop(t, syscall.SIGTERM, 60*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM:\n%s", code, s.Log())
	}
}

// SIGTERM while a slow receiver takes a webhook: the delivery finishes and
// is recorded before the queue database closes, so the restarted server
// does not send it again (the receiver sees it exactly once).
func TestE2EShutdownDuringWebhook(t *testing.T) {
	var hits, answered atomic.Int32
	hit := make(chan struct{}, 10)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		hit <- struct{}{}
		select {
		case <-time.After(1500 * time.Millisecond):
		case <-r.Context().Done():
			return // the sender hung up: not delivered
		}
		answered.Add(1)
	}))
	defer recv.Close()
	s := testenv.StartServer(t)
	hook := "?fal_webhook=" + url.QueryEscape(recv.URL+"/hook")
	resp, err := http.Post(s.Base+"/fal-ai/imageutils/rembg"+hook, "application/json", strings.NewReader(`{"image_url": 5}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("submit: %d", resp.StatusCode)
	}
	select {
	case <-hit:
	case <-time.After(60 * time.Second):
		t.Fatal("the webhook never reached the receiver")
	}
	if code := s.Stop(t, syscall.SIGTERM, 60*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, s.Log())
	}
	if strings.Contains(s.Log(), "database not open") || strings.Contains(s.Log(), "webhook: record delivery") {
		t.Errorf("the delivery was not recorded before the database closed:\n%s", s.Log())
	}
	s2 := testenv.StartServerAt(t, s.DataDir, "")
	select {
	case <-hit:
		t.Errorf("the webhook was sent again after the restart:\n%s", s2.Log())
	case <-time.After(3 * time.Second):
	}
	if h, a := hits.Load(), answered.Load(); h != 1 || a != 1 {
		t.Errorf("receiver got %d deliveries (%d answered), want exactly 1", h, a)
	}
}

// -retention 3s: a finished request is fetchable at first and gone within
// a small multiple of the retention (sweeps follow it), not ten minutes on.
func TestE2ERetention(t *testing.T) {
	const keep = 3 * time.Second
	s := testenv.StartServer(t, "--retention", keep.String())
	sub := submitQueue(t, nil, s.Base+"/"+rembgID, []byte(`{"image_url": 5}`))
	var t0 time.Time
	for deadline := time.Now().Add(60 * time.Second); ; {
		var st queueStatus
		r := do(t, nil, "GET", sub.StatusURL, nil)
		if json.Unmarshal(r.body, &st) == nil && st.Status == "COMPLETED" {
			t0 = time.Now()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("request never completed: %d %s", r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := do(t, nil, "GET", sub.ResponseURL, nil); r.status == 404 {
		t.Fatalf("result gone at once, before its retention of %s", keep)
	}
	for {
		r := do(t, nil, "GET", sub.ResponseURL, nil)
		if r.status == 404 {
			break
		}
		if time.Since(t0) > 3*keep {
			t.Fatalf("result still answers %d %s after %s with -retention %s", r.status, r.body, time.Since(t0).Round(time.Millisecond), keep)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// -min-free-disk above what the disk has: submissions and runs get a 507
// naming the data directory; the server itself stays up.
func TestE2EMinFreeDisk(t *testing.T) {
	s := testenv.StartServer(t, "--min-free-disk", "4611686018427387904")
	for _, path := range []string{"/" + rembgID, "/run/" + rembgID} {
		r := do(t, nil, "POST", s.Base+path, []byte(`{"image_url": 5}`))
		var body struct {
			Detail string `json:"detail"`
		}
		if err := json.Unmarshal(r.body, &body); r.status != 507 || err != nil ||
			!strings.Contains(body.Detail, s.DataDir) || !strings.Contains(body.Detail, "free") {
			t.Errorf("POST %s: %d %s, want 507 naming %s and its free space", path, r.status, r.body, s.DataDir)
		}
	}
	if r := do(t, nil, "GET", s.Base+"/healthz", nil); r.status != 200 {
		t.Errorf("healthz: %d", r.status)
	}
}
