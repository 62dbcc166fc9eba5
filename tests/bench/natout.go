package bench

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/tests/lab"
)

// The natOutgoing comparison (issue 17): wa, whose pool has natOutgoing,
// opens connections to a server behind the data center's gateway, which
// has no route to the workload pool. calyx SNATs each new flow to host-a's
// underlay address in BPF (calyx_from_wl, a source port of its NAT range)
// and undoes it for the replies at the underlay ingress
// (calyx_from_underlay); the kernel's way is an iptables MASQUERADE rule,
// with conntrack undoing it for the replies. It runs in the floating-IP
// lab, on each side of a round right after the floating-IP runs.

// natOutLoadPort is the calyx-load server's port behind the gateway.
const natOutLoadPort = 7008

// natOutGoals are issue 17's: connection rate ≥ 1.3× MASQUERADE, also as
// CPU cost at a fixed rate (≤ 1/1.3 of MASQUERADE's), both judged on the
// 95% interval.
var natOutGoals = map[string]*Goal{
	natOutCaseID("crr", "bpf-snat"):      {Issue: "issue 17", Text: "natOutgoing connection rate ≥ 1.3 × iptables MASQUERADE", MinRatio: 1.3, OnInterval: true},
	natOutCaseID("cost-crr", "bpf-snat"): {Issue: "issue 17", Text: "natOutgoing connections: CPU per connection at a fixed rate ≤ 0.77 × iptables MASQUERADE (≥ 1.3× as a cost)", MaxRatio: 0.77, OnInterval: true},
}

// natPortDrops is the column of the SYNs calyx dropped for want of a NAT
// port during a run.
var natPortDrops = Extra{Detail: "natPortDrops", Header: "SYNs dropped: no NAT port (max)", Stat: "max", Format: "%.0f"}

// natOutNAT is the natOutgoing comparison.
var natOutNAT = natComparison{
	id:    natOutCaseID,
	paths: [2]natPath{{"bpf-snat", "calyx BPF SNAT (natOutgoing)"}, {"iptables-masq", "iptables MASQUERADE + conntrack"}},
	metrics: []natMetric{
		{"crr", "New connections from a workload to a server outside, natOutgoing (calyx-load crr: connect, request, response, close)", "connections/s"},
	},
	costs: []natCostMetric{
		{"cost-crr", "crr", "CPU cost at a fixed rate: new connections from a workload to a server outside, natOutgoing"},
	},
	goals:      natOutGoals,
	loadExtras: append(loadExtras(), natPortDrops),
	costExtras: []Extra{natPortDrops},
}

func natOutCaseID(metric, path string) string { return "natout." + metric + "." + path }

// natOutTarget is the calyx-load server behind the gateway.
func (b *fipBench) natOutTarget() string {
	return net.JoinHostPort(b.g.Server.IP.String(), strconv.Itoa(natOutLoadPort))
}

// startNATOut starts the calyx-load server in the external server's
// namespace for the whole run and readies wa, its client.
func (b *fipBench) startNATOut() error {
	if err := crrClient(b.l, b.wa.NS); err != nil {
		return err
	}
	srv := b.g.Server
	if _, err := b.l.ExecBackground(srv.NS, 24*time.Hour, onCPU(pinLoadServer, b.loadBin, "serve", "--listen", net.JoinHostPort("0.0.0.0", strconv.Itoa(natOutLoadPort)))...); err != nil {
		return err
	}
	return lab.WaitListening(b.l, srv.NS, natOutLoadPort, 10*time.Second)
}

