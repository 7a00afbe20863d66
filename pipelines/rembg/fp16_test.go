//go:build cgo

package rembg_test

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/draw"
	"image/png"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/fetch"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/pipelines/rembg"
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

// TestRealFloat16ISNet installs isnet-general-use and its float16 build in
// a temporary store and removes the background of a photograph with each,
// chosen as -rembg-model chooses (Config.Models["rembg"]): the masks agree
// (IoU ≥ 0.99 binarised at 0.5, mean |Δ| ≤ 1/255). Measured with ONNX
// Runtime 1.30 CPU on astronaut.png: IoU 1.0000, mean |Δ| 0.0004/255, max
// 1/255. isnet-general-use computes in float16 already but for its Resize
// nodes, and a CPU runs both in float32 kernels between the casts ONNX
// Runtime inserts, so this checks the conversion, not float16 arithmetic:
// that needs a GPU.
func TestRealFloat16ISNet(t *testing.T) {
	if testing.Short() {
		t.Skip("installs ISNet twice and runs it twice (~10 s)")
	}
	st, err := weights.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(testenv.Asset(t, "astronaut.png"))
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
	installFromCache(t, st, "isnet-general-use", "isnet-general-use-fp16")
	uri := pngURI(t, photo)

	alpha := func(model string) []uint8 {
		e := &env{files: pipelinetest.NewFiles()}
		e.p, e.eps = pipelinetest.Build(t, rembg.New, pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(),
			Config: pipelines.Config{SessionsPerModel: 1, MaxInputBytes: 1 << 24, MaxPixels: 1 << 24,
				Models: map[string]string{"rembg": model}}})
		if err := e.p.Warm(context.Background(), idRembg); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		t0 := time.Now()
		out, err := e.runCtx(ctx, t, idRembg, jsonInput(t, map[string]any{"image_url": uri, "sync_mode": true}))
		if err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		t.Logf("%s: %v on the CPU (loaded)", model, time.Since(t0).Round(time.Millisecond))
		url, _ := out["image"].(map[string]any)["url"].(string)
		b, _ := e.fetch(t, url)
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		n := image.NewNRGBA(img.Bounds())
		draw.Draw(n, n.Bounds(), img, img.Bounds().Min, draw.Src)
		a := make([]uint8, 0, len(n.Pix)/4)
		for j := 3; j < len(n.Pix); j += 4 {
			a = append(a, n.Pix[j])
		}
		return a
	}
	a32, a16 := alpha("isnet-general-use"), alpha("isnet-general-use-fp16")
	if len(a32) != len(a16) {
		t.Fatalf("%d and %d alpha values", len(a32), len(a16))
	}
	var inter, union, sum, worst, fg int
	for i := range a32 {
		p, q := a32[i] >= 128, a16[i] >= 128
		if p && q {
			inter++
		}
		if p || q {
			union++
		}
		if p {
			fg++
		}
		d := absDiff(a32[i], a16[i])
		sum += d
		worst = max(worst, d)
	}
	iou := float64(inter) / float64(union)
	mean := float64(sum) / float64(len(a32))
	t.Logf("float16 vs isnet-general-use: IoU %.5f (foreground %.1f%%), mean |Δ| %.4f/255, max %d/255",
		iou, 100*float64(fg)/float64(len(a32)), mean, worst)
	if fg < len(a32)/20 {
		t.Fatalf("foreground %d of %d pixels: the mask is empty, nothing is compared", fg, len(a32))
	}
	if iou < 0.99 || mean > 1 {
		t.Errorf("float16 mask: IoU %.4f (want ≥ 0.99), mean |Δ| %.3f/255 (want ≤ 1)", iou, mean)
	}
}
