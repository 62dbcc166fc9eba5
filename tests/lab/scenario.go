package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// StandardHost is the host the standard topology builds.
const StandardHost = "host-a"

// BuildStandard adds the standard single-host topology to l: host-a at
// 10.30.0.11/24 with workloads w1 (10.65.0.2), w2 (10.65.0.3) and w3
// (10.65.0.4, rendered without spec.mac so the agent takes the neighbour
// path).
func BuildStandard(l *Lab) (*Host, []*Workload, error) {
	h, err := l.AddHost(StandardHost, "10.30.0.11/24")
	if err != nil {
		return nil, nil, err
	}
	var ws []*Workload
	for i, ip := range []string{"10.65.0.2", "10.65.0.3", "10.65.0.4"} {
		w, err := l.AddWorkload(h.Name, fmt.Sprintf("w%d", i+1), ip, "")
		if err != nil {
			return nil, nil, err
		}
		ws = append(ws, w)
	}
	ws[2].OmitMAC = true
	return h, ws, nil
}

// runner prints numbered sections and steps and remembers which steps
// failed. Once the run is interrupted (ctx cancelled) it prints and runs
// nothing more.
type runner struct {
	ctx         context.Context
	out         io.Writer
	sections    int
	failed      []string
	interrupted bool
}

func (r *runner) section(title string) {
	if r.stopped() {
		return
	}
	r.header(title)
}

// header prints the next numbered section title, also after an interrupt
// (cleanup is reported either way).
func (r *runner) header(title string) {
	r.sections++
	title = fmt.Sprintf("%d. %s", r.sections, title)
	fmt.Fprintf(r.out, "\n==== %s %s\n", title, strings.Repeat("=", max(0, 73-len(title))))
}

// stopped reports (and announces once) that the run was interrupted.
func (r *runner) stopped() bool {
	if r.ctx.Err() == nil {
		return false
	}
	if !r.interrupted {
		r.interrupted = true
		fmt.Fprintf(r.out, "\ninterrupted: skipping the remaining steps\n")
	}
	return true
}

// step runs f unless the run was interrupted, and prints its verdict.
func (r *runner) step(name string, f func() error) bool {
	if r.stopped() {
		return false
	}
	err := f()
	if r.ctx.Err() != nil {
		// Killed by the interrupt, not a verdict on the dataplane.
		fmt.Fprintf(r.out, "----  %s: interrupted\n", name)
		return false
	}
	if err != nil {
		r.fail(name, err)
		return false
	}
	fmt.Fprintf(r.out, "ok    %s\n", name)
	return true
}

func (r *runner) fail(name string, err error) {
	fmt.Fprintf(r.out, "FAIL  %s: %v\n", name, err)
	r.failed = append(r.failed, name)
}

func (r *runner) print(label, text string) {
	fmt.Fprintf(r.out, "--- %s\n%s\n", label, strings.TrimRight(text, "\n"))
}

// withLab creates a lab, runs body in it and removes the lab again, with the
// removal as a section of its own. body returns early on a step failure that
// makes the rest pointless.
func (r *runner) withLab(opts Options, body func(l *Lab)) {
	if r.stopped() {
		return
	}
	l, err := New(opts)
	if err != nil {
		r.fail("create lab", err)
		return
	}
	defer func() {
		r.header("cleanup")
		if err := l.Close(); err != nil {
			r.fail("cleanup", err)
			return
		}
		fmt.Fprintf(r.out, "ok    removed namespaces, bpffs and %s\n", l.Dir)
	}()
	body(l)
}

// Demo shows the dataplane working in two labs, one after the other, and
// removes everything before returning, also when interrupted through ctx.
// First one host: the standard topology with its agent, pings, a TCP
// transfer, a spoofed packet dropped and counted, and calyxctl's view of the
// maps. Then three hosts on two subnets behind a router, in VXLAN
// CrossSubnet mode: pings and a transfer across hosts, a capture proving
// which traffic is encapsulated, and the routes the agents keep in BPF
// rather than in the kernel. The error lists the steps that failed.
func Demo(ctx context.Context, opts Options, out io.Writer) error {
	opts.Context = ctx
	r := &runner{ctx: ctx, out: out}
	demoSingleHost(r, opts)
	demoMultiHost(r, opts, ModeVXLANCrossSubnet)
	return r.result()
}

