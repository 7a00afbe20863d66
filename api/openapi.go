package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"unicode"

	"github.com/labstack/echo/v4"

	"github.com/falocal/falocal/pipelines"
)

// The OpenAPI documents are built from each endpoint's Describe(), the same
// schema its Run validates with, so a field added to an endpoint appears in
// its validation, its document and the playground's form at once.

func (s *Server) openapiRoutes(e *echo.Echo) {
	e.GET("/openapi.json", s.openapiAll)
	e.GET("/api/openapi/queue/openapi.json", s.openapiOne)
	e.GET("/models/*", s.llmsTxt)
}

// described lists the served endpoints that document themselves, by id.
func (s *Server) described() []describedEndpoint {
	var out []describedEndpoint
	for _, id := range s.cfg.Registry.IDs() {
		ep, _ := s.cfg.Registry.Lookup(id)
		if d, ok := ep.(pipelines.Describer); ok {
			out = append(out, describedEndpoint{id, d.Describe()})
		}
	}
	return out
}

type describedEndpoint struct {
	id string
	d  pipelines.Description
}

func (s *Server) openapiAll(c echo.Context) error {
	return c.JSON(http.StatusOK, openapiDoc(origin(c.Request()), "falocal", s.described()))
}

func (s *Server) openapiOne(c echo.Context) error {
	id := c.QueryParam("endpoint_id")
	for _, de := range s.described() {
		if de.id == id {
			return c.JSON(http.StatusOK, openapiDoc(origin(c.Request()), id, []describedEndpoint{de}))
		}
	}
	return &pipelines.HTTPError{Status: http.StatusNotFound, Msg: fmt.Sprintf("endpoint %q is not served here (see /openapi.json for those that are)", id)}
}

// schemaName is fal's component name for an endpoint: "fal-ai/flux/dev" →
// "FluxDev".
func schemaName(id string) string {
	_, rest, ok := strings.Cut(id, "/")
	if !ok {
		rest = id
	}
	var b strings.Builder
	up := true
	for _, r := range rest {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			if up {
				r = unicode.ToUpper(r)
			}
			b.WriteRune(r)
			up = false
		default:
			up = true
		}
	}
	return b.String()
}

