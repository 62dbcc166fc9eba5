package model

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/calyxnet/calyx/selector"
)

// BGP resources, in Calico's shape: one BGPConfiguration ("default") with
// the settings every node shares, BGPPeers for the routers outside calyx
// (the data center's gateway, top-of-rack switches), and on each Node its
// own asNumber and routeReflectorClusterID. BGPSettingsFor resolves them
// for one node, which is what its BGP speaker runs.

// BGPConfigurationName is the only name a BGPConfiguration may have.
const BGPConfigurationName = "default"

// Defaults of BGPConfiguration.
const (
	DefaultASNumber               = 64512
	DefaultBGPListenPort          = 179
	DefaultLogSeverityScreen      = "Info"
	DefaultGracefulRestartSeconds = 120
	// MaxGracefulRestartSeconds is the largest restart time the graceful
	// restart capability can carry: it is a 12-bit field (RFC 4724).
	MaxGracefulRestartSeconds = 4095
	// asTrans is AS_TRANS (RFC 6793), which 2-byte speakers see in place of
	// a 4-byte AS: no AS may be numbered so.
	asTrans = 23456
)

// LogSeverities are the values of BGPConfiguration.spec.logSeverityScreen,
// as Calico spells them.
var LogSeverities = []string{"Debug", "Info", "Warning", "Error", "Fatal"}

// BGPConfiguration holds the BGP settings every node shares. There is one,
// named "default"; without it the defaults are in force.
type BGPConfiguration struct {
	Metadata Metadata
	Spec     BGPConfigurationSpec
}

// BGPConfigurationSpec is the spec of a BGPConfiguration. Zero values mean
// the defaults; ApplyDefaults fills them in.
type BGPConfigurationSpec struct {
	// ASNumber is the AS of every node without its own Node.spec.asNumber;
	// 0 means DefaultASNumber.
	ASNumber uint32
	// NodeToNodeMeshEnabled says every node peers with every other; nil
	// means true. Read it with MeshEnabled.
	NodeToNodeMeshEnabled *bool
	// ListenPort is the TCP port the nodes' speakers listen on; 0 means 179.
	ListenPort int
	// LogSeverityScreen is one of LogSeverities; "" means Info.
	LogSeverityScreen string
	// Communities name BGP community values for PrefixAdvertisements.
	Communities []Community
	// PrefixAdvertisements attach communities to the routes of prefixes.
	PrefixAdvertisements []PrefixAdvertisement
	// GracefulRestartSeconds is how long peers keep a restarting node's
	// routes; 0 means 120.
	GracefulRestartSeconds int
}

// Community names a BGP community value: "aa:nn" (a standard community,
// two 16-bit numbers) or "aa:nn:mm" (a large community, RFC 8092, three
// 32-bit numbers).
type Community struct {
	Name  string
	Value string
}

// PrefixAdvertisement attaches communities to the routes a node advertises
// within CIDR. Each community is the name of one in spec.communities or a
// literal value.
type PrefixAdvertisement struct {
	CIDR        netip.Prefix
	Communities []string
}

// MeshEnabled reports nodeToNodeMeshEnabled, true unless set to false.
func (s *BGPConfigurationSpec) MeshEnabled() bool {
	return s.NodeToNodeMeshEnabled == nil || *s.NodeToNodeMeshEnabled
}

// BGPPeer is a BGP peer outside calyx that nodes open a session with: all
// of them (neither node nor nodeSelector), one (node) or those whose
// labels a selector matches (nodeSelector).
type BGPPeer struct {
	Metadata Metadata
	Spec     BGPPeerSpec
}

// SourceAddress says which address a node's side of a session uses.
type SourceAddress string

// Values of BGPPeer.spec.sourceAddress, as Calico spells them.
const (
	// SourceUseNodeIP binds the session to the node's underlay address.
	SourceUseNodeIP SourceAddress = "UseNodeIP"
	// SourceNone leaves the source address to the kernel's routing.
	SourceNone SourceAddress = "None"
)

// BGPPeerSpec is the spec of a BGPPeer.
type BGPPeerSpec struct {
	// PeerIP is the peer's address (IPv4 or IPv6); sessions use TCP port 179.
	PeerIP netip.Addr
	// ASNumber is the peer's AS (required).
	ASNumber uint32
	// Node names the one node that peers; not with NodeSelector.
	Node string
	// NodeSelector selects the nodes that peer by their labels; not with
	// Node.
	NodeSelector string
	// Password is the TCP MD5 password (RFC 2385), or nil for none.
	Password *BGPPassword
	// SourceAddress is "" (meaning UseNodeIP), UseNodeIP or None.
	SourceAddress SourceAddress
	// KeepNextHop keeps the next hop of routes to this peer as it is,
	// rather than setting it to the node's address (Calico's
	// keepOriginalNextHop).
	KeepNextHop bool
}

// BGPPassword is a TCP MD5 password: a literal Value or a File holding it
// (an absolute path on each node, read by its speaker). Exactly one is set.
type BGPPassword struct {
	Value string
	File  string
}

// Global reports whether the peer applies to every node.
func (s *BGPPeerSpec) Global() bool { return s.Node == "" && s.NodeSelector == "" }

