// Package clients runs fal's real client libraries — @fal-ai/client (JS) and
// fal-client (Python), pinned by tests/clients/js/package-lock.json and
// tests/clients/python/requirements.txt, and an older @fal-ai/client pinned
// by tests/clients/js-old/package-lock.json — against the real server binary,
// set up as the README tells a user to: the JS client through the /fal/proxy
// route, the older one through requestMiddleware, the Python client through
// the HTTPS proxy with the server's CA.
// `make client-deps` installs them; `make test` passes their locations.
package clients

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/internal/testenv"
)

// photos are the test photographs the suites use.
var photos = []string{"astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg"}

type asset struct {
	Path   string `json:"path"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
}

// assetsJSON is FALOCAL_CLIENT_ASSETS: each photo's path and size.
func assetsJSON(t *testing.T) string {
	t.Helper()
	m := map[string]asset{}
	for _, name := range photos {
		p := testenv.Asset(t, name)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		cfg, _, err := image.DecodeConfig(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		m[name] = asset{Path: p, Width: cfg.Width, Height: cfg.Height}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// caFile fetches the server's CA certificate from GET /ca.pem, as a user
// would, into a file for SSL_CERT_FILE.
func caFile(t *testing.T, s *testenv.Server) string {
	t.Helper()
	resp, err := http.Get(s.Base + "/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	pem, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Contains(pem, []byte("BEGIN CERTIFICATE")) {
		t.Fatalf("GET /ca.pem: %d %v\n%s", resp.StatusCode, err, pem)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// cleanEnv is this process's environment without proxy, CA and fal
// settings, so that only what a test sets reaches the clients.
func cleanEnv(extra ...string) []string {
	drop := func(k string) bool {
		u := strings.ToUpper(k)
		switch u {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR",
			"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "PYTHONPATH", "PYTHONHOME":
			return true
		}
		return strings.HasPrefix(u, "FAL_")
	}
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !drop(k) {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// runSuite runs a client suite and fails the test, with its output, if the
// command fails.
func runSuite(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	if err != nil {
		t.Fatalf("%s %s failed after %s: %v\n%s", name, strings.Join(args, " "),
			time.Since(start).Round(time.Millisecond), err, out.String())
	}
	t.Logf("%s %s passed in %s:\n%s", filepath.Base(name), strings.Join(args, " "),
		time.Since(start).Round(time.Millisecond), out.String())
	return out.String()
}

// count reads "<prefix> N" from a runner's summary.
func count(t *testing.T, out, prefix string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(prefix) + ` (\d+)\s*$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q line in the runner's report:\n%s", prefix, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// checkUnittest insists that unittest ran tests, all passed and none was
// skipped (a skipped client test would hide a deviation).
func checkUnittest(t *testing.T, out string) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^Ran (\d+) tests? in`).FindStringSubmatch(out)
	if m == nil || m[1] == "0" {
		t.Fatalf("unittest ran no test:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^OK\s*$`).MatchString(out) {
		t.Fatalf("unittest did not end with a plain OK (skips or expected failures count as failures here):\n%s", out)
	}
}

