/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Where a packet goes once it is decided: into a local workload, to
 * another node (encapsulated or routed directly, through the underlay's
 * FIB), or back to its sender as an ICMP "fragmentation needed" (ICMPv6
 * "packet too big"). */
#ifndef CALYX_DELIVERY_H
#define CALYX_DELIVERY_H

#include <linux/pkt_cls.h>
#include "counters.h"
#include "routes.h"

/* ICMP destination unreachable (linux/icmp.h drags in libc headers). */
struct cx_icmp_unreach {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 unused;
	__be16 mtu; /* next-hop MTU, with code 4 (RFC 1191) */
};

/* Debian 12's UAPI headers predate these. */
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#endif
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV6
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#endif

/* skb->mark of a packet a calyx program has already translated, routed and
 * redirected to the egress of an underlay or workload interface: that
 * interface's egress hook lets it through rather than routing or looking it
 * up a second time (a redirect to egress runs the hook again). The mark is
 * scrubbed when a packet crosses into another namespace. */
#define CX_MARK_ROUTED 0x0ca10000

/* cx_deliver_local hands an IP packet to a workload on this host, the way
 * its interface kind takes it (dst->flags, from the kind the agent recorded):
 *   - veth/netkit with the MAC known: L2 rewrite, bpf_redirect_peer straight
 *     into the workload's namespace; counted to-workload here;
 *   - tap (a VM) or any other kind with the MAC known: L2 rewrite,
 *     bpf_redirect to the interface's egress, the VM's queue (redirect_peer
 *     there would have the kernel free the packet); its egress hook counts
 *     it, the mark telling it the packet is translated and policed already;
 *   - MAC unknown: the kernel's neighbour table on the interface resolves
 *     it (bpf_redirect_neigh), and the egress hook counts it as above.
 * The packet is counted on in_ifindex under reason (deliver-local, or
 * decap-* for a packet that was decapsulated first) with in_len, its length
 * as it came in, in in_slot when the interface has one. */
static __always_inline int cx_deliver_local(struct __sk_buff *skb, __u32 in_ifindex, __u32 in_slot, __u32 in_len,
					    __u32 reason, const struct cx_route *dst)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct ethhdr *eth = data;
	__u32 out_ifindex = dst->ifindex;

	if ((void *)(eth + 1) > data_end)
		return cx_drop_len(skb, in_ifindex, CX_REASON_DROP_MALFORMED, in_len);

	cx_verdict_slot(in_slot, in_ifindex, reason, in_len, 0);
	if (!(dst->flags & CX_RT_F_HAS_MAC)) {
		skb->mark = CX_MARK_ROUTED;
		return bpf_redirect_neigh(out_ifindex, NULL, 0, 0);
	}
	__builtin_memcpy(eth->h_dest, dst->mac, CX_ETH_ALEN);
	__builtin_memcpy(eth->h_source, dst->host_mac, CX_ETH_ALEN);
	if (dst->flags & CX_RT_F_PEER)
		return cx_to_workload(skb, out_ifindex, dst->counter_slot, bpf_redirect_peer(out_ifindex, 0));
	skb->mark = CX_MARK_ROUTED;
	return bpf_redirect(out_ifindex, 0);
}

/* cx_ip4_dec_ttl decrements the TTL of the IPv4 header right after the
 * Ethernet header and fixes its checksum. Packet pointers are invalid after. */
static __always_inline void cx_ip4_dec_ttl(struct __sk_buff *skb, struct iphdr *iph)
{
	__u32 off = ETH_HLEN + __builtin_offsetof(struct iphdr, check);
	__be16 old, new;

	old = *(__be16 *)&iph->ttl;
	iph->ttl--;
	new = *(__be16 *)&iph->ttl;
	bpf_l3_csum_replace(skb, off, old, new, sizeof(__u16));
}

/* cx_ip4_forward decrements the TTL as a router must. It returns 0 when the
 * packet may be forwarded; a TTL that runs out is left to the host stack,
 * which sends the ICMP time-exceeded. */
static __always_inline int cx_ip4_forward(struct __sk_buff *skb, struct iphdr *iph)
{
	if (iph->ttl <= 1)
		return -1;
	cx_ip4_dec_ttl(skb, iph);
	return 0;
}

static __always_inline __u16 cx_csum_fold(__u64 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return ~csum;
}

