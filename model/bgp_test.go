package model

import (
	"net/netip"
)

func bgpConfiguration(mod ...func(*BGPConfigurationSpec)) *BGPConfiguration {
	c := &BGPConfiguration{Metadata: Metadata{Name: BGPConfigurationName}}
	for _, m := range mod {
		m(&c.Spec)
	}
	ApplyDefaults(c)
	return c
}

func bgpPeer(name, ip string, as uint32, mod ...func(*BGPPeerSpec)) *BGPPeer {
	p := &BGPPeer{Metadata: Metadata{Name: name}, Spec: BGPPeerSpec{PeerIP: netip.MustParseAddr(ip), ASNumber: as}}
	for _, m := range mod {
		m(&p.Spec)
	}
	ApplyDefaults(p)
	return p
}
