package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/enginetest"
)

// card is a fake GPU for the scheduler: sessions opened through cardRuntime
// take their weights from it, and their first runs an arena that grows with
// the largest input, as ONNX Runtime's CUDA provider does. Nothing of it is
// cached (Cached 0), so Budget is the free memory.
type card struct {
	mu         sync.Mutex
	size, used int64
	peak       int64
	ooms       int
}

func (c *card) Budget() (int64, error)      { c.mu.Lock(); defer c.mu.Unlock(); return c.size - c.used, nil }
func (c *card) Cached() int64               { return 0 }
func (c *card) TrimTo(int64) (int64, error) { return 0, nil }

func (c *card) take(n int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.used+n > c.size {
		c.ooms++
		return errors.New("CUDA failure 2: out of memory")
	}
	c.used += n
	c.peak = max(c.peak, c.used)
	return nil
}

func (c *card) give(n int64) { c.mu.Lock(); c.used -= n; c.mu.Unlock() }

type cardRuntime struct {
	engine.Runtime
	card    *card
	weights int64 // per session
	arena   int64 // per input element, once the session has run that many
}

func (r *cardRuntime) Open(ctx context.Context, spec engine.SessionSpec) (engine.Session, error) {
	if err := r.card.take(r.weights); err != nil {
		return nil, err
	}
	s, err := r.Runtime.Open(ctx, spec)
	if err != nil {
		r.card.give(r.weights)
		return nil, err
	}
	return &cardSession{Session: s, rt: r, held: r.weights}, nil
}

type cardSession struct {
	engine.Session
	rt      *cardRuntime
	mu      sync.Mutex
	largest int64
	held    int64
}

func (s *cardSession) Run(ctx context.Context, in []*engine.Tensor, shapes map[string][]int64) ([]*engine.Tensor, error) {
	n := engine.Elements(in[0].Shape)
	s.mu.Lock()
	if n > s.largest {
		if err := s.rt.card.take((n - s.largest) * s.rt.arena); err != nil {
			s.mu.Unlock()
			return nil, err
		}
		s.held += (n - s.largest) * s.rt.arena
		s.largest = n
	}
	s.mu.Unlock()
	return s.Session.Run(ctx, in, shapes)
}

func (s *cardSession) Close() error {
	s.mu.Lock()
	s.rt.card.give(s.held)
	s.held = 0
	s.mu.Unlock()
	return s.Session.Close()
}

func TestResidencyCountsTheCard(t *testing.T) {
	const mib = 1 << 20
	type step struct {
		run      string
		elems    int64
		resident string
		used     int64 // MiB counted after the step
	}
	// Every model is estimated at 100 MiB but takes 150 MiB of weights per
	// session and 100 MiB of arena per input element it has run.
	cases := []struct {
		name  string
		steps []step
	}{
		{"a session's weights and arena are counted", []step{
			{run: "a", elems: 1, resident: "[a]", used: 250},
		}},
		{"a run more than twice the largest is measured", []step{
			{run: "a", elems: 1, resident: "[a]", used: 250},
			{run: "a", elems: 3, resident: "[a]", used: 450},
		}},
		// 250 + 250 counted: the third model's 100 MiB estimate no longer
		// fits the 550 MiB budget, so the least recently used goes first
		// and the card (600 MiB) never runs out.
		{"the measured need evicts before the card runs out", []step{
			{run: "a", elems: 1, resident: "[a]", used: 250},
			{run: "b", elems: 1, resident: "[a b]", used: 500},
			{run: "c", elems: 1, resident: "[b c]", used: 500},
		}},
		// After an unload the model is admitted at its measured need.
		{"a reloaded model is admitted at its measured need", []step{
			{run: "a", elems: 1, resident: "[a]", used: 250},
			{run: "b", elems: 1, resident: "[a b]", used: 500},
			{run: "c", elems: 1, resident: "[b c]", used: 500},
			{run: "a", elems: 1, resident: "[a c]", used: 500},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dev := &card{size: 600 * mib}
			fake := enginetest.New()
			rt := &cardRuntime{Runtime: fake, card: dev, weights: 150 * mib, arena: 100 * mib}
			res := engine.NewResidency(550*mib, -1, "cuda:0", nil)
			res.UseDevice(dev)
			pools := map[string]*engine.Pool{}
			for _, name := range []string{"a", "b", "c"} {
				fake.Add(name, enginetest.Model{
					Inputs:  []engine.TensorInfo{{Name: "x", DType: engine.Float32, Shape: []int64{-1}}},
					Outputs: []engine.TensorInfo{{Name: "y", DType: engine.Float32, Shape: []int64{-1}}},
					Fn:      echo,
				})
				u := res.Unit(name, 100*mib, engine.UnitOptions{})
				pools[name] = engine.NewPoolWith(rt, engine.SessionSpec{Path: name}, engine.PoolOptions{Size: 2, Unit: u, Name: name})
			}
			for i, st := range tc.steps {
				in, _ := engine.NewFloat32(make([]float32, st.elems), st.elems)
				if _, err := pools[st.run].Run(context.Background(), []*engine.Tensor{in}); err != nil {
					t.Fatalf("step %d (%s): %v", i, st.run, err)
				}
				if got := fmt.Sprint(res.Resident()); got != st.resident {
					t.Errorf("step %d: resident %s, want %s", i, got, st.resident)
				}
				if got := res.Used() / mib; got != st.used {
					t.Errorf("step %d: %d MiB counted, want %d", i, got, st.used)
				}
				dev.mu.Lock()
				onCard := dev.used / mib
				dev.mu.Unlock()
				if onCard != st.used {
					t.Errorf("step %d: the card holds %d MiB but the scheduler counts %d", i, onCard, st.used)
				}
			}
			if dev.ooms != 0 {
				t.Errorf("%d out-of-memory failures on the card", dev.ooms)
			}
		})
	}
}

