// Package subnetsvc answers the subnet services an instance asks its first
// hop for: DHCPv4, IPv6 router advertisements and DHCPv6, on every local
// endpoint interface, from the subnet's gateway IP (fe80::1 for IPv6) and
// the host side's MAC, for the endpoint's own MAC only.
//
// One Server serves every interface through two packet sockets (one per
// family), whatever the number of interfaces or networks: a request is
// matched to its endpoint by the ifindex it came in on. The DHCP wire
// format is github.com/insomniacslk/dhcp's; the Ethernet/IP/UDP/ICMPv6
// headers around it are gopacket's. What each interface gets comes from
// the agent as a subnets.Service per ifindex (Update); the server keeps no
// state of its own but the router advertisement schedule: a lease is the
// endpoint's fixed address, so any host's server answers any request the
// same way.
package subnetsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/agent/pktsock"
	"github.com/calyxnet/calyx/agent/subnets"
)

// ServerDUID is the DHCPv6 server identifier of every calyx host: the
// gateway stands for the local host on every host, so its DUID is the same
// everywhere and a Renew after a live migration names the new host's
// server too. A DUID-LL of a fixed locally administered MAC.
var ServerDUID = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{0x02, 0xca, 0x1c, 0x00, 0x00, 0x01}}

// Server is the DHCPv4, DHCPv6 and router advertisement server of every
// local endpoint interface. Its methods are safe for concurrent use.
type Server struct {
	log     *slog.Logger
	onLease func(subnets.LeaseRecord)
	m       *metrics
	now     func() time.Time

	table atomic.Pointer[table]
	updMu sync.Mutex // one Update at a time
	ra    *raScheduler

	v4, v6    *pktsock.Conn
	closeOnce sync.Once
	running   atomic.Bool
}

// New opens the server's two packet sockets (IPv4 UDP to port 67; IPv6 UDP
// to port 547 and router solicitations) in the network namespace of the
// calling thread, serving nothing until Update says what. onLease (may be
// nil) is called, on the reading goroutine, for every lease granted
// (DHCPACK, DHCPv6 Reply with an address) and every lease given back
// (Released set); it must not block. New fails when a socket cannot be
// opened: without CAP_NET_RAW, the error wraps EPERM.
func New(log *slog.Logger, onLease func(subnets.LeaseRecord)) (*Server, error) {
	s := newServer(log, onLease)
	v4, err := pktsock.Listen(unix.ETH_P_IP, v4Filter)
	if err != nil {
		return nil, fmt.Errorf("subnet services: %w", err)
	}
	v6, err := pktsock.Listen(unix.ETH_P_IPV6, v6Filter)
	if err != nil {
		v4.Close()
		return nil, fmt.Errorf("subnet services: %w", err)
	}
	s.v4, s.v6 = v4, v6
	return s, nil
}

// newServer is a Server without sockets: the tests feed frames to its
// handlers.
func newServer(log *slog.Logger, onLease func(subnets.LeaseRecord)) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if onLease == nil {
		onLease = func(subnets.LeaseRecord) {}
	}
	s := &Server{log: log, onLease: onLease, m: newMetrics(), now: time.Now, ra: newRAScheduler()}
	s.table.Store(&table{byIndex: map[int]*iface{}})
	return s
}

// Update makes services (by ifindex: the full current set, not a change)
// what the server answers. An interface absent from it, or whose Service
// has no V4 (V6) lease, is not answered in that family; an interface whose
// IPv6 service goes gets one router advertisement with router lifetime 0.
// Unchanged services cost one comparison each and no allocation, so it can
// be called on every reconcile. It keeps no reference to services or its
// slices. A lease it cannot serve (an IPv4 gateway outside the prefix, a MAC
// that is not an Ethernet address) is logged and not served.
func (s *Server) Update(services map[int]subnets.Service) {
	s.updMu.Lock()
	defer s.updMu.Unlock()
	old := s.table.Load()
	if len(old.byIndex) == len(services) {
		same := true
		for idx, svc := range services {
			if o := old.byIndex[idx]; o == nil || !sameService(o.svc, svc) {
				same = false
				break
			}
		}
		if same {
			return
		}
	}
	nt := &table{byIndex: make(map[int]*iface, len(services))}
	var n4, n6 int
	for idx, svc := range services {
		ifc := old.byIndex[idx]
		if ifc == nil || !sameService(ifc.svc, svc) {
			ifc = newIface(s.log, idx, svc)
		}
		nt.byIndex[idx] = ifc
		if ifc.v4 != nil {
			n4++
		}
		if ifc.v6 != nil {
			n6++
		}
	}
	s.table.Store(nt)
	s.ra.update(nt, s.now())
	s.m.interfaces.WithLabelValues("v4").Set(float64(n4))
	s.m.interfaces.WithLabelValues("v6").Set(float64(n6))
}

