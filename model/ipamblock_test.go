package model

import (
	"context"
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// block returns an IPAMBlock named after its cidr; allocs alternate
// address and handle.
func block(cidr, pool, node string, allocs ...string) *IPAMBlock {
	p := netip.MustParsePrefix(cidr)
	b := &IPAMBlock{Metadata: Metadata{Name: BlockName(p)}, Spec: IPAMBlockSpec{CIDR: p, Pool: pool, Node: node}}
	for i := 0; i+1 < len(allocs); i += 2 {
		if b.Spec.Allocations == nil {
			b.Spec.Allocations = map[netip.Addr]string{}
		}
		b.Spec.Allocations[netip.MustParseAddr(allocs[i])] = allocs[i+1]
	}
	return b
}

func TestBlockName(t *testing.T) {
	for in, want := range map[string]string{
		"10.65.1.0/26":   "10-65-1-0-26",
		"10.65.1.64/26":  "10-65-1-64-26",
		"fd00:1::/122":   "fd00-1---122",
		"fd00::1:40/122": "fd00--1-40-122",
	} {
		got := BlockName(netip.MustParsePrefix(in))
		if got != want {
			t.Errorf("BlockName(%s) = %q, want %q", in, got, want)
		}
		if !validName(got) {
			t.Errorf("BlockName(%s) = %q is not a valid resource name", in, got)
		}
	}
}

const blockDoc = `apiVersion: calyx.io/v1
kind: IPAMBlock
metadata:
  name: 10-65-1-0-26
spec:
  cidr: 10.65.1.0/26
  pool: p
  node: host-a
  allocations:
    10.65.1.5: wa
    10.65.1.6: wb
`

func TestDecodeIPAMBlock(t *testing.T) {
	got := decodeOne(t, blockDoc)
	want := block("10.65.1.0/26", "p", "host-a", "10.65.1.5", "wa", "10.65.1.6", "wb")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	// The encoded form is the document (keys sorted by the encoder).
	var b strings.Builder
	if err := Encode(&b, got); err != nil {
		t.Fatal(err)
	}
	if b.String() != blockDoc {
		t.Errorf("Encode:\n%s\nwant\n%s", b.String(), blockDoc)
	}
	js, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	wantJSON := `{"apiVersion":"calyx.io/v1","kind":"IPAMBlock","metadata":{"name":"10-65-1-0-26"},"spec":{"cidr":"10.65.1.0/26","pool":"p","node":"host-a","allocations":{"10.65.1.5":"wa","10.65.1.6":"wb"}}}`
	if string(js) != wantJSON {
		t.Errorf("JSON:\n%s\nwant\n%s", js, wantJSON)
	}
	var back IPAMBlock
	if err := json.Unmarshal(js, &back); err != nil || !reflect.DeepEqual(&back, want) {
		t.Errorf("JSON round trip: %+v %v", back, err)
	}

	// No allocations: written as {}, read back as nil.
	empty := block("10.65.1.64/26", "p", "host-a")
	js, _ = json.Marshal(empty)
	if !strings.Contains(string(js), `"allocations":{}`) {
		t.Errorf("empty allocations: %s", js)
	}
	var eb IPAMBlock
	if err := json.Unmarshal(js, &eb); err != nil || !reflect.DeepEqual(&eb, empty) {
		t.Errorf("empty round trip: %+v %v", eb, err)
	}
	// IPv6 addresses as keys survive YAML, colons and all.
	v6 := block("fd00::/122", "p6", "host-a", "fd00::", "wa", "fd00::3f", "wb", "fd00::1", "wc")
	b.Reset()
	if err := Encode(&b, v6); err != nil {
		t.Fatal(err)
	}
	if back := decodeOne(t, b.String()); !reflect.DeepEqual(back, v6) {
		t.Errorf("IPv6 round trip:\n%s\ngave %+v", b.String(), back)
	}

	for _, k := range []string{"ipamblock", "IPAMBlocks"} {
		if got, err := ParseKind(k); err != nil || got != KindIPAMBlock {
			t.Errorf("ParseKind(%q) = %q, %v", k, got, err)
		}
	}
}

func TestDecodeIPAMBlockErrors(t *testing.T) {
	head := "apiVersion: calyx.io/v1\nkind: IPAMBlock\nmetadata: {name: 10-65-1-0-26}\n"
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"name does not match cidr", "apiVersion: calyx.io/v1\nkind: IPAMBlock\nmetadata: {name: blk}\nspec: {cidr: 10.65.1.0/26, pool: p, node: n}",
			[]string{`document 1 (IPAMBlock/blk): metadata.name: must be "10-65-1-0-26" for the block 10.65.1.0/26 (its cidr with '.', ':' and '/' written as '-'), got "blk"`}},
		{"host bits", head + "spec: {cidr: 10.65.1.1/26, pool: p, node: n}",
			[]string{`document 1 (IPAMBlock/10-65-1-0-26): spec.cidr: 10.65.1.1/26 has host bits set; did you mean 10.65.1.0/26?`}},
		{"bad cidr", head + "spec: {cidr: 10.65.1/26, pool: p, node: n}",
			[]string{`spec.cidr: "10.65.1/26" is not a valid CIDR`}},
		{"missing everything", head + "spec: {}",
			[]string{`spec.cidr: required`, `spec.pool: required (the IPPool the block was carved from)`, `spec.node: required (the node holding the block)`}},
		{"bad names", head + "spec: {cidr: 10.65.1.0/26, pool: P_1, node: Host}",
			[]string{`spec.pool: "P_1" is not a valid IPPool name`, `spec.node: "Host" is not a valid node name`}},
		{"allocation outside", head + "spec: {cidr: 10.65.1.0/26, pool: p, node: n, allocations: {10.65.1.64: wa}}",
			[]string{`document 1 (IPAMBlock/10-65-1-0-26): spec.allocations["10.65.1.64"]: 10.65.1.64 is outside the block 10.65.1.0/26`}},
		{"allocation not an address", head + "spec: {cidr: 10.65.1.0/26, pool: p, node: n, allocations: {10.65.1.500: wa}}",
			[]string{`spec.allocations["10.65.1.500"]: "10.65.1.500" is not a valid IP address`}},
		{"allocation not canonical", "apiVersion: calyx.io/v1\nkind: IPAMBlock\nmetadata: {name: fd00---122}\nspec: {cidr: 'fd00::/122', pool: p, node: n, allocations: {'FD00::1': wa}}",
			[]string{`spec.allocations["FD00::1"]: "FD00::1" is not in canonical form (write fd00::1)`}},
		{"empty handle", head + "spec: {cidr: 10.65.1.0/26, pool: p, node: n, allocations: {10.65.1.5: '', 10.65.1.6: ~}}",
			[]string{`spec.allocations["10.65.1.5"]: the handle must not be empty`, `spec.allocations["10.65.1.6"]: the handle must not be empty`}},
		{"handle not a string", head + "spec: {cidr: 10.65.1.0/26, pool: p, node: n, allocations: {10.65.1.5: [x]}}",
			[]string{`spec.allocations["10.65.1.5"]: must be a string, got a list`}},
		{"allocations not a mapping", head + "spec: {cidr: 10.65.1.0/26, pool: p, node: n, allocations: [10.65.1.5]}",
			[]string{`spec.allocations: must be a mapping, got a list`}},
		{"unknown field", head + "spec: {cidr: 10.65.1.0/26, pool: p, node: n, size: 64}",
			[]string{`spec.size: unknown field`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Decode(strings.NewReader(tt.doc))
			if err == nil {
				t.Fatalf("no error; decoded %v", rs)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%s\ndoes not contain\n%s", err, w)
				}
			}
		})
	}
}

