package diffusion

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/weights"
)

func TestConform(t *testing.T) {
	f32 := func(shape []int64, v ...float32) *engine.Tensor { return tensor(v, shape...) }
	sig := func(elem int32, dims ...int64) weights.ValueInfo {
		return weights.ValueInfo{Name: "x", Elem: elem, Dims: append([]int64{}, dims...), DimNames: make([]string, len(dims))}
	}
	for _, c := range []struct {
		name  string
		in    *engine.Tensor
		want  weights.ValueInfo
		batch int64
		dtype engine.DType
		shape []int64
		vals  []float64
		err   string
	}{
		{"same", f32([]int64{2}, 999, 999), sig(1, -1), 2, engine.Float32, []int64{2}, []float64{999, 999}, ""},
		{"scalar timestep", f32([]int64{2}, 978.5, 978.5), sig(1), 2, engine.Float32, []int64{}, []float64{978.5}, ""},
		{"int64 timestep truncates", f32([]int64{2}, 978.5, 978.5), sig(7, -1), 2, engine.Int64, []int64{2}, []float64{978, 978}, ""},
		{"int64 scalar", f32([]int64{1}, 3.9), sig(7), 1, engine.Int64, []int64{}, []float64{3}, ""},
		{"batched ids", f32([]int64{2, 3}, 0, 0, 1, 0, 1, 0), sig(7, -1, -1, 3), 2, engine.Int64, []int64{2, 2, 3}, []float64{0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0}, ""},
		{"leading one dropped", f32([]int64{1, 2, 3}, 0, 0, 1, 0, 1, 0), sig(1, -1, 3), 1, engine.Float32, []int64{2, 3}, []float64{0, 0, 1, 0, 1, 0}, ""},
		{"int32 ids", tokenIDs([][]int64{{49406, 320, 49407}}), sig(6, -1, -1), 1, engine.Int32, []int64{1, 3}, []float64{49406, 320, 49407}, ""},
		{"scalar from different rows", f32([]int64{2}, 1, 2), sig(1), 2, 0, nil, nil, "different values"},
		{"static mismatch", f32([]int64{1, 4, 8, 8}, make([]float32, 256)...), sig(1, -1, 4, 64, 64), 1, 0, nil, nil, "declares shape [?, 4, 64, 64]"},
		{"rank mismatch", f32([]int64{1, 4}, 1, 2, 3, 4), sig(1, -1, -1, -1, -1), 1, 0, nil, nil, "declares shape"},
		{"float16", f32([]int64{1}, 1), sig(10, -1), 1, 0, nil, nil, "float16"},
		{"no declared shape", f32([]int64{2}, 1.5, 2.5), weights.ValueInfo{Name: "x", Elem: 7}, 2, engine.Int64, []int64{2}, []float64{1, 2}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := conform(c.in, c.want, c.batch)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			vals, _ := float64s(got)
			if got.DType != c.dtype || !slices.Equal(got.Shape, c.shape) || !slices.Equal(vals, c.vals) {
				t.Fatalf("got %s %v %v, want %s %v %v", got.DType, got.Shape, vals, c.dtype, c.shape, c.vals)
			}
		})
	}
}

func TestSizeFor(t *testing.T) {
	grid64 := &Model{Name: "sd", Grid: 64}
	grid16 := &Model{Name: "flux", Grid: 16}
	fixed := &Model{Name: "sd-512", Grid: 64, Fixed: [][2]int{{512, 512}, {768, 512}}}
	for _, c := range []struct {
		m            *Model
		w, h         int
		chosen       bool
		gw, gh       int
		errSubstring string
	}{
		{grid64, 512, 512, true, 512, 512, ""},
		{grid64, 200, 136, true, 256, 192, ""}, // never floored to 192×128
		{grid64, 100, 70, true, 128, 128, ""},
		{grid16, 1000, 760, true, 1008, 768, ""},
		{fixed, 768, 512, true, 768, 512, ""},
		{fixed, 1024, 768, false, 512, 512, ""},
		{fixed, 1024, 768, true, 0, 0, "runs only at 512×512, 768×512"},
	} {
		gw, gh, err := c.m.SizeFor(c.w, c.h, c.chosen)
		if c.errSubstring != "" {
			if err == nil || !strings.Contains(err.Error(), c.errSubstring) {
				t.Errorf("%s %d×%d: err %v", c.m.Name, c.w, c.h, err)
			}
			continue
		}
		if err != nil || gw != c.gw || gh != c.gh {
			t.Errorf("%s %d×%d: %d×%d %v, want %d×%d", c.m.Name, c.w, c.h, gw, gh, err, c.gw, c.gh)
		}
	}
}

// guidanceEmbedding against the float64 formula; torch computes it in
// float32, whose rounding of the frequency step and the angle (up to
// 1000·w radians) bounds the difference: 1e-6 of the angle.
func TestGuidanceEmbedding(t *testing.T) {
	for _, c := range []struct {
		w   float64
		dim int
	}{{0.5, 8}, {7, 256}, {3.5, 7}} {
		got := guidanceEmbedding(c.w, c.dim)
		half := c.dim / 2
		for i := 0; i < half; i++ {
			a := c.w * 1000 * math.Exp(-float64(i)*math.Log(10000)/float64(half-1))
			tol := 1e-6 + 1e-6*a
			if math.Abs(float64(got[i])-math.Sin(a)) > tol || math.Abs(float64(got[half+i])-math.Cos(a)) > tol {
				t.Fatalf("w %g dim %d: [%d] = %g, %g; want %g, %g", c.w, c.dim, i, got[i], got[half+i], math.Sin(a), math.Cos(a))
			}
		}
		if c.dim%2 == 1 && got[c.dim-1] != 0 {
			t.Errorf("odd dim: last value %g, want the zero pad", got[c.dim-1])
		}
	}
}