// demoSingleHost is the single-host half of Demo.
func demoSingleHost(r *runner, opts Options) {
	out := r.out
	r.section("one host: topology")
	r.withLab(opts, func(l *Lab) {
		fmt.Fprintf(out, "lab prefix %s, state in %s, binaries from %s\n", l.Prefix, l.Dir, l.BinDir)
		var h *Host
		var ws []*Workload
		if !r.step("build host-a with workloads w1, w2, w3 (veth) and vm1 (a VM on a tap)", func() error {
			var err error
			if h, ws, err = BuildStandard(l); err != nil {
				return err
			}
			// A hypervisor's instance: a tap on the host joined by a
			// vnet_hdr relay (the lab's virtio-net backend) to a tap in
			// the VM's namespace.
			vm, err := l.PlanWorkloadKind(h.Name, "vm1", "10.65.0.5", "", KindVM)
			if err == nil {
				err = l.CreateWorkload(vm)
			}
			ws = append(ws, vm)
			return err
		}) {
			return
		}
		fmt.Fprintf(out, "host    %-8s ns %-16s eth0 %s\n", h.Name, h.NS, h.Underlay)
		for _, w := range ws {
			mac := w.MAC.String()
			if w.OmitMAC {
				mac += " (not in the model)"
			}
			fmt.Fprintf(out, "workload %-7s ns %-16s %s %s/32 %s, host side %s\n", w.Name, w.NS, w.InstanceIface(), w.IP, mac, l.hostSide(w))
		}

		r.section("one host: agent")
		if !r.step("start calyx-agent in "+h.NS, func() error { return l.StartAgent(h.Name) }) {
			return
		}
		fmt.Fprintf(out, "agent log: %s\n", l.AgentLogPath(h.Name))

		r.section("one host: model")
		model := l.ModelYAML()
		r.print("model (calyxctl apply -f -)", model)
		if !r.step("calyxctl apply", func() error {
			o, err := l.Apply(h.Name, model)
			r.print("calyxctl output", o)
			return err
		}) {
			return
		}
		ifaces := make([]string, 0, len(ws))
		for _, w := range ws {
			ifaces = append(ifaces, w.HostIface)
		}
		r.step("programs attached to "+strings.Join(ifaces, ", "), func() error {
			return l.WaitLinks(h.Name, 20*time.Second, ifaces...)
		})

		r.section("one host: ping between workloads")
		for _, p := range [][2]*Workload{{ws[0], ws[1]}, {ws[1], ws[2]}, {ws[2], ws[0]}, {ws[0], ws[3]}, {ws[3], ws[2]}} {
			demoPing(l, r, p[0], p[1], "", 10*time.Second)
		}
		r.step(fmt.Sprintf("ping host-a -> w1 (%s)", ws[0].IP), func() error {
			st, err := l.Ping(h.NS, ws[0].IP.String(), 3)
			r.print("ping", st.Output)
			return err
		})

		r.section("one host: TCP transfer w1 -> w2")
		r.step("100 MB over TCP", func() error { return demoTransfer(l, r, ws[0], ws[1]) })

		r.section("one host: TCP transfer w1 (veth) -> vm1 (tap)")
		r.step("100 MB over TCP into the VM", func() error {
			if err := demoTransfer(l, r, ws[0], ws[3]); err != nil {
				return err
			}
			st, err := l.RelayStats(ws[3])
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "into vm1's queue: %d frames, %d bytes, the largest %d bytes (GSO frames cross unsegmented, as with vhost-net)\n",
				st.HostToVM.Frames, st.HostToVM.Bytes, st.HostToVM.MaxFrame)
			return nil
		})

		r.section("one host: a VM boots with no address and gets everything by DHCP")
		r.step("vm2 (10.65.0.6) from the agent's DHCP server: dhclient -4", func() error { return demoDHCP(l, r, h) })

		r.section("one host: spoofed source address is dropped")
		r.step("ping from an address w1's endpoint does not own", func() error { return demoSpoof(l, r, h, ws[0], ws[1]) })

		r.section("one host: calyxctl view")
		for _, args := range [][]string{{"endpoints", "dump"}, {"routes", "dump"}, {"links"}} {
			demoCtl(l, r, h, args...)
		}

		r.section("one host: kernel routes in " + h.NS)
		r.step("ip route", func() error {
			res, err := l.Exec(h.NS, "ip", "route")
			r.print("ip route", res.Combined())
			return err
		})
	})
}

// demoMultiHost is the multi-host half of Demo, in the given mode.
func demoMultiHost(r *runner, opts Options, mode EncapMode) {
	out := r.out
	r.section(fmt.Sprintf("three hosts, two subnets: topology (%s)", mode))
	r.withLab(opts, func(l *Lab) {
		fmt.Fprintf(out, "lab prefix %s, state in %s\n", l.Prefix, l.Dir)
		var m *MultiHost
		if !r.step("build segments fabric and remote, a router between them, host-a, host-b, host-c with wa, wb, wc", func() error {
			var err error
			m, err = BuildMultiHost(l, mode)
			return err
		}) {
			return
		}
		printMultiHost(out, m)
		r.step(fmt.Sprintf("underlay: host-a -> host-c (%s) through the router, no agent yet", m.HostC.Underlay.Addr()), func() error {
			st, err := l.Ping(m.HostA.NS, m.HostC.Underlay.Addr().String(), 2)
			r.print("ping", st.Output)
			return err
		})

		r.section("three hosts: agents")
		for _, h := range m.Hosts() {
			if !r.step("start calyx-agent in "+h.NS, func() error { return l.StartAgent(h.Name) }) {
				return
			}
		}
		fmt.Fprintf(out, "agent logs: %s\n", filepath.Join(l.Dir, "agent-*.log"))

		r.section("three hosts: model")
		// The nodes and endpoints read like the single-host ones; the
		// pool and the nodes' prefixes are what is new here.
		r.print("pool (the model also has a Node per host and a WorkloadEndpoint per workload)", m.PoolYAML(m.Mode))
		for _, h := range m.Hosts() {
			fmt.Fprintf(out, "Node %s: ipv4Address %s (the prefix says which peers share its subnet)\n", h.Name, h.Underlay)
		}
		if !r.step("calyxctl apply (one datastore for all three agents)", func() error {
			o, err := m.Apply()
			r.print("calyxctl output", o)
			return err
		}) {
			return
		}
		r.step("programs attached on host-a, host-b and host-c", func() error { return m.WaitLinks(20 * time.Second) })

		r.section("three hosts: ping across hosts")
		for _, p := range []struct{ src, dst *Workload }{{m.WA, m.WB}, {m.WA, m.WC}, {m.WC, m.WB}} {
			demoPing(l, r, p.src, p.dst, m.describePath(p.src, p.dst), 8*time.Second)
		}

		r.section("three hosts: TCP transfer wa -> wc")
		r.step("100 MB over TCP, host-a -> router -> host-c", func() error { return demoTransfer(l, r, m.WA, m.WC) })

		r.section("three hosts: what crosses host-a's eth0")
		demoCapture(l, r, m)

		r.section("three hosts: calyxctl view on host-a")
		for _, args := range [][]string{{"routes", "dump"}, {"node", "status"}} {
			demoCtl(l, r, m.HostA, args...)
		}

		r.section("three hosts: kernel routes")
		for _, h := range m.Hosts() {
			r.step("ip route in "+h.NS+": underlay and local /32s only, no route for "+WorkloadPool+" blocks", func() error {
				res, err := l.Exec(h.NS, "ip", "route")
				r.print("ip route in "+h.NS, res.Combined())
				if err != nil {
					return err
				}
				if blocks := BlockRoutes(res.Stdout, netip.MustParsePrefix(WorkloadPool)); len(blocks) > 0 {
					return fmt.Errorf("kernel routes for workload blocks: %s", strings.Join(blocks, "; "))
				}
				return nil
			})
		}

		demoFloatingIP(r, l, m)
		demoPolicy(r, l, m)
	})
}

