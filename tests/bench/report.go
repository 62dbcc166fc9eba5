package bench

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Options control one benchmark run.
type Options struct {
	BinDir string
	// Report is the Markdown report to write (BENCHMARKS.md).
	Report string
	// JSON is the machine-readable results to write ("" for none).
	JSON string
	// ChartDir receives the PNG charts ("" for none).
	ChartDir string
	// BPFBench is `go test -bench` output of ./bpf/ (per-packet section).
	BPFBench string
	Quick    bool
	// Rounds, when positive, replaces the number of rounds of the
	// two-host, floating-IP and VM sections.
	Rounds int
	// Only, when set, runs just these sections (SectionKeys). The other
	// sections keep the figures the results file (JSON) already holds, so
	// the report and results.json stay whole.
	Only []string
	// Logf receives progress lines; nil means standard error.
	Logf func(format string, args ...any)
}

// sectionAliases are older names --only still accepts.
var sectionAliases = map[string]string{"encap": "twohost"}

func (o Options) runs(section string) bool {
	if len(o.Only) == 0 {
		return true
	}
	for _, s := range o.Only {
		if s == section || sectionAliases[s] == section {
			return true
		}
	}
	return false
}

// sectionStatus says what became of a section in this run.
type sectionStatus struct {
	state string // "measured", "pending", "skipped", "failed"
	why   string
}

// Run measures every selected section, then writes the report, the JSON
// results and the charts. A section that fails is reported as such and the
// others still run; Run then returns an error. When ctx is cancelled
// nothing is written (every lab is still removed).
func Run(ctx context.Context, o Options) error {
	keys := SectionKeys()
	for _, s := range o.Only {
		if !slices.Contains(keys, s) && sectionAliases[s] == "" {
			return fmt.Errorf("unknown section %q: want one of %s", s, strings.Join(keys, ", "))
		}
	}
	logf := o.Logf
	if logf == nil {
		logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	}
	began := time.Now()
	rec := NewRecorder(logf)
	var secs []*Section
	status := map[string]sectionStatus{}
	var failed []error
	for _, s := range Registry(o.Quick) {
		if !o.runs(s.Key) {
			continue
		}
		secs = append(secs, s)
		if s.Pending != "" || s.Run == nil {
			status[s.Key] = sectionStatus{"pending", s.Pending}
			continue
		}
		logf("== %s", s.Title)
		t := time.Now()
		err := s.Run(ctx, &o, rec)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if why, ok := isSkip(err); ok {
			status[s.Key] = sectionStatus{"skipped", why}
			logf("%s: not run: %s", s.Key, why)
			continue
		}
		if err != nil {
			status[s.Key] = sectionStatus{"failed", err.Error()}
			failed = append(failed, fmt.Errorf("%s: %w", s.Key, err))
			logf("%s FAILED after %s: %v", s.Key, time.Since(t).Round(time.Second), err)
			continue
		}
		status[s.Key] = sectionStatus{"measured", ""}
		logf("%s done in %s", s.Key, time.Since(t).Round(time.Second))
	}

	res := buildResults(secs, status, rec, o, time.Since(began))
	if len(o.Only) > 0 && o.JSON != "" {
		prev, err := readResults(o.JSON)
		switch {
		case err == nil:
			secs = mergeResults(res, prev, o.Quick, status, rec)
		case errors.Is(err, fs.ErrNotExist):
		default:
			logf("the earlier results in %s cannot be kept (%v): the report holds only this run's sections", o.JSON, err)
		}
	}
	var charts []chartFile
	if o.ChartDir != "" {
		var err error
		if charts, err = writeCharts(o.ChartDir, res); err != nil {
			return err
		}
	}
	if o.JSON != "" {
		if err := os.MkdirAll(filepath.Dir(o.JSON), 0o755); err != nil {
			return err
		}
		if err := writeJSON(o.JSON, res); err != nil {
			return err
		}
	}
	md := renderMarkdown(res, secs, status, rec, charts, o)
	if err := os.WriteFile(o.Report, []byte(md), 0o644); err != nil {
		return err
	}
	logSummary(logf, res)
	return errors.Join(failed...)
}

