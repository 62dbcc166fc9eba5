package bench

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calyxnet/calyx/model"
)

func TestParseBIRDCount(t *testing.T) {
	for _, tc := range []struct {
		out  string
		n, m int
		bad  bool
	}{
		{out: "1000 of 1000 routes for 1000 networks in table master4\n", n: 1000, m: 1000},
		{out: "0 of 3 routes for 3 networks in table master4\n0 of 0 routes for 0 networks in table master6\nTotal: 0 of 3 routes for 3 networks in 2 tables\n", n: 0, m: 3},
		{out: "0 of 0 routes for 0 networks in table master4\n", n: 0, m: 0},
		{out: "", bad: true},
		{out: "syntax error, unexpected CF_SYM_UNDEFINED\n", bad: true},
	} {
		n, m, err := parseBIRDCount(tc.out)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: no error", tc.out)
			}
			continue
		}
		if err != nil || n != tc.n || m != tc.m {
			t.Errorf("%q: got %d of %d (%v), want %d of %d", tc.out, n, m, err, tc.n, tc.m)
		}
	}
}

func TestBGPAddresses(t *testing.T) {
	for _, sp := range []string{"calyx", "bird"} {
		seen := map[netip.Addr]bool{}
		addrs := bgpRange(sp, bgpRoutes, 0)
		for r := 0; r < 10; r++ {
			addrs = append(addrs, bgpMoveAddr(sp, r))
		}
		for _, a := range addrs {
			if seen[a] {
				t.Errorf("%s: %s twice", sp, a)
			}
			seen[a] = true
			if !bgpBase(sp).Contains(a) {
				t.Errorf("%s: %s outside %s", sp, a, bgpBase(sp))
			}
			if b := a.As4()[3]; b == 0 || b == 255 {
				t.Errorf("%s: %s", sp, a)
			}
		}
	}
	if bgpBase("calyx").Overlaps(bgpBase("bird")) {
		t.Error("the two speakers' ranges overlap")
	}
}

// The calyx side's endpoints are valid resources, each with its own
// interface name.
func TestBGPEndpointsYAML(t *testing.T) {
	addrs := bgpRange("calyx", bgpRoutes, 0)
	rs, err := model.Decode(strings.NewReader(bgpEndpointsYAML("host-a", "a", addrs)))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != len(addrs) {
		t.Fatalf("%d resources, want %d", len(rs), len(addrs))
	}
	ifaces := map[string]bool{}
	for i, r := range rs {
		if err := model.Validate(r); err != nil {
			t.Fatalf("endpoint %d: %v", i, err)
		}
		ep, ok := r.(*model.WorkloadEndpoint)
		if !ok {
			t.Fatalf("resource %d is a %T", i, r)
		}
		if ifaces[ep.Spec.Interface] {
			t.Errorf("interface %s twice", ep.Spec.Interface)
		}
		ifaces[ep.Spec.Interface] = true
		if len(ep.Spec.IPNetworks) != 1 || ep.Spec.IPNetworks[0] != netip.PrefixFrom(addrs[i], 32) {
			t.Errorf("endpoint %d: %v, want %s/32", i, ep.Spec.IPNetworks, addrs[i])
		}
	}
}

func TestParseBIRDTime(t *testing.T) {
	ref := time.Date(2026, 12, 7, 10, 0, 0, 0, time.Local)
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"10:00:01.234", time.Date(2026, 12, 7, 10, 0, 1, 234e6, time.Local)},
		{"2026-12-06 23:56:51.835", time.Date(2026, 12, 6, 23, 56, 51, 835e6, time.Local)},
	} {
		got, err := parseBIRDTime(tc.in, ref)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("%q: %v (%v), want %v", tc.in, got, err, tc.want)
		}
	}
	// Just after midnight, a route from just before it.
	ref = time.Date(2026, 12, 7, 0, 0, 0, 500e6, time.Local)
	if got, _ := parseBIRDTime("23:59:59.900", ref); !got.Equal(time.Date(2026, 12, 6, 23, 59, 59, 900e6, time.Local)) {
		t.Errorf("across midnight: %v", got)
	}
	// And the other way.
	ref = time.Date(2026, 12, 6, 23, 59, 59, 900e6, time.Local)
	if got, _ := parseBIRDTime("00:00:00.100", ref); !got.Equal(time.Date(2026, 12, 7, 0, 0, 0, 100e6, time.Local)) {
		t.Errorf("across midnight: %v", got)
	}
	for _, bad := range []string{"", "10:00:01", "yesterday"} {
		if _, err := parseBIRDTime(bad, ref); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
