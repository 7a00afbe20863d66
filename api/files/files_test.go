package files

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

func newStore(t *testing.T) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "a", "b") // Open creates missing parents
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

func TestPutGetRead(t *testing.T) {
	s, dir := newStore(t)
	before := time.Now().UTC().Add(-time.Second)
	data := []byte("\x89PNG\r\n\x1a\n binary \x00 data")
	m, err := s.Put(data, "image/png", "out.png")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(m.ID) {
		t.Errorf("id %q", m.ID)
	}
	if m.Name != "out.png" || m.ContentType != "image/png" || m.Size != int64(len(data)) {
		t.Errorf("meta %+v", m)
	}
	if m.Created.Before(before) || m.Created.After(time.Now().Add(time.Second)) || m.Created.Location() != time.UTC {
		t.Errorf("created %v", m.Created)
	}
	gm, p, err := s.Backend.(*Local).Get(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if gm.ID != m.ID || gm.Name != m.Name || gm.ContentType != m.ContentType || gm.Size != m.Size || !gm.Created.Equal(m.Created) {
		t.Errorf("Get meta %+v, want %+v", gm, m)
	}
	if filepath.Dir(p) != dir {
		t.Errorf("path %s outside %s", p, dir)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, data) {
		t.Errorf("stored bytes %q", b)
	}
	rm, b, err := s.Read(m.ID, 0)
	if err != nil || !bytes.Equal(b, data) || rm.ID != m.ID {
		t.Errorf("Read = %+v %q %v", rm, b, err)
	}
	// Only the two files are left, no .partial.
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if want := []string{m.ID + ".bin", m.ID + ".json"}; strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("directory holds %v, want %v", names, want)
	}
}

func TestPutDefaults(t *testing.T) {
	s, _ := newStore(t)
	ids := map[string]bool{}
	for i := 0; i < 100; i++ {
		m, err := s.Put(nil, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if m.ContentType != "application/octet-stream" || m.Name != "file" || m.Size != 0 {
			t.Fatalf("defaults: %+v", m)
		}
		if ids[m.ID] {
			t.Fatalf("duplicate id %s", m.ID)
		}
		ids[m.ID] = true
	}
	m, _ := s.Put([]byte("x"), "text/plain", "../../etc/passwd")
	if m.Name != "passwd" {
		t.Errorf("name %q", m.Name)
	}
	if _, data, err := s.Read(m.ID, 0); err != nil || string(data) != "x" {
		t.Errorf("read %q %v", data, err)
	}
}

func TestPutUnwritable(t *testing.T) {
	s, dir := newStore(t)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put([]byte("x"), "", "a"); err == nil {
		t.Error("Put into a missing directory succeeded")
	}
}

func TestGetInvalidIDs(t *testing.T) {
	s, dir := newStore(t)
	m, _ := s.Put([]byte("x"), "", "a")
	// A validly shaped pair beside the store must stay out of reach.
	parent := filepath.Dir(dir)
	js, _ := json.Marshal(Meta{ID: "x", Name: "a", Size: 1})
	os.WriteFile(filepath.Join(parent, "secret.json"), js, 0o644)
	os.WriteFile(filepath.Join(parent, "secret.bin"), []byte("s"), 0o644)
	for _, id := range []string{
		"", "x", "../secret", "..", "/etc/passwd", "..\\secret",
		strings.ToUpper(m.ID), m.ID[:31], m.ID + "0", m.ID + ".json", m.ID + "/", "/" + m.ID,
		m.ID + "\x00", m.ID[:31] + "g", " " + m.ID, m.ID + "\n",
		strings.Repeat("0", 32), // well formed, absent
	} {
		if _, err := s.Stat(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat(%q) = %v, want ErrNotFound", id, err)
		}
		if _, _, err := s.Read(id, 0); !errors.Is(err, ErrNotFound) {
			t.Errorf("Read(%q) = %v, want ErrNotFound", id, err)
		}
	}
}

func TestReadLimit(t *testing.T) {
	s, dir := newStore(t)
	m, _ := s.Put([]byte("0123456789"), "", "ten")
	for _, tc := range []struct {
		limit int64
		ok    bool
	}{{0, true}, {-1, true}, {10, true}, {11, true}, {9, false}, {1, false}} {
		_, data, err := s.Read(m.ID, tc.limit)
		if tc.ok && (err != nil || string(data) != "0123456789") {
			t.Errorf("Read(limit %d) = %q, %v", tc.limit, data, err)
		}
		if !tc.ok {
			if err == nil || data != nil {
				t.Errorf("Read(limit %d) = %q, %v; want refusal", tc.limit, data, err)
			}
			if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrNotFound) {
				t.Errorf("Read(limit %d): %v, want ErrTooLarge", tc.limit, err)
			}
		}
	}
	// Metadata without bytes (a crash between the two writes, or a sweep
	// racing) reads as not found.
	os.Remove(filepath.Join(dir, m.ID+".bin"))
	if _, _, err := s.Read(m.ID, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("Read without .bin: %v", err)
	}
	// Corrupt metadata is an error, not a panic and not a hit.
	m2, _ := s.Put([]byte("y"), "", "y")
	os.WriteFile(filepath.Join(dir, m2.ID+".json"), []byte("{not json"), 0o644)
	if _, err := s.Stat(m2.ID); err == nil {
		t.Error("Get of corrupt metadata succeeded")
	}
}

