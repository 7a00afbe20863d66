package engine_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/enginetest"
	"github.com/falocal/falocal/internal/metrics"
)

const modelPath = "/models/fake.onnx"

// gate lets a test hold model runs inside Fn and release them.
type gate struct {
	started chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{started: make(chan struct{}, 100), release: make(chan struct{})} }

func (g *gate) fn(in []*engine.Tensor) ([]*engine.Tensor, error) {
	g.started <- struct{}{}
	<-g.release
	return echo(in)
}

// waitStarted waits for n runs to be inside Fn.
func (g *gate) waitStarted(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-g.started:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of %d runs started", i, n)
		}
	}
}

func echo(in []*engine.Tensor) ([]*engine.Tensor, error) {
	return []*engine.Tensor{{DType: engine.Float32, Shape: in[0].Shape, F32: append([]float32(nil), in[0].F32...)}}, nil
}

func input(t *testing.T, v float32) []*engine.Tensor {
	t.Helper()
	x, err := engine.NewFloat32([]float32{v, v + 1}, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	return []*engine.Tensor{x}
}

func fakeModel(fn enginetest.Func) enginetest.Model {
	return enginetest.Model{
		Inputs:  []engine.TensorInfo{{Name: "x", DType: engine.Float32, Shape: []int64{1, 2}}},
		Outputs: []engine.TensorInfo{{Name: "y", DType: engine.Float32, Shape: []int64{1, 2}}},
		Fn:      fn,
	}
}

func newPool(t *testing.T, m enginetest.Model, size int) (*engine.Pool, *enginetest.Runtime) {
	t.Helper()
	rt := enginetest.New()
	rt.Add(modelPath, m)
	p := engine.NewPool(rt, engine.SessionSpec{Path: modelPath, Inputs: []string{"x"}, Outputs: []string{"y"}}, size)
	t.Cleanup(func() { p.Close() })
	return p, rt
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestPoolLazyAndReuse(t *testing.T) {
	p, rt := newPool(t, fakeModel(echo), 3)
	if opened, _, _, _ := rt.Stats(); opened != 0 || p.Open() != 0 {
		t.Fatalf("NewPool opened %d sessions", opened)
	}
	for i := 0; i < 5; i++ {
		out, err := p.Run(ctxT(t), input(t, float32(i)))
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != 1 || out[0].F32[0] != float32(i) || out[0].F32[1] != float32(i+1) {
			t.Fatalf("run %d: got %+v", i, out[0])
		}
	}
	// Sequential runs reuse the one idle session.
	if opened, closed, runs, peak := rt.Stats(); opened != 1 || closed != 0 || runs != 5 || peak != 1 || p.Open() != 1 {
		t.Fatalf("opened %d closed %d runs %d peak %d Open() %d; want 1 0 5 1 1", opened, closed, runs, peak, p.Open())
	}
}

func TestPoolWarmAndSession(t *testing.T) {
	p, rt := newPool(t, fakeModel(echo), 2)
	if err := p.Warm(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	s, err := p.Session(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Inputs()) != 1 || s.Inputs()[0].Name != "x" || len(s.Providers()) == 0 {
		t.Fatalf("session inputs %v providers %v", s.Inputs(), s.Providers())
	}
	if _, err := p.Run(ctxT(t), input(t, 1)); err != nil {
		t.Fatal(err)
	}
	if opened, _, runs, _ := rt.Stats(); opened != 1 || runs != 1 {
		t.Fatalf("opened %d runs %d, want 1 and 1", opened, runs)
	}
}

func TestPoolSizeLimit(t *testing.T) {
	for _, size := range []int{1, 2, 3} {
		g := newGate()
		p, rt := newPool(t, fakeModel(g.fn), size)
		const callers = 7
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		for i := 0; i < callers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := p.Run(context.Background(), input(t, 0))
				errs <- err
			}()
		}
		g.waitStarted(t, size)
		// No further run may start while size runs hold every session.
		select {
		case <-g.started:
			t.Fatalf("size %d: a run started beyond the pool size", size)
		case <-time.After(30 * time.Millisecond):
		}
		if opened, _, _, peak := rt.Stats(); opened != size || peak != size {
			t.Fatalf("size %d: opened %d peak %d while saturated", size, opened, peak)
		}
		close(g.release)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if opened, _, runs, peak := rt.Stats(); opened != size || runs != callers || peak != size {
			t.Fatalf("size %d: opened %d runs %d peak %d, want %d %d %d", size, opened, runs, peak, size, callers, size)
		}
	}
}

func TestPoolSizeAtLeastOne(t *testing.T) {
	p, rt := newPool(t, fakeModel(echo), 0)
	if _, err := p.Run(ctxT(t), input(t, 0)); err != nil {
		t.Fatal(err)
	}
	if opened, _, _, _ := rt.Stats(); opened != 1 {
		t.Fatalf("opened %d", opened)
	}
}

func TestPoolCancelWhileWaiting(t *testing.T) {
	g := newGate()
	p, rt := newPool(t, fakeModel(g.fn), 1)
	busy := make(chan error, 1)
	go func() {
		_, err := p.Run(context.Background(), input(t, 0))
		busy <- err
	}()
	g.waitStarted(t, 1)

	ctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan error, 1)
	go func() {
		_, err := p.Run(ctx, input(t, 1))
		waiting <- err
	}()
	select {
	case err := <-waiting:
		t.Fatalf("Run did not wait for the busy session: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-waiting:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run kept waiting after cancel")
	}

	// A deadline while waiting is reported as such.
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer dcancel()
	if _, err := p.Run(dctx, input(t, 2)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}

	close(g.release)
	if err := <-busy; err != nil {
		t.Fatal(err)
	}
	// The slot is still usable and no extra session was opened.
	if _, err := p.Run(ctxT(t), input(t, 3)); err != nil {
		t.Fatal(err)
	}
	if opened, _, runs, _ := rt.Stats(); opened != 1 || runs != 2 {
		t.Fatalf("opened %d runs %d, want 1 and 2", opened, runs)
	}
}

