package vram

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/falocal/falocal/engine/vram/vramtest"
)

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
)

func TestClassOf(t *testing.T) {
	for name, tc := range map[string]struct{ n, want int64 }{
		"one byte":            {1, 256},
		"alignment":           {256, 256},
		"just over alignment": {257, 512},
		"1000":                {1000, 1024},
		"64 KiB + 1":          {64*kib + 1, 128 * kib},
		"small max":           {mib, mib},
		"just over 1 MiB":     {mib + 1, mib + mib/4},
		"1.3 MiB":             {mib + 3*mib/10, mib + mib/2},
		"2 MiB":               {2 * mib, 2 * mib},
		"2 MiB + 1":           {2*mib + 1, 2*mib + mib/2},
		"100 MiB":             {100 * mib, 112 * mib},
		"large min":           {256 * mib, 256 * mib},
		"just over large min": {256*mib + 1, 258 * mib},
		"1 GiB + 1":           {gib + 1, gib + 2*mib},
	} {
		t.Run(name, func(t *testing.T) {
			if got := ClassOf(tc.n); got != tc.want {
				t.Errorf("ClassOf(%d) = %d, want %d", tc.n, got, tc.want)
			}
		})
	}
}

// TestClassProperties checks the rules every class must keep over a sweep of
// sizes: big enough, aligned, a fixed point, monotone, and bounded waste.
func TestClassProperties(t *testing.T) {
	prev := int64(0)
	for n := int64(1); n <= 2*gib; n += 1 + n/97 {
		c := ClassOf(n)
		switch {
		case c < n:
			t.Fatalf("ClassOf(%d) = %d < n", n, c)
		case c%Alignment != 0:
			t.Fatalf("ClassOf(%d) = %d not aligned", n, c)
		case ClassOf(c) != c:
			t.Fatalf("ClassOf(ClassOf(%d)) = %d, want %d", n, ClassOf(c), c)
		case c < prev:
			t.Fatalf("ClassOf(%d) = %d < ClassOf of a smaller size %d", n, c, prev)
		case n > SmallMax && n <= LargeMin && c-n > n/4:
			t.Fatalf("ClassOf(%d) = %d wastes more than 25%%", n, c)
		case n > LargeMin && c-n >= LargeStep:
			t.Fatalf("ClassOf(%d) = %d wastes a whole step", n, c)
		}
		prev = c
	}
}

func TestInvalidSize(t *testing.T) {
	p := New(vramtest.New(gib), Options{})
	for _, n := range []int64{0, -1, MaxRequest + 1} {
		if _, err := p.Alloc(n); !errors.Is(err, ErrInvalidSize) {
			t.Errorf("Alloc(%d): %v, want ErrInvalidSize", n, err)
		}
	}
	if s := p.Stats(); s.Fails != 0 || s.Allocs != 0 {
		t.Errorf("stats after invalid sizes: %+v", s)
	}
}

func TestReuse(t *testing.T) {
	dev := vramtest.New(gib)
	p := New(dev, Options{})
	a := mustAlloc(t, p, 1000)
	mustFree(t, p, a)
	b := mustAlloc(t, p, 900) // same class (1 KiB): the cached block
	if b != a {
		t.Errorf("second allocation got %#x, want the cached %#x", b, a)
	}
	c := mustAlloc(t, p, 2000) // another class: a new block
	if c == a {
		t.Errorf("a block of another class was reused")
	}
	if dev.Allocs != 2 || dev.Sizes[0] != 1024 || dev.Sizes[1] != 2048 {
		t.Errorf("device allocations %d of sizes %v, want 2 of [1024 2048]", dev.Allocs, dev.Sizes)
	}
	s := p.Stats()
	if s.Allocs != 3 || s.ReuseHits != 1 || s.DeviceAllocs != 2 {
		t.Errorf("stats %+v: want 3 allocs, 1 reuse hit, 2 device allocs", s)
	}
}

// TestReuseLIFO: the most recently freed block of a class is handed out
// first, since it is likeliest to be warm in the caches.
func TestReuseLIFO(t *testing.T) {
	p := New(vramtest.New(gib), Options{})
	a, b := mustAlloc(t, p, 4096), mustAlloc(t, p, 4096)
	mustFree(t, p, a)
	mustFree(t, p, b)
	if got := mustAlloc(t, p, 4096); got != b {
		t.Errorf("got %#x, want the last freed %#x", got, b)
	}
}

