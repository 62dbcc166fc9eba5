package model

import (
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Decode parses one or more YAML documents separated by "---"; empty
// documents are skipped but still counted, so "document N" matches what the
// user sees. Each resource is decoded strictly (unknown fields and wrongly
// typed values are errors), defaulted (ApplyDefaults) and validated
// (Validate).
//
// On error Decode returns no resources and an error holding one
// *ValidationError per problem in every document, joined one per line; each
// names the document, the resource, the field path and the reason. A YAML
// syntax error ends decoding, since the rest of the stream cannot be trusted.
func Decode(r io.Reader) ([]Resource, error) {
	dec := yaml.NewDecoder(r)
	var out []Resource
	var errs []*ValidationError
	for doc := 1; ; doc++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if err == io.EOF {
			break
		}
		if err != nil {
			errs = append(errs, &ValidationError{Document: doc, Reason: err.Error()})
			break
		}
		root := &n
		if root.Kind == yaml.DocumentNode {
			if len(root.Content) == 0 {
				continue
			}
			root = root.Content[0]
		}
		if isNull(root) {
			continue
		}
		res, es := decodeDocument(root)
		for _, e := range es {
			e.Document = doc
		}
		errs = append(errs, es...)
		if res != nil {
			out = append(out, res)
		}
	}
	if len(errs) > 0 {
		return nil, joinValidation(errs)
	}
	return out, nil
}

// decoder walks a yaml.Node tree by hand rather than through yaml.Decode so
// that every problem is reported with its field path and decoding goes on
// after the first one.
type decoder struct {
	errs []*ValidationError
	// failed holds the paths whose values could not be decoded; Validate's
	// complaints about the zero values left there would only be noise.
	failed []string
	// quiet holds single paths (not their subtrees) whose validation
	// errors would follow from a value elsewhere that failed to decode,
	// e.g. "ports need TCP" after a protocol that could not be read.
	quiet map[string]bool
}

func (d *decoder) errorf(path, format string, args ...any) {
	d.errs = append(d.errs, &ValidationError{Path: path, Reason: fmt.Sprintf(format, args...)})
	d.failed = append(d.failed, path)
}

// hush silences validation errors at exactly these paths.
func (d *decoder) hush(paths ...string) {
	if d.quiet == nil {
		d.quiet = map[string]bool{}
	}
	for _, p := range paths {
		d.quiet[p] = true
	}
}

// covered reports whether path is, or lies under, a path that failed to
// decode, or was hushed.
func (d *decoder) covered(path string) bool {
	if d.quiet[path] {
		return true
	}
	for _, f := range d.failed {
		if f == "" || path == f || strings.HasPrefix(path, f+".") || strings.HasPrefix(path, f+"[") {
			return true
		}
	}
	return false
}

