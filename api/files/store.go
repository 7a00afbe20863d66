package files

import (
	"bytes"
	"fmt"
	"io"
	"time"
)

// Backend is where a Store keeps its files: Local (a directory) or S3 (a
// bucket that several servers can share).
type Backend interface {
	// PutReader streams r into the file id (from NewID; "" makes a new
	// one) and returns its metadata. The file becomes visible only once
	// all of it is stored. With limit > 0, a stream of more than limit
	// bytes fails with ErrTooLarge and stores nothing. An id that already
	// holds a file fails with ErrExists.
	PutReader(id string, r io.Reader, contentType, name string, limit int64) (Meta, error)
	// Stat returns a file's metadata, or ErrNotFound.
	Stat(id string) (Meta, error)
	// Open returns a file's metadata and its bytes, which the caller
	// closes; or ErrNotFound.
	Open(id string) (Meta, io.ReadSeekCloser, error)
	// Delete removes a file (no error when it is already gone).
	Delete(id string) error
	// Sweep deletes the files created before cutoff, and the parts of
	// uploads idle since then, and returns how many files went.
	Sweep(cutoff time.Time) (int, error)

	// PutPart stores part n (1..MaxParts) of the multipart upload of
	// file id. Each version of a part is kept under its etag, so a retried
	// or concurrent upload of the same part never corrupts the version
	// another caller was told about. With limit > 0, more than limit bytes
	// fail with ErrTooLarge.
	PutPart(id string, n int, r io.Reader, limit int64) (Part, error)
	// RemovePart deletes one stored version of a part.
	RemovePart(id string, p Part) error
	// AssembleParts stores the given parts, in the order given, as the
	// file id (as PutReader does, limit included) and then drops all of
	// the upload's parts. A part never stored with that number and etag
	// fails with ErrPartNotFound before anything is written.
	AssembleParts(id string, parts []Part, contentType, name string, limit int64) (Meta, error)
	// DropParts deletes every stored part of the upload of file id.
	DropParts(id string) error
	// SweepParts deletes the parts of uploads idle since cutoff, except
	// those keep reports as live, and returns how many uploads went.
	SweepParts(cutoff time.Time, keep func(id string) bool) (int, error)
	// ListParts lists every stored version of the upload's parts, so that
	// a server can complete an upload whose parts other servers received.
	ListParts(id string) ([]Part, error)
	// PutUploadInfo stores a small record about the upload of file id (its
	// session, for the other servers sharing the store), replacing any. It
	// lives with the parts: writing it keeps the upload from being swept,
	// and DropParts and SweepParts delete it.
	PutUploadInfo(id string, data []byte) error
	// UploadInfo returns that record, or ErrNotFound.
	UploadInfo(id string) ([]byte, error)
}

// Store is the file store the API uses: a Backend and, for a local one, a
// guard of the disk's free space.
type Store struct {
	Backend
	// Space, when set, is the free-space floor the API checks before it
	// accepts an upload or a request (set it before serving; it guards a
	// local directory only).
	Space *SpaceGuard
}

// Put stores data and returns its metadata.
func (s *Store) Put(data []byte, contentType, name string) (Meta, error) {
	return s.PutReader("", bytes.NewReader(data), contentType, name, 0)
}

// Read returns a file's metadata and bytes, refusing files over limit bytes
// (limit <= 0: any size).
func (s *Store) Read(id string, limit int64) (Meta, []byte, error) {
	m, f, err := s.Open(id)
	if err != nil {
		return m, nil, err
	}
	defer f.Close()
	if limit > 0 && m.Size > limit {
		return m, nil, fmt.Errorf("file %s has %d bytes, over the %d byte limit: %w", id, m.Size, limit, ErrTooLarge)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return m, nil, fmt.Errorf("file %s: %w", id, err)
	}
	return m, data, nil
}
