package model

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/calyxnet/calyx/selector"
)

const npHead = "apiVersion: calyx.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\n"

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func order(x float64) *float64 { return &x }

func ports(ps ...PortRange) []PortRange { return ps }

func port(p uint16) PortRange { return PortRange{p, p} }

const fullPolicyDoc = `
apiVersion: calyx.io/v1
kind: NetworkPolicy
metadata: {name: allow-web, labels: {team: web}}
spec:
  order: 100
  selector: role == "web"
  types: [Ingress, Egress]
  ingress:
  - action: Allow
    protocol: tcp
    source:
      nets: [10.0.0.0/8, 192.168.1.5, 'fd00::/64', '2001:db8::1']
      notNets: [10.1.0.0/16]
      selector: role == "lb"
      notSelector: quarantine == "true"
      ports: [1024, "2000:3000"]
      notPorts: ["2500"]
    destination:
      ports: [80, 443, "8000:8080", "0:65535"]
      notPorts: []
  - action: Allow
    protocol: ICMP
    icmp: {type: 8, code: 0}
  - action: Log
    protocol: 47
  - action: Deny
  egress:
  - action: Allow
    protocol: icmpv6
    icmp: {type: 128}
  - action: Pass
    protocol: UDP
    destination: {nets: [10.96.0.10/32], ports: [53]}
  - action: Allow
    protocol: "132"
    destination: {ports: [38412]}
`

func fullPolicy() *NetworkPolicy {
	return &NetworkPolicy{
		Metadata: Metadata{Name: "allow-web", Labels: map[string]string{"team": "web"}},
		Spec: NetworkPolicySpec{
			Order:    order(100),
			Selector: `role == "web"`,
			Types:    []PolicyType{PolicyIngress, PolicyEgress},
			Ingress: []Rule{
				{
					Action: RuleAllow, Protocol: ProtoTCP,
					Source: EntityRule{
						Nets:        prefixes("10.0.0.0/8", "192.168.1.5/32", "fd00::/64", "2001:db8::1/128"),
						NotNets:     prefixes("10.1.0.0/16"),
						Selector:    `role == "lb"`,
						NotSelector: `quarantine == "true"`,
						Ports:       ports(port(1024), PortRange{2000, 3000}),
						NotPorts:    ports(port(2500)),
					},
					Destination: EntityRule{Ports: ports(port(80), port(443), PortRange{8000, 8080}, PortRange{0, 65535})},
				},
				{Action: RuleAllow, Protocol: ProtoICMP, ICMP: &ICMPMatch{Type: 8, Code: 0, HasCode: true}},
				{Action: RuleLog, Protocol: 47},
				{Action: RuleDeny},
			},
			Egress: []Rule{
				{Action: RuleAllow, Protocol: ProtoICMPv6, ICMP: &ICMPMatch{Type: 128}},
				{Action: RulePass, Protocol: ProtoUDP, Destination: EntityRule{Nets: prefixes("10.96.0.10/32"), Ports: ports(port(53))}},
				{Action: RuleAllow, Protocol: ProtoSCTP, Destination: EntityRule{Ports: ports(port(38412))}},
			},
		},
	}
}

func TestDecodeNetworkPolicy(t *testing.T) {
	got := decodeOne(t, fullPolicyDoc)
	if want := fullPolicy(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %#v\nwant %#v", got, want)
	}
}

func TestNetworkPolicyDefaults(t *testing.T) {
	in, eg := PolicyIngress, PolicyEgress
	tests := []struct {
		name, spec string
		types      []PolicyType
		order      *float64
	}{
		{"no spec", "", []PolicyType{in}, nil},
		{"no rules", "spec: {selector: all()}", []PolicyType{in}, nil},
		{"ingress rules only", "spec: {ingress: [{action: Allow}]}", []PolicyType{in}, nil},
		// As in Calico: an egress-only policy leaves ingress alone.
		{"egress rules only", "spec: {egress: [{action: Allow}]}", []PolicyType{eg}, nil},
		{"both", "spec: {egress: [{action: Allow}], ingress: [{action: Deny}]}", []PolicyType{in, eg}, nil},
		{"empty rule lists", "spec: {ingress: [], egress: []}", []PolicyType{in}, nil},
		{"empty types", "spec: {types: [], egress: [{action: Allow}]}", []PolicyType{eg}, nil},
		{"explicit egress without rules", "spec: {types: [Egress]}", []PolicyType{eg}, nil},
		{"explicit order kept", "spec: {types: [Egress, Ingress], order: -2.5}", []PolicyType{eg, in}, order(-2.5)},
		{"integer order", "spec: {order: 0}", []PolicyType{in}, order(0)},
		{"null order", "spec: {order: null}", []PolicyType{in}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := decodeOne(t, npHead+tt.spec).(*NetworkPolicy)
			if p.Spec.Selector != "all()" && !strings.Contains(tt.spec, "selector") {
				t.Errorf("selector = %q, want all()", p.Spec.Selector)
			}
			if !reflect.DeepEqual(p.Spec.Types, tt.types) {
				t.Errorf("types = %v, want %v", p.Spec.Types, tt.types)
			}
			if !reflect.DeepEqual(p.Spec.Order, tt.order) {
				t.Errorf("order = %v, want %v", p.Spec.Order, tt.order)
			}
			if tt.name == "empty rule lists" && (p.Spec.Ingress != nil || p.Spec.Egress != nil) {
				t.Errorf("empty lists not normalized to nil: %#v", p.Spec)
			}
			c := deepCopy(p)
			ApplyDefaults(c)
			if !reflect.DeepEqual(c, p) {
				t.Errorf("ApplyDefaults is not idempotent: %#v", c)
			}
		})
	}
}