// decodeDocument decodes one document's root node into a defaulted,
// validated resource, or returns the problems found. The errors carry the
// resource's Ref as far as the document gives it.
func decodeDocument(root *yaml.Node) (Resource, []*ValidationError) {
	d := &decoder{}
	root = resolve(root)
	var res Resource
	var ref Ref
	if root.Kind != yaml.MappingNode {
		d.errorf("", "a resource must be a mapping with apiVersion, kind, metadata and spec, got %s", describe(root))
		return nil, d.errs
	}
	var apiNode, kindNode, metaNode, specNode *yaml.Node
	d.mapping(root, "", func(key string, v *yaml.Node, _ string) bool {
		switch key {
		case "apiVersion":
			apiNode = v
		case "kind":
			kindNode = v
		case "metadata":
			metaNode = v
		case "spec":
			specNode = v
		default:
			return false
		}
		return true
	})

	if isNull(apiNode) {
		d.errorf("apiVersion", "required (must be %q)", APIVersion)
	} else if s, ok := d.str(apiNode, "apiVersion"); ok && s != APIVersion {
		d.errorf("apiVersion", "must be %q, got %q", APIVersion, s)
	}

	if isNull(kindNode) {
		d.errorf("kind", "required (one of %s)", kindList)
	} else if s, ok := d.str(kindNode, "kind"); ok {
		r, err := NewResource(s)
		if err != nil {
			reason := err.Error()
			if k, kerr := ParseKind(s); kerr == nil {
				reason = fmt.Sprintf("unknown kind %q (did you mean %q?)", s, k)
			}
			d.errorf("kind", "%s", reason)
		} else {
			res = r
			ref.Kind = s
		}
	}

	var meta Metadata
	if isNull(metaNode) {
		d.errorf("metadata", "required")
	} else {
		d.metadata(metaNode, &meta)
	}
	ref.Name = meta.Name

	if res != nil {
		*res.Meta() = meta
		if !isNull(specNode) {
			switch r := res.(type) {
			case *IPPool:
				d.ipPoolSpec(specNode, &r.Spec)
			case *Node:
				d.nodeSpec(specNode, &r.Spec)
			case *WorkloadEndpoint:
				d.endpointSpec(specNode, &r.Spec)
			case *FloatingIP:
				d.floatingIPSpec(specNode, &r.Spec)
			case *NetworkPolicy:
				d.networkPolicySpec(specNode, &r.Spec)
			case *Config:
				d.configSpec(specNode, &r.Spec)
			case *IPAMBlock:
				d.ipamBlockSpec(specNode, &r.Spec)
			case *Subnet:
				d.subnetSpec(specNode, &r.Spec)
			case *BGPConfiguration:
				d.bgpConfigurationSpec(specNode, &r.Spec)
			case *BGPPeer:
				d.bgpPeerSpec(specNode, &r.Spec)
			}
		}
		ApplyDefaults(res)
		for _, e := range validate(res) {
			if !d.covered(e.Path) {
				d.errs = append(d.errs, e)
			}
		}
	}
	for _, e := range d.errs {
		e.Ref = ref
	}
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	return res, nil
}

func (d *decoder) metadata(n *yaml.Node, m *Metadata) {
	d.mapping(n, "metadata", func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "name":
			m.Name, _ = d.str(v, p)
		case "labels":
			if isNull(v) {
				return true
			}
			labels := map[string]string{}
			d.mappingKeyed(v, p, func(k string, lv *yaml.Node, lp string) {
				if s, ok := d.str(lv, lp); ok {
					labels[k] = s
				} else if isNull(lv) {
					labels[k] = ""
				}
			})
			if len(labels) > 0 {
				m.Labels = labels
			}
		default:
			return false
		}
		return true
	})
}

func (d *decoder) ipPoolSpec(n *yaml.Node, s *IPPoolSpec) {
	blockSizeSet := false
	d.mapping(n, "spec", func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "cidr":
			s.CIDR = d.cidr(v, p, false)
		case "blockSize":
			if x, ok := d.integer(v, p, math.MinInt32, math.MaxInt32); ok {
				s.BlockSize = int(x)
				blockSizeSet = true
			}
		case "ipipMode":
			if x, ok := d.str(v, p); ok {
				s.IPIPMode = EncapMode(x)
			}
		case "vxlanMode":
			if x, ok := d.str(v, p); ok {
				s.VXLANMode = EncapMode(x)
			}
		case "natOutgoing":
			s.NATOutgoing, _ = d.boolean(v, p)
		case "nodeSelector":
			s.NodeSelector, _ = d.str(v, p)
		case "external":
			s.External, _ = d.boolean(v, p)
		case "disabled":
			s.Disabled, _ = d.boolean(v, p)
		case "disableBGPExport":
			s.DisableBGPExport, _ = d.boolean(v, p)
		default:
			return false
		}
		return true
	})
	// An explicit 0 would otherwise be silently replaced by the default.
	if blockSizeSet && s.BlockSize == 0 {
		if s.CIDR.IsValid() {
			lo, hi, fam := blockSizeRange(s.CIDR)
			d.errorf("spec.blockSize", "must be between %d and %d for %s, got 0", lo, hi, fam)
		} else {
			d.errorf("spec.blockSize", "must be between 20 and 32 for IPv4 or 116 and 128 for IPv6, got 0")
		}
	}
}

func (d *decoder) nodeSpec(n *yaml.Node, s *NodeSpec) {
	d.mapping(n, "spec", func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "ipv4Address":
			s.IPv4Address = d.hostPrefix(v, p, 24)
		case "ipv6Address":
			s.IPv6Address = d.hostPrefix(v, p, 64)
		case "asNumber":
			s.ASNumber, _ = d.asNumber(v, p)
		case "routeReflectorClusterID":
			s.RouteReflectorClusterID = d.addr(v, p)
		case "underlayInterface":
			s.UnderlayInterface, _ = d.str(v, p)
		default:
			return false
		}
		return true
	})
}

