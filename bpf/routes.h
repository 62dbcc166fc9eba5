/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* What an address is: its route (cx_routes), its policy identity
 * (cx_ipcache), its floating IP (cx_fips), whether it is this host's to
 * send from; and the node's settings (cx_config). */
#ifndef CALYX_ROUTES_H
#define CALYX_ROUTES_H

#include "maps.h"
#include "parse.h"

static __always_inline void cx_addr_v4(__u8 addr[16], __be32 ip)
{
	__builtin_memset(addr, 0, 10);
	addr[10] = 0xff;
	addr[11] = 0xff;
	__builtin_memcpy(&addr[12], &ip, 4);
}

static __always_inline struct cx_route *cx_route_v4(__be32 ip)
{
	struct cx_route_key key = { .prefixlen = CX_V4_PREFIX_BITS + 32 };

	cx_addr_v4(key.addr, ip);
	return bpf_map_lookup_elem(&cx_routes, &key);
}

/* CX_IP4 is the IPv4 address in a v4-mapped struct in6_addr (an lvalue). */
#define CX_IP4(a) ((a).in6_u.u6_addr32[3])

/* cx_is_v4mapped says whether a is ::ffff:a.b.c.d: how an IPv4 address is
 * kept in 16 bytes, never an IPv6 packet's (RFC 4291 2.5.5.2; Linux drops
 * them in ip6_rcv_core). */
