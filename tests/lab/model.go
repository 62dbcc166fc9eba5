package lab

import (
	"fmt"
	"net/netip"
	"sort"
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
	s := fmt.Sprintf(`apiVersion: calyx.io/v1
kind: Node
metadata:
  name: %s
spec:
  ipv4Address: %s
`, h.Name, h.Underlay)
	if h.Underlay6.IsValid() {
		s += fmt.Sprintf("  ipv6Address: %s\n", h.Underlay6)
	}
	return s
}

// InstanceLabel is the label that groups the WorkloadEndpoints of one
// instance's NICs (see AddNIC); its value is the instance's name.
const InstanceLabel = "calyx.io/instance"

// EndpointYAML renders the WorkloadEndpoint for w; spec.mac is left out when
// w.OmitMAC is set. A NIC of an instance with several (AddNIC) carries the
// label InstanceLabel.
func EndpointYAML(w *Workload) string {
	return endpointYAML(w, nil)
}

// LabeledEndpointYAML renders the WorkloadEndpoint for w with labels (in
// sorted order), besides InstanceLabel for a NIC of an instance with several.
func LabeledEndpointYAML(w *Workload, labels map[string]string) string {
	return endpointYAML(w, labels)
}

func endpointYAML(w *Workload, extra map[string]string) string {
	labels := map[string]string{}
	if w.Instance != "" {
		labels[InstanceLabel] = w.Instance
	}
	for k, v := range extra {
		labels[k] = v
	}
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: calyx.io/v1
kind: WorkloadEndpoint
metadata:
  name: %s
`, w.Name)
	if len(labels) > 0 {
		keys := make([]string, 0, len(labels))
		for k := range labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString("  labels:\n")
		for _, k := range keys {
			fmt.Fprintf(&b, "    %s: %q\n", k, labels[k])
		}
	}
	fmt.Fprintf(&b, `spec:
  node: %s
  interface: %s
`, w.Host, w.HostIface)
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
// planned or created (one per NIC of an instance with several).
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

// Pool is an IPPool as the lab renders it (Pool.YAML). Empty modes are left
// out, so the model's defaults apply.
type Pool struct {
	Name, CIDR string
	// IPIPMode and VXLANMode are Never, Always or CrossSubnet.
	IPIPMode, VXLANMode string
	// NATOutgoing makes the pool's workloads' traffic to outside every
	// pool leave SNATed to their node's underlay address.
	NATOutgoing bool
	// External marks a pool of floating IPs (no workload takes an address
	// from it).
	External bool
	Disabled bool
	// DisableBGPExport keeps every route of the pool out of BGP.
	DisableBGPExport bool
}

// YAML renders the pool.
func (p Pool) YAML() string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: calyx.io/v1
kind: IPPool
metadata:
  name: %s
spec:
  cidr: %s
`, p.Name, p.CIDR)
	if p.IPIPMode != "" {
		fmt.Fprintf(&b, "  ipipMode: %s\n", p.IPIPMode)
	}
	if p.VXLANMode != "" {
		fmt.Fprintf(&b, "  vxlanMode: %s\n", p.VXLANMode)
	}
	if p.NATOutgoing {
		b.WriteString("  natOutgoing: true\n")
	}
	if p.External {
		b.WriteString("  external: true\n")
	}
	if p.Disabled {
		b.WriteString("  disabled: true\n")
	}
	if p.DisableBGPExport {
		b.WriteString("  disableBGPExport: true\n")
	}
	return b.String()
}

// ExternalPoolYAML renders an external IPPool (floating IPs come from it)
// with the given name and CIDR.
func ExternalPoolYAML(name, cidr string) string {
	return Pool{Name: name, CIDR: cidr, External: true}.YAML()
}

// FloatingIPYAML renders a FloatingIP mapping ip to the endpoint's first
// IPv4 address.
func FloatingIPYAML(name, ip, endpoint string) string {
	return FloatingIPFixedYAML(name, ip, endpoint, "")
}

// FloatingIPFixedYAML is FloatingIPYAML with spec.fixedIP (left out when
// empty).
func FloatingIPFixedYAML(name, ip, endpoint, fixedIP string) string {
	s := fmt.Sprintf(`apiVersion: calyx.io/v1
kind: FloatingIP
metadata:
  name: %s
spec:
  ip: %s
  endpoint: %s
`, name, ip, endpoint)
	if fixedIP != "" {
		s += "  fixedIP: " + fixedIP + "\n"
	}
	return s
}

// MetadataConfigYAML renders the Config "default" with
// spec.metadataAddress (e.g. "127.0.0.1:8775").
func MetadataConfigYAML(metadataAddress string) string {
	return fmt.Sprintf(`apiVersion: calyx.io/v1
kind: Config
metadata:
  name: default
spec:
  metadataAddress: %q
`, metadataAddress)
}

// BGPConfigurationYAML renders the BGPConfiguration "default" with the
// node-to-node mesh on or off.
func BGPConfigurationYAML(as uint32, mesh bool) string {
	return fmt.Sprintf("apiVersion: calyx.io/v1\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  asNumber: %d\n  nodeToNodeMeshEnabled: %v\n", as, mesh)
}

// BGPPeer is a BGPPeer resource: with Node empty it is global (every node
// peers with it).
type BGPPeer struct {
	Name   string
	PeerIP netip.Addr
	AS     uint32
	Node   string
	// Password is the TCP MD5 password (a literal).
	Password string
}

// YAML renders the peer.
func (p BGPPeer) YAML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: calyx.io/v1\nkind: BGPPeer\nmetadata:\n  name: %s\nspec:\n  peerIP: %s\n  asNumber: %d\n", p.Name, p.PeerIP, p.AS)
	if p.Node != "" {
		fmt.Fprintf(&b, "  node: %s\n", p.Node)
	}
	if p.Password != "" {
		fmt.Fprintf(&b, "  password:\n    value: %q\n", p.Password)
	}
	return b.String()
}
