package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
)

// fakeAPI records the GoBGP calls.
type fakeAPI struct{ calls []string }

func (f *fakeAPI) AddPeer(_ context.Context, r *api.AddPeerRequest) error {
	f.calls = append(f.calls, fmt.Sprintf("addpeer %s as%d pw=%q", r.Peer.Conf.NeighborAddress, r.Peer.Conf.PeerAsn, r.Peer.Conf.AuthPassword))
	return nil
}
func (f *fakeAPI) DeletePeer(_ context.Context, r *api.DeletePeerRequest) error {
	f.calls = append(f.calls, "delpeer "+r.Address)
	return nil
}
func (f *fakeAPI) UpdatePeer(_ context.Context, r *api.UpdatePeerRequest) (*api.UpdatePeerResponse, error) {
	f.calls = append(f.calls, fmt.Sprintf("updpeer %s rrc=%v", r.Peer.Conf.NeighborAddress, r.Peer.RouteReflector != nil))
	return &api.UpdatePeerResponse{}, nil
}
func (f *fakeAPI) AddPath(r apiutil.AddPathRequest) ([]apiutil.AddPathResponse, error) {
	for _, p := range r.Paths {
		f.calls = append(f.calls, fmt.Sprintf("add %s via %v", p.Nlri, nextHop(p.Attrs)))
	}
	return make([]apiutil.AddPathResponse, len(r.Paths)), nil
}
func (f *fakeAPI) DeletePath(r apiutil.DeletePathRequest) error {
	for _, p := range r.Paths {
		f.calls = append(f.calls, fmt.Sprintf("del %s withdraw=%v", p.Nlri, p.Withdrawal))
	}
	return nil
}

func (f *fakeAPI) AddDefinedSet(_ context.Context, r *api.AddDefinedSetRequest) error {
	f.calls = append(f.calls, fmt.Sprintf("set %s +%v", r.DefinedSet.Name, r.DefinedSet.List))
	return nil
}
func (f *fakeAPI) DeleteDefinedSet(_ context.Context, r *api.DeleteDefinedSetRequest) error {
	f.calls = append(f.calls, fmt.Sprintf("set %s -%v", r.DefinedSet.Name, r.DefinedSet.List))
	return nil
}
func (f *fakeAPI) ResetPeer(_ context.Context, r *api.ResetPeerRequest) error {
	f.calls = append(f.calls, "resend "+r.Address)
	return nil
}

func fakeSpeaker() (*Speaker, *fakeAPI) {
	f := &fakeAPI{}
	s := &Speaker{
		cfg:     Config{ASN: 64512, RouterID: ip("192.168.1.10"), GracefulRestartSeconds: 120, ConnectRetry: 5 * time.Second, RouteReflectorClusterID: "1.0.0.1"},
		api:     f,
		peers:   map[netip.Addr]Peer{},
		adverts: map[netip.Prefix]Advertisement{},
	}
	return s, f
}

func (f *fakeAPI) take() []string { c := f.calls; f.calls = nil; return c }

func TestSetPeersAndAdvertisementsDiff(t *testing.T) {
	s, f := fakeSpeaker()
	p1 := Peer{Address: ip("192.168.1.1"), ASN: 65000, Type: PeerTypeGlobal}
	p2 := Peer{Address: ip("192.168.1.2"), ASN: 64512, Type: PeerTypeMesh}
	p3 := Peer{Address: ip("192.168.1.3"), ASN: 64512, Type: PeerTypeMesh}
	a1 := Advertisement{Prefix: pfx("10.244.1.0/26"), NextHop: ip("192.168.1.10")}
	a2 := Advertisement{Prefix: pfx("203.0.113.5/32"), NextHop: ip("192.168.1.10")}
	a3 := Advertisement{Prefix: pfx("10.244.7.9/32"), NextHop: ip("192.168.1.10")}

	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"peers before the first advertisements are only recorded", func() error { return s.SetPeers([]Peer{p2, p1}) }, nil},
		{"first advertisements, then the peers", func() error { return s.SetAdvertisements([]Advertisement{a2, a1}) }, []string{
			"add 10.244.1.0/26 via 192.168.1.10", "add 203.0.113.5/32 via 192.168.1.10",
			"set calyx-nodes +[192.168.1.2/32]", "set calyx-external +[192.168.1.1/32]",
			`addpeer 192.168.1.1 as65000 pw=""`, `addpeer 192.168.1.2 as64512 pw=""`}},
		{"same set: nothing", func() error { return s.SetAdvertisements([]Advertisement{a1, a2}) }, nil},
		{"same peers: nothing", func() error { return s.SetPeers([]Peer{p1, p2}) }, nil},
		{"one gone, one new", func() error { return s.SetAdvertisements([]Advertisement{a1, a3}) }, []string{
			"del 203.0.113.5/32 withdraw=true", "add 10.244.7.9/32 via 192.168.1.10"}},
		{"next hop changed: replaced, not withdrawn", func() error {
			return s.SetAdvertisements([]Advertisement{a1, {Prefix: a3.Prefix, NextHop: ip("192.168.1.11")}})
		}, []string{"add 10.244.7.9/32 via 192.168.1.11"}},
		{"peer added, removed, updated, re-created", func() error {
			p2rr := p2
			p2rr.RouteReflectorClient = true
			p1pw := p1
			p1pw.Password = "s3cret"
			return s.SetPeers([]Peer{p1pw, p2rr, p3})
		}, []string{"set calyx-nodes +[192.168.1.3/32]", "delpeer 192.168.1.1", "updpeer 192.168.1.2 rrc=true",
			`addpeer 192.168.1.1 as65000 pw="s3cret"`, `addpeer 192.168.1.3 as64512 pw=""`}},
		{"keep next hop: the peer's routes are sent again under the new policy", func() error {
			p1pw := p1
			p1pw.Password = "s3cret"
			p1pw.KeepNextHop = true
			p2rr := p2
			p2rr.RouteReflectorClient = true
			return s.SetPeers([]Peer{p1pw, p2rr, p3})
		}, []string{"set calyx-keep-next-hop +[192.168.1.1/32]", "updpeer 192.168.1.1 rrc=false", "resend 192.168.1.1"}},
		{"all peers gone", func() error { return s.SetPeers(nil) }, []string{
			"set calyx-nodes -[192.168.1.2/32 192.168.1.3/32]", "set calyx-external -[192.168.1.1/32]", "set calyx-keep-next-hop -[192.168.1.1/32]",
			"delpeer 192.168.1.1", "delpeer 192.168.1.2", "delpeer 192.168.1.3"}},
		{"all routes gone", func() error { return s.SetAdvertisements(nil) }, []string{
			"del 10.244.1.0/26 withdraw=true", "del 10.244.7.9/32 withdraw=true"}},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := f.take(); !reflect.DeepEqual(got, st.want) {
			t.Errorf("%s:\n got %q\nwant %q", st.name, got, st.want)
		}
	}
	if err := s.SetPeers([]Peer{{Address: ip("192.168.1.9")}}); err == nil {
		t.Error("peer without ASN accepted")
	}
	if err := s.SetAdvertisements([]Advertisement{{Prefix: pfx("10.0.0.0/8")}}); err == nil {
		t.Error("advertisement without next hop accepted")
	}
}

