package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"gopkg.in/yaml.v3"
)

// The wire structs fix the camelCase keys and the string form of addresses
// for both YAML and JSON, so `calyxctl get -o json` and the files on disk
// agree. Every field with an effective value is written (no omitempty) so
// printed resources show what is in force, defaults included.

type envelope[S any] struct {
	APIVersion string   `json:"apiVersion" yaml:"apiVersion"`
	Kind       string   `json:"kind" yaml:"kind"`
	Metadata   Metadata `json:"metadata" yaml:"metadata"`
	Spec       S        `json:"spec" yaml:"spec"`
}

type ipPoolSpecWire struct {
	CIDR         string    `json:"cidr" yaml:"cidr"`
	BlockSize    int       `json:"blockSize" yaml:"blockSize"`
	IPIPMode     EncapMode `json:"ipipMode" yaml:"ipipMode"`
	VXLANMode    EncapMode `json:"vxlanMode" yaml:"vxlanMode"`
	NATOutgoing  bool      `json:"natOutgoing" yaml:"natOutgoing"`
	NodeSelector string    `json:"nodeSelector" yaml:"nodeSelector"`
	External     bool      `json:"external" yaml:"external"`
	Disabled     bool      `json:"disabled" yaml:"disabled"`
	// DisableBGPExport is always written, like disabled.
	DisableBGPExport bool `json:"disableBGPExport" yaml:"disableBGPExport"`
}

type nodeSpecWire struct {
	IPv4Address       string `json:"ipv4Address,omitempty" yaml:"ipv4Address,omitempty"`
	IPv6Address       string `json:"ipv6Address,omitempty" yaml:"ipv6Address,omitempty"`
	ASNumber          uint32 `json:"asNumber,omitempty" yaml:"asNumber,omitempty"`
	UnderlayInterface string `json:"underlayInterface,omitempty" yaml:"underlayInterface,omitempty"`
	// RouteReflectorClusterID is written only for a route reflector.
	RouteReflectorClusterID string `json:"routeReflectorClusterID,omitempty" yaml:"routeReflectorClusterID,omitempty"`
}

type workloadEndpointSpecWire struct {
	Node       string       `json:"node" yaml:"node"`
	Interface  string       `json:"interface" yaml:"interface"`
	MAC        quotedString `json:"mac,omitempty" yaml:"mac,omitempty"`
	IPNetworks []string     `json:"ipNetworks" yaml:"ipNetworks"`
}

// fixedIP has no stored default (it follows the endpoint), so it is written
// only when given.
type floatingIPSpecWire struct {
	IP       string `json:"ip" yaml:"ip"`
	Endpoint string `json:"endpoint" yaml:"endpoint"`
	FixedIP  string `json:"fixedIP,omitempty" yaml:"fixedIP,omitempty"`
}

// A policy is written as Calico writes it: what a rule does not match on
// is left out, so a rule reads as what it matches.
type networkPolicySpecWire struct {
	Order    *float64     `json:"order,omitempty" yaml:"order,omitempty"`
	Selector string       `json:"selector" yaml:"selector"`
	Types    []PolicyType `json:"types" yaml:"types"`
	Ingress  []ruleWire   `json:"ingress,omitempty" yaml:"ingress,omitempty"`
	Egress   []ruleWire   `json:"egress,omitempty" yaml:"egress,omitempty"`
}

type ruleWire struct {
	Action RuleAction `json:"action" yaml:"action"`
	// Protocol is the protocol's name (a string) or number (an int).
	Protocol    any             `json:"protocol,omitempty" yaml:"protocol,omitempty"`
	ICMP        *icmpWire       `json:"icmp,omitempty" yaml:"icmp,omitempty"`
	Source      *entityRuleWire `json:"source,omitempty" yaml:"source,omitempty"`
	Destination *entityRuleWire `json:"destination,omitempty" yaml:"destination,omitempty"`
}

type icmpWire struct {
	Type uint8  `json:"type" yaml:"type"`
	Code *uint8 `json:"code,omitempty" yaml:"code,omitempty"`
}