static __always_inline void cx_ip4_set_csum(struct iphdr *iph)
{
	iph->check = 0;
	iph->check = cx_csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)iph, sizeof(*iph), 0));
}

/* cx_nexthop is where the underlay sends a packet for a node. */
struct cx_nexthop {
	__u32 ifindex;
	__be32 gw; /* the neighbour: the node itself, or the router towards it */
	__u8 smac[CX_ETH_ALEN];
	__u8 dmac[CX_ETH_ALEN];
	int resolved; /* the neighbour's MAC is known */
};

/* cx_fib_params_kept is this CPU's bpf_fib_lookup (cx_fib_scratch) as the
 * last lookup left it. */
static __always_inline struct bpf_fib_lookup *cx_fib_params_kept(void)
{
	__u32 zero = 0;

	return (struct bpf_fib_lookup *)bpf_map_lookup_elem(&cx_fib_scratch, &zero);
}

/* cx_fib_params is this CPU's bpf_fib_lookup (cx_fib_scratch), zeroed. */
static __always_inline struct bpf_fib_lookup *cx_fib_params(void)
{
	__u32 zero = 0;
	struct bpf_fib_lookup *p = (struct bpf_fib_lookup *)bpf_map_lookup_elem(&cx_fib_scratch, &zero);

	if (p)
		__builtin_memset(p, 0, sizeof(*p));
	return p;
}

/* cx_fib_result fills nh from a lookup's result rc and parameters p. It
 * returns 0, or -1 when there is no route. */
static __always_inline int cx_fib_result(int rc, const struct bpf_fib_lookup *p, struct cx_nexthop *nh)
{
	/* FRAG_NEEDED: the route and the neighbour were found, but the skb as
	 * it is now is longer than the output device's MTU (the helper checks
	 * that when no tot_len is given). Whether the packet fits once it is
	 * encapsulated is cx_to_node's call, against the underlay MTU, and it
	 * answers with ICMP rather than a silent drop. */
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		nh->resolved = 1;
		__builtin_memcpy(nh->smac, p->smac, CX_ETH_ALEN);
		__builtin_memcpy(nh->dmac, p->dmac, CX_ETH_ALEN);
	} else if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		nh->resolved = 0;
	} else {
		return -1;
	}
	nh->ifindex = p->ifindex;
	nh->gw = p->ipv4_dst; /* the lookup overwrote the node with the next hop */
	return 0;
}

/* cx_fib_nexthop asks the kernel FIB, which holds the underlay only, how to
 * reach node. It returns 0 with nh filled, or -1 when there is no route. */
static __always_inline int cx_fib_nexthop(struct __sk_buff *skb, __be32 src, __be32 node,
					  struct cx_nexthop *nh)
{
	struct bpf_fib_lookup *p = cx_fib_params();

	if (!p)
		return -1; /* cannot happen: a per-CPU array's one entry */
	p->family = CX_AF_INET;
	p->ipv4_src = src;
	p->ipv4_dst = node;
	p->ifindex = skb->ifindex;
	return cx_fib_result(bpf_fib_lookup(skb, p, sizeof(*p), 0), p, nh);
}

/* cx_fib_nexthop6 is cx_fib_nexthop on the IPv6 underlay: the next hop
 * stays in cx_fib_scratch (cx_to_nexthop reads it). */
static __always_inline int cx_fib_nexthop6(struct __sk_buff *skb, const void *src, const void *node,
					   struct cx_nexthop *nh)
{
	struct bpf_fib_lookup *p = cx_fib_params();

	if (!p)
		return -1; /* cannot happen: a per-CPU array's one entry */
	p->family = CX_AF_INET6;
	__builtin_memcpy(p->ipv6_src, src, 16);
	__builtin_memcpy(p->ipv6_dst, node, 16);
	p->ifindex = skb->ifindex;
	return cx_fib_result(bpf_fib_lookup(skb, p, sizeof(*p), 0), p, nh);
}

/* cx_icmp_frag_needed turns an IPv4 packet (Ethernet + a 20-byte header,
 * at least CX_ICMP_KEEP bytes) into the ICMP "fragmentation needed" its
 * sender must get, from src, advertising mtu, with the Ethernet addresses
 * swapped. It keeps the original header and 20 bytes of its payload: more
 * than the 8 RFC 792 asks for, because a CHECKSUM_PARTIAL skb may not be cut
 * before its L4 checksum field. Returns 0, or -1 when a helper refused. */
