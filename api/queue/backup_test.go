package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// quickRun completes every request at once.
func quickRun(ctx context.Context, r *Record, logf func(level, msg string), addFile func(id string)) Outcome {
	return Outcome{Output: []byte(`{"ok":true}`)}
}

// TestBackupUnderLoad takes copies while submissions and runs write the
// database: every copy is sound, holds every request whose submission
// returned before the copy began, and opens as a queue that runs them.
func TestBackupUnderLoad(t *testing.T) {
	path := dbPath(t)
	q := open(t, path, quickRun, Options{Workers: 2})

	var mu sync.Mutex
	accepted := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				rc := rec(id)
				rc.Input = []byte(`{"pad":"` + strings.Repeat("x", 2000) + `"}`)
				if _, err := q.Submit(rc); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				accepted[id] = true
				mu.Unlock()
			}
		}()
	}
	dir := t.TempDir()
	var copies []string
	var before []map[string]bool
	for i := range 5 {
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		snap := make(map[string]bool, len(accepted))
		for k := range accepted {
			snap[k] = true
		}
		mu.Unlock()
		var b bytes.Buffer
		if _, err := q.Backup(&b); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, fmt.Sprintf("copy%d.db", i))
		os.WriteFile(p, b.Bytes(), 0o600)
		copies, before = append(copies, p), append(before, snap)
	}
	close(stop)
	wg.Wait()
	if len(before[len(before)-1]) < 20 {
		t.Fatalf("only %d submissions under load", len(before[len(before)-1]))
	}
	for i, p := range copies {
		rep, err := Check(p)
		if err != nil || rep.Damaged() {
			t.Fatalf("copy %d: %v %+v", i, err, rep)
		}
		all, err := ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		for id := range before[i] {
			if _, ok := all[id]; !ok {
				t.Errorf("copy %d lacks %s, accepted before it began", i, id)
			}
		}
		if i > 0 && len(all) < len(before[i-1]) {
			t.Errorf("copy %d has %d requests, fewer than were accepted before copy %d", i, len(all), i-1)
		}
	}

	// The last copy, restored over a database, is a queue that runs what it
	// held unfinished.
	target := dbPath(t)
	kept, err := Restore(target, copies[len(copies)-1], time.Now())
	if err != nil || kept != "" {
		t.Fatalf("restore into an empty directory: %q %v", kept, err)
	}
	want, _ := ReadAll(target)
	q2 := open(t, target, quickRun, Options{Workers: 4})
	for id := range want {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		done, err := q2.Wait(ctx, id)
		cancel()
		if err != nil || done.Status != Completed {
			t.Fatalf("%s after restore: %v %v", id, done.Status, err)
		}
	}
}

// TestBackupFileAndRestore covers the stopped-server paths: a copy of a
// closed database, a restore that keeps the database it replaces, and the
// refusals: a running server's file, a damaged backup.
func TestBackupFileAndRestore(t *testing.T) {
	path := dbPath(t)
	r := newRunner()
	q := open(t, path, r.run, Options{Workers: 1})
	submit(t, q, rec("a"))
	if _, err := BackupFile(path, &bytes.Buffer{}); !errors.Is(err, ErrInUse) {
		t.Errorf("BackupFile of an open database: %v, want ErrInUse", err)
	}
	other := dbPath(t)
	if _, err := Restore(path, other, time.Now()); err == nil {
		t.Error("restore from a missing file passed")
	}
	closeNow(q)

	var b bytes.Buffer
	if _, err := BackupFile(path, &b); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	os.WriteFile(backup, b.Bytes(), 0o600)

	// A live server refuses the restore.
	q2 := open(t, other, newRunner().run, Options{Workers: 1})
	if _, err := Restore(other, backup, time.Now()); !errors.Is(err, ErrInUse) {
		t.Errorf("restore over a running server: %v, want ErrInUse", err)
	}
	closeNow(q2)
	before, _ := os.ReadFile(other)
	kept, err := Restore(other, backup, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil || kept != other+".replaced-20260102T030405Z" {
		t.Fatalf("restore: %q %v", kept, err)
	}
	if k, _ := os.ReadFile(kept); !bytes.Equal(k, before) {
		t.Error("the replaced database was not kept as it was")
	}
	if all, err := ReadAll(other); err != nil || len(all) != 1 || all["a"].ID != "a" {
		t.Errorf("restored: %v %v", all, err)
	}

	// A damaged backup changes nothing.
	bad := filepath.Join(t.TempDir(), "bad.db")
	os.WriteFile(bad, b.Bytes()[:b.Len()/2], 0o600)
	now, _ := os.ReadFile(other)
	if _, err := Restore(other, bad, time.Now()); !errors.Is(err, ErrDamaged) {
		t.Errorf("restore of a truncated backup: %v, want ErrDamaged", err)
	}
	if after, _ := os.ReadFile(other); !bytes.Equal(after, now) {
		t.Error("a refused restore changed the database")
	}
	if _, err := BackupFile(bad, &bytes.Buffer{}); !errors.Is(err, ErrDamaged) {
		t.Errorf("BackupFile of a damaged file: %v", err)
	}
	if _, err := open(t, "", nil, Options{}).Backup(&bytes.Buffer{}); !errors.Is(err, ErrNotDurable) {
		t.Errorf("in-memory backup: %v", err)
	}
}
