package bench

import (
	"math"
	"testing"
	"time"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

// The interval is exp(mean ± t·sd/√n) of the logarithms: for ratios
// e^-0.1, e^0, e^0.1 the mean is 0, sd 0.1, t(2) 4.303, so ±0.2484.
func TestRatioInterval(t *testing.T) {
	iv, ok := ratioInterval([]float64{math.Exp(-0.1), 1, math.Exp(0.1)})
	if !ok {
		t.Fatal("no interval from three ratios")
	}
	half := 4.303 * 0.1 / math.Sqrt(3)
	if iv.N != 3 || iv.Level != 0.95 || !near(iv.GeoMean, 1, 1e-12) || !near(iv.Lo, math.Exp(-half), 1e-9) || !near(iv.Hi, math.Exp(half), 1e-9) {
		t.Errorf("interval %+v, want geometric mean 1 and exp(±%.4f)", iv, half)
	}
	// Identical ratios: a zero-width interval at the ratio.
	iv, _ = ratioInterval([]float64{0.8, 0.8, 0.8, 0.8})
	if !near(iv.GeoMean, 0.8, 1e-12) || !near(iv.Lo, 0.8, 1e-12) || !near(iv.Hi, 0.8, 1e-12) {
		t.Errorf("constant ratios: %+v, want 0.8 (0.8–0.8)", iv)
	}
	// The geometric mean is symmetric in ratio and inverse: 2 and 0.5
	// average to 1.
	iv, _ = ratioInterval([]float64{2, 0.5})
	if !near(iv.GeoMean, 1, 1e-12) || !near(iv.Lo*iv.Hi, 1, 1e-9) {
		t.Errorf("2 and 0.5: %+v, want a geometric mean of 1, bounds inverse of each other", iv)
	}
	// Non-positive ratios (a cost the idle subtraction took to zero) are
	// left out; fewer than two left gives no interval.
	if iv, ok := ratioInterval([]float64{1.1, 0, -0.5, 0.9}); !ok || iv.N != 2 {
		t.Errorf("1.1, 0, -0.5, 0.9: %+v %v, want an interval of 2", iv, ok)
	}
	if _, ok := ratioInterval([]float64{1.1, -1}); ok {
		t.Error("an interval from one usable ratio")
	}
	// Many rounds: the normal quantile.
	if tQuantile975(100) != 1.96 || tQuantile975(4) != 2.776 {
		t.Errorf("t quantiles %v %v", tQuantile975(100), tQuantile975(4))
	}
}

func TestIntervalVerdict(t *testing.T) {
	le := &Goal{MaxRatio: 1}
	ge := &Goal{MinRatio: 1.2}
	for _, c := range []struct {
		g      *Goal
		lo, hi float64
		want   string
	}{
		{le, 0.8, 0.95, "pass"},
		{le, 0.8, 1.0, "pass"},
		{le, 0.9, 1.1, "unclear"},
		{le, 1.01, 1.3, "miss"},
		{ge, 1.2, 1.5, "pass"},
		{ge, 1.1, 1.3, "unclear"},
		{ge, 0.9, 1.19, "miss"},
	} {
		if got := intervalVerdict(c.g, Interval{Lo: c.lo, Hi: c.hi}); got != c.want {
			t.Errorf("goal %+v, interval %.2f–%.2f: %s, want %s", c.g, c.lo, c.hi, got, c.want)
		}
	}
}

func TestProcStatAndIdleSubtraction(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	a, err := parseProcStat("cpu  1000 10 500 9000 40 0 200 30 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\ncpu1 1 2 3 4 5 6 7 8 9 10\nintr 5\n")
	if err != nil {
		t.Fatal(err)
	}
	b, err := parseProcStat("cpu  1300 10 700 9600 40 5 295 80 0 0\ncpu0 1\ncpu1 1\n")
	if err != nil {
		t.Fatal(err)
	}
	// Not working: idle + iowait + steal; two CPUs.
	if a.idle != 9070 || a.cpus != 2 || a.ticked != 1710 {
		t.Errorf("first reading %+v, want idle 9070 jiffies, 2 CPUs, 1710 ticked", a)
	}
	// Over 10 s of wall clock two CPUs have 20 CPU s; 6.5 s of them idle
	// or stolen: 13.5 s of work (the ticks saw 6).
	a.at = time.Unix(100, 0)
	b.at = time.Unix(110, 0)
	if got := busySeconds(a, b); !near(got, 13.5, 1e-9) {
		t.Errorf("busy %.2f s, want 13.5", got)
	}
	if got := tickedSeconds(a, b); !near(got, 6, 1e-9) {
		t.Errorf("ticked %.2f s, want 6", got)
	}
	// Idle over more than the wall clock (rounding): zero, not negative.
	b.at = time.Unix(101, 0)
	if got := busySeconds(a, b); got != 0 {
		t.Errorf("busy %.2f s, want 0", got)
	}
	// 6 CPU s over 5 s with a background of 0.2 CPUs: 5 s net.
	if got := netCPUSeconds(6, 5, 0.2); !near(got, 5, 1e-12) {
		t.Errorf("net %.2f, want 5", got)
	}
	// 5 net CPU s for 2.5 GB: 2 s/GB; for 50,000 transactions: 100 ms per
	// thousand.
	if got := costPerGB(cpuUse{busy: 6, wall: 5}, 0.2, 2_500_000_000); !near(got, 2, 1e-12) {
		t.Errorf("cost per GB %.3f, want 2", got)
	}
	if got := costPerKT(cpuUse{busy: 6, wall: 5}, 0.2, 50_000); !near(got, 100, 1e-9) {
		t.Errorf("cost per 1k transactions %.3f, want 100", got)
	}
	for _, bad := range []string{"", "intr 1 2 3\n", "cpu 1 2 x 4 5 6 7 8\ncpu0 1\n", "cpu 1 2 3 4 5 6 7 8\n"} {
		if _, err := parseProcStat(bad); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
	if c, err := readCPUTimes(); err != nil || c.cpus < 1 {
		t.Errorf("this machine's /proc/stat: %+v, %v", c, err)
	}
}

func TestFixedRate(t *testing.T) {
	for _, c := range []struct{ sat, step, want float64 }{
		{12.5, 0.5, 5}, {26.1, 0.5, 10}, {1.0, 0.5, 0.5}, {25031, 500, 10000}, {4424, 500, 1500},
	} {
		if got := fixedRate(c.sat, c.step); got != c.want {
			t.Errorf("fixedRate(%g, %g) = %g, want %g", c.sat, c.step, got, c.want)
		}
	}
}

// A goal on the interval passes, misses or is unclear by where the
// interval lies, and the report says so.
func TestJudgeOnInterval(t *testing.T) {
	g := &Goal{Issue: "issue 17", MaxRatio: 1, OnInterval: true}
	for _, c := range []struct {
		ratios []float64
		pass   *bool
		note   string
	}{
		{[]float64{0.80, 0.82, 0.81, 0.79}, ptr(true), ""},
		{[]float64{1.20, 1.22, 1.21, 1.19}, ptr(false), ""},
		{[]float64{0.80, 1.20, 0.90, 1.10}, nil, "unclear"},
	} {
		rec := NewRecorder(nil)
		for i, r := range c.ratios {
			rec.Add("a", i, r)
			rec.Add("k", i, 1)
		}
		sec := &Section{Key: "s", Tables: []Table{{Title: "t", Cases: []Case{
			{ID: "a", Label: "A", Unit: unitCPUPerGB, Better: LowerIsBetter, Baseline: "k", Goal: g},
			{ID: "k", Label: "K", Unit: unitCPUPerGB, Better: LowerIsBetter, Kernel: true},
		}}}}
		cr := rec.result(sec, "t", sec.Tables[0].Cases[0], map[string]string{"k": "K"}, "")
		switch {
		case cr.RatioCI == nil:
			t.Errorf("%v: no interval", c.ratios)
		case (cr.Pass == nil) != (c.pass == nil) || (cr.Pass != nil && *cr.Pass != *c.pass):
			t.Errorf("%v: pass %v, want %v", c.ratios, cr.Pass, c.pass)
		case c.note != "" && (cr.GoalNote == nil || verdict(cr)[:len("**unclear**")] != "**unclear**"):
			t.Errorf("%v: verdict %q, want unclear", c.ratios, verdict(cr))
		}
	}
}

func TestSchedstatAndLabCPU(t *testing.T) {
	d, err := parseSchedstat("22268062646 55614195863 356001\n")
	if err != nil || d != 22268062646*time.Nanosecond {
		t.Errorf("parseSchedstat = %v, %v", d, err)
	}
	for _, bad := range []string{"", "x 1 2"} {
		if _, err := parseSchedstat(bad); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
	// With the lab's cgroup the cost is its processes plus ksoftirqd; the
	// machine's busy time and the idle baseline play no part.
	u := cpuUse{busy: 9, wall: 5, hasLab: true, lab: 2.4, softirqd: 0.1}
	if got := u.cpuSeconds(0.7); !near(got, 2.5, 1e-12) {
		t.Errorf("lab CPU s %.3f, want 2.5", got)
	}
	if got := costPerGB(u, 0.7, 2_500_000_000); !near(got, 1, 1e-12) {
		t.Errorf("lab cost per GB %.3f, want 1", got)
	}
	if got := costPerKT(u, 0.7, 25_000); !near(got, 100, 1e-9) {
		t.Errorf("lab cost per 1k transactions %.3f, want 100", got)
	}
	if pids, err := ksoftirqdPids(); err == nil {
		if _, err := threadsRuntime(pids); err != nil {
			t.Errorf("this machine's ksoftirqd: %v", err)
		}
	}
}
