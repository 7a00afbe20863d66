// Package weights owns the local model store: content-addressed blobs
// (blobs/sha256-<hex>) plus one JSON manifest per model (manifests/<name>.json).
// Nothing is loaded from a blob whose size or SHA-256 differs from its manifest.
package weights

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/falocal/falocal/internal/fetch"
)

// File is one file of a model.
type File struct {
	Role   string `json:"role"` // e.g. "model"
	Name   string `json:"name"` // original file name
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	DType  string `json:"dtype"` // weight storage type: fp32, fp16, uint8
}

// Manifest describes an installed model.
type Manifest struct {
	Name        string            `json:"name"`
	Pipeline    string            `json:"pipeline"` // which pipeline can run it, e.g. "rembg"
	Description string            `json:"description,omitempty"`
	Files       []File            `json:"files"`
	MemoryBytes int64             `json:"memory_bytes"` // estimated resident memory while loaded
	Serves      []string          `json:"serves,omitempty"`
	Params      map[string]string `json:"params,omitempty"` // pipeline-specific settings (input size, normalisation)
	Source      string            `json:"source,omitempty"`
	InstalledAt time.Time         `json:"installed_at"`
}

// ErrNotInstalled reports a model without a manifest.
var ErrNotInstalled = errors.New("model not installed")

