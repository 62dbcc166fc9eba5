package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/calyxnet/calyx/agent/bgp"
	"github.com/calyxnet/calyx/agent/bgpstatus"
	"github.com/calyxnet/calyx/agent/calc"
	"github.com/calyxnet/calyx/agent/host"
	"github.com/calyxnet/calyx/agent/kernel"
	"github.com/calyxnet/calyx/model"
)

// bgpState is the agent's BGP speaker and what it reports. The main loop
// owns the changes; the HTTP handlers and the metrics read under mu.
type bgpState struct {
	mu      sync.Mutex
	speaker *bgp.Speaker
	// report holds what the speaker does not know: why it is not
	// running, peers refused, disagreements, the FIB routes.
	report bgpstatus.Report
}

func (b *bgpState) get() *bgp.Speaker {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.speaker
}

// syncBGP runs this node's BGP speaker as the model says. BGP is opt-in:
// without a BGPConfiguration nothing listens or peers (a running speaker
// withdraws its routes and stops). Errors cost BGP only, never the
// dataplane: they are logged, reported on /bgp, and the next reconcile
// tries again. inputs are advertiseInputs of the reconcile's snapshot.
func (a *Agent) syncBGP(ctx context.Context, inputs map[string]*bgp.AdvertiseInput) {
	snap := a.snap
	if snap == nil {
		return
	}
	sp := a.bgp.get()
	if snap.BGPConfig == nil {
		if sp != nil {
			if err := sp.Stop(true); err != nil {
				a.log.Warn("stop BGP", "err", err)
			}
			a.log.Info("BGP stopped: no BGPConfiguration")
		}
		a.setBGP(nil, bgpstatus.Report{Reason: "no BGPConfiguration"})
		return
	}
	st, err := model.BGPSettingsFor(snap, a.cfg.Node)
	if err != nil {
		a.log.Warn("BGP not configured for this node", "err", err)
		a.setBGPReason(err.Error())
		return
	}
	cfg := bgp.Config{ASN: st.ASNumber, RouterID: st.RouterID, ListenPort: int32(st.ListenPort),
		GracefulRestartSeconds: uint32(st.GracefulRestartSeconds), Restarting: a.adopted, Log: a.log}
	if st.RouteReflector() {
		cfg.RouteReflectorClusterID = st.RouteReflectorClusterID.String()
	}
	if sp == nil {
		if sp, err = bgp.Start(ctx, cfg); err != nil {
			a.log.Error("start BGP", "err", err)
			a.setBGPReason("start: " + err.Error())
			return
		}
		// A change in what BGP learned changes the kernel FIB routes and
		// the disagreements: reconcile.
		sp.OnLearned(func([]bgp.Route) { a.poke() })
		a.setBGP(sp, bgpstatus.Report{})
		a.log.Info("BGP started", "as", cfg.ASN, "routerID", cfg.RouterID, "restarting", cfg.Restarting)
	} else if !sameBGPConfig(sp.Config(), cfg) {
		if err := sp.Update(ctx, cfg); err != nil {
			a.log.Error("reconfigure BGP", "err", err)
			a.setBGP(nil, bgpstatus.Report{Reason: "reconfigure: " + err.Error()})
			return
		}
	}
	peers, peerErrs := bgpPeers(st, snap.Nodes[a.cfg.Node])
	if len(peerErrs) > 0 {
		a.log.Warn("BGP peers", "err", strings.Join(peerErrs, "; "))
	}
	if err := sp.SetPeers(peers); err != nil {
		a.log.Warn("BGP peers", "err", err)
		peerErrs = append(peerErrs, err.Error())
	}
	var own []bgp.Advertisement
	if in := inputs[a.cfg.Node]; in != nil {
		own = bgp.Advertise(*in)
	}
	if err := sp.SetAdvertisements(own); err != nil {
		a.log.Warn("BGP advertisements", "err", err)
	}
	a.bgp.mu.Lock()
	a.bgp.report.PeerErrors = peerErrs
	a.bgp.mu.Unlock()
}

