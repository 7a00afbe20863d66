// Command falbench load-tests a falocal server through fal's API only, as a
// client would: queue submit, status (SSE stream or polling), result. For
// each endpoint it measures the first (cold) request, then throughput and
// latency percentiles at each concurrency; optionally the bare engine
// (bench/rembg_test.go) and a peer (@imgly/background-removal-node, through
// bench/peer/run.mjs) on the same images. It writes report.json, report.md
// and one SVG plot per endpoint to bench/results/<date>-<label>/.
//
//	go run ./bench/falbench -server /tmp/falbench-server -compare -bare
//	go run ./bench/falbench -url http://127.0.0.1:8080 -label my-config
//
// See bench/falbench/README.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// configFlag collects repeated -config label=args.
type configFlag []serverConfig

type serverConfig struct {
	Label string
	Args  []string
}

func (c *configFlag) String() string { return fmt.Sprint(*c) }
func (c *configFlag) Set(v string) error {
	label, args, ok := strings.Cut(v, "=")
	if !ok || strings.TrimSpace(label) == "" {
		return fmt.Errorf("want label=server args, got %q", v)
	}
	*c = append(*c, serverConfig{Label: strings.TrimSpace(label), Args: strings.Fields(args)})
	return nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "falbench:", err)
		os.Exit(1)
	}
}

