//go:build !cuda

package cuda

import "github.com/falocal/falocal/kernels"

// Device is a CUDA device. Without -tags cuda it cannot be created; the
// embedded CPU reference only keeps the method set identical to the cuda
// build so callers compile either way.
type Device struct{ kernels.CPU }

var (
	_ kernels.Kernels  = (*Device)(nil)
	_ kernels.Extended = (*Device)(nil)
)

// New returns ErrCUDANotBuilt: this binary was built without -tags cuda.
func New(opts ...Option) (*Device, error) { return nil, ErrCUDANotBuilt }

// Name returns ErrCUDANotBuilt.
func (*Device) Name() (string, error) { return "", ErrCUDANotBuilt }

// MemInfo returns ErrCUDANotBuilt.
func (*Device) MemInfo() (free, total int64, err error) { return 0, 0, ErrCUDANotBuilt }

// Close does nothing.
func (*Device) Close() error { return nil }
