package queue

// Checking and repairing a damaged queue database. The database file is read
// page by page with plain reads (bbolt's own reader maps the file and trusts
// it: a truncated file faults, a bad page panics), following bbolt's on-disk
// format: two meta pages, a freelist page, and B+trees of branch and leaf
// pages, one per bucket. Nothing here writes to the damaged file.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrDamaged is wrapped by the errors of Open, Check and Repair for a
// database file that is damaged.
var ErrDamaged = errors.New("queue database is damaged")

// ErrInUse is returned by Check and Repair while a server holds the database.
var ErrInUse = errors.New("queue database is in use by a running server")

// DamagedError is Open's refusal of a damaged database file.
type DamagedError struct {
	Path     string
	Problems []string
}

func (e *DamagedError) Error() string {
	what := e.Problems[0]
	if n := len(e.Problems) - 1; n > 0 {
		what += fmt.Sprintf(" (and %d more problem(s))", n)
	}
	return fmt.Sprintf("queue database %s is damaged: %s. The server does not start on a damaged queue: "+
		"run 'falocal queue check' to see which requests are readable, then 'falocal queue repair' to copy every "+
		"readable request into a new %s (the damaged file is kept beside it as %s.damaged-<time>), "+
		"or restore %s from a backup (docs/serving.md#recovery)",
		e.Path, what, filepath.Base(e.Path), filepath.Base(e.Path), filepath.Base(e.Path))
}

func (e *DamagedError) Unwrap() error { return ErrDamaged }

// Report is what Check found in a database file.
type Report struct {
	Path     string
	Size     int64
	PageSize int
	// Records is the number of readable requests, Inputs of readable inputs.
	Records int
	Inputs  int
	// Unreadable counts stored requests whose record does not parse: the
	// file is sound, the record is not (a server logs and skips them).
	Unreadable int
	// Found counts readable requests found outside the database's tree, in
	// pages that a damaged page no longer leads to (Records includes them).
	Found int
	// Unsure counts those of Found that are unfinished and were found while
	// the freelist was lost too: each may be an old version of a request
	// that has since finished (and been removed); repaired, it runs again.
	Unsure int
	// Problems lists the damage to the file; none means it is sound.
	Problems []string
}

// Damaged reports whether Check found any damage, to the file or to
// records.
func (r *Report) Damaged() bool { return len(r.Problems) > 0 || r.Unreadable > 0 }

const (
	pageHeaderSize   = 16
	elementSize      = 16
	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	freelistPageFlag = 0x10
	bucketLeafFlag   = 0x01
	noFreelist       = ^uint64(0)
	metaMagic        = 0xED0CDAED
	metaVersion      = 2
)

var le = binary.LittleEndian

type meta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	hw       uint64 // high water mark: pages in use, in pages
	txid     uint64
}

// parseMeta reads the meta record of a meta page; ok is false unless its
// magic, version and checksum are right.
func parseMeta(p []byte) (meta, bool) {
	if len(p) < pageHeaderSize+64 {
		return meta{}, false
	}
	b := p[pageHeaderSize:]
	h := fnv.New64a()
	h.Write(b[:56])
	if le.Uint32(b[0:]) != metaMagic || le.Uint32(b[4:]) != metaVersion || le.Uint64(b[56:]) != h.Sum64() {
		return meta{}, false
	}
	return meta{pageSize: le.Uint32(b[8:]), root: le.Uint64(b[16:]), freelist: le.Uint64(b[32:]),
		hw: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}, true
}

// scanner reads one database file.
type scanner struct {
	f       *os.File
	size    int64
	psize   int
	m       meta
	rep     *Report
	reached map[uint64]bool
	free    map[uint64]bool // nil when the freelist is unreadable
	// requests and inputs are the entries found, by key.
	requests map[string][]byte
	inputs   map[string][]byte
	// at is the page of each entry ("bucket/key"), for tests.
	at map[string]uint64
}

func (s *scanner) problem(format string, args ...any) {
	s.rep.Problems = append(s.rep.Problems, fmt.Sprintf(format, args...))
}

