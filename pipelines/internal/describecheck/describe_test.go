// Package describecheck checks that every pipeline's endpoints describe
// themselves; a package of its own, so that it can register them all.
package describecheck_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/falocal/falocal/engine"
	"github.com/falocal/falocal/engine/enginetest"
	"github.com/falocal/falocal/pipelines"
	_ "github.com/falocal/falocal/pipelines/diffusion"
	_ "github.com/falocal/falocal/pipelines/kokoro"
	"github.com/falocal/falocal/pipelines/pipelinetest"
	_ "github.com/falocal/falocal/pipelines/rembg"
	_ "github.com/falocal/falocal/pipelines/upscale"
	_ "github.com/falocal/falocal/pipelines/whisper"
)

var types = []pipelines.Type{pipelines.String, pipelines.Integer, pipelines.Number, pipelines.Boolean, pipelines.Array, pipelines.Object}

// Every registered endpoint documents itself with the schema its Run
// validates with: its fields are well formed, its defaults pass its own
// checks, and an empty input is refused for exactly its required fields,
// before any model is needed.
func TestEveryEndpointDescribed(t *testing.T) {
	st := pipelinetest.Store(t)
	reg, err := pipelines.Build(pipelines.Deps{Store: st, Runtime: enginetest.New(), Ops: engine.CPUOps()})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if len(reg.IDs()) < 20 {
		t.Fatalf("only %d endpoints registered: %v", len(reg.IDs()), reg.IDs())
	}
	for _, id := range reg.IDs() {
		ep, _ := reg.Lookup(id)
		d, ok := ep.(pipelines.Describer)
		if !ok {
			t.Errorf("%s does not describe itself", id)
			continue
		}
		desc := d.Describe()
		if desc.Title == "" || desc.Summary == "" || desc.Category == "" || desc.Output == nil {
			t.Errorf("%s: incomplete description %+v", id, desc)
		}
		seen := map[string]bool{}
		var required []string
		defaults := map[string]any{}
		for _, f := range desc.Input.Fields {
			if f.Name == "" || seen[f.Name] {
				t.Errorf("%s: field name %q empty or repeated", id, f.Name)
			}
			seen[f.Name] = true
			if !slices.Contains(types, f.Type) && len(f.AnyOf) == 0 {
				t.Errorf("%s.%s: type %q and no anyOf", id, f.Name, f.Type)
			}
			if f.Description == "" {
				t.Errorf("%s.%s: no description", id, f.Name)
			}
			if f.Required {
				required = append(required, f.Name)
				if f.Default != nil {
					t.Errorf("%s.%s: required with a default", id, f.Name)
				}
			} else if f.Default != nil {
				defaults[f.Name] = f.Default
			}
		}
		if len(required) == 0 {
			t.Errorf("%s: no required field", id)
		}
		// the empty input: exactly the required fields are missing
		r := pipelinetest.Call(context.Background(), ep, map[string]any{}, nil)
		var v *pipelines.ValidationError
		if !errors.As(r.Err, &v) {
			t.Errorf("%s with {}: %v, want a validation error", id, r.Err)
			continue
		}
		var missing []string
		for _, fe := range v.Errors {
			if fe.Type != "missing" || len(fe.Loc) != 2 {
				t.Errorf("%s with {}: unexpected error %+v", id, fe)
				continue
			}
			missing = append(missing, fe.Loc[1].(string))
		}
		if slices.Sort(missing); !slices.Equal(missing, slices.Sorted(slices.Values(required))) {
			t.Errorf("%s with {}: missing %v, want %v", id, missing, required)
		}
		// every default sent explicitly passes the schema's own checks
		b, _ := json.Marshal(defaults)
		r = pipelinetest.Call(context.Background(), ep, json.RawMessage(b), nil)
		if errors.As(r.Err, &v) {
			for _, fe := range v.Errors {
				if fe.Type != "missing" {
					t.Errorf("%s: its defaults fail its checks: %+v", id, fe)
				}
			}
		}
	}
}
