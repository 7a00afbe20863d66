package engine

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/falocal/falocal/internal/metrics"
)

// BatchConfig configures dynamic batching of one model: concurrent runs whose
// inputs agree in everything but dim 0 are concatenated along dim 0, run
// once, and their outputs split back.
type BatchConfig struct {
	// MaxBatch is the most rows (dim-0 entries) one run may hold; ≤ 1 turns
	// batching off.
	MaxBatch int
	// MaxDelay is the longest the first run of a batch waits for company.
	MaxDelay time.Duration
}

// Enabled reports whether the config batches at all.
func (c BatchConfig) Enabled() bool { return c.MaxBatch > 1 }

// RunStats is filled in by a Pool for a Run with Stats set, so that a
// pipeline can log how its run went.
type RunStats struct {
	Batch   int           // requests in the run that served this one (1 = alone)
	Rows    int           // rows of the whole run
	Wait    time.Duration // time spent waiting for the batch to form
	Compute time.Duration // time the (batched) run took
}

// batcher coalesces compatible runs. Runs are compatible when they have the
// same number of inputs with the same dtypes and the same shapes past dim 0.
type batcher struct {
	cfg   BatchConfig
	name  string // model, for metrics
	run   func(ctx context.Context, r Run) ([]*Tensor, error)
	after func(time.Duration, func()) stopper

	m *metrics.Metrics // batch sizes; nil = record nothing

	mu      sync.Mutex
	forming map[string]*batch
}

type stopper interface{ Stop() bool }

func realAfter(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }

type batch struct {
	key     string
	members []*member
	rows    int64
	timer   stopper
	started bool
	alive   int                // members still waiting for the result
	cancel  context.CancelFunc // of the batch's run, once started
}

type member struct {
	r      Run
	rows   int64
	ctx    context.Context
	queued time.Time
	done   chan struct{}
	out    []*Tensor
	err    error
	stats  RunStats
}

func newBatcher(cfg BatchConfig, name string, run func(context.Context, Run) ([]*Tensor, error)) *batcher {
	return &batcher{cfg: cfg, name: name, run: run, after: realAfter, forming: map[string]*batch{}}
}

// batchKey is the compatibility key of inputs and their row count; ok is
// false when they cannot be batched (no inputs, scalars, differing dim 0).
func batchKey(in []*Tensor) (key string, rows int64, ok bool) {
	if len(in) == 0 {
		return "", 0, false
	}
	var b strings.Builder
	for i, t := range in {
		if t == nil || len(t.Shape) == 0 {
			return "", 0, false
		}
		if i == 0 {
			rows = t.Shape[0]
		} else if t.Shape[0] != rows {
			return "", 0, false
		}
		b.WriteString(t.DType.String())
		for _, d := range t.Shape[1:] {
			b.WriteByte(',')
			b.WriteString(strconv.FormatInt(d, 10))
		}
		b.WriteByte(';')
	}
	return b.String(), rows, rows > 0
}

// hintKey is the compatibility key of output shape hints, which must all
// have rows in dim 0.
func hintKey(hints map[string][]int64, rows int64) (string, bool) {
	names := make([]string, 0, len(hints))
	for n := range hints {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		sh := hints[n]
		if len(sh) == 0 || sh[0] != rows {
			return "", false
		}
		b.WriteString(n)
		for _, d := range sh[1:] {
			b.WriteByte(',')
			b.WriteString(strconv.FormatInt(d, 10))
		}
		b.WriteByte(';')
	}
	return b.String(), true
}

