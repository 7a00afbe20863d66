// Package layering holds the test that keeps the package graph pointing one
// way: api → pipelines → engine → kernels, weights beside, cgo only in
// engine/ort (and kernels/cuda).
package layering
