package api_test

import (
	"net/http"
	"testing"
)

// The JS client's proxyUrl convention.
func TestJSProxy(t *testing.T) {
	g := newGated("fal-ai/x")
	e := newQEnv(t, nil, g)
	tgt := "x-fal-target-url"
	r := e.do(http.MethodPost, "", "/fal/proxy", in("p"), tgt, "https://queue.fal.run/fal-ai/x")
	s := checkSubmit(t, r, "http://example.com")
	e.waitDone(t, "", s)
	r = e.do(http.MethodGet, "", "/fal/proxy", "", tgt, "https://queue.fal.run/fal-ai/x/requests/"+s.ID+"/status?logs=1")
	if r.Code != 200 || r.body["status"] != "COMPLETED" || r.body["request_id"] != s.ID {
		t.Fatalf("status through the proxy: %d %s", r.Code, r.Body.String())
	}
	checkLogs(t, r.body["logs"], "running p")
	r = e.do(http.MethodGet, "", "/fal/proxy", "", tgt, "https://queue.fal.run/fal-ai/x/requests/"+s.ID)
	if r.Code != 200 || r.body["name"] != "p" || r.Header().Get("x-fal-request-id") != s.ID {
		t.Fatalf("result through the proxy: %d %s", r.Code, r.Body.String())
	}
	r = e.do(http.MethodPut, "", "/fal/proxy", "", tgt, "https://queue.fal.run/fal-ai/x/requests/"+s.ID+"/cancel")
	if r.Code != 400 || r.body["status"] != "ALREADY_COMPLETED" {
		t.Errorf("cancel through the proxy: %d %s", r.Code, r.Body.String())
	}
	r = e.do(http.MethodPost, "", "/fal/proxy", in("sync"), tgt, "https://fal.run/fal-ai/x")
	if r.Code != 200 || r.body["name"] != "sync" {
		t.Errorf("sync run through the proxy: %d %s", r.Code, r.Body.String())
	}
	before := len(g.ran())
	// Not a fal host: refused, nothing fetched (the env's client fails the
	// test on any outbound request) and nothing run.
	for _, target := range []string{"https://example.com/fal-ai/x", "https://queue.fal.run.evil.com/fal-ai/x", "https://127.0.0.1/fal-ai/x"} {
		r = e.do(http.MethodPost, "", "/fal/proxy", in("evil"), tgt, target)
		checkDetail(t, r, http.StatusForbidden)
	}
	r = e.do(http.MethodPost, "", "/fal/proxy", in("evil"))
	checkDetail(t, r, http.StatusBadRequest, "missing the x-fal-target-url header")
	r = e.do(http.MethodPost, "", "/fal/proxy", in("evil"), tgt, "http://queue.fal.run/fal-ai/x")
	checkDetail(t, r, http.StatusBadRequest)
	if got := g.ran(); len(got) != before {
		t.Errorf("refused proxy requests ran: %v", got[before:])
	}
}
