// Package pipelines defines what an endpoint is (fal endpoint id → Run), the
// shared request/response plumbing, the fal-shaped error types, and the
// registry that the concrete pipelines (rembg, ...) join in init().
package pipelines

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/weights"
)

// Blob is the content behind an input URL.
type Blob struct {
	Data        []byte
	ContentType string
}

// Files resolves input URLs and stores output files. The API implements it;
// pipelines never fetch URLs themselves.
type Files interface {
	// Open returns the bytes behind an http(s) URL this server may read (its
	// own file URLs, allow-listed hosts); limit caps the size. data: URIs
	// never reach it: LoadImage decodes them itself.
	Open(ctx context.Context, url string, limit int64) (Blob, error)
	// Save stores an output file and returns the URL that clients fetch it by.
	Save(ctx context.Context, data []byte, contentType, fileName string) (string, error)
}

// Level is a queue log level as fal spells it.
type Level string

// Log levels fal clients know.
const (
	Info  Level = "INFO"
	Warn  Level = "WARN"
	Error Level = "ERROR"
	Debug Level = "DEBUG"
)

// Request is one call of an endpoint.
type Request struct {
	ID       string
	Endpoint string
	Input    json.RawMessage
	Files    Files
	// Log records a progress line for the caller (queue logs); may be nil.
	Log func(level Level, msg string)
	// Partial sends a progressive output (same schema as the final one) to
	// a caller of /stream; nil when nobody streams, so pipelines can skip
	// the work of making previews.
	Partial func(output any)
}

// Logf records a progress line.
func (r *Request) Logf(level Level, format string, args ...any) {
	if r.Log != nil {
		r.Log(level, fmt.Sprintf(format, args...))
	}
}

// Endpoint is one fal endpoint id served locally.
type Endpoint interface {
	ID() string
	// Run validates the input and computes the output object (JSON-ready).
	// Bad input returns a *ValidationError or an *HTTPError with a 4xx.
	Run(ctx context.Context, req *Request) (any, error)
}

// Config holds the settings every pipeline shares.
type Config struct {
	Providers        []engine.Provider
	IntraOpThreads   int
	SessionsPerModel int
	DeviceID         int
	TensorRTCacheDir string
	FP16             bool
	MaxInputBytes    int64 // largest input file
	MaxPixels        int64 // largest decoded image
	// MaxUpscalePixels is the largest output an upscale may produce, in
	// pixels (0 = the upscale pipeline's default, 64 Mi px = 8192²).
	MaxUpscalePixels int64
	// MaxAudioDuration is the longest audio input (0 = the Whisper
	// pipeline's default, 4 h).
	MaxAudioDuration time.Duration
	// Models maps a pipeline's default role to an installed model name, e.g.
	// "rembg" → "isnet-general-use".
	Models map[string]string
	// Batch is the default dynamic batching of every model; BatchModels
	// overrides it per model name (as do a manifest's batch_max and
	// batch_delay params, which the flags override). Batching only happens
	// for models whose batch dimension is dynamic.
	Batch       engine.BatchConfig
	BatchModels map[string]engine.BatchConfig
	// KeepAliveModels overrides the residency keep-alive per model (as does
	// a manifest's keep_alive param).
	KeepAliveModels map[string]time.Duration
	// ModelConcurrency limits runs of one model at once across its files
	// (0 = only the sessions per model).
	ModelConcurrency int
	// ModelProviders overrides Providers (and FP16) per model name.
	ModelProviders map[string]ProviderSetting
}

// ProviderSetting is one model's execution providers, in priority order,
// and, when set, its TensorRT precision.
type ProviderSetting struct {
	Providers []engine.Provider
	FP16      *bool
}

// SessionSpec builds the engine spec for a file of model under this config.
func (c Config) SessionSpec(model, path string, inputs, outputs []string) engine.SessionSpec {
	spec := engine.SessionSpec{
		Path: path, Inputs: inputs, Outputs: outputs,
		Providers: c.Providers, IntraOpThreads: c.IntraOpThreads, DeviceID: c.DeviceID,
		TensorRTCacheDir: c.TensorRTCacheDir, FP16: c.FP16,
	}
	if m, ok := c.ModelProviders[model]; ok {
		if len(m.Providers) > 0 {
			spec.Providers = m.Providers
		}
		if m.FP16 != nil {
			spec.FP16 = *m.FP16
		}
	}
	return spec
}

