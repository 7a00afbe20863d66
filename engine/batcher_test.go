package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/enginetest"
)

// batchModel is a fake with a dynamic batch dimension: y = 2x, shape [N,2].
// It records the rows of every run and fails a run holding the value -1.
type batchModel struct {
	mu   sync.Mutex
	rows []int64
}

func (b *batchModel) fn(in []*engine.Tensor) ([]*engine.Tensor, error) {
	b.mu.Lock()
	b.rows = append(b.rows, in[0].Shape[0])
	b.mu.Unlock()
	out := make([]float32, len(in[0].F32))
	for i, v := range in[0].F32 {
		if v == -1 {
			return nil, errors.New("poisoned input")
		}
		out[i] = 2 * v
	}
	return []*engine.Tensor{{DType: engine.Float32, Shape: append([]int64(nil), in[0].Shape...), F32: out}}, nil
}

func (b *batchModel) runs() []int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int64(nil), b.rows...)
}

func newBatchPool(t *testing.T, cfg engine.BatchConfig, delay time.Duration, dynamic bool) (*engine.Pool, *batchModel) {
	t.Helper()
	bm := &batchModel{}
	rt := enginetest.New()
	dim0 := int64(-1)
	if !dynamic {
		dim0 = 1
	}
	rt.Add(modelPath, enginetest.Model{
		Inputs:  []engine.TensorInfo{{Name: "x", DType: engine.Float32, Shape: []int64{dim0, 2}}},
		Outputs: []engine.TensorInfo{{Name: "y", DType: engine.Float32, Shape: []int64{dim0, 2}}},
		Fn:      bm.fn, Delay: delay,
	})
	pl := engine.NewPoolWith(rt, engine.SessionSpec{Path: modelPath}, engine.PoolOptions{Size: 1, Batch: cfg, Name: "fake"})
	t.Cleanup(func() { pl.Close() })
	if err := pl.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	bm.rows = nil
	return pl, bm
}

func row(v float32) []*engine.Tensor {
	t, _ := engine.NewFloat32([]float32{v, v + 0.5}, 1, 2)
	return []*engine.Tensor{t}
}

type result struct {
	out []*engine.Tensor
	err error
	st  engine.RunStats
}

// runAll runs one request per value at once and returns the results in order.
func runAll(ctxs []context.Context, pl *engine.Pool, vals []float32) []result {
	return runAllShaped(ctxs, pl, vals, nil)
}

// runAllShaped is runAll with output shape hints for every run.
func runAllShaped(ctxs []context.Context, pl *engine.Pool, vals []float32, shapes map[string][]int64) []result {
	res := make([]result, len(vals))
	var wg sync.WaitGroup
	for i, v := range vals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i].out, res[i].err = pl.Do(ctxs[i], engine.Run{Inputs: row(v), OutputShapes: shapes, Stats: &res[i].st})
		}()
	}
	wg.Wait()
	return res
}

func bg(n int) []context.Context {
	c := make([]context.Context, n)
	for i := range c {
		c[i] = context.Background()
	}
	return c
}

func TestBatcher(t *testing.T) {
	cases := []struct {
		name     string
		cfg      engine.BatchConfig
		dynamic  bool
		vals     []float32
		wantRuns []int64 // rows per run, in any order
		wantErrs int
	}{
		{"coalesces a full batch", engine.BatchConfig{MaxBatch: 4, MaxDelay: time.Hour}, true, []float32{1, 2, 3, 4}, []int64{4}, 0},
		{"splits above the max", engine.BatchConfig{MaxBatch: 2, MaxDelay: time.Hour}, true, []float32{1, 2, 3, 4}, []int64{2, 2}, 0},
		{"delay sends a short batch", engine.BatchConfig{MaxBatch: 8, MaxDelay: 20 * time.Millisecond}, true, []float32{5}, []int64{1}, 0},
		{"fixed batch dim runs alone", engine.BatchConfig{MaxBatch: 4, MaxDelay: time.Hour}, false, []float32{1, 2, 3}, []int64{1, 1, 1}, 0},
		{"off", engine.BatchConfig{MaxBatch: 1}, true, []float32{1, 2}, []int64{1, 1}, 0},
		{"a failing batch fails each member", engine.BatchConfig{MaxBatch: 3, MaxDelay: time.Hour}, true, []float32{1, -1, 3}, []int64{3}, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pl, bm := newBatchPool(t, tc.cfg, 0, tc.dynamic)
			if got := pl.Batching(); got != (tc.dynamic && tc.cfg.Enabled()) {
				t.Errorf("Batching() = %v", got)
			}
			res := runAll(bg(len(tc.vals)), pl, tc.vals)
			errs := 0
			for i, r := range res {
				if r.err != nil {
					errs++
					continue
				}
				if len(r.out) != 1 || len(r.out[0].F32) != 2 || r.out[0].Shape[0] != 1 {
					t.Fatalf("request %d: output %+v", i, r.out)
				}
				if want := []float32{2 * tc.vals[i], 2*tc.vals[i] + 1}; r.out[0].F32[0] != want[0] || r.out[0].F32[1] != want[1] {
					t.Errorf("request %d got %v, want %v (outputs mixed up)", i, r.out[0].F32, want)
				}
				if r.st.Batch < 1 {
					t.Errorf("request %d: no run stats", i)
				}
			}
			if errs != tc.wantErrs {
				t.Errorf("%d requests failed, want %d", errs, tc.wantErrs)
			}
			got := bm.runs()
			if fmt.Sprint(sortInts(got)) != fmt.Sprint(sortInts(tc.wantRuns)) {
				t.Errorf("runs of %v rows, want %v", got, tc.wantRuns)
			}
		})
	}
}