func (d *decoder) endpointSpec(n *yaml.Node, s *WorkloadEndpointSpec) {
	d.mapping(n, "spec", func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "node":
			s.Node, _ = d.str(v, p)
		case "interface":
			s.Interface, _ = d.str(v, p)
		case "mac":
			if x, ok := d.str(v, p); ok && x != "" {
				mac, err := net.ParseMAC(x)
				if err != nil {
					d.errorf(p, "%q is not a valid MAC address", x)
				} else {
					s.MAC = mac
				}
			}
		case "ipNetworks":
			d.list(v, p, func(_ int, item *yaml.Node, ip string) {
				// A placeholder keeps later indices aligned with the document,
				// so duplicate and containment errors name the right item.
				s.IPNetworks = append(s.IPNetworks, d.cidr(item, ip, true))
			})
		default:
			return false
		}
		return true
	})
}

func (d *decoder) floatingIPSpec(n *yaml.Node, s *FloatingIPSpec) {
	d.mapping(n, "spec", func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "ip":
			s.IP = d.addr(v, p)
		case "endpoint":
			s.Endpoint, _ = d.str(v, p)
		case "fixedIP":
			s.FixedIP = d.addr(v, p)
		default:
			return false
		}
		return true
	})
}

func (d *decoder) subnetSpec(n *yaml.Node, s *SubnetSpec) {
	leaseSet := false
	d.mapping(n, "spec", func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "cidr":
			s.CIDR = d.cidr(v, p, false)
		case "gatewayIP":
			s.GatewayIP = d.addr(v, p)
		case "enableDHCP":
			if b, ok := d.boolean(v, p); ok {
				s.EnableDHCP = &b
			}
		case "dnsNameservers":
			d.list(v, p, func(_ int, item *yaml.Node, ip string) {
				// A placeholder keeps later indices aligned with the document.
				s.DNSNameservers = append(s.DNSNameservers, d.listAddr(item, ip))
			})
		case "hostRoutes":
			d.list(v, p, func(_ int, item *yaml.Node, ip string) {
				s.HostRoutes = append(s.HostRoutes, d.hostRoute(item, ip))
			})
		case "leaseSeconds":
			if x, ok := d.wholeNumber(v, p, fmt.Sprintf("a number of seconds between %d and %d", MinLeaseSeconds, MaxLeaseSeconds)); ok {
				s.LeaseSeconds = x
				leaseSet = true
			}
		case "network":
			s.Network, _ = d.str(v, p)
		default:
			return false
		}
		return true
	})
	// An explicit 0 would otherwise be silently replaced by the default.
	if leaseSet && s.LeaseSeconds == 0 {
		d.errorf("spec.leaseSeconds", "%s", leaseProblem(0))
	}
}

// hostRoute reads {destination, nextHop}.
func (d *decoder) hostRoute(n *yaml.Node, path string) HostRoute {
	var r HostRoute
	d.mapping(n, path, func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "destination":
			r.Destination = d.cidr(v, p, false)
		case "nextHop":
			r.NextHop = d.addr(v, p)
		default:
			return false
		}
		return true
	})
	return r
}

// listAddr reads an address that is an item of a list, where null and ""
// are mistakes rather than a way to leave it unset.
func (d *decoder) listAddr(n *yaml.Node, path string) netip.Addr {
	if nn := resolve(n); isNull(nn) || (nn.Kind == yaml.ScalarNode && nn.ShortTag() == "!!str" && nn.Value == "") {
		d.errorf(path, "must be an IP address, got %s", describe(nn))
		return netip.Addr{}
	}
	return d.addr(n, path)
}

// wholeNumber reads an integer of any size, leaving its bounds to
// Validate, whose reason says why they are what they are; want describes
// the value for a value of another type.
func (d *decoder) wholeNumber(n *yaml.Node, path, want string) (int64, bool) {
	n = resolve(n)
	if isNull(n) {
		return 0, false
	}
	var x int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&x) != nil {
		d.errorf(path, "must be %s, got %s", want, describe(n))
		return 0, false
	}
	return x, true
}