func (a *Agent) setBGP(sp *bgp.Speaker, r bgpstatus.Report) {
	a.bgp.mu.Lock()
	defer a.bgp.mu.Unlock()
	a.bgp.speaker, a.bgp.report = sp, r
}

func (a *Agent) setBGPReason(why string) {
	a.bgp.mu.Lock()
	defer a.bgp.mu.Unlock()
	a.bgp.report.Reason = why
}

// stopBGP stops the speaker as the agent exits: gracefully (peers keep this
// node's routes, stale, until the next agent re-advertises them) unless
// withdraw is set.
func (a *Agent) stopBGP(withdraw bool) {
	sp := a.bgp.get()
	if sp == nil {
		return
	}
	if err := sp.Stop(withdraw); err != nil {
		a.log.Warn("stop BGP", "err", err)
	}
	a.log.Info("BGP stopped", "withdrawn", withdraw)
}

// sameBGPConfig compares the settings a restart of the instance would be
// needed for.
func sameBGPConfig(a, b bgp.Config) bool {
	return a.ASN == b.ASN && a.RouterID == b.RouterID && a.ListenPort == b.ListenPort &&
		a.GracefulRestartSeconds == b.GracefulRestartSeconds && a.RouteReflectorClusterID == b.RouteReflectorClusterID
}

// multihopTTL is the TTL of an eBGP session with a peer outside the node's
// underlay subnet (a gateway beyond a router).
const multihopTTL = 255

// bgpPeers turns the model's sessions of this node into the speaker's: the
// session's source is the node's address of the peer's family (sourceAddress
// UseNodeIP), and an eBGP peer outside the node's underlay subnet gets a
// multihop session. An IPv4 session carries IPv6 unicast too (MP-BGP) when
// the node has an ipv6Address (its IPv6 routes, next hop that address, reach
// peers it has no IPv6 session with), and always with another node (a node
// without IPv6 still learns its neighbours' IPv6 routes, which it checks
// against the datastore). A password file that cannot be read costs that
// peer only; the errors say which.
func bgpPeers(st model.BGPSettings, node *model.Node) ([]bgp.Peer, []string) {
	var out []bgp.Peer
	var errs []string
	for _, p := range st.Peers {
		peer := bgp.Peer{Address: p.Address, ASN: p.ASNumber, Type: string(p.Type), Password: p.Password,
			RouteReflectorClient: p.RouteReflectorClient, KeepNextHop: p.KeepNextHop}
		if p.Address.Is4() {
			peer.IPv6Unicast = p.Type == model.PeerMesh || node != nil && node.Spec.IPv6Address.IsValid()
		}
		if p.PasswordFile != "" {
			b, err := os.ReadFile(p.PasswordFile)
			if err != nil {
				errs = append(errs, fmt.Sprintf("peer %s (%s): password file: %v", p.Address, p.Name, err))
				continue
			}
			peer.Password = strings.TrimRight(string(b), "\r\n")
		}
		if node != nil {
			own := node.Spec.IPv4Address
			if p.Address.Is6() {
				own = node.Spec.IPv6Address
			}
			if own.IsValid() && p.SourceAddress != model.SourceNone {
				peer.LocalAddress = own.Addr()
			}
			if own.IsValid() && !own.Masked().Contains(p.Address) && p.ASNumber != st.ASNumber {
				peer.Multihop = multihopTTL
			}
			if p.Type == model.PeerMesh && own.IsValid() && own.Addr().Compare(p.Address) > 0 {
				// Between two nodes only the one with the lower address
				// connects: two agents started together would otherwise
				// dial each other at once, and GoBGP can leave such a
				// collision in OpenConfirm until the hold time expires.
				peer.Passive = true
			}
		}
		out = append(out, peer)
	}
	return out, errs
}

