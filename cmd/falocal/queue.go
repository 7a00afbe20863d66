package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/falocal/falocal/api/queue"
)

// queueCmd checks or repairs the queue database, <data-dir>/queue.db, with
// no server running on it.
func queueCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: falocal queue check|repair [-data-dir DIR]"
	if len(args) == 0 || (args[0] != "check" && args[0] != "repair") {
		return errors.New(usage)
	}
	sub := args[0]
	c, fset, err := parse("queue "+sub, args[1:], stderr, nil)
	if err != nil {
		return err
	}
	if fset.NArg() > 0 {
		return fmt.Errorf("queue %s: unexpected argument %q (%s)", sub, fset.Arg(0), usage)
	}
	path := filepath.Join(c.DataDir, "queue.db")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no queue database at %s (a server creates it when it first starts)", path)
	}
	rep, err := queue.Check(path)
	if err != nil {
		return err
	}
	printReport(stdout, rep)
	if sub == "check" {
		if rep.Damaged() {
			return fmt.Errorf("%s is damaged: 'falocal queue repair' copies the %d readable request(s) into a new %s and keeps the damaged file beside it",
				path, rep.Records, filepath.Base(path))
		}
		fmt.Fprintln(stdout, "the database is sound")
		return nil
	}
	if !rep.Damaged() {
		fmt.Fprintln(stdout, "the database is sound: nothing to repair")
		return nil
	}
	r, err := queue.Repair(path, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "repaired: %d request(s) copied into a new %s", r.Copied, path)
	if r.InputLost > 0 {
		fmt.Fprintf(stdout, " (%d without their input: unfinished ones among them completed with an error)", r.InputLost)
	}
	fmt.Fprintf(stdout, "\nthe damaged file is kept as %s\n", r.Kept)
	return nil
}

func printReport(w io.Writer, r *queue.Report) {
	fmt.Fprintf(w, "queue database %s: %d bytes", r.Path, r.Size)
	if r.PageSize > 0 {
		fmt.Fprintf(w, ", page size %d", r.PageSize)
	}
	fmt.Fprintf(w, "\nreadable requests: %d", r.Records)
	if r.Found > 0 {
		fmt.Fprintf(w, " (%d of them found in pages the damaged tree no longer leads to)", r.Found)
	}
	if r.Unsure > 0 {
		fmt.Fprintf(w, "\n  %d of those are unfinished and were found while the freelist was lost too: each may be an old version of a request that has finished since; repaired, they run again", r.Unsure)
	}
	fmt.Fprintf(w, "\nreadable inputs: %d\nunreadable requests: %d\n", r.Inputs, r.Unreadable)
	if len(r.Problems) > 0 {
		fmt.Fprintln(w, "damage:")
		for _, p := range r.Problems {
			fmt.Fprintln(w, "  -", p)
		}
	}
}
