package main

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfigFile checks the -config file: precedence flag > env > file >
// default, and that unknown keys, wrong types, sections and syntax errors
// are refused naming file:line and the key.
func TestConfigFile(t *testing.T) {
	for _, c := range []struct {
		name    string
		file    string
		env     map[string]string
		args    []string
		wantErr string
		check   func(*Config) bool
	}{
		{"file over default", "workers = 7\nrequest-timeout = \"90s\"\nfp16 = false\nmax-body-bytes = 1000\npreload = \"fal-ai/whisper\"\n", nil, nil, "", func(c *Config) bool {
			return c.Workers == 7 && c.RequestTimeout == 90*time.Second && !c.FP16 && c.MaxBodyBytes == 1000 &&
				c.preload && c.preloadIDs[0] == "fal-ai/whisper" && c.sources["workers"] == "file" && c.sources["listen"] == "default"
		}},
		{"env over file", "workers = 7\n", map[string]string{"FALOCAL_WORKERS": "5"}, nil, "", func(c *Config) bool {
			return c.Workers == 5 && c.sources["workers"] == "env"
		}},
		{"flag over env over file", "workers = 7\n", map[string]string{"FALOCAL_WORKERS": "5"}, []string{"-workers", "6"}, "", func(c *Config) bool {
			return c.Workers == 6 && c.sources["workers"] == "flag"
		}},
		{"preload as a boolean", "preload = true\n", nil, nil, "", func(c *Config) bool { return c.preload && c.preloadIDs == nil }},
		{"validated like flags", "workers = 0\n", nil, nil, "-workers must be at least 1", nil},
		{"unknown key", "# settings\nworkers = 2\n\nmax_conns = 3\n", nil, nil, ":4: max_conns: unknown setting", nil},
		{"wrong type", "workers = 2\nmax-conns = \"many\"\n", nil, nil, `:2: max-conns: want an integer, got "many"`, nil},
		{"bad duration", "request-timeout = \"600\"\n", nil, nil, `:1: request-timeout: want a duration`, nil},
		{"duration as a number", "request-timeout = 600\n", nil, nil, `:1: request-timeout: want a duration such as 90s or 10m, got an integer`, nil},
		{"boolean as a string", "\nfp16 = \"no\"\n", nil, nil, `:2: fp16: want true or false`, nil},
		{"section", "workers = 2\n[serve]\nlisten = \"x\"\n", nil, nil, ":2: [serve]: the file has no sections", nil},
		{"dotted key", "serve.listen = \"x\"\n", nil, nil, ":1: serve.listen: unknown setting", nil},
		{"config in the file", "config = \"other.toml\"\n", nil, nil, ":1: config: unknown setting", nil},
		{"syntax error", "workers = 2\nlisten = \n", nil, nil, ":2:", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "falocal.toml")
			if err := os.WriteFile(path, []byte(c.file), 0o644); err != nil {
				t.Fatal(err)
			}
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			cfg, _, err := parse("serve", append([]string{"-config", path}, c.args...), io.Discard, nil)
			if c.wantErr != "" {
				// Errors about one line name the file (validation's, the flag).
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || (strings.HasPrefix(c.wantErr, ":") && !strings.Contains(err.Error(), path+c.wantErr)) {
					t.Fatalf("err = %v, want one naming %s and %q", err, path, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(cfg) {
				t.Errorf("config %+v", cfg)
			}
		})
	}
}

// TestConfigFileFromEnv checks $FALOCAL_CONFIG names the file, and that a
// missing file is an error rather than silently no settings.
func TestConfigFileFromEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "falocal.toml")
	os.WriteFile(path, []byte("max-queued = 12\n"), 0o644)
	t.Setenv("FALOCAL_CONFIG", path)
	c, _, err := parse("serve", nil, io.Discard, nil)
	if err != nil || c.MaxQueued != 12 {
		t.Fatalf("max-queued %v, err %v", c, err)
	}
	t.Setenv("FALOCAL_CONFIG", path+".missing")
	if _, _, err := parse("serve", nil, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "-config") {
		t.Fatalf("missing file: err = %v", err)
	}
}

// TestConfigFileCoversFlags checks every shared flag can be set from the
// file: one key per flag, so a new flag cannot miss the file.
func TestConfigFileCoversFlags(t *testing.T) {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	c := &Config{}
	bindFlags(fs, c)
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := c.sources[f.Name]; !ok {
			t.Errorf("-%s: not a setting of the config file", f.Name)
		}
	})
}

// TestConfigCheck checks 'config check' prints every setting with its
// source, as TOML a file can take back, and never a secret.
func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "falocal.toml")
	os.WriteFile(path, []byte("keys = \"site1:s3cr3t-value,site2:0th3r\"\nmax-conns = 64\nlisten = \"0.0.0.0:8080\"\n"), 0o644)
	t.Setenv("FALOCAL_WORKERS", "3")
	var out, errb bytes.Buffer
	if code := run([]string{"config", "check", "-config", path, "-retention", "48h"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	got := out.String()
	for _, want := range []string{
		"max-conns = 64 # file\n", "workers = 3 # env $FALOCAL_WORKERS\n", `retention = "48h0m0s" # flag` + "\n",
		`listen = "0.0.0.0:8080" # file` + "\n", `keys = "site1:<redacted>,site2:<redacted>" # file` + "\n",
		"sessions = 1 # default\n", `request-timeout = "10m0s" # default` + "\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "s3cr3t") || strings.Contains(got, "0th3r") {
		t.Errorf("a secret is printed:\n%s", got)
	}
	// The output is itself a valid file (secrets aside) with the same values.
	again := filepath.Join(dir, "again.toml")
	os.WriteFile(again, []byte(strings.ReplaceAll(got, `keys = "site1:<redacted>,site2:<redacted>"`, `keys = "a:b"`)), 0o644)
	c, _, err := parse("serve", []string{"-config", again}, io.Discard, nil)
	if err != nil || c.MaxConns != 64 || c.Workers != 3 || c.Retention != 48*time.Hour {
		t.Fatalf("printed settings do not read back: %v %+v", err, c)
	}

	// Invalid settings fail, naming the problem.
	os.WriteFile(path, []byte("workers = \"four\"\n"), 0o644)
	out.Reset()
	errb.Reset()
	if code := run([]string{"config", "check", "-config", path}, &out, &errb); code == 0 || !strings.Contains(errb.String(), path+":1: workers") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	// Off loopback without keys, as serve refuses it.
	os.WriteFile(path, []byte("listen = \"0.0.0.0:8080\"\n"), 0o644)
	if code := run([]string{"config", "check", "-config", path}, &out, &errb); code == 0 {
		t.Fatal("exposure without keys passed")
	}
}
