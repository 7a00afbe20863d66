// Package engine holds the pure-Go contracts for running models: a Runtime
// that opens Sessions, host Tensors, execution providers, and a Pool that
// shares sessions between concurrent requests. Implementations (engine/ort,
// engine/enginetest) live in their own packages.
package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/falocal/falocal/kernels"
)

// DType is a tensor element type.
type DType int

// Element types the pipelines use.
const (
	Float32 DType = iota + 1
	Float16
	Uint8
	Int32
	Int64
	Bool // one byte per element, 0 or 1
)

func (d DType) String() string {
	switch d {
	case Float32:
		return "float32"
	case Float16:
		return "float16"
	case Uint8:
		return "uint8"
	case Int32:
		return "int32"
	case Int64:
		return "int64"
	case Bool:
		return "bool"
	}
	return fmt.Sprintf("dtype(%d)", int(d))
}

// Size is the element size in bytes.
func (d DType) Size() int {
	switch d {
	case Float32, Int32:
		return 4
	case Float16:
		return 2
	case Uint8, Bool:
		return 1
	case Int64:
		return 8
	}
	return 0
}

// Tensor is a dense host tensor. Float32 data lives in F32; every other type
// in Raw as little-endian bytes.
type Tensor struct {
	DType DType
	Shape []int64
	F32   []float32
	Raw   []byte
}

// NewFloat32 wraps data (not copied) as a float32 tensor.
func NewFloat32(data []float32, shape ...int64) (*Tensor, error) {
	if n := Elements(shape); n != int64(len(data)) {
		return nil, fmt.Errorf("shape %v needs %d elements, have %d", shape, n, len(data))
	}
	return &Tensor{DType: Float32, Shape: shape, F32: data}, nil
}

// Elements is the product of the dimensions.
func Elements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// TensorInfo describes a model input or output. Dynamic dimensions are -1.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int64
}

// Provider is an execution provider.
type Provider string

// The execution providers the engine knows.
const (
	CPU      Provider = "cpu"
	CUDA     Provider = "cuda"
	TensorRT Provider = "tensorrt"
)

// ParseProviders parses a comma list such as "tensorrt,cuda,cpu".
func ParseProviders(s string) ([]Provider, error) {
	var out []Provider
	for _, p := range strings.Split(s, ",") {
		switch q := Provider(strings.ToLower(strings.TrimSpace(p))); q {
		case CPU, CUDA, TensorRT:
			out = append(out, q)
		case "":
		default:
			return nil, fmt.Errorf("unknown execution provider %q (want cpu, cuda or tensorrt)", p)
		}
	}
	return out, nil
}

// SessionSpec says what to load and how.
type SessionSpec struct {
	Path    string   // ONNX file
	Inputs  []string // input names, in the order Run takes them
	Outputs []string // output names, in the order Run returns them
	// Providers in priority order; the CPU provider is always the last resort.
	Providers []Provider
	// IntraOpThreads is the thread count inside one operator (0 = runtime default).
	IntraOpThreads int
	// DeviceID picks the GPU for CUDA and TensorRT.
	DeviceID int
	// TensorRTCacheDir keeps built TensorRT engines between starts.
	TensorRTCacheDir string
	// FP16 lets TensorRT build fp16 engines.
	FP16 bool
	// CUDAOptions are extra ONNX Runtime CUDA provider options (its names,
	// e.g. cudnn_conv_algo_search, prefer_nhwc), passed as given.
	CUDAOptions map[string]string
}

// Session is a loaded model. Run may be called from several goroutines.
type Session interface {
	// Run executes the model. outputShapes gives the shapes of outputs
	// whose declared shapes are dynamic, by name (nil when none): the ONNX
	// Runtime binding needs them for float16 outputs, which it cannot let
	// the runtime allocate. A cancelled ctx interrupts a running inference
	// and Run returns an error wrapping ctx.Err().
	Run(ctx context.Context, inputs []*Tensor, outputShapes map[string][]int64) ([]*Tensor, error)
	Inputs() []TensorInfo
	Outputs() []TensorInfo
	// Providers reports the providers the session actually got.
	Providers() []Provider
	Close() error
}

// Info describes a runtime for logs and /healthz.
type Info struct {
	Library   string
	Version   string
	Providers []Provider // usable providers
	// Unavailable maps a provider to why it cannot be used.
	Unavailable map[Provider]string
}

// Runtime opens sessions.
type Runtime interface {
	Open(ctx context.Context, spec SessionSpec) (Session, error)
	Info() Info
}

// Ops are the between-model operations (resize, normalise, composite...).
type Ops = kernels.Kernels

// CPUOps returns the reference implementation of Ops.
func CPUOps() Ops { return kernels.CPU{} }

// ErrClosed reports use of a closed pool or session.
var ErrClosed = errors.New("engine: closed")