// Run serves until ctx ends, then closes the sockets and returns nil. It
// reads both sockets and sends the periodic router advertisements; read
// errors other than the socket's closing are logged and retried. It may
// be called once; it fails at once on a second call.
func (s *Server) Run(ctx context.Context) error {
	if s.v4 == nil || s.v6 == nil {
		return errors.New("subnet services: Run on a Server without sockets")
	}
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("subnet services: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); s.serve(ctx, s.v4, "v4", s.handleV4) }()
	go func() { defer wg.Done(); s.serve(ctx, s.v6, "v6", s.handleV6) }()
	go func() { defer wg.Done(); s.advertise(ctx) }()
	<-ctx.Done()
	s.Close()
	wg.Wait()
	return nil
}

// Close closes the sockets (Run does it when it returns); for a Server
// that never ran. Later calls do nothing and return nil.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.v4 != nil {
			err = errors.Join(s.v4.Close(), s.v6.Close())
		}
	})
	return err
}

// Collectors are the server's Prometheus metrics, for the agent's
// registry.
func (s *Server) Collectors() []prometheus.Collector { return s.m.collectors() }

// serve reads one socket and answers on the interface each request came
// in on.
func (s *Server) serve(ctx context.Context, c *pktsock.Conn, fam string, handle func(int, []byte, time.Time) [][]byte) {
	buf := make([]byte, 1<<16)
	for {
		n, idx, err := c.ReadFrom(buf)
		if err != nil {
			switch {
			case ctx.Err() != nil || errors.Is(err, os.ErrClosed):
				return
			case errors.Is(err, pktsock.ErrTruncated):
				s.m.ignore(fam, reasonMalformed)
				continue
			}
			s.log.Warn("subnet services: read failed; retrying", "family", fam, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		for _, f := range s.safeHandle(handle, fam, idx, buf[:n]) {
			s.send(c, fam, f, idx)
		}
	}
}

// safeHandle is the last line of defence: a request that makes a handler
// panic is counted as malformed, and the server goes on.
func (s *Server) safeHandle(handle func(int, []byte, time.Time) [][]byte, fam string, idx int, frame []byte) (out [][]byte) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("subnet services: handler panicked on a request; ignored", "family", fam, "ifindex", idx, "panic", r)
			s.m.ignore(fam, reasonMalformed)
			out = nil
		}
	}()
	return handle(idx, frame, s.now())
}

func (s *Server) send(c *pktsock.Conn, fam string, frame []byte, idx int) {
	if err := c.WriteTo(frame, idx); err != nil {
		s.m.sendErrors.WithLabelValues(fam).Inc()
		s.log.Debug("subnet services: send failed", "family", fam, "ifindex", idx, "err", err)
	}
}

// advertise sends the periodic router advertisements and the withdrawals.
func (s *Server) advertise(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := s.now()
		finals, due, next := s.ra.take(now)
		for _, f := range finals {
			s.send(s.v6, "v6", f.frame, f.idx)
			s.m.ras.WithLabelValues("final").Inc()
		}
		for _, f := range due {
			s.send(s.v6, "v6", f.frame, f.idx)
			s.m.ras.WithLabelValues("periodic").Inc()
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(now), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.ra.wake:
		case <-timer.C:
		}
	}
}

// handleV6 takes an IPv6 frame from interface idx: a router solicitation
// or a DHCPv6 request.
func (s *Server) handleV6(idx int, frame []byte, now time.Time) [][]byte {
	var (
		eth  layers.Ethernet
		ip   layers.IPv6
		udp  layers.UDP
		icmp layers.ICMPv6
		rs   layers.ICMPv6RouterSolicitation
	)
	p := gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet, &eth, &ip, &udp, &icmp, &rs)
	p.IgnoreUnsupported = true
	decoded := make([]gopacket.LayerType, 0, 4)
	if err := p.DecodeLayers(frame, &decoded); err != nil || len(decoded) < 3 || decoded[1] != layers.LayerTypeIPv6 {
		s.m.ignore("v6", reasonMalformed)
		return nil
	}
	ifc := s.table.Load().byIndex[idx]
	switch decoded[len(decoded)-1] {
	case layers.LayerTypeICMPv6RouterSolicitation:
		return s.handleRS(ifc, &eth, &ip, &icmp, &rs, now)
	case layers.LayerTypeUDP:
		return s.handleDHCPv6(ifc, &eth, &ip, &udp, now)
	}
	s.m.ignore("v6", reasonUnsupported)
	return nil
}