// Without the card measured, the estimate alone lets the third model load
// past the card's memory: what the test above guards against.
func TestResidencyEstimateAloneOverrunsTheCard(t *testing.T) {
	const mib = 1 << 20
	dev := &card{size: 600 * mib}
	fake := enginetest.New()
	rt := &cardRuntime{Runtime: fake, card: dev, weights: 150 * mib, arena: 100 * mib}
	res := engine.NewResidency(550*mib, -1, "cuda:0", nil)
	var failed error
	for _, name := range []string{"a", "b", "c"} {
		fake.Add(name, enginetest.Model{
			Inputs:  []engine.TensorInfo{{Name: "x", DType: engine.Float32, Shape: []int64{-1}}},
			Outputs: []engine.TensorInfo{{Name: "y", DType: engine.Float32, Shape: []int64{-1}}},
			Fn:      echo,
		})
		u := res.Unit(name, 100*mib, engine.UnitOptions{})
		p := engine.NewPoolWith(rt, engine.SessionSpec{Path: name}, engine.PoolOptions{Size: 1, Unit: u, Name: name})
		in, _ := engine.NewFloat32([]float32{0}, 1)
		if _, err := p.Run(context.Background(), []*engine.Tensor{in}); err != nil && failed == nil {
			failed = err
		}
	}
	if dev.ooms == 0 {
		t.Fatalf("the card never ran out (peak %d MiB): the fake does not model the problem", dev.peak/mib)
	}
}

// A model measured above the whole budget (one large input grew its arena)
// is still admitted, alone, rather than refused for good.
func TestResidencyMeasuredAboveBudget(t *testing.T) {
	const mib = 1 << 20
	dev := &card{size: 4000 * mib}
	fake := enginetest.New()
	rt := &cardRuntime{Runtime: fake, card: dev, weights: 150 * mib, arena: 100 * mib}
	res := engine.NewResidency(550*mib, -1, "cuda:0", nil)
	res.UseDevice(dev)
	pools := map[string]*engine.Pool{}
	for _, name := range []string{"a", "b"} {
		fake.Add(name, enginetest.Model{
			Inputs:  []engine.TensorInfo{{Name: "x", DType: engine.Float32, Shape: []int64{-1}}},
			Outputs: []engine.TensorInfo{{Name: "y", DType: engine.Float32, Shape: []int64{-1}}},
			Fn:      echo,
		})
		pools[name] = engine.NewPoolWith(rt, engine.SessionSpec{Path: name}, engine.PoolOptions{Size: 1, Unit: res.Unit(name, 100*mib, engine.UnitOptions{}), Name: name})
	}
	run := func(name string, elems int64) {
		t.Helper()
		in, _ := engine.NewFloat32(make([]float32, elems), elems)
		if _, err := pools[name].Run(context.Background(), []*engine.Tensor{in}); err != nil {
			t.Fatalf("%s ×%d: %v", name, elems, err)
		}
	}
	run("a", 1)
	run("a", 5) // 150 + 500 MiB measured: above the 550 MiB budget
	if got := res.Used() / mib; got != 650 {
		t.Fatalf("%d MiB counted, want 650", got)
	}
	run("b", 1) // a is evicted for it
	run("a", 1) // measured above the budget, admitted alone again
	if got := fmt.Sprint(res.Resident()); got != "[a]" {
		t.Errorf("resident %s, want [a]", got)
	}
}

// Memory that goes back to the card during a measured section would make
// the model's count smaller: such a section is not counted.
func TestResidencyMeasureIgnoresFrees(t *testing.T) {
	const mib = 1 << 20
	dev := &card{size: 1000 * mib}
	res := engine.NewResidency(0, -1, "cuda:0", nil)
	res.UseDevice(dev)
	u := res.Unit("a", 100*mib, engine.UnitOptions{})
	dev.take(300 * mib) // another model's
	measured, err := engine.Measure(u, func() error {
		dev.take(200 * mib) // a's own
		dev.give(300 * mib) // the other model unloaded meanwhile
		engine.Freed(res)
		return nil
	})
	if err != nil || measured {
		t.Fatalf("measured %v, %v; want not counted", measured, err)
	}
	measured, err = engine.Measure(u, func() error { return dev.take(50 * mib) })
	if err != nil || !measured {
		t.Fatalf("measured %v, %v", measured, err)
	}
}
