// Package bench measures the server as a client sees it against the bare
// engine, so that the server's own overhead is visible. Run `make bench`
// (go test -bench); results are reported, never asserted.
package bench
