package model

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/calyxnet/calyx/selector"
)

const maxVNI = 1<<24 - 1

// Validate checks one resource on its own: required fields, formats, ranges
// and combinations within its spec. Zero values that have a default are
// accepted, so a resource need not be defaulted first. It returns nil, or
// one *ValidationError per problem joined one per line.
func Validate(r Resource) error { return joinValidation(validate(r)) }

type validator struct {
	ref  Ref
	errs []*ValidationError
}

func (v *validator) errorf(path, format string, args ...any) {
	v.errs = append(v.errs, &ValidationError{Ref: v.ref, Path: path, Reason: fmt.Sprintf(format, args...)})
}

func validate(r Resource) []*ValidationError {
	v := &validator{ref: RefOf(r)}
	v.metadata(r.Meta(), r.Kind())
	switch r := r.(type) {
	case *IPPool:
		v.ipPool(&r.Spec)
	case *Node:
		v.node(&r.Spec)
	case *WorkloadEndpoint:
		v.endpoint(&r.Spec)
	case *FloatingIP:
		v.floatingIP(&r.Spec)
	case *NetworkPolicy:
		v.networkPolicy(&r.Spec)
	case *Config:
		v.config(&r.Spec)
	case *IPAMBlock:
		v.ipamBlock(r)
	case *Subnet:
		v.subnet(&r.Spec)
	case *BGPConfiguration:
		v.bgpConfiguration(&r.Spec)
	case *BGPPeer:
		v.bgpPeer(&r.Spec)
	default:
		v.errorf("kind", "unsupported resource type %T", r)
	}
	return v.errs
}

func (v *validator) metadata(m *Metadata, kind string) {
	switch {
	case m.Name == "":
		v.errorf("metadata.name", "required")
	case kind == KindConfig && m.Name != ConfigName:
		v.errorf("metadata.name", "must be %q (there is one Config), got %q", ConfigName, m.Name)
	case kind == KindBGPConfiguration && m.Name != BGPConfigurationName:
		v.errorf("metadata.name", "must be %q, got %q: there is one BGPConfiguration, shared by every node; a node's own AS is its Node.spec.asNumber "+
			"(Calico's per-node \"node.<name>\" configurations are not supported)", BGPConfigurationName, m.Name)
	default:
		if !validName(m.Name) {
			v.errorf("metadata.name", "%q is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters", m.Name)
		}
	}
	for _, k := range sortedKeys(m.Labels) {
		p := "metadata.labels[" + strconv.Quote(k) + "]"
		if why := labelKeyProblem(k); why != "" {
			v.errorf(p, "invalid label key: %s", why)
		}
		if why := labelValueProblem(m.Labels[k]); why != "" {
			v.errorf(p, "invalid label value %q: %s", m.Labels[k], why)
		}
	}
}

// blockSizeRange returns the allowed block sizes for a pool's family; the
// bounds keep the number of blocks per pool and addresses per block sane.
func blockSizeRange(cidr netip.Prefix) (lo, hi int, family string) {
	if cidr.Addr().Is4() {
		return 20, 32, "IPv4"
	}
	return 116, 128, "IPv6"
}

type reservedRange struct {
	name   string
	prefix netip.Prefix
}

// reservedRanges are ranges no pool may overlap: the dataplane could never
// route workload traffic to or from them.
var reservedRanges = []reservedRange{
	{"IPv4 \"this network\"", netip.MustParsePrefix("0.0.0.0/8")},
	{"IPv4 loopback", netip.MustParsePrefix("127.0.0.0/8")},
	{"IPv4 link-local", netip.MustParsePrefix("169.254.0.0/16")},
	{"IPv4 multicast", netip.MustParsePrefix("224.0.0.0/4")},
	{"IPv6 unspecified", netip.MustParsePrefix("::/128")},
	{"IPv6 loopback", netip.MustParsePrefix("::1/128")},
	{"IPv4-mapped IPv6", netip.MustParsePrefix("::ffff:0:0/96")},
	{"IPv6 link-local", netip.MustParsePrefix("fe80::/10")},
	{"IPv6 multicast", netip.MustParsePrefix("ff00::/8")},
}

