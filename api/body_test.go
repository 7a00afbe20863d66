package api_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"

	"github.com/falocal/falocal/pipelines"
)

// A body that is not JSON is refused when it is submitted — queue submit,
// sync run and stream alike, directly or through the JS proxy — with the
// 422 fal answers (json_invalid); it never reaches the queue or the
// endpoint. Valid JSON of the wrong shape stays the endpoint's to judge.
func TestSubmitRefusesUnparseableJSON(t *testing.T) {
	x := echoEP("fal-ai/x")
	e := newQEnv(t, nil, x)
	want := []pipelines.FieldError{{Loc: []any{"body"}, Msg: "JSON decode error", Type: "json_invalid"}}
	for _, body := range []string{`{"a":`, `not json`, `{"a":1}}`, `{"a":1} x`, `{'a':1}`, `{"a":01}`, "{\"a\":\"\x01\"}", ``, "  \n"} {
		for _, path := range []string{"/fal-ai/x", "/run/fal-ai/x", "/run/fal-ai/x/stream", "/fal/proxy"} {
			var hdr []string
			if path == "/fal/proxy" {
				hdr = []string{"x-fal-target-url", "https://queue.fal.run/fal-ai/x"}
			}
			r := e.do(http.MethodPost, "", path, body, hdr...)
			checkFalHeaders(t, r)
			var got struct{ Detail []pipelines.FieldError }
			if r.Code != http.StatusUnprocessableEntity || json.Unmarshal(r.Body.Bytes(), &got) != nil || !reflect.DeepEqual(got.Detail, want) {
				t.Errorf("POST %s %q: %d %s; want 422 json_invalid", path, body, r.Code, r.Body.String())
			}
		}
	}
	if n := x.calls.Load(); n != 0 {
		t.Errorf("the endpoint ran %d times for bodies that are not JSON", n)
	}
	// JSON that is not an object goes on to the endpoint, which decides.
	for _, body := range []string{`{}`, ` {"a": [1, "é", null]} `, `[1]`, `"x"`, `null`} {
		if r := e.do(http.MethodPost, "", "/run/fal-ai/x", body); r.Code != http.StatusOK {
			t.Errorf("POST /run/fal-ai/x %q: %d %s", body, r.Code, r.Body.String())
		}
		s := e.submit(t, "", "/fal-ai/x", body)
		e.waitDone(t, "", s)
	}
}