// A context that is already cancelled never opens or runs a session, even
// when a slot is free.
func TestPoolCancelledBeforeRun(t *testing.T) {
	p, rt := newPool(t, fakeModel(echo), 2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; i < 50; i++ {
		if _, err := p.Run(ctx, input(t, 0)); !errors.Is(err, context.Canceled) {
			t.Fatalf("try %d: err = %v, want context.Canceled", i, err)
		}
	}
	if err := p.Warm(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Warm: err = %v", err)
	}
	if opened, _, runs, _ := rt.Stats(); opened != 0 || runs != 0 {
		t.Fatalf("opened %d runs %d for a cancelled context", opened, runs)
	}
}

func TestPoolRunInterrupted(t *testing.T) {
	m := fakeModel(echo)
	m.Delay = time.Hour
	p, _ := newPool(t, m, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := p.Run(ctx, input(t, 0)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("interrupted run took %v", d)
	}
	// The session went back to the pool.
	m2ctx, c2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer c2()
	if _, err := p.Run(m2ctx, input(t, 0)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second run: err = %v, want it to reach the model", err)
	}
}

func TestPoolRunError(t *testing.T) {
	boom := errors.New("boom")
	p, rt := newPool(t, fakeModel(func([]*engine.Tensor) ([]*engine.Tensor, error) { return nil, boom }), 1)
	for i := 0; i < 3; i++ {
		if _, err := p.Run(ctxT(t), input(t, 0)); !errors.Is(err, boom) {
			t.Fatalf("err = %v", err)
		}
	}
	if opened, _, runs, _ := rt.Stats(); opened != 1 || runs != 3 {
		t.Fatalf("opened %d runs %d", opened, runs)
	}
}

func TestPoolCloseIdle(t *testing.T) {
	g := newGate()
	p, rt := newPool(t, fakeModel(g.fn), 2)
	// Open two sessions by running two at once.
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Run(context.Background(), input(t, 0)); err != nil {
				t.Error(err)
			}
		}()
	}
	g.waitStarted(t, 2)
	close(g.release)
	wg.Wait()
	if opened, closed, _, _ := rt.Stats(); opened != 2 || closed != 0 {
		t.Fatalf("opened %d closed %d", opened, closed)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, closed, _, _ := rt.Stats(); closed != 2 {
		t.Fatalf("Close closed %d idle sessions, want 2", closed)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := p.Run(ctxT(t), input(t, 0)); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("Run after Close: err = %v, want ErrClosed", err)
	}
	if err := p.Warm(ctxT(t)); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("Warm after Close: err = %v, want ErrClosed", err)
	}
	if _, err := p.Session(ctxT(t)); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("Session after Close: err = %v, want ErrClosed", err)
	}
	if opened, closed, _, _ := rt.Stats(); opened != 2 || closed != 2 {
		t.Fatalf("after Close: opened %d closed %d, want 2 2", opened, closed)
	}
}