func (v *validator) ipPool(s *IPPoolSpec) {
	if !s.CIDR.IsValid() {
		v.errorf("spec.cidr", "required")
	} else {
		if m := s.CIDR.Masked(); m != s.CIDR {
			v.errorf("spec.cidr", "%s has host bits set; did you mean %s?", s.CIDR, m)
		}
		for _, rr := range reservedRanges {
			if rr.prefix.Overlaps(s.CIDR) {
				v.errorf("spec.cidr", "%s overlaps the %s range %s", s.CIDR, rr.name, rr.prefix)
				break
			}
		}
		bs := s.effectiveBlockSize()
		lo, hi, fam := blockSizeRange(s.CIDR)
		switch {
		case bs < lo || bs > hi:
			v.errorf("spec.blockSize", "must be between %d and %d for %s, got %d", lo, hi, fam, bs)
		case bs < s.CIDR.Bits():
			v.errorf("spec.blockSize", "must be at least the cidr's prefix length %d (a block cannot be larger than its pool), got %d", s.CIDR.Bits(), bs)
		}
	}
	v.encapMode("spec.ipipMode", s.IPIPMode)
	v.encapMode("spec.vxlanMode", s.VXLANMode)
	if s.IPIPMode.Enabled() && s.VXLANMode.Enabled() {
		v.errorf("spec", "ipipMode and vxlanMode cannot both be enabled")
	}
	if s.NodeSelector != "" && strings.TrimSpace(s.NodeSelector) == "" {
		v.errorf("spec.nodeSelector", "must not be blank (omit it to select all nodes)")
	}
}

// effectiveBlockSize returns BlockSize, or its default for the pool's
// family when it is unset.
func (s *IPPoolSpec) effectiveBlockSize() int {
	switch {
	case s.BlockSize != 0 || !s.CIDR.IsValid():
		return s.BlockSize
	case s.CIDR.Addr().Is4():
		return DefaultBlockSizeV4
	}
	return DefaultBlockSizeV6
}