// measureNATOut measures natOutgoing on one side: calyx's (the agent up, as
// the floating-IP runs left it) or the kernel's (calyx detached, as they
// left it, and the MASQUERADE rule added for these runs only).
func (b *fipBench) measureNATOut(kernel bool, round int, idle float64) (err error) {
	path := natOutNAT.paths[0].key
	if kernel {
		path = natOutNAT.paths[1].key
		if _, err := b.l.Exec(b.h.NS, b.masquerade("-A")...); err != nil {
			return err
		}
		defer func() {
			if _, derr := b.l.Exec(b.h.NS, b.masquerade("-D")...); derr != nil {
				err = errors.Join(err, derr)
			}
		}()
	}
	if err := b.l.WaitPing(b.wa.NS, b.g.Server.IP.String(), 15*time.Second); err != nil {
		return fmt.Errorf("wa cannot reach the server behind the gateway: %w", err)
	}
	prove, err := b.proveNATOut(kernel)
	if err != nil {
		return err
	}
	var carried int64
	for _, m := range natOutNAT.metrics {
		id := natOutCaseID(m.key, path)
		res, err := b.natOutRun(kernel, id, func() (loadResult, error) {
			return loadRun(b.l, b.loadBin, b.wa.NS, b.natOutTarget(), m.key, b.loadSecs, 1)
		})
		if err != nil {
			return err
		}
		b.rec.Add(id, round, res.PerSecond)
		recordLoad(b.rec, id, res)
		b.rec.logf("natOutgoing round %d %s: %.0f/s (p50 %.0f µs, p99 %.0f µs, %d errors)", round+1, id, res.PerSecond, res.LatencyP50us, res.LatencyP99us, res.Errors)
		carried += res.Transactions
	}
	for _, m := range natOutNAT.costs {
		id := natOutCaseID(m.key, path)
		res, err := b.natOutRun(kernel, id, func() (loadResult, error) {
			return b.costAt(id, "natout-"+m.mode, natOutCaseID(m.mode, path), b.wa.NS, b.natOutTarget(), m.mode, idle, round)
		})
		if err != nil {
			return err
		}
		carried += res.Transactions
	}
	return prove(carried)
}

// masquerade is the kernel's natOutgoing for wa: the iptables command that
// adds (op -A) or deletes (-D) it.
func (b *fipBench) masquerade(op string) []string {
	return []string{"iptables", "-t", "nat", op, "POSTROUTING", "-s", b.wa.IP.String() + "/32", "!", "-d", lab.WorkloadPool,
		"-o", b.h.UnderlayIface, "-j", "MASQUERADE"}
}

// natOutRun runs f, one calyx-load run from wa. On calyx's side the SYNs
// dropped for want of a free NAT port are recorded as detail natPortDrops
// of case id. The table is not flushed between runs: the closed flows of
// earlier runs hold ports until a new connection takes them over, as in
// a host's steady state.
func (b *fipBench) natOutRun(kernel bool, id string, f func() (loadResult, error)) (loadResult, error) {
	if kernel {
		return f()
	}
	before := b.counter(b.wa.HostIface, lab.ReasonDropNATPorts)
	res, err := f()
	if err != nil {
		return res, err
	}
	drops := b.counter(b.wa.HostIface, lab.ReasonDropNATPorts) - before
	b.rec.Detail(id, "natPortDrops", float64(drops))
	if drops > 0 {
		b.rec.logf("natOutgoing %s: %d SYNs dropped for want of a NAT port", id, drops)
	}
	return res, nil
}

