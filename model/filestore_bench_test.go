package model

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
)

// BenchmarkFileStoreApplyOne10k times one endpoint written to a file store
// that holds bench10k's model: the write a single change pays before any
// agent sees it.
func BenchmarkFileStoreApplyOne10k(b *testing.B) {
	f, _ := benchStore(b)
	ctx := context.Background()
	for i := range b.N {
		ep := &WorkloadEndpoint{Metadata: Metadata{Name: fmt.Sprintf("ep-bench-%d", i)}, Spec: WorkloadEndpointSpec{
			Node: "node-7", Interface: fmt.Sprintf("tapb%d", i), IPNetworks: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 64, 220 + byte(i>>8), byte(i)}), 32)},
		}}
		if err := f.Apply(ctx, []Resource{ep}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFileStoreApplyPolicy10k times one policy's rule changed in a
// file store holding bench10k's model.
func BenchmarkFileStoreApplyPolicy10k(b *testing.B) {
	f, s := benchStore(b)
	ctx := context.Background()
	for i := range b.N {
		p := deepCopy(s.Policies[fmt.Sprintf("policy-%d", i%1000)]).(*NetworkPolicy)
		p.Spec.Ingress[0].Destination.Ports = []PortRange{{First: uint16(1000 + i), Last: uint16(1000 + i)}}
		if err := f.Apply(ctx, []Resource{p}); err != nil {
			b.Fatal(err)
		}
	}
}

// benchStore is a file store holding bench10k's model, and that model.
func benchStore(b *testing.B) (*FileStore, *Snapshot) {
	f, err := OpenFile(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	var all []Resource
	s := bench10k()
	for _, k := range kindOrder {
		all = append(all, s.Resources(k)...)
	}
	if err := f.Apply(context.Background(), all); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	return f, s
}