// ipamBlock checks what a block says about itself; where it lies relative
// to its pool is checked with the snapshot.
func (v *validator) ipamBlock(b *IPAMBlock) {
	s := &b.Spec
	switch cidr := s.CIDR; {
	case !cidr.IsValid():
		v.errorf("spec.cidr", "required")
	case cidr.Addr().Is4In6():
		v.errorf("spec.cidr", "%s: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form", cidr)
	case cidr.Masked() != cidr:
		v.errorf("spec.cidr", "%s has host bits set; did you mean %s?", cidr, cidr.Masked())
	default:
		if want := BlockName(cidr); b.Metadata.Name != "" && b.Metadata.Name != want {
			v.errorf("metadata.name", "must be %q for the block %s (its cidr with '.', ':' and '/' written as '-'), got %q", want, cidr, b.Metadata.Name)
		}
	}
	switch {
	case s.Pool == "":
		v.errorf("spec.pool", "required (the IPPool the block was carved from)")
	case !validName(s.Pool):
		v.errorf("spec.pool", "%q is not a valid IPPool name", s.Pool)
	}
	switch {
	case s.Node == "":
		v.errorf("spec.node", "required (the node holding the block)")
	case !validName(s.Node):
		v.errorf("spec.node", "%q is not a valid node name", s.Node)
	}
	addrs := make([]netip.Addr, 0, len(s.Allocations))
	for a := range s.Allocations {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	for _, a := range addrs {
		path := "spec.allocations[" + strconv.Quote(addrString(a)) + "]"
		switch {
		case !a.IsValid():
			v.errorf(path, "not a valid IP address")
		case a.Zone() != "":
			v.errorf(path, "%s: an address with a zone is not allowed", a)
		case s.CIDR.IsValid() && !s.CIDR.Contains(a):
			v.errorf(path, "%s is outside the block %s", a, s.CIDR)
		}
		if s.Allocations[a] == "" {
			v.errorf(path, "the handle must not be empty")
		}
	}
}

// Longest subnet prefixes: a subnet needs room for its network address,
// its gateway and at least one instance.
const (
	maxSubnetBitsV4 = 30
	maxSubnetBitsV6 = 126
)

func (v *validator) subnet(s *SubnetSpec) {
	cidr := s.CIDR
	cidrOK := false
	switch {
	case !cidr.IsValid():
		v.errorf("spec.cidr", "required (the subnet's network prefix, e.g. 10.65.0.0/24 or fd00:65::/64)")
	case cidr.Addr().Is4In6():
		v.errorf("spec.cidr", "%s: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form", cidr)
	case cidr.Addr().Zone() != "":
		v.errorf("spec.cidr", "%s: an address with a zone is not allowed", cidr)
	case cidr.Masked() != cidr:
		hint := ""
		if !s.GatewayIP.IsValid() && cidr.Addr() != lastAddr(cidr) {
			hint = fmt.Sprintf(" (and gatewayIP: %s)", cidr.Addr())
		}
		v.errorf("spec.cidr", "%s has host bits set: the cidr is the subnet's network prefix, with the host bits zero; did you mean %s%s?", cidr, cidr.Masked(), hint)
	default:
		cidrOK = true
		for _, rr := range reservedRanges {
			if rr.prefix.Overlaps(cidr) {
				v.errorf("spec.cidr", "%s overlaps the %s range %s; instances cannot be given addresses there", cidr, rr.name, rr.prefix)
				cidrOK = false
				break
			}
		}
		maxBits := maxSubnetBitsV4
		if cidr.Addr().Is6() {
			maxBits = maxSubnetBitsV6
		}
		if cidrOK && cidr.Bits() > maxBits {
			v.errorf("spec.cidr", "%s is too small: a subnet needs its network address, the gateway and at least one instance, so its prefix length is at most /%d", cidr, maxBits)
			cidrOK = false
		}
	}
	family := func(a netip.Addr) string {
		if a.Is4() {
			return "IPv4"
		}
		return "IPv6"
	}
	// example is a gateway that would do.
	example := ""
	if cidrOK {
		example = cidr.Addr().Next().String()
	}

	gw := s.GatewayIP
	gwOK := false
	switch {
	case !gw.IsValid():
		if example != "" {
			v.errorf("spec.gatewayIP", "required: the instances' router, which stands for the local host on every host (e.g. %s)", example)
		} else {
			v.errorf("spec.gatewayIP", "required: the instances' router, which stands for the local host on every host")
		}
	case gw.Is4In6():
		v.errorf("spec.gatewayIP", "%s: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form", gw)
	case gw.Zone() != "":
		v.errorf("spec.gatewayIP", "%s: an address with a zone (%%%s) is not allowed", gw, gw.Zone())
	case !cidrOK:
		// Where the gateway lies cannot be judged without the subnet.
	case gw.Is4() != cidr.Addr().Is4():
		v.errorf("spec.gatewayIP", "%s is an %s address, but spec.cidr %s is %s; the gateway is an address of the subnet (e.g. %s)",
			gw, family(gw), cidr, family(cidr.Addr()), example)
	case !cidr.Contains(gw):
		v.errorf("spec.gatewayIP", "%s is outside spec.cidr %s; the gateway is an address of the subnet (e.g. %s)", gw, cidr, example)
	case gw == cidr.Addr():
		v.errorf("spec.gatewayIP", "%s is the network address of %s, not a host address; use one such as %s", gw, cidr, example)
	case gw.Is4() && gw == lastAddr(cidr):
		v.errorf("spec.gatewayIP", "%s is the broadcast address of %s, not a host address; use one such as %s", gw, cidr, example)
	default:
		gwOK = true
	}

	seenDNS := make(map[netip.Addr]int, len(s.DNSNameservers))
	for i, a := range s.DNSNameservers {
		path := fmt.Sprintf("spec.dnsNameservers[%d]", i)
		switch {
		case !a.IsValid():
			v.errorf(path, "not a valid IP address")
			continue
		case a.Is4In6():
			v.errorf(path, "%s: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form", a)
			continue
		case a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}), a.IsUnspecified(), a.IsMulticast(), a.IsLoopback():
			v.errorf(path, "%s is %s; a nameserver is a unicast address the instances can reach", a, specialAddress(a))
			continue
		case cidrOK && a.Is4() && cidr.Addr().Is6():
			v.errorf(path, "%s is an IPv4 address, but the subnet %s is IPv6: router advertisements and DHCPv6 give instances IPv6 nameservers only; list it on the IPv4 subnet", a, cidr)
			continue
		case cidrOK && a.Is6() && cidr.Addr().Is4():
			v.errorf(path, "%s is an IPv6 address, but the subnet %s is IPv4: DHCPv4 gives instances IPv4 nameservers only; list it on the IPv6 subnet", a, cidr)
			continue
		}
		if j, dup := seenDNS[a]; dup {
			v.errorf(path, "%s is listed twice (also spec.dnsNameservers[%d])", a, j)
			continue
		}
		seenDNS[a] = i
	}

	seenDst := make(map[netip.Prefix]int, len(s.HostRoutes))
	for i, r := range s.HostRoutes {
		path := fmt.Sprintf("spec.hostRoutes[%d]", i)
		switch dst := r.Destination; {
		case !dst.IsValid():
			v.errorf(path+".destination", "required (the network the route leads to, e.g. 11.11.0.0/16)")
		case cidrProblem(dst) != "":
			v.errorf(path+".destination", "%s", cidrProblem(dst))
		case cidrOK && dst.Addr().Is4() != cidr.Addr().Is4():
			v.errorf(path+".destination", "%s is %s, but the subnet %s is %s; a host route is of its subnet's family",
				dst, family(dst.Addr()), cidr, family(cidr.Addr()))
		case dst.Bits() == 0:
			via := "the gatewayIP"
			if gwOK {
				via += " " + gw.String()
			}
			v.errorf(path+".destination", "%s is the default route, which instances already have via %s; omit it", dst, via)
		default:
			if j, dup := seenDst[dst]; dup {
				v.errorf(path+".destination", "%s is listed twice (also spec.hostRoutes[%d])", dst, j)
			} else {
				seenDst[dst] = i
			}
		}
		switch nh := r.NextHop; {
		case !nh.IsValid():
			if gwOK {
				v.errorf(path+".nextHop", "required: use nextHop: %s (the subnet's gatewayIP)", gw)
			} else {
				v.errorf(path+".nextHop", "required (the subnet's gatewayIP)")
			}
		case gwOK && nh != gw:
			v.errorf(path+".nextHop", "%s is not the subnet's gatewayIP %s: the local host is every instance's first hop and routes all its traffic, "+
				"so a route via any other next hop could never be followed; use nextHop: %s", nh, gw, gw)
		}
	}

	if s.LeaseSeconds != 0 {
		if why := leaseProblem(s.LeaseSeconds); why != "" {
			v.errorf("spec.leaseSeconds", "%s", why)
		}
	}
	if s.Network != "" && !validName(s.Network) {
		v.errorf("spec.network", "%q is not a valid network name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters", s.Network)
	}
}