// EffectiveSourceAddress returns sourceAddress, or UseNodeIP when unset.
func (s *BGPPeerSpec) EffectiveSourceAddress() SourceAddress {
	if s.SourceAddress == "" {
		return SourceUseNodeIP
	}
	return s.SourceAddress
}

// Kind returns "BGPConfiguration".
func (*BGPConfiguration) Kind() string { return KindBGPConfiguration }

// Meta returns the configuration's metadata.
func (c *BGPConfiguration) Meta() *Metadata { return &c.Metadata }

// Kind returns "BGPPeer".
func (*BGPPeer) Kind() string { return KindBGPPeer }

// Meta returns the peer's metadata.
func (p *BGPPeer) Meta() *Metadata { return &p.Metadata }

// DefaultBGPConfiguration returns the BGPConfiguration in force when none
// is stored: "default" with every setting at its default.
func DefaultBGPConfiguration() *BGPConfiguration {
	c := &BGPConfiguration{Metadata: Metadata{Name: BGPConfigurationName}}
	ApplyDefaults(c)
	return c
}

// EffectiveBGPConfiguration returns the stored BGPConfiguration, or the
// defaults when there is none.
func (s *Snapshot) EffectiveBGPConfiguration() *BGPConfiguration {
	if s.BGPConfig != nil {
		return s.BGPConfig
	}
	return DefaultBGPConfiguration()
}

func applyBGPDefaults(r Resource) {
	switch r := r.(type) {
	case *BGPConfiguration:
		s := &r.Spec
		if s.ASNumber == 0 {
			s.ASNumber = DefaultASNumber
		}
		if s.NodeToNodeMeshEnabled == nil {
			on := true
			s.NodeToNodeMeshEnabled = &on
		}
		if s.ListenPort == 0 {
			s.ListenPort = DefaultBGPListenPort
		}
		if s.LogSeverityScreen == "" {
			s.LogSeverityScreen = DefaultLogSeverityScreen
		}
		if s.GracefulRestartSeconds == 0 {
			s.GracefulRestartSeconds = DefaultGracefulRestartSeconds
		}
	case *BGPPeer:
		if r.Spec.SourceAddress == "" {
			r.Spec.SourceAddress = SourceUseNodeIP
		}
	}
}

func deepCopyBGP(r Resource) Resource {
	switch r := r.(type) {
	case *BGPConfiguration:
		c := *r
		if r.Spec.NodeToNodeMeshEnabled != nil {
			on := *r.Spec.NodeToNodeMeshEnabled
			c.Spec.NodeToNodeMeshEnabled = &on
		}
		c.Spec.Communities = cloneSlice(r.Spec.Communities)
		c.Spec.PrefixAdvertisements = nil
		for _, pa := range r.Spec.PrefixAdvertisements {
			pa.Communities = cloneSlice(pa.Communities)
			c.Spec.PrefixAdvertisements = append(c.Spec.PrefixAdvertisements, pa)
		}
		return &c
	case *BGPPeer:
		c := *r
		if r.Spec.Password != nil {
			pw := *r.Spec.Password
			c.Spec.Password = &pw
		}
		return &c
	}
	return nil
}

// ---- decoding ----

// asNumber reads an AS number: an integer ("asplain") or a string in
// asplain or asdot ("1.10" = 1×65536+10, RFC 5396) form, as Calico
// accepts. 0 and values beyond 32 bits are reported here, since 0 means
// "unset" in the spec.
func (d *decoder) asNumber(n *yaml.Node, path string) (uint32, bool) {
	n = resolve(n)
	if isNull(n) {
		return 0, false
	}
	var x int64
	switch {
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int":
		if n.Decode(&x) != nil {
			d.errorf(path, "%s", asNumberProblem(math.MaxInt64))
			return 0, false
		}
	case n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!str" || n.ShortTag() == "!!float"):
		v, ok := parseASNumber(n.Value)
		if !ok {
			d.errorf(path, "%q is not an AS number: write it as a number (64512) or in asdot form (1.10 for 65546)", n.Value)
			return 0, false
		}
		x = v
	default:
		d.errorf(path, "must be an AS number, got %s", describe(n))
		return 0, false
	}
	if why := asNumberProblem(x); why != "" {
		d.errorf(path, "%s", why)
		return 0, false
	}
	return uint32(x), true
}

