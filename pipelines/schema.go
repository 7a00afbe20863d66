package pipelines

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Type is a JSON Schema type.
type Type string

// The JSON Schema types of input fields.
const (
	String  Type = "string"
	Integer Type = "integer"
	Number  Type = "number"
	Boolean Type = "boolean"
	Array   Type = "array"
	Object  Type = "object"
)

// Field is one input field of an endpoint. The same value validates a
// request (Schema.Decode), documents the endpoint (OpenAPI, llms.txt) and
// builds the playground's form, so the three cannot drift apart.
type Field struct {
	Name        string
	Type        Type // "" for a union (AnyOf)
	Title       string
	Description string
	Required    bool
	// Default fills the field when a request leaves it out or sends null
	// (unless Nullable); nil: no default.
	Default any
	// Nullable: an explicit null is a value of its own (e.g. "detect the
	// language"), kept as nil rather than replaced by the default.
	Nullable bool
	// Enum lists the accepted strings. With OpenEnum it lists the usual ones
	// only and the endpoint checks the value itself (e.g. voices an imported
	// pack adds).
	Enum     []string
	OpenEnum bool
	// Min and Max bound numbers (inclusive; Min exclusive with MinExclusive).
	Min, Max     *float64
	MinExclusive bool
	// MaxLength is the most characters a string may have (0: no limit).
	MaxLength int
	// Media is "image" or "audio" for URL fields that take such a file
	// (http(s) or data: URI); the playground offers a file picker.
	Media string
	// Advanced fields are folded away in forms.
	Advanced bool
	Examples []any
	// Items is an array's element.
	Items *Field
	// AnyOf documents a union (its JSON Schemas, "$ref" to a component
	// named in Components); the endpoint checks such a field itself.
	AnyOf []map[string]any
}

// Num is a bound for Field.Min and Field.Max.
func Num(v float64) *float64 { return &v }

// Schema is an endpoint's input: its fields, in the order forms show them,
// and the named object schemas its unions refer to.
type Schema struct {
	Fields     []Field
	Components map[string]map[string]any
}

// Present tells which fields a request named, null or not.
type Present map[string]bool

// Decode reads a request's JSON object into dst (a struct with a pointer or
// slice field, json-tagged, for each Field; absent fields stay nil), checks
// every field against the schema, and fills absent fields that have a
// default. All problems come back together as one *ValidationError, in
// fal's 422 shapes. Unknown fields are ignored, as fal's pydantic models do.
func (s Schema) Decode(raw json.RawMessage, dst any) (Present, error) {
	if err := DecodeInput(raw, dst); err != nil {
		return nil, err
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		return nil, err // DecodeInput accepted it: cannot happen
	}
	present := Present{}
	for k := range keys {
		present[k] = true
	}
	fields := jsonFields(reflect.ValueOf(dst).Elem())
	v := &ValidationError{}
	for _, f := range s.Fields {
		fv, ok := fields[f.Name]
		if !ok {
			return nil, fmt.Errorf("input schema: field %s has no struct field in %T", f.Name, dst)
		}
		isNull := !present[f.Name] || bytes.Equal(bytes.TrimSpace(keys[f.Name]), []byte("null"))
		switch {
		case !isNull:
			f.check(v, fv)
		case f.Required:
			v.Add(f.Name, "missing", "Field required")
		case f.Default != nil && !(f.Nullable && present[f.Name]):
			// through JSON, so a default of any Go type fills any field type
			b, err := json.Marshal(f.Default)
			if err == nil {
				err = json.Unmarshal(b, fv.Addr().Interface())
			}
			if err != nil {
				return nil, fmt.Errorf("input schema: default of %s: %w", f.Name, err)
			}
		}
	}
	return present, v.Err()
}

// jsonFields maps the JSON names of a struct's fields to the fields.
func jsonFields(sv reflect.Value) map[string]reflect.Value {
	out := map[string]reflect.Value{}
	t := sv.Type()
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out[name] = sv.Field(i)
		}
	}
	return out
}

// check validates a present, non-null value.
func (f Field) check(v *ValidationError, fv reflect.Value) {
	for fv.Kind() == reflect.Pointer {
		fv = fv.Elem()
	}
	switch fv.Kind() {
	case reflect.String:
		s := fv.String()
		if len(f.Enum) > 0 && !f.OpenEnum {
			Literal(v, f.Name, &s, "", f.Enum...)
			return
		}
		if f.Required && s == "" {
			v.Add(f.Name, "value_error", "value must not be empty")
		}
		if !utf8.ValidString(s) {
			v.Add(f.Name, "string_unicode", "Input should be a valid string")
		}
		if n := utf8.RuneCountInString(s); f.MaxLength > 0 && n > f.MaxLength {
			v.Add(f.Name, "string_too_long", fmt.Sprintf("String should have at most %d characters (it has %d)", f.MaxLength, n))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		f.bounds(v, float64(fv.Int()))
	case reflect.Float32, reflect.Float64:
		f.bounds(v, fv.Float())
	}
}

func (f Field) bounds(v *ValidationError, x float64) {
	num := func(b float64) string { return strconv.FormatFloat(b, 'f', -1, 64) }
	switch {
	case f.Min != nil && f.MinExclusive && !(x > *f.Min):
		v.Add(f.Name, "greater_than", "Input should be greater than "+num(*f.Min))
	case f.Min != nil && !f.MinExclusive && !(x >= *f.Min):
		v.Add(f.Name, "greater_than_equal", "Input should be greater than or equal to "+num(*f.Min))
	case f.Max != nil && !(x <= *f.Max):
		v.Add(f.Name, "less_than_equal", "Input should be less than or equal to "+num(*f.Max))
	}
}

// Field returns the named field.
func (s Schema) Field(name string) (Field, bool) {
	for _, f := range s.Fields {
		if f.Name == name {
			return f, true
		}
	}
	return Field{}, false
}

// Description documents an endpoint for OpenAPI, llms.txt and the
// playground.
type Description struct {
	// Title names the endpoint in a few words ("Background removal").
	Title string
	// Summary says what it does in one or two sentences.
	Summary string
	// Category groups endpoints: "image-to-image", "text-to-image",
	// "speech-to-text", "text-to-speech".
	Category string
	Input    Schema
	// Output is a value of the output type; its JSON form (json tags,
	// types) is the output schema.
	Output any
}

// Describer is an endpoint that documents itself. Every served endpoint is
// one.
type Describer interface {
	Describe() Description
}
