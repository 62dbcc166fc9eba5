package lab

import (
	"fmt"
	"strings"
)

// The lab renders resources as text rather than through model/, so that it
// exercises calyxctl's parser exactly as an operator's file would.

// PoolYAML renders an IPPool with the given name and CIDR and defaults for
// everything else.
func PoolYAML(name, cidr string) string {
	return fmt.Sprintf(`apiVersion: calyx.io/v1
kind: IPPool
metadata:
  name: %s
spec:
  cidr: %s
`, name, cidr)
}

// NodeYAML renders the Node resource for h.
func NodeYAML(h *Host) string {
	return fmt.Sprintf(`apiVersion: calyx.io/v1
kind: Node
metadata:
  name: %s
spec:
  ipv4Address: %s
`, h.Name, h.Underlay)
}

// EndpointYAML renders the WorkloadEndpoint for w; spec.mac is left out when
// w.OmitMAC is set.
func EndpointYAML(w *Workload) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: calyx.io/v1
kind: WorkloadEndpoint
metadata:
  name: %s
spec:
  node: %s
  interface: %s
`, w.Name, w.Host, w.HostIface)
	if !w.OmitMAC {
		// Quoted: an all-digit MAC would otherwise read as a YAML 1.1
		// sexagesimal number.
		fmt.Fprintf(&b, "  mac: %q\n", w.MAC.String())
	}
	fmt.Fprintf(&b, "  ipNetworks:\n  - %s/32\n", w.IP)
	if w.IPv6.IsValid() {
		fmt.Fprintf(&b, "  - %s/128\n", w.IPv6)
	}
	return b.String()
}

// JoinYAML joins documents into one multi-document stream.
func JoinYAML(docs ...string) string {
	var parts []string
	for _, d := range docs {
		if d = strings.TrimSpace(d); d != "" {
			parts = append(parts, d+"\n")
		}
	}
	return strings.Join(parts, "---\n")
}

// ModelYAML renders the lab's whole model: the workload pool (WorkloadPool,
// named "lab-pool"), a Node per host and a WorkloadEndpoint per workload,
// planned or created.
func (l *Lab) ModelYAML() string {
	docs := []string{PoolYAML("lab-pool", WorkloadPool)}
	for _, h := range l.Hosts() {
		docs = append(docs, NodeYAML(h))
	}
	for _, w := range l.Workloads() {
		docs = append(docs, EndpointYAML(w))
	}
	return JoinYAML(docs...)
}