// printMultiHost prints the multi-host topology, one line per namespace.
func printMultiHost(out io.Writer, m *MultiHost) {
	for _, s := range []*Segment{m.Fabric, m.Remote} {
		fmt.Fprintf(out, "segment  %-7s ns %-16s bridge %s, %s, gateway %s on router %s\n", s.Name, s.NS, s.Bridge, s.Gateway.Masked(), s.Gateway.Addr(), s.Router)
	}
	var legs []string
	for _, leg := range m.Router.Legs {
		legs = append(legs, fmt.Sprintf("%s %s (%s)", leg.Iface, leg.Address, leg.Segment.Name))
	}
	fmt.Fprintf(out, "router   %-7s ns %-16s %s; forwarding, connected routes only\n", m.Router.Name, m.Router.NS, strings.Join(legs, ", "))
	for _, h := range m.Hosts() {
		fmt.Fprintf(out, "host     %-7s ns %-16s eth0 %s on %s\n", h.Name, h.NS, h.Underlay, h.Segment.Name)
	}
	for _, w := range m.Workloads() {
		fmt.Fprintf(out, "workload %-7s ns %-16s %s %s/32 mtu %d on %s, host side %s\n", w.Name, w.NS, w.InstanceIface(), w.IP, w.MTU, w.Host, m.Lab.hostSide(w))
	}
	ipip, vxlan := m.Mode.PoolModes()
	fmt.Fprintf(out, "pool %s %s: ipipMode %s, vxlanMode %s\n", MultiPool, WorkloadPool, ipip, vxlan)
}

// expectW is Expect for the hosts of two workloads.
func (m *MultiHost) expectW(src, dst *Workload) string {
	hs, errS := m.Lab.Host(src.Host)
	hd, errD := m.Lab.Host(dst.Host)
	if errS != nil || errD != nil {
		return ""
	}
	return m.Expect(hs, hd)
}

// describePath says in words where traffic between two workloads goes and
// how it should cross the underlay, e.g. "across the router, VXLAN".
func (m *MultiHost) describePath(src, dst *Workload) string {
	hs, errS := m.Lab.Host(src.Host)
	hd, errD := m.Lab.Host(dst.Host)
	if errS != nil || errD != nil {
		return ""
	}
	where := "across the router"
	if hs.Underlay.Masked().Contains(hd.Underlay.Addr()) {
		where = "same subnet"
	}
	return where + ", " + describeEncap(m.Expect(hs, hd))
}

// describeEncap says in words how traffic should cross the underlay.
func describeEncap(encap string) string {
	switch encap {
	case EncapNone:
		return "no encapsulation"
	case EncapIPIP:
		return "IP-in-IP"
	case EncapVXLAN:
		return "VXLAN"
	}
	return encap
}

// demoPing waits for src to reach dst, then pings three times.
func demoPing(l *Lab, r *runner, src, dst *Workload, note string, wait time.Duration) {
	name := fmt.Sprintf("ping %s -> %s (%s)", src.Name, dst.Name, dst.IP)
	if note != "" {
		name = fmt.Sprintf("ping %s -> %s (%s, %s)", src.Name, dst.Name, dst.IP, note)
	}
	r.step(name, func() error {
		if err := l.WaitPing(src.NS, dst.IP.String(), wait); err != nil {
			return err
		}
		st, err := l.Ping(src.NS, dst.IP.String(), 3)
		r.print("ping", st.Output)
		return err
	})
}

// demoCtl runs one calyxctl command against host and prints its output.
func demoCtl(l *Lab, r *runner, h *Host, args ...string) {
	r.step("calyxctl "+strings.Join(args, " "), func() error {
		o, e, err := l.Calyxctl(h.Name, args...)
		r.print("calyxctl "+strings.Join(args, " ")+" ("+h.Name+")", o+e)
		return err
	})
}

