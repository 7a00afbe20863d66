package pipelines

import (
	"path/filepath"
	"sync"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/weights"
)

// Models keeps one session pool per installed model, opened on first use
// and shared by every endpoint of a pipeline.
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
	spec := m.deps.Config.SessionSpec(path, inputs, outputs)
	pl := engine.NewPool(m.deps.Runtime, spec, m.deps.Config.SessionsPerModel)
	m.pools[key] = pl
	return pl, nil
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
