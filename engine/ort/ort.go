//go:build cgo

// Package ort implements engine.Runtime on ONNX Runtime through
// github.com/yalue/onnxruntime_go. It is the only package that touches the
// ORT library; the library itself is loaded at run time (dlopen), so builds
// need no ORT installed.
package ort

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/falocal/falocal/engine"
)

// Config selects the library and its process-wide settings.
type Config struct {
	// LibraryPath is the libonnxruntime shared library to load.
	LibraryPath string
	Logger      *slog.Logger
}

// Runtime is the process-wide ORT environment.
type Runtime struct {
	info engine.Info
	log  *slog.Logger

	mu     sync.Mutex
	warned map[engine.Provider]bool
}

var (
	initOnce sync.Once
	initRT   *Runtime
	initErr  error
)

// Init loads the library and creates the one ORT environment a process may
// have. Later calls return the same runtime (and ignore cfg).
func Init(cfg Config) (engine.Runtime, error) {
	initOnce.Do(func() { initRT, initErr = initialize(cfg) })
	if initErr != nil {
		return nil, initErr
	}
	return initRT, nil
}

func initialize(cfg Config) (*Runtime, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.LibraryPath == "" {
		return nil, errors.New("ort: no ONNX Runtime library path given")
	}
	// ONNX Runtime 1.30 looks its telemetry host up about a second after
	// the first session is created, DisableTelemetryEvents or not; only
	// ORT_DISABLE_TELEMETRY, set before the library is loaded, keeps it
	// from reaching out. The server never goes to the network on its own,
	// so this is not left to the user's environment.
	if err := os.Setenv("ORT_DISABLE_TELEMETRY", "1"); err != nil {
		return nil, fmt.Errorf("ort: turning telemetry off (ORT_DISABLE_TELEMETRY): %w", err)
	}
	ortgo.SetSharedLibraryPath(cfg.LibraryPath)
	if err := ortgo.InitializeEnvironment(ortgo.WithLogLevelError()); err != nil {
		return nil, fmt.Errorf("ort: load %s: %w", cfg.LibraryPath, err)
	}
	if err := ortgo.DisableTelemetry(); err != nil {
		// ORT_DISABLE_TELEMETRY above is what holds; this is the second lock.
		log.Warn("onnx runtime refused to turn telemetry events off", "err", err)
	}
	rt := &Runtime{log: log, warned: map[engine.Provider]bool{}}
	rt.info = engine.Info{
		Library:     cfg.LibraryPath,
		Version:     ortgo.GetVersion(),
		Providers:   []engine.Provider{engine.CPU},
		Unavailable: map[engine.Provider]string{},
	}
	// A CPU-only library accepts provider options but fails to update them
	// (it cannot find libonnxruntime_providers_shared.so): that is the probe.
	for _, p := range []engine.Provider{engine.CUDA, engine.TensorRT} {
		so, err := ortgo.NewSessionOptions()
		if err != nil {
			return nil, err
		}
		err = appendProvider(so, p, engine.SessionSpec{})
		so.Destroy()
		if err != nil {
			rt.info.Unavailable[p] = err.Error()
		} else {
			rt.info.Providers = append([]engine.Provider{p}, rt.info.Providers...)
		}
	}
	return rt, nil
}

// Info reports the library, version and usable providers.
func (r *Runtime) Info() engine.Info { return r.info }

// providerOptions are the ORT options for a GPU provider under spec (both
// always carry device_id). CPU has none.
func providerOptions(p engine.Provider, spec engine.SessionSpec) (map[string]string, error) {
	dev := strconv.Itoa(spec.DeviceID)
	switch p {
	case engine.CUDA:
		opts := map[string]string{}
		for k, v := range spec.CUDAOptions {
			opts[k] = v
		}
		opts["device_id"] = dev // -device, never an option's
		return opts, nil
	case engine.TensorRT:
		opts := map[string]string{"device_id": dev}
		if spec.FP16 {
			opts["trt_fp16_enable"] = "1"
		}
		if spec.TensorRTCacheDir != "" {
			opts["trt_engine_cache_enable"] = "1"
			opts["trt_engine_cache_path"] = spec.TensorRTCacheDir
		}
		return opts, nil
	}
	return nil, fmt.Errorf("unknown provider %q", p)
}

