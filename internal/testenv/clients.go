package testenv

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// Node returns the node binary and the node_modules folder into which
// `make client-deps` installed tests/clients/js's locked packages
// ($FALOCAL_TEST_NODE_MODULES). Like the other assets, a missing one fails
// under `make test` and skips a test run by hand.
func Node(t testing.TB) (node, modules string) {
	t.Helper()
	modules = env(t, "FALOCAL_TEST_NODE_MODULES", "the JS client packages")
	if _, err := exec.LookPath("node"); err != nil {
		missing(t, "node (Node.js 20 or later)")
	}
	node, _ = exec.LookPath("node")
	return node, modules
}

// ClientPython returns the interpreter of the virtual environment into which
// `make client-deps` installed tests/clients/python's hash-pinned
// requirements ($FALOCAL_TEST_PYTHON).
func ClientPython(t testing.TB) string {
	t.Helper()
	p := env(t, "FALOCAL_TEST_PYTHON", "the Python client's virtual environment")
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}
