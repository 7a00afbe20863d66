package pipelines

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/falocal/falocal/weights"
)

// Want says which installed model a request needs.
type Want struct {
	// Pipeline is the manifests' pipeline ("rembg", "whisper", ...).
	Pipeline string
	// Key is what the model serves ("birefnet:Portrait", "flux/dev", ...):
	// the server configuration may pin a model for it (Config.Models), and
	// by default a manifest whose Serves names it is chosen.
	Key string
	// Keys are further configuration keys to look up, in order, when Key
	// has no pinned model (wizper falls back to whisper's setting).
	Keys []string
	// Match, when set, decides instead of Serves which manifests serve.
	Match func(weights.Manifest) bool
	// What names the request's model in messages, e.g. "BiRefNet model
	// 'Portrait'" (default: Key).
	What string
	// Install tells how to install one, for the message.
	Install string
}

// NotInstalledError is the one answer for a request whose model has no
// weights on this server: 503, naming what was asked, what is installed and
// how to install it. A valid request can succeed once the operator installs
// the model, so it is not the client's error (422).
type NotInstalledError struct {
	What      string
	Installed []string // "name (serves a, b)"
	Install   string
	Pinned    string // a configured model that is not installed
}

func (e *NotInstalledError) Error() string {
	var b strings.Builder
	if e.Pinned != "" {
		fmt.Fprintf(&b, "%s is configured to be served by model %q, which is not installed", e.What, e.Pinned)
	} else {
		fmt.Fprintf(&b, "%s is not installed on this server", e.What)
	}
	if len(e.Installed) > 0 {
		fmt.Fprintf(&b, " (installed: %s)", strings.Join(e.Installed, "; "))
	} else {
		b.WriteString(" (no model of this kind is installed)")
	}
	if e.Install != "" {
		b.WriteString("; " + e.Install)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrNoModel) true.
func (e *NotInstalledError) Is(target error) bool { return target == ErrNoModel }

// HTTP is the fal-shaped answer.
func (e *NotInstalledError) HTTP() *HTTPError {
	return &HTTPError{Status: http.StatusServiceUnavailable, Type: "runner_scheduling_failure", Msg: e.Error(), Err: e}
}

// Resolve picks the installed model for a request: the model the
// configuration pins for w.Key (or w.Keys), else the first installed
// manifest of w.Pipeline that serves it. Without one the error is a 503
// *HTTPError wrapping a *NotInstalledError (errors.Is ErrNoModel).
func (d Deps) Resolve(w Want) (weights.Manifest, error) {
	all, err := d.Store.List()
	if err != nil {
		return weights.Manifest{}, err
	}
	what := w.What
	if what == "" {
		what = w.Key
	}
	nf := &NotInstalledError{What: what, Install: w.Install}
	var mine []weights.Manifest
	for _, m := range all {
		if m.Pipeline != w.Pipeline {
			continue
		}
		mine = append(mine, m)
		desc := m.Name
		if len(m.Serves) > 0 {
			desc += " (serves " + strings.Join(m.Serves, ", ") + ")"
		}
		nf.Installed = append(nf.Installed, desc)
	}
	slices.Sort(nf.Installed)
	for _, k := range append([]string{w.Key}, w.Keys...) {
		name, ok := d.Config.Models[k]
		if !ok || name == "" {
			continue
		}
		for _, m := range all {
			if m.Name == name {
				return m, nil
			}
		}
		nf.Pinned = name
		return weights.Manifest{}, nf.HTTP()
	}
	for _, m := range mine {
		if w.Match != nil && w.Match(m) || w.Match == nil && slices.Contains(m.Serves, w.Key) {
			return m, nil
		}
	}
	return weights.Manifest{}, nf.HTTP()
}