// page reads page id with its overflow pages; the error says what is wrong.
func (s *scanner) page(id uint64) ([]byte, error) {
	off := int64(id) * int64(s.psize)
	if id >= s.m.hw {
		return nil, fmt.Errorf("page %d is beyond the database's %d pages", id, s.m.hw)
	}
	if off+int64(s.psize) > s.size {
		return nil, fmt.Errorf("page %d is beyond the end of the file (%d bytes: truncated?)", id, s.size)
	}
	hdr := make([]byte, pageHeaderSize)
	if _, err := s.f.ReadAt(hdr, off); err != nil {
		return nil, fmt.Errorf("page %d: %v", id, err)
	}
	if got := le.Uint64(hdr); got != id {
		return nil, fmt.Errorf("page %d is overwritten (its header says page %d)", id, got)
	}
	n := 1 + int64(le.Uint32(hdr[12:]))
	if id+uint64(n) > s.m.hw || off+n*int64(s.psize) > s.size {
		return nil, fmt.Errorf("page %d runs %d pages, beyond the end of the file (truncated?)", id, n)
	}
	buf := make([]byte, n*int64(s.psize))
	if _, err := s.f.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("page %d: %v", id, err)
	}
	for i := uint64(0); i < uint64(n); i++ {
		s.reached[id+i] = true
	}
	return buf, nil
}

type element struct {
	flags    uint32
	key, val []byte
	child    uint64 // branch pages
}

// elements parses a branch or leaf page (p may be an inline bucket's page).
func elements(p []byte) (flags uint16, els []element, err error) {
	if len(p) < pageHeaderSize {
		return 0, nil, errors.New("short page")
	}
	flags = le.Uint16(p[8:])
	count := int(le.Uint16(p[10:]))
	if flags != branchPageFlag && flags != leafPageFlag {
		return flags, nil, fmt.Errorf("not a branch or leaf page (flags %#x)", flags)
	}
	if pageHeaderSize+count*elementSize > len(p) {
		return flags, nil, fmt.Errorf("%d elements do not fit the page", count)
	}
	for i := 0; i < count; i++ {
		at := pageHeaderSize + i*elementSize
		e := p[at : at+elementSize]
		var el element
		var pos, ksize, vsize uint64
		if flags == branchPageFlag {
			pos, ksize, el.child = uint64(le.Uint32(e[0:])), uint64(le.Uint32(e[4:])), le.Uint64(e[8:])
		} else {
			el.flags, pos, ksize, vsize = le.Uint32(e[0:]), uint64(le.Uint32(e[4:])), uint64(le.Uint32(e[8:])), uint64(le.Uint32(e[12:]))
		}
		start := uint64(at) + pos
		if start+ksize+vsize > uint64(len(p)) {
			return flags, nil, fmt.Errorf("element %d lies outside the page", i)
		}
		el.key = p[start : start+ksize]
		el.val = p[start+ksize : start+ksize+vsize]
		els = append(els, el)
	}
	return flags, els, nil
}

// walk visits the leaf entries of the tree rooted at page id; a damaged page
// is reported and its subtree skipped.
func (s *scanner) walk(id uint64, depth int, what string, visit func(uint64, element)) {
	if depth > 64 {
		s.problem("%s: the tree is deeper than 64 levels at page %d (a loop?)", what, id)
		return
	}
	if id < 2 {
		s.problem("%s: a page points at meta page %d", what, id)
		return
	}
	if s.reached[id] {
		s.problem("%s: page %d is reached twice", what, id)
		return
	}
	p, err := s.page(id)
	if err != nil {
		s.problem("%s: %v", what, err)
		return
	}
	flags, els, err := elements(p)
	if err != nil {
		s.problem("%s: page %d: %v", what, id, err)
		return
	}
	if flags == branchPageFlag {
		for _, e := range els {
			s.walk(e.child, depth+1, what, visit)
		}
		return
	}
	for _, e := range els {
		visit(id, e)
	}
}

