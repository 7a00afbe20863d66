package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/falocal/falocal/internal/testenv"
)

// TestE2EQueueBackupUnderLoad backs up the queue of a running server while
// requests are being submitted and run, restores the copy into a fresh data
// directory, and starts a server there: every request accepted before the
// backup began is there (finished ones with their results, the rest run to
// completion), and none submitted after it ended. The first server keeps an
// audit log (-audit-log): a line for each request it completed.
func TestE2EQueueBackupUnderLoad(t *testing.T) {
	auditPath := filepath.Join(t.TempDir(), "audit.jsonl")
	s := startServer(t, "--workers", "2", "--audit-log", auditPath)
	body := astronautBody(t)
	done := submitQueue(t, nil, s.base+"/"+rembgID, body)
	waitStatus(t, nil, done.StatusURL, "COMPLETED", 60*time.Second)

	// Load: submissions go on from another goroutine during the backup.
	// Each is timed: one acknowledged before the backup began must be in
	// it, one sent after it ended must not; one in flight meanwhile may be
	// either.
	type sub struct {
		sent, acked time.Time
		r           submitted
	}
	var mu sync.Mutex
	var subs []sub
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		for range 6 {
			sent := time.Now()
			resp, err := http.Post(s.base+"/"+rembgID, "application/json", bytes.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			var r submitted
			err = json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || r.RequestID == "" {
				t.Errorf("submit under load: %d %v", resp.StatusCode, err)
				return
			}
			mu.Lock()
			subs = append(subs, sub{sent, time.Now(), r})
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(subs)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no submission under load was acknowledged")
		}
	}
	began := time.Now()
	backup := filepath.Join(t.TempDir(), "queue-backup.db")
	out, errOut, code := runCmd(t, "queue", "backup", "-o", backup, "-data-dir", s.dataDir)
	if code != 0 || !strings.Contains(out, "running server") {
		t.Fatalf("backup: %d %s %s", code, out, errOut)
	}
	ended := time.Now()
	<-loaded
	before := []submitted{done}
	var later []submitted
	for _, x := range subs {
		switch {
		case x.acked.Before(began):
			before = append(before, x.r)
		case x.sent.After(ended):
			later = append(later, x.r)
		}
	}
	if len(before) < 2 || len(later) == 0 {
		t.Fatalf("no load around the backup: %d before, %d after", len(before), len(later))
	}

	checkAuditLog(t, auditPath, done.RequestID, len(body))

	// The copy refuses to go over a running server's database.
	if _, e, code := runCmd(t, "queue", "restore", "-data-dir", s.dataDir, backup); code == 0 || !strings.Contains(e, "stop the server first") {
		t.Errorf("restore over a running server: %d %s", code, e)
	}

	fresh := testenv.NewDataDir(t)
	if out, e, code := runCmd(t, "queue", "restore", "-data-dir", fresh, backup); code != 0 || !strings.Contains(out, "restored") {
		t.Fatalf("restore: %d %s %s", code, out, e)
	}
	s2 := testenv.StartServerAt(t, fresh, "", "--workers", "2")
	for i, r := range before {
		r = r.rebase(t, s.base, s2.Base)
		st := waitStatus(t, nil, r.StatusURL, "COMPLETED", 90*time.Second)
		if st.Error != "" {
			t.Errorf("request %d after the restore: %s (%s)", i, st.Error, st.ErrorType)
			continue
		}
		img := resultImage(t, nil, r.ResponseURL)
		if i > 0 && strings.HasPrefix(img.URL, s2.Base+"/cdn/files/") {
			// It ran again on the restored server: its image is there.
			fetchImage(t, img)
		}
	}
	// The first finished before the backup: its result is the one it had.
	if img := resultImage(t, nil, done.rebase(t, s.base, s2.Base).ResponseURL); !strings.HasPrefix(img.URL, s.base+"/cdn/files/") {
		t.Errorf("finished request's result changed: %s", img.URL)
	}
	for _, r := range later {
		resp, err := http.Get(r.rebase(t, s.base, s2.Base).StatusURL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s, submitted after the backup, is %d on the restored server", r.RequestID, resp.StatusCode)
		}
	}
}

// checkAuditLog finds the line of request id in the audit log at path: a
// queued rembg request that completed with its input's size.
func checkAuditLog(t *testing.T, path, id string, inputBytes int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e struct {
			RequestID     string `json:"request_id"`
			Endpoint      string `json:"endpoint"`
			Mode          string `json:"mode"`
			Status        int    `json:"status"`
			RunMS         int64  `json:"run_ms"`
			RequestBytes  int    `json:"request_bytes"`
			ResponseBytes int    `json:"response_bytes"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		if e.RequestID != id {
			continue
		}
		if e.Endpoint != rembgID || e.Mode != "queue" || e.Status != 200 || e.RunMS <= 0 || e.RequestBytes != inputBytes || e.ResponseBytes == 0 {
			t.Errorf("audit line %s", l)
		}
		return
	}
	t.Errorf("no audit line for %s in:\n%s", id, b)
}
