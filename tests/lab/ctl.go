package lab

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
)

// Endpoint is one row of "calyxctl endpoints dump -o json".
type Endpoint struct {
	Name      string   `json:"name"`
	Interface string   `json:"interface"`
	Ifindex   int      `json:"ifindex"`
	IPs       []string `json:"ips"`
	MAC       string   `json:"mac"`
}

// Route is one row of "calyxctl routes dump -o json".
type Route struct {
	CIDR string `json:"cidr"`
	// Type is "local-workload", "remote-workload", "host" or "node".
	Type      string `json:"type"`
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	NextHop   string `json:"nextHop"`
	// Node is the node a remote route leads to.
	Node string `json:"node"`
	// Encap is how traffic on the route leaves the host: EncapIPIP,
	// EncapVXLAN or EncapNone.
	Encap string `json:"encap"`
	// MAC is a local workload's MAC.
	MAC string `json:"mac"`
}

// NodeStatus is the one object of "calyxctl node status -o json": the
// agent's view of its own node.
type NodeStatus struct {
	Node string `json:"node"`
	// Underlay is the underlay interface name, Ifindex its index and
	// Address the node's underlay address.
	Underlay string `json:"underlay"`
	Ifindex  int    `json:"ifindex"`
	Address  string `json:"address"`
	// UnderlayMTU is the underlay interface's MTU; WorkloadMTU what
	// workloads should use with the encapsulations in use.
	UnderlayMTU int `json:"underlayMTU"`
	WorkloadMTU int `json:"workloadMTU"`
	// Encap is a comma-separated list of the encapsulations the node's
	// routes use, e.g. "vxlan", or "none,vxlan" in a CrossSubnet mode
	// with peers on both sides.
	Encap string `json:"encap"`
	// Peers is the number of other nodes the agent routes to.
	Peers     int    `json:"peers"`
	VXLANPort int    `json:"vxlanPort"`
	VXLANVNI  uint32 `json:"vxlanVNI"`
}

// Counter reasons of the multi-host paths ("calyxctl counters dump").
const (
	ReasonEncapIPIP      = "encap-ipip"
	ReasonEncapVXLAN     = "encap-vxlan"
	ReasonForwardDirect  = "forward-direct"
	ReasonDecapIPIP      = "decap-ipip"
	ReasonDecapVXLAN     = "decap-vxlan"
	ReasonICMPFragNeeded = "icmp-frag-needed"
	ReasonDropTunnelSrc  = "drop-tunnel-src"
	ReasonDropTunnelDst  = "drop-tunnel-dst"
	ReasonDropTunnelVNI  = "drop-tunnel-vni"
	ReasonDropNoRoute    = "drop-no-route"
	ReasonDropTooBig     = "drop-too-big"
	ReasonDropFIB        = "drop-fib"
)

// Counter is one row of "calyxctl counters dump -o json".
type Counter struct {
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	Reason    string `json:"reason"`
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
}

// Link is one row of "calyxctl links -o json".
type Link struct {
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	Hook      string `json:"hook"`
	Mode      string `json:"mode"`
	Program   string `json:"program"`
	ProgramID uint32 `json:"programID"`
	// Attached says the kernel runs ProgramID on the hook (not just that
	// the agent recorded it).
	Attached bool `json:"attached"`
}

// CtlArgs returns calyxctl's command line with the lab's datastore and the
// host's bpffs directory (the lab's bpffs root when host is "").
func (l *Lab) CtlArgs(host string, args ...string) ([]string, error) {
	bpffs := l.BPFFS
	if host != "" {
		h, err := l.Host(host)
		if err != nil {
			return nil, err
		}
		bpffs = h.BPFFS
	}
	return append([]string{l.CtlBinary(), "--datastore", l.DatastoreURL(), "--bpffs", bpffs}, args...), nil
}

// Calyxctl runs calyxctl against the lab's datastore and host's bpffs,
// inside the host's namespace as an operator on that host would (the kernel
// facts it reports, such as which programs run on an ifindex, are per
// namespace); with host "" in the root namespace. Put global flags such as
// "-o json" before the verb.
func (l *Lab) Calyxctl(host string, args ...string) (stdout, stderr string, err error) {
	return l.CalyxctlInput(host, "", args...)
}

