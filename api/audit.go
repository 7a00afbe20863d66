package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/falocal/falocal/api/queue"
)

// auditLine is one line of the audit log: a request (sync or queued) that
// completed, whatever its outcome, for sites that must account for use.
type auditLine struct {
	Time      time.Time `json:"time"` // completion
	RequestID string    `json:"request_id"`
	// KeyID is the key_id part of the API key that submitted the request
	// (never its secret); absent on a server without keys.
	KeyID    string `json:"key_id,omitempty"`
	Endpoint string `json:"endpoint"`
	Method   string `json:"method"`
	Mode     string `json:"mode"` // sync or queue
	// Status is the HTTP status of the result: 200, fal's error status,
	// 499 for a cancelled request, 504 for one that timed out.
	Status int `json:"status"`
	// QueueMS is the wait before the run (the whole life of a request that
	// never started); RunMS the run.
	QueueMS       int64 `json:"queue_ms"`
	RunMS         int64 `json:"run_ms"`
	RequestBytes  int   `json:"request_bytes"`
	ResponseBytes int   `json:"response_bytes"`
}

// auditLog writes the lines, one Write each so that concurrent requests'
// lines never interleave.
type auditLog struct {
	mu   sync.Mutex
	w    io.Writer
	keys []auditKey
}

type auditKey struct {
	digest [32]byte
	id     string
}

func newAuditLog(w io.Writer, keys []string) *auditLog {
	if w == nil {
		return nil
	}
	a := &auditLog{w: w}
	for _, k := range keys {
		if k = strings.TrimSpace(k); k != "" {
			id, _, _ := strings.Cut(k, ":")
			a.keys = append(a.keys, auditKey{sha256.Sum256([]byte(k)), id})
		}
	}
	return a
}

// keyID finds the key that submitted request id from the owner tag the id
// carries (owner.go): nothing about keys is stored with the request.
func (a *auditLog) keyID(id string) string {
	b, err := hex.DecodeString(strings.ReplaceAll(id, "-", ""))
	if err != nil || len(b) != 16 {
		return ""
	}
	for _, k := range a.keys {
		if hmac.Equal(b[16-ownerTagLen:], ownerTag(k.digest, b[:16-ownerTagLen])) {
			return k.id
		}
	}
	return ""
}

// audit writes r's line; a failed write is logged, never the request's
// failure.
func (s *Server) audit(r queue.Record) {
	a := s.auditLog
	if a == nil {
		return
	}
	l := auditLine{Time: r.CompletedAt.UTC(), RequestID: r.ID, KeyID: a.keyID(r.ID), Endpoint: r.Endpoint,
		Method: http.MethodPost, Mode: "queue", Status: http.StatusOK, RequestBytes: r.InputBytes}
	if r.Ephemeral {
		l.Mode = "sync"
	}
	if o := r.Outcome; o != nil {
		if o.Status != 0 {
			l.Status, l.ResponseBytes = o.Status, len(o.Body)
		} else {
			l.ResponseBytes = len(o.Output)
		}
	}
	if r.StartedAt.IsZero() {
		l.QueueMS = r.CompletedAt.Sub(r.CreatedAt).Milliseconds()
	} else {
		l.QueueMS = r.StartedAt.Sub(r.CreatedAt).Milliseconds()
		l.RunMS = r.CompletedAt.Sub(r.StartedAt).Milliseconds()
	}
	b, err := json.Marshal(l)
	if err != nil {
		s.log.Error("audit log", "err", err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.w.Write(append(b, '\n')); err != nil {
		s.log.Error("audit log: a line was not written", "request_id", r.ID, "err", err)
	}
}
