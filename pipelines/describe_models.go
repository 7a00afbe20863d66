package pipelines

import (
	"errors"
	"fmt"
	"sort"
)

// EndpointModels says which installed models an endpoint can use, found
// from the manifests alone: nothing is loaded.
type EndpointModels struct {
	// Installed are the installed models of the endpoint's pipeline.
	Installed []string `json:"installed"`
	// Default is the model the endpoint's default input runs on; empty when
	// none is installed.
	Default string `json:"default,omitempty"`
	// Missing says what to install when Default is empty.
	Missing string `json:"missing,omitempty"`
}

// ModelDescriber is a pipeline that can describe its endpoints' models.
type ModelDescriber interface {
	DescribeModels(endpoint string) (EndpointModels, error)
}

// DescribeModels describes the models of endpoint id; ok is false when its
// pipeline cannot say (a pipeline without installed models, as in tests).
func (r *Registry) DescribeModels(id string) (m EndpointModels, ok bool, err error) {
	p, found := r.owner[id]
	if !found {
		return m, false, fmt.Errorf("no endpoint %s", id)
	}
	d, ok := p.(ModelDescriber)
	if !ok {
		return m, false, nil
	}
	m, err = d.DescribeModels(id)
	return m, err == nil, err
}

// DescribeWant resolves the wants in order, as a pipeline resolves its
// default model (its fallbacks included), and lists the installed models
// of the first want's pipeline.
func (d Deps) DescribeWant(wants ...Want) (EndpointModels, error) {
	m := EndpointModels{Installed: []string{}}
	all, err := d.Store.List()
	if err != nil {
		return m, err
	}
	for _, man := range all {
		if len(wants) > 0 && man.Pipeline == wants[0].Pipeline {
			m.Installed = append(m.Installed, man.Name)
		}
	}
	sort.Strings(m.Installed)
	for _, w := range wants {
		man, err := d.Resolve(w)
		if err == nil {
			m.Default, m.Missing = man.Name, ""
			return m, nil
		}
		if !errors.Is(err, ErrNoModel) {
			return m, err
		}
		m.Missing = err.Error()
	}
	return m, nil
}
