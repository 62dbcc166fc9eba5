package model

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// APIVersion is the only apiVersion calyx resources may carry.
const APIVersion = "calyx.io/v1"

// Canonical kind names, as written in the kind field of a document.
const (
	KindIPPool           = "IPPool"
	KindNode             = "Node"
	KindWorkloadEndpoint = "WorkloadEndpoint"
	KindFloatingIP       = "FloatingIP"
	KindNetworkPolicy    = "NetworkPolicy"
	KindConfig           = "Config"
	KindIPAMBlock        = "IPAMBlock"
	KindSubnet           = "Subnet"
	KindBGPConfiguration = "BGPConfiguration"
	KindBGPPeer          = "BGPPeer"
)

// kindList names the kinds in error messages.
const kindList = "IPPool, Node, Subnet, WorkloadEndpoint, FloatingIP, NetworkPolicy, Config, IPAMBlock, BGPConfiguration, BGPPeer"

// ConfigName is the only name a Config resource may have: there is one
// host-wide configuration.
const ConfigName = "default"

// kindOrder is the order in which Snapshot.Resources lists kinds: settings
// first, then what workloads depend on, then the workloads, then what refers
// to workloads, then IPAM's bookkeeping.
var kindOrder = []string{KindConfig, KindBGPConfiguration, KindIPPool, KindNode, KindSubnet, KindBGPPeer, KindWorkloadEndpoint, KindFloatingIP, KindNetworkPolicy, KindIPAMBlock}

// Kinds returns the canonical kind names in listing order (Config,
// BGPConfiguration, IPPool, Node, Subnet, BGPPeer, WorkloadEndpoint,
// FloatingIP, NetworkPolicy, IPAMBlock).
func Kinds() []string { return append([]string(nil), kindOrder...) }

// Metadata is the metadata block shared by every resource.
type Metadata struct {
	Name   string            `yaml:"name" json:"name"`
	Labels map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
}

// EncapMode says when traffic to a pool's addresses on another node is
// encapsulated.
type EncapMode string

// Encapsulation modes, spelled as in Calico.
const (
	EncapNever       EncapMode = "Never"
	EncapAlways      EncapMode = "Always"
	EncapCrossSubnet EncapMode = "CrossSubnet"
)

// Enabled reports whether m encapsulates at least some traffic; the empty
// mode means the default, Never.
func (m EncapMode) Enabled() bool { return m != "" && m != EncapNever }

// Actions for Config.Spec.EndpointToHostAction (Drop, Accept, Return)
// and Config.Spec.OrphanFragments (Drop, Pass).
const (
	ActionDrop   = "Drop"
	ActionAccept = "Accept"
	ActionReturn = "Return"
	ActionPass   = "Pass"
)

// Defaults applied by ApplyDefaults.
const (
	DefaultBlockSizeV4          = 26
	DefaultBlockSizeV6          = 122
	DefaultNodeSelector         = "all()"
	DefaultPolicySelector       = "all()"
	DefaultVXLANVNI             = 4096
	DefaultVXLANPort            = 4789
	DefaultMetadataAddress      = "127.0.0.1:8775"
	DefaultEndpointToHostAction = ActionAccept
	// DefaultNATPortRange keeps natOutgoing's ports apart from Linux's
	// default ephemeral range (32768-60999), as Calico's BPF dataplane
	// does (BPFPSNATPorts).
	DefaultNATPortRange = "20000:29999"
	DefaultLeaseSeconds = 86400
)

// Bounds of Subnet.spec.leaseSeconds: DHCP clients renew at half the
// lease, so a minute is the shortest that does not flood the agent, and
// lease times are 32-bit on the wire (0xffffffff meaning "infinite").
const (
	MinLeaseSeconds = 60
	MaxLeaseSeconds = 1<<31 - 1
)

// InstanceLabel is the label that groups an instance's NICs: the
// WorkloadEndpoints of one node that carry the same value are one
// instance (a VM with several interfaces). Only host-route warnings use it.
const InstanceLabel = "calyx.io/instance"

