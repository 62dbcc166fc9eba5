package bench

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// Every round measures every two-host path once, and each BPF path right
// before or after the kernel path it is compared with, IPv4 and IPv6.
func TestTwoHostScheduleKeepsPairsAdjacent(t *testing.T) {
	cases := EncapCases()
	for r := range 2 {
		order := twoHostSchedule(r)
		if len(order) != len(cases) {
			t.Fatalf("round %d: %d paths, want %d", r, len(order), len(cases))
		}
		at := map[string]int{}
		for i, c := range order {
			if _, dup := at[c.Key]; dup || c.Key == "" {
				t.Fatalf("round %d: path %q twice or unknown: %v", r, c.Key, order)
			}
			at[c.Key] = i
		}
		for _, c := range cases {
			// IP-in-IP has no kernel counterpart (no ipip device):
			// compared with kernel VXLAN for want of one, it is not
			// scheduled next to it.
			if !c.BPF || c.Baseline == "" || c.Key == CaseBPFIPIP {
				continue
			}
			if d := at[c.Key] - at[c.Baseline]; d != 1 && d != -1 {
				t.Errorf("round %d: %s and its baseline %s are %d apart", r, c.Key, c.Baseline, d)
			}
		}
	}
	first, second := twoHostSchedule(0), twoHostSchedule(1)
	if first[0].Key != second[len(second)-1].Key {
		t.Errorf("odd rounds are not the even ones backwards: %s first, %s last", first[0].Key, second[len(second)-1].Key)
	}
}

// An IPv6 path is compared with a kernel path of its own family, at the
// MTU of its IPv4 counterpart (the outer headers are the same), and has
// the issue 18 goals on one stream, rr and crr.
func TestTwoHostIPv6Cases(t *testing.T) {
	by := map[string]EncapCase{}
	for _, c := range EncapCases() {
		by[c.Key] = c
	}
	for v6, v4 := range map[string]string{CaseBPFVXLAN6: CaseBPFVXLAN, CaseBPFDirect6: CaseBPFDirect} {
		c, c4 := by[v6], by[v4]
		if !c.IPv6 || c4.IPv6 || !c.BPF || c.Mode != c4.Mode || c.MTU != c4.MTU {
			t.Errorf("%s = %+v, want the IPv6 twin of %+v", v6, c, c4)
		}
		base := by[c.Baseline]
		if !base.IPv6 || base.BPF || base.MTU != c.MTU || base.Key != c4.Baseline+"6" {
			t.Errorf("%s's baseline %+v, want the IPv6 kernel twin of %s", v6, base, c4.Baseline)
		}
		for _, m := range []string{MetricTCP1, MetricRR, MetricCRR} {
			g := twoHostGoals[TwoHostCaseID(m, v6)]
			if g == nil || g.Issue != "issue 18" || g.MinRatio != 1.0 {
				t.Errorf("goal of %s: %+v, want issue 18, ratio ≥ 1.0", TwoHostCaseID(m, v6), g)
			}
		}
	}
}

func TestParseLinkLocal(t *testing.T) {
	const out = `[{"ifindex":2,"ifname":"eth0","addr_info":[` +
		`{"family":"inet6","local":"fe80::1:2","prefixlen":64,"scope":"link","tentative":true},` +
		`{"family":"inet6","local":"fd00::2","prefixlen":64,"scope":"global"},` +
		`{"family":"inet6","local":"fe80::fc:ff:fe00:1","prefixlen":64,"scope":"link"}]}]`
	a, err := parseLinkLocal(out)
	if err != nil || a != netip.MustParseAddr("fe80::fc:ff:fe00:1") {
		t.Errorf("parseLinkLocal = %v, %v; want fe80::fc:ff:fe00:1 (the first one not tentative)", a, err)
	}
	for _, bad := range []string{`[]`, `[{"ifname":"eth0","addr_info":[]}]`, `not json`,
		`[{"addr_info":[{"family":"inet6","local":"fe80::1","scope":"link","dadfailed":true}]}]`} {
		if a, err := parseLinkLocal(bad); err == nil {
			t.Errorf("parseLinkLocal(%s) = %v, want an error", bad, a)
		}
	}
}

func TestHostPrefixAndFamilyAddr(t *testing.T) {
	if got := hostPrefix(netip.MustParseAddr("10.65.1.2")); got != "10.65.1.2/32" {
		t.Errorf("hostPrefix v4 = %s", got)
	}
	if got := hostPrefix(netip.MustParseAddr("fd00:65:1::1:2")); got != "fd00:65:1::1:2/128" {
		t.Errorf("hostPrefix v6 = %s", got)
	}
}

// The two-host chart draws the IPv6 groups beside the IPv4 ones, and
// still draws when an earlier run's results have no IPv6 figures.
func TestThroughputChartWithIPv6(t *testing.T) {
	med := func(v float64) *CaseResult { return &CaseResult{Measured: true, Median: &v, Min: &v, Max: &v} }
	for _, withV6 := range []bool{false, true} {
		byID := map[string]*CaseResult{}
		for _, m := range twoHostMetrics() {
			for _, c := range EncapCases() {
				if !c.IPv6 || withV6 {
					byID[TwoHostCaseID(m.key, c.Key)] = med(10)
				}
			}
		}
		path := filepath.Join(t.TempDir(), "twohost.png")
		ok, err := throughputChart(path, byID, "test")
		if err != nil || !ok {
			t.Fatalf("IPv6 figures %v: throughputChart = %v, %v", withV6, ok, err)
		}
		if st, err := os.Stat(path); err != nil || st.Size() == 0 {
			t.Fatalf("IPv6 figures %v: no chart: %v", withV6, err)
		}
	}
}