// leaseProblem explains why x cannot be a lease time, or returns "".
func leaseProblem(x int64) string {
	if x >= MinLeaseSeconds && x <= MaxLeaseSeconds {
		return ""
	}
	return fmt.Sprintf("must be between %d and %d seconds, got %d: clients renew at half the lease, so a shorter one keeps them asking, "+
		"and a longer one does not fit DHCP's 32-bit lease time (omit it for %d, a day)", MinLeaseSeconds, MaxLeaseSeconds, x, DefaultLeaseSeconds)
}

func (v *validator) encapMode(path string, m EncapMode) {
	switch m {
	case "", EncapNever, EncapAlways, EncapCrossSubnet:
	default:
		v.errorf(path, "must be one of Never, Always, CrossSubnet, got %q", string(m))
	}
}

func (v *validator) node(s *NodeSpec) {
	if !s.IPv4Address.IsValid() && !s.IPv6Address.IsValid() {
		v.errorf("spec.ipv4Address", "required (give ipv4Address, ipv6Address or both)")
	}
	if p := s.IPv4Address; p.IsValid() {
		if !p.Addr().Is4() {
			v.errorf("spec.ipv4Address", "must be an IPv4 address with prefix length, got %s", p)
		} else if why := hostAddressProblem(p); why != "" {
			v.errorf("spec.ipv4Address", "%s", why)
		}
	}
	if p := s.IPv6Address; p.IsValid() {
		if !p.Addr().Is6() || p.Addr().Is4In6() {
			v.errorf("spec.ipv6Address", "must be an IPv6 address with prefix length, got %s", p)
		} else if why := hostAddressProblem(p); why != "" {
			v.errorf("spec.ipv6Address", "%s", why)
		}
	}
	if s.ASNumber != 0 {
		if why := asNumberProblem(int64(s.ASNumber)); why != "" {
			v.errorf("spec.asNumber", "%s", why)
		}
	}
	if a := s.RouteReflectorClusterID; a.IsValid() {
		if why := clusterIDProblem(a); why != "" {
			v.errorf("spec.routeReflectorClusterID", "%s", why)
		}
	}
	if s.UnderlayInterface != "" {
		if why := ifnameProblem(s.UnderlayInterface); why != "" {
			v.errorf("spec.underlayInterface", "%q is not a valid interface name: %s", s.UnderlayInterface, why)
		}
	}
}

