package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

// Recorder collects the samples of one run, by case ID.
type Recorder struct {
	mu      sync.Mutex
	samples map[string][]sample
	details map[string]map[string][]float64
	notes   map[string]string // per case: why its goal is not judged
	params  map[string]any
	errs    map[string]string // per section: why it failed
	logf    func(string, ...any)
}

type sample struct {
	Round int
	Value float64
}

// NewRecorder returns an empty recorder that logs through logf.
func NewRecorder(logf func(string, ...any)) *Recorder {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Recorder{
		samples: map[string][]sample{},
		details: map[string]map[string][]float64{},
		notes:   map[string]string{},
		params:  map[string]any{},
		errs:    map[string]string{},
		logf:    logf,
	}
}

// Add records one sample of a case, measured in round (samples of the same
// round of two cases are paired for the per-round ratios).
func (r *Recorder) Add(id string, round int, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples[id] = append(r.samples[id], sample{round, v})
}

// Detail records a per-sample figure that qualifies a case's sample (mean
// packet size on the path, latency percentiles of a load run, ...).
func (r *Recorder) Detail(id, key string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.details[id] == nil {
		r.details[id] = map[string][]float64{}
	}
	r.details[id][key] = append(r.details[id][key], v)
}

// NotJudged says why a case's goal cannot be judged in this run (a quick
// pass measures a smaller model, ...).
func (r *Recorder) NotJudged(id, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes[id] = why
}

// Param records a parameter of the run (rounds, seconds per run, ...),
// reported in results.json and usable in the Method prose.
func (r *Recorder) Param(key string, v any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.params[key] = v
}

// ParamInt returns an integer parameter (0 when unset).
func (r *Recorder) ParamInt(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch v := r.params[key].(type) {
	case int:
		return v
	case float64:
		return int(v)
	}
	return 0
}

// Values returns a case's samples in the order they were added.
func (r *Recorder) Values(id string) []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []float64
	for _, s := range r.samples[id] {
		out = append(out, s.Value)
	}
	return out
}

// Stats summarises samples.
type Stats struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func statsOf(xs []float64) *Stats {
	if len(xs) == 0 {
		return nil
	}
	lo, hi := minMax(xs)
	return &Stats{N: len(xs), Median: Median(xs), Min: lo, Max: hi}
}

func (s *Stats) get(stat string) float64 {
	switch stat {
	case "min":
		return s.Min
	case "max":
		return s.Max
	}
	return s.Median
}

// Results is bench/results.json.
type Results struct {
	// Schema is bumped when a key changes meaning or goes away.
	Schema  int            `json:"schema"`
	Machine Machine        `json:"machine"`
	Run     RunInfo        `json:"run"`
	Cases   []*CaseResult  `json:"cases"`
	Goals   []GoalResult   `json:"goals"`
	Failed  map[string]any `json:"failedSections"`
	// SectionRuns says, per section, which run its figures come from: a
	// run of some sections (--only) keeps the others' from the results
	// it found.
	SectionRuns map[string]SectionRun `json:"sectionRuns"`
}

// SectionRun is where a section's figures come from.
type SectionRun struct {
	// Carried is set when the section was not run by the run that wrote
	// the file: its figures are an earlier run's, as they were.
	Carried bool   `json:"carried"`
	Date    string `json:"date"`
	Commit  string `json:"commit"`
	Dirty   bool   `json:"dirty"`
	Quick   bool   `json:"quick"`
	// State is measured, pending, skipped or failed; Why says why when
	// it is not measured.
	State string `json:"state"`
	Why   string `json:"why,omitempty"`
}

// Machine is where the figures come from.
type Machine struct {
	CPU    string `json:"cpu"`
	CPUs   int    `json:"cpus"`
	Kernel string `json:"kernel"`
	OS     string `json:"os"`
	Go     string `json:"go"`
	Date   string `json:"date"`
	Commit string `json:"commit"`
	Dirty  bool   `json:"dirty"`
}

