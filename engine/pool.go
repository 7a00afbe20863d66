package engine

import (
	"context"
	"fmt"
	"sync"
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
}

// NewPool creates a pool of at most size sessions of spec.
func NewPool(rt Runtime, spec SessionSpec, size int) *Pool {
	if size < 1 {
		size = 1
	}
	p := &Pool{rt: rt, spec: spec, slots: make(chan struct{}, size)}
	for i := 0; i < size; i++ {
		p.slots <- struct{}{}
	}
	return p
}

// Run runs the model on one of the pool's sessions, waiting for a free one.
func (p *Pool) Run(ctx context.Context, inputs []*Tensor) ([]*Tensor, error) {
	s, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	out, err := s.Run(ctx, inputs)
	p.release(s)
	return out, err
}

// Warm opens one session now, so the first request does not pay for loading.
func (p *Pool) Warm(ctx context.Context) error {
	s, err := p.acquire(ctx)
	if err != nil {
		return err
	}
	p.release(s)
	return nil
}

// Session returns any open session (opening one if needed) for introspection.
func (p *Pool) Session(ctx context.Context) (Session, error) {
	s, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	p.release(s)
	return s, nil
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
	p.mu.Unlock()
	s, err := p.rt.Open(ctx, p.spec)
	if err != nil {
		p.slots <- struct{}{}
		return nil, fmt.Errorf("open %s: %w", p.spec.Path, err)
	}
	p.mu.Lock()
	p.all = append(p.all, s)
	p.mu.Unlock()
	return s, nil
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