// TestDecodeNetworkPolicyErrors checks every way a policy's fields can be
// wrong: each case yields exactly one error, at path, with reason.
func TestDecodeNetworkPolicyErrors(t *testing.T) {
	const want = `a port number (0-65535) or a "first:last" range`
	const protos = "TCP, UDP, ICMP, ICMPv6, SCTP or a number between 1 and 255"
	tests := []struct {
		name, spec   string
		path, reason string
	}{
		{"action missing", "{ingress: [{protocol: TCP}]}", "spec.ingress[0].action", "required (one of Allow, Deny, Log, Pass)"},
		{"action null", "{ingress: [{action: null}]}", "spec.ingress[0].action", "required (one of Allow, Deny, Log, Pass)"},
		{"action lowercase", "{ingress: [{action: allow}]}", "spec.ingress[0].action",
			`must be one of Allow, Deny, Log, Pass, got "allow" (did you mean "Allow"?)`},
		{"action uppercase", "{egress: [{action: PASS}]}", "spec.egress[0].action",
			`must be one of Allow, Deny, Log, Pass, got "PASS" (did you mean "Pass"?)`},
		{"action unknown", "{ingress: [{action: Reject}]}", "spec.ingress[0].action", `must be one of Allow, Deny, Log, Pass, got "Reject"`},
		{"action not a string", "{ingress: [{action: 1}]}", "spec.ingress[0].action", "must be a string, got integer 1"},
		{"action in a later rule", "{ingress: [{action: Allow}, {action: Drop}]}", "spec.ingress[1].action",
			`must be one of Allow, Deny, Log, Pass, got "Drop"`},

		{"ports with ICMP", "{ingress: [{action: Allow, protocol: ICMP, destination: {ports: [80]}}]}", "spec.ingress[0].destination.ports",
			"only valid with protocol TCP, UDP or SCTP, got protocol ICMP"},
		{"notPorts without protocol", "{egress: [{action: Allow, source: {notPorts: [80]}}]}", "spec.egress[0].source.notPorts",
			"only valid with protocol TCP, UDP or SCTP, but the rule has no protocol"},
		{"ports with protocol number", "{ingress: [{action: Allow, protocol: 47, source: {ports: ['1:2']}}]}", "spec.ingress[0].source.ports",
			"only valid with protocol TCP, UDP or SCTP, got protocol 47"},
		{"ports with ICMPv6", "{ingress: [{action: Allow, protocol: ICMPv6, destination: {ports: [1]}}]}", "spec.ingress[0].destination.ports",
			"only valid with protocol TCP, UDP or SCTP, got protocol ICMPv6"},
		{"icmp with TCP", "{ingress: [{action: Allow, protocol: TCP, icmp: {type: 8}}]}", "spec.ingress[0].icmp",
			"only valid with protocol ICMP or ICMPv6, got protocol TCP"},
		{"icmp without protocol", "{ingress: [{action: Allow, icmp: {type: 8}}]}", "spec.ingress[0].icmp",
			"only valid with protocol ICMP or ICMPv6, but the rule has no protocol"},
		{"icmp without type", "{ingress: [{action: Allow, protocol: ICMP, icmp: {code: 0}}]}", "spec.ingress[0].icmp.type",
			"required (omit icmp to match every ICMP type)"},
		{"icmp empty", "{ingress: [{action: Allow, protocol: ICMP, icmp: {}}]}", "spec.ingress[0].icmp.type",
			"required (omit icmp to match every ICMP type)"},
		{"icmp type too big", "{ingress: [{action: Allow, protocol: ICMP, icmp: {type: 256}}]}", "spec.ingress[0].icmp.type",
			"must be between 0 and 255, got 256"},
		{"icmp code negative", "{ingress: [{action: Allow, protocol: ICMP, icmp: {type: 3, code: -1}}]}", "spec.ingress[0].icmp.code",
			"must be between 0 and 255, got -1"},
		{"icmp type a string", "{ingress: [{action: Allow, protocol: ICMP, icmp: {type: echo}}]}", "spec.ingress[0].icmp.type",
			`must be an integer between 0 and 255, got "echo"`},
		{"icmp unknown field", "{ingress: [{action: Allow, protocol: ICMP, icmp: {type: 8, kode: 0}}]}", "spec.ingress[0].icmp.kode", "unknown field"},
		{"icmp not a mapping", "{ingress: [{action: Allow, protocol: ICMP, icmp: 8}]}", "spec.ingress[0].icmp", "must be a mapping, got integer 8"},

		{"type lowercase", "{types: [ingress]}", "spec.types[0]", `must be Ingress or Egress, got "ingress" (did you mean "Ingress"?)`},
		{"type unknown", "{types: [Both]}", "spec.types[0]", `must be Ingress or Egress, got "Both"`},
		{"type duplicate", "{types: [Ingress, Egress, Ingress]}", "spec.types[2]", "Ingress is listed twice (also spec.types[0])"},
		{"type null", "{types: [Ingress, null]}", "spec.types[1]", "must be Ingress or Egress, got null"},
		{"type not a string", "{types: [Ingress, 5]}", "spec.types[1]", "must be a string, got integer 5"},
		{"types not a list", "{types: Ingress}", "spec.types", `must be a list, got "Ingress"`},
		{"egress rules without Egress", "{types: [Ingress], egress: [{action: Allow}]}", "spec.egress",
			"has rules but spec.types does not include Egress"},
		{"ingress rules without Ingress", "{types: [Egress], ingress: [{action: Deny}], egress: [{action: Allow}]}", "spec.ingress",
			"has rules but spec.types does not include Ingress"},

		{"protocol unknown", "{ingress: [{action: Allow, protocol: GRE}]}", "spec.ingress[0].protocol", `unknown protocol "GRE" (want ` + protos + ")"},
		{"protocol zero", "{ingress: [{action: Allow, protocol: 0}]}", "spec.ingress[0].protocol", "must be between 1 and 255, got 0"},
		{"protocol too big", "{ingress: [{action: Allow, protocol: 256}]}", "spec.ingress[0].protocol", "must be between 1 and 255, got 256"},
		{"protocol a quoted zero", "{ingress: [{action: Allow, protocol: '0'}]}", "spec.ingress[0].protocol", `unknown protocol "0" (want ` + protos + ")"},
		{"protocol a list", "{ingress: [{action: Allow, protocol: [TCP]}]}", "spec.ingress[0].protocol", "must be " + protos + ", got a list"},

		{"port too big", "{ingress: [{action: Allow, protocol: TCP, destination: {ports: [70000]}}]}", "spec.ingress[0].destination.ports[0]",
			"must be between 0 and 65535, got 70000"},
		{"port negative", "{ingress: [{action: Allow, protocol: TCP, destination: {ports: [80, -1]}}]}", "spec.ingress[0].destination.ports[1]",
			"must be between 0 and 65535, got -1"},
		{"port range backwards", "{ingress: [{action: Allow, protocol: TCP, destination: {ports: ['9000:8000']}}]}", "spec.ingress[0].destination.ports[0]",
			"invalid port range 9000:8000: the first port is greater than the last (did you mean 8000:9000?)"},
		{"notPort range backwards", "{egress: [{action: Allow, protocol: UDP, destination: {notPorts: [53, '70:60']}}]}", "spec.egress[0].destination.notPorts[1]",
			"invalid port range 70:60: the first port is greater than the last (did you mean 60:70?)"},
		{"port range not numbers", "{ingress: [{action: Allow, protocol: TCP, source: {ports: [80, '80:x']}}]}", "spec.ingress[0].source.ports[1]",
			`"80:x" is not a valid port range: want ` + want},
		{"port range too big", "{ingress: [{action: Allow, protocol: TCP, source: {ports: ['8000:70000']}}]}", "spec.ingress[0].source.ports[0]",
			`"8000:70000" is not a valid port range: want ` + want},
		{"port range with a dash", "{ingress: [{action: Allow, protocol: TCP, source: {ports: ['80-90']}}]}", "spec.ingress[0].source.ports[0]",
			`"80-90" is not a valid port range: write 80:90`},
		{"named port", "{ingress: [{action: Allow, protocol: TCP, source: {ports: [http]}}]}", "spec.ingress[0].source.ports[0]",
			`"http" is not ` + want + " (named ports are not supported)"},
		{"port a mapping", "{ingress: [{action: Allow, protocol: TCP, source: {ports: [{port: 80}]}}]}", "spec.ingress[0].source.ports[0]",
			"must be " + want + ", got a mapping"},
		{"port a float", "{ingress: [{action: Allow, protocol: TCP, source: {ports: [80.5]}}]}", "spec.ingress[0].source.ports[0]",
			"must be " + want + ", got number 80.5"},
		{"port null", "{ingress: [{action: Allow, protocol: TCP, source: {ports: [null]}}]}", "spec.ingress[0].source.ports[0]",
			"must be " + want + ", got null"},
		{"ports not a list", "{ingress: [{action: Allow, protocol: TCP, source: {ports: 80}}]}", "spec.ingress[0].source.ports",
			"must be a list, got integer 80"},

		{"net not an address", "{ingress: [{action: Allow, source: {nets: [10.0.0.300]}}]}", "spec.ingress[0].source.nets[0]",
			`"10.0.0.300" is not a valid CIDR or IP address`},
		{"net with host bits", "{ingress: [{action: Allow, source: {nets: [10.0.0.0/8, 10.1.2.3/8]}}]}", "spec.ingress[0].source.nets[1]",
			"10.1.2.3/8 has host bits set; did you mean 10.0.0.0/8?"},
		{"notNet IPv4-mapped", "{ingress: [{action: Allow, destination: {notNets: ['::ffff:10.0.0.1']}}]}", "spec.ingress[0].destination.notNets[0]",
			`"::ffff:10.0.0.1": IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form`},
		{"net with zone", "{egress: [{action: Allow, destination: {nets: ['fe80::1%eth0']}}]}", "spec.egress[0].destination.nets[0]",
			`"fe80::1%eth0": an address with a zone (%eth0) is not allowed`},
		{"net null", "{ingress: [{action: Allow, source: {nets: [null]}}]}", "spec.ingress[0].source.nets[0]", "must be a CIDR or an IP address, got null"},
		{"net not a string", "{ingress: [{action: Allow, source: {nets: [10]}}]}", "spec.ingress[0].source.nets[0]", "must be a string, got integer 10"},
		{"nets not a list", "{ingress: [{action: Allow, source: {nets: 10.0.0.0/8}}]}", "spec.ingress[0].source.nets", `must be a list, got "10.0.0.0/8"`},

		{"selector blank", "{selector: ' '}", "spec.selector", "must not be blank (omit it to select every endpoint)"},
		{"source selector blank", "{ingress: [{action: Allow, source: {selector: ' '}}]}", "spec.ingress[0].source.selector",
			"must not be blank (omit it to match any endpoint or address)"},
		{"notSelector blank", "{ingress: [{action: Allow, destination: {notSelector: '  '}}]}", "spec.ingress[0].destination.notSelector",
			"must not be blank (omit it to exclude nothing)"},
		{"selector not a string", "{selector: {role: web}}", "spec.selector", "must be a string, got a mapping"},

		{"order a string", "{order: high}", "spec.order", `must be a number, got "high"`},
		{"order NaN", "{order: .nan}", "spec.order", "must be a finite number, got NaN"},
		{"order infinite", "{order: -.inf}", "spec.order", "must be a finite number, got -Inf"},

		{"unknown spec field", "{tier: default}", "spec.tier", "unknown field"},
		{"unknown rule field", "{ingress: [{action: Allow, notProtocol: TCP}]}", "spec.ingress[0].notProtocol", "unknown field"},
		{"unknown entity field", "{ingress: [{action: Allow, source: {namespaceSelector: all()}}]}", "spec.ingress[0].source.namespaceSelector", "unknown field"},
		{"duplicate rule field", "{ingress: [{action: Allow, action: Deny}]}", "spec.ingress[0].action", "duplicate field"},
		{"rule not a mapping", "{ingress: [Allow]}", "spec.ingress[0]", `must be a mapping, got "Allow"`},
		{"rule null", "{ingress: [{action: Allow}, null]}", "spec.ingress[1]", "must be a mapping, got null"},
		{"rules not a list", "{ingress: {action: Allow}}", "spec.ingress", "must be a list, got a mapping"},
		{"source not a mapping", "{ingress: [{action: Allow, source: [a]}]}", "spec.ingress[0].source", "must be a mapping, got a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Decode(strings.NewReader(npHead + "spec: " + tt.spec + "\n"))
			if err == nil || rs != nil {
				t.Fatalf("got %v, %v; want an error", rs, err)
			}
			verrs := ValidationErrors(err)
			want := "document 1 (NetworkPolicy/p): " + tt.path + ": " + tt.reason
			if len(verrs) != 1 || verrs[0].Path != tt.path || err.Error() != want {
				t.Fatalf("error\n%s\nwant exactly\n%s", err, want)
			}
		})
	}
}

