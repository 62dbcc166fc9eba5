package ctl

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/calyxnet/calyx/agent/monitor"
)

// fakeMonitor serves monitor.Path as an agent does: the filter it was asked
// for is recorded, the events are streamed, and the stream stays open.
func fakeMonitor(t *testing.T, events ...monitor.Event) (*httptest.Server, *string) {
	t.Helper()
	var query string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != monitor.Path {
			http.NotFound(w, r)
			return
		}
		query = r.URL.RawQuery
		enc := json.NewEncoder(w)
		for _, e := range events {
			_ = enc.Encode(e)
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	return srv, &query
}

// calyxctl monitor passes its filter to the agent, prints each event as a
// line (or, with -o json, the agent's JSON lines), and stops after --for.
func TestMonitorCommand(t *testing.T) {
	at := time.Date(2026, 12, 7, 22, 0, 0, 0, time.UTC)
	deny := monitor.Event{Time: at, Kind: monitor.KindPolicyDeny, Reason: "drop-policy", Endpoint: "web-1",
		Interface: "tap0", Proto: "tcp", Src: "10.65.0.9:40000", Dst: "10.65.0.2:22", Rule: "db-only ingress[0]", Packets: 1}
	count := monitor.Event{Time: at, Kind: monitor.KindDrop, Reason: "drop-spoof-ip", Endpoint: "web-1", Interface: "tap0",
		Proto: "icmp", Src: "10.65.0.99", Dst: "10.65.0.3", Packets: 1, Bytes: 98}
	srv, query := fakeMonitor(t, deny, count)

	r := run(t, t.TempDir(), "", "--agent", srv.URL, "monitor", "--endpoint", "web-1", "--for", "300ms")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	if *query != "endpoint=web-1" {
		t.Errorf("asked the agent for %q, want endpoint=web-1", *query)
	}
	for _, want := range []string{"policy-deny", "10.65.0.9:40000 -> 10.65.0.2:22", "db-only ingress[0]", "drop-spoof-ip", "10.65.0.99 -> 10.65.0.3"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("output lacks %q:\n%s", want, r.out)
		}
	}

	r = run(t, t.TempDir(), "", "--agent", srv.URL, "-o", "json", "monitor", "--reason", "drop-policy", "--for", "300ms")
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	var got monitor.Event
	if r.code != 0 || len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &got) != nil || got.Rule != deny.Rule {
		t.Errorf("-o json: exit %d, lines %q (%s)", r.code, lines, r.err)
	}
	if *query != "reason=drop-policy" {
		t.Errorf("asked the agent for %q, want reason=drop-policy", *query)
	}
}

// Bad arguments are usage errors naming what is wrong; no agent is a clear
// failure.
func TestMonitorCommandErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"monitor", "--proto", "sctp"}, 2, `proto "sctp"`},
		{[]string{"monitor", "--reason", "drop-sadness"}, 2, `reason "drop-sadness"`},
		{[]string{"monitor", "--for", "soon"}, 2, `--for "soon"`},
		{[]string{"monitor", "--colour"}, 2, `unknown argument "--colour"`},
		{[]string{"-o", "yaml", "monitor"}, 2, "-o yaml"},
		{[]string{"--agent", "http://127.0.0.1:1", "monitor", "--for", "1s"}, 1, "the agent at http://127.0.0.1:1"},
	} {
		r := run(t, t.TempDir(), "", tc.args...)
		if r.code != tc.code || !strings.Contains(r.err, tc.want) {
			t.Errorf("%v: exit %d %q, want %d with %q", tc.args, r.code, r.err, tc.code, tc.want)
		}
	}
}