// setCreated rewrites a file's metadata with an older creation time and
// ages both files on disk.
func setCreated(t *testing.T, dir, id string, when time.Time) {
	t.Helper()
	p := filepath.Join(dir, id+".json")
	js, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m Meta
	if err := json.Unmarshal(js, &m); err != nil {
		t.Fatal(err)
	}
	m.Created = when
	js, _ = json.Marshal(m)
	if err := os.WriteFile(p, js, 0o644); err != nil {
		t.Fatal(err)
	}
	age(t, p, when)
	age(t, filepath.Join(dir, id+".bin"), when)
}

func age(t *testing.T, p string, when time.Time) {
	t.Helper()
	if err := os.Chtimes(p, when, when); err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func TestSweep(t *testing.T) {
	s, dir := newStore(t)
	now := time.Now()
	old := now.Add(-2 * time.Hour)
	cutoff := now.Add(-time.Hour)

	oldFile, _ := s.Put([]byte("old"), "", "old")
	setCreated(t, dir, oldFile.ID, old)
	fresh, _ := s.Put([]byte("fresh"), "", "fresh")
	// Fresh metadata, old bytes on disk (mtime): the metadata decides.
	freshOldMtime, _ := s.Put([]byte("f2"), "", "f2")
	age(t, filepath.Join(dir, freshOldMtime.ID+".bin"), old)
	age(t, filepath.Join(dir, freshOldMtime.ID+".json"), old)
	// Old metadata, fresh mtimes: still expired.
	oldNewMtime, _ := s.Put([]byte("o2"), "", "o2")
	setCreated(t, dir, oldNewMtime.ID, old)
	age(t, filepath.Join(dir, oldNewMtime.ID+".json"), now)
	// Corrupt metadata goes.
	corrupt, _ := s.Put([]byte("c"), "", "c")
	os.WriteFile(filepath.Join(dir, corrupt.ID+".json"), []byte("garbage"), 0o644)
	age(t, filepath.Join(dir, corrupt.ID+".json"), old)

	write := func(name string, mtime time.Time) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("leftover"), 0o644); err != nil {
			t.Fatal(err)
		}
		age(t, p, mtime)
		return p
	}
	id := func(c byte) string { return strings.Repeat(string(c), 32) }
	oldBin := write(id('1')+".bin", old)
	oldPartial := write(id('2')+".bin.partial", old)
	oldJSONPartial := write(id('3')+".json.partial", old)
	freshBin := write(id('4')+".bin", now)
	freshPartial := write(id('5')+".bin.partial", now)
	// A partial of a file whose metadata exists (being rewritten) stays.
	keptPartial := write(fresh.ID+".bin.partial", old)
	// Not the store's: never deleted.
	foreign := write("README.txt", old)
	foreignNoExt := write("notes", old)

	n, err := s.Sweep(cutoff)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("Sweep removed %d files, want 3 (old, old metadata, corrupt)", n)
	}
	for _, tc := range []struct {
		path string
		keep bool
	}{
		{filepath.Join(dir, oldFile.ID+".bin"), false},
		{filepath.Join(dir, oldFile.ID+".json"), false},
		{filepath.Join(dir, oldNewMtime.ID+".bin"), false},
		{filepath.Join(dir, oldNewMtime.ID+".json"), false},
		{filepath.Join(dir, corrupt.ID+".bin"), false},
		{filepath.Join(dir, corrupt.ID+".json"), false},
		{filepath.Join(dir, fresh.ID+".bin"), true},
		{filepath.Join(dir, fresh.ID+".json"), true},
		{filepath.Join(dir, freshOldMtime.ID+".bin"), true},
		{filepath.Join(dir, freshOldMtime.ID+".json"), true},
		{oldBin, false},
		{oldPartial, false},
		{oldJSONPartial, false},
		{freshBin, true},
		{freshPartial, true},
		{keptPartial, true},
		{foreign, true},
		{foreignNoExt, true},
	} {
		if got := exists(tc.path); got != tc.keep {
			t.Errorf("%s: exists=%v, want %v", filepath.Base(tc.path), got, tc.keep)
		}
	}
	if _, data, err := s.Read(fresh.ID, 0); err != nil || string(data) != "fresh" {
		t.Errorf("fresh file after sweep: %q %v", data, err)
	}
	if _, err := s.Stat(oldFile.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("old file after sweep: %v", err)
	}
	// A second sweep has nothing left to do.
	if n, err := s.Sweep(cutoff); n != 0 || err != nil {
		t.Errorf("second sweep: %d %v", n, err)
	}
	// A sweep of a vanished directory reports an error.
	os.RemoveAll(dir)
	if _, err := s.Sweep(cutoff); err == nil {
		t.Error("Sweep of a missing directory succeeded")
	}
}

