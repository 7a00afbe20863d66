package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/falocal/falocal/api/queue"
	"github.com/falocal/falocal/api/queue/pgqueue"
	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/weights"
)

// vadStore is a data directory holding only the installed silero-vad
// (1.2 MB): its manifest and a copy of its blob, which a test may corrupt.
func vadStore(t testing.TB) (dir, blob string) {
	t.Helper()
	real, err := weights.Open(testenv.DataDir(t))
	if err != nil {
		t.Fatal(err)
	}
	m, err := real.Get("silero-vad")
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	s, err := weights.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		b, err := os.ReadFile(real.BlobPath(f.SHA256))
		if err != nil {
			t.Fatal(err)
		}
		blob = s.BlobPath(f.SHA256)
		if err := os.WriteFile(blob, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(m); err != nil {
		t.Fatal(err)
	}
	return dir, blob
}

func TestDoctor(t *testing.T) {
	lib := testenv.ORTLibrary(t)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	_, heldPort, _ := net.SplitHostPort(held.Addr().String())

	type want struct{ status, text, fix string }
	for _, tc := range []struct {
		name    string
		dataDir func(t testing.TB) string
		args    []string
		want    map[string]want // check → what it must say; the rest must not FAIL
	}{
		{
			name:    "installed store",
			dataDir: testenv.NewDataDir,
			want: map[string]want{
				"onnx runtime": {"ok", "version 1.30.0, providers cpu", ""},
				"providers":    {"ok", "auto: cpu", ""},
				"models":       {"ok", "all verified", ""},
				"listen":       {"ok", "is free to bind", ""},
				"queue":        {"ok", "no queue database yet", ""},
			},
		},
		{
			name:    "empty data dir",
			dataDir: func(t testing.TB) string { return t.TempDir() },
			want:    map[string]want{"models": {"FAIL", "no model store in", "falocal setup -data-dir "}},
		},
		{
			name:    "default models missing",
			dataDir: func(t testing.TB) string { d, _ := vadStore(t); return d },
			want:    map[string]want{"models": {"warn", "1 installed (1.2 MiB)", "falocal setup -data-dir "}},
		},
		{
			name: "corrupted model",
			dataDir: func(t testing.TB) string {
				d, blob := vadStore(t)
				b, _ := os.ReadFile(blob)
				b[len(b)/2] ^= 0xff
				if err := os.WriteFile(blob, b, 0o644); err != nil {
					t.Fatal(err)
				}
				return d
			},
			want: map[string]want{
				"models":           {"FAIL", "1 model(s) failed verification or are missing", "see the models below"},
				"model silero-vad": {"FAIL", "model file failed verification", "falocal weights install silero-vad"},
			},
		},
		{
			name:    "listen address in use",
			dataDir: testenv.NewDataDir,
			args:    []string{"-listen", held.Addr().String()},
			want: map[string]want{"listen": {"FAIL", fmt.Sprintf("is in use by falocal.test (pid %d)", os.Getpid()),
				"-listen 127.0.0.1:"}},
		},
		{
			name:    "all interfaces without keys",
			dataDir: testenv.NewDataDir,
			args:    []string{"-listen", "0.0.0.0:" + heldPort},
			want:    map[string]want{"listen": {"FAIL", "without API keys", "-keys"}},
		},
		{
			name:    "cuda asked of a CPU-only library",
			dataDir: testenv.NewDataDir,
			args:    []string{"-providers", "cuda,cpu"},
			want: map[string]want{"providers": {"FAIL", "cuda (asked by -providers) is not in this library: a CPU-only build",
				"-providers cpu"}},
		},
		{
			name:    "cuda asked for one model",
			dataDir: testenv.NewDataDir,
			args:    []string{"-model-providers", "whisper-base=cuda"},
			want: map[string]want{"providers": {"FAIL", "cuda (asked by -model-providers whisper-base)",
				"-ort-library"}},
		},
		{
			name:    "settings name models not installed",
			dataDir: func(t testing.TB) string { d, _ := vadStore(t); return d },
			args:    []string{"-whisper-model", "whisper-tiny.en", "-rembg-model", "my-own", "-model-providers", "silero-vad=cpu"},
			want: map[string]want{
				"models":                {"FAIL", "2 model(s) failed verification or are missing", "see the models below"},
				"model whisper-tiny.en": {"FAIL", "-whisper-model names it, but it is not installed", "falocal weights install whisper-tiny.en"},
				"model my-own":          {"FAIL", "-rembg-model names it", "falocal weights list"},
			},
		},
		{
			name:    "disk under -min-free-disk",
			dataDir: testenv.NewDataDir,
			args:    []string{"-min-free-disk", "4611686018427387904"},
			want:    map[string]want{"disk": {"FAIL", "it answers 507 to new work", "lower -min-free-disk"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-json", "-ort-library", lib, "-data-dir", tc.dataDir(t),
				"-listen", testenv.FreeAddr(t)}, tc.args...)
			var out, errb bytes.Buffer
			err := doctorCmd(context.Background(), args, &out, &errb)
			var found []finding
			if jerr := json.Unmarshal(out.Bytes(), &found); jerr != nil {
				t.Fatalf("%v: %s", jerr, out.String())
			}
			byCheck := map[string]finding{}
			for _, f := range found {
				byCheck[f.Check] = f
				if (f.Status == statusOK) != (f.Fix == "") {
					t.Errorf("%s: status %s with fix %q", f.Check, f.Status, f.Fix)
				}
			}
			for _, c := range []string{"onnx runtime", "providers", "gpu", "models", "disk", "listen", "queue"} {
				if _, ok := byCheck[c]; !ok {
					t.Errorf("no %q check in %s", c, out.String())
				}
			}
			fails := 0
			for _, f := range found {
				w, named := tc.want[f.Check]
				if f.Status == statusFail {
					fails++
				}
				// gpu follows the machine and -providers: checked by the
				// providers finding and TestParseNvidiaSMI.
				if !named && f.Status == statusFail && f.Check != "gpu" {
					t.Errorf("unexpected failure: %+v", f)
				}
				if named && (f.Status != w.status || !strings.Contains(f.Text, w.text) || !strings.Contains(f.Fix, w.fix)) {
					t.Errorf("%s: got %+v\nwant %+v", f.Check, f, w)
				}
			}
			for c := range tc.want {
				if _, ok := byCheck[c]; !ok {
					t.Errorf("no %q finding", c)
				}
			}
			if (err != nil) != (fails > 0) {
				t.Errorf("error %v with %d failed checks", err, fails)
			}
		})
	}
}

