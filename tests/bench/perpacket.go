package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// perPacketCase ties a case to the benchmark of bpf/calyx_bench_test.go
// that measures it. Fresh benchmarks run one new packet per
// BPF_PROG_TEST_RUN and report net-ns/op (the harness's cost subtracted);
// the others are corrected here with the empty program's cost at the same
// repeat count.
type perPacketCase struct {
	Case
	bench string
	// floor is the HarnessEmptyTC sub-benchmark to subtract from a
	// benchmark that reports no net-ns/op ("" for fresh benchmarks and
	// for the floors themselves).
	floor string
	raw   bool // the floor itself: ns/op as measured
}

func perPacketCases() [][]perPacketCase {
	ns := func(id, label, bench, floor, pending string) perPacketCase {
		return perPacketCase{Case: Case{ID: id, Label: label, Unit: "ns", Better: LowerIsBetter, Pending: pending}, bench: bench, floor: floor}
	}
	goal := func(c perPacketCase, text string, max float64) perPacketCase {
		c.Goal = &Goal{Issue: "issue 17", Text: text, MaxValue: max}
		return c
	}
	floor := func(id, bench string) perPacketCase {
		c := ns(id, "empty TC program, "+strings.TrimPrefix(bench, "HarnessEmptyTC/"), bench, "", "")
		c.raw = true
		return c
	}
	return [][]perPacketCase{{
		ns("pp.local-deliver", "local delivery (redirect_peer to a workload on this host)", "LocalDeliverFresh", "", ""),
		goal(ns("pp.encap-vxlan", "encapsulation, VXLAN", "EncapVXLAN", "", ""), "encapsulation, VXLAN ≤ 400 ns", 400),
		ns("pp.encap-ipip", "encapsulation, IP-in-IP", "EncapIPIP", "", ""),
		ns("pp.forward-direct", "direct routing to a node (no encapsulation)", "ForwardDirect", "", ""),
		ns("pp.decap-vxlan", "decapsulation, VXLAN, and delivery", "DecapVXLAN", "", ""),
		ns("pp.decap-ipip", "decapsulation, IP-in-IP, and delivery", "DecapIPIP", "", ""),
		ns("pp.fip-dnat", "floating IP DNAT from outside, established flow, and delivery", "FIPDNATEstablished", "", ""),
		ns("pp.established-fast-path", "local delivery on an established tracked flow (its source check skipped)", "FastPathLocalDeliver", "", ""),
		goal(ns("pp.established-full", "the same, both conntrack maps 90% full", "FastPathLocalDeliverFull", "", ""),
			"an established flow ≤ 200 ns, conntrack 90% full", 200),
		goal(ns("pp.fip-dnat-full", "floating IP DNAT, established, both conntrack maps 90% full", "FIPDNATEstablishedFull", "", ""),
			"floating-IP DNAT, established, ≤ 250 ns, conntrack 90% full", 250),
		goal(ns("pp.new-flow-policy-full", "a new flow through calyx_from_wl with policy (10 rules), conntrack 90% full", "PolicyNewFlowFull", "", ""),
			"a new flow with policy ≤ 1 µs, conntrack 90% full", 1000),
	}, {
		ns("pp.repeat.local-deliver", "local delivery, one skb run 250 times per call", "FromWorkloadLocalDeliver", "HarnessEmptyTC/repeat=250", ""),
		ns("pp.repeat.pass-host", "to the host stack, one skb run 10,000 times per call", "FromWorkloadPassHost", "HarnessEmptyTC/repeat=10000", ""),
		ns("pp.arp-reply", "ARP reply built in BPF, one packet per call", "ARPReply", "HarnessEmptyTC/repeat=1", ""),
		floor("pp.harness.repeat1", "HarnessEmptyTC/repeat=1"),
		floor("pp.harness.repeat250", "HarnessEmptyTC/repeat=250"),
		floor("pp.harness.repeat10000", "HarnessEmptyTC/repeat=10000"),
	}}
}

