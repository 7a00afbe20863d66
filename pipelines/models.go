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

// Models keeps one session pool per installed model file, opened on first
// use and shared by every endpoint of a pipeline. With a Residency in Deps,
// every file of a model (Whisper's encoder and decoder alike) counts as one
// model against the memory budget: loaded on demand, evicted together.
type Models struct {
	deps  Deps
	mu    sync.Mutex
	pools map[string]*engine.Pool // model name + "/" + file role → sessions
}

// NewModels makes an empty set.
func NewModels(d Deps) *Models { return &Models{deps: d, pools: map[string]*engine.Pool{}} }

// Pool returns the pool for a model whose "model" file takes input and
// gives output, creating it (and verifying the file) the first time.
func (m *Models) Pool(man weights.Manifest, input, output string) (*engine.Pool, error) {
	return m.PoolFor(man, "model", []string{input}, []string{output})
}

// PoolFor returns the pool for one file (by role) of a model with several
// networks, such as Whisper's encoder and decoder.
func (m *Models) PoolFor(man weights.Manifest, role string, inputs, outputs []string) (*engine.Pool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := man.Name + "/" + role
	if pl, ok := m.pools[key]; ok {
		return pl, nil
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
	spec := cfg.SessionSpec(man.Name, path, inputs, outputs)
	opts := engine.PoolOptions{Size: cfg.SessionsPerModel, Name: man.Name}
	if opts.Batch, err = cfg.batchFor(man); err != nil {
		return nil, err
	}
	if opts.Unit, err = m.unit(man); err != nil {
		return nil, err
	}
	pl := engine.NewPoolWith(m.deps.Runtime, spec, opts)
	m.pools[key] = pl
	return pl, nil
}

// Hold keeps a model resident for the whole of a request that runs it
// several times (all its files: Whisper's encoder and decoder steps, an
// upscale's tiles), so that it is not evicted between runs; runs under the
// returned context are admitted at once. Call release when the request is
// done. Without a residency scheduler it does nothing.
func (m *Models) Hold(ctx context.Context, man weights.Manifest) (context.Context, func(), error) {
	u, err := m.unit(man)
	if err != nil || u == nil {
		return ctx, func() {}, err
	}
	return u.Hold(ctx)
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
	m.mu.Lock()
	defer m.mu.Unlock()
	for n, pl := range m.pools {
		pl.Close()
		delete(m.pools, n)
	}
	return nil
}
