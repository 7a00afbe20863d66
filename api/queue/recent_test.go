package queue

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestRecentNewestFirstAcrossRestart lists completed requests from disk
// after a restart, newest first, filtered and limited, without inputs.
func TestRecentNewestFirstAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	f := newRunner()
	q, err := Open(path, f.run, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for i, id := range []string{"a", "b", "c"} {
		if _, err := q.Submit(Record{ID: id, Endpoint: "fal-ai/x", Input: []byte(`{"n":1}`), CreatedAt: t0.Add(time.Duration(i) * time.Second)}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		if _, err := q.Wait(ctx, id); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	if _, err := q.Submit(Record{ID: "sync", Endpoint: "fal-ai/x", Ephemeral: true, CreatedAt: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	q, err = Open(path, f.run, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close(context.Background())
	got, err := q.Recent(2, func(id string) bool { return id != "b" })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "c" || got[1].ID != "a" {
		t.Fatalf("Recent = %v, want c, a", ids(got))
	}
	if got[0].Status != Completed || string(got[0].Outcome.Output) != `{"id":"c"}` || got[0].Input != nil {
		t.Fatalf("record c = %+v", got[0])
	}
}

func ids(rs []Record) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}
