//go:build cgo

package kokoro

import (
	"context"
	"testing"

	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/kokoro/g2p"
	"github.com/falocal/falocal/pipelines/pipelinetest"
)

// English endpoints read text with misaki's lexicons (the installed
// misaki-en model), the others with espeak-ng; without misaki-en English
// falls back to espeak-ng.
func TestEnglishFrontEnd(t *testing.T) {
	requireEspeak(t)
	d := installedDeps(t)
	man, err := d.Store.Get("misaki-en")
	if err != nil {
		t.Fatalf("misaki-en: %v (setup installs it)", err)
	}
	files := map[string]string{}
	for _, f := range man.Files {
		if files[f.Name], err = d.Store.Path(man, f.Role); err != nil {
			t.Fatal(err)
		}
	}
	p, _ := pipelinetest.Build(t, New, d)
	fe := p.(*Pipeline).FrontEnd
	const text = "Dr. Smith paid $5.50 for 3 books on Jan. 2nd, didn't he?"
	ctx := context.Background()
	for _, l := range Languages {
		if l.Letter != 'a' && l.Letter != 'b' && l.Letter != 'e' && l.Letter != 'f' {
			continue // English text as Japanese or Mandarin is a 422
		}
		got, err := fe(l).Phonemize(ctx, text)
		if err != nil {
			t.Fatalf("%s: %v", l.Name, err)
		}
		var want string
		switch l.Letter {
		case 'a', 'b':
			en, err := g2p.LoadEnglish(files, l.Letter == 'b', g2p.Options{})
			if err != nil {
				t.Fatal(err)
			}
			want, err = en.Phonemize(ctx, text)
			if err != nil {
				t.Fatal(err)
			}
			espeak, _ := EspeakFrontEnd(l).Phonemize(ctx, text)
			if espeak == want {
				t.Errorf("%s: misaki and espeak-ng read %q alike; the test cannot tell them apart", l.Name, text)
			}
		default:
			if want, err = EspeakFrontEnd(l).Phonemize(ctx, text); err != nil {
				t.Fatal(err)
			}
		}
		if got != want {
			t.Errorf("%s: %q, want %q", l.Name, got, want)
		}
	}

	// a store without misaki-en: English by espeak-ng
	st := pipelinetest.Store(t)
	p2, _ := pipelinetest.Build(t, New, pipelines.Deps{Store: st, Runtime: d.Runtime, Ops: d.Ops, Config: d.Config})
	am := Languages[0]
	got, err := p2.(*Pipeline).FrontEnd(am).Phonemize(ctx, text)
	want, _ := EspeakFrontEnd(am).Phonemize(ctx, text)
	if err != nil || got != want {
		t.Errorf("without misaki-en: %q %v, want espeak-ng's %q", got, err, want)
	}
}