// buildResults turns the recorder into results.json's content.
func buildResults(secs []*Section, status map[string]sectionStatus, rec *Recorder, o Options, took time.Duration) *Results {
	res := &Results{Schema: 1, Machine: thisMachine(), Failed: map[string]any{}, SectionRuns: map[string]SectionRun{}}
	res.Run = RunInfo{Quick: o.Quick, DurationSeconds: took.Round(time.Second).Seconds(), Parameters: map[string]any{}}
	rec.mu.Lock()
	for k, v := range rec.params {
		res.Run.Parameters[k] = v
	}
	rec.mu.Unlock()
	labels := map[string]string{}
	for _, s := range Registry(o.Quick) {
		for _, c := range s.Cases() {
			labels[c.ID] = c.Label
		}
	}
	res.Cases = []*CaseResult{}
	res.Goals = []GoalResult{}
	for _, s := range secs {
		res.Run.Sections = append(res.Run.Sections, s.Key)
		st := status[s.Key]
		if st.state == "failed" {
			res.Failed[s.Key] = st.why
		}
		res.SectionRuns[s.Key] = SectionRun{Date: res.Machine.Date, Commit: res.Machine.Commit, Dirty: res.Machine.Dirty,
			Quick: o.Quick, State: st.state, Why: st.why}
		for _, t := range s.Tables {
			for _, c := range t.Cases {
				var reason string
				switch {
				case c.Pending != "":
					reason = "not measured: " + c.Pending
				case st.state == "pending":
					reason = "not measured: " + st.why
				case st.state == "skipped":
					reason = "not run in this pass: " + st.why
				case st.state == "failed":
					reason = "not measured: the section failed in this run"
				}
				res.Cases = append(res.Cases, rec.result(s, t.Title, c, labels, reason))
			}
		}
	}
	res.Goals = goalsOf(secs, res.Cases)
	return res
}

// goalsOf lists the goals of the cases of secs, with their outcome.
func goalsOf(secs []*Section, cases []*CaseResult) []GoalResult {
	byID := map[string]*CaseResult{}
	for _, c := range cases {
		byID[c.ID] = c
	}
	out := []GoalResult{}
	for _, s := range secs {
		for _, c := range s.Cases() {
			cr := byID[c.ID]
			if c.Goal == nil || cr == nil {
				continue
			}
			g := GoalResult{Case: c.ID, Issue: c.Goal.Issue, Text: c.Goal.Text, Pass: cr.Pass, Note: cr.GoalNote}
			switch {
			case !cr.Measured:
				g.Note = cr.Reason
			case c.Goal.OnInterval && cr.RatioCI != nil:
				g.Value = ptr(cr.RatioCI.GeoMean)
			case c.Goal.OnInterval:
			case c.Goal.onRatio():
				g.Value = cr.Ratio
			default:
				g.Value = ptr(goalStat(cr, c.Goal))
			}
			out = append(out, g)
		}
	}
	return out
}

// fmtFloat formats v with format, or "—" when v is not a number.
func fmtFloat(v float64, format string) string {
	if finite(v) == nil {
		return "—"
	}
	return fmt.Sprintf(format, v)
}

// unitFormat is how figures of a unit are printed.
func unitFormat(unit string) string {
	switch unit {
	case "Gbit/s", "%":
		return "%.2f"
	case "ms", "MiB", unitCPUPerKT:
		return "%.1f"
	case unitCPUPerGB:
		return "%.3f"
	}
	return "%.0f"
}

func fmtStat(v *float64, unit string) string {
	if v == nil {
		return "—"
	}
	return fmtFloat(*v, unitFormat(unit))
}

