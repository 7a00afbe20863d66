// Package files stores the files the server hands out (outputs, later
// uploads) under the data directory and finds them again by id.
package files

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// ErrNotFound reports an unknown or expired file.
var ErrNotFound = errors.New("file not found")

// ErrTooLarge is wrapped by Read when a file is over the caller's limit.
var ErrTooLarge = errors.New("file too large")

// Meta describes a stored file.
type Meta struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	ContentType string    `json:"content_type"`
	Size        int64     `json:"size"`
	Created     time.Time `json:"created"`
}

// Store keeps each file as <dir>/<id>.bin with <dir>/<id>.json beside it.
type Store struct{ dir string }

// Open opens (creating) a store in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &Store{dir: dir}, nil
}

var (
	validID   = regexp.MustCompile(`^[0-9a-f]{32}$`)
	nameClean = regexp.MustCompile(`[^A-Za-z0-9._-]+`)
)

// CleanName makes a file name safe to put in a URL path and on disk.
func CleanName(name string) string {
	name = filepath.Base(strings.ReplaceAll(name, "\\", "/"))
	name = nameClean.ReplaceAllString(name, "_")
	// Shorten before trimming, so that the result is already clean (a cut
	// that exposes a leading '.' or '_' must not survive: serveFile compares
	// names exactly).
	if len(name) > 100 {
		name = name[len(name)-100:]
	}
	name = strings.Trim(name, "._")
	if name == "" {
		name = "file"
	}
	return name
}

// Put stores data and returns its metadata.
func (s *Store) Put(data []byte, contentType, name string) (Meta, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Meta{}, err
	}
	m := Meta{ID: hex.EncodeToString(b[:]), Name: CleanName(name), ContentType: contentType,
		Size: int64(len(data)), Created: time.Now().UTC()}
	if m.ContentType == "" {
		m.ContentType = "application/octet-stream"
	}
	if err := writeAtomic(filepath.Join(s.dir, m.ID+".bin"), data); err != nil {
		return Meta{}, err
	}
	js, _ := json.Marshal(m)
	if err := writeAtomic(filepath.Join(s.dir, m.ID+".json"), js); err != nil {
		os.Remove(filepath.Join(s.dir, m.ID+".bin"))
		return Meta{}, err
	}
	return m, nil
}

// Get returns a file's metadata and the path of its bytes.
func (s *Store) Get(id string) (Meta, string, error) {
	var m Meta
	if !validID.MatchString(id) {
		return m, "", ErrNotFound
	}
	js, err := os.ReadFile(filepath.Join(s.dir, id+".json"))
	if err != nil {
		return m, "", ErrNotFound
	}
	if err := json.Unmarshal(js, &m); err != nil {
		return m, "", fmt.Errorf("file %s: %w", id, err)
	}
	return m, filepath.Join(s.dir, id+".bin"), nil
}

// Read returns a file's metadata and bytes, refusing files over limit bytes.
func (s *Store) Read(id string, limit int64) (Meta, []byte, error) {
	m, p, err := s.Get(id)
	if err != nil {
		return m, nil, err
	}
	if limit > 0 && m.Size > limit {
		return m, nil, fmt.Errorf("file %s has %d bytes, over the %d byte limit: %w", id, m.Size, limit, ErrTooLarge)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return m, nil, ErrNotFound
	}
	return m, data, nil
}

// Sweep deletes files created before cutoff and returns how many went.
func (s *Store) Sweep(cutoff time.Time) (int, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		name := e.Name()
		id, ok := strings.CutSuffix(name, ".json")
		if !ok {
			// A .bin or .partial without metadata is a leftover of a crash;
			// anything else in the directory is not ours to delete.
			if !strings.HasSuffix(name, ".bin") && !strings.HasSuffix(name, ".partial") {
				continue
			}
			if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
				base := strings.TrimSuffix(strings.TrimSuffix(name, ".partial"), ".bin")
				if _, err := os.Stat(filepath.Join(s.dir, base+".json")); err != nil {
					os.Remove(filepath.Join(s.dir, name))
				}
			}
			continue
		}
		m, _, err := s.Get(id)
		if err != nil || m.Created.Before(cutoff) {
			os.Remove(filepath.Join(s.dir, id+".bin"))
			os.Remove(filepath.Join(s.dir, id+".json"))
			n++
		}
	}
	return n, nil
}

func writeAtomic(p string, data []byte) error {
	tmp := p + ".partial"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, p)
}