// Run runs in, alone or together with other waiting runs.
func (b *batcher) Run(ctx context.Context, r Run) ([]*Tensor, error) {
	key, rows, ok := batchKey(r.Inputs)
	if !ok || rows >= int64(b.cfg.MaxBatch) {
		return b.alone(ctx, r)
	}
	// Output shape hints (for outputs the runtime cannot allocate) must
	// agree past dim 0 too; the batch's run gets them with dim 0 summed.
	if hints := r.OutputShapes; hints != nil {
		hk, ok := hintKey(hints, rows)
		if !ok {
			return b.alone(ctx, r)
		}
		key += "|" + hk
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m := &member{r: r, rows: rows, ctx: ctx, queued: time.Now(), done: make(chan struct{})}
	b.mu.Lock()
	bt := b.forming[key]
	if bt != nil && bt.rows+rows > int64(b.cfg.MaxBatch) {
		b.startLocked(bt) // full for this one: send it, start another
		bt = nil
	}
	if bt == nil {
		bt = &batch{key: key}
		b.forming[key] = bt
		bt.timer = b.after(b.cfg.MaxDelay, func() {
			b.mu.Lock()
			b.startLocked(bt)
			b.mu.Unlock()
		})
	}
	bt.members = append(bt.members, m)
	bt.rows += rows
	bt.alive++
	if bt.rows >= int64(b.cfg.MaxBatch) {
		b.startLocked(bt)
	}
	b.mu.Unlock()

	select {
	case <-m.done:
		if r.Stats != nil {
			*r.Stats = m.stats
		}
		return m.out, m.err
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-m.done: // finished meanwhile: the result is there
		return m.out, m.err
	default:
	}
	if !bt.started {
		for i, o := range bt.members {
			if o == m {
				bt.members = append(bt.members[:i], bt.members[i+1:]...)
				break
			}
		}
		bt.rows -= rows
		bt.alive--
		if len(bt.members) == 0 {
			bt.timer.Stop()
			if b.forming[key] == bt {
				delete(b.forming, key)
			}
		}
		return nil, ctx.Err()
	}
	// Running: the others still want the result; stop the run only when
	// nobody does.
	bt.alive--
	if bt.alive == 0 && bt.cancel != nil {
		bt.cancel()
	}
	return nil, ctx.Err()
}

func (b *batcher) alone(ctx context.Context, r Run) ([]*Tensor, error) {
	t0 := time.Now()
	out, err := b.run(ctx, r)
	b.m.Batch(b.name, 1)
	if r.Stats != nil {
		rows := 0
		if len(r.Inputs) > 0 && len(r.Inputs[0].Shape) > 0 {
			rows = int(r.Inputs[0].Shape[0])
		}
		*r.Stats = RunStats{Batch: 1, Rows: rows, Compute: time.Since(t0)}
	}
	return out, err
}

// startLocked sends bt off to run; b.mu is held.
func (b *batcher) startLocked(bt *batch) {
	if bt.started {
		return
	}
	bt.started = true
	bt.timer.Stop()
	if b.forming[bt.key] == bt {
		delete(b.forming, bt.key)
	}
	if len(bt.members) == 0 {
		return
	}
	// The run belongs to no single request: it keeps the first member's
	// values (request id for logs) and hold on the model, but is cancelled
	// only when every member has given up.
	first := bt.members[0]
	ctx, cancel := context.WithCancel(context.WithoutCancel(first.ctx))
	run := Run{Hold: first.r.Hold}
	if hints := first.r.OutputShapes; hints != nil {
		run.OutputShapes = make(map[string][]int64, len(hints))
		for name, sh := range hints {
			run.OutputShapes[name] = append([]int64{bt.rows}, sh[1:]...)
		}
	}
	bt.cancel = cancel
	members := append([]*member(nil), bt.members...)
	go b.execute(ctx, cancel, run, members, bt.rows)
}

func (b *batcher) execute(ctx context.Context, cancel context.CancelFunc, run Run, members []*member, rows int64) {
	defer cancel()
	start := time.Now()
	out, err := b.runMembers(ctx, run, members, rows)
	took := time.Since(start)
	b.m.Batch(b.name, len(members))
	for i, m := range members {
		m.stats = RunStats{Batch: len(members), Rows: int(rows), Wait: start.Sub(m.queued), Compute: took}
		if err != nil {
			if len(members) > 1 {
				m.err = fmt.Errorf("batched run of %d requests: %w", len(members), err)
			} else {
				m.err = err
			}
		} else {
			m.out = out[i]
		}
		close(m.done)
	}
}

// runMembers concatenates, runs once and splits the outputs by member.
func (b *batcher) runMembers(ctx context.Context, run Run, members []*member, rows int64) ([][]*Tensor, error) {
	if len(members) == 1 {
		run.Inputs = members[0].r.Inputs
		out, err := b.run(ctx, run)
		return [][]*Tensor{out}, err
	}
	n := len(members[0].r.Inputs)
	in := make([]*Tensor, n)
	for i := range n {
		parts := make([]*Tensor, len(members))
		for j, m := range members {
			parts[j] = m.r.Inputs[i]
		}
		t, err := Concat(parts)
		if err != nil {
			return nil, err
		}
		in[i] = t
	}
	run.Inputs = in
	out, err := b.run(ctx, run)
	if err != nil {
		return nil, err
	}
	sizes := make([]int64, len(members))
	for j, m := range members {
		sizes[j] = m.rows
	}
	res := make([][]*Tensor, len(members))
	for _, t := range out {
		parts, err := Split(t, sizes)
		if err != nil {
			return nil, fmt.Errorf("split batched output: %w", err)
		}
		for j := range members {
			res[j] = append(res[j], parts[j])
		}
	}
	return res, nil
}

// Concat joins tensors of one dtype and equal shapes past dim 0 along dim 0.
func Concat(ts []*Tensor) (*Tensor, error) {
	if len(ts) == 0 {
		return nil, fmt.Errorf("concat: no tensors")
	}
	first := ts[0]
	shape := append([]int64(nil), first.Shape...)
	shape[0] = 0
	for _, t := range ts {
		if t.DType != first.DType || len(t.Shape) != len(first.Shape) {
			return nil, fmt.Errorf("concat: %s%v does not match %s%v", t.DType, t.Shape, first.DType, first.Shape)
		}
		for k := 1; k < len(t.Shape); k++ {
			if t.Shape[k] != first.Shape[k] {
				return nil, fmt.Errorf("concat: shape %v does not match %v past dim 0", t.Shape, first.Shape)
			}
		}
		shape[0] += t.Shape[0]
	}
	out := &Tensor{DType: first.DType, Shape: shape}
	if first.DType == Float32 {
		out.F32 = make([]float32, 0, Elements(shape))
		for _, t := range ts {
			out.F32 = append(out.F32, t.F32...)
		}
	} else {
		out.Raw = make([]byte, 0, Elements(shape)*int64(first.DType.Size()))
		for _, t := range ts {
			out.Raw = append(out.Raw, t.Raw...)
		}
	}
	return out, nil
}

// Split cuts t along dim 0 into pieces of the given row counts, which must
// add up to dim 0. The pieces share t's storage.
func Split(t *Tensor, rows []int64) ([]*Tensor, error) {
	var total int64
	for _, r := range rows {
		total += r
	}
	if len(t.Shape) == 0 || t.Shape[0] != total {
		return nil, fmt.Errorf("output shape %v does not have %d rows", t.Shape, total)
	}
	per := Elements(t.Shape[1:])
	out := make([]*Tensor, len(rows))
	var at int64
	for i, r := range rows {
		shape := append([]int64{r}, t.Shape[1:]...)
		p := &Tensor{DType: t.DType, Shape: shape}
		lo, hi := at*per, (at+r)*per
		if t.DType == Float32 {
			if int64(len(t.F32)) < total*per {
				return nil, fmt.Errorf("output has %d values, shape %v needs %d", len(t.F32), t.Shape, total*per)
			}
			p.F32 = t.F32[lo:hi:hi]
		} else {
			sz := int64(t.DType.Size())
			if int64(len(t.Raw)) < total*per*sz {
				return nil, fmt.Errorf("output has %d bytes, shape %v needs %d", len(t.Raw), t.Shape, total*per*sz)
			}
			p.Raw = t.Raw[lo*sz : hi*sz : hi*sz]
		}
		out[i] = p
		at += r
	}
	return out, nil
}