// openapiDoc is the OpenAPI 3.1 document of the endpoints, on the queue
// paths fal's model pages document.
func openapiDoc(server, title string, eps []describedEndpoint) map[string]any {
	g := &schemaGen{components: map[string]any{}, names: map[reflect.Type]string{}}
	g.components["QueueStatus"] = queueStatusSchema
	g.components["HTTPValidationError"] = validationErrorSchema
	g.components["Error"] = map[string]any{"type": "object", "title": "Error", "required": []string{"detail"},
		"properties": map[string]any{"detail": map[string]any{"type": "string"}}}
	paths := map[string]any{}
	ref := func(name string) map[string]any { return map[string]any{"$ref": "#/components/schemas/" + name} }
	jsonBody := func(desc string, schema map[string]any) map[string]any {
		return map[string]any{"description": desc, "content": map[string]any{"application/json": map[string]any{"schema": schema}}}
	}
	reqID := map[string]any{"name": "request_id", "in": "path", "required": true, "description": "The request id the submission returned.",
		"schema": map[string]any{"type": "string"}}
	errs := map[string]any{
		"401": jsonBody("A key is missing or not valid (servers run with -keys).", ref("Error")),
		"404": jsonBody("No such request.", ref("Error")),
	}
	for _, de := range eps {
		name := schemaName(de.id)
		in, out := name+"Input", name+"Output"
		g.components[in] = inputSchema(in, de.d.Input)
		for k, v := range de.d.Input.Components {
			g.components[k] = v
		}
		g.components[out] = g.typeSchema(reflect.TypeOf(de.d.Output), out, true)
		tags := []string{de.id}
		paths["/"+de.id] = map[string]any{"post": map[string]any{
			"operationId": "submit" + name, "tags": tags, "summary": de.d.Title, "description": de.d.Summary,
			"x-fal-endpoint-id": de.id, "x-fal-category": de.d.Category,
			"parameters": []any{map[string]any{"name": "fal_webhook", "in": "query", "required": false,
				"description": "A URL this server POSTs the result to when the request completes (signed as fal signs webhooks).",
				"schema":      map[string]any{"type": "string", "format": "uri"}}},
			"requestBody": map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": ref(in)}}},
			"responses": map[string]any{
				"200": jsonBody("The request is queued.", ref("QueueStatus")),
				"422": jsonBody("The input is not valid.", ref("HTTPValidationError")),
				"429": jsonBody("The queue is full; retry after the Retry-After header's seconds.", ref("Error")),
				"401": errs["401"],
			},
		}}
		base := "/" + de.id + "/requests/{request_id}"
		paths[base+"/status"] = map[string]any{"get": map[string]any{
			"operationId": "status" + name, "tags": tags, "summary": "The request's queue status",
			"parameters": []any{reqID, map[string]any{"name": "logs", "in": "query", "required": false,
				"description": "1 to include the request's log lines.", "schema": map[string]any{"type": "integer", "enum": []int{0, 1}}}},
			"responses": map[string]any{
				"200": jsonBody("The request has completed.", ref("QueueStatus")),
				"202": jsonBody("The request is queued or running.", ref("QueueStatus")),
				"401": errs["401"], "404": errs["404"],
			},
		}}
		paths[base+"/cancel"] = map[string]any{"put": map[string]any{
			"operationId": "cancel" + name, "tags": tags, "summary": "Cancel the request (queued or running)",
			"parameters": []any{reqID},
			"responses": map[string]any{
				"202": jsonBody("Cancellation requested.", cancelSchema("CANCELLATION_REQUESTED")),
				"400": jsonBody("The request had already completed.", cancelSchema("ALREADY_COMPLETED")),
				"401": errs["401"], "404": errs["404"],
			},
		}}
		paths[base] = map[string]any{"get": map[string]any{
			"operationId": "result" + name, "tags": tags, "summary": "The request's result",
			"parameters": []any{reqID},
			"responses": map[string]any{
				"200": jsonBody("The result.", ref(out)),
				"400": jsonBody("The request has not completed yet.", ref("Error")),
				"422": jsonBody("The input was not valid (found when it ran).", ref("HTTPValidationError")),
				"401": errs["401"], "404": errs["404"],
			},
		}}
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{"title": title, "version": "1.0.0",
			"description": "fal-compatible queue API of a falocal server. Submit with POST /{endpoint_id}, follow the status, fetch the result."},
		"servers": []any{map[string]any{"url": server}},
		"paths":   paths,
		"components": map[string]any{
			"schemas": g.components,
			"securitySchemes": map[string]any{"apiKeyAuth": map[string]any{"type": "apiKey", "in": "header", "name": "Authorization",
				"description": "Key <key_id:key_secret>, when the server runs with -keys."}},
		},
		"security": []any{map[string]any{"apiKeyAuth": []any{}}, map[string]any{}},
	}
}

func cancelSchema(status string) map[string]any {
	return map[string]any{"type": "object", "required": []string{"status"},
		"properties": map[string]any{"status": map[string]any{"type": "string", "enum": []string{status}}}}
}

