package testenv

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary returns the falocal binary under test (the one make built, or a
// fresh build), for tests that run it with their own arguments.
func Binary(t testing.TB) string {
	t.Helper()
	return binary(t)
}

// NewDataDir returns a fresh data directory whose model store links to the
// installed one, as StartServer makes.
func NewDataDir(t testing.TB) string {
	t.Helper()
	real := DataDir(t)
	data := t.TempDir()
	for _, d := range []string{"blobs", "manifests"} {
		if err := os.Symlink(filepath.Join(real, d), filepath.Join(data, d)); err != nil {
			t.Fatal(err)
		}
	}
	return data
}

// FreeAddr returns a loopback address with a port nobody listens on now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waiter reaps a server process once, so Kill, Stop, the health wait and
// the test's cleanup can all learn that it exited.
type waiter struct {
	once sync.Once
	done chan struct{}
}

var waiters sync.Map // *exec.Cmd → *waiter

func exited(cmd *exec.Cmd) <-chan struct{} {
	v, _ := waiters.LoadOrStore(cmd, &waiter{done: make(chan struct{})})
	w := v.(*waiter)
	w.once.Do(func() {
		go func() {
			cmd.Wait() // the exit status stays in cmd.ProcessState
			close(w.done)
		}()
	})
	return w.done
}

// StartServerAt runs falocal over an existing data directory (e.g. the
// DataDir of a server that was killed, to restart over the same queue.db,
// files, CA and webhook key) on addr ("" = a free loopback port). It waits
// until /healthz answers, fails the test if the process exits first, and
// stops it with SIGINT when the test ends.
func StartServerAt(t testing.TB, dataDir, addr string, args ...string) *Server {
	t.Helper()
	lib := ORTLibrary(t)
	bin := binary(t)
	if addr == "" {
		addr = FreeAddr(t)
	}
	s := &Server{Base: "http://" + addr, DataDir: dataDir, log: &syncBuffer{}}
	s.Cmd = exec.Command(bin, append([]string{"serve", "--listen", addr, "--data-dir", dataDir,
		"--cache-dir", t.TempDir(), "--ort-library", lib}, args...)...)
	s.Cmd.Stdout, s.Cmd.Stderr = s.log, s.log
	if err := s.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := exited(s.Cmd)
	t.Cleanup(func() {
		s.Cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			s.Cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("server log (%s):\n%s", s.Base, s.log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.Base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s
			}
		}
		select {
		case <-done:
			t.Fatalf("server exited (%v) before it became healthy:\n%s", s.Cmd.ProcessState, s.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not become healthy: %v\n%s", err, s.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill ends the server with SIGKILL, as a crash or the OOM killer would:
// nothing is flushed or closed. It returns once the process is gone.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	if err := s.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9: %v", err)
	}
	select {
	case <-exited(s.Cmd):
	case <-time.After(10 * time.Second):
		t.Fatal("server still running 10s after SIGKILL")
	}
}

// Stop sends sig and waits up to timeout for the server to exit on its own;
// it returns the exit code. Past the timeout the server is killed and the
// test fails.
func (s *Server) Stop(t testing.TB, sig os.Signal, timeout time.Duration) int {
	t.Helper()
	if err := s.Cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
	done := exited(s.Cmd)
	select {
	case <-done:
	case <-time.After(timeout):
		s.Cmd.Process.Kill()
		<-done
		t.Fatalf("server did not exit within %s of %v:\n%s", timeout, sig, s.Log())
	}
	return s.Cmd.ProcessState.ExitCode()
}
