package loader_test

import (
	"errors"
	"os"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/calyxnet/calyx/loader"
)

// The pin directory's lock is one writer's: a second Lock fails at once
// with ErrLocked, and works again after unlock.
func TestLockPinDirectory(t *testing.T) {
	requirePrivileges(t)
	dir := mountBPFFS(t)
	if err := loader.EnsureBPFFS(dir); err != nil {
		t.Fatal(err)
	}
	unlock, err := loader.Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loader.Lock(dir); !errors.Is(err, loader.ErrLocked) {
		t.Fatalf("second Lock: %v, want ErrLocked", err)
	}
	unlock()
	again, err := loader.Lock(dir)
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	again()
}

// DetachAll takes calyx's programs off every interface, pinned TCX links
// and clsact filters alike (the clsact qdisc they leave empty with them);
// RemovePins then leaves no pin and no directory.
func TestDetachAllAndRemovePins(t *testing.T) {
	requirePrivileges(t)
	tcx := inNewNetns(t)
	dir := mountBPFFS(t)
	dp, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	peer, err := netlink.LinkByName("cxldr1")
	if err != nil {
		t.Fatal(err)
	}
	cls := peer.Attrs().Index
	if _, err := dp.Attach("cxldr0", tcx, loader.RoleWorkload, loader.ModeTCX); err != nil {
		t.Fatal(err)
	}
	if _, err := dp.Attach("cxldr1", cls, loader.RoleWorkload, loader.ModeClsact); err != nil {
		t.Fatal(err)
	}
	for _, idx := range []int{tcx, cls} {
		for _, h := range loader.Hooks {
			if ids, err := loader.AttachedPrograms(idx, h); err != nil || len(ids) != 1 {
				t.Fatalf("before: ifindex %d %s runs %v (%v), want one program", idx, h, ids, err)
			}
		}
	}

	d, err := loader.DetachAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d.Links != 2 || d.Filters != 2 || d.Qdiscs != 1 {
		t.Errorf("detached %+v, want 2 links, 2 filters, 1 qdisc", d)
	}
	for _, idx := range []int{tcx, cls} {
		for _, h := range loader.Hooks {
			if ids, err := loader.AttachedPrograms(idx, h); err != nil || len(ids) != 0 {
				t.Errorf("after: ifindex %d %s runs %v (%v), want none", idx, h, ids, err)
			}
		}
	}
	qs, err := netlink.QdiscList(peer)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			t.Errorf("the emptied clsact qdisc on cxldr1 is still there")
		}
	}

	n, err := loader.RemovePins(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Errorf("removed no pins")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory %s still there (%v)", dir, err)
	}
}
