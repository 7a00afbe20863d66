package api_test

import (
	"bytes"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/falocal/falocal/api"
	"github.com/falocal/falocal/api/files"
)

const diskKey = "id:secret"

// A data directory short of space refuses runs, submissions and uploads
// with a 507 naming the directory and the free space, keeps answering
// reads, and takes work again once space returns, by itself.
func TestLowDiskSpace(t *testing.T) {
	var free atomic.Int64
	free.Store(10 << 20)
	var mu sync.Mutex
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func() { mu.Lock(); now = now.Add(2 * time.Second); mu.Unlock() }
	guard := &files.SpaceGuard{Dir: "/srv/falocal", Min: 256 << 20, Now: clock,
		Free: func(string) (int64, error) { return free.Load(), nil }}
	e := newQEnv(t, func(c *api.Config) {
		c.Files.Space = guard
		c.Keys = []string{diskKey}
	}, echoEP("fal-ai/x"))
	key := []string{"Authorization", "Key " + diskKey}

	// An upload begun while there was room.
	free.Store(1 << 30)
	init := e.do(http.MethodPost, "", "/rest/storage/upload/initiate", `{"content_type":"text/plain","file_name":"a.txt"}`, key...)
	if init.Code != 200 {
		t.Fatalf("initiate: %d %s", init.Code, init.Body.String())
	}
	up, _ := url.Parse(init.body["upload_url"].(string))
	done := e.submit(t, "", "/fal-ai/x", in("before"), key...)
	e.waitDone(t, "", done, key...)

	free.Store(10 << 20)
	advance()
	for _, c := range []struct{ method, path, body string }{
		{http.MethodPost, "/run/fal-ai/x", in("sync")},
		{http.MethodPost, "/fal-ai/x", in("queued")},
		{http.MethodPost, "/rest/storage/upload/initiate", `{}`},
		{http.MethodPut, up.Path, "hello"},
	} {
		r := e.do(c.method, "", c.path, c.body, key...)
		checkDetail(t, r, http.StatusInsufficientStorage, "/srv/falocal", "10.0 MiB free", "256.0 MiB", "-min-free-disk")
	}
	// Callers without a key, or with an unknown upload URL, learn nothing
	// about the disk.
	if r := e.do(http.MethodPost, "", "/run/fal-ai/x", in("sync")); r.Code != http.StatusUnauthorized {
		t.Errorf("no key: %d %s", r.Code, r.Body.String())
	}
	if r := e.do(http.MethodPut, "", "/cdn/uploads/"+strings.Repeat("0", 64), "hello"); r.Code != http.StatusNotFound {
		t.Errorf("unknown upload URL: %d %s", r.Code, r.Body.String())
	}
	// Reads go on.
	if r := e.do(http.MethodGet, "", "/fal-ai/x/requests/"+done.ID, "", key...); r.Code != 200 {
		t.Errorf("result while short of space: %d %s", r.Code, r.Body.String())
	}

	// Space returns: work is taken again within the recheck interval.
	free.Store(1 << 30)
	advance()
	if r := e.do(http.MethodPost, "", "/run/fal-ai/x", in("sync"), key...); r.Code != 200 {
		t.Errorf("run after space returned: %d %s", r.Code, r.Body.String())
	}
	e.waitDone(t, "", e.submit(t, "", "/fal-ai/x", in("after"), key...), key...)
	if r := e.do(http.MethodPut, "", up.Path, "hello", key...); r.Code != 200 {
		t.Errorf("upload after space returned: %d %s", r.Code, r.Body.String())
	}
}

// The same on a real filesystem: a 16 MiB tmpfs (mounted when the test runs
// as root and may mount; skipped otherwise) filled past the floor, then
// emptied.
func TestLowDiskSpaceTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=16m"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	store, err := files.Open(filepath.Join(dir, "files"))
	if err != nil {
		t.Fatal(err)
	}
	store.Space = &files.SpaceGuard{Dir: dir, Min: 8 << 20}
	e := newQEnv(t, func(c *api.Config) { c.Files = store }, echoEP("fal-ai/x"))
	if r := e.do(http.MethodPost, "", "/run/fal-ai/x", in("empty disk")); r.Code != 200 {
		t.Fatalf("run on an empty disk: %d %s", r.Code, r.Body.String())
	}
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, bytes.Repeat([]byte{1}, 12<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the guard's last answer ages
	checkDetail(t, e.do(http.MethodPost, "", "/run/fal-ai/x", in("full disk")), http.StatusInsufficientStorage, dir, "free")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if r := e.do(http.MethodPost, "", "/run/fal-ai/x", in("freed")); r.Code != 200 {
		t.Errorf("run once space returned: %d %s", r.Code, r.Body.String())
	}

	// An upload bigger than the disk passes the floor, runs out of space
	// on the way, and gets a 507 too (not a 500); nothing of it stays.
	init := e.do(http.MethodPost, "", "/rest/storage/upload/initiate", `{"content_type":"text/plain","file_name":"big.txt"}`)
	if init.Code != 200 {
		t.Fatalf("initiate: %d %s", init.Code, init.Body.String())
	}
	up, _ := url.Parse(init.body["upload_url"].(string))
	checkDetail(t, e.do(http.MethodPut, "", up.Path, strings.Repeat("x", 20<<20)), http.StatusInsufficientStorage, dir, "no space left")
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || int64(st.Bavail)*st.Bsize < 12<<20 {
		t.Errorf("the failed upload left %d bytes free of 16 MiB (%v)", int64(st.Bavail)*st.Bsize, err)
	}
}
