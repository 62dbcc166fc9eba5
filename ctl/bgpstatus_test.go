package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calyxnet/calyx/agent/bgpstatus"
)

// fakeBGPAgent serves report on /bgp and routes on /bgp/routes, and
// records the routes queries; routesCode other than 200 answers routesBody.
type fakeBGPAgent struct {
	report     bgpstatus.Report
	routes     []bgpstatus.Route
	routesCode int
	routesBody string
	queries    []string
}

func (f *fakeBGPAgent) start(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc(bgpstatus.ReportPath, func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(f.report)
	})
	mux.HandleFunc(bgpstatus.RoutesPath, func(w http.ResponseWriter, r *http.Request) {
		f.queries = append(f.queries, r.URL.RawQuery)
		if f.routesCode != 0 && f.routesCode != http.StatusOK {
			http.Error(w, f.routesBody, f.routesCode)
			return
		}
		json.NewEncoder(w).Encode(f.routes)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// testSince is today (unless the test starts on the stroke of midnight).
var testSince = time.Now().Truncate(time.Second)

func TestSinceString(t *testing.T) {
	now := time.Date(2025, 3, 4, 12, 0, 0, 0, time.Local)
	for _, c := range []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, ""},
		{time.Date(2025, 3, 4, 0, 0, 1, 0, time.Local), "00:00:01"},
		{time.Date(2025, 3, 3, 23, 59, 59, 0, time.Local), "2025-03-03"},
		{time.Date(2024, 3, 4, 12, 0, 0, 0, time.Local), "2024-03-04"},
	} {
		if got := sinceString(c.t, now); got != c.want {
			t.Errorf("sinceString(%v) = %q, want %q", c.t, got, c.want)
		}
	}
}

func testReport() bgpstatus.Report {
	return bgpstatus.Report{Running: true, ASNumber: 65000, RouterID: netip.MustParseAddr("10.30.0.11"),
		Peers: []bgpstatus.Peer{
			{Address: netip.MustParseAddr("192.0.2.1"), Type: bgpstatus.PeerTypeGlobal, State: "start",
				Info: "Active Socket: connection refused", LastDisconnectCause: "connection refused", SessionFlaps: 2},
			{Address: netip.MustParseAddr("10.30.0.12"), Type: bgpstatus.PeerTypeMesh, State: "up", Since: testSince,
				Info: "Established", Established: true, PrefixesReceived: 3, PrefixesAdvertised: 2},
		},
		Advertised: 2,
		Disagreements: []bgpstatus.Disagreement{{Prefix: netip.MustParsePrefix("10.65.2.0/26"),
			Learned: netip.MustParseAddr("10.30.0.99"), Peer: netip.MustParseAddr("10.30.0.12")}},
		FIB: []bgpstatus.FIBRoute{{Prefix: netip.MustParsePrefix("203.0.113.0/24"), NextHop: netip.MustParseAddr("192.0.2.1"),
			Via: netip.MustParseAddr("10.30.0.254"), Installed: true}},
	}
}

var testRow = nodeStatusRow{Node: "host-a", Underlay: "eth0", Ifindex: 2, Address: "10.30.0.11", UnderlayMTU: 1500,
	WorkloadMTU: 1450, Encap: "none", Peers: 1}

func runNodeStatus(t *testing.T, agent, output string) result {
	t.Helper()
	o := DefaultOptions()
	o.Agent, o.Output = agent, output
	var out, errb bytes.Buffer
	err := writeNodeStatus(context.Background(), o, testRow, IO{Out: &out, Err: &errb})
	code := 0
	if err != nil {
		code = 1
		errb.WriteString(err.Error())
	}
	return result{code, out.String(), errb.String()}
}

