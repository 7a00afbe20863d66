package pipelines_test

import (
	"context"
	"strings"
	"testing"

	"github.com/falocal/falocal/pipelines"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	"github.com/falocal/falocal/weights"
)

// DescribeWant names the model the first resolvable want picks, among the
// installed models of the first want's pipeline, without loading anything.
func TestDescribeWant(t *testing.T) {
	st := pipelinetest.Store(t)
	for _, m := range []weights.Manifest{
		{Name: "b", Pipeline: "p", Serves: []string{"k1"}},
		{Name: "a", Pipeline: "p"},
		{Name: "other", Pipeline: "q", Serves: []string{"k2"}},
	} {
		pipelinetest.InstallFake(t, st, m)
	}
	d := pipelines.Deps{Store: st}
	matchAll := func(weights.Manifest) bool { return true }

	m, err := d.DescribeWant(pipelines.Want{Pipeline: "p", Key: "k1"})
	if err != nil || m.Default != "b" || m.Missing != "" || strings.Join(m.Installed, ",") != "a,b" {
		t.Errorf("served: %+v, %v", m, err)
	}
	m, err = d.DescribeWant(pipelines.Want{Pipeline: "p", Key: "k2"}, pipelines.Want{Pipeline: "p", Key: "k2", Match: matchAll})
	if err != nil || m.Default != "a" || m.Missing != "" {
		t.Errorf("fallback: %+v, %v", m, err)
	}
	m, err = d.DescribeWant(pipelines.Want{Pipeline: "p", Key: "k2", What: "model k2", Install: "import one"})
	if err != nil || m.Default != "" || !strings.Contains(m.Missing, "model k2 is not installed") || !strings.Contains(m.Missing, "import one") {
		t.Errorf("missing: %+v, %v", m, err)
	}
	m, err = d.DescribeWant(pipelines.Want{Pipeline: "r", Key: "k"})
	if err != nil || m.Installed == nil || len(m.Installed) != 0 || m.Default != "" {
		t.Errorf("nothing installed: %+v, %v", m, err)
	}
}

// A registry asks the endpoint's pipeline; one that cannot describe its
// models says so, and an unknown endpoint is an error.
func TestRegistryDescribeModels(t *testing.T) {
	r, err := pipelines.Assemble(describing{}, pipelines.Static(fixedEP("x/plain")))
	if err != nil {
		t.Fatal(err)
	}
	if m, ok, err := r.DescribeModels("x/described"); !ok || err != nil || m.Default != "model for x/described" {
		t.Errorf("described: %+v %v %v", m, ok, err)
	}
	if _, ok, err := r.DescribeModels("x/plain"); ok || err != nil {
		t.Errorf("plain: %v %v", ok, err)
	}
	if _, _, err := r.DescribeModels("x/none"); err == nil {
		t.Error("an unknown endpoint described")
	}
}

type fixedEP string

func (e fixedEP) ID() string { return string(e) }
func (e fixedEP) Run(context.Context, *pipelines.Request) (any, error) {
	return nil, nil
}

type describing struct{}

func (describing) Endpoints() []pipelines.Endpoint {
	return []pipelines.Endpoint{fixedEP("x/described")}
}
func (describing) Warm(context.Context, string) error { return nil }
func (describing) Close() error                       { return nil }
func (describing) DescribeModels(id string) (pipelines.EndpointModels, error) {
	return pipelines.EndpointModels{Default: "model for " + id}, nil
}