func appendProvider(so *ortgo.SessionOptions, p engine.Provider, spec engine.SessionSpec) error {
	if p == engine.CPU {
		return nil
	}
	opts, err := providerOptions(p, spec)
	if err != nil {
		return err
	}
	switch p {
	case engine.CUDA:
		o, err := ortgo.NewCUDAProviderOptions()
		if err != nil {
			return err
		}
		defer o.Destroy()
		if err := o.Update(opts); err != nil {
			return err
		}
		return so.AppendExecutionProviderCUDA(o)
	case engine.TensorRT:
		o, err := ortgo.NewTensorRTProviderOptions()
		if err != nil {
			return err
		}
		defer o.Destroy()
		if err := o.Update(opts); err != nil {
			return err
		}
		return so.AppendExecutionProviderTensorRT(o)
	}
	return fmt.Errorf("unknown provider %q", p)
}

// Open loads a model. Providers that the library lacks are skipped with one
// logged reason each; the CPU provider is always available.
func (r *Runtime) Open(ctx context.Context, spec engine.SessionSpec) (engine.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	so, err := ortgo.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	if spec.IntraOpThreads > 0 {
		if err := so.SetIntraOpNumThreads(spec.IntraOpThreads); err != nil {
			return nil, err
		}
	}
	if err := so.SetInterOpNumThreads(1); err != nil {
		return nil, err
	}
	if err := so.SetGraphOptimizationLevel(ortgo.GraphOptimizationLevelEnableAll); err != nil {
		return nil, err
	}
	got := []engine.Provider{}
	for _, p := range spec.Providers {
		if p == engine.CPU {
			continue
		}
		if err := appendProvider(so, p, spec); err != nil {
			r.warnOnce(p, err)
			continue
		}
		got = append(got, p)
	}
	got = append(got, engine.CPU)

	inInfo, outInfo, err := ortgo.GetInputOutputInfo(spec.Path)
	if err != nil {
		return nil, fmt.Errorf("ort: read %s: %w", spec.Path, err)
	}
	s := &session{providers: got}
	if s.inputs, err = pick(inInfo, spec.Inputs); err != nil {
		return nil, fmt.Errorf("ort: %s inputs: %w", spec.Path, err)
	}
	if s.outputs, err = pick(outInfo, spec.Outputs); err != nil {
		return nil, fmt.Errorf("ort: %s outputs: %w", spec.Path, err)
	}
	s.sess, err = ortgo.NewDynamicAdvancedSession(spec.Path, spec.Inputs, spec.Outputs, so)
	if err != nil {
		return nil, fmt.Errorf("ort: load %s: %w", spec.Path, err)
	}
	return s, nil
}

func (r *Runtime) warnOnce(p engine.Provider, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.warned[p] {
		return
	}
	r.warned[p] = true
	r.log.Warn("execution provider unavailable, falling back", "provider", p, "reason", err)
}

func pick(infos []ortgo.InputOutputInfo, names []string) ([]engine.TensorInfo, error) {
	out := make([]engine.TensorInfo, 0, len(names))
	for _, n := range names {
		found := false
		for _, in := range infos {
			if in.Name != n {
				continue
			}
			dt, ok := fromORT(in.DataType)
			if !ok {
				return nil, fmt.Errorf("%s has unsupported type %v", n, in.DataType)
			}
			out = append(out, engine.TensorInfo{Name: n, DType: dt, Shape: append([]int64(nil), in.Dimensions...)})
			found = true
			break
		}
		if !found {
			var have []string
			for _, in := range infos {
				have = append(have, in.Name)
			}
			return nil, fmt.Errorf("no tensor named %q (have %v)", n, have)
		}
	}
	return out, nil
}

