package main

import (
	"bytes"
	"log/slog"
	"testing"
)

func TestDeviceBudget(t *testing.T) {
	const gib = 1 << 30
	cases := []struct {
		flag         string
		avail, total int64
		want         int64
		wantErr      bool
	}{
		{"", 100 * gib, 141 * gib, 90 * gib, false},
		{"50%", 100 * gib, 140 * gib, 70 * gib, false},
		{"8GiB", 100 * gib, 140 * gib, 8 * gib, false},
		{"0", 100 * gib, 140 * gib, 0, false},
		{"lots", 100 * gib, 140 * gib, 0, true},
	}
	for _, tc := range cases {
		got, err := deviceBudget(tc.flag, tc.avail, tc.total)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("deviceBudget(%q, %d, %d) = %d, %v; want %d (error %v)", tc.flag, tc.avail, tc.total, got, err, tc.want, tc.wantErr)
		}
	}
}

// On the CPU the budget is the one read from the flags and no device opens.
func TestSetupGPUOnCPU(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	c := &Config{memoryBudget: 12345}
	if budget, g := setupGPU(c, "cpu", log, nil); budget != 12345 || g != nil {
		t.Fatalf("cpu: budget %d, gpu %v", budget, g)
	}
	if gpuBuilt {
		return // the cuda build's device test is in gpu_cuda_test.go
	}
	if budget, g := setupGPU(c, "cuda:0", log, nil); budget != 12345 || g != nil {
		t.Fatalf("cuda without the tag: budget %d, gpu %v", budget, g)
	}
	if !bytes.Contains(logs.Bytes(), []byte("built without -tags cuda")) {
		t.Errorf("no log line says why there is no pool: %s", logs.String())
	}
}
