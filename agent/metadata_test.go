package agent

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/calyxnet/calyx/agent/calc"
	"github.com/calyxnet/calyx/agent/metadataproxy"
	"github.com/calyxnet/calyx/model"
)

// TestMetadataEndpoints: the proxy serves every attached endpoint
// interface, vouching for the endpoint's IPv4 address when it has one;
// not the underlay, not an interface whose attach failed.
func TestMetadataEndpoints(t *testing.T) {
	s := model.NewSnapshot()
	for name, nets := range map[string][]string{
		"dual":   {"fd00:65::2/128", "10.65.0.2/32"},
		"v6":     {"fd00:65::3/128", "fd00:65::33/128"},
		"broken": {"10.65.0.4/32"},
	} {
		ep := &model.WorkloadEndpoint{Metadata: model.Metadata{Name: name}, Spec: model.WorkloadEndpointSpec{Node: "host-a", Interface: "tap-" + name}}
		for _, n := range nets {
			ep.Spec.IPNetworks = append(ep.Spec.IPNetworks, netip.MustParsePrefix(n))
		}
		s.Put(ep)
	}
	d := &calc.Desired{Attach: map[uint32]calc.Attachment{
		2:  {Ifname: "eth0", Ifindex: 2, Underlay: true},
		11: {Ifname: "tap-dual", Ifindex: 11, Endpoint: "dual"},
		12: {Ifname: "tap-v6", Ifindex: 12, Endpoint: "v6"},
		13: {Ifname: "tap-broken", Ifindex: 13, Endpoint: "broken"},
	}}
	got := metadataEndpoints(s, d, func(ifindex int) bool { return ifindex == 13 })
	want := []metadataproxy.Endpoint{
		{Name: "dual", Ifname: "tap-dual", Ifindex: 11, Addr: netip.MustParseAddr("10.65.0.2")},
		{Name: "v6", Ifname: "tap-v6", Ifindex: 12, Addr: netip.MustParseAddr("fd00:65::3")},
	}
	if !slices.Equal(got, want) {
		t.Errorf("metadata endpoints = %+v, want %+v", got, want)
	}
}
