package api

import (
	"encoding/json"

	"github.com/falocal/falocal/pipelines"
)

// checkJSONBody refuses a request body that is not JSON (empty included)
// at submit, with the 422 the endpoints answer for it (fal's json_invalid),
// so that it never takes a place in the queue only to fail there. Whether
// the JSON is an object with the right fields stays the endpoint's call.
func checkJSONBody(body []byte) error {
	if json.Valid(body) {
		return nil
	}
	v := &pipelines.ValidationError{}
	v.Add("", "json_invalid", "JSON decode error")
	return v
}
