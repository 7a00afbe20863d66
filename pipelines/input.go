package pipelines

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// DecodeInput unmarshals a JSON object into dst (a struct of pointer fields,
// so that absent fields stay nil) and turns JSON problems into fal's 422
// shapes. Unknown fields are ignored, as fal's pydantic models do.
func DecodeInput(raw json.RawMessage, dst any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		v := &ValidationError{}
		if len(raw) > 0 && json.Valid(raw) {
			v.Add("", "model_attributes_type", "Input should be a valid dictionary or object to extract fields from")
		} else {
			v.Add("", "json_invalid", "JSON decode error")
		}
		return v
	}
	err := json.Unmarshal(raw, dst)
	if err == nil {
		return nil
	}
	v := &ValidationError{}
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		typ, msg := pydanticType(te.Type.String())
		v.Add(te.Field, typ, msg)
	case errors.As(err, &se):
		v.Add("", "json_invalid", fmt.Sprintf("JSON decode error at offset %d", se.Offset))
	default:
		v.Add("", "value_error", err.Error())
	}
	return v
}

func pydanticType(goType string) (string, string) {
	t := strings.TrimPrefix(goType, "*")
	switch {
	case t == "string":
		return "string_type", "Input should be a valid string"
	case t == "bool":
		return "bool_type", "Input should be a valid boolean"
	case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint"):
		return "int_type", "Input should be a valid integer"
	case strings.HasPrefix(t, "float"):
		return "float_type", "Input should be a valid number"
	case strings.HasPrefix(t, "[]"):
		return "list_type", "Input should be a valid list"
	}
	return "model_type", "Input should be a valid object"
}

// Literal checks an optional enum field: nil → def; otherwise the value must
// be one of allowed.
func Literal(v *ValidationError, field string, val *string, def string, allowed ...string) string {
	if val == nil {
		return def
	}
	for _, a := range allowed {
		if *val == a {
			return a
		}
	}
	q := make([]string, len(allowed))
	for i, a := range allowed {
		q[i] = "'" + a + "'"
	}
	list := strings.Join(q, ", ")
	if n := len(q); n > 1 {
		list = strings.Join(q[:n-1], ", ") + " or " + q[n-1]
	}
	v.Add(field, "literal_error", "Input should be "+list)
	return def
}

// Required checks a required string field.
func Required(v *ValidationError, field string, val *string) string {
	if val == nil {
		v.Add(field, "missing", "Field required")
		return ""
	}
	if *val == "" {
		v.Add(field, "value_error", "value must not be empty")
	}
	return *val
}

// Bool returns *b or def.
func Bool(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}
