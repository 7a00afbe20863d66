//go:build cgo

package diffusion

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/falocal/falocal/pipelines"
)

// Exports made as users make them (tools/diffusion-ref/stock.py: optimum-cli
// 1.27 and 1.16 for SD 1.5 and SDXL, tools/flux-export for FLUX), taken
// unmodified through the import check and compared with diffusers run on
// the same weights and latents: guidance with a negative prompt and with
// fal's empty one, no guidance, two sizes.
func TestStockExports(t *testing.T) {
	root := filepath.Join("testdata", "stock")
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		// ONNX Runtime's optimizer's outputs (sd15-ort-*): ortopt_test.go
		if !e.IsDir() || e.Name() == "ref" || strings.HasPrefix(e.Name(), "sd15-ort-") {
			continue
		}
		n++
		name := e.Name()
		t.Run(name, func(t *testing.T) {
			d := stubDeps(t)
			man, err := importExport(t, d, filepath.Join(root, name), name, nil)
			if err != nil {
				t.Fatalf("import check: %v", err)
			}
			if len(man.Params) != 0 {
				t.Errorf("params %v: the export runs any size", man.Params)
			}
			models := pipelines.NewModels(d)
			t.Cleanup(func() { models.Close() })
			m, err := LoadModel(man, d.Store, models)
			if err != nil {
				t.Fatal(err)
			}
			cases, _ := refCases(filepath.Join(root, "ref", name))
			if len(cases) < 2 {
				t.Fatalf("%d reference cases", len(cases))
			}
			for _, cj := range cases {
				dir := filepath.Dir(cj)
				if m.Family == Flux {
					c := loadFluxCase(t, dir)
					for _, batch := range []int{1, 2} {
						t.Run(fmt.Sprintf("%s/batch%d", filepath.Base(dir), batch), func(t *testing.T) { checkFluxCase(t, m, c, batch) })
					}
					continue
				}
				t.Run(filepath.Base(dir), func(t *testing.T) { runCase(t, m, dir) })
			}
		})
	}
	if n < 4 {
		t.Fatalf("%d stock exports, want SD 1.5 (two optimum versions), SDXL and FLUX", n)
	}
}
