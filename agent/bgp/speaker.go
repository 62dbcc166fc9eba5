package bgp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/calyxnet/calyx/agent/bgpstatus"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Peer types, as calicoctl's node status shows them.
const (
	PeerTypeMesh         = bgpstatus.PeerTypeMesh
	PeerTypeGlobal       = bgpstatus.PeerTypeGlobal
	PeerTypeNodeSpecific = bgpstatus.PeerTypeNodeSpecific
)

// DefaultGracefulRestartSeconds is the restart time used when Config leaves it 0.
const DefaultGracefulRestartSeconds = 120

// Config is the speaker's global configuration.
type Config struct {
	ASN      uint32
	RouterID netip.Addr // IPv4
	// ListenPort is the TCP port to listen on: 0 means 179, -1 do not listen.
	ListenPort int32
	// ListenAddrs are the addresses to listen on; empty means every address.
	ListenAddrs []string
	// GracefulRestartSeconds is the restart time announced to every peer (RFC 4724):
	// how long the peers keep this speaker's routes, stale, after its session drops
	// without a NOTIFICATION. 0 means DefaultGracefulRestartSeconds.
	GracefulRestartSeconds uint32
	// Restarting tells the peers (Restart State and Forwarding State bits) that this
	// speaker restarted with its forwarding preserved: set it when the agent starts
	// over a dataplane left running by a previous agent (its BPF maps were pinned).
	// GoBGP then defers its own UPDATEs until the peers' End-of-RIB or the deferral
	// time (half the restart time). Without the Forwarding bit a peer such as BIRD
	// flushes the stale routes as soon as the session re-establishes.
	Restarting bool
	// RouteReflectorClusterID, when set, makes this speaker a route reflector for the
	// peers marked RouteReflectorClient.
	RouteReflectorClusterID string
	// ConnectRetry is the delay between connection attempts; 0 means 5s.
	ConnectRetry time.Duration
	Log          *slog.Logger
}

// Peer is one BGP neighbor.
type Peer struct {
	Address netip.Addr
	ASN     uint32
	// Type is one of PeerTypeMesh, PeerTypeGlobal, PeerTypeNodeSpecific. It decides
	// what the peer is sent: a mesh peer (another calyx node, over the mesh or a route
	// reflector session) never gets routes learned over eBGP (each node learns the
	// fabric's routes from its own sessions); any other peer gets this node's own
	// routes only, never one learned from another peer, so that the gateway's next
	// hop for a workload is always the node that holds it.
	Type string
	// Password enables TCP MD5 signatures (RFC 2385) on the session.
	Password             string
	RouteReflectorClient bool
	// KeepNextHop sends routes to an eBGP peer with their next hop unchanged
	// instead of the session's local address (iBGP never rewrites it).
	KeepNextHop bool
	// Multihop is the TTL of an eBGP session with a peer that is not on a directly
	// connected subnet (a gateway beyond a router); 0 means 1 hop (GoBGP's default).
	Multihop uint8
	// Passive: wait for the peer to connect.
	Passive bool
	// LocalAddress is the source address of the session; not valid means the
	// kernel's choice.
	LocalAddress netip.Addr
	// IPv6Unicast negotiates the ipv6-unicast family too (MP-BGP, RFC 4760)
	// on a session with an IPv4 address, so that IPv6 routes go over it
	// with their own (IPv6) next hops. An IPv6 session carries IPv6
	// unicast only, whatever it says.
	IPv6Unicast bool
}

// Advertisement is one route this speaker originates.
type Advertisement struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	// Communities are standard communities (RFC 1997, aa:nn as aa<<16|nn),
	// LargeCommunities large ones (RFC 8092, aa:nn:mm).
	Communities      []uint32
	LargeCommunities [][3]uint32
}

// Route is a route learned from or sent to a peer.
type Route = bgpstatus.Route

// PeerStatus is one row of calicoctl's node status table, plus prefix counts.
type PeerStatus = bgpstatus.Peer

