package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/pipelines"
)

// turboEP stands in for fast-turbo-diffusion: it needs a prompt.
func turboEP() *fakeEP {
	return ep("fal-ai/fast-turbo-diffusion", func(ctx context.Context, req *pipelines.Request) (any, error) {
		var in map[string]any
		json.Unmarshal(req.Input, &in)
		p, _ := in["prompt"].(string)
		if p == "" {
			return nil, pipelines.Invalid("prompt", "Field required")
		}
		return map[string]any{"images": []any{map[string]any{"url": "data:image/png;base64,AA==", "width": 64}},
			"prompt": p, "sync_mode": in["sync_mode"], "seed": 2100799056, "timings": map[string]any{"inference": 0.25}}, nil
	})
}

func rtServer(t *testing.T, mod func(*api.Config), eps ...pipelines.Endpoint) (*httptest.Server, *testEnv) {
	t.Helper()
	env := newEnv(t, mod, eps...)
	ts := httptest.NewServer(env.h)
	t.Cleanup(func() {
		ts.Close()
		env.srv.Close(context.Background())
	})
	return ts, env
}

func rtDial(t *testing.T, ts *httptest.Server, path string, hdr http.Header) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+path, &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func rtSend(t *testing.T, c *websocket.Conn, v any) {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(context.Background(), websocket.MessageBinary, b); err != nil {
		t.Fatal(err)
	}
}

// rtRecv reads one frame: binary frames as msgpack, text frames as JSON.
func rtRecv(t *testing.T, c *websocket.Conn) (websocket.MessageType, map[string]any, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		return 0, nil, err
	}
	var m map[string]any
	if typ == websocket.MessageBinary {
		err = msgpack.Unmarshal(b, &m)
	} else {
		err = json.Unmarshal(b, &m)
	}
	if err != nil {
		t.Fatalf("frame does not decode: %v", err)
	}
	return typ, m, nil
}

// rtResult reads frames until a result or an error, skipping timings.
func rtResult(t *testing.T, c *websocket.Conn) (websocket.MessageType, map[string]any) {
	t.Helper()
	for {
		typ, m, err := rtRecv(t, c)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if m["type"] == "x-fal-message" {
			continue
		}
		return typ, m
	}
}

func TestRealtimeResultsAndErrors(t *testing.T) {
	ts, _ := rtServer(t, nil, turboEP())
	c := rtDial(t, ts, "/run/fal-ai/fast-turbo-diffusion/realtime?fal_jwt_token=x", nil)

	rtSend(t, c, map[string]any{"prompt": "a cat", "request_id": "r1", "image_size": map[string]any{"width": 64}})
	typ, m := rtResult(t, c)
	if typ != websocket.MessageBinary || m["prompt"] != "a cat" || m["request_id"] != "r1" || m["sync_mode"] != true {
		t.Fatalf("result %v %v", typ, m)
	}
	imgs, _ := m["images"].([]any)
	if len(imgs) != 1 {
		t.Fatalf("images %v", m["images"])
	}
	// Integers arrive as msgpack integers, fractions as floats.
	if w := imgs[0].(map[string]any)["width"]; w != int64(64) {
		t.Errorf("width %T %v", w, w)
	}
	if s, ok := m["seed"].(int64); !ok || s != 2100799056 {
		t.Errorf("seed %T %v", m["seed"], m["seed"])
	}
	if f, ok := m["timings"].(map[string]any)["inference"].(float64); !ok || f != 0.25 {
		t.Errorf("timings %v", m["timings"])
	}

	// A validation error is fal's x-fal-error text frame; the connection stays.
	rtSend(t, c, map[string]any{"num_inference_steps": 2, "request_id": "r2"})
	typ, m = rtResult(t, c)
	if typ != websocket.MessageText || m["type"] != "x-fal-error" || m["error"] != "VALIDATION_ERROR" ||
		!strings.Contains(m["reason"].(string), "prompt: Field required") || m["request_id"] != "r2" {
		t.Fatalf("error frame %v %v", typ, m)
	}
	if d, _ := m["detail"].([]any); len(d) != 1 {
		t.Fatalf("detail %v", m["detail"])
	}
	// Text frames are JSON inputs; a frame that is no object is refused.
	c.Write(context.Background(), websocket.MessageText, []byte(`{"prompt":"json"}`))
	if _, m = rtResult(t, c); m["prompt"] != "json" {
		t.Fatalf("json input: %v", m)
	}
	c.Write(context.Background(), websocket.MessageBinary, []byte{0xc1})
	if _, m = rtResult(t, c); m["error"] != "VALIDATION_ERROR" {
		t.Fatalf("bad frame: %v", m)
	}
	rtSend(t, c, map[string]any{"prompt": "after"})
	if _, m = rtResult(t, c); m["prompt"] != "after" {
		t.Fatalf("after errors: %v", m)
	}
	c.Close(websocket.StatusNormalClosure, "")
}