// parseASNumber parses asplain ("65546") or asdot ("1.10").
func parseASNumber(s string) (int64, bool) {
	hi, lo, dot := strings.Cut(s, ".")
	if !dot {
		x, err := strconv.ParseInt(s, 10, 64)
		return x, err == nil
	}
	h, err1 := strconv.ParseUint(hi, 10, 16)
	l, err2 := strconv.ParseUint(lo, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return int64(h<<16 | l), true
}

// asNumberProblem explains why x cannot be an AS number, or returns "".
func asNumberProblem(x int64) string {
	switch {
	case x == 0:
		return "0 is reserved and cannot be an AS number (RFC 7607); give one between 1 and 4294967295, or omit it"
	case x < 0 || x > math.MaxUint32:
		return fmt.Sprintf("must be between 1 and 4294967295 (AS numbers are 32 bits, RFC 6793), got %d", x)
	case x == asTrans:
		return "23456 is AS_TRANS, which stands for any 4-byte AS on sessions with 2-byte speakers (RFC 6793); no AS may be numbered so"
	}
	return ""
}

// boundedInt reads a whole number that must lie in [lo, hi]; problem
// explains a value outside it. An explicit 0 (which would otherwise mean
// "the default") is reported too.
func (d *decoder) boundedInt(n *yaml.Node, path string, lo, hi int64, problem func(int64) string) (int, bool) {
	x, ok := d.wholeNumber(n, path, fmt.Sprintf("a number between %d and %d", lo, hi))
	if !ok {
		return 0, false
	}
	if x < lo || x > hi {
		d.errorf(path, "%s", problem(x))
		return 0, false
	}
	return int(x), true
}

func listenPortProblem(x int64) string {
	return fmt.Sprintf("must be a TCP port between 1 and 65535, got %d (omit it for %d, BGP's port)", x, DefaultBGPListenPort)
}

func gracefulRestartProblem(x int64) string {
	return fmt.Sprintf("must be between 1 and %d seconds, got %d: the graceful restart capability carries the restart time in 12 bits (RFC 4724); omit it for %d",
		MaxGracefulRestartSeconds, x, DefaultGracefulRestartSeconds)
}

func (d *decoder) bgpConfigurationSpec(n *yaml.Node, s *BGPConfigurationSpec) {
	d.mapping(n, "spec", func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "asNumber":
			s.ASNumber, _ = d.asNumber(v, p)
		case "nodeToNodeMeshEnabled":
			if b, ok := d.boolean(v, p); ok {
				s.NodeToNodeMeshEnabled = &b
			}
		case "listenPort":
			s.ListenPort, _ = d.boundedInt(v, p, 1, 65535, listenPortProblem)
		case "logSeverityScreen":
			s.LogSeverityScreen, _ = d.str(v, p)
		case "communities":
			d.list(v, p, func(_ int, item *yaml.Node, ip string) {
				var c Community
				d.mapping(item, ip, func(key string, v *yaml.Node, p string) bool {
					switch key {
					case "name":
						c.Name, _ = d.str(v, p)
					case "value":
						c.Value, _ = d.str(v, p)
					default:
						return false
					}
					return true
				})
				s.Communities = append(s.Communities, c)
			})
		case "prefixAdvertisements":
			d.list(v, p, func(_ int, item *yaml.Node, ip string) {
				var pa PrefixAdvertisement
				d.mapping(item, ip, func(key string, v *yaml.Node, p string) bool {
					switch key {
					case "cidr":
						pa.CIDR = d.cidr(v, p, true)
					case "communities":
						d.list(v, p, func(_ int, item *yaml.Node, cp string) {
							c, _ := d.str(item, cp)
							pa.Communities = append(pa.Communities, c)
						})
					default:
						return false
					}
					return true
				})
				s.PrefixAdvertisements = append(s.PrefixAdvertisements, pa)
			})
		case "gracefulRestartSeconds":
			s.GracefulRestartSeconds, _ = d.boundedInt(v, p, 1, MaxGracefulRestartSeconds, gracefulRestartProblem)
		case "serviceClusterIPs", "serviceExternalIPs", "serviceLoadBalancerIPs":
			d.errorf(p, "not supported: calyx has no Kubernetes services to advertise (its routes are IPAM blocks, endpoints and floating IPs)")
		default:
			return false
		}
		return true
	})
}

func (d *decoder) bgpPeerSpec(n *yaml.Node, s *BGPPeerSpec) {
	d.mapping(n, "spec", func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "peerIP":
			s.PeerIP = d.peerIP(v, p)
		case "asNumber":
			s.ASNumber, _ = d.asNumber(v, p)
		case "node":
			s.Node, _ = d.str(v, p)
		case "nodeSelector":
			s.NodeSelector, _ = d.str(v, p)
		case "password":
			if isNull(v) {
				return true
			}
			pw := &BGPPassword{}
			d.mapping(v, p, func(key string, v *yaml.Node, p string) bool {
				switch key {
				case "value":
					pw.Value, _ = d.str(v, p)
				case "file":
					pw.File, _ = d.str(v, p)
				case "secretKeyRef":
					d.errorf(p, "Kubernetes secrets are not available to calyx: give the password as value: <the password> or file: <absolute path of a file holding it on each node>")
				default:
					return false
				}
				return true
			})
			s.Password = pw
		case "sourceAddress":
			if x, ok := d.str(v, p); ok {
				s.SourceAddress = SourceAddress(x)
			}
		case "keepNextHop":
			s.KeepNextHop, _ = d.boolean(v, p)
		case "keepOriginalNextHop":
			d.errorf(p, "calyx spells Calico's keepOriginalNextHop as keepNextHop")
		case "peerSelector":
			d.errorf(p, "not supported: calyx peers its own nodes itself (the node-to-node mesh, or route reflectors chosen by Node.spec.routeReflectorClusterID); a BGPPeer is a router outside calyx, given by its peerIP")
		default:
			return false
		}
		return true
	})
}

// peerIP reads a peer's address; an address with a port is explained.
func (d *decoder) peerIP(n *yaml.Node, path string) netip.Addr {
	if s := resolve(n); s != nil && s.Kind == yaml.ScalarNode && s.ShortTag() == "!!str" {
		if ap, err := netip.ParseAddrPort(s.Value); err == nil {
			d.errorf(path, "%q has a port: give the peer's address alone (write %s); sessions use BGP's TCP port 179", s.Value, ap.Addr())
			return netip.Addr{}
		}
	}
	return d.addr(n, path)
}