// bgpAPI is the part of GoBGP the speaker calls (a fake stands in for it in tests).
type bgpAPI interface {
	AddPeer(context.Context, *api.AddPeerRequest) error
	DeletePeer(context.Context, *api.DeletePeerRequest) error
	UpdatePeer(context.Context, *api.UpdatePeerRequest) (*api.UpdatePeerResponse, error)
	AddPath(apiutil.AddPathRequest) ([]apiutil.AddPathResponse, error)
	DeletePath(apiutil.DeletePathRequest) error
	AddDefinedSet(context.Context, *api.AddDefinedSetRequest) error
	DeleteDefinedSet(context.Context, *api.DeleteDefinedSetRequest) error
	ResetPeer(context.Context, *api.ResetPeerRequest) error
}

// Speaker is a GoBGP instance embedded in the agent. Its methods are safe for
// concurrent use.
type Speaker struct {
	mu      sync.Mutex
	cfg     Config
	log     *slog.Logger
	srv     *server.BgpServer
	api     bgpAPI
	cancel  context.CancelFunc
	stopped bool

	peers    map[netip.Addr]Peer     // configured in GoBGP
	sets     map[string][]netip.Addr // export policy's neighbor sets as configured
	want     []Peer                  // last SetPeers
	adverts  map[netip.Prefix]Advertisement
	initDone bool // the first SetAdvertisements happened: peers may be configured

	stateMu sync.Mutex
	learned []Route
	since   map[netip.Addr]time.Time
	flaps   map[netip.Addr]uint64
	estab   map[netip.Addr]bool
	onLrn   []func([]Route)

	relearn chan struct{}
	cbMu    sync.Mutex // serializes OnLearned callbacks
	metrics *metrics
}

// Start starts a BGP instance with cfg. Peers given to SetPeers are configured only
// after the first SetAdvertisements call, so that the first UPDATEs every peer gets,
// and the End-of-RIB marker after them, carry the full set of routes (a peer holding
// stale routes of this node from before a restart drops the ones missing at End-of-RIB).
// Start returns an error when cfg is invalid (no ASN, no IPv4 router ID) or GoBGP
// cannot start (for example the listen port is in use); nothing is left running then.
// ctx bounds the start only.
func Start(ctx context.Context, cfg Config) (*Speaker, error) {
	s := &Speaker{
		peers:   map[netip.Addr]Peer{},
		adverts: map[netip.Prefix]Advertisement{},
		since:   map[netip.Addr]time.Time{},
		flaps:   map[netip.Addr]uint64{},
		estab:   map[netip.Addr]bool{},
		relearn: make(chan struct{}, 1),
	}
	s.metrics = newMetrics(s)
	if err := s.startLocked(ctx, cfg); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Speaker) startLocked(ctx context.Context, cfg Config) error {
	if cfg.ASN == 0 {
		return errors.New("bgp: no AS number")
	}
	if !cfg.RouterID.Is4() {
		return fmt.Errorf("bgp: router ID %v is not an IPv4 address", cfg.RouterID)
	}
	if cfg.GracefulRestartSeconds == 0 {
		cfg.GracefulRestartSeconds = DefaultGracefulRestartSeconds
	}
	if cfg.GracefulRestartSeconds > 4095 { // 12 bits in the capability
		cfg.GracefulRestartSeconds = 4095
	}
	if cfg.ConnectRetry == 0 {
		cfg.ConnectRetry = 5 * time.Second
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	port := cfg.ListenPort
	if port == 0 {
		port = 179
	}
	srv := server.NewBgpServer(server.LoggerOption(log.With("component", "gobgp"), nil))
	go srv.Serve()
	g := &api.Global{
		Asn:             cfg.ASN,
		RouterId:        cfg.RouterID.String(),
		ListenPort:      port,
		ListenAddresses: cfg.ListenAddrs,
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: g}); err != nil {
		srv.Stop()
		return fmt.Errorf("bgp: start: %w", err)
	}
	if err := installExportPolicy(ctx, srv); err != nil {
		_ = srv.StopBgp(ctx, &api.StopBgpRequest{})
		srv.Stop()
		return err
	}
	wctx, cancel := context.WithCancel(context.Background())
	err := srv.WatchEvent(wctx, server.WatchEventMessageCallbacks{
		OnBestPath:   func([]*apiutil.Path, time.Time) { s.kick() },
		OnPeerUpdate: s.peerEvent,
	}, server.WatchBestPath(true), server.WatchPeer())
	if err != nil {
		cancel()
		_ = srv.StopBgp(ctx, &api.StopBgpRequest{})
		srv.Stop()
		return fmt.Errorf("bgp: watch: %w", err)
	}
	s.cfg, s.log, s.srv, s.api, s.cancel = cfg, log, srv, srv, cancel
	s.sets = nil
	go s.relearnLoop(wctx)
	return nil
}