// bucket walks a bucket whose header (and inline page) is v.
func (s *scanner) bucket(name string, at uint64, v []byte, visit func(uint64, element)) {
	if len(v) < 16 {
		s.problem("bucket %s: short bucket header", name)
		return
	}
	root := le.Uint64(v)
	if root != 0 {
		s.walk(root, 0, "bucket "+name, visit)
		return
	}
	flags, els, err := elements(v[16:])
	if err != nil || flags != leafPageFlag {
		s.problem("bucket %s: damaged inline page: %v", name, err)
		return
	}
	for _, e := range els {
		visit(at, e)
	}
}

func (s *scanner) readFreelist() {
	if s.m.freelist == noFreelist {
		return
	}
	p, err := s.page(s.m.freelist)
	if err != nil {
		s.problem("freelist: %v", err)
		return
	}
	if le.Uint16(p[8:]) != freelistPageFlag {
		s.problem("freelist: page %d is not a freelist page", s.m.freelist)
		return
	}
	n, at := uint64(le.Uint16(p[10:])), uint64(pageHeaderSize)
	if n == 0xFFFF {
		n, at = le.Uint64(p[at:]), at+8
	}
	if at+n*8 > uint64(len(p)) {
		s.problem("freelist: %d page ids do not fit its page", n)
		return
	}
	s.free = map[uint64]bool{}
	for i := uint64(0); i < n; i++ {
		s.free[le.Uint64(p[at+i*8:])] = true
	}
}

// readMeta settles the page size and the newest valid meta page.
func (s *scanner) readMeta() bool {
	var best *meta
	// The page size is in the meta page; if the first one is unreadable,
	// the second is tried at each size bbolt may have used.
	first := make([]byte, 4096)
	n, _ := s.f.ReadAt(first, 0)
	if m, ok := parseMeta(first[:n]); ok {
		best = &m
	}
	sizes := []int{os.Getpagesize(), 4096, 8192, 16384, 32768, 65536}
	if best != nil {
		sizes = []int{int(best.pageSize)}
	}
	for _, ps := range sizes {
		buf := make([]byte, 4096)
		n, _ := s.f.ReadAt(buf, int64(ps))
		if m, ok := parseMeta(buf[:n]); ok && int(m.pageSize) == ps {
			if best == nil || m.txid > best.txid {
				best = &m
			}
			break
		}
	}
	if best == nil {
		s.problem("neither meta page is valid (not a queue database, or its first pages are overwritten)")
		return false
	}
	if best.pageSize < 512 || best.pageSize > 1<<20 || best.pageSize&(best.pageSize-1) != 0 {
		s.problem("meta page gives an impossible page size %d", best.pageSize)
		return false
	}
	s.m, s.psize = *best, int(best.pageSize)
	s.rep.PageSize = s.psize
	if need := int64(s.m.hw) * int64(s.psize); s.size < need {
		s.problem("the file is %d bytes but its last transaction used %d (truncated)", s.size, need)
	}
	return true
}

// scan reads the database at path into s; it fails only if the file
// cannot be read at all.
func scan(path string) (*scanner, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	s := &scanner{f: f, size: fi.Size(), rep: &Report{Path: path, Size: fi.Size()}, reached: map[uint64]bool{0: true, 1: true},
		requests: map[string][]byte{}, inputs: map[string][]byte{}, at: map[string]uint64{}}
	if s.size == 0 {
		s.problem("the file is empty (0 bytes); only a missing file starts a new queue")
		return s, nil
	}
	if !s.readMeta() {
		return s, nil
	}
	s.readFreelist()
	before := len(s.rep.Problems)
	if s.m.root == 0 {
		s.problem("the root bucket is missing")
	} else {
		s.walk(s.m.root, 0, "root bucket", func(at uint64, e element) {
			if e.flags&bucketLeafFlag == 0 {
				return
			}
			dst := map[string]map[string][]byte{string(bucket): s.requests, string(inputs): s.inputs}[string(e.key)]
			if dst == nil {
				return
			}
			name := string(e.key)
			s.bucket(name, at, e.val, func(at uint64, el element) {
				if el.flags&bucketLeafFlag == 0 {
					dst[string(el.key)] = el.val
					s.at[name+"/"+string(el.key)] = at
				}
			})
		})
	}
	if len(s.rep.Problems) > before {
		// Only a damaged tree hides live pages; with the tree whole, the
		// pages it does not reach hold old versions of records.
		s.orphans()
	}
	for k, v := range s.requests {
		var r Record
		if json.Unmarshal(v, &r) != nil || r.ID != k {
			s.rep.Unreadable++
			delete(s.requests, k)
		}
	}
	s.rep.Records, s.rep.Inputs = len(s.requests), len(s.inputs)
	return s, nil
}