type entityRuleWire struct {
	Nets        []string `json:"nets,omitempty" yaml:"nets,omitempty"`
	NotNets     []string `json:"notNets,omitempty" yaml:"notNets,omitempty"`
	Selector    string   `json:"selector,omitempty" yaml:"selector,omitempty"`
	NotSelector string   `json:"notSelector,omitempty" yaml:"notSelector,omitempty"`
	// Ports holds ints for single ports and "first:last" strings.
	Ports    []any `json:"ports,omitempty" yaml:"ports,omitempty"`
	NotPorts []any `json:"notPorts,omitempty" yaml:"notPorts,omitempty"`
}

// prefilterDeny is left out when empty, so a Config that does not use it
// reads as it did before the field existed.
type configSpecWire struct {
	VXLANVNI             uint32   `json:"vxlanVNI" yaml:"vxlanVNI"`
	VXLANPort            uint16   `json:"vxlanPort" yaml:"vxlanPort"`
	MetadataAddress      string   `json:"metadataAddress" yaml:"metadataAddress"`
	EndpointToHostAction string   `json:"endpointToHostAction" yaml:"endpointToHostAction"`
	PrefilterDeny        []string `json:"prefilterDeny,omitempty" yaml:"prefilterDeny,omitempty"`
	NATPortRange         string   `json:"natPortRange,omitempty" yaml:"natPortRange,omitempty"`
	OrphanFragments      string   `json:"orphanFragments,omitempty" yaml:"orphanFragments,omitempty"`
	// MapSizes holds the MapSizeSettings keys, inline (JSON: see
	// MarshalJSON).
	MapSizes map[string]uint32 `json:"-" yaml:",inline"`
}

// MarshalJSON writes MapSizes inline, as the YAML does.
func (w configSpecWire) MarshalJSON() ([]byte, error) {
	type plain configSpecWire
	b, err := json.Marshal(plain(w))
	if err != nil || len(w.MapSizes) == 0 {
		return b, err
	}
	sizes, err := json.Marshal(w.MapSizes)
	if err != nil {
		return nil, err
	}
	// Both are objects: join their members.
	return append(append(b[:len(b)-1], ','), sizes[1:]...), nil
}

// allocations is always written, as {} when empty, so a printed block shows
// that nothing is allocated rather than leaving it to be guessed.
type ipamBlockSpecWire struct {
	CIDR        string            `json:"cidr" yaml:"cidr"`
	Pool        string            `json:"pool" yaml:"pool"`
	Node        string            `json:"node" yaml:"node"`
	Allocations map[string]string `json:"allocations" yaml:"allocations"`
}

// A subnet is written with every effective value: enableDHCP and
// leaseSeconds with their defaults, and the lists as [] when empty, so a
// printed subnet shows what instances are told. network is left out when
// not given.
type subnetSpecWire struct {
	CIDR           string          `json:"cidr" yaml:"cidr"`
	GatewayIP      string          `json:"gatewayIP" yaml:"gatewayIP"`
	EnableDHCP     bool            `json:"enableDHCP" yaml:"enableDHCP"`
	DNSNameservers []string        `json:"dnsNameservers" yaml:"dnsNameservers"`
	HostRoutes     []hostRouteWire `json:"hostRoutes" yaml:"hostRoutes"`
	LeaseSeconds   int64           `json:"leaseSeconds" yaml:"leaseSeconds"`
	Network        string          `json:"network,omitempty" yaml:"network,omitempty"`
}

type hostRouteWire struct {
	Destination string `json:"destination" yaml:"destination"`
	NextHop     string `json:"nextHop" yaml:"nextHop"`
}

// quotedString is written double-quoted in YAML: an all-digit MAC such as
// 02:00:00:00:00:01 would otherwise read as a base-60 integer to YAML 1.1
// tools.
type quotedString string

func (q quotedString) MarshalYAML() (any, error) {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Style: yaml.DoubleQuotedStyle, Value: string(q)}, nil
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