// Config returns the configuration in force (defaults filled in).
func (s *Speaker) Config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Update applies a new global configuration. GoBGP cannot change the AS number, router
// ID, listen addresses or graceful-restart settings of a running instance, so when any
// of them changes Update stops the instance gracefully (peers keep the routes, stale)
// and starts a new one with the same peers and advertisements, announced as
// restarting. It returns an error when the new configuration is invalid or the new
// instance cannot start; the speaker is stopped then and must be started again.
func (s *Speaker) Update(ctx context.Context, cfg Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("bgp: speaker stopped")
	}
	old := s.cfg
	cfg.Log = old.Log
	norm := cfg
	if norm.GracefulRestartSeconds == 0 {
		norm.GracefulRestartSeconds = DefaultGracefulRestartSeconds
	}
	if norm.ConnectRetry == 0 {
		norm.ConnectRetry = 5 * time.Second
	}
	norm.Restarting = old.Restarting
	if norm.ASN == old.ASN && norm.RouterID == old.RouterID && norm.ListenPort == old.ListenPort &&
		slices.Equal(norm.ListenAddrs, old.ListenAddrs) && norm.GracefulRestartSeconds == old.GracefulRestartSeconds &&
		norm.RouteReflectorClusterID == old.RouteReflectorClusterID && norm.ConnectRetry == old.ConnectRetry {
		return nil
	}
	s.stopLocked(false)
	cfg.Restarting = true
	peers, adverts := s.want, s.adverts
	s.peers, s.adverts = map[netip.Addr]Peer{}, map[netip.Prefix]Advertisement{}
	if err := s.startLocked(ctx, cfg); err != nil {
		s.stopped = true
		return err
	}
	s.stopped = false
	list := make([]Advertisement, 0, len(adverts))
	for _, a := range adverts {
		list = append(list, a)
	}
	if err := s.setAdvertsLocked(list); err != nil {
		return err
	}
	s.want = peers
	if s.initDone {
		return s.applyPeersLocked()
	}
	return nil
}

// SetPeers makes the configured peers equal to peers (keyed by address; a later entry
// for the same address wins): new ones are added, changed ones updated (or re-created
// when the change needs a new session: ASN, password, passive mode, source address),
// missing ones deleted, which closes their sessions with a NOTIFICATION. Before the
// first SetAdvertisements call the set is only recorded. It returns the first error of
// GoBGP (an invalid address, for example); the peers changed before it stay changed,
// and a later call retries the rest.
func (s *Speaker) SetPeers(peers []Peer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("bgp: speaker stopped")
	}
	for _, p := range peers {
		if !p.Address.IsValid() {
			return fmt.Errorf("bgp: peer without an address")
		}
		if p.ASN == 0 {
			return fmt.Errorf("bgp: peer %v without an AS number", p.Address)
		}
	}
	s.want = slices.Clone(peers)
	if !s.initDone {
		return nil
	}
	return s.applyPeersLocked()
}

