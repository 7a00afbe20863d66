package bundle

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/falocal/falocal/weights"
)

// InstallOptions says where a bundle's files go.
type InstallOptions struct {
	Trust ed25519.PublicKey // nil: the signature, if any, is not checked
	// CacheDir receives the runtime libraries at their paths (where setup
	// puts the CPU one) and their links; required when the bundle carries any.
	CacheDir string
	// Binary, when set, receives the bundle's falocal binary (mode 0755);
	// otherwise the binary is verified and not written.
	Binary string
}

// Result is what an install did.
type Result struct {
	Manifest *Manifest
	Signed   bool // a signature was present
	Verified bool // and the trusted key verified it
	Written  int  // files written
	Skipped  int  // blobs already in the store
}

// staged is a verified file waiting for its rename into place.
type staged struct{ tmp, dst string }

// Install reads a bundle from r and installs it. The stream is read once:
// each file is hashed while it is written to a staging folder on the
// destination's file system (the store's tmp/, a hidden folder in the cache
// directory), and only when every file has passed are they renamed into
// place, blobs first and the model manifests last, so a failure at any point
// before that leaves the store and cache directory as they were and names
// the file that failed.
func Install(r io.Reader, store *weights.Store, o InstallOptions) (_ *Result, err error) {
	b, err := Open(r, o.Trust)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	m := b.Manifest
	res := &Result{Manifest: m, Signed: b.Signature != nil, Verified: o.Trust != nil}
	if m.NeedsPlatform() && (m.GOOS != runtime.GOOS || m.GOARCH != runtime.GOARCH) {
		return nil, fmt.Errorf("bundle carries runtime libraries or a binary for %s/%s; this machine is %s/%s",
			m.GOOS, m.GOARCH, runtime.GOOS, runtime.GOARCH)
	}
	if len(m.Runtime) > 0 && o.CacheDir == "" {
		return nil, errors.New("bundle carries runtime libraries but no cache directory was given")
	}

	storeTmp, err := store.TempDir()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(storeTmp)
	var cacheTmp string
	if len(m.Runtime) > 0 {
		// The cache directory may not exist yet; what this install makes of
		// it goes again if the install fails.
		made := missingDirs(o.CacheDir)
		defer func() {
			if err != nil {
				for _, d := range made {
					os.Remove(d)
				}
			}
		}()
		if err = os.MkdirAll(o.CacheDir, 0o755); err != nil {
			return nil, err
		}
		if cacheTmp, err = os.MkdirTemp(o.CacheDir, ".bundle-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(cacheTmp)
	}

	var blobs, others []staged
	n := 0
	err = b.Each(func(e Entry, r io.Reader) error {
		n++
		if sm := blobMember.FindStringSubmatch(e.Path); sm != nil {
			if st, err := os.Stat(store.BlobPath(sm[1])); err == nil && st.Size() == e.Size {
				res.Skipped++
				return nil // Each still hashes the member: a tampered bundle fails even here
			}
			tmp := filepath.Join(storeTmp, fmt.Sprint(n))
			blobs = append(blobs, staged{tmp, sm[1]})
			return writeFile(tmp, r, 0o644, e.Path+m.owner(e.Path))
		}
		var dst, dir string
		mode := os.FileMode(0o644)
		switch {
		case e.Path == BinaryName:
			if o.Binary == "" {
				return nil
			}
			dst, dir, mode = o.Binary, storeTmp, 0o755
		default: // runtime/<path>, checked by Manifest.check
			dst, dir, mode = filepath.Join(o.CacheDir, filepath.FromSlash(e.Path[len("runtime/"):])), cacheTmp, 0o755
		}
		tmp := filepath.Join(dir, fmt.Sprint(n))
		others = append(others, staged{tmp, dst})
		return writeFile(tmp, r, mode, e.Path)
	})
	if err != nil {
		return nil, err
	}
	// The links are staged too, so that making one cannot fail after the
	// first file has moved.
	var links []staged
	for _, r := range m.Runtime {
		for _, l := range r.Links {
			tmp := filepath.Join(cacheTmp, fmt.Sprintf("link-%d", len(links)))
			if err := os.Symlink(l.Target, tmp); err != nil {
				return nil, err
			}
			links = append(links, staged{tmp, filepath.Join(o.CacheDir, filepath.FromSlash(l.Path))})
		}
	}

	// Every file has passed: move them into place. AddBlob hashes the staged
	// file once more, so what lands in blobs/ is what is on the disk now.
	for _, s := range blobs {
		if _, err := store.AddBlob(s.tmp, "bundle", s.dst, "", s.dst); err != nil {
			return nil, err
		}
		res.Written++
	}
	for _, s := range others {
		if err := os.MkdirAll(filepath.Dir(s.dst), 0o755); err != nil {
			return nil, err
		}
		if err := os.Rename(s.tmp, s.dst); err != nil {
			// the binary may go to another file system than the store's
			if err := copyInto(s.tmp, s.dst); err != nil {
				return nil, err
			}
		}
		res.Written++
	}
	// after the files, so that no link dangles at any moment
	for _, s := range links {
		if err := os.Rename(s.tmp, s.dst); err != nil {
			return nil, err
		}
	}
	now := time.Now().UTC()
	for _, man := range m.Models {
		man.InstalledAt = now
		if err := store.Put(man); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// writeFile writes r to p and syncs it; a full disk is named as such.
func writeFile(p string, r io.Reader, mode os.FileMode, member string) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, ErrStream) {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("no space left on the device while writing %s into %s", member, filepath.Dir(p))
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", member, err)
	}
	return nil
}

func copyInto(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	tmp := dst + ".partial"
	if err := writeFile(tmp, in, st.Mode().Perm(), filepath.Base(dst)); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

// missingDirs lists dir and those of its parents that do not exist, the
// deepest first.
func missingDirs(dir string) []string {
	var out []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || filepath.Dir(d) == d {
			return out
		}
		out = append(out, d)
	}
}