// Resource is implemented by *IPPool, *Node, *Subnet, *WorkloadEndpoint,
// *FloatingIP, *NetworkPolicy, *Config, *IPAMBlock, *BGPConfiguration and
// *BGPPeer.
type Resource interface {
	// Kind returns the canonical kind name, e.g. "IPPool".
	Kind() string
	// Meta returns a pointer to the resource's metadata.
	Meta() *Metadata
}

// IPPool is a range of addresses workloads (or, when external, floating IPs)
// take their addresses from.
type IPPool struct {
	Metadata Metadata
	Spec     IPPoolSpec
}

// IPPoolSpec is the spec of an IPPool.
type IPPoolSpec struct {
	CIDR         netip.Prefix
	BlockSize    int
	IPIPMode     EncapMode
	VXLANMode    EncapMode
	NATOutgoing  bool
	NodeSelector string
	External     bool
	Disabled     bool
	// DisableBGPExport keeps the pool's routes out of BGP: no node
	// advertises its blocks, endpoints or floating IPs.
	DisableBGPExport bool
}

// Node is a host running calyx-agent.
type Node struct {
	Metadata Metadata
	Spec     NodeSpec
}

// NodeSpec is the spec of a Node. The addresses keep their host part: the
// prefix length says which underlay peers are on the same subnet.
type NodeSpec struct {
	IPv4Address netip.Prefix
	IPv6Address netip.Prefix
	// ASNumber is the node's own AS, overriding BGPConfiguration's
	// asNumber; 0 means that one (1..4294967295 when set).
	ASNumber uint32
	// RouteReflectorClusterID makes the node a BGP route reflector with
	// this cluster ID (an IPv4-formatted 32-bit number, e.g. 224.0.0.1,
	// as Calico has it); the zero Addr means it is not one.
	RouteReflectorClusterID netip.Addr
	// UnderlayInterface is the node's underlay interface, as its agent
	// registers it: no WorkloadEndpoint on the node may name it.
	UnderlayInterface string
}

// Subnet is a network the instances' addresses are in, as Neutron has it:
// the subnet services (DHCPv4, router advertisements, DHCPv6) tell an
// endpoint its address, the subnet's prefix, its gateway, DNS servers and
// host routes. An endpoint address belongs to the most specific Subnet
// containing it; Subnets may overlap, but no two have the same cidr.
type Subnet struct {
	Metadata Metadata
	Spec     SubnetSpec
}

// SubnetSpec is the spec of a Subnet.
type SubnetSpec struct {
	// CIDR is the subnet, IPv4 or IPv6, with no host bits.
	CIDR netip.Prefix
	// GatewayIP is the instances' router. It stands for the local host on
	// every host: it is never a real address and no endpoint may have it.
	GatewayIP netip.Addr
	// EnableDHCP says the subnet services answer for the subnet's
	// endpoints; nil means the default, true. Read it with DHCPEnabled.
	EnableDHCP *bool
	// DNSNameservers are given to instances (DHCP option 6, RDNSS,
	// DHCPv6); of the subnet's family.
	DNSNameservers []netip.Addr
	// HostRoutes are extra routes given to instances (option 121); every
	// NextHop is GatewayIP.
	HostRoutes []HostRoute
	// LeaseSeconds is the DHCP lease time; 0 means DefaultLeaseSeconds.
	LeaseSeconds int64
	// Network names the network the subnet belongs to (optional; shown
	// in dumps).
	Network string
}

// HostRoute is a route a Subnet gives its instances: Destination via
// NextHop.
type HostRoute struct {
	Destination netip.Prefix
	NextHop     netip.Addr
}

// DHCPEnabled reports whether the subnet services answer for the subnet's
// endpoints: enableDHCP, true unless set to false.
func (s *SubnetSpec) DHCPEnabled() bool { return s.EnableDHCP == nil || *s.EnableDHCP }

// Lease returns leaseSeconds, or its default when unset.
func (s *SubnetSpec) Lease() int64 {
	if s.LeaseSeconds == 0 {
		return DefaultLeaseSeconds
	}
	return s.LeaseSeconds
}

