// Package bundle owns falocal's offline bundles: one zstd-compressed tar
// stream that carries models (their store manifests and content-addressed
// blobs), optionally the ONNX Runtime library and the falocal binary, to a
// machine with no network, where it is verified and installed into the store.
//
// Layout of the tar stream, in order:
//
//	MANIFEST.json          the Manifest: format version, creation time, platform,
//	                       every file that follows with its size and SHA-256,
//	                       the models' store manifests, the runtime libraries
//	MANIFEST.sig           optional: the Ed25519 signature of MANIFEST.json's bytes
//	blobs/sha256-<hex>     model files, named as the store names them
//	runtime/<path>         runtime libraries, <path> relative to the cache directory
//	bin/falocal            optional: the binary that made the bundle
//
// The manifest lists every hash, so signing its bytes covers everything.
package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/falocal/falocal/internal/fetch"
	"github.com/falocal/falocal/weights"
)

// Format is the version of the layout this package writes and reads.
const Format = 1

// Member names of the head of the stream.
const (
	ManifestName  = "MANIFEST.json"
	SignatureName = "MANIFEST.sig"
	BinaryName    = "bin/falocal"
)

// maxManifest bounds what is read into memory before anything is verified.
const maxManifest = 64 << 20

// Manifest is the first member of a bundle.
type Manifest struct {
	Format         int                `json:"format"`
	Created        time.Time          `json:"created"`
	FalocalVersion string             `json:"falocal_version"`
	GOOS           string             `json:"goos"`
	GOARCH         string             `json:"goarch"`
	Models         []weights.Manifest `json:"models"`
	Runtime        []Runtime          `json:"runtime,omitempty"`
	Binary         string             `json:"binary,omitempty"` // BinaryName when the binary is included
	Files          []Entry            `json:"files"`            // every member after the head, in stream order
}

// Runtime is a runtime library carried by the bundle.
type Runtime struct {
	// "cpu": the pinned build setup installs; "cuda": the connecting site's
	// own GPU build, which no pin covers (its files' hashes are all there is)
	Kind    string `json:"kind"`
	Version string `json:"version"`
	Path    string `json:"path"` // the library to load, slash path relative to the cache directory
	// Libs are further files installed beside Path: ORT loads its
	// provider libraries from the directory of the library it runs.
	Libs  []string `json:"libs,omitempty"`
	Links []Link   `json:"links,omitempty"`
}

// Link is a symbolic link made at install beside a runtime's files, as the
// source directory had it (the soname links: libonnxruntime.so.1 → …).
type Link struct {
	Path   string `json:"path"`   // slash path relative to the cache directory
	Target string `json:"target"` // a file of the same runtime, by its name in that directory
}

// Files lists the runtime's files: Path, then Libs.
func (r Runtime) Files() []string { return append([]string{r.Path}, r.Libs...) }

// Entry is one member of the bundle after its head.
type Entry struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Size is the total of the files' sizes.
func (m *Manifest) Size() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// NeedsPlatform reports whether the bundle holds platform-specific files
// (runtime libraries, the binary), which only install on its GOOS/GOARCH.
func (m *Manifest) NeedsPlatform() bool { return len(m.Runtime) > 0 || m.Binary != "" }

// RuntimeFile is a runtime library to put in a bundle.
type RuntimeFile struct {
	Runtime
	Src     string   // the file on this machine for Path
	LibSrcs []string // the files for Libs, in order
}

// CreateOptions says what goes in a bundle.
type CreateOptions struct {
	Store          *weights.Store
	Models         []weights.Manifest
	Runtime        []RuntimeFile
	Binary         string // path of the falocal binary to include; "" for none
	FalocalVersion string
	Sign           ed25519.PrivateKey // nil: unsigned
	Now            time.Time
}

var blobMember = regexp.MustCompile(`^blobs/sha256-([0-9a-f]{64})$`)