// goalText renders a goal as a condition.
func goalText(g *Goal, unit string) string {
	if g.OnInterval && g.MinRatio > 0 {
		return fmt.Sprintf("95%% interval ≥ %.2f (%s)", g.MinRatio, g.Issue)
	}
	if g.OnInterval && g.MaxRatio > 0 {
		return fmt.Sprintf("95%% interval ≤ %.2f (%s)", g.MaxRatio, g.Issue)
	}
	if g.MinRatio > 0 {
		return fmt.Sprintf("ratio ≥ %.2f (%s)", g.MinRatio, g.Issue)
	}
	if g.MaxRatio > 0 {
		return fmt.Sprintf("ratio ≤ %.2f (%s)", g.MaxRatio, g.Issue)
	}
	stat := g.Stat
	if stat == "" {
		stat = "median"
	}
	return fmt.Sprintf("%s ≤ %s %s (%s)", stat, fmtFloat(g.MaxValue, "%g"), unit, g.Issue)
}

// verdict renders a case's pass/miss.
func verdict(cr *CaseResult) string {
	switch {
	case cr.Pass != nil && *cr.Pass:
		return "**pass**"
	case cr.Pass != nil:
		return "**miss**"
	case cr.GoalNote != nil && strings.HasPrefix(*cr.GoalNote, "unclear"):
		return "**unclear**" + strings.TrimPrefix(*cr.GoalNote, "unclear")
	case cr.GoalNote != nil:
		return "not judged: " + *cr.GoalNote
	case cr.Reason != nil:
		return *cr.Reason
	}
	return "—"
}

// ratioText prints a case's ratio: three decimals where a goal judges it,
// so that a miss by a hair does not read as the threshold itself.
func ratioText(cr *CaseResult) string {
	if cr.Ratio == nil {
		return "—"
	}
	if cr.Goal != nil && cr.Goal.onRatio() {
		return fmt.Sprintf("%.3f", *cr.Ratio)
	}
	return fmt.Sprintf("%.2f", *cr.Ratio)
}

// ciText prints a case's 95% interval of the ratio: the geometric mean of
// the per-round ratios and the interval's bounds.
func ciText(cr *CaseResult) string {
	if cr.RatioCI == nil {
		return "—"
	}
	if cr.Goal != nil && cr.Goal.OnInterval {
		return fmt.Sprintf("%.3f (%.3f–%.3f)", cr.RatioCI.GeoMean, cr.RatioCI.Lo, cr.RatioCI.Hi)
	}
	return cr.RatioCI.String()
}

func fmtRoundRatio(s *Stats) string {
	if s == nil || s.N < 2 {
		return "—"
	}
	return fmt.Sprintf("%.2f (%.2f–%.2f)", s.Median, s.Min, s.Max)
}