func TestAPIPeerGracefulRestartAndMD5(t *testing.T) {
	s, _ := fakeSpeaker()
	s.cfg.Restarting = true
	p := s.apiPeer(Peer{Address: ip("192.168.1.1"), ASN: 65000, Password: "pw", Passive: true})
	gr := p.GracefulRestart
	if !gr.Enabled || gr.RestartTime != 120 || gr.DeferralTime != 60 || !gr.LocalRestarting || gr.NotificationEnabled || gr.LonglivedEnabled {
		t.Errorf("graceful restart %v", gr)
	}
	if len(p.AfiSafis) != 1 || !p.AfiSafis[0].MpGracefulRestart.Config.Enabled || p.AfiSafis[0].Config.Family.Afi != api.Family_AFI_IP {
		t.Errorf("afi-safis %v", p.AfiSafis)
	}
	if p.Conf.AuthPassword != "pw" || !p.Transport.PassiveMode || p.Timers.Config.ConnectRetry != 5 {
		t.Errorf("peer %v", p)
	}
}

// An IPv4 session with IPv6Unicast negotiates ipv6-unicast beside
// ipv4-unicast (MP-BGP), each with graceful restart; an IPv6 session
// carries IPv6 only. Turning it on or off needs a new session.
func TestAPIPeerFamilies(t *testing.T) {
	s, f := fakeSpeaker()
	afis := func(p Peer) []api.Family_Afi {
		var out []api.Family_Afi
		for _, a := range s.apiPeer(p).AfiSafis {
			if !a.Config.Enabled || !a.MpGracefulRestart.Config.Enabled || a.Config.Family.Safi != api.Family_SAFI_UNICAST {
				t.Errorf("%v: afi-safi %v", p.Address, a)
			}
			out = append(out, a.Config.Family.Afi)
		}
		return out
	}
	for _, tc := range []struct {
		p    Peer
		want []api.Family_Afi
	}{
		{Peer{Address: ip("192.168.1.1"), ASN: 65000}, []api.Family_Afi{api.Family_AFI_IP}},
		{Peer{Address: ip("192.168.1.1"), ASN: 65000, IPv6Unicast: true}, []api.Family_Afi{api.Family_AFI_IP, api.Family_AFI_IP6}},
		{Peer{Address: ip("2001:db8::1"), ASN: 65000}, []api.Family_Afi{api.Family_AFI_IP6}},
		{Peer{Address: ip("2001:db8::1"), ASN: 65000, IPv6Unicast: true}, []api.Family_Afi{api.Family_AFI_IP6}},
	} {
		if got := afis(tc.p); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v ipv6Unicast=%v: families %v, want %v", tc.p.Address, tc.p.IPv6Unicast, got, tc.want)
		}
	}
	if err := s.SetAdvertisements(nil); err != nil {
		t.Fatal(err)
	}
	p := Peer{Address: ip("192.168.1.1"), ASN: 65000, Type: PeerTypeGlobal}
	if err := s.SetPeers([]Peer{p}); err != nil {
		t.Fatal(err)
	}
	f.calls = nil
	p.IPv6Unicast = true
	if err := s.SetPeers([]Peer{p}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"delpeer 192.168.1.1", `addpeer 192.168.1.1 as65000 pw=""`}; !reflect.DeepEqual(f.calls, want) {
		t.Errorf("turning IPv6 unicast on: calls %q, want %q", f.calls, want)
	}
}
