package bench

import (
	"strings"
	"testing"
)

// Every calyx VM case is compared with its kernel case on the same taps
// and carries issue 12's goal; the kernel cases are baselines.
func TestVMSectionCases(t *testing.T) {
	s := vmSection()
	ids := map[string]bool{}
	for _, sec := range Registry(false) {
		for _, c := range sec.Cases() {
			if ids[c.ID] {
				t.Errorf("case %s is in the registry twice", c.ID)
			}
			ids[c.ID] = true
		}
	}
	cases := s.Cases()
	if len(cases) != 8 {
		t.Fatalf("vm section has %d cases, want 8 (2 metrics × 4 paths)", len(cases))
	}
	byID := map[string]Case{}
	for _, c := range cases {
		byID[c.ID] = c
	}
	for _, c := range cases {
		if c.Kernel {
			if c.Baseline != "" || c.Goal != nil {
				t.Errorf("%s: a kernel baseline with baseline %q, goal %v", c.ID, c.Baseline, c.Goal)
			}
			continue
		}
		b, ok := byID[c.Baseline]
		if !ok || !b.Kernel {
			t.Errorf("%s: baseline %q is not a kernel case of the section", c.ID, c.Baseline)
		}
		if c.Goal == nil || c.Goal.Issue != "issue 12" || c.Goal.MinRatio != 1.0 {
			t.Errorf("%s: goal %+v, want issue 12 with MinRatio 1", c.ID, c.Goal)
		}
	}
	for _, id := range []string{"vm.tcp1.bpf-local", "vm.tcp1.kernel-local", "vm.rr.bpf-vxlan", "vm.rr.kernel-vxlan"} {
		if _, ok := byID[id]; !ok {
			t.Errorf("no case %s", id)
		}
	}
}

// Each round measures every path once, each calyx path right next to its
// baseline, and odd rounds run backwards.
func TestVMSchedule(t *testing.T) {
	even, odd := vmSchedule(0), vmSchedule(1)
	if len(even) != len(vmCases()) || len(odd) != len(even) {
		t.Fatalf("schedules of %d and %d paths, want %d", len(even), len(odd), len(vmCases()))
	}
	for i := range even {
		if even[i].Key != odd[len(odd)-1-i].Key {
			t.Errorf("odd round is not the even one backwards: %v / %v", even, odd)
		}
	}
	for i, c := range even {
		if c.Baseline == "" {
			continue
		}
		next := func(j int) bool { return j >= 0 && j < len(even) && even[j].Key == c.Baseline }
		if !next(i-1) && !next(i+1) {
			t.Errorf("%s is not measured next to its baseline %s: %v", c.Key, c.Baseline, even)
		}
	}
}

// The frame note tells super-frames from frames of MTU + Ethernet header.
func TestVMFrameNote(t *testing.T) {
	rec := NewRecorder(nil)
	local, vxlan := VMCaseID(MetricTCP1, CaseBPFLocal), VMCaseID(MetricTCP1, CaseBPFVXLAN)
	rec.Detail(local, detailOutMax, 65226)
	rec.Detail(local, detailInMax, 65226)
	rec.Detail(vxlan, detailOutMax, 64374)
	rec.Detail(vxlan, detailInMax, 1464) // 1450 + 14: a plain frame
	rec.Detail(vxlan, detailDelivered, 43000)
	rec.Detail(vxlan, detailRelayDrops, 2483)
	note := vmFrameNote(rec)
	lines := strings.Split(note, "\n")
	if len(lines) != 2 {
		t.Fatalf("note has %d lines, want 2:\n%s", len(lines), note)
	}
	if !strings.Contains(lines[0], "calyx BPF local delivery") || !strings.Contains(lines[0], "crossed unsegmented both ways") {
		t.Errorf("local line: %s", lines[0])
	}
	for _, want := range []string{"calyx BPF VXLAN", "segmented before the receiver", "43000 B", "2483 frames dropped"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("VXLAN line lacks %q: %s", want, lines[1])
		}
	}
}
