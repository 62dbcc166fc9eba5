package ctl

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/calyxnet/calyx/bpfmap"
)

const dualStackNodes = `apiVersion: calyx.io/v1
kind: Node
metadata: {name: host-b}
spec: {ipv4Address: 10.30.0.12/24, ipv6Address: '2001:db8:a41:ff::12/64'}
---
apiVersion: calyx.io/v1
kind: Node
metadata: {name: host-c}
spec: {ipv4Address: 10.30.1.13/24}
`

// routes dump says which underlay carries each remote route (the next
// hop's family), in the table and in JSON, and names the node of an IPv6
// next hop.
func TestRoutesDumpUnderlay(t *testing.T) {
	dir, dp := loadedDataplane(t, "routes dump's test")
	ds := t.TempDir()
	if r := run(t, ds, dualStackNodes, "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply: exit %d, %s", r.code, r.err)
	}
	a := netip.MustParseAddr
	for p, r := range map[string]bpfmap.Route{
		"2001:db8:a41:3::40/122":  {Type: bpfmap.RouteRemoteWorkload, Encap: bpfmap.EncapIPIP, NextHop: a("2001:db8:a41:ff::12")},
		"2001:db8:a41:3::99/128":  {Type: bpfmap.RouteRemoteWorkload, Encap: bpfmap.EncapVXLAN, NextHop: a("10.30.1.13")},
		"10.65.2.0/26":            {Type: bpfmap.RouteRemoteWorkload, NextHop: a("10.30.0.12")},
		"2001:db8:a41:ff::12/128": {Type: bpfmap.RouteNode, NextHop: a("2001:db8:a41:ff::12")},
		"10.30.0.12/32":           {Type: bpfmap.RouteNode, NextHop: a("10.30.0.12")},
		"10.30.1.13/32":           {Type: bpfmap.RouteNode, NextHop: a("10.30.1.13")},
	} {
		if err := dp.Maps.Routes.Put(netip.MustParsePrefix(p), r); err != nil {
			t.Fatal(err)
		}
	}
	r := run(t, ds, "", "--bpffs", dir, "-o", "json", "routes", "dump")
	if r.code != 0 {
		t.Fatalf("routes dump: exit %d, %s", r.code, r.err)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(r.out), &rows); err != nil {
		t.Fatalf("%v in %s", err, r.out)
	}
	want := map[string][3]string{ // underlay, node, encap
		"2001:db8:a41:3::40/122":  {"ipv6", "host-b", "ipip"},
		"2001:db8:a41:3::99/128":  {"ipv4", "host-c", "vxlan"},
		"10.65.2.0/26":            {"ipv4", "host-b", "none"},
		"2001:db8:a41:ff::12/128": {"", "host-b", ""},
		"10.30.0.12/32":           {"", "host-b", ""},
		"10.30.1.13/32":           {"", "host-c", ""},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d: %s", len(rows), len(want), r.out)
	}
	str := func(v any) string { s, _ := v.(string); return s }
	for _, row := range rows {
		w, ok := want[str(row["cidr"])]
		_, hasUnderlay := row["underlay"]
		if !ok || str(row["underlay"]) != w[0] || str(row["node"]) != w[1] || str(row["encap"]) != w[2] || hasUnderlay != (w[0] != "") {
			t.Errorf("row %v, want underlay %q node %q encap %q", row, w[0], w[1], w[2])
		}
	}
	r = run(t, ds, "", "--bpffs", dir, "routes", "dump")
	if r.code != 0 || !strings.Contains(r.out, "UNDERLAY") {
		t.Fatalf("routes dump: exit %d, %s%s", r.code, r.out, r.err)
	}
	found := false
	for _, line := range strings.Split(r.out, "\n") {
		// CIDR TYPE INTERFACE IFINDEX NEXT-HOP NODE ENCAP UNDERLAY MAC
		if f := strings.Fields(line); len(f) > 0 && f[0] == "2001:db8:a41:3::40/122" {
			found = true
			if len(f) != 9 || f[5] != "host-b" || f[6] != "ipip" || f[7] != "ipv6" {
				t.Errorf("table row %q: want host-b, ipip, ipv6", line)
			}
		}
	}
	if !found {
		t.Errorf("no table row for the IPv6 block in\n%s", r.out)
	}
	// node status counts a dual-stack peer once.
	r = run(t, ds, "", "--bpffs", dir, "--agent", "http://127.0.0.1:1", "-o", "json", "node", "status")
	var st []struct {
		Peers int    `json:"peers"`
		Encap string `json:"encap"`
	}
	if err := json.Unmarshal([]byte(r.out), &st); err != nil || len(st) != 1 {
		t.Fatalf("node status: %v in %q (%s)", err, r.out, r.err)
	}
	if st[0].Peers != 2 || st[0].Encap != "none,ipip,vxlan" {
		t.Errorf("node status peers %d encap %q, want 2 (host-b over both underlays, host-c) and none,ipip,vxlan", st[0].Peers, st[0].Encap)
	}
}