func (s *Speaker) applyPeersLocked() error {
	ctx := context.Background()
	// The export policy's sets first, so that a new peer's first UPDATEs are
	// already filtered; peers whose set changed get their routes sent again.
	want := map[netip.Addr]Peer{}
	for _, p := range s.want {
		want[p.Address] = p
	}
	sets := exportSets(want)
	var resend []netip.Addr
	for _, name := range []string{nodeSet, externalSet, keepNextHopSet} {
		// In place: GoBGP's policy statements hold the set they were
		// defined with, and a replaced set would go unseen by them.
		add, del := setDiff(s.sets[name], sets[name])
		if len(add) > 0 {
			err := s.api.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: neighborSet(name, add, false)})
			if err != nil {
				return fmt.Errorf("bgp: neighbor set %s: %w", name, err)
			}
		}
		if len(del) > 0 {
			err := s.api.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: neighborSet(name, del, false)})
			if err != nil {
				return fmt.Errorf("bgp: neighbor set %s: %w", name, err)
			}
		}
		resend = append(resend, add...)
		resend = append(resend, del...)
	}
	s.sets = sets
	d := diffPeers(s.peers, s.want)
	for _, a := range d.del {
		if err := s.api.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()}); err != nil {
			return fmt.Errorf("bgp: delete peer %v: %w", a, err)
		}
		delete(s.peers, a)
	}
	for _, p := range d.update {
		if _, err := s.api.UpdatePeer(ctx, &api.UpdatePeerRequest{Peer: s.apiPeer(p)}); err != nil {
			return fmt.Errorf("bgp: update peer %v: %w", p.Address, err)
		}
		s.peers[p.Address] = p
	}
	for _, p := range d.add {
		if err := s.api.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(p)}); err != nil {
			return fmt.Errorf("bgp: add peer %v: %w", p.Address, err)
		}
		s.peers[p.Address] = p
	}
	for _, a := range resend {
		if _, ok := s.peers[a]; !ok || slices.ContainsFunc(d.add, func(p Peer) bool { return p.Address == a }) {
			continue // gone, or a new session that starts filtered
		}
		err := s.api.ResetPeer(ctx, &api.ResetPeerRequest{Address: a.String(), Soft: true, Direction: api.ResetPeerRequest_DIRECTION_OUT})
		if err != nil {
			s.log.Debug("bgp: resend routes after an export policy change", "peer", a, "err", err)
		}
	}
	return nil
}

// setDiff returns what to add to have to make want, and what to remove.
func setDiff(have, want []netip.Addr) (add, del []netip.Addr) {
	for _, x := range want {
		if !slices.Contains(have, x) {
			add = append(add, x)
		}
	}
	for _, x := range have {
		if !slices.Contains(want, x) {
			del = append(del, x)
		}
	}
	return add, del
}

func (s *Speaker) apiPeer(p Peer) *api.Peer {
	gr := s.cfg.GracefulRestartSeconds
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			AuthPassword:    p.Password,
			Description:     p.Type,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry: uint64(s.cfg.ConnectRetry / time.Second),
		}},
		Transport: &api.Transport{PassiveMode: p.Passive},
		GracefulRestart: &api.GracefulRestart{
			Enabled:         true,
			RestartTime:     gr,
			DeferralTime:    max(gr/2, 1),
			LocalRestarting: s.cfg.Restarting,
		},
	}
	for _, fam := range peerFamilies(p) {
		ap.AfiSafis = append(ap.AfiSafis, &api.AfiSafi{
			Config:            &api.AfiSafiConfig{Family: fam, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
		})
	}
	if ap.Timers.Config.ConnectRetry == 0 {
		ap.Timers.Config.ConnectRetry = 1
	}
	if p.LocalAddress.IsValid() {
		ap.Transport.LocalAddress = p.LocalAddress.String()
	}
	if p.Multihop > 0 && p.ASN != s.cfg.ASN {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.Multihop)}
	}
	if p.RouteReflectorClient && s.cfg.RouteReflectorClusterID != "" {
		ap.RouteReflector = &api.RouteReflector{RouteReflectorClient: true, RouteReflectorClusterId: s.cfg.RouteReflectorClusterID}
	}
	return ap
}

// peerFamilies are the address families negotiated with p: the unicast
// family of its address, and ipv6-unicast beside ipv4-unicast on an IPv4
// session with IPv6Unicast.
func peerFamilies(p Peer) []*api.Family {
	v4 := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	v6 := &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
	switch {
	case p.Address.Is6() && !p.Address.Is4In6():
		return []*api.Family{v6}
	case p.IPv6Unicast:
		return []*api.Family{v4, v6}
	}
	return []*api.Family{v4}
}