#define CX_ICMP_KEEP 40
static __always_inline int cx_icmp_frag_needed(struct __sk_buff *skb, __be32 src, __u32 mtu)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	__u8 smac[CX_ETH_ALEN], dmac[CX_ETH_ALEN];
	struct cx_icmp_unreach *icmp;
	__be32 dst;

	if ((void *)(iph + 1) > data_end)
		return -1;
	__builtin_memcpy(smac, eth->h_dest, CX_ETH_ALEN);
	__builtin_memcpy(dmac, eth->h_source, CX_ETH_ALEN);
	dst = iph->saddr;

	if (bpf_skb_change_tail(skb, ETH_HLEN + CX_ICMP_KEEP, 0))
		return -1;
	if (bpf_skb_adjust_room(skb, sizeof(struct iphdr) + sizeof(struct cx_icmp_unreach), BPF_ADJ_ROOM_MAC, 0))
		return -1;

	data = cx_skb_data(skb);
	data_end = cx_skb_data_end(skb);
	eth = data;
	iph = (void *)(eth + 1);
	icmp = (void *)(iph + 1);
	if ((void *)icmp + sizeof(*icmp) + CX_ICMP_KEEP > data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, dmac, CX_ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, CX_ETH_ALEN);

	iph->version = 4;
	iph->ihl = 5;
	iph->tos = 0xc0; /* network control, as the kernel sends ICMP errors */
	iph->tot_len = bpf_htons(sizeof(*iph) + sizeof(*icmp) + CX_ICMP_KEEP);
	iph->id = 0;
	iph->frag_off = 0;
	iph->ttl = CX_OUTER_TTL;
	iph->protocol = IPPROTO_ICMP;
	iph->saddr = src;
	iph->daddr = dst;
	cx_ip4_set_csum(iph);

	icmp->type = CX_ICMP_DEST_UNREACH;
	icmp->code = CX_ICMP_FRAG_NEEDED;
	icmp->checksum = 0;
	icmp->unused = 0;
	icmp->mtu = bpf_htons(mtu);
	icmp->checksum = cx_csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)icmp, sizeof(*icmp) + CX_ICMP_KEEP, 0));
	return 0;
}

/* cx_icmp6_too_big turns an IPv6 packet (Ethernet + its 40-byte header, at
 * least CX_ICMP6_KEEP bytes) into the ICMPv6 Packet Too Big (RFC 4443 3.2)
 * its sender must get, advertising mtu, from the workloads' gateway
 * fe80::1 (the router on their link), with the Ethernet addresses swapped.
 * It keeps the original header and 20 bytes of its payload, as
 * cx_icmp_frag_needed does. Returns 0, or -1 when a helper refused. */
#define CX_ICMP6_KEEP 60
#define CX_IPV6_MIN_MTU 1280
static __always_inline int cx_icmp6_too_big(struct __sk_buff *skb, __u32 mtu)
{
	struct ipv6hdr *ip6, *quoted;
	void *data, *data_end;
	struct ethhdr *eth;
	__be32 pseudo[2];
	__u8 *icmp;
	__s64 sum;
	int i;

	/* Room for the new headers first: the packet's own stay where they
	 * are read from below (the stack is all but full on this path). */
	if (bpf_skb_adjust_room(skb, sizeof(struct ipv6hdr) + 8, BPF_ADJ_ROOM_MAC, 0))
		return -1;
	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(struct ipv6hdr) + 8 + CX_ICMP6_KEEP, 0))
		return -1;

	data = cx_skb_data(skb);
	data_end = cx_skb_data_end(skb);
	eth = data;
	ip6 = (void *)(eth + 1);
	icmp = (void *)(ip6 + 1);
	quoted = (void *)(icmp + 8);
	if ((void *)quoted + CX_ICMP6_KEEP > data_end)
		return -1;
	/* Back to where it came from: the Ethernet addresses swapped. */
