package engine

import "time"

// SetAfter replaces the keep-alive timer of r (tests fire expiry by hand).
func SetAfter(r *Residency, f func(time.Duration, func()) interface{ Stop() bool }) {
	r.after = func(d time.Duration, fn func()) stopper { return f(d, fn) }
}

// Measure runs fn as a measured section of u on the device (onDevice).
func Measure(u *Unit, fn func() error) (bool, error) { return u.onDevice(fn) }

// Freed records that memory went back to the card, as an unload or a pool
// trim does.
func Freed(r *Residency) { r.freed.Add(1) }