// advertiseInputs is what every node advertises, from the model: its IPAM
// blocks, its endpoints' addresses and the floating IPs they hold, with the
// communities of BGPConfiguration's prefixAdvertisements. One pass over the
// model for all nodes: the agent needs its own (to advertise) and the
// others' (to check what BGP learned against).
func advertiseInputs(s *model.Snapshot) map[string]*bgp.AdvertiseInput {
	out := make(map[string]*bgp.AdvertiseInput, len(s.Nodes))
	pools := bgpPools(s)
	var communities []bgp.PrefixCommunities
	for _, pa := range s.EffectiveBGPConfiguration().Spec.ResolvedPrefixAdvertisements() {
		communities = append(communities, bgp.PrefixCommunities{Prefix: pa.CIDR, Communities: pa.Communities})
	}
	for name, n := range s.Nodes {
		in := &bgp.AdvertiseInput{Node: n.Spec.IPv4Address.Addr(), Pools: pools, Communities: communities}
		if n.Spec.IPv6Address.IsValid() {
			in.Node6 = n.Spec.IPv6Address.Addr()
		}
		out[name] = in
	}
	for _, b := range s.Blocks {
		if in := out[b.Spec.Node]; in != nil && b.Spec.CIDR.IsValid() {
			in.Blocks = append(in.Blocks, b.Spec.CIDR)
		}
	}
	holder := map[string]*bgp.AdvertiseInput{}
	for _, ep := range s.Endpoints {
		in := out[ep.Spec.Node]
		if in == nil {
			continue
		}
		holder[ep.Metadata.Name] = in
		for _, p := range ep.Spec.IPNetworks {
			in.Endpoints = append(in.Endpoints, p.Addr())
		}
	}
	for _, f := range s.FloatingIPs {
		if in := holder[f.Spec.Endpoint]; in != nil {
			in.FloatingIPs = append(in.FloatingIPs, f.Spec.IP)
		}
	}
	return out
}

func bgpPools(s *model.Snapshot) []bgp.Pool {
	var out []bgp.Pool
	for _, p := range s.Pools {
		out = append(out, bgp.Pool{CIDR: p.Spec.CIDR, DisableBGPExport: p.Spec.DisableBGPExport, External: p.Spec.External})
	}
	return out
}

// bgpLearned splits what BGP learned: routes outside every pool become
// kernel FIB routes (metric calc.BGPRouteMetric, through the gateway the
// FIB reaches the next hop by), never workload routes; routes inside a pool
// are compared with the datastore's view, and the differences reported.
// Routes whose prefix the agent already keeps in the FIB (want) are left
// out. Called by reconcile; a stopped speaker yields nothing.
func (a *Agent) bgpLearned(want []host.Route, inputs map[string]*bgp.AdvertiseInput) []host.Route {
	sp := a.bgp.get()
	if sp == nil || a.snap == nil {
		return nil
	}
	learned := sp.Learned()
	expected, nodePeers := a.expectedBGPRoutes(inputs)
	if !nodePeers {
		// Without sessions with other nodes nothing says every node's
		// routes should arrive: only what did arrive is checked.
		got := map[netip.Prefix]bool{}
		for _, r := range learned {
			got[r.Prefix.Masked()] = true
		}
		expected = slices.DeleteFunc(expected, func(e bgp.Advertisement) bool { return !got[e.Prefix] })
	}
	disagree, fib := bgp.SplitLearned(learned, bgpPools(a.snap), expected)
	taken := map[netip.Prefix]bool{}
	for _, k := range want {
		taken[k.Dst] = true
	}
	var out []host.Route
	for i := range fib {
		f := &fib[i]
		if taken[f.Prefix] {
			f.Error = "the agent routes this prefix itself"
			continue
		}
		if why := fibNextHopProblem(*f); why != "" {
			f.Error = why
			continue
		}
		idx, gw, err := kernel.ResolveGateway(f.NextHop)
		if err != nil {
			f.Error = err.Error()
			continue
		}
		f.Via, f.Installed = gw, true
		out = append(out, host.Route{Dst: f.Prefix, Ifindex: idx, Gateway: gw, Metric: calc.BGPRouteMetric})
	}
	a.bgp.mu.Lock()
	a.bgp.report.Disagreements, a.bgp.report.FIB = disagree, fib
	a.bgp.mu.Unlock()
	return out
}

