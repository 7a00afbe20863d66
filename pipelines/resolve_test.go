package pipelines_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/weights"
)

func TestResolve(t *testing.T) {
	st := pipelinetest.Store(t)
	for _, m := range []weights.Manifest{
		{Name: "a", Pipeline: "p", Serves: []string{"k1"}},
		{Name: "b", Pipeline: "p", Serves: []string{"k1", "k2"}},
		{Name: "other", Pipeline: "q", Serves: []string{"k3"}},
	} {
		pipelinetest.InstallFake(t, st, m)
	}
	cases := []struct {
		name   string
		pins   map[string]string
		want   pipelines.Want
		model  string // "" = not installed
		detail []string
	}{
		{"served", nil, pipelines.Want{Pipeline: "p", Key: "k2"}, "b", nil},
		{"first that serves", nil, pipelines.Want{Pipeline: "p", Key: "k1"}, "a", nil},
		{"pinned", map[string]string{"k1": "b"}, pipelines.Want{Pipeline: "p", Key: "k1"}, "b", nil},
		{"pinned through a further key", map[string]string{"k0": "b"}, pipelines.Want{Pipeline: "p", Key: "kx", Keys: []string{"k0"}}, "b", nil},
		{"match", nil, pipelines.Want{Pipeline: "p", Key: "x", Match: func(m weights.Manifest) bool { return m.Name == "b" }}, "b", nil},
		{"another pipeline's model is not a candidate", nil, pipelines.Want{Pipeline: "p", Key: "k3", What: "model 'k3'", Install: "import one"},
			"", []string{"model 'k3' is not installed on this server", "(installed: a (serves k1); b (serves k1, k2))", "; import one"}},
		{"pinned but missing", map[string]string{"k1": "gone"}, pipelines.Want{Pipeline: "p", Key: "k1"},
			"", []string{`k1 is configured to be served by model "gone", which is not installed`}},
		{"nothing of the kind", nil, pipelines.Want{Pipeline: "r", Key: "k"}, "", []string{"no model of this kind is installed"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := pipelines.Deps{Store: st, Config: pipelines.Config{Models: c.pins}}
			m, err := d.Resolve(c.want)
			if c.model != "" {
				if err != nil || m.Name != c.model {
					t.Fatalf("got %s, %v; want %s", m.Name, err, c.model)
				}
				return
			}
			var he *pipelines.HTTPError
			if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable || he.Type != "runner_scheduling_failure" || !errors.Is(err, pipelines.ErrNoModel) {
				t.Fatalf("err %v, want the 503 for a model not installed", err)
			}
			for _, d := range c.detail {
				if !strings.Contains(he.Msg, d) {
					t.Errorf("%q does not contain %q", he.Msg, d)
				}
			}
		})
	}
}
