// Package testenv finds the real assets that `make test` installs (the ONNX
// Runtime library, the model store, pinned photographs) for tests that need
// them. Run through make, a missing asset fails the test; run by hand
// without them, such tests skip with a reason.
package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// required is true under `make test` (FALOCAL_REQUIRE_ASSETS=1): then a missing
// asset is a failure, not a skip, so CI cannot pass by skipping.
func required() bool { return os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" }

func missing(t testing.TB, what string) {
	t.Helper()
	if required() {
		t.Fatalf("%s is missing (run 'make test', which installs it)", what)
	}
	t.Skipf("%s not available; 'make test' installs it", what)
}

func env(t testing.TB, name, what string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		missing(t, what+" ($"+name+")")
	}
	if _, err := os.Stat(v); err != nil {
		missing(t, what+" at "+v)
	}
	return v
}

// ORTLibrary returns the path of libonnxruntime.
func ORTLibrary(t testing.TB) string {
	t.Helper()
	return env(t, "FALOCAL_TEST_ORT", "the ONNX Runtime library")
}

// DataDir returns the data directory whose model store setup filled.
func DataDir(t testing.TB) string {
	t.Helper()
	return env(t, "FALOCAL_TEST_DATA_DIR", "the model store")
}

// Asset returns the path of a pinned test file (e.g. "astronaut.png").
func Asset(t testing.TB, name string) string {
	t.Helper()
	dir := env(t, "FALOCAL_TEST_ASSETS", "the test photographs")
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		missing(t, "test asset "+p)
	}
	return p
}

// ServerBinary returns a built falocal binary, if make provided one.
func ServerBinary() string { return os.Getenv("FALOCAL_TEST_BIN") }
