//go:build !cuda

package cuda

import (
	"errors"
	"testing"
)

func TestNewWithoutTag(t *testing.T) {
	d, err := New()
	if !errors.Is(err, ErrCUDANotBuilt) || d != nil {
		t.Fatalf("New() = %v, %v; want nil, ErrCUDANotBuilt", d, err)
	}
}
