package bench

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// chartFile is a PNG written for a section of the report.
type chartFile struct {
	Section string
	Path    string
	Alt     string
}

var (
	colorBPF    = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colorKernel = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	colorGrey   = color.RGBA{R: 0x77, G: 0x77, B: 0x77, A: 0xff}
)

// writeCharts draws the charts the results allow into dir.
func writeCharts(dir string, res *Results) ([]chartFile, error) {
	byID := map[string]*CaseResult{}
	for _, c := range res.Cases {
		byID[c.ID] = c
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var out []chartFile
	for _, ch := range []struct {
		file, section, alt string
		draw               func(string, map[string]*CaseResult, string) (bool, error)
	}{
		{"throughput.png", "twohost", "Throughput, request/response and connection rate: calyx BPF vs kernel per path", throughputChart},
		{"vm.png", "vm", "VM to VM: one TCP stream and request/response, calyx BPF vs kernel on the same taps", vmChart},
		{"perpacket.png", "perpacket", "Per-packet nanoseconds of each BPF path", perPacketChart},
	} {
		date := res.Machine.Date
		if sr, ok := res.SectionRuns[ch.section]; ok && sr.Date != "" {
			date = sr.Date // figures carried over from an earlier run
		}
		stamp := fmt.Sprintf("calyx make bench, %s, %s — this machine's figures", date[:min(10, len(date))], res.Machine.CPU)
		p := filepath.Join(dir, ch.file)
		ok, err := ch.draw(p, byID, stamp)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ch.file, err)
		}
		if ok {
			out = append(out, chartFile{Section: ch.section, Path: p, Alt: ch.alt})
		}
	}
	return out, nil
}

// barSlot is one bar: a case's median with min and max.
type barSlot struct {
	med, lo, hi float64
	ok          bool
}

func slotOf(c *CaseResult) barSlot {
	if c == nil || !c.Measured {
		return barSlot{}
	}
	return barSlot{med: *c.Median, lo: *c.Min, hi: *c.Max, ok: true}
}

// errPoints is what the error-bar plotters take.
type errPoints struct {
	plotter.XYs
	plotter.YErrors
}

type xErrPoints struct {
	plotter.XYs
	plotter.XErrors
}

// chartGroup is one category of a grouped bar panel: a BPF case and its
// kernel baseline (either may be absent).
type chartGroup struct {
	name        string
	bpf, kernel string // case IDs
}

