package upscale

import (
	"context"
	"fmt"
	"image"
	"math"
	"runtime"
	"sync"
	"time"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/pipelines"
)

// Runner runs a model (an *engine.Pool, a *pipelines.Net).
type Runner interface {
	Do(ctx context.Context, r engine.Run) ([]*engine.Tensor, error)
}

// minPad is the least context kept around a tile: the bicubic resampling
// of the native output reads up to 2 native pixels per input pixel of
// scale beyond a tile's edge.
const minPad = 4

// maxBatchPixels bounds the model input pixels of one run: windows of
// the same shape go through the model together up to this many pixels
// (at least one window per run).
const maxBatchPixels = 256 * 256

// Upscale runs the model (native scale ns) over img in tiles of side tile
// with pad pixels of context on each side and resamples the result to
// ow×oh. Every tile is read through a window of the same size, kept inside
// the image (at a border the window shifts inward rather than being
// padded), so tiles batch together and each tile sees at least pad pixels
// of real context on its inner sides, or the image border itself. The
// alpha channel, if any pixel is not opaque, is resized bicubically and
// re-attached.
func Upscale(ctx context.Context, req *pipelines.Request, m Runner, ns, pad, tile int, img *image.NRGBA, ow, oh int) (*image.NRGBA, error) {
	b := img.Bounds()
	W, H := b.Dx(), b.Dy()
	if W <= 0 || H <= 0 || ow <= 0 || oh <= 0 || ns <= 0 || tile <= 0 {
		return nil, fmt.Errorf("upscale: bad sizes %dx%d → %dx%d (×%d, tile %d)", W, H, ow, oh, ns, tile)
	}
	pad = max(pad, minPad)
	sx, sy := min(tile+2*pad, W), min(tile+2*pad, H)
	nx, ny := (W+tile-1)/tile, (H+tile-1)/tile
	n := nx * ny
	batch := min(n, max(1, maxBatchPixels/(sx*sy)))
	NW, NH := W*ns, H*ns
	xw, yw := newAxis(ow, NW), newAxis(oh, NH)
	out := image.NewNRGBA(image.Rect(0, 0, ow, oh))
	plane := sx * sy
	for first := 0; first < n; first += batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		k := min(batch, n-first)
		data := make([]float32, k*3*plane)
		type place struct{ x0, x1, y0, y1, ox, oy int }
		places := make([]place, k)
		for j := range k {
			i := first + j
			tx, ty := i%nx, i/nx
			pl := place{x0: tx * tile, y0: ty * tile}
			pl.x1, pl.y1 = min(W, pl.x0+tile), min(H, pl.y0+tile)
			pl.ox = min(max(pl.x0-pad, 0), W-sx)
			pl.oy = min(max(pl.y0-pad, 0), H-sy)
			places[j] = pl
			dst := data[j*3*plane : (j+1)*3*plane]
			for y := range sy {
				row := img.Pix[(pl.oy+y)*img.Stride+pl.ox*4:]
				for x := range sx {
					for c := range 3 {
						dst[c*plane+y*sx+x] = float32(row[4*x+c]) / 255
					}
				}
			}
		}
		t, err := engine.NewFloat32(data, int64(k), 3, int64(sy), int64(sx))
		if err != nil {
			return nil, err
		}
		var st engine.RunStats
		outs, err := m.Do(ctx, engine.Run{Inputs: []*engine.Tensor{t}, Stats: &st})
		if err != nil {
			return nil, err
		}
		if st.Batch > 1 {
			req.Logf(pipelines.Info, "tiles %d-%d ran in one batch with %d other request(s) (%d tiles; waited %s, ran %s)",
				first+1, first+k, st.Batch-1, st.Rows, st.Wait.Round(time.Millisecond), st.Compute.Round(time.Millisecond))
		}
		r := outs[0]
		nsx, nsy := sx*ns, sy*ns
		if want := []int64{int64(k), 3, int64(nsy), int64(nsx)}; r.DType != engine.Float32 || fmt.Sprint(r.Shape) != fmt.Sprint(want) || len(r.F32) != k*3*nsx*nsy {
			return nil, fmt.Errorf("upscale: model returned %s %v, want float32 %v", r.DType, r.Shape, want)
		}
		for j, pl := range places {
			nat := r.F32[j*3*nsx*nsy : (j+1)*3*nsx*nsy]
			for i, v := range nat {
				nat[i] = min(max(v, 0), 1) // as Real-ESRGAN clamps before its outscale resize
			}
			X0, X1 := pl.x0*ow/W, pl.x1*ow/W
			Y0, Y1 := pl.y0*oh/H, pl.y1*oh/H
			if err := resample(out, nat, 3, nsx, nsy, pl.ox*ns, pl.oy*ns, xw, yw, X0, X1, Y0, Y1); err != nil {
				return nil, err
			}
			req.Logf(pipelines.Info, "tile %d/%d", first+j+1, n)
		}
	}
	if err := attachAlpha(out, img); err != nil {
		return nil, err
	}
	return out, nil
}