// RunInfo describes the run.
type RunInfo struct {
	Quick           bool           `json:"quick"`
	Sections        []string       `json:"sections"`
	DurationSeconds float64        `json:"durationSeconds"`
	Parameters      map[string]any `json:"parameters"`
}

// CaseResult is one case's entry in results.json. Every key is always
// present; what was not measured is null, with the reason.
type CaseResult struct {
	ID       string `json:"id"`
	Section  string `json:"section"`
	Table    string `json:"table"`
	Name     string `json:"name"`
	Unit     string `json:"unit"`
	Better   string `json:"better"`
	Kernel   bool   `json:"kernel"`
	Measured bool   `json:"measured"`
	// Reason is set when Measured is false.
	Reason  *string   `json:"reason"`
	Samples []float64 `json:"samples"`
	// Rounds gives the round of each sample (same order).
	Rounds []int    `json:"rounds"`
	Median *float64 `json:"median"`
	Min    *float64 `json:"min"`
	Max    *float64 `json:"max"`
	P50    *float64 `json:"p50"`
	P99    *float64 `json:"p99"`
	// Baseline is the ID of the kernel case compared with, BaselineName
	// its name; Ratio is median / baseline median.
	Baseline     *string  `json:"baseline"`
	BaselineName *string  `json:"baselineName"`
	Ratio        *float64 `json:"ratio"`
	// RoundRatio summarises the ratios of samples of the same round.
	RoundRatio *Stats `json:"roundRatio"`
	// RatioCI is the 95% interval of the ratio from the per-round ratios
	// (at least two paired rounds).
	RatioCI  *Interval         `json:"ratioCI"`
	Also     []Comparison      `json:"also"`
	Goal     *Goal             `json:"goal"`
	Pass     *bool             `json:"pass"`
	GoalNote *string           `json:"goalNote"`
	Details  map[string]*Stats `json:"details"`
}

// Comparison is a ratio to another case, for information.
type Comparison struct {
	Baseline     string   `json:"baseline"`
	BaselineName string   `json:"baselineName"`
	Ratio        *float64 `json:"ratio"`
	RoundRatio   *Stats   `json:"roundRatio"`
}

// GoalResult lists a goal and its outcome (also in CaseResult).
type GoalResult struct {
	Case  string   `json:"case"`
	Issue string   `json:"issue"`
	Text  string   `json:"text"`
	Value *float64 `json:"value"` // the ratio or the statistic judged
	Pass  *bool    `json:"pass"`
	Note  *string  `json:"note"`
}

func ptr[T any](v T) *T { return &v }

// finite returns a pointer to v, or nil when v is not a number.
func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// pairedRatios returns a/b for samples of a and b measured in the same
// round (the median of each round's samples when there are several).
func (r *Recorder) pairedRatios(a, b string) []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	byRound := func(id string) map[int][]float64 {
		m := map[int][]float64{}
		for _, s := range r.samples[id] {
			m[s.Round] = append(m[s.Round], s.Value)
		}
		return m
	}
	ra, rb := byRound(a), byRound(b)
	var rounds []int
	for k := range ra {
		if _, ok := rb[k]; ok {
			rounds = append(rounds, k)
		}
	}
	sort.Ints(rounds)
	var out []float64
	for _, k := range rounds {
		if d := Median(rb[k]); d != 0 {
			out = append(out, Median(ra[k])/d)
		}
	}
	return out
}

