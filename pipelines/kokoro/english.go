package kokoro

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/kokoro/g2p"
	"github.com/falocal/falocal/weights"
)

// english reads American and British English with misaki's lexicons and
// rules (package g2p), loaded once per accent from the installed misaki-en
// model; without that model, English is read by espeak-ng like the other
// languages.
type english struct {
	deps pipelines.Deps
	mu   sync.Mutex
	fes  map[bool]*g2p.English // by british
}

// frontEnd is the pipeline's FrontEnd: misaki's reading for English,
// espeak-ng for the rest.
func (e *english) frontEnd(l Language) Phonemizer {
	if l.Letter != 'a' && l.Letter != 'b' {
		return EspeakFrontEnd(l)
	}
	return lazyEnglish{e: e, british: l.Letter == 'b', fallback: EspeakFrontEnd(l)}
}

type lazyEnglish struct {
	e        *english
	british  bool
	fallback Phonemizer
}

func (l lazyEnglish) Phonemize(ctx context.Context, text string) (string, error) {
	fe, err := l.e.load(l.british)
	if errors.Is(err, pipelines.ErrNoModel) {
		return l.fallback.Phonemize(ctx, text)
	}
	if err != nil {
		return "", err
	}
	return fe.Phonemize(ctx, text)
}

// load returns the front end of an accent, reading its lexicons the first
// time.
func (e *english) load(british bool) (*g2p.English, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if fe := e.fes[british]; fe != nil {
		return fe, nil
	}
	man, err := e.deps.Resolve(pipelines.Want{Pipeline: "kokoro", Key: "misaki-en", What: "misaki's English lexicons",
		Match: func(m weights.Manifest) bool {
			return slices.ContainsFunc(m.Files, func(f weights.File) bool { return f.Name == g2p.USGold })
		},
		Install: "run 'falocal setup' (or 'falocal weights install misaki-en')"})
	if err != nil {
		return nil, err
	}
	files := map[string]string{}
	for _, f := range man.Files {
		p, err := e.deps.Store.Path(man, f.Role)
		if err != nil {
			return nil, err
		}
		files[f.Name] = p
	}
	fe, err := g2p.LoadEnglish(files, british, g2p.Options{Spelled: func(words []string) {
		if e.deps.Log != nil {
			e.deps.Log.Warn("espeak-ng is not installed: words the lexicons lack were spelled by letter-to-sound rules",
				"words", len(words))
		}
	}})
	if err != nil {
		return nil, fmt.Errorf("misaki-en: %w", err)
	}
	if e.fes == nil {
		e.fes = map[bool]*g2p.English{}
	}
	e.fes[british] = fe
	return fe, nil
}
