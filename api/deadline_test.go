package api_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/pipelines"
)

// A run that fails because its deadline passed is answered as fal's
// request_timeout even when the pipeline mapped the failure to a model
// error (a 503), as pipelines.MapError does for a model run it interrupts.
func TestRunDeadlineThroughMappedError(t *testing.T) {
	mapped := func(ctx context.Context, req *pipelines.Request) (any, error) {
		<-ctx.Done()
		return nil, pipelines.MapError("model m failed", ctx.Err())
	}
	e := newEnv(t, func(c *api.Config) { c.RequestTimeout = 30 * time.Millisecond }, ep("t/mapped", mapped))
	r := e.do(http.MethodPost, "", "/run/t/mapped", `{}`)
	checkDetail(t, r, http.StatusGatewayTimeout)
	if r.body["error_type"] != "request_timeout" || r.Header().Get("X-Fal-Request-Timeout-Type") != "user" {
		t.Errorf("error_type %v, X-Fal-Request-Timeout-Type %q", r.body["error_type"], r.Header().Get("X-Fal-Request-Timeout-Type"))
	}
}
