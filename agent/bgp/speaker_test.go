package bgp

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSpeakerLocal runs a real GoBGP instance without a listener (no privileges): peers
// wait for SetAdvertisements, Update restarts with the same peers and routes, metrics.
func TestSpeakerLocal(t *testing.T) {
	ctx := context.Background()
	if _, err := Start(ctx, Config{ASN: 64512}); err == nil {
		t.Fatal("started without a router ID")
	}
	s, err := Start(ctx, Config{ASN: 64512, RouterID: ip("192.0.2.1"), ListenPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(false)
	peer := Peer{Address: ip("192.0.2.77"), ASN: 64512, Type: PeerTypeMesh, Passive: true}
	if err := s.SetPeers([]Peer{peer}); err != nil {
		t.Fatal(err)
	}
	if got := s.Peers(); len(got) != 0 {
		t.Fatalf("peers configured before the first advertisements: %+v", got)
	}
	adv := []Advertisement{{Prefix: pfx("10.244.1.0/26"), NextHop: ip("192.0.2.1")}, {Prefix: pfx("fd10::/122"), NextHop: ip("fd00::1")}}
	if err := s.SetAdvertisements(adv); err != nil {
		t.Fatal(err)
	}
	got := s.Peers()
	if len(got) != 1 || got[0].Address != peer.Address || got[0].Type != PeerTypeMesh || got[0].Established || got[0].State != "start" {
		t.Fatalf("peers: %+v", got)
	}
	if len(s.Learned()) != 0 {
		t.Errorf("learned %v", s.Learned())
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collectors()...)
	want := `
# HELP calyx_bgp_peer_up 1 when the BGP session with the peer is Established, 0 otherwise.
# TYPE calyx_bgp_peer_up gauge
calyx_bgp_peer_up{peer="192.0.2.77",type="node-to-node mesh"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "calyx_bgp_peer_up"); err != nil {
		t.Error(err)
	}
	// The session's FSM state: 1 for the one it is in (Idle, then Active
	// once GoBGP waits for the passive peer: it may change meanwhile), 0
	// for the other five.
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "calyx_bgp_session_state" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "state" {
					states[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	in := 0.0
	for _, st := range []string{"Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established"} {
		v, ok := states[st]
		if !ok {
			t.Errorf("no calyx_bgp_session_state{state=%q}", st)
		}
		in += v
	}
	if len(states) != 6 || in != 1 || states["Established"] != 0 {
		t.Errorf("calyx_bgp_session_state: %v, want one state at 1, not Established", states)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 4+6 {
		t.Errorf("%d metrics, %v", n, err)
	}

	if err := s.Update(ctx, Config{ASN: 64513, RouterID: ip("192.0.2.1"), ListenPort: -1}); err != nil {
		t.Fatal(err)
	}
	if c := s.Config(); c.ASN != 64513 || !c.Restarting {
		t.Errorf("config after Update: %+v", c)
	}
	if got := s.Peers(); len(got) != 1 || got[0].Address != peer.Address {
		t.Errorf("peers after Update: %+v", got)
	}
	if got := s.Advertised(); len(got) != 2 || got[0].Prefix != adv[0].Prefix {
		t.Errorf("advertised after Update: %+v", got)
	}
	if err := s.Stop(true); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(false); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := s.SetPeers(nil); err == nil {
		t.Error("SetPeers after Stop succeeded")
	}
	if s.Peers() != nil {
		t.Error("peers after Stop")
	}
}
