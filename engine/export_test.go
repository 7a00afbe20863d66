package engine

import "time"

// SetAfter replaces the keep-alive timer of r (tests fire expiry by hand).
func SetAfter(r *Residency, f func(time.Duration, func()) interface{ Stop() bool }) {
	r.after = func(d time.Duration, fn func()) stopper { return f(d, fn) }
}
