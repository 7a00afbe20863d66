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
	SessionsPerModel int
	MaxInputBytes    int64 // largest input file
	MaxPixels        int64 // largest decoded image
	// MaxUpscalePixels is the largest output an upscale may produce, in
	// pixels (0 = the upscale pipeline's default, 64 Mi px = 8192²).
	MaxUpscalePixels int64
	// MaxAudioDuration is the longest audio input (0 = the Whisper
	// pipeline's default, 4 h).
	MaxAudioDuration time.Duration
	// MaxUpscaleWork is the most an upscale may compute, in model-native
	// pixels: input pixels × the network's scale², tile overlaps included
	// (0 = DefaultMaxUpscaleWork, < 0 = no limit).
	MaxUpscaleWork int64
	// MaxDiffusionWork is the most an image generation may compute, in
	// pixel-steps: steps × the pixels the model generates (its grid size)
	// × images (0 = DefaultMaxDiffusionWork, < 0 = no limit).
	MaxDiffusionWork int64
	// Models pins the model that serves a key, e.g. "rembg" →
	// "isnet-general-use" (see Want.Key).
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
}

// SessionFunc gives the engine spec (providers, threads, device) for one
// file of a model. It is the engine policy, decided by the server's
// configuration; pipelines only name the file and its inputs and outputs.
type SessionFunc func(model, path string, inputs, outputs []string) engine.SessionSpec

// Deps is what a pipeline factory gets.
type Deps struct {
	Store   *weights.Store
	Runtime engine.Runtime
	Ops     engine.Ops
	Log     *slog.Logger
	Config  Config
	// Session gives each model file's session spec; nil runs every model
	// with the runtime's defaults (the CPU).
	Session SessionFunc
	// Residency, when set, keeps the loaded models within a memory budget
	// (shared by every pipeline); nil loads models on demand and keeps them.
	Residency *engine.Residency
}

// sessionSpec is d.Session's spec, or the runtime's defaults.
func (d Deps) sessionSpec(model, path string, inputs, outputs []string) engine.SessionSpec {
	if d.Session != nil {
		return d.Session(model, path, inputs, outputs)
	}
	return engine.SessionSpec{Path: path, Inputs: inputs, Outputs: outputs}
}

// Pipeline is one pipeline: one object that owns the models it loads and
// serves its endpoints over them.
type Pipeline interface {
	Endpoints() []Endpoint
	// Warm loads the default model of one of its endpoints ahead of the
	// first request; it returns an error wrapping ErrNoModel when no
	// installed model serves the endpoint.
	Warm(ctx context.Context, endpoint string) error
	// Close releases every loaded model.
	Close() error
}

// Factory builds a pipeline.
type Factory func(Deps) (Pipeline, error)

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

// Registry maps endpoint ids to endpoints and owns the pipelines.
type Registry struct {
	pipelines []Pipeline
	endpoints map[string]Endpoint
	owner     map[string]Pipeline // endpoint id → its pipeline
}

// Build runs every registered factory.
func Build(d Deps) (*Registry, error) {
	regMu.Lock()
	names := make([]string, 0, len(factories))
	for n := range factories {
		names = append(names, n)
	}
	regMu.Unlock()
	sort.Strings(names)
	var ps []Pipeline
	for _, n := range names {
		p, err := factories[n](d)
		if err != nil {
			for _, q := range ps {
				q.Close()
			}
			return nil, fmt.Errorf("pipeline %s: %w", n, err)
		}
		ps = append(ps, p)
	}
	r, err := Assemble(ps...)
	if err != nil {
		for _, q := range ps {
			q.Close()
		}
	}
	return r, err
}

// Assemble makes a registry of built pipelines.
func Assemble(ps ...Pipeline) (*Registry, error) {
	r := &Registry{pipelines: ps, endpoints: map[string]Endpoint{}, owner: map[string]Pipeline{}}
	for _, p := range ps {
		for _, e := range p.Endpoints() {
			if _, dup := r.endpoints[e.ID()]; dup {
				return nil, fmt.Errorf("endpoint %s registered twice", e.ID())
			}
			r.endpoints[e.ID()] = e
			r.owner[e.ID()] = p
		}
	}
	return r, nil
}

// NewRegistry serves endpoints that hold no models (tests, fixed
// endpoints): one pipeline with nothing to warm or close.
func NewRegistry(eps ...Endpoint) *Registry {
	r, err := Assemble(Static(eps...))
	if err != nil {
		panic(err)
	}
	return r
}

// Static is a pipeline of endpoints that hold no models.
func Static(eps ...Endpoint) Pipeline { return static(eps) }

type static []Endpoint

func (s static) Endpoints() []Endpoint { return s }
func (s static) Warm(context.Context, string) error {
	return fmt.Errorf("nothing to load: %w", ErrNoModel)
}
func (s static) Close() error { return nil }

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

// Close closes every pipeline once.
func (r *Registry) Close() error {
	var errs []error
	for _, p := range r.pipelines {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}

// ErrNoModel is what Warm wraps when there is nothing to load, and what a
// *NotInstalledError matches.
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
		err := r.owner[id].Warm(ctx, id)
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

// CanWarm checks that every id names a served endpoint.
func (r *Registry) CanWarm(ids ...string) error {
	for _, id := range ids {
		if _, ok := r.endpoints[id]; !ok {
			return fmt.Errorf("no endpoint %s to preload (endpoints: %s)", id, strings.Join(r.IDs(), ", "))
		}
	}
	return nil
}