#pragma unroll
	for (i = 0; i < CX_ETH_ALEN; i++) {
		__u8 b = eth->h_dest[i];

		eth->h_dest[i] = eth->h_source[i];
		eth->h_source[i] = b;
	}
	*(__be32 *)ip6 = bpf_htonl(0x6c000000); /* version 6, network control, no flow label */
	ip6->payload_len = bpf_htons(8 + CX_ICMP6_KEEP);
	ip6->nexthdr = IPPROTO_ICMPV6;
	ip6->hop_limit = 255;
	__builtin_memcpy(&ip6->daddr, &quoted->saddr, sizeof(ip6->daddr));
	__builtin_memset(&ip6->saddr, 0, sizeof(ip6->saddr));
	ip6->saddr.in6_u.u6_addr8[0] = 0xfe;
	ip6->saddr.in6_u.u6_addr8[1] = 0x80;
	ip6->saddr.in6_u.u6_addr8[15] = 1;

	icmp[0] = CX_ICMPV6_PKT_TOOBIG;
	icmp[1] = 0;
	icmp[2] = 0;
	icmp[3] = 0;
	*(__be32 *)(icmp + 4) = bpf_htonl(mtu);
	/* The pseudo-header (RFC 8200 8.1), then the message. */
	pseudo[0] = bpf_htonl(8 + CX_ICMP6_KEEP);
	pseudo[1] = bpf_htonl(IPPROTO_ICMPV6);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ip6->saddr, 2 * sizeof(struct in6_addr), 0);
	sum = bpf_csum_diff(NULL, 0, pseudo, sizeof(pseudo), sum);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)icmp, 8 + CX_ICMP6_KEEP, sum);
	*(__sum16 *)(icmp + 2) = cx_csum_fold(sum);
	return 0;
}

/* cx_vxlan_fill writes the UDP header (udp_len, network order), the VXLAN
 * header and the inner Ethernet header inner_eth at udp, after an outer IP
 * header of either family. The UDP checksum is zero: optional over IPv4
 * (RFC 7348), and agreed between tunnel endpoints over IPv6 (RFC 6935).
 * Returns 0, or -1 when the packet is too short. */
static __always_inline int cx_vxlan_fill(struct udphdr *udp, void *data_end, const struct cx_node_config *cfg,
					 __u32 hash, const struct ethhdr *inner_eth, __be16 udp_len)
{
	struct cx_vxlanhdr *vx = (void *)(udp + 1);
	struct ethhdr *ieth = (void *)(vx + 1);

	if ((void *)(ieth + 1) > data_end)
		return -1;
	/* The kernel's own choice of range (udp_flow_src_port). */
	udp->source = bpf_htons((__u16)((((__u64)hash * (61000 - 32768)) >> 32) + 32768));
	udp->dest = bpf_htons((__u16)cfg->vxlan_port);
	udp->len = udp_len;
	udp->check = 0;
	vx->flags = CX_VXLAN_FLAG_I;
	vx->vni = bpf_htonl(cfg->vxlan_vni << 8);
	__builtin_memcpy(ieth, inner_eth, sizeof(*ieth));
	return 0;
}

/* cx_encap wraps the IP packet in skb (IPv6 when v6) for node. A GSO packet whose
 * segments would not fit the underlay after encapsulation has its segment
 * size lowered by the overhead instead (no ICMP can tell a local TCP that).
 * Returns 0, or -1 when a helper refused the packet. */
