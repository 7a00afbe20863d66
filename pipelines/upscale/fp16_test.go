//go:build cgo

package upscale_test

import (
	"context"
	"errors"
	"image"
	"image/draw"
	"image/png"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/fetch"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/pipelines/upscale"
	"github.com/falocal/falocal/weights"
)

type noNetwork struct{}

func (noNetwork) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("the test may not use the network")
}

// installFromCache installs catalog models into st from the package cache
// setup filled ($FALOCAL_TEST_PACKAGES), never from the network.
func installFromCache(t *testing.T, st *weights.Store, names ...string) {
	t.Helper()
	cache := os.Getenv("FALOCAL_TEST_PACKAGES")
	if cache == "" {
		if os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" {
			t.Fatal("FALOCAL_TEST_PACKAGES not set")
		}
		t.Skip("FALOCAL_TEST_PACKAGES not set; 'make test' sets it")
	}
	fc := &fetch.Client{Dir: cache, HTTP: &http.Client{Transport: noNetwork{}}}
	for _, n := range names {
		r, ok := weights.Lookup(n)
		if !ok {
			t.Fatalf("no recipe %s", n)
		}
		if err := r.Install(context.Background(), st, fc); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
}

// TestRealFloat16Upscalers installs x4fast and x4plus with their float16
// builds in a temporary store and upscales a photo crop ×4 through the
// endpoint: while both are installed the float32 model serves fal's name;
// pinned (Config.Models, the key a -<pipeline>-model flag would set) the
// float16 one does, and its 8-bit output differs by at most 1/255 on
// average. Measured with ONNX Runtime 1.30 CPU: x4fast (96×64) identical,
// x4plus (32×32) 0.016/255, max 1/255. A CPU runs both in float32 kernels
// between the casts ONNX Runtime inserts, and the ncnn files' weights were
// float16 already, so this checks the conversion, not float16 arithmetic:
// that needs a GPU.
func TestRealFloat16Upscalers(t *testing.T) {
	if testing.Short() {
		t.Skip("installs and runs four Real-ESRGAN models")
	}
	f, err := os.Open(testenv.Asset(t, "chelsea.png"))
	if err != nil {
		t.Fatal(err)
	}
	photo, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	st, err := weights.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	installFromCache(t, st, "realesrgan-x4fast", "realesrgan-x4fast-fp16", "realesrgan-x4plus", "realesrgan-x4plus-fp16")

	for _, c := range []struct {
		fal, model string
		w, h       int
	}{
		{"RealESRGAN_x4_v3", "realesrgan-x4fast", 96, 64},
		{"RealESRGAN_x4plus", "realesrgan-x4plus", 32, 32}, // x4plus takes ~50 s per 512² on a CPU
	} {
		crop := image.NewNRGBA(image.Rect(0, 0, c.w, c.h))
		draw.Draw(crop, crop.Bounds(), photo, image.Pt(120, 70), draw.Src)
		uri := pngURI(t, crop)
		run := func(pin, want string) []uint8 {
			cfg := pipelines.Config{SessionsPerModel: 1, MaxInputBytes: 1 << 24, MaxPixels: 1 << 24, Models: map[string]string{}}
			if pin != "" {
				cfg.Models["esrgan:"+c.fal] = pin
			}
			_, eps := pipelinetest.Build(t, upscale.New, pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(), Config: cfg})
			e := &env{files: pipelinetest.NewFiles(), ep: eps[upscale.EndpointID]}
			t0 := time.Now()
			img, file, logs, err := e.run(t, map[string]any{"image_url": uri, "model": c.fal, "scale": 4})
			if err != nil {
				t.Fatalf("%s pinned to %q: %v", c.fal, pin, err)
			}
			if file.Width != 4*c.w || file.Height != 4*c.h {
				t.Fatalf("%s: %dx%d", want, file.Width, file.Height)
			}
			if !slices.ContainsFunc(logs, func(l string) bool { return strings.Contains(l, "; "+want+" (×4)") }) {
				t.Errorf("%s pinned to %q: %s did not run (logs %q)", c.fal, pin, want, logs)
			}
			t.Logf("%s %d×%d → ×4: %v on the CPU (load included)", want, c.w, c.h, time.Since(t0).Round(time.Millisecond))
			return pixels(img)
		}
		a32 := run("", c.model) // the float32 model wins while both are installed
		a16 := run(c.model+"-fp16", c.model+"-fp16")
		var sum float64
		worst := 0
		for i := range a32 {
			d := int(a32[i]) - int(a16[i])
			sum += math.Abs(float64(d))
			worst = max(worst, d, -d)
		}
		mean := sum / float64(len(a32))
		t.Logf("%s-fp16 vs %s: mean |Δ| %.4f/255, max %d/255", c.model, c.model, mean, worst)
		if mean > 1 {
			t.Errorf("%s-fp16 differs from %s by %.3f/255 on average, want ≤ 1", c.model, c.model, mean)
		}
	}
}