// ---- encoding ----

// A BGPConfiguration is written with every setting in force; communities
// and prefixAdvertisements only when given.
type bgpConfigurationSpecWire struct {
	ASNumber               uint32                    `json:"asNumber" yaml:"asNumber"`
	NodeToNodeMeshEnabled  bool                      `json:"nodeToNodeMeshEnabled" yaml:"nodeToNodeMeshEnabled"`
	ListenPort             int                       `json:"listenPort" yaml:"listenPort"`
	LogSeverityScreen      string                    `json:"logSeverityScreen" yaml:"logSeverityScreen"`
	Communities            []communityWire           `json:"communities,omitempty" yaml:"communities,omitempty"`
	PrefixAdvertisements   []prefixAdvertisementWire `json:"prefixAdvertisements,omitempty" yaml:"prefixAdvertisements,omitempty"`
	GracefulRestartSeconds int                       `json:"gracefulRestartSeconds" yaml:"gracefulRestartSeconds"`
}

type communityWire struct {
	Name  string `json:"name" yaml:"name"`
	Value string `json:"value" yaml:"value"`
}

type prefixAdvertisementWire struct {
	CIDR        string   `json:"cidr" yaml:"cidr"`
	Communities []string `json:"communities" yaml:"communities"`
}

// A BGPPeer leaves out node, nodeSelector and password when not given
// (neither node nor nodeSelector reads as "every node", as in Calico).
type bgpPeerSpecWire struct {
	PeerIP        string           `json:"peerIP" yaml:"peerIP"`
	ASNumber      uint32           `json:"asNumber" yaml:"asNumber"`
	Node          string           `json:"node,omitempty" yaml:"node,omitempty"`
	NodeSelector  string           `json:"nodeSelector,omitempty" yaml:"nodeSelector,omitempty"`
	Password      *bgpPasswordWire `json:"password,omitempty" yaml:"password,omitempty"`
	SourceAddress SourceAddress    `json:"sourceAddress" yaml:"sourceAddress"`
	KeepNextHop   bool             `json:"keepNextHop" yaml:"keepNextHop"`
}

type bgpPasswordWire struct {
	Value string `json:"value,omitempty" yaml:"value,omitempty"`
	File  string `json:"file,omitempty" yaml:"file,omitempty"`
}

func (s BGPConfigurationSpec) wire() bgpConfigurationSpecWire {
	c := BGPConfiguration{Spec: s}
	ApplyDefaults(&c)
	w := bgpConfigurationSpecWire{
		ASNumber:               c.Spec.ASNumber,
		NodeToNodeMeshEnabled:  c.Spec.MeshEnabled(),
		ListenPort:             c.Spec.ListenPort,
		LogSeverityScreen:      c.Spec.LogSeverityScreen,
		GracefulRestartSeconds: c.Spec.GracefulRestartSeconds,
	}
	for _, cm := range s.Communities {
		w.Communities = append(w.Communities, communityWire(cm))
	}
	for _, pa := range s.PrefixAdvertisements {
		w.PrefixAdvertisements = append(w.PrefixAdvertisements, prefixAdvertisementWire{
			CIDR: prefixString(pa.CIDR), Communities: append(make([]string, 0, len(pa.Communities)), pa.Communities...)})
	}
	return w
}

func (s BGPPeerSpec) wire() bgpPeerSpecWire {
	w := bgpPeerSpecWire{
		PeerIP:        addrString(s.PeerIP),
		ASNumber:      s.ASNumber,
		Node:          s.Node,
		NodeSelector:  s.NodeSelector,
		SourceAddress: s.EffectiveSourceAddress(),
		KeepNextHop:   s.KeepNextHop,
	}
	if s.Password != nil {
		w.Password = &bgpPasswordWire{Value: s.Password.Value, File: s.Password.File}
	}
	return w
}

// MarshalJSON returns the spec with camelCase keys and the defaults in
// force; it does not fail.
func (s BGPConfigurationSpec) MarshalJSON() ([]byte, error) { return json.Marshal(s.wire()) }

// MarshalYAML returns the spec with camelCase keys and the defaults in
// force; it does not fail.
func (s BGPConfigurationSpec) MarshalYAML() (any, error) { return s.wire(), nil }

// MarshalJSON returns the spec with camelCase keys and a string address;
// it does not fail.
func (s BGPPeerSpec) MarshalJSON() ([]byte, error) { return json.Marshal(s.wire()) }

// MarshalYAML returns the spec with camelCase keys and a string address;
// it does not fail.
func (s BGPPeerSpec) MarshalYAML() (any, error) { return s.wire(), nil }

// MarshalJSON returns the configuration as {"apiVersion","kind","metadata","spec"};
// it does not fail.
func (c BGPConfiguration) MarshalJSON() ([]byte, error) {
	return json.Marshal(wrap(KindBGPConfiguration, c.Metadata, c.Spec.wire()))
}

// MarshalYAML returns the configuration as a calicoctl-shaped document; it
// does not fail.
func (c BGPConfiguration) MarshalYAML() (any, error) {
	return wrap(KindBGPConfiguration, c.Metadata, c.Spec.wire()), nil
}

