package pipelines

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/falocal/falocal/engine"
)

// FieldError is one entry of a fal/pydantic 422 body.
type FieldError struct {
	Loc  []any  `json:"loc"`
	Msg  string `json:"msg"`
	Type string `json:"type"`
}

// ValidationError is answered as 422 {"detail": [FieldError...]}.
type ValidationError struct {
	Errors []FieldError
}

func (e *ValidationError) Error() string {
	var parts []string
	for _, f := range e.Errors {
		parts = append(parts, fmt.Sprintf("%v: %s", f.Loc, f.Msg))
	}
	return "invalid input: " + strings.Join(parts, "; ")
}

// Add appends a field error for body.<field>.
func (e *ValidationError) Add(field, typ, msg string) {
	loc := []any{"body"}
	if field != "" {
		for _, p := range strings.Split(field, ".") {
			loc = append(loc, p)
		}
	}
	e.Errors = append(e.Errors, FieldError{Loc: loc, Msg: msg, Type: typ})
}

// Err returns e, or nil when it holds no errors.
func (e *ValidationError) Err() error {
	if len(e.Errors) == 0 {
		return nil
	}
	return e
}

// Invalid is a one-field validation error ("value_error").
func Invalid(field, msg string) error {
	v := &ValidationError{}
	v.Add(field, "value_error", msg)
	return v
}

// HTTPError is an error with a status and fal's flat body
// {"detail": msg[, "error_type": type]}.
type HTTPError struct {
	Status int
	Type   string // fal error_type, optional
	Msg    string
	Err    error
}

func (e *HTTPError) Error() string {
	if e.Err != nil && e.Err.Error() != e.Msg {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *HTTPError) Unwrap() error { return e.Err }

// Errorf makes an HTTPError.
func Errorf(status int, format string, args ...any) *HTTPError {
	return &HTTPError{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// Unavailable is a 503 for a model that exists but cannot run now (the
// cause is logged, not shown). See MapError.
func Unavailable(msg string, err error) *HTTPError {
	return MapError(msg, err).(*HTTPError)
}

// MapError is the one mapping of engine and model errors to fal errors:
// errors that are fal-shaped already pass through; a model that cannot fit
// in the memory budget says so, naming the model, its need and the budget;
// any other failure to load or run a model is a 503 with msg.
func MapError(msg string, err error) error {
	var v *ValidationError
	var h *HTTPError
	var nm *engine.NoMemoryError
	switch {
	case errors.As(err, &v):
		return v
	case errors.As(err, &h):
		return h
	case errors.As(err, &nm):
		return &HTTPError{Status: http.StatusServiceUnavailable, Type: "runner_scheduling_failure", Msg: nm.Error(), Err: err}
	}
	return &HTTPError{Status: http.StatusServiceUnavailable, Type: "runner_scheduling_failure", Msg: msg, Err: err}
}
