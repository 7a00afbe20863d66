// Package metrics defines the server's Prometheus series in one leaf package,
// so that api, pipelines and engine can all record without importing each
// other. A Metrics holds its own registry and series: each server makes one
// (New) and passes it to what records, so two servers in one process (tests)
// never share a series. Every recording method is a no-op on a nil
// *Metrics, so code and tests that do not care need not build one.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Buckets for durations from a millisecond to ten minutes.
var durationBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// runBuckets are finer: one model run on a GPU can take under a
// millisecond (a decoder step), and a diffusion step tens of them.
var runBuckets = []float64{.0005, .001, .002, .005, .01, .02, .035, .05, .075, .1, .15, .2, .35, .5, .75, 1, 2, 5, 10, 30, 60}

// Metrics is one server's registry and series. Record through the methods
// (nil-safe); the series are exported for tests to read.
type Metrics struct {
	reg *prometheus.Registry

	// Requests counts finished requests by endpoint and outcome (ok,
	// client_error, server_error, cancelled, timeout).
	Requests *prometheus.CounterVec
	// Rejected counts submissions refused before queueing.
	Rejected *prometheus.CounterVec
	// QueueDepth is the number of requests waiting to start.
	QueueDepth prometheus.Gauge
	// QueueCapacity is the configured bound on waiting requests (0 = none).
	QueueCapacity prometheus.Gauge
	// QueueWait is the time from submission to start.
	QueueWait *prometheus.HistogramVec
	// Compute is the time a request ran (from start to its outcome).
	Compute *prometheus.HistogramVec
	// BatchSize is the number of requests one model run served.
	BatchSize *prometheus.HistogramVec
	// ModelRun is the time inside a model file's session per run (one
	// batch), pre- and post-processing excluded: a request's compute time
	// less this is the server's own part.
	ModelRun *prometheus.HistogramVec
	// ModelLoads counts model loads (a model becoming resident).
	ModelLoads *prometheus.CounterVec
	// ModelEvictions counts unloads, by reason.
	ModelEvictions *prometheus.CounterVec
	// LoadDuration is how long loading a model (opening its session) took.
	LoadDuration *prometheus.HistogramVec
	// MemoryInUse is the memory the resident models are counted for.
	MemoryInUse *prometheus.GaugeVec
	// MemoryBudget is the configured memory budget per device.
	MemoryBudget *prometheus.GaugeVec
	// ModelsLoaded is the number of resident models.
	ModelsLoaded prometheus.Gauge
	// Ready is 1 once configured preloads are done.
	Ready prometheus.Gauge
	// QueueRunning is the number of requests running (on every node of a
	// shared queue).
	QueueRunning prometheus.Gauge
	// FleetNodes counts the live nodes of a shared queue by role.
	FleetNodes *prometheus.GaugeVec
	// FleetRunning and FleetResident are, per live node, the requests it
	// runs and the models it holds in memory.
	FleetRunning  *prometheus.GaugeVec
	FleetResident *prometheus.GaugeVec
}

// New makes a registry with every falocal series plus the Go and process
// collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "falocal_requests_total",
			Help: "Finished requests by endpoint id and outcome.",
		}, []string{"endpoint", "outcome"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "falocal_requests_rejected_total",
			Help: "Requests refused before queueing, by endpoint and reason (queue_full, shutting_down).",
		}, []string{"endpoint", "reason"}),
		QueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "falocal_queue_depth",
			Help: "Requests waiting in the queue to start.",
		}),
		QueueCapacity: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "falocal_queue_capacity",
			Help: "Most requests that may wait in the queue (0 = unbounded).",
		}),
		QueueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "falocal_queue_wait_seconds", Help: "Time requests waited in the queue before running.",
			Buckets: durationBuckets,
		}, []string{"endpoint"}),
		Compute: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "falocal_compute_seconds", Help: "Time requests spent running, from start to outcome.",
			Buckets: durationBuckets,
		}, []string{"endpoint"}),
		BatchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "falocal_batch_size", Help: "Requests coalesced into one model run by the dynamic batcher.",
			Buckets: []float64{1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64},
		}, []string{"model"}),
		ModelRun: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "falocal_model_run_seconds", Help: "Time inside a model file's session per run (one batch), by model and file role.",
			Buckets: runBuckets,
		}, []string{"model", "role"}),
		ModelLoads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "falocal_model_loads_total", Help: "Model loads, by model and result (ok, error).",
		}, []string{"model", "result"}),
		ModelEvictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "falocal_model_evictions_total", Help: "Model unloads, by model and reason (memory, keep_alive, load_retry, load_failed, shutdown).",
		}, []string{"model", "reason"}),
		LoadDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "falocal_model_load_seconds", Help: "Time to load a model (open its first session).",
			Buckets: durationBuckets,
		}, []string{"model"}),
		MemoryInUse: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "falocal_memory_in_use_bytes", Help: "Memory counted for resident models, per device (cpu, cuda:N).",
		}, []string{"device"}),
		MemoryBudget: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "falocal_memory_budget_bytes", Help: "Memory budget for resident models, per device.",
		}, []string{"device"}),
		ModelsLoaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "falocal_models_loaded", Help: "Models resident now.",
		}),
		Ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "falocal_ready", Help: "1 once the configured preloads are done, else 0.",
		}),
		QueueRunning: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "falocal_queue_running", Help: "Requests running now (on every node of a shared queue).",
		}),
		FleetNodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "falocal_fleet_nodes", Help: "Live nodes sharing the queue, by role (api, worker, both).",
		}, []string{"role"}),
		FleetRunning: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "falocal_fleet_node_running", Help: "Requests each live node of the fleet runs now.",
		}, []string{"node"}),
		FleetResident: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "falocal_fleet_node_resident_endpoints", Help: "Endpoints whose default model each live node holds in memory.",
		}, []string{"node"}),
	}
	m.reg.MustRegister(m.Requests, m.Rejected, m.QueueDepth, m.QueueCapacity, m.QueueWait, m.Compute, m.BatchSize, m.ModelRun,
		m.ModelLoads, m.ModelEvictions, m.LoadDuration, m.MemoryInUse, m.MemoryBudget, m.ModelsLoaded, m.Ready,
		m.QueueRunning, m.FleetNodes, m.FleetRunning, m.FleetResident,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is m's registry: register more collectors on it (the GPU pool's)
