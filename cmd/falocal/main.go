// Command falocal is a local inference server with fal's API: it runs
// open-weight pipelines in process on ONNX Runtime and serves them on fal's
// endpoint ids.
//
//	falocal [serve]            serve the API (default)
//	falocal setup              fetch the runtime library and the default models
//	falocal weights list|verify|install|remove|import|export
//	falocal queue check|repair|backup|restore  inspect, rebuild, copy or restore the queue database
//	falocal bundle create|keygen|install|inspect  offline bundles for air-gapped sites
//	falocal config check       validate the settings and print the effective ones
//	falocal run ENDPOINT k=v…  submit a request to a running server and download its outputs
//	falocal doctor             check the runtime, GPU, models, disk and listen address
//	falocal version
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch cmd {
	case "serve":
		err = serveCmd(ctx, args, stderr)
	case "setup":
		err = setupCmd(ctx, args, stdout, stderr)
	case "weights":
		err = weightsCmd(ctx, args, stdout, stderr)
	case "queue":
		err = queueCmd(ctx, args, stdout, stderr)
	case "bundle":
		err = bundleCmd(ctx, args, stdout, stderr)
	case "config":
		err = configCmd(ctx, args, stdout, stderr)
	case "run":
		// After the first Ctrl-C, which cancels the request, a second one
		// ends the client at once rather than wait for the server's answer.
		context.AfterFunc(ctx, stop)
		// a client command: its exit codes tell a script what went wrong
		return clientRunCmd(ctx, args, stdout, stderr)
	case "doctor":
		err = doctorCmd(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "falocal", version)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, "usage: falocal [serve|setup|weights|queue|bundle|config|run|doctor|version] [flags]; 'falocal CMD -h' lists a command's flags")
	default:
		err = fmt.Errorf("unknown command %q (want serve, setup, weights, queue, bundle, config, run, doctor or version)", cmd)
	}
	if err == flag.ErrHelp {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "falocal:", err)
		return 1
	}
	return 0
}

func newLogger(c *Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// parse binds the shared flags plus extra ones and parses args. A -config
// file (flag or $FALOCAL_CONFIG) supplies defaults under the environment's,
// so the flags are parsed twice: once to find the file, once over it.
func parse(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*Config, *flag.FlagSet, error) {
	var file *configFile
	if path := configPath(args, extra); path != "" {
		var err error
		if file, err = loadConfigFile(path); err != nil {
			return nil, nil, err
		}
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &Config{file: file}
	bindFlags(fs, c)
	if extra != nil {
		extra(fs)
	}
	if flagSetHook != nil {
		flagSetHook(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	fs.Visit(func(f *flag.Flag) {
		if _, shared := c.sources[f.Name]; shared {
			c.sources[f.Name] = "flag"
		}
	})
	return c, fs, c.validate()
}

// configPath is the -config file that args and the environment name, ""
// for none. A parse that fails here fails again, reported, in parse.
func configPath(args []string, extra func(*flag.FlagSet)) string {
	defs := flag.NewFlagSet("", flag.ContinueOnError)
	bindFlags(defs, &Config{})
	if extra != nil {
		extra(defs)
	}
	// The args are read into stand-ins of the same names and kinds, so that
	// this first pass sets nothing (a repeatable flag would otherwise
	// collect its values twice).
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	defs.VisitAll(func(f *flag.Flag) {
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			fs.Bool(f.Name, false, "")
		} else {
			fs.String(f.Name, f.DefValue, "") // -config's default is $FALOCAL_CONFIG
		}
	})
	if fs.Parse(args) != nil {
		return ""
	}
	return fs.Lookup("config").Value.String()
}
