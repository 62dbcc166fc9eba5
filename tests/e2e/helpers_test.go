package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
)

// Bounds for the waits below. They are generous because they only matter
// when something is broken; passing runs return as soon as the condition
// holds.
const (
	attachTimeout  = 20 * time.Second // model applied -> programs attached
	trafficTimeout = 15 * time.Second // attached -> first ping answered
	removeTimeout  = 15 * time.Second // endpoint deleted -> traffic stops
)

// binDir is where the tests take calyx-agent and calyxctl from.
func binDir() string {
	if d := os.Getenv("CALYX_BIN_DIR"); d != "" {
		return d
	}
	return lab.DefaultBinDir()
}

// newLab checks the prerequisites, creates a lab and registers its removal
// (pass or fail). On failure the agent logs are printed first.
func newLab(t *testing.T) *lab.Lab { return newLabKind(t, "") }

// newLabKind is newLab whose workloads are of kind (lab.KindVeth,
// lab.KindVM, lab.KindMixed); "" takes $CALYX_LAB_WORKLOAD, else veth.
// Before the lab goes, every running VM is checked for packets calyx
// counted as delivered that its tap never transmitted.
func newLabKind(t *testing.T, kind lab.WorkloadKind) *lab.Lab {
	t.Helper()
	lab.Require(t)
	lab.RequireTools(t, "ip", "ping", "ss")
	lab.RequireBinaries(t, binDir())
	if kind == lab.KindVM || kind == lab.KindMixed {
		lab.RequireVM(t, binDir())
	}
	l, err := lab.New(lab.Options{
		BinDir: binDir(),
		// Not t.Context(): that ends before the cleanups, and the
		// delivery check below still runs calyxctl. Close ends the lab's
		// own context.
		Context:       context.Background(),
		Logf:          t.Logf,
		AgentLogLevel: "debug",
		WorkloadKind:  kind,
	})
	if err != nil {
		t.Fatalf("new lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab %s: %v", l.Prefix, err)
		}
	})
	// Registered after Close, so it runs before it (cleanups are LIFO).
	t.Cleanup(func() {
		skipped, err := l.CheckDelivered()
		for _, s := range skipped {
			t.Logf("delivery check skipped: %s", s)
		}
		if err != nil {
			t.Errorf("counted as delivered, not received: %v", err)
		}
	})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, h := range l.Hosts() {
			if _, err := os.Stat(l.AgentLogPath(h.Name)); err == nil {
				t.Logf("=== agent log of %s (%s):\n%s", h.Name, l.AgentLogPath(h.Name), l.AgentLog(h.Name))
			}
		}
	})
	return l
}

// env is a single-host lab with an agent and its workloads.
type env struct {
	l  *lab.Lab
	h  *lab.Host
	ws []*lab.Workload
}

// setup builds host-a (10.30.0.11/24) with n workloads at 10.65.0.2,
// 10.65.0.3, ..., starts the agent with agentArgs, applies the whole model
// and waits until every workload interface is attached and w1 reaches w2.
func setup(t *testing.T, n int, agentArgs ...string) *env {
	t.Helper()
	return setupKind(t, "", n, agentArgs...)
}

// setupKind is setup with workloads of kind (see newLabKind).
func setupKind(t *testing.T, kind lab.WorkloadKind, n int, agentArgs ...string) *env {
	t.Helper()
	return setupKindOn(t, newLabKind(t, kind), n, agentArgs...)
}

// setupKindOn is setupKind on a lab the caller made.
func setupKindOn(t *testing.T, l *lab.Lab, n int, agentArgs ...string) *env {
	t.Helper()
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{l: l, h: h}
	for i := range n {
		w, err := l.AddWorkload(h.Name, fmt.Sprintf("w%d", i+1), fmt.Sprintf("10.65.0.%d", i+2), "")
		if err != nil {
			t.Fatal(err)
		}
		e.ws = append(e.ws, w)
	}
	if err := l.StartAgent(h.Name, agentArgs...); err != nil {
		t.Fatal(err)
	}
	e.apply(t, l.ModelYAML())
	e.waitAttached(t, e.ws...)
	if n >= 2 {
		e.waitPing(t, e.ws[0], e.ws[1].IP.String())
	}
	return e
}

// apply applies yaml with calyxctl and fails the test if it is rejected.
func (e *env) apply(t *testing.T, yaml string) {
	t.Helper()
	if out, err := e.l.Apply(e.h.Name, yaml); err != nil {
		t.Fatalf("calyxctl apply: %v\n%s\nmodel:\n%s", err, out, yaml)
	}
}

func (e *env) waitAttached(t *testing.T, ws ...*lab.Workload) {
	t.Helper()
	var ifaces []string
	for _, w := range ws {
		ifaces = append(ifaces, w.HostIface)
	}
	if err := e.l.WaitLinks(e.h.Name, attachTimeout, ifaces...); err != nil {
		t.Fatal(err)
	}
}

// waitPing waits until from reaches dst (the first packets may race with
// the attach or with ARP), failing the test after trafficTimeout.
func (e *env) waitPing(t *testing.T, from *lab.Workload, dst string) {
	t.Helper()
	if err := e.l.WaitPing(from.NS, dst, trafficTimeout); err != nil {
		t.Fatalf("%s cannot reach %s: %v", from.Name, dst, err)
	}
}

// mustPing requires every one of count pings from ns to dst to be answered.
func mustPing(t *testing.T, l *lab.Lab, ns, dst string, count int, extra ...string) {
	t.Helper()
	if st, err := l.Ping(ns, dst, count, extra...); err != nil {
		t.Errorf("ping %s from %s: %v\n%s", dst, ns, err, st.Output)
	}
}

// counter returns the packets counted on iface for reason.
func counter(t *testing.T, l *lab.Lab, host, iface, reason string) uint64 {
	t.Helper()
	rows, err := l.Counters(host)
	if err != nil {
		t.Fatal(err)
	}
	return lab.CounterPackets(rows, iface, reason)
}

// waitCounter waits until the counter for iface and reason exceeds min.
func waitCounter(t *testing.T, l *lab.Lab, host, iface, reason string, min uint64) uint64 {
	t.Helper()
	var got uint64
	err := lab.Eventually(5*time.Second, 200*time.Millisecond, func() error {
		rows, err := l.Counters(host)
		if err != nil {
			return err
		}
		if got = lab.CounterPackets(rows, iface, reason); got <= min {
			return fmt.Errorf("%s on %s is %d, want more than %d", reason, iface, got, min)
		}
		return nil
	})
	if err != nil {
		out, _, _ := l.Calyxctl(host, "-o", "json", "counters", "dump")
		t.Errorf("%v\ncounters dump:\n%s", err, out)
	}
	return got
}

// hashTree returns a digest of every file path, mode and content under dir.
func hashTree(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		sum := ""
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			sum = hex.EncodeToString(s[:])
		}
		lines = append(lines, fmt.Sprintf("%s %s %s", rel, info.Mode(), sum))
		return nil
	})
	if err != nil {
		t.Fatalf("hash %s: %v", dir, err)
	}
	sort.Strings(lines)
	s := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(s[:]) + " (" + fmt.Sprint(len(lines)) + " entries)"
}

// containsAny reports whether s contains one of subs, ignoring case.
func containsAny(s string, subs ...string) bool {
	ls := strings.ToLower(s)
	for _, sub := range subs {
		if strings.Contains(ls, strings.ToLower(sub)) {
			return true
		}
	}
	return false
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