// MarshalJSON returns the peer as {"apiVersion","kind","metadata","spec"};
// it does not fail.
func (p BGPPeer) MarshalJSON() ([]byte, error) {
	return json.Marshal(wrap(KindBGPPeer, p.Metadata, p.Spec.wire()))
}

// MarshalYAML returns the peer as a calicoctl-shaped document; it does not
// fail.
func (p BGPPeer) MarshalYAML() (any, error) { return wrap(KindBGPPeer, p.Metadata, p.Spec.wire()), nil }

// UnmarshalYAML decodes a BGPConfiguration document strictly (see Decode),
// applies defaults and validates it; it returns the joined validation errors.
func (c *BGPConfiguration) UnmarshalYAML(n *yaml.Node) error { return unmarshalInto(n, c) }

// UnmarshalJSON decodes a BGPConfiguration as UnmarshalYAML does (JSON is YAML).
func (c *BGPConfiguration) UnmarshalJSON(b []byte) error { return unmarshalJSONInto(b, c) }

// UnmarshalYAML decodes a BGPPeer document strictly (see Decode), applies
// defaults and validates it; it returns the joined validation errors.
func (p *BGPPeer) UnmarshalYAML(n *yaml.Node) error { return unmarshalInto(n, p) }

// UnmarshalJSON decodes a BGPPeer as UnmarshalYAML does (JSON is YAML).
func (p *BGPPeer) UnmarshalJSON(b []byte) error { return unmarshalJSONInto(b, p) }

// ---- validation of one resource ----

// validCommunity reports whether s is "aa:nn" (two 16-bit numbers) or
// "aa:nn:mm" (three 32-bit numbers).
func validCommunity(s string) bool {
	parts := strings.Split(s, ":")
	bits := 0
	switch len(parts) {
	case 2:
		bits = 16
	case 3:
		bits = 32
	default:
		return false
	}
	for _, p := range parts {
		if p == "" || strings.TrimLeft(p, "0123456789") != "" {
			return false
		}
		if _, err := strconv.ParseUint(p, 10, bits); err != nil {
			return false
		}
	}
	return true
}

const communityFormat = `"aa:nn" (a standard community: two numbers up to 65535, e.g. 64512:100) or "aa:nn:mm" (a large community, RFC 8092: three numbers up to 4294967295, e.g. 4200000000:1:2)`

func (v *validator) bgpConfiguration(s *BGPConfigurationSpec) {
	if why := asNumberProblem(int64(s.ASNumber)); s.ASNumber != 0 && why != "" {
		v.errorf("spec.asNumber", "%s", why)
	}
	if s.ListenPort < 0 || s.ListenPort > 65535 {
		v.errorf("spec.listenPort", "%s", listenPortProblem(int64(s.ListenPort)))
	}
	if s.GracefulRestartSeconds < 0 || s.GracefulRestartSeconds > MaxGracefulRestartSeconds {
		v.errorf("spec.gracefulRestartSeconds", "%s", gracefulRestartProblem(int64(s.GracefulRestartSeconds)))
	}
	if l := s.LogSeverityScreen; l != "" && !slices.Contains(LogSeverities, l) {
		v.errorf("spec.logSeverityScreen", "%q is not a log severity: want one of %s%s", l, strings.Join(LogSeverities, ", "), didYouMean(l, LogSeverities...))
	}
	names := map[string]int{}
	for i, c := range s.Communities {
		p := fmt.Sprintf("spec.communities[%d]", i)
		switch {
		case c.Name == "":
			v.errorf(p+".name", "required (the name prefixAdvertisements use for the value)")
		case strings.Contains(c.Name, ":"):
			v.errorf(p+".name", "%q contains ':': a name must not read as a community value, which prefixAdvertisements may also give literally", c.Name)
		default:
			if j, dup := names[c.Name]; dup {
				v.errorf(p+".name", "%q is already the name of spec.communities[%d]", c.Name, j)
			} else {
				names[c.Name] = i
			}
		}
		switch {
		case c.Value == "":
			v.errorf(p+".value", "required: %s", communityFormat)
		case !validCommunity(c.Value):
			v.errorf(p+".value", "%q is not a community: write %s", c.Value, communityFormat)
		}
	}
	cidrs := map[netip.Prefix]int{}
	for i, pa := range s.PrefixAdvertisements {
		p := fmt.Sprintf("spec.prefixAdvertisements[%d]", i)
		switch {
		case !pa.CIDR.IsValid():
			v.errorf(p+".cidr", "required (the prefix whose routes carry the communities, e.g. 10.65.0.0/16)")
		case pa.CIDR.Masked() != pa.CIDR:
			v.errorf(p+".cidr", "%s has host bits set; did you mean %s?", pa.CIDR, pa.CIDR.Masked())
		default:
			if j, dup := cidrs[pa.CIDR]; dup {
				v.errorf(p+".cidr", "%s is already the cidr of spec.prefixAdvertisements[%d]; list all its communities there", pa.CIDR, j)
			} else {
				cidrs[pa.CIDR] = i
			}
		}
		if len(pa.Communities) == 0 {
			v.errorf(p+".communities", "required: the names (from spec.communities) or values of the communities to attach")
		}
		for j, c := range pa.Communities {
			cp := fmt.Sprintf("%s.communities[%d]", p, j)
			if _, ok := names[c]; ok || validCommunity(c) {
				continue
			}
			defined := "none are defined"
			if len(names) > 0 {
				defined = "defined: " + strings.Join(sortedKeys(names), ", ")
			}
			v.errorf(cp, "%q names no community in spec.communities (%s) and is not a value %s", c, defined, communityFormat)
		}
	}
}

