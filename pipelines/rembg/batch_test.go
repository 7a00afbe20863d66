//go:build cgo

package rembg_test

import (
	"bytes"
	"context"
	"image"
	"image/draw"
	"image/png"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/metrics"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/pipelines/rembg"
	"github.com/falocal/falocal/weights"
)

// TestRealBatched runs the installed ISNet on four photographs at once with
// batching on: the pool must put more than one request in a run, and each
// image's alpha must match that image run alone (mean |Δ| ≤ 1/255, max ≤
// 8/255: a batched convolution may sum in another order, nothing more).
func TestRealBatched(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ISNet 8 times (~2 s each on a CPU)")
	}
	st, err := weights.Open(testenv.DataDir(t))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	var uris []string
	for _, name := range []string{"astronaut.png", "camera.png", "chelsea.png", "coffee.png"} {
		f, err := os.Open(testenv.Asset(t, name))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		uris = append(uris, pngURI(t, img))
	}

	m := metrics.New()
	res := engine.NewResidency(0, -1, "cpu", nil)
	res.UseMetrics(m)
	// One session, so the four requests can only run concurrently by
	// sharing it; a generous delay so that a loaded machine still gathers
	// them (the batch leaves as soon as it holds four).
	e := &env{files: pipelinetest.NewFiles()}
	e.p, e.eps = pipelinetest.Build(t, rembg.New, pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(), Residency: res,
		Config: pipelines.Config{SessionsPerModel: 1, MaxInputBytes: 1 << 24, MaxPixels: 1 << 24,
			Models: map[string]string{"rembg": "isnet-general-use"},
			// As -batch isnet-general-use:4 sets it: the manifest turns
			// ISNet's batching off by default.
			BatchModels: map[string]engine.BatchConfig{"isnet-general-use": {MaxBatch: 4, MaxDelay: time.Second}}}})
	if err := e.p.Warm(context.Background(), idRembg); err != nil {
		t.Fatal(err)
	}
	alpha := func(i int) []uint8 {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		out, err := e.runCtx(ctx, t, idRembg, jsonInput(t, map[string]any{"image_url": uris[i], "sync_mode": true}))
		if err != nil {
			t.Errorf("image %d: %v", i, err)
			return nil
		}
		url, _ := out["image"].(map[string]any)["url"].(string)
		b, _ := e.fetch(t, url)
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Errorf("image %d: %v", i, err)
			return nil
		}
		n := image.NewNRGBA(img.Bounds())
		draw.Draw(n, n.Bounds(), img, img.Bounds().Min, draw.Src)
		a := make([]uint8, 0, len(n.Pix)/4)
		for j := 3; j < len(n.Pix); j += 4 {
			a = append(a, n.Pix[j])
		}
		return a
	}

	batched := make([][]uint8, len(uris))
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := range uris {
		wg.Add(1)
		go func() { defer wg.Done(); batched[i] = alpha(i) }()
	}
	wg.Wait()
	tBatch := time.Since(t0)
	runs, rows := batchHistogram(t, m, "isnet-general-use")
	if runs == 0 || rows/runs <= 1 {
		t.Errorf("%d requests in %d runs: the pool did not batch", rows, runs)
	}

	t0 = time.Now()
	for i := range uris {
		alone := alpha(i)
		if t.Failed() {
			return
		}
		if len(alone) != len(batched[i]) {
			t.Fatalf("image %d: %d alpha values batched, %d alone", i, len(batched[i]), len(alone))
		}
		var sum, worst int
		for j := range alone {
			d := absDiff(alone[j], batched[i][j])
			sum += d
			worst = max(worst, d)
		}
		mean := float64(sum) / float64(len(alone))
		t.Logf("image %d: mean |Δ| %.5f/255, max %d/255", i, mean, worst)
		if mean > 1 || worst > 8 {
			t.Errorf("image %d: batched alpha differs from alone by mean %.3f/255, max %d/255", i, mean, worst)
		}
	}
	tAlone := time.Since(t0)
	t.Logf("4 concurrent in %d run(s) of ISNet: %v; 4 one after another: %v (incl. %v batch wait each)",
		runs, tBatch.Round(time.Millisecond), tAlone.Round(time.Millisecond), time.Second)
}

// batchHistogram reads falocal_batch_size for model: how many runs the
// pool made and how many requests they served.
func batchHistogram(t *testing.T, m *metrics.Metrics, model string) (runs, requests int) {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "falocal_batch_size" {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "model" && l.GetValue() == model {
					h := s.GetHistogram()
					return int(h.GetSampleCount()), int(h.GetSampleSum())
				}
			}
		}
	}
	t.Fatalf("no falocal_batch_size for %s", model)
	return 0, 0
}
