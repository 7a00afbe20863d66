//go:build !cgo

package weights

import "testing"

func runFloat16Upscalers(t *testing.T, _ *Store) {
	t.Log("built without cgo: the ONNX Runtime checks are skipped")
}
