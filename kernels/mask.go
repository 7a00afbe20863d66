package kernels

// ResizeMask implements Extended.
func (CPU) ResizeMask(dst []float32, dw, dh int, src []float32, sw, sh int, lo, hi float32) error {
	const op = "ResizeMask"
	if !(hi > lo) { // negated so NaN bounds are rejected too
		return argErr(op, "hi %v must exceed lo %v", hi, lo)
	}
	if sn, ok := area(sw, sh); !ok || len(src) != sn {
		return argErr(op, "len(src)=%d for source size %dx%d", len(src), sw, sh)
	}
	if dn, ok := area(dw, dh); !ok || len(dst) != dn {
		return argErr(op, "len(dst)=%d for destination size %dx%d", len(dst), dw, dh)
	}
	if err := (CPU{}).ResizePlane(dst, dw, dh, src, sw, sh); err != nil {
		return err
	}
	span := hi - lo
	parallelFor(len(dst), 1<<16, func(a, b int) {
		d := dst[a:b]
		for i, v := range d {
			v = (v - lo) / span
			if !(v > 0) { // negated so NaN goes to 0
				v = 0
			} else if v > 1 {
				v = 1
			}
			d[i] = v
		}
	})
	return nil
}
