package main

import (
	"bytes"
	"fmt"
	"html"
	"math"
)

// Chart geometry (px).
const (
	svgW, svgH                        = 820, 460
	svgLeft, svgRight, svgTop, svgBot = 80, 170, 76, 64
)

// latencySeries are the percentiles drawn, with their colours.
var latencySeries = []struct {
	name  string
	color string
	get   func(l Latency) int64
}{
	{"p50", "#1b9e77", func(l Latency) int64 { return l.P50 }},
	{"p90", "#7570b3", func(l Latency) int64 { return l.P90 }},
	{"p99", "#d95f02", func(l Latency) int64 { return l.P99 }},
	{"p99.9", "#e7298a", func(l Latency) int64 { return l.P999 }},
	{"max", "#666666", func(l Latency) int64 { return l.Max }},
}

// latencySVG draws the open-loop points of rep as a self-contained SVG:
// latency percentiles (log scale) against offered rate, with the §8 p99
// budgets and the closed-loop peak marked.
func latencySVG(rep *Report) []byte {
	pts := rep.Latency
	var b bytes.Buffer
	pw, ph := float64(svgW-svgLeft-svgRight), float64(svgH-svgTop-svgBot)

	maxX := rep.PeakRequestsPerSec
	lo, hi := int64(math.MaxInt64), int64(1)
	for _, p := range pts {
		maxX = max(maxX, p.OfferedRate)
		for _, s := range latencySeries {
			v := max(s.get(p.Latency), 1)
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	hi = max(hi, 5000) // keep the 5 ms budget line in view
	maxX = niceCeil(maxX * 1.05)
	yLo := math.Pow(10, math.Floor(math.Log10(float64(lo))))
	yHi := math.Pow(10, math.Ceil(math.Log10(float64(hi))))
	if yHi <= yLo {
		yHi = yLo * 10
	}
	x := func(v float64) float64 { return svgLeft + v/maxX*pw }
	y := func(us float64) float64 {
		us = max(us, yLo)
		return svgTop + ph - (math.Log10(us)-math.Log10(yLo))/(math.Log10(yHi)-math.Log10(yLo))*ph
	}

	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", svgW, svgH, svgW, svgH)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">sidetrack latency vs offered rate — scenario %s</text>`+"\n", svgLeft, html.EscapeString(rep.Scenario))
	fmt.Fprintf(&b, `<text x="%d" y="40" fill="#555">open loop, fixed rates; latency from scheduled send time (HdrHistogram, no coordinated omission)</text>`+"\n", svgLeft)
	fmt.Fprintf(&b, `<text x="%d" y="56" fill="#555">%s per point, %d lanes (fasthttp), pinned %v, %s</text>`+"\n",
		svgLeft, html.EscapeString(rep.LatencyDuration), rep.Connections, rep.Pinned, rep.Started.Format("2006-01-02 15:04 MST"))

	// Y grid: decades, with 2 and 5 as minor lines.
	for d := yLo; d <= yHi*1.0001; d *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := d * m
			if v > yHi*1.0001 {
				break
			}
			stroke, w := "#e5e5e5", 1
			if m == 1 {
				stroke = "#c8c8c8"
				fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", svgLeft-8, y(v), usLabel(v))
			}
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="%d"/>`+"\n", svgLeft, svgW-svgRight, y(v), y(v), stroke, w)
		}
	}
	// X grid: 5 steps.
	for i := 0; i <= 5; i++ {
		v := maxX * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#e5e5e5"/>`+"\n", x(v), x(v), svgTop, svgH-svgBot)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(v), svgH-svgBot+18, rateLabel(v))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#333"/>`+"\n", svgLeft, svgTop, pw, ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">offered rate (requests/s)</text>`+"\n", svgLeft+pw/2, svgH-16)
	fmt.Fprintf(&b, `<text transform="translate(20 %.1f) rotate(-90)" text-anchor="middle">latency (log scale)</text>`+"\n", svgTop+ph/2)

	// Budgets of §8 and the closed-loop peak.
	// The 5 ms label sits above its line, the 2 ms one below, so the two
	// never overlap.
	for _, bl := range []struct {
		us    float64
		dy    float64
		label string
	}{{5000, -4, "p99 budget at peak (5 ms)"}, {2000, 13, "p99 budget at half peak (2 ms)"}} {
		if bl.us >= yLo && bl.us <= yHi {
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#c00" stroke-dasharray="6 4"/>`+"\n", svgLeft, svgW-svgRight, y(bl.us), y(bl.us))
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" fill="#c00" font-size="11">%s</text>`+"\n", svgLeft+6, y(bl.us)+bl.dy, bl.label)
		}
	}
	if rep.PeakRequestsPerSec > 0 {
		for _, f := range []float64{0.5, 1} {
			px := x(f * rep.PeakRequestsPerSec)
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#999" stroke-dasharray="2 3"/>`+"\n", px, px, svgTop, svgH-svgBot)
			label := "closed-loop peak"
			if f == 0.5 {
				label = "half peak"
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#777" font-size="11" text-anchor="middle">%s</text>`+"\n", px, svgTop-4, label)
		}
	}

	// Series.
	for _, s := range latencySeries {
		var poly bytes.Buffer
		for _, p := range pts {
			fmt.Fprintf(&poly, "%.1f,%.1f ", x(p.OfferedRate), y(float64(s.get(p.Latency))))
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", bytes.TrimSpace(poly.Bytes()), s.color)
		for _, p := range pts {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s at %.0f req/s: %s</title></circle>`+"\n",
				x(p.OfferedRate), y(float64(s.get(p.Latency))), s.color, s.name, p.OfferedRate, usLabel(float64(s.get(p.Latency))))
		}
	}

	// Legend.
	lx := svgW - svgRight + 16
	for i, s := range latencySeries {
		ly := svgTop + 10 + i*20
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", lx, lx+22, ly, ly, s.color)
		fmt.Fprintf(&b, `<text x="%d" y="%d" dominant-baseline="middle">%s</text>`+"\n", lx+28, ly, s.name)
	}
	ly := svgTop + 10 + len(latencySeries)*20
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#c00" stroke-dasharray="6 4"/>`+"\n", lx, lx+22, ly, ly)
	fmt.Fprintf(&b, `<text x="%d" y="%d" dominant-baseline="middle">§8 p99 budget</text>`+"\n", lx+28, ly)
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// usLabel formats microseconds for an axis.
func usLabel(us float64) string {
	switch {
	case us >= 1e6:
		return trimFloat(us/1e6) + " s"
	case us >= 1e3:
		return trimFloat(us/1e3) + " ms"
	}
	return trimFloat(us) + " µs"
}

// rateLabel formats requests/s for an axis.
func rateLabel(v float64) string {
	if v >= 1000 {
		return trimFloat(v/1000) + "k"
	}
	return trimFloat(v)
}

func trimFloat(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// niceCeil rounds v up to a round multiple of a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
