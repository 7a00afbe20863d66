package main

import (
	"bufio"
	"bytes"
	"image"
	"image/png"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/image/draw"

	"github.com/falocal/falocal/internal/testenv"
)

// metricValues reads /metrics into series → value.
func metricValues(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			out[l[:i]] = v
		}
	}
	return out
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestE2EServingUnderMemoryBudget runs concurrent clients against two real
// models (ISNet for rembg, Real-ESRGAN x4v3 for esrgan) under a memory
// budget that holds either but not both: every request succeeds, models are
// evicted and reloaded, and /metrics and /readyz say so.
func TestE2EServingUnderMemoryBudget(t *testing.T) {
	const budget = 1800 << 20 // isnet-general-use 1.56 GiB + realesrgan-x4fast 256 MiB do not fit together
	s := startServer(t, "-memory-budget", strconv.Itoa(budget), "-keep-alive", "-1", "-workers", "4",
		"-preload", "-rembg-model", "isnet-general-use")
	deadline := time.Now().Add(2 * time.Minute)
	for httpStatus(t, s.base+"/readyz") != 200 {
		if time.Now().After(deadline) {
			t.Fatal("/readyz never became 200 after the preload")
		}
		time.Sleep(200 * time.Millisecond)
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
	small := func(w, h int) string {
		img := image.NewNRGBA(image.Rect(0, 0, w, h))
		draw.CatmullRom.Scale(img, img.Bounds(), photo, photo.Bounds(), draw.Src, nil)
		var buf bytes.Buffer
		png.Encode(&buf, img)
		return dataURI("image/png", buf.Bytes())
	}
	rembgIn := mustJSON(map[string]any{"image_url": small(128, 96), "sync_mode": true})
	esrganIn := mustJSON(map[string]any{"image_url": small(48, 32), "model": "RealESRGAN_x4_v3", "scale": 2, "sync_mode": true})

	type call struct {
		path string
		body []byte
	}
	var calls []call
	for range 3 {
		calls = append(calls, call{"/run/fal-ai/imageutils/rembg", rembgIn}, call{"/run/fal-ai/esrgan", esrganIn})
	}
	var wg sync.WaitGroup
	errs := make(chan string, len(calls))
	for i, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := s.post(t, c.path, c.body)
			if r.status != 200 {
				errs <- c.path + " #" + strconv.Itoa(i) + ": " + strconv.Itoa(r.status) + " " + string(r.body)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}

	m := metricValues(t, s.base)
	evictions := 0.0
	for k, v := range m {
		if strings.HasPrefix(k, "falocal_model_evictions_total{") && strings.Contains(k, `reason="memory"`) {
			evictions += v
		}
	}
	if evictions < 1 {
		t.Errorf("no evictions for memory in /metrics")
	}
	for _, want := range []string{
		`falocal_model_loads_total{model="isnet-general-use",result="ok"}`,
		`falocal_model_loads_total{model="realesrgan-x4fast",result="ok"}`,
		`falocal_model_load_seconds_count{model="realesrgan-x4fast"}`,
		`falocal_requests_total{endpoint="fal-ai/imageutils/rembg",outcome="ok"}`,
		`falocal_requests_total{endpoint="fal-ai/esrgan",outcome="ok"}`,
		`falocal_batch_size_count{model="realesrgan-x4fast"}`,
	} {
		if m[want] < 1 {
			t.Errorf("/metrics: %s = %v, want ≥ 1", want, m[want])
		}
	}
	if m[`falocal_requests_total{endpoint="fal-ai/imageutils/rembg",outcome="ok"}`] != 3 || m[`falocal_requests_total{endpoint="fal-ai/esrgan",outcome="ok"}`] != 3 {
		t.Errorf("request counts: %v", m)
	}
	if got := m[`falocal_memory_budget_bytes{device="cpu"}`]; got != budget {
		t.Errorf("memory budget gauge %v, want %d", got, budget)
	}
	if used := m[`falocal_memory_in_use_bytes{device="cpu"}`]; used <= 0 || used > budget {
		t.Errorf("memory in use %v, want within (0, %d]", used, budget)
	}
	if m["falocal_models_loaded"] != 1 {
		t.Errorf("models loaded %v, want 1 (the budget holds one)", m["falocal_models_loaded"])
	}
	if m["falocal_ready"] != 1 {
		t.Errorf("falocal_ready %v", m["falocal_ready"])
	}
	if !strings.Contains(s.Log(), "evicting model for memory") {
		t.Errorf("no eviction in the server log")
	}
}

// A model that cannot fit in the budget even alone gets a fal-shaped 503
// naming the model, its need and the budget; a model that fits still runs.
func TestE2EModelCannotFit(t *testing.T) {
	s := startServer(t, "-memory-budget", "512MiB", "-rembg-model", "isnet-general-use")
	f, err := os.Open(testenv.Asset(t, "chelsea.png"))
	if err != nil {
		t.Fatal(err)
	}
	photo, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	img := image.NewNRGBA(image.Rect(0, 0, 32, 24))
	draw.CatmullRom.Scale(img, img.Bounds(), photo, photo.Bounds(), draw.Src, nil)
	var buf bytes.Buffer
	png.Encode(&buf, img)
	uri := dataURI("image/png", buf.Bytes())

	r := s.post(t, "/run/fal-ai/imageutils/rembg", mustJSON(map[string]any{"image_url": uri}))
	want := `{"detail":"model isnet-general-use needs 1.56 GiB of memory but the cpu budget is 512.0 MiB (raise -memory-budget)","error_type":"runner_scheduling_failure"}`
	if r.status != http.StatusServiceUnavailable || strings.TrimSpace(string(r.body)) != want {
		t.Errorf("rembg over budget: %d %s", r.status, r.body)
	}
	r = s.post(t, "/run/fal-ai/esrgan", mustJSON(map[string]any{"image_url": uri, "model": "RealESRGAN_x4_v3", "scale": 1}))
	if r.status != 200 {
		t.Errorf("esrgan within budget: %d %s", r.status, r.body)
	}
}
