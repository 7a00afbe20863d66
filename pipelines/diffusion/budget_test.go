//go:build cgo

package diffusion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/ort"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/weights"
)

// budgetEndpoints is endpointsWith (sd15-tiny) under a diffusion budget.
func budgetEndpoints(t *testing.T, budget int64) map[string]pipelines.Endpoint {
	t.Helper()
	st := pipelinetest.Store(t)
	pipelinetest.InstallDir(t, st, filepath.Join("testdata", "models", "sd15-tiny"), weights.Manifest{Name: "sd15-tiny", Pipeline: "diffusion"})
	rt, err := ort.Init(ort.Config{LibraryPath: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	_, eps := pipelinetest.Build(t, New, pipelines.Deps{Store: st, Runtime: rt, Ops: engine.CPUOps(), Config: pipelines.Config{
		SessionsPerModel: 1, MaxInputBytes: 8 << 20, MaxPixels: 1 << 24, MaxDiffusionWork: budget}})
	return eps
}

func steps(logs []string) int {
	n := 0
	for _, l := range logs {
		if strings.HasPrefix(l, "step ") {
			n++
		}
	}
	return n
}

// A request costs steps × the pixels the model generates (the requested
// size rounded up to its grid: 64×150 runs at 64×192) × images: at the
// budget it runs, over it it is a 422 naming its cost and the budget,
// before any step.
func TestDiffusionBudget(t *testing.T) {
	in := map[string]any{"prompt": "a red cube", "image_size": map[string]any{"width": 64, "height": 150},
		"num_inference_steps": 3, "num_images": 2, "seed": 1, "sync_mode": true}
	const cost = 3 * 64 * 192 * 2
	for _, c := range []struct {
		budget int64
		ok     bool
	}{{cost, true}, {cost - 1, false}, {3 * 64 * 150 * 2, false}, {-1, true}} {
		r := call(t, budgetEndpoints(t, c.budget)["fal-ai/stable-diffusion-v15"], in)
		if c.ok {
			if r.err != nil || len(r.out.Images) != 2 {
				t.Errorf("budget %d: %v", c.budget, r.err)
			}
			continue
		}
		var ve *pipelines.ValidationError
		if !errors.As(r.err, &ve) || !strings.Contains(r.err.Error(), fmt.Sprint(cost)) || !strings.Contains(r.err.Error(), fmt.Sprint(c.budget)) {
			t.Errorf("budget %d: %v, want a 422 naming the cost %d and the budget", c.budget, r.err, cost)
		}
		if n := steps(r.logs); n != 0 {
			t.Errorf("budget %d: %d steps ran", c.budget, n)
		}
	}
}

// The default budget passes fal's default requests and refuses the
// largest that the schema allows.
func TestDiffusionDefaultBudget(t *testing.T) {
	ep := budgetEndpoints(t, 0)["fal-ai/stable-diffusion-v15"]
	r := call(t, ep, map[string]any{"prompt": "a red cube", "num_inference_steps": 50, "num_images": 8,
		"image_size": map[string]any{"width": 4096, "height": 4096}})
	var ve *pipelines.ValidationError
	if !errors.As(r.err, &ve) || !strings.Contains(r.err.Error(), fmt.Sprint(pipelines.DefaultMaxDiffusionWork)) {
		t.Fatalf("50 steps × 4096² × 8: %v", r.err)
	}
	for _, s := range specs {
		size, ok := presets[s.size]
		if !ok {
			size = [2]int{1024, 1024} // image-to-image: fal's own examples
		}
		if work := int64(s.steps) * int64(size[0]) * int64(size[1]); work > pipelines.DefaultMaxDiffusionWork {
			t.Errorf("%s: the default request costs %d pixel-steps", s.id, work)
		}
	}
}

// expiring is a context whose deadline passes when expire is called: a
// deadline at a chosen point of a run rather than at a time.
type expiring struct {
	context.Context
	once sync.Once
	done chan struct{}
}

func newExpiring() *expiring {
	return &expiring{Context: context.Background(), done: make(chan struct{})}
}

func (e *expiring) expire()               { e.once.Do(func() { close(e.done) }) }
func (e *expiring) Done() <-chan struct{} { return e.done }
func (e *expiring) Err() error {
	select {
	case <-e.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

// A request whose deadline passes mid-run stops at once with the
// context's error (which the API answers as fal's 504 request_timeout, not
// as a model failure), and the model serves the next request.
func TestDiffusionDeadline(t *testing.T) {
	ep := budgetEndpoints(t, 0)["fal-ai/stable-diffusion-v15"]
	in, _ := json.Marshal(map[string]any{"prompt": "a red cube", "image_size": map[string]any{"width": 64, "height": 64},
		"num_inference_steps": 50, "seed": 1, "sync_mode": true})
	ctx := newExpiring()
	var mu sync.Mutex
	var logs []string
	req := &pipelines.Request{ID: "req", Endpoint: ep.ID(), Input: in, Files: noFiles{},
		Log: func(_ pipelines.Level, m string) {
			mu.Lock()
			logs = append(logs, m)
			mu.Unlock()
			if strings.HasPrefix(m, "step 2/") {
				ctx.expire()
			}
		}}
	_, err := ep.Run(ctx, req)
	var he *pipelines.HTTPError
	var ve *pipelines.ValidationError
	if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &he) || errors.As(err, &ve) {
		t.Fatalf("Run = %v; want the deadline's error, unmapped", err)
	}
	if n := steps(logs); n != 2 {
		t.Errorf("%d steps ran after the deadline at step 2", n-2)
	}
	r := call(t, ep, map[string]any{"prompt": "a red cube", "image_size": map[string]any{"width": 64, "height": 64},
		"num_inference_steps": 2, "seed": 1, "sync_mode": true})
	if r.err != nil || len(r.out.Images) != 1 {
		t.Fatalf("after the deadline: %v", r.err)
	}
}