// The text output: one line per check, a fix line under each that is not
// ok, and exit status 1 when a check fails.
func TestDoctorText(t *testing.T) {
	var out, errb bytes.Buffer
	none := filepath.Join(t.TempDir(), "none")
	code := run([]string{"doctor", "-ort-library", testenv.ORTLibrary(t),
		"-data-dir", none, "-listen", testenv.FreeAddr(t)}, &out, &errb)
	if code != 1 || errb.String() != "falocal: doctor: 1 check(s) failed\n" {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
	got := out.String()
	for _, w := range []string{
		"ok    onnx runtime: " + testenv.ORTLibrary(t) + " loads, version 1.30.0",
		"\nFAIL  models: no model store in ",
		"\n      fix: falocal setup -data-dir ",
		"\nok    queue: no queue database yet",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("output lacks %q:\n%s", w, got)
		}
	}
	if _, err := os.Stat(none); err == nil {
		t.Error("doctor made the data directory")
	}
}

func TestParseNvidiaSMI(t *testing.T) {
	banner := `+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+`
	for _, tc := range []struct {
		name, list, banner string
		want               gpuReport
	}{
		{"one GPU", "NVIDIA H100 80GB HBM3, 81559 MiB, 550.54.15\n", banner,
			gpuReport{driver: "550.54.15", cuda: "12.4", gpus: []string{"NVIDIA H100 80GB HBM3, 81559 MiB"}}},
		{"two GPUs", "NVIDIA L4, 23034 MiB, 535.104.05\nNVIDIA L4, 23034 MiB, 535.104.05", "",
			gpuReport{driver: "535.104.05", gpus: []string{"NVIDIA L4, 23034 MiB", "NVIDIA L4, 23034 MiB"}}},
		{"none", "No devices were found\n", "", gpuReport{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseNvidiaSMI(tc.list, tc.banner)
			if got.driver != tc.want.driver || got.cuda != tc.want.cuda || strings.Join(got.gpus, "|") != strings.Join(tc.want.gpus, "|") {
				t.Errorf("got %+v, want %+v", *got, tc.want)
			}
		})
	}
}

