package e2e

// End-to-end test of issue 5: NetworkPolicy enforced by the BPF programs
// between workloads on the same host and on other hosts (direct and VXLAN),
// by label selector, by CIDR and by port range, for TCP, UDP and ICMP;
// replies of allowed flows pass while a new flow the other way is denied;
// a policy change applies to new flows only; calyxctl policy dump shows
// the rules in order with their hits.

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
)

// webPolicy lets clients reach role=web on TCP 7000-7005 and ICMP, and
// one address (wc's) on UDP 7000. withTCP false leaves the TCP rule out.
func webPolicy(wc netip.Addr, withTCP bool) string {
	tcp := `  - action: Allow
    protocol: TCP
    source:
      selector: role == "client"
    destination:
      ports: ["7000:7005"]
`
	if !withTCP {
		tcp = ""
	}
	return fmt.Sprintf(`apiVersion: calyx.io/v1
kind: NetworkPolicy
metadata:
  name: web-ingress
spec:
  order: 10
  selector: role == "web"
  types: [Ingress]
  ingress:
%s  - action: Allow
    protocol: UDP
    source:
      nets: [%s/32]
    destination:
      ports: [7000]
  - action: Allow
    protocol: ICMP
    source:
      selector: role in {"client"}
`, tcp, wc)
}

// webPolicy6 is webPolicy for IPv6: wc's /128 on UDP 7000, ICMPv6.
func webPolicy6(wc netip.Addr, withTCP bool) string {
	return strings.ReplaceAll(strings.ReplaceAll(webPolicy(wc, withTCP), "/32]", "/128]"),
		"protocol: ICMP\n", "protocol: ICMPv6\n")
}

const lockdownPolicies = `apiVersion: calyx.io/v1
kind: NetworkPolicy
metadata:
  name: clients-closed
spec:
  order: 20
  selector: role == "client"
  types: [Ingress]
---
apiVersion: calyx.io/v1
kind: NetworkPolicy
metadata:
  name: other-egress
spec:
  selector: role == "other"
  egress:
  - action: Allow
    protocol: UDP
    destination:
      ports: [7000]
`

// probes try traffic between workloads over one family (IPv6 when v6)
// while policies change: works and fails retry until trafficTimeout.
type probes struct {
	t  *testing.T
	l  *lab.Lab
	v6 bool
}

// addr is w's address of the family with port, as a dial string.
func (p probes) addr(w *lab.Workload, port int) string {
	a := w.IP
	if p.v6 {
		a = w.IPv6
	}
	return netip.AddrPortFrom(a, uint16(port)).String()
}

func (p probes) works(what string, fn func() error) {
	p.t.Helper()
	if err := lab.Eventually(trafficTimeout, 200*time.Millisecond, fn); err != nil {
		p.t.Errorf("%s: must work: %v", what, err)
	}
}

func (p probes) fails(what string, fn func() error) {
	p.t.Helper()
	if err := lab.Eventually(trafficTimeout, 200*time.Millisecond, func() error {
		if fn() == nil {
			return fmt.Errorf("still works")
		}
		return nil
	}); err != nil {
		p.t.Errorf("%s: must be denied: %v", what, err)
	}
}

func (p probes) tcp(from, to *lab.Workload, port int) func() error {
	return func() error { _, err := lab.TCPEcho(from.NS, p.addr(to, port), noReplyTimeout); return err }
}

func (p probes) udp(from, to *lab.Workload, port int) func() error {
	return func() error { _, err := lab.UDPEcho(from.NS, p.addr(to, port), noReplyTimeout); return err }
}

func (p probes) ping(from, to *lab.Workload) func() error {
	a := to.IP
	if p.v6 {
		a = to.IPv6
	}
	return func() error { _, err := p.l.Ping(from.NS, a.String(), 1); return err }
}

