package main

import "github.com/falocal/falocal/engine"

// providerSetting is one model's execution providers, in priority order,
// and, when set, its TensorRT precision (-model-providers).
type providerSetting struct {
	Providers []engine.Provider
	FP16      *bool
}

// sessionPolicy is how every model file opens: providers, threads, device
// and TensorRT settings, overridden per model. Pipelines get its spec
// method and decide none of it.
type sessionPolicy struct {
	providers []engine.Provider
	threads   int
	deviceID  int
	trtCache  string
	fp16      bool
	cuda      map[string]string // -cuda-options
	models    map[string]providerSetting
}

// spec builds the engine spec for a file of model.
func (p sessionPolicy) spec(model, path string, inputs, outputs []string) engine.SessionSpec {
	s := engine.SessionSpec{
		Path: path, Inputs: inputs, Outputs: outputs,
		Providers: p.providers, IntraOpThreads: p.threads, DeviceID: p.deviceID,
		TensorRTCacheDir: p.trtCache, FP16: p.fp16, CUDAOptions: p.cuda,
	}
	if m, ok := p.models[model]; ok {
		if len(m.Providers) > 0 {
			s.Providers = m.Providers
		}
		if m.FP16 != nil {
			s.FP16 = *m.FP16
		}
	}
	return s
}
