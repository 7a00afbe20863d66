// Package vrammetrics exports a vram.Pool's statistics to Prometheus. It is
// apart from vram so that the pool (and its device test binary, which must
// travel to a GPU machine) does not link the Prometheus client.
package vrammetrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/falocal/falocal/engine/vram"
)

// Collector exports a pool's Stats as Prometheus series labelled with the
// device ("cuda:0"). It reads Stats at scrape time, so the pool's hot path
// touches no metric. Register puts it on a registry.
func Collector(p *vram.Pool, device string) prometheus.Collector {
	return &collector{p: p, device: device}
}

// Register exports p on reg (the server's, internal/metrics.Metrics'
// Registry) and returns the function that takes the series off it again,
// for when the pool closes.
func Register(reg prometheus.Registerer, p *vram.Pool, device string) (unregister func(), err error) {
	c := Collector(p, device)
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	return func() { reg.Unregister(c) }, nil
}

type collector struct {
	p      *vram.Pool
	device string
}

type series struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(vram.Stats) float64
}

func gauge(name, help string, v func(vram.Stats) float64) series {
	return series{prometheus.NewDesc(name, help, []string{"device"}, nil), prometheus.GaugeValue, v}
}

func counter(name, help string, v func(vram.Stats) float64) series {
	return series{prometheus.NewDesc(name, help, []string{"device"}, nil), prometheus.CounterValue, v}
}

var poolSeries = []series{
	gauge("falocal_vram_in_use_bytes", "Device memory handed out by the pool, by size class.",
		func(s vram.Stats) float64 { return float64(s.InUse) }),
	gauge("falocal_vram_requested_bytes", "Device memory asked for by the blocks handed out (in use minus this is rounding waste).",
		func(s vram.Stats) float64 { return float64(s.Requested) }),
	gauge("falocal_vram_peak_in_use_bytes", "Highest device memory handed out at once.",
		func(s vram.Stats) float64 { return float64(s.PeakInUse) }),
	gauge("falocal_vram_cached_bytes", "Device memory held free by the pool for reuse.",
		func(s vram.Stats) float64 { return float64(s.Cached) }),
	gauge("falocal_vram_cached_limit_bytes", "Cap on the device memory the pool holds for reuse.",
		func(s vram.Stats) float64 { return float64(s.MaxCached) }),
	counter("falocal_vram_allocs_total", "Successful pool allocations.",
		func(s vram.Stats) float64 { return float64(s.Allocs) }),
	counter("falocal_vram_reuse_hits_total", "Pool allocations served from the cache.",
		func(s vram.Stats) float64 { return float64(s.ReuseHits) }),
	counter("falocal_vram_device_allocs_total", "Allocations the pool made on the device.",
		func(s vram.Stats) float64 { return float64(s.DeviceAllocs) }),
	counter("falocal_vram_device_frees_total", "Frees the pool made on the device.",
		func(s vram.Stats) float64 { return float64(s.DeviceFrees) }),
	counter("falocal_vram_alloc_retries_total", "Allocations retried after a device failure and a trim.",
		func(s vram.Stats) float64 { return float64(s.Retries) }),
	counter("falocal_vram_alloc_failures_total", "Pool allocations that failed.",
		func(s vram.Stats) float64 { return float64(s.Fails) }),
	counter("falocal_vram_bad_frees_total", "Double frees and frees of pointers the pool did not hand out.",
		func(s vram.Stats) float64 { return float64(s.BadFrees) }),
	counter("falocal_vram_free_errors_total", "Device frees that failed.",
		func(s vram.Stats) float64 { return float64(s.FreeErrors) }),
	counter("falocal_vram_trimmed_bytes_total", "Cached device memory returned to the device.",
		func(s vram.Stats) float64 { return float64(s.TrimmedBytes) }),
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, s := range poolSeries {
		ch <- s.desc
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.p.Stats()
	for _, s := range poolSeries {
		ch <- prometheus.MustNewConstMetric(s.desc, s.kind, s.value(st), c.device)
	}
}
