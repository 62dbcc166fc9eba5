package bench

import (
	"bytes"
	"strings"
	"testing"

	"github.com/calyxnet/calyx/agent/calc"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
)

// The etcd section's model is valid, reads back as written, and calc
// routes it as the section's checks expect: one route per remote block,
// no remote /32.
func TestEtcdModel(t *testing.T) {
	p := etcdParamsFor(true)
	rs := etcdModel(p)
	ops, _, err := etcdOps(rs)
	if err != nil {
		t.Fatal(err)
	}
	// Every resource, and an index entry per block.
	if want := 2 + p.nodes + 2*(p.nodes+1) + p.nodes*p.perNode + p.local; len(ops) != want {
		t.Fatalf("%d keys, want %d", len(ops), want)
	}
	keys := map[string]bool{}
	s := model.NewSnapshot()
	i := 0 // the resource ops[j] holds
	for _, op := range ops {
		k := string(op.KeyBytes())
		if keys[k] {
			t.Fatalf("key %s twice", k)
		}
		keys[k] = true
		if strings.HasPrefix(k, model.DefaultEtcdPrefix+"/affinity/") {
			b, ok := rs[i-1].(*model.IPAMBlock)
			if !ok || k != model.DefaultEtcdPrefix+"/affinity/"+b.Spec.Node+"/"+b.Metadata.Name {
				t.Fatalf("index entry %s after %s", k, model.RefOf(rs[i-1]))
			}
			continue
		}
		back, err := model.Decode(bytes.NewReader(op.ValueBytes()))
		if err != nil || len(back) != 1 || model.RefOf(back[0]) != model.RefOf(rs[i]) || etcdKey(back[0]) != k {
			t.Fatalf("%s does not read back: %v %v", k, back, err)
		}
		if !strings.HasPrefix(k, model.DefaultEtcdPrefix+"/resources/") {
			t.Fatalf("key %s", k)
		}
		s.Put(back[0])
		i++
	}
	for k := range p.changes {
		ep, _ := etcdExtraEndpoint(p, k)
		blk, _ := etcdClaim(p, k)
		if _, _, err := etcdOps([]model.Resource{ep, blk}); err != nil {
			t.Fatal(err)
		}
		s.Put(ep)
		s.Put(blk)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	d := calc.Compute(calc.Input{Snapshot: s, Node: "local"})
	var blocks, remote32, nodes int
	for pfx, r := range d.Routes {
		switch {
		case r.Type == bpfmap.RouteRemoteWorkload && pfx.Bits() == etcdBlockSize:
			blocks++
		case r.Type == bpfmap.RouteRemoteWorkload:
			remote32++
		case r.Type == bpfmap.RouteNode:
			nodes++
		}
	}
	if blocks != p.nodes+p.changes || remote32 != p.changes || nodes != p.nodes {
		t.Fatalf("calc routes %d blocks, %d remote /32, %d nodes; want %d, %d, %d", blocks, remote32, nodes, p.nodes+p.changes, p.changes, p.nodes)
	}
}
