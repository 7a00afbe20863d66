package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// configCmd validates the settings (flags, environment, -config file) the
// way serve would and prints the effective ones as a TOML file, each with
// where it came from, secrets redacted.
func configCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: falocal config check [-config FILE] [flags]"
	if len(args) == 0 || args[0] != "check" {
		return errors.New(usage)
	}
	c, fs, err := parse("config check", args[1:], stderr, nil)
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("config check: unexpected argument %q (%s)", fs.Arg(0), usage)
	}
	if err := checkExposure(c.Listen, c.keys()); err != nil {
		return err
	}
	printSettings(stdout, c, fs)
	return nil
}

// printSettings writes every shared flag as a TOML line: the output is a
// config file of the effective settings, less the redacted secrets.
func printSettings(w io.Writer, c *Config, fs *flag.FlagSet) {
	if c.ConfigFile != "" {
		fmt.Fprintf(w, "# config file: %s\n", c.ConfigFile)
	}
	fs.VisitAll(func(f *flag.Flag) {
		src, shared := c.sources[f.Name]
		if !shared || f.Name == "config" {
			return
		}
		v := f.Value.String()
		if secretSetting(f.Name) {
			v = redact(f.Name, v)
		}
		from := src
		if src == "env" {
			from = "env $" + c.envs[f.Name]
		}
		fmt.Fprintf(w, "%s = %s # %s\n", f.Name, tomlValue(f, v), from)
	})
}

// secretSetting says whether a flag holds credentials.
func secretSetting(name string) bool {
	for _, s := range []string{"key", "secret", "token", "password"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

// redact hides secrets: -keys keeps its key ids (they name keys in logs),
// anything else is replaced whole.
func redact(name, v string) string {
	if v == "" {
		return v
	}
	if name != "keys" {
		return "<redacted>"
	}
	var out []string
	for _, k := range list(v) {
		id, _, _ := strings.Cut(k, ":")
		out = append(out, id+":<redacted>")
	}
	return strings.Join(out, ",")
}

// tomlValue writes v as the TOML value the file takes for f: integers and
// booleans bare, everything else (durations included) quoted.
func tomlValue(f *flag.Flag, v string) string {
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case int, int64, bool:
			return v
		}
	}
	return strconv.Quote(v)
}