// progress orders versions of one request found in stray pages: the
// further along, the newer.
func progress(r Record) int {
	n := map[Status]int{InQueue: 0, InProgress: 1, Completed: 2}[r.Status]*1_000_000 + len(r.Logs)*10
	if r.WebhookDone {
		n++
	}
	return n
}

// orphans looks for requests in leaf pages that the tree no longer reaches
// (under a damaged branch page): any page neither reached nor free (all
// unreached ones when the freelist is lost) whose entries are records.
func (s *scanner) orphans() {
	if s.psize == 0 {
		return
	}
	last := s.m.hw
	if byFile := uint64(s.size / int64(s.psize)); byFile < last {
		last = byFile
	}
	found := map[string]Record{}
	raw := map[string][]byte{}
	loose := map[string][]byte{} // entries that are not records: maybe inputs
	for id := uint64(2); id < last; id++ {
		if s.reached[id] || (s.free != nil && s.free[id]) {
			continue
		}
		hdr := make([]byte, pageHeaderSize)
		if _, err := s.f.ReadAt(hdr, int64(id)*int64(s.psize)); err != nil || le.Uint64(hdr) != id || le.Uint16(hdr[8:]) != leafPageFlag {
			continue
		}
		n := 1 + uint64(le.Uint32(hdr[12:]))
		if id+n > last {
			n = last - id
		}
		buf := make([]byte, n*uint64(s.psize))
		if _, err := s.f.ReadAt(buf, int64(id)*int64(s.psize)); err != nil {
			continue
		}
		_, els, err := elements(buf)
		if err != nil {
			continue
		}
		for _, e := range els {
			if e.flags&bucketLeafFlag != 0 {
				continue
			}
			k := string(e.key)
			var r Record
			if json.Unmarshal(e.val, &r) == nil && r.ID == k && r.Status != "" {
				if _, inTree := s.requests[k]; inTree {
					continue
				}
				if old, ok := found[k]; !ok || progress(r) > progress(old) {
					found[k], raw[k] = r, append([]byte(nil), e.val...)
				}
				continue
			}
			if json.Valid(e.val) {
				loose[k] = append([]byte(nil), e.val...)
			}
		}
	}
	for k, v := range raw {
		s.requests[k] = v
		s.rep.Found++
		if s.free == nil && found[k].Status != Completed {
			s.rep.Unsure++
		}
	}
	// Inputs on pages the tree no longer reaches belong to requests found
	// either way: the requests tree may be whole while the inputs tree lost
	// a branch page.
	for k := range s.requests {
		if _, ok := s.inputs[k]; !ok {
			if in, ok := loose[k]; ok {
				s.inputs[k] = in
			}
		}
	}
}

// lockShared fails with ErrInUse while a server (bbolt holds an exclusive
// flock on an open database) uses the file.
func lockShared(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", path, ErrInUse)
		}
		return nil, err
	}
	return f, nil
}

// Check reads the database at path and reports what is readable and what
// is damaged. It refuses (ErrInUse) while a server has the file open.
func Check(path string) (*Report, error) {
	l, err := lockShared(path)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	s, err := scan(path)
	if err != nil {
		return nil, err
	}
	return s.rep, nil
}

