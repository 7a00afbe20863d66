package main

import (
	"bytes"
	"context"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/falocal/falocal/internal/testenv"
)

// readmeBlock is a ```sh block of the README and the marker before it.
type readmeBlock struct {
	line   int
	run    bool
	makes  []string // globs of the files the block must create
	script string
}

// readmeMarker is the HTML comment that must come right before every sh
// block: "<!-- test: run; makes GLOB… -->" for an example the test runs,
// "<!-- test: skip; reason -->" for one it cannot (it builds, or needs the
// reader's own code). The files an example makes must be non-empty, and
// its images (.png, .jpg) decode at the photo's size: the examples edit
// the photo.
var readmeMarker = regexp.MustCompile(`^<!-- test: (run|skip); (.+) -->$`)

func readmeBlocks(t *testing.T, readme string) []readmeBlock {
	t.Helper()
	var blocks []readmeBlock
	lines := strings.Split(readme, "\n")
	for i := 0; i < len(lines); i++ {
		if lines[i] != "```sh" {
			continue
		}
		var m []string
		if i > 0 {
			m = readmeMarker.FindStringSubmatch(lines[i-1])
		}
		if m == nil {
			t.Fatalf("README.md:%d: a sh block without a '<!-- test: run; makes FILE… -->' or '<!-- test: skip; reason -->' line before it", i+1)
		}
		b := readmeBlock{line: i + 1, run: m[1] == "run"}
		if b.run {
			globs, ok := strings.CutPrefix(m[2], "makes ")
			if !ok {
				t.Fatalf("README.md:%d: a runnable block's marker says what it makes: 'test: run; makes FILE…'", i)
			}
			b.makes = strings.Fields(globs)
		}
		var body []string
		for i++; i < len(lines) && lines[i] != "```"; i++ {
			body = append(body, lines[i])
		}
		b.script = strings.Join(body, "\n") + "\n"
		blocks = append(blocks, b)
	}
	return blocks
}

// TestREADME runs the README's runnable shell examples, as written, in a
// folder holding a real photo as photo.jpg and the binary under test as
// bin/falocal, against a real server, and checks the files they say they
// make. The README's address, 127.0.0.1:8080, is the default port, which
// another server on this machine may hold: the test serves on a free port
// instead, puts its address in place of the README's in each example and
// in $FALOCAL_URL (falocal run's default is the README's address).
func TestREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var run []readmeBlock
	for _, b := range readmeBlocks(t, string(readme)) {
		if b.run {
			run = append(run, b)
		}
	}
	if len(run) == 0 {
		t.Fatal("README.md has no runnable example ('<!-- test: run; makes … -->' before a sh block)")
	}
	photo, err := os.ReadFile(testenv.Asset(t, "rocket.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	size, _, err := image.DecodeConfig(bytes.NewReader(photo))
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t)
	const readmeAddr = "http://127.0.0.1:8080"
	for _, b := range run {
		t.Run("README.md:"+strconv.Itoa(b.line), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(testenv.Binary(t), filepath.Join(dir, "bin", "falocal")); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "photo.jpg"), photo, 0o644); err != nil {
				t.Fatal(err)
			}
			if other := strings.ReplaceAll(b.script, readmeAddr, ""); strings.Contains(other, "127.0.0.1:") || strings.Contains(other, "localhost:") {
				t.Fatalf("README.md:%d names a server address other than %s, which the test cannot point at its server", b.line, readmeAddr)
			}
			script := strings.ReplaceAll(b.script, readmeAddr, s.base)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			// -e and pipefail: a failing command fails the example even when
			// a later one would succeed.
			cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
			cmd.Dir = dir
			cmd.Env = append(cliEnv(), "FALOCAL_URL="+s.base)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("README.md:%d: %v\n%s\noutput:\n%s", b.line, err, script, out)
			}
			for _, g := range b.makes {
				files, _ := filepath.Glob(filepath.Join(dir, g))
				if len(files) == 0 {
					t.Errorf("README.md:%d made no %s; output:\n%s", b.line, g, out)
				}
				for _, f := range files {
					checkMade(t, f, size)
				}
			}
		})
	}
}

// checkMade checks a file an example made: not empty, and an image of the
// photo's size if its name says it is one.
func checkMade(t *testing.T, f string, photo image.Config) {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil || len(b) == 0 {
		t.Errorf("%s: empty or unreadable (%v)", f, err)
		return
	}
	want := map[string]string{".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}[strings.ToLower(filepath.Ext(f))]
	if want == "" {
		return
	}
	img, format, err := image.Decode(bytes.NewReader(b))
	if err != nil || format != want {
		t.Errorf("%s is not a %s image (%q, %v): %.80q", f, want, format, err, b)
		return
	}
	if r := img.Bounds(); r.Dx() != photo.Width || r.Dy() != photo.Height {
		t.Errorf("%s is %dx%d, want the photo's %dx%d", f, r.Dx(), r.Dy(), photo.Width, photo.Height)
	}
}