var queueStatusSchema = map[string]any{
	"type": "object", "title": "QueueStatus", "required": []string{"status", "request_id"},
	"properties": map[string]any{
		"status":             map[string]any{"type": "string", "enum": []string{"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}},
		"request_id":         map[string]any{"type": "string"},
		"gateway_request_id": map[string]any{"type": "string"},
		"response_url":       map[string]any{"type": "string", "format": "uri"},
		"status_url":         map[string]any{"type": "string", "format": "uri"},
		"cancel_url":         map[string]any{"type": "string", "format": "uri"},
		"queue_position":     map[string]any{"type": "integer", "minimum": 0},
		"logs": map[string]any{"type": []string{"array", "null"}, "items": map[string]any{"type": "object",
			"properties": map[string]any{"message": map[string]any{"type": "string"}, "level": map[string]any{"type": "string"},
				"source": map[string]any{"type": "string"}, "timestamp": map[string]any{"type": "string"}}}},
		"metrics":    map[string]any{"type": "object", "properties": map[string]any{"inference_time": map[string]any{"type": []string{"number", "null"}}}},
		"error":      map[string]any{"type": "string"},
		"error_type": map[string]any{"type": "string"},
	},
}

var validationErrorSchema = map[string]any{
	"type": "object", "title": "HTTPValidationError",
	"properties": map[string]any{"detail": map[string]any{"type": "array", "items": map[string]any{
		"type": "object", "title": "ValidationError", "required": []string{"loc", "msg", "type"},
		"properties": map[string]any{
			"loc":  map[string]any{"type": "array", "items": map[string]any{"anyOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}},
			"msg":  map[string]any{"type": "string"},
			"type": map[string]any{"type": "string"},
		}}}},
}

// fieldTitle is fal's title for a field: "image_url" → "Image Url".
func fieldTitle(f pipelines.Field) string {
	if f.Title != "" {
		return f.Title
	}
	words := strings.Split(f.Name, "_")
	for i, w := range words {
		if w != "" {
			words[i] = strings.ToUpper(w[:1]) + w[1:]
		}
	}
	return strings.Join(words, " ")
}

func inputSchema(title string, s pipelines.Schema) map[string]any {
	props := map[string]any{}
	order := []string{}
	required := []string{}
	for _, f := range s.Fields {
		props[f.Name] = fieldSchema(f)
		order = append(order, f.Name)
		if f.Required {
			required = append(required, f.Name)
		}
	}
	return map[string]any{"type": "object", "title": title, "properties": props, "required": required,
		"x-fal-order-properties": order}
}

// fieldSchema is the JSON Schema of one input field, with fal's and our
// extensions for forms (x-fal-media, x-fal-advanced, x-fal-choices).
func fieldSchema(f pipelines.Field) map[string]any {
	m := map[string]any{}
	if f.Type != "" {
		m["type"] = string(f.Type)
	}
	if f.Name != "" {
		m["title"] = fieldTitle(f)
	}
	if f.Description != "" {
		m["description"] = f.Description
	}
	if f.Default != nil {
		m["default"] = f.Default
	}
	if len(f.Enum) > 0 {
		if f.OpenEnum {
			m["x-fal-choices"] = f.Enum
		} else {
			m["enum"] = f.Enum
		}
	}
	if f.Min != nil {
		if f.MinExclusive {
			m["exclusiveMinimum"] = *f.Min
		} else {
			m["minimum"] = *f.Min
		}
	}
	if f.Max != nil {
		m["maximum"] = *f.Max
	}
	if f.MaxLength > 0 {
		m["maxLength"] = f.MaxLength
	}
	if f.Media != "" {
		m["x-fal-media"] = f.Media
	}
	if f.Advanced {
		m["x-fal-advanced"] = true
	}
	if len(f.Examples) > 0 {
		m["examples"] = f.Examples
	}
	if f.Items != nil {
		m["items"] = fieldSchema(*f.Items)
	}
	if len(f.AnyOf) > 0 {
		anyOf := make([]any, len(f.AnyOf))
		for i, a := range f.AnyOf {
			anyOf[i] = a
		}
		m["anyOf"] = anyOf
	}
	return m
}

// schemaGen turns Go output types into JSON Schemas; named structs become
// components (fal's "Image", "File", …).
type schemaGen struct {
	components map[string]any
	names      map[reflect.Type]string
}

// componentName is the component a named struct type becomes.
func (g *schemaGen) componentName(t reflect.Type) string {
	if n, ok := g.names[t]; ok {
		return n
	}
	n := t.Name()
	if n == "ImageFile" {
		n = "Image" // fal's name for it
	}
	if _, taken := g.components[n]; taken {
		n = schemaName("x/"+t.PkgPath()) + n
	}
	g.names[t] = n
	return n
}

// typeSchema is t's JSON Schema; top is the component being written (a
// top-level output is written inline under its endpoint's name).
func (g *schemaGen) typeSchema(t reflect.Type, title string, top bool) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 { // json.RawMessage, []byte
			return map[string]any{}
		}
		return map[string]any{"type": "array", "items": g.typeSchema(t.Elem(), "", false)}
	case reflect.Array:
		return map[string]any{"type": "array", "items": g.typeSchema(t.Elem(), "", false), "minItems": t.Len(), "maxItems": t.Len()}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.typeSchema(t.Elem(), "", false)}
	case reflect.Struct:
		if !top && t.Name() != "" {
			name := g.componentName(t)
			if _, done := g.components[name]; !done {
				g.components[name] = map[string]any{} // reserve: recursive types
				g.components[name] = g.typeSchema(t, name, true)
			}
			return map[string]any{"$ref": "#/components/schemas/" + name}
		}
		props := map[string]any{}
		order := []string{}
		required := []string{}
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			tag := sf.Tag.Get("json")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" || !sf.IsExported() {
				continue
			}
			if name == "" {
				name = sf.Name
			}
			p := g.typeSchema(sf.Type, "", false)
			props[name] = p
			order = append(order, name)
			if !strings.Contains(opts, "omitempty") {
				required = append(required, name)
			}
		}
		m := map[string]any{"type": "object", "properties": props, "required": required, "x-fal-order-properties": order}
		if title != "" {
			m["title"] = title
		}
		return m
	}
	return map[string]any{}
}