// heldAcrossPolicyChange opens a TCP connection from one workload to
// another's port, applies policy (which takes away the rule that allowed
// it), and checks that new connections are denied while the established
// one keeps going: a policy change applies to new flows.
func (p probes) heldAcrossPolicyChange(from, to *lab.Workload, port int, policy string) {
	p.t.Helper()
	held, err := lab.DialEcho(from.NS, p.addr(to, port), echoTimeout)
	if err != nil {
		p.t.Fatal(err)
	}
	defer held.Close()
	if _, err := held.Exchange("before", echoTimeout); err != nil {
		p.t.Fatal(err)
	}
	if out, err := p.l.Apply("", policy); err != nil {
		p.t.Fatalf("apply changed policy: %v\n%s", err, out)
	}
	p.fails(fmt.Sprintf("%s -> %s TCP %d once the rule is gone (new connection)", from.Name, to.Name, port), p.tcp(from, to, port))
	if _, err := held.Exchange("after", echoTimeout); err != nil {
		p.t.Errorf("the established connection broke when its rule went: %v", err)
	}
}

// policyRow is calyxctl policy dump's JSON.
type policyRow struct {
	Endpoint  string `json:"endpoint"`
	Direction string `json:"direction"`
	Position  int    `json:"position"`
	Policy    string `json:"policy"`
	Index     int    `json:"index"`
	Action    string `json:"action"`
	Match     string `json:"match"`
	Packets   uint64 `json:"packets"`
}

