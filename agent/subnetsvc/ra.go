package subnetsvc

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/calyxnet/calyx/agent/subnets"
)

// Router advertisement timing (RFC 4861 6.2.1, 10): the first
// raInitialCount advertisements on a new or changed interface go
// raInitialInterval apart (at most MAX_INITIAL_RTR_ADVERT_INTERVAL, 16 s),
// then one every raMinInterval..raMaxInterval at random. The router
// lifetime is six maximum intervals: the instance keeps its default route
// through half an hour of agent downtime (the agent does not withdraw it
// when it stops: state outlives the agent).
const (
	raInitialCount    = 3
	raInitialInterval = 10 * time.Second
	raMinInterval     = 100 * time.Second
	raMaxInterval     = 300 * time.Second
	routerLifetime    = 1800 * time.Second
	// raSolicitedGap: at most one solicited advertisement per interface
	// this often, so a flood of solicitations is not a flood of replies.
	// Clients retransmit after 4 s (RTR_SOLICITATION_INTERVAL).
	raSolicitedGap = 300 * time.Millisecond
	// raFirstJitter spreads the first advertisements of many interfaces
	// that appear at once (agent start with 1,000 endpoints).
	raFirstJitter = 500 * time.Millisecond
	// maxFinals bounds the router-lifetime-0 advertisements waiting for
	// Run, should Update be called without it.
	maxFinals = 4096
	// The advertised hop limit for the instance's own packets.
	raCurHopLimit = 64
	raFlagManaged = 0x80 // M: addresses by DHCPv6
	raFlagOther   = 0x40 // O: other configuration by DHCPv6
)

var (
	allNodes = net.ParseIP("ff02::1")
	// allRouters and allDHCP are where solicitations and DHCPv6 requests
	// go; fe80::1 is the gateway's own address.
	allRouters = net.ParseIP("ff02::2")
	allDHCP    = net.ParseIP("ff02::1:2")
	gatewayV6  = net.IP(subnets.V6Gateway.AsSlice())
)

// buildRA is a router advertisement from fe80::1 and srcMAC to dst: the
// instance's default route is the local host (router lifetime), addresses
// and other configuration come from DHCPv6 (M and O), the prefix is
// neither on-link nor for SLAAC (the host routes everything, DHCPv6
// assigns the address), and the MTU and DNS servers go with it. Lifetime
// 0 withdraws the router, the prefix and the DNS servers.
func buildRA(srcMAC, dstMAC net.HardwareAddr, dst net.IP, c *v6conf, lifetime time.Duration) ([]byte, error) {
	secs := uint32(lifetime / time.Second)
	var opts layers.ICMPv6Options
	opts = append(opts, layers.ICMPv6Option{Type: layers.ICMPv6OptSourceAddress, Data: []byte(srcMAC)})
	// IPv6 links carry at least 1280 bytes: a smaller MTU is not said
	// rather than said wrong (hosts ignore it anyway).
	if mtu := c.lease.MTU; mtu >= 1280 {
		d := make([]byte, 6)
		binary.BigEndian.PutUint32(d[2:], uint32(mtu))
		opts = append(opts, layers.ICMPv6Option{Type: layers.ICMPv6OptMTU, Data: d})
	}
	if p := c.lease.Prefix.Masked(); p.IsValid() && p.Addr().Is6() && !p.Addr().Is4In6() {
		d := make([]byte, 30)
		d[0] = byte(p.Bits())
		d[1] = 0 // L=0, A=0
		valid := uint32(0)
		if lifetime > 0 {
			valid = uint32(min(c.dur/time.Second, 0xfffffffe))
		}
		binary.BigEndian.PutUint32(d[2:], valid)
		binary.BigEndian.PutUint32(d[6:], valid)
		a := p.Addr().As16()
		copy(d[14:], a[:])
		opts = append(opts, layers.ICMPv6Option{Type: layers.ICMPv6OptPrefixInfo, Data: d})
	}
	if len(c.dns) > 0 {
		d := make([]byte, 6, 6+16*len(c.dns))
		binary.BigEndian.PutUint32(d[2:], secs)
		for _, s := range c.dns {
			d = append(d, s.To16()...)
		}
		opts = append(opts, layers.ICMPv6Option{Type: layers.ICMPv6OptRecursiveDNSServer, Data: d})
	}
	// gopacket prepends options one by one: reversed here, they go on the
	// wire in the order above.
	for i, j := 0, len(opts)-1; i < j; i, j = i+1, j-1 {
		opts[i], opts[j] = opts[j], opts[i]
	}
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6, SrcIP: gatewayV6, DstIP: dst}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeRouterAdvertisement, 0)}
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		return nil, err
	}
	ra := &layers.ICMPv6RouterAdvertisement{
		HopLimit:       raCurHopLimit,
		Flags:          raFlagManaged | raFlagOther,
		RouterLifetime: uint16(secs),
		Options:        opts,
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, serializeOpts, eth, ip, icmp, ra); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// raScheduler says when each IPv6 interface gets its next periodic
// advertisement, keeps the withdrawals of interfaces whose service went,
// and rate-limits solicited advertisements.
type raScheduler struct {
	mu     sync.Mutex
	states map[int]*raState
	finals []outFrame
	wake   chan struct{}
	rnd    *rand.Rand
}

