//go:build linux

package main

// TestBundleOffline carries a real model across an air gap: a signed bundle
// of isnet-general-use and the ONNX Runtime library is made from the store
// setup filled, then installed, inside a network namespace with loopback
// only, into an empty data and cache directory; the server starts there
// with no -ort-library (it finds the library where setup would have put
// it) and removes a real photograph's background. In the same namespace,
// the install onto a tmpfs too small for the model fails with a full-disk
// error and leaves that store as it was.

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/falocal/falocal/internal/testenv"
	"github.com/falocal/falocal/weights"
)

const bundleChildEnv = "FALOCAL_BUNDLE_NAMESPACE"

func TestBundleOffline(t *testing.T) {
	if os.Getenv(bundleChildEnv) == "1" {
		bundleInNamespace(t)
		return
	}
	if testing.Short() {
		t.Skip("runs a model")
	}
	lib := testenv.ORTLibrary(t)
	data := testenv.DataDir(t)
	testenv.Asset(t, "astronaut.png")
	bin := testenv.Binary(t)

	// The connected side: the store setup filled, the library where setup
	// puts it, a key.
	cache := t.TempDir()
	dst := filepath.Join(cache, "onnxruntime-"+ortVersion, "libonnxruntime.so.1")
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if err := os.Symlink(lib, dst); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	key := filepath.Join(work, "site")
	falocal(t, bin, "bundle", "keygen", "-o", key)
	file := filepath.Join(work, "site.falb")
	start := time.Now()
	falocal(t, bin, "bundle", "create", "-o", file, "-models", "isnet-general-use", "-with-runtime", "cpu", "-sign", key,
		"-data-dir", data, "-cache-dir", cache)
	st, _ := os.Stat(file)
	t.Logf("bundle of isnet-general-use and ONNX Runtime %s: %d bytes, made in %.1fs", ortVersion, st.Size(), time.Since(start).Seconds())

	cmd := exec.Command(os.Args[0], "-test.run=^TestBundleOffline$", "-test.v", "-test.count=1", "-test.timeout=3m")
	cmd.Env = append(os.Environ(), bundleChildEnv+"=1", "FALOCAL_TEST_BIN="+bin,
		"FALOCAL_BUNDLE_FILE="+file, "FALOCAL_BUNDLE_KEY="+key+".pub")
	// A PID namespace too, so the server ends with the run however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		Pdeathsig: syscall.SIGKILL}
	if uid, gid := os.Getuid(), os.Getgid(); uid != 0 {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}}
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		if os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" {
			t.Fatalf("cannot start a process in a new network namespace: %v", err)
		}
		t.Skipf("no network namespaces here: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("in the namespace: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "--- PASS: TestBundleOffline") {
		t.Fatalf("the run in the namespace did not pass:\n%s", out.String())
	}
	t.Logf("in the namespace:\n%s", out.String())
}