// TestNetworkPolicyEveryProblemNoNoise checks that decoding goes on after
// a problem and that a value that failed to decode brings no complaints
// that only follow from it.
func TestNetworkPolicyEveryProblemNoNoise(t *testing.T) {
	tests := []struct {
		name, spec string
		paths      []string
	}{
		{"bad protocol hides the port and icmp checks",
			"{ingress: [{action: Allow, protocol: GRE, icmp: {type: 8}, source: {ports: [1]}, destination: {ports: [80], notPorts: [81]}}]}",
			[]string{"spec.ingress[0].protocol"}},
		{"bad type hides the direction check", "{types: [Ingress, 5], egress: [{action: Allow}]}", []string{"spec.types[1]"}},
		{"misspelt type hides the direction check", "{types: [egress], egress: [{action: Allow}]}", []string{"spec.types[0]"}},
		{"types not a list hides the direction check", "{types: {a: b}, egress: [{action: Allow}]}", []string{"spec.types"}},
		{"a rule that is not a mapping", "{ingress: [5, {action: Nope}]}", []string{"spec.ingress[0]", "spec.ingress[1].action"}},
		{"many", `{order: x, selector: 'a ==', types: [Ingress],
		  ingress: [{action: allow, protocol: ICMP, destination: {ports: [80, 'a']}}, {action: Allow, source: {nets: [bad], selector: 'b =='}}],
		  egress: [{action: Deny}], extra: 1}`,
			[]string{"spec.order", "spec.selector", "spec.ingress[0].action", "spec.ingress[0].destination.ports",
				"spec.ingress[0].destination.ports[1]", "spec.ingress[1].source.nets[0]", "spec.ingress[1].source.selector",
				"spec.egress", "spec.extra"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(strings.NewReader(npHead + "spec: " + tt.spec + "\n"))
			var got []string
			for _, v := range ValidationErrors(err) {
				got = append(got, v.Path)
			}
			slices.Sort(got)
			want := slices.Clone(tt.paths)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("errors at %v, want %v:\n%v", got, want, err)
			}
		})
	}
}

