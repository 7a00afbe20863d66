package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// configFile is a parsed -config file: a flat TOML table whose keys are the
// shared flags' names (max-conns = 100), each remembered with its line for
// the errors.
type configFile struct {
	path string
	vals map[string]any
	line map[string]int
	used map[string]bool
}

// loadConfigFile reads and parses path. Sections, dotted keys and syntax
// errors are refused here; unknown keys and wrong types once the flags are
// bound (checkUnused, configFile.value).
func loadConfigFile(path string) (*configFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-config: %w", err)
	}
	f := &configFile{path: path, vals: map[string]any{}, line: map[string]int{}, used: map[string]bool{}}
	if err := toml.Unmarshal(data, &f.vals); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, _ := de.Position()
			return nil, fmt.Errorf("%s:%d: %s", path, row, de.Error())
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// The decoder keeps no positions: the parser's nodes have them.
	p := unstable.Parser{KeepComments: false}
	p.Reset(data)
	for p.NextExpression() {
		n := p.Expression()
		if n.Kind != unstable.KeyValue && n.Kind != unstable.Table && n.Kind != unstable.ArrayTable {
			continue
		}
		var parts []string
		line := 0
		for it := n.Key(); it.Next(); {
			k := it.Node()
			if line == 0 && k.Raw.Length > 0 {
				line = p.Shape(k.Raw).Start.Line
			}
			parts = append(parts, string(k.Data))
		}
		key := strings.Join(parts, ".")
		if n.Kind != unstable.KeyValue {
			return nil, fmt.Errorf("%s:%d: [%s]: the file has no sections: one setting a line, named as its flag (max-conns = 100)", path, line, key)
		}
		if len(parts) > 1 {
			return nil, fmt.Errorf("%s:%d: %s: unknown setting (settings are flag names, with no dots)", path, line, key)
		}
		f.line[key] = line
	}
	if err := p.Error(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// where is "file:line: key" for errors about one setting.
func (f *configFile) where(key string) string {
	return fmt.Sprintf("%s:%d: %s", f.path, f.line[key], key)
}

// value is the file's setting for the flag name, if any, marking it used.
func (f *configFile) value(name string) (any, bool) {
	if f == nil {
		return nil, false
	}
	v, ok := f.vals[name]
	if ok {
		f.used[name] = true
	}
	return v, ok
}

// checkUnused refuses settings that name no shared flag, in file order.
func (f *configFile) checkUnused() error {
	if f == nil {
		return nil
	}
	bad := ""
	for k := range f.vals {
		if !f.used[k] && (bad == "" || f.line[k] < f.line[bad]) {
			bad = k
		}
	}
	if bad == "" {
		return nil
	}
	return fmt.Errorf("%s: unknown setting (the file takes the shared flags' names; see docs/configuration.md)", f.where(bad))
}

// tomlType names a decoded TOML value's type for errors.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("a %T", v)
}
