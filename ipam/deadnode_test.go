package ipam_test

import (
	"context"
	"net/netip"
	"reflect"
	"testing"

	"github.com/calyxnet/calyx/ipam"
	"github.com/calyxnet/calyx/model"
)

// ReleaseDeadNode deletes the dead node's blocks nothing uses and frees the
// allocations no endpoint has in the others; the other nodes' blocks stay.
func TestReleaseDeadNode(t *testing.T) {
	ctx := context.Background()
	ds := fileStore(t, pool("p", "10.65.0.0/24", 28), pool("p6", "fd00:65::/112", 124), node("live", nil), node("dead", nil))
	for _, n := range []string{"dead", "dead", "live", "dead"} { // .0/28, .16/28, .32 for live, .48/28
		if _, err := ipam.ClaimBlock(ctx, ds, n, "p"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ipam.ClaimBlock(ctx, ds, "dead", "p6"); err != nil {
		t.Fatal(err)
	}
	alloc := func(b, handle string, a string) {
		t.Helper()
		ref := model.Ref{Kind: model.KindIPAMBlock, Name: model.BlockName(netip.MustParsePrefix(b))}
		r, rev, err := ds.Get(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		nb := *r.(*model.IPAMBlock)
		nb.Spec.Allocations = map[netip.Addr]string{netip.MustParseAddr(a): handle}
		for k, v := range r.(*model.IPAMBlock).Spec.Allocations {
			nb.Spec.Allocations[k] = v
		}
		if err := ds.Update(ctx, &nb, rev); err != nil {
			t.Fatal(err)
		}
	}
	alloc("10.65.0.0/28", "vm-1", "10.65.0.1")
	alloc("10.65.0.0/28", "vm-2", "10.65.0.2")
	alloc("10.65.0.16/28", "vm-3", "10.65.0.17")
	alloc("10.65.0.32/28", "vm-live", "10.65.0.33")
	alloc("fd00:65::/124", "vm-1", "fd00:65::1")
	alloc("fd00:65::/124", "vm-4", "fd00:65::4")
	ep := &model.WorkloadEndpoint{Metadata: model.Metadata{Name: "vm-1"}, Spec: model.WorkloadEndpointSpec{Node: "dead", Interface: "tap1",
		IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.65.0.1/32"), netip.MustParsePrefix("fd00:65::1/128")}}}
	if err := ds.Apply(ctx, []model.Resource{ep}); err != nil {
		t.Fatal(err)
	}

	got, err := ipam.ReleaseDeadNode(ctx, ds, "dead")
	if err != nil {
		t.Fatal(err)
	}
	want := []ipam.DeadBlockRelease{
		{Block: netip.MustParsePrefix("10.65.0.0/28"), Freed: 1},
		{Block: netip.MustParsePrefix("10.65.0.16/28"), Deleted: true, Freed: 1},
		{Block: netip.MustParsePrefix("10.65.0.48/28"), Deleted: true},
		{Block: netip.MustParsePrefix("fd00:65::/124"), Freed: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReleaseDeadNode = %+v\nwant %+v", got, want)
	}
	held := map[string]map[netip.Addr]string{}
	for _, b := range blocks(t, ds) {
		held[b.Spec.CIDR.String()+" "+b.Spec.Node] = b.Spec.Allocations
	}
	wantHeld := map[string]map[netip.Addr]string{
		"10.65.0.0/28 dead":  {netip.MustParseAddr("10.65.0.1"): "vm-1"},
		"10.65.0.32/28 live": {netip.MustParseAddr("10.65.0.33"): "vm-live"},
		"fd00:65::/124 dead": {netip.MustParseAddr("fd00:65::1"): "vm-1"},
	}
	if !reflect.DeepEqual(held, wantHeld) {
		t.Errorf("blocks after the release = %v\nwant %v", held, wantHeld)
	}
	// Again: nothing left to give back.
	if got, err := ipam.ReleaseDeadNode(ctx, ds, "dead"); err != nil || len(got) != 0 {
		t.Errorf("second ReleaseDeadNode = %+v, %v; want nothing", got, err)
	}
	// The orchestrator deletes the endpoint: the rest goes.
	if err := ds.Delete(ctx, []model.Ref{model.RefOf(ep)}); err != nil {
		t.Fatal(err)
	}
	got, err = ipam.ReleaseDeadNode(ctx, ds, "dead")
	want = []ipam.DeadBlockRelease{
		{Block: netip.MustParsePrefix("10.65.0.0/28"), Deleted: true, Freed: 1},
		{Block: netip.MustParsePrefix("fd00:65::/124"), Deleted: true, Freed: 1},
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ReleaseDeadNode after the endpoint went = %+v, %v\nwant %+v", got, err, want)
	}
	if bs := blocks(t, ds); len(bs) != 1 {
		t.Errorf("blocks left: %v; want live's only", bs)
	}
}
