package fetch

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// A .deb is an ar archive: "debian-binary", "control.tar.*", "data.tar.*".
// Only the data member matters here; dpkg allows xz, gzip, zstd or no
// compression for it, so all four are read.

const arMagic = "!<arch>\n"

// DebEach calls fn for every regular file in a .deb's data archive whose
// cleaned name (e.g. "usr/share/doc/x/copyright", without the leading "./")
// is accepted by want (all files when want is nil).
func DebEach(deb string, want func(name string) bool, fn func(name string, r io.Reader) error) error {
	f, err := os.Open(deb)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := debEach(bufio.NewReader(f), want, fn); err != nil {
		return fmt.Errorf("%s: %w", deb, err)
	}
	return nil
}

func debEach(r io.Reader, want func(name string) bool, fn func(name string, r io.Reader) error) error {
	magic := make([]byte, len(arMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != arMagic {
		return errors.New("not a .deb (ar) archive")
	}
	for {
		var hdr [60]byte
		if _, err := io.ReadFull(r, hdr[:]); err == io.EOF {
			return errors.New("no data.tar member")
		} else if err != nil {
			return fmt.Errorf("ar header: %w", err)
		}
		if string(hdr[58:60]) != "`\n" {
			return errors.New("corrupt ar header")
		}
		// GNU ar ends names with "/"; BSD-style long names never occur in .debs.
		name := strings.TrimSuffix(strings.TrimSpace(string(hdr[0:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 {
			return fmt.Errorf("ar member %q: bad size", name)
		}
		body := io.LimitReader(r, size)
		if rest, ok := strings.CutPrefix(name, "data.tar"); ok {
			dr, closeFn, err := decompressor(rest, body)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			defer closeFn()
			if err := tarEach(dr, want, fn); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		}
		// Members are padded to an even offset.
		if _, err := io.CopyN(io.Discard, r, size+size%2); err != nil {
			return fmt.Errorf("ar member %q: %w", name, err)
		}
	}
}

func decompressor(ext string, r io.Reader) (io.Reader, func(), error) {
	switch ext {
	case ".xz":
		xr, err := xz.NewReader(r)
		return xr, func() {}, err
	case ".gz":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return zr, func() { zr.Close() }, nil
	case ".zst":
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	case "":
		return r, func() {}, nil
	}
	return nil, nil, fmt.Errorf("unsupported compression %q", ext)
}

// ExtractDeb copies the data-archive members named in files (member →
// destination path) out of a .deb and fails if any is missing.
func ExtractDeb(deb string, files map[string]string) error {
	found := map[string]bool{}
	err := DebEach(deb, func(n string) bool { _, ok := files[n]; return ok }, func(n string, r io.Reader) error {
		found[n] = true
		return writeFile(files[n], r)
	})
	if err != nil {
		return err
	}
	return missing(deb, files, found)
}
