package model

import (
	"strings"
	"testing"
)

func TestParseKind(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"IPPool", KindIPPool},
		{"ippool", KindIPPool},
		{"ippools", KindIPPool},
		{"IPPOOLS", KindIPPool},
		{"node", KindNode},
		{"Nodes", KindNode},
		{"workloadendpoint", KindWorkloadEndpoint},
		{"WorkloadEndpoints", KindWorkloadEndpoint},
		{"config", KindConfig},
		{"Configs", KindConfig},
		{"floatingip", KindFloatingIP},
		{"FloatingIPs", KindFloatingIP},
		{"FLOATINGIP", KindFloatingIP},
		{"networkpolicy", KindNetworkPolicy},
		{"NetworkPolicies", KindNetworkPolicy},
		{"ipamblock", KindIPAMBlock},
		{"IPAMBlocks", KindIPAMBlock},
		{"subnet", KindSubnet},
		{"Subnets", KindSubnet},
		{"bgpconfiguration", KindBGPConfiguration},
		{"BGPConfigurations", KindBGPConfiguration},
		{"bgpconfig", KindBGPConfiguration},
		{"bgppeer", KindBGPPeer},
		{"BGPPeers", KindBGPPeer},
	}
	for _, tt := range tests {
		got, err := ParseKind(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseKind(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "wep", "pool", "ippoolss", "Pod", "fip", "floating-ip", "policy", "globalnetworkpolicy"} {
		_, err := ParseKind(bad)
		want := `unknown kind "` + bad + `" (want one of IPPool, Node, Subnet, WorkloadEndpoint, FloatingIP, NetworkPolicy, Config, IPAMBlock, BGPConfiguration, BGPPeer)`
		if err == nil || err.Error() != want {
			t.Errorf("ParseKind(%q) error = %v; want %s", bad, err, want)
		}
	}
}

func TestRef(t *testing.T) {
	r := RefOf(&IPPool{Metadata: Metadata{Name: "p1"}})
	if r != (Ref{"IPPool", "p1"}) || r.String() != "IPPool/p1" {
		t.Fatalf("got %v %q", r, r)
	}
	got, err := ParseRef("workloadendpoints/web-1")
	if err != nil || got != (Ref{KindWorkloadEndpoint, "web-1"}) {
		t.Fatalf("ParseRef: %v %v", got, err)
	}
	for _, bad := range []string{"IPPool", "IPPool/", "Foo/x"} {
		if _, err := ParseRef(bad); err == nil {
			t.Errorf("ParseRef(%q) succeeded", bad)
		}
	}
	if got, err := ParseRef("floatingips/web-1-fip"); err != nil || got != (Ref{KindFloatingIP, "web-1-fip"}) {
		t.Fatalf("ParseRef: %v %v", got, err)
	}
	if k := strings.Join(Kinds(), ","); k != "Config,BGPConfiguration,IPPool,Node,Subnet,BGPPeer,WorkloadEndpoint,FloatingIP,NetworkPolicy,IPAMBlock" {
		t.Errorf("Kinds() = %s", k)
	}
	for _, k := range Kinds() {
		r, err := NewResource(k)
		if err != nil || r.Kind() != k {
			t.Errorf("NewResource(%s) = %v, %v", k, r, err)
		}
	}
}
