package e2e

// Issue 16: one failing endpoint does not stop the others. The agent is
// told (--debug-fail-attach-file) to fail the attach of one interface: that
// endpoint is reported attach-failed, its interface is taken down, /readyz
// says why, and another endpoint added at the same time works; once the
// failure is gone the retry (with backoff) attaches it.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
)

func TestAttachFailureIsolated(t *testing.T) {
	for _, kind := range []lab.WorkloadKind{lab.KindVeth, lab.KindVM} {
		t.Run(string(kind), func(t *testing.T) { attachFailureIsolated(t, kind) })
	}
}

func attachFailureIsolated(t *testing.T, kind lab.WorkloadKind) {
	l := newLabKind(t, kind)
	failFile := filepath.Join(l.Dir, "fail-attach")
	if err := os.WriteFile(failFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e := setupKindOn(t, l, 2, "--debug-fail-attach-file", failFile)
	h := e.h
	bad, err := l.AddWorkload(h.Name, "w3", "10.65.0.4", "")
	if err != nil {
		t.Fatal(err)
	}
	good, err := l.AddWorkload(h.Name, "w4", "10.65.0.5", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(failFile, []byte(bad.HostIface+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.apply(t, l.ModelYAML())

	row := waitEndpointState(t, l, h.Name, bad.Name, "attach-failed")
	t.Logf("%s: %s (%s)", bad.Name, row.State, row.Reason)
	// The others work: the one added with it, and the ones before.
	e.waitAttached(t, good)
	e.waitPing(t, good, e.ws[0].IP.String())
	mustPing(t, l, e.ws[0].NS, e.ws[1].IP.String(), 3)
	// Nothing the failed one sends passes unchecked: its interface is down.
	if r, err := l.Exec(h.NS, "ip", "-o", "link", "show", bad.HostIface); err != nil || strings.Contains(strings.SplitN(r.Stdout, ">", 2)[0], ",UP") {
		t.Errorf("%s after its attach failed: %q (%v), want it down", bad.HostIface, r.Stdout, err)
	}
	if _, err := l.Exec(bad.NS, "ping", "-c", "1", "-W", "1", e.ws[0].IP.String()); err == nil {
		t.Errorf("%s reached %s with its attach failed", bad.Name, e.ws[0].Name)
	}
	code, body, err := l.AgentReadyz(h.Name)
	if err != nil || code != 503 || !strings.Contains(body, "attach failed") || !strings.Contains(body, bad.Name) {
		t.Errorf("/readyz with a failed attach: %d %q (%v); want 503 naming %s", code, body, err, bad.Name)
	}
	if text, err := l.AgentMetrics(h.Name); err != nil {
		t.Error(err)
	} else {
		if v, ok, _ := lab.MetricSum(text, "calyx_attach_failures_total"); !ok || v < 1 {
			t.Errorf("calyx_attach_failures_total = %v (found %v), want at least 1", v, ok)
		}
		if v, ok, _ := lab.MetricSum(text, `calyx_local_endpoints{state="attach-failed"}`); !ok || v != 1 {
			t.Errorf(`calyx_local_endpoints{state="attach-failed"} = %v (found %v), want 1`, v, ok)
		}
	}
	if log := l.AgentLog(h.Name); !strings.Contains(log, "attach failed") || !strings.Contains(log, bad.HostIface) {
		t.Errorf("the agent's log does not say the attach of %s failed", bad.HostIface)
	}

	// The failure goes: a retry attaches it, and the node is ready again.
	if err := os.WriteFile(failFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitEndpointState(t, l, h.Name, bad.Name, "ready")
	e.waitPing(t, bad, e.ws[0].IP.String())
	if err := lab.Eventually(10*time.Second, 200*time.Millisecond, func() error {
		if code, body, err := l.AgentReadyz(h.Name); err != nil || code != 200 {
			return fmt.Errorf("%d %q (%v)", code, body, err)
		}
		return nil
	}); err != nil {
		t.Errorf("/readyz after the retry: %v", err)
	}
}