// groupedPanel draws BPF vs kernel bars per group, with min–max whiskers,
// the median above each bar and the ratio under each group's name. It
// returns nil when nothing in it was measured.
func groupedPanel(title, unit, format string, groups []chartGroup, byID map[string]*CaseResult) (*plot.Plot, error) {
	measured := false
	for _, g := range groups {
		if slotOf(byID[g.bpf]).ok || slotOf(byID[g.kernel]).ok {
			measured = true
		}
	}
	if !measured {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = unit
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	grid := plotter.NewGrid()
	grid.Vertical.Width = 0
	p.Add(grid)
	const half = 0.19 // bar centres at group ± half (data units)
	var names []string
	ymax := 0.0
	for _, side := range []struct {
		label string
		col   color.Color
		dx    float64
		id    func(chartGroup) string
	}{
		{"calyx BPF", colorBPF, -half, func(g chartGroup) string { return g.bpf }},
		{"kernel", colorKernel, half, func(g chartGroup) string { return g.kernel }},
	} {
		vals := make(plotter.Values, len(groups))
		var pts errPoints
		var lab plotter.XYLabels
		for i, g := range groups {
			s := slotOf(byID[side.id(g)])
			x := float64(i) + side.dx
			if !s.ok {
				if side.id(g) == "" {
					lab.XYs = append(lab.XYs, plotter.XY{X: x, Y: 0})
					lab.Labels = append(lab.Labels, "none")
				}
				continue
			}
			vals[i] = s.med
			pts.XYs = append(pts.XYs, plotter.XY{X: x, Y: s.med})
			pts.YErrors = append(pts.YErrors, struct{ Low, High float64 }{s.med - s.lo, s.hi - s.med})
			lab.XYs = append(lab.XYs, plotter.XY{X: x, Y: s.hi})
			lab.Labels = append(lab.Labels, fmt.Sprintf(format, s.med))
			ymax = max(ymax, s.hi)
		}
		bars, err := plotter.NewBarChart(vals, vg.Points(26))
		if err != nil {
			return nil, err
		}
		bars.XMin = side.dx
		bars.Color = side.col
		bars.LineStyle.Width = 0
		p.Add(bars)
		p.Legend.Add(side.label, bars)
		if len(pts.XYs) > 0 {
			eb, err := plotter.NewYErrorBars(pts)
			if err != nil {
				return nil, err
			}
			eb.LineStyle.Width = vg.Points(1)
			eb.CapWidth = vg.Points(8)
			p.Add(eb)
		}
		if len(lab.XYs) > 0 {
			ls, err := plotter.NewLabels(lab)
			if err != nil {
				return nil, err
			}
			for i := range ls.TextStyle {
				ls.TextStyle[i].XAlign = text.XCenter
				ls.TextStyle[i].Font.Size = vg.Points(9)
			}
			ls.Offset = vg.Point{Y: vg.Points(3)}
			p.Add(ls)
		}
	}
	for _, g := range groups {
		name := g.name
		if c := byID[g.bpf]; c != nil && c.Ratio != nil && c.BaselineName != nil && *c.Baseline == g.kernel {
			name += "\nBPF/kernel " + ratioText(c)
		}
		names = append(names, name)
	}
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.6, float64(len(groups))-0.4
	p.Y.Max = ymax * 1.35
	p.Y.Tick.Marker = plainTicks{}
	return p, nil
}

// throughputChart draws the two-host comparison: one panel per metric.
func throughputChart(path string, byID map[string]*CaseResult, stamp string) (bool, error) {
	groups := func(metric string) []chartGroup {
		gs := []chartGroup{
			{"VXLAN", TwoHostCaseID(metric, CaseBPFVXLAN), TwoHostCaseID(metric, CaseKernelVXLAN)},
			{"IP-in-IP\n(no kernel device)", TwoHostCaseID(metric, CaseBPFIPIP), ""},
			{"no encapsulation", TwoHostCaseID(metric, CaseBPFDirect), TwoHostCaseID(metric, CaseKernelRouted)},
			{"VXLAN,\nIPv6", TwoHostCaseID(metric, CaseBPFVXLAN6), TwoHostCaseID(metric, CaseKernelVXLAN6)},
			{"no encapsulation,\nIPv6", TwoHostCaseID(metric, CaseBPFDirect6), TwoHostCaseID(metric, CaseKernelRouted6)},
		}
		if metric == MetricTCP1 {
			gs = append(gs, chartGroup{"one host", caseLocalBPF, caseLocalKernel})
		}
		return gs
	}
	return metricChart(path, twoHostMetrics(), groups, byID, vg.Points(330), stamp+"; two hosts (workload wa → wb), the same lab and run for every bar")
}

// vmChart draws the VM comparison: one panel per metric, one host and two
// hosts side by side.
func vmChart(path string, byID map[string]*CaseResult, stamp string) (bool, error) {
	groups := func(metric string) []chartGroup {
		return []chartGroup{
			{"one host", VMCaseID(metric, CaseBPFLocal), VMCaseID(metric, CaseKernelLocal)},
			{"two hosts, VXLAN", VMCaseID(metric, CaseBPFVXLAN), VMCaseID(metric, CaseKernelVXLAN)},
		}
	}
	return metricChart(path, vmMetrics(), groups, byID, vg.Points(300), stamp+"; VMs on taps (va → va2, va → vb), the same taps, lab and run for every bar")
}

// metricChart draws one grouped panel per metric, two panels a row, each
// panelH high; nothing (false) when no case was measured.
func metricChart(path string, metrics []metric, groups func(metric string) []chartGroup, byID map[string]*CaseResult, panelH vg.Length, caption string) (bool, error) {
	var panels []*plot.Plot
	for _, m := range metrics {
		format := "%.0f"
		if m.unit == "Gbit/s" {
			format = "%.2f"
		}
		p, err := groupedPanel(m.title, m.unit+" (median; whiskers min–max)", format, groups(m.key), byID)
		if err != nil {
			return false, err
		}
		if p != nil {
			panels = append(panels, p)
		}
	}
	if len(panels) == 0 {
		return false, nil
	}
	return true, savePanels(path, panels, 2, vg.Points(1100), panelH, caption)
}

// perPacketChart draws the net nanoseconds of each BPF path.
func perPacketChart(path string, byID map[string]*CaseResult, stamp string) (bool, error) {
	var cases []*CaseResult
	measured := false
	for _, c := range perPacketCases()[0] {
		cr := byID[c.ID]
		if cr == nil {
			continue
		}
		cases = append(cases, cr)
		measured = measured || cr.Measured
	}
	if !measured {
		return false, nil
	}
	p := plot.New()
	p.Title.Text = "Per-packet cost of each BPF path: BPF_PROG_TEST_RUN, fresh packet per run, harness cost subtracted"
	p.X.Label.Text = "ns per packet (median; whiskers min–max)"
	p.X.Min = 0
	grid := plotter.NewGrid()
	grid.Horizontal.Width = 0
	p.Add(grid)
	n := len(cases)
	vals := make(plotter.Values, n)
	var pts xErrPoints
	var lab plotter.XYLabels
	names := make([]string, n)
	xmax := 0.0
	for k, c := range cases {
		i := n - 1 - k // first case on top
		names[i] = c.Name
		if !c.Measured {
			lab.XYs = append(lab.XYs, plotter.XY{X: 0, Y: float64(i)})
			lab.Labels = append(lab.Labels, strings.Replace(*c.Reason, "not measured: ", "not measured yet: ", 1))
			continue
		}
		vals[i] = *c.Median
		pts.XYs = append(pts.XYs, plotter.XY{X: *c.Median, Y: float64(i)})
		pts.XErrors = append(pts.XErrors, struct{ Low, High float64 }{*c.Median - *c.Min, *c.Max - *c.Median})
		lab.XYs = append(lab.XYs, plotter.XY{X: *c.Max, Y: float64(i)})
		lab.Labels = append(lab.Labels, fmt.Sprintf("%.0f ns", *c.Median))
		xmax = max(xmax, *c.Max)
	}
	bars, err := plotter.NewBarChart(vals, vg.Points(22))
	if err != nil {
		return false, err
	}
	bars.Horizontal = true
	bars.Color = colorBPF
	bars.LineStyle.Width = 0
	p.Add(bars)
	if len(pts.XYs) > 0 {
		eb, err := plotter.NewXErrorBars(pts)
		if err != nil {
			return false, err
		}
		eb.LineStyle.Width = vg.Points(1)
		eb.CapWidth = vg.Points(8)
		p.Add(eb)
	}
	ls, err := plotter.NewLabels(lab)
	if err != nil {
		return false, err
	}
	for i := range ls.TextStyle {
		ls.TextStyle[i].YAlign = text.YCenter
		ls.TextStyle[i].Font.Size = vg.Points(9)
		if lab.XYs[i].X == 0 {
			ls.TextStyle[i].Color = colorGrey
		}
	}
	ls.Offset = vg.Point{X: vg.Points(6)}
	p.Add(ls)
	p.NominalY(names...)
	p.Y.Min, p.Y.Max = -0.6, float64(n)-0.4
	p.X.Max = xmax * 1.25
	p.X.Tick.Marker = plainTicks{}
	return true, savePanels(path, []*plot.Plot{p}, 1, vg.Points(1000), vg.Points(float64(36*n+90)), stamp)
}

// plainTicks are gonum's default ticks labelled without trailing zeros.
type plainTicks struct{}

func (plainTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = strconv.FormatFloat(ts[i].Value, 'f', -1, 64)
		}
	}
	return ts
}

