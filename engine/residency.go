package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/falocal/falocal/internal/metrics"
)

// Residency decides which models stay loaded within a memory budget, as a
// scheduler in the manner of ollama's: every model declares what it needs;
// a run admits its model first (loading it, and evicting idle models least
// recently used first when the budget is short); a model in use is never
// evicted; an idle model unloads after its keep-alive.
type Residency struct {
	// Budget is the memory the resident models may be counted for, in bytes
	// (≤ 0 = no limit).
	Budget int64
	// KeepAlive is how long an idle model stays loaded: 0 unloads it right
	// after use, a negative value never.
	KeepAlive time.Duration
	// Device names the memory for metrics ("cpu", "cuda:0").
	Device string
	Log    *slog.Logger

	// after schedules keep-alive expiry (tests replace it).
	after func(time.Duration, func()) stopper

	mu      sync.Mutex
	units   map[string]*Unit
	used    int64
	changed chan struct{} // closed when memory or references are released
	// waiters are the tickets of admissions waiting for memory, oldest
	// first: later admissions (even of resident models) queue behind them,
	// so a steady stream of runs on one model cannot starve another.
	waiters []uint64
	ticket  uint64

	dev DeviceMemory // nil on the CPU
	// devMu lets one measured section (a session opening, or a run larger
	// than its session has done) at a time use the card, so that the drop
	// in its free memory is that model's (onDevice).
	devMu sync.Mutex
	// freed counts the times memory went back to the card (unloads, pool
	// trims): a measured section during which it moved is not counted.
	freed atomic.Uint64

	m atomic.Pointer[metrics.Metrics] // nil = record nothing (UseMetrics)
}

// DeviceMemory is a GPU's memory beside the models the scheduler counts:
// engine/vram.Pool implements it. The pool's cached blocks are memory a
// model could load into, so before a model loads on a card whose free memory
// is short of its need, the cache is trimmed by the difference; after a load
// fails, it is emptied before the retry.
type DeviceMemory interface {
	// Budget is the device's free memory plus Cached.
	Budget() (int64, error)
	// Cached is what the pool holds free for reuse.
	Cached() int64
	// TrimTo returns cached blocks to the device until at most target bytes
	// stay cached, and reports the bytes released.
	TrimTo(target int64) (int64, error)
}

// UseDevice makes the scheduler trim m's cache when models need the room.
// Call it before the first admission.
func (r *Residency) UseDevice(m DeviceMemory) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dev = m
}

// UseMetrics makes the scheduler record its loads, evictions and memory on
// m (the server's); without it, it records nothing. Call it before the
// first admission, and before making the pools of its units.
func (r *Residency) UseMetrics(m *metrics.Metrics) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m.Store(m)
	m.Budget(r.Device, r.Budget)
	r.gaugesLocked()
}

// room trims the device pool's cache so that need bytes are free on the
// device, as far as the cache allows. Models admitted but still loading are
// not subtracted: the counted budget covers them. It runs without r.mu:
// freeing device memory waits for the device, and must not stall every
// other admission meanwhile.
func (r *Residency) room(dev DeviceMemory, model string, need int64) {
	cached := dev.Cached()
	if cached <= 0 {
		return
	}
	budget, err := dev.Budget()
	if err != nil {
		r.Log.Warn("device memory info", "err", err)
		return
	}
	short := need - (budget - cached)
	if short <= 0 {
		return
	}
	n, err := dev.TrimTo(max(cached-short, 0))
	r.freed.Add(1)
	r.Log.Info("trimmed the device pool for a model", "model", model, "need", need, "released", n, "err", err)
}

// NewResidency makes a scheduler for one device.
func NewResidency(budget int64, keepAlive time.Duration, device string, log *slog.Logger) *Residency {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Residency{Budget: budget, KeepAlive: keepAlive, Device: device, Log: log,
		after: realAfter, units: map[string]*Unit{}, changed: make(chan struct{})}
	return r
}

// UnitOptions are a model's own settings.
type UnitOptions struct {
	// KeepAlive overrides the scheduler's when non-nil.
	KeepAlive *time.Duration
	// MaxConcurrent limits runs of the model at once across all its files
	// (0 = no limit beyond the pools' sessions).
	MaxConcurrent int
}

