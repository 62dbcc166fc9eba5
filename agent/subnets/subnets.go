// Package subnets says what the host's subnet services (DHCPv4, router
// advertisements, DHCPv6) tell each local endpoint interface: the
// endpoint's own address in the most specific Subnet that contains it, the
// subnet's gateway IP (which stands for the local host on every host), DNS
// servers, host routes and the workload MTU. It is pure: the agent computes
// it from the model and the host's interfaces, and hands it to the servers.
package subnets

import (
	"net"
	"net/netip"
	"time"

	"github.com/calyxnet/calyx/agent/calc"
)

// Service is what the subnet services answer on one local endpoint
// interface. Only the endpoint's own MAC is ever answered.
type Service struct {
	// Endpoint is the WorkloadEndpoint's name.
	Endpoint string
	// Ifname and Ifindex are the host side of the endpoint's interface.
	Ifname  string
	Ifindex int
	// HostMAC is the host side's MAC: the source of every reply.
	HostMAC net.HardwareAddr
	// MAC is the endpoint's MAC (spec.mac): the only client answered.
	MAC net.HardwareAddr
	// V4 is the DHCPv4 lease, nil when the endpoint has no IPv4 address in
	// a Subnet with DHCP enabled. V6 is the DHCPv6 lease and the router
	// advertisement, nil likewise for IPv6.
	V4, V6 *Lease
}

// Lease is one address an endpoint is given, with everything that goes
// with it.
type Lease struct {
	// Addr is the endpoint's address; Prefix is its Subnet's CIDR (the
	// mask, or the advertised prefix).
	Addr   netip.Addr
	Prefix netip.Prefix
	// Gateway is the Subnet's gatewayIP: router, server identifier and the
	// source of every reply (IPv4). IPv6 replies come from the host side's
	// link-local gateway (fe80::1).
	Gateway netip.Addr
	// DNS are the Subnet's dnsNameservers.
	DNS []netip.Addr
	// Routes are the Subnet's hostRoutes; their Via is Gateway. The default
	// route is not among them.
	Routes []Route
	// MTU is the workload MTU for the encapsulations in use (option 26,
	// the RA's MTU option); 0: not said.
	MTU int
	// Duration is the lease time (leaseSeconds).
	Duration time.Duration
	// Subnet and Network name the Subnet resource and its network.
	Subnet, Network string
}

// Route is a host route: Dst via Via.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

// V6Gateway is the IPv6 address every workload's gateway has (see
// calc.V6Gateway): router advertisements and DHCPv6 replies come from it.
var V6Gateway = calc.V6Gateway

// LeaseRecord is what a server granted (or took back) on an interface: the
// agent records it for calyxctl dhcp leases.
type LeaseRecord struct {
	Endpoint string
	Ifindex  int
	MAC      net.HardwareAddr // the client's
	Addr     netip.Addr
	// Expires is when the lease ends; LastSeen is the client's last
	// message.
	Expires, LastSeen time.Time
	// Released says the client gave the address back (DHCPRELEASE,
	// DHCPDECLINE, DHCPv6 Release/Decline): the record goes.
	Released bool
}
