package main

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var updateDocs = flag.Bool("update", false, "rewrite docs/configuration.md from the flag sets")

const configDoc = "../../docs/configuration.md"

// TestConfigReference keeps docs/configuration.md what the flag sets say.
func TestConfigReference(t *testing.T) {
	got, err := configReference()
	if err != nil {
		t.Fatal(err)
	}
	if *updateDocs {
		if err := os.WriteFile(configDoc, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatalf("%v\nregenerate it: go test ./cmd/falocal -run TestConfigReference -update", err)
	}
	if string(want) != got {
		t.Fatalf("docs/configuration.md differs from the flags; regenerate it:\n\tgo test ./cmd/falocal -run TestConfigReference -update\nthen review the diff")
	}
}

// TestConfigReferenceNeutral checks the rendering does not depend on the
// environment, and puts the environment back.
func TestConfigReferenceNeutral(t *testing.T) {
	t.Setenv("FALOCAL_LISTEN", "0.0.0.0:1")
	t.Setenv("HOME", "/somewhere")
	got, err := configReference()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got, "0.0.0.0:1") || strings.Contains(got, "/somewhere") {
		t.Error("the environment leaked into the reference")
	}
	if !strings.Contains(got, "`127.0.0.1:8080`") || !strings.Contains(got, "`~/.local/share/falocal`") {
		t.Error("built-in defaults missing")
	}
	if os.Getenv("FALOCAL_LISTEN") != "0.0.0.0:1" || os.Getenv("HOME") != "/somewhere" {
		t.Error("environment not restored")
	}
}

var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestDocLinks checks that every relative link in README.md, docs/*.md and
// bench/results/README.md names a file or directory that exists.
func TestDocLinks(t *testing.T) {
	files, _ := filepath.Glob("../../docs/*.md")
	files = append(files, "../../README.md", "../../bench/results/README.md")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(string(b), -1) {
			target, _, _ := strings.Cut(m[1], "#")
			if target == "" || strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(f), target)); err != nil {
				t.Errorf("%s: broken link %s", f, m[1])
			}
		}
	}
}