static __always_inline int cx_is_v4mapped(const struct in6_addr *a)
{
	return (a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1]) == 0 && a->in6_u.u6_addr32[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int cx_addr_eq(const struct in6_addr *a, const struct in6_addr *b)
{
	return ((a->in6_u.u6_addr32[0] ^ b->in6_u.u6_addr32[0]) | (a->in6_u.u6_addr32[1] ^ b->in6_u.u6_addr32[1]) |
		(a->in6_u.u6_addr32[2] ^ b->in6_u.u6_addr32[2]) | (a->in6_u.u6_addr32[3] ^ b->in6_u.u6_addr32[3])) == 0;
}

/* cx_route_addr looks up an address of either family as the programs keep
 * it (IPv4 v4-mapped): callers that read an IPv6 header refuse v4-mapped
 * addresses first (cx_route_v6). */
static __always_inline struct cx_route *cx_route_addr(const struct in6_addr *a)
{
	struct cx_route_key key = { .prefixlen = 128 };

	__builtin_memcpy(key.addr, a, 16);
	return bpf_map_lookup_elem(&cx_routes, &key);
}

/* cx_dst remembers the route of a packet's destination for one run: a new
 * flow's path asks for it up to four times (policy, a floating IP's test,
 * natOutgoing's test, the delivery). It holds no address (the callers'
 * frames are full): it is always the route of the packet's tuple's
 * destination, and a translation forgets it (cx_nat_policed). */
struct cx_dst {
	struct cx_route *rt;
	int looked;
};

/* cx_dst_route is cx_route_addr(addr), looked up once per d (d NULL: every
 * time). addr is the packet's destination as its tuple holds it now. */
static __always_inline struct cx_route *cx_dst_route(struct cx_dst *d, const struct in6_addr *addr)
{
	if (!d)
		return cx_route_addr(addr);
	if (!d->looked) {
		d->rt = cx_route_addr(addr);
		d->looked = 1;
	}
	return d->rt;
}

/* cx_route_v6 looks up an IPv6 address. IPv4 routes live in the same trie
 * as ::ffff:a.b.c.d, so a v4-mapped address in an IPv6 header would match
 * them: an IPv6 packet from ::ffff:<its IPv4> would pass as the endpoint's
 * own, and one to ::ffff:<another workload's IPv4> would be delivered.
 * v4-mapped addresses never appear on the wire (RFC 4291 2.5.5.2; Linux drops
 * them in ip6_rcv_core), so they have no route here. */
static __always_inline struct cx_route *cx_route_v6(const struct in6_addr *ip)
{
	if (cx_is_v4mapped(ip))
		return NULL;
	return cx_route_addr(ip);
}

/* cx_owned_by says whether a route is the /32 (/128) of the endpoint on ifindex. */
static __always_inline int cx_owned_by(const struct cx_route *rt, __u32 ifindex)
{
	return rt && rt->type == CX_RT_LOCAL_WORKLOAD && rt->ifindex == ifindex;
}

static __always_inline __be32 cx_addr_ip4(const __u8 addr[16])
{
	__be32 ip;

	__builtin_memcpy(&ip, &addr[12], 4);
	return ip;
}

/* cx_identity_of is the policy identity of an address of either family
 * (IPv4 v4-mapped). */
static __always_inline struct cx_identity *cx_identity_of(const struct in6_addr *a)
{
	struct cx_route_key key = { .prefixlen = 128 };

	__builtin_memcpy(key.addr, a, 16);
	return bpf_map_lookup_elem(&cx_ipcache, &key);
}

static __always_inline struct cx_identity *cx_identity_v4(__be32 ip)
{
	struct cx_route_key key = { .prefixlen = CX_V4_PREFIX_BITS + 32 };

	cx_addr_v4(key.addr, ip);
	return bpf_map_lookup_elem(&cx_ipcache, &key);
}

/* cx_fip_of_addr returns the floating-IP entry of an address of either
 * family (IPv4 v4-mapped), if it is one. */
static __always_inline struct cx_fip *cx_fip_of_addr(const struct in6_addr *a)
{
	return bpf_map_lookup_elem(&cx_fips, a);
}

/* cx_fip_of is cx_fip_of_addr for an IPv4 address. */
static __always_inline struct cx_fip *cx_fip_of(__be32 addr)
{
	struct cx_fip_key k = {};

	cx_addr_v4(k.addr, addr);
	return bpf_map_lookup_elem(&cx_fips, &k);
}

/* cx_local_source_rt says whether saddr (of either family, IPv4
 * v4-mapped; its route is rt) is this host's to send from: one of its own
 * addresses (and subnet gateways), a local workload's, or a floating IP
 * whose instance runs here. Nothing from the underlay, nor decapsulated from
 * a tunnel, may carry such a source: TC delivery skips the kernel's martian
 * and reverse-path checks, and these sources are trusted (CX_ID_HOST skips
 * ingress policy) or attributed to a workload. */
static __always_inline int cx_local_source_rt(const struct in6_addr *saddr, const struct cx_route *rt)
{
	struct cx_identity *id = cx_identity_of(saddr);
	struct cx_fip *fip;

	if (id && (id->flags & CX_ID_HOST))
		return 1;
	if (!rt)
		return 0;
	if (rt->type == CX_RT_LOCAL_WORKLOAD || rt->type == CX_RT_HOST)
		return 1;
	if (rt->type != CX_RT_FIP)
		return 0;
	fip = cx_fip_of_addr(saddr);
	return fip && (fip->flags & CX_FIP_LOCAL);
}

/* cx_local_source is cx_local_source_rt with saddr's route looked up. */
static __always_inline int cx_local_source(const struct in6_addr *saddr)
{
	return cx_local_source_rt(saddr, cx_route_addr(saddr));
}

/* cx_is_node says whether a (16 bytes, as the maps keep addresses) is the
 * node whose underlay address is node6 (IPv6 underlay), or node4 when
 * node6 is NULL. */
static __always_inline int cx_is_node(const void *a, __be32 node4, const struct in6_addr *node6)
{
	if (node6)
		return cx_addr_eq(a, node6);
	return cx_is_v4mapped(a) && CX_IP4(*(const struct in6_addr *)a) == node4;
}

/* cx_inner_source_ok says whether a node (its underlay address: node6 on
 * the IPv6 underlay, else node4) may tunnel a packet with source saddr (of
 * either family, IPv4 v4-mapped) to this host: not from this host or its workloads
 * (cx_local_source), not from another node's address, and, when the route
 * map knows saddr as a workload, only from the workload's node. Sources
 * that are no workload's (external clients whose traffic the node forwards
 * to a floating IP here) stay allowed. What remains trusted is the outer
 * source: the underlay is assumed not to forge node addresses (IPsec or
 * WireGuard between nodes would be needed to drop that assumption). */
static __always_inline int cx_inner_source_ok(const struct in6_addr *saddr, __be32 node4,
					      const struct in6_addr *node6)
{
	struct cx_route *rt = cx_route_addr(saddr); /* one lookup for both checks */

	if (cx_local_source_rt(saddr, rt))
		return 0;
	if (!rt)
		return 1;
	if (rt->type == CX_RT_NODE)
		return cx_is_node(saddr, node4, node6);
	if (rt->type == CX_RT_REMOTE_WORKLOAD)
		/* Its node: both nodes choose the same underlay for a family
		 * (the IPv6 one when both have an IPv6 address), so the route
		 * names the address the packet came from. */
		return cx_is_node(rt->next_hop, node4, node6);
	return 1;
}

static __always_inline int cx_is_unspecified6(const struct in6_addr *a)
{
	return (a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1] | a->in6_u.u6_addr32[2] | a->in6_u.u6_addr32[3]) == 0;
}

static __always_inline int cx_is_link_local6(const struct in6_addr *a)
{
	return a->in6_u.u6_addr8[0] == 0xfe && (a->in6_u.u6_addr8[1] & 0xc0) == 0x80;
}

/* cx_is_gateway6 says whether a is fe80::1, the workloads' IPv6 gateway. */
static __always_inline int cx_is_gateway6(const struct in6_addr *a)
{
	return a->in6_u.u6_addr32[0] == bpf_htonl(0xfe800000) && !a->in6_u.u6_addr32[1] && !a->in6_u.u6_addr32[2] &&
	       a->in6_u.u6_addr32[3] == bpf_htonl(1);
}

#endif /* CALYX_ROUTES_H */
