package vram

// Size classes. Every class is a multiple of Alignment, so any block from a
// class can serve any request that rounds to it, and the pointers the device
// hands out (cudaMalloc/cuMemAlloc return 256-byte aligned memory) stay
// aligned for vectorised loads.
//
//   - up to SmallMax: powers of two (256 B, 512 B, …, 1 MiB). Small buffers
//     are many and short-lived; few classes means high reuse.
//   - up to LargeMin: four classes per doubling (×1.25, ×1.5, ×1.75, ×2 of
//     the power of two below), so rounding wastes at most 25%.
//   - above LargeMin: multiples of LargeStep. These are a model's activations
//     or weights; 25% of a gigabyte is too much to waste, and the same model
//     asks for the same sizes again, so exact-ish sizes still reuse.
const (
	Alignment = 256
	SmallMax  = 1 << 20
	LargeMin  = 256 << 20
	LargeStep = 2 << 20
)

// ClassOf returns the size class that a request of n bytes is served from
// (n > 0).
func ClassOf(n int64) int64 {
	switch {
	case n <= Alignment:
		return Alignment
	case n <= SmallMax:
		c := int64(Alignment)
		for c < n {
			c <<= 1
		}
		return c
	case n <= LargeMin:
		// base is the largest power of two below n; classes are base·(1+i/4).
		base := int64(SmallMax)
		for base*2 < n {
			base <<= 1
		}
		step := base / 4
		return (n + step - 1) / step * step
	default:
		return (n + LargeStep - 1) / LargeStep * LargeStep
	}
}
