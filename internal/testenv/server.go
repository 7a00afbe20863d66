package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Server is a running falocal binary.
type Server struct {
	Base    string // http://127.0.0.1:port
	DataDir string
	Cmd     *exec.Cmd
	log     *syncBuffer
}

// Log returns what the server printed so far.
func (s *Server) Log() string { return s.log.String() }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// binary returns the binary make built, or builds one.
func binary(t testing.TB) string {
	if b := ServerBinary(); b != "" {
		return b
	}
	buildOnce.Do(func() {
		gomod, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "falocal-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "falocal")
		cmd := exec.Command("go", "build", "-o", builtBin, "./cmd/falocal")
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// StartServer runs falocal on a free loopback port with a fresh data
// directory whose model store links to the installed one, so a test sees the
// real models but writes nothing into the user's store. It is stopped (with
// SIGINT, as a user would) when the test ends.
func StartServer(t testing.TB, args ...string) *Server {
	t.Helper()
	return StartServerAt(t, NewDataDir(t), "", args...)
}
