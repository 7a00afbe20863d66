package kernels

import "math"

// axisMap holds, for each output coordinate along one axis, the two source
// indices and the weight of the second, so the per-pixel loop does no
// floating-point index math.
type axisMap struct {
	i0, i1 []int32
	t      []float32
}

// newAxisMap maps dst output positions onto src input positions using
// half-pixel centres (OpenCV INTER_LINEAR / PIL without antialias):
// f = (x+0.5)*src/dst - 0.5, clamped to the edge. Clamping both indices
// (rather than the weight) yields the same value as OpenCV's rule because
// the two samples coincide there.
func newAxisMap(src, dst int) axisMap {
	m := axisMap{i0: make([]int32, dst), i1: make([]int32, dst), t: make([]float32, dst)}
	scale := float64(src) / float64(dst)
	last := src - 1
	for x := range dst {
		f := (float64(x)+0.5)*scale - 0.5
		fl := math.Floor(f)
		i := int(fl)
		m.t[x] = float32(f - fl)
		m.i0[x] = int32(min(max(i, 0), last))
		m.i1[x] = int32(min(max(i+1, 0), last))
	}
	return m
}

// ImageToTensor implements Kernels.
func (CPU) ImageToTensor(dst []float32, src []uint8, w, h, stride, c, outW, outH int, scale float32, mean, std [3]float32) error {
	if err := checkToTensor("ImageToTensor", len(dst), src, w, h, stride, c, outW, outH, scale, std); err != nil {
		return err
	}
	imageToTensor(dst, nil, src, w, h, stride, c, outW, outH, scale, mean, std)
	return nil
}

// ImageToTensorF16 implements Kernels.
func (CPU) ImageToTensorF16(dst []uint16, src []uint8, w, h, stride, c, outW, outH int, scale float32, mean, std [3]float32) error {
	if err := checkToTensor("ImageToTensorF16", len(dst), src, w, h, stride, c, outW, outH, scale, std); err != nil {
		return err
	}
	imageToTensor(nil, dst, src, w, h, stride, c, outW, outH, scale, mean, std)
	return nil
}

func checkToTensor(op string, dstLen int, src []uint8, w, h, stride, c, outW, outH int, scale float32, std [3]float32) error {
	if err := checkImage(op, src, w, h, stride, c); err != nil {
		return err
	}
	n, ok := area(3, outW, outH)
	if !ok {
		return argErr(op, "output size %dx%d must be positive and not huge", outW, outH)
	}
	if dstLen != n {
		return argErr(op, "len(dst)=%d, want 3*%d*%d=%d", dstLen, outH, outW, n)
	}
	if scale == 0 || std[0] == 0 || std[1] == 0 || std[2] == 0 {
		return argErr(op, "scale %v and std %v must be non-zero", scale, std)
	}
	return nil
}

// imageToTensor does the separable resize: each needed source row is
// interpolated horizontally once into a per-worker cache (upscaling reuses
// it for several output rows), then rows are blended vertically and
// normalised. Exactly one of dst32 and dst16 is non-nil.
func imageToTensor(dst32 []float32, dst16 []uint16, src []uint8, w, h, stride, c, outW, outH int, scale float32, mean, std [3]float32) {
	xm := newAxisMap(w, outW)
	ym := newAxisMap(h, outH)
	// out = v*a + b equals (v/scale - mean)/std up to rounding; folding the
	// divisions keeps the inner loop to one multiply-add.
	var a, b [3]float32
	for k := range 3 {
		a[k] = float32(1 / (float64(scale) * float64(std[k])))
		b[k] = float32(-float64(mean[k]) / float64(std[k]))
	}
	nc := 3
	if c == 1 {
		nc = 1 // gray: interpolate once, normalise into three planes
	}
	plane := outW * outH
	parallelFor(outH, 16, func(lo, hi int) {
		var r0, r1 [3][]float32
		for k := range nc {
			r0[k] = make([]float32, outW)
			r1[k] = make([]float32, outW)
		}
		var tmp []float32
		if dst16 != nil {
			tmp = make([]float32, outW)
		}
		idx0, idx1 := -1, -1 // source rows cached in r0, r1
		for y := lo; y < hi; y++ {
			sy0, sy1 := int(ym.i0[y]), int(ym.i1[y])
			if idx0 != sy0 {
				if idx1 == sy0 {
					r0, r1 = r1, r0
					idx0, idx1 = idx1, idx0
				} else {
					hRowU8(r0[:nc], src[sy0*stride:], c, &xm)
					idx0 = sy0
				}
			}
			if sy1 != sy0 && idx1 != sy1 {
				hRowU8(r1[:nc], src[sy1*stride:], c, &xm)
				idx1 = sy1
			}
			ty := ym.t[y]
			if sy1 == sy0 {
				ty = 0 // both samples are the same row
			}
			uy := 1 - ty
			for k := range 3 {
				kk := min(k, nc-1)
				p0, p1 := r0[kk], r1[kk]
				if sy1 == sy0 {
					p1 = p0
				}
				off := k*plane + y*outW
				var out []float32
				if dst32 != nil {
					out = dst32[off : off+outW]
				} else {
					out = tmp
				}
				ak, bk := a[k], b[k]
				p0, p1 = p0[:outW], p1[:outW]
				for x := range out {
					out[x] = (p0[x]*uy+p1[x]*ty)*ak + bk
				}
				if dst16 != nil {
					f32ToF16Slice(dst16[off:off+outW], tmp)
				}
			}
		}
	})
}