func sortInts(a []int64) []int64 {
	b := append([]int64(nil), a...)
	for i := range b {
		for j := i + 1; j < len(b); j++ {
			if b[j] < b[i] {
				b[i], b[j] = b[j], b[i]
			}
		}
	}
	return b
}

// A member that gives up while the batch forms leaves it; the rest run
// together without it.
func TestBatcherCancelWhileWaiting(t *testing.T) {
	pl, bm := newBatchPool(t, engine.BatchConfig{MaxBatch: 3, MaxDelay: time.Hour}, 0, true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := pl.Run(ctx, row(9)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled member: %v", err)
	}
	res := runAll(bg(3), pl, []float32{1, 2, 3})
	for i, r := range res {
		if r.err != nil || r.out[0].F32[0] != 2*float32(i+1) {
			t.Errorf("member %d: %v %v", i, r.out, r.err)
		}
		if r.st.Batch != 3 {
			t.Errorf("member %d ran in a batch of %d, want 3", i, r.st.Batch)
		}
	}
	if got := bm.runs(); len(got) != 1 || got[0] != 3 {
		t.Errorf("runs %v, want one of 3 rows", got)
	}
}

// A member cancelled while its batch runs gets its error at once; the
// others still get their results.
func TestBatcherCancelWhileRunning(t *testing.T) {
	pl, _ := newBatchPool(t, engine.BatchConfig{MaxBatch: 2, MaxDelay: time.Hour}, 150*time.Millisecond, true)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	res := runAll([]context.Context{ctx, context.Background()}, pl, []float32{1, 2})
	if !errors.Is(res[0].err, context.DeadlineExceeded) {
		t.Errorf("cancelled member: %v", res[0].err)
	}
	if res[1].err != nil || res[1].out[0].F32[0] != 4 {
		t.Errorf("other member: %v %v", res[1].out, res[1].err)
	}
	if time.Since(t0) < 150*time.Millisecond {
		t.Errorf("the batch was interrupted though a member still waited")
	}
}

func TestConcatSplit(t *testing.T) {
	a := &engine.Tensor{DType: engine.Float16, Shape: []int64{1, 2}, Raw: []byte{1, 2, 3, 4}}
	b := &engine.Tensor{DType: engine.Float16, Shape: []int64{2, 2}, Raw: []byte{5, 6, 7, 8, 9, 10, 11, 12}}
	c, err := engine.Concat([]*engine.Tensor{a, b})
	if err != nil || fmt.Sprint(c.Shape) != "[3 2]" || len(c.Raw) != 12 {
		t.Fatalf("concat: %+v %v", c, err)
	}
	parts, err := engine.Split(c, []int64{1, 2})
	if err != nil || string(parts[0].Raw) != string(a.Raw) || string(parts[1].Raw) != string(b.Raw) {
		t.Fatalf("split: %+v %v", parts, err)
	}
	if _, err := engine.Concat([]*engine.Tensor{a, {DType: engine.Float16, Shape: []int64{1, 3}, Raw: make([]byte, 6)}}); err == nil {
		t.Error("concat of mismatched shapes succeeded")
	}
	if _, err := engine.Split(c, []int64{1, 1}); err == nil {
		t.Error("split with the wrong row count succeeded")
	}
}

// Output shape hints travel with a batch, dim 0 summed.
func TestBatcherOutputShapes(t *testing.T) {
	bm := &batchModel{}
	var mu sync.Mutex
	var hints []string
	rt := enginetest.New()
	rt.Add(modelPath, enginetest.Model{
		Inputs:  []engine.TensorInfo{{Name: "x", DType: engine.Float32, Shape: []int64{-1, 2}}},
		Outputs: []engine.TensorInfo{{Name: "y", DType: engine.Float32, Shape: []int64{-1, 2}}},
		FnCtx: func(_ context.Context, in []*engine.Tensor, shapes map[string][]int64) ([]*engine.Tensor, error) {
			mu.Lock()
			hints = append(hints, fmt.Sprint(shapes))
			mu.Unlock()
			return bm.fn(in)
		},
	})
	pl := engine.NewPoolWith(rt, engine.SessionSpec{Path: modelPath}, engine.PoolOptions{Size: 1,
		Batch: engine.BatchConfig{MaxBatch: 3, MaxDelay: time.Hour}})
	defer pl.Close()
	pl.Warm(context.Background())
	hints = nil
	res := runAllShaped(bg(3), pl, []float32{1, 2, 3}, map[string][]int64{"y": {1, 2}})
	for i, r := range res {
		if r.err != nil || r.st.Batch != 3 {
			t.Errorf("member %d: batch %d, %v", i, r.st.Batch, r.err)
		}
	}
	if fmt.Sprint(hints) != "[map[y:[3 2]]]" {
		t.Errorf("hints seen by the batched run: %v, want one with 3 rows", hints)
	}
	// A hint that disagrees with the rows runs alone.
	var st engine.RunStats
	bad := engine.Run{Inputs: row(1), OutputShapes: map[string][]int64{"y": {5, 2}}, Stats: &st}
	if _, err := pl.Do(context.Background(), bad); err != nil || st.Batch != 1 {
		t.Errorf("mismatched hint: batch %d, %v", st.Batch, err)
	}
}