// ErrCorrupt reports a blob that does not match its manifest.
var ErrCorrupt = errors.New("model file failed verification")

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$`)

// Store is a model store rooted at a data directory.
type Store struct {
	dir string

	mu       sync.Mutex
	verified map[string]stamp // blob path → what it looked like when last verified
}

type stamp struct {
	size  int64
	mtime time.Time
}

// Open opens (creating if needed) the store under dir. A relative dir is
// made absolute: the links Materialize makes point at blobs by path, and a
// relative target would resolve against the link's own folder.
func Open(dir string) (*Store, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"blobs", "manifests", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	return &Store{dir: dir, verified: map[string]stamp{}}, nil
}

// Dir returns the store's root.
func (s *Store) Dir() string { return s.dir }

// TempDir returns a scratch directory on the store's file system, so that
// finished files can be renamed into blobs without copying.
func (s *Store) TempDir() (string, error) {
	return os.MkdirTemp(filepath.Join(s.dir, "tmp"), "install-")
}

// BlobPath is where the store keeps the blob with SHA-256 sum.
func (s *Store) BlobPath(sum string) string { return filepath.Join(s.dir, "blobs", "sha256-"+sum) }

// AddBlob moves the file at src into the store and returns its entry. When
// wantSHA is not empty the file must hash to it.
func (s *Store) AddBlob(src, role, name, dtype, wantSHA string) (File, error) {
	sum, size, err := fetch.HashFile(src)
	if err != nil {
		return File{}, err
	}
	if wantSHA != "" && sum != wantSHA {
		return File{}, fmt.Errorf("%w: %s has sha256 %s, want %s", ErrCorrupt, name, sum, wantSHA)
	}
	dst := s.BlobPath(sum)
	if _, err := os.Stat(dst); err != nil {
		if err := os.Rename(src, dst); err != nil {
			if err := copyFile(src, dst); err != nil {
				return File{}, err
			}
		}
	}
	return File{Role: role, Name: name, SHA256: sum, Size: size, DType: dtype}, nil
}

// Put writes a manifest, replacing any previous one of the same name.
func (s *Store) Put(m Manifest) error {
	if !validName.MatchString(m.Name) {
		return fmt.Errorf("invalid model name %q", m.Name)
	}
	for _, f := range m.Files {
		if _, err := os.Stat(s.BlobPath(f.SHA256)); err != nil {
			return fmt.Errorf("manifest %s: blob for %s missing: %w", m.Name, f.Name, err)
		}
	}
	if m.InstalledAt.IsZero() {
		m.InstalledAt = time.Now().UTC()
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(s.dir, "manifests", m.Name+".json")
	tmp := p + ".partial"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// Get reads one manifest.
func (s *Store) Get(name string) (Manifest, error) {
	var m Manifest
	if !validName.MatchString(name) {
		return m, fmt.Errorf("%w: %q", ErrNotInstalled, name)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, "manifests", name+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return m, fmt.Errorf("%w: %s", ErrNotInstalled, name)
	}
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("manifest %s: %w", name, err)
	}
	return m, nil
}

// List returns every installed manifest, sorted by name.
func (s *Store) List() ([]Manifest, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "manifests"))
	if err != nil {
		return nil, err
	}
	var out []Manifest
	for _, e := range ents {
		n := e.Name()
		if filepath.Ext(n) != ".json" {
			continue
		}
		m, err := s.Get(n[:len(n)-len(".json")])
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Path returns the verified path of a model's file with the given role. The
// blob is hashed the first time (and again whenever its size or mtime
// changes), so a corrupted or replaced file is refused rather than loaded.
func (s *Store) Path(m Manifest, role string) (string, error) {
	for _, f := range m.Files {
		if f.Role != role {
			continue
		}
		p := s.BlobPath(f.SHA256)
		st, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("%w: %s/%s: %v", ErrCorrupt, m.Name, f.Name, err)
		}
		cur := stamp{st.Size(), st.ModTime()}
		s.mu.Lock()
		ok := s.verified[p] == cur
		s.mu.Unlock()
		if !ok {
			if err := s.verifyFile(m, f); err != nil {
				return "", err
			}
			s.mu.Lock()
			s.verified[p] = cur
			s.mu.Unlock()
		}
		return p, nil
	}
	return "", fmt.Errorf("model %s has no %q file", m.Name, role)
}

func (s *Store) verifyFile(m Manifest, f File) error {
	sum, size, err := fetch.HashFile(s.BlobPath(f.SHA256))
	if err != nil {
		return fmt.Errorf("%w: %s/%s: %v", ErrCorrupt, m.Name, f.Name, err)
	}
	if size != f.Size || sum != f.SHA256 {
		return fmt.Errorf("%w: %s/%s has %d bytes, sha256 %s; manifest says %d bytes, sha256 %s (reinstall it with 'weights install %s')",
			ErrCorrupt, m.Name, f.Name, size, sum, f.Size, f.SHA256, m.Name)
	}
	return nil
}

// Verify re-hashes every file of a model.
func (s *Store) Verify(name string) error {
	m, err := s.Get(name)
	if err != nil {
		return err
	}
	for _, f := range m.Files {
		if err := s.verifyFile(m, f); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes a manifest and the blobs no other manifest uses.
func (s *Store) Remove(name string) error {
	if _, err := s.Get(name); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(s.dir, "manifests", name+".json")); err != nil {
		return err
	}
	return s.GC()
}

// GC deletes blobs that no manifest references.
func (s *Store) GC() error {
	all, err := s.List()
	if err != nil {
		return err
	}
	used := map[string]bool{}
	for _, m := range all {
		for _, f := range m.Files {
			used["sha256-"+f.SHA256] = true
		}
	}
	ents, err := os.ReadDir(filepath.Join(s.dir, "blobs"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !used[e.Name()] {
			if err := os.Remove(filepath.Join(s.dir, "blobs", e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".partial"
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

// AddDir copies every regular file under dir into the store, each with its
// slash-separated path relative to dir as its name and role: the layout of
// multi-file exports such as optimum's Whisper (encoder_model.onnx,
// config.json, vocab.json, ...) or diffusers' (unet/model.onnx,
// tokenizer/vocab.json, ...). Hidden files and directories are skipped.
func (s *Store) AddDir(dir, dtype string) ([]File, error) {
	return s.AddDirWith(dir, dtype, nil)
}

// AddDirWith is AddDir with a step that may rewrite each copied file (by
// its name in the export) before it is hashed into the store.
func (s *Store) AddDirWith(dir, dtype string, prepare func(name, path string) error) ([]File, error) {
	tmp, err := s.TempDir()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	var files []File
	add := func(p, name string) error {
		cp := filepath.Join(tmp, fmt.Sprint(len(files)))
		if err := copyFile(p, cp); err != nil {
			return err
		}
		if prepare != nil {
			if err := prepare(name, cp); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		f, err := s.AddBlob(cp, name, name, dtype, "")
		if err != nil {
			return err
		}
		files = append(files, f)
		return nil
	}
	// Links count as what they point to: a linked file as the file (test
	// data shares identical files this way), a linked folder as the folder
	// (a component linked in from another export), under the link's name
	// (two links to one folder import it twice, which the content-addressed
	// blobs make free). A link to a folder being walked, or one above it,
	// would never end: it is refused before it is followed.
	var walking []string // real paths of the folders being walked, outermost first
	var walk func(root, prefix string) error
	walk = func(root, prefix string) error {
		real, err := filepath.EvalSymlinks(root)
		if err != nil {
			return err
		}
		if real, err = filepath.Abs(real); err != nil {
			return err
		}
		for _, w := range walking {
			if w == real || strings.HasPrefix(w, strings.TrimSuffix(real, string(filepath.Separator))+string(filepath.Separator)) {
				return fmt.Errorf("%s: a link leads back into a folder being imported (%s)", root, real)
			}
		}
		walking = append(walking, real)
		defer func() { walking = walking[:len(walking)-1] }()
		return filepath.WalkDir(real, func(p string, e os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if strings.HasPrefix(e.Name(), ".") && p != real {
				if e.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			rel, err := filepath.Rel(real, p)
			if err != nil {
				return err
			}
			name := path.Join(prefix, filepath.ToSlash(rel))
			if e.Type()&os.ModeSymlink != 0 {
				st, err := os.Stat(p)
				switch {
				case err != nil || (!st.IsDir() && !st.Mode().IsRegular()):
					return nil // dangling, or no file
				case st.IsDir():
					return walk(p, name)
				}
			} else if !e.Type().IsRegular() {
				return nil
			}
			return add(p, name)
		})
	}
	if err := walk(dir, ""); err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s holds no files", dir)
	}
	return files, nil
}

// safeRel reports whether name is a relative slash path that stays inside
// its directory.
func safeRel(name string) bool {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") {
		return false
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return false
		}
	}
	return true
}

// Materialize verifies every file of a model and links it under its original
// name in models/<name>/, returning that directory. ONNX files that keep
// their weights in external data files find them there by name, which the
// content-addressed blobs alone cannot offer.
func (s *Store) Materialize(m Manifest) (string, error) {
	if !validName.MatchString(m.Name) {
		return "", fmt.Errorf("invalid model name %q", m.Name)
	}
	dir := filepath.Join(s.dir, "models", m.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, f := range m.Files {
		if !safeRel(f.Name) {
			return "", fmt.Errorf("model %s: bad file name %q", m.Name, f.Name)
		}
		blob, err := s.Path(m, f.Role)
		if err != nil {
			return "", err
		}
		link := filepath.Join(dir, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return "", err
		}
		if cur, err := os.Readlink(link); err == nil && cur == blob {
			continue
		}
		os.Remove(link)
		if err := os.Symlink(blob, link); err != nil {
			return "", err
		}
	}
	return dir, nil
}
