package kernels

// The explicit float32 conversions below round each product before it is
// added: Go may otherwise fuse x*y+z into one FMA on some architectures
// (arm64), which would make results differ by platform and from the CUDA
// kernels in step.cu (built with --fmad=false).

// Guidance implements Extended.
func (CPU) Guidance(dst, uncond, cond []float32, g float32) error {
	n := len(dst)
	if len(uncond) != n || len(cond) != n {
		return argErr("Guidance", "len(dst)=%d, len(uncond)=%d, len(cond)=%d must be equal", n, len(uncond), len(cond))
	}
	parallelFor(n, 1<<16, func(lo, hi int) {
		d, u, c := dst[lo:hi], uncond[lo:hi], cond[lo:hi]
		u, c = u[:len(d)], c[:len(d)]
		for i := range d {
			ui := u[i]
			d[i] = ui + float32(g*(c[i]-ui))
		}
	})
	return nil
}

// Axpby implements Extended.
func (CPU) Axpby(dst, x []float32, a float32, y []float32, b float32, z []float32, c float32) error {
	n := len(dst)
	if len(x) != n || len(y) != n || (z != nil && len(z) != n) {
		return argErr("Axpby", "len(dst)=%d, len(x)=%d, len(y)=%d, len(z)=%d must be equal (z may be nil)", n, len(x), len(y), len(z))
	}
	parallelFor(n, 1<<16, func(lo, hi int) {
		d, xs, ys := dst[lo:hi], x[lo:hi], y[lo:hi]
		xs, ys = xs[:len(d)], ys[:len(d)]
		if z == nil {
			for i := range d {
				d[i] = float32(xs[i]*a) + float32(ys[i]*b)
			}
			return
		}
		zs := z[lo:hi][:len(d)]
		for i := range d {
			d[i] = float32(xs[i]*a) + float32(ys[i]*b) + float32(zs[i]*c)
		}
	})
	return nil
}
