package kernels

// ComposeAlpha implements Kernels.
func (CPU) ComposeAlpha(dst []uint8, src []uint8, w, h, stride, c int, mask []float32) error {
	const op = "ComposeAlpha"
	if err := checkImage(op, src, w, h, stride, c); err != nil {
		return err
	}
	n, _ := area(w, h) // bounded by checkImage
	if len(mask) != n {
		return argErr(op, "len(mask)=%d, want %d*%d=%d", len(mask), w, h, n)
	}
	if len(dst) != 4*n {
		return argErr(op, "len(dst)=%d, want 4*%d*%d=%d", len(dst), w, h, 4*n)
	}
	parallelFor(h, 64, func(lo, hi int) {
		for y := lo; y < hi; y++ {
			row := src[y*stride : y*stride+w*c]
			m := mask[y*w : (y+1)*w]
			out := dst[y*w*4 : (y+1)*w*4]
			for x, mv := range m {
				// Written as negated comparisons so NaN clamps to 0.
				if !(mv > 0) {
					mv = 0
				} else if mv > 1 {
					mv = 1
				}
				p := row[x*c : x*c+c]
				o := out[x*4 : x*4+4]
				var a float32
				switch c {
				case 1:
					o[0], o[1], o[2] = p[0], p[0], p[0]
					a = mv * 255
				case 3:
					o[0], o[1], o[2] = p[0], p[1], p[2]
					a = mv * 255
				default:
					o[0], o[1], o[2] = p[0], p[1], p[2]
					a = mv * float32(p[3]) // = mask*255 * srcA/255
				}
				o[3] = uint8(a + 0.5) // a in [0,255]: round half up
			}
		}
	})
	return nil
}