// Unit is one model as the scheduler counts it: all its files (pools)
// together, loaded and evicted as one.
type Unit struct {
	r        *Residency
	name     string
	estimate int64
	measured int64
	// onCard is what the model's open sessions took of the card, measured
	// (onDevice): weights and ONNX Runtime's arena, per session. It starts
	// again from 0 after an unload; measured keeps its peak.
	onCard int64
	opts   UnitOptions
	sem    chan struct{}

	refs     int
	resident bool
	counted  int64 // bytes added to r.used while resident
	lastUsed time.Time
	timer    stopper
	pools    []*Pool
	failed   bool // a load failed while admitted: unload when released
}

// ErrNoMemory is the cause of a NoMemoryError.
var ErrNoMemory = errors.New("engine: not enough memory")

// NoMemoryError reports a model that cannot fit in the budget even alone.
type NoMemoryError struct {
	Model  string
	Need   int64
	Budget int64
	Device string
}

func (e *NoMemoryError) Error() string {
	return fmt.Sprintf("model %s needs %s of memory but the %s budget is %s (raise -memory-budget)",
		e.Model, FormatBytes(e.Need), e.Device, FormatBytes(e.Budget))
}

func (e *NoMemoryError) Unwrap() error { return ErrNoMemory }

// FormatBytes writes n in MiB or GiB.
func FormatBytes(n int64) string {
	if n >= 1<<30 {
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// Unit returns the unit for model name, creating it with the estimated need
// the first time.
func (r *Residency) Unit(name string, estimate int64, opts UnitOptions) *Unit {
	r.mu.Lock()
	defer r.mu.Unlock()
	if u, ok := r.units[name]; ok {
		return u
	}
	u := &Unit{r: r, name: name, estimate: estimate, opts: opts}
	if opts.MaxConcurrent > 0 {
		u.sem = make(chan struct{}, opts.MaxConcurrent)
	}
	r.units[name] = u
	return u
}

// Used reports the memory counted for resident models.
func (r *Residency) Used() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.used
}

// Resident lists the resident models, by name.
func (r *Residency) Resident() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for n, u := range r.units {
		if u.resident {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Close unloads every idle model.
func (r *Residency) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range r.units {
		if u.resident && u.refs == 0 {
			r.unloadLocked(u, "shutdown")
		}
	}
}

func (u *Unit) need() int64 { return max(u.estimate, u.measured) }

func (u *Unit) keepAlive() time.Duration {
	if u.opts.KeepAlive != nil {
		return *u.opts.KeepAlive
	}
	return u.r.KeepAlive
}

// Name is the model's name.
func (u *Unit) Name() string { return u.name }

// attach adds a pool (one file of the model) to unload with the unit.
func (u *Unit) attach(p *Pool) {
	u.r.mu.Lock()
	defer u.r.mu.Unlock()
	u.pools = append(u.pools, p)
}

// Hold is a request's hold on a model (Unit.Hold). Pass it with each run
// (Run.Hold) so the runs are admitted at once; Release it when the request
// is done.
type Hold struct {
	u       *Unit
	release func()
	once    sync.Once
}

// Release ends the hold; later calls do nothing.
func (h *Hold) Release() {
	if h != nil {
		h.once.Do(h.release)
	}
}

// Hold admits the model for a whole request that runs it several times
// (Whisper's encoder then decoder steps, tiles of an upscale): until
// Release, the model cannot be evicted between runs, and runs that carry
// the hold are admitted at once, without queueing or counting again against
// the concurrency limit.
func (u *Unit) Hold(ctx context.Context) (*Hold, error) {
	release, err := u.Admit(ctx)
	if err != nil {
		return nil, err
	}
	return &Hold{u: u, release: release}, nil
}

// Admit makes the model resident and holds it until release is called:
// memory is reserved (evicting idle models LRU first when short), or the
// call waits for models in use to be released; a model that cannot fit
// even alone fails with a *NoMemoryError at once.
func (u *Unit) Admit(ctx context.Context) (release func(), err error) { return u.admit(ctx, nil) }

func (u *Unit) admit(ctx context.Context, h *Hold) (release func(), err error) {
	if h != nil && h.u == u {
		// Under a Hold: resident and counted already.
		u.r.mu.Lock()
		u.refs++
		u.r.mu.Unlock()
		return u.releaseHeld, nil
	}
	if u.sem != nil {
		select {
		case u.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r := u.r
	r.mu.Lock()
	var ticket uint64  // set once this admission waits
	var loadNeed int64 // set when this admission makes the model resident
	for {
		if len(r.waiters) == 0 || r.waiters[0] == ticket {
			if u.resident {
				break
			}
			need := u.need()
			if r.Budget > 0 && need > r.Budget {
				if u.estimate > r.Budget {
					r.dequeueLocked(ticket)
					r.mu.Unlock()
					u.unsem()
					return nil, &NoMemoryError{Model: u.name, Need: u.estimate, Budget: r.Budget, Device: r.Device}
				}
				// Measured above the whole budget (a large input grew its
				// arena once): it ran, so it runs again, alone.
				need = r.Budget
			}
			if r.Budget <= 0 || r.used+need <= r.Budget {
				loadNeed = need
				u.resident = true
				u.counted = need
				r.used += need
				r.gaugesLocked()
				break
			}
			if v := r.victimLocked(u); v != nil {
				r.Log.Info("evicting model for memory", "model", v.name, "for", u.name,
					"need", need, "used", r.used, "budget", r.Budget)
				r.unloadLocked(v, "memory")
				continue
			}
		}
		// Memory is held by models in use, or older admissions wait: wait
		// for a release, in turn.
		if ticket == 0 {
			r.ticket++
			ticket = r.ticket
			r.waiters = append(r.waiters, ticket)
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			r.mu.Lock()
			r.dequeueLocked(ticket)
			r.mu.Unlock()
			u.unsem()
			return nil, ctx.Err()
		}
		r.mu.Lock()
	}
	r.dequeueLocked(ticket)
	u.refs++
	if u.timer != nil {
		u.timer.Stop()
		u.timer = nil
	}
	dev := r.dev
	r.mu.Unlock()
	if dev != nil && loadNeed > 0 {
		r.room(dev, u.name, loadNeed)
	}
	var once sync.Once
	return func() { once.Do(u.release) }, nil
}

// releaseHeld ends a run under a Hold; the hold keeps a reference.
func (u *Unit) releaseHeld() {
	r := u.r
	r.mu.Lock()
	u.refs--
	u.lastUsed = time.Now()
	r.mu.Unlock()
}

func (u *Unit) unsem() {
	if u.sem != nil {
		<-u.sem
	}
}

func (u *Unit) release() {
	r := u.r
	r.mu.Lock()
	u.refs--
	u.lastUsed = time.Now()
	if u.refs == 0 && u.resident && u.failed {
		u.failed = false
		r.unloadLocked(u, "load_failed")
	} else if u.refs == 0 && u.resident {
		switch ka := u.keepAlive(); {
		case ka == 0:
			r.unloadLocked(u, "keep_alive")
		case ka > 0:
			var t stopper
			t = r.after(ka, func() {
				r.mu.Lock()
				defer r.mu.Unlock()
				if u.timer == t && u.refs == 0 && u.resident {
					r.Log.Info("model idle past its keep-alive: unloading", "model", u.name, "keep_alive", ka)
					r.unloadLocked(u, "keep_alive")
				}
			})
			u.timer = t
		}
	}
	r.signalLocked()
	r.mu.Unlock()
	u.unsem()
}

// victimLocked picks the resident, unused model other than u that was used
// least recently.
func (r *Residency) victimLocked(u *Unit) *Unit {
	var best *Unit
	for _, v := range r.units {
		if v == u || !v.resident || v.refs > 0 {
			continue
		}
		if best == nil || v.lastUsed.Before(best.lastUsed) {
			best = v
		}
	}
	return best
}

func (r *Residency) unloadLocked(u *Unit, reason string) {
	for _, p := range u.pools {
		p.unload()
	}
	if u.timer != nil {
		u.timer.Stop()
		u.timer = nil
	}
	u.resident = false
	r.used -= u.counted
	u.counted = 0
	u.onCard = 0
	r.freed.Add(1)
	r.m.Load().Evicted(u.name, reason)
	r.gaugesLocked()
	r.signalLocked()
}

func (r *Residency) gaugesLocked() {
	n := 0
	for _, u := range r.units {
		if u.resident {
			n++
		}
	}
	r.m.Load().Resident(r.Device, n, r.used)
}

// dequeueLocked removes a waiting admission's ticket (0 = none) and wakes
// the others, one of which may now be first.
func (r *Residency) dequeueLocked(ticket uint64) {
	if ticket == 0 {
		return
	}
	for i, t := range r.waiters {
		if t == ticket {
			r.waiters = append(r.waiters[:i], r.waiters[i+1:]...)
			r.signalLocked()
			return
		}
	}
}

func (r *Residency) signalLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// reclaim evicts every idle model but u, after u failed to load, and empties
// the device pool's cache; it reports how many things it freed.
func (u *Unit) reclaim() int {
	r := u.r
	r.mu.Lock()
	n := 0
	for _, v := range r.units {
		if v != u && v.resident && v.refs == 0 {
			r.unloadLocked(v, "load_retry")
			n++
		}
	}
	dev := r.dev
	r.mu.Unlock()
	if dev != nil && dev.Cached() > 0 {
		released, err := dev.TrimTo(0)
		r.freed.Add(1)
		if released > 0 {
			n++
		} else if err != nil {
			r.Log.Warn("trimming the device pool", "err", err)
		}
	}
	return n
}

// loaded records a file of the model loaded in took, with the memory the
// process grew by meanwhile (0 when unknown); a measurement above the
// estimate becomes the model's need.
func (u *Unit) loaded(took time.Duration, grew int64, err error) {
	if err != nil {
		u.r.m.Load().Loaded(u.name, took, err)
		u.r.mu.Lock()
		u.failed = true
		u.r.mu.Unlock()
		return
	}
	u.r.m.Load().Loaded(u.name, took, nil)
	r := u.r
	r.mu.Lock()
	defer r.mu.Unlock()
	u.failed = false
	// The process's growth measures host memory: on a GPU the model's
	// weights live on the card (and the growth would count the CUDA
	// libraries), so there the card's own free memory is measured instead
	// (onDevice).
	if grew > 0 && r.dev == nil {
		u.measured = max(u.measured, grew)
	}
	if u.resident && u.need() != u.counted {
		r.used += u.need() - u.counted
		u.counted = u.need()
		r.gaugesLocked()
	}
	r.Log.Info("model loaded", "model", u.name, "took", took, "rss_growth", grew, "estimate", u.estimate,
		"counted", u.counted)
}

// onDevice runs fn, a session opening or a run of model u, and on a GPU
// counts the card's free memory it took towards u's need: each ONNX Runtime
// session holds its own weights on the card, and its arena grows on the
// first runs (activations), none of which the manifest's estimate or the
// host's RSS sees. Measured sections take turns (devMu) so that one model's
// allocations are not counted as another's; runs that are not measured may
// still allocate meanwhile, which can only make a count larger. Memory that
// goes back to the card meanwhile (an unload, a pool trim) would make it
// smaller: such a section is not counted, and measured reports false (the
// caller measures a run again next time). Without a device it only calls fn
// and reports true.
func (u *Unit) onDevice(fn func() error) (measured bool, err error) {
	r := u.r
	r.mu.Lock()
	dev := r.dev
	r.mu.Unlock()
	if dev == nil {
		return true, fn()
	}
	r.devMu.Lock()
	defer r.devMu.Unlock()
	gen := r.freed.Load()
	free0, err0 := deviceFree(dev)
	err = fn()
	free1, err1 := deviceFree(dev)
	if err != nil {
		return false, err
	}
	if err0 != nil || err1 != nil {
		r.Log.Warn("device memory info", "model", u.name, "err", errors.Join(err0, err1))
		return false, nil
	}
	if r.freed.Load() != gen {
		r.Log.Debug("memory went back to the card while measuring: not counted", "model", u.name)
		return false, nil
	}
	if took := free0 - free1; took > 0 {
		u.tookOnCard(took)
	}
	return true, nil
}

// deviceFree is the card's free memory, less what the pool holds cached
// (which Budget counts as free).
func deviceFree(dev DeviceMemory) (int64, error) {
	b, err := dev.Budget()
	if err != nil {
		return 0, err
	}
	return b - dev.Cached(), nil
}

// tookOnCard adds n bytes the model's sessions took of the card; the sum
// above the estimate becomes the model's need, counted at once.
func (u *Unit) tookOnCard(n int64) {
	r := u.r
	r.mu.Lock()
	defer r.mu.Unlock()
	u.onCard += n
	u.measured = max(u.measured, u.onCard)
	if u.resident && u.need() != u.counted {
		r.used += u.need() - u.counted
		u.counted = u.need()
		r.gaugesLocked()
	}
	r.Log.Info("model memory on the card", "model", u.name, "took", n, "on_card", u.onCard,
		"estimate", u.estimate, "counted", u.counted)
}
