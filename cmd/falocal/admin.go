package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/falocal/falocal/api"
)

// adminSocket is the Unix socket, in the data directory, on which a running
// server answers local administration: today the queue backup, which must
// come from the server's own open database (it holds the file's lock, and
// only a transaction of the process that writes the file sees a
// consistent state). Access is the file system's: the socket is the
// server user's only, and root's.
func adminSocket(dataDir string) string { return filepath.Join(dataDir, "admin.sock") }

// adminServer serves the admin socket until stop.
type adminServer struct {
	hs   *http.Server
	done chan struct{}
	path string
}

// startAdmin listens on the admin socket. The caller holds the queue
// database (its lock), so a socket file already there is a dead server's.
func startAdmin(dataDir string, srv *api.Server, log *slog.Logger) (*adminServer, error) {
	path := adminSocket(dataDir)
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSocket != 0 {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /queue/backup", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		t0 := time.Now()
		n, err := srv.BackupQueue(w)
		if err != nil {
			log.Error("queue backup failed", "err", err, "bytes", n)
			// Cut the response short: the client sees a broken copy, never
			// a short one that looks complete.
			panic(http.ErrAbortHandler)
		}
		log.Info("queue backed up", "bytes", n, "took", time.Since(t0))
	})
	a := &adminServer{hs: &http.Server{Handler: mux, ReadHeaderTimeout: headerTimeout}, done: make(chan struct{}), path: path}
	go func() {
		defer close(a.done)
		if err := a.hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("admin socket", "err", err)
		}
	}()
	return a, nil
}

// stop waits for backups under way until ctx ends, then cuts them.
func (a *adminServer) stop(ctx context.Context) {
	if err := a.hs.Shutdown(ctx); err != nil {
		a.hs.Close()
	}
	<-a.done
	os.Remove(a.path)
}

// backupFromServer copies the queue of the server running on dataDir to w
// through its admin socket. ok is false when no server answers there.
func backupFromServer(ctx context.Context, dataDir string, w io.Writer) (n int64, ok bool, err error) {
	path := adminSocket(dataDir)
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://falocal/queue/backup", nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := c.Do(req)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return 0, false, nil
		}
		return 0, true, fmt.Errorf("admin socket %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, true, fmt.Errorf("admin socket %s: %s", path, resp.Status)
	}
	n, err = io.Copy(w, resp.Body)
	if err != nil {
		return n, true, fmt.Errorf("the server's copy broke off after %d bytes: %w", n, err)
	}
	return n, true, nil
}