// preflight is Open's check of an existing file before bbolt maps it.
func preflight(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // a new queue
	}
	if err != nil {
		return fmt.Errorf("queue database %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("queue database %s is not a regular file", path)
	}
	// Another server writing the file would make a sound one look torn.
	l, err := lockShared(path)
	if errors.Is(err, ErrInUse) {
		return fmt.Errorf("%w (another falocal on the same data directory?)", err)
	}
	if err != nil {
		return fmt.Errorf("queue database %s: %w", path, err)
	}
	defer l.Close() // before bbolt takes its own lock
	s, err := scan(path)
	if err != nil {
		return fmt.Errorf("queue database %s: %w", path, err)
	}
	if len(s.rep.Problems) > 0 {
		return &DamagedError{Path: path, Problems: s.rep.Problems}
	}
	return nil
}

// guard runs f (bbolt's open path) turning a panic, or a fault reading the
// mapped file, into a DamagedError instead of a crash.
func guard(path string, f func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = &DamagedError{Path: path, Problems: []string{fmt.Sprint("reading it failed: ", p)}}
		}
	}()
	return f()
}

// RepairReport is what Repair did.
type RepairReport struct {
	Report
	// Kept is where the damaged file now is.
	Kept string
	// Copied requests went into the new database; InputLost counts those
	// of them whose input was not readable (unfinished ones among them
	// complete with an error instead of running without it).
	Copied    int
	InputLost int
}

// Repair copies every readable request of the database at path (with its
// input where readable) into a new database, renames the damaged file to
// path.damaged-<time> and puts the new one at path. Nothing is discarded:
// the damaged file stays for whatever else may be salvaged from it. It
// refuses (ErrInUse) while a server has the file open.
func Repair(path string, now time.Time) (*RepairReport, error) {
	l, err := lockShared(path)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	s, err := scan(path)
	if err != nil {
		return nil, err
	}
	rep := &RepairReport{Report: *s.rep}
	dir := filepath.Dir(path)
	tmp := filepath.Join(dir, "."+filepath.Base(path)+".repair")
	os.Remove(tmp)
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucket)
		if err != nil {
			return err
		}
		in, err := tx.CreateBucket(inputs)
		if err != nil {
			return err
		}
		for k, v := range s.requests {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			input, ok := s.inputs[k]
			if len(r.Input) > 0 {
				input, ok, r.Input = r.Input, true, nil
			}
			if !ok {
				rep.InputLost++
				if r.Status != Completed {
					msg := "this request's input was lost when the queue database was damaged; it could not run"
					r.Status, r.CompletedAt = Completed, now
					r.Outcome = &Outcome{Status: 500, Error: msg, ErrorType: "internal_error",
						Body: mustJSON(map[string]string{"detail": msg, "error_type": "internal_error"})}
					r.Logs = append(r.Logs, LogEntry{Message: msg, Level: "ERROR", Source: "USER",
						Timestamp: now.UTC().Format("2006-01-02T15:04:05.000000+00:00")})
				}
			} else if err := in.Put([]byte(k), input); err != nil {
				return err
			}
			nb, err := json.Marshal(&r)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(k), nb); err != nil {
				return err
			}
			rep.Copied++
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("write the repaired database: %w", err)
	}
	rep.Kept = path + ".damaged-" + now.UTC().Format("20060102T150405Z")
	if err := os.Rename(path, rep.Kept); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("the damaged database is now %s, but the repaired one could not take its place: %w (it is %s)", rep.Kept, err, tmp)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return rep, nil
}

// ReadAll is for tests and tools: the readable requests of a sound or
// repaired database, by id, with their inputs.
func ReadAll(path string) (map[string]Record, error) {
	s, err := scan(path)
	if err != nil {
		return nil, err
	}
	out := map[string]Record{}
	for k, v := range s.requests {
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, err
		}
		if len(r.Input) == 0 {
			r.Input = s.inputs[k]
		}
		out[k] = r
	}
	return out, nil
}