type raState struct {
	v6            *v6conf
	hostMAC       net.HardwareAddr
	next          time.Time
	initLeft      int
	lastSolicited time.Time
}

type outFrame struct {
	frame []byte
	idx   int
}

func newRAScheduler() *raScheduler {
	return &raScheduler{states: map[int]*raState{}, wake: make(chan struct{}, 1), rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
}

// update follows a new table: new or changed IPv6 interfaces start over
// with their initial advertisements, interfaces whose IPv6 service went
// get one with router lifetime 0.
func (r *raScheduler) update(t *table, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for idx, ifc := range t.byIndex {
		if ifc.v6 == nil {
			continue
		}
		st := r.states[idx]
		if st != nil && string(st.v6.ra) == string(ifc.v6.ra) {
			st.v6 = ifc.v6
			continue
		}
		if st == nil {
			st = &raState{}
			r.states[idx] = st
		}
		// RFC 4861 6.2.4: changed information is advertised again as if
		// the interface were new.
		st.v6, st.hostMAC = ifc.v6, ifc.svc.HostMAC
		st.initLeft = raInitialCount
		st.next = now.Add(time.Duration(r.rnd.Int64N(int64(raFirstJitter))))
	}
	for idx, st := range r.states {
		if ifc := t.byIndex[idx]; ifc != nil && ifc.v6 != nil {
			continue
		}
		delete(r.states, idx)
		if f, err := buildRA(st.hostMAC, multicastMAC(allNodes), allNodes, st.v6, 0); err == nil && len(r.finals) < maxFinals {
			r.finals = append(r.finals, outFrame{frame: f, idx: idx})
		}
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// take returns the withdrawals waiting and the advertisements due at now,
// reschedules those, and says when the next one is due (zero: none).
func (r *raScheduler) take(now time.Time) (finals, due []outFrame, next time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	finals, r.finals = r.finals, nil
	for idx, st := range r.states {
		if !st.next.After(now) {
			due = append(due, outFrame{frame: st.v6.ra, idx: idx})
			if st.initLeft > 0 {
				st.initLeft--
			}
			if st.initLeft > 0 {
				st.next = now.Add(raInitialInterval)
			} else {
				st.next = now.Add(raMinInterval + time.Duration(r.rnd.Int64N(int64(raMaxInterval-raMinInterval))))
			}
		}
		if next.IsZero() || st.next.Before(next) {
			next = st.next
		}
	}
	return finals, due, next
}

// solicit says whether interface idx may answer a solicitation at now,
// and if so records it.
func (r *raScheduler) solicit(idx int, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.states[idx]
	if st == nil {
		return true // not scheduled yet (Update raced): answer anyway
	}
	if !st.lastSolicited.IsZero() && now.Sub(st.lastSolicited) < raSolicitedGap {
		return false
	}
	st.lastSolicited = now
	return true
}

// handleRS answers a router solicitation from the endpoint: unicast to
// its link-local address and MAC, or to ff02::1 when it has no address
// yet (source ::).
func (s *Server) handleRS(ifc *iface, eth *layers.Ethernet, ip *layers.IPv6, icmp *layers.ICMPv6, rs *layers.ICMPv6RouterSolicitation, now time.Time) [][]byte {
	ignore := func(reason string) [][]byte {
		s.m.ignore("v6", reason)
		s.m.rss.WithLabelValues("ignored").Inc()
		return nil
	}
	if ifc == nil {
		return ignore(reasonNotEndpoint)
	}
	if ifc.v6 == nil {
		return ignore(reasonNoLease)
	}
	// RFC 4861 6.1.1: hop limit 255 proves it came from the link.
	if ip.HopLimit != 255 || icmp.TypeCode.Code() != 0 {
		return ignore(reasonMalformed)
	}
	if string(eth.SrcMAC) != string(ifc.svc.MAC) {
		return ignore(reasonWrongMAC)
	}
	unspecified := ip.SrcIP.IsUnspecified()
	if unspecified {
		for _, o := range rs.Options {
			if o.Type == layers.ICMPv6OptSourceAddress {
				return ignore(reasonMalformed)
			}
		}
	}
	if !ip.DstIP.Equal(allRouters) && !ip.DstIP.Equal(gatewayV6) {
		return ignore(reasonNotForUs)
	}
	if !s.ra.solicit(ifc.idx, now) {
		s.m.rss.WithLabelValues("rate_limited").Inc()
		return nil
	}
	frame := ifc.v6.ra
	if !unspecified {
		f, err := buildRA(ifc.svc.HostMAC, eth.SrcMAC, ip.SrcIP, ifc.v6, routerLifetime)
		if err != nil {
			s.log.Warn("router advertisement does not build", "interface", ifc.svc.Ifname, "err", err)
			return nil
		}
		frame = f
	}
	s.m.rss.WithLabelValues("answered").Inc()
	s.m.ras.WithLabelValues("solicited").Inc()
	return [][]byte{frame}
}