func TestConcurrentPutSweep(t *testing.T) {
	s, _ := newStore(t)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				m, err := s.Put([]byte("data"), "text/plain", "f.txt")
				if err != nil {
					t.Error(err)
					return
				}
				if _, d, err := s.Read(m.ID, 0); err != nil || string(d) != "data" {
					t.Errorf("read back: %q %v", d, err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 20; i++ {
			s.Sweep(time.Now().Add(-time.Hour)) // nothing is old: must delete nothing live
		}
	}()
	wg.Wait()
}

func TestCleanName(t *testing.T) {
	long := strings.Repeat("a", 150) + ".png"
	for _, tc := range []struct{ in, want string }{
		{"out.png", "out.png"},
		{"my-file_v2.webp", "my-file_v2.webp"},
		{"", "file"},
		{".", "file"},
		{"..", "file"},
		{"...", "file"},
		{"/", "file"},
		{"\\", "file"},
		{"___", "file"},
		{"../../etc/passwd", "passwd"},
		{"..\\..\\windows\\win.ini", "win.ini"},
		{"a/b\\c.png", "c.png"},
		{"dir/", "dir"},
		{".hidden", "hidden"},
		{"trailing.", "trailing"},
		{"a b c.png", "a_b_c.png"},
		{"a   b.png", "a_b.png"},
		{"x?y#z&w=1.png", "x_y_z_w_1.png"},
		{"%2e%2e%2fetc", "2e_2e_2fetc"},
		{"na\x00me.png", "na_me.png"},
		{"<script>.html", "script_.html"},
		{"фото.png", "png"},
		{long, strings.Repeat("a", 96) + ".png"},
	} {
		got := CleanName(tc.in)
		if got != tc.want {
			t.Errorf("CleanName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Every cleaned name is safe and clean already: one path segment, no dot
// segments, at most 100 safe characters, not starting or ending with '.'
// or '_' — and cleaning it again changes nothing (serveFile relies on the
// stored name being exactly the URL's).
func TestCleanNameProperties(t *testing.T) {
	safe := regexp.MustCompile(`^[A-Za-z0-9-][A-Za-z0-9._-]*$`)
	inputs := []string{"", ".", "..", "a", "-", "-.-", "a..b", "x\\..\\..", "../", "..././", "\u202e.exe"}
	for n := 95; n <= 105; n++ {
		for _, sep := range []string{".", "_", "..", "/", " ", "-"} {
			inputs = append(inputs,
				strings.Repeat("a", n)+sep+strings.Repeat("b", 99),
				strings.Repeat("a", 10)+sep+strings.Repeat("b", n),
				strings.Repeat(sep, n)+"x",
				"x"+strings.Repeat(sep, n),
			)
		}
	}
	for _, in := range inputs {
		got := CleanName(in)
		if len(got) == 0 || len(got) > 100 || !safe.MatchString(got) ||
			strings.HasSuffix(got, ".") || strings.HasSuffix(got, "_") || got == "." || got == ".." {
			t.Errorf("CleanName(%q) = %q: not clean", in, got)
		}
		if again := CleanName(got); again != got {
			t.Errorf("CleanName not idempotent: %q → %q → %q", in, got, again)
		}
	}
}

// failReader yields some bytes, then an error (a client that went away).
type failReader struct{ n int }

func (r *failReader) Read(b []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n := min(r.n, len(b))
	r.n -= n
	return n, nil
}

// names lists what is in dir (recursively, relative paths).
func names(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func TestPutReader(t *testing.T) {
	s, dir := newStore(t)
	id, err := NewID()
	if err != nil || !ValidID(id) {
		t.Fatalf("NewID = %q %v", id, err)
	}
	if _, err := s.Stat(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("reserved id is visible before its bytes: %v", err)
	}
	m, err := s.PutReader(id, strings.NewReader("12345"), "text/plain", "../a b.txt", 5)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != id || m.Name != "a_b.txt" || m.Size != 5 || m.ContentType != "text/plain" {
		t.Errorf("meta %+v", m)
	}
	if _, b, err := s.Read(id, 0); err != nil || string(b) != "12345" {
		t.Errorf("Read = %q %v", b, err)
	}
	// The id is taken now: no overwrite.
	if _, err := s.PutReader(id, strings.NewReader("x"), "", "x", 0); !errors.Is(err, ErrExists) {
		t.Errorf("second PutReader to %s: %v, want ErrExists", id, err)
	}
	if _, b, _ := s.Read(id, 0); string(b) != "12345" {
		t.Errorf("file overwritten: %q", b)
	}
	// Over the limit, a failing reader, a bad id: nothing stays behind.
	before := names(t, dir)
	if _, err := s.PutReader("", strings.NewReader("123456"), "", "x", 5); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over limit: %v", err)
	}
	if _, err := s.PutReader("", &failReader{n: 100}, "", "x", 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("failing reader: %v", err)
	}
	for _, bad := range []string{"../x", strings.Repeat("A", 32), "..", id + "/.."} {
		if _, err := s.PutReader(bad, strings.NewReader("x"), "", "x", 0); err == nil {
			t.Errorf("PutReader(%q) succeeded", bad)
		}
	}
	if after := names(t, dir); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("failed puts left files: %v → %v", before, after)
	}
}

func TestMultipartParts(t *testing.T) {
	s, dir := newStore(t)
	id, _ := NewID()
	chunks := []string{"first-", "second-", "third"}
	parts := make([]Part, 3)
	// Out of order, as concurrent clients send them.
	for _, i := range []int{2, 0, 1} {
		p, err := s.PutPart(id, i+1, strings.NewReader(chunks[i]), 0)
		if err != nil {
			t.Fatal(err)
		}
		sum := md5.Sum([]byte(chunks[i]))
		if p.Number != i+1 || p.Size != int64(len(chunks[i])) || p.ETag != hex.EncodeToString(sum[:]) {
			t.Errorf("part %d = %+v", i+1, p)
		}
		parts[i] = p
	}
	if _, err := s.Stat(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("file visible before assembly: %v", err)
	}
	// A re-upload of part 2 with other bytes is another version; the old one stays valid.
	p2b, err := s.PutPart(id, 2, strings.NewReader("SECOND-"), 0)
	if err != nil || p2b.ETag == parts[1].ETag {
		t.Fatalf("re-upload: %+v %v", p2b, err)
	}
	// Refusals.
	if _, err := s.PutPart(id, 4, strings.NewReader("toolong"), 3); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized part: %v", err)
	}
	for _, n := range []int{0, -1, MaxParts + 1} {
		if _, err := s.PutPart(id, n, strings.NewReader("x"), 0); err == nil {
			t.Errorf("part %d accepted", n)
		}
	}
	if _, err := s.PutPart("../../x", 1, strings.NewReader("x"), 0); err == nil {
		t.Error("part of a bad id accepted")
	}
	for _, bad := range [][]Part{
		nil,
		{parts[0], {Number: 2, ETag: strings.Repeat("0", 32)}, parts[2]},
		{parts[0], {Number: 2, ETag: "../../../../etc/passwd"}},
		{parts[0], {Number: 9, ETag: parts[1].ETag}},
	} {
		if _, err := s.AssembleParts(id, bad, "", "x", 0); !errors.Is(err, ErrPartNotFound) {
			t.Errorf("assemble %+v: %v, want ErrPartNotFound", bad, err)
		}
	}
	if _, err := s.AssembleParts(id, parts, "", "x", 10); !errors.Is(err, ErrTooLarge) {
		t.Errorf("assemble over limit: %v", err)
	}
	if _, err := s.Stat(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("failed assembly left a file: %v", err)
	}
	m, err := s.AssembleParts(id, parts, "video/mp4", "clip.mp4", 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, b, err := s.Read(id, 0); err != nil || string(b) != "first-second-third" || m.Size != 18 || m.ContentType != "video/mp4" {
		t.Errorf("assembled %q %+v %v", b, m, err)
	}
	if exists(filepath.Join(dir, "multipart", id)) {
		t.Error("parts left after assembly")
	}
	// Once assembled, the id is taken.
	if _, err := s.AssembleParts(id, parts, "", "x", 0); err == nil {
		t.Error("second assembly succeeded")
	}
}

func TestSweepParts(t *testing.T) {
	s, dir := newStore(t)
	now := time.Now()
	old, fresh, kept := mustID(t), mustID(t), mustID(t)
	for _, id := range []string{old, fresh, kept} {
		if _, err := s.PutPart(id, 1, strings.NewReader("x"), 0); err != nil {
			t.Fatal(err)
		}
	}
	age(t, filepath.Join(dir, "multipart", old), now.Add(-2*time.Hour))
	age(t, filepath.Join(dir, "multipart", kept), now.Add(-2*time.Hour))
	foreign := filepath.Join(dir, "multipart", "notes")
	os.WriteFile(foreign, []byte("x"), 0o644)
	age(t, foreign, now.Add(-2*time.Hour))
	n, err := s.SweepParts(now.Add(-time.Hour), func(id string) bool { return id == kept })
	if err != nil || n != 1 {
		t.Errorf("SweepParts = %d %v, want 1", n, err)
	}
	if exists(filepath.Join(dir, "multipart", old)) || !exists(filepath.Join(dir, "multipart", fresh)) ||
		!exists(filepath.Join(dir, "multipart", kept)) || !exists(foreign) {
		t.Errorf("after SweepParts: %v", names(t, dir))
	}
	// Sweep piggybacks with its own cutoff and no live set; files are counted, parts are not.
	if n, err := s.Sweep(now.Add(-time.Hour)); err != nil || n != 0 {
		t.Errorf("Sweep = %d %v", n, err)
	}
	if exists(filepath.Join(dir, "multipart", kept)) || !exists(filepath.Join(dir, "multipart", fresh)) {
		t.Errorf("after Sweep: %v", names(t, dir))
	}
	// No multipart directory at all is not an error.
	s2, _ := newStore(t)
	if n, err := s2.SweepParts(now, nil); n != 0 || err != nil {
		t.Errorf("empty SweepParts = %d %v", n, err)
	}
}

func mustID(t *testing.T) string {
	t.Helper()
	id, err := NewID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}