func prefixStrings(ps []netip.Prefix) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = prefixString(p)
	}
	return out
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func (s IPPoolSpec) wire() ipPoolSpecWire {
	return ipPoolSpecWire{
		CIDR:         prefixString(s.CIDR),
		BlockSize:    s.BlockSize,
		IPIPMode:     s.IPIPMode,
		VXLANMode:    s.VXLANMode,
		NATOutgoing:  s.NATOutgoing,
		NodeSelector: s.NodeSelector,
		External:     s.External,
		Disabled:     s.Disabled,

		DisableBGPExport: s.DisableBGPExport,
	}
}

func (s NodeSpec) wire() nodeSpecWire {
	return nodeSpecWire{
		IPv4Address:       prefixString(s.IPv4Address),
		IPv6Address:       prefixString(s.IPv6Address),
		ASNumber:          s.ASNumber,
		UnderlayInterface: s.UnderlayInterface,

		RouteReflectorClusterID: addrString(s.RouteReflectorClusterID),
	}
}

func (s WorkloadEndpointSpec) wire() workloadEndpointSpecWire {
	w := workloadEndpointSpecWire{
		Node:       s.Node,
		Interface:  s.Interface,
		IPNetworks: make([]string, 0, len(s.IPNetworks)),
	}
	if len(s.MAC) > 0 {
		w.MAC = quotedString(s.MAC.String())
	}
	for _, p := range s.IPNetworks {
		w.IPNetworks = append(w.IPNetworks, prefixString(p))
	}
	return w
}

func (s FloatingIPSpec) wire() floatingIPSpecWire {
	return floatingIPSpecWire{
		IP:       addrString(s.IP),
		Endpoint: s.Endpoint,
		FixedIP:  addrString(s.FixedIP),
	}
}

func (s NetworkPolicySpec) wire() networkPolicySpecWire {
	return networkPolicySpecWire{
		Order:    s.Order,
		Selector: s.Selector,
		// Never null: an undefaulted policy reads back as one.
		Types:   append([]PolicyType{}, s.Types...),
		Ingress: rulesWire(s.Ingress),
		Egress:  rulesWire(s.Egress),
	}
}

func rulesWire(rs []Rule) []ruleWire {
	if len(rs) == 0 {
		return nil
	}
	out := make([]ruleWire, len(rs))
	for i, r := range rs {
		w := ruleWire{
			Action:      r.Action,
			Source:      r.Source.wire(),
			Destination: r.Destination.wire(),
		}
		if r.Protocol != 0 {
			if n, ok := protocolNames[r.Protocol]; ok {
				w.Protocol = n
			} else {
				w.Protocol = int(r.Protocol)
			}
		}
		if m := r.ICMP; m != nil {
			w.ICMP = &icmpWire{Type: m.Type}
			if m.HasCode {
				code := m.Code
				w.ICMP.Code = &code
			}
		}
		out[i] = w
	}
	return out
}

// wire returns nil for an entity that matches everything, so that it is
// left out.
func (e EntityRule) wire() *entityRuleWire {
	w := &entityRuleWire{
		Nets:        prefixStrings(e.Nets),
		NotNets:     prefixStrings(e.NotNets),
		Selector:    e.Selector,
		NotSelector: e.NotSelector,
		Ports:       portsWire(e.Ports),
		NotPorts:    portsWire(e.NotPorts),
	}
	if w.Nets == nil && w.NotNets == nil && w.Selector == "" && w.NotSelector == "" && w.Ports == nil && w.NotPorts == nil {
		return nil
	}
	return w
}

func portsWire(ps []PortRange) []any {
	if len(ps) == 0 {
		return nil
	}
	out := make([]any, len(ps))
	for i, p := range ps {
		if p.First == p.Last {
			out[i] = int(p.First)
		} else {
			// Quoted, since YAML 1.1 tools read 8000:8080 as a base-60
			// number.
			out[i] = quotedString(p.String())
		}
	}
	return out
}

func (s ConfigSpec) wire() configSpecWire {
	return configSpecWire{
		VXLANVNI:             s.VXLANVNI,
		VXLANPort:            s.VXLANPort,
		MetadataAddress:      s.MetadataAddress,
		EndpointToHostAction: s.EndpointToHostAction,
		MapSizes:             s.MapSizes,
		PrefilterDeny:        prefixStrings(s.PrefilterDeny),
		NATPortRange:         s.NATPortRange,
		OrphanFragments:      s.OrphanFragments,
	}
}

