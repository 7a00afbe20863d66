package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"time"
)

// Report is everything one falbench run measured; it is written as
// report.json, and rendered as report.md and one SVG per endpoint.
type Report struct {
	Label    string    `json:"label"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Command  string    `json:"command"`
	Machine  Machine   `json:"machine"`
	Settings Settings  `json:"settings"`
	// Bare is the bare engine before any load; BareAfter the same after the
	// server runs (before the peer), to bracket a drifting machine load.
	Bare      *BareResult  `json:"bare_engine,omitempty"`
	BareAfter *BareResult  `json:"bare_engine_after,omitempty"`
	BareErr   string       `json:"bare_engine_error,omitempty"`
	Servers   []ServerRun  `json:"servers"`
	Peers     []PeerRun    `json:"peers,omitempty"`
	Compare   []Comparison `json:"compare,omitempty"`
	Goals     []Goal       `json:"goals,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	Hostname    string  `json:"hostname"`
	CPU         string  `json:"cpu"`
	CPUs        int     `json:"cpus"`
	OS          string  `json:"os"`
	Go          string  `json:"go"`
	LoadBefore  string  `json:"loadavg_before"`
	LoadAfter   string  `json:"loadavg_after"`
	Note        string  `json:"note,omitempty"`
	MemTotalGiB float64 `json:"mem_total_gib,omitempty"`
}

// Settings are the run's knobs.
type Settings struct {
	Concurrency  []int  `json:"concurrency"`
	Requests     int    `json:"requests_per_level"`
	Warmup       int    `json:"warmup"`
	Status       string `json:"status_mode"`
	PollInterval string `json:"poll_interval,omitempty"`
	Input        string `json:"input_mode"`
	Images       string `json:"images"`
}

// Comparison is ours vs the peer at one concurrency.
type Comparison struct {
	Endpoint        string  `json:"endpoint"`
	ServerConfig    string  `json:"server_config"`
	Concurrency     int     `json:"concurrency"`
	OursRPS         float64 `json:"ours_rps"`
	PeerRPS         float64 `json:"peer_rps"`
	ThroughputRatio float64 `json:"throughput_ratio"` // ours / peer
	OursP50         float64 `json:"ours_p50_ms"`
	PeerP50         float64 `json:"peer_p50_ms"`
	LatencyRatio    float64 `json:"p50_latency_ratio"` // peer / ours: > 1 means ours is faster
}

// Goal is a target from issue 7, computed, never asserted.
type Goal struct {
	ServerConfig string  `json:"server_config"`
	Name         string  `json:"name"`
	Value        float64 `json:"value"`
	Target       string  `json:"target"`
	Met          *bool   `json:"met,omitempty"` // nil: not measured
	Detail       string  `json:"detail"`
}

func machineInfo(note string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version(), Note: note}
	m.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %f kB", &kb); err == nil {
			m.MemTotalGiB = math.Round(kb/(1<<20)*10) / 10
		}
	}
	m.LoadBefore = loadavg()
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func levelAt(ls []Level, c int) *Level {
	for i := range ls {
		if ls[i].Concurrency == c && ls[i].Latency.N > 0 {
			return &ls[i]
		}
	}
	return nil
}

func peerAt(ls []PeerLevel, c int) *PeerLevel {
	for i := range ls {
		if ls[i].Concurrency == c && ls[i].Latency.N > 0 {
			return &ls[i]
		}
	}
	return nil
}

// compare pairs every endpoint that has a peer with the peer's levels.
func (r *Report) compare() {
	r.Compare = nil
	for _, p := range r.Peers {
		for _, s := range r.Servers {
			for _, e := range s.Endpoints {
				if e.Spec.Name != p.Endpoint {
					continue
				}
				for _, pl := range p.Levels {
					l := levelAt(e.Levels, pl.Concurrency)
					if l == nil || pl.Latency.N == 0 {
						continue
					}
					r.Compare = append(r.Compare, Comparison{Endpoint: e.Spec.Name, ServerConfig: s.Label, Concurrency: pl.Concurrency,
						OursRPS: l.Throughput, PeerRPS: pl.Throughput, ThroughputRatio: ratio(l.Throughput, pl.Throughput),
						OursP50: l.Latency.P50, PeerP50: pl.Latency.P50, LatencyRatio: ratio(pl.Latency.P50, l.Latency.P50)})
				}
			}
		}
	}
}