// WorkloadEndpoint is one workload interface (tap or veth) on a node.
type WorkloadEndpoint struct {
	Metadata Metadata
	Spec     WorkloadEndpointSpec
}

// WorkloadEndpointSpec is the spec of a WorkloadEndpoint.
type WorkloadEndpointSpec struct {
	Node       string
	Interface  string
	MAC        net.HardwareAddr
	IPNetworks []netip.Prefix
}

// FloatingIP maps an external address (from an enabled, external IPPool) to
// one of a workload's own addresses: traffic to the floating IP is DNATed to
// the fixed IP, and traffic from the fixed IP leaving the pools is SNATed to
// the floating IP.
type FloatingIP struct {
	Metadata Metadata
	Spec     FloatingIPSpec
}

// FloatingIPSpec is the spec of a FloatingIP. FixedIP is optional and has
// no stored default: when it is the zero Addr the endpoint's first IPv4
// address is meant (see Snapshot.FixedIP), so the mapping follows the
// endpoint when its addresses change.
type FloatingIPSpec struct {
	// IP is the floating address; IPv4 only for now.
	IP netip.Addr
	// Endpoint names the WorkloadEndpoint the address maps to.
	Endpoint string
	// FixedIP is the endpoint's address the floating IP maps to, or the
	// zero Addr for the endpoint's first IPv4 address.
	FixedIP netip.Addr
}

// NetworkPolicy is Calico-shaped policy: the endpoints its selector picks
// get its rules, in order, for the directions in Types.
type NetworkPolicy struct {
	Metadata Metadata
	Spec     NetworkPolicySpec
}

// PolicyType is a direction a policy applies to.
type PolicyType string

// Policy directions.
const (
	PolicyIngress PolicyType = "Ingress"
	PolicyEgress  PolicyType = "Egress"
)

// RuleAction is what a matching rule does.
type RuleAction string

// Rule actions, spelled as in Calico. Log records the packet and goes on
// to the next rule; Pass skips the rest of this policy's rules and goes on
// with the next policy.
const (
	RuleAllow RuleAction = "Allow"
	RuleDeny  RuleAction = "Deny"
	RuleLog   RuleAction = "Log"
	RulePass  RuleAction = "Pass"
)

// IP protocol numbers with names in policy rules.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// protocolNames are the names a rule's protocol may be given by, in their
// canonical spelling; any other protocol is given by number.
var protocolNames = map[uint8]string{
	ProtoICMP:   "ICMP",
	ProtoTCP:    "TCP",
	ProtoUDP:    "UDP",
	ProtoICMPv6: "ICMPv6",
	ProtoSCTP:   "SCTP",
}

// ProtocolName returns how a rule's protocol is written: its name (TCP,
// UDP, ICMP, ICMPv6, SCTP) when it has one, else its number; "" for 0,
// which matches every protocol.
func ProtocolName(p uint8) string {
	if p == 0 {
		return ""
	}
	if n, ok := protocolNames[p]; ok {
		return n
	}
	return strconv.Itoa(int(p))
}

// protocolByName returns the number of a named protocol, any case.
func protocolByName(s string) (uint8, bool) {
	for p, n := range protocolNames {
		if strings.EqualFold(n, s) {
			return p, true
		}
	}
	return 0, false
}

// NetworkPolicySpec is the spec of a NetworkPolicy.
type NetworkPolicySpec struct {
	// Order: lower applies first; nil applies after every ordered
	// policy. Ties go by name.
	Order *float64
	// Selector picks the endpoints the policy applies to; default all().
	Selector string
	// Types lists the directions the policy applies to. The default is
	// Calico's: Ingress when there are no egress rules, Egress when there
	// are egress rules but no ingress rules, both when there are both. So
	// an egress-only policy leaves its endpoints' ingress alone.
	Types   []PolicyType
	Ingress []Rule
	Egress  []Rule
}

// Rule is one policy rule. A field left empty matches everything.
type Rule struct {
	Action RuleAction
	// Protocol is an IP protocol number; 0 matches every protocol.
	Protocol uint8
	// ICMP matches an ICMP (or ICMPv6) type and optionally code; nil
	// matches any. Only with protocol ICMP or ICMPv6.
	ICMP        *ICMPMatch
	Source      EntityRule
	Destination EntityRule
}