// fibNextHopProblem says why a learned route's next hop cannot be used in
// the kernel FIB, or "": a route needs a next hop of its own family (an IPv6
// route learned over an IPv4 session from a peer that sent an IPv4, or
// IPv4-mapped, next hop cannot be routed so).
func fibNextHopProblem(f bgpstatus.FIBRoute) string {
	nh := f.NextHop.Unmap()
	switch {
	case !nh.IsValid():
		return "no next hop"
	case nh.Is4() != f.Prefix.Addr().Is4():
		return fmt.Sprintf("next hop %v is not of the prefix's family", f.NextHop)
	}
	return ""
}

// markFIBFailed records that the kernel refused the BGP routes.
func (a *Agent) markFIBFailed(err error) {
	a.bgp.mu.Lock()
	defer a.bgp.mu.Unlock()
	for i := range a.bgp.report.FIB {
		if a.bgp.report.FIB[i].Installed {
			a.bgp.report.FIB[i].Installed = false
			a.bgp.report.FIB[i].Error = err.Error()
		}
	}
}

// expectedBGPRoutes is the datastore's view of what the other nodes
// advertise, and whether this node has a session with another node.
func (a *Agent) expectedBGPRoutes(inputs map[string]*bgp.AdvertiseInput) ([]bgp.Advertisement, bool) {
	var out []bgp.Advertisement
	for name, in := range inputs {
		if name != a.cfg.Node {
			out = append(out, bgp.Advertise(*in)...)
		}
	}
	st, err := model.BGPSettingsFor(a.snap, a.cfg.Node)
	if err != nil {
		return out, false
	}
	return out, slices.ContainsFunc(st.Peers, func(p model.BGPPeerSettings) bool { return p.Type == model.PeerMesh })
}

// bgpReport is what /bgp answers.
func (a *Agent) bgpReport() bgpstatus.Report {
	a.bgp.mu.Lock()
	r := a.bgp.report
	sp := a.bgp.speaker
	a.bgp.mu.Unlock()
	r.Peers, r.Disagreements, r.FIB = []bgpstatus.Peer{}, nonNil(r.Disagreements), nonNil(r.FIB)
	if sp == nil {
		return r
	}
	cfg := sp.Config()
	r.Running, r.ASNumber, r.RouterID = true, cfg.ASN, cfg.RouterID
	if p := sp.Peers(); p != nil {
		r.Peers = p
	}
	r.Advertised = len(sp.Advertised())
	return r
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// serveBGP answers bgpstatus.ReportPath and bgpstatus.RoutesPath.
func (a *Agent) serveBGP(mux *http.ServeMux) {
	mux.HandleFunc(bgpstatus.ReportPath, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, a.bgpReport())
	})
	mux.HandleFunc(bgpstatus.RoutesPath, func(w http.ResponseWriter, r *http.Request) {
		sp := a.bgp.get()
		if sp == nil {
			http.Error(w, "BGP is not running", http.StatusServiceUnavailable)
			return
		}
		received := r.URL.Query().Get("received") == "1"
		var routes []bgp.Route
		if ps := r.URL.Query().Get("peer"); ps != "" {
			peer, err := netip.ParseAddr(ps)
			if err != nil {
				http.Error(w, fmt.Sprintf("peer %q: not an IP address", ps), http.StatusBadRequest)
				return
			}
			if routes, err = sp.PeerRoutes(peer, received); err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
				return
			}
		} else if received {
			routes = sp.Learned()
		} else {
			for _, ad := range sp.Advertised() {
				routes = append(routes, bgp.Route{Prefix: ad.Prefix, NextHop: ad.NextHop})
			}
		}
		writeJSON(w, nonNil(routes))
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// bgpCollector reads the metrics of whichever speaker runs at scrape time
// (the speaker is replaced when BGP is turned off and on again).
type bgpCollector struct{ a *Agent }

func (c bgpCollector) Describe(ch chan<- *prometheus.Desc) { bgp.Describe(ch) }

func (c bgpCollector) Collect(ch chan<- prometheus.Metric) {
	if sp := c.a.bgp.get(); sp != nil {
		for _, col := range sp.Collectors() {
			col.Collect(ch)
		}
	}
}