func (d *decoder) configSpec(n *yaml.Node, s *ConfigSpec) {
	d.mapping(n, "spec", func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "vxlanVNI":
			if x, ok := d.integer(v, p, 1, maxVNI); ok {
				s.VXLANVNI = uint32(x)
			}
		case "vxlanPort":
			if x, ok := d.integer(v, p, 1, math.MaxUint16); ok {
				s.VXLANPort = uint16(x)
			}
		case "metadataAddress":
			s.MetadataAddress, _ = d.str(v, p)
		case "endpointToHostAction":
			s.EndpointToHostAction, _ = d.str(v, p)
		case "natPortRange":
			s.NATPortRange, _ = d.str(v, p)
		case "orphanFragments":
			s.OrphanFragments, _ = d.str(v, p)
		case "prefilterDeny":
			d.list(v, p, func(_ int, item *yaml.Node, ip string) {
				// A placeholder keeps later indices aligned with the document.
				s.PrefilterDeny = append(s.PrefilterDeny, d.cidr(item, ip, true))
			})
		default:
			for _, ms := range MapSizeSettings {
				if key == ms.Key {
					if x, ok := d.mapSize(v, p, ms); ok {
						if s.MapSizes == nil {
							s.MapSizes = map[string]uint32{}
						}
						s.MapSizes[key] = x
					}
					return true
				}
			}
			return false
		}
		return true
	})
}

func (d *decoder) ipamBlockSpec(n *yaml.Node, s *IPAMBlockSpec) {
	d.mapping(n, "spec", func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "cidr":
			s.CIDR = d.cidr(v, p, false)
		case "pool":
			s.Pool, _ = d.str(v, p)
		case "node":
			s.Node, _ = d.str(v, p)
		case "allocations":
			if isNull(v) {
				return true
			}
			allocs := map[netip.Addr]string{}
			d.mappingKeyed(v, p, func(k string, hv *yaml.Node, hp string) {
				a, err := netip.ParseAddr(k)
				switch {
				case err != nil:
					d.errorf(hp, "%q is not a valid IP address", k)
					return
				case a.Is4In6():
					d.errorf(hp, "%q: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form", k)
					return
				case a.Zone() != "":
					d.errorf(hp, "%q: an address with a zone (%%%s) is not allowed", k, a.Zone())
					return
				case a.String() != k:
					d.errorf(hp, "%q is not in canonical form (write %s)", k, a)
					return
				}
				if h, ok := d.str(hv, hp); ok {
					allocs[a] = h
				} else if isNull(hv) {
					d.errorf(hp, "the handle must not be empty")
				}
			})
			if len(allocs) > 0 {
				s.Allocations = allocs
			}
		default:
			return false
		}
		return true
	})
}

func (d *decoder) networkPolicySpec(n *yaml.Node, s *NetworkPolicySpec) {
	d.mapping(n, "spec", func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "order":
			if x, ok := d.number(v, p); ok {
				s.Order = &x
			}
		case "selector":
			s.Selector, _ = d.str(v, p)
		case "types":
			d.list(v, p, func(_ int, item *yaml.Node, ip string) {
				t, ok := d.str(item, ip)
				if !ok {
					if isNull(item) {
						d.errorf(ip, "must be Ingress or Egress, got null")
					}
					// Which directions were meant is unknown, so
					// complaints that rules lack theirs would be guesses.
					d.hush("spec.ingress", "spec.egress")
				}
				s.Types = append(s.Types, PolicyType(t))
			})
			if d.covered(p) {
				d.hush("spec.ingress", "spec.egress")
			}
		case "ingress":
			s.Ingress = d.rules(v, p)
		case "egress":
			s.Egress = d.rules(v, p)
		default:
			return false
		}
		return true
	})
}

func (d *decoder) rules(n *yaml.Node, path string) []Rule {
	var out []Rule
	d.list(n, path, func(_ int, item *yaml.Node, ip string) {
		// A rule that is not a mapping still takes its place, so the
		// next rule's errors carry its own index.
		out = append(out, d.rule(item, ip))
	})
	return out
}