func (s IPAMBlockSpec) wire() ipamBlockSpecWire {
	w := ipamBlockSpecWire{
		CIDR:        prefixString(s.CIDR),
		Pool:        s.Pool,
		Node:        s.Node,
		Allocations: make(map[string]string, len(s.Allocations)),
	}
	for a, h := range s.Allocations {
		w.Allocations[addrString(a)] = h
	}
	return w
}

func (s SubnetSpec) wire() subnetSpecWire {
	w := subnetSpecWire{
		CIDR:           prefixString(s.CIDR),
		GatewayIP:      addrString(s.GatewayIP),
		EnableDHCP:     s.DHCPEnabled(),
		DNSNameservers: make([]string, 0, len(s.DNSNameservers)),
		HostRoutes:     make([]hostRouteWire, 0, len(s.HostRoutes)),
		LeaseSeconds:   s.Lease(),
		Network:        s.Network,
	}
	for _, a := range s.DNSNameservers {
		w.DNSNameservers = append(w.DNSNameservers, addrString(a))
	}
	for _, r := range s.HostRoutes {
		w.HostRoutes = append(w.HostRoutes, hostRouteWire{Destination: prefixString(r.Destination), NextHop: addrString(r.NextHop)})
	}
	return w
}

// MarshalJSON returns the spec with camelCase keys and string addresses; it does not fail.
func (s IPPoolSpec) MarshalJSON() ([]byte, error) { return json.Marshal(s.wire()) }

// MarshalYAML returns the spec with camelCase keys and string addresses; it does not fail.
func (s IPPoolSpec) MarshalYAML() (any, error) { return s.wire(), nil }

// MarshalJSON returns the spec with camelCase keys and string addresses; it does not fail.
func (s NodeSpec) MarshalJSON() ([]byte, error) { return json.Marshal(s.wire()) }

// MarshalYAML returns the spec with camelCase keys and string addresses; it does not fail.
func (s NodeSpec) MarshalYAML() (any, error) { return s.wire(), nil }

// MarshalJSON returns the spec with camelCase keys and string addresses; it does not fail.
func (s WorkloadEndpointSpec) MarshalJSON() ([]byte, error) { return json.Marshal(s.wire()) }

// MarshalYAML returns the spec with camelCase keys and string addresses; it does not fail.
func (s WorkloadEndpointSpec) MarshalYAML() (any, error) { return s.wire(), nil }

// MarshalJSON returns the spec with camelCase keys and string addresses; it does not fail.
func (s FloatingIPSpec) MarshalJSON() ([]byte, error) { return json.Marshal(s.wire()) }

// MarshalYAML returns the spec with camelCase keys and string addresses; it does not fail.
func (s FloatingIPSpec) MarshalYAML() (any, error) { return s.wire(), nil }

// MarshalJSON returns the spec with camelCase keys, protocols by name and
// port ranges as "first:last"; it does not fail.
func (s NetworkPolicySpec) MarshalJSON() ([]byte, error) { return json.Marshal(s.wire()) }

// MarshalYAML returns the spec with camelCase keys, protocols by name and
// port ranges as "first:last"; it does not fail.
func (s NetworkPolicySpec) MarshalYAML() (any, error) { return s.wire(), nil }

// MarshalJSON returns the spec with camelCase keys; it does not fail.
func (s ConfigSpec) MarshalJSON() ([]byte, error) { return json.Marshal(s.wire()) }

// MarshalYAML returns the spec with camelCase keys; it does not fail.
func (s ConfigSpec) MarshalYAML() (any, error) { return s.wire(), nil }

// MarshalJSON returns the spec with string addresses, allocations keyed by
// address; it does not fail.
func (s IPAMBlockSpec) MarshalJSON() ([]byte, error) { return json.Marshal(s.wire()) }

// MarshalYAML returns the spec with string addresses, allocations keyed by
// address; it does not fail.
func (s IPAMBlockSpec) MarshalYAML() (any, error) { return s.wire(), nil }