// Beside a running server: its address is taken by falocal (a warning, not
// a failure) and its queue database is left alone.
func TestDoctorBesideServer(t *testing.T) {
	s := testenv.StartServer(t)
	var out, errb bytes.Buffer
	err := doctorCmd(context.Background(), []string{"-json", "-ort-library", testenv.ORTLibrary(t), "-data-dir", s.DataDir,
		"-listen", strings.TrimPrefix(s.Base, "http://")}, &out, &errb)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	var found []finding
	if err := json.Unmarshal(out.Bytes(), &found); err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		var want finding
		switch f.Check {
		case "listen":
			want = finding{"listen", statusWarn, "is in use by falocal (pid ", "-listen 127.0.0.1:"}
		case "queue":
			want = finding{"queue", statusOK, "is in use by a running server", ""}
		case "models":
			want = finding{"models", statusOK, "all verified", ""}
		default:
			continue
		}
		if f.Status != want.Status || !strings.Contains(f.Text, want.Text) || !strings.Contains(f.Fix, want.Fix) {
			t.Errorf("%s: got %+v, want %+v", f.Check, f, want)
		}
	}
}

// CUDA_VISIBLE_DEVICES hides GPUs that nvidia-smi still lists: the gpu
// check counts only the ones CUDA numbers.
func TestDoctorVisibleGPUs(t *testing.T) {
	bin := t.TempDir()
	smi := "#!/bin/sh\nif [ $# -gt 0 ]; then echo 'NVIDIA L4, 23034 MiB, 535.104.05'; echo 'NVIDIA L4, 23034 MiB, 535.104.05'; " +
		"else echo '| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2 |'; fi\n"
	if err := os.WriteFile(filepath.Join(bin, "nvidia-smi"), []byte(smi), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	cuda := &engine.Info{Providers: []engine.Provider{engine.CUDA, engine.CPU}}
	for _, tc := range []struct {
		visible      string // "unset" = not set
		deviceID     int
		status, text string
	}{
		{"unset", 1, statusOK, "NVIDIA L4, 23034 MiB; NVIDIA L4, 23034 MiB; driver 535.104.05, CUDA 12.2"},
		{"1", 0, statusOK, `CUDA_VISIBLE_DEVICES="1" shows 1`},
		{"1", 1, statusFail, "-device 1 is not one of them"}, // the flag's name, as the user gives it
		{"GPU-8f3a, 0", 1, statusOK, "shows 2"},
		{"0,7,1", 1, statusFail, "shows 1"}, // CUDA stops at 7
		{"", 0, statusFail, `CUDA_VISIBLE_DEVICES="" shows 0, but -providers asks for a GPU`},
		{"-1", 0, statusFail, "shows 0"},
	} {
		t.Run(tc.visible+"/"+fmt.Sprint(tc.deviceID), func(t *testing.T) {
			t.Setenv("CUDA_VISIBLE_DEVICES", tc.visible) // restored after the test
			if tc.visible == "unset" {
				os.Unsetenv("CUDA_VISIBLE_DEVICES")
			}
			f := checkGPU(context.Background(), &Config{Providers: "cuda", DeviceID: tc.deviceID}, cuda)
			if f.Status != tc.status || !strings.Contains(f.Text, tc.text) {
				t.Errorf("got %+v, want %s with %q", f, tc.status, tc.text)
			}
		})
	}
}

// With -queue, doctor reaches the shared queue's database as a server
// would: an empty database, one a server has used, and one that is not
// there.
func TestDoctorSharedQueue(t *testing.T) {
	pg := testenv.Postgres(t)
	dsn := pg.NewDatabase(t)
	check := func(dsn string) finding {
		c := &Config{DataDir: t.TempDir(), Queue: dsn}
		return checkQueue(c)
	}
	if f := check(dsn); f.Status != statusOK || !strings.Contains(f.Text, "reachable and empty") {
		t.Errorf("fresh database: %+v", f)
	}
	q, err := pgqueue.Open(t.Context(), dsn, nil, pgqueue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Submit(queue.Record{ID: "r1", Endpoint: "test/echo", App: "test/echo", Input: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	if f := check(dsn); f.Status != statusOK || !strings.Contains(f.Text, "1 queued, 0 running, 1 server(s) alive") {
		t.Errorf("used database: %+v", f)
	}
	q.Close(t.Context())
	bad := strings.Replace(dsn, strconv.Itoa(pg.Port), strconv.Itoa(pg.Port+1), 1)
	if f := check(bad); f.Status != statusFail || !strings.Contains(f.Text, "-queue") || f.Fix == "" {
		t.Errorf("unreachable database: %+v", f)
	}
}
