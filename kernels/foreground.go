package kernels

// Blur radii of the two blur-fusion passes used by BiRefNet's
// refine_foreground: a wide pass to reach far into the background, then a
// narrow one to recover local colour.
const (
	fgRadius1 = 90
	fgRadius2 = 6
	fgEps     = 1e-5 // keeps the normalising divisions finite
)

// ForegroundEstimate implements Kernels.
func (CPU) ForegroundEstimate(dstF []float32, img []float32, alpha []float32, w, h int) error {
	const op = "ForegroundEstimate"
	n, ok := area(w, h)
	if !ok {
		return argErr(op, "size %dx%d must be positive and not huge", w, h)
	}
	if len(alpha) != n {
		return argErr(op, "len(alpha)=%d, want %d*%d=%d", len(alpha), w, h, n)
	}
	if len(img) != 3*n {
		return argErr(op, "len(img)=%d, want 3*%d*%d=%d", len(img), w, h, 3*n)
	}
	if len(dstF) != 3*n {
		return argErr(op, "len(dstF)=%d, want 3*%d*%d=%d", len(dstF), w, h, 3*n)
	}
	fe := newFgEstimator(w, h)
	// Clamp alpha so 1-a never goes negative; NaN becomes 0.
	for i, v := range alpha {
		if !(v > 0) {
			v = 0
		} else if v > 1 {
			v = 1
		}
		fe.a[i] = v
	}
	copy(dstF, img)
	copy(fe.b, img)
	fe.pass(dstF, img, fgRadius1)
	fe.pass(dstF, img, fgRadius2)
	return nil
}

// fgEstimator holds the scratch planes of ForegroundEstimate.
type fgEstimator struct {
	w, h, n int
	a       []float32 // clamped alpha
	b       []float32 // background estimate B, 3 planes
	work    []float32 // box(a), box(F*a) ×3, box(B*(1-a)) ×3
	tmp     []float32 // horizontal blur result for one plane
}

func newFgEstimator(w, h int) *fgEstimator {
	n := w * h
	return &fgEstimator{
		w: w, h: h, n: n,
		a:    make([]float32, n),
		b:    make([]float32, 3*n),
		work: make([]float32, 7*n),
		tmp:  make([]float32, n),
	}
}

// pass runs one blur-fusion step of radius r, updating f in place and
// fe.b to the blurred background:
//
//	F' = clamp(bF + a*(I - a*bF - (1-a)*bB), 0, 1),  B' = bB
//	bF = box(F*a)/(box(a)+eps),  bB = box(B*(1-a))/(1-box(a)+eps)
func (fe *fgEstimator) pass(f, img []float32, r int) {
	n, a, b, work := fe.n, fe.a, fe.b, fe.work
	parallelFor(n, 1<<15, func(lo, hi int) {
		copy(work[lo:hi], a[lo:hi])
		for k := range 3 {
			fa := work[(1+k)*n:][lo:hi]
			ba := work[(4+k)*n:][lo:hi]
			fk := f[k*n:][lo:hi]
			bk := b[k*n:][lo:hi]
			for i, av := range a[lo:hi] {
				fa[i] = fk[i] * av
				ba[i] = bk[i] * (1 - av)
			}
		}
	})
	for p := range 7 {
		plane := work[p*n : (p+1)*n]
		boxBlur(plane, plane, fe.tmp, fe.w, fe.h, r)
	}
	parallelFor(n, 1<<15, func(lo, hi int) {
		bA := work[lo:hi]
		aa := a[lo:hi]
		// The two denominators are shared by the three channels, so take
		// their reciprocals once per pixel.
		var ia, ib [1 << 10]float32
		for c0 := 0; c0 < len(aa); c0 += len(ia) {
			c1 := min(c0+len(ia), len(aa))
			for i, ba := range bA[c0:c1] {
				ia[i] = 1 / (ba + fgEps)
				ib[i] = 1 / ((1 - ba) + fgEps)
			}
			for k := range 3 {
				bFA := work[(1+k)*n+lo:][c0:c1]
				bB1A := work[(4+k)*n+lo:][c0:c1]
				ik := img[k*n+lo:][c0:c1]
				fk := f[k*n+lo:][c0:c1]
				bk := b[k*n+lo:][c0:c1]
				for i, av := range aa[c0:c1] {
					bf := bFA[i] * ia[i]
					bb := bB1A[i] * ib[i]
					v := bf + av*(ik[i]-av*bf-(1-av)*bb)
					fk[i] = min(max(v, 0), 1)
					bk[i] = bb
				}
			}
		}
	})
}

