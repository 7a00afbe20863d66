package pipelines_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/enginetest"
	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/weights"
)

// storeWith installs fake models: name → roles, each a distinct small file.
func storeWith(t *testing.T, rt *enginetest.Runtime, models map[string][]string, mem int64, params map[string]string) (*weights.Store, map[string]weights.Manifest) {
	t.Helper()
	st, err := weights.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mans := map[string]weights.Manifest{}
	for name, roles := range models {
		man := weights.Manifest{Name: name, Pipeline: "test", MemoryBytes: mem, Params: params}
		for _, role := range roles {
			src := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(src, []byte(name+"/"+role), 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := st.AddBlob(src, role, role+".onnx", "fp32", "")
			if err != nil {
				t.Fatal(err)
			}
			man.Files = append(man.Files, f)
		}
		if err := st.Put(man); err != nil {
			t.Fatal(err)
		}
		for _, f := range man.Files {
			p, err := st.Path(man, f.Role)
			if err != nil {
				t.Fatal(err)
			}
			if len(man.Files) > 1 { // opened through the model's linked directory
				dir, err := st.Materialize(man)
				if err != nil {
					t.Fatal(err)
				}
				p = filepath.Join(dir, f.Name)
			}
			rt.Add(p, enginetest.Model{
				Inputs:  []engine.TensorInfo{{Name: "x", DType: engine.Float32, Shape: []int64{-1, 1}}},
				Outputs: []engine.TensorInfo{{Name: "y", DType: engine.Float32, Shape: []int64{-1, 1}}},
				Fn:      func(in []*engine.Tensor) ([]*engine.Tensor, error) { return in, nil },
			})
		}
		mans[name] = man
	}
	return st, mans
}

func runPool(t *testing.T, pl *pipelines.Net) {
	t.Helper()
	in, _ := engine.NewFloat32([]float32{1}, 1, 1)
	if _, err := pl.Run(context.Background(), []*engine.Tensor{in}); err != nil {
		t.Fatal(err)
	}
}

// Models under a residency budget: a two-file model counts once; a model
// that does not fit beside it evicts it.
func TestModelsResidency(t *testing.T) {
	rt := enginetest.New()
	st, mans := storeWith(t, rt, map[string][]string{"whisper": {"encoder", "decoder"}, "isnet": {"model"}}, 600<<20, nil)
	res := engine.NewResidency(1<<30, -1, "cpu", nil)
	ms := pipelines.NewModels(pipelines.Deps{Store: st, Runtime: rt, Residency: res, Config: pipelines.Config{SessionsPerModel: 1}})
	defer ms.Close()
	enc, err := ms.PoolFor(mans["whisper"], "encoder", []string{"x"}, []string{"y"})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := ms.PoolFor(mans["whisper"], "decoder", []string{"x"}, []string{"y"})
	if err != nil {
		t.Fatal(err)
	}
	hold, err := ms.Hold(context.Background(), mans["whisper"])
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*pipelines.Net{enc, dec, dec} { // encoder, then decoder steps, under one hold
		in, _ := engine.NewFloat32([]float32{1}, 1, 1)
		if _, err := n.Do(context.Background(), engine.Run{Inputs: []*engine.Tensor{in}, Hold: hold}); err != nil {
			t.Fatal(err)
		}
	}
	hold.Release()
	if got := res.Used(); got != 600<<20 {
		t.Errorf("whisper's two files counted %d bytes, want 600 MiB once", got)
	}
	is, err := ms.Pool(mans["isnet"], "x", "y")
	if err != nil {
		t.Fatal(err)
	}
	runPool(t, is)
	if got := fmt.Sprint(res.Resident()); got != "[isnet]" {
		t.Errorf("resident %s, want [isnet]", got)
	}
	if opened, closed, _, _ := rt.Stats(); opened != 3 || closed != 2 {
		t.Errorf("opened %d closed %d sessions; want whisper's two closed on eviction", opened, closed)
	}
	runPool(t, enc) // reloads on demand
	if got := fmt.Sprint(res.Resident()); got != "[whisper]" {
		t.Errorf("resident %s, want [whisper]", got)
	}
}

func TestModelsBatchConfig(t *testing.T) {
	cases := []struct {
		name   string
		params map[string]string
		def    engine.BatchConfig
		over   map[string]engine.BatchConfig
		want   bool
		err    bool
	}{
		{"default on", nil, engine.BatchConfig{MaxBatch: 4, MaxDelay: time.Millisecond}, nil, true, false},
		{"default off", nil, engine.BatchConfig{MaxBatch: 1}, nil, false, false},
		{"manifest turns it on", map[string]string{"batch_max": "3", "batch_delay": "2ms"}, engine.BatchConfig{}, nil, true, false},
		{"flag overrides manifest", map[string]string{"batch_max": "3"}, engine.BatchConfig{}, map[string]engine.BatchConfig{"m": {MaxBatch: 1}}, false, false},
		{"bad manifest param", map[string]string{"batch_max": "x"}, engine.BatchConfig{}, nil, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rt := enginetest.New()
			st, mans := storeWith(t, rt, map[string][]string{"m": {"model"}}, 1, tc.params)
			ms := pipelines.NewModels(pipelines.Deps{Store: st, Runtime: rt,
				Config: pipelines.Config{SessionsPerModel: 1, Batch: tc.def, BatchModels: tc.over}})
			pl, err := ms.Pool(mans["m"], "x", "y")
			if tc.err {
				if err == nil {
					t.Fatal("bad param accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := pl.Warm(context.Background()); err != nil {
				t.Fatal(err)
			}
			if pl.Batching() != tc.want {
				t.Errorf("batching %v, want %v", pl.Batching(), tc.want)
			}
		})
	}
}

// A model that cannot fit gets a fal-shaped 503 naming it, its need and
// the budget.
func TestUnavailableNoMemory(t *testing.T) {
	err := pipelines.Unavailable("model x failed", fmt.Errorf("run: %w", &engine.NoMemoryError{Model: "x", Need: 3 << 30, Budget: 1 << 30, Device: "cpu"}))
	if err.Status != 503 || err.Msg != "model x needs 3.00 GiB of memory but the cpu budget is 1.00 GiB (raise -memory-budget)" {
		t.Errorf("%d %q", err.Status, err.Msg)
	}
}
