package weights

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/internal/fetch"
)

// The float32 ISNet: on request, from the same pinned package and resource
// as its siblings, dtype fp32, converted by Float32Compute (chosen by that
// dtype alone), its pin a different file's.
func TestFloat32Catalog(t *testing.T) {
	r, ok := Lookup("isnet-general-use-fp32")
	if !ok {
		t.Fatal("no recipe isnet-general-use-fp32")
	}
	b, _ := Lookup("isnet-general-use")
	v, bv := isnetVariants[r.Name], isnetVariants[b.Name]
	if r.Default || r.Pipeline != "rembg" || r.Revision != b.Revision {
		t.Errorf("recipe %+v, sibling %+v", r, b)
	}
	if v.fp16 || v.dtype != "fp32" || v.resource != bv.resource || v.upstream != bv.upstream || v.upSize != bv.upSize ||
		len(v.sha256) != 64 || v.sha256 == bv.sha256 || v.memory <= bv.memory {
		t.Errorf("variant %+v, sibling %+v", v, bv)
	}
	for name, v := range isnetVariants {
		if v.dtype == "fp32" && name != r.Name {
			t.Errorf("%s: dtype fp32 would be converted by Float32Compute", name)
		}
	}
}

// TestInstallFloat32ISNet installs isnet-general-use-fp32 and its sibling
// from the package cache (never the network): the stored file hashes to its
// pin (the conversion is deterministic), holds no float16 and no Cast, keeps
// every other node of the sibling, and the manifest is the sibling's but for
// the file, the memory estimate, the source and what it serves.
func TestInstallFloat32ISNet(t *testing.T) {
	cache := packagesDir(t)
	if testing.Short() {
		t.Skip("rebuilds 260 MB of models")
	}
	fc := &fetch.Client{Dir: cache, HTTP: noNetwork()}
	s, _ := Open(t.TempDir())
	start := time.Now()
	for _, n := range []string{"isnet-general-use", "isnet-general-use-fp32"} {
		r, _ := Lookup(n)
		if err := r.Install(context.Background(), s, fc); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if err := s.Verify(n); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := s.Get("isnet-general-use-fp32")
	b, _ := s.Get("isnet-general-use")
	v := isnetVariants[m.Name]
	if len(m.Files) != 1 || m.Files[0].DType != "fp32" || m.Files[0].SHA256 != v.sha256 || m.Files[0].Size != v.size {
		t.Errorf("files %+v", m.Files)
	}
	if m.Pipeline != "rembg" || !maps.Equal(m.Params, b.Params) || len(m.Serves) != 0 || m.MemoryBytes != v.memory ||
		!strings.HasSuffix(m.Source, "(every op converted to float32)") {
		t.Errorf("manifest %+v, its sibling's %+v", m, b)
	}
	t.Logf("installed with its sibling in %v: %.1f MB of ONNX (sibling %.1f MB), sha256 %s",
		time.Since(start).Round(time.Millisecond), float64(m.Files[0].Size)/1e6, float64(b.Files[0].Size)/1e6, m.Files[0].SHA256)

	path := func(m Manifest) string {
		p, err := s.Path(m, "model")
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	g32, g16 := readFP16Model(t, path(m)).Graph, readFP16Model(t, path(b)).Graph
	for _, x := range g32.Initializer {
		if x.GetDataType() == fp16 {
			t.Fatalf("initialiser %s is float16", x.GetName())
		}
	}
	count := map[string]int{}
	for _, n := range g16.Node {
		count[n.GetOpType()]++
	}
	casts := count["Cast"]
	for _, n := range g32.Node {
		count[n.GetOpType()]--
		if n.GetOpType() == "Constant" {
			if typ, _ := constantType(n); typ == fp16 {
				t.Errorf("Constant %s is float16", n.GetName())
			}
		}
	}
	for op, n := range count {
		if op == "Cast" && n != casts || op != "Cast" && n != 0 {
			t.Errorf("%s: %d nodes fewer than isnet-general-use", op, n)
		}
	}
	t.Logf("%d nodes (isnet-general-use: %d, %d of them Casts)", len(g32.Node), len(g16.Node), casts)
}