static __always_inline int cx_encap(struct __sk_buff *skb, const struct cx_node_config *cfg, __u32 encap,
				    __be32 src, __be32 node, __u32 seg_len, int v6)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct ethhdr *eth = data, inner_eth;
	struct iphdr *iph = (void *)(eth + 1), *outer;
	/* For an IPv6 packet the helper also makes skb->protocol IPv4's,
	 * the outer header's. */
	__u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4;
	__u32 room = CX_IPIP_OVERHEAD, hash = 0;
	__u8 tos;

	if ((void *)(iph + 1) > data_end)
		return -1;
	__builtin_memcpy(&inner_eth, eth, sizeof(inner_eth));
	if (v6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		tos = ip6->priority << 4 | ip6->flow_lbl[0] >> 4; /* the traffic class */
	} else {
		tos = iph->tos;
	}
	if (encap == CX_ENCAP_VXLAN) {
		room = CX_VXLAN_OVERHEAD;
		flags |= BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH |
			 BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN);
		/* The inner flow's hash, before the headers change: it picks
		 * the VXLAN source port, so the underlay spreads flows over its
		 * paths. (A flow dissection when the skb has no hash yet: not
		 * paid for IP-in-IP, which has no port to fill.) */
		hash = bpf_get_hash_recalc(skb);
	}
	if (seg_len + room <= cfg->underlay_mtu)
		flags |= BPF_F_ADJ_ROOM_FIXED_GSO;

	if (bpf_skb_adjust_room(skb, room, BPF_ADJ_ROOM_MAC, flags))
		return -1;

	data = cx_skb_data(skb);
	data_end = cx_skb_data_end(skb);
	eth = data;
	outer = data + ETH_HLEN;
	if ((void *)(outer + 1) > data_end)
		return -1;
	eth->h_proto = bpf_htons(ETH_P_IP);
	outer->version = 4;
	outer->ihl = 5;
	outer->tos = tos;
	/* BIG TCP: a GSO packet longer than 64 KiB carries 0, as the kernel's
	 * own (iph_totlen); segmentation writes each segment's length. */
	outer->tot_len = skb->len - ETH_HLEN > 0xffff ? 0 : bpf_htons(skb->len - ETH_HLEN);
	outer->id = 0;
	/* Never fragmented: what does not fit got ICMP or a smaller MSS. */
	outer->frag_off = bpf_htons(CX_IP_DF);
	outer->ttl = CX_OUTER_TTL;
	outer->saddr = src;
	outer->daddr = node;

	if (encap == CX_ENCAP_VXLAN) {
		if (cx_vxlan_fill((void *)(outer + 1), data_end, cfg, hash, &inner_eth,
				  skb->len - ETH_HLEN - sizeof(*outer) > 0xffff ? 0 :
										bpf_htons(skb->len - ETH_HLEN - sizeof(*outer))))
			return -1;
		outer->protocol = IPPROTO_UDP;
	} else {
		/* IPv6 in IPv4 is protocol 41 (RFC 4213), as sit sends it. */
		outer->protocol = v6 ? IPPROTO_IPV6 : IPPROTO_IPIP;
	}
	cx_ip4_set_csum(outer);
	return 0;
}

/* cx_encap6 wraps the IPv6 packet in skb for node over the IPv6 underlay:
 * IPv6 in IPv6 (next header 41, RFC 2473) or VXLAN over UDP/IPv6, whose
 * UDP checksum is zero (RFC 6935: tunnel endpoints may agree to it; the
 * receiving node decapsulates in BPF before any UDP processing). A GSO
 * packet is handled as cx_encap does. Returns 0, or -1 when a helper
 * refused the packet. */
static __always_inline int cx_encap6(struct __sk_buff *skb, const struct cx_node_config *cfg, __u32 encap,
				     const void *node, __u32 seg_len)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct ethhdr *eth = data, inner_eth;
	struct ipv6hdr *ip6 = (void *)(eth + 1), *outer;
	__u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV6;
	__u32 room = CX_IP6IP6_OVERHEAD, hash = bpf_get_hash_recalc(skb);
	__u32 tc;

	if ((void *)(ip6 + 1) > data_end)
		return -1;
	__builtin_memcpy(&inner_eth, eth, sizeof(inner_eth));
	tc = ip6->priority << 4 | ip6->flow_lbl[0] >> 4;
	if (encap == CX_ENCAP_VXLAN) {
		room = CX_VXLAN6_OVERHEAD;
		flags |= BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN);
	}
	if (seg_len + room <= cfg->underlay_mtu)
		flags |= BPF_F_ADJ_ROOM_FIXED_GSO;
	if (bpf_skb_adjust_room(skb, room, BPF_ADJ_ROOM_MAC, flags))
		return -1;

	data = cx_skb_data(skb);
	data_end = cx_skb_data_end(skb);
	outer = data + ETH_HLEN;
	if ((void *)(outer + 1) > data_end)
		return -1;
	/* The inner flow's hash as the flow label, as the kernel's tunnels
	 * do (RFC 6438): the underlay spreads flows over its paths. */
	*(__be32 *)outer = bpf_htonl(6 << 28 | tc << 20 | (hash & 0xfffff));
	outer->payload_len = bpf_htons(skb->len - ETH_HLEN - sizeof(*outer));
	outer->hop_limit = CX_OUTER_TTL;
	__builtin_memcpy(&outer->saddr, cfg->node_addr6, 16);
	__builtin_memcpy(&outer->daddr, node, 16);
	if (encap == CX_ENCAP_VXLAN) {
		if (cx_vxlan_fill((void *)(outer + 1), data_end, cfg, hash, &inner_eth, outer->payload_len))
			return -1;
		outer->nexthdr = IPPROTO_UDP;
	} else {
		outer->nexthdr = IPPROTO_IPV6;
	}
	return 0;
}