// In a synctest bubble: synctest.Wait, not a sleep, says when the second
// caller is blocked on the pool's only slot.
func TestPoolCloseWhileBusy(t *testing.T) { synctest.Test(t, testPoolCloseWhileBusy) }

func testPoolCloseWhileBusy(t *testing.T) {
	g := newGate()
	p, rt := newPool(t, fakeModel(g.fn), 1)
	busy := make(chan error, 1)
	go func() {
		_, err := p.Run(context.Background(), input(t, 0))
		busy <- err
	}()
	g.waitStarted(t, 1)
	// A caller waiting for the only slot.
	waiting := make(chan error, 1)
	go func() {
		_, err := p.Run(context.Background(), input(t, 1))
		waiting <- err
	}()
	synctest.Wait() // every goroutine of the bubble blocks: the caller waits for the slot
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, closed, _, _ := rt.Stats(); closed != 0 {
		t.Fatalf("Close closed a busy session")
	}
	close(g.release)
	if err := <-busy; err != nil {
		t.Fatalf("the run in flight failed: %v", err)
	}
	select {
	case err := <-waiting:
		if !errors.Is(err, engine.ErrClosed) {
			t.Fatalf("waiting caller: err = %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("waiting caller never returned after Close")
	}
	if opened, closed, runs, _ := rt.Stats(); opened != 1 || closed != 1 || runs != 1 {
		t.Fatalf("opened %d closed %d runs %d, want 1 1 1", opened, closed, runs)
	}
}

// failingRuntime fails the first n opens.
type failingRuntime struct {
	*enginetest.Runtime
	mu    sync.Mutex
	fails int
	tries int
}

func (r *failingRuntime) Open(ctx context.Context, spec engine.SessionSpec) (engine.Session, error) {
	r.mu.Lock()
	r.tries++
	fail := r.fails > 0
	if fail {
		r.fails--
	}
	r.mu.Unlock()
	if fail {
		return nil, errors.New("out of memory")
	}
	return r.Runtime.Open(ctx, spec)
}

func TestPoolOpenErrorReleasesSlot(t *testing.T) {
	rt := &failingRuntime{Runtime: enginetest.New(), fails: 3}
	rt.Add(modelPath, fakeModel(echo))
	p := engine.NewPool(rt, engine.SessionSpec{Path: modelPath}, 1)
	defer p.Close()
	for i := 0; i < 3; i++ {
		_, err := p.Run(ctxT(t), input(t, 0))
		if err == nil || !strings.Contains(err.Error(), "out of memory") || !strings.Contains(err.Error(), modelPath) {
			t.Fatalf("try %d: err = %v, want the open error naming the path", i, err)
		}
	}
	// With size 1, a leaked slot would make this block until the deadline.
	if _, err := p.Run(ctxT(t), input(t, 0)); err != nil {
		t.Fatal(err)
	}
	if p.Open() != 1 || rt.tries != 4 {
		t.Fatalf("Open() %d tries %d, want 1 and 4", p.Open(), rt.tries)
	}

	// A model the runtime does not have fails every time, without hanging.
	q := engine.NewPool(enginetest.New(), engine.SessionSpec{Path: "/nope"}, 1)
	defer q.Close()
	for i := 0; i < 3; i++ {
		if _, err := q.Run(ctxT(t), input(t, 0)); err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("try %d: err = %v", i, err)
		}
	}
}

func TestPoolConcurrentStress(t *testing.T) {
	m := fakeModel(echo)
	m.Delay = time.Millisecond
	p, rt := newPool(t, m, 3)
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if i%5 == 0 {
				cancel() // some callers give up at once
			}
			_, err := p.Run(ctx, input(t, float32(i)))
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if opened, _, _, peak := rt.Stats(); opened > 3 || peak > 3 {
		t.Fatalf("opened %d peak %d, limit 3", opened, peak)
	}
	p.Close()
	if opened, closed, _, _ := rt.Stats(); opened != closed {
		t.Fatalf("opened %d but closed %d after Close", opened, closed)
	}
}

func TestParseProvidersAndTensors(t *testing.T) {
	ps, err := engine.ParseProviders(" TensorRT, cuda,,cpu ")
	if err != nil || len(ps) != 3 || ps[0] != engine.TensorRT || ps[1] != engine.CUDA || ps[2] != engine.CPU {
		t.Fatalf("ParseProviders = %v, %v", ps, err)
	}
	if _, err := engine.ParseProviders("cpu,rocm"); err == nil {
		t.Fatal("unknown provider accepted")
	}
	if _, err := engine.NewFloat32(make([]float32, 5), 2, 3); err == nil {
		t.Fatal("NewFloat32 accepted a wrong element count")
	}
	if n := engine.Elements([]int64{2, 3, 4}); n != 24 {
		t.Fatalf("Elements = %d", n)
	}
	for d, want := range map[engine.DType]int{engine.Float32: 4, engine.Float16: 2, engine.Uint8: 1, engine.Int32: 4, engine.Int64: 8} {
		if d.Size() != want {
			t.Errorf("%s.Size() = %d, want %d", d, d.Size(), want)
		}
	}
	if engine.DType(99).String() != "dtype(99)" {
		t.Error("unknown dtype string")
	}
}

// Every session run is timed under the pool's model and file role; failed
// runs are not.
func TestPoolRunSeconds(t *testing.T) {
	rt := enginetest.New()
	rt.Add("enc", enginetest.Model{
		Inputs:  []engine.TensorInfo{{Name: "x", DType: engine.Float32, Shape: []int64{1}}},
		Outputs: []engine.TensorInfo{{Name: "y", DType: engine.Float32, Shape: []int64{1}}},
		Fn:      echo, Delay: 3 * time.Millisecond,
	})
	m := metrics.New()
	p := engine.NewPoolWith(rt, engine.SessionSpec{Path: "enc"}, engine.PoolOptions{Name: "whisper-x", Role: "encoder", Metrics: m})
	defer p.Close()
	in, _ := engine.NewFloat32([]float32{1}, 1)
	for range 3 {
		if _, err := p.Run(context.Background(), []*engine.Tensor{in}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Run(context.Background(), nil); err == nil {
		t.Fatal("a run with no inputs succeeded")
	}
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "falocal_model_run_seconds" {
			continue
		}
		for _, mt := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			h := mt.GetHistogram()
			if labels["model"] != "whisper-x" || labels["role"] != "encoder" {
				t.Errorf("labels %v", labels)
			}
			if h.GetSampleCount() != 3 || h.GetSampleSum() < 0.009 {
				t.Errorf("%d runs, %.4fs in all; want 3 runs of at least 3 ms", h.GetSampleCount(), h.GetSampleSum())
			}
			return
		}
	}
	t.Fatal("no falocal_model_run_seconds series")
}