// ICMPMatch is an ICMP type and, when HasCode, code.
type ICMPMatch struct {
	Type    uint8
	Code    uint8
	HasCode bool
}

// EntityRule matches one end of a packet. Everything given must match:
// an address in Nets (when given) and in none of NotNets, an endpoint the
// Selector picks and NotSelector does not, a port in Ports (when given)
// and in none of NotPorts.
type EntityRule struct {
	Nets        []netip.Prefix
	NotNets     []netip.Prefix
	Selector    string
	NotSelector string
	Ports       []PortRange
	NotPorts    []PortRange
}

// PortRange is the ports First through Last, inclusive; a single port has
// First == Last.
type PortRange struct {
	First, Last uint16
}

// String returns "80" for a single port and "8000:8080" for a range, as
// they are written in a rule.
func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return strconv.Itoa(int(r.First)) + ":" + strconv.Itoa(int(r.Last))
}

// defaultPolicyTypes returns Calico's default for a policy that lists no
// types.
func defaultPolicyTypes(s *NetworkPolicySpec) []PolicyType {
	switch {
	case len(s.Egress) == 0:
		return []PolicyType{PolicyIngress}
	case len(s.Ingress) == 0:
		return []PolicyType{PolicyEgress}
	}
	return []PolicyType{PolicyIngress, PolicyEgress}
}

// AppliesTo reports whether the policy applies to direction t: whether t
// is in Types, or, when Types is empty (not defaulted yet), in the types
// ApplyDefaults would fill in.
func (s *NetworkPolicySpec) AppliesTo(t PolicyType) bool {
	if len(s.Types) == 0 {
		return slices.Contains(defaultPolicyTypes(s), t)
	}
	return slices.Contains(s.Types, t)
}

// SortPolicies sorts ps into the order they apply in: by Order ascending,
// policies without an order after every ordered one, ties by name.
func SortPolicies(ps []*NetworkPolicy) {
	slices.SortFunc(ps, func(a, b *NetworkPolicy) int {
		oa, ob := a.Spec.Order, b.Spec.Order
		var byOrder int
		switch {
		case oa == nil && ob == nil:
		case oa == nil:
			byOrder = 1
		case ob == nil:
			byOrder = -1
		default:
			byOrder = cmp.Compare(*oa, *ob)
		}
		return cmp.Or(byOrder, strings.Compare(a.Metadata.Name, b.Metadata.Name))
	})
}

// Config holds host-wide settings; only one, named "default", may exist.
type Config struct {
	Metadata Metadata
	Spec     ConfigSpec
}

// ConfigSpec is the spec of a Config. Zero values mean "use the default".
type ConfigSpec struct {
	VXLANVNI             uint32
	VXLANPort            uint16
	MetadataAddress      string
	EndpointToHostAction string
	// OrphanFragments is what becomes of a later IP fragment whose first
	// fragment was not seen (reordered, lost, or forged to slip past
	// policy, which cannot see its ports): ActionDrop (the default) or
	// ActionPass (untracked, matched by policy without ports). "" means
	// Drop.
	OrphanFragments string
	// MapSizes are the BPF maps' capacities by MapSizeSettings key, every
	// key present once defaulted.
	MapSizes map[string]uint32
	// PrefilterDeny lists source CIDRs every node drops on its underlay
	// before anything else (XDP on physical NICs).
	PrefilterDeny []netip.Prefix
	// NATPortRange is "MIN:MAX", the source ports natOutgoing translates
	// to when a workload's own port is not free or not in the range; the
	// agent reserves them from the host's own sockets
	// (net.ipv4.ip_local_reserved_ports). "" means DefaultNATPortRange.
	NATPortRange string
}

// NATPorts returns NATPortRange's bounds (DefaultNATPortRange's when it is
// empty or invalid: Validate refuses an invalid one).
func (s *ConfigSpec) NATPorts() (min, max uint16) {
	if lo, hi, err := parsePortRange(s.NATPortRange); err == nil {
		return lo, hi
	}
	lo, hi, _ := parsePortRange(DefaultNATPortRange)
	return lo, hi
}

