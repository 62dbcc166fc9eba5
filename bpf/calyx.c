// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* calyx TC programs. One program per hook, loaded once and attached to every
 * interface of its kind; what differs per interface is looked up by ifindex. */
#include "calyx.h"
#include "parse.h"

#include <linux/pkt_cls.h>
#include <linux/in.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#define CX_PULL_LEN (ETH_HLEN + 60)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct cx_iface);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct cx_route_key);
	__type(value, struct cx_route);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_routes SEC(".maps");

/* LRU so that counters of long-gone interfaces make room rather than new
 * interfaces going uncounted; the agent also deletes them on removal. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct cx_counter_key);
	__type(value, struct cx_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct cx_link);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_links SEC(".maps");

/* Keep the enums in the object's BTF so bpf2go emits their constants for Go. */
const enum cx_reason cx_enum_reason __attribute__((unused));
const enum cx_route_type cx_enum_route_type __attribute__((unused));
const enum cx_route_flags cx_enum_route_flags __attribute__((unused));
const enum cx_iface_flags cx_enum_iface_flags __attribute__((unused));
const enum cx_attach_mode cx_enum_attach_mode __attribute__((unused));

/* cx_verdict records a verdict under its reason for the interface and
 * returns it, so every return path is one line and counted. */
static __always_inline int cx_verdict(struct __sk_buff *skb, __u32 ifindex, __u32 reason, int verdict)
{
	struct cx_counter_key key = { .ifindex = ifindex, .reason = reason };
	struct cx_counter *c;

	c = bpf_map_lookup_elem(&cx_counters, &key);
	if (!c) {
		struct cx_counter zero = {};

		bpf_map_update_elem(&cx_counters, &key, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&cx_counters, &key);
		if (!c)
			return verdict;
	}
	c->packets++;
	c->bytes += skb->len;
	return verdict;
}

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

/* cx_route_v6 looks up an IPv6 address. IPv4 routes live in the same trie
 * as ::ffff:a.b.c.d, so a v4-mapped address in an IPv6 header would match
 * them: an IPv6 packet from ::ffff:<its IPv4> would pass as the endpoint's
 * own, and one to ::ffff:<another workload's IPv4> would be delivered.
 * v4-mapped addresses never appear on the wire (RFC 4291 2.5.5.2; Linux drops
 * them in ip6_rcv_core), so they have no route here. */
static __always_inline struct cx_route *cx_route_v6(const struct in6_addr *ip)
{
	struct cx_route_key key = { .prefixlen = 128 };

	if ((ip->in6_u.u6_addr32[0] | ip->in6_u.u6_addr32[1]) == 0 &&
	    ip->in6_u.u6_addr32[2] == bpf_htonl(0x0000ffff))
		return NULL;
	__builtin_memcpy(key.addr, ip, 16);
	return bpf_map_lookup_elem(&cx_routes, &key);
}

/* cx_owned_by says whether a route is the /32 (/128) of the endpoint on ifindex. */
static __always_inline int cx_owned_by(const struct cx_route *rt, __u32 ifindex)
{
	return rt && rt->type == CX_RT_LOCAL_WORKLOAD && rt->ifindex == ifindex;
}

static __always_inline int cx_mac_eq(const __u8 *a, const __u8 *b)
{
	/* Byte-wise: clang 14 does not lower memcmp for BPF, and the MACs in
	 * packets are only 2-byte aligned. */
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
	       a[5] == b[5];
}

/* cx_to_workload is the one path into a workload, whether the packet comes
 * from the host stack (egress hook) or straight from another workload's
 * from-workload hook by redirect_peer, which skips the egress hook. Ingress
 * policy and reverse NAT belong here. */
static __always_inline int cx_to_workload(struct __sk_buff *skb, __u32 ifindex, int verdict)
{
	return cx_verdict(skb, ifindex, CX_REASON_TO_WORKLOAD, verdict);
}

/* cx_deliver_local hands an IP packet to a workload on this host. With the
 * destination MAC known the L2 header is rewritten and the packet goes
 * straight into the workload's namespace; otherwise the kernel's neighbour
 * table on the destination interface resolves it. */