// MarshalJSON returns the spec with camelCase keys, string addresses and
// the defaults in force; it does not fail.
func (s SubnetSpec) MarshalJSON() ([]byte, error) { return json.Marshal(s.wire()) }

// MarshalYAML returns the spec with camelCase keys, string addresses and
// the defaults in force; it does not fail.
func (s SubnetSpec) MarshalYAML() (any, error) { return s.wire(), nil }

func wrap[S any](kind string, m Metadata, spec S) envelope[S] {
	return envelope[S]{APIVersion: APIVersion, Kind: kind, Metadata: m, Spec: spec}
}

// MarshalJSON returns the pool as {"apiVersion","kind","metadata","spec"};
// it does not fail.
func (p IPPool) MarshalJSON() ([]byte, error) {
	return json.Marshal(wrap(KindIPPool, p.Metadata, p.Spec.wire()))
}

// MarshalYAML returns the pool as a calicoctl-shaped document; it does not
// fail.
func (p IPPool) MarshalYAML() (any, error) { return wrap(KindIPPool, p.Metadata, p.Spec.wire()), nil }

// MarshalJSON returns the node as {"apiVersion","kind","metadata","spec"};
// it does not fail.
func (n Node) MarshalJSON() ([]byte, error) {
	return json.Marshal(wrap(KindNode, n.Metadata, n.Spec.wire()))
}

// MarshalYAML returns the node as a calicoctl-shaped document; it does not
// fail.
func (n Node) MarshalYAML() (any, error) { return wrap(KindNode, n.Metadata, n.Spec.wire()), nil }

// MarshalJSON returns the endpoint as {"apiVersion","kind","metadata","spec"};
// it does not fail.
func (w WorkloadEndpoint) MarshalJSON() ([]byte, error) {
	return json.Marshal(wrap(KindWorkloadEndpoint, w.Metadata, w.Spec.wire()))
}

// MarshalYAML returns the endpoint as a calicoctl-shaped document; it does not
// fail.
func (w WorkloadEndpoint) MarshalYAML() (any, error) {
	return wrap(KindWorkloadEndpoint, w.Metadata, w.Spec.wire()), nil
}

// MarshalJSON returns the floating IP as
// {"apiVersion","kind","metadata","spec"}; it does not fail.
func (f FloatingIP) MarshalJSON() ([]byte, error) {
	return json.Marshal(wrap(KindFloatingIP, f.Metadata, f.Spec.wire()))
}

// MarshalYAML returns the floating IP as a calicoctl-shaped document; it
// does not fail.
func (f FloatingIP) MarshalYAML() (any, error) {
	return wrap(KindFloatingIP, f.Metadata, f.Spec.wire()), nil
}

// MarshalJSON returns the policy as {"apiVersion","kind","metadata","spec"};
// it does not fail.
func (p NetworkPolicy) MarshalJSON() ([]byte, error) {
	return json.Marshal(wrap(KindNetworkPolicy, p.Metadata, p.Spec.wire()))
}

// MarshalYAML returns the policy as a calicoctl-shaped document; it does
// not fail.
func (p NetworkPolicy) MarshalYAML() (any, error) {
	return wrap(KindNetworkPolicy, p.Metadata, p.Spec.wire()), nil
}

// MarshalJSON returns the config as {"apiVersion","kind","metadata","spec"};
// it does not fail.
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(wrap(KindConfig, c.Metadata, c.Spec.wire()))
}

// MarshalYAML returns the config as a calicoctl-shaped document; it does not
// fail.
func (c Config) MarshalYAML() (any, error) { return wrap(KindConfig, c.Metadata, c.Spec.wire()), nil }

// MarshalJSON returns the block as {"apiVersion","kind","metadata","spec"};
// it does not fail.
func (b IPAMBlock) MarshalJSON() ([]byte, error) {
	return json.Marshal(wrap(KindIPAMBlock, b.Metadata, b.Spec.wire()))
}

// MarshalYAML returns the block as a calicoctl-shaped document; it does not
// fail.
func (b IPAMBlock) MarshalYAML() (any, error) {
	return wrap(KindIPAMBlock, b.Metadata, b.Spec.wire()), nil
}

