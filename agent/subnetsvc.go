package agent

import (
	"context"
	"net"
	"time"

	"github.com/calyxnet/calyx/agent/calc"
	"github.com/calyxnet/calyx/agent/host"
	"github.com/calyxnet/calyx/agent/subnets"
	"github.com/calyxnet/calyx/agent/subnetsvc"
	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
)

// startSubnetServices opens the DHCPv4, DHCPv6 and router advertisement
// server of every local endpoint interface and runs it until ctx ends. A
// server that cannot start (no CAP_NET_RAW) costs the instances their
// automatic configuration, never the dataplane: it is logged and the agent
// goes on without it.
func (a *Agent) startSubnetServices(ctx context.Context) {
	srv, err := subnetsvc.New(a.log, a.recordLease)
	if err != nil {
		a.log.Error("subnet services (DHCP, router advertisements) unavailable", "err", err)
		return
	}
	a.metrics.reg.MustRegister(srv.Collectors()...)
	a.svc = srv
	go func() {
		if err := srv.Run(ctx); err != nil {
			a.log.Error("subnet services stopped", "err", err)
		}
	}()
	a.sinkDHCPPort(ctx)
}

// sinkDHCPPort holds UDP port 67 and discards what arrives: a renewal is
// unicast to the gateway IP, which the host answers to (a local route), and
// the packet socket has answered it already; without a socket on the port
// the stack would also send the instance a port-unreachable. Another DHCP
// server on the host holding the port (which it must not) is only logged.
func (a *Agent) sinkDHCPPort(ctx context.Context) {
	c, err := net.ListenPacket("udp4", ":67")
	if err != nil {
		a.log.Warn("UDP port 67 is taken: is another DHCP server running on this host?", "err", err)
		return
	}
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
}

// updateSubnetServices tells the server what every local endpoint
// interface is to be told now, and forgets the leases of interfaces and
// addresses it no longer serves.
func (a *Agent) updateSubnetServices(links map[string]host.Interface, d *calc.Desired) {
	if a.svc == nil {
		return
	}
	svcs := subnets.Compute(a.snap, a.cfg.Node, a.underlay, links, d.WorkloadMTU)
	a.svc.Update(svcs)
	leases, err := a.dp.Maps.Leases()
	if err != nil {
		a.log.Warn("read DHCP leases", "err", err)
		return
	}
	for _, l := range leases {
		s, ok := svcs[int(l.Ifindex)]
		lease := s.V4
		if l.Family() == 6 {
			lease = s.V6
		}
		if ok && lease != nil && lease.Addr == l.Addr {
			continue
		}
		if err := a.dp.Maps.DeleteLease(l.Ifindex, l.Family()); err != nil {
			a.log.Warn("forget DHCP lease", "ifindex", l.Ifindex, "address", l.Addr, "err", err)
		}
	}
}

// recordLease keeps what the server granted (or took back) in cx_leases
// for calyxctl dhcp leases. Called on the server's reading goroutine.
func (a *Agent) recordLease(r subnets.LeaseRecord) {
	l := bpfmap.Lease{Ifindex: uint32(r.Ifindex), Addr: r.Addr, MAC: bpfmap.MACFrom(r.MAC),
		EndpointID: model.EndpointID(r.Endpoint), Expires: r.Expires, LastSeen: r.LastSeen}
	var err error
	if r.Released {
		err = a.dp.Maps.DeleteLease(l.Ifindex, l.Family())
	} else {
		err = a.dp.Maps.PutLease(l)
	}
	if err != nil {
		a.log.Warn("record DHCP lease", "endpoint", r.Endpoint, "address", r.Addr, "err", err)
		return
	}
	a.log.Debug("DHCP lease", "endpoint", r.Endpoint, "address", r.Addr, "mac", r.MAC, "released", r.Released,
		"expires", r.Expires.Format(time.RFC3339))
}