func perPacketSection() *Section {
	groups := perPacketCases()
	titles := []string{
		"BPF paths, one fresh packet per run, harness cost subtracted",
		"Other programs and the harness itself",
	}
	notes := []string{
		"ns per packet as the kernel measures one program run (BPF_PROG_TEST_RUN, repeat=1, a new skb each call), minus the empty program's cost measured the same way. No kernel counterpart runs through BPF_PROG_TEST_RUN, so these figures have no ratio.",
		"Repeated rows run one skb many times per call (`RunOptions.Repeat`), which suits only programs that leave the packet fit for another run; their net figure subtracts the empty program's cost at the same repeat count. The harness rows are that empty program, uncorrected.",
	}
	s := &Section{Key: "perpacket", Title: "Per-packet cost of each BPF path (BPF_PROG_TEST_RUN)"}
	for i, g := range groups {
		t := Table{Title: titles[i], Note: notes[i], Extras: []Extra{{Detail: "ns", Header: "uncorrected ns (median)", Stat: "median", Format: "%.0f"}}}
		for _, c := range g {
			t.Cases = append(t.Cases, c.Case)
		}
		s.Tables = append(s.Tables, t)
	}
	s.Run = func(ctx context.Context, o *Options, rec *Recorder) error {
		if o.BPFBench == "" {
			return skip("no `go test -bench` output of ./bpf/ was given (--bpf-bench)")
		}
		return recordPerPacket(o.BPFBench, groups, rec)
	}
	s.Method = func(rec *Recorder) string {
		return fmt.Sprintf("`go test -run '^$' -bench . -benchtime %dx -count %d ./bpf/` (bpf/calyx_bench_test.go): each figure is the median of the %d samples, each the mean of %d program runs. "+
			"A program that encapsulates or decapsulates changes the packet it runs on, and BPF_PROG_TEST_RUN with a repeat count reuses one skb, so every BPF path is measured with a fresh packet per run (repeat=1) and the harness's own cost at repeat=1 — an empty TC program run the same way, about %s ns here — is subtracted. "+
			"Every benchmark checks that calyx's counters saw exactly one packet of the path per run.\n",
			rec.ParamInt("perpacket.runs"), rec.ParamInt("perpacket.count"), rec.ParamInt("perpacket.count"), rec.ParamInt("perpacket.runs"), fmtFloat(Median(rec.Values("pp.harness.repeat1")), "%.0f"))
	}
	return s
}

// goBench is one benchmark line.
type goBench struct {
	name    string
	runs    int
	ns, net float64 // net: 0 when not reported
	// metrics holds every value by unit ("ns/op", "policy-entries").
	metrics map[string]float64
}

// parseGoBench takes `BenchmarkX-2  N  123 ns/op  [456 net-ns/op] ...` lines.
func parseGoBench(path string) ([]goBench, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []goBench
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 || !strings.HasPrefix(fs[0], "Benchmark") {
			continue
		}
		r := goBench{name: strings.TrimPrefix(fs[0], "Benchmark"), metrics: map[string]float64{}}
		if i := strings.LastIndex(r.name, "-"); i > 0 {
			if _, err := strconv.Atoi(r.name[i+1:]); err == nil {
				r.name = r.name[:i]
			}
		}
		r.runs, _ = strconv.Atoi(fs[1])
		for i := 3; i < len(fs); i++ {
			v, err := strconv.ParseFloat(fs[i-1], 64)
			if err != nil {
				continue
			}
			r.metrics[fs[i]] = v
			switch fs[i] {
			case "ns/op":
				r.ns = v
			case "net-ns/op":
				r.net = v
			}
		}
		if r.ns > 0 {
			out = append(out, r)
		}
	}
	return out, sc.Err()
}

// recordPerPacket records the per-packet cases from go test -bench output
// (several samples per benchmark with -count).
func recordPerPacket(path string, groups [][]perPacketCase, rec *Recorder) error {
	rows, err := parseGoBench(path)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return fmt.Errorf("%s holds no benchmark results", path)
	}
	by := map[string][]goBench{}
	for _, r := range rows {
		by[r.name] = append(by[r.name], r)
	}
	var missing []string
	for _, g := range groups {
		for _, c := range g {
			if c.Pending != "" {
				continue
			}
			bs := by[c.bench]
			if len(bs) == 0 {
				missing = append(missing, c.bench)
				continue
			}
			var floor float64
			if c.floor != "" {
				var fs []float64
				for _, f := range by[c.floor] {
					fs = append(fs, f.ns)
				}
				if len(fs) == 0 {
					missing = append(missing, c.floor)
					continue
				}
				floor = Median(fs)
			}
			for i, b := range bs {
				v := b.ns - floor
				switch {
				case c.raw:
					v = b.ns
				case c.floor == "":
					if b.net == 0 {
						return fmt.Errorf("benchmark %s reports no net-ns/op", c.bench)
					}
					v = b.net
				}
				rec.Add(c.ID, i, v)
				rec.Detail(c.ID, "ns", b.ns)
			}
			rec.Param("perpacket.count", len(bs))
			rec.Param("perpacket.runs", bs[0].runs)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s lacks benchmarks %s", path, strings.Join(missing, ", "))
	}
	return nil
}

// skipped is a section that did not run in this pass, and why.
type skipped struct{ why string }

func (s skipped) Error() string { return "not run: " + s.why }

func skip(why string) error { return skipped{why} }

func isSkip(err error) (string, bool) {
	var s skipped
	if errors.As(err, &s) {
		return s.why, true
	}
	return "", false
}
