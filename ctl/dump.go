package ctl

import (
	"context"
	"fmt"
	"net/netip"
	"sort"

	"github.com/calyxnet/calyx/agent/calc"
	"github.com/calyxnet/calyx/loader"
	"github.com/calyxnet/calyx/maps"
	"github.com/calyxnet/calyx/model"
)

type endpointRow struct {
	Name       string   `json:"name" table:"NAME"`
	Interface  string   `json:"interface" table:"INTERFACE"`
	Ifindex    uint32   `json:"ifindex" table:"IFINDEX"`
	IPs        []string `json:"ips" table:"IPS"`
	MAC        string   `json:"mac" table:"MAC"`
	HostMAC    string   `json:"hostMAC" table:"HOST-MAC"`
	CheckMAC   bool     `json:"checkMAC"`
	EndpointID uint32   `json:"endpointID"`
}

type routeRow struct {
	CIDR      string `json:"cidr" table:"CIDR"`
	Type      string `json:"type" table:"TYPE"`
	Interface string `json:"interface,omitempty" table:"INTERFACE"`
	Ifindex   uint32 `json:"ifindex,omitempty" table:"IFINDEX"`
	NextHop   string `json:"nextHop,omitempty" table:"NEXT-HOP"`
	MAC       string `json:"mac,omitempty" table:"MAC"`
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
	EndpointID uint32 `json:"endpointID"`
}

type versionRow struct {
	Version string `json:"version" table:"VERSION"`
}

func dump(ctx context.Context, o Options, what string, stdio IO) error {
	m, err := maps.OpenPinned(o.BPFFS)
	if err != nil {
		return err
	}
	defer m.Close()
	links, err := m.Links()
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
		rows, err := routeRows(m, ifname)
		if err != nil {
			return err
		}
		return render(stdio.Out, o.Output, rows)
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
		var rows []linkRow
		for idx, l := range links {
			for _, h := range loader.Hooks {
				r := linkRow{Interface: l.Ifname, Ifindex: idx, Hook: string(h), Mode: l.Mode.String(), EndpointID: l.EndpointID,
					Pinned: pinned[fmt.Sprintf("%d/%s", idx, h)]}
				if h == loader.HookIngress {
					r.Program, r.ProgramID = "calyx_from_wl", l.IngressProgID
				} else {
					r.Program, r.ProgramID = "calyx_to_wl", l.EgressProgID
				}
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
func endpointRows(ctx context.Context, o Options, m *maps.Maps, ifname func(uint32) string, stdio IO) ([]endpointRow, error) {
	ifaces, err := m.Ifaces()
	if err != nil {
		return nil, err
	}
	routes, err := m.Routes()
	if err != nil {
		return nil, err
	}
	ips := make(map[uint32][]netip.Prefix)
	for p, r := range routes {
		if r.Type == maps.RouteLocalWorkload {
			ips[r.Ifindex] = append(ips[r.Ifindex], p)
		}
	}
	names := endpointNames(ctx, o, stdio)
	rows := make([]endpointRow, 0, len(ifaces))
	for idx, v := range ifaces {
		ps := ips[idx]
		sort.Slice(ps, func(i, j int) bool { return ps[i].Addr().Less(ps[j].Addr()) })
		strs := make([]string, len(ps))
		for i, p := range ps {
			strs[i] = p.String()
		}
		name := names[v.EndpointID]
		if name == "" {
			name = fmt.Sprintf("id:%d", v.EndpointID)
		}
		rows = append(rows, endpointRow{Name: name, Interface: ifname(idx), Ifindex: idx, IPs: strs,
			MAC: v.MAC.String(), HostMAC: v.HostMAC.String(), CheckMAC: v.CheckMAC, EndpointID: v.EndpointID})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return rows, nil
}

// endpointNames maps endpoint IDs back to names through the model; a model
// that cannot be read only costs the names.
func endpointNames(ctx context.Context, o Options, stdio IO) map[uint32]string {
	out := make(map[uint32]string)
	ds, err := model.Open(o.Datastore)
	if err != nil {
		fmt.Fprintf(stdio.Err, "calyxctl: endpoint names unavailable: %v\n", err)
		return out
	}
	defer ds.Close()
	snap, err := ds.Snapshot(ctx)
	if err != nil {
		fmt.Fprintf(stdio.Err, "calyxctl: endpoint names unavailable: %v\n", err)
		return out
	}
	for name := range snap.Endpoints {
		out[calc.EndpointID(name)] = name
	}
	return out
}

func routeRows(m *maps.Maps, ifname func(uint32) string) ([]routeRow, error) {
	routes, err := m.Routes()
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