func (v *validator) bgpPeer(s *BGPPeerSpec) {
	switch a := s.PeerIP; {
	case !a.IsValid():
		v.errorf("spec.peerIP", "required (the peer router's address, e.g. 192.0.2.1 or 2001:db8::1)")
	case a.Is4In6():
		v.errorf("spec.peerIP", "%s: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form", a)
	case a.Zone() != "" || a.IsLinkLocalUnicast():
		v.errorf("spec.peerIP", "%s is a link-local address, which names no router without an interface; give the peer's routable address", a)
	case specialAddress(a) != "":
		v.errorf("spec.peerIP", "%s is %s, not a router's address", a, specialAddress(a))
	}
	if s.ASNumber == 0 {
		v.errorf("spec.asNumber", "required (the peer's AS number; the same as the node's for iBGP, another for eBGP)")
	} else if why := asNumberProblem(int64(s.ASNumber)); why != "" {
		v.errorf("spec.asNumber", "%s", why)
	}
	if s.Node != "" && s.NodeSelector != "" {
		v.errorf("spec", "node and nodeSelector cannot both be given: node names one node, nodeSelector chooses nodes by their labels (e.g. nodeSelector: \"kubernetes.io/hostname == '%s'\" for that one); omit both for every node", s.Node)
	}
	if s.Node != "" && !validName(s.Node) {
		v.errorf("spec.node", "%q is not a valid node name", s.Node)
	}
	v.selector("spec.nodeSelector", s.NodeSelector, "omit it, and node, to peer from every node")
	if pw := s.Password; pw != nil {
		switch {
		case pw.Value == "" && pw.File == "":
			v.errorf("spec.password", "give value: <the password> or file: <absolute path of a file holding it>, or omit password for a session without TCP MD5")
		case pw.Value != "" && pw.File != "":
			v.errorf("spec.password", "value and file cannot both be given: the password is either literal or read from the file")
		case pw.File != "" && !filepath.IsAbs(pw.File):
			v.errorf("spec.password.file", "%q is relative: give an absolute path (each node's agent reads it, and has no directory of yours to resolve it in)", pw.File)
		case len(pw.Value) > 80:
			v.errorf("spec.password.value", "is %d bytes long: TCP MD5 keys are at most 80 bytes (TCP_MD5SIG_MAXKEYLEN)", len(pw.Value))
		}
	}
	switch s.SourceAddress {
	case "", SourceUseNodeIP, SourceNone:
	default:
		v.errorf("spec.sourceAddress", "%q: want UseNodeIP (the session's source is the node's underlay address, the default) or None (the kernel chooses)%s",
			s.SourceAddress, didYouMean(string(s.SourceAddress), string(SourceUseNodeIP), string(SourceNone)))
	}
}

// clusterIDProblem explains why a cannot be a route reflector cluster ID,
// or returns "".
func clusterIDProblem(a netip.Addr) string {
	switch {
	case !a.Is4():
		return fmt.Sprintf("%s is not IPv4: a cluster ID is a 32-bit number written as an IPv4 address, e.g. 224.0.0.1", a)
	case a.IsUnspecified():
		return "0.0.0.0 is no cluster ID (speakers take it for unset); give one such as 224.0.0.1, the same on the reflectors that serve the same clients, or omit it for a node that is not a reflector"
	}
	return ""
}

// ---- validation across resources ----

// validateBGP checks the BGPPeers against the Nodes: a peerIP is no node's
// underlay address (nodes peer with each other already) and no two
// BGPPeers with one peerIP select the same node.
func (s *Snapshot) validateBGP(changed map[Ref]bool, add func(ref Ref, path, format string, args ...any),
	subject func(kind, earlier, later string) (string, string)) {
	if len(s.BGPPeers) == 0 {
		return
	}
	type nodeAddr struct{ node, path string }
	nodeAddrs := map[netip.Addr]nodeAddr{}
	for _, name := range sortedKeys(s.Nodes) {
		n := s.Nodes[name]
		if p := n.Spec.IPv4Address; p.IsValid() {
			nodeAddrs[p.Addr()] = nodeAddr{name, "spec.ipv4Address"}
		}
		if p := n.Spec.IPv6Address; p.IsValid() {
			nodeAddrs[p.Addr()] = nodeAddr{name, "spec.ipv6Address"}
		}
	}
	names := sortedKeys(s.BGPPeers)
	byIP := map[netip.Addr][]string{}
	for _, name := range names {
		p := s.BGPPeers[name]
		ref := Ref{KindBGPPeer, name}
		a := p.Spec.PeerIP
		if !a.IsValid() {
			continue
		}
		byIP[a] = append(byIP[a], name)
		na, ok := nodeAddrs[a]
		if !ok {
			continue
		}
		nodeRef := Ref{KindNode, na.node}
		if changed[nodeRef] && !changed[ref] {
			add(nodeRef, na.path, "%s is the peerIP of BGPPeer/%s, but a node's address cannot be a BGPPeer: calyx nodes peer with each other "+
				"already (the node-to-node mesh, or route reflectors chosen by spec.routeReflectorClusterID); delete the BGPPeer or give the node another address", a, name)
		} else {
			add(ref, "spec.peerIP", "%s is the underlay address of Node/%s (%s), which calyx peers with already: nodes peer with each other over "+
				"the node-to-node mesh, or through route reflectors (Node.spec.routeReflectorClusterID); a BGPPeer is a router outside calyx, such as the data center's gateway",
				a, na.node, na.path)
		}
	}
	nodeNames := sortedKeys(s.Nodes)
	for _, a := range sortedAddrKeys(byIP) {
		group := byIP[a]
		for i := 0; i < len(group); i++ {
			for j := i + 1; j < len(group); j++ {
				where, ok := s.peersOverlap(&s.BGPPeers[group[i]].Spec, &s.BGPPeers[group[j]].Spec, nodeNames)
				if !ok {
					continue
				}
				subj, other := subject(KindBGPPeer, group[i], group[j])
				add(Ref{KindBGPPeer, subj}, "spec.peerIP", "%s is also the peerIP of BGPPeer/%s, and both select %s: a node has one session per peer address; "+
					"merge the two, or make the nodes they select disjoint with node or nodeSelector", a, other, where)
			}
		}
	}
}