// attachAlpha resizes img's alpha bicubically onto out, unless img is
// opaque (out's alpha is then set to 255).
func attachAlpha(out, img *image.NRGBA) error {
	W, H := img.Bounds().Dx(), img.Bounds().Dy()
	opaque := true
	for y := 0; y < H && opaque; y++ {
		row := img.Pix[y*img.Stride:]
		for x := range W {
			if row[4*x+3] != 255 {
				opaque = false
				break
			}
		}
	}
	if opaque {
		for i := 3; i < len(out.Pix); i += 4 {
			out.Pix[i] = 255
		}
		return nil
	}
	a := make([]float32, W*H)
	for y := range H {
		row := img.Pix[y*img.Stride:]
		for x := range W {
			a[y*W+x] = float32(row[4*x+3]) / 255
		}
	}
	ow, oh := out.Bounds().Dx(), out.Bounds().Dy()
	return resample(out, a, 1, W, H, 0, 0, newAxis(ow, W), newAxis(oh, H), 0, ow, 0, oh)
}

// axis holds, for each output coordinate, the source taps of a Catmull-Rom
// resize (widened when shrinking, as PIL does) over the whole source axis,
// edge-clamped.
type axis struct {
	idx [][]int
	w   [][]float32
}

func cubic(x float64) float64 {
	const a = -0.5
	x = math.Abs(x)
	switch {
	case x < 1:
		return ((a+2)*x-(a+3))*x*x + 1
	case x < 2:
		return ((a*x-5*a)*x+8*a)*x - 4*a
	}
	return 0
}

func newAxis(out, in int) *axis {
	ax := &axis{idx: make([][]int, out), w: make([][]float32, out)}
	if out == in {
		for i := range out {
			ax.idx[i], ax.w[i] = []int{i}, []float32{1}
		}
		return ax
	}
	r := float64(in) / float64(out)
	f := max(r, 1)
	sup := 2 * f
	for i := range out {
		c := (float64(i)+0.5)*r - 0.5
		lo, hi := int(math.Floor(c-sup))+1, int(math.Floor(c+sup))
		var idx []int
		var ws []float64
		var sum float64
		for j := lo; j <= hi; j++ {
			wt := cubic((float64(j) - c) / f)
			if wt == 0 {
				continue
			}
			idx = append(idx, min(max(j, 0), in-1))
			ws = append(ws, wt)
			sum += wt
		}
		w32 := make([]float32, len(ws))
		for k := range ws {
			w32[k] = float32(ws[k] / sum)
		}
		ax.idx[i], ax.w[i] = idx, w32
	}
	return ax
}

// resample writes output pixels [X0,X1)×[Y0,Y1) of a resize whose source is
// a c-plane float image, of which src holds the sw×sh window at (ox,oy).
// c == 3 writes RGB, c == 1 alpha. Values are clamped to [0,1].
func resample(out *image.NRGBA, src []float32, c, sw, sh, ox, oy int, xw, yw *axis, X0, X1, Y0, Y1 int) error {
	if X1 <= X0 || Y1 <= Y0 {
		return nil
	}
	inWin := func(ax *axis, lo, hi, o, size int) error {
		for i := lo; i < hi; i++ {
			for _, j := range ax.idx[i] {
				if j < o || j >= o+size {
					return fmt.Errorf("upscale: output %d needs source %d outside the tile window [%d,%d)", i, j, o, o+size)
				}
			}
		}
		return nil
	}
	if err := inWin(xw, X0, X1, ox, sw); err != nil {
		return err
	}
	if err := inWin(yw, Y0, Y1, oy, sh); err != nil {
		return err
	}
	// Rows of the window that the vertical pass reads.
	rlo, rhi := sh, 0
	for Y := Y0; Y < Y1; Y++ {
		for _, j := range yw.idx[Y] {
			rlo, rhi = min(rlo, j-oy), max(rhi, j-oy+1)
		}
	}
	tw := X1 - X0
	tmp := make([]float32, c*(rhi-rlo)*tw)
	parallel(rhi-rlo, func(lo, hi int) {
		for ch := range c {
			for r := lo; r < hi; r++ {
				row := src[ch*sw*sh+(rlo+r)*sw:]
				dst := tmp[(ch*(rhi-rlo)+r)*tw:]
				for X := X0; X < X1; X++ {
					var s float32
					ws := xw.w[X]
					for k, j := range xw.idx[X] {
						s += row[j-ox] * ws[k]
					}
					dst[X-X0] = s
				}
			}
		}
	})
	parallel(Y1-Y0, func(lo, hi int) {
		for Y := Y0 + lo; Y < Y0+hi; Y++ {
			o := out.Pix[Y*out.Stride:]
			for ch := range c {
				base := ch * (rhi - rlo) * tw
				for X := X0; X < X1; X++ {
					var s float32
					ws := yw.w[Y]
					for k, j := range yw.idx[Y] {
						s += tmp[base+(j-oy-rlo)*tw+X-X0] * ws[k]
					}
					v := uint8(math.Round(float64(min(max(s, 0), 1)) * 255))
					if c == 1 {
						o[4*X+3] = v
					} else {
						o[4*X+ch] = v
					}
				}
			}
		}
	})
	return nil
}

// parallel splits [0,n) over the CPUs; fn's results must not depend on the
// split.
func parallel(n int, fn func(lo, hi int)) {
	w := min(runtime.GOMAXPROCS(0), max(1, n/16))
	if w <= 1 {
		fn(0, n)
		return
	}
	chunk := (n + w - 1) / w
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += chunk {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			fn(lo, hi)
		}(lo, min(n, lo+chunk))
	}
	wg.Wait()
}
