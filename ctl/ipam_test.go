package ctl

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// ipamModel is a pool of /30 blocks (four addresses each) and two nodes.
const ipamModel = `apiVersion: calyx.io/v1
kind: IPPool
metadata: {name: wl}
spec: {cidr: 10.65.0.0/28, blockSize: 30}
---
apiVersion: calyx.io/v1
kind: Node
metadata: {name: host-a}
spec: {ipv4Address: 10.30.0.11/24}
---
apiVersion: calyx.io/v1
kind: Node
metadata: {name: host-b}
spec: {ipv4Address: 10.30.0.12/24}
`

func TestIPAMAllocateShowRelease(t *testing.T) {
	ds := t.TempDir()
	if r := run(t, ds, ipamModel, "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply: %s", r.err)
	}
	// An empty datastore shows just the header.
	if r := run(t, ds, "", "ipam", "show"); r.code != 0 || strings.TrimSpace(r.out) != "CIDR  POOL  NODE  USED  SIZE" {
		t.Errorf("ipam show with no blocks: %d %q %q", r.code, r.out, r.err)
	}

	for i, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--node", "host-a", "--handle", "web-1"}, "10.65.0.0"},
		{[]string{"--handle=web-2", "--node=host-a"}, "10.65.0.1"},
		{[]string{"--node", "host-b"}, "10.65.0.4"},
	} {
		r := run(t, ds, "", append([]string{"ipam", "allocate"}, tc.args...)...)
		if r.code != 0 || r.out != tc.want+"\n" {
			t.Errorf("allocate %d (%v): %d %q %q, want %q", i, tc.args, r.code, r.out, r.err, tc.want)
		}
	}
	r := run(t, ds, "", "ipam", "allocate", "--node", "host-a", "--handle", "web-3", "-o", "json")
	var alloc []map[string]any
	if err := json.Unmarshal([]byte(r.out), &alloc); err != nil || len(alloc) != 1 ||
		alloc[0]["address"] != "10.65.0.2" || alloc[0]["node"] != "host-a" || alloc[0]["handle"] != "web-3" {
		t.Errorf("allocate -o json: %d %q %q", r.code, r.out, r.err)
	}

	r = run(t, ds, "", "ipam", "show")
	wantRows := [][]string{
		{"CIDR", "POOL", "NODE", "USED", "SIZE"},
		{"10.65.0.0/30", "wl", "host-a", "3", "4"},
		{"10.65.0.4/30", "wl", "host-b", "1", "4"},
	}
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if r.code != 0 || len(lines) != len(wantRows) {
		t.Fatalf("ipam show: %d %q %q", r.code, r.out, r.err)
	}
	for i, want := range wantRows {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("ipam show line %d = %q, want %q", i, lines[i], want)
		}
	}
	r = run(t, ds, "", "ipam", "show", "-o", "json")
	var blocks []map[string]any
	if err := json.Unmarshal([]byte(r.out), &blocks); err != nil || len(blocks) != 2 {
		t.Fatalf("ipam show -o json: %v\n%s", err, r.out)
	}
	if b := blocks[1]; b["cidr"] != "10.65.0.4/30" || b["pool"] != "wl" || b["node"] != "host-b" || b["used"] != 1.0 || b["size"] != 4.0 {
		t.Errorf("ipam show -o json row = %v", b)
	}
	// A new handle (none was given) is recorded in the block, which get
	// shows.
	r = run(t, ds, "", "get", "ipamblock", "10-65-0-4-30", "-o", "json")
	if r.code != 0 || !regexp.MustCompile(`"10.65.0.4": "calyxctl-[0-9a-f]{12}"`).MatchString(r.out) {
		t.Errorf("get ipamblock: %d %q %q", r.code, r.out, r.err)
	}

	if r = run(t, ds, "", "ipam", "release", "10.65.0.1"); r.code != 0 || r.out != "released 10.65.0.1\n" {
		t.Errorf("release: %d %q %q", r.code, r.out, r.err)
	}
	if r = run(t, ds, "", "ipam", "release", "10.65.0.1"); r.code != 1 || !strings.Contains(r.err, "not allocated") {
		t.Errorf("second release: %d %q", r.code, r.err)
	}
	// The freed address is the next one handed out.
	if r = run(t, ds, "", "ipam", "allocate", "--node", "host-a"); r.out != "10.65.0.1\n" {
		t.Errorf("allocate after release: %q %q", r.out, r.err)
	}
}