// result builds the entry of case c. A reason overrides the samples: the
// case (or its section) is not measured, for that reason.
func (r *Recorder) result(sec *Section, table string, c Case, labels map[string]string, reason string) *CaseResult {
	cr := &CaseResult{ID: c.ID, Section: sec.Key, Table: table, Name: c.Label, Unit: c.Unit, Better: c.Better, Kernel: c.Kernel, Goal: c.Goal}
	if c.Baseline != "" {
		cr.Baseline, cr.BaselineName = ptr(c.Baseline), ptr(labels[c.Baseline])
	}
	cr.Also = []Comparison{}
	cr.Details = map[string]*Stats{}
	if reason != "" {
		cr.Reason = ptr(reason)
		for _, b := range c.Also {
			cr.Also = append(cr.Also, Comparison{Baseline: b, BaselineName: labels[b]})
		}
		return cr
	}
	xs := r.Values(c.ID)
	if len(xs) == 0 {
		cr.Reason = ptr("not measured in this run")
		return cr
	}
	cr.Measured = true
	r.mu.Lock()
	for _, s := range r.samples[c.ID] {
		cr.Samples = append(cr.Samples, s.Value)
		cr.Rounds = append(cr.Rounds, s.Round)
	}
	for k, v := range r.details[c.ID] {
		cr.Details[k] = statsOf(v)
	}
	note, noted := r.notes[c.ID]
	r.mu.Unlock()
	st := statsOf(xs)
	cr.Median, cr.Min, cr.Max = ptr(st.Median), ptr(st.Min), ptr(st.Max)
	if c.Percentiles {
		cr.P50, cr.P99 = ptr(percentileF(xs, 50)), ptr(percentileF(xs, 99))
	}
	ratio := func(b string) (*float64, *Stats) {
		bs := r.Values(b)
		if len(bs) == 0 {
			return nil, nil
		}
		return finite(st.Median / Median(bs)), statsOf(r.pairedRatios(c.ID, b))
	}
	if c.Baseline != "" {
		cr.Ratio, cr.RoundRatio = ratio(c.Baseline)
		if iv, ok := ratioInterval(r.pairedRatios(c.ID, c.Baseline)); ok {
			cr.RatioCI = &iv
		}
	}
	for _, b := range c.Also {
		q, rr := ratio(b)
		cr.Also = append(cr.Also, Comparison{Baseline: b, BaselineName: labels[b], Ratio: q, RoundRatio: rr})
	}
	if c.Goal != nil {
		if noted {
			cr.GoalNote = ptr(note)
		} else {
			judge(cr, c.Goal)
		}
	}
	return cr
}

// judge sets cr's pass (or why it is not judged) for goal g.
func judge(cr *CaseResult, g *Goal) {
	cr.Pass = nil
	switch {
	case g.OnInterval && cr.RatioCI != nil:
		switch v := intervalVerdict(g, *cr.RatioCI); v {
		case "unclear":
			cr.GoalNote = ptr(fmt.Sprintf("%s: the %.0f%% interval %.3f–%.3f holds the threshold", v, cr.RatioCI.Level*100, cr.RatioCI.Lo, cr.RatioCI.Hi))
		default:
			cr.Pass = ptr(v == "pass")
		}
	case g.OnInterval:
		cr.GoalNote = ptr("fewer than two rounds paired with the baseline: no interval")
	case g.MinRatio > 0 && cr.Ratio != nil:
		cr.Pass = ptr(*cr.Ratio >= g.MinRatio)
	case g.MaxRatio > 0 && cr.Ratio != nil:
		cr.Pass = ptr(*cr.Ratio <= g.MaxRatio)
	case g.MaxValue > 0 && cr.Median != nil:
		cr.Pass = ptr(goalStat(cr, g) <= g.MaxValue)
	default:
		cr.GoalNote = ptr("baseline not measured in this run")
	}
}

// goalStat is the figure a MaxValue goal judges.
func goalStat(cr *CaseResult, g *Goal) float64 {
	if g.Stat == "p99" && cr.P99 != nil {
		return *cr.P99
	}
	return *cr.Median
}

// percentileF returns the p-th percentile (nearest rank below) of xs.
func percentileF(xs []float64, p float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[int(p/100*float64(len(s)-1))]
}

// writeJSON writes results.json.
func writeJSON(path string, res *Results) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// thisMachine describes the machine and the source tree the run used.
func thisMachine() Machine {
	m := Machine{CPU: "unknown CPU", CPUs: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				if _, v, ok := strings.Cut(l, ":"); ok {
					m.CPU = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	if out, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
			m.Dirty = len(strings.TrimSpace(string(st))) > 0
		}
	}
	return m
}

func (m Machine) String() string {
	return fmt.Sprintf("%s, %d CPUs, %s, kernel %s, %s", m.CPU, m.CPUs, m.OS, m.Kernel, m.Go)
}
