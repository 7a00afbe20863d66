package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// flagSetHook, when set, is shown every flag set parse builds, after all of
// its flags are defined. configReference uses it to see the commands' real
// flag sets, shared and extra flags alike.
var flagSetHook func(*flag.FlagSet)

// docCommands are the commands the configuration reference documents, each
// with the arguments that make it build its flag set and stop at -h.
var docCommands = []struct {
	title string
	run   func() error
}{
	{"serve", func() error { return serveCmd(context.Background(), []string{"-h"}, io.Discard) }},
	{"setup", func() error { return setupCmd(context.Background(), []string{"-h"}, io.Discard, io.Discard) }},
	{"weights list, verify, install, remove", func() error {
		return weightsCmd(context.Background(), []string{"list", "-h"}, io.Discard, io.Discard)
	}},
	{"weights import", func() error {
		return weightsCmd(context.Background(), []string{"import", "-h"}, io.Discard, io.Discard)
	}},
	{"weights export", func() error {
		return weightsCmd(context.Background(), []string{"export", "-h"}, io.Discard, io.Discard)
	}},
	{"weights convert", func() error {
		return weightsCmd(context.Background(), []string{"convert", "-h"}, io.Discard, io.Discard)
	}},
	{"bundle create", func() error {
		return bundleCmd(context.Background(), []string{"create", "-h"}, io.Discard, io.Discard)
	}},
	{"bundle install", func() error {
		return bundleCmd(context.Background(), []string{"install", "-h"}, io.Discard, io.Discard)
	}},
	{"bundle inspect", func() error {
		return bundleCmd(context.Background(), []string{"inspect", "-h"}, io.Discard, io.Discard)
	}},
	{"queue check, repair, restore", func() error {
		return queueCmd(context.Background(), []string{"check", "-h"}, io.Discard, io.Discard)
	}},
	{"queue backup", func() error {
		return queueCmd(context.Background(), []string{"backup", "-h"}, io.Discard, io.Discard)
	}},
	{"config check", func() error {
		return configCmd(context.Background(), []string{"check", "-h"}, io.Discard, io.Discard)
	}},
}

// envSuffix is how bindFlags names a flag's environment variable: at the
// end of its usage.
var envSuffix = regexp.MustCompile(`\s*\(\$([A-Z0-9_]+)\)$`)