func fromORT(t ortgo.TensorElementDataType) (engine.DType, bool) {
	switch t {
	case ortgo.TensorElementDataTypeFloat:
		return engine.Float32, true
	case ortgo.TensorElementDataTypeFloat16:
		return engine.Float16, true
	case ortgo.TensorElementDataTypeUint8:
		return engine.Uint8, true
	case ortgo.TensorElementDataTypeInt32:
		return engine.Int32, true
	case ortgo.TensorElementDataTypeInt64:
		return engine.Int64, true
	case ortgo.TensorElementDataTypeBool:
		return engine.Bool, true
	}
	return 0, false
}

func toORT(t engine.DType) ortgo.TensorElementDataType {
	switch t {
	case engine.Float32:
		return ortgo.TensorElementDataTypeFloat
	case engine.Float16:
		return ortgo.TensorElementDataTypeFloat16
	case engine.Uint8:
		return ortgo.TensorElementDataTypeUint8
	case engine.Int32:
		return ortgo.TensorElementDataTypeInt32
	case engine.Int64:
		return ortgo.TensorElementDataTypeInt64
	case engine.Bool:
		return ortgo.TensorElementDataTypeBool
	}
	return ortgo.TensorElementDataTypeUndefined
}

type session struct {
	sess      *ortgo.DynamicAdvancedSession
	inputs    []engine.TensorInfo
	outputs   []engine.TensorInfo
	providers []engine.Provider

	mu     sync.RWMutex
	closed bool
}

func (s *session) Inputs() []engine.TensorInfo      { return s.inputs }
func (s *session) Outputs() []engine.TensorInfo     { return s.outputs }
func (s *session) Providers() []engine.Provider     { return s.providers }
func (s *session) infoFor(i int) *engine.TensorInfo { return &s.outputs[i] }

// Run executes the model. ctx cancellation calls RunOptions.Terminate, the
// only way to stop a graph that is already running.
func (s *session) Run(ctx context.Context, inputs []*engine.Tensor, outputShapes map[string][]int64) ([]*engine.Tensor, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, engine.ErrClosed
	}
	if len(inputs) != len(s.inputs) {
		return nil, fmt.Errorf("ort: got %d inputs, model takes %d", len(inputs), len(s.inputs))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ins := make([]ortgo.Value, len(inputs))
	defer destroyAll(ins)
	for i, t := range inputs {
		v, err := toValue(t)
		if err != nil {
			return nil, fmt.Errorf("ort: input %s: %w", s.inputs[i].Name, err)
		}
		ins[i] = v
	}
	outs := make([]ortgo.Value, len(s.outputs))
	defer destroyAll(outs)
	for i := range s.outputs {
		// ORT-allocated 16-bit outputs are broken in onnxruntime_go v1.27.0
		// (it copies elements as bytes), so those are preallocated here.
		if info := s.infoFor(i); info.DType == engine.Float16 {
			shape := info.Shape
			if hint, ok := outputShapes[info.Name]; ok {
				shape = hint
			}
			if engine.Elements(shape) == 0 {
				continue // empty: nothing to copy wrongly, the runtime may allocate it
			}
			if engine.Elements(shape) < 0 {
				return nil, fmt.Errorf("ort: float16 output %s has dynamic shape %v and no shape hint; export it as float32", info.Name, shape)
			}
			v, err := ortgo.NewCustomDataTensor(ortgo.NewShape(shape...), make([]byte, 2*engine.Elements(shape)), ortgo.TensorElementDataTypeFloat16)
			if err != nil {
				return nil, err
			}
			outs[i] = v
		}
	}

	opts, err := ortgo.NewRunOptions()
	if err != nil {
		return nil, err
	}
	defer opts.Destroy()
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
			_ = opts.Terminate()
		case <-done:
		}
	}()
	err = s.sess.RunWithOptions(ins, outs, opts)
	close(done)
	<-stopped
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ort: run interrupted: %w", ctx.Err())
		}
		return nil, fmt.Errorf("ort: run: %w", err)
	}
	res := make([]*engine.Tensor, len(outs))
	for i, v := range outs {
		t, err := fromValue(v)
		if err != nil {
			return nil, fmt.Errorf("ort: output %s: %w", s.outputs[i].Name, err)
		}
		res[i] = t
	}
	return res, nil
}

