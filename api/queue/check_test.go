package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// blocked never finishes a request until its ctx ends.
func blocked(ctx context.Context, r *Record, _ func(string, string), _ func(string)) Outcome {
	<-ctx.Done()
	return Cancelled()
}

// makeDB writes a queue database holding n requests (every one queued, with
// an input of a few hundred bytes, so that the trees span many pages) and
// returns their inputs by id.
func makeDB(t *testing.T, path string, n int) map[string]string {
	t.Helper()
	q, err := Open(path, blocked, Options{Log: quiet(), Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	want := map[string]string{}
	for i := range n {
		id := fmt.Sprintf("req-%04d", i)
		in := fmt.Sprintf(`{"prompt":%q}`, strings.Repeat(fmt.Sprintf("%x", rnd.Uint64()), 10+i%20))
		r := rec(id)
		r.Input = json.RawMessage(in)
		submit(t, q, r)
		want[id] = in
	}
	if err := closeNow(q); err != nil {
		t.Fatal(err)
	}
	return want
}

// pages scans a sound database: its at says where each request and input
// lives, and its page reads pages of a copy of it.
func pages(t *testing.T, path string) (s *scanner) {
	t.Helper()
	s, err := scan(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.rep.Damaged() {
		t.Fatalf("fresh database reported damaged: %v", s.rep.Problems)
	}
	// Keep it readable for the test (a copy of the file: the test damages it).
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(t.TempDir(), "original.db")
	if err := os.WriteFile(cp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if s.f, err = os.Open(cp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.f.Close() })
	return s
}

// smash overwrites page id with garbage.
func smash(t *testing.T, path string, psize int, id uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	junk := bytes.Repeat([]byte{0xA5, 0x5A, 0x13, 0x37}, psize/4)
	if _, err := f.WriteAt(junk, int64(id)*int64(psize)); err != nil {
		t.Fatal(err)
	}
}

func checkRefused(t *testing.T, path string) {
	t.Helper()
	q, err := Open(path, blocked, Options{Log: quiet()})
	if err == nil {
		closeNow(q)
		t.Fatal("Open accepted a damaged database")
	}
	var de *DamagedError
	if !errors.Is(err, ErrDamaged) || !errors.As(err, &de) {
		t.Fatalf("Open: %v, want a DamagedError", err)
	}
	for _, s := range []string{path, "falocal queue check", "falocal queue repair", "backup"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("refusal %q does not name %q", err, s)
		}
	}
}

func TestOpenRefusesTruncated(t *testing.T) {
	path := dbPath(t)
	makeDB(t, path, 300)
	fi, _ := os.Stat(path)
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	checkRefused(t, path)
	if fi2, _ := os.Stat(path); fi2.Size() != fi.Size()/2 {
		t.Errorf("Open changed the damaged file: %d bytes, was %d", fi2.Size(), fi.Size()/2)
	}
}

func TestOpenRefusesZeroLength(t *testing.T) {
	path := dbPath(t)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	checkRefused(t, path)
	if fi, _ := os.Stat(path); fi.Size() != 0 {
		t.Errorf("Open wrote %d bytes into the empty file", fi.Size())
	}
	// Only a missing file is a new queue.
	q := open(t, filepath.Join(t.TempDir(), "new.db"), blocked, Options{})
	if n, _ := q.Depth(); n != 0 {
		t.Errorf("new queue holds %d", n)
	}
}

func TestOpenRefusesGarbage(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	junk := make([]byte, 64<<10)
	for i := range junk {
		junk[i] = byte(rnd.Uint32())
	}
	path := dbPath(t)
	if err := os.WriteFile(path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	checkRefused(t, path)

	// Both meta pages overwritten, the rest intact.
	path = filepath.Join(t.TempDir(), "queue.db")
	makeDB(t, path, 20)
	s := pages(t, path)
	smash(t, path, s.psize, 0)
	smash(t, path, s.psize, 1)
	checkRefused(t, path)
}

// A damaged page in the middle of the tree.
func TestOpenRefusesDamagedPage(t *testing.T) {
	path := dbPath(t)
	makeDB(t, path, 300)
	s := pages(t, path)
	smash(t, path, s.psize, s.at["requests/req-0150"])
	checkRefused(t, path)
}

// compareRepaired checks that the repaired database holds every request
// whose page survived, with its input where that survived too, and that
// the damaged file was kept unchanged.
func compareRepaired(t *testing.T, path string, want map[string]string, lostPage func(key string) bool, damaged []byte) *RepairReport {
	t.Helper()
	rep, err := Repair(path, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Kept != path+".damaged-20260102T030405Z" {
		t.Errorf("damaged file kept as %s", rep.Kept)
	}
	if kept, err := os.ReadFile(rep.Kept); err != nil || !bytes.Equal(kept, damaged) {
		t.Errorf("the damaged file was not kept as it was (%v)", err)
	}
	got, err := ReadAll(path)
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for id, in := range want {
		r, ok := got[id]
		if lostPage("requests/" + id) {
			continue
		}
		if !ok {
			missing = append(missing, id)
			continue
		}
		if lostPage("inputs/" + id) {
			continue
		}
		if string(r.Input) != in {
			t.Errorf("%s: input %.40s…, want %.40s…", id, r.Input, in)
		}
		if r.Status != InQueue {
			t.Errorf("%s: %s, want %s", id, r.Status, InQueue)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("repair lost %d readable request(s): %v", len(missing), missing)
	}
	if rep.Copied != len(got) {
		t.Errorf("report says %d copied, the database holds %d", rep.Copied, len(got))
	}
	// The repaired database opens, and its requests are queued again.
	q := open(t, path, blocked, Options{Workers: 1})
	queued, running := q.Depth()
	if queued+running == 0 && len(got) > 0 {
		t.Errorf("repaired queue holds no pending request; %d copied", len(got))
	}
	if c, err := Check(path); !errors.Is(err, ErrInUse) {
		t.Errorf("Check while the queue is open: %v, %v; want ErrInUse", c, err)
	}
	return rep
}

func TestRepairDamagedPages(t *testing.T) {
	path := dbPath(t)
	want := makeDB(t, path, 400)
	s := pages(t, path)
	// Two leaf pages of requests, one of inputs, and (when the tree has
	// one) the requests bucket's root branch page, whose leaves are then
	// found only by looking at every page.
	lost := map[uint64]bool{
		s.at["requests/req-0010"]: true,
		s.at["requests/req-0300"]: true,
		s.at["inputs/req-0200"]:   true,
	}
	for id := range lost {
		smash(t, path, s.psize, id)
	}
	reqRoot := rootOf(t, s, "requests")
	if reqRoot != 0 && !lost[reqRoot] {
		p, _ := s.page(reqRoot)
		if flags, _, _ := elements(p); flags == branchPageFlag {
			smash(t, path, s.psize, reqRoot)
		}
	}
	damaged, _ := os.ReadFile(path)
	c, err := Check(path)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Damaged() || c.Records == 0 {
		t.Fatalf("Check: damaged %v, %d records readable: %v", c.Damaged(), c.Records, c.Problems)
	}
	rep := compareRepaired(t, path, want, func(key string) bool { return lost[s.at[key]] }, damaged)
	nLost := 0
	for id := range want {
		if lost[s.at["requests/"+id]] {
			nLost++
		}
	}
	if rep.Copied != len(want)-nLost {
		t.Errorf("copied %d of %d requests, %d were on damaged pages", rep.Copied, len(want), nLost)
	}
	if rep.InputLost == 0 {
		t.Errorf("no input reported lost; a page of inputs was damaged")
	}
}

// rootOf returns the root page of a top-level bucket (0 if inline).
func rootOf(t *testing.T, s *scanner, name string) uint64 {
	t.Helper()
	p, err := s.page(s.m.root)
	if err != nil {
		t.Fatal(err)
	}
	_, els, err := elements(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range els {
		if string(e.key) == name {
			return le.Uint64(e.val)
		}
	}
	t.Fatalf("no bucket %s", name)
	return 0
}

func TestRepairTruncated(t *testing.T) {
	path := dbPath(t)
	want := makeDB(t, path, 400)
	s := pages(t, path)
	fi, _ := os.Stat(path)
	cut := fi.Size() / 2
	if err := os.Truncate(path, cut); err != nil {
		t.Fatal(err)
	}
	damaged, _ := os.ReadFile(path)
	past := func(key string) bool {
		id, ok := s.at[key]
		if !ok {
			return true
		}
		p, err := s.page(id)
		return err != nil || int64(id)*int64(s.psize)+int64(len(p)) > cut
	}
	compareRepaired(t, path, want, past, damaged)
}

// An empty file is repaired into an empty queue, kept as damaged.
func TestRepairZeroLength(t *testing.T) {
	path := dbPath(t)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Check(path)
	if err != nil || !c.Damaged() || !strings.Contains(c.Problems[0], "empty") {
		t.Fatalf("Check: %+v %v", c, err)
	}
	rep := compareRepaired(t, path, nil, nil, nil)
	if rep.Copied != 0 {
		t.Errorf("copied %d", rep.Copied)
	}
}

// A sound database checks clean with every record.
func TestCheckSound(t *testing.T) {
	path := dbPath(t)
	want := makeDB(t, path, 200)
	c, err := Check(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Damaged() || c.Records != len(want) || c.Inputs != len(want) {
		t.Errorf("Check: %+v, want %d records and inputs, no damage", c, len(want))
	}
}

// A second queue on a file in use is refused at once, not after bbolt's
// lock timeout, and not as damage.
func TestOpenInUse(t *testing.T) {
	path := dbPath(t)
	makeDB(t, path, 10)
	open(t, path, blocked, Options{})
	t0 := time.Now()
	q, err := Open(path, blocked, Options{Log: quiet()})
	if err == nil {
		closeNow(q)
		t.Fatal("a second queue opened the same file")
	}
	if !errors.Is(err, ErrInUse) || errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), path) {
		t.Errorf("second Open: %v, want ErrInUse naming %s", err, path)
	}
	if took := time.Since(t0); took > 2*time.Second {
		t.Errorf("refused after %s", took)
	}
}

// A damaged freelist with the tree whole: the damage is reported, and the
// repair copies the tree's records only, not old versions of them (or of
// removed ones) from pages the tree no longer uses.
func TestRepairDamagedFreelist(t *testing.T) {
	path := dbPath(t)
	want := makeDB(t, path, 100)
	// Complete and remove half, leaving their old versions in free pages.
	q, err := Open(path, func(ctx context.Context, r *Record, _ func(string, string), _ func(string)) Outcome {
		return Outcome{Output: json.RawMessage(`{}`)}
	}, Options{Log: quiet(), Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	for id := range want {
		waitDone(t, q, id)
	}
	if err := closeNow(q); err != nil {
		t.Fatal(err)
	}
	q, err = Open(path, blocked, Options{Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	n, _, err := q.Sweep(time.Now().Add(time.Hour))
	if err != nil || n != len(want) {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	closeNow(q)
	s := pages(t, path)
	if s.m.freelist == noFreelist {
		t.Skip("no freelist page")
	}
	smash(t, path, s.psize, s.m.freelist)
	c, err := Check(path)
	if err != nil || !c.Damaged() {
		t.Fatalf("Check: %+v, %v", c, err)
	}
	if c.Records != 0 || c.Found != 0 {
		t.Errorf("Check found %d records (%d outside the tree) in an empty queue", c.Records, c.Found)
	}
	rep, err := Repair(path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Copied != 0 {
		t.Errorf("repair brought back %d removed requests", rep.Copied)
	}
}

// After Close, reads and writes of the database (a status poll still being
// answered, a webhook delivery recorded late) fail with ErrClosed, not
// with bbolt's "database not open".
func TestUseAfterClose(t *testing.T) {
	path := dbPath(t)
	makeDB(t, path, 3)
	q, err := Open(path, blocked, Options{Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if err := closeNow(q); err != nil {
		t.Fatal(err)
	}
	q.Forget("req-0001")
	if _, _, err := q.Get("req-0001"); err != nil && !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if _, _, err := q.Get("req-9999"); !errors.Is(err, ErrClosed) {
		t.Errorf("Get of an unknown request after Close: %v, want ErrClosed", err)
	}
	if err := q.MarkWebhookDone("req-0001"); !errors.Is(err, ErrClosed) {
		t.Errorf("MarkWebhookDone after Close: %v, want ErrClosed", err)
	}
	if _, _, err := q.Sweep(time.Now()); !errors.Is(err, ErrClosed) {
		t.Errorf("Sweep after Close: %v, want ErrClosed", err)
	}
	if err := q.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
