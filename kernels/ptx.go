package kernels

import (
	"embed"
	"path"
	"slices"
	"strings"
)

// The PTX is generated from kernels/*.cu by tools/cuda/build-ptx.sh and
// committed, so builds need no CUDA toolkit; ptx/SOURCES.sha256 records the
// sources it came from and TestPTXUpToDate fails when they drift.
//
//go:embed ptx/*.ptx ptx/SOURCES.sha256
var ptxFS embed.FS

// PTX returns the embedded PTX modules keyed by name (the .cu file name
// without extension), ready for cu.LoadData. Each module targets sm_80
// (PTX ISA 8.0): the driver JIT-compiles it for sm_80 and newer GPUs.
func PTX() map[string]string {
	files, err := ptxFS.ReadDir("ptx")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	m := make(map[string]string, len(files))
	for _, f := range files {
		name, ok := strings.CutSuffix(f.Name(), ".ptx")
		if !ok {
			continue
		}
		b, err := ptxFS.ReadFile(path.Join("ptx", f.Name()))
		if err != nil {
			panic(err)
		}
		m[name] = string(b)
	}
	return m
}

// Entry describes one extern "C" kernel in the embedded PTX.
//
// Launch convention (see image.cu): 1-D grid of 256-thread blocks, with the
// thread count noted per kernel in the .cu file: one thread per element for
// most, one per 8 elements for convert.cu's, one per 4 pixels for
// compose_alpha, and any count for the grid-stride image kernels
// (kernels/cuda picks it). Params has one letter per parameter,
// in order: 'p' a 64-bit device pointer, 'i' a 32-bit C int, 'f' a 32-bit
// C float. gorgonia.org/cu copies 8 bytes from each parameter pointer, so
// every argument needs its own 8-byte slot holding exactly that C type
// (int32 or float32 bits in the low half, never a float64 or a Go int).
type Entry struct {
	Module string // key in PTX()
	Name   string
	Params string
}

// entries must list every .visible .entry of every module; the test
// checks names, parameter counts and types against the PTX.
var entries = []Entry{
	{"blend", "blend_tile", "ppiiipiiiii"},
	{"blend", "normalize_blend", "ppii"},
	{"convert", "f16_to_f32", "ppi"},
	{"convert", "f32_to_f16", "ppi"},
	{"image", "compose_alpha", "ppiiiip"},
	{"image", "image_to_tensor", "ppiiiiiifffffff"},
	{"image", "image_to_tensor_f16", "ppiiiiiifffffff"},
	{"image", "resize_mask", "piipiiff"},
	{"image", "resize_plane", "piipii"},
	{"mel", "mel_filterbank", "ppiipif"},
	{"mel", "power_spectrum", "ppi"},
	{"step", "axpby", "ppfpfpfi"},
	{"step", "cfg_guidance", "pppfi"},
}

// Entries returns the kernel entry points of the embedded PTX.
func Entries() []Entry { return slices.Clone(entries) }
