package pipelines

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/weights"
)

// Models is a pipeline's set of loaded models: one session pool per model
// file, opened on first use and shared by every endpoint of the pipeline,
// and the pipeline's parsed model objects (Loaded). With a Residency in
// Deps, every file of a model (Whisper's encoder and decoder alike) counts
// as one model against the memory budget: loaded on demand, evicted
// together. Its errors are fal-shaped already (see MapError).
type Models struct {
	deps   Deps
	mu     sync.Mutex
	pools  map[string]*Net // model name + "/" + file role → sessions
	loadMu sync.Mutex      // held while a model object loads (it opens pools)
	loaded map[string]any  // model name → the pipeline's model object
}

// NewModels makes an empty set.
func NewModels(d Deps) *Models {
	return &Models{deps: d, pools: map[string]*Net{}, loaded: map[string]any{}}
}

// Loaded returns the pipeline's object for a model, made by load the first
// time and kept until Close. A failed load is not kept, and answers 503.
func Loaded[T any](m *Models, man weights.Manifest, load func() (T, error)) (T, error) {
	m.loadMu.Lock()
	defer m.loadMu.Unlock()
	if v, ok := m.loaded[man.Name]; ok {
		if t, ok := v.(T); ok {
			return t, nil
		}
	}
	v, err := load()
	if err != nil {
		var zero T
		return zero, MapError(fmt.Sprintf("model %s cannot be loaded", man.Name), err)
	}
	m.loaded[man.Name] = v
	return v, nil
}

// Net is one network (file) of a model. Its runs answer fal-shaped errors.
type Net struct {
	pool  *engine.Pool
	model string
}

// Run runs the network on inputs.
func (n *Net) Run(ctx context.Context, inputs []*engine.Tensor) ([]*engine.Tensor, error) {
	return n.Do(ctx, engine.Run{Inputs: inputs})
}

// Do runs the network (see engine.Pool.Do).
func (n *Net) Do(ctx context.Context, r engine.Run) ([]*engine.Tensor, error) {
	out, err := n.pool.Do(ctx, r)
	return out, n.mapErr(ctx, err)
}

// Warm opens one session now.
func (n *Net) Warm(ctx context.Context) error { return n.mapErr(ctx, n.pool.Warm(ctx)) }

// Session returns an open session, for its inputs' and outputs' metadata.
func (n *Net) Session(ctx context.Context) (engine.Session, error) {
	s, err := n.pool.Session(ctx)
	return s, n.mapErr(ctx, err)
}

// Batching reports whether runs are being batched across requests.
func (n *Net) Batching() bool { return n.pool.Batching() }

func (n *Net) mapErr(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil {
		return err
	}
	return MapError("model "+n.model+" failed", err)
}

// Pool returns the network of a model whose "model" file takes input and
// gives output, creating it (and verifying the file) the first time.
func (m *Models) Pool(man weights.Manifest, input, output string) (*Net, error) {
	return m.PoolFor(man, "model", []string{input}, []string{output})
}

// PoolFor returns one network (file, by role) of a model with several,
// such as Whisper's encoder and decoder.
func (m *Models) PoolFor(man weights.Manifest, role string, inputs, outputs []string) (*Net, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := man.Name + "/" + role
	if n, ok := m.pools[key]; ok {
		return n, nil
	}
	path, err := m.deps.Store.Path(man, role)
	if err != nil {
		return nil, err
	}
	if len(man.Files) > 1 {
		// a file of a multi-file model may reference its neighbours (ONNX
		// external data) by name
		dir, err := m.deps.Store.Materialize(man)
		if err != nil {
			return nil, err
		}
		path = filepath.Join(dir, fileName(man, role))
	}
	cfg := m.deps.Config
	spec := m.deps.sessionSpec(man.Name, path, inputs, outputs)
	opts := engine.PoolOptions{Size: cfg.SessionsPerModel, Name: man.Name, Role: role}
	if opts.Batch, err = cfg.batchFor(man); err != nil {
		return nil, err
	}
	if opts.Unit, err = m.unit(man); err != nil {
		return nil, err
	}
	n := &Net{pool: engine.NewPoolWith(m.deps.Runtime, spec, opts), model: man.Name}
	m.pools[key] = n
	return n, nil
}

