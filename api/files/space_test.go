package files

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestSpaceGuard(t *testing.T) {
	var free, calls atomic.Int64
	free.Store(100 << 20)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	g := &SpaceGuard{Dir: "/data", Min: 256 << 20, Now: func() time.Time { return now },
		Free: func(dir string) (int64, error) {
			calls.Add(1)
			if dir != "/data" {
				t.Errorf("asked about %s", dir)
			}
			return free.Load(), nil
		}}
	err := g.Check()
	var le *LowSpaceError
	if !errors.As(err, &le) || !errors.Is(err, ErrLowSpace) {
		t.Fatalf("100 MiB free, 256 MiB kept: %v", err)
	}
	for _, s := range []string{"/data", "100.0 MiB free", "256.0 MiB", "-min-free-disk"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%q does not say %q", err, s)
		}
	}
	// Space returns: seen within a second, without asking on every call.
	free.Store(1 << 30)
	for range 100 {
		if g.Check() == nil {
			t.Fatal("saw the new space before the cached answer aged")
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("asked the filesystem %d times within a second", n)
	}
	now = now.Add(time.Second)
	if err := g.Check(); err != nil {
		t.Errorf("1 GiB free: %v", err)
	}
	// Unmeasurable or unguarded: never refuses.
	g2 := &SpaceGuard{Dir: "/x", Min: 1, Free: func(string) (int64, error) { return 0, errors.New("no statfs") }}
	if err := g2.Check(); err != nil {
		t.Errorf("unreadable free space refused: %v", err)
	}
	var nilGuard *SpaceGuard
	if err := nilGuard.Check(); err != nil {
		t.Error(err)
	}
}

// The real statfs: a directory has some space, and a guard asking for more
// than any disk holds refuses.
func TestSpaceGuardStatfs(t *testing.T) {
	dir := t.TempDir()
	n, err := FreeSpace(dir)
	if err != nil || n <= 0 {
		t.Fatalf("statfs %s: %d, %v", dir, n, err)
	}
	if err := (&SpaceGuard{Dir: dir, Min: 1 << 62}).Check(); !errors.Is(err, ErrLowSpace) {
		t.Errorf("a guard wanting 4 EiB: %v", err)
	}
	if err := (&SpaceGuard{Dir: dir, Min: 1}).Check(); err != nil {
		t.Errorf("a guard wanting 1 byte: %v", err)
	}
}
