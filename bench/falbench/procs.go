package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// --- the server under test, when falbench starts it -------------------------

type serverProc struct {
	cmd     *exec.Cmd
	base    string
	scratch string
	done    chan error
}

// startServer runs `bin serve` on a free loopback port with extra args and
// waits for /healthz. With scratch, the data dir is a fresh temporary
// directory whose blobs/ and manifests/ link to dataDir's (the installed
// models): the benchmark's queue.db and output files stay out of the user's
// store and do not contend for its queue lock.
func startServer(bin, dataDir, cacheDir string, scratch bool, extra []string, logPath string) (*serverProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p := &serverProc{base: fmt.Sprintf("http://127.0.0.1:%d", port), done: make(chan error, 1)}
	dd := dataDir
	if scratch {
		if p.scratch, err = os.MkdirTemp("", "falbench-data-"); err != nil {
			return nil, err
		}
		for _, sub := range []string{"blobs", "manifests"} {
			if err := os.Symlink(filepath.Join(dataDir, sub), filepath.Join(p.scratch, sub)); err != nil {
				p.cleanup()
				return nil, err
			}
		}
		dd = p.scratch
	}
	args := append([]string{"serve", "--data-dir", dd, "--cache-dir", cacheDir, "-listen", fmt.Sprintf("127.0.0.1:%d", port)}, extra...)
	logf, err := os.Create(logPath)
	if err != nil {
		p.cleanup()
		return nil, err
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		p.cleanup()
		return nil, err
	}
	go func() { p.done <- p.cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.cleanup()
			tail, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("server exited (%v) during start: %s", err, trim(lastLines(tail, 5)))
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := http.Get(p.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, nil
			}
		}
	}
	p.stop()
	return nil, errors.New("server did not answer /healthz within 3 minutes")
}

func (p *serverProc) stop() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	p.cleanup()
}

func (p *serverProc) cleanup() {
	if p.scratch != "" {
		os.RemoveAll(p.scratch)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLines(b []byte, n int) []byte {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return []byte(strings.Join(lines, " | "))
}

// --- the peer: @imgly/background-removal-node in one Node process ------------

// PeerLevel is one peer run at a concurrency.
type PeerLevel struct {
	Concurrency int       `json:"concurrency"`
	Requests    int       `json:"requests"`
	WallS       float64   `json:"wall_s"`
	Throughput  float64   `json:"throughput_rps"`
	Latency     Stats     `json:"latency"`
	ColdMs      float64   `json:"cold_ms"` // first call of the process: model load + one image
	LoadAvg     string    `json:"loadavg_after"`
	Samples     []float64 `json:"latencies_ms,omitempty"`
	Err         string    `json:"error,omitempty"`
}

// PeerRun is the peer over all concurrencies.
type PeerRun struct {
	Name     string         `json:"name"`
	Endpoint string         `json:"compared_with"`
	Config   map[string]any `json:"config,omitempty"`
	Levels   []PeerLevel    `json:"levels"`
}

func runPeer(ctx context.Context, dir string, images []string, count, conc int) (PeerLevel, map[string]any, error) {
	job, _ := json.Marshal(map[string]any{"images": images, "count": count, "concurrency": conc, "warmup": 1})
	cmd := exec.CommandContext(ctx, "node", "run.mjs", string(job))
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return PeerLevel{}, nil, fmt.Errorf("node run.mjs: %v: %s (install it with `cd %s && npm ci --ignore-scripts`)", err, trim([]byte(stderr.String())), dir)
	}
	var r struct {
		ColdMs    float64        `json:"cold_ms"`
		Latencies []float64      `json:"latencies_ms"`
		WallMs    float64        `json:"wall_ms"`
		Config    map[string]any `json:"config"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return PeerLevel{}, nil, fmt.Errorf("peer output: %v: %s", err, trim(out))
	}
	l := PeerLevel{Concurrency: conc, Requests: len(r.Latencies), WallS: r.WallMs / 1000, ColdMs: r.ColdMs,
		Latency: summarize(r.Latencies), Samples: r.Latencies, LoadAvg: loadavg()}
	l.Throughput = ratio(float64(l.Requests), l.WallS)
	return l, r.Config, nil
}

// --- the bare engine: bench/rembg_test.go's BenchmarkRembg -------------------

// BareResult is BenchmarkRembg's engine (one ORT run of ISNet on a ready
// 1×3×1024² tensor) and codec sub-benchmarks.
type BareResult struct {
	Command  string  `json:"command"`
	EngineMs float64 `json:"engine_ms"`
	CodecMs  float64 `json:"codec_ms,omitempty"`
	Output   string  `json:"output"`
}

var benchLine = regexp.MustCompile(`^BenchmarkRembg/(\w+)(?:-\d+)?\s+\d+\s+([0-9.]+) ns/op`)

// runBare runs BenchmarkRembg/engine and /codec with `go test` from the
// module root, with the Makefile's TEST_ENV built from the same dirs. It
// needs cgo (engine/ort); falbench itself does not.
func runBare(ctx context.Context, root, dataDir, cacheDir, assets string, iters int) (*BareResult, error) {
	args := []string{"test", "-run", "^$", "-bench", "^BenchmarkRembg$/^(engine|codec)$", "-benchtime", fmt.Sprintf("%dx", iters), "-count", "1", "./bench/"}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"FALOCAL_REQUIRE_ASSETS=1",
		"FALOCAL_TEST_ORT="+filepath.Join(cacheDir, "onnxruntime-1.30.0", "libonnxruntime.so.1"),
		"FALOCAL_TEST_DATA_DIR="+dataDir,
		"FALOCAL_TEST_PACKAGES="+filepath.Join(cacheDir, "packages"),
		"FALOCAL_TEST_ASSETS="+assets)
	out, err := cmd.CombinedOutput()
	r := &BareResult{Command: "go " + strings.Join(args, " "), Output: string(lastLines(out, 12))}
	if err != nil {
		return r, fmt.Errorf("%s: %v: %s", r.Command, err, r.Output)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		ns, _ := strconv.ParseFloat(m[2], 64)
		switch m[1] {
		case "engine":
			r.EngineMs = ns / 1e6
		case "codec":
			r.CodecMs = ns / 1e6
		}
	}
	if r.EngineMs == 0 {
		return r, fmt.Errorf("no BenchmarkRembg/engine line in: %s", r.Output)
	}
	return r, nil
}

// moduleRoot walks up from the working directory to go.mod.
func moduleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		up := filepath.Dir(d)
		if up == d {
			return "", errors.New("go.mod not found above the working directory")
		}
		d = up
	}
}
