package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A run's results, rendered without measuring anything: ratios, goals,
// pending cases as "not measured" (never numbers), results.json's keys.
func TestResultsAndReport(t *testing.T) {
	rec := NewRecorder(nil)
	for r, v := range []float64{10, 11, 9} {
		rec.Add(TwoHostCaseID(MetricTCP1, CaseBPFVXLAN), r, v)
		rec.Add(TwoHostCaseID(MetricTCP1, CaseKernelVXLAN), r, v*0.8)
		rec.Add(TwoHostCaseID(MetricTCP1, CaseBPFDirect), r, v*0.9)
		rec.Add(TwoHostCaseID(MetricTCP1, CaseKernelRouted), r, v)
	}
	rec.Detail(TwoHostCaseID(MetricTCP1, CaseBPFVXLAN), "pathShare", 1.001)
	var secs []*Section
	status := map[string]sectionStatus{}
	for _, s := range Registry(false) {
		switch s.Key {
		case "twohost":
			status[s.Key] = sectionStatus{state: "measured"}
		case "fip", "policy":
			status[s.Key] = sectionStatus{"pending", s.Pending}
		case "perpacket":
			status[s.Key] = sectionStatus{"skipped", "no go test output"}
		default:
			continue
		}
		secs = append(secs, s)
	}
	dir := t.TempDir()
	o := Options{Report: filepath.Join(dir, "BENCHMARKS.md")}
	res := buildResults(secs, status, rec, o, 0)
	by := map[string]*CaseResult{}
	for _, c := range res.Cases {
		by[c.ID] = c
	}

	vx := by[TwoHostCaseID(MetricTCP1, CaseBPFVXLAN)]
	if vx == nil || !vx.Measured || vx.Ratio == nil || *vx.Ratio != 1.25 || vx.Pass == nil || !*vx.Pass {
		t.Fatalf("tcp1.bpf-vxlan: %+v; want ratio 1.25 and pass", vx)
	}
	if vx.RoundRatio == nil || vx.RoundRatio.N != 3 || vx.RoundRatio.Median != 1.25 {
		t.Errorf("per-round ratios %+v, want 3 of 1.25", vx.RoundRatio)
	}
	if d := by[TwoHostCaseID(MetricTCP1, CaseBPFDirect)]; d.Pass == nil || *d.Pass {
		t.Errorf("tcp1.bpf-direct at 0.90 of plain routing: pass %v, want a miss", d.Pass)
	}
	if rr := by[TwoHostCaseID(MetricRR, CaseBPFVXLAN)]; rr.Measured || rr.Median != nil {
		t.Errorf("rr.bpf-vxlan was not recorded, yet %+v", rr)
	}
	for _, id := range []string{"policy.rr.10000.bpf"} {
		c := by[id]
		if c == nil || c.Measured || c.Median != nil || c.Reason == nil || !strings.HasPrefix(*c.Reason, "not measured: arrives with issue") {
			t.Errorf("%s: %+v, want not measured, arrives with an issue", id, c)
		}
	}

	md := renderMarkdown(res, secs, status, rec, nil, o)
	for _, want := range []string{
		"| calyx BPF VXLAN | 10.00 | 9.00 | 11.00 |",
		"**1.250** × kernel VXLAN device",
		"ratio ≥ 1.00 (issue 3): **pass**",
		"ratio ≥ 0.95 (issue 3): **miss**",
		"not measured: arrives with issue 4 (floating IPs)",
		"not measured: arrives with issue 5 (policy)",
		"*Not run in this pass: no go test output.*",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}

	path := filepath.Join(dir, "results.json")
	if err := writeJSON(path, res); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Cases []map[string]json.RawMessage `json:"cases"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	keys := []string{"id", "section", "table", "name", "unit", "better", "kernel", "measured", "reason", "samples", "rounds",
		"median", "min", "max", "p50", "p99", "baseline", "baselineName", "ratio", "roundRatio", "also", "goal", "pass", "goalNote", "details"}
	for _, c := range raw.Cases {
		for _, k := range keys {
			if _, ok := c[k]; !ok {
				t.Fatalf("case %s lacks key %q", c["id"], k)
			}
		}
		if string(c["id"]) == `"fip.tcp1.bpf-nat"` && string(c["median"]) != "null" {
			t.Errorf("pending case has median %s", c["median"])
		}
	}
}

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
BenchmarkEncapVXLAN-2   	  100000	       968.9 ns/op	       864.6 net-ns/op	      3660 wall-ns/op
BenchmarkEncapVXLAN-2   	  100000	       970.1 ns/op	       866.0 net-ns/op	      3600 wall-ns/op
BenchmarkHarnessEmptyTC/repeat=250-2  	  100000	        47.99 ns/op	        60.70 wall-ns/op
PASS
`
	path := filepath.Join(t.TempDir(), "bpf.txt")
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	rows, err := parseGoBench(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[0].name != "EncapVXLAN" || rows[0].net != 864.6 || rows[0].runs != 100000 ||
		rows[2].name != "HarnessEmptyTC/repeat=250" || rows[2].ns != 47.99 || rows[2].net != 0 {
		t.Fatalf("parsed %+v", rows)
	}
}
