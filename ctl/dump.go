package ctl

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/conntrack"
	"github.com/calyxnet/calyx/loader"
	"github.com/calyxnet/calyx/model"
)

type endpointRow struct {
	Name       string   `json:"name" table:"NAME"`
	Interface  string   `json:"interface" table:"INTERFACE"`
	Ifindex    uint32   `json:"ifindex" table:"IFINDEX"`
	Kind       string   `json:"kind" table:"KIND"`
	State      string   `json:"state" table:"STATE"`
	IPs        []string `json:"ips" table:"IPS"`
	MAC        string   `json:"mac" table:"MAC"`
	HostMAC    string   `json:"hostMAC" table:"HOST-MAC"`
	CheckMAC   bool     `json:"checkMAC"`
	EndpointID uint32   `json:"endpointID"`
	// Reason says in words why an endpoint is not ready.
	Reason string `json:"reason,omitempty"`
}

type routeRow struct {
	CIDR      string `json:"cidr" table:"CIDR"`
	Type      string `json:"type" table:"TYPE"`
	Interface string `json:"interface,omitempty" table:"INTERFACE"`
	Ifindex   uint32 `json:"ifindex,omitempty" table:"IFINDEX"`
	NextHop   string `json:"nextHop,omitempty" table:"NEXT-HOP"`
	Node      string `json:"node,omitempty" table:"NODE"`
	Encap     string `json:"encap,omitempty" table:"ENCAP"`
	// Underlay is the underlay a remote workload's traffic goes over,
	// "ipv4" or "ipv6": the next hop's family (an IPv6 pool's traffic
	// takes the IPv6 underlay when both nodes have an ipv6Address).
	Underlay string `json:"underlay,omitempty" table:"UNDERLAY"`
	MAC      string `json:"mac,omitempty" table:"MAC"`
}

type nodeStatusRow struct {
	Node        string `json:"node" table:"NODE"`
	Underlay    string `json:"underlay" table:"UNDERLAY"`
	Ifindex     uint32 `json:"ifindex" table:"IFINDEX"`
	Address     string `json:"address" table:"ADDRESS"`
	UnderlayMTU uint32 `json:"underlayMTU" table:"UNDERLAY-MTU"`
	WorkloadMTU int    `json:"workloadMTU" table:"WORKLOAD-MTU"`
	Encap       string `json:"encap" table:"ENCAP"`
	Peers       int    `json:"peers" table:"PEERS"`
	VXLANPort   uint16 `json:"vxlanPort" table:"VXLAN-PORT"`
	VXLANVNI    uint32 `json:"vxlanVNI" table:"VXLAN-VNI"`
	// BGP is the agent's BGP report; no table tag: the table output prints
	// it as calicoctl's sections after the row. Nil when the agent could
	// not be asked.
	BGP *nodeBGP `json:"bgp,omitempty"`
}

type counterRow struct {
	Interface string `json:"interface" table:"INTERFACE"`
	Ifindex   uint32 `json:"ifindex" table:"IFINDEX"`
	Reason    string `json:"reason" table:"REASON"`
	Drop      bool   `json:"drop"`
	Packets   uint64 `json:"packets" table:"PACKETS"`
	Bytes     uint64 `json:"bytes" table:"BYTES"`
}

type linkRow struct {
	Interface  string `json:"interface" table:"INTERFACE"`
	Ifindex    uint32 `json:"ifindex" table:"IFINDEX"`
	Hook       string `json:"hook" table:"HOOK"`
	Program    string `json:"program" table:"PROGRAM"`
	ProgramID  uint32 `json:"programID" table:"PROG-ID"`
	Mode       string `json:"mode" table:"MODE"`
	Pinned     bool   `json:"pinned" table:"PINNED"`
	Attached   bool   `json:"attached" table:"ATTACHED"`
	EndpointID uint32 `json:"endpointID"`
}

type natRow struct {
	FloatingIP string `json:"floatingIP" table:"FLOATING-IP"`
	FixedIP    string `json:"fixedIP" table:"FIXED-IP"`
	Endpoint   string `json:"endpoint" table:"ENDPOINT"`
	Node       string `json:"node" table:"NODE"`
	Local      bool   `json:"local" table:"LOCAL"`
	Sessions   int    `json:"sessions" table:"SESSIONS"`
}

