package weights

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/falocal/falocal/internal/fetch"
)

// misaki (Apache-2.0) is Kokoro's own grapheme-to-phoneme front end. Its
// English lexicons, misaki/data/{us,gb}_{gold,silver}.json (word → Kokoro
// phonemes, some words keyed by part of speech), are what the Go front end in
// pipelines/kokoro/g2p reads; they are installed as a small model of their
// own, "misaki-en", whose files keep their JSON names (each file's role is
// its name: Store.Path(m, "us_gold.json")).

// misakiWheel is misaki 0.9.4 from PyPI.
var misakiWheel = fetch.Artifact{
	Name:   "misaki-0.9.4-py3-none-any.whl",
	URL:    "https://files.pythonhosted.org/packages/82/ec/0ee4110ddb54278b8f21c40a140370ae8f687036c4edf578316602697c56/misaki-0.9.4-py3-none-any.whl",
	SHA256: "90e2eeb169786c014c429e5058d2ea6bcd02d651f2a24450ba6c9ffc0f8da15a",
	Size:   3617774,
}

type lexiconFile struct {
	name   string
	sha256 string
	size   int64
}

// misakiLexicons are the four English lexicons inside the wheel, pinned.
var misakiLexicons = []lexiconFile{
	{"us_gold.json", "dc414872a49a28ae6c141463d502fd945f3b2fde040484fdc47d00cc4612686f", 3000469},
	{"us_silver.json", "de8f67be911bb6c659187b4a65fd966b6a30e56350e0f790d763210b053ac475", 3099517},
	{"gb_gold.json", "29e62f4b60261c88f7f3c2c7811ca3825978948090b72d2b27d565b729282f71", 2838552},
	{"gb_silver.json", "48131e2d92ccc41655f4543e87e0f938e71463eb5a54be7f0693bb712ebb6bce", 3663898},
}

// MisakiLexiconFiles lists the file names the misaki-en model holds.
func MisakiLexiconFiles() []string {
	names := make([]string, len(misakiLexicons))
	for i, l := range misakiLexicons {
		names[i] = l.name
	}
	return names
}

// lexiconMemory covers both accents' dictionaries loaded as Go maps (about
// 32 MB each once loaded, more while their JSON is parsed).
const lexiconMemory = 128 << 20

// installLexicon extracts the English lexicons from the misaki wheel.
func installLexicon(ctx context.Context, s *Store, fc *fetch.Client, r Recipe) error {
	whl, err := fc.Get(ctx, misakiWheel)
	if err != nil {
		return err
	}
	tmp, err := s.TempDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	members := map[string]string{}
	for _, l := range misakiLexicons {
		members["misaki/data/"+l.name] = filepath.Join(tmp, l.name)
	}
	if err := fetch.ExtractZip(whl, members); err != nil {
		return err
	}
	var files []File
	for _, l := range misakiLexicons {
		dst := filepath.Join(tmp, l.name)
		sum, size, err := fetch.HashFile(dst)
		if err != nil {
			return err
		}
		if sum != l.sha256 || size != l.size {
			return fmt.Errorf("%w: misaki/data/%s is %d bytes with SHA-256 %s, want %d bytes, %s", ErrCorrupt, l.name, size, sum, l.size, l.sha256)
		}
		f, err := s.AddBlob(dst, l.name, l.name, "json", l.sha256)
		if err != nil {
			return err
		}
		files = append(files, f)
	}
	return s.Put(Manifest{
		Name: r.Name, Pipeline: r.Pipeline, Description: r.Description,
		Files: files, MemoryBytes: lexiconMemory,
		Source: "misaki 0.9.4 wheel (PyPI), misaki/data/{us,gb}_{gold,silver}.json",
	})
}