func TestValidateIPAMBlockProgrammatic(t *testing.T) {
	b := block("10.65.1.0/26", "p", "n", "10.65.1.5", "wa")
	if err := Validate(b); err != nil {
		t.Fatal(err)
	}
	b.Spec.Allocations[netip.MustParseAddr("10.65.2.1")] = "wb"
	b.Spec.Allocations[netip.MustParseAddr("10.65.1.7")] = ""
	want := "IPAMBlock/10-65-1-0-26: spec.allocations[\"10.65.1.7\"]: the handle must not be empty\n" +
		"IPAMBlock/10-65-1-0-26: spec.allocations[\"10.65.2.1\"]: 10.65.2.1 is outside the block 10.65.1.0/26"
	if err := Validate(b); err == nil || err.Error() != want {
		t.Errorf("Validate:\n%v\nwant\n%s", err, want)
	}
	// deepCopy shares no map.
	c := deepCopy(b).(*IPAMBlock)
	c.Spec.Allocations[netip.MustParseAddr("10.65.1.9")] = "x"
	if len(b.Spec.Allocations) != 3 {
		t.Errorf("deepCopy shares the allocations map")
	}
}

func TestSnapshotValidateBlocks(t *testing.T) {
	tests := []struct {
		name string
		rs   []Resource
		want []string
	}{
		{"valid", []Resource{pool("p", "10.65.0.0/16"), block("10.65.1.0/26", "p", "gone-node", "10.65.1.5", "wa")}, nil},
		{"no pool", []Resource{block("10.65.1.0/26", "p", "n")},
			[]string{"IPAMBlock/10-65-1-0-26: spec.pool: IPPool/p does not exist"}},
		{"disabled pool", []Resource{pool("p", "10.65.0.0/16", disabled), block("10.65.1.0/26", "p", "n")},
			[]string{"IPAMBlock/10-65-1-0-26: spec.pool: IPPool/p is disabled"}},
		{"outside pool", []Resource{pool("p", "10.65.0.0/16"), block("10.66.1.0/26", "p", "n")},
			[]string{"IPAMBlock/10-66-1-0-26: spec.cidr: 10.66.1.0/26 is not inside IPPool/p (10.65.0.0/16)"}},
		{"larger than pool", []Resource{pool("p", "10.65.1.0/27", func(s *IPPoolSpec) { s.BlockSize = 28 }), block("10.65.1.0/26", "p", "n")},
			[]string{"IPAMBlock/10-65-1-0-26: spec.cidr: 10.65.1.0/26 is not inside IPPool/p (10.65.1.0/27)"}},
		{"wrong size", []Resource{pool("p", "10.65.0.0/16", func(s *IPPoolSpec) { s.BlockSize = 28 }), block("10.65.1.0/26", "p", "n")},
			[]string{"IPAMBlock/10-65-1-0-26: spec.cidr: 10.65.1.0/26 is a /26, but the blockSize of IPPool/p is 28"}},
		{"v6 block in v4 pool", []Resource{pool("p", "10.65.0.0/16"), block("fd00::/122", "p", "n")},
			[]string{"IPAMBlock/fd00---122: spec.cidr: fd00::/122 is not inside IPPool/p (10.65.0.0/16)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := snapshotOf(tt.rs...).Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || err.Error() != strings.Join(tt.want, "\n") {
				t.Fatalf("Validate:\n%v\nwant\n%s", err, strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestSnapshotBlocks(t *testing.T) {
	b := block("10.65.1.0/26", "p", "n")
	s := NewSnapshot()
	s.Put(b)
	if r, ok := s.Get(RefOf(b)); !ok || r != b {
		t.Fatalf("Get: %v %v", r, ok)
	}
	c := s.Clone()
	if got := c.Resources("ipamblocks"); len(got) != 1 || got[0] != b {
		t.Fatalf("Resources: %v", got)
	}
	if all := s.Resources(""); all[len(all)-1] != b {
		t.Errorf("blocks are not listed last: %v", all)
	}
	if !s.Remove(RefOf(b)) || s.Remove(RefOf(b)) || len(c.Blocks) != 1 {
		t.Errorf("Remove: %v, clone %v", s.Blocks, c.Blocks)
	}
	var zero Snapshot
	zero.Put(b)
	if zero.Blocks[b.Metadata.Name] != b {
		t.Errorf("Put on a zero Snapshot")
	}
}

// A block holds its pool: the pool cannot be deleted, disabled or resized
// under it, in either store.
func TestStoreBlocksHoldTheirPool(t *testing.T) {
	forEachStore(t, func(t *testing.T, ds testStore) {
		ctx := context.Background()
		b := block("10.65.1.0/26", "p", "n1", "10.65.1.5", "wa")
		if err := ds.Apply(ctx, []Resource{pool("p", "10.65.0.0/16"), b}); err != nil {
			t.Fatal(err)
		}
		s, err := ds.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(s.Blocks[b.Metadata.Name], b) {
			t.Fatalf("stored block %+v, want %+v", s.Blocks[b.Metadata.Name], b)
		}
		err = ds.Delete(ctx, []Ref{{KindIPPool, "p"}})
		if err == nil || err.Error() != "IPAMBlock/10-65-1-0-26: spec.pool: IPPool/p does not exist" {
			t.Errorf("deleting the pool: %v", err)
		}
		err = ds.Apply(ctx, []Resource{pool("p", "10.65.0.0/16", disabled)})
		if err == nil || err.Error() != "IPAMBlock/10-65-1-0-26: spec.pool: IPPool/p is disabled" {
			t.Errorf("disabling the pool: %v", err)
		}
		err = ds.Apply(ctx, []Resource{pool("p", "10.65.0.0/16", func(s *IPPoolSpec) { s.BlockSize = 28 })})
		if err == nil || !strings.Contains(err.Error(), "but the blockSize of IPPool/p is 28") {
			t.Errorf("resizing the pool's blocks: %v", err)
		}
		if err := ds.Delete(ctx, []Ref{{KindIPAMBlock, b.Metadata.Name}, {KindIPPool, "p"}}); err != nil {
			t.Errorf("deleting block and pool together: %v", err)
		}
	})
}