// or gather it (tests). Nil for a nil m.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Handler serves m's registry in Prometheus' text format; for a nil m, an
// empty registry.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return promhttp.HandlerFor(prometheus.NewRegistry(), promhttp.HandlerOpts{})
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Finished records a request's outcome and, when it ran, its compute time.
func (m *Metrics) Finished(endpoint, outcome string, compute time.Duration, ran bool) {
	if m == nil {
		return
	}
	m.Requests.WithLabelValues(endpoint, outcome).Inc()
	if ran {
		m.Compute.WithLabelValues(endpoint).Observe(compute.Seconds())
	}
}

// RejectedRequest counts a submission refused before queueing.
func (m *Metrics) RejectedRequest(endpoint, reason string) {
	if m != nil {
		m.Rejected.WithLabelValues(endpoint, reason).Inc()
	}
}

// Waited records the time a request waited in the queue.
func (m *Metrics) Waited(endpoint string, d time.Duration) {
	if m != nil {
		m.QueueWait.WithLabelValues(endpoint).Observe(d.Seconds())
	}
}

// SetQueueDepth sets the number of requests waiting.
func (m *Metrics) SetQueueDepth(n int) {
	if m != nil {
		m.QueueDepth.Set(float64(n))
	}
}

// SetQueueRunning sets the number of requests running.
func (m *Metrics) SetQueueRunning(n int) {
	if m != nil {
		m.QueueRunning.Set(float64(n))
	}
}

// FleetNode is one live node, as the fleet series show it.
type FleetNode struct {
	Name, Role string
	Running    int
	Resident   int
}

// SetFleet replaces the fleet series with nodes (the live ones).
func (m *Metrics) SetFleet(nodes []FleetNode) {
	if m == nil {
		return
	}
	m.FleetNodes.Reset()
	m.FleetRunning.Reset()
	m.FleetResident.Reset()
	for _, r := range []string{"api", "worker", "both"} {
		m.FleetNodes.WithLabelValues(r).Set(0)
	}
	for _, n := range nodes {
		m.FleetNodes.WithLabelValues(n.Role).Inc()
		m.FleetRunning.WithLabelValues(n.Name).Set(float64(n.Running))
		m.FleetResident.WithLabelValues(n.Name).Set(float64(n.Resident))
	}
}

// SetQueueCapacity sets the queue's bound (0 = none).
func (m *Metrics) SetQueueCapacity(n int) {
	if m != nil {
		m.QueueCapacity.Set(float64(n))
	}
}

// SetReady sets falocal_ready.
func (m *Metrics) SetReady(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.Ready.Set(1)
	} else {
		m.Ready.Set(0)
	}
}

// Batch records one model run that served n requests.
func (m *Metrics) Batch(model string, n int) {
	if m != nil {
		m.BatchSize.WithLabelValues(model).Observe(float64(n))
	}
}

// Ran records one run of a model file's session.
func (m *Metrics) Ran(model, role string, d time.Duration) {
	if m != nil {
		m.ModelRun.WithLabelValues(model, role).Observe(d.Seconds())
	}
}

// Loaded records a model load: its duration when it succeeded (err nil).
func (m *Metrics) Loaded(model string, took time.Duration, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.ModelLoads.WithLabelValues(model, "error").Inc()
		return
	}
	m.ModelLoads.WithLabelValues(model, "ok").Inc()
	m.LoadDuration.WithLabelValues(model).Observe(took.Seconds())
}

// Evicted counts a model unload and its reason.
func (m *Metrics) Evicted(model, reason string) {
	if m != nil {
		m.ModelEvictions.WithLabelValues(model, reason).Inc()
	}
}

// Resident sets the number of resident models and the memory they are
// counted for on device.
func (m *Metrics) Resident(device string, models int, used int64) {
	if m != nil {
		m.ModelsLoaded.Set(float64(models))
		m.MemoryInUse.WithLabelValues(device).Set(float64(used))
	}
}

// Budget sets device's memory budget (≤ 0 = none, shown as 0).
func (m *Metrics) Budget(device string, budget int64) {
	if m != nil {
		m.MemoryBudget.WithLabelValues(device).Set(float64(max(budget, 0)))
	}
}