// demoCapture captures on host-a's underlay while wa pings wb and wc, and
// checks each destination's packets crossed the wire as the mode says.
func demoCapture(l *Lab, r *runner, m *MultiHost) {
	var pkts []string
	if !r.step(fmt.Sprintf("tcpdump on %s eth0 while wa pings wb and wc", m.HostA.Name), func() error {
		c, err := l.StartCapture(m.HostA.NS, m.HostA.UnderlayIface, "ip")
		if err != nil {
			return err
		}
		// The pings' verdicts were given above; here only what crosses
		// the wire counts.
		_, _ = l.Ping(m.WA.NS, m.WB.IP.String(), 2)
		_, _ = l.Ping(m.WA.NS, m.WC.IP.String(), 2)
		pkts, err = c.Stop()
		return err
	}) {
		return
	}
	for _, dst := range []*Workload{m.WB, m.WC} {
		want := m.expectW(m.WA, dst)
		mine := PacketsMentioning(pkts, dst.IP)
		r.step(fmt.Sprintf("wa -> %s on the wire: %s", dst.Name, m.describePath(m.WA, dst)), func() error {
			shown := mine[:min(len(mine), 4)]
			r.print(fmt.Sprintf("tcpdump -nn -i eth0 ip (%d packets mentioning %s, first %d)", len(mine), dst.IP, len(shown)), strings.Join(shown, "\n"))
			ipip, vxlan, plain := CaptureShows(mine)
			fmt.Fprintf(r.out, "ip-in-ip %d, vxlan %d, plain %d\n", ipip, vxlan, plain)
			return CheckEncap(mine, want)
		})
	}
}

// CheckEncap checks that captured packets (as Capture.Stop returns them,
// usually narrowed with PacketsMentioning) show traffic crossing the wire
// as want says: EncapNone means plain IPv4 only, EncapIPIP or EncapVXLAN
// means that encapsulation only. It fails when there are no IPv4 packets.
func CheckEncap(pkts []string, want string) error {
	ipip, vxlan, plain := CaptureShows(pkts)
	if ipip+vxlan+plain == 0 {
		return errors.New("no IPv4 packets captured")
	}
	var got int
	switch want {
	case EncapNone:
		got = plain
	case EncapIPIP:
		got = ipip
	case EncapVXLAN:
		got = vxlan
	default:
		return fmt.Errorf("unknown encapsulation %q", want)
	}
	if got != ipip+vxlan+plain {
		return fmt.Errorf("want only %s, captured ip-in-ip %d, vxlan %d, plain %d", want, ipip, vxlan, plain)
	}
	return nil
}

func (r *runner) result() error {
	if r.interrupted || r.ctx.Err() != nil {
		return fmt.Errorf("interrupted (%d step(s) failed before)", len(r.failed))
	}
	if len(r.failed) == 0 {
		return nil
	}
	return fmt.Errorf("%d step(s) failed: %s", len(r.failed), strings.Join(r.failed, "; "))
}

// demoTransfer moves 100 MB from src to dst with iperf3 when it is
// installed (its rate is what people expect to see), else in-process.
func demoTransfer(l *Lab, r *runner, src, dst *Workload) error {
	const n = 100 << 20
	if _, err := exec.LookPath("iperf3"); err != nil {
		t, err := l.TCPTransfer(src.NS, dst.NS, dst.IP, 5201, n, 60*time.Second)
		if err != nil {
			return err
		}
		fmt.Fprintf(r.out, "sent %d bytes in %s: %.2f Gbit/s (in-process sender; iperf3 not installed)\n", t.Received, t.Duration.Round(time.Millisecond), t.Gbps())
		return nil
	}
	srv, err := l.ExecBackground(dst.NS, 60*time.Second, "iperf3", "-s", "-1", "-B", dst.IP.String())
	if err != nil {
		return err
	}
	defer srv.Stop(syscall.SIGTERM, 3*time.Second)
	if err := WaitListening(l, dst.NS, 5201, 10*time.Second); err != nil {
		return err
	}
	// A bounded connect, so an unreachable destination fails in seconds
	// rather than after TCP's SYN retries.
	res, err := l.ExecTimeout(60*time.Second, src.NS, "iperf3", "-c", dst.IP.String(), "-n", "100M", "-J", "--connect-timeout", "5000")
	if err != nil {
		return err
	}
	rep, err := ParseIperf(res.Stdout)
	if err != nil {
		return err
	}
	fmt.Fprintf(r.out, "iperf3: %d bytes sent in %.2fs: %.2f Gbit/s\n", rep.SentBytes, rep.Seconds, rep.BitsPerSecond/1e9)
	if rep.SentBytes < n {
		return fmt.Errorf("iperf3 sent %d bytes, want %d", rep.SentBytes, n)
	}
	if _, err := srv.Wait(10 * time.Second); err != nil {
		return fmt.Errorf("iperf3 server: %w", err)
	}
	return nil
}