func TestCacheCapTrimsLargestFirst(t *testing.T) {
	dev := vramtest.New(gib)
	p := New(dev, Options{MaxCached: 3 * mib})
	one, two, half := mustAlloc(t, p, mib), mustAlloc(t, p, 2*mib), mustAlloc(t, p, 512*kib)
	mustFree(t, p, one)
	mustFree(t, p, two) // 3 MiB cached: at the cap, not over
	if s := p.Stats(); s.Cached != 3*mib || s.TrimmedBytes != 0 {
		t.Fatalf("at the cap: %+v", s)
	}
	mustFree(t, p, half) // 3.5 MiB: the 2 MiB block goes
	s := p.Stats()
	if s.Cached != mib+512*kib || s.CachedBlocks != 2 || s.TrimmedBytes != uint64(2*mib) {
		t.Errorf("over the cap: %+v, want 1.5 MiB in 2 blocks cached, 2 MiB trimmed", s)
	}
	if dev.Used() != s.Cached {
		t.Errorf("device holds %d, want the cached %d", dev.Used(), s.Cached)
	}
	if got := mustAlloc(t, p, mib); got != one {
		t.Errorf("the 1 MiB block was not kept")
	}
}

func TestTooLargeToCache(t *testing.T) {
	dev := vramtest.New(gib)
	p := New(dev, Options{MaxCached: mib})
	small := mustAlloc(t, p, 512*kib)
	big := mustAlloc(t, p, 2*mib)
	mustFree(t, p, small)
	mustFree(t, p, big) // bigger than the cap: straight back, small stays
	s := p.Stats()
	if s.Cached != 512*kib || dev.Used() != 512*kib || s.TrimmedBytes != 0 {
		t.Errorf("stats %+v, device used %d: want only the small block cached", s, dev.Used())
	}
}

func TestCachingDisabled(t *testing.T) {
	dev := vramtest.New(gib)
	p := New(dev, Options{MaxCached: -1})
	mustFree(t, p, mustAlloc(t, p, 4096))
	mustFree(t, p, mustAlloc(t, p, 4096))
	if s := p.Stats(); s.Cached != 0 || s.ReuseHits != 0 || dev.Allocs != 2 || dev.Used() != 0 {
		t.Errorf("stats %+v, device %d allocs and %d used: want no caching", s, dev.Allocs, dev.Used())
	}
}

func TestTrim(t *testing.T) {
	for name, tc := range map[string]struct {
		target       int64
		wantReleased int64
		wantCached   int64
	}{
		"all":         {0, 7 * mib, 0},
		"to 4 MiB":    {4 * mib, 4 * mib, 3 * mib},   // the 4 MiB block goes; 2+1 stay
		"to 3 MiB":    {3 * mib, 4 * mib, 3 * mib},   // the same: 3 MiB fits
		"to 2.5 MiB":  {5 * mib / 2, 6 * mib, mib},   // 4 then 2
		"above cache": {8 * mib, 0, 7 * mib},         // nothing to do
		"negative":    {-1, 7 * mib, 0},              // as 0
		"to 6.9 MiB":  {7*mib - 1, 4 * mib, 3 * mib}, // largest first, not best fit
	} {
		t.Run(name, func(t *testing.T) {
			dev := vramtest.New(gib)
			p := New(dev, Options{})
			ptrs := []uintptr{mustAlloc(t, p, mib), mustAlloc(t, p, 2*mib), mustAlloc(t, p, 4*mib)}
			for _, q := range ptrs {
				mustFree(t, p, q)
			}
			var released int64
			var err error
			if tc.target == 0 {
				released, err = p.Trim()
			} else {
				released, err = p.TrimTo(tc.target)
			}
			if err != nil {
				t.Fatal(err)
			}
			s := p.Stats()
			if released != tc.wantReleased || s.Cached != tc.wantCached || dev.Used() != tc.wantCached {
				t.Errorf("released %d, cached %d, device used %d; want %d, %d, %d",
					released, s.Cached, dev.Used(), tc.wantReleased, tc.wantCached, tc.wantCached)
			}
		})
	}
}

