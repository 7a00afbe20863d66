package main

// End-to-end tests of a fleet: API nodes and worker processes of the real
// binary sharing one queue in a real PostgreSQL server and one bucket of a
// real S3-compatible service, running the real background removal and
// upscaling models. Each subtest has a database (and so a queue) of its own.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/falocal/falocal/internal/testenv"
)

const esrganID = "fal-ai/esrgan"

// fleetHTTP bounds every request the fleet tests send, so a hung server
// fails the test instead of stalling it.
var fleetHTTP = &http.Client{Timeout: 60 * time.Second}

// fleetDo sends one request and returns errors rather than failing the
// test, so that goroutines can use it.
func fleetDo(method, u string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := fleetHTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// fleetNodeView is one server in GET /fleet.
type fleetNodeView struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Endpoints []string  `json:"endpoints"`
	Resident  []string  `json:"resident"`
	Running   int       `json:"running"`
	Seen      time.Time `json:"seen"`
	Alive     bool      `json:"alive"`
}

type fleetView struct {
	Queue struct {
		Queued  int `json:"queued"`
		Running int `json:"running"`
	} `json:"queue"`
	Nodes []fleetNodeView `json:"nodes"`
}

func (v fleetView) node(name string) (fleetNodeView, bool) {
	for _, n := range v.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return fleetNodeView{}, false
}

func getFleet(base string) (fleetView, error) {
	var v fleetView
	st, b, err := fleetDo("GET", base+"/fleet", nil)
	if err != nil {
		return v, err
	}
	if st != 200 {
		return v, fmt.Errorf("GET /fleet: %d %s", st, b)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("GET /fleet: %v: %s", err, b)
	}
	return v, nil
}

// fleetServer is a node of a fleet under its -node name.
type fleetServer struct {
	*testenv.Server
	name string
}

type fleet struct {
	apis, workers []fleetServer
}

// all is every node, API nodes first.
func (f *fleet) all() []fleetServer {
	return append(append([]fleetServer(nil), f.apis...), f.workers...)
}

func (f *fleet) worker(name string) (fleetServer, bool) {
	for _, w := range f.workers {
		if w.name == name {
			return w, true
		}
	}
	return fleetServer{}, false
}

// fleetEnv is what every fleet of TestFleet shares.
type fleetEnv struct {
	pg      *testenv.PostgresServer
	storage string
	key     string // the -webhook-key file
}

