package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/enginetest"
)

// manualTimers records keep-alive timers for a test to fire.
type manualTimers struct {
	mu sync.Mutex
	fs []*manualTimer
}

type manualTimer struct {
	d       time.Duration
	f       func()
	stopped bool
}

func (t *manualTimer) Stop() bool { t.stopped = true; return true }

func (m *manualTimers) after(d time.Duration, f func()) interface{ Stop() bool } {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := &manualTimer{d: d, f: f}
	m.fs = append(m.fs, t)
	return t
}

// fire runs every pending, unstopped timer.
func (m *manualTimers) fire() {
	m.mu.Lock()
	fs := m.fs
	m.fs = nil
	m.mu.Unlock()
	for _, t := range fs {
		if !t.stopped {
			t.f()
		}
	}
}

type cluster struct {
	rt     *enginetest.Runtime
	res    *engine.Residency
	pools  map[string]*engine.Pool
	timers *manualTimers
}

// newCluster makes one fake model per name (sizes in MiB) under budget MiB.
func newCluster(t *testing.T, budget int64, keepAlive time.Duration, sizes map[string]int64, opts map[string]engine.UnitOptions, fails map[string]int) *cluster {
	t.Helper()
	c := &cluster{rt: enginetest.New(), pools: map[string]*engine.Pool{}, timers: &manualTimers{}}
	c.res = engine.NewResidency(budget<<20, keepAlive, "cpu", nil)
	engine.SetAfter(c.res, c.timers.after)
	for name, mib := range sizes {
		c.rt.Add(name, enginetest.Model{
			Inputs:  []engine.TensorInfo{{Name: "x", DType: engine.Float32, Shape: []int64{1}}},
			Outputs: []engine.TensorInfo{{Name: "y", DType: engine.Float32, Shape: []int64{1}}},
			Fn:      echo, OpenFails: fails[name],
		})
		u := c.res.Unit(name, mib<<20, opts[name])
		c.pools[name] = engine.NewPoolWith(c.rt, engine.SessionSpec{Path: name}, engine.PoolOptions{Size: 2, Unit: u, Name: name})
	}
	return c
}

func (c *cluster) run(t *testing.T, name string) error {
	t.Helper()
	in, _ := engine.NewFloat32([]float32{1}, 1)
	_, err := c.pools[name].Run(context.Background(), []*engine.Tensor{in})
	return err
}

func TestResidency(t *testing.T) {
	type step struct {
		run      string // model to run
		fire     bool   // fire keep-alive timers instead
		wantErr  string
		resident string // resident models after the step
	}
	sizes := map[string]int64{"a": 400, "b": 400, "c": 400, "big": 2000}
	cases := []struct {
		name      string
		budget    int64
		keepAlive time.Duration
		fails     map[string]int
		steps     []step
	}{
		{"loads on demand within budget", 1000, -1, nil, []step{
			{run: "a", resident: "[a]"}, {run: "b", resident: "[a b]"}}},
		{"evicts the least recently used", 1000, -1, nil, []step{
			{run: "a", resident: "[a]"}, {run: "b", resident: "[a b]"}, {run: "a", resident: "[a b]"},
			{run: "c", resident: "[a c]"}, {run: "b", resident: "[b c]"}}},
		{"cannot fit at all", 1000, -1, nil, []step{
			{run: "a", resident: "[a]"},
			{run: "big", wantErr: "model big needs 1.95 GiB of memory but the cpu budget is 1000.0 MiB", resident: "[a]"}}},
		{"keep-alive 0 unloads after use", 1000, 0, nil, []step{
			{run: "a", resident: "[]"}, {run: "b", resident: "[]"}}},
		{"keep-alive expiry", 1000, time.Minute, nil, []step{
			{run: "a", resident: "[a]"}, {run: "b", resident: "[a b]"}, {fire: true, resident: "[]"},
			{run: "c", resident: "[c]"}}},
		{"retry once after a load failure, evicting the others", 2000, -1, map[string]int{"c": 1}, []step{
			{run: "a", resident: "[a]"}, {run: "b", resident: "[a b]"}, {run: "c", resident: "[c]"}}},
		{"a second load failure is returned", 2000, -1, map[string]int{"c": 2}, []step{
			{run: "a", resident: "[a]"}, {run: "c", wantErr: "simulated load failure", resident: "[]"}, {run: "c", resident: "[c]"}}},
		{"no budget, no eviction", 0, -1, nil, []step{
			{run: "a"}, {run: "b"}, {run: "c"}, {run: "big", resident: "[a b big c]"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, tc.budget, tc.keepAlive, sizes, nil, tc.fails)
			for i, s := range tc.steps {
				var err error
				if s.fire {
					c.timers.fire()
				} else {
					err = c.run(t, s.run)
				}
				if s.wantErr == "" && err != nil {
					t.Fatalf("step %d (%s): %v", i, s.run, err)
				}
				if s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)) {
					t.Fatalf("step %d (%s): err %v, want %q", i, s.run, err, s.wantErr)
				}
				if s.resident != "" {
					if got := fmt.Sprint(c.res.Resident()); got != s.resident {
						t.Fatalf("step %d (%s): resident %s, want %s", i, s.run, got, s.resident)
					}
				}
				if tc.budget > 0 && c.res.Used() > tc.budget<<20 {
					t.Fatalf("step %d: used %d over budget", i, c.res.Used())
				}
			}
			opened, closed, _, _ := c.rt.Stats()
			if open := opened - closed; open != len(c.res.Resident()) {
				t.Errorf("%d sessions open for %d resident models", open, len(c.res.Resident()))
			}
		})
	}
}