// falocal runs the binary and fails the test if it fails.
func falocal(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("falocal %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func bundleInNamespace(t *testing.T) {
	if err := loopbackUp(); err != nil {
		t.Fatalf("bringing lo up: %v", err)
	}
	// No route out: the install and the server cannot have used the network.
	if c, err := net.DialTimeout("tcp", "192.0.2.1:443", time.Second); err == nil {
		c.Close()
		t.Fatal("the namespace reaches the network")
	}
	bin := testenv.Binary(t)
	file, key := os.Getenv("FALOCAL_BUNDLE_FILE"), os.Getenv("FALOCAL_BUNDLE_KEY")

	t.Run("full disk", func(t *testing.T) {
		if err := syscall.Mount("none", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
			t.Fatalf("making mounts private: %v", err)
		}
		small := t.TempDir()
		if err := syscall.Mount("tmpfs", small, "tmpfs", 0, "size=24m"); err != nil {
			t.Fatalf("mounting a small tmpfs: %v", err)
		}
		t.Cleanup(func() { syscall.Unmount(small, syscall.MNT_DETACH) })
		data, cache := filepath.Join(small, "data"), filepath.Join(small, "cache")
		falocal(t, bin, "weights", "list", "-data-dir", data) // an empty store
		before := treeListing(t, small)
		out, err := exec.Command(bin, "bundle", "install", file, "-trust", key, "-data-dir", data, "-cache-dir", cache).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "no space left on the device while writing blobs/sha256-") ||
			!strings.Contains(string(out), "nothing was installed") {
			t.Fatalf("install onto a full disk: %v\n%s", err, out)
		}
		t.Logf("refused: %s", strings.TrimSpace(string(out)))
		if after := treeListing(t, small); after != before {
			t.Errorf("the store changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	data, cache := t.TempDir(), t.TempDir()
	start := time.Now()
	falocal(t, bin, "bundle", "install", file, "-trust", key, "-data-dir", data, "-cache-dir", cache)
	t.Logf("installed in %.1fs", time.Since(start).Seconds())
	if out := falocal(t, bin, "weights", "verify", "-data-dir", data); !strings.Contains(out, "ok   isnet-general-use") {
		t.Errorf("weights verify: %s", out)
	}
	if got := storeNames(t, data); !slices.Equal(got, []string{"isnet-general-use"}) {
		t.Errorf("installed %v", got)
	}

	addr := testenv.FreeAddr(t)
	srv := exec.Command(bin, "serve", "--listen", addr, "--data-dir", data, "--cache-dir", cache)
	var log strings.Builder
	srv.Stdout, srv.Stderr = &log, &log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	t.Cleanup(func() {
		srv.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			srv.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("server log:\n%s", log.String())
		}
	})
	s := &server{base: "http://" + addr, dataDir: data}
	waitHealthy(t, s.base, done)
	r := s.post(t, "/run/fal-ai/imageutils/rembg", astronautBody(t))
	if r.status != 200 {
		t.Fatalf("rembg: %d %s", r.status, r.body)
	}
	var res struct{ Image imageOut }
	if err := json.Unmarshal(r.body, &res); err != nil {
		t.Fatal(err)
	}
	checkAstronaut(t, fetchImage(t, res.Image))
}

// TestBundleInterrupted stops an install half way through its bundle with
// SIGINT (the bundle comes through a pipe, so the test decides when): the
// install says so and the store is as it was.
func TestBundleInterrupted(t *testing.T) {
	bin := testenv.Binary(t)
	src := smallStore(t)
	s, err := weights.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(t.TempDir(), "big.onnx")
	noise := make([]byte, 8<<20) // incompressible, so half the bundle is half of it
	rand.Read(noise)
	os.WriteFile(big, noise, 0o644)
	f, err := s.AddBlob(big, "model", "big.onnx", "fp32", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(weights.Manifest{Name: "big", Pipeline: "rembg", Files: []weights.File{f}}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "big.falb")
	if _, e, code := runCmd(t, "bundle", "create", "-o", file, "-data-dir", src); code != 0 {
		t.Fatal(e)
	}
	data, _ := os.ReadFile(file)

	target := smallStore(t)
	before := treeListing(t, target)
	fifo := filepath.Join(t.TempDir(), "pipe.falb")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("no named pipes here: %v", err)
	}
	cmd := exec.Command(bin, "bundle", "install", fifo, "-data-dir", target)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:len(data)/2]); err != nil {
		t.Fatal(err)
	}
	// Wait until the install is staging a file, then interrupt it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		staged, _ := filepath.Glob(filepath.Join(target, "tmp", "install-*", "*"))
		if len(staged) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the install staged nothing:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(os.Interrupt)
	// The rest lets the blocked read return; the next one sees the signal.
	w.Write(data[len(data)/2:])
	w.Close()
	if err := cmd.Wait(); err == nil || !strings.Contains(out.String(), "install interrupted; nothing was installed") {
		t.Fatalf("interrupted install: %v\n%s", err, out.String())
	}
	if after := treeListing(t, target); after != before {
		t.Errorf("the store changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
