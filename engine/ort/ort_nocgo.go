//go:build !cgo

// Package ort implements engine.Runtime on ONNX Runtime. This build has no
// cgo, so it can only explain how to get one that works.
package ort

import (
	"errors"
	"log/slog"

	"github.com/falocal/falocal/engine"
)

// Config selects the library and its process-wide settings.
type Config struct {
	LibraryPath string
	Logger      *slog.Logger
}

// ErrNoCgo is returned by Init in builds without cgo.
var ErrNoCgo = errors.New("ort: this binary was built with CGO_ENABLED=0; rebuild with cgo (a C compiler) to run ONNX models")

// Init always fails without cgo.
func Init(Config) (engine.Runtime, error) { return nil, ErrNoCgo }