// TestNetworkPolicySelectorErrors checks that a selector that does not
// parse is reported at its field with the column the parser stopped at.
func TestNetworkPolicySelectorErrors(t *testing.T) {
	tests := []struct {
		spec, path, sel string
		column          string
	}{
		{`{selector: 'role == web'}`, "spec.selector", `role == web`, "at column 9: "},
		{`{selector: 'role == "web" &&'}`, "spec.selector", `role == "web" &&`, "at column 17: "},
		{`{ingress: [{action: Allow, source: {selector: 'has(x'}}]}`, "spec.ingress[0].source.selector", `has(x`, "at column 6: "},
		{`{egress: [{action: Allow, destination: {notSelector: 'a == "b" || c in {"d"'}}]}`, "spec.egress[0].destination.notSelector",
			`a == "b" || c in {"d"`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			_, err := Decode(strings.NewReader(npHead + "spec: " + tt.spec + "\n"))
			verrs := ValidationErrors(err)
			if len(verrs) != 1 || verrs[0].Path != tt.path {
				t.Fatalf("got %v; want one error at %s", err, tt.path)
			}
			_, perr := selector.Parse(tt.sel)
			var pe *selector.ParseError
			if !errors.As(perr, &pe) {
				t.Fatalf("selector.Parse(%q) = %v; want a *ParseError", tt.sel, perr)
			}
			column := tt.column
			if column == "" {
				column = "at column " + strconv.Itoa(pe.Pos+1) + ": "
			}
			want := `invalid selector "` + strings.ReplaceAll(tt.sel, `"`, `\"`) + `": ` + column + pe.Reason
			if verrs[0].Reason != want {
				t.Fatalf("reason\n%s\nwant\n%s", verrs[0].Reason, want)
			}
		})
	}
	// Valid selectors of every shape pass.
	for _, sel := range []string{`all()`, `role == "web" && tier in {"a", "b"} || !has(quarantine)`, `a != 'b'`} {
		p := &NetworkPolicy{Metadata: Metadata{Name: "p"}, Spec: NetworkPolicySpec{Selector: sel,
			Ingress: []Rule{{Action: RuleAllow, Source: EntityRule{Selector: sel, NotSelector: sel}}}}}
		if err := Validate(p); err != nil {
			t.Errorf("selector %q: %v", sel, err)
		}
	}
}

func TestValidateNetworkPolicyProgrammatic(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name string
		spec NetworkPolicySpec
		want string // "" for valid
	}{
		{"empty", NetworkPolicySpec{}, ""},
		{"undefaulted types fit the rules", NetworkPolicySpec{Egress: []Rule{{Action: RuleAllow}}}, ""},
		{"empty port lists", NetworkPolicySpec{Ingress: []Rule{{Action: RuleDeny, Source: EntityRule{Ports: []PortRange{}, NotPorts: []PortRange{}}}}}, ""},
		{"backwards range", NetworkPolicySpec{Ingress: []Rule{{Action: RuleAllow, Protocol: ProtoTCP,
			Destination: EntityRule{Ports: []PortRange{{80, 80}, {9000, 8000}}}}}},
			"NetworkPolicy/p: spec.ingress[0].destination.ports[1]: invalid port range 9000:8000: the first port is greater than the last (did you mean 8000:9000?)"},
		{"NaN order", NetworkPolicySpec{Order: &nan}, "NetworkPolicy/p: spec.order: must be a finite number, got NaN"},
		{"zero prefix", NetworkPolicySpec{Ingress: []Rule{{Action: RuleAllow, Source: EntityRule{NotNets: []netip.Prefix{{}}}}}},
			"NetworkPolicy/p: spec.ingress[0].source.notNets[0]: not a valid CIDR"},
		{"icmp with UDP", NetworkPolicySpec{Egress: []Rule{{Action: RuleAllow, Protocol: ProtoUDP, ICMP: &ICMPMatch{Type: 8}}}},
			"NetworkPolicy/p: spec.egress[0].icmp: only valid with protocol ICMP or ICMPv6, got protocol UDP"},
		{"no action", NetworkPolicySpec{Ingress: []Rule{{}}}, "NetworkPolicy/p: spec.ingress[0].action: required (one of Allow, Deny, Log, Pass)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(&NetworkPolicy{Metadata: Metadata{Name: "p"}, Spec: tt.spec})
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || err.Error() != tt.want):
				t.Fatalf("got %v\nwant %s", err, tt.want)
			}
		})
	}
}

