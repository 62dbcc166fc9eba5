package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calyxnet/calyx/agent/monitor"
	"github.com/calyxnet/calyx/tests/lab"
)

// TestMonitor: calyxctl monitor -o json on a host shows, within a second,
// a TCP connection a policy's Deny rule refuses (a JSON line with the rule,
// the endpoint and the flow) and a ping from a spoofed source (a drop with
// its reason and flow); filtered by endpoint, it shows only that
// endpoint's.
func TestMonitor(t *testing.T) {
	l := newLab(t)
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	var ws []*lab.Workload
	for i := range 2 {
		w, err := l.AddWorkload(h.Name, fmt.Sprintf("w%d", i+1), fmt.Sprintf("10.65.0.%d", i+2), "")
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	w1, w2 := ws[0], ws[1]
	if err := l.StartAgent(h.Name); err != nil {
		t.Fatal(err)
	}
	policy := `apiVersion: calyx.io/v1
kind: NetworkPolicy
metadata:
  name: no-ssh
spec:
  selector: role == "db"
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: TCP
    destination:
      ports: [22]
  - action: Allow
`
	model := lab.JoinYAML(lab.PoolYAML("pool", "10.65.0.0/16"), lab.NodeYAML(h), lab.EndpointYAML(w1),
		lab.LabeledEndpointYAML(w2, map[string]string{"role": "db"}), policy)
	if out, err := l.Apply("", model); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if err := l.WaitLinks(h.Name, attachTimeout, w1.HostIface, w2.HostIface); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitPing(w1.NS, w2.IP.String(), trafficTimeout); err != nil {
		t.Fatalf("w1 -> w2 (allowed): %v", err)
	}

	watch := func(args ...string) *lab.Proc {
		t.Helper()
		full, err := l.CtlArgs(h.Name, append([]string{"-o", "json", "monitor", "--for", "20s"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		p, err := l.ExecBackground(h.NS, 30*time.Second, full...)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	all, onlyW1 := watch(), watch("--endpoint", w1.Name)
	time.Sleep(500 * time.Millisecond) // both connected

	start := time.Now()
	if _, err := lab.TCPEcho(w1.NS, w2.IP.String()+":22", noReplyTimeout); err == nil {
		t.Errorf("w1 -> w2:22 connected; the policy denies it")
	}
	// A spoofed source from w1 (drop-spoof-ip, counted).
	if _, err := l.Exec(w1.NS, "ip", "addr", "add", "10.65.0.99/32", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	_, _ = l.Ping(w1.NS, w2.IP.String(), 1, "-I", "10.65.0.99", "-W", "1")

	events := func(p *lab.Proc) []monitor.Event {
		t.Helper()
		res, _ := p.Stop(syscall.SIGINT, 5*time.Second)
		var out []monitor.Event
		for _, line := range strings.Split(strings.TrimSpace(res.Stdout), "\n") {
			var e monitor.Event
			if line == "" {
				continue
			}
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Errorf("monitor printed %q, not a JSON event: %v", line, err)
				continue
			}
			out = append(out, e)
		}
		if len(out) == 0 {
			t.Errorf("monitor printed no events:\n%s", res.Combined())
		}
		return out
	}
	time.Sleep(500 * time.Millisecond) // the last events on their way
	got := events(all)
	var deny, spoof *monitor.Event
	for i, e := range got {
		switch {
		case e.Kind == monitor.KindPolicyDeny && e.Endpoint == w2.Name && deny == nil:
			deny = &got[i] // the first SYN's (its retransmissions follow)
		case e.Kind == monitor.KindDrop && e.Reason == "drop-spoof-ip" && e.Endpoint == w1.Name:
			spoof = &got[i]
		}
	}
	if deny == nil {
		t.Errorf("no policy-deny event for %s among %+v", w2.Name, got)
	} else {
		if deny.Rule != "no-ssh ingress[0]" || deny.Reason != "drop-policy" || deny.Proto != "tcp" ||
			!strings.HasPrefix(deny.Src, w1.IP.String()+":") || deny.Dst != w2.IP.String()+":22" || deny.Interface != w2.HostIface {
			t.Errorf("deny event %+v: want rule no-ssh ingress[0], drop-policy, tcp %s:* -> %s:22 on %s", *deny, w1.IP, w2.IP, w2.HostIface)
		}
		if lag := deny.Time.Sub(start); lag > time.Second {
			t.Errorf("the deny showed %v after the connection attempt, want within a second", lag)
		}
	}
	if spoof == nil {
		t.Errorf("no drop-spoof-ip event for %s among %+v", w1.Name, got)
	} else if spoof.Proto != "icmp" || spoof.Src != "10.65.0.99" || spoof.Dst != w2.IP.String() || spoof.Interface != w1.HostIface {
		t.Errorf("spoof event %+v: want icmp 10.65.0.99 -> %s on %s", *spoof, w2.IP, w1.HostIface)
	}
	for _, e := range events(onlyW1) {
		if e.Endpoint != w1.Name {
			t.Errorf("monitor --endpoint %s printed %+v", w1.Name, e)
		}
	}
}