type ctRow struct {
	Table        string  `json:"table" table:"TABLE"`
	Proto        string  `json:"proto" table:"PROTO"`
	Src          string  `json:"src" table:"SRC"`
	Dst          string  `json:"dst" table:"DST"`
	ReplySrc     string  `json:"replySrc" table:"REPLY-SRC"`
	ReplyDst     string  `json:"replyDst" table:"REPLY-DST"`
	NAT          string  `json:"nat" table:"NAT"`
	State        string  `json:"state" table:"STATE"`
	AgeSeconds   float64 `json:"ageSeconds" table:"AGE"`
	IdleSeconds  float64 `json:"idleSeconds" table:"IDLE"`
	Packets      uint64  `json:"packets" table:"PACKETS"`
	Bytes        uint64  `json:"bytes" table:"BYTES"`
	ReplyPackets uint64  `json:"replyPackets" table:"REPLY-PACKETS"`
	ReplyBytes   uint64  `json:"replyBytes" table:"REPLY-BYTES"`
}

type versionRow struct {
	Version string `json:"version" table:"VERSION"`
}

func dump(ctx context.Context, o Options, what string, stdio IO) error {
	m, err := bpfmap.OpenPinned(o.BPFFS)
	if err != nil {
		return err
	}
	defer m.Close()
	links, err := m.Links.All()
	if err != nil {
		return err
	}
	ifname := func(idx uint32) string { return links[idx].Ifname }

	switch what {
	case "endpoints":
		rows, err := endpointRows(ctx, o, m, ifname, stdio)
		if err != nil {
			return err
		}
		return render(stdio.Out, o.Output, rows)
	case "routes":
		rows, err := routeRows(m, ifname, nodeNames(modelSnapshot(ctx, o, stdio, "node names")))
		if err != nil {
			return err
		}
		return render(stdio.Out, o.Output, rows)
	case "nat":
		rows, sessions, err := natRows(m, modelSnapshot(ctx, o, stdio, "endpoint and node names"))
		if err != nil {
			return err
		}
		if err := render(stdio.Out, o.Output, rows); err != nil {
			return err
		}
		if o.Output == "table" && len(sessions) > 0 {
			fmt.Fprintln(stdio.Out, "\nactive NAT sessions:")
			return render(stdio.Out, o.Output, sessions)
		}
		return nil
	case "node":
		row, err := nodeStatus(m, ifname, modelSnapshot(ctx, o, stdio, "node name and workload MTU"))
		if err != nil {
			return err
		}
		return writeNodeStatus(ctx, o, row, stdio)
	case "counters":
		cs, err := m.Counters()
		if err != nil {
			return err
		}
		rows := make([]counterRow, 0, len(cs))
		for k, v := range cs {
			rows = append(rows, counterRow{Interface: ifname(k.Ifindex), Ifindex: k.Ifindex, Reason: k.Reason.String(),
				Drop: k.Reason.IsDrop(), Packets: v.Packets, Bytes: v.Bytes})
		}
		sort.Slice(rows, func(i, j int) bool {
			if rows[i].Ifindex != rows[j].Ifindex {
				return rows[i].Ifindex < rows[j].Ifindex
			}
			return rows[i].Reason < rows[j].Reason
		})
		return render(stdio.Out, o.Output, rows)
	case "links":
		pins, err := loader.PinnedLinks(o.BPFFS)
		if err != nil {
			return err
		}
		pinned := make(map[string]bool)
		for _, p := range pins {
			pinned[fmt.Sprintf("%d/%s", p.Ifindex, p.Hook)] = true
		}
		cfg, err := m.NodeConfig()
		if err != nil {
			return err
		}
		var rows []linkRow
		for idx, l := range links {
			role := loader.RoleWorkload
			if idx == cfg.UnderlayIfindex {
				role = loader.RoleUnderlay
			}
			for _, h := range loader.Hooks {
				r := linkRow{Interface: l.Ifname, Ifindex: idx, Hook: string(h), Mode: l.Mode.String(), EndpointID: l.EndpointID,
					Pinned: pinned[fmt.Sprintf("%d/%s", idx, h)], Program: loader.ProgramName(role, h)}
				if h == loader.HookIngress {
					r.ProgramID = l.IngressProgID
				} else {
					r.ProgramID = l.EgressProgID
				}
				// The record says what the agent attached; the kernel says
				// whether it still runs (run calyxctl in the host's netns).
				ids, err := loader.AttachedPrograms(int(idx), h)
				if err != nil {
					return err
				}
				r.Attached = slices.Contains(ids, r.ProgramID)
				rows = append(rows, r)
			}
		}
		sort.Slice(rows, func(i, j int) bool {
			if rows[i].Interface != rows[j].Interface {
				return rows[i].Interface < rows[j].Interface
			}
			return rows[i].Hook > rows[j].Hook
		})
		return render(stdio.Out, o.Output, rows)
	}
	return usagef("unknown dump %q", what)
}