// CalyxctlInput is Calyxctl with stdin (for "apply -f -").
func (l *Lab) CalyxctlInput(host, stdin string, args ...string) (stdout, stderr string, err error) {
	full, err := l.CtlArgs(host, args...)
	if err != nil {
		return "", "", err
	}
	var ns string
	if host != "" {
		h, err := l.Host(host)
		if err != nil {
			return "", "", err
		}
		ns = h.NS
	}
	res, err := l.Run(Command{NS: ns, Args: full, Stdin: stdin})
	return res.Stdout, res.Stderr, err
}

// CalyxctlJSON runs calyxctl with "-o json" and decodes stdout into v.
func (l *Lab) CalyxctlJSON(host string, v any, args ...string) error {
	out, _, err := l.Calyxctl(host, append([]string{"-o", "json"}, args...)...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("calyxctl %s: decode JSON: %w: %s", strings.Join(args, " "), err, tail(out, 10))
	}
	return nil
}

// Apply feeds yaml to "calyxctl apply -f -" and returns its combined
// output.
func (l *Lab) Apply(host, yaml string) (string, error) {
	out, errOut, err := l.CalyxctlInput(host, yaml, "apply", "-f", "-")
	return out + errOut, err
}

// Delete feeds yaml to "calyxctl delete -f -".
func (l *Lab) Delete(host, yaml string) (string, error) {
	out, errOut, err := l.CalyxctlInput(host, yaml, "delete", "-f", "-")
	return out + errOut, err
}

// Endpoints returns "calyxctl endpoints dump" for host.
func (l *Lab) Endpoints(host string) ([]Endpoint, error) {
	var v []Endpoint
	return v, l.CalyxctlJSON(host, &v, "endpoints", "dump")
}

// Routes returns "calyxctl routes dump" for host.
func (l *Lab) Routes(host string) ([]Route, error) {
	var v []Route
	return v, l.CalyxctlJSON(host, &v, "routes", "dump")
}

// NodeStatus returns "calyxctl node status" for host.
func (l *Lab) NodeStatus(host string) (NodeStatus, error) {
	var v []NodeStatus
	if err := l.CalyxctlJSON(host, &v, "node", "status"); err != nil {
		return NodeStatus{}, err
	}
	if len(v) != 1 {
		return NodeStatus{}, fmt.Errorf("calyxctl node status on %s: got %d objects, want 1", host, len(v))
	}
	return v[0], nil
}

// RouteFor returns the row of routes the BPF route lookup would pick for
// addr: the longest CIDR containing it. Remote workloads may be covered by
// a block route rather than a /32, so tests should not look rows up by
// exact CIDR.
func RouteFor(routes []Route, addr netip.Addr) (Route, bool) {
	best, bits := Route{}, -1
	for _, r := range routes {
		p, err := netip.ParsePrefix(r.CIDR)
		if err != nil {
			continue
		}
		if p.Contains(addr) && p.Bits() > bits {
			best, bits = r, p.Bits()
		}
	}
	return best, bits >= 0
}

// CounterTotal sums the packets of every row with reason, on any interface.
func CounterTotal(rows []Counter, reason string) uint64 {
	var n uint64
	for _, r := range rows {
		if r.Reason == reason {
			n += r.Packets
		}
	}
	return n
}

// Counters returns "calyxctl counters dump" for host.
func (l *Lab) Counters(host string) ([]Counter, error) {
	var v []Counter
	return v, l.CalyxctlJSON(host, &v, "counters", "dump")
}

// Links returns "calyxctl links" for host.
func (l *Lab) Links(host string) ([]Link, error) {
	var v []Link
	return v, l.CalyxctlJSON(host, &v, "links")
}

// CounterPackets sums the packets of rows for iface and reason.
func CounterPackets(rows []Counter, iface, reason string) uint64 {
	var n uint64
	for _, r := range rows {
		if r.Interface == iface && r.Reason == reason {
			n += r.Packets
		}
	}
	return n
}

// LinksFor returns the rows of links that are on iface.
func LinksFor(links []Link, iface string) []Link {
	var out []Link
	for _, k := range links {
		if k.Interface == iface {
			out = append(out, k)
		}
	}
	return out
}
