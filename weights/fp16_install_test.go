package weights

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/internal/fetch"
)

// The float16 recipes: one per float32 model they derive from, installed
// only on request, named <base>-fp16, in the base's pipeline.
func TestFloat16Catalog(t *testing.T) {
	n := 0
	for _, r := range Catalog() {
		if !strings.HasSuffix(r.Name, "-fp16") {
			continue
		}
		n++
		base := strings.TrimSuffix(r.Name, "-fp16")
		b, ok := Lookup(base)
		if !ok {
			t.Errorf("%s: no recipe %s", r.Name, base)
			continue
		}
		if r.Default || r.Pipeline != b.Pipeline {
			t.Errorf("%s: default %v, pipeline %s (base %s)", r.Name, r.Default, r.Pipeline, b.Pipeline)
		}
		switch r.Pipeline {
		case "upscale":
			if f, ok := ncnnFP16[r.Name]; !ok || f.base != base || len(f.sha256) != 64 {
				t.Errorf("%s: ncnnFP16 entry %+v", r.Name, f)
			}
		case "rembg":
			v, b := isnetVariants[r.Name], isnetVariants[base]
			if !v.fp16 || v.dtype != "fp16" || v.resource != b.resource || v.upstream != b.upstream || len(v.sha256) != 64 {
				t.Errorf("%s: variant %+v", r.Name, v)
			}
		default:
			t.Errorf("%s: no float16 build for pipeline %s", r.Name, r.Pipeline)
		}
	}
	if n != len(ncnnFP16)+1 {
		t.Errorf("%d float16 recipes, want %d", n, len(ncnnFP16)+1)
	}
}

// TestInstallFloat16Upscalers installs the float16 Real-ESRGAN builds and
// their float32 siblings from the package cache (never the network): the
// stored files hash to their pins (the conversion is deterministic), the
// manifests are the siblings' but for the dtype, and (with cgo) each runs
// on a real photograph as its sibling does.
func TestInstallFloat16Upscalers(t *testing.T) {
	cache := packagesDir(t)
	fc := &fetch.Client{Dir: cache, HTTP: noNetwork()}
	s, _ := Open(t.TempDir())
	for _, name := range sortedFP16() {
		base, _ := Lookup(ncnnFP16[name].base)
		r, _ := Lookup(name)
		start := time.Now()
		for _, r := range []Recipe{base, r} {
			if err := r.Install(context.Background(), s, fc); err != nil {
				t.Fatalf("%s: %v", r.Name, err)
			}
			if err := s.Verify(r.Name); err != nil {
				t.Fatal(err)
			}
		}
		m, _ := s.Get(name)
		b, _ := s.Get(base.Name)
		if len(m.Files) != 1 || m.Files[0].DType != "fp16" || m.Files[0].SHA256 != ncnnFP16[name].sha256 {
			t.Errorf("%s: files %+v", name, m.Files)
		}
		if m.Pipeline != "upscale" || !maps.Equal(m.Params, b.Params) || strings.Join(m.Serves, ",") != strings.Join(b.Serves, ",") || m.MemoryBytes != b.MemoryBytes {
			t.Errorf("%s: manifest %+v, its sibling's %+v", name, m, b)
		}
		t.Logf("%s: installed with its sibling in %v, %.2f MB of ONNX (float32: %.2f MB), sha256 %s", name,
			time.Since(start).Round(time.Millisecond), float64(m.Files[0].Size)/1e6, float64(b.Files[0].Size)/1e6, m.Files[0].SHA256)
	}
	runFloat16Upscalers(t, s)
}

func sortedFP16() []string {
	var out []string
	for _, r := range Catalog() {
		if _, ok := ncnnFP16[r.Name]; ok {
			out = append(out, r.Name)
		}
	}
	return out
}
