// Package enginetest is a pure-Go fake engine.Runtime for fast tests of
// pipelines, the API and the scheduler: scripted outputs, recorded calls, an
// optional per-run delay that honours cancellation.
package enginetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/falocal/falocal/engine"
)

// Func computes a model's outputs from its inputs.
type Func func(inputs []*engine.Tensor) ([]*engine.Tensor, error)

// Model is what the fake serves for one path.
type Model struct {
	Inputs  []engine.TensorInfo
	Outputs []engine.TensorInfo
	Fn      Func
	// FnCtx, when set, is used instead of Fn and sees the run's context
	// and output shapes.
	FnCtx func(ctx context.Context, inputs []*engine.Tensor, outputShapes map[string][]int64) ([]*engine.Tensor, error)
	Delay time.Duration // per Run, interrupted by ctx
	// OpenFails makes the next n opens of the model fail (a load failure).
	OpenFails int
}

// Runtime is the fake. The zero value is not usable; call New.
type Runtime struct {
	mu     sync.Mutex
	models map[string]Model
	opened int
	closed int
	runs   int
	active int
	peak   int
}

// New returns an empty fake runtime.
func New() *Runtime { return &Runtime{models: map[string]Model{}} }

// Add serves m for sessions opened on path.
func (r *Runtime) Add(path string, m Model) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.models[path] = m
}

// Stats reports sessions opened and closed, runs, and the peak number of
// concurrent runs.
func (r *Runtime) Stats() (opened, closed, runs, peak int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opened, r.closed, r.runs, r.peak
}

// Info describes the fake.
func (r *Runtime) Info() engine.Info {
	return engine.Info{Library: "fake", Version: "0", Providers: []engine.Provider{engine.CPU}}
}

// Open returns a session for a path previously Added.
func (r *Runtime) Open(ctx context.Context, spec engine.SessionSpec) (engine.Session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.models[spec.Path]
	if !ok {
		return nil, fmt.Errorf("enginetest: no model at %s", spec.Path)
	}
	if m.OpenFails > 0 {
		m.OpenFails--
		r.models[spec.Path] = m
		return nil, errors.New("enginetest: simulated load failure")
	}
	r.opened++
	return &session{rt: r, m: m}, nil
}

type session struct {
	rt     *Runtime
	m      Model
	mu     sync.Mutex
	closed bool
}

func (s *session) Inputs() []engine.TensorInfo  { return s.m.Inputs }
func (s *session) Outputs() []engine.TensorInfo { return s.m.Outputs }
func (s *session) Providers() []engine.Provider { return []engine.Provider{engine.CPU} }

func (s *session) Run(ctx context.Context, in []*engine.Tensor, outputShapes map[string][]int64) ([]*engine.Tensor, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, engine.ErrClosed
	}
	r := s.rt
	r.mu.Lock()
	r.runs++
	r.active++
	if r.active > r.peak {
		r.peak = r.active
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.active--
		r.mu.Unlock()
	}()
	if s.m.Delay > 0 {
		t := time.NewTimer(s.m.Delay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("enginetest: run interrupted: %w", ctx.Err())
		case <-t.C:
		}
	}
	if len(in) != len(s.m.Inputs) {
		return nil, fmt.Errorf("enginetest: got %d inputs, want %d", len(in), len(s.m.Inputs))
	}
	if s.m.FnCtx != nil {
		return s.m.FnCtx(ctx, in, outputShapes)
	}
	if s.m.Fn == nil {
		return nil, errors.New("enginetest: model has no Fn")
	}
	return s.m.Fn(in)
}

func (s *session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.rt.mu.Lock()
		s.rt.closed++
		s.rt.mu.Unlock()
	}
	return nil
}

var _ engine.Runtime = (*Runtime)(nil)