// hostAddressProblem explains why p cannot be a node's underlay address, or
// returns "".
func hostAddressProblem(p netip.Prefix) string {
	a := p.Addr()
	if why := specialAddress(a); why != "" {
		return fmt.Sprintf("%s is %s, not a host address", a, why)
	}
	if a.Is4() && p.Bits() < 31 {
		// A subnet written where the host's address belongs is the usual
		// mistake here, e.g. 10.30.0.0/24 for 10.30.0.10/24.
		if a == p.Masked().Addr() {
			return fmt.Sprintf("%s is the network address of %s; give the node's own address, e.g. %s/%d", a, p.Masked(), a.Next(), p.Bits())
		}
		if a == lastAddr(p) {
			return fmt.Sprintf("%s is the broadcast address of %s; give the node's own address", a, p.Masked())
		}
	}
	return ""
}

// specialAddress names the kind of a non-unicast or non-routable address, or
// returns "" for an ordinary unicast address.
func specialAddress(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "the unspecified address"
	case a.IsLoopback():
		return "a loopback address"
	case a.IsMulticast():
		return "a multicast address"
	case a.IsLinkLocalUnicast():
		return "a link-local address"
	case a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the broadcast address"
	}
	return ""
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	host := p.Addr().BitLen() - p.Bits()
	for i := len(b) - 1; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func (v *validator) endpoint(s *WorkloadEndpointSpec) {
	switch {
	case s.Node == "":
		v.errorf("spec.node", "required")
	case !validName(s.Node):
		v.errorf("spec.node", "%q is not a valid node name", s.Node)
	}
	if s.Interface == "" {
		v.errorf("spec.interface", "required")
	} else if why := ifnameProblem(s.Interface); why != "" {
		v.errorf("spec.interface", "%q is not a valid interface name: %s", s.Interface, why)
	} else if s.Interface == "lo" {
		v.errorf("spec.interface", "%q is the host's loopback interface: a workload's interface is its own tap or veth", s.Interface)
	}
	if len(s.MAC) > 0 {
		switch {
		case len(s.MAC) != 6:
			v.errorf("spec.mac", "%s is not a 6-byte Ethernet MAC address", s.MAC)
		case s.MAC[0]&1 != 0:
			v.errorf("spec.mac", "%s is a multicast MAC address; a workload's MAC must be unicast (clear the lowest bit of the first octet)", s.MAC)
		case string(s.MAC) == "\x00\x00\x00\x00\x00\x00":
			v.errorf("spec.mac", "must not be all zeros")
		}
	}
	if len(s.IPNetworks) == 0 {
		v.errorf("spec.ipNetworks", "at least one address is required")
	}
	seen := make(map[netip.Addr]int, len(s.IPNetworks))
	for i, p := range s.IPNetworks {
		path := fmt.Sprintf("spec.ipNetworks[%d]", i)
		switch {
		case !p.IsValid():
			v.errorf(path, "not a valid CIDR")
			continue
		case p.Addr().Is4In6():
			v.errorf(path, "%s: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form", p)
			continue
		case p.Bits() != p.Addr().BitLen():
			v.errorf(path, "%s must be a single address (/%d)", p, p.Addr().BitLen())
			continue
		}
		if why := specialAddress(p.Addr()); why != "" {
			v.errorf(path, "%s is %s; a workload needs a unicast address", p, why)
			continue
		}
		if j, dup := seen[p.Addr()]; dup {
			v.errorf(path, "%s is listed twice (also spec.ipNetworks[%d])", p, j)
			continue
		}
		seen[p.Addr()] = i
	}
}

