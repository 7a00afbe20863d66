package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Two Metrics share no series: what one records the other never shows.
func TestNewIsIndependent(t *testing.T) {
	a, b := New(), New()
	a.Finished("fal-ai/x", "ok", time.Second, true)
	a.Loaded("m", time.Second, nil)
	a.Loaded("m", 0, errors.New("no"))
	a.Budget("cpu", 100)
	a.SetReady(true)
	if v := value(t, a.Requests.WithLabelValues("fal-ai/x", "ok")); v != 1 {
		t.Errorf("a requests = %v, want 1", v)
	}
	if v := value(t, a.ModelLoads.WithLabelValues("m", "error")); v != 1 {
		t.Errorf("a failed loads = %v, want 1", v)
	}
	if v := value(t, b.Ready); v != 0 {
		t.Errorf("b ready = %v, want 0", v)
	}
	body := scrape(t, a)
	for _, want := range []string{`falocal_requests_total{endpoint="fal-ai/x",outcome="ok"} 1`,
		`falocal_memory_budget_bytes{device="cpu"} 100`, "falocal_ready 1", "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("a's /metrics lacks %q", want)
		}
	}
	if body := scrape(t, b); strings.Contains(body, `endpoint="fal-ai/x"`) || !strings.Contains(body, "falocal_ready 0") {
		t.Errorf("b's /metrics shows a's series:\n%s", body)
	}
}

// A nil *Metrics records nothing and does not panic.
func TestNilIsNoOp(t *testing.T) {
	var m *Metrics
	m.Finished("e", "ok", time.Second, true)
	m.RejectedRequest("e", "queue_full")
	m.Waited("e", time.Second)
	m.SetQueueDepth(1)
	m.SetQueueCapacity(1)
	m.SetReady(true)
	m.Batch("m", 2)
	m.Loaded("m", time.Second, nil)
	m.Evicted("m", "memory")
	m.Resident("cpu", 1, 1)
	m.Budget("cpu", 1)
	if m.Registry() != nil {
		t.Error("nil Metrics has a registry")
	}
	if body := scrape(t, m); strings.Contains(body, "falocal_") {
		t.Errorf("nil Metrics serves series:\n%s", body)
	}
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(w.Body)
	return string(b)
}

// value reads a counter's or a gauge's value.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}