// demoSpoof adds an address w's endpoint does not own, pings from it
// (expecting no answer) and shows the drop-spoof-ip counter rising.
func demoSpoof(l *Lab, r *runner, h *Host, w, dst *Workload) error {
	const spoofed = "10.65.0.99"
	before, err := l.Counters(h.Name)
	if err != nil {
		return err
	}
	if err := l.ip(w.NS, "addr", "add", spoofed+"/32", "dev", w.InstanceIface()); err != nil {
		return err
	}
	defer l.ip(w.NS, "addr", "del", spoofed+"/32", "dev", w.InstanceIface())
	st, perr := l.Ping(w.NS, dst.IP.String(), 3, "-I", spoofed)
	r.print("ping -I "+spoofed+" "+dst.IP.String()+" (expected to fail)", st.Output)
	if perr == nil || st.Received > 0 {
		return fmt.Errorf("spoofed ping was answered (%d/%d)", st.Received, st.Transmitted)
	}
	var after []Counter
	err = Eventually(5*time.Second, 200*time.Millisecond, func() error {
		var err error
		if after, err = l.Counters(h.Name); err != nil {
			return err
		}
		b, a := CounterPackets(before, w.HostIface, "drop-spoof-ip"), CounterPackets(after, w.HostIface, "drop-spoof-ip")
		if a <= b {
			return fmt.Errorf("drop-spoof-ip on %s did not rise (%d -> %d)", w.HostIface, b, a)
		}
		return nil
	})
	var rows []string
	for _, c := range after {
		if c.Interface == w.HostIface {
			rows = append(rows, fmt.Sprintf("%-12s ifindex %-3d %-18s packets %-6d bytes %d", c.Interface, c.Ifindex, c.Reason, c.Packets, c.Bytes))
		}
	}
	r.print("calyxctl counters dump ("+w.HostIface+")", strings.Join(rows, "\n"))
	fmt.Fprintf(r.out, "drop-spoof-ip on %s: %d -> %d\n", w.HostIface,
		CounterPackets(before, w.HostIface, "drop-spoof-ip"), CounterPackets(after, w.HostIface, "drop-spoof-ip"))
	return err
}

// WaitListening waits until a TCP socket listens on port in namespace ns.
func WaitListening(l *Lab, ns string, port int, timeout time.Duration) error {
	return Eventually(timeout, 100*time.Millisecond, func() error {
		res, err := l.ExecTimeout(5*time.Second, ns, "ss", "-Hltn", fmt.Sprintf("sport = :%d", port))
		if err != nil {
			return err
		}
		if strings.TrimSpace(res.Stdout) == "" {
			return fmt.Errorf("nothing listens on port %d in %s", port, ns)
		}
		return nil
	})
}

// IperfReport is the part of iperf3's JSON report the lab uses.
type IperfReport struct {
	// SentBytes is what the client sent (all of it arrived when iperf3
	// reports no error: it is TCP). Bytes is the receiver's figure, which
	// iperf3 computes over whole intervals and so may fall short of it.
	SentBytes     int64
	Bytes         int64
	Seconds       float64
	BitsPerSecond float64
}

