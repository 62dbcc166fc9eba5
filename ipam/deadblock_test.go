package ipam

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/calyxnet/calyx/model"
)

func TestDeadBlockFrees(t *testing.T) {
	addrs := func(ss ...string) map[netip.Addr]bool {
		m := map[netip.Addr]bool{}
		for _, s := range ss {
			m[netip.MustParseAddr(s)] = true
		}
		return m
	}
	block := func(cidr string, alloc ...string) *model.IPAMBlock {
		b := &model.IPAMBlock{Spec: model.IPAMBlockSpec{CIDR: netip.MustParsePrefix(cidr), Node: "dead", Allocations: map[netip.Addr]string{}}}
		for _, a := range alloc {
			b.Spec.Allocations[netip.MustParseAddr(a)] = "h-" + a
		}
		return b
	}
	for _, tc := range []struct {
		name  string
		block *model.IPAMBlock
		used  map[netip.Addr]bool
		del   bool
		free  []string
	}{
		{"empty block goes", block("10.65.0.0/26"), addrs("10.65.1.1"), true, nil},
		{"allocations no one uses go with the block", block("10.65.0.0/26", "10.65.0.1", "10.65.0.2"), addrs("10.65.0.64"), true, nil},
		{"a used address keeps the block, the rest is freed", block("10.65.0.0/26", "10.65.0.3", "10.65.0.1", "10.65.0.2"),
			addrs("10.65.0.2"), false, []string{"10.65.0.1", "10.65.0.3"}},
		{"an address used without IPAM keeps the block", block("10.65.0.0/26", "10.65.0.1"), addrs("10.65.0.9"), false, []string{"10.65.0.1"}},
		{"every allocation used: nothing goes", block("10.65.0.0/26", "10.65.0.1"), addrs("10.65.0.1"), false, nil},
		{"IPv6", block("fd00:65::/122", "fd00:65::1", "fd00:65::2"), addrs("fd00:65::2", "10.65.0.2"), false, []string{"fd00:65::1"}},
		{"IPv6 unused", block("fd00:65::/122", "fd00:65::1"), addrs("fd00:65::40"), true, nil},
	} {
		del, free := deadBlockFrees(tc.block, tc.used)
		var got []string
		for _, a := range free {
			got = append(got, a.String())
		}
		if del != tc.del || !slices.Equal(got, tc.free) {
			t.Errorf("%s: deadBlockFrees = %v, %v; want %v, %v", tc.name, del, got, tc.del, tc.free)
		}
	}
}
