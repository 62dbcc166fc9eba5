package model

import (
	"fmt"
	"net"
	"net/netip"
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
	KindConfig           = "Config"
)

// kindList names the kinds in error messages.
const kindList = "IPPool, Node, WorkloadEndpoint, FloatingIP, Config"

// ConfigName is the only name a Config resource may have: there is one
// host-wide configuration.
const ConfigName = "default"

// kindOrder is the order in which Snapshot.Resources lists kinds: settings
// first, then what workloads depend on, then the workloads, then what refers
// to workloads.
var kindOrder = []string{KindConfig, KindIPPool, KindNode, KindWorkloadEndpoint, KindFloatingIP}

// Kinds returns the canonical kind names in listing order (Config, IPPool,
// Node, WorkloadEndpoint, FloatingIP).
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

// Actions for Config.Spec.EndpointToHostAction.
const (
	ActionDrop   = "Drop"
	ActionAccept = "Accept"
	ActionReturn = "Return"
)

// Defaults applied by ApplyDefaults.
const (
	DefaultBlockSizeV4          = 26
	DefaultBlockSizeV6          = 122
	DefaultNodeSelector         = "all()"
	DefaultVXLANVNI             = 4096
	DefaultVXLANPort            = 4789
	DefaultMetadataAddress      = "127.0.0.1:8775"
	DefaultEndpointToHostAction = ActionAccept
	DefaultRouteMapSize         = 65536
	DefaultEndpointMapSize      = 16384
	DefaultCTMapSize            = 262144
)

// Resource is implemented by *IPPool, *Node, *WorkloadEndpoint, *FloatingIP
// and *Config.
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
	ASNumber    uint32
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
	RouteMapSize         uint32
	EndpointMapSize      uint32
	CTMapSize            uint32
}

// Kind returns "IPPool".
func (*IPPool) Kind() string { return KindIPPool }

// Meta returns the pool's metadata.
func (p *IPPool) Meta() *Metadata { return &p.Metadata }

// Kind returns "Node".
func (*Node) Kind() string { return KindNode }

// Meta returns the node's metadata.
func (n *Node) Meta() *Metadata { return &n.Metadata }

// Kind returns "WorkloadEndpoint".
func (*WorkloadEndpoint) Kind() string { return KindWorkloadEndpoint }

// Meta returns the endpoint's metadata.
func (w *WorkloadEndpoint) Meta() *Metadata { return &w.Metadata }

// Kind returns "FloatingIP".
func (*FloatingIP) Kind() string { return KindFloatingIP }

// Meta returns the floating IP's metadata.
func (f *FloatingIP) Meta() *Metadata { return &f.Metadata }

// Kind returns "Config".
func (*Config) Kind() string { return KindConfig }

// Meta returns the config's metadata.
func (c *Config) Meta() *Metadata { return &c.Metadata }

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
	"config":            KindConfig,
	"configs":           KindConfig,
}

// ParseKind returns the canonical kind for s, which may be singular or
// plural in any case ("ippools", "WorkloadEndpoint", "nodes",
// "floatingips"). It returns an
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
	case KindConfig:
		return &Config{}, nil
	}
	return nil, fmt.Errorf("unknown kind %q (want one of %s)", kind, kindList)
}

// ApplyDefaults fills every unset (zero) field of r with its default value,
// in place. It is idempotent.
func ApplyDefaults(r Resource) {
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
		if s.RouteMapSize == 0 {
			s.RouteMapSize = DefaultRouteMapSize
		}
		if s.EndpointMapSize == 0 {
			s.EndpointMapSize = DefaultEndpointMapSize
		}
		if s.CTMapSize == 0 {
			s.CTMapSize = DefaultCTMapSize
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
	case *Config:
		c := *r
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