// Deps is what a pipeline factory gets.
type Deps struct {
	Store   *weights.Store
	Runtime engine.Runtime
	Ops     engine.Ops
	Log     *slog.Logger
	Config  Config
	// Residency, when set, keeps the loaded models within a memory budget
	// (shared by every pipeline); nil loads models on demand and keeps them.
	Residency *engine.Residency
}

// Factory builds a pipeline's endpoints.
type Factory func(Deps) ([]Endpoint, error)

var (
	regMu     sync.Mutex
	factories = map[string]Factory{}
)

// Register adds a pipeline factory; pipelines call it from init().
func Register(name string, f Factory) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := factories[name]; dup {
		panic("pipelines: duplicate registration of " + name)
	}
	factories[name] = f
}

// Registry maps endpoint ids to endpoints.
type Registry struct {
	endpoints map[string]Endpoint
	closers   []func() error
}

// Closer is implemented by endpoints that hold loaded models.
type Closer interface{ Close() error }

// Build runs every registered factory.
func Build(d Deps) (*Registry, error) {
	regMu.Lock()
	names := make([]string, 0, len(factories))
	for n := range factories {
		names = append(names, n)
	}
	regMu.Unlock()
	sort.Strings(names)
	r := &Registry{endpoints: map[string]Endpoint{}}
	for _, n := range names {
		eps, err := factories[n](d)
		if err != nil {
			return nil, fmt.Errorf("pipeline %s: %w", n, err)
		}
		for _, e := range eps {
			if _, dup := r.endpoints[e.ID()]; dup {
				return nil, fmt.Errorf("endpoint %s registered twice", e.ID())
			}
			r.endpoints[e.ID()] = e
			if c, ok := e.(Closer); ok {
				r.closers = append(r.closers, c.Close)
			}
		}
	}
	return r, nil
}

// NewRegistry builds a registry from endpoints directly (tests).
func NewRegistry(eps ...Endpoint) *Registry {
	r := &Registry{endpoints: map[string]Endpoint{}}
	for _, e := range eps {
		r.endpoints[e.ID()] = e
	}
	return r
}

// Lookup finds an endpoint by its fal id.
func (r *Registry) Lookup(id string) (Endpoint, bool) {
	e, ok := r.endpoints[id]
	return e, ok
}

// IDs lists the served endpoint ids.
func (r *Registry) IDs() []string {
	ids := make([]string, 0, len(r.endpoints))
	for id := range r.endpoints {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Close releases every loaded model.
func (r *Registry) Close() error {
	var first error
	for _, c := range r.closers {
		if err := c(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Warmer is implemented by endpoints that can load their default model ahead
// of the first request. Warm returns an error wrapping ErrNoModel when no
// installed model serves the endpoint.
type Warmer interface {
	Warm(ctx context.Context) error
}

// ErrNoModel is what Warm wraps when there is nothing to load.
var ErrNoModel = errors.New("no installed model serves this endpoint")

// Warm loads the default model of the endpoints ids, or of every endpoint
// when none is named (skipping those with no model installed). It stops at
// the first failure of a named endpoint; preloading all, it goes on with the
// others and returns every failure joined.
func (r *Registry) Warm(ctx context.Context, ids ...string) error {
	if err := r.CanWarm(ids...); err != nil {
		return err
	}
	all := len(ids) == 0
	if all {
		ids = r.IDs()
	}
	var errs []error
	for _, id := range ids {
		w, ok := r.endpoints[id].(Warmer)
		if !ok {
			continue
		}
		err := w.Warm(ctx)
		switch {
		case err == nil, all && errors.Is(err, ErrNoModel):
		case !all || ctx.Err() != nil:
			return errors.Join(append(errs, fmt.Errorf("%s: %w", id, err))...)
		default:
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// CanWarm checks that every id names an endpoint with a model to preload.
func (r *Registry) CanWarm(ids ...string) error {
	for _, id := range ids {
		e, ok := r.endpoints[id]
		if !ok {
			return fmt.Errorf("no endpoint %s to preload (endpoints: %s)", id, strings.Join(r.IDs(), ", "))
		}
		if _, ok := e.(Warmer); !ok {
			return fmt.Errorf("endpoint %s has no model to preload", id)
		}
	}
	return nil
}