/* cx_seg_len is the size on the wire of the packets skb will leave as: its
 * IP length, or for a GSO packet one segment with its headers. l3 is its
 * IP header (IPv6 when v6). */
static __always_inline __u32 cx_seg_len(struct __sk_buff *skb, void *l3, void *data_end, int v6)
{
	struct iphdr *iph = l3;
	__u32 gso = skb->gso_size;
	__u32 l4 = sizeof(struct udphdr);

	if (v6) {
		struct ipv6hdr *ip6 = l3;
		__u8 *doff = (void *)(ip6 + 1) + 12;

		if ((void *)(ip6 + 1) > data_end)
			return 0;
		if (!gso)
			return sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
		if (ip6->nexthdr == IPPROTO_TCP) {
			l4 = 60;
			if ((void *)(doff + 1) <= data_end)
				l4 = (*doff >> 4) * 4;
		}
		return sizeof(*ip6) + l4 + gso;
	}
	if ((void *)(iph + 1) > data_end)
		return 0;
	if (!gso)
		return bpf_ntohs(iph->tot_len);
	if (iph->protocol == IPPROTO_TCP) {
		__u8 *doff = (void *)iph + sizeof(*iph) + 12;

		l4 = 60; /* the longest TCP header, unless it can be read */
		if (iph->ihl == 5 && (void *)(doff + 1) <= data_end)
			l4 = (*doff >> 4) * 4;
	}
	return iph->ihl * 4 + l4 + gso;
}

/* cx_to_nexthop sends a packet ready for the underlay (encapsulated, or
 * routed directly) to nh, counted under reason: with the neighbour's MAC
 * when it is known, else through the kernel's neighbour table (nh6: the
 * IPv6 next hop cx_fib_nexthop6 left in cx_fib_scratch). */
static __always_inline int cx_to_nexthop(struct __sk_buff *skb, __u32 in_ifindex, __u32 in_slot, __u32 len,
					 __u32 reason, const struct cx_nexthop *nh, int from_host, int nh6)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		/* Cannot happen after the callers' checks; the verifier wants it. */
		return cx_drop_len(skb, in_ifindex, CX_REASON_DROP_MALFORMED, len);
	if (nh->resolved) {
		__builtin_memcpy(eth->h_dest, nh->dmac, CX_ETH_ALEN);
		__builtin_memcpy(eth->h_source, nh->smac, CX_ETH_ALEN);
		if (from_host && nh->ifindex == skb->ifindex)
			/* Already on its way out of the right interface. */
			return cx_verdict_slot(in_slot, in_ifindex, reason, len, TC_ACT_OK);
		skb->mark = CX_MARK_ROUTED;
		return cx_verdict_slot(in_slot, in_ifindex, reason, len, bpf_redirect(nh->ifindex, 0));
	}
	skb->mark = CX_MARK_ROUTED;
	if (nh6) {
		struct bpf_fib_lookup *p = cx_fib_params_kept();
		struct bpf_redir_neigh neigh = { .nh_family = CX_AF_INET6 };

		if (!p)
			return cx_drop_len(skb, in_ifindex, CX_REASON_DROP_FIB, len); /* cannot happen */
		__builtin_memcpy(neigh.ipv6_nh, p->ipv6_dst, 16);
		return cx_verdict_slot(in_slot, in_ifindex, reason, len,
				      bpf_redirect_neigh(nh->ifindex, &neigh, sizeof(neigh), 0));
	}
	{
		struct bpf_redir_neigh neigh = { .nh_family = CX_AF_INET, .ipv4_nh = nh->gw };

		return cx_verdict_slot(in_slot, in_ifindex, reason, len,
				      bpf_redirect_neigh(nh->ifindex, &neigh, sizeof(neigh), 0));
	}
}

/* cx_to_node6u sends a workload's IPv6 packet towards the node that hosts
 * its destination over the IPv6 underlay (rt's next hop is that node's
 * IPv6 address): IPv6 in IPv6, VXLAN over IPv6, or routed directly. */
