package ctl

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/calyxnet/calyx/agent/bgpstatus"
)

// agentTimeout bounds one request to the agent: BGP status is read from a
// local listener, and node status must not hang on an agent that hangs.
const agentTimeout = 5 * time.Second

// maxAgentBody caps what calyxctl reads of one answer (a full table of
// learned routes fits many times over).
const maxAgentBody = 64 << 20

// nodeBGP is node status's "bgp" field: the agent's /bgp report with the
// peers split by family, as calicoctl's node status shows them.
type nodeBGP struct {
	Running  bool       `json:"running"`
	Reason   string     `json:"reason,omitempty"`
	ASNumber uint32     `json:"asNumber,omitempty"`
	RouterID netip.Addr `json:"routerID,omitzero"`
	// IPv4Peers and IPv6Peers are never null, so that a script can count
	// them without a nil check.
	IPv4Peers     []bgpstatus.Peer         `json:"ipv4Peers"`
	IPv6Peers     []bgpstatus.Peer         `json:"ipv6Peers"`
	Advertised    int                      `json:"advertised"`
	Disagreements []bgpstatus.Disagreement `json:"disagreements"`
	FIB           []bgpstatus.FIBRoute     `json:"fib"`
	PeerErrors    []string                 `json:"peerErrors"`
}

// agentGet fetches path (with query) from the agent's HTTP listener and
// returns the status and body.
func agentGet(ctx context.Context, o Options, path string, query url.Values) (int, []byte, error) {
	base := strings.TrimSuffix(o.Agent, "/")
	// The agent's --metrics flag is HOST:PORT; take that form too.
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u := base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	ctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAgentBody))
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", u, err)
	}
	return resp.StatusCode, body, nil
}

// bgpStatus reads the agent's BGP report.
func bgpStatus(ctx context.Context, o Options) (*nodeBGP, error) {
	code, body, err := agentGet(ctx, o, bgpstatus.ReportPath, nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("agent answered %d: %s", code, strings.TrimSpace(string(body)))
	}
	var r bgpstatus.Report
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("agent's %s: %w", bgpstatus.ReportPath, err)
	}
	b := &nodeBGP{Running: r.Running, Reason: r.Reason, ASNumber: r.ASNumber, RouterID: r.RouterID,
		IPv4Peers: []bgpstatus.Peer{}, IPv6Peers: []bgpstatus.Peer{}, Advertised: r.Advertised,
		Disagreements: nonNil(r.Disagreements), FIB: nonNil(r.FIB), PeerErrors: nonNil(r.PeerErrors)}
	for _, p := range r.Peers {
		if p.Address.Unmap().Is4() {
			b.IPv4Peers = append(b.IPv4Peers, p)
		} else {
			b.IPv6Peers = append(b.IPv6Peers, p)
		}
	}
	for _, ps := range [][]bgpstatus.Peer{b.IPv4Peers, b.IPv6Peers} {
		slices.SortFunc(ps, func(a, b bgpstatus.Peer) int { return a.Address.Compare(b.Address) })
	}
	return b, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// writeNodeStatus prints node status: the row from the pinned maps, then
// the agent's BGP report. An agent that cannot be asked only costs the BGP
// part (said on stderr), as the model does for the annotations.
func writeNodeStatus(ctx context.Context, o Options, row nodeStatusRow, stdio IO) error {
	b, err := bgpStatus(ctx, o)
	if err != nil {
		fmt.Fprintf(stdio.Err, "calyxctl: BGP status unavailable: %v\n", err)
	}
	if o.Output != "table" {
		row.BGP = b
		return render(stdio.Out, o.Output, []nodeStatusRow{row})
	}
	if err := render(stdio.Out, o.Output, []nodeStatusRow{row}); err != nil {
		return err
	}
	if b == nil {
		return nil
	}
	fmt.Fprintln(stdio.Out)
	return writeBGPTables(stdio.Out, b, time.Now())
}

// peerStatusRow is one row of calicoctl's "IPv4 BGP status" table.
type peerStatusRow struct {
	Address string `table:"PEER ADDRESS"`
	Type    string `table:"PEER TYPE"`
	State   string `table:"STATE"`
	Since   string `table:"SINCE"`
	Info    string `table:"INFO"`
}

type disagreementRow struct {
	Prefix   string `table:"PREFIX"`
	Learned  string `table:"LEARNED"`
	Peer     string `table:"PEER"`
	Expected string `table:"EXPECTED"`
}

type fibRow struct {
	Prefix    string `table:"PREFIX"`
	NextHop   string `table:"NEXT-HOP"`
	Via       string `table:"VIA"`
	Installed bool   `table:"INSTALLED"`
	Error     string `table:"ERROR"`
}

