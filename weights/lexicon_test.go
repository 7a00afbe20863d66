package weights

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/falocal/falocal/internal/fetch"
)

// TestInstallLexicon installs misaki's English lexicons from the wheel in the
// download cache (never the network) and checks they are the pinned JSON.
func TestInstallLexicon(t *testing.T) {
	cache := os.Getenv("FALOCAL_TEST_PACKAGES")
	if cache == "" {
		if os.Getenv("FALOCAL_REQUIRE_ASSETS") == "1" {
			t.Fatal("FALOCAL_TEST_PACKAGES not set")
		}
		t.Skip("FALOCAL_TEST_PACKAGES not set; 'make test' sets it")
	}
	r, ok := Lookup("misaki-en")
	if !ok || !r.Default || r.Pipeline != "kokoro" {
		t.Fatalf("catalog entry: %+v, %v", r, ok)
	}
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Install(context.Background(), s, &fetch.Client{Dir: cache, HTTP: noNetwork()}); err != nil {
		t.Fatal(err)
	}
	m, err := s.Get("misaki-en")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(m.Name); err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != len(MisakiLexiconFiles()) {
		t.Fatalf("%d files, want %v", len(m.Files), MisakiLexiconFiles())
	}
	for _, name := range MisakiLexiconFiles() {
		p, err := s.Path(m, name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var lex map[string]any
		if err := json.Unmarshal(b, &lex); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(lex) < 80000 {
			t.Errorf("%s: %d words", name, len(lex))
		}
	}
}