func (v *validator) floatingIP(s *FloatingIPSpec) {
	if !s.IP.IsValid() {
		v.errorf("spec.ip", "required")
	} else if why := floatingAddrProblem(s.IP); why != "" {
		v.errorf("spec.ip", "%s", why)
	}
	switch {
	case s.Endpoint == "":
		v.errorf("spec.endpoint", "required (the name of a WorkloadEndpoint)")
	case !validName(s.Endpoint):
		v.errorf("spec.endpoint", "%q is not a valid WorkloadEndpoint name", s.Endpoint)
	}
	if a := s.FixedIP; a.IsValid() {
		switch {
		case a.Is4In6():
			v.errorf("spec.fixedIP", "%s: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form", a)
		case !a.Is4():
			v.errorf("spec.fixedIP", "%s is an IPv6 address; the fixed IP of an IPv4 floating IP must be one of the endpoint's IPv4 addresses", a)
		default:
			if why := specialAddress(a); why != "" {
				v.errorf("spec.fixedIP", "%s is %s; the fixed IP must be one of the endpoint's unicast addresses", a, why)
			}
		}
	}
}

// floatingAddrProblem explains why a cannot be a floating IP, or returns "".
func floatingAddrProblem(a netip.Addr) string {
	switch {
	case a.Is4In6():
		return fmt.Sprintf("%s: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form", a)
	case !a.Is4():
		return fmt.Sprintf("%s is an IPv6 address; IPv6 floating IPs are not supported yet", a)
	}
	if why := specialAddress(a); why != "" {
		return fmt.Sprintf("%s is %s; a floating IP must be a unicast host address", a, why)
	}
	return ""
}

func (v *validator) networkPolicy(s *NetworkPolicySpec) {
	if o := s.Order; o != nil && (math.IsNaN(*o) || math.IsInf(*o, 0)) {
		v.errorf("spec.order", "must be a finite number, got %v", *o)
	}
	v.selector("spec.selector", s.Selector, "omit it to select every endpoint")

	typesOK := true
	seen := make(map[PolicyType]int, len(s.Types))
	for i, t := range s.Types {
		path := fmt.Sprintf("spec.types[%d]", i)
		if t != PolicyIngress && t != PolicyEgress {
			v.errorf(path, "must be Ingress or Egress, got %q%s", string(t), didYouMean(string(t), string(PolicyIngress), string(PolicyEgress)))
			typesOK = false
			continue
		}
		if j, dup := seen[t]; dup {
			v.errorf(path, "%s is listed twice (also spec.types[%d])", t, j)
			continue
		}
		seen[t] = i
	}
	// Empty types are defaulted to fit the rules. With a misspelt type
	// the direction it was meant to name is already reported.
	if len(s.Types) > 0 && typesOK {
		for _, d := range []struct {
			path  string
			t     PolicyType
			rules []Rule
		}{{"spec.ingress", PolicyIngress, s.Ingress}, {"spec.egress", PolicyEgress, s.Egress}} {
			if len(d.rules) > 0 && !slices.Contains(s.Types, d.t) {
				v.errorf(d.path, "has rules but spec.types does not include %s", d.t)
			}
		}
	}
	for i := range s.Ingress {
		v.rule(fmt.Sprintf("spec.ingress[%d]", i), &s.Ingress[i])
	}
	for i := range s.Egress {
		v.rule(fmt.Sprintf("spec.egress[%d]", i), &s.Egress[i])
	}
}