// endpointRows joins cx_ifaces with the routes that point at each
// interface, and names endpoints from the model when it can be read.
// idName stands for an endpoint whose name the model did not give.
func idName(id uint32) string { return fmt.Sprintf("id:%d", id) }

func endpointRows(ctx context.Context, o Options, m *bpfmap.Maps, ifname func(uint32) string, stdio IO) ([]endpointRow, error) {
	ifaces, err := m.Ifaces.All()
	if err != nil {
		return nil, err
	}
	routes, err := m.Routes.All()
	if err != nil {
		return nil, err
	}
	ips := make(map[uint32][]netip.Prefix)
	for p, r := range routes {
		if r.Type == bpfmap.RouteLocalWorkload {
			ips[r.Ifindex] = append(ips[r.Ifindex], p)
		}
	}
	names := endpointNames(ctx, o, stdio)
	// The agent's state of each local endpoint: ready, or why not (waiting
	// for its interface, refused, its attach failed, a conflict).
	statuses, err := m.Endpoints.All()
	if err != nil {
		return nil, err
	}
	rows := make([]endpointRow, 0, len(ifaces))
	shown := map[uint32]bool{}
	for idx, v := range ifaces {
		ps := ips[idx]
		sort.Slice(ps, func(i, j int) bool { return ps[i].Addr().Less(ps[j].Addr()) })
		strs := make([]string, len(ps))
		for i, p := range ps {
			strs[i] = p.String()
		}
		name := names[v.EndpointID]
		if name == "" {
			name = idName(v.EndpointID)
		}
		row := endpointRow{Name: name, Interface: ifname(idx), Ifindex: idx, Kind: v.Kind.String(),
			State: bpfmap.EndpointReady.String(), IPs: strs, MAC: v.MAC.String(), HostMAC: v.HostMAC.String(),
			CheckMAC: v.CheckMAC, EndpointID: v.EndpointID}
		if st, ok := statuses[v.EndpointID]; ok && st.State != bpfmap.EndpointReady {
			row.State, row.Reason = st.State.String(), st.State.Reason()
		}
		rows = append(rows, row)
		shown[v.EndpointID] = true
	}
	// The endpoints the agent did not program.
	for id, st := range statuses {
		if st.State == bpfmap.EndpointReady || shown[id] {
			continue
		}
		name := names[id]
		if name == "" {
			name = idName(id)
		}
		rows = append(rows, endpointRow{Name: name, Interface: st.Ifname, Ifindex: st.Ifindex, Kind: "-",
			State: st.State.String(), EndpointID: id, Reason: st.State.Reason()})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return rows, nil
}

// annotateTimeout bounds the model read of a dump.
const annotateTimeout = 2 * time.Second

// modelSnapshot reads the model to annotate what the maps hold. Dumps come
// from the maps alone: a model that cannot be read only costs the
// annotations (what is lost is said on stderr), and nil is returned.
func modelSnapshot(ctx context.Context, o Options, stdio IO, what string) *model.Snapshot {
	ds, err := o.openDatastore()
	if err != nil {
		fmt.Fprintf(stdio.Err, "calyxctl: %s unavailable: %v\n", what, err)
		return nil
	}
	defer ds.Close()
	// Only annotations hang on it: while an etcd datastore is unreachable
	// the dump comes without them, soon.
	ctx, cancel := context.WithTimeout(ctx, annotateTimeout)
	defer cancel()
	snap, err := ds.Snapshot(ctx)
	if err != nil {
		fmt.Fprintf(stdio.Err, "calyxctl: %s unavailable: %v\n", what, err)
		return nil
	}
	return snap
}

// nodeNames maps underlay addresses to node names.
func nodeNames(snap *model.Snapshot) map[netip.Addr]string {
	out := make(map[netip.Addr]string)
	if snap == nil {
		return out
	}
	for name, n := range snap.Nodes {
		for _, p := range []netip.Prefix{n.Spec.IPv4Address, n.Spec.IPv6Address} {
			if p.IsValid() {
				out[p.Addr()] = name
			}
		}
	}
	return out
}

// nodeStatus reports this node's underlay settings and workload MTU from
// cx_config, and the encapsulations its routes use.
func nodeStatus(m *bpfmap.Maps, ifname func(uint32) string, snap *model.Snapshot) (nodeStatusRow, error) {
	cfg, err := m.NodeConfig()
	if err != nil {
		return nodeStatusRow{}, err
	}
	routes, err := m.Routes.All()
	if err != nil {
		return nodeStatusRow{}, err
	}
	row := nodeStatusRow{Ifindex: cfg.UnderlayIfindex, UnderlayMTU: cfg.UnderlayMTU,
		VXLANPort: cfg.VXLANPort, VXLANVNI: cfg.VXLANVNI, Underlay: ifname(cfg.UnderlayIfindex)}
	if cfg.Address.IsValid() {
		row.Address = cfg.Address.String()
		row.Node = nodeNames(snap)[cfg.Address]
	}
	inUse := make(map[bpfmap.Encap]bool)
	// A peer has a node route per underlay address: counted once, by its
	// node's name where the model knows it.
	names, peers := nodeNames(snap), map[string]bool{}
	for _, r := range routes {
		switch r.Type {
		case bpfmap.RouteRemoteWorkload:
			inUse[r.Encap] = true
		case bpfmap.RouteNode:
			if n, ok := names[r.NextHop]; ok {
				peers["node "+n] = true
			} else {
				peers[r.NextHop.String()] = true
			}
		}
	}
	row.Peers = len(peers)
	var encaps []string
	for _, e := range []bpfmap.Encap{bpfmap.EncapNone, bpfmap.EncapIPIP, bpfmap.EncapVXLAN} {
		if inUse[e] {
			encaps = append(encaps, e.String())
		}
	}
	row.Encap = strings.Join(encaps, ",")
	row.WorkloadMTU = int(cfg.WorkloadMTU)
	return row, nil
}

// endpointNames maps endpoint IDs back to names through the model; a model
// that cannot be read only costs the names.
func endpointNames(ctx context.Context, o Options, stdio IO) map[uint32]string {
	return endpointNamesOf(modelSnapshot(ctx, o, stdio, "endpoint names"))
}

// endpointNamesOf maps endpoint IDs to the names of snap's endpoints (none
// for a nil snap).
func endpointNamesOf(snap *model.Snapshot) map[uint32]string {
	out := make(map[uint32]string)
	if snap == nil {
		return out
	}
	for name := range snap.Endpoints {
		out[model.EndpointID(name)] = name
	}
	return out
}

func routeRows(m *bpfmap.Maps, ifname func(uint32) string, nodes map[netip.Addr]string) ([]routeRow, error) {
	routes, err := m.Routes.All()
	if err != nil {
		return nil, err
	}
	rows := make([]routeRow, 0, len(routes))
	for p, r := range routes {
		row := routeRow{CIDR: p.String(), Type: r.Type.String(), Ifindex: r.Ifindex, MAC: r.MAC.String()}
		if r.Ifindex != 0 {
			row.Interface = ifname(r.Ifindex)
		}
		if r.NextHop.IsValid() {
			row.NextHop = r.NextHop.String()
			row.Node = nodes[r.NextHop]
		}
		if r.Type == bpfmap.RouteRemoteWorkload {
			row.Encap = r.Encap.String()
			row.Underlay = bpfmap.UnderlayOf(r.NextHop)
		}
		rows = append(rows, row)
	}
	sort.Slice(rows, func(i, j int) bool {
		a, b := netip.MustParsePrefix(rows[i].CIDR), netip.MustParsePrefix(rows[j].CIDR)
		if a.Addr() != b.Addr() {
			return a.Addr().Less(b.Addr())
		}
		return a.Bits() < b.Bits()
	})
	return rows, nil
}

// ctRows lists the conntrack tables as flows; natOnly keeps the
// translated.
func ctRows(m *bpfmap.Maps, natOnly bool) ([]ctRow, error) {
	return ctRowsWhere(m, func(f conntrack.Flow) bool { return !natOnly || f.NAT() != 0 })
}

// ctRowsWhere lists the flows keep says yes to.
func ctRowsWhere(m *bpfmap.Maps, keep func(conntrack.Flow) bool) ([]ctRow, error) {
	flows, err := conntrack.Flows(m)
	if err != nil {
		return nil, err
	}
	now := conntrack.Now()
	rows := []ctRow{}
	for _, f := range flows {
		if !keep(f) {
			continue
		}
		table := "ct"
		if f.NAT() != 0 {
			table = "nat"
		}
		r := ctRow{Table: table, Proto: bpfmap.ProtoName(f.Proto()), NAT: natName(f.NAT()), State: string(f.State()),
			AgeSeconds: seconds(now, f.Created()), IdleSeconds: seconds(now, f.Last())}
		if e := f.Orig; e != nil {
			r.Src, r.Dst = endpointString(e.Key.Src, f.Proto()), endpointString(e.Key.Dst, f.Proto())
			r.Packets, r.Bytes = e.Value.Packets, e.Value.Bytes
		}
		if e := f.Reply; e != nil {
			r.ReplySrc, r.ReplyDst = endpointString(e.Key.Src, f.Proto()), endpointString(e.Key.Dst, f.Proto())
			r.ReplyPackets, r.ReplyBytes = e.Value.Packets, e.Value.Bytes
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// natRows is the floating-IP table with names from the model, and the
// translated flows.
func natRows(m *bpfmap.Maps, snap *model.Snapshot) ([]natRow, []ctRow, error) {
	fips, err := m.FIPs.All()
	if err != nil {
		return nil, nil, err
	}
	sessions, err := ctRows(m, true)
	if err != nil {
		return nil, nil, err
	}
	// A session belongs to the floating IP it carries in either direction.
	perFIP := make(map[netip.Addr]int)
	for _, s := range sessions {
		for _, a := range []string{s.Dst, s.Src, s.ReplySrc, s.ReplyDst} {
			if addr := addrOf(a); addr.IsValid() {
				if _, ok := fips[addr]; ok {
					perFIP[addr]++
					break
				}
			}
		}
	}
	names := endpointNamesOf(snap)
	nodes := nodeNames(snap)
	rows := make([]natRow, 0, len(fips))
	for ip, f := range fips {
		rows = append(rows, natRow{FloatingIP: ip.String(), FixedIP: f.Fixed.String(), Endpoint: names[f.EndpointID],
			Node: nodes[f.Node], Local: f.Local, Sessions: perFIP[ip]})
	}
	sort.Slice(rows, func(i, j int) bool {
		return netip.MustParseAddr(rows[i].FloatingIP).Less(netip.MustParseAddr(rows[j].FloatingIP))
	})
	return rows, sessions, nil
}

func natName(n uint8) string {
	switch {
	case n&bpfmap.NATDNAT != 0 && n&bpfmap.NATSNAT != 0:
		return "dnat+snat"
	case n&bpfmap.NATDNAT != 0:
		return "dnat"
	case n&bpfmap.NATSNAT != 0:
		return "snat"
	}
	return "none"
}

// endpointString prints an address with its port, or for ICMP with the
// echo identifier as "addr id N".
func endpointString(ap netip.AddrPort, proto uint8) string {
	if bpfmap.IsICMP(proto) {
		if ap.Port() == 0 {
			return ap.Addr().String()
		}
		return fmt.Sprintf("%s id %d", ap.Addr(), ap.Port())
	}
	return ap.String()
}

func seconds(now, then uint64) float64 {
	if then == 0 || then > now {
		return 0
	}
	return float64((now-then)/1e6) / 1e3
}

// ctFilter is what ct dump's flags ask for; zero fields match anything.
type ctFilter struct {
	addrs map[netip.Addr]bool // the endpoint's addresses (--endpoint)
	proto uint8
	port  uint16
}

// parseCTFilter reads ct dump's flags. --endpoint takes an address or an
// endpoint's name, looked up in the model.
func parseCTFilter(ctx context.Context, o Options, args []string, stdio IO) (ctFilter, error) {
	var f ctFilter
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(args[i], "=")
		switch name {
		case "--endpoint", "--proto", "--port":
		default:
			return f, usagef("ct dump: unknown argument %q", args[i])
		}
		if !hasVal {
			if i+1 >= len(args) {
				return f, usagef("ct dump: %s needs a value", name)
			}
			i++
			val = args[i]
		}
		switch name {
		case "--endpoint":
			f.addrs = map[netip.Addr]bool{}
			if a, err := netip.ParseAddr(val); err == nil {
				f.addrs[a.Unmap()] = true
				continue
			}
			snap := modelSnapshot(ctx, o, stdio, "endpoint "+val)
			if snap == nil {
				return f, fmt.Errorf("ct dump --endpoint %s: not an address, and the model cannot be read to find the endpoint", val)
			}
			ep, ok := snap.Endpoints[val]
			if !ok {
				return f, fmt.Errorf("ct dump --endpoint %s: no such endpoint (and not an address)", val)
			}
			for _, p := range ep.Spec.IPNetworks {
				f.addrs[p.Addr().Unmap()] = true
			}
		case "--proto":
			switch strings.ToLower(val) {
			case "tcp":
				f.proto = bpfmap.ProtoTCP
			case "udp":
				f.proto = bpfmap.ProtoUDP
			case "icmp":
				f.proto = bpfmap.ProtoICMP
			case "icmpv6":
				f.proto = bpfmap.ProtoICMPv6
			default:
				return f, usagef("ct dump --proto %q: want tcp, udp, icmp or icmpv6", val)
			}
		case "--port":
			n, err := strconv.ParseUint(val, 10, 16)
			if err != nil || n == 0 {
				return f, usagef("ct dump --port %q: want a port, 1-65535", val)
			}
			f.port = uint16(n)
		}
	}
	return f, nil
}

// match says whether a flow carries what f asks for in either direction.
func (f ctFilter) match(fl conntrack.Flow) bool {
	if f.proto != 0 && fl.Proto() != f.proto {
		return false
	}
	var aps []netip.AddrPort
	for _, e := range []*conntrack.Entry{fl.Orig, fl.Reply} {
		if e != nil {
			aps = append(aps, e.Key.Src, e.Key.Dst, e.Value.NATSrc, e.Value.NATDst)
		}
	}
	addrOK, portOK := f.addrs == nil, f.port == 0
	for _, ap := range aps {
		addrOK = addrOK || f.addrs[ap.Addr().Unmap()]
		portOK = portOK || (!bpfmap.IsICMP(fl.Proto()) && ap.Port() == f.port)
	}
	return addrOK && portOK
}

type ctStateRow struct {
	State string `json:"state" table:"STATE"`
	Flows int    `json:"flows" table:"FLOWS"`
}

// ctDump is the noun: the flows that match the flags, then (in a table)
// how many there are in each state.
func ctDump(ctx context.Context, o Options, args []string, stdio IO) error {
	f, err := parseCTFilter(ctx, o, args, stdio)
	if err != nil {
		return err
	}
	m, err := bpfmap.OpenPinned(o.BPFFS)
	if err != nil {
		return err
	}
	defer m.Close()
	rows, err := ctRowsWhere(m, f.match)
	if err != nil {
		return err
	}
	if err := render(stdio.Out, o.Output, rows); err != nil {
		return err
	}
	if o.Output != "table" {
		return nil
	}
	perState := map[string]int{}
	for _, r := range rows {
		perState[r.State]++
	}
	states := make([]ctStateRow, 0, len(perState))
	for st, n := range perState {
		states = append(states, ctStateRow{State: st, Flows: n})
	}
	sort.Slice(states, func(i, j int) bool { return states[i].State < states[j].State })
	fmt.Fprintf(stdio.Out, "\n%d flows by state:\n", len(rows))
	return render(stdio.Out, o.Output, states)
}

type flushRow struct {
	Deleted int `json:"deleted" table:"DELETED"`
}

// ctFlush is the verb: it empties the conntrack table.
func ctFlush(o Options, stdio IO) error {
	m, err := bpfmap.OpenPinnedWritable(o.BPFFS)
	if err != nil {
		return err
	}
	defer m.Close()
	n, err := conntrack.Flush(m)
	if err != nil {
		return err
	}
	return render(stdio.Out, o.Output, []flushRow{{Deleted: n}})
}

// addrOf reads the address of an endpointString ("a.b.c.d:port", "a.b.c.d
// id N" or "a.b.c.d").
func addrOf(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr()
	}
	head, _, _ := strings.Cut(s, " ")
	a, _ := netip.ParseAddr(head)
	return a
}