// SetAdvertisements makes the originated routes equal to adverts (keyed by prefix; a
// later entry for the same prefix wins): new and changed routes are sent (a changed
// one replaces the old without a withdrawal), missing ones withdrawn. The first call
// also configures the peers recorded by SetPeers. It returns an error for an invalid
// prefix or next hop, or the first error of GoBGP; routes changed before it stay
// changed, and a later call retries the rest.
func (s *Speaker) SetAdvertisements(adverts []Advertisement) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("bgp: speaker stopped")
	}
	for _, a := range adverts {
		if !a.Prefix.IsValid() || !a.NextHop.IsValid() {
			return fmt.Errorf("bgp: advertisement %v via %v: invalid prefix or next hop", a.Prefix, a.NextHop)
		}
	}
	if err := s.setAdvertsLocked(adverts); err != nil {
		return err
	}
	if !s.initDone {
		s.initDone = true
		return s.applyPeersLocked()
	}
	return nil
}

func (s *Speaker) setAdvertsLocked(adverts []Advertisement) error {
	add, del := diffAdverts(s.adverts, adverts)
	for _, a := range del {
		p, err := apiPath(a, true)
		if err != nil {
			return err
		}
		if err := s.api.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{p}}); err != nil {
			return fmt.Errorf("bgp: withdraw %v: %w", a.Prefix, err)
		}
		delete(s.adverts, a.Prefix)
	}
	for _, a := range add {
		p, err := apiPath(a, false)
		if err != nil {
			return err
		}
		if _, err := s.api.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{p}}); err != nil {
			return fmt.Errorf("bgp: advertise %v: %w", a.Prefix, err)
		}
		s.adverts[a.Prefix] = a
	}
	return nil
}

func apiPath(a Advertisement, withdraw bool) (*apiutil.Path, error) {
	nlri, err := gobgp.NewIPAddrPrefix(a.Prefix)
	if err != nil {
		return nil, fmt.Errorf("bgp: %v: %w", a.Prefix, err)
	}
	fam := gobgp.RF_IPv4_UC
	if a.Prefix.Addr().Is6() {
		fam = gobgp.RF_IPv6_UC
	}
	attrs := []gobgp.PathAttributeInterface{gobgp.NewPathAttributeOrigin(gobgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if fam == gobgp.RF_IPv4_UC && a.NextHop.Is4() {
		nh, err := gobgp.NewPathAttributeNextHop(a.NextHop)
		if err != nil {
			return nil, fmt.Errorf("bgp: next hop %v: %w", a.NextHop, err)
		}
		attrs = append(attrs, nh)
	} else {
		mp, err := gobgp.NewPathAttributeMpReachNLRI(fam, []gobgp.PathNLRI{{NLRI: nlri}}, a.NextHop)
		if err != nil {
			return nil, fmt.Errorf("bgp: next hop %v: %w", a.NextHop, err)
		}
		attrs = append(attrs, mp)
	}
	if len(a.Communities) > 0 {
		attrs = append(attrs, gobgp.NewPathAttributeCommunities(slices.Clone(a.Communities)))
	}
	if len(a.LargeCommunities) > 0 {
		var lc []*gobgp.LargeCommunity
		for _, c := range a.LargeCommunities {
			lc = append(lc, gobgp.NewLargeCommunity(c[0], c[1], c[2]))
		}
		attrs = append(attrs, gobgp.NewPathAttributeLargeCommunities(lc))
	}
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs, Withdrawal: withdraw}, nil
}

// Advertised returns the routes this speaker originates, sorted by prefix.
func (s *Speaker) Advertised() []Advertisement {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Advertisement, 0, len(s.adverts))
	for _, a := range s.adverts {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b Advertisement) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

// Learned returns the best paths learned from peers, sorted by prefix.
func (s *Speaker) Learned() []Route {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return slices.Clone(s.learned)
}

// OnLearned registers fn, called with the full learned set (as Learned returns it)
// each time it changes, from one goroutine at a time; fn must not block for long.
func (s *Speaker) OnLearned(fn func([]Route)) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.onLrn = append(s.onLrn, fn)
}