// llmsTxt is fal's plain-text model page, /models/{endpoint-id}/llms.txt:
// what the endpoint does, its input and output fields with their defaults
// and bounds, and the same call from each client.
func (s *Server) llmsTxt(c echo.Context) error {
	id, ok := strings.CutSuffix(strings.Trim(c.Param("*"), "/"), "/llms.txt")
	if !ok {
		return &pipelines.HTTPError{Status: http.StatusNotFound, Msg: "Path " + c.Request().URL.Path + " not found (model pages are /models/{endpoint-id}/llms.txt)"}
	}
	for _, de := range s.described() {
		if de.id == id {
			c.Response().Header().Set("Content-Type", "text/plain; charset=utf-8")
			return c.String(http.StatusOK, llmsText(origin(c.Request()), de))
		}
	}
	return &pipelines.HTTPError{Status: http.StatusNotFound, Msg: fmt.Sprintf("endpoint %q is not served here", id)}
}

func llmsText(base string, de describedEndpoint) string {
	var b strings.Builder
	d := de.d
	fmt.Fprintf(&b, "# %s\n\n> %s\n\n", d.Title, d.Summary)
	fmt.Fprintf(&b, "- Endpoint: `%s`\n- Category: %s\n- Base URL: %s\n- OpenAPI: %s/api/openapi/queue/openapi.json?endpoint_id=%s\n\n",
		de.id, d.Category, base, base, de.id)
	b.WriteString("## Input\n\n")
	example := map[string]any{}
	for _, f := range d.Input.Fields {
		typ := string(f.Type)
		if typ == "" {
			typ = "preset name or {width, height}"
		}
		fmt.Fprintf(&b, "- `%s` (%s", f.Name, typ)
		if f.Required {
			b.WriteString(", required")
		}
		b.WriteString(")")
		if f.Description != "" {
			b.WriteString(": " + f.Description)
		}
		var facts []string
		if f.Default != nil {
			facts = append(facts, fmt.Sprintf("default: `%s`", jsonText(f.Default)))
		}
		if len(f.Enum) > 0 {
			what := "one of"
			if f.OpenEnum {
				what = "for example"
			}
			facts = append(facts, what+": "+quoteAll(f.Enum))
		}
		if f.Min != nil {
			rel := "≥"
			if f.MinExclusive {
				rel = ">"
			}
			facts = append(facts, fmt.Sprintf("%s %v", rel, *f.Min))
		}
		if f.Max != nil {
			facts = append(facts, fmt.Sprintf("≤ %v", *f.Max))
		}
		if f.MaxLength > 0 {
			facts = append(facts, fmt.Sprintf("at most %d characters", f.MaxLength))
		}
		if len(facts) > 0 {
			b.WriteString(" (" + strings.Join(facts, "; ") + ")")
		}
		b.WriteString("\n")
		switch {
		case f.Required && f.Media != "":
			example[f.Name] = nil // a local file, in each client's way
		case f.Required && len(f.Examples) > 0:
			example[f.Name] = f.Examples[0]
		}
	}
	b.WriteString("\n## Output\n\n")
	g := &schemaGen{components: map[string]any{}, names: map[reflect.Type]string{}}
	out := g.typeSchema(reflect.TypeOf(d.Output), "", true)
	props, _ := out["properties"].(map[string]any)
	order, _ := out["x-fal-order-properties"].([]string)
	for _, name := range order {
		fmt.Fprintf(&b, "- `%s`: %s\n", name, describeType(props[name].(map[string]any), g))
	}
	b.WriteString(callSnippets(base, de.id, d.Input, example))
	return b.String()
}