// configReference renders docs/configuration.md from the flag sets the
// commands build. Defaults depend on the environment (every shared flag's
// variable, $HOME, $XDG_DATA_HOME, $XDG_CACHE_HOME,
// $ONNXRUNTIME_SHARED_LIBRARY_PATH), so it renders them with those unset
// and HOME=~, restoring the environment afterwards; it is not safe to call
// while other goroutines read the environment or parse flags.
func configReference() (string, error) {
	restore := neutralEnv()
	defer restore()

	shared := flag.NewFlagSet("shared", flag.ContinueOnError)
	bindFlags(shared, &Config{})

	var b strings.Builder
	b.WriteString(`# Configuration reference

<!-- Generated from the flag sets in cmd/falocal; do not edit by hand.
     Regenerate: go test ./cmd/falocal -run TestConfigReference -update -->

Every command (` + "`falocal serve`" + `, ` + "`setup`" + `, ` + "`weights …`" + `, ` + "`bundle …`" + `, ` + "`queue …`" + `, ` + "`config check`" + `) takes the shared flags below. Each
shared flag has an environment variable; when set, it becomes the flag's default. ` + "`falocal CMD -h`" + ` lists a
command's flags. Defaults here are those of an empty environment; ` + "`~`" + ` is the home directory
(` + "`$XDG_DATA_HOME`" + ` and ` + "`$XDG_CACHE_HOME`" + `, when set, replace ` + "`~/.local/share`" + ` and ` + "`~/.cache`" + `).

## Config file

` + "`-config FILE`" + ` (or ` + "`$FALOCAL_CONFIG`" + `) reads the shared flags from a TOML file: one setting a line, each
named exactly as its flag without the dash, no sections. Durations and lists are strings, sizes and counts
integers, switches booleans (` + "`preload`" + ` takes either ` + "`true`" + ` or a string of endpoint ids). A flag on
the command line beats its environment variable, which beats the file, which beats the built-in default.
Unknown keys and values of the wrong type are refused with the file's name, the line and the key.

` + "```toml" + `
# /etc/falocal/falocal.toml
listen = "0.0.0.0:8080"
keys = "site1:change-me"
data-dir = "/var/lib/falocal"
max-conns = 512
request-timeout = "15m"
preload = "fal-ai/imageutils/rembg,fal-ai/whisper"
` + "```" + `

` + "`falocal config check [-config FILE] [flags]`" + ` validates the settings as ` + "`serve`" + ` would and prints the
effective ones in the same format, each with where it came from (` + "`flag`" + `, ` + "`env`" + `, ` + "`file`" + ` or
` + "`default`" + `); secrets (the secrets of ` + "`keys`" + `) are redacted.

## Shared flags

`)
	writeFlagTable(&b, shared, nil)

	for _, cmd := range docCommands {
		var fs *flag.FlagSet
		flagSetHook = func(s *flag.FlagSet) { fs = s }
		err := cmd.run()
		flagSetHook = nil
		if err != flag.ErrHelp {
			return "", fmt.Errorf("%s -h: want flag.ErrHelp, got %v", cmd.title, err)
		}
		if fs == nil {
			return "", fmt.Errorf("%s: built no flag set", cmd.title)
		}
		fmt.Fprintf(&b, "\n## %s\n\n", cmd.title)
		own := 0
		fs.VisitAll(func(f *flag.Flag) {
			if shared.Lookup(f.Name) == nil {
				own++
			}
		})
		if own == 0 {
			b.WriteString("The shared flags only.\n")
			continue
		}
		b.WriteString("The shared flags, and:\n\n")
		writeFlagTable(&b, fs, shared)
	}
	return b.String(), nil
}

// writeFlagTable writes fs's flags, less those in skip, as a Markdown table.
func writeFlagTable(b *strings.Builder, fs, skip *flag.FlagSet) {
	b.WriteString("| flag | default | environment | meaning |\n|---|---|---|---|\n")
	fs.VisitAll(func(f *flag.Flag) {
		if skip != nil && skip.Lookup(f.Name) != nil {
			return
		}
		usage, env := f.Usage, "—"
		if m := envSuffix.FindStringSubmatch(usage); m != nil {
			usage, env = usage[:len(usage)-len(m[0])], "`$"+m[1]+"`"
		}
		def := "—"
		if f.DefValue != "" {
			def = "`" + f.DefValue + "`"
		}
		fmt.Fprintf(b, "| `-%s` | %s | %s | %s |\n", f.Name, def, env, mdCell(usage))
	})
}

// mdCell escapes what Markdown would read as markup in a table cell.
func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;", "*", `\*`).Replace(s)
}

// neutralEnv unsets the variables flag defaults come from and sets HOME to
// "~"; the function it returns puts them back.
func neutralEnv() (restore func()) {
	saved := map[string]*string{}
	keep := func(k string) {
		if _, done := saved[k]; done {
			return
		}
		if v, ok := os.LookupEnv(k); ok {
			saved[k] = &v
		} else {
			saved[k] = nil
		}
	}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "FALOCAL_") {
			keep(k)
			os.Unsetenv(k)
		}
	}
	for _, k := range []string{"XDG_DATA_HOME", "XDG_CACHE_HOME", "ONNXRUNTIME_SHARED_LIBRARY_PATH"} {
		keep(k)
		os.Unsetenv(k)
	}
	keep("HOME")
	os.Setenv("HOME", "~")
	return func() {
		for k, v := range saved {
			if v == nil {
				os.Unsetenv(k)
			} else {
				os.Setenv(k, *v)
			}
		}
	}
}
