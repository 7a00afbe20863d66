package queue

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrNotDurable is Backup's answer for a queue kept in memory.
var ErrNotDurable = errors.New("the queue is in memory only: nothing to back up")

// Backup writes a consistent copy of the database to w while the queue
// runs: one read transaction's snapshot (bbolt's Tx.WriteTo), so writes
// go on meanwhile and none is half in the copy. It returns the bytes
// written.
func (q *Queue) Backup(w io.Writer) (int64, error) {
	if q.db == nil {
		return 0, ErrNotDurable
	}
	var n int64
	err := q.tx(false, func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// BackupFile writes a copy of the database at path to w when no server
// has it open (ErrInUse otherwise: a running server's queue answers
// Backup instead). A damaged database is refused, as Open refuses it.
func BackupFile(path string, w io.Writer) (int64, error) {
	l, err := lockShared(path)
	if err != nil {
		return 0, err
	}
	defer l.Close() // after bbolt's own shared lock is released
	s, err := scan(path)
	if err != nil {
		return 0, err
	}
	if len(s.rep.Problems) > 0 {
		return 0, &DamagedError{Path: path, Problems: s.rep.Problems}
	}
	var db *bolt.DB
	if err := guard(path, func() error {
		db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		return err
	}); err != nil {
		return 0, fmt.Errorf("queue database %s: %w", path, err)
	}
	defer db.Close()
	var n int64
	err = db.View(func(tx *bolt.Tx) error {
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// Restore puts the backup at from in place of the database at path, with
// no server running on it (ErrInUse otherwise). A damaged backup is
// refused and nothing changes. The database it replaces, if any, is kept
// beside it as path.replaced-<UTC time>, whose name Restore returns.
func Restore(path, from string, now time.Time) (kept string, err error) {
	rep, err := Check(from)
	if err != nil {
		return "", err
	}
	if rep.Damaged() {
		return "", &DamagedError{Path: from, Problems: append(rep.Problems, fmt.Sprintf("%d unreadable request(s)", rep.Unreadable))}
	}
	if _, err := os.Stat(path); err == nil {
		// Held until the swap is done: a server starting meanwhile waits.
		l, err := lockShared(path)
		if err != nil {
			return "", err
		}
		defer l.Close()
		kept = fmt.Sprintf("%s.replaced-%s", path, now.UTC().Format("20060102T150405Z"))
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	tmp := path + ".restoring"
	if err := copyFile(from, tmp); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if kept != "" {
		if err := os.Rename(path, kept); err != nil {
			os.Remove(tmp)
			return "", err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	return kept, syncDir(filepath.Dir(path))
}

// copyFile copies from to a new file to, synced, owner-only as bbolt
// makes its files.
func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Sync(); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
