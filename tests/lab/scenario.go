package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
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

// runner prints sections and steps and remembers which steps failed. Once
// the run is interrupted (ctx cancelled) it prints and runs nothing more.
type runner struct {
	ctx         context.Context
	out         io.Writer
	failed      []string
	interrupted bool
}

func (r *runner) section(title string) {
	if r.stopped() {
		return
	}
	fmt.Fprintf(r.out, "\n==== %s %s\n", title, strings.Repeat("=", max(0, 70-len(title))))
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
		fmt.Fprintf(r.out, "FAIL  %s: %v\n", name, err)
		r.failed = append(r.failed, name)
		return false
	}
	fmt.Fprintf(r.out, "ok    %s\n", name)
	return true
}

func (r *runner) print(label, text string) {
	fmt.Fprintf(r.out, "--- %s\n%s\n", label, strings.TrimRight(text, "\n"))
}

// Demo builds the standard topology, starts the agent, applies the model and
// shows the dataplane working: pings, a TCP transfer, a spoofed packet being
// dropped and counted, and calyxctl's view of the maps. It removes
// everything before returning, also when interrupted through ctx. The error
// lists the steps that failed.
func Demo(ctx context.Context, opts Options, out io.Writer) (err error) {
	opts.Context = ctx
	r := &runner{ctx: ctx, out: out}

	r.section("1. topology")
	l, err := New(opts)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintf(out, "\n==== 9. cleanup %s\n", strings.Repeat("=", 60))
		if cerr := l.Close(); cerr != nil {
			fmt.Fprintf(out, "FAIL  cleanup: %v\n", cerr)
			err = errors.Join(err, cerr)
			return
		}
		fmt.Fprintf(out, "ok    removed namespaces, bpffs and %s\n", l.Dir)
	}()
	fmt.Fprintf(out, "lab prefix %s, state in %s, binaries from %s\n", l.Prefix, l.Dir, l.BinDir)
	var h *Host
	var ws []*Workload
	if !r.step("build host-a with workloads w1, w2, w3", func() error {
		var err error
		h, ws, err = BuildStandard(l)
		return err
	}) {
		return r.result()
	}
	fmt.Fprintf(out, "host    %-8s ns %-16s eth0 %s\n", h.Name, h.NS, h.Underlay)
	for _, w := range ws {
		mac := w.MAC.String()
		if w.OmitMAC {
			mac += " (not in the model)"
		}
		fmt.Fprintf(out, "workload %-7s ns %-16s eth0 %s/32 %s, host side %s\n", w.Name, w.NS, w.IP, mac, w.HostIface)
	}

	r.section("2. agent")
	if !r.step("start calyx-agent in "+h.NS, func() error { return l.StartAgent(h.Name) }) {
		return r.result()
	}
	fmt.Fprintf(out, "agent log: %s\n", l.AgentLogPath(h.Name))

	r.section("3. model")
	model := l.ModelYAML()
	r.print("model (calyxctl apply -f -)", model)
	if !r.step("calyxctl apply", func() error {
		o, err := l.Apply(h.Name, model)
		r.print("calyxctl output", o)
		return err
	}) {
		return r.result()
	}
	ifaces := make([]string, 0, len(ws))
	for _, w := range ws {
		ifaces = append(ifaces, w.HostIface)
	}
	r.step("programs attached to "+strings.Join(ifaces, ", "), func() error {
		return l.WaitLinks(h.Name, 20*time.Second, ifaces...)
	})

	r.section("4. ping between workloads")
	for _, p := range [][2]*Workload{{ws[0], ws[1]}, {ws[1], ws[2]}, {ws[2], ws[0]}} {
		src, dst := p[0], p[1]
		r.step(fmt.Sprintf("ping %s -> %s (%s)", src.Name, dst.Name, dst.IP), func() error {
			if err := l.WaitPing(src.NS, dst.IP.String(), 10*time.Second); err != nil {
				return err
			}
			st, err := l.Ping(src.NS, dst.IP.String(), 3)
			r.print("ping", st.Output)
			return err
		})
	}
	r.step(fmt.Sprintf("ping host-a -> w1 (%s)", ws[0].IP), func() error {
		st, err := l.Ping(h.NS, ws[0].IP.String(), 3)
		r.print("ping", st.Output)
		return err
	})

	r.section("5. TCP transfer w1 -> w2")
	r.step("100 MB over TCP", func() error { return demoTransfer(l, r, ws[0], ws[1]) })

	r.section("6. spoofed source address is dropped")
	r.step("ping from an address w1's endpoint does not own", func() error { return demoSpoof(l, r, h, ws[0], ws[1]) })

	r.section("7. calyxctl view")
	for _, args := range [][]string{{"endpoints", "dump"}, {"routes", "dump"}, {"links"}} {
		r.step("calyxctl "+strings.Join(args, " "), func() error {
			o, e, err := l.Calyxctl(h.Name, args...)
			r.print("calyxctl "+strings.Join(args, " "), o+e)
			return err
		})
	}

	r.section("8. kernel routes in " + h.NS)
	r.step("ip route", func() error {
		res, err := l.Exec(h.NS, "ip", "route")
		r.print("ip route", res.Combined())
		return err
	})
	return r.result()
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
	res, err := l.ExecTimeout(60*time.Second, src.NS, "iperf3", "-c", dst.IP.String(), "-n", "100M", "-J")
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
	if err := l.ip(w.NS, "addr", "add", spoofed+"/32", "dev", "eth0"); err != nil {
		return err
	}
	defer l.ip(w.NS, "addr", "del", spoofed+"/32", "dev", "eth0")
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
	fail := func(err error) (*Lab, error) { return nil, errors.Join(err, l.Close()) }
	h, ws, err := BuildStandard(l)
	if err != nil {
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
		fmt.Fprintf(out, "workload %s: namespace %s, %s, host side %s\n", w.Name, w.NS, w.IP, w.HostIface)
	}
	fmt.Fprintf(out, "\ntry:\n  ip netns exec %s ping -c 3 %s\n", ws[0].NS, ws[1].IP)
	fmt.Fprintf(out, "  ip netns exec %s bash\n", h.NS)
	fmt.Fprintf(out, "  %s counters dump\n", strings.Join(ctl, " "))
	fmt.Fprintf(out, "\nremove it with:\n  calyx-lab destroy %s\n", l.Prefix)
	return l, nil
}