func policySamples() []Resource {
	minimal := &NetworkPolicy{Metadata: Metadata{Name: "deny-all"}}
	ApplyDefaults(minimal)
	fractional := &NetworkPolicy{Metadata: Metadata{Name: "frac"}, Spec: NetworkPolicySpec{
		Order: order(-0.125), Types: []PolicyType{PolicyEgress},
		Egress: []Rule{{Action: RuleAllow, Protocol: 200, Source: EntityRule{NotSelector: "a == 'b'"}}},
	}}
	ApplyDefaults(fractional)
	huge := &NetworkPolicy{Metadata: Metadata{Name: "huge"}, Spec: NetworkPolicySpec{Order: order(1e21)}}
	ApplyDefaults(huge)
	cfg := DefaultConfig()
	cfg.Spec.PrefilterDeny = prefixes("198.51.100.0/24", "203.0.113.7/32", "2001:db8:bad::/48")
	return []Resource{fullPolicy(), minimal, fractional, huge, cfg}
}

func TestNetworkPolicyRoundTrip(t *testing.T) {
	want := policySamples()
	var b bytes.Buffer
	if err := Encode(&b, want...); err != nil {
		t.Fatal(err)
	}
	got, err := Decode(&b)
	if err != nil {
		t.Fatalf("decoding our own YAML: %v\n%s", err, b.String())
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("YAML round trip changed resources:\ngot  %#v\nwant %#v", got, want)
	}
	for _, r := range want {
		j, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		back, _ := NewResource(r.Kind())
		if err := json.Unmarshal(j, back); err != nil {
			t.Fatalf("%s: %v\n%s", RefOf(r), err, j)
		}
		if !reflect.DeepEqual(back, r) {
			t.Fatalf("%s: JSON round trip changed it:\ngot  %#v\nwant %#v\n%s", RefOf(r), back, r, j)
		}
	}
}

func TestNetworkPolicyShape(t *testing.T) {
	var b bytes.Buffer
	if err := Encode(&b, fullPolicy()); err != nil {
		t.Fatal(err)
	}
	want := `apiVersion: calyx.io/v1
kind: NetworkPolicy
metadata:
  name: allow-web
  labels:
    team: web
spec:
  order: 100
  selector: role == "web"
  types:
    - Ingress
    - Egress
  ingress:
    - action: Allow
      protocol: TCP
      source:
        nets:
          - 10.0.0.0/8
          - 192.168.1.5/32
          - fd00::/64
          - 2001:db8::1/128
        notNets:
          - 10.1.0.0/16
        selector: role == "lb"
        notSelector: quarantine == "true"
        ports:
          - 1024
          - "2000:3000"
        notPorts:
          - 2500
      destination:
        ports:
          - 80
          - 443
          - "8000:8080"
          - "0:65535"
    - action: Allow
      protocol: ICMP
      icmp:
        type: 8
        code: 0
    - action: Log
      protocol: 47
    - action: Deny
  egress:
    - action: Allow
      protocol: ICMPv6
      icmp:
        type: 128
    - action: Pass
      protocol: UDP
      destination:
        nets:
          - 10.96.0.10/32
        ports:
          - 53
    - action: Allow
      protocol: SCTP
      destination:
        ports:
          - 38412
`
	if b.String() != want {
		t.Fatalf("YAML:\n%s\nwant\n%s", b.String(), want)
	}

	j, err := json.Marshal(policySamples()[2])
	if err != nil {
		t.Fatal(err)
	}
	wantJSON := `{"apiVersion":"calyx.io/v1","kind":"NetworkPolicy","metadata":{"name":"frac"},` +
		`"spec":{"order":-0.125,"selector":"all()","types":["Egress"],"egress":[{"action":"Allow","protocol":200,"source":{"notSelector":"a == 'b'"}}]}}`
	if string(j) != wantJSON {
		t.Fatalf("JSON:\n%s\nwant\n%s", j, wantJSON)
	}
	j, _ = json.Marshal(&NetworkPolicy{Metadata: Metadata{Name: "x"}, Spec: NetworkPolicySpec{
		Ingress: []Rule{{Action: RuleAllow, Protocol: ProtoTCP, Destination: EntityRule{Ports: []PortRange{{80, 80}, {8000, 8080}}}}}}})
	wantJSON = `{"apiVersion":"calyx.io/v1","kind":"NetworkPolicy","metadata":{"name":"x"},` +
		`"spec":{"selector":"","types":[],"ingress":[{"action":"Allow","protocol":"TCP","destination":{"ports":[80,"8000:8080"]}}]}}`
	if string(j) != wantJSON {
		t.Fatalf("JSON:\n%s\nwant\n%s", j, wantJSON)
	}

	// A Config without prefilterDeny reads as it did before the field.
	var c bytes.Buffer
	if err := Encode(&c, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(c.String(), "prefilterDeny") {
		t.Fatalf("empty prefilterDeny written:\n%s", c.String())
	}
	j, _ = json.Marshal(policySamples()[4])
	if !strings.Contains(string(j), `"prefilterDeny":["198.51.100.0/24","203.0.113.7/32","2001:db8:bad::/48"]`) {
		t.Fatalf("config JSON: %s", j)
	}
}

func TestUnmarshalNetworkPolicy(t *testing.T) {
	var p NetworkPolicy
	if err := json.Unmarshal([]byte(`{"apiVersion":"calyx.io/v1","kind":"NetworkPolicy","metadata":{"name":"p"},`+
		`"spec":{"order":5,"egress":[{"action":"Allow","protocol":"udp","destination":{"ports":[53,"1000:2000"]}}]}}`), &p); err != nil {
		t.Fatal(err)
	}
	want := NetworkPolicy{Metadata: Metadata{Name: "p"}, Spec: NetworkPolicySpec{Order: order(5), Selector: "all()",
		Types:  []PolicyType{PolicyEgress},
		Egress: []Rule{{Action: RuleAllow, Protocol: ProtoUDP, Destination: EntityRule{Ports: []PortRange{{53, 53}, {1000, 2000}}}}}}}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("got  %#v\nwant %#v", p, want)
	}
	err := json.Unmarshal([]byte(`{"apiVersion":"calyx.io/v1","kind":"NetworkPolicy","metadata":{"name":"p"},`+
		`"spec":{"ingress":[{"action":"allow"}]}}`), &p)
	if err == nil || err.Error() != `NetworkPolicy/p: spec.ingress[0].action: must be one of Allow, Deny, Log, Pass, got "allow" (did you mean "Allow"?)` {
		t.Fatalf("json.Unmarshal of a bad policy: %v", err)
	}
	var y NetworkPolicy
	if err := yaml.Unmarshal([]byte(fullPolicyDoc), &y); err != nil || !reflect.DeepEqual(&y, fullPolicy()) {
		t.Fatalf("yaml.Unmarshal: %v %#v", err, y)
	}
	if err := yaml.Unmarshal([]byte("apiVersion: calyx.io/v1\nkind: Node\nmetadata: {name: n}\nspec: {ipv4Address: 10.0.0.1/24}\n"), &y); err == nil ||
		err.Error() != "Node/n: kind: must be NetworkPolicy, got Node" {
		t.Fatalf("unmarshalling a Node into a NetworkPolicy: %v", err)
	}
}

