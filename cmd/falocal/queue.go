package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/falocal/falocal/api/queue"
)

// queueCmd checks, repairs, backs up or restores the queue database,
// <data-dir>/queue.db. Backup works while a server runs; the others want it
// stopped.
func queueCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: falocal queue check|repair|backup -o FILE|restore FILE [-data-dir DIR]"
	if len(args) == 0 || !slices.Contains([]string{"check", "repair", "backup", "restore"}, args[0]) {
		return errors.New(usage)
	}
	sub := args[0]
	var out string
	c, fset, err := parse("queue "+sub, args[1:], stderr, func(fs *flag.FlagSet) {
		if sub == "backup" {
			fs.StringVar(&out, "o", "", "file to write the copy to (replaced if it exists)")
		}
	})
	if err != nil {
		return err
	}
	switch sub {
	case "backup":
		if out == "" || fset.NArg() > 0 {
			return errors.New(usage)
		}
		return queueBackup(ctx, c, out, stdout)
	case "restore":
		if fset.NArg() != 1 {
			return errors.New(usage)
		}
		return queueRestore(c, fset.Arg(0), stdout)
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

// queueBackup writes a consistent copy of the queue to out: from the
// running server through its admin socket, or from the file when no server
// runs. The copy is checked before it takes out's name.
func queueBackup(ctx context.Context, c *Config, out string, stdout io.Writer) error {
	path := filepath.Join(c.DataDir, "queue.db")
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".partial-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	n, fromServer, err := backupFromServer(ctx, c.DataDir, tmp)
	if err == nil && !fromServer {
		if _, serr := os.Stat(path); errors.Is(serr, fs.ErrNotExist) {
			tmp.Close()
			return fmt.Errorf("no queue database at %s, and no server answers on %s", path, adminSocket(c.DataDir))
		}
		n, err = queue.BackupFile(path, tmp)
		if errors.Is(err, queue.ErrInUse) {
			err = fmt.Errorf("%w, and it does not answer on %s (a server of another version, or one that could not create the socket: see its log)", err, adminSocket(c.DataDir))
		}
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	rep, err := queue.Check(tmp.Name())
	if err != nil {
		return fmt.Errorf("checking the copy: %w", err)
	}
	if rep.Damaged() {
		return fmt.Errorf("the copy is damaged (%v): nothing was written to %s", rep.Problems, out)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	from := "the stopped database " + path
	if fromServer {
		from = "the running server's queue"
	}
	fmt.Fprintf(stdout, "backed up %s to %s: %d request(s), %d bytes\n", from, out, rep.Records, n)
	return nil
}

// queueRestore puts a backup in place of <data-dir>/queue.db, with the
// server stopped, refusing a damaged backup.
func queueRestore(c *Config, from string, stdout io.Writer) error {
	path := filepath.Join(c.DataDir, "queue.db")
	if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
		return err
	}
	kept, err := queue.Restore(path, from, time.Now())
	if errors.Is(err, queue.ErrInUse) {
		return fmt.Errorf("%w: stop the server first", err)
	}
	if err != nil {
		return err
	}
	rep, err := queue.Check(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %s to %s: %d request(s)\n", from, path, rep.Records)
	if kept != "" {
		fmt.Fprintf(stdout, "the database it replaced is kept as %s\n", kept)
	}
	fmt.Fprintln(stdout, "requests that were queued or running when the backup was taken run again at the next start; output files are in <data-dir>/files, which the backup does not hold")
	return nil
}
