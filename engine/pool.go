package engine

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/falocal/falocal/internal/metrics"
)

// Pool shares up to Size sessions of one model between concurrent callers.
// Sessions are opened on first demand, so an idle model costs nothing until
// used, and a second request does not wait for the first while a slot is free.
type Pool struct {
	rt   Runtime
	spec SessionSpec

	slots chan struct{} // one token per session that may exist
	mu    sync.Mutex
	idle  []Session
	all   []Session
	done  bool
	// largest is, per open session, the most input elements it has run:
	// on a GPU a run more than twice that is measured (Unit.onDevice),
	// since ONNX Runtime's arena grows for it.
	largest map[Session]int64

	name  string       // model, for metrics
	role  string       // file of the model, for metrics
	unit  *Unit        // residency of the model this file belongs to; nil = always resident
	batch *batcher     // nil = no dynamic batching
	dyn   atomic.Int32 // whether dim 0 of every input and output is dynamic: 0 unknown, 1 yes, 2 no

	m *metrics.Metrics // batch sizes; nil = record nothing
}

// PoolOptions are a pool's optional behaviours.
type PoolOptions struct {
	// Size is the most sessions open at once (the model's concurrency).
	Size int
	// Unit, when set, makes every run admit the model with its residency
	// scheduler first, and lets the scheduler unload the pool's sessions.
	Unit *Unit
	// Batch turns on dynamic batching, used only when the model's inputs and
	// outputs all have a dynamic dim 0.
	Batch BatchConfig
	// Name labels the model in metrics (default: the file path).
	Name string
	// Role labels the file of a model with several (encoder, unet) in
	// metrics (default "model").
	Role string
	// Metrics records the pool's batch sizes; nil = those of Unit's
	// residency (Residency.UseMetrics), or none without a Unit.
	Metrics *metrics.Metrics
}

// NewPool creates a pool of at most size sessions of spec.
func NewPool(rt Runtime, spec SessionSpec, size int) *Pool {
	return NewPoolWith(rt, spec, PoolOptions{Size: size})
}

// NewPoolWith creates a pool with options.
func NewPoolWith(rt Runtime, spec SessionSpec, o PoolOptions) *Pool {
	size := max(o.Size, 1)
	name := o.Name
	if name == "" {
		name = spec.Path
	}
	role := o.Role
	if role == "" {
		role = "model"
	}
	p := &Pool{rt: rt, spec: spec, slots: make(chan struct{}, size), unit: o.Unit, name: name, role: role}
	for i := 0; i < size; i++ {
		p.slots <- struct{}{}
	}
	p.m = o.Metrics
	if p.m == nil && o.Unit != nil {
		p.m = o.Unit.r.m.Load()
	}
	if o.Batch.Enabled() {
		p.batch = newBatcher(o.Batch, name, p.runDirect)
		p.batch.m = p.m
	}
	if o.Unit != nil {
		o.Unit.attach(p)
	}
	return p
}

// Run is one call of a model through a Pool: its inputs and what travels
// with them, explicitly rather than in context values.
type Run struct {
	Inputs []*Tensor
	// OutputShapes gives the shapes of outputs whose declared shapes are
	// dynamic, by name (see Session.Run).
	OutputShapes map[string][]int64
	// Hold, when set, is the calling request's hold on the model
	// (Unit.Hold): the run is admitted at once.
	Hold *Hold
	// Stats, when set, is filled in with how the run went.
	Stats *RunStats
}

// Run runs the model on inputs; see Do.
func (p *Pool) Run(ctx context.Context, inputs []*Tensor) ([]*Tensor, error) {
	return p.Do(ctx, Run{Inputs: inputs})
}

// Do runs the model on one of the pool's sessions, waiting for a free one.
// With batching on (and a model whose batch dimension is dynamic), it may
// run together with other callers' compatible inputs.
func (p *Pool) Do(ctx context.Context, r Run) ([]*Tensor, error) {
	if p.batch != nil && p.dyn.Load() == 1 {
		return p.batch.Run(ctx, r)
	}
	t0 := time.Now()
	out, err := p.runDirect(ctx, r)
	if err == nil {
		p.m.Batch(p.name, 1)
	}
	if r.Stats != nil && err == nil {
		*r.Stats = RunStats{Batch: 1, Compute: time.Since(t0)}
	}
	return out, err
}

// Batching reports whether runs are being batched: batching is configured
// and the model (once opened) has a dynamic batch dimension.
func (p *Pool) Batching() bool { return p.batch != nil && p.dyn.Load() == 1 }

func (p *Pool) runDirect(ctx context.Context, r Run) ([]*Tensor, error) {
	var out []*Tensor
	err := p.with(ctx, r.Hold, func(s Session) error {
		run := func() error {
			t0 := time.Now()
			var err error
			out, err = s.Run(ctx, r.Inputs, r.OutputShapes)
			if err == nil {
				p.m.Ran(p.name, p.role, time.Since(t0))
			}
			return err
		}
		if p.unit != nil {
			if n, grows := p.growing(s, r.Inputs); grows {
				measured, err := p.unit.onDevice(run)
				if err == nil && measured {
					p.ran(s, n)
				}
				return err
			}
		}
		return run()
	})
	return out, err
}