func (d *decoder) rule(n *yaml.Node, path string) Rule {
	var r Rule
	protocolFailed := false
	d.mapping(n, path, func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "action":
			if x, ok := d.str(v, p); ok {
				r.Action = RuleAction(x)
			}
		case "protocol":
			var ok bool
			if r.Protocol, ok = d.protocol(v, p); !ok && !isNull(v) {
				protocolFailed = true
			}
		case "icmp":
			r.ICMP = d.icmp(v, p)
		case "source":
			d.entity(v, p, &r.Source)
		case "destination":
			d.entity(v, p, &r.Destination)
		default:
			return false
		}
		return true
	})
	if protocolFailed {
		// Whether ports or icmp fit the protocol cannot be told.
		for _, e := range []string{"source", "destination"} {
			d.hush(path+"."+e+".ports", path+"."+e+".notPorts")
		}
		d.hush(path + ".icmp")
	}
	return r
}

// protocol reads a protocol name (any case) or number; null leaves it 0,
// which matches every protocol. ok is false for null and for errors.
func (d *decoder) protocol(n *yaml.Node, path string) (uint8, bool) {
	n = resolve(n)
	if isNull(n) {
		return 0, false
	}
	const want = "TCP, UDP, ICMP, ICMPv6, SCTP or a number between 1 and 255"
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		x, ok := d.integer(n, path, 1, math.MaxUint8)
		return uint8(x), ok
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		d.errorf(path, "must be %s, got %s", want, describe(n))
		return 0, false
	}
	if p, ok := protocolByName(n.Value); ok {
		return p, true
	}
	// A quoted number ("6") is what a JSON client may send.
	if x, err := strconv.ParseUint(n.Value, 10, 8); err == nil && x > 0 {
		return uint8(x), true
	}
	d.errorf(path, "unknown protocol %q (want %s)", n.Value, want)
	return 0, false
}

// icmp reads {type, code}; null leaves the match unset (any type).
func (d *decoder) icmp(n *yaml.Node, path string) *ICMPMatch {
	if isNull(n) {
		return nil
	}
	m := &ICMPMatch{}
	hasType := false
	d.mapping(n, path, func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "type":
			x, ok := d.integer(v, p, 0, math.MaxUint8)
			m.Type = uint8(x)
			hasType = ok || !isNull(v)
		case "code":
			x, ok := d.integer(v, p, 0, math.MaxUint8)
			m.Code, m.HasCode = uint8(x), ok
		default:
			return false
		}
		return true
	})
	if !hasType && !d.covered(path) {
		// A code means nothing without its type, and an empty icmp is
		// more likely a mistake than a way to say "any type".
		d.errorf(path+".type", "required (omit icmp to match every ICMP type)")
	}
	return m
}

func (d *decoder) entity(n *yaml.Node, path string, e *EntityRule) {
	if isNull(n) {
		return
	}
	d.mapping(n, path, func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "nets":
			e.Nets = d.nets(v, p)
		case "notNets":
			e.NotNets = d.nets(v, p)
		case "selector":
			e.Selector, _ = d.str(v, p)
		case "notSelector":
			e.NotSelector, _ = d.str(v, p)
		case "ports":
			e.Ports = d.ports(v, p)
		case "notPorts":
			e.NotPorts = d.ports(v, p)
		default:
			return false
		}
		return true
	})
}

// nets reads a list of CIDRs in which a bare address stands for itself
// (/32 or /128), as in Calico. Items that fail leave a placeholder so
// later indices stay aligned with the document.
func (d *decoder) nets(n *yaml.Node, path string) []netip.Prefix {
	var out []netip.Prefix
	d.list(n, path, func(_ int, item *yaml.Node, ip string) {
		out = append(out, d.netOrAddr(item, ip))
	})
	return out
}

