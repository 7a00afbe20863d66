// Package pipelinetest is what pipeline tests share: an in-memory Files, a
// temporary model store with fake or real models installed, building a
// pipeline for a test, calling an endpoint, and the status and body a fal
// client would see for an error.
package pipelinetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/weights"
)

// Files is an in-memory pipelines.Files.
type Files struct {
	mu    sync.Mutex
	files map[string]pipelines.Blob
	saves int
}

// NewFiles makes an empty Files.
func NewFiles() *Files { return &Files{files: map[string]pipelines.Blob{}} }

// Save stores data under a new URL.
func (f *Files) Save(ctx context.Context, data []byte, contentType, name string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.saves++
	url := fmt.Sprintf("http://files.test/%d/%s", f.saves, name)
	f.files[url] = pipelines.Blob{Data: bytes.Clone(data), ContentType: contentType}
	return url, nil
}

// Open returns a stored file; a file over limit is a 413.
func (f *Files) Open(ctx context.Context, url string, limit int64) (pipelines.Blob, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.files[url]
	if !ok {
		return pipelines.Blob{}, fmt.Errorf("no such file %s", url)
	}
	if limit > 0 && int64(len(b.Data)) > limit {
		return pipelines.Blob{}, &pipelines.HTTPError{Status: http.StatusRequestEntityTooLarge, Msg: "file too large"}
	}
	return b, nil
}

// Saves counts the files saved.
func (f *Files) Saves() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.saves
}

// Store opens an empty model store in a temporary directory.
func Store(t testing.TB) *weights.Store {
	t.Helper()
	st, err := weights.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// InstallFake installs m (name, pipeline, serves, params) with one file of
// role "model" whose content is a placeholder for the fake engine, and
// returns the manifest and the file's path (the fake runtime's key).
func InstallFake(t testing.TB, st *weights.Store, m weights.Manifest) (weights.Manifest, string) {
	t.Helper()
	tmp, err := st.TempDir()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(tmp, "model.onnx")
	if err := os.WriteFile(src, []byte("fake onnx "+m.Name), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := st.AddBlob(src, "model", "model.onnx", "fp32", "")
	if err != nil {
		t.Fatal(err)
	}
	m.Files = []weights.File{f}
	if err := st.Put(m); err != nil {
		t.Fatal(err)
	}
	path, err := st.Path(m, "model")
	if err != nil {
		t.Fatal(err)
	}
	return m, path
}

// InstallDir installs every file of dir as model m (an export, such as a
// pipeline's tiny test models), expanded first (ExpandDir).
func InstallDir(t testing.TB, st *weights.Store, dir string, m weights.Manifest) weights.Manifest {
	t.Helper()
	files, err := st.AddDir(ExpandDir(t, dir), "fp32")
	if err != nil {
		t.Fatal(err)
	}
	m.Files = files
	if err := st.Put(m); err != nil {
		t.Fatal(err)
	}
	return m
}

// Build makes a pipeline for a test, closed when the test ends, and its
// endpoints by id.
func Build(t testing.TB, f pipelines.Factory, d pipelines.Deps) (pipelines.Pipeline, map[string]pipelines.Endpoint) {
	t.Helper()
	p, err := f(d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	eps := map[string]pipelines.Endpoint{}
	for _, e := range p.Endpoints() {
		eps[e.ID()] = e
	}
	return p, eps
}

// Result is one endpoint call: its output as a client would decode it, the
// progress lines, and the error.
type Result struct {
	Out  map[string]any
	Logs []string
	Err  error
}

// Call runs ep on input (a JSON string, json.RawMessage or any value to
// marshal) with files, which may be nil.
func Call(ctx context.Context, ep pipelines.Endpoint, input any, files pipelines.Files) Result {
	var raw json.RawMessage
	switch v := input.(type) {
	case string:
		raw = json.RawMessage(v)
	case json.RawMessage:
		raw = v
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return Result{Err: err}
		}
		raw = b
	}
	if files == nil {
		files = NewFiles()
	}
	var mu sync.Mutex
	var res Result
	req := &pipelines.Request{ID: "req1", Endpoint: ep.ID(), Input: raw, Files: files,
		Log: func(_ pipelines.Level, m string) { mu.Lock(); res.Logs = append(res.Logs, m); mu.Unlock() }}
	out, err := ep.Run(ctx, req)
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		res.Err = err
		return res
	}
	b, err := json.Marshal(out)
	if err == nil {
		err = json.Unmarshal(b, &res.Out)
	}
	res.Err = err
	return res
}

// Status is the HTTP status a pipeline error is answered with, and the
// fal-shaped body: 422 {"detail": [{loc, msg, type}]} for bad input, the
// status and {"detail", "error_type"} of an *HTTPError, 499 for a
// cancelled request and 500 for anything else (the API's mapping of these
// types; its own tests check how it writes them).
func Status(err error) (int, map[string]any) {
	var ve *pipelines.ValidationError
	var he *pipelines.HTTPError
	switch {
	case err == nil:
		return http.StatusOK, nil
	case errors.As(err, &ve):
		return http.StatusUnprocessableEntity, map[string]any{"detail": ve.Errors}
	case errors.As(err, &he):
		b := map[string]any{"detail": he.Msg}
		if he.Type != "" {
			b["error_type"] = he.Type
		}
		return he.Status, b
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return 499, map[string]any{"detail": "Request cancelled by the client."}
	}
	return http.StatusInternalServerError, map[string]any{"detail": "Internal Server Error"}
}