func TestNodeStatusBGPTable(t *testing.T) {
	f := &fakeBGPAgent{report: testReport()}
	srv := f.start(t)
	r := runNodeStatus(t, srv.URL, "table")
	if r.code != 0 || r.err != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.err)
	}
	want := []string{
		"NODE    UNDERLAY  IFINDEX",
		"\n\nIPv4 BGP status\nPEER ADDRESS  PEER TYPE          STATE  SINCE     INFO\n",
		"10.30.0.12    node-to-node mesh  up     " + testSince.Format(time.TimeOnly) + "  Established\n",
		"192.0.2.1     global             start  -         Active Socket: connection refused\n",
		"\n\nIPv6 BGP status\nNo IPv6 peers found.\n",
		"\nBGP and datastore disagree:\nPREFIX        LEARNED     PEER        EXPECTED\n10.65.2.0/26  10.30.0.99  10.30.0.12  -\n",
		"\nRoutes learned for the kernel FIB:\nPREFIX          NEXT-HOP   VIA          INSTALLED  ERROR\n203.0.113.0/24  192.0.2.1  10.30.0.254  true       -\n",
	}
	for _, w := range want {
		if !strings.Contains(r.out, w) {
			t.Errorf("node status lacks %q:\n%s", w, r.out)
		}
	}
	if strings.Contains(r.out, "Peers not configured") {
		t.Errorf("peers-not-configured section without peer errors:\n%s", r.out)
	}
	// The mesh peer (10.30.0.12) sorts before the global one.
	if strings.Index(r.out, "10.30.0.12 ") > strings.Index(r.out, "192.0.2.1 ") {
		t.Errorf("peers not in address order:\n%s", r.out)
	}

	f.report = bgpstatus.Report{Reason: "no BGPConfiguration", Peers: []bgpstatus.Peer{}}
	r = runNodeStatus(t, srv.URL, "table")
	if r.code != 0 || !strings.Contains(r.out, "\n\nBGP is not running: no BGPConfiguration\n") || strings.Contains(r.out, "IPv4 BGP status") {
		t.Errorf("not running: exit %d %q\n%s", r.code, r.err, r.out)
	}

	f.report = bgpstatus.Report{Running: true, PeerErrors: []string{"BGPPeer/gw: password file: no such file"}}
	r = runNodeStatus(t, srv.URL, "table")
	if !strings.Contains(r.out, "No IPv4 peers found.\n") || !strings.Contains(r.out, "\nPeers not configured:\nBGPPeer/gw: password file: no such file\n") {
		t.Errorf("peer errors:\n%s", r.out)
	}
}

func TestNodeStatusBGPJSON(t *testing.T) {
	f := &fakeBGPAgent{report: testReport()}
	srv := f.start(t)
	r := runNodeStatus(t, srv.URL, "json")
	if r.code != 0 || r.err != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.err)
	}
	var v []map[string]any
	if err := json.Unmarshal([]byte(r.out), &v); err != nil || len(v) != 1 {
		t.Fatalf("node status -o json: %v\n%s", err, r.out)
	}
	// Today's fields stay.
	for _, k := range []string{"node", "underlay", "ifindex", "address", "underlayMTU", "workloadMTU", "encap", "peers", "vxlanPort", "vxlanVNI"} {
		if _, ok := v[0][k]; !ok {
			t.Errorf("no %q in %v", k, v[0])
		}
	}
	b, ok := v[0]["bgp"].(map[string]any)
	if !ok {
		t.Fatalf("no bgp object:\n%s", r.out)
	}
	if b["running"] != true || b["asNumber"] != 65000.0 || b["routerID"] != "10.30.0.11" || b["advertised"] != 2.0 {
		t.Errorf("bgp = %v", b)
	}
	if p, ok := b["ipv6Peers"].([]any); !ok || len(p) != 0 {
		t.Errorf("ipv6Peers = %#v, want []", b["ipv6Peers"])
	}
	if p, ok := b["peerErrors"].([]any); !ok || len(p) != 0 {
		t.Errorf("peerErrors = %#v, want []", b["peerErrors"])
	}
	v4, _ := b["ipv4Peers"].([]any)
	if len(v4) != 2 {
		t.Fatalf("ipv4Peers = %v", b["ipv4Peers"])
	}
	mesh, global := v4[0].(map[string]any), v4[1].(map[string]any)
	for k, want := range map[string]any{"peerAddress": "10.30.0.12", "peerType": "node-to-node mesh", "state": "up",
		"since": testSince.Format(time.RFC3339Nano), "info": "Established", "established": true,
		"prefixesReceived": 3.0, "prefixesAdvertised": 2.0, "sessionFlaps": 0.0} {
		if mesh[k] != want {
			t.Errorf("mesh peer %s = %v, want %v", k, mesh[k], want)
		}
	}
	if global["lastDisconnectCause"] != "connection refused" || global["sessionFlaps"] != 2.0 || global["established"] != false {
		t.Errorf("global peer = %v", global)
	}
	d, _ := b["disagreements"].([]any)
	fib, _ := b["fib"].([]any)
	if len(d) != 1 || d[0].(map[string]any)["learned"] != "10.30.0.99" || len(fib) != 1 || fib[0].(map[string]any)["via"] != "10.30.0.254" {
		t.Errorf("disagreements %v fib %v", b["disagreements"], b["fib"])
	}

	// YAML has the same keys.
	r = runNodeStatus(t, srv.URL, "yaml")
	if r.code != 0 || !strings.Contains(r.out, "ipv4Peers:") || !strings.Contains(r.out, "peerAddress: 10.30.0.12") {
		t.Errorf("node status -o yaml: %d %q\n%s", r.code, r.err, r.out)
	}
}

func TestNodeStatusWithoutAgent(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	for _, output := range []string{"table", "json"} {
		r := runNodeStatus(t, url, output)
		if r.code != 0 || !strings.Contains(r.err, "BGP status unavailable: ") {
			t.Errorf("%s: exit %d, stderr %q", output, r.code, r.err)
		}
		if !strings.Contains(r.out, "host-a") || strings.Contains(r.out, "BGP") || strings.Contains(r.out, "bgp") {
			t.Errorf("%s: output without an agent:\n%s", output, r.out)
		}
	}
}