func TestNetworkPolicyDeepCopy(t *testing.T) {
	orig := fullPolicy()
	c := deepCopy(orig).(*NetworkPolicy)
	if !reflect.DeepEqual(c, orig) {
		t.Fatalf("copy differs:\n%#v\n%#v", c, orig)
	}
	*orig.Spec.Order = 1
	orig.Spec.Types[0] = "x"
	orig.Spec.Ingress[0].Source.Nets[0] = netip.Prefix{}
	orig.Spec.Ingress[0].Source.NotNets[0] = netip.Prefix{}
	orig.Spec.Ingress[0].Source.Ports[0] = PortRange{}
	orig.Spec.Ingress[0].Destination.Ports[0] = PortRange{}
	orig.Spec.Ingress[0].Source.NotPorts[0] = PortRange{}
	orig.Spec.Ingress[1].ICMP.Type = 99
	orig.Spec.Egress[0].Action = RuleDeny
	orig.Metadata.Labels["team"] = "x"
	if !reflect.DeepEqual(c, fullPolicy()) {
		t.Fatal("the copy shares memory with the original")
	}

	// Empty collections become nil and a code that does not count
	// becomes 0, as reading the stored file would give.
	p := &NetworkPolicy{Metadata: Metadata{Name: "p", Labels: map[string]string{}}, Spec: NetworkPolicySpec{
		Types:   []PolicyType{},
		Ingress: []Rule{{Action: RuleAllow, Protocol: ProtoICMP, ICMP: &ICMPMatch{Type: 3, Code: 4}, Source: EntityRule{Nets: []netip.Prefix{}, Ports: []PortRange{}}}},
		Egress:  []Rule{},
	}}
	c = deepCopy(p).(*NetworkPolicy)
	want := &NetworkPolicy{Metadata: Metadata{Name: "p"}, Spec: NetworkPolicySpec{
		Ingress: []Rule{{Action: RuleAllow, Protocol: ProtoICMP, ICMP: &ICMPMatch{Type: 3}}},
	}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %#v\nwant %#v", c, want)
	}
	if p.Spec.Ingress[0].ICMP.Code != 4 {
		t.Fatal("deepCopy changed the original")
	}

	cfg := DefaultConfig()
	cfg.Spec.PrefilterDeny = prefixes("198.51.100.0/24")
	cc := deepCopy(cfg).(*Config)
	cfg.Spec.PrefilterDeny[0] = netip.Prefix{}
	if cc.Spec.PrefilterDeny[0] != netip.MustParsePrefix("198.51.100.0/24") {
		t.Fatal("Config copy shares prefilterDeny")
	}
	cfg.Spec.PrefilterDeny = []netip.Prefix{}
	if deepCopy(cfg).(*Config).Spec.PrefilterDeny != nil {
		t.Fatal("empty prefilterDeny not normalized to nil")
	}
}

func TestSortPolicies(t *testing.T) {
	np := func(name string, o *float64) *NetworkPolicy {
		return &NetworkPolicy{Metadata: Metadata{Name: name}, Spec: NetworkPolicySpec{Order: o}}
	}
	ps := []*NetworkPolicy{np("b", nil), np("z", order(10)), np("m", order(-1)), np("a", order(10)), np("a", nil), np("x", order(2.5)), np("c", order(0))}
	SortPolicies(ps)
	var got []string
	for _, p := range ps {
		o := "nil"
		if p.Spec.Order != nil {
			o = strconv.FormatFloat(*p.Spec.Order, 'g', -1, 64)
		}
		got = append(got, p.Metadata.Name+"="+o)
	}
	if s := strings.Join(got, " "); s != "m=-1 c=0 x=2.5 a=10 z=10 a=nil b=nil" {
		t.Fatalf("sorted: %s", s)
	}
	SortPolicies(nil)
}