func (d *decoder) netOrAddr(n *yaml.Node, path string) netip.Prefix {
	s, ok := d.str(n, path)
	if !ok {
		if isNull(n) {
			d.errorf(path, "must be a CIDR or an IP address, got null")
		}
		return netip.Prefix{}
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		switch {
		case aerr != nil:
			d.errorf(path, "%q is not a valid CIDR or IP address", s)
			return netip.Prefix{}
		case a.Zone() != "":
			d.errorf(path, "%q: an address with a zone (%%%s) is not allowed", s, a.Zone())
			return netip.Prefix{}
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		d.errorf(path, "%q: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form", s)
		return netip.Prefix{}
	}
	return p
}

// ports reads a list of ports and port ranges. Items that fail leave a
// placeholder so later indices stay aligned with the document.
func (d *decoder) ports(n *yaml.Node, path string) []PortRange {
	var out []PortRange
	d.list(n, path, func(_ int, item *yaml.Node, ip string) {
		out = append(out, d.port(item, ip))
	})
	return out
}

// port reads an integer or a "first:last" string (or a single port as a
// string). A backwards range is kept for Validate to report, so it is
// reported the same way for resources built in Go.
func (d *decoder) port(n *yaml.Node, path string) PortRange {
	const want = `a port number (0-65535) or a "first:last" range`
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		x, _ := d.integer(n, path, 0, math.MaxUint16)
		return PortRange{uint16(x), uint16(x)}
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		d.errorf(path, "must be %s, got %s", want, describe(n))
		return PortRange{}
	}
	num := func(s string) (uint16, bool) {
		x, err := strconv.ParseUint(s, 10, 16)
		return uint16(x), err == nil
	}
	s := n.Value
	if first, last, ok := strings.Cut(s, ":"); ok {
		f, fok := num(first)
		l, lok := num(last)
		if !fok || !lok {
			d.errorf(path, "%q is not a valid port range: want %s", s, want)
			return PortRange{}
		}
		return PortRange{f, l}
	}
	if x, ok := num(s); ok {
		return PortRange{x, x}
	}
	if first, last, ok := strings.Cut(s, "-"); ok {
		if _, fok := num(first); fok {
			if _, lok := num(last); lok {
				d.errorf(path, "%q is not a valid port range: write %s:%s", s, first, last)
				return PortRange{}
			}
		}
	}
	d.errorf(path, "%q is not %s (named ports are not supported)", s, want)
	return PortRange{}
}

// number reads an integer or floating-point number. NaN and infinities
// are let through for Validate to report.
func (d *decoder) number(n *yaml.Node, path string) (float64, bool) {
	n = resolve(n)
	if isNull(n) {
		return 0, false
	}
	var x float64
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") || n.Decode(&x) != nil {
		d.errorf(path, "must be a number, got %s", describe(n))
		return 0, false
	}
	return x, true
}

// mapping calls fn for each key of the mapping n in document order; fn
// returns false for a key it does not know. Duplicate keys are errors: YAML
// decoders disagree on which one wins.
func (d *decoder) mapping(n *yaml.Node, path string, fn func(key string, v *yaml.Node, p string) bool) {
	d.mappingKeyedPath(n, path, joinPath, func(key string, v *yaml.Node, p string) {
		if !fn(key, v, p) {
			d.errorf(p, "unknown field")
		}
	})
}

// mappingKeyed walks a mapping whose keys are data (labels), naming entries
// as path["key"] since keys may contain dots.
func (d *decoder) mappingKeyed(n *yaml.Node, path string, fn func(key string, v *yaml.Node, p string)) {
	d.mappingKeyedPath(n, path, func(base, key string) string {
		return base + "[" + strconv.Quote(key) + "]"
	}, fn)
}

func (d *decoder) mappingKeyedPath(n *yaml.Node, path string, name func(base, key string) string, fn func(key string, v *yaml.Node, p string)) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.errorf(path, "must be a mapping, got %s", describe(n))
		return
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.errorf(path, "keys must be strings, got %s", describe(k))
			continue
		}
		p := name(path, k.Value)
		if seen[k.Value] {
			d.errorf(p, "duplicate field")
			continue
		}
		seen[k.Value] = true
		fn(k.Value, v, p)
	}
}

func (d *decoder) list(n *yaml.Node, path string, fn func(i int, item *yaml.Node, p string)) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(path, "must be a list, got %s", describe(n))
		return
	}
	for i, item := range n.Content {
		fn(i, resolve(item), fmt.Sprintf("%s[%d]", path, i))
	}
}

// str returns a string value; ok is false for null (unset) and for values
// of another type, which are reported.
func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	n = resolve(n)
	if isNull(n) {
		return "", false
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		d.errorf(path, "must be a string, got %s", describe(n))
		return "", false
	}
	return n.Value, true
}