static __always_inline int cx_to_node6u(struct __sk_buff *skb, __u32 in_ifindex, __u32 in_slot,
					const struct cx_route *rt, const struct cx_node_config *cfg)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	__u32 encap = rt->encap, len = skb->len, room = 0, reason = CX_REASON_FORWARD_DIRECT, seg_len;
	struct cx_nexthop nh = {};

	if ((void *)(ip6 + 1) > data_end || cx_is_unspecified6((const struct in6_addr *)cfg->node_addr6))
		/* No IPv6 underlay address here (yet): the host stack's. */
		return cx_verdict_slot(in_slot, in_ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	if (ip6->hop_limit <= 1)
		/* The host stack sends the time-exceeded. */
		return cx_verdict_slot(in_slot, in_ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	if (cx_fib_nexthop6(skb, cfg->node_addr6, rt->next_hop, &nh))
		/* The underlay cannot reach the node. */
		return cx_drop_len(skb, in_ifindex, CX_REASON_DROP_FIB, len);
	if (encap == CX_ENCAP_IPIP)
		room = CX_IP6IP6_OVERHEAD;
	else if (encap == CX_ENCAP_VXLAN)
		room = CX_VXLAN6_OVERHEAD;
	seg_len = cx_seg_len(skb, ip6, data_end, 1);
	if (!skb->gso_size && seg_len + room > cfg->underlay_mtu) {
		__u32 mtu = cfg->underlay_mtu - room;

		if (seg_len < CX_ICMP6_KEEP)
			return cx_drop_len(skb, in_ifindex, CX_REASON_DROP_TOO_BIG, len);
		if (cx_icmp6_too_big(skb, mtu < CX_IPV6_MIN_MTU ? CX_IPV6_MIN_MTU : mtu))
			/* The helpers refused to rewrite the packet into the ICMPv6. */
			return cx_drop_len(skb, in_ifindex, CX_REASON_DROP_HELPER, len);
		return cx_verdict_slot(in_slot, in_ifindex, CX_REASON_ICMP_FRAG_NEEDED, len, bpf_redirect(skb->ifindex, 0));
	}
	ip6->hop_limit--;
	if (room) {
		if (cx_encap6(skb, cfg, encap, rt->next_hop, seg_len))
			/* bpf_skb_adjust_room refused. */
			return cx_drop_len(skb, in_ifindex, CX_REASON_DROP_HELPER, len);
		reason = encap == CX_ENCAP_IPIP ? CX_REASON_ENCAP_IPIP : CX_REASON_ENCAP_VXLAN;
	}
	return cx_to_nexthop(skb, in_ifindex, in_slot, len, reason, &nh, 0, 1);
}

/* cx_to_node sends an IP packet (IPv6 when v6, a constant at every call)
 * towards the node that hosts its destination, encapsulated as rt says,
 * over the underlay of rt's next hop (IPv4, or IPv6: cx_to_node6u). in_ifindex (counter slot in_slot) is where the
 * verdict is counted; from_host says the packet comes from the host's own
 * stack (the underlay egress hook) rather than from a workload. */
static __always_inline int cx_to_node(struct __sk_buff *skb, __u32 in_ifindex, __u32 in_slot,
				      const struct cx_route *rt, int from_host, int v6)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	__u32 encap = rt->encap, len = skb->len, room = 0, reason, seg_len;
	struct cx_node_config *cfg = cx_get_config();
	struct cx_nexthop nh = {};
	__be32 src, node;
	__u8 ttl;

	if (!cfg || !cfg->underlay_mtu || (v6 ? (void *)(ip6 + 1) : (void *)(iph + 1)) > data_end)
		/* Not configured yet: the host stack knows as much as we do. */
		return cx_verdict_slot(in_slot, in_ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	if (!cx_is_v4mapped((const struct in6_addr *)rt->next_hop)) {
		if (v6)
			/* A node reached over the IPv6 underlay. */
			return cx_to_node6u(skb, in_ifindex, in_slot, rt, cfg);
		/* IPv4 never takes the IPv6 underlay: not a route the agent writes. */
		return cx_verdict_slot(in_slot, in_ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	}
	src = cx_addr_ip4(cfg->node_addr);
	node = cx_addr_ip4(rt->next_hop);
	if (!src || !node)
		return cx_verdict_slot(in_slot, in_ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	ttl = v6 ? ip6->hop_limit : iph->ttl;
	if (!from_host && ttl <= 1)
		/* A workload's packet this host, its first router, may not
		 * forward: the host stack sends the ICMP time-exceeded. */
		return cx_verdict_slot(in_slot, in_ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);

	if (cx_fib_nexthop(skb, src, node, &nh))
		/* The underlay cannot reach the node (link down, route gone). */
		return cx_drop_len(skb, in_ifindex, CX_REASON_DROP_FIB, len);

	if (encap == CX_ENCAP_IPIP)
		room = CX_IPIP_OVERHEAD;
	else if (encap == CX_ENCAP_VXLAN)
		room = CX_VXLAN_OVERHEAD;
	seg_len = cx_seg_len(skb, iph, data_end, v6);
	/* Checked before the TTL changes, so that the ICMP quotes the header
	 * as the sender sent it (as ip_forward does). Routed directly, the
	 * packet must fit the underlay too: veth and NICs drop what does not,
	 * silently. GSO packets are cut to size by cx_encap instead. */
	if (v6 && !skb->gso_size && seg_len + room > cfg->underlay_mtu) {
		/* Too big for the underlay: IPv6 is never fragmented on the
		 * way (RFC 8200 5), its sender learns the path MTU. */
		__u32 mtu = cfg->underlay_mtu - room;

		if (seg_len < CX_ICMP6_KEEP || from_host)
			return cx_drop_len(skb, in_ifindex, CX_REASON_DROP_TOO_BIG, len);
		if (cx_icmp6_too_big(skb, mtu < CX_IPV6_MIN_MTU ? CX_IPV6_MIN_MTU : mtu))
			/* The helpers refused to rewrite the packet into the ICMPv6. */
			return cx_drop_len(skb, in_ifindex, CX_REASON_DROP_HELPER, len);
		return cx_verdict_slot(in_slot, in_ifindex, CX_REASON_ICMP_FRAG_NEEDED, len,
				      bpf_redirect(skb->ifindex, 0));
	}
	if (!v6 && !skb->gso_size && seg_len + room > cfg->underlay_mtu) {
		/* Too big for the underlay. */
		if (!(iph->frag_off & bpf_htons(CX_IP_DF)) || iph->ihl != 5 ||
		    seg_len < CX_ICMP_KEEP)
			/* Fragmenting before encapsulation is not done here, and a
			 * header with options has no room in our ICMP: drop. */
			return cx_drop_len(skb, in_ifindex, CX_REASON_DROP_TOO_BIG, len);
		/* The error comes from this node to a workload, or, for the
		 * host's own packets, from the remote node: a packet from one of
		 * its own addresses would be a martian to the host. */
		if (cx_icmp_frag_needed(skb, from_host ? node : src, cfg->underlay_mtu - room))
			/* The helpers refused to rewrite the packet into the ICMP. */
			return cx_drop_len(skb, in_ifindex, CX_REASON_DROP_HELPER, len);
		return cx_verdict_slot(in_slot, in_ifindex, CX_REASON_ICMP_FRAG_NEEDED, len,
				      bpf_redirect(skb->ifindex, from_host ? BPF_F_INGRESS : 0));
	}

	if (!from_host) {
		/* A workload's packet: this host is its first router. */
		if (v6)
			ip6->hop_limit--; /* no IPv6 header checksum to fix */
		else
			cx_ip4_dec_ttl(skb, iph);
	}

	reason = CX_REASON_FORWARD_DIRECT;
	if (room) {
		if (cx_encap(skb, cfg, encap, src, node, seg_len, v6))
			/* bpf_skb_adjust_room refused: e.g. a GSO type it cannot
			 * resize, or an skb that was decapsulated before. */
			return cx_drop_len(skb, in_ifindex, CX_REASON_DROP_HELPER, len);
		reason = encap == CX_ENCAP_IPIP ? CX_REASON_ENCAP_IPIP : CX_REASON_ENCAP_VXLAN;
	}

	if (v6 && !room && !nh.resolved)
		/* An IPv6 packet routed directly whose next hop's MAC is not
		 * known yet: bpf_redirect_neigh resolves only an IPv6 next hop
		 * for it. The host stack routes it (its first IPv4 packet to
		 * the node resolves the neighbour for the next). */
		return cx_verdict_slot(in_slot, in_ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	return cx_to_nexthop(skb, in_ifindex, in_slot, len, reason, &nh, from_host, 0);
}

#endif /* CALYX_DELIVERY_H */