static __always_inline int cx_deliver_local(struct __sk_buff *skb, __u32 in_ifindex,
					    const struct cx_route *dst)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 out_ifindex = dst->ifindex;
	int ret;

	if ((void *)(eth + 1) > data_end)
		return cx_verdict(skb, in_ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);

	cx_verdict(skb, in_ifindex, CX_REASON_DELIVER_LOCAL, 0);
	if (dst->flags & CX_RT_F_HAS_MAC) {
		__builtin_memcpy(eth->h_dest, dst->mac, CX_ETH_ALEN);
		__builtin_memcpy(eth->h_source, dst->host_mac, CX_ETH_ALEN);
		ret = bpf_redirect_peer(out_ifindex, 0);
		return cx_to_workload(skb, out_ifindex, ret);
	}
	/* The destination's egress hook runs cx_to_workload on this path. */
	return bpf_redirect_neigh(out_ifindex, NULL, 0, 0);
}

/* cx_ip4_forward decrements the TTL as a router must. It returns 0 when the
 * packet may be forwarded; a TTL that runs out is left to the host stack,
 * which sends the ICMP time-exceeded. */
static __always_inline int cx_ip4_forward(struct __sk_buff *skb, struct iphdr *iph)
{
	__u32 off = ETH_HLEN + __builtin_offsetof(struct iphdr, check);
	__be16 old, new;

	if (iph->ttl <= 1)
		return -1;
	old = *(__be16 *)&iph->ttl;
	iph->ttl--;
	new = *(__be16 *)&iph->ttl;
	bpf_l3_csum_replace(skb, off, old, new, sizeof(__u16));
	return 0;
}

static __always_inline int cx_from_wl_arp(struct __sk_buff *skb, const struct cx_iface *ifc,
					  struct hdr_cursor *c, void *data_end)
{
	__u32 ifindex = skb->ifindex;
	struct ethhdr *eth = (void *)(long)skb->data;
	struct cx_arp_eth *arp;
	struct cx_route *rt;
	__be32 spa, tpa;

	arp = parse_arp(c, data_end);
	if (!arp || (void *)(eth + 1) > data_end)
		/* Not Ethernet/IPv4 ARP, or cut short: nothing a workload needs. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);

	if (ifc->flags & CX_IFACE_CHECK_MAC && !cx_mac_eq(arp->sha, ifc->mac))
		/* ARP poisoning: the sender claims a MAC that is not the endpoint's. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_MAC, TC_ACT_SHOT);

	__builtin_memcpy(&spa, arp->spa, 4);
	__builtin_memcpy(&tpa, arp->tpa, 4);

	if (arp->op == bpf_htons(CX_ARP_OP_REQUEST) && spa == 0)
		/* Duplicate-address probe: it must go unanswered to succeed. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_ARP_IGNORED, TC_ACT_SHOT);

	rt = cx_route_v4(spa);
	if (!cx_owned_by(rt, ifindex))
		/* The sender IP is not the endpoint's: ARP spoofing. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_IP, TC_ACT_SHOT);

	if (arp->op == bpf_htons(CX_ARP_OP_REPLY))
		/* The workload answering the host's own ARP request. */
		return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
	if (arp->op != bpf_htons(CX_ARP_OP_REQUEST))
		/* RARP/InARP opcodes have no use on a routed link. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);

	rt = cx_route_v4(tpa);
	if (cx_owned_by(rt, ifindex))
		/* A gratuitous ARP or a request for its own address: no one else
		 * may claim it, so there is nothing to answer. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_ARP_IGNORED, TC_ACT_SHOT);

	/* Every other address is behind the host: answer with the host side's
	 * MAC, so the gateway consumes no address and no proxy_arp is needed. */
	arp->op = bpf_htons(CX_ARP_OP_REPLY);
	__builtin_memcpy(arp->tha, arp->sha, CX_ETH_ALEN);
	__builtin_memcpy(arp->tpa, &spa, 4);
	__builtin_memcpy(arp->sha, ifc->host_mac, CX_ETH_ALEN);
	__builtin_memcpy(arp->spa, &tpa, 4);
	__builtin_memcpy(eth->h_dest, eth->h_source, CX_ETH_ALEN);
	__builtin_memcpy(eth->h_source, ifc->host_mac, CX_ETH_ALEN);
	return cx_verdict(skb, ifindex, CX_REASON_ARP_REPLY, bpf_redirect(ifindex, 0));
}