func (s *Speaker) kick() {
	select {
	case s.relearn <- struct{}{}:
	default:
	}
}

func (s *Speaker) relearnLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.relearn:
		}
		s.mu.Lock()
		srv := s.srv
		s.mu.Unlock()
		routes, err := listLearned(srv)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("bgp: list paths", "err", err)
			}
			continue
		}
		s.cbMu.Lock()
		s.stateMu.Lock()
		changed := !slices.Equal(routes, s.learned)
		if changed {
			s.learned = routes
		}
		fns := slices.Clone(s.onLrn)
		s.stateMu.Unlock()
		if changed {
			for _, fn := range fns {
				fn(slices.Clone(routes))
			}
		}
		s.cbMu.Unlock()
	}
}

func listLearned(srv *server.BgpServer) ([]Route, error) {
	var out []Route
	for _, fam := range []gobgp.Family{gobgp.RF_IPv4_UC, gobgp.RF_IPv6_UC} {
		err := srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: fam},
			func(n gobgp.NLRI, paths []*apiutil.Path) {
				for _, p := range paths {
					if !p.Best {
						continue
					}
					if !p.PeerAddress.IsValid() || p.PeerAddress.IsUnspecified() {
						break // our own route is the best one
					}
					pfx, err := netip.ParsePrefix(n.String())
					if err != nil {
						break
					}
					out = append(out, Route{Prefix: pfx, NextHop: nextHop(p.Attrs), Peer: p.PeerAddress, Stale: p.Stale})
					break
				}
			})
		if err != nil && !strings.Contains(err.Error(), "not supported") {
			return nil, err
		}
	}
	slices.SortFunc(out, func(a, b Route) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out, nil
}

func nextHop(attrs []gobgp.PathAttributeInterface) netip.Addr {
	for _, a := range attrs {
		switch a := a.(type) {
		case *gobgp.PathAttributeNextHop:
			return a.Value
		case *gobgp.PathAttributeMpReachNLRI:
			return a.Nexthop
		}
	}
	return netip.Addr{}
}

func (s *Speaker) peerEvent(ev *apiutil.WatchEventMessage_PeerEvent, t time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE && ev.Type != apiutil.PEER_EVENT_INIT {
		return
	}
	a := ev.Peer.State.NeighborAddress
	up := ev.Peer.State.SessionState == gobgp.BGP_FSM_ESTABLISHED
	s.stateMu.Lock()
	was := s.estab[a]
	if was && !up {
		s.flaps[a]++
	}
	if was != up || s.since[a].IsZero() {
		s.since[a] = t
	}
	s.estab[a] = up
	s.stateMu.Unlock()
	s.kick()
}

// Peers returns the status of every configured peer, sorted by address. It returns
// nil when the speaker is stopped.
func (s *Speaker) Peers() []PeerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	var out []PeerStatus
	_ = s.srv.ListPeer(context.Background(), &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		st := p.GetState()
		a, err := netip.ParseAddr(st.GetNeighborAddress())
		if err != nil {
			a, _ = netip.ParseAddr(p.GetConf().GetNeighborAddress())
		}
		ps := PeerStatus{Address: a, Type: s.peers[a].Type}
		ss := st.GetSessionState()
		ps.Session = sessionName(ss)
		ps.Info = ps.Session
		ps.Established = ss == api.PeerState_SESSION_STATE_ESTABLISHED
		switch {
		case st.GetAdminState() == api.PeerState_ADMIN_STATE_DOWN:
			ps.State = "down"
		case ps.Established:
			ps.State = "up"
		default:
			ps.State = "start"
		}
		if !ps.Established && st.GetDisconnectMessage() != "" {
			ps.LastDisconnectCause = st.GetDisconnectMessage()
			ps.Info += " (" + st.GetDisconnectMessage() + ")"
		}
		for _, af := range p.GetAfiSafis() {
			ps.PrefixesReceived += af.GetState().GetReceived()
			ps.PrefixesAdvertised += af.GetState().GetAdvertised()
		}
		s.stateMu.Lock()
		ps.Since = s.since[a]
		ps.SessionFlaps = s.flaps[a]
		s.stateMu.Unlock()
		out = append(out, ps)
	})
	slices.SortFunc(out, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	return out
}

