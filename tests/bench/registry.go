package bench

import (
	"context"
	"encoding/json"
)

// The registry: every figure the report can hold is a Case, grouped in
// Tables, grouped in Sections; a Section has one runner that measures all
// of its cases in one lab. A later issue adds its figures by turning a
// Pending section (or case) into a measured one:
//
//  1. give the Section a Run function (and Method prose), drop Pending;
//  2. list its Cases: an ID, a unit, which way is better, the kernel
//     baseline it is compared with (another Case of the same run), and the
//     goal its issue sets, if any;
//  3. in Run, call rec.Add(caseID, round, value) for every sample; rounds
//     let the report pair BPF and kernel samples measured close together.
//
// The report (BENCHMARKS.md), results.json and the charts are derived from
// the registry and the recorder; nothing else needs to change.

// Which way a figure improves.
const (
	HigherIsBetter = "higher"
	LowerIsBetter  = "lower"
)

// Case is one figure: a path measured several times.
type Case struct {
	// ID is the stable key in results.json ("tcp1.bpf-vxlan").
	ID string
	// Label is the name in the report ("calyx BPF VXLAN").
	Label string
	// Unit of the samples ("Gbit/s", "transactions/s", "ns", "ms", "MiB").
	Unit string
	// Better is HigherIsBetter or LowerIsBetter.
	Better string
	// Kernel marks the kernel's own way of doing the job (a baseline).
	Kernel bool
	// Baseline is the ID of the case this one is compared with: its
	// ratio is median(this) / median(baseline). Empty for baselines and
	// for figures the kernel has no counterpart of.
	Baseline string
	// Also lists further cases to compare with, for information.
	Also []string
	// Goal is the target an issue set for this case, if any.
	Goal *Goal
	// Pending, when set, is why the case is not measured yet ("arrives
	// with issue 4 (floating IPs)"). It is reported as such, never with
	// a number.
	Pending string
	// Percentiles asks for p50/p99 of the samples (latency distributions).
	Percentiles bool
}

// Goal is a target set by an issue, judged on one run's figures.
type Goal struct {
	// Issue that set it ("issue 3").
	Issue string
	// Text says it in words.
	Text string
	// MinRatio: pass when the ratio of medians to the baseline is at
	// least this.
	MinRatio float64
	// MaxRatio: pass when the ratio of medians to the baseline is at
	// most this (a cost that must not grow).
	MaxRatio float64
	// MaxValue: pass when Stat of the samples is at most this (in the
	// case's unit).
	MaxValue float64
	// Stat is "median" (default) or "p99"; used with MaxValue.
	Stat string
	// OnInterval judges MinRatio or MaxRatio on the 95% interval of the
	// per-round ratios (Interval) rather than on the ratio of medians:
	// pass when the whole interval meets the goal, miss when none of it
	// does, unclear otherwise.
	OnInterval bool
}

// MarshalJSON writes a goal with results.json's camelCase keys, each
// always present (null when unused).
func (g Goal) MarshalJSON() ([]byte, error) {
	v := struct {
		Issue    string   `json:"issue"`
		Text     string   `json:"text"`
		MinRatio *float64 `json:"minRatio"`
		MaxRatio *float64 `json:"maxRatio"`
		MaxValue *float64 `json:"maxValue"`
		Stat     *string  `json:"stat"`
		Interval bool     `json:"onInterval"`
	}{Issue: g.Issue, Text: g.Text, Interval: g.OnInterval}
	if g.MinRatio > 0 {
		v.MinRatio = &g.MinRatio
	}
	if g.MaxRatio > 0 {
		v.MaxRatio = &g.MaxRatio
	}
	if g.MaxValue > 0 {
		stat := g.Stat
		if stat == "" {
			stat = "median"
		}
		v.MaxValue, v.Stat = &g.MaxValue, &stat
	}
	return json.Marshal(v)
}

// UnmarshalJSON reads what MarshalJSON writes (results.json of an earlier
// run).
func (g *Goal) UnmarshalJSON(b []byte) error {
	var v struct {
		Issue    string   `json:"issue"`
		Text     string   `json:"text"`
		MinRatio *float64 `json:"minRatio"`
		MaxRatio *float64 `json:"maxRatio"`
		MaxValue *float64 `json:"maxValue"`
		Stat     *string  `json:"stat"`
		Interval bool     `json:"onInterval"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*g = Goal{Issue: v.Issue, Text: v.Text, OnInterval: v.Interval}
	for _, f := range []struct {
		dst *float64
		src *float64
	}{{&g.MinRatio, v.MinRatio}, {&g.MaxRatio, v.MaxRatio}, {&g.MaxValue, v.MaxValue}} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
	if v.Stat != nil && *v.Stat != "median" {
		g.Stat = *v.Stat
	}
	return nil
}

// onRatio says the goal judges the ratio to the baseline.
func (g *Goal) onRatio() bool { return g.MinRatio > 0 || g.MaxRatio > 0 }

// Table is one table of the report.
type Table struct {
	Title string
	// Note is a line of prose under the title.
	Note  string
	Cases []Case
	// Extras are further columns: statistics of per-sample details the
	// runner recorded with rec.Detail.
	Extras []Extra
}

// Extra is a column of a table from a recorded detail.
type Extra struct {
	Detail string // the detail's key
	Header string
	Stat   string // "median", "min" or "max"
	Format string // fmt verb for the value
}

// Section is what one runner measures.
type Section struct {
	// Key selects it with --only and names it in results.json.
	Key   string
	Title string
	// Pending, when set, is why the whole section is not measured yet.
	Pending string
	Tables  []Table
	// Run measures every case of the section and records the samples.
	Run func(ctx context.Context, o *Options, rec *Recorder) error
	// Method returns the prose that explains how the section measured,
	// written after Run (it may use the parameters Run recorded).
	Method func(rec *Recorder) string
}

// Cases returns every case of the section in report order.
func (s *Section) Cases() []Case {
	var out []Case
	for _, t := range s.Tables {
		out = append(out, t.Cases...)
	}
	return out
}

// notJudged says, for every case of s with a goal, why this run cannot
// judge it (a quick pass measures a smaller model).
func (s *Section) notJudged(rec *Recorder, why string) {
	for _, c := range s.Cases() {
		if c.Goal != nil {
			rec.NotJudged(c.ID, why)
		}
	}
}

// Registry returns every section in report order; quick selects the
// short pass's sizes.
func Registry(quick bool) []*Section {
	return []*Section{
		localSection(),
		twoHostSection(),
		vmSection(),
		fipMeasuredSection(),
		policySection(quick),
		scaleSection(quick),
		perPacketSection(),
		controlPlaneSection(quick),
		etcdSection(quick),
		bgpSection(),
	}
}

// SectionKeys lists the sections --only accepts.
func SectionKeys() []string {
	var out []string
	for _, s := range Registry(false) {
		out = append(out, s.Key)
	}
	return out
}