// proveNATOut returns a check, run after the measurements with the
// connections they carried, that they went the side's way. calyx: host-a's
// eth0 delivered at least one reply packet per connection to wa, and ct
// dump holds wa's SNAT flows to the server, their replies to host-a's
// address. Kernel: the MASQUERADE rule translated at least one packet per
// connection (each new conntrack entry's first), and no calyx program is
// attached.
func (b *fipBench) proveNATOut(kernel bool) (func(carried int64) error, error) {
	if kernel {
		before, _, err := natRulePackets(b.l, b.h.NS, "POSTROUTING", "MASQUERADE", b.wa.IP.String())
		if err != nil {
			return nil, err
		}
		return func(carried int64) error {
			n, out, err := natRulePackets(b.l, b.h.NS, "POSTROUTING", "MASQUERADE", b.wa.IP.String())
			if err != nil {
				return err
			}
			if n-before < uint64(carried) {
				return fmt.Errorf("the MASQUERADE rule translated %d packets during the runs, fewer than their %d connections:\n%s", n-before, carried, out)
			}
			return checkDetached(b.l, b.h, []string{b.h.UnderlayIface, b.wa.HostIface})
		}, nil
	}
	before := b.delivered()
	return func(carried int64) error {
		if d := b.delivered() - before; d < uint64(carried) {
			return fmt.Errorf("calyx delivered %d packets from eth0 during the runs, fewer than their %d connections", d, carried)
		}
		flows, err := b.l.CTDumpFiltered(b.h.Name, "--endpoint", b.wa.IP.String(), "--proto", "tcp", "--port", strconv.Itoa(natOutLoadPort))
		if err != nil {
			return err
		}
		node := b.h.Underlay.Addr()
		for _, f := range flows {
			if f.NAT == lab.NATSNAT && f.SrcAddr() == b.wa.IP && f.DstAddr() == b.g.Server.IP && f.ReplyDstAddr() == node {
				return nil
			}
		}
		return fmt.Errorf("no SNAT flow from wa to %s in calyx's conntrack (%d flows of wa to port %d)", b.g.Server.IP, len(flows), natOutLoadPort)
	}, nil
}

// natOutMethod explains the natOutgoing comparison (a paragraph and its
// list, for the section's Method).
func natOutMethod(rec *Recorder) string {
	lo, hi := (&model.ConfigSpec{}).NATPorts()
	ports, secs := int(hi)-int(lo)+1, rec.ParamInt("fip.loadSeconds")
	return fmt.Sprintf(`**natOutgoing**: wa, whose IPPool has `+"`natOutgoing: true`"+`, opens new connections to a calyx-load server in the external server's namespace (%s:%d), which sees them come from host-a's address: calyx-load crr from wa, %d s.

- **calyx**: calyx_from_wl SNATs each new flow to host-a's underlay address with a source port of its NAT range (%d–%d: wa's own port when it is in the range and free, else up to 16 random ones) and sends it out of eth0 itself (a BPF redirect, past the host's forwarding); calyx_from_underlay undoes it for the replies and hands them to wa (bpf_redirect_peer).
- **kernel**: calyx detached and wa routed as for the floating IP (the /32 and proxy_arp), and for these runs only `+"`iptables -t nat -A POSTROUTING -s <wa>/32 ! -d %s -o eth0 -j MASQUERADE`"+`, deleted after them; the kernel forwards wa's packets and its conntrack undoes the translation for the replies.
- **Ports**: wa runs with `+"`net.ipv4.tcp_tw_reuse=1`"+` and ports 1024–65535 on both sides. calyx's NAT range gives %d source ports per server address and port. A closed flow (FIN both ways, or an RST) keeps its port until the agent collects it (30 s idle) or until a new connection's SYN takes the port over, once the closed flow has been quiet for about a second (cx_nat_take_closed): so calyx carries some %d new connections to one server per second or two, more than a run of %d s at %.0f connections/s needs. A SYN that finds none of the 16 ports it tries free is dropped (*SYNs dropped: no NAT port*; the client sends it again after its 1-s SYN timeout). MASQUERADE keeps wa's own source port (unique, as wa's ports are), and a SYN reusing the tuple of a conntrack entry its side closed replaces that entry. Neither table is flushed between runs.
- **Proof of the path**, every run: calyx — host-a's eth0 delivered at least one reply packet per connection carried (deliver-local) and ct dump holds wa's SNAT flows to the server, their replies to host-a's address; kernel — the MASQUERADE rule's packet counter grew by at least the connections carried (it counts each new conntrack entry's first packet) and no calyx program is attached (BPF_PROG_QUERY).
`, lab.ExternalServerIP, natOutLoadPort, secs, lo, hi, lab.WorkloadPool, ports, ports, secs, float64(ports)/float64(max(secs, 1)))
}