func TestPolicyAppliesTo(t *testing.T) {
	tests := []struct {
		spec        NetworkPolicySpec
		ingress, eg bool
	}{
		{NetworkPolicySpec{Types: []PolicyType{PolicyIngress}}, true, false},
		{NetworkPolicySpec{Types: []PolicyType{PolicyEgress}}, false, true},
		{NetworkPolicySpec{Types: []PolicyType{PolicyEgress, PolicyIngress}}, true, true},
		// Undefaulted: the types ApplyDefaults would fill in.
		{NetworkPolicySpec{}, true, false},
		{NetworkPolicySpec{Egress: []Rule{{Action: RuleAllow}}}, false, true},
		{NetworkPolicySpec{Ingress: []Rule{{Action: RuleAllow}}, Egress: []Rule{{Action: RuleAllow}}}, true, true},
	}
	for i, tt := range tests {
		if got := tt.spec.AppliesTo(PolicyIngress); got != tt.ingress {
			t.Errorf("%d: AppliesTo(Ingress) = %v", i, got)
		}
		if got := tt.spec.AppliesTo(PolicyEgress); got != tt.eg {
			t.Errorf("%d: AppliesTo(Egress) = %v", i, got)
		}
	}
}

func TestProtocolName(t *testing.T) {
	for p, want := range map[uint8]string{0: "", 1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP", 47: "47", 255: "255"} {
		if got := ProtocolName(p); got != want {
			t.Errorf("ProtocolName(%d) = %q, want %q", p, got, want)
		}
	}
}

func TestSnapshotPolicies(t *testing.T) {
	s := NewSnapshot()
	p1 := decodeOne(t, npHead+"spec: {order: 1}").(*NetworkPolicy)
	p2 := fullPolicy()
	s.Put(p1)
	s.Put(p2)
	s.Put(node("n1", "10.30.0.10/24"))
	if got, ok := s.Get(Ref{KindNetworkPolicy, "p"}); !ok || got != p1 {
		t.Fatalf("Get = %v, %v", got, ok)
	}
	if got := s.Resources("networkpolicies"); len(got) != 2 || got[0] != p2 || got[1] != p1 {
		t.Fatalf("Resources(networkpolicies) = %v", got)
	}
	var names []string
	for _, r := range s.Resources("") {
		names = append(names, RefOf(r).String())
	}
	if got := strings.Join(names, " "); got != "Config/default Node/n1 NetworkPolicy/allow-web NetworkPolicy/p" {
		t.Fatalf("Resources(\"\") = %s", got)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}

	c := s.Clone()
	p1b := decodeOne(t, npHead+"spec: {order: 2}").(*NetworkPolicy)
	c.Put(p1b)
	if !c.Remove(Ref{KindNetworkPolicy, "allow-web"}) || c.Remove(Ref{KindNetworkPolicy, "allow-web"}) {
		t.Fatal("Remove of an existing policy did not report true once")
	}
	if s.Policies["p"] != p1 || s.Policies["allow-web"] != p2 || len(s.Policies) != 2 {
		t.Fatal("changing a clone changed the original")
	}
	if c.Policies["p"] != p1b || len(c.Policies) != 1 {
		t.Fatalf("clone: %v", c.Policies)
	}
	if _, ok := c.Get(Ref{KindNetworkPolicy, "allow-web"}); ok {
		t.Fatal("removed policy still found")
	}

	var z Snapshot
	z.Put(p1)
	if z.Policies["p"] != p1 || z.Clone().Policies["p"] != p1 {
		t.Fatal("Put into a zero Snapshot")
	}
	if (&Snapshot{}).Clone().Policies == nil {
		t.Fatal("Clone of a zero Snapshot has no policy map")
	}
}

func TestPolicyStore(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	f := openStore(t, dir)
	ch, err := f.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next(t, ch, func(*Snapshot) bool { return true })

	// What is applied is defaulted; the caller's resource is left alone.
	in := &NetworkPolicy{Metadata: Metadata{Name: "web"}, Spec: NetworkPolicySpec{
		Order: order(10), Selector: `role == "web"`,
		Egress: []Rule{{Action: RuleAllow, Protocol: ProtoTCP, Destination: EntityRule{Ports: []PortRange{{443, 443}, {8000, 8080}}}}},
	}}
	if err := f.Apply(ctx, []Resource{in, fullPolicy()}); err != nil {
		t.Fatal(err)
	}
	if in.Spec.Types != nil {
		t.Fatal("Apply changed the caller's resource")
	}
	b, err := os.ReadFile(filepath.Join(dir, "networkpolicy", "web.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := `apiVersion: calyx.io/v1
kind: NetworkPolicy
metadata:
  name: web
spec:
  order: 10
  selector: role == "web"
  types:
    - Egress
  egress:
    - action: Allow
      protocol: TCP
      destination:
        ports:
          - 443
          - "8000:8080"
`
	if string(b) != want {
		t.Fatalf("stored file:\n%s\nwant\n%s", b, want)
	}
	stored := deepCopy(in).(*NetworkPolicy)
	ApplyDefaults(stored)

	s, err := openStore(t, dir).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Policies, map[string]*NetworkPolicy{"web": stored, "allow-web": fullPolicy()}) {
		t.Fatalf("policies read back: %#v", s.Policies)
	}
	next(t, ch, func(s *Snapshot) bool { return len(s.Policies) == 2 && reflect.DeepEqual(s.Policies["web"], stored) })

	before := dirState(t, dir)
	bad := &NetworkPolicy{Metadata: Metadata{Name: "bad"}, Spec: NetworkPolicySpec{Types: []PolicyType{PolicyIngress},
		Egress: []Rule{{Action: RuleAllow}}}}
	if err := f.Apply(ctx, []Resource{bad}); err == nil || err.Error() != "NetworkPolicy/bad: spec.egress: has rules but spec.types does not include Egress" {
		t.Fatalf("applying a bad policy: %v", err)
	}
	assertUnchanged(t, before, dirState(t, dir))

	if err := f.Delete(ctx, []Ref{{"networkpolicies", "web"}}); err != nil {
		t.Fatal(err)
	}
	if err := f.Delete(ctx, []Ref{{KindNetworkPolicy, "web"}}); err == nil || err.Error() != "NetworkPolicy/web: not found" {
		t.Fatalf("deleting it again: %v", err)
	}
	next(t, ch, func(s *Snapshot) bool { return s.Policies["web"] == nil && s.Policies["allow-web"] != nil })
}

func TestDecodePrefilterDeny(t *testing.T) {
	const head = "apiVersion: calyx.io/v1\nkind: Config\nmetadata: {name: default}\n"
	c := decodeOne(t, head+"spec: {prefilterDeny: [198.51.100.0/24, '2001:db8::/32', 0.0.0.0/0]}").(*Config)
	want := DefaultConfig()
	want.Spec.PrefilterDeny = prefixes("198.51.100.0/24", "2001:db8::/32", "0.0.0.0/0")
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %#v\nwant %#v", c, want)
	}
	if c := decodeOne(t, head+"spec: {prefilterDeny: []}").(*Config); c.Spec.PrefilterDeny != nil {
		t.Fatal("empty prefilterDeny not nil")
	}

	tests := []struct{ name, spec, path, reason string }{
		{"bare address", "[198.51.100.7]", "spec.prefilterDeny[0]", `"198.51.100.7" is not a valid CIDR (write 198.51.100.7/32)`},
		{"not a CIDR", "[10.0.0.0/8, nope]", "spec.prefilterDeny[1]", `"nope" is not a valid CIDR`},
		{"null", "[null]", "spec.prefilterDeny[0]", "must be a CIDR, got null"},
		{"host bits", "[198.51.100.7/24]", "spec.prefilterDeny[0]", "198.51.100.7/24 has host bits set; did you mean 198.51.100.0/24?"},
		{"IPv4-mapped", "['::ffff:198.51.100.0/120']", "spec.prefilterDeny[0]",
			`"::ffff:198.51.100.0/120" is not a valid CIDR: IPv4-mapped IPv6 addresses are not allowed, write the IPv4 form`},
		{"duplicate", "[198.51.100.0/24, 10.0.0.0/8, 198.51.100.0/24]", "spec.prefilterDeny[2]",
			"198.51.100.0/24 is listed twice (also spec.prefilterDeny[0])"},
		{"not a list", "198.51.100.0/24", "spec.prefilterDeny", `must be a list, got "198.51.100.0/24"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(strings.NewReader(head + "spec: {prefilterDeny: " + tt.spec + "}\n"))
			verrs := ValidationErrors(err)
			want := "document 1 (Config/default): " + tt.path + ": " + tt.reason
			if len(verrs) != 1 || verrs[0].Path != tt.path || err.Error() != want {
				t.Fatalf("error\n%v\nwant exactly\n%s", err, want)
			}
		})
	}
}