func TestClients(t *testing.T) {
	assets := assetsJSON(t)
	// One worker, so that a second queued request is still waiting when the
	// suites cancel it.
	srv := testenv.StartServer(t, "--workers", "1")

	t.Run("js", func(t *testing.T) {
		node, modules := testenv.Node(t)
		if _, err := os.Stat(filepath.Join(modules, "@fal-ai", "client", "package.json")); err != nil {
			t.Fatalf("@fal-ai/client is not installed in %s (run 'make client-deps'): %v", modules, err)
		}
		tap := filepath.Join(t.TempDir(), "report.tap")
		runSuite(t, "js", cleanEnv("FALOCAL_BASE="+srv.Base, "FALOCAL_NODE_MODULES="+modules,
			"FALOCAL_CLIENT_ASSETS="+assets),
			node, "--test", "--test-reporter=spec", "--test-reporter-destination=stdout",
			"--test-reporter=tap", "--test-reporter-destination="+tap, "fal-client.test.mjs")
		b, err := os.ReadFile(tap)
		if err != nil {
			t.Fatal(err)
		}
		report := string(b)
		if count(t, report, "# pass") == 0 {
			t.Fatalf("node --test ran no test:\n%s", report)
		}
		for _, k := range []string{"# fail", "# cancelled", "# skipped", "# todo"} {
			if n := count(t, report, k); n != 0 {
				t.Errorf("node --test: %s %d", k, n)
			}
		}
	})

	t.Run("js-old", func(t *testing.T) {
		// @fal-ai/client 1.2.x (REST at rest.alpha.fal.ai) through the
		// README's requestMiddleware; installed from js-old/package-lock.json
		// by `make client-deps`.
		node, _ := testenv.Node(t)
		modules, err := filepath.Abs(filepath.Join("js-old", "node_modules"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(modules, "@fal-ai", "client", "package.json")); err != nil {
			if os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" {
				t.Fatalf("the older @fal-ai/client is not installed in %s (run 'make client-deps'): %v", modules, err)
			}
			t.Skipf("the older @fal-ai/client is not installed in %s (run 'make client-deps')", modules)
		}
		tap := filepath.Join(t.TempDir(), "report.tap")
		runSuite(t, "js-old", cleanEnv("FALOCAL_BASE="+srv.Base, "FALOCAL_OLD_MODULES="+modules,
			"FALOCAL_CLIENT_ASSETS="+assets),
			node, "--test", "--test-reporter=spec", "--test-reporter-destination=stdout",
			"--test-reporter=tap", "--test-reporter-destination="+tap, "old-client.test.mjs")
		b, err := os.ReadFile(tap)
		if err != nil {
			t.Fatal(err)
		}
		if report := string(b); count(t, report, "# pass") != 5 || count(t, report, "# fail") != 0 {
			t.Fatalf("node --test:\n%s", report)
		}
	})

	t.Run("python", func(t *testing.T) {
		py := testenv.ClientPython(t)
		env := cleanEnv("HTTPS_PROXY="+srv.Base, "SSL_CERT_FILE="+caFile(t, srv), "FAL_KEY=local:local",
			"FALOCAL_CLIENT_ASSETS="+assets, "PYTHONDONTWRITEBYTECODE=1")
		checkUnittest(t, runSuite(t, "python", env, py, "-m", "unittest", "-v", "test_fal_client"))
	})

	t.Run("whisper", func(t *testing.T) {
		// A server of its own whose store holds the tiny random-weight test
		// models of Whisper and FLUX.1 schnell, imported as a user imports
		// optimum exports.
		data := t.TempDir()
		for _, args := range [][]string{
			{"-pipeline", "whisper", "-name", "whisper-tiny-test", "-dir", filepath.Join("..", "..", "pipelines", "whisper", "testdata", "tiny-multi")},
			{"-pipeline", "diffusion", "-name", "flux-schnell-tiny-test", "-serves", "flux/schnell", "-dir", filepath.Join("..", "..", "pipelines", "diffusion", "testdata", "models", "flux-schnell-tiny")},
		} {
			imp := exec.Command(testenv.Binary(t), append([]string{"weights", "import", "-data-dir", data}, args...)...)
			if out, err := imp.CombinedOutput(); err != nil {
				t.Fatalf("weights import: %v\n%s", err, out)
			}
		}
		ws := testenv.StartServerAt(t, data, "")
		audio := testenv.Asset(t, "whisper/jfk.wav")
		t.Run("js", func(t *testing.T) {
			node, modules := testenv.Node(t)
			tap := filepath.Join(t.TempDir(), "report.tap")
			runSuite(t, "js", cleanEnv("FALOCAL_BASE="+ws.Base, "FALOCAL_NODE_MODULES="+modules, "FALOCAL_WHISPER_AUDIO="+audio),
				node, "--test", "--test-reporter=spec", "--test-reporter-destination=stdout",
				"--test-reporter=tap", "--test-reporter-destination="+tap, "whisper.test.mjs")
			b, err := os.ReadFile(tap)
			if err != nil {
				t.Fatal(err)
			}
			if report := string(b); count(t, report, "# pass") != 5 || count(t, report, "# fail") != 0 {
				t.Fatalf("node --test:\n%s", report)
			}
		})
		t.Run("python", func(t *testing.T) {
			py := testenv.ClientPython(t)
			env := cleanEnv("HTTPS_PROXY="+ws.Base, "SSL_CERT_FILE="+caFile(t, ws), "FAL_KEY=local:local",
				"FALOCAL_WHISPER_AUDIO="+audio, "PYTHONDONTWRITEBYTECODE=1")
			checkUnittest(t, runSuite(t, "python", env, py, "-m", "unittest", "-v", "test_whisper"))
		})
	})

	t.Run("kokoro", func(t *testing.T) {
		// the installed kokoro-v1.0 and espeak-ng, which .ci/run installs
		if _, err := exec.LookPath("espeak-ng"); err != nil {
			if os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" {
				t.Fatal("espeak-ng is missing: apt-get install espeak-ng")
			}
			t.Skip("espeak-ng not installed")
		}
		t.Run("js", func(t *testing.T) {
			node, modules := testenv.Node(t)
			tap := filepath.Join(t.TempDir(), "report.tap")
			runSuite(t, "js", cleanEnv("FALOCAL_BASE="+srv.Base, "FALOCAL_NODE_MODULES="+modules),
				node, "--test", "--test-reporter=spec", "--test-reporter-destination=stdout",
				"--test-reporter=tap", "--test-reporter-destination="+tap, "kokoro.test.mjs")
			b, err := os.ReadFile(tap)
			if err != nil {
				t.Fatal(err)
			}
			if report := string(b); count(t, report, "# pass") != 3 || count(t, report, "# fail") != 0 {
				t.Fatalf("node --test:\n%s", report)
			}
		})
		t.Run("python", func(t *testing.T) {
			py := testenv.ClientPython(t)
			env := cleanEnv("HTTPS_PROXY="+srv.Base, "SSL_CERT_FILE="+caFile(t, srv), "FAL_KEY=local:local", "PYTHONDONTWRITEBYTECODE=1")
			checkUnittest(t, runSuite(t, "python", env, py, "-m", "unittest", "-v", "test_kokoro"))
		})
	})

	t.Run("realtime", func(t *testing.T) {
		// A server of its own whose store holds the tiny random-weight SD
		// test model, imported to serve fast-turbo-diffusion as SD-Turbo.
		data := t.TempDir()
		imp := exec.Command(testenv.Binary(t), "weights", "import", "-data-dir", data, "-pipeline", "diffusion",
			"-name", "sd-turbo-tiny-test", "-serves", "fast-turbo-diffusion:stabilityai/sd-turbo",
			"-dir", filepath.Join("..", "..", "pipelines", "diffusion", "testdata", "models", "sd15-tiny"))
		if out, err := imp.CombinedOutput(); err != nil {
			t.Fatalf("weights import: %v\n%s", err, out)
		}
		rs := testenv.StartServerAt(t, data, "")
		t.Run("js", func(t *testing.T) {
			node, modules := testenv.Node(t)
			tap := filepath.Join(t.TempDir(), "report.tap")
			args := []string{"--test", "--test-reporter=spec", "--test-reporter-destination=stdout",
				"--test-reporter=tap", "--test-reporter-destination=" + tap, "realtime.test.mjs"}
			if v, err := exec.Command(node, "--version").Output(); err == nil && (bytes.HasPrefix(v, []byte("v20.")) || bytes.HasPrefix(v, []byte("v21."))) {
				args = append([]string{"--experimental-websocket"}, args...) // WebSocket is global from Node 22
			}
			runSuite(t, "js", cleanEnv("FALOCAL_BASE="+rs.Base, "FALOCAL_NODE_MODULES="+modules), node, args...)
			b, err := os.ReadFile(tap)
			if err != nil {
				t.Fatal(err)
			}
			if report := string(b); count(t, report, "# pass") != 3 || count(t, report, "# fail") != 0 {
				t.Fatalf("node --test:\n%s", report)
			}
		})
		t.Run("python", func(t *testing.T) {
			py := testenv.ClientPython(t)
			env := cleanEnv("HTTPS_PROXY="+rs.Base, "SSL_CERT_FILE="+caFile(t, rs), "FAL_KEY=local:local", "PYTHONDONTWRITEBYTECODE=1")
			checkUnittest(t, runSuite(t, "python", env, py, "-m", "unittest", "-v", "test_realtime"))
		})
	})

	t.Run("python-auth", func(t *testing.T) {
		py := testenv.ClientPython(t)
		const key = "client-test:s3cret-key"
		authed := testenv.StartServer(t, "--keys", key)
		env := cleanEnv("HTTPS_PROXY="+authed.Base, "SSL_CERT_FILE="+caFile(t, authed), "FAL_KEY="+key,
			"FALOCAL_CLIENT_ASSETS="+assets, "PYTHONDONTWRITEBYTECODE=1")
		checkUnittest(t, runSuite(t, "python", env, py, "-m", "unittest", "-v", "test_auth"))
	})
}