// minNATPorts is the smallest NATPortRange: fewer ports would leave a
// resolver's source port guessable and run out under load.
const minNATPorts = 1024

// parsePortRange reads "MIN:MAX" with 1024 <= MIN <= MAX <= 65535 and at
// least minNATPorts ports.
func parsePortRange(r string) (min, max uint16, err error) {
	a, b, ok := strings.Cut(r, ":")
	if !ok {
		return 0, 0, fmt.Errorf("want MIN:MAX, e.g. %s", DefaultNATPortRange)
	}
	lo, err1 := strconv.ParseUint(a, 10, 16)
	hi, err2 := strconv.ParseUint(b, 10, 16)
	switch {
	case err1 != nil || err2 != nil:
		return 0, 0, fmt.Errorf("want two port numbers (0-65535) as MIN:MAX, e.g. %s", DefaultNATPortRange)
	case lo < 1024:
		return 0, 0, fmt.Errorf("MIN %d is a privileged port: use 1024 or more", lo)
	case hi < lo:
		return 0, 0, fmt.Errorf("MAX %d is below MIN %d", hi, lo)
	case hi-lo+1 < minNATPorts:
		return 0, 0, fmt.Errorf("%d ports: use at least %d, so that translated source ports stay hard to guess", hi-lo+1, minNATPorts)
	}
	return uint16(lo), uint16(hi), nil
}

// IPAMBlock is a block of addresses (one blockSize-sized piece of an
// IPPool) that one node holds: IPAM gives that node's workloads addresses
// from it, and other nodes route the whole block to that node. Its name is
// BlockName of its CIDR.
type IPAMBlock struct {
	Metadata Metadata
	Spec     IPAMBlockSpec
}

// IPAMBlockSpec is the spec of an IPAMBlock.
type IPAMBlockSpec struct {
	// CIDR is the block, e.g. 10.65.1.0/26.
	CIDR netip.Prefix
	// Pool names the IPPool the block was carved from.
	Pool string
	// Node names the node holding the block.
	Node string
	// Allocations maps each allocated address to its handle: an
	// endpoint's name or an orchestrator's handle. Nil when empty.
	Allocations map[netip.Addr]string
}

// BlockName returns the name of the IPAMBlock for p: its address and prefix
// length with '.', ':' and '/' written as '-', e.g. "10-65-1-0-26" for
// 10.65.1.0/26 and "fd00-1---122" for fd00:1::/122. It does not mask p.
func BlockName(p netip.Prefix) string {
	return strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(p.String())
}

// Kind returns "IPPool".
func (*IPPool) Kind() string { return KindIPPool }

// Meta returns the pool's metadata.
func (p *IPPool) Meta() *Metadata { return &p.Metadata }

// Kind returns "Node".
func (*Node) Kind() string { return KindNode }

// Meta returns the node's metadata.
func (n *Node) Meta() *Metadata { return &n.Metadata }

// Kind returns "Subnet".
func (*Subnet) Kind() string { return KindSubnet }

// Meta returns the subnet's metadata.
func (s *Subnet) Meta() *Metadata { return &s.Metadata }

// Kind returns "WorkloadEndpoint".
func (*WorkloadEndpoint) Kind() string { return KindWorkloadEndpoint }

// Meta returns the endpoint's metadata.
func (w *WorkloadEndpoint) Meta() *Metadata { return &w.Metadata }

// Kind returns "FloatingIP".
func (*FloatingIP) Kind() string { return KindFloatingIP }

// Meta returns the floating IP's metadata.
func (f *FloatingIP) Meta() *Metadata { return &f.Metadata }

// Kind returns "NetworkPolicy".
func (*NetworkPolicy) Kind() string { return KindNetworkPolicy }

// Meta returns the policy's metadata.
func (p *NetworkPolicy) Meta() *Metadata { return &p.Metadata }

// Kind returns "Config".
func (*Config) Kind() string { return KindConfig }