func (v *validator) rule(path string, r *Rule) {
	switch r.Action {
	case "":
		v.errorf(path+".action", "required (one of Allow, Deny, Log, Pass)")
	case RuleAllow, RuleDeny, RuleLog, RulePass:
	default:
		v.errorf(path+".action", "must be one of Allow, Deny, Log, Pass, got %q%s", string(r.Action),
			didYouMean(string(r.Action), string(RuleAllow), string(RuleDeny), string(RuleLog), string(RulePass)))
	}
	if r.ICMP != nil && r.Protocol != ProtoICMP && r.Protocol != ProtoICMPv6 {
		v.errorf(path+".icmp", "only valid with protocol ICMP or ICMPv6, %s", protocolGiven(r.Protocol))
	}
	v.entity(path+".source", &r.Source, r.Protocol)
	v.entity(path+".destination", &r.Destination, r.Protocol)
}

// protocolGiven completes "only valid with protocol X, ..." for a rule's
// protocol.
func protocolGiven(p uint8) string {
	if p == 0 {
		return "but the rule has no protocol"
	}
	return "got protocol " + ProtocolName(p)
}

func (v *validator) entity(path string, e *EntityRule, proto uint8) {
	v.nets(path+".nets", e.Nets)
	v.nets(path+".notNets", e.NotNets)
	v.selector(path+".selector", e.Selector, "omit it to match any endpoint or address")
	v.selector(path+".notSelector", e.NotSelector, "omit it to exclude nothing")
	for _, f := range []struct {
		name  string
		ports []PortRange
	}{{"ports", e.Ports}, {"notPorts", e.NotPorts}} {
		if len(f.ports) == 0 {
			continue
		}
		if proto != ProtoTCP && proto != ProtoUDP && proto != ProtoSCTP {
			v.errorf(path+"."+f.name, "only valid with protocol TCP, UDP or SCTP, %s", protocolGiven(proto))
		}
		for i, r := range f.ports {
			if r.First > r.Last {
				v.errorf(fmt.Sprintf("%s.%s[%d]", path, f.name, i), "invalid port range %d:%d: the first port is greater than the last (did you mean %d:%d?)",
					r.First, r.Last, r.Last, r.First)
			}
		}
	}
}

func (v *validator) nets(path string, ps []netip.Prefix) {
	for i, p := range ps {
		if why := cidrProblem(p); why != "" {
			v.errorf(fmt.Sprintf("%s[%d]", path, i), "%s", why)
		}
	}
}

// cidrProblem explains why p is not a usable network, or returns "".
func cidrProblem(p netip.Prefix) string {
	switch {
	case !p.IsValid():
		return "not a valid CIDR"
	case p.Addr().Is4In6():
		return fmt.Sprintf("%s: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form", p)
	case p.Masked() != p:
		// 10.1.2.3/8 is more likely a typo for a /32 or for 10.0.0.0/8
		// than a way to write the latter.
		return fmt.Sprintf("%s has host bits set; did you mean %s?", p, p.Masked())
	}
	return ""
}

// selector reports a selector that does not parse; "" is valid (unset).
// omit tells the user what leaving the field out would mean.
func (v *validator) selector(path, s, omit string) {
	if s == "" {
		return
	}
	if strings.TrimSpace(s) == "" {
		v.errorf(path, "must not be blank (%s)", omit)
		return
	}
	if _, err := selector.Parse(s); err != nil {
		v.errorf(path, "%s", selectorProblem(s, err))
	}
}

// selectorProblem renders a parse error on one line with the column
// (from 1) where the selector stopped making sense; the parser's reason
// names what it found there.
func selectorProblem(s string, err error) string {
	var pe *selector.ParseError
	if !errors.As(err, &pe) {
		return fmt.Sprintf("invalid selector %q: %v", s, err)
	}
	return fmt.Sprintf("invalid selector %q: at column %d: %s", s, pe.Pos+1, pe.Reason)
}