func TestNetworkPolicy(t *testing.T) {
	l := newLab(t)
	m, err := lab.BuildMultiHost(l, lab.ModeVXLANCrossSubnet)
	if err != nil {
		t.Fatalf("build three hosts: %v", err)
	}
	// wa2 is wa's neighbour on host-a.
	wa2, err := m.AddWorkload(m.HostA.Name, "wa2", "10.65.1.3", 0)
	if err != nil {
		t.Fatal(err)
	}
	wa, wb, wc := m.WA, m.WB, m.WC
	if err := m.StartAgents(); err != nil {
		t.Fatalf("start agents: %v", err)
	}
	docs := []string{m.PoolYAML(m.Mode)}
	for _, h := range m.Hosts() {
		docs = append(docs, lab.NodeYAML(h))
	}
	docs = append(docs,
		lab.LabeledEndpointYAML(wa, map[string]string{"role": "web"}),
		lab.LabeledEndpointYAML(wa2, map[string]string{"role": "client"}),
		lab.LabeledEndpointYAML(wb, map[string]string{"role": "client"}),
		lab.LabeledEndpointYAML(wc, map[string]string{"role": "other"}))
	if out, err := l.Apply("", lab.JoinYAML(docs...)); err != nil {
		t.Fatalf("apply model: %v\n%s", err, out)
	}
	if err := m.WaitLinks(attachTimeout); err != nil {
		t.Fatalf("programs not attached: %v", err)
	}
	for _, w := range []*lab.Workload{wa, wa2, wb, wc} {
		for _, port := range []int{7000, 8080} {
			if _, err := l.StartEcho(w.NS, fmt.Sprintf("%s-%d", w.Name, port), fmt.Sprintf("0.0.0.0:%d", port)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, w := range []*lab.Workload{wa2, wb, wc} {
		if err := l.WaitPing(w.NS, wa.IP.String(), trafficTimeout); err != nil {
			t.Fatalf("%s -> wa before any policy: %v", w.Name, err)
		}
	}

	if out, err := l.Apply("", lab.JoinYAML(webPolicy(wc.IP, true), lockdownPolicies)); err != nil {
		t.Fatalf("apply policies: %v\n%s", err, out)
	}
	p := probes{t: t, l: l}
	works, fails, tcp, udp, ping := p.works, p.fails, p.tcp, p.udp, p.ping

	// Denials first: once they hold, every host has the policies, and
	// what works below works because a rule allows it.
	fails("wb -> wa TCP 8080 (outside 7000:7005)", tcp(wb, wa, 8080))
	fails("wa -> wb TCP 7000 (new flow the other way)", tcp(wa, wb, 7000))
	fails("wc -> wb TCP 8080 (wc's egress)", tcp(wc, wb, 8080))
	// By label selector and port range, same host and other host.
	works("wa2 -> wa TCP 7000 (same host, client)", tcp(wa2, wa, 7000))
	works("wb -> wa TCP 7000 (other host, client)", tcp(wb, wa, 7000))
	fails("wc -> wa TCP 7000 (not a client)", tcp(wc, wa, 7000))
	// By CIDR: only wc's address on UDP 7000, over VXLAN.
	works("wc -> wa UDP 7000 (its /32)", udp(wc, wa, 7000))
	fails("wb -> wa UDP 7000 (not in nets)", udp(wb, wa, 7000))
	// ICMP by selector.
	works("wb -> wa ping (client)", ping(wb, wa))
	fails("wc -> wa ping (not a client)", ping(wc, wa))
	// Replies of allowed flows passed above (every exchange is answered);
	// a new flow the other way hits the clients' ingress default deny.
	fails("wa -> wa2 ping (new flow the other way, same host)", ping(wa, wa2))

	dump := func(host, ep string) []policyRow {
		t.Helper()
		var rows []policyRow
		if err := l.CalyxctlJSON(host, &rows, "policy", "dump", ep); err != nil {
			t.Fatalf("policy dump %s: %v", ep, err)
		}
		return rows
	}
	rows := dump(m.HostA.Name, wa.Name)
	var order []string
	for _, r := range rows {
		order = append(order, fmt.Sprintf("%s %s %s[%d] %s (%d hits)", r.Direction, r.Action, r.Policy, r.Index, r.Match, r.Packets))
	}
	want := []string{"ingress allow web-ingress[0]", "ingress allow web-ingress[1]", "ingress allow web-ingress[2]",
		"ingress deny (default)[-1]", "egress allow (none)[-1]"}
	if len(rows) != len(want) {
		t.Fatalf("policy dump wa: %d rows, want %d:\n%s", len(rows), len(want), strings.Join(order, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(order[i], w) {
			t.Errorf("policy dump wa row %d: %q, want %q...", i, order[i], w)
		}
	}
	if rows[0].Packets == 0 || rows[1].Packets == 0 || rows[3].Packets == 0 {
		t.Errorf("policy dump wa: hits missing on the TCP, UDP or default-deny rows:\n%s", strings.Join(order, "\n"))
	}
	if !strings.Contains(rows[0].Match, `role == "client"`) || !strings.Contains(rows[0].Match, "7000:7005") {
		t.Errorf("policy dump wa rule 0 reads %q; want its selector and port range", rows[0].Match)
	}
	wcRows := dump(m.HostC.Name, wc.Name)
	last := wcRows[len(wcRows)-1]
	if last.Direction != "egress" || last.Action != "deny" || last.Packets == 0 {
		t.Errorf("policy dump wc: egress default deny %+v, want hits from the denied TCP", last)
	}
	counters, err := l.Counters(m.HostC.Name)
	if err != nil {
		t.Fatal(err)
	}
	if lab.CounterTotal(counters, "drop-policy") == 0 {
		t.Errorf("host-c counted no drop-policy")
	}

	// A policy change applies to new flows: an established connection
	// keeps going when the rule that allowed it goes.
	p.heldAcrossPolicyChange(wb, wa, 7000, webPolicy(wc.IP, false))
	works("wc -> wa UDP 7000 still allowed", udp(wc, wa, 7000))

	// Deleting every policy opens everything again.
	if out, err := l.Delete("", lab.JoinYAML(webPolicy(wc.IP, false), lockdownPolicies)); err != nil {
		t.Fatalf("delete policies: %v\n%s", err, out)
	}
	works("wa -> wb TCP 7000 without policies", tcp(wa, wb, 7000))
	works("wc -> wa TCP 8080 without policies", tcp(wc, wa, 8080))
}

// The host prefilter: a source in Config.prefilterDeny reaches neither a
// host nor its workloads. On the lab's veth underlay it runs at TC (--xdp
// auto); restarted with --xdp native the same veth gets the XDP program
// (veth has driver-mode XDP), and the drops are counted there.
func TestPrefilter(t *testing.T) {
	l := newLab(t)
	m, err := lab.BuildMultiHost(l, lab.ModeVXLANCrossSubnet)
	if err != nil {
		t.Fatalf("build three hosts: %v", err)
	}
	if err := m.StartAgents(); err != nil {
		t.Fatalf("start agents: %v", err)
	}
	if out, err := m.Apply(); err != nil {
		t.Fatalf("apply model: %v\n%s", err, out)
	}
	if err := m.WaitLinks(attachTimeout); err != nil {
		t.Fatalf("programs not attached: %v", err)
	}
	rt := m.Router.Legs[0] // the router's leg on host-a's segment
	src := rt.Address.Addr().String()
	hostA := m.HostA.Underlay.Addr().String()
	if err := l.WaitPing(m.Router.NS, hostA, trafficTimeout); err != nil {
		t.Fatalf("router -> host-a before the prefilter: %v", err)
	}
	if err := l.WaitPing(m.HostB.NS, hostA, trafficTimeout); err != nil {
		t.Fatalf("host-b -> host-a: %v", err)
	}
	cfg := fmt.Sprintf(`apiVersion: calyx.io/v1
kind: Config
metadata:
  name: default
spec:
  prefilterDeny: [%s/32, 192.0.2.0/24]
`, src)
	if out, err := l.Apply("", cfg); err != nil {
		t.Fatalf("apply prefilter: %v\n%s", err, out)
	}
	drops := func() uint64 {
		t.Helper()
		c, err := l.Counters(m.HostA.Name)
		if err != nil {
			t.Fatal(err)
		}
		return lab.CounterPackets(c, "eth0", "drop-prefilter")
	}
	if err := l.WaitNoPing(m.Router.NS, hostA, trafficTimeout); err != nil {
		t.Fatalf("router -> host-a with its address in prefilterDeny (TC): %v", err)
	}
	if drops() == 0 {
		t.Errorf("host-a eth0 counted no drop-prefilter (TC)")
	}
	if _, err := l.Ping(m.HostB.NS, hostA, 3); err != nil {
		t.Errorf("host-b -> host-a broke: %v", err)
	}
	if _, err := l.Ping(m.WB.NS, m.WA.IP.String(), 3); err != nil {
		t.Errorf("wb -> wa broke: %v", err)
	}

	if err := l.StopAgent(m.HostA.Name); err != nil {
		t.Fatal(err)
	}
	if err := l.StartAgent(m.HostA.Name, "--xdp", "native"); err != nil {
		t.Fatalf("restart host-a's agent with --xdp native: %v", err)
	}
	if err := lab.Eventually(attachTimeout, 200*time.Millisecond, func() error {
		res, err := l.Exec(m.HostA.NS, "ip", "-d", "link", "show", "eth0")
		if err != nil {
			return err
		}
		if !strings.Contains(res.Stdout, "xdp") {
			return fmt.Errorf("no XDP program on eth0:\n%s", res.Stdout)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	before := drops()
	if st, err := l.Ping(m.Router.NS, hostA, 3); err == nil || st.Received != 0 {
		t.Errorf("router -> host-a with XDP: %d/%d answered, want none (err %v)", st.Received, st.Transmitted, err)
	}
	if drops() < before+3 {
		t.Errorf("XDP counted %d drop-prefilter on eth0, want at least 3", drops()-before)
	}
	if _, err := l.Ping(m.WB.NS, m.WA.IP.String(), 3); err != nil {
		t.Errorf("wb -> wa with XDP on host-a: %v", err)
	}
}

// TestNetworkPolicyIPv6: one policy, dual-stack workloads on one host:
// the same rules hold for IPv6 as for IPv4 (selectors, ports, nets by
// /128, ICMPv6), replies of allowed flows pass as replies and new flows
// the other way are denied, and an established IPv6 connection outlives
// the rule that allowed it. IPv6 is conntracked like IPv4 (calyxctl ct
// dump shows the flows).
func TestNetworkPolicyIPv6(t *testing.T) {
	l := newLab(t)
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Exec(h.NS, "ip", "-6", "addr", "add", "fd00:30::11/64", "dev", h.UnderlayIface, "nodad"); err != nil {
		t.Fatal(err)
	}
	var ws []*lab.Workload
	for i, name := range []string{"wa", "wb", "wc"} {
		w, err := l.AddWorkload(h.Name, name, fmt.Sprintf("10.65.0.%d", i+2), "")
		if err != nil {
			t.Fatal(err)
		}
		if err := l.AddIPv6(w, fmt.Sprintf("fd00:65::%d", i+2)); err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	wa, wb, wc := ws[0], ws[1], ws[2]
	if err := l.StartAgent(h.Name); err != nil {
		t.Fatal(err)
	}
	model := lab.JoinYAML(lab.PoolYAML("v4", "10.65.0.0/16"), lab.PoolYAML("v6", "fd00:65::/64"), lab.NodeYAML(h),
		lab.LabeledEndpointYAML(wa, map[string]string{"role": "web"}),
		lab.LabeledEndpointYAML(wb, map[string]string{"role": "client"}),
		lab.LabeledEndpointYAML(wc, map[string]string{"role": "other"}))
	if out, err := l.Apply("", model); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if err := l.WaitLinks(h.Name, attachTimeout, wa.HostIface, wb.HostIface, wc.HostIface); err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		for _, port := range []int{7000, 8080} {
			for _, a := range []string{"0.0.0.0", "[::]"} {
				if _, err := l.StartEcho(w.NS, fmt.Sprintf("%s-%s-%d", w.Name, a, port), fmt.Sprintf("%s:%d", a, port)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for _, w := range []*lab.Workload{wb, wc} {
		if err := l.WaitPing(w.NS, wa.IPv6.String(), trafficTimeout); err != nil {
			t.Fatalf("%s -> wa over IPv6 before any policy: %v", w.Name, err)
		}
	}
	if out, err := l.Apply("", lab.JoinYAML(webPolicy6(wc.IPv6, true), lockdownPolicies)); err != nil {
		t.Fatalf("apply policies: %v\n%s", err, out)
	}

	p := probes{t: t, l: l, v6: true}
	works, fails, tcp, udp, ping := p.works, p.fails, p.tcp, p.udp, p.ping

	fails("wb -> wa TCP 8080 over IPv6 (outside 7000:7005)", tcp(wb, wa, 8080))
	fails("wa -> wb TCP 7000 over IPv6 (new flow the other way)", tcp(wa, wb, 7000))
	fails("wc -> wb TCP 8080 over IPv6 (wc's egress)", tcp(wc, wb, 8080))
	works("wb -> wa TCP 7000 over IPv6 (client)", tcp(wb, wa, 7000))
	fails("wc -> wa TCP 7000 over IPv6 (not a client)", tcp(wc, wa, 7000))
	works("wc -> wa UDP 7000 over IPv6 (its /128)", udp(wc, wa, 7000))
	fails("wb -> wa UDP 7000 over IPv6 (not in nets)", udp(wb, wa, 7000))
	works("wb -> wa ping6 (client, ICMPv6)", ping(wb, wa))
	fails("wc -> wa ping6 (not a client)", ping(wc, wa))
	fails("wa -> wb ping6 (new flow the other way)", ping(wa, wb))
	// The selector rule holds for IPv4 too: one policy, both families.
	works("wb -> wa TCP 7000 over IPv4", func() error {
		_, err := lab.TCPEcho(wb.NS, fmt.Sprintf("%s:7000", wa.IP), noReplyTimeout)
		return err
	})

	ct, _, err := l.Calyxctl(h.Name, "ct", "dump", "--proto", "tcp")
	if err != nil {
		t.Fatalf("ct dump: %v", err)
	}
	if !strings.Contains(ct, wa.IPv6.String()) {
		t.Errorf("ct dump shows no IPv6 flow of wa:\n%s", ct)
	}
	counters, err := l.Counters(h.Name)
	if err != nil {
		t.Fatal(err)
	}
	if lab.CounterTotal(counters, "drop-policy") == 0 {
		t.Errorf("no drop-policy counted")
	}

	p.heldAcrossPolicyChange(wb, wa, 7000, webPolicy6(wc.IPv6, false))
}
