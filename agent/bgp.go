package agent

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/calyxnet/calyx/agent/bgp"
	"github.com/calyxnet/calyx/model"
)

// syncBGP runs this node's BGP speaker as the model says. BGP is opt-in:
// without a BGPConfiguration nothing listens or peers (a running speaker
// withdraws its routes and stops). Errors cost BGP only, never the
// dataplane: they are logged and the next reconcile tries again.
func (a *Agent) syncBGP(ctx context.Context) {
	snap := a.snap
	if snap == nil {
		return
	}
	if snap.BGPConfig == nil {
		if a.bgp != nil {
			if err := a.bgp.Stop(true); err != nil {
				a.log.Warn("stop BGP", "err", err)
			}
			a.bgp = nil
			a.log.Info("BGP stopped: no BGPConfiguration")
		}
		return
	}
	st, err := model.BGPSettingsFor(snap, a.cfg.Node)
	if err != nil {
		a.log.Warn("BGP not configured for this node", "err", err)
		return
	}
	cfg := bgp.Config{ASN: st.ASNumber, RouterID: st.RouterID, ListenPort: int32(st.ListenPort),
		GracefulRestartSeconds: uint32(st.GracefulRestartSeconds), Restarting: a.adopted, Log: a.log}
	if st.RouteReflector() {
		cfg.RouteReflectorClusterID = st.RouteReflectorClusterID.String()
	}
	if a.bgp == nil {
		if a.bgp, err = bgp.Start(ctx, cfg); err != nil {
			a.log.Error("start BGP", "err", err)
			return
		}
		if !a.bgpRegistered {
			a.metrics.reg.MustRegister(a.bgp.Collectors()...)
			a.bgpRegistered = true
		}
		a.log.Info("BGP started", "as", cfg.ASN, "routerID", cfg.RouterID, "restarting", cfg.Restarting)
	} else if !sameBGPConfig(a.bgp.Config(), cfg) {
		if err := a.bgp.Update(ctx, cfg); err != nil {
			a.log.Error("reconfigure BGP", "err", err)
			return
		}
	}
	peers, err := bgpPeers(st)
	if err != nil {
		a.log.Warn("BGP peers", "err", err)
	}
	if err := a.bgp.SetPeers(peers); err != nil {
		a.log.Warn("BGP peers", "err", err)
	}
	if err := a.bgp.SetAdvertisements(bgp.Advertise(advertiseInput(snap, a.cfg.Node))); err != nil {
		a.log.Warn("BGP advertisements", "err", err)
	}
}

// sameBGPConfig compares the settings a restart of the instance would be
// needed for.
func sameBGPConfig(a, b bgp.Config) bool {
	return a.ASN == b.ASN && a.RouterID == b.RouterID && a.ListenPort == b.ListenPort &&
		a.GracefulRestartSeconds == b.GracefulRestartSeconds && a.RouteReflectorClusterID == b.RouteReflectorClusterID
}

// bgpPeers turns the model's sessions of this node into the speaker's; a
// password file that cannot be read costs that peer only.
func bgpPeers(st model.BGPSettings) ([]bgp.Peer, error) {
	var out []bgp.Peer
	var errs []string
	for _, p := range st.Peers {
		peer := bgp.Peer{Address: p.Address, ASN: p.ASNumber, Type: string(p.Type), Password: p.Password,
			RouteReflectorClient: p.RouteReflectorClient, KeepNextHop: p.KeepNextHop}
		if p.PasswordFile != "" {
			b, err := os.ReadFile(p.PasswordFile)
			if err != nil {
				errs = append(errs, fmt.Sprintf("peer %s (%s): password file: %v", p.Address, p.Name, err))
				continue
			}
			peer.Password = strings.TrimRight(string(b), "\r\n")
		}
		out = append(out, peer)
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return out, nil
}

// advertiseInput is what node advertises, from the model: its IPAM blocks,
// its endpoints' addresses and the floating IPs they hold.
func advertiseInput(s *model.Snapshot, node string) bgp.AdvertiseInput {
	var in bgp.AdvertiseInput
	if n, ok := s.Nodes[node]; ok {
		in.Node = n.Spec.IPv4Address.Addr()
		if n.Spec.IPv6Address.IsValid() {
			in.Node6 = n.Spec.IPv6Address.Addr()
		}
	}
	for _, b := range s.Blocks {
		if b.Spec.Node == node && b.Spec.CIDR.IsValid() {
			in.Blocks = append(in.Blocks, b.Spec.CIDR)
		}
	}
	local := map[string]bool{}
	for _, ep := range s.Endpoints {
		if ep.Spec.Node != node {
			continue
		}
		local[ep.Metadata.Name] = true
		for _, p := range ep.Spec.IPNetworks {
			in.Endpoints = append(in.Endpoints, p.Addr())
		}
	}
	for _, f := range s.FloatingIPs {
		if local[f.Spec.Endpoint] {
			in.FloatingIPs = append(in.FloatingIPs, f.Spec.IP)
		}
	}
	for _, p := range s.Pools {
		in.Pools = append(in.Pools, bgp.Pool{CIDR: p.Spec.CIDR, DisableBGPExport: p.Spec.DisableBGPExport, External: p.Spec.External})
	}
	return in
}
