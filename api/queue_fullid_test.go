package api_test

import (
	"net/http"
	"testing"
)

// Status, stream, result and cancel answer under the full endpoint id
// (owner/alias/path) as under the app (owner/alias) the submit reply names;
// another path or app is still a 404.
func TestQueueRoutesUnderFullEndpointID(t *testing.T) {
	g := newGated("fal-ai/flux/dev/image-to-image")
	e := newQEnv(t, nil, g, echoEP("fal-ai/x/sub"), echoEP("workflows/me/flow/step"))
	for _, tc := range []struct{ id, app string }{
		{"fal-ai/x/sub", "fal-ai/x"},
		{"fal-ai/flux/dev/image-to-image", "fal-ai/flux"},
		{"workflows/me/flow/step", "workflows/me/flow"},
	} {
		for _, host := range []string{"", "queue.fal.run"} {
			body := `{}`
			if tc.id == g.id {
				body = in("r")
			}
			s := e.submit(t, host, "/"+tc.id, body)
			if s.App != tc.app {
				t.Fatalf("%s: app %q, want %q", tc.id, s.App, tc.app)
			}
			full := submitted{ID: s.ID, App: tc.id}
			e.waitDone(t, host, full)
			for _, rest := range []string{"status", "status?logs=1", ""} {
				for _, p := range []string{s.path(rest), full.path(rest)} {
					if r := e.do(http.MethodGet, host, p, ""); r.Code != http.StatusOK || r.body["request_id"] == nil && r.body["status"] == nil {
						t.Errorf("GET %s%s: %d %s", host, p, r.Code, r.Body.String())
					}
				}
			}
			if r := e.do(http.MethodPut, host, full.path("cancel"), ""); r.Code != http.StatusBadRequest || r.body["status"] != "ALREADY_COMPLETED" {
				t.Errorf("PUT %s: %d %s", full.path("cancel"), r.Code, r.Body.String())
			}
			for _, other := range []string{"fal-ai/x/other", "fal-ai/y", "fal-ai/flux/dev", "workflows/me/other", "fal-ai/x/sub/more"} {
				if other == tc.id || other == tc.app {
					continue
				}
				p := submitted{ID: s.ID, App: other}.path("status")
				checkDetail(t, e.do(http.MethodGet, host, p, ""), http.StatusNotFound, "Request not found")
			}
		}
	}
	// A request still queued or running is cancelled under its full id.
	gate := g.gate("held")
	s := e.submit(t, "", "/fal-ai/flux/dev/image-to-image", in("held"))
	g.waitStarted(t, "held")
	full := submitted{ID: s.ID, App: "fal-ai/flux/dev/image-to-image"}
	if r := e.do(http.MethodPut, "", full.path("cancel"), ""); r.Code != http.StatusAccepted {
		t.Errorf("cancel under the full id: %d %s", r.Code, r.Body.String())
	}
	close(gate)
	e.waitDone(t, "", full)
}