// renderMarkdown writes BENCHMARKS.md.
func renderMarkdown(res *Results, secs []*Section, status map[string]sectionStatus, rec *Recorder, charts []chartFile, o Options) string {
	byID := map[string]*CaseResult{}
	for _, c := range res.Cases {
		byID[c.ID] = c
	}
	var b strings.Builder
	m := res.Machine
	kind := "a full run"
	if res.Run.Quick {
		kind = "a **quick pass** (`BENCH_QUICK=1`: one round, one-second runs, a smaller control-plane model — for checking that everything works, not for figures)"
	}
	var carried, ran []string
	for _, s := range secs {
		if sr, ok := res.SectionRuns[s.Key]; ok && sr.Carried {
			carried = append(carried, s.Key)
		} else {
			ran = append(ran, s.Key)
		}
	}
	if len(carried) > 0 {
		kind = fmt.Sprintf("a run of some sections only (`BENCH_ONLY=%s`", strings.Join(o.Only, ","))
		if res.Run.Quick {
			kind += ", and a **quick pass** (`BENCH_QUICK=1`): for checking that everything works, not for figures"
		}
		kind += ")"
	}
	fmt.Fprintf(&b, "# calyx benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `make bench` on %s: %s, %s of measurement after the per-packet benchmarks.\n", m.Date[:10], kind, (time.Duration(res.Run.DurationSeconds) * time.Second).String())
	if len(carried) > 0 {
		fmt.Fprintf(&b, "This run measured %s; the figures of %s are carried over unchanged from the earlier runs named in each section.\n", joinKeys(ran), joinKeys(carried))
	}
	commit := m.Commit
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if m.Dirty {
		commit += " with uncommitted changes"
	}
	fmt.Fprintf(&b, "**The machine these figures come from**: %s; source at commit %s.\n\n", m, commit)
	fmt.Fprintf(&b, "Performance is reported here, never asserted in tests. Absolute figures are this machine's and depend on what else it was running; ")
	fmt.Fprintf(&b, "the ratios — calyx's path against the kernel's own way of doing the same job, measured in the same run, on the same lab, alternately — are what carries over. ")
	fmt.Fprintf(&b, "Every figure is the median of repeated runs, with min and max. *Ratio* is median(calyx) / median(kernel baseline): above 1 is better for rates, below 1 for times. ")
	fmt.Fprintf(&b, "The same figures, machine-readable: [`bench/results.json`](bench/results.json) (keys at the end of this page).\n\n")
	if len(res.Failed) > 0 {
		fmt.Fprintf(&b, "**Some sections failed in this run**; their cases are reported as not measured:\n\n")
		for _, s := range secs {
			if st := status[s.Key]; st.state == "failed" {
				fmt.Fprintf(&b, "- %s: `%s`\n", s.Title, oneLine(st.why))
			}
		}
		b.WriteString("\n")
	}

	// Goals and ratios at a glance.
	if len(res.Goals) > 0 {
		fmt.Fprintf(&b, "## Goals set by the issues\n\n| issue | goal | figure | result |\n|---|---|---|---|\n")
		for _, g := range res.Goals {
			cr := byID[g.Case]
			fig := "—"
			if g.Value != nil {
				switch {
				case cr.Goal.OnInterval:
					fig = "per-round ratio " + ciText(cr) + ", 95% interval"
				case cr.Goal.onRatio():
					fig = "ratio " + ratioText(cr)
				default:
					fig = fmt.Sprintf("%s %s %s", statName(cr.Goal), fmtStat(g.Value, cr.Unit), cr.Unit)
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", g.Issue, g.Text, fig, verdict(cr))
		}
		b.WriteString("\n")
	}
	var glance []string
	for _, s := range secs {
		for _, t := range s.Tables {
			for _, c := range t.Cases {
				cr := byID[c.ID]
				if cr.Baseline == nil {
					continue
				}
				name := fmt.Sprintf("%s: %s / %s", t.Title, cr.Name, *cr.BaselineName)
				if !cr.Measured || cr.Ratio == nil {
					glance = append(glance, fmt.Sprintf("| %s | %s | — | — | — |", name, reasonOf(cr)))
					continue
				}
				goal := "—"
				if c.Goal != nil && c.Goal.onRatio() {
					goal = goalText(c.Goal, c.Unit) + ": " + verdict(cr)
				}
				glance = append(glance, fmt.Sprintf("| %s | **%s** | %s | %s | %s |", name, ratioText(cr), fmtRoundRatio(cr.RoundRatio), ciText(cr), goal))
				for _, a := range cr.Also {
					if a.Ratio != nil {
						glance = append(glance, fmt.Sprintf("| %s: %s / %s (for information) | %.2f | %s | — | — |", t.Title, cr.Name, a.BaselineName, *a.Ratio, fmtRoundRatio(a.RoundRatio)))
					}
				}
			}
		}
	}
	if len(glance) > 0 {
		fmt.Fprintf(&b, "## Ratios at a glance\n\n")
		fmt.Fprintf(&b, "Each calyx path against the kernel's own way of doing the same job, except where the baseline is another calyx case (the same path with a smaller model).\n\n")
		fmt.Fprintf(&b, "*95%% interval*: the geometric mean of the per-round ratios and its 95%% confidence interval (a t-interval on the ratios' logarithms, rounds paired BPF with kernel); an interval that holds 1 means this run cannot tell the two paths apart.\n\n")
		fmt.Fprintf(&b, "| comparison | ratio of medians | per-round ratio: median (min–max) | 95%% interval: geometric mean (lo–hi) | goal |\n|---|---|---|---|---|\n")
		b.WriteString(strings.Join(glance, "\n"))
		b.WriteString("\n\n")
	}

	rel := func(p string) string {
		if r, err := filepath.Rel(filepath.Dir(o.Report), p); err == nil {
			return filepath.ToSlash(r)
		}
		return p
	}
	for _, s := range secs {
		st := status[s.Key]
		fmt.Fprintf(&b, "## %s\n\n", s.Title)
		if sr, ok := res.SectionRuns[s.Key]; ok && sr.Carried {
			fmt.Fprintf(&b, "*Carried over from the run of %s%s: this run did not measure this section.*\n\n", sr.describe(), map[bool]string{true: " (a quick pass)"}[sr.Quick])
		}
		switch st.state {
		case "pending":
			fmt.Fprintf(&b, "*Not measured yet: %s.* The cases it will report, each against its kernel baseline:\n\n", st.why)
		case "skipped":
			fmt.Fprintf(&b, "*Not run in this pass: %s.*\n\n", st.why)
		case "failed":
			fmt.Fprintf(&b, "**Failed in this run**: `%s`\n\n", oneLine(st.why))
		default:
			if s.Method != nil {
				b.WriteString(s.Method(rec))
				b.WriteString("\n")
			}
		}
		for _, c := range charts {
			if c.Section == s.Key {
				fmt.Fprintf(&b, "![%s](%s)\n\n", c.Alt, rel(c.Path))
			}
		}
		for _, t := range s.Tables {
			writeTable(&b, t, byID, len(s.Tables) > 1)
		}
	}
	writeJSONDoc(&b)
	return b.String()
}

func statName(g *Goal) string {
	if g.Stat == "" {
		return "median"
	}
	return g.Stat
}

func reasonOf(cr *CaseResult) string {
	if cr.Reason != nil {
		return *cr.Reason
	}
	return "baseline not measured"
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "`", "'")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

// extraP99 as an Extra's Detail shows the case's p99 (Case.Percentiles).
const extraP99 = "@p99"

// writeTable renders one table of cases.
func writeTable(b *strings.Builder, t Table, byID map[string]*CaseResult, heading bool) {
	if heading {
		fmt.Fprintf(b, "### %s\n\n", t.Title)
	}
	if t.Note != "" {
		fmt.Fprintf(b, "%s\n\n", t.Note)
	}
	unit := t.Cases[0].Unit
	med := "median"
	if t.Cases[0].Percentiles {
		med = "median (p50)"
	}
	ratios, goals, kernel := false, false, false
	baselines := map[string]bool{}
	for _, c := range t.Cases {
		ratios = ratios || c.Kernel || c.Baseline != ""
		goals = goals || c.Goal != nil
		kernel = kernel || c.Kernel
		baselines[c.Baseline] = true
	}
	hdr := []string{"case", med + " " + unit + " (this machine)", "min", "max"}
	for _, e := range t.Extras {
		hdr = append(hdr, e.Header)
	}
	if ratios {
		name := "ratio to kernel"
		if !kernel {
			name = "ratio to baseline"
		}
		hdr = append(hdr, name, "per-round ratio", "95% interval")
	}
	if goals {
		hdr = append(hdr, "goal")
	}
	fmt.Fprintf(b, "| %s |\n|%s\n", strings.Join(hdr, " | "), strings.Repeat("---|", len(hdr)))
	for _, c := range t.Cases {
		cr := byID[c.ID]
		row := []string{cr.Name}
		if !cr.Measured {
			row = append(row, reasonOf(cr), "—", "—")
			for range t.Extras {
				row = append(row, "—")
			}
		} else {
			row = append(row, fmtStat(cr.Median, cr.Unit), fmtStat(cr.Min, cr.Unit), fmtStat(cr.Max, cr.Unit))
			for _, e := range t.Extras {
				row = append(row, extraCell(cr, e))
			}
		}
		if ratios {
			ratio, per, ci := "—", "—", "—"
			switch {
			case c.Kernel || baselines[c.ID]:
				ratio = "baseline"
			case cr.Baseline == nil && !kernel:
				ratio = "—"
			case cr.Baseline == nil:
				ratio = "no kernel counterpart"
			case cr.Ratio != nil:
				ratio = fmt.Sprintf("**%s** × %s", ratioText(cr), *cr.BaselineName)
				per = fmtRoundRatio(cr.RoundRatio)
				ci = ciText(cr)
				for _, a := range cr.Also {
					if a.Ratio != nil {
						ratio += fmt.Sprintf("; %.2f × %s", *a.Ratio, a.BaselineName)
					}
				}
			case cr.Measured:
				ratio = "baseline not measured"
			default:
				ratio = "vs " + *cr.BaselineName
			}
			row = append(row, ratio, per, ci)
		}
		if goals {
			goal := "—"
			if c.Goal != nil {
				goal = goalText(c.Goal, c.Unit)
				if cr.Measured {
					goal += ": " + verdict(cr)
				}
			}
			row = append(row, goal)
		}
		fmt.Fprintf(b, "| %s |\n", strings.Join(row, " | "))
	}
	b.WriteString("\n")
}

func extraCell(cr *CaseResult, e Extra) string {
	if e.Detail == extraP99 {
		if cr.P99 == nil {
			return "—"
		}
		return fmtFloat(*cr.P99, e.Format)
	}
	st := cr.Details[e.Detail]
	if st == nil {
		return "—"
	}
	return fmtFloat(st.get(e.Stat), e.Format)
}

// writeJSONDoc documents results.json's keys.
func writeJSONDoc(b *strings.Builder) {
	b.WriteString(`## bench/results.json

Written with this page by the same run. Keys are stable; ` + "`schema`" + ` changes when one changes meaning or goes away.

- ` + "`schema`" + `: 1.
- ` + "`machine`" + `: ` + "`cpu`, `cpus`, `kernel`, `os`, `go`, `date`" + ` (UTC, RFC 3339), ` + "`commit`" + ` (git HEAD), ` + "`dirty`" + ` (uncommitted changes to tracked files).
- ` + "`run`" + `: ` + "`quick`" + ` (BENCH_QUICK), ` + "`sections`" + ` (those run or reported), ` + "`durationSeconds`" + `, ` + "`parameters`" + ` (rounds, seconds per run, model sizes, benchmark counts).
- ` + "`cases`" + `: one object per case, in report order, every key always present (` + "`null`" + ` when it does not apply or was not measured):
  - ` + "`id`" + ` (stable, e.g. ` + "`tcp1.bpf-vxlan`" + `, ` + "`rr.kernel-routing`" + `, ` + "`pp.encap-vxlan`" + `, ` + "`cp.change.endpoint`" + `), ` + "`section`" + `, ` + "`table`" + `, ` + "`name`" + `, ` + "`unit`" + `, ` + "`better`" + ` (` + "`higher`" + ` or ` + "`lower`" + `), ` + "`kernel`" + ` (true for a kernel baseline);
  - ` + "`measured`" + `, and ` + "`reason`" + ` when not (` + "`not measured: arrives with issue 4 (floating IPs)`" + `: such cases never carry numbers);
  - ` + "`samples`" + ` and ` + "`rounds`" + ` (the round each sample was measured in), ` + "`median`, `min`, `max`" + `, and ` + "`p50`, `p99`" + ` for latency distributions;
  - ` + "`baseline`" + ` (id of the kernel case it is compared with), ` + "`baselineName`" + `, ` + "`ratio`" + ` (median / baseline median), ` + "`roundRatio`" + ` (` + "`n`, `median`, `min`, `max`" + ` of the ratios of samples of the same round), ` + "`ratioCI`" + ` (` + "`level`, `n`, `geoMean`, `lo`, `hi`" + `: the geometric mean of those per-round ratios and its 95% t-interval on their logarithms), ` + "`also`" + ` (further comparisons, for information: ` + "`baseline`, `baselineName`, `ratio`, `roundRatio`" + `);
  - ` + "`goal`" + ` (` + "`issue`, `text`, `minRatio`" + ` or ` + "`maxRatio`" + ` on the ratio, or ` + "`maxValue`" + ` with ` + "`stat`" + ` on the figure; ` + "`onInterval`" + `: judged on ` + "`ratioCI`" + `, pass when the whole interval meets the goal, miss when none of it does, ` + "`pass`" + ` null and a ` + "`goalNote`" + ` beginning "unclear" otherwise), ` + "`pass`" + `, ` + "`goalNote`" + ` (why a goal is not judged);
  - ` + "`details`" + `: per-sample qualifiers as ` + "`n`, `median`, `min`, `max`" + `: ` + "`mtu`, `pathShare`, `pathPacketBytes`" + ` (iperf3 cases), ` + "`latencyP50us`, `latencyP99us`, `errors`" + ` (rr, crr), ` + "`natPortDrops`" + ` (natOutgoing crr: the SYNs calyx dropped during the run for want of a free NAT port), ` + "`lastRuleShare`" + ` (policy crr: new flows the allowing rule decided per connection), ` + "`ns`" + ` (per-packet: before the harness correction), ` + "`policyEntries`, `ipcacheEntries`" + ` (policy: map sizes), ` + "`startedMs`, `reconcileMs`, `mapWrites`, `commitMs`" + ` (etcd: the agent's "agent started" line, what the agent's ` + "`synced`" + ` line says its reconcile took and wrote, the etcd transaction's round trip), ` + "`routes`, `blockRoutes`, `remote32`" + ` (etcd: cx_routes after the first sync), ` + "`peakMiB`" + ` (etcd: the agent's VmHWM), ` + "`offeredGbps`" + ` / ` + "`offered`" + `, ` + "`reached`, `labCPUs`, `agentsCPUs`, `ksoftirqdCPUs`, `busyCPUs`, `idleCPUs`" + ` (CPU cost at a fixed rate: what was carried, its share of the fixed rate, the CPUs the lab's cgroup, the agents in it and the ksoftirqd threads used during the run, the whole machine's CPUs busy, and on the /proc/stat fallback only the idle baseline).
- ` + "`goals`" + `: every goal of the report: ` + "`case`, `issue`, `text`, `value`" + ` (the ratio or figure judged), ` + "`pass`, `note`" + `.
- ` + "`failedSections`" + `: section → error, for sections that failed in the run their figures come from.
- ` + "`sectionRuns`" + `: section → where its figures come from: ` + "`carried`" + ` (true when this run did not measure it: a ` + "`BENCH_ONLY`" + ` run keeps the other sections' figures from the results.json it replaces), ` + "`date`, `commit`, `dirty`, `quick`" + ` of the run that measured it, ` + "`state`" + ` (measured, pending, skipped, failed) and ` + "`why`" + `.
`)
}

// logSummary prints the ratios and goals at the end of a run.
func logSummary(logf func(string, ...any), res *Results) {
	for _, c := range res.Cases {
		if c.Ratio != nil {
			logf("%-28s %-22s %8s %-14s ratio %.2f to %s", c.ID, c.Name, fmtStat(c.Median, c.Unit), c.Unit, *c.Ratio, *c.BaselineName)
		}
	}
	for _, g := range res.Goals {
		v := "not judged"
		if g.Pass != nil {
			v = map[bool]string{true: "PASS", false: "MISS"}[*g.Pass]
		}
		logf("goal (%s) %s: %s", g.Issue, g.Text, v)
	}
}
