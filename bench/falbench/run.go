package main

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"
)

// endpointSpec is an endpoint to load, with what goes in every request
// besides image_url.
type endpointSpec struct {
	Name   string         `json:"name"`
	ID     string         `json:"id"`
	Params map[string]any `json:"params,omitempty"`
	Crop   int            `json:"crop,omitempty"` // inputs cut to their central crop² square
	Peer   bool           `json:"-"`              // the background-removal peer applies
}

// Level is one concurrency level: `Requests` requests from `Concurrency`
// closed-loop clients (each sends its next request when the last one's
// result is in).
type Level struct {
	Concurrency int     `json:"concurrency"`
	Requests    int     `json:"requests"`
	Errors      int     `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	WallS       float64 `json:"wall_s"`
	Throughput  float64 `json:"throughput_rps"`
	// Latency: client submit → result read. Inference: the server's
	// metrics.inference_time (the pipeline run: input decode, model, output
	// encode and store). Overhead: latency − inference, per request: HTTP,
	// queue (including waiting for a worker), status, result.
	Latency   Stats            `json:"latency"`
	Inference Stats            `json:"inference"`
	Overhead  Stats            `json:"overhead"`
	QueueWait Stats            `json:"queue_wait"`
	ByImage   map[string]Stats `json:"latency_by_image,omitempty"`
	LoadAvg   string           `json:"loadavg_after"` // /proc/loadavg 1, 5, 15 min at the level's end
	Samples   []sample         `json:"samples,omitempty"`
}

// EndpointRun is one endpoint on one server config.
type EndpointRun struct {
	Spec   endpointSpec `json:"endpoint"`
	Inputs []input      `json:"inputs"`
	// Cold is the first request to this endpoint after the server started
	// (model load included) when falbench started the server; with -url it
	// is only the first request of this run (ColdIsFirstOfRun).
	Cold             *sample       `json:"cold,omitempty"`
	ColdIsFirstOfRun bool          `json:"cold_is_only_first_of_run,omitempty"`
	Warm             *Stats        `json:"warm_c1_latency,omitempty"` // Levels[c=1] latency, for the cold/warm ratio
	Levels           []Level       `json:"levels"`
	Codec            []CodecResult `json:"codec,omitempty"`
	Err              string        `json:"error,omitempty"`
}

// ServerRun is one server config.
type ServerRun struct {
	Label     string        `json:"label"`
	Args      []string      `json:"args,omitempty"`
	URL       string        `json:"url"`
	Started   bool          `json:"started_by_falbench"`
	StartupS  float64       `json:"startup_s,omitempty"`
	Err       string        `json:"error,omitempty"`
	Endpoints []EndpointRun `json:"endpoints"`
}

type runOpts struct {
	concurrency []int
	requests    int // per level (at least 2× concurrency)
	warmup      int
	input       string // "datauri" or "upload"
	keepSamples bool
	codecRuns   int
	timeout     time.Duration
}

// bodies builds one request body per input.
func bodies(ctx context.Context, c *falClient, ep endpointSpec, ins []input, mode string) ([][]byte, error) {
	var out [][]byte
	for _, in := range ins {
		u := ""
		if mode == "upload" {
			var err error
			if u, err = c.upload(ctx, in.data, in.contentType, "falbench-"+in.Name); err != nil {
				return nil, err
			}
		} else {
			u = dataURI(in.contentType, in.data)
		}
		m := map[string]any{"image_url": u}
		for k, v := range ep.Params {
			m[k] = v
		}
		b, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// runEndpoint measures one endpoint: the cold request, warm-up (and the
// codec measurement on its outputs), then each concurrency level.
// after, if not nil, runs after each level (the peer's run at the same
// concurrency, so that both see the same moment of a shared machine).
func runEndpoint(ctx context.Context, c *falClient, ep endpointSpec, ins []input, o runOpts, coldIsFirstOfRun bool, logf func(string, ...any), after func(conc int)) EndpointRun {
	r := EndpointRun{Spec: ep, Inputs: ins, ColdIsFirstOfRun: coldIsFirstOfRun}
	bs, err := bodies(ctx, c, ep, ins, o.input)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	call := func(i int) sample {
		cctx, cancel := context.WithTimeout(ctx, o.timeout)
		defer cancel()
		s := c.run(cctx, ep.ID, bs[i%len(bs)])
		s.Image = ins[i%len(ins)].Name
		return s
	}
	cold := call(0)
	r.Cold = &cold
	logf("%s: cold %.0f ms (inference %.0f ms) %s", ep.Name, cold.LatencyMs, cold.InferMs, cold.Err)
	if cold.Err != "" {
		r.Err = "cold request: " + cold.Err
		return r
	}
	// Warm-up: every input once (their outputs feed the codec measurement),
	// then o.warmup more.
	for i := range ins {
		s := call(i)
		if s.Err != "" {
			r.Err = "warm-up: " + s.Err
			return r
		}
		if o.codecRuns > 0 {
			out, err := c.fetchOutput(ctx, s.ResultJSON)
			if err == nil {
				var cr CodecResult
				cr, err = measureCodec(ep.Name, ins[i], out, o.codecRuns)
				r.Codec = append(r.Codec, cr)
			}
			if err != nil {
				logf("%s: codec measurement of %s: %v", ep.Name, ins[i].Name, err)
			}
		}
	}
	for i := 0; i < o.warmup; i++ {
		call(i)
	}
	for _, conc := range o.concurrency {
		n := max(o.requests, 2*conc)
		l := runLevel(n, conc, call)
		if !o.keepSamples {
			l.Samples = nil
		}
		logf("%s: c=%d n=%d %.3f req/s p50 %.0f ms p95 %.0f ms overhead p50 %.1f ms errors %d",
			ep.Name, conc, n, l.Throughput, l.Latency.P50, l.Latency.P95, l.Overhead.P50, l.Errors)
		r.Levels = append(r.Levels, l)
		if conc == 1 {
			w := l.Latency
			r.Warm = &w
		}
		if ctx.Err() != nil {
			break
		}
		if after != nil {
			after(conc)
		}
	}
	return r
}

// runLevel sends n requests from conc closed-loop clients; request i uses
// input i mod len(inputs).
func runLevel(n, conc int, call func(int) sample) Level {
	samples := make([]sample, n)
	var mu sync.Mutex
	next := 0
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				samples[i] = call(i)
			}
		}()
	}
	wg.Wait()
	l := levelOf(conc, samples, time.Since(start))
	l.LoadAvg = loadavg()
	return l
}

// levelOf computes a Level's statistics from its samples; failed requests
// count as errors and are left out of the statistics and the throughput.
func levelOf(conc int, samples []sample, wall time.Duration) Level {
	l := Level{Concurrency: conc, Requests: len(samples), WallS: wall.Seconds(), Samples: samples}
	var lat, inf, over, wait []float64
	byImage := map[string][]float64{}
	for _, s := range samples {
		if s.Err != "" {
			l.Errors++
			if l.FirstError == "" {
				l.FirstError = s.Err
			}
			continue
		}
		lat = append(lat, s.LatencyMs)
		inf = append(inf, s.InferMs)
		over = append(over, s.LatencyMs-s.InferMs)
		wait = append(wait, s.WaitMs)
		byImage[s.Image] = append(byImage[s.Image], s.LatencyMs)
	}
	l.Latency, l.Inference, l.Overhead, l.QueueWait = summarize(lat), summarize(inf), summarize(over), summarize(wait)
	l.Throughput = ratio(float64(len(lat)), l.WallS)
	if len(byImage) > 0 {
		l.ByImage = map[string]Stats{}
		for k, v := range byImage {
			l.ByImage[k] = summarize(v)
		}
	}
	return l
}

func sortedInts(xs []int) []int {
	s := append([]int(nil), xs...)
	sort.Ints(s)
	return s
}