// growing reports whether in (n elements) is a session's first run, or
// more than twice the largest it has run: the runs whose memory is
// measured on a GPU, few enough that their taking turns costs little. ran
// records one once it was measured, so that a run that failed, or whose
// measurement did not count, is measured again next time.
func (p *Pool) growing(s Session, in []*Tensor) (n int64, grows bool) {
	for _, t := range in {
		if t != nil {
			n += Elements(t.Shape)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	seen, ok := p.largest[s]
	return n, !ok || n > 2*seen
}

func (p *Pool) ran(s Session, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.largest == nil {
		p.largest = map[Session]int64{}
	}
	p.largest[s] = max(p.largest[s], n)
}

// with admits the model, takes a session and calls fn with it. A session
// that fails to open, or a run that fails for memory, is retried once after
// evicting the other idle models.
func (p *Pool) with(ctx context.Context, h *Hold, fn func(Session) error) error {
	if p.unit != nil {
		release, err := p.unit.admit(ctx, h)
		if err != nil {
			return err
		}
		defer release()
	}
	err := p.withSession(ctx, fn)
	if err != nil && ctx.Err() == nil && p.unit != nil && retriable(err) && p.unit.reclaim() > 0 {
		p.unit.r.Log.Warn("model failed to load or run; retrying once after evicting idle models",
			"model", p.unit.name, "err", err)
		err = p.withSession(ctx, fn)
	}
	return err
}

func (p *Pool) withSession(ctx context.Context, fn func(Session) error) error {
	s, err := p.acquire(ctx)
	if err != nil {
		return err
	}
	err = fn(s)
	p.release(s)
	return err
}

// openError marks a failure to open a session.
type openError struct{ err error }

func (e *openError) Error() string { return e.err.Error() }
func (e *openError) Unwrap() error { return e.err }

func retriable(err error) bool {
	if _, ok := err.(*openError); ok {
		return true
	}
	m := strings.ToLower(err.Error())
	return strings.Contains(m, "out of memory") || strings.Contains(m, "failed to allocate") ||
		strings.Contains(m, "bad_alloc")
}

// Warm opens one session now, so the first request does not pay for loading.
func (p *Pool) Warm(ctx context.Context) error {
	return p.with(ctx, nil, func(Session) error { return nil })
}

// Session returns any open session (opening one if needed) for introspection.
func (p *Pool) Session(ctx context.Context) (Session, error) {
	var s Session
	err := p.with(ctx, nil, func(x Session) error { s = x; return nil })
	return s, err
}

func (p *Pool) acquire(ctx context.Context) (Session, error) {
	// select picks at random among ready cases: check ctx first so that a
	// cancelled request never opens or runs a session.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.slots:
	}
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		p.slots <- struct{}{}
		return nil, ErrClosed
	}
	if n := len(p.idle); n > 0 {
		s := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return s, nil
	}
	first := len(p.all) == 0
	p.mu.Unlock()
	var rss0 int64
	if first {
		rss0 = ProcessRSS()
	}
	t0 := time.Now()
	var s Session
	open := func() error {
		var err error
		s, err = p.rt.Open(ctx, p.spec)
		return err
	}
	var err error
	if p.unit != nil {
		_, err = p.unit.onDevice(open)
	} else {
		err = open()
	}
	if first && p.unit != nil {
		var grew int64
		if rss0 > 0 {
			grew = ProcessRSS() - rss0
		}
		p.unit.loaded(time.Since(t0), grew, err)
	}
	if err != nil {
		p.slots <- struct{}{}
		return nil, &openError{fmt.Errorf("open %s: %w", p.spec.Path, err)}
	}
	if p.dyn.Load() == 0 {
		p.dyn.Store(dynamicBatch(s))
	}
	p.mu.Lock()
	p.all = append(p.all, s)
	p.mu.Unlock()
	return s, nil
}

// dynamicBatch is 1 when every input and output of s has a dynamic dim 0.
func dynamicBatch(s Session) int32 {
	ins, outs := s.Inputs(), s.Outputs()
	if len(ins) == 0 || len(outs) == 0 {
		return 2
	}
	for _, t := range append(append([]TensorInfo(nil), ins...), outs...) {
		if len(t.Shape) == 0 || t.Shape[0] >= 0 {
			return 2
		}
	}
	return 1
}

// unload closes the idle sessions (the residency scheduler evicting the
// model); the pool stays usable and opens sessions again on demand.
func (p *Pool) unload() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.idle {
		s.Close()
		delete(p.largest, s)
		for i, a := range p.all {
			if a == s {
				p.all = append(p.all[:i], p.all[i+1:]...)
				break
			}
		}
	}
	p.idle = nil
}

func (p *Pool) release(s Session) {
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		s.Close()
	} else {
		p.idle = append(p.idle, s)
		p.mu.Unlock()
	}
	p.slots <- struct{}{}
}

// Open reports how many sessions are open.
func (p *Pool) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.all)
}

// Close closes idle sessions now and busy ones when they are released.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return nil
	}
	p.done = true
	var first error
	for _, s := range p.idle {
		if err := s.Close(); err != nil && first == nil {
			first = err
		}
	}
	p.idle = nil
	return first
}