// start runs apis API nodes and workers worker nodes (each running
// perWorker requests at once) on a fresh database, and waits until /fleet
// shows them all alive.
func (e *fleetEnv) start(t *testing.T, apis, workers, perWorker int) *fleet {
	t.Helper()
	common := []string{"-queue", e.pg.NewDatabase(t), "-storage", e.storage, "-webhook-key", e.key}
	f := &fleet{}
	for i := range apis {
		name := fmt.Sprintf("api-%c", 'a'+i)
		// An empty store: an API node needs no model, as in the
		// Kubernetes manifests.
		s := testenv.StartServerAt(t, t.TempDir(), "", append([]string{"-role", "api", "-node", name}, common...)...)
		f.apis = append(f.apis, fleetServer{s, name})
	}
	for i := range workers {
		name := fmt.Sprintf("worker-%d", i+1)
		// One thread per session: several workers share this machine's
		// cores, where in a real fleet each has its own.
		s := testenv.StartServer(t, append([]string{"-role", "worker", "-node", name, "-workers", strconv.Itoa(perWorker),
			"-threads", "1"}, common...)...)
		f.workers = append(f.workers, fleetServer{s, name})
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := getFleet(f.apis[0].Base)
		missing := []string{}
		for _, s := range f.all() {
			role := "api"
			if strings.HasPrefix(s.name, "worker") {
				role = "worker"
			}
			if n, ok := v.node(s.name); !ok || !n.Alive || n.Role != role {
				missing = append(missing, s.name)
			}
		}
		if err == nil && len(missing) == 0 && len(v.Nodes) == len(f.all()) {
			for _, w := range f.workers {
				n, _ := v.node(w.name)
				for _, id := range []string{rembgID, esrganID} {
					if !containsString(n.Endpoints, id) {
						t.Fatalf("worker %s does not offer %s: %v", w.name, id, n.Endpoints)
					}
				}
				// A worker shows the fleet but takes no request.
				if wv, err := getFleet(w.Base); err != nil || len(wv.Nodes) != len(v.Nodes) {
					t.Fatalf("GET /fleet on %s: %v %+v", w.name, err, wv)
				}
				if code, b, err := fleetDo("POST", w.Base+"/"+esrganID, []byte(`{}`)); err != nil || code != 404 {
					t.Fatalf("submit to worker %s: %d %s %v, want 404", w.name, code, b, err)
				}
			}
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fleet is not assembled after 30 s (%v; not alive with their role: %v): %+v", err, missing, v)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// completions sums falocal_requests_total of an endpoint and outcome over
// nodes, and returns each node's count.
func completions(t *testing.T, nodes []fleetServer, endpoint, outcome string) (int, map[string]int) {
	t.Helper()
	series := `falocal_requests_total{endpoint="` + endpoint + `",outcome="` + outcome + `"}`
	sum, per := 0, map[string]int{}
	for _, n := range nodes {
		v := int(metricValues(t, n.Base)[series])
		per[n.name] = v
		sum += v
	}
	return sum, per
}

// fleetStatus is a request's status with its logs, or an error.
func fleetStatus(statusURL string) (queueStatus, error) {
	var st queueStatus
	code, b, err := fleetDo("GET", statusURL+"?logs=1", nil)
	if err != nil {
		return st, err
	}
	if code != 200 && code != 202 {
		return st, fmt.Errorf("GET %s: %d %s", statusURL, code, b)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("GET %s: %v: %s", statusURL, err, b)
	}
	return st, nil
}

// awaitCompleted polls a request until it is COMPLETED; a status the
// database cannot give for a moment is retried until the deadline.
func awaitCompleted(statusURL string, deadline time.Time) (queueStatus, error) {
	for {
		st, err := fleetStatus(statusURL)
		if err == nil && st.Status == "COMPLETED" {
			return st, nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return st, err
			}
			return st, fmt.Errorf("%s still %s", statusURL, st.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fleetResult fetches a completed request's result and checks its image:
// a PNG of w×h, served by base (an API node), whatever host its URL names.
func fleetResult(base, responseURL string, w, h int) (imageOut, error) {
	code, b, err := fleetDo("GET", responseURL, nil)
	if err != nil {
		return imageOut{}, err
	}
	var out struct{ Image imageOut }
	if code != 200 || json.Unmarshal(b, &out) != nil {
		return imageOut{}, fmt.Errorf("GET %s: %d %s", responseURL, code, b)
	}
	return out.Image, checkFleetImage(base, out.Image, w, h)
}

func checkFleetImage(base string, img imageOut, w, h int) error {
	if img.ContentType != "image/png" || img.Width != w || img.Height != h {
		return fmt.Errorf("image %+v, want a %dx%d PNG", img, w, h)
	}
	path, err := filePath(img.URL)
	if err != nil {
		return err
	}
	code, data, err := fleetDo("GET", base+path, nil)
	if err != nil {
		return err
	}
	if code != 200 || len(data) != img.FileSize {
		return fmt.Errorf("GET %s: %d, %d bytes (file_size %d)", base+path, code, len(data), img.FileSize)
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil || format != "png" || cfg.Width != w || cfg.Height != h {
		return fmt.Errorf("GET %s: %s %dx%d (%v), want a %dx%d PNG", base+path, format, cfg.Width, cfg.Height, err, w, h)
	}
	return nil
}

// fleetImage is checkFleetImage's fetch for the test goroutine, which also
// decodes the image for content checks.
func fleetImage(t *testing.T, base string, img imageOut) image.Image {
	t.Helper()
	path, err := filePath(img.URL)
	if err != nil {
		t.Fatal(err)
	}
	img.URL = base + path
	return fetchImage(t, img)
}

// filePath is the server's path of an output file's URL: /cdn/files/… on
// the server's own address, or fal's CDN (https://v3.fal.media/files/…),
// which clients of the HTTPS proxy are given.
func filePath(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(u.Path, "/cdn/files/") {
		return u.Path, nil
	}
	if rest, ok := strings.CutPrefix(u.Path, "/files/"); ok && strings.HasSuffix(u.Host, ".fal.media") {
		return "/cdn/files/" + rest, nil
	}
	return "", fmt.Errorf("image url %q is not a file of the server", raw)
}

func readyStatus(base string) int {
	code, _, err := fleetDo("GET", base+"/readyz", nil)
	if err != nil {
		return 0
	}
	return code
}

type streamEvent struct {
	at     time.Time
	status string
}

// streams follow requests' /status/stream, each until the server ends it.
type streams struct {
	events [][]streamEvent
	errs   []error
	first  chan struct{} // one send per stream, at its first event or end
	done   chan struct{}
}

func startStreams(t *testing.T, statusURLs []string) *streams {
	t.Helper()
	n := len(statusURLs)
	s := &streams{events: make([][]streamEvent, n), errs: make([]error, n), first: make(chan struct{}, n), done: make(chan struct{})}
	// A test that fails early ends the streams before it returns.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, u := range statusURLs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.events[i], s.errs[i] = readStream(ctx, u, s.first)
		}()
	}
	go func() { wg.Wait(); close(s.done) }()
	t.Cleanup(func() { cancel(); <-s.done })
	return s
}

// waitFirst waits until every stream has had an event.
func (s *streams) waitFirst(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for range s.events {
		select {
		case <-s.first:
		case <-deadline:
			t.Fatalf("a status stream had no event in %s", timeout)
		}
	}
}

// wait waits for the streams to end, and checks that each ended on
// COMPLETED without an error.
func (s *streams) wait(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(3 * time.Minute):
		t.Fatal("status streams still open after 3 minutes")
	}
	for i, evs := range s.events {
		if s.errs[i] != nil || len(evs) == 0 || evs[len(evs)-1].status != "COMPLETED" {
			t.Errorf("stream %d ended without COMPLETED (%v): %v", i, s.errs[i], evs)
		}
	}
}

// readStream reads one status stream to its end; it sends on first at its
// first event, or when it ends without one.
func readStream(ctx context.Context, statusURL string, first chan<- struct{}) ([]streamEvent, error) {
	signalled := false
	signal := func() {
		if !signalled {
			signalled = true
			first <- struct{}{}
		}
	}
	defer signal()
	req, err := http.NewRequestWithContext(ctx, "GET", statusURL+"/stream?logs=1", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("GET %s/stream: %d %s", statusURL, resp.StatusCode, b)
	}
	var evs []streamEvent
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var st queueStatus
		if err := json.Unmarshal([]byte(data), &st); err != nil {
			return evs, fmt.Errorf("event %s: %v", data, err)
		}
		evs = append(evs, streamEvent{time.Now(), st.Status})
		signal()
	}
	return evs, sc.Err()
}

// clientEnv is this process's environment without proxy, CA and fal
// settings, plus extra: only what the test sets reaches a client.
func clientEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch u := strings.ToUpper(k); {
		case u == "HTTP_PROXY", u == "HTTPS_PROXY", u == "ALL_PROXY", u == "NO_PROXY", u == "SSL_CERT_FILE",
			u == "SSL_CERT_DIR", u == "REQUESTS_CA_BUNDLE", u == "CURL_CA_BUNDLE", u == "NODE_EXTRA_CA_CERTS",
			u == "PYTHONPATH", u == "PYTHONHOME", strings.HasPrefix(u, "FAL_"):
		default:
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// runClient runs a client driver and returns its stdout.
func runClient(t *testing.T, env []string, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s failed after %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(name), time.Since(t0).Round(time.Millisecond), err, stdout.String(), stderr.String())
	}
	t.Logf("%s ran in %s", filepath.Base(name), time.Since(t0).Round(time.Millisecond))
	return stdout.Bytes()
}

// fleetJS subscribes with @fal-ai/client (through the /fal/proxy route, as
// a user sets it up) to each job of $FALOCAL_JOBS, [name, endpoint, image
// file, extra input], runs the one of endpoint $FALOCAL_RUN again with
// fal.run (a synchronous run, which the API node hands to a worker), and
// prints what it saw.
const fleetJS = `
const { createRequire } = require("node:module");
const { dirname, join } = require("node:path");
const { readFileSync } = require("node:fs");
const env = process.env;
const { fal } = createRequire(join(dirname(env.FALOCAL_NODE_MODULES), "index.js"))("@fal-ai/client");
fal.config({ credentials: "local:local", proxyUrl: { url: env.FALOCAL_BASE + "/fal/proxy", when: "always" } });
(async () => {
  const out = {};
  for (const [name, id, file, extra] of JSON.parse(env.FALOCAL_JOBS)) {
    const statuses = [];
    let logs = 0;
    const input = { ...extra, image_url: "data:image/png;base64," + readFileSync(file).toString("base64") };
    const { data, requestId } = await fal.subscribe(id, {
      input, logs: true, pollInterval: 100,
      onQueueUpdate: (u) => { statuses.push(u.status); logs += (u.logs || []).length; },
    });
    out[name] = { request_id: requestId, statuses, logs, image: data.image };
    if (id === env.FALOCAL_RUN) {
      const { data } = await fal.run(id, { input });
      out[name + " run"] = { image: data.image };
    }
  }
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
`

// fleetPy is the same with fal-client, through the server's HTTPS proxy.
const fleetPy = `
import json, os
import fal_client
out = {}
for name, app, path, extra in json.loads(os.environ["FALOCAL_JOBS"]):
    updates = []
    args = dict(extra, image_url=fal_client.encode_file(path))
    res = fal_client.subscribe(app, arguments=args, with_logs=True, on_queue_update=updates.append)
    out[name] = {
        "statuses": [type(u).__name__ for u in updates],
        "logs": sum(len(getattr(u, "logs", None) or []) for u in updates),
        "image": res["image"],
    }
    if app == os.environ["FALOCAL_RUN"]:
        out[name + " run"] = {"image": fal_client.run(app, arguments=args)["image"]}
print(json.dumps(out))
`

type clientRun struct {
	RequestID string   `json:"request_id"`
	Statuses  []string `json:"statuses"`
	Logs      int      `json:"logs"`
	Image     imageOut `json:"image"`
}

// TestFleet: fal's JS and Python clients through an API node; 300
// requests spread over three workers, none lost or run twice; a worker
// killed with SIGKILL mid-run, PostgreSQL stopped and started mid-run, an
// API node killed under status streams held by another, and a cancel sent
// to another API node than the one that took the request.
func TestFleet(t *testing.T) {
	start := time.Now()
	astronaut := testenv.Asset(t, "astronaut.png")
	photo, err := os.ReadFile(astronaut)
	if err != nil {
		t.Fatal(err)
	}
	rembgBody := mustJSON(map[string]any{"image_url": dataURI("image/png", photo)})
	// A 32×24 crop: the fastest Real-ESRGAN model upscales it in a few
	// milliseconds, so the bulk of the requests measure the fleet.
	crop := cropPNG(t, "chelsea.png", 120, 70, 32, 24)
	cropBytes, err := os.ReadFile(crop)
	if err != nil {
		t.Fatal(err)
	}
	upscale := map[string]any{"model": "RealESRGAN_x4_v3", "scale": 2}
	upBody := mustJSON(map[string]any{"image_url": dataURI("image/png", cropBytes), "model": upscale["model"], "scale": upscale["scale"]})
	const upW, upH = 64, 48

	env := &fleetEnv{pg: testenv.Postgres(t)}
	s3 := testenv.S3(t)
	t.Setenv("AWS_ACCESS_KEY_ID", s3.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3.SecretKey)
	env.storage = s3.URL("fleet/")
	// Created by the first node that starts; every other node loads it.
	env.key = filepath.Join(t.TempDir(), "webhook-ed25519.pem")

	t.Run("clients", func(t *testing.T) {
		f := env.start(t, 1, 3, 1)
		api := f.apis[0]
		jobs := string(mustJSON([][]any{
			{"rembg", rembgID, astronaut, map[string]any{}},
			{"esrgan", esrganID, crop, upscale},
		}))
		want := map[string][2]int{"rembg": {512, 512}, "esrgan": {upW, upH}}
		sync := "esrgan run" // fal.run of the upscale, checked for its image only

		t.Run("js", func(t *testing.T) {
			node, modules := testenv.Node(t)
			out := runClient(t, clientEnv("FALOCAL_BASE="+api.Base, "FALOCAL_NODE_MODULES="+modules, "FALOCAL_JOBS="+jobs, "FALOCAL_RUN="+esrganID),
				node, "-e", fleetJS)
			var runs map[string]clientRun
			if err := json.Unmarshal(out, &runs); err != nil {
				t.Fatalf("client output %s: %v", out, err)
			}
			for name, size := range want {
				r := runs[name]
				// An upscale may run between two polls; a background removal
				// takes long enough to be seen running.
				if r.RequestID == "" || len(r.Statuses) == 0 || r.Statuses[len(r.Statuses)-1] != "COMPLETED" || r.Logs == 0 ||
					name == "rembg" && !containsString(r.Statuses, "IN_PROGRESS") {
					t.Errorf("%s: request %q, updates %v, %d log lines; want COMPLETED last (IN_PROGRESS before it for rembg), with logs", name, r.RequestID, r.Statuses, r.Logs)
				}
				if !strings.HasPrefix(r.Image.URL, api.Base+"/cdn/files/") {
					t.Errorf("%s: image url %s, want one on the API node %s", name, r.Image.URL, api.Base)
				}
				if err := checkFleetImage(api.Base, r.Image, size[0], size[1]); err != nil {
					t.Errorf("%s: %v", name, err)
				}
				if name == "rembg" && !t.Failed() {
					checkAstronaut(t, fleetImage(t, api.Base, r.Image))
				}
			}
			if err := checkFleetImage(api.Base, runs[sync].Image, upW, upH); err != nil {
				t.Errorf("%s: %v", sync, err)
			}
		})

		t.Run("python", func(t *testing.T) {
			py := testenv.ClientPython(t)
			// The user's setup: fal's hosts through the server's HTTPS proxy,
			// trusting its CA.
			ca := filepath.Join(t.TempDir(), "ca.pem")
			code, pem, err := fleetDo("GET", api.Base+"/ca.pem", nil)
			if err != nil || code != 200 || !bytes.Contains(pem, []byte("BEGIN CERTIFICATE")) {
				t.Fatalf("GET /ca.pem: %d %v", code, err)
			}
			if err := os.WriteFile(ca, pem, 0o644); err != nil {
				t.Fatal(err)
			}
			out := runClient(t, clientEnv("HTTPS_PROXY="+api.Base, "SSL_CERT_FILE="+ca, "FAL_KEY=local:local",
				"FALOCAL_JOBS="+jobs, "FALOCAL_RUN="+esrganID, "PYTHONDONTWRITEBYTECODE=1"), py, "-c", fleetPy)
			var runs map[string]clientRun
			if err := json.Unmarshal(out, &runs); err != nil {
				t.Fatalf("client output %s: %v", out, err)
			}
			for name, size := range want {
				r := runs[name]
				if len(r.Statuses) == 0 || r.Statuses[len(r.Statuses)-1] != "Completed" || r.Logs == 0 ||
					name == "rembg" && !containsString(r.Statuses, "InProgress") {
					t.Errorf("%s: updates %v, %d log lines; want Completed last (InProgress before it for rembg), with logs", name, r.Statuses, r.Logs)
				}
				if err := checkFleetImage(api.Base, r.Image, size[0], size[1]); err != nil {
					t.Errorf("%s: %v", name, err)
				}
				if name == "rembg" && !t.Failed() {
					checkAstronaut(t, fleetImage(t, api.Base, r.Image))
				}
			}
			if err := checkFleetImage(api.Base, runs[sync].Image, upW, upH); err != nil {
				t.Errorf("%s: %v", sync, err)
			}
		})

		// A worker delivers the webhook, signed with the shared key that the
		// API node publishes.
		t.Run("webhook", func(t *testing.T) {
			got := make(chan delivery, 4)
			recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got <- delivery{r.Header.Clone(), b}
			}))
			defer recv.Close()
			sub := submitQueue(t, nil, api.Base+"/"+esrganID+"?fal_webhook="+url.QueryEscape(recv.URL+"/hook"), upBody)
			r := do(t, nil, "GET", api.Base+"/.well-known/jwks.json", nil)
			var set struct{ Keys []struct{ X string } }
			if err := json.Unmarshal(r.body, &set); r.status != 200 || err != nil || len(set.Keys) == 0 {
				t.Fatalf("jwks: %d %s", r.status, r.body)
			}
			pub, err := base64.RawURLEncoding.DecodeString(set.Keys[0].X)
			if err != nil || len(pub) != ed25519.PublicKeySize {
				t.Fatalf("jwks key %q: %v", set.Keys[0].X, err)
			}
			var d delivery
			select {
			case d = <-got:
			case <-time.After(60 * time.Second):
				t.Fatal("no webhook within 60 s")
			}
			h := d.header
			sum := sha256.Sum256(d.body)
			msg := h.Get("X-Fal-Webhook-Request-Id") + "\n" + h.Get("X-Fal-Webhook-User-Id") + "\n" +
				h.Get("X-Fal-Webhook-Timestamp") + "\n" + hex.EncodeToString(sum[:])
			sig, _ := hex.DecodeString(h.Get("X-Fal-Webhook-Signature"))
			if h.Get("X-Fal-Webhook-Request-Id") != sub.RequestID || !ed25519.Verify(pub, []byte(msg), sig) {
				t.Errorf("webhook for %q does not verify with the API node's key (want request %s): %s", h.Get("X-Fal-Webhook-Request-Id"), sub.RequestID, d.body)
			}
			var env struct {
				Status  string `json:"status"`
				Payload struct{ Image imageOut }
			}
			if err := json.Unmarshal(d.body, &env); err != nil || env.Status != "OK" {
				t.Fatalf("webhook body %s: %v", d.body, err)
			}
			if err := checkFleetImage(api.Base, env.Payload.Image, upW, upH); err != nil {
				t.Error(err)
			}
			select {
			case d := <-got:
				t.Errorf("a second delivery: %s", d.body)
			case <-time.After(300 * time.Millisecond):
			}
		})
	})

	t.Run("300 requests", func(t *testing.T) {
		const n, conc = 300, 16
		f := env.start(t, 1, 3, 2)
		api := f.apis[0]
		subs := make([]submitted, n)
		t0 := time.Now()
		parallel(n, conc, func(i int) {
			code, b, err := fleetDo("POST", api.Base+"/"+esrganID, upBody)
			if err == nil && code != 200 {
				err = fmt.Errorf("%d %s", code, b)
			}
			if err == nil {
				err = json.Unmarshal(b, &subs[i])
			}
			if err != nil || subs[i].RequestID == "" {
				t.Errorf("submit %d: %v", i, err)
			}
		})
		submitted := time.Since(t0)
		deadline := time.Now().Add(3 * time.Minute)
		var mu sync.Mutex
		starts := map[int]int{} // "request started" lines → requests
		parallel(n, conc, func(i int) {
			if subs[i].RequestID == "" {
				return
			}
			st, err := awaitCompleted(subs[i].StatusURL, deadline)
			if err == nil && (st.Error != "" || st.ErrorType != "") {
				err = fmt.Errorf("failed: %s (%s)", st.Error, st.ErrorType)
			}
			if err == nil {
				_, err = fleetResult(api.Base, subs[i].ResponseURL, upW, upH)
			}
			if err != nil {
				t.Errorf("request %d (%s): %v", i, subs[i].RequestID, err)
			}
			mu.Lock()
			starts[st.logsWith("INFO", "request started")]++
			mu.Unlock()
		})
		elapsed := time.Since(t0)
		t.Logf("%d upscales through 1 API node and 3 workers (-workers 2): submitted in %s, all completed in %s: %.1f requests/s",
			n, submitted.Round(time.Millisecond), elapsed.Round(time.Millisecond), n/elapsed.Seconds())
		if starts[1] != n {
			t.Errorf("requests by the number of times they started: %v, want all %d once", starts, n)
		}

		ok, per := completions(t, f.workers, esrganID, "ok")
		t.Logf("completions per worker: %v", per)
		if ok != n {
			t.Errorf("the workers completed %d upscales, want exactly %d: %v", ok, n, per)
		}
		ran := 0
		for _, c := range per {
			if c > 0 {
				ran++
			}
		}
		if ran < 2 {
			t.Errorf("only %d worker ran requests: %v", ran, per)
		}
		for _, outcome := range []string{"client_error", "server_error", "timeout", "cancelled"} {
			if c, per := completions(t, f.workers, esrganID, outcome); c != 0 {
				t.Errorf("%d upscales ended %s: %v", c, outcome, per)
			}
		}
		if c, _ := completions(t, f.apis, esrganID, "ok"); c != 0 {
			t.Errorf("the API node ran %d requests", c)
		}
		if m := metricValues(t, api.Base)["falocal_models_loaded"]; m != 0 {
			t.Errorf("the API node holds %g models", m)
		}
		v, err := getFleet(api.Base)
		if err != nil {
			t.Fatal(err)
		}
		if v.Queue.Queued != 0 || v.Queue.Running != 0 {
			t.Errorf("/fleet after the run: %+v, want an empty queue", v.Queue)
		}
	})

	t.Run("kill -9 of a worker", func(t *testing.T) {
		f := env.start(t, 1, 3, 1)
		api := f.apis[0]
		hooks := make(chan []byte, 4)
		recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			hooks <- b
		}))
		defer recv.Close()
		sub := submitQueue(t, nil, api.Base+"/"+rembgID+"?fal_webhook="+url.QueryEscape(recv.URL+"/hook"), rembgBody)
		// The worker that claimed it, as /fleet says.
		var victim fleetServer
		deadline := time.Now().Add(30 * time.Second)
		for victim.Server == nil {
			v, err := getFleet(api.Base)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range v.Nodes {
				if n.Running > 0 {
					if w, ok := f.worker(n.Name); ok {
						victim = w
					} else {
						t.Fatalf("node %s (%s) runs a request: %+v", n.Name, n.Role, v)
					}
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no worker runs the request after 30 s: %+v", v)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if st := getStatus(t, nil, sub.StatusURL); st.Status != "IN_PROGRESS" {
			t.Fatalf("request %s when its worker is to be killed, want IN_PROGRESS", st.Status)
		}
		victim.Kill(t)
		killed := time.Now()
		st, err := awaitCompleted(sub.StatusURL, killed.Add(60*time.Second))
		if err != nil {
			t.Fatalf("after the kill -9 of %s: %v", victim.name, err)
		}
		t.Logf("the request on %s completed %s after its kill -9", victim.name, time.Since(killed).Round(time.Millisecond))
		if st.Error != "" || st.ErrorType != "" {
			t.Fatalf("request failed after the kill: %s (%s)", st.Error, st.ErrorType)
		}
		// Its logs tell the caller that it was queued again, once.
		if st.logsWith("INFO", "request started") != 2 || st.logsWith("WARN", "queued again") != 1 {
			t.Errorf("logs of the re-run request: %+v; want two starts and one WARN that it was queued again", st.Logs)
		}
		img := resultImage(t, nil, sub.ResponseURL)
		checkAstronaut(t, fleetImage(t, api.Base, img))
		// The webhook comes once, from the run that completed.
		select {
		case b := <-hooks:
			var env struct{ Status string }
			if json.Unmarshal(b, &env); env.Status != "OK" {
				t.Errorf("webhook after the re-run: %s", b)
			}
		case <-time.After(20 * time.Second):
			t.Error("no webhook 20 s after the re-run completed")
		}
		var survivors []fleetServer
		for _, w := range f.workers {
			if w.name != victim.name {
				survivors = append(survivors, w)
			}
		}
		if c, per := completions(t, survivors, rembgID, "ok"); c != 1 {
			t.Errorf("the other workers completed %d background removals, want 1: %v", c, per)
		}
		// The fleet view lets the dead node go once two leases pass
		// without its heartbeat.
		for {
			v, err := getFleet(api.Base)
			if err != nil {
				t.Fatal(err)
			}
			n, ok := v.node(victim.name)
			if !ok || !n.Alive {
				t.Logf("/fleet calls the killed %s dead %s after the kill", victim.name, time.Since(killed).Round(time.Millisecond))
				break
			}
			if time.Since(killed) > 45*time.Second {
				t.Fatalf("/fleet still calls %s alive 45 s after its kill -9: %+v", victim.name, n)
			}
			time.Sleep(250 * time.Millisecond)
		}
		if c, per := completions(t, survivors, rembgID, "ok"); c != 1 {
			t.Errorf("the other workers completed %d background removals by the end, want 1: %v", c, per)
		}
		select {
		case b := <-hooks:
			t.Errorf("a second webhook: %s", b)
		default:
		}
	})

	t.Run("PostgreSQL restart", func(t *testing.T) {
		f := env.start(t, 1, 3, 1)
		api := f.apis[0]
		var subs []submitted
		for range 3 {
			subs = append(subs, submitQueue(t, nil, api.Base+"/"+rembgID, rembgBody))
		}
		for range 30 {
			subs = append(subs, submitQueue(t, nil, api.Base+"/"+esrganID, upBody))
		}
		waitStatus(t, nil, subs[0].StatusURL, "IN_PROGRESS", 30*time.Second)
		v, err := getFleet(api.Base)
		if err != nil {
			t.Fatal(err)
		}
		if v.Queue.Queued == 0 || v.Queue.Running == 0 {
			t.Fatalf("before the restart: %+v, want requests both queued and running", v.Queue)
		}
		t.Logf("before the restart: %d queued, %d running", v.Queue.Queued, v.Queue.Running)
		// Status streams on the API node wait through the outage.
		follow := startStreams(t, []string{subs[0].StatusURL, subs[len(subs)-1].StatusURL})
		follow.waitFirst(t, 30*time.Second)
		down := time.Now()
		env.pg.Stop(t)
		// The API node says it cannot take work while the database is gone.
		for readyStatus(api.Base) != http.StatusServiceUnavailable {
			if time.Since(down) > 20*time.Second {
				t.Fatalf("/readyz of the API node: %d 20 s after PostgreSQL stopped, want 503", readyStatus(api.Base))
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("/readyz of the API node 503 %s after PostgreSQL stopped", time.Since(down).Round(time.Millisecond))
		// Down for a while, so that runs end while the database is away.
		time.Sleep(2 * time.Second)
		// Meanwhile the API node answers 503 (runner_scheduling_failure)
		// rather than an internal error, and no worker is ready either.
		for what, u := range map[string]string{"submit": api.Base + "/" + esrganID, "status": subs[5].StatusURL} {
			method, body := "GET", []byte(nil)
			if what == "submit" {
				method, body = "POST", upBody
			}
			code, b, err := fleetDo(method, u, body)
			var e struct {
				ErrorType string `json:"error_type"`
			}
			if err != nil || code != http.StatusServiceUnavailable || json.Unmarshal(b, &e) != nil || e.ErrorType != "runner_scheduling_failure" {
				t.Errorf("%s while PostgreSQL is down: %d %s (%v), want 503 runner_scheduling_failure", what, code, b, err)
			}
		}
		for _, w := range f.workers {
			if code := readyStatus(w.Base); code != http.StatusServiceUnavailable {
				t.Errorf("/readyz of %s while PostgreSQL is down: %d, want 503", w.name, code)
			}
		}
		env.pg.Start(t)
		up := time.Now()
		for _, s := range f.all() {
			for readyStatus(s.Base) != 200 {
				if time.Since(up) > 30*time.Second {
					t.Fatalf("/readyz of %s: %d 30 s after PostgreSQL came back, want 200", s.name, readyStatus(s.Base))
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		t.Logf("every node ready %s after PostgreSQL came back", time.Since(up).Round(time.Millisecond))
		reruns := 0
		for i, s := range subs {
			st, err := awaitCompleted(s.StatusURL, up.Add(90*time.Second))
			if err == nil && (st.Error != "" || st.ErrorType != "") {
				err = fmt.Errorf("failed: %s (%s)", st.Error, st.ErrorType)
			}
			w, h := upW, upH
			if i < 3 {
				w, h = 512, 512
			}
			if err == nil {
				_, err = fleetResult(api.Base, s.ResponseURL, w, h)
			}
			if err != nil {
				t.Errorf("request %d (%s): %v", i, s.RequestID, err)
			}
			if st.logsWith("INFO", "request started") > 1 {
				reruns++
			}
		}
		t.Logf("all %d requests completed %s after PostgreSQL came back (%s down); %d of them started more than once",
			len(subs), time.Since(up).Round(time.Millisecond), up.Sub(down).Round(time.Millisecond), reruns)
		follow.wait(t)
		rembg, _ := completions(t, f.workers, rembgID, "ok")
		up2, _ := completions(t, f.workers, esrganID, "ok")
		if rembg < 3 || up2 < 30 {
			t.Errorf("the workers counted %d background removals and %d upscales, want at least 3 and 30", rembg, up2)
		}
	})

	t.Run("API node killed under status streams", func(t *testing.T) {
		f := env.start(t, 2, 2, 1)
		a, b := f.apis[0], f.apis[1]
		var subs []submitted
		for i := range 4 {
			on := a
			if i%2 == 1 {
				on = b
			}
			s := submitQueue(t, nil, on.Base+"/"+rembgID, rembgBody)
			if on == a {
				s = s.rebase(t, a.Base, b.Base)
			}
			subs = append(subs, s)
		}
		var urls []string
		for _, s := range subs {
			urls = append(urls, s.StatusURL)
		}
		follow := startStreams(t, urls)
		follow.waitFirst(t, 30*time.Second)
		a.Kill(t)
		killed := time.Now()
		follow.wait(t)
		after := 0
		for _, evs := range follow.events {
			if len(evs) > 0 && evs[len(evs)-1].at.After(killed) {
				after++
			}
		}
		t.Logf("%d of %d streams on API node B reached COMPLETED after API node A's kill -9 (the last %s after it)",
			after, len(subs), time.Since(killed).Round(time.Millisecond))
		if after == 0 {
			t.Errorf("every request completed before the kill: the test saw no stream live through it")
		}
		for i, s := range subs {
			var line []string
			for _, e := range follow.events[i] {
				line = append(line, fmt.Sprintf("%s %+.3fs", e.status, e.at.Sub(killed).Seconds()))
			}
			t.Logf("stream %d, events at seconds from the kill: %s", i, strings.Join(line, ", "))
			img := resultImage(t, nil, s.ResponseURL)
			if !strings.HasPrefix(img.URL, a.Base+"/") && !strings.HasPrefix(img.URL, b.Base+"/") {
				t.Errorf("request %d: image url %s on neither API node", i, img.URL)
			}
			checkAstronaut(t, fleetImage(t, b.Base, img))
		}
	})

	t.Run("cancel across nodes", func(t *testing.T) {
		f := env.start(t, 2, 1, 1)
		a, b := f.apis[0], f.apis[1]
		w := f.workers[0]
		sub := submitQueue(t, nil, a.Base+"/"+rembgID, rembgBody).rebase(t, a.Base, b.Base)
		queued := submitQueue(t, nil, a.Base+"/"+rembgID, rembgBody).rebase(t, a.Base, b.Base)
		next := submitQueue(t, nil, a.Base+"/"+esrganID, upBody)
		waitStatus(t, nil, sub.StatusURL, "IN_PROGRESS", 30*time.Second)
		cancel := func(s submitted) {
			t.Helper()
			r := do(t, nil, "PUT", s.CancelURL, nil)
			var ack struct{ Status string }
			if json.Unmarshal(r.body, &ack); r.status != http.StatusAccepted || ack.Status != "CANCELLATION_REQUESTED" {
				t.Fatalf("PUT %s: %d %s, want 202 CANCELLATION_REQUESTED", s.CancelURL, r.status, r.body)
			}
		}
		cancelled := func(s submitted, st queueStatus) {
			t.Helper()
			r := do(t, nil, "GET", s.ResponseURL, nil)
			var res struct {
				ErrorType string `json:"error_type"`
			}
			if json.Unmarshal(r.body, &res); r.status != 499 || res.ErrorType != "client_cancelled" {
				t.Errorf("result of the cancelled request: %d %s (status %+v), want 499 client_cancelled", r.status, r.body, st)
			}
		}
		// The one waiting behind it first: it never runs.
		if st := getStatus(t, nil, queued.StatusURL); st.Status != "IN_QUEUE" {
			t.Fatalf("second request %s, want IN_QUEUE behind the running one", st.Status)
		}
		cancel(queued)
		st, err := awaitCompleted(queued.StatusURL, time.Now().Add(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if st.logsWith("INFO", "request started") != 0 {
			t.Errorf("the request cancelled while queued started: %+v", st.Logs)
		}
		cancelled(queued, st)
		t0 := time.Now()
		cancel(sub)
		st, err = awaitCompleted(sub.StatusURL, t0.Add(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("the running request completed %s after its cancel on the other API node", time.Since(t0).Round(time.Millisecond))
		cancelled(sub, st)
		// The worker goes on with the request queued behind it.
		st, err = awaitCompleted(next.StatusURL, time.Now().Add(30*time.Second))
		if err != nil || st.Error != "" {
			t.Fatalf("the next request: %v %+v", err, st)
		}
		if _, err := fleetResult(a.Base, next.ResponseURL, upW, upH); err != nil {
			t.Error(err)
		}
		if c, _ := completions(t, f.workers, rembgID, "cancelled"); c != 1 {
			t.Errorf("%s counted %d cancelled background removals, want 1", w.name, c)
		}
		if c, _ := completions(t, f.workers, esrganID, "ok"); c != 1 {
			t.Errorf("%s counted %d upscales, want 1", w.name, c)
		}
	})
	t.Logf("TestFleet ran in %s", time.Since(start).Round(time.Millisecond))
}

// parallel runs fn(0..n-1) on conc goroutines.
func parallel(n, conc int, fn func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fn(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}
