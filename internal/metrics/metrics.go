// Package metrics defines the server's Prometheus series in one leaf package,
// so that api, pipelines and engine can all record without importing each
// other. Everything registers on Registry, which /metrics serves.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry holds every falocal series plus the Go and process collectors.
var Registry = prometheus.NewRegistry()

// Buckets for durations from a millisecond to ten minutes.
var durationBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

var (
	// Requests counts finished requests by endpoint and outcome (ok,
	// client_error, server_error, cancelled, timeout).
	Requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "falocal_requests_total",
		Help: "Finished requests by endpoint id and outcome.",
	}, []string{"endpoint", "outcome"})
	// Rejected counts submissions refused because the queue was full.
	Rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "falocal_requests_rejected_total",
		Help: "Requests refused before queueing, by endpoint and reason (queue_full, shutting_down).",
	}, []string{"endpoint", "reason"})
	// QueueDepth is the number of requests waiting to start.
	QueueDepth = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "falocal_queue_depth",
		Help: "Requests waiting in the queue to start.",
	})
	// QueueCapacity is the configured bound on waiting requests (0 = none).
	QueueCapacity = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "falocal_queue_capacity",
		Help: "Most requests that may wait in the queue (0 = unbounded).",
	})
	// QueueWait is the time from submission to start.
	QueueWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "falocal_queue_wait_seconds", Help: "Time requests waited in the queue before running.",
		Buckets: durationBuckets,
	}, []string{"endpoint"})
	// Compute is the time a request ran (from start to its outcome).
	Compute = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "falocal_compute_seconds", Help: "Time requests spent running, from start to outcome.",
		Buckets: durationBuckets,
	}, []string{"endpoint"})
	// BatchSize is the number of requests one model run served.
	BatchSize = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "falocal_batch_size", Help: "Requests coalesced into one model run by the dynamic batcher.",
		Buckets: []float64{1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64},
	}, []string{"model"})
	// ModelLoads counts model loads (a model becoming resident).
	ModelLoads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "falocal_model_loads_total", Help: "Model loads, by model and result (ok, error).",
	}, []string{"model", "result"})
	// ModelEvictions counts unloads, by reason (memory, keep_alive, load_retry).
	ModelEvictions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "falocal_model_evictions_total", Help: "Model unloads, by model and reason (memory, keep_alive, load_retry, load_failed, shutdown).",
	}, []string{"model", "reason"})
	// LoadDuration is how long loading a model (opening its session) took.
	LoadDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "falocal_model_load_seconds", Help: "Time to load a model (open its first session).",
		Buckets: durationBuckets,
	}, []string{"model"})
	// MemoryInUse is the memory the resident models are counted for.
	MemoryInUse = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "falocal_memory_in_use_bytes", Help: "Memory counted for resident models, per device (cpu, cuda:N).",
	}, []string{"device"})
	// MemoryBudget is the configured memory budget per device.
	MemoryBudget = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "falocal_memory_budget_bytes", Help: "Memory budget for resident models, per device.",
	}, []string{"device"})
	// ModelsLoaded is the number of resident models.
	ModelsLoaded = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "falocal_models_loaded", Help: "Models resident now.",
	})
	// Ready is 1 once configured preloads are done.
	Ready = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "falocal_ready", Help: "1 once the configured preloads are done, else 0.",
	})
)

func init() {
	Registry.MustRegister(Requests, Rejected, QueueDepth, QueueCapacity, QueueWait, Compute, BatchSize,
		ModelLoads, ModelEvictions, LoadDuration, MemoryInUse, MemoryBudget, ModelsLoaded, Ready,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// Handler serves the registry in Prometheus' text format.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{})
}