// savePanels lays panels out cols wide, each panelH high, with a caption at the bottom, and
// writes a PNG.
func savePanels(path string, panels []*plot.Plot, cols int, width, panelH vg.Length, caption string) error {
	rows := (len(panels) + cols - 1) / cols
	capH := vg.Points(22)
	height := panelH*vg.Length(rows) + capH
	img := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(110))
	dc := draw.New(img)
	// White background.
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	grid := make([][]*plot.Plot, rows)
	for r := range grid {
		grid[r] = make([]*plot.Plot, cols)
		for c := range grid[r] {
			if i := r*cols + c; i < len(panels) {
				grid[r][c] = panels[i]
			}
		}
	}
	area := dc
	area.Min.Y += capH
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Points(24), PadY: vg.Points(18), PadTop: vg.Points(8), PadLeft: vg.Points(6), PadRight: vg.Points(10)}
	canvases := plot.Align(grid, tiles, area)
	for r := range grid {
		for c := range grid[r] {
			if grid[r][c] != nil {
				grid[r][c].Draw(canvases[r][c])
			}
		}
	}
	sty := text.Style{Font: plot.DefaultFont, Handler: plot.DefaultTextHandler, Color: colorGrey, XAlign: text.XCenter}
	sty.Font.Size = vg.Points(9)
	dc.FillText(sty, vg.Point{X: (dc.Min.X + dc.Max.X) / 2, Y: dc.Min.Y + vg.Points(7)}, caption)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