func (d *decoder) integer(n *yaml.Node, path string, lo, hi int64) (int64, bool) {
	n = resolve(n)
	if isNull(n) {
		return 0, false
	}
	var x int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&x) != nil {
		d.errorf(path, "must be an integer between %d and %d, got %s", lo, hi, describe(n))
		return 0, false
	}
	if x < lo || x > hi {
		d.errorf(path, "must be between %d and %d, got %d", lo, hi, x)
		return 0, false
	}
	return x, true
}

// mapSize reads a map-size setting: 0 (the default) or a size in its range.
func (d *decoder) mapSize(n *yaml.Node, path string, ms MapSizeSetting) (uint32, bool) {
	x, ok := d.integer(n, path, 0, math.MaxUint32)
	if !ok {
		return 0, false
	}
	if x != 0 && (x < int64(ms.Min) || x > int64(ms.Max)) {
		d.errorf(path, "must be 0 (the default, %d) or between %d and %d, got %d", ms.Default, ms.Min, ms.Max, x)
		return 0, false
	}
	return uint32(x), true
}

func (d *decoder) boolean(n *yaml.Node, path string) (bool, bool) {
	n = resolve(n)
	if isNull(n) {
		return false, false
	}
	var b bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		d.errorf(path, "must be true or false, got %s", describe(n))
		return false, false
	}
	return b, true
}

// cidr parses a prefix; on failure it reports and returns the zero Prefix.
// hostHint suggests the /32 or /128 form for a bare address.
func (d *decoder) cidr(n *yaml.Node, path string, hostHint bool) netip.Prefix {
	s, ok := d.str(n, path)
	if !ok {
		if isNull(n) {
			d.errorf(path, "must be a CIDR, got null")
		}
		return netip.Prefix{}
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if a, aerr := netip.ParseAddr(s); aerr == nil && hostHint {
			d.errorf(path, "%q is not a valid CIDR (write %s/%d)", s, a, a.BitLen())
		} else {
			d.errorf(path, "%q is not a valid CIDR", s)
		}
		return netip.Prefix{}
	}
	if p.Addr().Is4In6() {
		d.errorf(path, "%q is not a valid CIDR: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form", s)
		return netip.Prefix{}
	}
	return p
}

// addr parses a bare address; null and "" leave it unset (the zero Addr).
// On failure it reports and returns the zero Addr.
func (d *decoder) addr(n *yaml.Node, path string) netip.Addr {
	s, ok := d.str(n, path)
	if !ok || s == "" {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		if p, perr := netip.ParsePrefix(s); perr == nil {
			d.errorf(path, "%q is not a valid IP address: give the address alone, without a prefix length (write %s)", s, p.Addr())
		} else {
			d.errorf(path, "%q is not a valid IP address", s)
		}
		return netip.Addr{}
	}
	switch {
	case a.Is4In6():
		d.errorf(path, "%q: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form", s)
		return netip.Addr{}
	case a.Zone() != "":
		d.errorf(path, "%q: an address with a zone (%%%s) is not allowed", s, a.Zone())
		return netip.Addr{}
	}
	return a
}

// hostPrefix parses an address with its subnet's prefix length, keeping the
// host bits.
func (d *decoder) hostPrefix(n *yaml.Node, path string, exampleBits int) netip.Prefix {
	s, ok := d.str(n, path)
	if !ok || s == "" {
		return netip.Prefix{}
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if a, aerr := netip.ParseAddr(s); aerr == nil {
			d.errorf(path, "%q has no prefix length; give the address with its subnet's prefix length, e.g. %s/%d", s, a, exampleBits)
		} else {
			d.errorf(path, "%q is not a valid address with prefix length (e.g. 10.30.0.10/24)", s)
		}
		return netip.Prefix{}
	}
	if p.Addr().Is4In6() {
		d.errorf(path, "%q: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form", s)
		return netip.Prefix{}
	}
	return p
}

func joinPath(base, key string) string {
	if base == "" {
		return key
	}
	return base + "." + key
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// describe names a value's type for "must be X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return strconv.Quote(n.Value)
		case "!!null":
			return "null"
		case "!!bool":
			return "boolean " + n.Value
		case "!!int":
			return "integer " + n.Value
		case "!!float":
			return "number " + n.Value
		}
		return n.ShortTag() + " " + strconv.Quote(n.Value)
	}
	return "an unsupported YAML node"
}
