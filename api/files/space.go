package files

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// ErrLowSpace is wrapped by SpaceGuard.Check's refusal.
var ErrLowSpace = errors.New("not enough free disk space")

// LowSpaceError says how short of space the data directory is.
type LowSpaceError struct {
	Dir       string
	Free, Min int64
}

func (e *LowSpaceError) Error() string {
	return fmt.Sprintf("not enough free disk space: the data directory %s has %s free, under the %s this server keeps free (-min-free-disk); "+
		"uploads and new requests are refused until space is freed", e.Dir, HumanBytes(e.Free), HumanBytes(e.Min))
}

func (e *LowSpaceError) Unwrap() error { return ErrLowSpace }

// HumanBytes writes a byte count in binary units: "512 B", "1.5 MiB".
func HumanBytes(n int64) string {
	const unit = 1 << 10
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// SpaceGuard refuses new writes while the filesystem holding Dir has
// fewer than Min bytes free. It asks the filesystem at most once a second,
// so it is cheap enough to call on every request, and it recovers by
// itself once space returns.
type SpaceGuard struct {
	Dir string
	Min int64
	// Free reports the bytes available to this process on the filesystem
	// holding dir; nil = statfs.
	Free func(dir string) (int64, error)
	// Now is the clock (tests); nil = time.Now.
	Now func() time.Time

	mu      sync.Mutex
	checked time.Time
	free    int64
	err     error
}

// recheck is how long one answer of the filesystem is reused.
const recheck = time.Second

// Check returns a *LowSpaceError when free space is under Min, nil
// otherwise (also when the free space cannot be read: a guard must not
// stop a server that it cannot measure). A nil guard or Min <= 0 never
// refuses.
func (g *SpaceGuard) Check() error {
	if g == nil || g.Min <= 0 {
		return nil
	}
	now := time.Now
	if g.Now != nil {
		now = g.Now
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if t := now(); g.checked.IsZero() || t.Sub(g.checked) >= recheck || t.Before(g.checked) {
		free := g.Free
		if free == nil {
			free = FreeSpace
		}
		g.free, g.err = free(g.Dir)
		g.checked = t
	}
	if g.err != nil || g.free >= g.Min {
		return nil
	}
	return &LowSpaceError{Dir: g.Dir, Free: g.free, Min: g.Min}
}

// FreeSpace is the space available to unprivileged users on the
// filesystem holding dir (what a write by this process may use short of
// root's reserve).
func FreeSpace(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