// Hold keeps a model resident for the whole of a request that runs it
// several times (all its files: Whisper's encoder and decoder steps, an
// upscale's tiles), so that it is not evicted between runs; runs that carry
// the hold (engine.Run.Hold) are admitted at once. Release it when the
// request is done. Without a residency scheduler the hold is nil, which
// runs and Release accept. Hold only after the request's inputs are
// fetched and decoded: a held model blocks others from the memory.
func (m *Models) Hold(ctx context.Context, man weights.Manifest) (*engine.Hold, error) {
	u, err := m.unit(man)
	if err != nil || u == nil {
		return nil, err
	}
	h, err := u.Hold(ctx)
	if err != nil && ctx.Err() == nil {
		err = MapError("model "+man.Name+" cannot be held", err)
	}
	return h, err
}

// unit is the residency unit of a model (nil without a scheduler).
func (m *Models) unit(man weights.Manifest) (*engine.Unit, error) {
	r := m.deps.Residency
	if r == nil {
		return nil, nil
	}
	cfg := m.deps.Config
	uo := engine.UnitOptions{MaxConcurrent: cfg.ModelConcurrency}
	if v := man.Params["max_concurrent"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("model %s: bad max_concurrent param %q", man.Name, v)
		}
		uo.MaxConcurrent = n
	}
	if ka, ok, err := cfg.keepAliveFor(man); err != nil {
		return nil, err
	} else if ok {
		uo.KeepAlive = &ka
	}
	// Every session holds its own copy of the weights and working memory.
	return r.Unit(man.Name, MemoryNeed(man)*int64(max(1, cfg.SessionsPerModel)), uo), nil
}

// MemoryNeed is a model's declared memory (the manifest's estimate), or,
// without one, twice the size of its files.
func MemoryNeed(man weights.Manifest) int64 {
	if man.MemoryBytes > 0 {
		return man.MemoryBytes
	}
	var n int64
	for _, f := range man.Files {
		n += f.Size
	}
	return 2 * n
}

// batchFor is the batching of a model: the flag's per-model setting, else
// the manifest's params, else the default.
func (c Config) batchFor(man weights.Manifest) (engine.BatchConfig, error) {
	if b, ok := c.BatchModels[man.Name]; ok {
		return b, nil
	}
	b := c.Batch
	if s := man.Params["batch_max"]; s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return b, fmt.Errorf("model %s: bad batch_max param %q", man.Name, s)
		}
		b.MaxBatch = n
	}
	if s := man.Params["batch_delay"]; s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return b, fmt.Errorf("model %s: bad batch_delay param %q", man.Name, s)
		}
		b.MaxDelay = d
	}
	return b, nil
}

func (c Config) keepAliveFor(man weights.Manifest) (time.Duration, bool, error) {
	if d, ok := c.KeepAliveModels[man.Name]; ok {
		return d, true, nil
	}
	if s := man.Params["keep_alive"]; s != "" {
		if s == "-1" { // never unload
			return -1, true, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, false, fmt.Errorf("model %s: bad keep_alive param %q", man.Name, s)
		}
		return d, true, nil
	}
	return 0, false, nil
}

func fileName(man weights.Manifest, role string) string {
	for _, f := range man.Files {
		if f.Role == role {
			return f.Name
		}
	}
	return role
}

// Close releases every loaded model.
func (m *Models) Close() error {
	m.loadMu.Lock() // before mu, as in Loaded
	defer m.loadMu.Unlock()
	clear(m.loaded)
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, n := range m.pools {
		n.pool.Close()
		delete(m.pools, k)
	}
	return nil
}
