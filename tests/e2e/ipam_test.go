package e2e

// End-to-end test of issue 6's block IPAM: an address handed out by
// `calyxctl ipam allocate` for a node comes from a block that node claims;
// every other node routes the whole block to it (one route, no /32), while
// endpoint addresses outside their node's blocks keep their /32 routes.

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
)

// ipamRow is calyxctl ipam show's JSON.
type ipamRow struct {
	CIDR string `json:"cidr"`
	Pool string `json:"pool"`
	Node string `json:"node"`
	Used int    `json:"used"`
	Size int    `json:"size"`
}

func TestIPAMBlockRoutes(t *testing.T) {
	el := newEtcdLab(t)
	l, m := el.l, el.m

	out, _, err := l.Calyxctl("", "ipam", "allocate", "--node", m.HostB.Name, "--handle", "wb2")
	if err != nil {
		t.Fatalf("ipam allocate: %v\n%s", err, out)
	}
	addr, err := netip.ParseAddr(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("ipam allocate printed %q: %v", out, err)
	}
	var blocks []ipamRow
	if err := l.CalyxctlJSON("", &blocks, "ipam", "show"); err != nil {
		t.Fatal(err)
	}
	var block netip.Prefix
	for _, b := range blocks {
		p := netip.MustParsePrefix(b.CIDR)
		if p.Contains(addr) {
			block = p
			if b.Node != m.HostB.Name || b.Used != 1 || b.Size != 1<<(32-p.Bits()) {
				t.Errorf("ipam show: block %+v, want held by %s with 1 of %d used", b, m.HostB.Name, 1<<(32-p.Bits()))
			}
		}
	}
	if !block.IsValid() {
		t.Fatalf("ipam show has no block holding %s: %+v", addr, blocks)
	}
	t.Logf("host-b holds %s; wb2 gets %s", block, addr)

	wb2, err := m.AddWorkload(m.HostB.Name, "wb2", addr.String(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if o, err := l.Apply("", lab.EndpointYAML(wb2)); err != nil {
		t.Fatalf("apply wb2: %v\n%s", err, o)
	}
	// On host-a: one route for the block to host-b, no /32 for wb2; wb's
	// address (outside every block of host-b) keeps its /32.
	err = lab.Eventually(attachTimeout, 200*time.Millisecond, func() error {
		rs, err := l.Routes(m.HostA.Name)
		if err != nil {
			return err
		}
		var sawBlock, sawWB bool
		for _, r := range rs {
			switch r.CIDR {
			case block.String():
				if r.Type != "remote-workload" || r.Node != m.HostB.Name {
					return fmt.Errorf("block route %+v, want remote-workload to %s", r, m.HostB.Name)
				}
				sawBlock = true
			case netip.PrefixFrom(addr, 32).String():
				return fmt.Errorf("host-a has a /32 for %s inside host-b's block", addr)
			case netip.PrefixFrom(m.WB.IP, 32).String():
				sawWB = true
			}
		}
		if !sawBlock || !sawWB {
			return fmt.Errorf("host-a routes: block %s %v, wb's /32 %v", block, sawBlock, sawWB)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkReachable(t, l, [][2]*lab.Workload{{m.WA, wb2}, {m.WC, wb2}, {wb2, m.WA}})
}

// An IPAM block of a node that stays empty (no allocation, no endpoint
// address inside) for --empty-block-grace goes back to the pool; one whose
// addresses endpoints use without IPAM stays, and so does one with an
// allocation.
func TestIPAMEmptyBlockReleased(t *testing.T) {
	e := setupKind(t, lab.KindVeth, 2, "--empty-block-grace", "2s")
	l, h := e.l, e.h
	show := func() map[string]ipamRow {
		var rows []ipamRow
		if err := l.CalyxctlJSON(h.Name, &rows, "ipam", "show"); err != nil {
			t.Fatal(err)
		}
		out := map[string]ipamRow{}
		for _, r := range rows {
			out[r.CIDR] = r
		}
		return out
	}
	// The block of the lab's endpoints (10.65.0.0/26) through IPAM: an
	// address allocated and given back leaves it without allocations.
	out, _, err := l.Calyxctl(h.Name, "ipam", "allocate", "--node", h.Name, "--handle", "vm-1")
	if err != nil {
		t.Fatalf("ipam allocate: %v\n%s", err, out)
	}
	if _, _, err := l.Calyxctl(h.Name, "ipam", "release", "--handle", "vm-1"); err != nil {
		t.Fatal(err)
	}
	// Two more blocks of host-a: one empty, one with an allocation.
	blocks := ""
	for _, b := range []struct{ cidr, alloc string }{{"10.65.1.0/26", ""}, {"10.65.2.0/26", "{10.65.2.5: vm-2}"}} {
		p := netip.MustParsePrefix(b.cidr)
		alloc := b.alloc
		if alloc == "" {
			alloc = "{}"
		}
		blocks += fmt.Sprintf("---\napiVersion: calyx.io/v1\nkind: IPAMBlock\nmetadata: {name: %s}\nspec: {cidr: %s, pool: %s, node: %s, allocations: %s}\n",
			strings.NewReplacer(".", "-", "/", "-").Replace(p.String()), p, "lab-pool", h.Name, alloc)
	}
	if out, _, err := l.CalyxctlInput(h.Name, blocks, "apply", "-f", "-", "--force"); err != nil {
		t.Fatalf("apply blocks: %v\n%s", err, out)
	}
	if err := lab.Eventually(20*time.Second, 250*time.Millisecond, func() error {
		if _, ok := show()["10.65.1.0/26"]; ok {
			return fmt.Errorf("the empty block 10.65.1.0/26 is still host-a's")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // past the grace once more
	rows := show()
	for _, c := range []string{"10.65.0.0/26", "10.65.2.0/26"} {
		if r, ok := rows[c]; !ok || r.Node != h.Name {
			t.Errorf("block %s: %+v (found %v), want it kept by %s", c, r, ok, h.Name)
		}
	}
	if log := l.AgentLog(h.Name); !strings.Contains(log, "released an empty IPAM block") {
		t.Errorf("the agent did not log the release")
	}
}
