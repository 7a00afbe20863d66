package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/falocal/falocal/api/queue"
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
