package main

import (
	"fmt"
	"testing"

	"github.com/falocal/falocal/engine"
)

func TestSessionSpecPerModel(t *testing.T) {
	off := false
	pol := sessionPolicy{
		providers: []engine.Provider{engine.TensorRT, engine.CUDA, engine.CPU}, fp16: true, deviceID: 1,
		trtCache: "/trt",
		models: map[string]providerSetting{
			"isnet": {Providers: []engine.Provider{engine.CUDA, engine.CPU}},
			"flux":  {Providers: []engine.Provider{engine.TensorRT, engine.CPU}, FP16: &off},
		},
	}
	cases := []struct {
		model, providers string
		fp16             bool
	}{
		{"other", "[tensorrt cuda cpu]", true},
		{"isnet", "[cuda cpu]", true},
		{"flux", "[tensorrt cpu]", false},
	}
	for _, tc := range cases {
		s := pol.spec(tc.model, "m.onnx", []string{"x"}, []string{"y"})
		if got := fmt.Sprint(s.Providers); got != tc.providers || s.FP16 != tc.fp16 || s.DeviceID != 1 || s.TensorRTCacheDir != "/trt" || s.Path != "m.onnx" {
			t.Errorf("%s: providers %s fp16 %v device %d cache %q; want %s fp16 %v", tc.model, got, s.FP16, s.DeviceID, s.TensorRTCacheDir, tc.providers, tc.fp16)
		}
	}
}