// Meta returns the config's metadata.
func (c *Config) Meta() *Metadata { return &c.Metadata }

// Kind returns "IPAMBlock".
func (*IPAMBlock) Kind() string { return KindIPAMBlock }

// Meta returns the block's metadata.
func (b *IPAMBlock) Meta() *Metadata { return &b.Metadata }

// DefaultConfig returns a Config named "default" with every setting at its
// default value.
func DefaultConfig() *Config {
	c := &Config{Metadata: Metadata{Name: ConfigName}}
	ApplyDefaults(c)
	return c
}

// Ref names one resource.
type Ref struct {
	Kind string
	Name string
}

// String returns "Kind/name".
func (r Ref) String() string { return r.Kind + "/" + r.Name }

// RefOf returns the reference naming r.
func RefOf(r Resource) Ref { return Ref{Kind: r.Kind(), Name: r.Meta().Name} }

// ParseRef parses "Kind/name", accepting any spelling of the kind that
// ParseKind accepts. It returns an error when there is no '/', the kind is
// unknown or the name is empty.
func ParseRef(s string) (Ref, error) {
	kind, name, ok := strings.Cut(s, "/")
	if !ok || name == "" {
		return Ref{}, fmt.Errorf("invalid reference %q (want KIND/NAME)", s)
	}
	k, err := ParseKind(kind)
	if err != nil {
		return Ref{}, err
	}
	return Ref{Kind: k, Name: name}, nil
}

var kindAliases = map[string]string{
	"ippool":            KindIPPool,
	"ippools":           KindIPPool,
	"node":              KindNode,
	"nodes":             KindNode,
	"workloadendpoint":  KindWorkloadEndpoint,
	"workloadendpoints": KindWorkloadEndpoint,
	"floatingip":        KindFloatingIP,
	"floatingips":       KindFloatingIP,
	"networkpolicy":     KindNetworkPolicy,
	"networkpolicies":   KindNetworkPolicy,
	"config":            KindConfig,
	"configs":           KindConfig,
	"ipamblock":         KindIPAMBlock,
	"ipamblocks":        KindIPAMBlock,
	"subnet":            KindSubnet,
	"subnets":           KindSubnet,
	"bgpconfiguration":  KindBGPConfiguration,
	"bgpconfigurations": KindBGPConfiguration,
	"bgpconfig":         KindBGPConfiguration,
	"bgpconfigs":        KindBGPConfiguration,
	"bgppeer":           KindBGPPeer,
	"bgppeers":          KindBGPPeer,
}

// ParseKind returns the canonical kind for s, which may be singular or
// plural in any case ("ippools", "WorkloadEndpoint", "nodes",
// "floatingips", "ipamblocks", "subnets"). It returns an
// error listing the known kinds when s matches none of them.
func ParseKind(s string) (string, error) {
	if k, ok := kindAliases[strings.ToLower(s)]; ok {
		return k, nil
	}
	return "", fmt.Errorf("unknown kind %q (want one of %s)", s, kindList)
}

// NewResource returns an empty resource of the given canonical kind, or an
// error for an unknown kind.
func NewResource(kind string) (Resource, error) {
	switch kind {
	case KindIPPool:
		return &IPPool{}, nil
	case KindNode:
		return &Node{}, nil
	case KindWorkloadEndpoint:
		return &WorkloadEndpoint{}, nil
	case KindFloatingIP:
		return &FloatingIP{}, nil
	case KindNetworkPolicy:
		return &NetworkPolicy{}, nil
	case KindConfig:
		return &Config{}, nil
	case KindIPAMBlock:
		return &IPAMBlock{}, nil
	case KindSubnet:
		return &Subnet{}, nil
	case KindBGPConfiguration:
		return &BGPConfiguration{}, nil
	case KindBGPPeer:
		return &BGPPeer{}, nil
	}
	return nil, fmt.Errorf("unknown kind %q (want one of %s)", kind, kindList)
}

