package main

import (
	"fmt"
	"html"
	"math"
	"sort"
	"strings"
)

// series is one line in a panel: y per concurrency.
type series struct {
	Name   string
	Dashed bool
	Color  string
	Points map[int]float64
}

type panel struct {
	Title  string
	YLabel string
	Series []series
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"}

// niceMax rounds v up to 1, 2, 2.5 or 5 × 10ⁿ.
func niceMax(v float64) float64 {
	if v <= 0 || math.IsNaN(v) {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*e {
			return m * e
		}
	}
	return 10 * e
}

func fmtTick(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 1:
		return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
	default:
		return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
	}
}

// svgPlot draws the panels side by side, concurrency on a categorical x
// axis (1, 2, 4, 8 equally spaced), y from 0, with a legend under each.
func svgPlot(title string, panels []panel) string {
	const pw, ph, ml, mr, mt, mb = 460.0, 300.0, 64.0, 16.0, 56.0, 44.0
	legendRows := 0
	for _, p := range panels {
		legendRows = max(legendRows, len(p.Series))
	}
	W := float64(len(panels)) * (pw + ml + mr)
	H := mt + ph + mb + float64(legendRows)*18 + 12
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	w(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	w(`<text x="%.0f" y="22" font-size="15" font-weight="bold" text-anchor="middle">%s</text>`+"\n", W/2, html.EscapeString(title))
	for pi, p := range panels {
		x0 := float64(pi)*(pw+ml+mr) + ml
		y0 := mt
		// x categories: every concurrency any series has.
		set := map[int]bool{}
		ymax := 0.0
		for _, s := range p.Series {
			for c, v := range s.Points {
				set[c] = true
				if !math.IsNaN(v) {
					ymax = max(ymax, v)
				}
			}
		}
		var xs []int
		for c := range set {
			xs = append(xs, c)
		}
		sort.Ints(xs)
		top := niceMax(ymax * 1.05)
		xpos := func(c int) float64 {
			i := sort.SearchInts(xs, c)
			if len(xs) == 1 {
				return x0 + pw/2
			}
			return x0 + 20 + float64(i)*(pw-40)/float64(len(xs)-1)
		}
		ypos := func(v float64) float64 { return y0 + ph - v/top*ph }
		w(`<text x="%.1f" y="%.1f" font-size="13" text-anchor="middle">%s</text>`+"\n", x0+pw/2, y0-10, html.EscapeString(p.Title))
		// grid and y ticks
		for i := 0; i <= 5; i++ {
			v := top * float64(i) / 5
			y := ypos(v)
			w(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x0, y, x0+pw, y)
			w(`<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-6, y+4, fmtTick(v))
		}
		w(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", x0, y0, pw, ph)
		for _, c := range xs {
			x := xpos(c)
			w(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", x, y0+ph, x, y0+ph+5)
			w(`<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", x, y0+ph+18, c)
		}
		w(`<text x="%.1f" y="%.1f" text-anchor="middle">concurrent clients</text>`+"\n", x0+pw/2, y0+ph+34)
		w(`<text transform="translate(%.1f,%.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", x0-48, y0+ph/2, html.EscapeString(p.YLabel))
		for si, s := range p.Series {
			var cs []int
			for c, v := range s.Points {
				if !math.IsNaN(v) && v != 0 {
					cs = append(cs, c)
				}
			}
			sort.Ints(cs)
			dash := ""
			if s.Dashed {
				dash = ` stroke-dasharray="6 4"`
			}
			var pts []string
			for _, c := range cs {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", xpos(c), ypos(s.Points[c])))
			}
			if len(pts) > 1 {
				w(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), s.Color, dash)
			}
			for _, c := range cs {
				w(`<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s, %d clients: %s</title></circle>`+"\n",
					xpos(c), ypos(s.Points[c]), s.Color, html.EscapeString(s.Name), c, fmtTick(s.Points[c]))
			}
			ly := y0 + ph + mb + float64(si)*18 + 6
			w(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", x0, ly, x0+28, ly, s.Color, dash)
			w(`<text x="%.1f" y="%.1f">%s</text>`+"\n", x0+34, ly+4, html.EscapeString(s.Name))
		}
	}
	w("</svg>\n")
	return b.String()
}

// endpointPlot is the throughput and latency panels of one endpoint: a
// series per server config, and the peer's when there is one.
func (r *Report) endpointPlot(name string) (string, bool) {
	thr := panel{Title: "throughput", YLabel: "requests / s"}
	lat := panel{Title: "latency (p50 solid, p95 dashed)", YLabel: "ms"}
	ci := 0
	add := func(label string, pts map[int][3]float64) {
		col := palette[ci%len(palette)]
		ci++
		t, p50, p95 := map[int]float64{}, map[int]float64{}, map[int]float64{}
		for c, v := range pts {
			t[c], p50[c], p95[c] = v[0], v[1], v[2]
		}
		thr.Series = append(thr.Series, series{Name: label, Color: col, Points: t})
		lat.Series = append(lat.Series, series{Name: label + " p50", Color: col, Points: p50},
			series{Name: label + " p95", Color: col, Dashed: true, Points: p95})
	}
	found := false
	for _, s := range r.Servers {
		for _, e := range s.Endpoints {
			if e.Spec.Name != name || len(e.Levels) == 0 {
				continue
			}
			found = true
			pts := map[int][3]float64{}
			for _, l := range e.Levels {
				if l.Latency.N > 0 {
					pts[l.Concurrency] = [3]float64{l.Throughput, l.Latency.P50, l.Latency.P95}
				}
			}
			add("falocal "+s.Label, pts)
		}
	}
	for _, p := range r.Peers {
		if p.Endpoint != name {
			continue
		}
		pts := map[int][3]float64{}
		for _, l := range p.Levels {
			if l.Latency.N > 0 {
				pts[l.Concurrency] = [3]float64{l.Throughput, l.Latency.P50, l.Latency.P95}
			}
		}
		add(p.Name, pts)
	}
	if !found {
		return "", false
	}
	id := name
	for _, s := range r.Servers {
		for _, e := range s.Endpoints {
			if e.Spec.Name == name {
				id = e.Spec.ID
			}
		}
	}
	return svgPlot(fmt.Sprintf("%s — %s (%s)", id, r.Label, r.Started.Format("2006-01-02")), []panel{thr, lat}), true
}
