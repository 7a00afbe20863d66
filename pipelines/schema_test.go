package pipelines_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/falocal/falocal/pipelines"
)

type schemaInput struct {
	URL    *string          `json:"url"`
	Mode   *string          `json:"mode"`
	Voice  *string          `json:"voice"`
	Steps  *int             `json:"steps"`
	Scale  *float64         `json:"scale"`
	Flag   *bool            `json:"flag"`
	Lang   *string          `json:"lang"`
	Text   *string          `json:"text"`
	Extras []map[string]any `json:"extras"`
}

var testSchema = pipelines.Schema{Fields: []pipelines.Field{
	{Name: "url", Type: pipelines.String, Required: true},
	{Name: "mode", Type: pipelines.String, Enum: []string{"a", "b"}, Default: "a"},
	{Name: "voice", Type: pipelines.String, Enum: []string{"v1"}, OpenEnum: true, Default: "v1"},
	{Name: "steps", Type: pipelines.Integer, Default: 4, Min: pipelines.Num(1), Max: pipelines.Num(8)},
	{Name: "scale", Type: pipelines.Number, Default: 0.5, Min: pipelines.Num(0), MinExclusive: true, Max: pipelines.Num(1)},
	{Name: "flag", Type: pipelines.Boolean, Default: true},
	{Name: "lang", Type: pipelines.String, Default: "en", Nullable: true},
	{Name: "text", Type: pipelines.String, MaxLength: 3},
	{Name: "extras", Type: pipelines.Array, Default: []any{}},
}}

// Decode checks each field as its Field says, all problems at once, and
// fills defaults for absent fields (and for null unless Nullable).
func TestSchemaDecode(t *testing.T) {
	type errs map[string]string // field → error type
	cases := []struct {
		name string
		in   string
		want errs
		// check the decoded values (valid inputs only)
		check func(t *testing.T, in schemaInput, given pipelines.Present)
	}{
		{"defaults", `{"url": "x"}`, nil, func(t *testing.T, in schemaInput, given pipelines.Present) {
			if *in.Mode != "a" || *in.Voice != "v1" || *in.Steps != 4 || *in.Scale != 0.5 || !*in.Flag || *in.Lang != "en" || in.Text != nil || in.Extras == nil {
				t.Errorf("defaults not filled: %+v", in)
			}
			if !given["url"] || given["mode"] {
				t.Errorf("given = %v", given)
			}
		}},
		{"null takes the default, unless nullable", `{"url": "x", "mode": null, "lang": null}`, nil, func(t *testing.T, in schemaInput, given pipelines.Present) {
			if *in.Mode != "a" || in.Lang != nil || !given["lang"] {
				t.Errorf("mode %v lang %v given %v", in.Mode, in.Lang, given)
			}
		}},
		{"values kept", `{"url": "x", "mode": "b", "voice": "imported", "steps": 8, "scale": 1, "flag": false, "text": "abc"}`, nil,
			func(t *testing.T, in schemaInput, _ pipelines.Present) {
				if *in.Mode != "b" || *in.Voice != "imported" || *in.Steps != 8 || *in.Scale != 1 || *in.Flag || *in.Text != "abc" {
					t.Errorf("values changed: %+v", in)
				}
			}},
		{"missing", `{}`, errs{"url": "missing"}, nil},
		{"required null", `{"url": null}`, errs{"url": "missing"}, nil},
		{"required empty", `{"url": ""}`, errs{"url": "value_error"}, nil},
		{"enum", `{"url": "x", "mode": "c"}`, errs{"mode": "literal_error"}, nil},
		{"below", `{"url": "x", "steps": 0}`, errs{"steps": "greater_than_equal"}, nil},
		{"above", `{"url": "x", "steps": 9}`, errs{"steps": "less_than_equal"}, nil},
		{"exclusive minimum", `{"url": "x", "scale": 0}`, errs{"scale": "greater_than"}, nil},
		{"too long", `{"url": "x", "text": "abcd"}`, errs{"text": "string_too_long"}, nil},
		{"all at once", `{"mode": "z", "steps": 100}`, errs{"url": "missing", "mode": "literal_error", "steps": "less_than_equal"}, nil},
		{"wrong type", `{"url": "x", "steps": "four"}`, errs{"steps": "int_type"}, nil},
		{"not an object", `[1]`, errs{"": "model_attributes_type"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var in schemaInput
			given, err := testSchema.Decode(json.RawMessage(c.in), &in)
			if c.want == nil {
				if err != nil {
					t.Fatalf("error %v", err)
				}
				c.check(t, in, given)
				return
			}
			var v *pipelines.ValidationError
			if !errors.As(err, &v) {
				t.Fatalf("error %v, want a validation error", err)
			}
			got := errs{}
			for _, fe := range v.Errors {
				field := ""
				if len(fe.Loc) > 1 {
					field, _ = fe.Loc[1].(string)
				}
				got[field] = fe.Type
			}
			if len(got) != len(c.want) {
				t.Fatalf("errors %v, want %v", got, c.want)
			}
			for f, typ := range c.want {
				if got[f] != typ {
					t.Errorf("%s: %q, want %q (all: %v)", f, got[f], typ, v.Errors)
				}
			}
		})
	}
	// a schema naming a field the struct lacks is a programming error,
	// reported rather than ignored
	bad := pipelines.Schema{Fields: []pipelines.Field{{Name: "nope", Type: pipelines.String}}}
	var in schemaInput
	if _, err := bad.Decode(json.RawMessage(`{}`), &in); err == nil {
		t.Error("a field without a struct field was accepted")
	}
}