func sessionName(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_SESSION_STATE_CONNECT:
		return "Connect"
	case api.PeerState_SESSION_STATE_ACTIVE:
		return "Active"
	case api.PeerState_SESSION_STATE_OPENSENT:
		return "OpenSent"
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return "OpenConfirm"
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return "Established"
	default:
		return "Idle"
	}
}

// Stop stops the speaker. With withdraw false the sessions are closed without a
// NOTIFICATION, which peers treat as a graceful restart: they keep this node's routes,
// stale, for the restart time, and a new speaker started within it (with
// Config.Restarting) re-advertises them before End-of-RIB with no withdrawal seen. With
// withdraw true every originated route is withdrawn first (waiting up to 3 s for the
// peers to be sent the withdrawals) and each session is closed with a Cease
// NOTIFICATION. Stop on a stopped speaker returns nil; other methods then return an
// error. The returned error is GoBGP's failure to stop, after which the instance may
// still hold its sockets.
func (s *Speaker) Stop(withdraw bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	return s.stopLocked(withdraw)
}

func (s *Speaker) stopLocked(withdraw bool) error {
	s.stopped = true
	ctx := context.Background()
	if withdraw && len(s.adverts) > 0 {
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{DeleteAll: true}); err != nil {
			s.log.Warn("bgp: withdraw all", "err", err)
		}
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) && s.advertisedLocked() > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // the UPDATE leaves the socket
	}
	err := s.srv.StopBgp(ctx, &api.StopBgpRequest{AllowGracefulRestart: !withdraw})
	s.cancel()
	s.srv.Stop() // BFD and gRPC parts; logs that BGP is already stopped
	s.stateMu.Lock()
	for a := range s.estab {
		s.estab[a] = false
	}
	s.stateMu.Unlock()
	if err != nil {
		return fmt.Errorf("bgp: stop: %w", err)
	}
	return nil
}

func (s *Speaker) advertisedLocked() uint64 {
	var n uint64
	_ = s.srv.ListPeer(context.Background(), &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		if p.GetState().GetSessionState() != api.PeerState_SESSION_STATE_ESTABLISHED {
			return
		}
		for _, af := range p.GetAfiSafis() {
			n += af.GetState().GetAdvertised()
		}
	})
	return n
}

// PeerRoutes returns the routes received from peer (its Adj-RIB-In, before import
// policy) when received is true, else the routes sent to it (Adj-RIB-Out, after the
// export policy), sorted by prefix. It returns an error when the speaker is stopped
// or peer is not configured.
func (s *Speaker) PeerRoutes(peer netip.Addr, received bool) ([]Route, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, errors.New("bgp: speaker stopped")
	}
	if _, ok := s.peers[peer]; !ok {
		return nil, fmt.Errorf("bgp: %v is not a peer", peer)
	}
	tt := api.TableType_TABLE_TYPE_ADJ_OUT
	if received {
		tt = api.TableType_TABLE_TYPE_ADJ_IN
	}
	var out []Route
	for _, fam := range []gobgp.Family{gobgp.RF_IPv4_UC, gobgp.RF_IPv6_UC} {
		err := s.srv.ListPath(apiutil.ListPathRequest{TableType: tt, Name: peer.String(), Family: fam},
			func(n gobgp.NLRI, paths []*apiutil.Path) {
				pfx, err := netip.ParsePrefix(n.String())
				if err != nil {
					return
				}
				for _, p := range paths {
					if p.Withdrawal {
						continue
					}
					out = append(out, Route{Prefix: pfx, NextHop: nextHop(p.Attrs), Peer: peer, Stale: p.Stale})
					break
				}
			})
		if err != nil && !strings.Contains(err.Error(), "not supported") && !strings.Contains(err.Error(), "not found") {
			return nil, fmt.Errorf("bgp: routes of %v: %w", peer, err)
		}
	}
	slices.SortFunc(out, func(a, b Route) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out, nil
}
