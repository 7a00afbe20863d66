package vrammetrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/falocal/falocal/engine/vram"
	"github.com/falocal/falocal/engine/vram/vramtest"
)

func TestCollector(t *testing.T) {
	p := vram.New(vramtest.New(1<<30), vram.Options{})
	for _, step := range []func() error{
		func() error {
			q, err := p.Alloc(1000)
			if err == nil {
				err = p.Free(q)
			}
			return err
		},
		func() error { _, err := p.Alloc(1000); return err },
		func() error { _, err := p.Alloc(3000); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}

	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(Collector(p, "cuda:0")); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		m := f.GetMetric()[0]
		if l := m.GetLabel(); len(l) != 1 || l[0].GetValue() != "cuda:0" {
			t.Errorf("%s labels %v", f.GetName(), l)
		}
		switch {
		case m.Gauge != nil:
			got[f.GetName()] = m.GetGauge().GetValue()
		case m.Counter != nil:
			got[f.GetName()] = m.GetCounter().GetValue()
		}
	}
	if len(got) != len(poolSeries) {
		t.Errorf("%d series gathered, want %d", len(got), len(poolSeries))
	}
	for name, want := range map[string]float64{
		"falocal_vram_in_use_bytes":        1024 + 4096,
		"falocal_vram_allocs_total":        3,
		"falocal_vram_reuse_hits_total":    1,
		"falocal_vram_device_allocs_total": 2,
		"falocal_vram_cached_bytes":        0,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
}