func TestIPAMAllocateErrors(t *testing.T) {
	ds := t.TempDir()
	if r := run(t, ds, ipamModel, "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply: %s", r.err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"ipam"}, 2, "ipam show"},
		{[]string{"ipam", "list"}, 2, `unknown subcommand "list"`},
		{[]string{"ipam", "show", "x"}, 2, "no arguments"},
		{[]string{"ipam", "allocate"}, 2, "--node NODE is required"},
		{[]string{"ipam", "allocate", "--node"}, 2, "--node needs a value"},
		{[]string{"ipam", "allocate", "--node", "host-a", "--pool", "wl"}, 2, `unexpected "--pool"`},
		{[]string{"ipam", "release"}, 2, "ipam release ADDR"},
		{[]string{"ipam", "release", "10.65.0.300"}, 2, "not an IP address"},
		{[]string{"ipam", "allocate", "--node", "ghost"}, 1, "Node/ghost: not found"},
		{[]string{"ipam", "release", "10.99.0.1"}, 1, "in no IPAM block"},
	} {
		r := run(t, ds, "", tc.args...)
		if r.code != tc.code || !strings.Contains(r.err, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, r.code, r.err, tc.code, tc.want)
		}
	}
	// Four blocks of four: the seventeenth address is one too many.
	for i := range 16 {
		node := []string{"host-a", "host-b"}[i%2]
		if r := run(t, ds, "", "ipam", "allocate", "--node", node); r.code != 0 {
			t.Fatalf("allocation %d: %s", i, r.err)
		}
	}
	r := run(t, ds, "", "ipam", "allocate", "--node", "host-a")
	if r.code != 1 || !strings.Contains(r.err, "pool exhausted") || !strings.Contains(r.err, "IPPool/wl") {
		t.Errorf("allocation from a full pool: %d %q", r.code, r.err)
	}
}

// A handle's allocation is idempotent; release --handle frees it.
func TestIPAMHandle(t *testing.T) {
	ds := t.TempDir()
	if r := run(t, ds, ipamModel, "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply: %s", r.err)
	}
	first := run(t, ds, "", "ipam", "allocate", "--node", "host-a", "--handle", "vm-42")
	again := run(t, ds, "", "ipam", "allocate", "--node", "host-a", "--handle", "vm-42")
	if first.code != 0 || again.out != first.out {
		t.Errorf("retried allocation printed %q, the first %q (%s)", again.out, first.out, first.err)
	}
	if r := run(t, ds, "", "ipam", "allocate", "--node", "host-a"); r.code != 0 || r.out == first.out {
		t.Errorf("an allocation without a handle got %q (%s): want a new address", r.out, r.err)
	}
	r := run(t, ds, "", "ipam", "release", "--handle", "vm-42")
	if r.code != 0 || r.out != "released "+strings.TrimSpace(first.out)+" (handle vm-42)\n" {
		t.Errorf("release --handle: %d %q %q", r.code, r.out, r.err)
	}
	if r := run(t, ds, "", "ipam", "release", "--handle", "vm-42"); r.code != 1 || !strings.Contains(r.err, "holds no address") {
		t.Errorf("second release --handle: %d %q", r.code, r.err)
	}
	if r := run(t, ds, "", "ipam", "release", "--handle"); r.code != 2 {
		t.Errorf("release --handle without a value: %d %q", r.code, r.err)
	}
}

// An IPAMBlock is IPAM's own record: apply refuses one without --force.
func TestApplyIPAMBlockNeedsForce(t *testing.T) {
	ds := t.TempDir()
	if r := run(t, ds, ipamModel, "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply: %s", r.err)
	}
	block := "apiVersion: calyx.io/v1\nkind: IPAMBlock\nmetadata: {name: 10-65-0-0-30}\nspec: {cidr: 10.65.0.0/30, pool: wl, node: host-a}\n"
	if r := run(t, ds, block, "apply", "-f", "-"); r.code != 2 || !strings.Contains(r.err, "--force") || !strings.Contains(r.err, "IPAMBlock/10-65-0-0-30") {
		t.Errorf("apply of an IPAMBlock: %d %q, want refused naming it and --force", r.code, r.err)
	}
	if r := run(t, ds, "", "get", "ipamblocks"); strings.Contains(r.out, "10-65-0-0-30") {
		t.Errorf("the refused block was written: %s", r.out)
	}
	if r := run(t, ds, block, "apply", "-f", "-", "--force"); r.code != 0 {
		t.Errorf("apply --force of an IPAMBlock: %d %q", r.code, r.err)
	}
}