// MarshalJSON returns the subnet as {"apiVersion","kind","metadata","spec"};
// it does not fail.
func (s Subnet) MarshalJSON() ([]byte, error) {
	return json.Marshal(wrap(KindSubnet, s.Metadata, s.Spec.wire()))
}

// MarshalYAML returns the subnet as a calicoctl-shaped document; it does
// not fail.
func (s Subnet) MarshalYAML() (any, error) { return wrap(KindSubnet, s.Metadata, s.Spec.wire()), nil }

// UnmarshalYAML decodes an IPPool document strictly (see Decode), applies
// defaults and validates it; it returns the joined validation errors.
func (p *IPPool) UnmarshalYAML(n *yaml.Node) error { return unmarshalInto(n, p) }

// UnmarshalYAML decodes a Node document strictly (see Decode), applies
// defaults and validates it; it returns the joined validation errors.
func (n *Node) UnmarshalYAML(y *yaml.Node) error { return unmarshalInto(y, n) }

// UnmarshalYAML decodes a WorkloadEndpoint document strictly (see Decode),
// applies defaults and validates it; it returns the joined validation errors.
func (w *WorkloadEndpoint) UnmarshalYAML(n *yaml.Node) error { return unmarshalInto(n, w) }

// UnmarshalYAML decodes a FloatingIP document strictly (see Decode), applies
// defaults and validates it; it returns the joined validation errors.
func (f *FloatingIP) UnmarshalYAML(n *yaml.Node) error { return unmarshalInto(n, f) }

// UnmarshalYAML decodes a NetworkPolicy document strictly (see Decode),
// applies defaults and validates it; it returns the joined validation
// errors.
func (p *NetworkPolicy) UnmarshalYAML(n *yaml.Node) error { return unmarshalInto(n, p) }

// UnmarshalYAML decodes a Config document strictly (see Decode), applies
// defaults and validates it; it returns the joined validation errors.
func (c *Config) UnmarshalYAML(n *yaml.Node) error { return unmarshalInto(n, c) }

// UnmarshalYAML decodes an IPAMBlock document strictly (see Decode), applies
// defaults and validates it; it returns the joined validation errors.
func (b *IPAMBlock) UnmarshalYAML(n *yaml.Node) error { return unmarshalInto(n, b) }

// UnmarshalYAML decodes a Subnet document strictly (see Decode), applies
// defaults and validates it; it returns the joined validation errors.
func (s *Subnet) UnmarshalYAML(n *yaml.Node) error { return unmarshalInto(n, s) }

// UnmarshalJSON decodes a Subnet as UnmarshalYAML does (JSON is YAML).
func (s *Subnet) UnmarshalJSON(b []byte) error { return unmarshalJSONInto(b, s) }

// UnmarshalJSON decodes an IPAMBlock as UnmarshalYAML does (JSON is YAML).
func (b *IPAMBlock) UnmarshalJSON(data []byte) error { return unmarshalJSONInto(data, b) }

// UnmarshalJSON decodes an IPPool as UnmarshalYAML does (JSON is YAML).
func (p *IPPool) UnmarshalJSON(b []byte) error { return unmarshalJSONInto(b, p) }

// UnmarshalJSON decodes a Node as UnmarshalYAML does (JSON is YAML).
func (n *Node) UnmarshalJSON(b []byte) error { return unmarshalJSONInto(b, n) }

// UnmarshalJSON decodes a WorkloadEndpoint as UnmarshalYAML does (JSON is YAML).
func (w *WorkloadEndpoint) UnmarshalJSON(b []byte) error { return unmarshalJSONInto(b, w) }

// UnmarshalJSON decodes a FloatingIP as UnmarshalYAML does (JSON is YAML).
func (f *FloatingIP) UnmarshalJSON(b []byte) error { return unmarshalJSONInto(b, f) }

// UnmarshalJSON decodes a NetworkPolicy as UnmarshalYAML does (JSON is
// YAML).
func (p *NetworkPolicy) UnmarshalJSON(b []byte) error { return unmarshalJSONInto(b, p) }