func TestResidencyNoMemoryError(t *testing.T) {
	c := newCluster(t, 100, -1, map[string]int64{"big": 200}, nil, nil)
	err := c.run(t, "big")
	var nm *engine.NoMemoryError
	if !errors.As(err, &nm) || !errors.Is(err, engine.ErrNoMemory) || nm.Model != "big" || nm.Need != 200<<20 || nm.Budget != 100<<20 {
		t.Fatalf("err = %v", err)
	}
}

// A model in use is never evicted: a second model that needs its memory
// waits until the first is released, then evicts it.
func TestResidencyInUseNeverEvicted(t *testing.T) {
	c := newCluster(t, 500, -1, map[string]int64{"a": 400, "b": 400}, nil, nil)
	g := newGate()
	c.rt.Add("a", enginetest.Model{
		Inputs:  []engine.TensorInfo{{Name: "x", DType: engine.Float32, Shape: []int64{1}}},
		Outputs: []engine.TensorInfo{{Name: "y", DType: engine.Float32, Shape: []int64{1}}},
		Fn:      g.fn,
	})
	aDone := make(chan error, 1)
	go func() { aDone <- c.run(t, "a") }()
	<-g.started
	bDone := make(chan error, 1)
	go func() { bDone <- c.run(t, "b") }()
	select {
	case err := <-bDone:
		t.Fatalf("b ran while a was in use and memory was short: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if got := fmt.Sprint(c.res.Resident()); got != "[a]" {
		t.Fatalf("resident %s while a runs", got)
	}
	close(g.release)
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
	if err := <-bDone; err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(c.res.Resident()); got != "[b]" {
		t.Fatalf("resident %s, want [b]", got)
	}
}

// A waiting admission gives up with its context.
func TestResidencyWaitCancelled(t *testing.T) {
	c := newCluster(t, 500, -1, map[string]int64{"a": 400, "b": 400}, nil, nil)
	g := newGate()
	c.rt.Add("a", enginetest.Model{
		Inputs: []engine.TensorInfo{{Name: "x", DType: engine.Float32, Shape: []int64{1}}},
		Fn:     g.fn,
	})
	go c.run(t, "a")
	<-g.started
	defer close(g.release)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	in, _ := engine.NewFloat32([]float32{1}, 1)
	if _, err := c.pools["b"].Run(ctx, []*engine.Tensor{in}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}

// MaxConcurrent bounds runs of one model at once.
func TestResidencyConcurrencyLimit(t *testing.T) {
	c := newCluster(t, 0, -1, map[string]int64{"a": 1}, map[string]engine.UnitOptions{"a": {MaxConcurrent: 1}}, nil)
	c.rt.Add("a", enginetest.Model{
		Inputs: []engine.TensorInfo{{Name: "x", DType: engine.Float32, Shape: []int64{1}}},
		Fn:     echo, Delay: 20 * time.Millisecond,
	})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); c.run(t, "a") }()
	}
	wg.Wait()
	if _, _, runs, peak := c.rt.Stats(); runs != 4 || peak != 1 {
		t.Errorf("runs %d, peak %d; want 4 runs one at a time (pool size 2, limit 1)", runs, peak)
	}
}

