package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	for _, c := range []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string
		check   func(*Config) bool
	}{
		{"defaults", nil, nil, "", func(c *Config) bool {
			return c.Listen == "127.0.0.1:8080" && c.Workers == 4 && c.Workers >= c.BatchMax && c.Providers == "auto" && c.Retention > 0 &&
				c.keepAlive == 5*time.Minute && c.BatchDelay == 5*time.Millisecond && (physicalMemory() == 0 || c.memoryBudget == physicalMemory()/4*3)
		}},
		{"env", map[string]string{"FALOCAL_WORKERS": "4", "FALOCAL_KEYS": "a:b,c:d", "FALOCAL_REQUEST_TIMEOUT": "90s"}, nil, "",
			func(c *Config) bool { return c.Workers == 4 && len(c.keys()) == 2 && c.RequestTimeout.Seconds() == 90 }},
		{"flag beats env", map[string]string{"FALOCAL_WORKERS": "4"}, []string{"-workers", "3"}, "", func(c *Config) bool { return c.Workers == 3 }},
		{"bad env duration", map[string]string{"FALOCAL_REQUEST_TIMEOUT": "600"}, nil, "FALOCAL_REQUEST_TIMEOUT", nil},
		{"bad env int", map[string]string{"FALOCAL_WORKERS": "many"}, nil, "FALOCAL_WORKERS", nil},
		{"bad key", nil, []string{"-keys", "nocolon"}, "key_id:key_secret", nil},
		{"no workers", nil, []string{"-workers", "0"}, "workers", nil},
		{"zero retention", nil, []string{"-retention", "0s"}, "retention", nil},
		{"memory budget", map[string]string{"FALOCAL_MEMORY_BUDGET": "1.5GiB"}, nil, "", func(c *Config) bool { return c.memoryBudget == 3<<29 }},
		{"memory budget bytes", nil, []string{"-memory-budget", "1000"}, "", func(c *Config) bool { return c.memoryBudget == 1000 }},
		{"no memory limit", nil, []string{"-memory-budget", "0"}, "", func(c *Config) bool { return c.memoryBudget == 0 }},
		{"bad memory budget", nil, []string{"-memory-budget", "lots"}, "-memory-budget", nil},
		{"bad budget percent", nil, []string{"-memory-budget", "150%"}, "-memory-budget", nil},
		{"keep-alive never", map[string]string{"FALOCAL_KEEP_ALIVE": "-1"}, nil, "", func(c *Config) bool { return c.keepAlive < 0 }},
		{"keep-alive zero", nil, []string{"-keep-alive", "0"}, "", func(c *Config) bool { return c.keepAlive == 0 }},
		{"keep-alive duration", nil, []string{"-keep-alive", "90s"}, "", func(c *Config) bool { return c.keepAlive == 90*time.Second }},
		{"bad keep-alive", nil, []string{"-keep-alive", "300"}, "-keep-alive", nil},
		{"keep-alive per model", nil, []string{"-keep-alive", "10m,isnet-general-use=-1,realesrgan-x4fast=0"}, "", func(c *Config) bool {
			return c.keepAlive == 10*time.Minute && c.keepAlives["isnet-general-use"] < 0 && c.keepAlives["realesrgan-x4fast"] == 0
		}},
		{"per-model providers", map[string]string{"FALOCAL_MODEL_PROVIDERS": "isnet-general-use=cuda,cpu; flux-dev = tensorrt:fp32,cuda,cpu;"}, nil, "", func(c *Config) bool {
			isnet, flux := c.modelProviders["isnet-general-use"], c.modelProviders["flux-dev"]
			return len(c.modelProviders) == 2 && fmt.Sprint(isnet.Providers) == "[cuda cpu]" && isnet.FP16 == nil &&
				fmt.Sprint(flux.Providers) == "[tensorrt cuda cpu]" && flux.FP16 != nil && !*flux.FP16
		}},
		{"preload all", nil, []string{"-preload"}, "", func(c *Config) bool { return c.preload && c.preloadIDs == nil }},
		{"preload all from the environment", map[string]string{"FALOCAL_PRELOAD": "true"}, nil, "", func(c *Config) bool { return c.preload && c.preloadIDs == nil }},
		{"preload endpoints", nil, []string{"-preload=fal-ai/whisper, fal-ai/flux/schnell"}, "", func(c *Config) bool {
			return c.preload && fmt.Sprint(c.preloadIDs) == "[fal-ai/whisper fal-ai/flux/schnell]"
		}},
		{"preload off", map[string]string{"FALOCAL_PRELOAD": "fal-ai/whisper"}, []string{"-preload=false"}, "", func(c *Config) bool { return !c.preload }},
		{"no preload", nil, nil, "", func(c *Config) bool { return !c.preload }},
		{"preload as Go booleans", map[string]string{"FALOCAL_PRELOAD": "t"}, nil, "", func(c *Config) bool { return c.preload && c.preloadIDs == nil }},
		{"preload all by name", nil, []string{"-preload=all"}, "", func(c *Config) bool { return c.preload && c.preloadIDs == nil }},
		{"per-model providers, unknown", nil, []string{"-model-providers", "a=rocm"}, "-model-providers", nil},
		{"per-model providers, precision on cuda", nil, []string{"-model-providers", "a=cuda:fp16"}, "only tensorrt", nil},
		{"per-model providers, no name", nil, []string{"-model-providers", "=cuda"}, "want name=providers", nil},
		{"per-model providers, empty list", nil, []string{"-model-providers", "a="}, "no providers", nil},
		{"per-model providers, twice", nil, []string{"-model-providers", "a=cpu;a=cuda"}, "named twice", nil},
		{"cuda options", map[string]string{"FALOCAL_CUDA_OPTIONS": "cudnn_conv_algo_search=HEURISTIC, prefer_nhwc=1"}, nil, "", func(c *Config) bool {
			return len(c.cudaOptions) == 2 && c.cudaOptions["cudnn_conv_algo_search"] == "HEURISTIC" && c.cudaOptions["prefer_nhwc"] == "1" &&
				newSessionPolicy(c, nil).spec("m", "p", nil, nil).CUDAOptions["prefer_nhwc"] == "1"
		}},
		{"cuda options, no value", nil, []string{"-cuda-options", "prefer_nhwc"}, "want key=value", nil},
		{"cuda options, bad name", nil, []string{"-cuda-options", "Prefer-NHWC=1"}, "not an ONNX Runtime option name", nil},
		{"cuda options, device", nil, []string{"-cuda-options", "device_id=1"}, "-device", nil},
		{"cuda options, twice", nil, []string{"-cuda-options", "prefer_nhwc=1,prefer_nhwc=0"}, "named twice", nil},
		{"bad per-model keep-alive", nil, []string{"-keep-alive", "isnet=soon"}, "-keep-alive", nil},
		{"per-model batch", nil, []string{"-batch", "model=isnet-general-use:4:5ms,realesrgan-x4fast:8"}, "", func(c *Config) bool {
			return c.batchModels["isnet-general-use"] == batchSetting{4, 5 * time.Millisecond} && c.batchModels["realesrgan-x4fast"] == batchSetting{8, -1}
		}},
		{"bad per-model batch", nil, []string{"-batch", "isnet:0"}, "-batch", nil},
		{"bad batch env", map[string]string{"FALOCAL_BATCH_MAX": "x"}, nil, "FALOCAL_BATCH_MAX", nil},
		{"batch off", nil, []string{"-batch-max", "1"}, "", func(c *Config) bool { return c.BatchMax == 1 }},
		{"bad batch max", nil, []string{"-batch-max", "0"}, "-batch-max", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			cfg, _, err := parse("serve", c.args, io.Discard, func(*flag.FlagSet) {})
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(cfg) {
				t.Errorf("config %+v", cfg)
			}
		})
	}
}

func TestCheckExposure(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:8080": true, "localhost:1": true, "[::1]:8080": true,
		"0.0.0.0:8080": false, ":8080": false, "10.0.0.5:80": false} {
		if err := checkExposure(addr, nil); (err == nil) != ok {
			t.Errorf("%s without keys: %v", addr, err)
		}
		if err := checkExposure(addr, []string{"a:b"}); err != nil {
			t.Errorf("%s with keys: %v", addr, err)
		}
	}
}