// didYouMean returns ` (did you mean "X"?)` when got differs from one of
// want only in case, else "".
func didYouMean(got string, want ...string) string {
	for _, w := range want {
		if strings.EqualFold(got, w) {
			return fmt.Sprintf(" (did you mean %q?)", w)
		}
	}
	return ""
}

func (v *validator) config(s *ConfigSpec) {
	if s.VXLANVNI > maxVNI {
		v.errorf("spec.vxlanVNI", "must be between 1 and %d, got %d", maxVNI, s.VXLANVNI)
	}
	if s.MetadataAddress != "" {
		if why := hostPortProblem(s.MetadataAddress); why != "" {
			v.errorf("spec.metadataAddress", "%q is not a valid IP:port address: %s", s.MetadataAddress, why)
		}
	}
	switch s.EndpointToHostAction {
	case "", ActionDrop, ActionAccept, ActionReturn:
	default:
		v.errorf("spec.endpointToHostAction", "must be one of Drop, Accept, Return, got %q", s.EndpointToHostAction)
	}
	switch s.OrphanFragments {
	case "", ActionDrop, ActionPass:
	default:
		v.errorf("spec.orphanFragments", "must be Drop or Pass, got %q", s.OrphanFragments)
	}
	if s.NATPortRange != "" {
		if _, _, err := parsePortRange(s.NATPortRange); err != nil {
			v.errorf("spec.natPortRange", "%q: %v", s.NATPortRange, err)
		}
	}
	seen := make(map[netip.Prefix]int, len(s.PrefilterDeny))
	for i, p := range s.PrefilterDeny {
		path := fmt.Sprintf("spec.prefilterDeny[%d]", i)
		if why := cidrProblem(p); why != "" {
			v.errorf(path, "%s", why)
			continue
		}
		if j, dup := seen[p]; dup {
			v.errorf(path, "%s is listed twice (also spec.prefilterDeny[%d])", p, j)
			continue
		}
		seen[p] = i
	}
}

func hostPortProblem(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "want IP:PORT (IPv6 as [ADDR]:PORT)"
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return "the host must be an IP address"
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return "the port must be between 1 and 65535"
	}
	return ""
}

// validName reports whether s is a DNS-1123 subdomain: lowercase
// alphanumeric labels joined by '.', with '-' inside labels, at most 253
// characters. Names become file names in the file datastore, which this
// also keeps safe ("." and ".." cannot pass).
func validName(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		switch {
		case alnum:
		case c == '-':
			if i == 0 || i == len(s)-1 || s[i-1] == '.' || s[i+1] == '.' {
				return false
			}
		case c == '.':
			if i == 0 || i == len(s)-1 || s[i-1] == '.' {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// ifnameProblem applies the kernel's dev_valid_name rules.
func ifnameProblem(s string) string {
	switch {
	case len(s) > 15:
		return "at most 15 bytes"
	case s == "." || s == "..":
		return "must not be \".\" or \"..\""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '/' || c == ':' || c <= ' ' || c == 0x7f {
			return "must not contain '/', ':', whitespace or control characters"
		}
	}
	return ""
}

// labelKeyProblem applies Kubernetes' rules for label keys ([prefix/]name),
// so selectors written for Calico keep working.
func labelKeyProblem(k string) string {
	name := k
	if prefix, rest, ok := strings.Cut(k, "/"); ok {
		if !validName(prefix) {
			return "the prefix before '/' must be a DNS subdomain (lowercase letters, digits, '-' and '.')"
		}
		name = rest
	}
	if name == "" {
		return "the name part must not be empty"
	}
	if len(name) > 63 {
		return "the name part must be at most 63 characters"
	}
	if !qualifiedName(name) {
		return "the name part must consist of letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
	}
	return ""
}

func labelValueProblem(v string) string {
	if v == "" {
		return ""
	}
	if len(v) > 63 {
		return "must be at most 63 characters"
	}
	if !qualifiedName(v) {
		return "must consist of letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
	}
	return ""
}

func qualifiedName(s string) bool {
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	if s == "" || !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}
