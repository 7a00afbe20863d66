package kernels

// BlendTile implements Kernels.
func (CPU) BlendTile(acc, wsum []float32, c, H, W int, tile []float32, th, tw, x0, y0, overlap int) error {
	const op = "BlendTile"
	if _, ok := area(c, H, W); !ok {
		return argErr(op, "canvas %dx%dx%d must be positive and not huge", c, H, W)
	}
	plane := H * W
	if len(acc) != c*plane {
		return argErr(op, "len(acc)=%d, want %d*%d*%d=%d", len(acc), c, H, W, c*plane)
	}
	if len(wsum) != plane {
		return argErr(op, "len(wsum)=%d, want %d*%d=%d", len(wsum), H, W, plane)
	}
	if th <= 0 || tw <= 0 {
		return argErr(op, "tile size %dx%d must be positive", th, tw)
	}
	if x0 < 0 || y0 < 0 || tw > W-x0 || th > H-y0 {
		return argErr(op, "tile %dx%d at (%d,%d) does not fit canvas %dx%d", tw, th, x0, y0, W, H)
	}
	if len(tile) != c*th*tw {
		return argErr(op, "len(tile)=%d, want %d*%d*%d=%d", len(tile), c, th, tw, c*th*tw)
	}
	if overlap < 0 {
		return argErr(op, "overlap %d must not be negative", overlap)
	}
	wx := rampWeights(tw, x0, W, overlap)
	wy := rampWeights(th, y0, H, overlap)
	// Rows are independent (each touches its own canvas row), so any row
	// split gives identical sums.
	parallelFor(th, 64, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			ws := wsum[(y0+j)*W+x0:][:tw]
			for i, v := range wx {
				ws[i] += v * wy[j]
			}
			for k := range c {
				a := acc[k*plane+(y0+j)*W+x0:][:tw]
				t := tile[(k*th+j)*tw:][:tw]
				for i, v := range wx {
					a[i] += t[i] * (v * wy[j])
				}
			}
		}
	})
	return nil
}

// rampWeights gives the 1-D window for a tile of length n at offset pos in
// a canvas of length total. Ramp samples sit at pixel centres,
// (k+0.5)/overlap, so that a falling ramp and a rising ramp over the same
// overlap pixels sum to exactly 1 and every weight stays positive.
func rampWeights(n, pos, total, overlap int) []float32 {
	w := make([]float32, n)
	for i := range w {
		v := float32(1)
		if overlap > 0 {
			if pos > 0 && i < overlap {
				v = min(v, (float32(i)+0.5)/float32(overlap))
			}
			if pos+n < total && n-1-i < overlap {
				v = min(v, (float32(n-1-i)+0.5)/float32(overlap))
			}
		}
		w[i] = v
	}
	return w
}

// NormalizeBlend implements Kernels.
func (CPU) NormalizeBlend(acc []float32, wsum []float32, c int) error {
	const op = "NormalizeBlend"
	if c <= 0 || len(wsum) == 0 {
		return argErr(op, "channels %d and len(wsum)=%d must be positive", c, len(wsum))
	}
	if len(acc)/c != len(wsum) || len(acc)%c != 0 {
		return argErr(op, "len(acc)=%d, want %d*len(wsum)=%d", len(acc), c, c*len(wsum))
	}
	plane := len(wsum)
	parallelFor(plane, 1<<16, func(lo, hi int) {
		for k := range c {
			a := acc[k*plane+lo : k*plane+hi]
			for i, s := range wsum[lo:hi] {
				if s != 0 {
					a[i] /= s
				} else {
					a[i] = 0 // uncovered pixel: no data to divide
				}
			}
		}
	})
	return nil
}
