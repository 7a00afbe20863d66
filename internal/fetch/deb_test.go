package fetch

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

type arMember struct {
	name string
	data []byte
}

// buildAr writes a GNU-style ar archive as dpkg-deb does.
func buildAr(members ...arMember) []byte {
	var b bytes.Buffer
	b.WriteString(arMagic)
	for _, m := range members {
		fmt.Fprintf(&b, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", m.name, 0, 0, 0, "100644", len(m.data))
		b.Write(m.data)
		if len(m.data)%2 == 1 {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

func buildTar(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "./usr/", Typeflag: tar.TypeDir, Mode: 0o755})
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	return b.Bytes()
}

func compress(t *testing.T, ext string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch ext {
	case ".xz":
		w, err := xz.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	case ".gz":
		w := gzip.NewWriter(&b)
		w.Write(data)
		w.Close()
	case ".zst":
		w, _ := zstd.NewWriter(&b)
		w.Write(data)
		w.Close()
	default:
		b.Write(data)
	}
	return b.Bytes()
}

func TestExtractDeb(t *testing.T) {
	files := map[string]string{
		"./usr/share/x/a.wav":      "RIFF-odd",
		"./usr/share/x/transcript": "hello world\n",
	}
	for _, ext := range []string{".xz", ".gz", ".zst", ""} {
		t.Run("data.tar"+ext, func(t *testing.T) {
			dir := t.TempDir()
			deb := filepath.Join(dir, "p.deb")
			os.WriteFile(deb, buildAr(
				arMember{"debian-binary", []byte("2.0\n")},
				arMember{"control.tar.xz", compress(t, ".xz", buildTar(t, map[string]string{"./control": "Package: p"}))},
				arMember{"_extra", []byte("odd")}, // an odd length exercises ar's padding
				arMember{"data.tar" + ext, compress(t, ext, buildTar(t, files))},
			), 0o644)
			want := map[string]string{
				"usr/share/x/a.wav":      filepath.Join(dir, "out", "a.wav"),
				"usr/share/x/transcript": filepath.Join(dir, "out", "t"),
			}
			if err := ExtractDeb(deb, want); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(want["usr/share/x/a.wav"]); string(b) != "RIFF-odd" {
				t.Fatalf("a.wav = %q", b)
			}
			if b, _ := os.ReadFile(want["usr/share/x/transcript"]); string(b) != "hello world\n" {
				t.Fatalf("transcript = %q", b)
			}
			want["usr/share/x/absent"] = filepath.Join(dir, "out", "absent")
			if err := ExtractDeb(deb, want); err == nil || !strings.Contains(err.Error(), "absent") {
				t.Fatalf("missing member not reported: %v", err)
			}
		})
	}
	t.Run("not a deb", func(t *testing.T) {
		dir := t.TempDir()
		for name, data := range map[string][]byte{
			"garbage":   []byte("PK\x03\x04 not an ar archive"),
			"no data":   buildAr(arMember{"debian-binary", []byte("2.0\n")}),
			"truncated": buildAr(arMember{"data.tar.xz", compress(t, ".xz", buildTar(t, files))})[:80],
			"bad comp":  buildAr(arMember{"data.tar.lz", []byte("x")}),
		} {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			os.WriteFile(p, data, 0o644)
			if err := ExtractDeb(p, map[string]string{"usr/share/x/a.wav": filepath.Join(dir, "o")}); err == nil {
				t.Errorf("%s: no error", name)
			}
		}
	})
}