func TestRealtimeTimings(t *testing.T) {
	ts, _ := rtServer(t, nil, turboEP())
	c := rtDial(t, ts, "/run/fal-ai/fast-turbo-diffusion?fal_jwt_token=x", nil)
	rtSend(t, c, map[string]any{"prompt": "a"})
	if typ, _, err := rtRecv(t, c); err != nil || typ != websocket.MessageBinary {
		t.Fatalf("first frame %v %v", typ, err)
	}
	_, m, err := rtRecv(t, c)
	if err != nil || m["type"] != "x-fal-message" || m["action"] != "timings" {
		t.Fatalf("timings %v %v", m, err)
	}
	if _, ok := m["timing"].(float64); !ok {
		t.Fatalf("timing %T", m["timing"])
	}
}

// refused reads the error frame and the close of a refused connection.
func refused(t *testing.T, c *websocket.Conn) (map[string]any, websocket.CloseError) {
	t.Helper()
	_, m, err := rtRecv(t, c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	_, _, err = rtRecv(t, c)
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("want a close frame, got %v", err)
	}
	return m, ce
}

func TestRealtimeRefusals(t *testing.T) {
	ts, _ := rtServer(t, nil, turboEP(), echoEP("fal-ai/fast-sdxl"))

	c := rtDial(t, ts, "/run/fal-ai/fast-sdxl/realtime", nil)
	m, ce := refused(t, c)
	if m["error"] != "NOT_REALTIME" || !strings.Contains(m["reason"].(string), "fal-ai/fast-turbo-diffusion") ||
		ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, "no realtime endpoint") {
		t.Fatalf("not realtime: %v %v", m, ce)
	}
	c = rtDial(t, ts, "/run/fal-ai/nothing/realtime", nil)
	if m, ce = refused(t, c); m["error"] != "NOT_FOUND" || ce.Code != websocket.StatusPolicyViolation {
		t.Fatalf("unknown: %v %v", m, ce)
	}
	// A plain GET is still not allowed; a bad max_buffering is a 400.
	r, err := http.Get(ts.URL + "/run/fal-ai/fast-turbo-diffusion/realtime")
	if err != nil || r.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("plain GET: %v %v", r, err)
	}
	r.Body.Close()
	_, r, err = websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(ts.URL, "http")+"/run/fal-ai/fast-turbo-diffusion/realtime?max_buffering=61", nil)
	if err == nil || r == nil || r.StatusCode != http.StatusBadRequest {
		t.Fatalf("max_buffering=61: %v %v", r, err)
	}
}

func TestRealtimeTokens(t *testing.T) {
	ts, _ := rtServer(t, func(c *api.Config) { c.Keys = []string{"id:secret"} }, turboEP())

	c := rtDial(t, ts, "/run/fal-ai/fast-turbo-diffusion/realtime?fal_jwt_token=made-up", nil)
	m, ce := refused(t, c)
	if m["status"] != "error" || m["error"] != "Unauthorized" || ce.Code != websocket.StatusPolicyViolation {
		t.Fatalf("made-up token: %v %v", m, ce)
	}
	tokenFor := func(app string) string {
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/rest/tokens/", strings.NewReader(`{"allowed_apps":["`+app+`"],"token_expiration":120}`))
		req.Header.Set("Authorization", "Key id:secret")
		req.Header.Set("Content-Type", "application/json")
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		var tok string
		if r.StatusCode != http.StatusOK || json.NewDecoder(r.Body).Decode(&tok) != nil {
			t.Fatalf("token: %d", r.StatusCode)
		}
		return tok
	}
	c = rtDial(t, ts, "/run/fal-ai/fast-turbo-diffusion/realtime?fal_jwt_token="+tokenFor("fast-turbo-diffusion"), nil)
	rtSend(t, c, map[string]any{"prompt": "ok"})
	if _, m := rtResult(t, c); m["prompt"] != "ok" {
		t.Fatalf("with token: %v", m)
	}
	// A token for another app does not open this one.
	c = rtDial(t, ts, "/run/fal-ai/fast-turbo-diffusion/realtime?fal_jwt_token="+tokenFor("fast-sdxl"), nil)
	if m, _ := refused(t, c); m["error"] != "Unauthorized" {
		t.Fatalf("other app's token: %v", m)
	}
	// The key itself, as Python's use_jwt=False sends it.
	c = rtDial(t, ts, "/run/fal-ai/fast-turbo-diffusion/realtime", http.Header{"Authorization": {"Key id:secret"}})
	rtSend(t, c, map[string]any{"prompt": "key"})
	if _, m := rtResult(t, c); m["prompt"] != "key" {
		t.Fatalf("with key: %v", m)
	}
}