// writeBGPTables prints the BGP part of node status as tables, in
// calicoctl's shape; now decides how SINCE is shown.
func writeBGPTables(w io.Writer, b *nodeBGP, now time.Time) error {
	if !b.Running {
		fmt.Fprintf(w, "BGP is not running: %s\n", cmp.Or(b.Reason, "no reason given"))
	} else {
		for i, fam := range []struct {
			name  string
			peers []bgpstatus.Peer
		}{{"IPv4", b.IPv4Peers}, {"IPv6", b.IPv6Peers}} {
			if i > 0 {
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "%s BGP status\n", fam.name)
			if len(fam.peers) == 0 {
				fmt.Fprintf(w, "No %s peers found.\n", fam.name)
				continue
			}
			rows := make([]peerStatusRow, 0, len(fam.peers))
			for _, p := range fam.peers {
				rows = append(rows, peerStatusRow{Address: p.Address.String(), Type: p.Type, State: p.State,
					Since: sinceString(p.Since, now), Info: p.Info})
			}
			if err := writeTable(w, rows); err != nil {
				return err
			}
		}
	}
	if len(b.Disagreements) > 0 {
		fmt.Fprintln(w, "\nBGP and datastore disagree:")
		rows := make([]disagreementRow, 0, len(b.Disagreements))
		for _, d := range b.Disagreements {
			rows = append(rows, disagreementRow{Prefix: d.Prefix.String(), Learned: addrString(d.Learned),
				Peer: addrString(d.Peer), Expected: addrString(d.Expected)})
		}
		if err := writeTable(w, rows); err != nil {
			return err
		}
	}
	if len(b.FIB) > 0 {
		fmt.Fprintln(w, "\nRoutes learned for the kernel FIB:")
		rows := make([]fibRow, 0, len(b.FIB))
		for _, f := range b.FIB {
			rows = append(rows, fibRow{Prefix: f.Prefix.String(), NextHop: addrString(f.NextHop),
				Via: addrString(f.Via), Installed: f.Installed, Error: f.Error})
		}
		if err := writeTable(w, rows); err != nil {
			return err
		}
	}
	if len(b.PeerErrors) > 0 {
		fmt.Fprintln(w, "\nPeers not configured:")
		for _, e := range b.PeerErrors {
			fmt.Fprintln(w, e)
		}
	}
	return nil
}

// sinceString is calicoctl's SINCE: the time of day for a change today,
// the date for an older one.
func sinceString(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	t, now = t.Local(), now.Local()
	if y, m, d := t.Date(); y == now.Year() && m == now.Month() && d == now.Day() {
		return t.Format(time.TimeOnly)
	}
	return t.Format(time.DateOnly)
}

// addrString is "" for the zero Addr (shown as "-"), not "invalid IP".
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

type bgpRouteRow struct {
	Prefix  string `table:"PREFIX"`
	NextHop string `table:"NEXT-HOP"`
	Peer    string `table:"PEER"`
	Stale   bool   `table:"STALE"`
}

// bgpCmd is "bgp routes [--advertised|--received] [PEER]".
func bgpCmd(ctx context.Context, o Options, args []string, stdio IO) error {
	if len(args) == 0 || args[0] != "routes" {
		return usagef("bgp: want 'bgp routes [--advertised|--received] [PEER]'")
	}
	received, advertised := false, false
	var peer string
	for _, a := range args[1:] {
		switch {
		case a == "--received":
			received = true
		case a == "--advertised":
			advertised = true
		case strings.HasPrefix(a, "-"):
			return usagef("bgp routes: unknown flag %q", a)
		case peer != "":
			return usagef("bgp routes: one PEER at most (got %q and %q)", peer, a)
		default:
			peer = a
		}
	}
	if received && advertised {
		return usagef("bgp routes: --advertised or --received, not both")
	}
	q := url.Values{}
	if peer != "" {
		// Checked here so that a typo is a usage error, not the agent's 400.
		addr, err := netip.ParseAddr(peer)
		if err != nil {
			return usagef("bgp routes: PEER %q is not an IP address", peer)
		}
		q.Set("peer", addr.String())
	}
	if received {
		q.Set("received", "1")
	}
	code, body, err := agentGet(ctx, o, bgpstatus.RoutesPath, q)
	if err != nil {
		return fmt.Errorf("bgp routes: %w", err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("bgp routes: %s", cmp.Or(strings.TrimSpace(string(body)), http.StatusText(code)))
	}
	var routes []bgpstatus.Route
	if err := json.Unmarshal(body, &routes); err != nil {
		return fmt.Errorf("bgp routes: agent's answer: %w", err)
	}
	slices.SortFunc(routes, func(a, b bgpstatus.Route) int {
		return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()),
			a.Peer.Compare(b.Peer))
	})
	if o.Output != "table" {
		return render(stdio.Out, o.Output, routes)
	}
	rows := make([]bgpRouteRow, 0, len(routes))
	for _, r := range routes {
		rows = append(rows, bgpRouteRow{Prefix: r.Prefix.String(), NextHop: addrString(r.NextHop),
			Peer: addrString(r.Peer), Stale: r.Stale})
	}
	return render(stdio.Out, o.Output, rows)
}