// ApplyDefaults fills every unset (zero) field of r with its default value,
// in place. It is idempotent.
func ApplyDefaults(r Resource) {
	applyBGPDefaults(r)
	switch r := r.(type) {
	case *IPPool:
		s := &r.Spec
		if s.BlockSize == 0 && s.CIDR.IsValid() {
			if s.CIDR.Addr().Is4() {
				s.BlockSize = DefaultBlockSizeV4
			} else {
				s.BlockSize = DefaultBlockSizeV6
			}
		}
		if s.IPIPMode == "" {
			s.IPIPMode = EncapNever
		}
		if s.VXLANMode == "" {
			s.VXLANMode = EncapNever
		}
		if s.NodeSelector == "" {
			s.NodeSelector = DefaultNodeSelector
		}
	case *Subnet:
		s := &r.Spec
		if s.EnableDHCP == nil {
			on := true
			s.EnableDHCP = &on
		}
		if s.LeaseSeconds == 0 {
			s.LeaseSeconds = DefaultLeaseSeconds
		}
	case *NetworkPolicy:
		s := &r.Spec
		if s.Selector == "" {
			s.Selector = DefaultPolicySelector
		}
		if len(s.Types) == 0 {
			s.Types = defaultPolicyTypes(s)
		}
	case *Config:
		s := &r.Spec
		if s.VXLANVNI == 0 {
			s.VXLANVNI = DefaultVXLANVNI
		}
		if s.VXLANPort == 0 {
			s.VXLANPort = DefaultVXLANPort
		}
		if s.MetadataAddress == "" {
			s.MetadataAddress = DefaultMetadataAddress
		}
		if s.EndpointToHostAction == "" {
			s.EndpointToHostAction = DefaultEndpointToHostAction
		}
		if s.MapSizes == nil {
			s.MapSizes = map[string]uint32{}
		}
		for _, ms := range MapSizeSettings {
			if s.MapSizes[ms.Key] == 0 {
				s.MapSizes[ms.Key] = ms.Default
			}
		}
		if s.NATPortRange == "" {
			s.NATPortRange = DefaultNATPortRange
		}
	}
}

// deepCopy returns a copy of r that shares no mutable memory with it, so a
// caller's resource can be defaulted and stored without aliasing.
func deepCopy(r Resource) Resource {
	var out Resource
	switch r := r.(type) {
	case *IPPool:
		c := *r
		out = &c
	case *Node:
		c := *r
		out = &c
	case *WorkloadEndpoint:
		c := *r
		c.Spec.MAC = nil
		if len(r.Spec.MAC) > 0 {
			c.Spec.MAC = append(net.HardwareAddr(nil), r.Spec.MAC...)
		}
		if r.Spec.IPNetworks != nil {
			c.Spec.IPNetworks = append([]netip.Prefix(nil), r.Spec.IPNetworks...)
		}
		out = &c
	case *FloatingIP:
		c := *r
		out = &c
	case *Subnet:
		c := *r
		if r.Spec.EnableDHCP != nil {
			on := *r.Spec.EnableDHCP
			c.Spec.EnableDHCP = &on
		}
		c.Spec.DNSNameservers = cloneSlice(r.Spec.DNSNameservers)
		c.Spec.HostRoutes = cloneSlice(r.Spec.HostRoutes)
		out = &c
	case *NetworkPolicy:
		c := *r
		c.Spec = r.Spec.deepCopy()
		out = &c
	case *Config:
		c := *r
		c.Spec.PrefilterDeny = cloneSlice(r.Spec.PrefilterDeny)
		out = &c
	case *BGPConfiguration, *BGPPeer:
		out = deepCopyBGP(r)
	case *IPAMBlock:
		c := *r
		c.Spec.Allocations = nil
		if len(r.Spec.Allocations) > 0 {
			c.Spec.Allocations = make(map[netip.Addr]string, len(r.Spec.Allocations))
			for a, h := range r.Spec.Allocations {
				c.Spec.Allocations[a] = h
			}
		}
		out = &c
	default:
		return r
	}
	// Empty and nil collections are normalized to nil, as Decode returns
	// them, so a stored copy equals what reading its file gives back.
	out.Meta().Labels = nil
	if l := r.Meta().Labels; len(l) > 0 {
		m := make(map[string]string, len(l))
		for k, v := range l {
			m[k] = v
		}
		out.Meta().Labels = m
	}
	return out
}

