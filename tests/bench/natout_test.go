package bench

import (
	"strings"
	"testing"
)

// The natOutgoing cases are in the floating-IP section: each calyx case is
// compared with the MASQUERADE case of its metric and carries issue 17's
// goal, judged on the interval.
func TestNATOutCases(t *testing.T) {
	s := fipMeasuredSection()
	byID := map[string]Case{}
	for _, c := range s.Cases() {
		byID[c.ID] = c
	}
	for _, want := range []struct {
		metric string
		better string
		min    float64
		max    float64
	}{
		{"crr", HigherIsBetter, 1.3, 0},
		{"cost-crr", LowerIsBetter, 0, 0.77},
	} {
		bpf, ok := byID[natOutCaseID(want.metric, "bpf-snat")]
		kernel, okK := byID[natOutCaseID(want.metric, "iptables-masq")]
		if !ok || !okK {
			t.Fatalf("%s: the section lacks the calyx or the MASQUERADE case", want.metric)
		}
		if bpf.Baseline != kernel.ID || bpf.Kernel || !kernel.Kernel || kernel.Baseline != "" || kernel.Goal != nil {
			t.Errorf("%s: calyx case %+v, kernel case %+v; want calyx compared with the kernel baseline", want.metric, bpf, kernel)
		}
		if bpf.Better != want.better || kernel.Better != want.better {
			t.Errorf("%s: better %q / %q, want %q", want.metric, bpf.Better, kernel.Better, want.better)
		}
		g := bpf.Goal
		if g == nil || g.Issue != "issue 17" || !g.OnInterval || g.MinRatio != want.min || g.MaxRatio != want.max {
			t.Errorf("%s: goal %+v, want issue 17's on the interval (min %g, max %g)", want.metric, g, want.min, want.max)
		}
	}
	// The floating-IP cases keep their IDs.
	for _, id := range []string{"fip.tcp1.bpf-nat", "fip.crr.iptables-nat", "fip.cost-rr.bpf-nat", "fip.cost-crr.iptables-nat"} {
		if _, ok := byID[id]; !ok {
			t.Errorf("the section lacks %s", id)
		}
	}
}

func TestRulePackets(t *testing.T) {
	listing := `Chain POSTROUTING (policy ACCEPT 12 packets, 720 bytes)
    pkts      bytes target     prot opt in     out     source               destination
       3      180 SNAT       all  --  *      eth1    10.65.1.3            0.0.0.0/0            to:10.30.0.12
   12345   740700 MASQUERADE  all  --  *      eth0    10.65.1.2            !10.65.0.0/16
`
	if n, ok := rulePackets(listing, "MASQUERADE", "10.65.1.2"); !ok || n != 12345 {
		t.Errorf("MASQUERADE of 10.65.1.2: %d, %v; want 12345", n, ok)
	}
	if n, ok := rulePackets(listing, "10.65.1.3"); !ok || n != 3 {
		t.Errorf("the rule of 10.65.1.3: %d, %v; want 3", n, ok)
	}
	// The chain's policy line and the header are no rules.
	if _, ok := rulePackets(listing, "POSTROUTING"); ok {
		t.Error("the chain's header line read as a rule")
	}
	if _, ok := rulePackets(listing, "MASQUERADE", "10.65.1.9"); ok {
		t.Error("a rule found for an address no rule has")
	}
}

// The Method names what runs where for natOutgoing: the rule, the ports,
// the port takeover and the proof.
func TestNATOutMethod(t *testing.T) {
	rec := NewRecorder(nil)
	rec.Param("fip.rounds", 3)
	rec.Param("fip.loadSeconds", 3)
	m := fipMeasuredSection().Method(rec)
	for _, want := range []string{
		"-j MASQUERADE", "natOutgoing: true", "20000–29999", "takes the port over", "MASQUERADE rule's packet counter", "SNAT flows",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("Method lacks %q", want)
		}
	}
}