func prefilterConfig(cidrs ...string) *Config {
	c := DefaultConfig()
	c.Spec.PrefilterDeny = prefixes(cidrs...)
	return c
}

func TestSnapshotPrefilterDenyCutsNode(t *testing.T) {
	n6 := node("n6", "10.40.0.1/24")
	n6.Spec.IPv6Address = netip.MustParsePrefix("2001:db8:1::10/64")
	s := snapshotOf(
		node("n1", "10.30.0.10/24"), node("n2", "10.30.1.10/24"), node("n3", "192.0.2.1/24"), n6,
		prefilterConfig("198.51.100.0/24", "10.30.0.0/16", "10.30.1.10/32", "2001:db8::/32"),
	)
	want := "Config/default: spec.prefilterDeny[1]: 10.30.0.0/16 contains 10.30.0.10, the ipv4Address of Node/n1, and would cut Node/n1 off the underlay\n" +
		"Config/default: spec.prefilterDeny[1]: 10.30.0.0/16 contains 10.30.1.10, the ipv4Address of Node/n2, and would cut Node/n2 off the underlay\n" +
		"Config/default: spec.prefilterDeny[2]: 10.30.1.10/32 contains 10.30.1.10, the ipv4Address of Node/n2, and would cut Node/n2 off the underlay\n" +
		"Config/default: spec.prefilterDeny[3]: 2001:db8::/32 contains 2001:db8:1::10, the ipv6Address of Node/n6, and would cut Node/n6 off the underlay"
	if err := s.Validate(); err == nil || err.Error() != want {
		t.Fatalf("got\n%v\nwant\n%s", err, want)
	}
	if err := snapshotOf(node("n1", "10.30.0.10/24"), prefilterConfig("10.31.0.0/16", "128.0.0.0/1", "2001:db8::/32")).Validate(); err != nil {
		t.Fatalf("no node inside: %v", err)
	}

	// Reported on the node when the node is what is being applied.
	ctx := context.Background()
	dir := t.TempDir()
	f := openStore(t, dir)
	if err := f.Apply(ctx, []Resource{node("n1", "10.30.0.10/24"), prefilterConfig("198.51.100.0/24")}); err != nil {
		t.Fatal(err)
	}
	before := dirState(t, dir)
	refused := []struct {
		name string
		rs   []Resource
		want string
	}{
		{"a node inside", []Resource{node("n2", "198.51.100.20/24")},
			"Node/n2: spec.ipv4Address: 198.51.100.20 is inside spec.prefilterDeny[0] (198.51.100.0/24) of Config/default, which would cut Node/n2 off the underlay"},
		{"a config over a node", []Resource{prefilterConfig("198.51.100.0/24", "10.30.0.10/32")},
			"Config/default: spec.prefilterDeny[1]: 10.30.0.10/32 contains 10.30.0.10, the ipv4Address of Node/n1, and would cut Node/n1 off the underlay"},
		{"both at once", []Resource{node("n2", "203.0.113.5/24"), prefilterConfig("203.0.113.0/24")},
			"Config/default: spec.prefilterDeny[0]: 203.0.113.0/24 contains 203.0.113.5, the ipv4Address of Node/n2, and would cut Node/n2 off the underlay"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			if err := f.Apply(ctx, tt.rs); err == nil || err.Error() != tt.want {
				t.Fatalf("got %v\nwant %s", err, tt.want)
			}
			assertUnchanged(t, before, dirState(t, dir))
		})
	}
	s, err := openStore(t, dir).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Config, prefilterConfig("198.51.100.0/24")) {
		t.Fatalf("config read back: %#v", s.Config)
	}
}