// cloneSlice copies s, returning nil for an empty s as Decode does.
func cloneSlice[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return append([]T(nil), s...)
}

func (s NetworkPolicySpec) deepCopy() NetworkPolicySpec {
	c := s
	if s.Order != nil {
		o := *s.Order
		c.Order = &o
	}
	c.Types = cloneSlice(s.Types)
	c.Ingress = cloneRules(s.Ingress)
	c.Egress = cloneRules(s.Egress)
	return c
}

func cloneRules(rs []Rule) []Rule {
	if len(rs) == 0 {
		return nil
	}
	out := make([]Rule, len(rs))
	for i, r := range rs {
		out[i] = r
		if r.ICMP != nil {
			m := *r.ICMP
			// A code that does not count reads back as 0 from a file.
			if !m.HasCode {
				m.Code = 0
			}
			out[i].ICMP = &m
		}
		out[i].Source = r.Source.deepCopy()
		out[i].Destination = r.Destination.deepCopy()
	}
	return out
}

func (e EntityRule) deepCopy() EntityRule {
	return EntityRule{
		Nets:        cloneSlice(e.Nets),
		NotNets:     cloneSlice(e.NotNets),
		Selector:    e.Selector,
		NotSelector: e.NotSelector,
		Ports:       cloneSlice(e.Ports),
		NotPorts:    cloneSlice(e.NotPorts),
	}
}

// EndpointID is the numeric identity of an endpoint in the BPF maps and
// their dumps. It is a hash of the name: stable across restarts and hosts
// without coordination.
func EndpointID(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return h.Sum32()
}

// MapSizeSetting is one Config.spec key that sizes BPF maps: the maps it
// sizes (their pinned names), its default (their compiled-in size) and the
// range it accepts. 0 in a document means the default.
type MapSizeSetting struct {
	Key      string
	Maps     []string
	Default  uint32
	Min, Max uint32
}

// MapSizeSettings are every map-size key of Config.spec. Their maps'
// capacities come from here at load; a map the agent fills from the model
// and finds pinned with another size is made anew and filled before the
// programs switch to it (conntrack keeps its pinned size: resizing it would
// drop every flow).
var MapSizeSettings = []MapSizeSetting{
	{Key: "routeMapSize", Maps: []string{"cx_routes"}, Default: 65536, Min: 1024, Max: 1 << 24},
	{Key: "endpointMapSize", Maps: []string{"cx_ifaces", "cx_endpoints"}, Default: 16384, Min: 64, Max: 1 << 20},
	// Tracked flows without translation, one entry each.
	{Key: "ctMapSize", Maps: []string{"cx_ct"}, Default: 262144, Min: 1024, Max: 1 << 26},
	// Translated flows (floating IPs, natOutgoing, metadata), two entries
	// each: apart from ctMapSize so that no flood of tracked flows can
	// evict a translation.
	{Key: "natMapSize", Maps: []string{"cx_nat"}, Default: 131072, Min: 1024, Max: 1 << 26},
	{Key: "policyMapSize", Maps: []string{"cx_policy"}, Default: 1 << 20, Min: 1024, Max: 1 << 26},
	{Key: "ipcacheMapSize", Maps: []string{"cx_ipcache"}, Default: 65536, Min: 1024, Max: 1 << 24},
	{Key: "floatingIPMapSize", Maps: []string{"cx_fips"}, Default: 16384, Min: 64, Max: 1 << 22},
	{Key: "prefilterMapSize", Maps: []string{"cx_prefilter"}, Default: 65536, Min: 64, Max: 1 << 24},
}

// MapCapacities are the capacities s gives each BPF map, by pinned name.
func (s ConfigSpec) MapCapacities() map[string]uint32 {
	out := map[string]uint32{}
	for _, ms := range MapSizeSettings {
		size := s.MapSizes[ms.Key]
		if size == 0 {
			size = ms.Default
		}
		for _, m := range ms.Maps {
			out[m] = size
		}
	}
	return out
}
