package kernels

import "math"

// F32ToF16 implements Kernels.
func (CPU) F32ToF16(dst []uint16, src []float32) error {
	if len(dst) != len(src) {
		return argErr("F32ToF16", "len(dst)=%d != len(src)=%d", len(dst), len(src))
	}
	parallelFor(len(src), 1<<16, func(lo, hi int) {
		f32ToF16Slice(dst[lo:hi], src[lo:hi])
	})
	return nil
}

// F16ToF32 implements Kernels.
func (CPU) F16ToF32(dst []float32, src []uint16) error {
	if len(dst) != len(src) {
		return argErr("F16ToF32", "len(dst)=%d != len(src)=%d", len(dst), len(src))
	}
	parallelFor(len(src), 1<<16, func(lo, hi int) {
		d, s := dst[lo:hi], src[lo:hi]
		for i, v := range s {
			d[i] = f16ToF32(v)
		}
	})
	return nil
}

func f32ToF16Slice(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = f32ToF16(v)
	}
}

// f32ToF16 converts with round-to-nearest-even by integer manipulation of
// the bits, so results do not depend on FPU modes or compiler choices.
func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant == 0 {
			return sign | 0x7c00
		}
		// Keep the top payload bits; a payload living only in the low
		// bits must still give a NaN, not Inf.
		m := uint16(mant >> 13)
		if m == 0 {
			m = 0x200
		}
		return sign | 0x7c00 | m
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal half (or zero): value = M * 2^(e-38) with the implicit
		// bit, half mantissa = M >> (14-e). Shifts past 24 leave less than
		// half an ulp, which rounds to zero.
		shift := uint(14 - e)
		if shift > 24 {
			return sign
		}
		m := mant | 0x800000
		r := m >> shift
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++ // may carry into the smallest normal, which is correct
		}
		return sign | uint16(r)
	}
	h := uint16(e)<<10 | uint16(mant>>13)
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // a carry out of the mantissa bumps the exponent, up to Inf
	}
	return sign | h
}

// f16ToF32 is exact: every binary16 value is representable in float32.
func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	default:
		// Subnormal: mant * 2^-24 is exact in float32.
		v := float32(mant) * (1.0 / (1 << 24))
		return math.Float32frombits(sign | math.Float32bits(v))
	}
}
