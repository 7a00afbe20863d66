package api_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/pipelines"
)

// syncBuf is an io.Writer the server writes from its workers while the
// test reads it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type auditEntry struct {
	Time          time.Time `json:"time"`
	RequestID     string    `json:"request_id"`
	KeyID         *string   `json:"key_id"`
	Endpoint      string    `json:"endpoint"`
	Method        string    `json:"method"`
	Mode          string    `json:"mode"`
	Status        int       `json:"status"`
	QueueMS       *int64    `json:"queue_ms"`
	RunMS         *int64    `json:"run_ms"`
	RequestBytes  int       `json:"request_bytes"`
	ResponseBytes int       `json:"response_bytes"`
}

// auditLines parses the log, one JSON object a line, by request id.
func auditLines(t *testing.T, log string) map[string]auditEntry {
	t.Helper()
	out := map[string]auditEntry{}
	for _, l := range strings.Split(strings.TrimSuffix(log, "\n"), "\n") {
		var e auditEntry
		d := json.NewDecoder(strings.NewReader(l))
		d.DisallowUnknownFields()
		if err := d.Decode(&e); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		if _, dup := out[e.RequestID]; dup {
			t.Errorf("two lines for %s", e.RequestID)
		}
		out[e.RequestID] = e
	}
	return out
}

// TestAuditLog checks one line per request — sync and queued, succeeded,
// failed and cancelled — with its key's id, status, durations and sizes,
// and that no key secret appears in the log.
func TestAuditLog(t *testing.T) {
	const keyA, keyB = "alice:s3cret-alice-value", "bob:s3cret-bob-value"
	log := &syncBuf{}
	g := newGated("fal-ai/x")
	g.fail = func(name string) error {
		if name == "bad" {
			return pipelines.Invalid("name", "bad name")
		}
		return nil
	}
	held := g.gate("held")
	e := newQEnv(t, func(c *api.Config) { c.Keys = []string{keyA, keyB}; c.Workers = 2; c.Audit = log }, g)
	a := []string{"Authorization", "Key " + keyA}
	b := []string{"Authorization", "Key " + keyB}

	t0 := time.Now()
	syncRun := e.do(http.MethodPost, "", "/run/fal-ai/x", in("sync"), a...)
	if syncRun.Code != 200 {
		t.Fatalf("sync run: %d %s", syncRun.Code, syncRun.Body.String())
	}
	syncID := syncRun.Header().Get("x-fal-request-id")
	bad := e.do(http.MethodPost, "", "/run/fal-ai/x", in("bad"), b...)
	if bad.Code != http.StatusUnprocessableEntity {
		t.Fatalf("failing run: %d %s", bad.Code, bad.Body.String())
	}
	badID := bad.Header().Get("x-fal-request-id")
	queued := e.submit(t, "", "/fal-ai/x", in("queued"), b...)
	e.waitDone(t, "", queued, b...)
	running := e.submit(t, "", "/fal-ai/x", in("held"), a...)
	g.waitStarted(t, "held")
	time.Sleep(20 * time.Millisecond) // a run_ms that must show
	if r := e.do(http.MethodPut, "", running.path("cancel"), "", a...); r.Code != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", r.Code, r.Body.String())
	}
	close(held)
	e.waitDone(t, "", running, a...)
	// Refused calls are no requests: no line.
	if r := e.do(http.MethodPost, "", "/run/fal-ai/x", in("nokey")); r.Code != http.StatusUnauthorized {
		t.Fatalf("no key: %d", r.Code)
	}

	var lines map[string]auditEntry
	deadline := time.Now().Add(qwait)
	for {
		// The line is written as the request completes, which a client
		// may see a moment before.
		if lines = auditLines(t, log.String()); len(lines) >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4:\n%s", len(lines), log.String())
	}
	for _, c := range []struct {
		id, key, mode string
		status        int
		reqBytes      int
		ran           bool
	}{
		{syncID, "alice", "sync", 200, len(in("sync")), true},
		{badID, "bob", "sync", 422, len(in("bad")), true},
		{queued.ID, "bob", "queue", 200, len(in("queued")), true},
		{running.ID, "alice", "queue", 499, len(in("held")), true},
	} {
		l, ok := lines[c.id]
		if !ok {
			t.Errorf("no line for %s (%s)", c.id, c.mode)
			continue
		}
		if l.KeyID == nil || *l.KeyID != c.key || l.Mode != c.mode || l.Status != c.status || l.Method != "POST" ||
			l.Endpoint != "fal-ai/x" || l.RequestBytes != c.reqBytes || l.ResponseBytes == 0 ||
			l.QueueMS == nil || l.RunMS == nil || *l.QueueMS < 0 || *l.RunMS < 0 || l.Time.Before(t0.Add(-time.Second)) || l.Time.After(time.Now()) {
			t.Errorf("line for %s (%s): %+v", c.id, c.mode, l)
		}
	}
	if l := lines[running.ID]; *l.RunMS < 20 {
		t.Errorf("cancelled request ran %dms, at least 20 were waited", *l.RunMS)
	}
	if got := log.String(); strings.Contains(got, "s3cret") {
		t.Errorf("a key secret is in the audit log:\n%s", got)
	}
}

// TestAuditLogNoKeys: without keys there is no key id, and a failing
// writer fails no request.
func TestAuditLogNoKeys(t *testing.T) {
	log := &syncBuf{}
	e := newQEnv(t, func(c *api.Config) { c.Audit = log }, newGated("fal-ai/x"))
	if r := e.do(http.MethodPost, "", "/run/fal-ai/x", in("one")); r.Code != 200 {
		t.Fatalf("run: %d", r.Code)
	}
	deadline := time.Now().Add(qwait)
	for log.String() == "" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for _, l := range auditLines(t, log.String()) {
		if l.KeyID != nil {
			t.Errorf("key id %q without keys", *l.KeyID)
		}
	}
	broken := newQEnv(t, func(c *api.Config) { c.Audit = failWriter{} }, newGated("fal-ai/x"))
	if r := broken.do(http.MethodPost, "", "/run/fal-ai/x", in("two")); r.Code != 200 {
		t.Fatalf("run with a failing audit log: %d %s", r.Code, r.Body.String())
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }
