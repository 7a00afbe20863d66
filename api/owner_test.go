package api_test

import (
	"net/http"
	"testing"

	"github.com/falocal/falocal/api"
)

// With keys, a request belongs to the key that submitted it: another valid
// key gets the 404 of an unknown request for its status, status stream,
// result and cancel, directly and through the JS proxy, and cannot cancel
// it; the owner keeps every route.
func TestQueueRequestOwnedByKey(t *testing.T) {
	const keyA, keyB = "alice:secret-a", "bob:secret-b"
	g := newGated("fal-ai/x")
	held := g.gate("held")
	e := newQEnv(t, func(c *api.Config) { c.Keys = []string{keyA, keyB} }, g)
	a := []string{"Authorization", "Key " + keyA}
	b := []string{"Authorization", "Key " + keyB}

	done := e.submit(t, "", "/fal-ai/x", in("done"), a...)
	e.waitDone(t, "", done, a...)
	running := e.submit(t, "", "/fal-ai/x", in("held"), a...)
	g.waitStarted(t, "held")
	unknown := submitted{ID: "00000000-0000-4000-8000-000000000000", App: "fal-ai/x"}

	for _, s := range []submitted{done, running, unknown} {
		for _, tc := range []struct{ method, path string }{
			{"GET", s.path("status")},
			{"GET", s.path("status?logs=1")},
			{"GET", s.path("status/stream")},
			{"GET", s.path("")},
		} {
			r := e.do(tc.method, "", tc.path, "", b...)
			checkDetail(t, r, http.StatusNotFound, "Request not found")
			if r.Header().Get("Content-Type") == "text/event-stream" {
				t.Errorf("%s %s with another key: a stream was opened", tc.method, tc.path)
			}
			// The same through the JS client's proxy.
			r = e.do(tc.method, "", "/fal/proxy", "", append([]string{"x-fal-target-url", "https://queue.fal.run" + tc.path}, b...)...)
			checkDetail(t, r, http.StatusNotFound, "Request not found")
		}
		r := e.do(http.MethodPut, "", s.path("cancel"), "", b...)
		if r.Code != http.StatusNotFound || r.body["status"] != "NOT_FOUND" {
			t.Errorf("cancel %s with another key: %d %s", s.ID, r.Code, r.Body.String())
		}
	}
	if err := g.ctxErr("held"); err != nil {
		t.Fatalf("another key's cancel reached the running request: %v", err)
	}

	// The owner sees everything.
	if r := e.do(http.MethodGet, "", done.path(""), "", a...); r.Code != 200 || r.body["name"] != "done" {
		t.Errorf("result with the owner's key: %d %s", r.Code, r.Body.String())
	}
	if r, m := e.status(t, running.path("status"), a...); r.Code != http.StatusAccepted || m["status"] != "IN_PROGRESS" {
		t.Errorf("status with the owner's key: %d %s", r.Code, r.Body.String())
	}
	if r := e.do(http.MethodPut, "", running.path("cancel"), "", a...); r.Code != http.StatusAccepted {
		t.Errorf("cancel with the owner's key: %d %s", r.Code, r.Body.String())
	}
	close(held)
	if ev := e.waitDone(t, "", running, a...); ev["status"] != "COMPLETED" {
		t.Errorf("after the owner's cancel: %v", ev)
	}

	// B's own requests are B's: A cannot read them either.
	mine := e.submit(t, "", "/fal-ai/x", in("bob"), b...)
	e.waitDone(t, "", mine, b...)
	checkDetail(t, e.do(http.MethodGet, "", mine.path(""), "", a...), http.StatusNotFound, "Request not found")
	if r := e.do(http.MethodGet, "", mine.path(""), "", b...); r.Code != 200 || r.body["name"] != "bob" {
		t.Errorf("B's result with B's key: %d %s", r.Code, r.Body.String())
	}
}

// Without keys, a request id is all it takes (the server listens on
// loopback only), as before.
func TestQueueRequestNoKeys(t *testing.T) {
	g := newGated("fal-ai/x")
	e := newQEnv(t, nil, g)
	s := e.submit(t, "", "/fal-ai/x", in("open"))
	e.waitDone(t, "", s)
	if r := e.do(http.MethodGet, "", s.path(""), ""); r.Code != 200 || r.body["name"] != "open" {
		t.Errorf("result without keys: %d %s", r.Code, r.Body.String())
	}
	// A key sent to a server without keys changes nothing.
	if r := e.do(http.MethodGet, "", s.path(""), "", "Authorization", "Key some:key"); r.Code != 200 {
		t.Errorf("result with a key the server does not check: %d %s", r.Code, r.Body.String())
	}
}
