package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// A run of some sections (--only, BENCH_ONLY) keeps every other section's
// figures from the results.json it replaces, so that BENCHMARKS.md and
// results.json always cover the whole registry; each section says which
// run its figures come from (Results.SectionRuns).

// readResults reads an earlier run's results.json.
func readResults(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	if r.Schema != 1 {
		return nil, fmt.Errorf("%s has schema %d, this build writes 1", path, r.Schema)
	}
	return &r, nil
}

// mergeResults adds to res, which holds the sections this run measured
// (of Registry(quick)), every other section as prev reports it, and
// returns the sections of the report in registry order: a carried section
// as the registry describes it at the size it was measured at (a quick
// pass or not). status and rec get the carried sections' state and
// parameters (their Method prose uses them).
func mergeResults(res, prev *Results, quick bool, status map[string]sectionStatus, rec *Recorder) []*Section {
	ran := map[string]bool{}
	for _, k := range res.Run.Sections {
		ran[k] = true
	}
	prevCases := map[string]*CaseResult{}
	for _, c := range prev.Cases {
		prevCases[c.ID] = c
	}
	bySize := map[bool][]*Section{quick: Registry(quick)}
	all := make([]*Section, len(bySize[quick]))
	runs := map[string]SectionRun{}
	for i, s := range bySize[quick] {
		if ran[s.Key] {
			all[i] = s
			continue
		}
		sr, ok := prevSectionRun(prev, s)
		if !ok {
			sr = SectionRun{State: "skipped", Why: "not selected for this run, and no earlier run's figures were found", Quick: quick}
		}
		if bySize[sr.Quick] == nil {
			bySize[sr.Quick] = Registry(sr.Quick)
		}
		all[i] = bySize[sr.Quick][i]
		runs[s.Key] = sr
	}
	labels := map[string]string{}
	for _, s := range all {
		for _, c := range s.Cases() {
			labels[c.ID] = c.Label
		}
	}
	byID := map[string]*CaseResult{}
	for _, c := range res.Cases {
		byID[c.ID] = c
	}
	var cases []*CaseResult
	var keys []string
	for _, s := range all {
		keys = append(keys, s.Key)
		if ran[s.Key] {
			for _, c := range s.Cases() {
				cases = append(cases, byID[c.ID])
			}
			continue
		}
		sr := runs[s.Key]
		sr.Carried = true
		res.SectionRuns[s.Key] = sr
		status[s.Key] = sectionStatus{sr.State, sr.Why}
		if sr.State == "failed" {
			res.Failed[s.Key] = sr.Why
		}
		for _, t := range s.Tables {
			for _, c := range t.Cases {
				cr := carriedCase(s, t.Title, c, prevCases[c.ID], labels, sr)
				cases = append(cases, cr)
				rec.restore(cr)
			}
		}
	}
	res.Cases = cases
	res.Goals = goalsOf(all, cases)
	res.Run.Sections = keys
	rec.mu.Lock()
	for k, v := range prev.Run.Parameters {
		if _, ok := rec.params[k]; !ok {
			rec.params[k] = v
		}
		if _, ok := res.Run.Parameters[k]; !ok {
			res.Run.Parameters[k] = v
		}
	}
	rec.mu.Unlock()
	return all
}

// carriedCase is an earlier run's entry of case c, with today's name,
// table, baseline names and goal; the figures are as they were.
func carriedCase(s *Section, table string, c Case, pc *CaseResult, labels map[string]string, sr SectionRun) *CaseResult {
	if pc == nil || c.Pending != "" || pc.Unit != c.Unit {
		reason := "not measured: the earlier results this run keeps do not hold it"
		switch {
		case c.Pending != "":
			reason = "not measured: " + c.Pending
		case sr.State != "measured" && sr.Why != "":
			reason = "not measured: " + sr.Why
		}
		cr := NewRecorder(nil).result(s, table, c, labels, reason)
		return cr
	}
	cr := *pc
	cr.Section, cr.Table, cr.Name, cr.Better, cr.Kernel, cr.Goal = s.Key, table, c.Label, c.Better, c.Kernel, c.Goal
	cr.Baseline, cr.BaselineName = nil, nil
	if c.Baseline != "" {
		cr.Baseline, cr.BaselineName = ptr(c.Baseline), ptr(labels[c.Baseline])
	}
	for i := range cr.Also {
		cr.Also[i].BaselineName = labels[cr.Also[i].Baseline]
	}
	if cr.Also == nil {
		cr.Also = []Comparison{}
	}
	if cr.Details == nil {
		cr.Details = map[string]*Stats{}
	}
	cr.Pass = nil
	if c.Goal != nil && cr.Measured && cr.GoalNote == nil {
		judge(&cr, c.Goal)
	}
	return &cr
}

// prevSectionRun says where the earlier results' figures of s come from:
// their own record, or, in results written before sections carried their
// origin, the run that wrote them.
func prevSectionRun(prev *Results, s *Section) (SectionRun, bool) {
	if sr, ok := prev.SectionRuns[s.Key]; ok {
		return sr, true
	}
	found := false
	for _, k := range prev.Run.Sections {
		found = found || k == s.Key
	}
	if !found {
		return SectionRun{}, false
	}
	sr := SectionRun{Date: prev.Machine.Date, Commit: prev.Machine.Commit, Dirty: prev.Machine.Dirty, Quick: prev.Run.Quick, State: "measured"}
	if why, ok := prev.Failed[s.Key]; ok {
		sr.State, sr.Why = "failed", fmt.Sprint(why)
		return sr, true
	}
	measured := false
	var reason string
	for _, c := range prev.Cases {
		if c.Section != s.Key {
			continue
		}
		measured = measured || c.Measured
		if c.Reason != nil && reason == "" {
			reason = *c.Reason
		}
	}
	if !measured {
		switch {
		case strings.HasPrefix(reason, "not run in this pass: "):
			sr.State, sr.Why = "skipped", strings.TrimPrefix(reason, "not run in this pass: ")
		default:
			sr.State, sr.Why = "pending", strings.TrimPrefix(reason, "not measured: ")
		}
	}
	return sr, true
}

// describe names the run: "2026-11-21 (commit 6bd87499efe8)".
func (sr SectionRun) describe() string {
	d := sr.Date
	if len(d) > 10 {
		d = d[:10]
	}
	c := sr.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if sr.Dirty {
		c += " with uncommitted changes"
	}
	if c == "" {
		return d
	}
	return fmt.Sprintf("%s (commit %s)", d, c)
}

// joinKeys writes section keys as "`a`, `b` and `c`".
func joinKeys(keys []string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = "`" + k + "`"
	}
	if len(q) < 2 {
		return strings.Join(q, "")
	}
	return strings.Join(q[:len(q)-1], ", ") + " and " + q[len(q)-1]
}

// restore gives the recorder a carried case's samples, and each detail's
// min, median and max, so that its section's Method prose reads them as
// the run that measured them did.
func (r *Recorder) restore(cr *CaseResult) {
	if !cr.Measured {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, v := range cr.Samples {
		round := i
		if i < len(cr.Rounds) {
			round = cr.Rounds[i]
		}
		r.samples[cr.ID] = append(r.samples[cr.ID], sample{round, v})
	}
	for k, st := range cr.Details {
		if st == nil {
			continue
		}
		if r.details[cr.ID] == nil {
			r.details[cr.ID] = map[string][]float64{}
		}
		r.details[cr.ID][k] = append(r.details[cr.ID][k], st.Min, st.Median, st.Max)
	}
}