func sortedAddrKeys[V any](m map[netip.Addr]V) []netip.Addr {
	keys := make([]netip.Addr, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, netip.Addr.Compare)
	return keys
}

// selects reports whether a peer applies to the node.
func (p *BGPPeerSpec) selects(n *Node) bool {
	switch {
	case p.Global():
		return true
	case p.Node != "":
		return p.Node == n.Metadata.Name
	}
	sel, err := selector.Parse(p.NodeSelector)
	return err == nil && sel.Matches(n.Metadata.Labels)
}

// peersOverlap reports whether two peers select a node in common, and
// names it for a message. A global peer overlaps every peer (nodes yet to
// register included), two peers naming one node overlap whether or not it
// exists, and selectors are judged on the nodes there are.
func (s *Snapshot) peersOverlap(a, b *BGPPeerSpec, nodeNames []string) (string, bool) {
	switch {
	case a.Global() && b.Global():
		return "every node", true
	case a.Global() || b.Global():
		one := b
		if b.Global() {
			one = a
		}
		if one.Node != "" {
			return "Node/" + one.Node, true
		}
		return fmt.Sprintf("the nodes matching %q", one.NodeSelector), true
	case a.Node != "" && b.Node != "":
		return "Node/" + a.Node, a.Node == b.Node
	}
	for _, name := range nodeNames {
		n := s.Nodes[name]
		if a.selects(n) && b.selects(n) {
			return "Node/" + name, true
		}
	}
	return "", false
}

// ---- what one node's speaker runs ----

// BGPPeerType says where a session comes from, in calicoctl's words.
type BGPPeerType string

// Peer types, as calicoctl node status prints them.
const (
	// PeerMesh is a session with another calyx node: the node-to-node
	// mesh, or a route reflector session.
	PeerMesh BGPPeerType = "node-to-node mesh"
	// PeerGlobal is a BGPPeer with neither node nor nodeSelector.
	PeerGlobal BGPPeerType = "global"
	// PeerNodeSpecific is a BGPPeer with node or nodeSelector.
	PeerNodeSpecific BGPPeerType = "node specific"
)

// BGPSettings is what one node's BGP speaker runs.
type BGPSettings struct {
	// Node is the node's name.
	Node string
	// ASNumber is Node.spec.asNumber, else BGPConfiguration's, else 64512.
	ASNumber uint32
	// RouterID is the node's IPv4 underlay address.
	RouterID netip.Addr
	// ListenPort, GracefulRestartSeconds and LogSeverity come from the
	// BGPConfiguration (or its defaults).
	ListenPort             int
	GracefulRestartSeconds int
	LogSeverity            string
	// MeshEnabled is BGPConfiguration's nodeToNodeMeshEnabled.
	MeshEnabled bool
	// RouteReflectorClusterID is the node's cluster ID when it is a route
	// reflector, else the zero Addr.
	RouteReflectorClusterID netip.Addr
	// Peers are the sessions the node opens, sorted by address.
	Peers []BGPPeerSettings
	// PrefixAdvertisements are BGPConfiguration's, with community names
	// resolved to values.
	PrefixAdvertisements []PrefixAdvertisement
}

// RouteReflector reports whether the node is a route reflector.
func (b *BGPSettings) RouteReflector() bool { return b.RouteReflectorClusterID.IsValid() }

// BGPPeerSettings is one session of a node.
type BGPPeerSettings struct {
	// Address is the peer's address.
	Address netip.Addr
	// ASNumber is the peer's AS.
	ASNumber uint32
	// Type is where the session comes from.
	Type BGPPeerType
	// Name is the BGPPeer's name, or for a mesh peer the peer Node's.
	Name string
	// Password is the literal TCP MD5 password, PasswordFile the path of
	// the file holding it (the speaker reads it); at most one is set.
	Password     string
	PasswordFile string
	// KeepNextHop and SourceAddress are the BGPPeer's (false and
	// UseNodeIP for mesh peers).
	KeepNextHop   bool
	SourceAddress SourceAddress
	// RouteReflectorClient says this node reflects routes to the peer: the
	// node is a reflector and the peer a node that is not.
	RouteReflectorClient bool
}