// callSnippets shows the same call from each client. Files are local: this
// server reads no remote URL unless allowed, so a media field is a file
// the client uploads (or, for curl, a data: URI built from it).
func callSnippets(base, id string, in pipelines.Schema, example map[string]any) string {
	var b strings.Builder
	files := map[string]string{}
	for _, f := range in.Fields {
		if _, ok := example[f.Name]; ok && f.Media != "" {
			files[f.Name] = exampleFile(f)
		}
	}
	// the input with a placeholder per file, which each client fills its way
	literal := func(fileExpr func(name, file string) string) string {
		var parts []string
		for _, f := range in.Fields {
			v, ok := example[f.Name]
			if !ok {
				continue
			}
			if file, ok := files[f.Name]; ok {
				parts = append(parts, fmt.Sprintf("%q: %s", f.Name, fileExpr(f.Name, file)))
			} else {
				parts = append(parts, fmt.Sprintf("%q: %s", f.Name, jsonText(v)))
			}
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	b.WriteString("\n## Calling it\n\nJavaScript (`@fal-ai/client`):\n\n```js\nimport { fal } from \"@fal-ai/client\";\n")
	if len(files) > 0 {
		b.WriteString("import { readFile } from \"node:fs/promises\";\n")
	}
	fmt.Fprintf(&b, "fal.config({ proxyUrl: { url: %q, when: \"always\" } });\n", base+"/fal/proxy")
	for _, f := range in.Fields {
		if file, ok := files[f.Name]; ok {
			fmt.Fprintf(&b, "const %s = await fal.storage.upload(new Blob([await readFile(%q)]));\n", jsVar(f.Name), file)
		}
	}
	fmt.Fprintf(&b, "const result = await fal.subscribe(%q, { input: %s, logs: true });\nconsole.log(result.data);\n```\n\n",
		id, literal(func(name, _ string) string { return jsVar(name) }))
	fmt.Fprintf(&b, "Python (`fal-client`):\n\n```sh\nexport HTTPS_PROXY=%s SSL_CERT_FILE=ca.pem FAL_KEY=local:local  # ca.pem from %s/ca.pem\n```\n\n```python\nimport fal_client\n", base, base)
	for _, f := range in.Fields {
		if file, ok := files[f.Name]; ok {
			fmt.Fprintf(&b, "%s = fal_client.upload_file(%q)\n", f.Name, file)
		}
	}
	fmt.Fprintf(&b, "result = fal_client.subscribe(%q, arguments=%s, with_logs=True)\nprint(result)\n```\n\n",
		id, literal(func(name, _ string) string { return name }))
	fmt.Fprintf(&b, "Shell (`falocal run` uploads local files and downloads the outputs):\n\n```sh\nfalocal run %s", id)
	for _, f := range in.Fields {
		v, ok := example[f.Name]
		switch {
		case !ok:
		case files[f.Name] != "":
			fmt.Fprintf(&b, " %s=@%s", f.Name, files[f.Name])
		default:
			if str, isStr := v.(string); isStr {
				fmt.Fprintf(&b, " %s=%s", f.Name, shellQuote(str))
			} else {
				fmt.Fprintf(&b, " %s:=%s", f.Name, shellQuote(jsonText(v)))
			}
		}
	}
	fmt.Fprintf(&b, " -o out/ --url %s\n```\n\ncurl (the body in a file: a data: URI is too long for a command line):\n\n```sh\n", base)
	if len(files) == 0 {
		fmt.Fprintf(&b, "echo %s > request.json\n", shellQuote(literal(nil)))
	} else {
		// the JSON around each file's data: URI, written piece by piece
		var cmds []string
		pending := "{"
		for _, f := range in.Fields {
			v, ok := example[f.Name]
			if !ok {
				continue
			}
			if pending != "{" {
				pending += ", "
			}
			file, isFile := files[f.Name]
			if !isFile {
				pending += fmt.Sprintf("%q: %s", f.Name, jsonText(v))
				continue
			}
			pending += fmt.Sprintf("%q: \"data:%s;base64,", f.Name, mimeOf(file))
			cmds = append(cmds, "printf '%s' "+shellQuote(pending), "base64 -w0 "+file)
			pending = "\""
		}
		cmds = append(cmds, "printf '%s' "+shellQuote(pending+"}"))
		fmt.Fprintf(&b, "{ %s; } > request.json\n", strings.Join(cmds, "; "))
	}
	fmt.Fprintf(&b, "curl -s %s/run/%s -H 'Content-Type: application/json' --data @request.json\n```\n", base, id)
	return b.String()
}

// exampleFile names the local file a snippet uploads for a media field.
func exampleFile(f pipelines.Field) string {
	switch {
	case f.Media == "audio":
		return "speech.wav"
	case f.Name == "image_url":
		return "photo.jpg"
	}
	return strings.TrimSuffix(f.Name, "_url") + ".png"
}

func mimeOf(file string) string {
	switch {
	case strings.HasSuffix(file, ".jpg"):
		return "image/jpeg"
	case strings.HasSuffix(file, ".wav"):
		return "audio/wav"
	}
	return "image/png"
}

// jsVar is a field's name as a JavaScript variable: "image_url" → "imageUrl".
func jsVar(name string) string {
	parts := strings.Split(name, "_")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}

// describeType says in words what an output schema is.
func describeType(m map[string]any, g *schemaGen) string {
	if r, ok := m["$ref"].(string); ok {
		name := strings.TrimPrefix(r, "#/components/schemas/")
		c, _ := g.components[name].(map[string]any)
		order, _ := c["x-fal-order-properties"].([]string)
		return name + " {" + strings.Join(order, ", ") + "}"
	}
	switch m["type"] {
	case "array":
		return "array of " + describeType(m["items"].(map[string]any), g)
	case "object":
		if ap, ok := m["additionalProperties"].(map[string]any); ok {
			return "object of " + describeType(ap, g)
		}
	case nil:
		return "any JSON value"
	}
	return fmt.Sprint(m["type"])
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func quoteAll(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = "`" + x + "`"
	}
	return strings.Join(q, ", ")
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
