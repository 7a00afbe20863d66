// Package fetch downloads pinned registry artifacts (npm tarballs, PyPI wheels)
// into a local cache and verifies them by SHA-256 before anything uses them.
package fetch

import (
	"archive/tar"
	"archive/zip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
)

// Artifact is one pinned file on a package registry.
type Artifact struct {
	Name   string // file name in the cache
	URL    string
	SHA256 string
	Size   int64 // 0 = unknown
}

// ErrChecksum reports content whose SHA-256 differs from the pinned value.
var ErrChecksum = errors.New("checksum mismatch")

// Client fetches artifacts into Dir.
type Client struct {
	Dir  string
	HTTP *http.Client
	// Log, when set, receives one line per download.
	Log func(msg string, args ...any)
	// NPMRegistry, when set, replaces DefaultNPMRegistry in artifact URLs
	// (a mirror).
	NPMRegistry string
	// Progress, when set, is told of each download attempt: it is given
	// the artifact and the expected bytes (0 = unknown), and the Tracker it
	// returns receives the bytes as they arrive and the attempt's outcome.
	Progress func(a Artifact, total int64) Tracker
}

// Tracker follows one download attempt.
type Tracker interface {
	io.Writer // the downloaded bytes, in order; it must not fail
	// Done ends the attempt: err is nil when the file arrived and verified.
	Done(err error)
}

// DefaultNPMRegistry is the public npm registry that artifact URLs name.
const DefaultNPMRegistry = "https://registry.npmjs.org"

// Get returns the path of the verified artifact in the cache, downloading it
// when it is missing. A cached file that fails its checksum is replaced.
func (c *Client) Get(ctx context.Context, a Artifact) (string, error) {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return "", err
	}
	dst := filepath.Join(c.Dir, a.Name)
	if err := VerifyFile(dst, a.SHA256); err == nil {
		return dst, nil
	}
	if c.NPMRegistry != "" && c.NPMRegistry != DefaultNPMRegistry {
		if rest, ok := strings.CutPrefix(a.URL, DefaultNPMRegistry); ok {
			a.URL = strings.TrimSuffix(c.NPMRegistry, "/") + rest
		}
	}
	if c.Log != nil {
		c.Log("downloading", "url", a.URL, "bytes", a.Size)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Minute}
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(time.Duration(attempt) * 2 * time.Second):
			}
		}
		lastErr = c.download(ctx, hc, a, dst)
		var pe permanent
		if lastErr == nil || errors.Is(lastErr, ErrChecksum) || errors.As(lastErr, &pe) || ctx.Err() != nil {
			break
		}
	}
	if lastErr != nil {
		return "", fmt.Errorf("fetch %s: %w", a.URL, lastErr)
	}
	return dst, nil
}

func (c *Client) download(ctx context.Context, hc *http.Client, a Artifact, dst string) (err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		return permanent{fmt.Errorf("HTTP %s", resp.Status)}
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	tmp := dst + ".partial"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	h := sha256.New()
	w := io.MultiWriter(f, h)
	if c.Progress != nil {
		total := resp.ContentLength
		if total <= 0 {
			total = a.Size
		}
		t := c.Progress(a, total)
		defer func() { t.Done(err) }()
		w = io.MultiWriter(f, h, t)
	}
	_, err = io.Copy(w, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != a.SHA256 {
		os.Remove(tmp)
		return fmt.Errorf("%w: %s has sha256 %s, want %s", ErrChecksum, a.URL, got, a.SHA256)
	}
	return os.Rename(tmp, dst)
}

// permanent marks an error that a retry cannot fix (a 4xx answer).
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// VerifyFile checks that the file at p has the given SHA-256.
func VerifyFile(p, want string) error {
	got, _, err := HashFile(p)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%w: %s has sha256 %s, want %s", ErrChecksum, p, got, want)
	}
	return nil
}

// HashFile returns the hex SHA-256 and size of a file.
func HashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// TarGzEach calls fn for every regular file in a .tar.gz archive whose
// cleaned name matches one of the wanted names (all files when want is nil).
func TarGzEach(archive string, want func(name string) bool, fn func(name string, r io.Reader) error) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", archive, err)
	}
	defer zr.Close()
	if err := tarEach(zr, want, fn); err != nil {
		return fmt.Errorf("%s: %w", archive, err)
	}
	return nil
}

// tarEach is the member loop shared by the .tar.gz and .deb readers.
func tarEach(r io.Reader, want func(name string) bool, fn func(name string, r io.Reader) error) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		name := path.Clean(hdr.Name)
		if want != nil && !want(name) {
			continue
		}
		if err := fn(name, tr); err != nil {
			return err
		}
	}
}

// ExtractTarGz copies the archive members named in files (member → destination
// path) out of a .tar.gz archive and fails if any is missing.
func ExtractTarGz(archive string, files map[string]string) error {
	found := map[string]bool{}
	err := TarGzEach(archive, func(n string) bool { _, ok := files[n]; return ok }, func(n string, r io.Reader) error {
		found[n] = true
		return writeFile(files[n], r)
	})
	if err != nil {
		return err
	}
	return missing(archive, files, found)
}

// ExtractZip is ExtractTarGz for zip archives (wheels).
func ExtractZip(archive string, files map[string]string) error {
	zr, err := zip.OpenReader(archive)
	if err != nil {
		return err
	}
	defer zr.Close()
	found := map[string]bool{}
	for _, zf := range zr.File {
		dst, ok := files[zf.Name]
		if !ok {
			continue
		}
		r, err := zf.Open()
		if err != nil {
			return err
		}
		err = writeFile(dst, r)
		r.Close()
		if err != nil {
			return err
		}
		found[zf.Name] = true
	}
	return missing(archive, files, found)
}

func missing(archive string, files map[string]string, found map[string]bool) error {
	var miss []string
	for n := range files {
		if !found[n] {
			miss = append(miss, n)
		}
	}
	if len(miss) > 0 {
		return fmt.Errorf("%s lacks %s", archive, strings.Join(miss, ", "))
	}
	return nil
}

func writeFile(dst string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".partial"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}
