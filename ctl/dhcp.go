package ctl

import (
	"context"
	"sort"
	"time"

	"github.com/calyxnet/calyx/bpfmap"
)

// leaseRow is one row of calyxctl dhcp leases.
type leaseRow struct {
	Endpoint  string `json:"endpoint" table:"ENDPOINT"`
	Interface string `json:"interface" table:"INTERFACE"`
	MAC       string `json:"mac" table:"MAC"`
	Address   string `json:"address" table:"ADDRESS"`
	// Expires and LastSeen are RFC 3339; ExpiresIn is seconds from now
	// (negative once expired).
	Expires   string `json:"expires" table:"EXPIRES"`
	ExpiresIn int64  `json:"expiresInSeconds" table:"EXPIRES-IN"`
	LastSeen  string `json:"lastSeen" table:"LAST-SEEN"`
}

// dhcpLeases lists what the agent's DHCPv4 and DHCPv6 servers leased on
// this host, from cx_leases; endpoint names come from the model when it can
// be read.
func dhcpLeases(ctx context.Context, o Options, stdio IO) error {
	m, err := bpfmap.OpenPinned(o.BPFFS)
	if err != nil {
		return err
	}
	defer m.Close()
	leases, err := m.Leases()
	if err != nil {
		return err
	}
	links, err := m.Links.All()
	if err != nil {
		return err
	}
	names := endpointNames(ctx, o, stdio)
	now := time.Now()
	rows := make([]leaseRow, 0, len(leases))
	for _, l := range leases {
		name := names[l.EndpointID]
		if name == "" {
			name = idName(l.EndpointID)
		}
		r := leaseRow{Endpoint: name, Interface: links[l.Ifindex].Ifname, MAC: l.MAC.String(), Address: l.Addr.String()}
		if !l.Expires.IsZero() {
			r.Expires = l.Expires.UTC().Format(time.RFC3339)
			r.ExpiresIn = int64(l.Expires.Sub(now).Seconds())
		}
		if !l.LastSeen.IsZero() {
			r.LastSeen = l.LastSeen.UTC().Format(time.RFC3339)
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Endpoint != rows[j].Endpoint {
			return rows[i].Endpoint < rows[j].Endpoint
		}
		return rows[i].Address < rows[j].Address
	})
	return render(stdio.Out, o.Output, rows)
}