func TestOutOfMemory(t *testing.T) {
	for name, tc := range map[string]struct {
		capacity    int64
		cache       []int64 // blocks allocated then freed before the request
		request     int64
		wantErr     bool
		wantRetries uint64
		wantTrimmed int64
	}{
		"fits":                     {8 * mib, nil, 3 * mib, false, 0, 0},
		"trim makes room":          {4 * mib, []int64{2 * mib, 2 * mib}, 3 * mib, false, 1, 4 * mib},
		"nothing cached: no retry": {2 * mib, nil, 3 * mib, true, 0, 0},
		"trim is not enough":       {4 * mib, []int64{mib}, 5 * mib, true, 1, mib},
	} {
		t.Run(name, func(t *testing.T) {
			dev := vramtest.New(tc.capacity)
			p := New(dev, Options{})
			var ptrs []uintptr
			for _, n := range tc.cache {
				ptrs = append(ptrs, mustAlloc(t, p, n))
			}
			for _, q := range ptrs {
				mustFree(t, p, q)
			}
			_, err := p.Alloc(tc.request)
			if tc.wantErr {
				if !errors.Is(err, ErrOutOfMemory) || !errors.Is(err, vramtest.ErrOutOfMemory) {
					t.Fatalf("err %v: want ErrOutOfMemory wrapping the device's error", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			s := p.Stats()
			wantFails := uint64(0)
			if tc.wantErr {
				wantFails = 1
			}
			if s.Retries != tc.wantRetries || s.TrimmedBytes != uint64(tc.wantTrimmed) || s.Fails != wantFails {
				t.Errorf("stats %+v: want %d retries, %d trimmed, %d fails", s, tc.wantRetries, tc.wantTrimmed, wantFails)
			}
		})
	}
}

// TestTransientDeviceFailure: one failed device call with blocks cached is
// absorbed by the trim and retry.
func TestTransientDeviceFailure(t *testing.T) {
	dev := vramtest.New(gib)
	p := New(dev, Options{})
	mustFree(t, p, mustAlloc(t, p, 4096))
	dev.FailNext = 1
	if _, err := p.Alloc(mib); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Retries != 1 || s.Fails != 0 || s.Cached != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestBadFrees(t *testing.T) {
	dev := vramtest.New(gib)
	p := New(dev, Options{MaxCached: mib})
	cached := mustAlloc(t, p, 4096)
	mustFree(t, p, cached)
	released := mustAlloc(t, p, 2*mib) // over the cap: goes back to the device on Free
	mustFree(t, p, released)
	inUse := mustAlloc(t, p, 100)

	for name, tc := range map[string]struct {
		ptr  uintptr
		want error
	}{
		"double free of a cached block":    {cached, ErrDoubleFree},
		"free of a block already released": {released, ErrUnknownPointer},
		"never allocated":                  {0x1234, ErrUnknownPointer},
		"nil":                              {0, ErrUnknownPointer},
	} {
		t.Run(name, func(t *testing.T) {
			before := p.Stats()
			err := p.Free(tc.ptr)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Free(%#x) = %v, want %v", tc.ptr, err, tc.want)
			}
			after := p.Stats()
			if after.BadFrees != before.BadFrees+1 {
				t.Errorf("BadFrees %d → %d", before.BadFrees, after.BadFrees)
			}
			after.BadFrees = before.BadFrees
			if after != before {
				t.Errorf("a bad free changed the pool: %+v → %+v", before, after)
			}
		})
	}
	mustFree(t, p, inUse)
}

func TestStats(t *testing.T) {
	p := New(vramtest.New(gib), Options{})
	a := mustAlloc(t, p, 300)     // class 512
	b := mustAlloc(t, p, 3*mib/2) // class 1.5 MiB
	s := p.Stats()
	want := Stats{InUse: 512 + 3*mib/2, Requested: 300 + 3*mib/2, PeakInUse: 512 + 3*mib/2, MaxCached: DefaultMaxCached,
		LiveBlocks: 2, Allocs: 2, DeviceAllocs: 2}
	if s != want {
		t.Errorf("after two allocations\n got %+v\nwant %+v", s, want)
	}
	mustFree(t, p, a)
	mustFree(t, p, b)
	mustFree(t, p, mustAlloc(t, p, 400))
	s = p.Stats()
	want = Stats{PeakInUse: 512 + 3*mib/2, Cached: 512 + 3*mib/2, MaxCached: DefaultMaxCached, CachedBlocks: 2,
		Allocs: 3, ReuseHits: 1, Frees: 3, DeviceAllocs: 2}
	if s != want {
		t.Errorf("after frees and a reuse\n got %+v\nwant %+v", s, want)
	}
}

func TestBudget(t *testing.T) {
	dev := vramtest.New(10 * mib)
	p := New(dev, Options{})
	keep := mustAlloc(t, p, 2*mib)
	mustFree(t, p, mustAlloc(t, p, 4*mib))
	// The device has 4 MiB free; the pool caches 4 MiB more.
	if b, err := p.Budget(); err != nil || b != 8*mib {
		t.Errorf("Budget() = %d, %v; want 8 MiB", b, err)
	}
	if free, total, err := p.MemInfo(); err != nil || free != 8*mib || total != 10*mib {
		t.Errorf("MemInfo() = %d, %d, %v; want 8 MiB of 10 MiB", free, total, err)
	}
	dev.InfoErr = errors.New("no context")
	if _, err := p.Budget(); err == nil {
		t.Error("Budget hid the device's error")
	}
	mustFree(t, p, keep)
}

func TestMisalignedAllocator(t *testing.T) {
	dev := vramtest.New(gib)
	dev.Misalign = 16
	p := New(dev, Options{})
	if _, err := p.Alloc(4096); !errors.Is(err, ErrMisaligned) {
		t.Fatalf("err %v, want ErrMisaligned", err)
	}
	if dev.Used() != 0 {
		t.Errorf("the misaligned block was kept: %d bytes on the device", dev.Used())
	}
	if s := p.Stats(); s.DeviceAllocs != 0 || s.DeviceFrees != 0 || s.Fails != 1 {
		t.Errorf("stats %+v: want one failure and no device traffic counted", s)
	}
}

func TestClose(t *testing.T) {
	dev := vramtest.New(gib)
	p := New(dev, Options{})
	held := mustAlloc(t, p, 4096)
	mustFree(t, p, mustAlloc(t, p, mib))
	if err := p.Close(); err == nil {
		t.Error("Close did not report the block still in use")
	}
	if dev.Used() != 4096 {
		t.Errorf("after Close the device holds %d, want only the live 4096", dev.Used())
	}
	if _, err := p.Alloc(10); !errors.Is(err, ErrClosed) {
		t.Errorf("Alloc after Close: %v", err)
	}
	mustFree(t, p, held) // straight back to the device
	if dev.Used() != 0 || p.Stats().Cached != 0 {
		t.Errorf("after the last free: device %d, cached %d", dev.Used(), p.Stats().Cached)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestConcurrent runs allocations, frees and trims from many goroutines
// (run it with -race), checks that no pointer is ever handed out twice at
// once, and that the books balance at the end.
func TestConcurrent(t *testing.T) {
	dev := vramtest.New(64 * mib)
	p := New(dev, Options{MaxCached: 8 * mib})
	sizes := []int64{100, 1000, 4096, 100 * kib, mib, 3 * mib / 2, 3 * mib}
	var owners sync.Map
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			var mine []uintptr
			for i := range 400 {
				switch {
				case i%97 == 0:
					if _, err := p.TrimTo(int64(rng.IntN(4)) * mib); err != nil {
						t.Error(err)
					}
				case len(mine) > 0 && (len(mine) > 6 || rng.IntN(2) == 0):
					k := rng.IntN(len(mine))
					q := mine[k]
					mine = append(mine[:k], mine[k+1:]...)
					owners.Delete(q)
					if err := p.Free(q); err != nil {
						t.Error(err)
					}
				default:
					q, err := p.Alloc(sizes[rng.IntN(len(sizes))])
					if err != nil {
						// 16 × 6 blocks of up to 3 MiB can exceed 64 MiB.
						if !errors.Is(err, ErrOutOfMemory) {
							t.Error(err)
						}
						continue
					}
					if prev, dup := owners.LoadOrStore(q, g); dup {
						t.Errorf("%#x handed to goroutine %d while goroutine %v holds it", q, g, prev)
					}
					mine = append(mine, q)
				}
			}
			for _, q := range mine {
				owners.Delete(q)
				if err := p.Free(q); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	s := p.Stats()
	if s.InUse != 0 || s.LiveBlocks != 0 || s.Requested != 0 {
		t.Errorf("after all frees: %+v", s)
	}
	if s.Cached > s.MaxCached || dev.Used() != s.Cached {
		t.Errorf("cached %d (cap %d), device holds %d", s.Cached, s.MaxCached, dev.Used())
	}
	if s.DeviceAllocs-s.DeviceFrees != uint64(dev.Live()) {
		t.Errorf("device allocs %d − frees %d ≠ %d live on the device", s.DeviceAllocs, s.DeviceFrees, dev.Live())
	}
	if s.Allocs != s.Frees || s.Allocs != s.ReuseHits+s.DeviceAllocs {
		t.Errorf("allocs %d, frees %d, reuse hits %d, device allocs %d do not balance", s.Allocs, s.Frees, s.ReuseHits, s.DeviceAllocs)
	}
	if err := p.Close(); err != nil || dev.Used() != 0 {
		t.Errorf("Close: %v; device holds %d", err, dev.Used())
	}
}

func mustAlloc(t *testing.T, p *Pool, n int64) uintptr {
	t.Helper()
	q, err := p.Alloc(n)
	if err != nil {
		t.Fatalf("Alloc(%d): %v", n, err)
	}
	if q%Alignment != 0 {
		t.Fatalf("Alloc(%d) = %#x, not aligned", n, q)
	}
	return q
}

func mustFree(t *testing.T, p *Pool, q uintptr) {
	t.Helper()
	if err := p.Free(q); err != nil {
		t.Fatalf("Free(%#x): %v", q, err)
	}
}