// boxBlur writes to dst the mean of src over the (2r+1)×(2r+1) window
// clipped to the w×h image, dividing by the clipped window's area so edges
// are not darkened. It is separable, O(1) per pixel for any r: rows use
// prefix sums, columns use running sums. tmp (w*h) holds the horizontal
// pass; dst may alias src but not tmp. Sums are float64 so cancellation in
// the differences stays far below float32 resolution.
func boxBlur(dst, src, tmp []float32, w, h, r int) {
	invW := invCounts(w, r)
	parallelFor(h, 32, func(lo, hi int) {
		prefix := make([]float64, w+1)
		for y := lo; y < hi; y++ {
			boxRow(tmp[y*w:(y+1)*w], src[y*w:(y+1)*w], r, prefix, invW)
		}
	})
	// Vertical pass over column strips: each strip keeps its own running
	// column sums and reads rows contiguously, so memory access stays
	// sequential and strips are independent.
	const strip = 256
	invH := invCounts(h, r)
	nStrips := (w + strip - 1) / strip
	parallelFor(nStrips, 1, func(lo, hi int) {
		sums := make([]float64, strip)
		for s := lo; s < hi; s++ {
			x0 := s * strip
			x1 := min(x0+strip, w)
			boxCols(dst, tmp, w, h, r, x0, x1, sums[:x1-x0], invH)
		}
	})
}

// invCounts gives 1/(number of in-range samples) of the clipped window
// centred at each of n positions, so the blur loops multiply, not divide.
func invCounts(n, r int) []float64 {
	inv := make([]float64, n)
	for i := range inv {
		inv[i] = 1 / float64(min(i+r, n-1)-max(i-r, 0)+1)
	}
	return inv
}

// boxRow is the 1-D clipped box mean of one row. Prefix sums (rather than
// a running sum) keep the per-pixel work free of a loop-carried
// add/subtract chain.
func boxRow(dst, src []float32, r int, prefix, inv []float64) {
	w := len(src)
	prefix = prefix[:w+1]
	var s float64
	for i, v := range src {
		s += float64(v)
		prefix[i+1] = s
	}
	dst, inv = dst[:w], inv[:w]
	for x := range dst {
		hi, lo := min(x+r+1, w), max(x-r, 0)
		dst[x] = float32((prefix[hi] - prefix[lo]) * inv[x])
	}
}

// boxCols is the vertical clipped box mean for columns [x0,x1), using a
// running sum per column (independent across columns, so no serial
// dependency within a row).
func boxCols(dst, src []float32, w, h, r, x0, x1 int, sums, inv []float64) {
	clear(sums)
	for y := range min(r+1, h) {
		row := src[y*w+x0 : y*w+x1]
		for i, v := range row {
			sums[i] += float64(v)
		}
	}
	for y := range h {
		iv := inv[y]
		out := dst[y*w+x0 : y*w+x1]
		out = out[:len(sums)]
		addY, subY := y+r+1, y-r
		switch {
		case addY < h && subY >= 0:
			add := src[addY*w+x0 : addY*w+x1][:len(sums)]
			sub := src[subY*w+x0 : subY*w+x1][:len(sums)]
			for i, s := range sums {
				out[i] = float32(s * iv)
				sums[i] = s + float64(add[i]) - float64(sub[i])
			}
		case addY < h:
			add := src[addY*w+x0 : addY*w+x1][:len(sums)]
			for i, s := range sums {
				out[i] = float32(s * iv)
				sums[i] = s + float64(add[i])
			}
		case subY >= 0:
			sub := src[subY*w+x0 : subY*w+x1][:len(sums)]
			for i, s := range sums {
				out[i] = float32(s * iv)
				sums[i] = s - float64(sub[i])
			}
		default:
			for i, s := range sums {
				out[i] = float32(s * iv)
			}
		}
	}
}