func run() error {
	home, _ := os.UserHomeDir()
	var configs configFlag
	var (
		url         = flag.String("url", "", "a running server's base URL (e.g. http://127.0.0.1:8080); excludes -server")
		server      = flag.String("server", "", "falocal binary to start per -config (`serve` on a free loopback port), stopped afterwards")
		label       = flag.String("label", "", "name of this run: the server config with -url, the output directory's suffix (default: the -config labels, or \"default\")")
		dataDir     = flag.String("data-dir", filepath.Join(home, ".local/share/falocal"), "model store (for -server and -bare)")
		cacheDir    = flag.String("cache-dir", filepath.Join(home, ".cache/falocal"), "cache dir with the ONNX Runtime library (for -server and -bare)")
		scratch     = flag.Bool("scratch", true, "with -server: serve from a temporary data dir linking the store's models, so queue.db and outputs stay out of -data-dir")
		assets      = flag.String("assets", filepath.Join(home, ".cache/falocal/testdata"), "test photographs (`make test-assets`)")
		images      = flag.String("images", "astronaut.png,coffee.png,chelsea.png", "input images in -assets, cycled through")
		endpoints   = flag.String("endpoints", "rembg,esrgan", "endpoints: rembg (fal-ai/imageutils/rembg), birefnet (fal-ai/birefnet), esrgan (fal-ai/esrgan)")
		esrganModel = flag.String("esrgan-model", "RealESRGAN_x4_v3", "fal-ai/esrgan model (RealESRGAN_x4_v3 is the fast compact x4 model)")
		esrganScale = flag.Int("esrgan-scale", 4, "fal-ai/esrgan scale")
		esrganCrop  = flag.Int("esrgan-crop", 128, "fal-ai/esrgan inputs: the central N×N crop (0 = whole image)")
		conc        = flag.String("concurrency", "1,2,4,8", "concurrent clients per level")
		requests    = flag.Int("requests", 16, "requests per level (at least 2× the clients)")
		warmup      = flag.Int("warmup", 2, "un-timed requests after the cold one (besides one per image)")
		status      = flag.String("status", "stream", "how clients follow a request: stream (SSE status stream, as fal's JS client's streaming mode) or poll")
		poll        = flag.Duration("poll", 10*time.Millisecond, "poll interval with -status poll")
		inputMode   = flag.String("input", "datauri", "how images reach the server: datauri (in every request body) or upload (storage API once per image, then its URL)")
		key         = flag.String("key", "", "API key key_id:key_secret, if the server requires one")
		compare     = flag.Bool("compare", false, "also run the peer (bench/peer: @imgly/background-removal-node) on the rembg inputs")
		peerConc    = flag.String("peer-concurrency", "", "peer concurrency levels (default: -concurrency)")
		peerDir     = flag.String("peer-dir", "", "the peer's directory (default: <module root>/bench/peer)")
		bare        = flag.Bool("bare", false, "also run the bare engine benchmark (go test -bench BenchmarkRembg/engine; needs cgo) before loading the server")
		bareIters   = flag.Int("bare-iters", 5, "bare engine iterations")
		codecRuns   = flag.Int("codec-runs", 5, "decode+encode repetitions of the codec measurement (0 = skip)")
		samples     = flag.Bool("samples", true, "keep every request's sample in report.json")
		timeout     = flag.Duration("timeout", 10*time.Minute, "longest one request may take")
		out         = flag.String("out", "", "output directory (default bench/results/<date>-<label>)")
		note        = flag.String("note", "", "free text for the report's machine section (e.g. what else ran)")
		render      = flag.String("render", "", "only re-render report.md and the SVGs from `DIR`/report.json (after editing it, e.g. its note), measuring nothing")
	)
	flag.Var(&configs, "config", "with -server: `label=args` — a server config (extra serve flags, e.g. 'w4=-workers 4 -sessions 2'); repeatable; default 'default='")
	flag.Parse()

	if *render != "" {
		b, err := os.ReadFile(filepath.Join(*render, "report.json"))
		if err != nil {
			return err
		}
		var rep Report
		if err := json.Unmarshal(b, &rep); err != nil {
			return fmt.Errorf("%s/report.json: %w", *render, err)
		}
		if c := rep.Settings.Concurrency; len(c) > 0 {
			rep.compare()
			rep.goals("rembg", "astronaut.png", c[len(c)-1])
		}
		return writeReport(&rep, *render, func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) })
	}

	if (*url == "") == (*server == "") {
		return fmt.Errorf("give exactly one of -url (a running server) or -server (a binary to start)")
	}
	if *status != "stream" && *status != "poll" {
		return fmt.Errorf("-status: stream or poll")
	}
	if *inputMode != "datauri" && *inputMode != "upload" {
		return fmt.Errorf("-input: datauri or upload")
	}
	levels, err := parseInts(*conc)
	if err != nil {
		return fmt.Errorf("-concurrency: %w", err)
	}
	levels = sortedInts(levels)
	peerLevels := levels
	if *peerConc != "" {
		if peerLevels, err = parseInts(*peerConc); err != nil {
			return fmt.Errorf("-peer-concurrency: %w", err)
		}
	}
	if *url != "" {
		if len(configs) > 0 {
			return fmt.Errorf("-config needs -server (with -url, name the server's config with -label)")
		}
		configs = configFlag{{Label: *label}}
		if *label == "" {
			configs[0].Label = "default"
		}
	} else if len(configs) == 0 {
		configs = configFlag{{Label: "default"}}
	}
	runLabel := *label
	if runLabel == "" {
		var ls []string
		for _, c := range configs {
			ls = append(ls, c.Label)
		}
		runLabel = strings.Join(ls, "+")
	}
	root, rootErr := moduleRoot()
	outDir := *out
	if outDir == "" {
		if rootErr != nil {
			return rootErr
		}
		outDir = filepath.Join(root, "bench", "results", time.Now().Format("2006-01-02")+"-"+sanitize(runLabel))
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}

	var specs []endpointSpec
	for _, n := range strings.Split(*endpoints, ",") {
		switch strings.TrimSpace(n) {
		case "rembg":
			specs = append(specs, endpointSpec{Name: "rembg", ID: "fal-ai/imageutils/rembg", Peer: true})
		case "birefnet":
			specs = append(specs, endpointSpec{Name: "birefnet", ID: "fal-ai/birefnet"})
		case "esrgan":
			specs = append(specs, endpointSpec{Name: "esrgan", ID: "fal-ai/esrgan", Crop: *esrganCrop,
				Params: map[string]any{"model": *esrganModel, "scale": *esrganScale}})
		case "":
		default:
			return fmt.Errorf("-endpoints: unknown %q (rembg, birefnet, esrgan)", n)
		}
	}
	names := strings.Split(*images, ",")
	inputs := map[string][]input{}
	for _, s := range specs {
		ins, err := loadInputs(*assets, names, s.Crop)
		if err != nil {
			return err
		}
		inputs[s.Name] = ins
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
	}

	rep := &Report{Label: runLabel, Started: time.Now(), Command: "falbench " + strings.Join(os.Args[1:], " "), Machine: machineInfo(*note),
		Settings: Settings{Concurrency: levels, Requests: *requests, Warmup: *warmup, Status: *status, Input: *inputMode, Images: *images}}
	if *status == "poll" {
		rep.Settings.PollInterval = poll.String()
	}
	opts := runOpts{concurrency: levels, requests: *requests, warmup: *warmup, input: *inputMode, keepSamples: *samples,
		codecRuns: *codecRuns, timeout: *timeout}

	if *bare {
		if rootErr != nil {
			return rootErr
		}
		logf("bare engine: go test -bench BenchmarkRembg/engine (%d iterations)…", *bareIters)
		b, err := runBare(ctx, root, *dataDir, *cacheDir, *assets, *bareIters)
		if err != nil {
			rep.BareErr = err.Error()
			logf("bare engine: %v", err)
		} else {
			rep.Bare = b
			logf("bare engine: %.0f ms, codec %.1f ms", b.EngineMs, b.CodecMs)
		}
	}

	// The peer runs interleaved with the first server config: its level at
	// concurrency C right after ours at C (a shared machine's load drifts);
	// peer levels that are not among ours run at the end.
	peerDirPath := *peerDir
	if *compare && peerDirPath == "" {
		if rootErr != nil {
			return rootErr
		}
		peerDirPath = filepath.Join(root, "bench", "peer")
	}
	peers := map[string]*PeerRun{}
	peerDone := map[string]map[int]bool{}
	runPeerLevel := func(s endpointSpec, pc int) {
		pr := peers[s.Name]
		if pr == nil {
			pr = &PeerRun{Name: "imgly background-removal-node 1.4.5", Endpoint: s.Name}
			peers[s.Name], peerDone[s.Name] = pr, map[int]bool{}
		}
		if peerDone[s.Name][pc] || ctx.Err() != nil {
			return
		}
		peerDone[s.Name][pc] = true
		var paths []string
		for _, in := range inputs[s.Name] {
			paths = append(paths, in.path)
		}
		n := max(*requests, 2*pc)
		logf("peer: c=%d n=%d…", pc, n)
		l, cfg, err := runPeer(ctx, peerDirPath, paths, n, pc)
		if err != nil {
			l = PeerLevel{Concurrency: pc, Err: err.Error()}
			logf("peer: %v", err)
		} else {
			logf("peer: c=%d %.3f req/s p50 %.0f ms p95 %.0f ms", pc, l.Throughput, l.Latency.P50, l.Latency.P95)
			pr.Config = cfg
		}
		if !*samples {
			l.Samples = nil
		}
		pr.Levels = append(pr.Levels, l)
	}
	wantPeer := map[int]bool{}
	for _, pc := range peerLevels {
		wantPeer[pc] = true
	}

	for ci, cfg := range configs {
		sr := ServerRun{Label: cfg.Label, Args: cfg.Args, URL: *url}
		var proc *serverProc
		if *server != "" {
			logf("server %s: starting %s %v", cfg.Label, *server, cfg.Args)
			t := time.Now()
			proc, err = startServer(*server, *dataDir, *cacheDir, *scratch, cfg.Args, filepath.Join(outDir, "server-"+sanitize(cfg.Label)+".log"))
			if err != nil {
				sr.Err = err.Error()
				logf("server %s: %v", cfg.Label, err)
				rep.Servers = append(rep.Servers, sr)
				continue
			}
			sr.URL, sr.Started, sr.StartupS = proc.base, true, time.Since(t).Seconds()
		}
		c := newClient(sr.URL, *key, *status, *poll)
		for _, s := range specs {
			var after func(int)
			if *compare && s.Peer && ci == 0 {
				after = func(conc int) {
					if wantPeer[conc] {
						runPeerLevel(s, conc)
					}
				}
			}
			sr.Endpoints = append(sr.Endpoints, runEndpoint(ctx, c, s, inputs[s.Name], opts, proc == nil, logf, after))
			if ctx.Err() != nil {
				break
			}
		}
		if proc != nil {
			proc.stop()
		}
		rep.Servers = append(rep.Servers, sr)
		if ctx.Err() != nil {
			break
		}
	}

	if *bare && rep.Bare != nil && ctx.Err() == nil {
		logf("bare engine again, after the server runs…")
		if b, err := runBare(ctx, root, *dataDir, *cacheDir, *assets, *bareIters); err != nil {
			logf("bare engine: %v", err)
		} else {
			rep.BareAfter = b
			logf("bare engine: %.0f ms, codec %.1f ms", b.EngineMs, b.CodecMs)
		}
	}

	if *compare {
		for _, s := range specs {
			if !s.Peer {
				continue
			}
			for _, pc := range peerLevels {
				runPeerLevel(s, pc)
			}
			if pr := peers[s.Name]; pr != nil {
				sort.Slice(pr.Levels, func(i, j int) bool { return pr.Levels[i].Concurrency < pr.Levels[j].Concurrency })
				rep.Peers = append(rep.Peers, *pr)
			}
		}
	}

	rep.Finished = time.Now()
	rep.Machine.LoadAfter = loadavg()
	rep.compare()
	rep.goals("rembg", "astronaut.png", levels[len(levels)-1])
	return writeReport(rep, outDir, logf)
}

func writeReport(rep *Report, outDir string, logf func(string, ...any)) error {
	j, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "report.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	md := rep.markdown()
	var plots []string
	seen := map[string]bool{}
	for _, s := range rep.Servers {
		for _, e := range s.Endpoints {
			if seen[e.Spec.Name] {
				continue
			}
			seen[e.Spec.Name] = true
			if svg, ok := rep.endpointPlot(e.Spec.Name); ok {
				name := sanitize(e.Spec.Name) + ".svg"
				if err := os.WriteFile(filepath.Join(outDir, name), []byte(svg), 0o644); err != nil {
					return err
				}
				plots = append(plots, name)
			}
		}
	}
	if len(plots) > 0 {
		md += "\n## Plots\n\n"
		for _, p := range plots {
			md += fmt.Sprintf("![%s](%s)\n", p, p)
		}
	}
	if err := os.WriteFile(filepath.Join(outDir, "report.md"), []byte(md), 0o644); err != nil {
		return err
	}
	logf("wrote %s/{report.json,report.md,%s}", outDir, strings.Join(plots, ","))
	fmt.Print(md)
	return nil
}

// sanitize makes s a file name.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.', r == '+':
			return r
		}
		return '-'
	}, s)
}