// hRowU8 interpolates one interleaved source row horizontally into
// len(dst) planar rows (1 for gray, else the first 3 channels).
func hRowU8(dst [][]float32, row []uint8, c int, xm *axisMap) {
	i0, i1, t := xm.i0, xm.i1, xm.t
	if len(dst) == 1 {
		d := dst[0][:len(t)]
		for x := range d {
			tx := t[x]
			d[x] = float32(row[i0[x]])*(1-tx) + float32(row[i1[x]])*tx
		}
		return
	}
	d0, d1, d2 := dst[0][:len(t)], dst[1][:len(t)], dst[2][:len(t)]
	for x := range d0 {
		tx := t[x]
		ux := 1 - tx
		p := row[int(i0[x])*c:]
		q := row[int(i1[x])*c:]
		p, q = p[:3], q[:3]
		d0[x] = float32(p[0])*ux + float32(q[0])*tx
		d1[x] = float32(p[1])*ux + float32(q[1])*tx
		d2[x] = float32(p[2])*ux + float32(q[2])*tx
	}
}

// ResizePlane implements Kernels.
func (CPU) ResizePlane(dst []float32, dw, dh int, src []float32, sw, sh int) error {
	const op = "ResizePlane"
	sn, ok := area(sw, sh)
	if !ok {
		return argErr(op, "source size %dx%d must be positive and not huge", sw, sh)
	}
	dn, ok := area(dw, dh)
	if !ok {
		return argErr(op, "destination size %dx%d must be positive and not huge", dw, dh)
	}
	if len(src) != sn {
		return argErr(op, "len(src)=%d, want %d*%d=%d", len(src), sw, sh, sn)
	}
	if len(dst) != dn {
		return argErr(op, "len(dst)=%d, want %d*%d=%d", len(dst), dw, dh, dn)
	}
	xm := newAxisMap(sw, dw)
	ym := newAxisMap(sh, dh)
	parallelFor(dh, 16, func(lo, hi int) {
		r0 := make([]float32, dw)
		r1 := make([]float32, dw)
		idx0, idx1 := -1, -1
		for y := lo; y < hi; y++ {
			sy0, sy1 := int(ym.i0[y]), int(ym.i1[y])
			if idx0 != sy0 {
				if idx1 == sy0 {
					r0, r1 = r1, r0
					idx0, idx1 = idx1, idx0
				} else {
					hRowF32(r0, src[sy0*sw:(sy0+1)*sw], &xm)
					idx0 = sy0
				}
			}
			out := dst[y*dw : (y+1)*dw]
			ty := ym.t[y]
			// A zero weight must not touch the other row: 0*Inf would
			// turn an exact copy into NaN.
			if sy1 == sy0 || ty == 0 {
				copy(out, r0)
				continue
			}
			if idx1 != sy1 {
				hRowF32(r1, src[sy1*sw:(sy1+1)*sw], &xm)
				idx1 = sy1
			}
			uy := 1 - ty
			p0, p1 := r0[:len(out)], r1[:len(out)]
			for x := range out {
				out[x] = p0[x]*uy + p1[x]*ty
			}
		}
	})
	return nil
}

// hRowF32 interpolates one float32 row horizontally.
func hRowF32(dst, row []float32, xm *axisMap) {
	i0, i1, t := xm.i0, xm.i1, xm.t
	dst = dst[:len(t)]
	for x := range dst {
		tx := t[x]
		if tx == 0 {
			dst[x] = row[i0[x]] // exact copy, see ResizePlane
			continue
		}
		dst[x] = row[i0[x]]*(1-tx) + row[i1[x]]*tx
	}
}