static __always_inline int cx_from_wl_ip4(struct __sk_buff *skb, struct hdr_cursor *c, void *data_end)
{
	__u32 ifindex = skb->ifindex;
	struct cx_route *rt;
	struct iphdr *iph;

	iph = parse_iphdr(c, data_end, skb->len - ETH_HLEN);
	if (!iph)
		/* Truncated or invalid IPv4 header: never forward it. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);

	rt = cx_route_v4(iph->saddr);
	if (!cx_owned_by(rt, ifindex))
		/* Source address is not one of the endpoint's ipNetworks. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_IP, TC_ACT_SHOT);

	rt = cx_route_v4(iph->daddr);
	if (rt && rt->type == CX_RT_LOCAL_WORKLOAD && rt->ifindex != ifindex) {
		if (cx_ip4_forward(skb, iph))
			return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
		return cx_deliver_local(skb, ifindex, rt);
	}
	return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
}

static __always_inline int cx_from_wl_ip6(struct __sk_buff *skb, struct hdr_cursor *c, void *data_end)
{
	__u32 ifindex = skb->ifindex;
	struct ipv6hdr *ip6;
	struct cx_route *rt;

	ip6 = parse_ipv6hdr(c, data_end, skb->len - ETH_HLEN);
	if (!ip6)
		/* Truncated or invalid IPv6 header: never forward it. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);

	/* Link-local and unspecified sources (NDP, DAD) only ever talk to the
	 * host on this link; the host stack answers them. */
	if ((ip6->saddr.in6_u.u6_addr8[0] == 0xfe && (ip6->saddr.in6_u.u6_addr8[1] & 0xc0) == 0x80) ||
	    (ip6->saddr.in6_u.u6_addr32[0] | ip6->saddr.in6_u.u6_addr32[1] |
	     ip6->saddr.in6_u.u6_addr32[2] | ip6->saddr.in6_u.u6_addr32[3]) == 0)
		return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);

	rt = cx_route_v6(&ip6->saddr);
	if (!cx_owned_by(rt, ifindex))
		/* Source address is not one of the endpoint's ipNetworks. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_IP, TC_ACT_SHOT);

	rt = cx_route_v6(&ip6->daddr);
	if (rt && rt->type == CX_RT_LOCAL_WORKLOAD && rt->ifindex != ifindex) {
		if (ip6->hop_limit <= 1)
			return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
		ip6->hop_limit--; /* no IPv6 header checksum to fix */
		return cx_deliver_local(skb, ifindex, rt);
	}
	return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
}

/* calyx_from_wl runs at TC ingress on the host side of a workload interface:
 * everything a workload sends. */
SEC("tc")
int calyx_from_wl(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct hdr_cursor c;
	struct cx_iface *ifc;
	struct ethhdr *eth;
	void *data_end;

	/* Headers this program reads must be in the linear area: Ethernet plus
	 * the longest IPv4 header (60 bytes with options; IPv6's is 40). */
	if (skb->data_end - skb->data < CX_PULL_LEN && skb->len > skb->data_end - skb->data)
		bpf_skb_pull_data(skb, skb->len < CX_PULL_LEN ? skb->len : CX_PULL_LEN);

	ifc = bpf_map_lookup_elem(&cx_ifaces, &ifindex);
	if (!ifc || !(ifc->flags & CX_IFACE_WORKLOAD))
		/* Attached but not (or no longer) an endpoint: fail closed. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_NO_ENDPOINT, TC_ACT_SHOT);

	data_end = (void *)(long)skb->data_end;
	c.pos = (void *)(long)skb->data;
	eth = parse_ethhdr(&c, data_end);
	if (!eth)
		/* Shorter than an Ethernet header. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);

	if (ifc->flags & CX_IFACE_CHECK_MAC && !cx_mac_eq(eth->h_source, ifc->mac))
		/* Source MAC is not the endpoint's. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_MAC, TC_ACT_SHOT);

	switch (eth->h_proto) {
	case bpf_htons(ETH_P_ARP):
		return cx_from_wl_arp(skb, ifc, &c, data_end);
	case bpf_htons(ETH_P_IP):
		return cx_from_wl_ip4(skb, &c, data_end);
	case bpf_htons(ETH_P_IPV6):
		return cx_from_wl_ip6(skb, &c, data_end);
	}
	/* VLAN tags, LLDP, raw L2 protocols: a routed endpoint has no business
	 * sending them to the host. */
	return cx_verdict(skb, ifindex, CX_REASON_DROP_UNSUPPORTED, TC_ACT_SHOT);
}

/* calyx_to_wl runs at TC egress on the host side of a workload interface:
 * what the host stack sends into the workload. */
SEC("tc")
int calyx_to_wl(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct cx_iface *ifc;

	ifc = bpf_map_lookup_elem(&cx_ifaces, &ifindex);
	if (!ifc || !(ifc->flags & CX_IFACE_WORKLOAD))
		/* Attached but not (or no longer) an endpoint: fail closed. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_NO_ENDPOINT, TC_ACT_SHOT);
	return cx_to_workload(skb, ifindex, TC_ACT_OK);
}