// bareMs is the bare engine time: the mean of the before and after runs
// when both exist.
func (r *Report) bareMs() float64 {
	switch {
	case r.Bare != nil && r.BareAfter != nil:
		return (r.Bare.EngineMs + r.BareAfter.EngineMs) / 2
	case r.Bare != nil:
		return r.Bare.EngineMs
	case r.BareAfter != nil:
		return r.BareAfter.EngineMs
	}
	return 0
}

func goal(cfg, name string, v float64, target string, ok func(float64) bool, detail string) Goal {
	g := Goal{ServerConfig: cfg, Name: name, Value: v, Target: target, Detail: detail}
	if v != 0 && !math.IsNaN(v) {
		met := ok(v)
		g.Met = &met
	}
	return g
}

// goals computes issue 7's background-removal targets for each server
// config, on the rembg endpoint (`goalEndpoint`), at concurrency `hi`.
func (r *Report) goals(goalEndpoint, goalImage string, hi int) {
	r.Goals = nil
	for _, s := range r.Servers {
		var e *EndpointRun
		for i := range s.Endpoints {
			if s.Endpoints[i].Spec.Name == goalEndpoint {
				e = &s.Endpoints[i]
			}
		}
		if e == nil {
			continue
		}
		one := levelAt(e.Levels, 1)
		// 1. A lone request end to end vs the bare engine, on the image the
		// bare benchmark uses.
		lone, loneDetail := 0.0, "no c=1 level"
		if one != nil {
			lone = one.Latency.Mean
			loneDetail = fmt.Sprintf("c=1 mean latency over all images %.0f ms", lone)
			if st, ok := one.ByImage[goalImage]; ok {
				lone = st.Mean
				loneDetail = fmt.Sprintf("c=1 mean latency of %s %.0f ms", goalImage, lone)
			}
		}
		bare := r.bareMs()
		if r.Bare != nil && r.BareAfter != nil {
			loneDetail += fmt.Sprintf(" / bare engine %.0f ms (BenchmarkRembg/engine: mean of %.0f ms before and %.0f ms after the server runs)", bare, r.Bare.EngineMs, r.BareAfter.EngineMs)
		} else if r.Bare != nil {
			loneDetail += fmt.Sprintf(" / bare engine %.0f ms (BenchmarkRembg/engine)", bare)
		} else {
			loneDetail += " / bare engine not measured (-bare)"
		}
		r.Goals = append(r.Goals, goal(s.Label, "lone request vs bare engine", ratio(lone, bare), "≤ 1.15×",
			func(v float64) bool { return v <= 1.15 }, loneDetail))

		// 2. Throughput at hi clients vs the peer's.
		var tr float64
		trDetail := "peer not run (-compare)"
		for _, c := range r.Compare {
			if c.ServerConfig == s.Label && c.Endpoint == goalEndpoint && c.Concurrency == hi {
				tr = c.ThroughputRatio
				trDetail = fmt.Sprintf("c=%d: ours %.3f req/s, peer %.3f req/s", hi, c.OursRPS, c.PeerRPS)
			}
		}
		r.Goals = append(r.Goals, goal(s.Label, fmt.Sprintf("throughput vs peer, %d clients", hi), tr, "≥ 2×",
			func(v float64) bool { return v >= 2 }, trDetail))

		// 3. Tail latency at hi clients.
		var tail float64
		tailDetail := fmt.Sprintf("no c=%d level", hi)
		if l := levelAt(e.Levels, hi); l != nil {
			tail = ratio(l.Latency.P95, l.Latency.Mean)
			tailDetail = fmt.Sprintf("c=%d: p95 %.0f ms, mean %.0f ms (n=%d)", hi, l.Latency.P95, l.Latency.Mean, l.Latency.N)
		}
		r.Goals = append(r.Goals, goal(s.Label, fmt.Sprintf("p95 / mean latency, %d clients", hi), tail, "≤ 1.5×",
			func(v float64) bool { return v <= 1.5 }, tailDetail))

		// 4. Server overhead outside the pipeline run, lone requests; codec
		// time beside it.
		var over float64
		overDetail := "no c=1 level"
		if one != nil {
			over = one.Overhead.Mean
			codec := 0.0
			for _, c := range e.Codec {
				if c.Image == goalImage {
					codec = c.TotalMs
				}
			}
			codecText := "not measured (-codec-runs 0)"
			if codec > 0 {
				codecText = fmt.Sprintf("%.1f ms", codec)
			}
			overDetail = fmt.Sprintf("c=1: latency − metrics.inference_time, mean %.2f ms (p50 %.2f, p95 %.2f); image codec of %s (decode + PNG encode, measured in Go, inside inference_time) %s",
				one.Overhead.Mean, one.Overhead.P50, one.Overhead.P95, goalImage, codecText)
			if bare > 0 && lone > 0 {
				overDetail += fmt.Sprintf("; all the server adds to the bare engine (latency − bare) %.0f ms, of which codec %.0f ms and pre/post-processing the rest", lone-bare, codec)
			}
		}
		r.Goals = append(r.Goals, goal(s.Label, "server overhead (HTTP, queue, status, result), lone request", over, "< 5 ms (+ codec, reported apart)",
			func(v float64) bool { return v < 5 }, overDetail))
	}
}