// modelName is weights.Store's rule for model names.
var modelName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$`)

// Create writes a bundle to w. Every file is hashed before the manifest is
// written (the manifest comes first and lists the hashes) and hashed again
// while it is copied, so a file that changes in between fails the bundle
// rather than shipping a hash that does not match.
func Create(w io.Writer, o CreateOptions) (*Manifest, error) {
	m := &Manifest{Format: Format, Created: o.Now.UTC(), FalocalVersion: o.FalocalVersion,
		GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, Models: []weights.Manifest{}, Files: []Entry{}}
	if m.Created.IsZero() {
		m.Created = time.Now().UTC()
	}
	srcs := map[string]string{} // member → file on disk
	add := func(member, src, sum string, size int64) {
		if _, dup := srcs[member]; dup {
			return // a blob shared by two models travels once
		}
		srcs[member] = src
		m.Files = append(m.Files, Entry{Path: member, Size: size, SHA256: sum})
	}
	for _, man := range o.Models {
		// The store's own check: a corrupt source blob is refused here, not
		// at the far end of the gap.
		if err := o.Store.Verify(man.Name); err != nil {
			return nil, err
		}
		for _, f := range man.Files {
			add("blobs/sha256-"+f.SHA256, o.Store.BlobPath(f.SHA256), f.SHA256, f.Size)
		}
		man.InstalledAt = time.Time{}
		m.Models = append(m.Models, man)
	}
	for _, r := range o.Runtime {
		if len(r.LibSrcs) != len(r.Libs) {
			return nil, fmt.Errorf("runtime %s: %d libraries, %d source files", r.Kind, len(r.Libs), len(r.LibSrcs))
		}
		if err := r.check(nil); err != nil {
			return nil, err
		}
		srcs := append([]string{r.Src}, r.LibSrcs...)
		for i, p := range r.Files() {
			sum, size, err := fetch.HashFile(srcs[i])
			if err != nil {
				return nil, err
			}
			add("runtime/"+p, srcs[i], sum, size)
		}
		m.Runtime = append(m.Runtime, r.Runtime)
	}
	if o.Binary != "" {
		sum, size, err := fetch.HashFile(o.Binary)
		if err != nil {
			return nil, err
		}
		add(BinaryName, o.Binary, sum, size)
		m.Binary = BinaryName
	}
	head, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}

	// The default level and 8 MiB window: on the 915 MB default store, a
	// 128 MiB window (long-distance matching) saved 0.02% and
	// SpeedBetterCompression 4% at four times the time.
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	put := func(name string, size int64, r io.Reader) error {
		hdr := &tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: m.Created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := io.CopyN(tw, r, size)
		return err
	}
	if err := put(ManifestName, int64(len(head)), bytes.NewReader(head)); err != nil {
		return nil, err
	}
	if o.Sign != nil {
		sig := ed25519.Sign(o.Sign, head)
		if err := put(SignatureName, int64(len(sig)), bytes.NewReader(sig)); err != nil {
			return nil, err
		}
	}
	for _, e := range m.Files {
		if err := copyMember(put, e, srcs[e.Path]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return m, nil
}

func copyMember(put func(string, int64, io.Reader) error, e Entry, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if err := put(e.Path, e.Size, io.TeeReader(f, h)); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s (%s) shrank while it was bundled", e.Path, src)
		}
		return fmt.Errorf("%s: %w", e.Path, err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != e.SHA256 {
		return fmt.Errorf("%s (%s) changed while it was bundled: sha256 %s, was %s", e.Path, src, sum, e.SHA256)
	}
	return nil
}

// safeRel reports whether p is a relative slash path that stays inside its
// directory.
func safeRel(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") || path.Clean(p) != p {
		return false
	}
	for _, part := range strings.Split(p, "/") {
		if part == "." || part == ".." {
			return false
		}
	}
	return true
}

// ErrUnsigned reports a bundle without a signature where one is required.
var ErrUnsigned = errors.New("bundle is not signed")

// ErrBadSignature reports a signature that the trusted key does not verify.
var ErrBadSignature = errors.New("bundle signature does not verify")

// Reader reads a bundle as a stream: the head (manifest and signature)
// first, then the files in order.
type Reader struct {
	zr  *zstd.Decoder
	tr  *tar.Reader
	raw []byte // the manifest's bytes, as signed

	Manifest  *Manifest
	Signature []byte // nil when unsigned
	next      *tar.Header
}

// Open reads the head of a bundle from r. With trust set, the signature is
// checked against the manifest's bytes before the manifest is even parsed;
// an unsigned bundle is then refused. Close the Reader when done.
func Open(r io.Reader, trust ed25519.PublicKey) (*Reader, error) {
	// Create writes 8 MiB windows; the bound keeps a hostile file from
	// making the decoder allocate gigabytes.
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		return nil, fmt.Errorf("not a falocal bundle (zstd): %w", err)
	}
	b := &Reader{zr: zr, tr: tar.NewReader(zr)}
	if err := b.readHead(trust); err != nil {
		zr.Close()
		return nil, err
	}
	return b, nil
}

// Close releases the decoder.
func (b *Reader) Close() { b.zr.Close() }

func (b *Reader) readHead(trust ed25519.PublicKey) error {
	hdr, err := b.tr.Next()
	if err != nil {
		return fmt.Errorf("not a falocal bundle: %w", readErr(err))
	}
	if hdr.Name != ManifestName {
		return fmt.Errorf("not a falocal bundle: first member is %q, want %s", hdr.Name, ManifestName)
	}
	if hdr.Size > maxManifest {
		return fmt.Errorf("bundle manifest is %d bytes, more than the %d allowed", hdr.Size, maxManifest)
	}
	if b.raw, err = io.ReadAll(b.tr); err != nil {
		return fmt.Errorf("reading %s: %w", ManifestName, readErr(err))
	}
	hdr, err = b.tr.Next()
	if err != nil && err != io.EOF {
		return fmt.Errorf("reading the member after %s: %w", ManifestName, readErr(err))
	}
	if err == nil && hdr.Name == SignatureName {
		if hdr.Size != ed25519.SignatureSize {
			return fmt.Errorf("%s is %d bytes, want %d", SignatureName, hdr.Size, ed25519.SignatureSize)
		}
		if b.Signature, err = io.ReadAll(b.tr); err != nil {
			return fmt.Errorf("reading %s: %w", SignatureName, readErr(err))
		}
		hdr, err = b.tr.Next()
		if err != nil && err != io.EOF {
			return fmt.Errorf("reading the member after %s: %w", SignatureName, readErr(err))
		}
	}
	if err == nil {
		b.next = hdr
	}
	if trust != nil {
		if b.Signature == nil {
			return fmt.Errorf("%w: a trusted key was given, so an unsigned bundle is refused", ErrUnsigned)
		}
		if !ed25519.Verify(trust, b.raw, b.Signature) {
			return fmt.Errorf("%w with the trusted key (signed by another key, or %s was changed)", ErrBadSignature, ManifestName)
		}
	}
	var probe struct {
		Format int `json:"format"`
	}
	if err := json.Unmarshal(b.raw, &probe); err != nil {
		return fmt.Errorf("%s: %w", ManifestName, err)
	}
	if probe.Format != Format {
		return fmt.Errorf("bundle format version %d; this falocal reads version %d", probe.Format, Format)
	}
	m := &Manifest{}
	if err := json.Unmarshal(b.raw, m); err != nil {
		return fmt.Errorf("%s: %w", ManifestName, err)
	}
	if err := m.check(); err != nil {
		return fmt.Errorf("%s: %w", ManifestName, err)
	}
	b.Manifest = m
	return nil
}

// check makes the manifest consistent with itself: member names are safe
// and unique, blobs are named by their hash, every model file and runtime
// library is listed.
func (m *Manifest) check() error {
	listed := map[string]Entry{}
	for _, e := range m.Files {
		if !safeRel(e.Path) {
			return fmt.Errorf("bad member path %q", e.Path)
		}
		if _, dup := listed[e.Path]; dup {
			return fmt.Errorf("member %s listed twice", e.Path)
		}
		if len(e.SHA256) != 64 || e.Size < 0 {
			return fmt.Errorf("member %s: bad size or sha256", e.Path)
		}
		if s := blobMember.FindStringSubmatch(e.Path); s != nil && s[1] != e.SHA256 {
			return fmt.Errorf("member %s lists sha256 %s", e.Path, e.SHA256)
		}
		listed[e.Path] = e
	}
	names := map[string]bool{}
	for _, man := range m.Models {
		// the store's own rule, checked here so that no model is refused
		// by Store.Put after the blobs have moved in
		if !modelName.MatchString(man.Name) || names[man.Name] {
			return fmt.Errorf("bad or repeated model name %q", man.Name)
		}
		names[man.Name] = true
		for _, f := range man.Files {
			e, ok := listed["blobs/sha256-"+f.SHA256]
			if !ok || e.Size != f.Size {
				return fmt.Errorf("model %s: file %s (sha256 %s, %d bytes) is not among the bundle's files", man.Name, f.Name, f.SHA256, f.Size)
			}
		}
	}
	for _, r := range m.Runtime {
		if err := r.check(listed); err != nil {
			return err
		}
	}
	if m.Binary != "" {
		if _, ok := listed[m.Binary]; !ok || m.Binary != BinaryName {
			return fmt.Errorf("binary %q is not among the bundle's files", m.Binary)
		}
	}
	for p := range listed {
		if !blobMember.MatchString(p) && !strings.HasPrefix(p, "runtime/") && p != BinaryName {
			return fmt.Errorf("member %s is of no kind this falocal knows", p)
		}
	}
	return nil
}

// check makes a runtime's paths safe: its files inside the cache directory
// (and among the bundle's members, when listed is given), its links beside
// them, named as no member is, pointing at one of its files by name.
func (r Runtime) check(listed map[string]Entry) error {
	files := map[string]bool{}
	for _, p := range r.Files() {
		if !safeRel(p) {
			return fmt.Errorf("runtime %s %s: path %q is not a relative path inside the cache directory", r.Kind, r.Version, p)
		}
		if _, ok := listed["runtime/"+p]; listed != nil && !ok {
			return fmt.Errorf("runtime %s %s: %s is not among the bundle's files", r.Kind, r.Version, p)
		}
		if path.Dir(p) != path.Dir(r.Path) {
			return fmt.Errorf("runtime %s %s: %s is not beside %s", r.Kind, r.Version, p, r.Path)
		}
		files[p] = true
	}
	links := map[string]bool{}
	for _, l := range r.Links {
		// Target by bare name: a link can only point at a file the bundle
		// installs beside it, never elsewhere on the site.
		bad := !safeRel(l.Path) || path.Dir(l.Path) != path.Dir(r.Path) || files[l.Path] || links[l.Path] ||
			strings.Contains(l.Target, "/") || !files[path.Join(path.Dir(r.Path), l.Target)]
		if _, member := listed["runtime/"+l.Path]; bad || member {
			return fmt.Errorf("runtime %s %s: bad link %q → %q", r.Kind, r.Version, l.Path, l.Target)
		}
		links[l.Path] = true
	}
	return nil
}

// Each streams the files after the head in order, checking each against
// the manifest: fn gets the entry and a reader of its bytes; Each hashes
// what fn reads (and drains what it leaves) and fails, naming the file,
// on a size or hash that differs, a member the manifest does not list, a
// file out of order, or a stream that ends early. fn's work must be undone
// by the caller when Each fails.
func (b *Reader) Each(fn func(e Entry, r io.Reader) error) error {
	for i, e := range b.Manifest.Files {
		hdr := b.next
		b.next = nil
		if hdr == nil {
			var err error
			hdr, err = b.tr.Next()
			if err == io.EOF {
				return fmt.Errorf("bundle is truncated: it ends before %s (%d of %d files read)", e.Path, i, len(b.Manifest.Files))
			}
			if err != nil {
				return fmt.Errorf("bundle is truncated or damaged before %s: %w", e.Path, readErr(err))
			}
		}
		if hdr.Name != e.Path {
			return fmt.Errorf("bundle member %s found where the manifest lists %s", hdr.Name, e.Path)
		}
		if hdr.Size != e.Size {
			return fmt.Errorf("bundle member %s%s is %d bytes; the manifest says %d", e.Path, b.Manifest.owner(e.Path), hdr.Size, e.Size)
		}
		h := sha256.New()
		r := io.TeeReader(memberReader{b.tr, e.Path + b.Manifest.owner(e.Path)}, h)
		if err := fn(e, r); err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			return err
		}
		if sum := hex.EncodeToString(h.Sum(nil)); sum != e.SHA256 {
			return fmt.Errorf("bundle member %s%s failed verification: sha256 %s, the manifest says %s", e.Path, b.Manifest.owner(e.Path), sum, e.SHA256)
		}
	}
	if hdr, err := b.tr.Next(); err == nil {
		return fmt.Errorf("bundle member %s is not in the manifest", hdr.Name)
	} else if err != io.EOF {
		return fmt.Errorf("bundle is damaged after its last file: %w", readErr(err))
	}
	return nil
}

// owner names the model files a blob member holds, for messages.
func (m *Manifest) owner(member string) string {
	var names []string
	for _, man := range m.Models {
		for _, f := range man.Files {
			if "blobs/sha256-"+f.SHA256 == member {
				names = append(names, man.Name+"/"+f.Name)
			}
		}
	}
	if len(names) == 0 {
		return ""
	}
	return " (" + strings.Join(names, ", ") + ")"
}

// ErrStream marks a failure to read the bundle itself (truncated, damaged),
// as opposed to one writing what was read.
var ErrStream = errors.New("bundle is truncated or damaged")

// memberReader names the member a read error happened in.
type memberReader struct {
	r    io.Reader
	name string
}

func (m memberReader) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w in %s: %w", ErrStream, m.name, err)
	}
	return n, err
}

// readErr names a stream that stops mid-way as what it is.
func readErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("truncated (%w)", err)
	}
	return err
}
