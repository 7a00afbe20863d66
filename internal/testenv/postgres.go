package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgBin is where Debian's postgresql-15 package puts the server programs.
const pgBin = "/usr/lib/postgresql/15/bin"

// PostgresServer is a PostgreSQL 15 server running for one test (and its
// subtests), in a temporary directory, with trust authentication.
type PostgresServer struct {
	// URL is the DSN of a database created empty for the test.
	URL  string
	Port int
	Dir  string // data, socket and log live here

	cred *syscall.Credential // the unprivileged user the server runs as under root
	log  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	nextDB int
}

// Postgres starts a PostgreSQL 15 server on 127.0.0.1 and a free port
// (its unix socket in its own directory) and creates a database; the
// server stops when the test ends. Without the server programs it skips,
// or under FALOCAL_REQUIRE_ASSETS=1 fails; under -short too, unless
// FALOCAL_REQUIRE_ASSETS=1.
func Postgres(t testing.TB) *PostgresServer {
	t.Helper()
	if testing.Short() && !required() {
		t.Skip("PostgreSQL is not started under -short")
	}
	initdb := filepath.Join(pgBin, "initdb")
	if _, err := os.Stat(initdb); err != nil {
		missing(t, "PostgreSQL 15 ("+initdb+")")
	}
	// Not t.TempDir: that is 0700 under a root-owned directory, which the
	// unprivileged server user could not enter.
	dir, err := os.MkdirTemp(os.TempDir(), "falocal-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &PostgresServer{Dir: dir, log: filepath.Join(dir, "postgres.log")}
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		u, err := user.Lookup("nobody")
		if err != nil {
			missing(t, "an unprivileged user (nobody) to run PostgreSQL as")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	cmd := s.command(initdb, "-D", s.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	s.Port = freePort(t)
	s.Start(t)
	t.Cleanup(func() {
		s.Stop(t)
		if t.Failed() {
			t.Logf("PostgreSQL log (tail):\n%s", s.tail())
		}
	})
	s.URL = s.NewDatabase(t)
	return s
}

func (s *PostgresServer) data() string { return filepath.Join(s.Dir, "data") }

func (s *PostgresServer) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

// DSN is the address of database name.
func (s *PostgresServer) DSN(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, name)
}

// Start starts the server (again) on its port and data, and waits until it
// accepts connections.
func (s *PostgresServer) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// fsync off: a test's data need not survive a machine crash.
	cmd := s.command(filepath.Join(pgBin, "postgres"), "-D", s.data(), "-p", strconv.Itoa(s.Port),
		"-k", s.Dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=400", "-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := pgx.Connect(ctx, s.DSN("postgres"))
		if err == nil {
			c.Close(ctx)
			cancel()
			return
		}
		cancel()
		select {
		case <-exited:
			t.Fatalf("postgres exited at start: %v\n%s", err, s.tail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres accepts no connection after 30 s: %v\n%s", err, s.tail())
		}
	}
}

// Stop shuts the server down (fast shutdown: sessions are disconnected,
// committed data is kept).
func (s *PostgresServer) Stop(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		t.Errorf("postgres did not stop within 20 s\n%s", s.tail())
	}
	s.cmd = nil
}

// Restart stops the server and starts it again on the same port and data.
func (s *PostgresServer) Restart(t testing.TB) {
	t.Helper()
	s.Stop(t)
	s.Start(t)
}

// NewDatabase creates an empty database and returns its DSN, so tests can
// share one server.
func (s *PostgresServer) NewDatabase(t testing.TB) string {
	t.Helper()
	s.mu.Lock()
	s.nextDB++
	name := fmt.Sprintf("falocal_test_%d", s.nextDB)
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatalf("connect to postgres: %v\n%s", err, s.tail())
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v\n%s", name, err, s.tail())
	}
	return s.DSN(name)
}

// tail is the end of the server's log, for failure messages.
func (s *PostgresServer) tail() string {
	b, err := os.ReadFile(s.log)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}