// --- Markdown -------------------------------------------------------------

func f0(v float64) string { return fmtNum(v, 0) }
func f1(v float64) string { return fmtNum(v, 1) }

func fmtNum(v float64, prec int) string {
	if v == 0 || math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

func f3(v float64) string { return fmtNum(v, 3) }

func (r *Report) markdown() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# falbench — %s\n\n", r.Label)
	w("%s → %s. Command: `%s`\n\n", r.Started.Format(time.RFC3339), r.Finished.Format(time.RFC3339), r.Command)
	m := r.Machine
	w("Machine: %s — %d CPUs (%s), %.0f GiB, %s, %s. Load average before %s, after %s.\n", m.Hostname, m.CPUs, m.CPU, m.MemTotalGiB, m.OS, m.Go, m.LoadBefore, m.LoadAfter)
	if m.Note != "" {
		w("%s\n", m.Note)
	}
	st := r.Settings
	w("\nClients: closed loop (each client sends its next request when the last result is in); %d requests per level (at least 2× the clients), %d warm-up requests after the cold one; inputs as %s; status followed by %s%s; images: %s.\n",
		st.Requests, st.Warmup, st.Input, st.Status, map[bool]string{true: " every " + st.PollInterval, false: ""}[st.Status == "poll"], st.Images)
	w("Latency is submit → result read, as a client sees it. *inference* is the server's own `metrics.inference_time` (the whole pipeline run: input decode, model, output encode and store); *overhead* = latency − inference per request (HTTP, queue incl. waiting for a worker, status, result). Percentiles interpolate between closest ranks. Times in ms.\n")

	if len(r.Goals) > 0 {
		w("\n## Goals (issue 7; reported, not asserted)\n\n| server config | goal | value | target | met | how |\n|---|---|---|---|---|---|\n")
		for _, g := range r.Goals {
			met := "n/a"
			if g.Met != nil {
				met = map[bool]string{true: "yes", false: "**no**"}[*g.Met]
			}
			val := fmt.Sprintf("%.2f×", g.Value)
			if strings.HasPrefix(g.Name, "server overhead") {
				val = fmt.Sprintf("%.2f ms", g.Value)
			}
			if g.Value == 0 {
				val = "n/a"
			}
			w("| %s | %s | %s | %s | %s | %s |\n", g.ServerConfig, g.Name, val, g.Target, met, g.Detail)
		}
	}
	if r.Bare != nil {
		w("\nBare engine (`%s`): ISNet on a ready 1×3×1024² tensor %.0f ms; its codec sub-benchmark (astronaut PNG decode + 512² PNG encode) %.1f ms.", r.Bare.Command, r.Bare.EngineMs, r.Bare.CodecMs)
		if a := r.BareAfter; a != nil {
			w(" After the server runs: %.0f ms, codec %.1f ms.", a.EngineMs, a.CodecMs)
		}
		w("\n")
	}
	if r.BareErr != "" {
		w("\nBare engine: not measured: %s\n", r.BareErr)
	}

	for _, s := range r.Servers {
		w("\n## Server config `%s`", s.Label)
		if len(s.Args) > 0 {
			w(" (`%s`)", strings.Join(s.Args, " "))
		}
		w("\n\n")
		if s.Started {
			w("Started by falbench (%s), ready in %.1f s.\n", s.URL, s.StartupS)
		} else {
			w("Running server at %s (not started by falbench).\n", s.URL)
		}
		if s.Err != "" {
			w("\n**Error:** %s\n", s.Err)
		}
		for _, e := range s.Endpoints {
			params := ""
			if len(e.Spec.Params) > 0 {
				params = fmt.Sprintf(" %v", e.Spec.Params)
			}
			w("\n### %s — `%s`%s\n\n", e.Spec.Name, e.Spec.ID, params)
			var ins []string
			for _, in := range e.Inputs {
				ins = append(ins, fmt.Sprintf("%s %d×%d (%d KiB)", in.Name, in.Width, in.Height, in.Bytes/1024))
			}
			w("Inputs: %s.\n", strings.Join(ins, ", "))
			if e.Err != "" {
				w("\n**Error:** %s\n", e.Err)
			}
			if e.Cold != nil && e.Cold.Err == "" {
				kind := "first request after the server started (model load included)"
				if e.ColdIsFirstOfRun {
					kind = "first request of this run (the server was already running: may be warm)"
				}
				warm := ""
				if e.Warm != nil {
					warm = fmt.Sprintf("; warm c=1 mean %s ms → cold/warm %.1f×", f0(e.Warm.Mean), ratio(e.Cold.LatencyMs, e.Warm.Mean))
				}
				w("\nCold: %s ms (inference %s ms), %s%s.\n", f0(e.Cold.LatencyMs), f0(e.Cold.InferMs), kind, warm)
			}
			if len(e.Levels) > 0 {
				w("\n| clients | requests | errors | throughput (req/s) | mean | p50 | p95 | p99 | max | p95/mean | inference mean | overhead p50 | overhead mean | load avg after |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
				for _, l := range e.Levels {
					w("| %d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", l.Concurrency, l.Requests, l.Errors, f3(l.Throughput),
						f0(l.Latency.Mean), f0(l.Latency.P50), f0(l.Latency.P95), f0(l.Latency.P99), f0(l.Latency.Max),
						fmtNum(ratio(l.Latency.P95, l.Latency.Mean), 2), f0(l.Inference.Mean), f1(l.Overhead.P50), f1(l.Overhead.Mean), l.LoadAvg)
				}
				for _, l := range e.Levels {
					if l.FirstError != "" {
						w("\nc=%d first error: %s\n", l.Concurrency, l.FirstError)
					}
				}
			}
			if len(e.Codec) > 0 {
				w("\nImage codec in Go (median of %d; decode of the input to NRGBA + PNG encode of the server's output; part of inference):", e.Codec[0].Runs)
				for _, c := range e.Codec {
					w(" %s → %s: %.1f + %.1f = %.1f ms;", c.Image, c.Output, c.DecodeMs, c.EncodeMs, c.TotalMs)
				}
				w("\n")
			}
		}
	}
	for _, p := range r.Peers {
		w("\n## Peer: %s (compared with %s)\n\n", p.Name, p.Endpoint)
		if len(p.Config) > 0 {
			w("Config: %v.\n\n", p.Config)
		}
		w("| clients | requests | throughput (req/s) | mean | p50 | p95 | p99 | max | cold (process's first call) | load avg after |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, l := range p.Levels {
			if l.Err != "" {
				w("| %d | error: %s |||||||\n", l.Concurrency, l.Err)
				continue
			}
			w("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", l.Concurrency, l.Requests, f3(l.Throughput), f0(l.Latency.Mean), f0(l.Latency.P50),
				f0(l.Latency.P95), f0(l.Latency.P99), f0(l.Latency.Max), f0(l.ColdMs), l.LoadAvg)
		}
	}
	if len(r.Compare) > 0 {
		w("\n## Ours vs peer\n\n| endpoint | server config | clients | ours req/s | peer req/s | throughput ours/peer | ours p50 | peer p50 | p50 peer/ours |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, c := range r.Compare {
			w("| %s | %s | %d | %s | %s | %.2f× | %s | %s | %.2f× |\n", c.Endpoint, c.ServerConfig, c.Concurrency, f3(c.OursRPS), f3(c.PeerRPS), c.ThroughputRatio,
				f0(c.OursP50), f0(c.PeerP50), c.LatencyRatio)
		}
	}
	return b.String()
}