// BGPSettingsFor resolves the BGP settings of one node. Sessions with
// other nodes: when some node is a route reflector (has
// routeReflectorClusterID), a node that is not peers with every reflector
// only, and a reflector peers with the other reflectors and with every
// node that is not one, as its route reflector client; otherwise, with the
// mesh enabled, every node peers with every other. A node session is
// opened per address family both nodes have an address of. Then the
// BGPPeers that select the node. It fails when the node does not exist or
// has no IPv4 address (BGP's router ID is 32 bits).
func BGPSettingsFor(snap *Snapshot, node string) (BGPSettings, error) {
	n, ok := snap.Nodes[node]
	if !ok {
		return BGPSettings{}, fmt.Errorf("Node/%s: not found", node)
	}
	if !n.Spec.IPv4Address.IsValid() {
		return BGPSettings{}, fmt.Errorf("Node/%s: spec.ipv4Address: required for BGP: the router ID is a 32-bit number, which calyx takes from the node's IPv4 underlay address", node)
	}
	c := BGPConfiguration{Spec: snap.EffectiveBGPConfiguration().Spec}
	applyBGPDefaults(&c) // on a copy: it only replaces fields, never writes through them
	cfg := c.Spec

	asOf := func(n *Node) uint32 {
		if n.Spec.ASNumber != 0 {
			return n.Spec.ASNumber
		}
		return cfg.ASNumber
	}
	out := BGPSettings{
		Node:                    node,
		ASNumber:                asOf(n),
		RouterID:                n.Spec.IPv4Address.Addr(),
		ListenPort:              cfg.ListenPort,
		GracefulRestartSeconds:  cfg.GracefulRestartSeconds,
		LogSeverity:             cfg.LogSeverityScreen,
		MeshEnabled:             cfg.MeshEnabled(),
		RouteReflectorClusterID: n.Spec.RouteReflectorClusterID,
	}

	reflectors := false
	for _, o := range snap.Nodes {
		if o.Spec.RouteReflectorClusterID.IsValid() {
			reflectors = true
			break
		}
	}
	own := map[netip.Addr]bool{}
	if n.Spec.IPv4Address.IsValid() {
		own[n.Spec.IPv4Address.Addr()] = true
	}
	if n.Spec.IPv6Address.IsValid() {
		own[n.Spec.IPv6Address.Addr()] = true
	}
	seen := map[netip.Addr]bool{}
	meRR := out.RouteReflector()
	for _, name := range sortedKeys(snap.Nodes) {
		o := snap.Nodes[name]
		if name == node {
			continue
		}
		otherRR := o.Spec.RouteReflectorClusterID.IsValid()
		client := false
		switch {
		case reflectors && !meRR && !otherRR:
			continue // clients peer with reflectors only
		case reflectors && meRR && !otherRR:
			client = true
		case !reflectors && !out.MeshEnabled:
			continue
		}
		for _, fam := range [][2]netip.Prefix{{n.Spec.IPv4Address, o.Spec.IPv4Address}, {n.Spec.IPv6Address, o.Spec.IPv6Address}} {
			if !fam[0].IsValid() || !fam[1].IsValid() || own[fam[1].Addr()] || seen[fam[1].Addr()] {
				continue
			}
			seen[fam[1].Addr()] = true
			out.Peers = append(out.Peers, BGPPeerSettings{
				Address: fam[1].Addr(), ASNumber: asOf(o), Type: PeerMesh, Name: name,
				SourceAddress: SourceUseNodeIP, RouteReflectorClient: client,
			})
		}
	}
	for _, name := range sortedKeys(snap.BGPPeers) {
		p := &snap.BGPPeers[name].Spec
		a := p.PeerIP
		if !a.IsValid() || own[a] || seen[a] || !p.selects(n) {
			continue
		}
		seen[a] = true
		ps := BGPPeerSettings{Address: a, ASNumber: p.ASNumber, Type: PeerNodeSpecific, Name: name,
			KeepNextHop: p.KeepNextHop, SourceAddress: p.EffectiveSourceAddress()}
		if p.Global() {
			ps.Type = PeerGlobal
		}
		if pw := p.Password; pw != nil {
			ps.Password, ps.PasswordFile = pw.Value, pw.File
		}
		out.Peers = append(out.Peers, ps)
	}
	slices.SortFunc(out.Peers, func(a, b BGPPeerSettings) int { return a.Address.Compare(b.Address) })

	out.PrefixAdvertisements = cfg.ResolvedPrefixAdvertisements()
	return out, nil
}

// ResolvedPrefixAdvertisements returns the prefixAdvertisements with
// community names replaced by their values.
func (s *BGPConfigurationSpec) ResolvedPrefixAdvertisements() []PrefixAdvertisement {
	values := map[string]string{}
	for _, cm := range s.Communities {
		values[cm.Name] = cm.Value
	}
	var out []PrefixAdvertisement
	for _, pa := range s.PrefixAdvertisements {
		r := PrefixAdvertisement{CIDR: pa.CIDR}
		for _, c := range pa.Communities {
			if v, ok := values[c]; ok {
				c = v
			}
			r.Communities = append(r.Communities, c)
		}
		out = append(out, r)
	}
	return out
}