// Keep-alive per model overrides the default.
func TestResidencyKeepAlivePerModel(t *testing.T) {
	zero := time.Duration(0)
	c := newCluster(t, 0, -1, map[string]int64{"a": 1, "b": 1}, map[string]engine.UnitOptions{"a": {KeepAlive: &zero}}, nil)
	c.run(t, "a")
	c.run(t, "b")
	if got := fmt.Sprint(c.res.Resident()); got != "[b]" {
		t.Errorf("resident %s, want [b]", got)
	}
}

// Admissions wait in turn: while b waits for a's memory, new runs of the
// resident a queue behind b, so a steady stream on a cannot starve b.
// In a synctest bubble: synctest.Wait, not a sleep, says when b waits for
// memory, and the check that a2 does not start takes no real time.
func TestResidencyFairness(t *testing.T) { synctest.Test(t, testResidencyFairness) }

func testResidencyFairness(t *testing.T) {
	c := newCluster(t, 500, -1, map[string]int64{"a": 400, "b": 400}, nil, nil)
	g := newGate()
	c.rt.Add("a", enginetest.Model{
		Inputs: []engine.TensorInfo{{Name: "x", DType: engine.Float32, Shape: []int64{1}}},
		Fn:     g.fn,
	})
	var mu sync.Mutex
	var order []string
	run := func(name, label string) chan error {
		ch := make(chan error, 1)
		go func() {
			err := c.run(t, name)
			mu.Lock()
			order = append(order, label)
			mu.Unlock()
			ch <- err
		}()
		return ch
	}
	a1 := run("a", "a1")
	<-g.started
	b := run("b", "b")
	synctest.Wait() // b is waiting now: every goroutine of the bubble blocks
	a2 := run("a", "a2")
	select {
	case <-g.started:
		t.Fatal("a second run of a started while b waited for memory")
	case <-time.After(50 * time.Millisecond):
	}
	close(g.release)
	for _, ch := range []chan error{a1, b, a2} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	// a1 and b may finish in either order (b runs once a1 releases the
	// memory); a2 must come after b, which waited first
	if i, j := slices.Index(order, "b"), slices.Index(order, "a2"); i > j {
		t.Errorf("completion order %v: a2 overtook b", order)
	}
}

// A hold keeps a model resident between a request's runs: another model
// that needs the memory waits for the hold to end, not just for a run.
func TestResidencyHold(t *testing.T) {
	c := newCluster(t, 500, -1, map[string]int64{"a": 400, "b": 400},
		map[string]engine.UnitOptions{"a": {MaxConcurrent: 1}}, nil)
	ua := c.res.Unit("a", 400<<20, engine.UnitOptions{})
	hold, err := ua.Hold(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	in, _ := engine.NewFloat32([]float32{1}, 1)
	// Runs under the hold: admitted at once, twice, despite the limit of 1.
	for range 2 {
		if _, err := c.pools["a"].Do(context.Background(), engine.Run{Inputs: []*engine.Tensor{in}, Hold: hold}); err != nil {
			t.Fatal(err)
		}
	}
	bDone := make(chan error, 1)
	go func() { bDone <- c.run(t, "b") }()
	select {
	case err := <-bDone:
		t.Fatalf("b ran while a was held: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	hold.Release()
	hold.Release() // a second release does nothing
	if err := <-bDone; err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(c.res.Resident()); got != "[b]" {
		t.Errorf("resident %s, want [b]", got)
	}
}
