package ort

import "fmt"

// PlaceKind is the kind of memory a bound tensor lives in.
type PlaceKind uint8

// Memory kinds for IO binding.
const (
	PlaceCPU        PlaceKind = iota // host memory
	PlaceCUDA                        // device memory of CUDA device Place.Device
	PlaceCUDAPinned                  // page-locked host memory (cudaHostAlloc) for device Place.Device
)

// Place says where a bound tensor's memory is: ORT's OrtMemoryInfo
// ("Cpu", "Cuda" or "CudaPinned", with the device ordinal).
type Place struct {
	Kind   PlaceKind
	Device int // CUDA device ordinal; 0 for CPU
}

// CPUPlace is host memory.
func CPUPlace() Place { return Place{Kind: PlaceCPU} }

// CUDAPlace is device memory on CUDA device dev.
func CUDAPlace(dev int) Place { return Place{Kind: PlaceCUDA, Device: dev} }

// CUDAPinnedPlace is page-locked host memory for CUDA device dev.
func CUDAPinnedPlace(dev int) Place { return Place{Kind: PlaceCUDAPinned, Device: dev} }

func (p Place) String() string {
	switch p.Kind {
	case PlaceCPU:
		return "cpu"
	case PlaceCUDA:
		return fmt.Sprintf("cuda:%d", p.Device)
	case PlaceCUDAPinned:
		return fmt.Sprintf("cuda_pinned:%d", p.Device)
	}
	return fmt.Sprintf("place(%d):%d", p.Kind, p.Device)
}

// OnHost reports whether the CPU can read the memory directly.
func (p Place) OnHost() bool { return p.Kind == PlaceCPU || p.Kind == PlaceCUDAPinned }
