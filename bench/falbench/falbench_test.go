package main

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestPercentile(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []float64 // sorted
		p    float64
		want float64
	}{
		{"one value", []float64{7}, 95, 7},
		{"median odd", []float64{1, 2, 3, 4, 5}, 50, 3},
		{"median even", []float64{1, 2, 3, 4}, 50, 2.5},
		{"p0 is min", []float64{1, 2, 3, 4}, 0, 1},
		{"p100 is max", []float64{1, 2, 3, 4}, 100, 4},
		// 1..100: rank h = 99·p/100, so p95 = 95.05, p99 = 99.01 (numpy).
		{"p95 of 1..100", seq(100), 95, 95.05},
		{"p99 of 1..100", seq(100), 99, 99.01},
		{"p95 of 1..10", seq(10), 95, 9.55},
		{"p25 of 10,20,30,40", []float64{10, 20, 30, 40}, 25, 17.5},
	} {
		if got := percentile(tc.data, tc.p); !near(got, tc.want) {
			t.Errorf("%s: percentile(%v, %v) = %v, want %v", tc.name, tc.data, tc.p, got, tc.want)
		}
	}
	if !math.IsNaN(percentile(nil, 50)) {
		t.Error("percentile of nothing should be NaN")
	}
}

func seq(n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = float64(i + 1)
	}
	return s
}

func TestSummarize(t *testing.T) {
	s := summarize([]float64{4, 1, 3, 2, 5}) // unsorted on purpose
	want := Stats{N: 5, Mean: 3, Std: math.Sqrt(2.5), Min: 1, P50: 3, P95: 4.8, P99: 4.96, Max: 5}
	if s.N != want.N || !near(s.Mean, want.Mean) || !near(s.Std, want.Std) || s.Min != want.Min || s.Max != want.Max ||
		!near(s.P50, want.P50) || !near(s.P95, want.P95) || !near(s.P99, want.P99) {
		t.Errorf("summarize = %+v, want %+v", s, want)
	}
	if z := summarize(nil); z.N != 0 {
		t.Errorf("summarize(nil) = %+v", z)
	}
}

func TestLevelOf(t *testing.T) {
	samples := []sample{
		{Image: "a", LatencyMs: 110, InferMs: 100},
		{Image: "b", LatencyMs: 220, InferMs: 200},
		{Image: "a", Err: "boom"},
		{Image: "a", LatencyMs: 130, InferMs: 120},
	}
	l := levelOf(2, samples, 2*time.Second)
	if l.Requests != 4 || l.Errors != 1 || l.FirstError != "boom" {
		t.Errorf("requests/errors: %+v", l)
	}
	if !near(l.Throughput, 1.5) { // 3 good in 2 s
		t.Errorf("throughput %v, want 1.5", l.Throughput)
	}
	if !near(l.Overhead.Mean, (10.0+20+10)/3) || !near(l.Overhead.P50, 10) {
		t.Errorf("overhead %+v", l.Overhead)
	}
	if l.ByImage["a"].N != 2 || !near(l.ByImage["a"].Mean, 120) || l.ByImage["b"].N != 1 {
		t.Errorf("by image %+v", l.ByImage)
	}
}

// wellFormed parses s as XML to the end.
func wellFormed(s string) error {
	d := xml.NewDecoder(strings.NewReader(s))
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		return errors.New("root element is " + root + ", not svg")
	}
	return nil
}

func sampleReport() *Report {
	lv := func(c int, rps, p50, p95 float64) Level {
		return Level{Concurrency: c, Requests: 8, Throughput: rps,
			Latency: Stats{N: 8, Mean: p50, P50: p50, P95: p95}, Overhead: Stats{N: 8, Mean: 3}}
	}
	return &Report{
		Label: "test <&> \"label\"", Started: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC),
		Settings: Settings{Concurrency: []int{1, 2, 4, 8}, Status: "stream", Input: "datauri"},
		Bare:     &BareResult{EngineMs: 1400},
		Servers: []ServerRun{{Label: "default", Endpoints: []EndpointRun{{
			Spec:   endpointSpec{Name: "rembg", ID: "fal-ai/imageutils/rembg"},
			Levels: []Level{lv(1, 0.65, 1500, 1550), lv(2, 0.66, 3000, 3100), lv(4, 0.67, 6000, 6500), lv(8, 0.68, 12000, 13000)},
		}}}},
		Peers: []PeerRun{{Name: "peer <x>", Endpoint: "rembg", Levels: []PeerLevel{
			{Concurrency: 1, Requests: 8, Throughput: 0.2, Latency: Stats{N: 8, P50: 5000, P95: 5200}},
			{Concurrency: 8, Requests: 8, Throughput: 0.25, Latency: Stats{N: 8, P50: 32000, P95: 33000}},
		}}},
	}
}

func TestReportAndSVG(t *testing.T) {
	r := sampleReport()
	r.compare()
	if len(r.Compare) != 2 || !near(r.Compare[1].ThroughputRatio, 0.68/0.25) {
		t.Fatalf("compare = %+v", r.Compare)
	}
	r.goals("rembg", "astronaut.png", 8)
	if len(r.Goals) != 4 {
		t.Fatalf("goals = %+v", r.Goals)
	}
	byName := map[string]Goal{}
	for _, g := range r.Goals {
		byName[strings.SplitN(g.Name, ",", 2)[0]] = g
	}
	if g := byName["lone request vs bare engine"]; !near(g.Value, 1500.0/1400) || g.Met == nil || !*g.Met {
		t.Errorf("lone goal %+v", g)
	}
	if g := byName["throughput vs peer"]; g.Met == nil || !*g.Met {
		t.Errorf("throughput goal %+v", g)
	}
	if g := byName["server overhead (HTTP"]; !near(g.Value, 3) || g.Met == nil || !*g.Met {
		t.Errorf("overhead goal %+v", g)
	}

	svg, ok := r.endpointPlot("rembg")
	if !ok {
		t.Fatal("no plot")
	}
	if err := wellFormed(svg); err != nil {
		t.Fatalf("SVG not well-formed: %v\n%s", err, svg)
	}
	if n := strings.Count(svg, "<polyline"); n != 6 { // 2 series × (throughput, p50, p95)
		t.Errorf("%d polylines, want 6", n)
	}
	if _, ok := r.endpointPlot("esrgan"); ok {
		t.Error("plot for an endpoint that was not run")
	}
	// A plot with one point and no data at all still parses.
	for _, p := range [][]panel{
		{{Title: "t", Series: []series{{Name: "s", Color: "#000", Points: map[int]float64{1: 2}}}}},
		{{Title: "empty"}},
	} {
		if err := wellFormed(svgPlot("x & y", p)); err != nil {
			t.Errorf("svgPlot(%v): %v", p, err)
		}
	}

	md := r.markdown()
	for _, want := range []string{"| 8 | 8 | 0 | 0.680 |", "## Ours vs peer", "| rembg | default | 8 | 0.680 | 0.250 | 2.72× |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if _, err := json.Marshal(r); err != nil {
		t.Errorf("report does not marshal: %v", err)
	}
}

func TestNiceMax(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{{0, 1}, {0.7, 1}, {1.3, 2}, {2.2, 2.5}, {3, 5}, {13000, 20000}, {99, 100}} {
		if got := niceMax(tc.in); !near(got, tc.want) {
			t.Errorf("niceMax(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