// ParseIperf reads the receiver summary of "iperf3 -J" client output.
func ParseIperf(out string) (IperfReport, error) {
	var v struct {
		Error string `json:"error"`
		End   struct {
			SumSent struct {
				Bytes int64 `json:"bytes"`
			} `json:"sum_sent"`
			SumReceived struct {
				Bytes         int64   `json:"bytes"`
				Seconds       float64 `json:"seconds"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return IperfReport{}, fmt.Errorf("decode iperf3 JSON: %w", err)
	}
	if v.Error != "" {
		return IperfReport{}, fmt.Errorf("iperf3: %s", v.Error)
	}
	s := v.End.SumReceived
	return IperfReport{SentBytes: v.End.SumSent.Bytes, Bytes: s.Bytes, Seconds: s.Seconds, BitsPerSecond: s.BitsPerSecond}, nil
}

// Up builds the standard topology, starts the agent and applies the model,
// then returns the lab still running (the agent outlives this process);
// remove it with Reap. On failure everything is removed.
func Up(ctx context.Context, opts Options, out io.Writer) (*Lab, error) {
	opts.Context = ctx
	l, err := New(opts)
	if err != nil {
		return nil, err
	}
	// Before any workload: the VMs' relays must outlive this process too.
	l.outlive = true
	fail := func(err error) (*Lab, error) { return nil, errors.Join(err, l.Close()) }
	h, ws, err := BuildStandard(l)
	if err != nil {
		return fail(err)
	}
	if err := l.upEtcd(); err != nil {
		return fail(err)
	}
	if err := l.StartAgent(h.Name); err != nil {
		return fail(err)
	}
	if o, err := l.Apply(h.Name, l.ModelYAML()); err != nil {
		return fail(fmt.Errorf("apply model: %w: %s", err, o))
	}
	ifaces := []string{}
	for _, w := range ws {
		ifaces = append(ifaces, w.HostIface)
	}
	if err := l.WaitLinks(h.Name, 20*time.Second, ifaces...); err != nil {
		return fail(err)
	}
	ctl, _ := l.CtlArgs(h.Name)
	fmt.Fprintf(out, "lab %s is up (state in %s)\n\n", l.Prefix, l.Dir)
	fmt.Fprintf(out, "host %s: namespace %s, eth0 %s, agent pid %d, log %s\n", h.Name, h.NS, h.Underlay, l.AgentPid(h.Name), l.AgentLogPath(h.Name))
	for _, w := range ws {
		fmt.Fprintf(out, "workload %s: namespace %s, %s, host side %s\n", w.Name, w.NS, w.IP, l.hostSide(w))
	}
	fmt.Fprintf(out, "\ntry:\n  ip netns exec %s ping -c 3 %s\n", ws[0].NS, ws[1].IP)
	fmt.Fprintf(out, "  ip netns exec %s bash\n", h.NS)
	ctlLine := strings.Join(ctl, " ")
	if l.Etcd() != nil {
		ctlLine = "ip netns exec " + h.NS + " " + ctlLine
	}
	fmt.Fprintf(out, "  %s counters dump\n", ctlLine)
	l.describeEtcd(out)
	fmt.Fprintf(out, "\nremove it with:\n  calyx-lab destroy %s\n", l.Prefix)
	return l, nil
}

// UpMulti builds the three-host topology (see MultiHost) in mode with the
// external gateway, its client and server (see Gateway), starts an agent on
// every host, applies the model and the external pool, then returns the lab
// still running (the agents outlive this process); remove it with Reap. It also
// writes the pool in every mode to <lab dir>/pool-<mode>.yaml, so the
// encapsulation can be switched by hand with calyxctl apply, and a
// FloatingIP for wa to <lab dir>/fip-wa.yaml. On failure
// everything is removed.
func UpMulti(ctx context.Context, opts Options, mode EncapMode, out io.Writer) (*Lab, error) {
	if _, err := ParseEncapMode(string(mode)); err != nil {
		return nil, err
	}
	opts.Context = ctx
	l, err := New(opts)
	if err != nil {
		return nil, err
	}
	// Before any workload: the VMs' relays must outlive this process too.
	l.outlive = true
	fail := func(err error) (*Lab, error) { return nil, errors.Join(err, l.Close()) }
	m, err := BuildMultiHost(l, mode)
	if err != nil {
		return fail(err)
	}
	g, err := m.AddGateway()
	if err != nil {
		return fail(err)
	}
	if err := l.upEtcd(); err != nil {
		return fail(err)
	}
	if err := m.StartAgents(); err != nil {
		return fail(err)
	}
	// The external pool comes with the model, so floating IPs can be
	// applied at once; none is, the lab's workloads stay private.
	if o, err := l.Apply("", JoinYAML(m.ModelYAML(), ExternalPoolYAML(ExternalPool, FloatingPool))); err != nil {
		return fail(fmt.Errorf("apply model: %w: %s", err, o))
	}
	if err := m.WaitLinks(20 * time.Second); err != nil {
		return fail(err)
	}
	fipPath := filepath.Join(l.Dir, "fip-wa.yaml")
	if err := os.WriteFile(fipPath, []byte(FloatingIPYAML("fip-wa", DemoFloatingIP, m.WA.Name)), 0o600); err != nil {
		return fail(fmt.Errorf("write %s: %w", fipPath, err))
	}
	pools := map[EncapMode]string{}
	for _, md := range EncapModes() {
		p := filepath.Join(l.Dir, "pool-"+string(md)+".yaml")
		if err := os.WriteFile(p, []byte(m.PoolYAML(md)), 0o600); err != nil {
			return fail(fmt.Errorf("write %s: %w", p, err))
		}
		pools[md] = p
	}

	ipip, vxlan := mode.PoolModes()
	fmt.Fprintf(out, "lab %s is up: three hosts in mode %s (pool %s %s: ipipMode %s, vxlanMode %s; workload MTU %d)\n",
		l.Prefix, mode, MultiPool, WorkloadPool, ipip, vxlan, m.WA.MTU)
	fmt.Fprintf(out, "state in %s\n\nnamespaces:\n", l.Dir)
	for _, s := range []*Segment{m.Fabric, m.Remote} {
		fmt.Fprintf(out, "  %-16s segment %s %s (bridge %s)\n", s.NS, s.Name, s.Gateway.Masked(), s.Bridge)
	}
	var legs []string
	for _, leg := range m.Router.Legs {
		legs = append(legs, fmt.Sprintf("%s %s", leg.Iface, leg.Address))
	}
	fmt.Fprintf(out, "  %-16s router: %s, connected routes only\n", m.Router.NS, strings.Join(legs, ", "))
	for _, h := range m.Hosts() {
		fmt.Fprintf(out, "  %-16s host %s: eth0 %s, agent pid %d, log %s\n", h.NS, h.Name, h.Underlay, l.AgentPid(h.Name), l.AgentLogPath(h.Name))
	}
	for _, w := range m.Workloads() {
		fmt.Fprintf(out, "  %-16s workload %s: %s mtu %d on %s (host side %s)\n", w.NS, w.Name, w.IP, w.MTU, w.Host, l.hostSide(w))
	}
	fmt.Fprint(out, g.Describe())
	fmt.Fprintf(out, "  external pool %s %s is applied (floating IPs come from it); the gateway has no route to %s\n", ExternalPool, FloatingPool, WorkloadPool)
	ctlA, _ := l.CtlArgs(m.HostA.Name)
	ctlC, _ := l.CtlArgs(m.HostC.Name)
	// Model commands run anywhere the datastore is reachable: the root
	// namespace for the file datastore, a host for etcd.
	applyA := strings.Join(ctlA, " ")
	if l.Etcd() != nil {
		applyA = "ip netns exec " + m.HostA.NS + " " + applyA
	}
	fmt.Fprintf(out, "\ntry:\n")
	fmt.Fprintf(out, "  ip netns exec %s ping -c 3 %s\n", m.WA.NS, m.WC.IP)
	fmt.Fprintf(out, "  ip netns exec %s tcpdump -nn -i eth0 ip\n", m.HostA.NS)
	fmt.Fprintf(out, "calyxctl inside a host (its --bpffs is the host's pin directory):\n")
	fmt.Fprintf(out, "  ip netns exec %s %s routes dump\n", m.HostA.NS, strings.Join(ctlA, " "))
	fmt.Fprintf(out, "  ip netns exec %s %s node status\n", m.HostC.NS, strings.Join(ctlC, " "))
	fmt.Fprintf(out, "the outside world (client %s, server %s behind the gateway):\n", g.Client.IP, g.Server.IP)
	fmt.Fprintf(out, "  ip netns exec %s ping -c 3 %s          # a host reaches the internet via the gateway\n", m.HostC.NS, g.Server.IP)
	fmt.Fprintf(out, "  ip netns exec %s bash                   # the external client\n", g.Client.NS)
	fmt.Fprintf(out, "give wa a floating IP and route it on the gateway by hand (make demo shows BIRD learning it by BGP instead):\n")
	fmt.Fprintf(out, "  %s apply -f %s\n", applyA, fipPath)
	fmt.Fprintf(out, "  ip -n %s route replace %s/32 via %s\n", g.NS, DemoFloatingIP, m.HostA.Underlay.Addr())
	fmt.Fprintf(out, "  ip netns exec %s ping -c 3 %s\n", g.Client.NS, DemoFloatingIP)
	fmt.Fprintf(out, "  ip netns exec %s %s nat dump\n", m.HostA.NS, strings.Join(ctlA, " "))
	fmt.Fprintf(out, "switch the encapsulation (agents keep running):\n")
	for _, md := range EncapModes() {
		fmt.Fprintf(out, "  %s apply -f %s\n", applyA, pools[md])
	}
	l.describeEtcd(out)
	fmt.Fprintf(out, "\nremove it with:\n  calyx-lab destroy %s\n", l.Prefix)
	return l, nil
}

// demoFloatingIP gives wa a floating IP and reaches it from an external
// client behind the data center's gateway.
func demoFloatingIP(r *runner, l *Lab, m *MultiHost) {
	out := r.out
	r.section("three hosts: a floating IP reached from outside")
	var g *Gateway
	if !r.step("add the data center's gateway with an external client and server", func() error {
		var err error
		g, err = m.AddGateway()
		return err
	}) {
		return
	}
	fmt.Fprint(out, g.Describe())
	model := JoinYAML(ExternalPoolYAML(ExternalPool, FloatingPool), FloatingIPYAML("fip-wa", DemoFloatingIP, m.WA.Name))
	r.print("model (calyxctl apply -f -)", model)
	if !r.step("calyxctl apply", func() error {
		o, err := l.Apply("", model)
		r.print("calyxctl output", o)
		return err
	}) {
		return
	}
	if !demoBGP(r, l, m, g) {
		return
	}
	r.step(fmt.Sprintf("ping %s (wa's floating IP) from the external client %s", DemoFloatingIP, g.Client.IP), func() error {
		if err := l.WaitPing(g.Client.NS, DemoFloatingIP, 10*time.Second); err != nil {
			return err
		}
		st, err := l.Ping(g.Client.NS, DemoFloatingIP, 3)
		r.print("ping", st.Output)
		return err
	})
	r.step("TCP from the client to the floating IP: wa sees the client's real address", func() error {
		srv, err := l.StartEcho(m.WA.NS, "wa", netip.AddrPortFrom(m.WA.IP, 7007).String())
		if err != nil {
			return err
		}
		defer srv.Close()
		rep, err := TCPEcho(g.Client.NS, net.JoinHostPort(DemoFloatingIP, "7007"), 5*time.Second)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "client %s -> %s: the reply came from %s; wa (%s) saw the connection from %s\n",
			rep.Local, net.JoinHostPort(DemoFloatingIP, "7007"), rep.From, m.WA.IP, rep.Peer)
		if rep.Peer.Addr() != g.Client.IP {
			return fmt.Errorf("wa saw %s, not the client %s", rep.Peer.Addr(), g.Client.IP)
		}
		return nil
	})
	for _, args := range [][]string{{"nat", "dump"}, {"ct", "dump"}} {
		demoCtl(l, r, m.HostA, args...)
	}
}

// demoBGP makes the gateway learn the floating IP's route by BGP: BIRD 2 on
// the gateway and the router, GoBGP in every agent (node-to-node mesh on),
// then shows what BIRD learned and calyxctl node status.
func demoBGP(r *runner, l *Lab, m *MultiHost, g *Gateway) bool {
	var fab *FabricBGP
	if !r.step("start BIRD 2 on the gateway and the router (AS 65000), one session per host", func() error {
		var err error
		fab, err = l.StartFabricBGP(FabricBGPOptions{})
		return err
	}) {
		return false
	}
	docs := []string{BGPConfigurationYAML(DefaultNodeAS, true),
		BGPPeer{Name: "gateway", PeerIP: g.Address.Addr(), AS: DefaultFabricAS}.YAML()}
	for _, h := range m.Hosts() {
		if leg, err := m.Router.Leg(h.Segment.Name); err == nil {
			docs = append(docs, BGPPeer{Name: "router-" + h.Name, PeerIP: leg.Address.Addr(), AS: DefaultFabricAS, Node: h.Name}.YAML())
		}
	}
	model := JoinYAML(docs...)
	r.print("model (calyxctl apply -f -): BGP with the mesh, the gateway for every node, the router per node", model)
	if !r.step("calyxctl apply", func() error {
		o, err := l.Apply("", model)
		r.print("calyxctl output", o)
		return err
	}) {
		return false
	}
	fipRoute := DemoFloatingIP + "/32"
	if !r.step(fmt.Sprintf("the gateway learns %s via host-a (%s) by BGP: no static route", fipRoute, m.HostA.Underlay.Addr()), func() error {
		if _, err := fab.Gateway.WaitRoute(fipRoute, m.HostA.Underlay.Addr().String(), 30*time.Second); err != nil {
			return err
		}
		out, err := fab.Gateway.Birdc("show", "route")
		r.print("birdc show route (on the gateway)", out)
		return err
	}) {
		return false
	}
	demoCtl(l, r, m.HostA, "node", "status")
	return true
}

// demoPolicyYAML labels wa app=web and lets only wb reach it, on TCP 7007
// and ping.
func demoPolicyYAML(wa, wb *Workload) string {
	return LabeledEndpointYAML(wa, map[string]string{"app": "web"}) + fmt.Sprintf(`---
apiVersion: calyx.io/v1
kind: NetworkPolicy
metadata:
  name: web-ingress
spec:
  selector: app == "web"
  ingress:
  - action: Allow
    protocol: TCP
    source:
      nets: [%s/32]
    destination:
      ports: [7007]
  - action: Allow
    protocol: ICMP
    source:
      nets: [%s/32]
`, wb.IP, wb.IP)
}

func demoPolicy(r *runner, l *Lab, m *MultiHost) {
	r.section("three hosts: network policy")
	model := demoPolicyYAML(m.WA, m.WB)
	r.print("model (calyxctl apply -f -)", model)
	if !r.step("calyxctl apply", func() error {
		o, err := l.Apply("", model)
		r.print("calyxctl output", o)
		return err
	}) {
		return
	}
	r.step(fmt.Sprintf("wc -> wa (%s) ping: denied by wa's ingress policy", m.WA.IP), func() error {
		return l.WaitNoPing(m.WC.NS, m.WA.IP.String(), 10*time.Second)
	})
	r.step(fmt.Sprintf("wb -> wa (%s) ping: allowed, and its replies pass", m.WA.IP), func() error {
		st, err := l.Ping(m.WB.NS, m.WA.IP.String(), 3)
		r.print("ping", st.Output)
		return err
	})
	r.step("wa -> wb ping: a new flow the other way, no policy on wb: allowed", func() error {
		_, err := l.Ping(m.WA.NS, m.WB.IP.String(), 1)
		return err
	})
	demoCtl(l, r, m.HostA, "policy", "dump", m.WA.Name)
	r.step("calyxctl delete networkpolicy web-ingress", func() error {
		_, _, err := l.Calyxctl("", "delete", "networkpolicy", "web-ingress")
		return err
	})
}

// demoSubnet is the demo's Subnet: the gateway 10.65.0.1 stands for the
// local host, and instances are told a DNS server, a host route and the
// workload MTU.
const demoSubnet = `apiVersion: calyx.io/v1
kind: Subnet
metadata:
  name: demo-v4
spec:
  cidr: 10.65.0.0/24
  gatewayIP: 10.65.0.1
  dnsNameservers: [10.65.0.53]
  leaseSeconds: 3600
`

// demoDHCP boots a VM with no address on h, applies its endpoint and the
// Subnet, runs Debian's DHCP client in it and shows what it got and what
// calyxctl says of the lease.
func demoDHCP(l *Lab, r *runner, h *Host) error {
	vm, err := l.PlanWorkloadKind(h.Name, "vm2", "10.65.0.6", "", KindVM)
	if err != nil {
		return err
	}
	vm.DHCP = true
	if err := l.CreateWorkload(vm); err != nil {
		return err
	}
	addrs, err := l.Exec(vm.NS, "ip", "-4", "addr", "show", "dev", "eth0")
	r.print("vm2 before: ip -4 addr show dev eth0 (no address)", addrs.Combined())
	if err != nil {
		return err
	}
	model := JoinYAML(EndpointYAML(vm), demoSubnet)
	r.print("calyxctl apply -f -", model)
	if out, err := l.Apply(h.Name, model); err != nil {
		r.print("calyxctl output", out)
		return err
	}
	if err := l.WaitLinks(h.Name, 20*time.Second, vm.HostIface); err != nil {
		return err
	}
	if out, err := l.DHClient(vm, "", false); err != nil {
		r.print("dhclient", out)
		return err
	}
	for _, c := range [][]string{{"ip", "-4", "addr", "show", "dev", "eth0"}, {"ip", "route"}} {
		res, err := l.Exec(vm.NS, c...)
		r.print("vm2 after: "+strings.Join(c, " "), res.Combined())
		if err != nil {
			return err
		}
	}
	rc, err := l.ReadResolvConf(vm)
	if err != nil {
		return err
	}
	r.print("vm2's resolv.conf", rc)
	st, err := l.Ping(vm.NS, "10.65.0.2", 2)
	r.print("ping w1 from vm2", st.Output)
	if err != nil {
		return err
	}
	demoCtl(l, r, h, "dhcp", "leases")
	return nil
}
