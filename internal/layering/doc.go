// Package layering holds the tests that keep the package graph pointing one
// way: api → pipelines → engine → kernels, weights beside, cgo only in
// engine/ort (and kernels/cuda); and that keep the process environment out
// of the library: only cmd/, internal/testenv, the tools/ and bench/
// programs and _test.go files read it.
package layering
