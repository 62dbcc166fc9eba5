package agent

import (
	"context"
	"net/netip"
	"sort"

	"github.com/calyxnet/calyx/agent/calc"
	"github.com/calyxnet/calyx/agent/metadataproxy"
	"github.com/calyxnet/calyx/model"
)

// metadataPort is the port of the metadata service, IPv4 and IPv6 alike.
const metadataPort = 80

// startMetadataProxy starts the IPv6 metadata proxy (with no listeners:
// each reconcile says which interfaces to serve) and closes it when ctx
// ends.
func (a *Agent) startMetadataProxy(ctx context.Context) {
	a.metadata = metadataproxy.New(metadataproxy.Options{
		Listen: netip.AddrPortFrom(calc.V6Metadata, metadataPort), Logger: a.log})
	a.metrics.reg.MustRegister(a.metadata.Collectors()...)
	go func() {
		<-ctx.Done()
		a.metadata.Close()
	}()
}

// updateMetadataProxy has the proxy listen on every programmed local
// endpoint interface, after the host's routes (the local route that makes
// the host accept fe80::a9fe:a9fe there) were synced.
func (a *Agent) updateMetadataProxy(d *calc.Desired) {
	if a.metadata == nil {
		return
	}
	a.metadata.Update(d.MetadataUpstream, metadataEndpoints(a.snap, d, a.attachFailedOn))
}

// metadataEndpoints lists the local endpoint interfaces d attaches, with the
// address the proxy vouches for on each; an interface whose attach failed
// (down) is left out, as its local routes are.
func metadataEndpoints(s *model.Snapshot, d *calc.Desired, down func(ifindex int) bool) []metadataproxy.Endpoint {
	var out []metadataproxy.Endpoint
	for _, at := range d.Attach {
		if at.Underlay || down(at.Ifindex) {
			continue
		}
		ep, ok := s.Endpoints[at.Endpoint]
		if !ok {
			continue
		}
		out = append(out, metadataproxy.Endpoint{Name: at.Endpoint, Ifname: at.Ifname, Ifindex: at.Ifindex,
			Addr: metadataproxy.ForwardedAddr(ep.Spec.IPNetworks)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ifindex < out[j].Ifindex })
	return out
}
