//go:build !cgo

package weights

import "testing"

func runUpscalers(t *testing.T, _ *Store, _ map[string][2][]byte) {
	t.Log("built without cgo: the ONNX Runtime checks are skipped")
}