func TestBGPRoutes(t *testing.T) {
	f := &fakeBGPAgent{routes: []bgpstatus.Route{
		{Prefix: netip.MustParsePrefix("10.65.2.0/26"), NextHop: netip.MustParseAddr("10.0.0.1"), Peer: netip.MustParseAddr("10.0.0.1"), Stale: true},
		{Prefix: netip.MustParsePrefix("10.65.1.0/26"), NextHop: netip.MustParseAddr("10.0.0.1"), Peer: netip.MustParseAddr("10.0.0.1")},
	}}
	srv := f.start(t)
	ds := t.TempDir()

	r := run(t, ds, "", "--agent", srv.URL, "bgp", "routes", "--received", "10.0.0.1")
	want := "PREFIX        NEXT-HOP  PEER      STALE\n" +
		"10.65.1.0/26  10.0.0.1  10.0.0.1  false\n" +
		"10.65.2.0/26  10.0.0.1  10.0.0.1  true\n"
	if r.code != 0 || r.out != want {
		t.Errorf("bgp routes --received: exit %d %q\n%s\nwant\n%s", r.code, r.err, r.out, want)
	}
	r = run(t, ds, "", "--agent", srv.URL, "-o", "json", "bgp", "routes")
	var got []bgpstatus.Route
	if err := json.Unmarshal([]byte(r.out), &got); err != nil || r.code != 0 || len(got) != 2 || !got[1].Stale {
		t.Errorf("bgp routes -o json: exit %d %v\n%s", r.code, err, r.out)
	}
	if !strings.Contains(r.out, `"nextHop": "10.0.0.1"`) {
		t.Errorf("bgp routes -o json not in bgpstatus.Route's shape:\n%s", r.out)
	}
	// An agent with no routes: an empty table, an empty array.
	f.routes = nil
	if r := run(t, ds, "", "--agent", srv.URL, "bgp", "routes", "--advertised", "10.0.0.1"); r.code != 0 || r.out != "PREFIX  NEXT-HOP  PEER  STALE\n" {
		t.Errorf("no routes: %d %q %q", r.code, r.out, r.err)
	}
	if r := run(t, ds, "", "--agent", srv.URL, "-o", "json", "bgp", "routes", "--received"); r.code != 0 || r.out != "[]\n" {
		t.Errorf("no routes -o json: %d %q %q", r.code, r.out, r.err)
	}
	wantQueries := []string{"peer=10.0.0.1&received=1", "", "peer=10.0.0.1", "received=1"}
	if strings.Join(f.queries, " ") != strings.Join(wantQueries, " ") {
		t.Errorf("queries %q, want %q", f.queries, wantQueries)
	}

	// Mistakes in the line are usage errors, before any request.
	f.queries = nil
	for _, args := range [][]string{
		{"bgp", "routes", "not-an-ip"},
		{"bgp", "routes", "--advertised", "--received"},
		{"bgp", "routes", "--frob"},
		{"bgp", "routes", "10.0.0.1", "10.0.0.2"},
		{"bgp"},
		{"bgp", "peers"},
	} {
		r := run(t, ds, "", append([]string{"--agent", srv.URL}, args...)...)
		if r.code != 2 || !strings.Contains(r.err, "usage:") {
			t.Errorf("%v: exit %d, stderr %q; want 2 with usage", args, r.code, r.err)
		}
	}
	if r := run(t, ds, "", "--agent", srv.URL, "bgp", "routes", "not-an-ip"); !strings.Contains(r.err, `"not-an-ip"`) {
		t.Errorf("bad peer not named: %q", r.err)
	}
	if len(f.queries) != 0 {
		t.Errorf("usage errors reached the agent: %q", f.queries)
	}

	// The agent's refusals are the command's errors, with its message.
	f.routesCode, f.routesBody = http.StatusServiceUnavailable, "BGP is not running"
	if r := run(t, ds, "", "--agent", srv.URL, "bgp", "routes"); r.code != 1 || r.err != "calyxctl: bgp routes: BGP is not running\n" {
		t.Errorf("503: exit %d, stderr %q", r.code, r.err)
	}
	f.routesCode, f.routesBody = http.StatusNotFound, "no peer 10.0.0.9"
	if r := run(t, ds, "", "--agent", srv.URL, "bgp", "routes", "10.0.0.9"); r.code != 1 || !strings.Contains(r.err, "bgp routes: no peer 10.0.0.9") {
		t.Errorf("404: exit %d, stderr %q", r.code, r.err)
	}

	// The agent's --metrics form (HOST:PORT) works as --agent.
	f.routesCode = 0
	if r := run(t, ds, "", "--agent="+strings.TrimPrefix(srv.URL, "http://"), "bgp", "routes"); r.code != 0 {
		t.Errorf("--agent HOST:PORT: exit %d %q", r.code, r.err)
	}
}