// UnmarshalJSON decodes a Config as UnmarshalYAML does (JSON is YAML).
func (c *Config) UnmarshalJSON(b []byte) error { return unmarshalJSONInto(b, c) }

func unmarshalJSONInto(b []byte, dst Resource) error {
	var n yaml.Node
	if err := yaml.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("decoding %s: %w", dst.Kind(), err)
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		return unmarshalInto(n.Content[0], dst)
	}
	return unmarshalInto(&n, dst)
}

func unmarshalInto(n *yaml.Node, dst Resource) error {
	r, errs := decodeDocument(n)
	if len(errs) > 0 {
		return joinValidation(errs)
	}
	if r.Kind() != dst.Kind() {
		return &ValidationError{Ref: RefOf(r), Path: "kind", Reason: fmt.Sprintf("must be %s, got %s", dst.Kind(), r.Kind())}
	}
	switch d := dst.(type) {
	case *IPPool:
		*d = *r.(*IPPool)
	case *Node:
		*d = *r.(*Node)
	case *WorkloadEndpoint:
		*d = *r.(*WorkloadEndpoint)
	case *FloatingIP:
		*d = *r.(*FloatingIP)
	case *NetworkPolicy:
		*d = *r.(*NetworkPolicy)
	case *Config:
		*d = *r.(*Config)
	case *IPAMBlock:
		*d = *r.(*IPAMBlock)
	case *Subnet:
		*d = *r.(*Subnet)
	case *BGPConfiguration:
		*d = *r.(*BGPConfiguration)
	case *BGPPeer:
		*d = *r.(*BGPPeer)
	}
	return nil
}

// Encode writes rs to w as YAML documents separated by "---", in canonical
// form (camelCase keys, string addresses, two-space indent). It returns the
// first write or marshal error.
func Encode(w io.Writer, rs ...Resource) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	for _, r := range rs {
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("encoding %s: %w", RefOf(r), err)
		}
	}
	return enc.Close()
}

// marshalCanonical returns the bytes the file store writes for r.
func marshalCanonical(r Resource) ([]byte, error) {
	var b bytes.Buffer
	if err := Encode(&b, r); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// joinValidation joins errs into one error whose text has one error per line
// and which errors.As can search.
func joinValidation(errs []*ValidationError) error {
	if len(errs) == 0 {
		return nil
	}
	if len(errs) == 1 {
		return errs[0]
	}
	es := make([]error, len(errs))
	for i, e := range errs {
		es[i] = e
	}
	return errors.Join(es...)
}

// ValidationErrors returns every *ValidationError inside err (which may be a
// single ValidationError or a join of them), in order; nil when there are
// none.
func ValidationErrors(err error) []*ValidationError {
	var out []*ValidationError
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if v, ok := e.(*ValidationError); ok {
			out = append(out, v)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

// ValidationError is one problem with one field of one resource.
type ValidationError struct {
	// Document is the 1-based position of the document in Decode's input,
	// or 0 when the error did not come from Decode.
	Document int
	// Ref names the resource; Kind or Name may be empty when the document
	// did not say.
	Ref Ref
	// Path is the field path, e.g. "spec.ipNetworks[1]"; empty for the
	// document as a whole.
	Path string
	// Reason says what is wrong, e.g. "unknown field".
	Reason string
}

// Error returns e.g.
// `document 2 (WorkloadEndpoint/web-1): spec.ipNetworks[1]: "x" is not a valid CIDR`.
func (e *ValidationError) Error() string {
	var b strings.Builder
	ref := ""
	switch {
	case e.Ref.Kind != "" && e.Ref.Name != "":
		ref = e.Ref.String()
	case e.Ref.Kind != "":
		ref = e.Ref.Kind
	}
	if e.Document > 0 {
		fmt.Fprintf(&b, "document %d", e.Document)
		if ref != "" {
			fmt.Fprintf(&b, " (%s)", ref)
		}
	} else {
		b.WriteString(ref)
	}
	if e.Path != "" {
		if b.Len() > 0 {
			b.WriteString(": ")
		}
		b.WriteString(e.Path)
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}