func (s *session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.sess.Destroy()
}

func destroyAll(vs []ortgo.Value) {
	for _, v := range vs {
		if v != nil {
			v.Destroy()
		}
	}
}

func toValue(t *engine.Tensor) (ortgo.Value, error) {
	if len(t.Shape) == 0 {
		return toScalar(t)
	}
	shape := ortgo.NewShape(t.Shape...)
	n := engine.Elements(t.Shape)
	if t.DType == engine.Float32 {
		if int64(len(t.F32)) != n {
			return nil, fmt.Errorf("shape %v needs %d floats, have %d", t.Shape, n, len(t.F32))
		}
		return ortgo.NewTensor(shape, t.F32)
	}
	if int64(len(t.Raw)) != n*int64(t.DType.Size()) {
		return nil, fmt.Errorf("shape %v of %s needs %d bytes, have %d", t.Shape, t.DType, n*int64(t.DType.Size()), len(t.Raw))
	}
	return ortgo.NewCustomDataTensor(shape, t.Raw, toORT(t.DType))
}

// toScalar makes a rank-0 value (such as a scalar timestep): onnxruntime_go's
// tensors need at least one dimension, its scalars none.
func toScalar(t *engine.Tensor) (ortgo.Value, error) {
	if t.DType == engine.Float32 {
		if len(t.F32) != 1 {
			return nil, fmt.Errorf("a scalar needs 1 float, have %d", len(t.F32))
		}
		return ortgo.NewScalar(t.F32[0])
	}
	if len(t.Raw) != t.DType.Size() {
		return nil, fmt.Errorf("a %s scalar needs %d bytes, have %d", t.DType, t.DType.Size(), len(t.Raw))
	}
	switch t.DType {
	case engine.Int64:
		return ortgo.NewScalar(int64(binary.LittleEndian.Uint64(t.Raw)))
	case engine.Int32:
		return ortgo.NewScalar(int32(binary.LittleEndian.Uint32(t.Raw)))
	case engine.Uint8:
		return ortgo.NewScalar(t.Raw[0])
	}
	return nil, fmt.Errorf("%s scalars are not supported (export the input as float32)", t.DType)
}

func fromValue(v ortgo.Value) (*engine.Tensor, error) {
	shape := []int64(v.GetShape())
	switch x := v.(type) {
	case *ortgo.Tensor[float32]:
		return &engine.Tensor{DType: engine.Float32, Shape: shape, F32: x.GetData()}, nil
	case *ortgo.CustomDataTensor:
		dt, ok := fromORT(ortgo.TensorElementDataType(x.DataType()))
		if !ok {
			return nil, fmt.Errorf("unsupported output type")
		}
		return &engine.Tensor{DType: dt, Shape: shape, Raw: x.GetData()}, nil
	case *ortgo.Tensor[uint8]:
		return &engine.Tensor{DType: engine.Uint8, Shape: shape, Raw: append([]byte(nil), x.GetData()...)}, nil
	case *ortgo.Tensor[int64]:
		return &engine.Tensor{DType: engine.Int64, Shape: shape, Raw: int64Bytes(x.GetData())}, nil
	case *ortgo.Tensor[int32]:
		return &engine.Tensor{DType: engine.Int32, Shape: shape, Raw: int32Bytes(x.GetData())}, nil
	}
	return nil, fmt.Errorf("unsupported output value %T", v)
}

var (
	_ engine.Runtime = (*Runtime)(nil)
	_ engine.Session = (*session)(nil)
)