func TestRealtimeMessageLimit(t *testing.T) {
	ts, _ := rtServer(t, func(c *api.Config) { c.MaxBodyBytes = 1024 }, turboEP())
	c := rtDial(t, ts, "/run/fal-ai/fast-turbo-diffusion/realtime", nil)
	rtSend(t, c, map[string]any{"prompt": strings.Repeat("x", 4096)})
	_, _, err := rtRecv(t, c)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusMessageTooBig {
		t.Fatalf("want close 1009, got %v", err)
	}
}

func TestRealtimeBufferingKeepsNewest(t *testing.T) {
	release := make(chan struct{})
	slow := ep("fal-ai/fast-turbo-diffusion", func(ctx context.Context, req *pipelines.Request) (any, error) {
		var in map[string]any
		json.Unmarshal(req.Input, &in)
		p, _ := in["prompt"].(string)
		if p == "first" {
			<-release
		}
		return map[string]any{"prompt": p}, nil
	})
	ts, _ := rtServer(t, nil, slow)
	c := rtDial(t, ts, "/run/fal-ai/fast-turbo-diffusion/realtime?max_buffering=2", nil)
	rtSend(t, c, map[string]any{"prompt": "first"})
	time.Sleep(200 * time.Millisecond) // first is running
	for _, p := range []string{"a", "b", "c"} {
		rtSend(t, c, map[string]any{"prompt": p})
	}
	time.Sleep(200 * time.Millisecond) // all three read; a was dropped
	close(release)
	var got []string
	for range 3 {
		_, m := rtResult(t, c)
		got = append(got, m["prompt"].(string))
	}
	if strings.Join(got, ",") != "first,b,c" {
		t.Fatalf("results %v, want first,b,c", got)
	}
}

func TestRealtimeIdleTimeout(t *testing.T) {
	defer api.SetRealtimeIdle(300 * time.Millisecond)()
	ts, _ := rtServer(t, nil, turboEP())
	c := rtDial(t, ts, "/run/fal-ai/fast-turbo-diffusion/realtime", nil)
	_, m, err := rtRecv(t, c)
	if err != nil || m["type"] != "x-fal-error" || m["error"] != "TIMEOUT" {
		t.Fatalf("idle: %v %v", m, err)
	}
	_, _, err = rtRecv(t, c)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusNormalClosure {
		t.Fatalf("want a normal close, got %v", err)
	}
}

func TestRealtimeDrainCloses(t *testing.T) {
	ts, env := rtServer(t, nil, turboEP())
	c := rtDial(t, ts, "/run/fal-ai/fast-turbo-diffusion/realtime", nil)
	rtSend(t, c, map[string]any{"prompt": "before"})
	if _, m := rtResult(t, c); m["prompt"] != "before" {
		t.Fatalf("before drain: %v", m)
	}
	env.srv.Drain()
	if _, m := rtResult(t, c); m["error"] != "INTERNAL_ERROR" {
		t.Fatalf("drain: %v", m)
	}
	_, _, err := rtRecv(t, c)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway {
		t.Fatalf("want close 1001, got %v", err)
	}
}

func TestRealtimeClientGoneCancelsRun(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan struct{})
	slow := ep("fal-ai/fast-turbo-diffusion", func(ctx context.Context, req *pipelines.Request) (any, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	})
	ts, _ := rtServer(t, nil, slow)
	c := rtDial(t, ts, "/run/fal-ai/fast-turbo-diffusion/realtime", nil)
	rtSend(t, c, map[string]any{"prompt": "long"})
	<-started
	c.CloseNow()
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the run went on after its client left")
	}
}
