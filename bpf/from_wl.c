// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* calyx_from_wl: TC ingress on the host side of a workload interface,
 * everything a workload sends. Read top-down: the program, then the path
 * of each protocol. */
#include "policy.h"

/* The start of a BOOTP/DHCP message up to the client's hardware address
 * (RFC 2131 2): what a DHCP request from an unconfigured workload is checked by. */
struct cx_bootp {
	__u8 op;    /* 1: BOOTREQUEST */
	__u8 htype; /* 1: Ethernet */
	__u8 hlen;  /* 6 */
	__u8 hops;
	__be32 xid;
	__be16 secs;
	__be16 flags;
	__be32 ciaddr, yiaddr, siaddr, giaddr;
	__u8 chaddr[CX_ETH_ALEN];
} __attribute__((packed));

#define CX_DHCP_CLIENT_PORT 68
#define CX_BOOTREQUEST 1

/* An NA with one option: the target's link-layer address (RFC 4861 4.6.1). */
#define CX_NA_LEN (sizeof(struct cx_nd) + 8)

/* The program comes first; the paths it takes follow, in the order it
 * takes them. Each protocol's path is a BPF-to-BPF call: one body holding
 * IPv4's and IPv6's conntrack, policy and NAT would outgrow the 16-bit
 * reach of the program's jumps. This frame stays small, so each call's
 * stack fits beside it in the 512 bytes. Each starts from the Ethernet
 * header, which the program checked. */
static __attribute__((noinline)) int cx_from_wl_arp(struct __sk_buff *skb, const struct cx_iface *ifc);
static __attribute__((noinline)) int cx_from_wl_ip4(struct __sk_buff *skb, const struct cx_iface *ifc);
static __always_inline int cx_from_wl_dhcp(struct __sk_buff *skb, const struct cx_iface *ifc, struct iphdr *iph,
					   struct hdr_cursor *c, void *data_end);
static __always_inline int cx_route_cacheable(const struct cx_route *rt);
static __always_inline int cx_from_wl_route(struct __sk_buff *skb, __u32 ifindex, __u32 slot, __u32 len,
					    const struct cx_route *rt, int nat);
static __attribute__((noinline)) int cx_from_wl_ip6(struct __sk_buff *skb, const struct cx_iface *ifc);
static __always_inline int cx_from_wl_ns(struct __sk_buff *skb, const struct cx_iface *ifc, struct ipv6hdr *ip6,
					 struct cx_nd *nd);
static __always_inline int cx_from_wl_ip6_flow(struct __sk_buff *skb, const struct cx_iface *ifc, __u32 src_flags);

/* calyx_from_wl runs at TC ingress on the host side of a workload interface:
 * everything a workload sends. */
SEC("tc")
int calyx_from_wl(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct cx_iface *ifc;
	struct ethhdr *eth;

	/* Headers this program reads must be in the linear area: Ethernet plus
	 * the longest IPv4 header (60 bytes with options; IPv6's is 40). */
	cx_pull(skb, CX_PULL_LEN);

	ifc = bpf_map_lookup_elem(&cx_ifaces, &ifindex);
	if (!ifc || !(ifc->flags & CX_IFACE_WORKLOAD))
		/* Attached but not (or no longer) an endpoint: fail closed. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_NO_ENDPOINT);

	eth = cx_skb_data(skb);
	if ((void *)(eth + 1) > cx_skb_data_end(skb))
		/* Shorter than an Ethernet header. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);

	if (ifc->flags & CX_IFACE_CHECK_MAC && !cx_mac_eq(eth->h_source, ifc->mac))
		/* Source MAC is not the endpoint's. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_SPOOF_MAC);
	if (skb->vlan_present || eth->h_proto == bpf_htons(ETH_P_8021Q) || eth->h_proto == bpf_htons(ETH_P_8021AD))
		/* A tagged frame: the kernel moves an outer tag into
		 * skb->vlan_tci before this hook, so the rest of the frame
		 * looks untagged. A routed endpoint has no VLANs; forwarding it
		 * as untagged would let it reach a VLAN it is not on. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_VLAN);

	switch (eth->h_proto) {
	case bpf_htons(ETH_P_ARP):
		return cx_from_wl_arp(skb, ifc);
	case bpf_htons(ETH_P_IP):
		return cx_from_wl_ip4(skb, ifc);
	case bpf_htons(ETH_P_IPV6):
		return cx_from_wl_ip6(skb, ifc);
	}
	/* VLAN tags, LLDP, raw L2 protocols: a routed endpoint has no business
	 * sending them to the host. */
	return cx_drop(skb, ifindex, CX_REASON_DROP_UNSUPPORTED);
}

static __attribute__((noinline)) int cx_from_wl_arp(struct __sk_buff *skb, const struct cx_iface *ifc)
{
	__u32 ifindex = skb->ifindex;
	struct ethhdr *eth = cx_skb_data(skb);
	struct hdr_cursor c = { .pos = eth + 1 };
	void *data_end = cx_skb_data_end(skb);
	struct cx_arp_eth *arp;
	struct cx_route *rt;
	__be32 spa, tpa;

	arp = parse_arp(&c, data_end);
	if (!arp || (void *)(eth + 1) > data_end)
		/* Not Ethernet/IPv4 ARP, or cut short: nothing a workload needs. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);

	if (ifc->flags & CX_IFACE_CHECK_MAC && !cx_mac_eq(arp->sha, ifc->mac))
		/* ARP poisoning: the sender claims a MAC that is not the endpoint's. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_SPOOF_MAC);

	__builtin_memcpy(&spa, arp->spa, 4);
	__builtin_memcpy(&tpa, arp->tpa, 4);

	if (arp->op == bpf_htons(CX_ARP_OP_REQUEST) && spa == 0)
		/* Duplicate-address probe: it must go unanswered to succeed. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_ARP_IGNORED);

	rt = cx_route_v4(spa);
	if (!cx_owned_by(rt, ifindex))
		/* The sender IP is not the endpoint's: ARP spoofing. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_SPOOF_IP);

	if (arp->op == bpf_htons(CX_ARP_OP_REPLY))
		/* The workload answering the host's own ARP request. */
		return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
	if (arp->op != bpf_htons(CX_ARP_OP_REQUEST))
		/* RARP/InARP opcodes have no use on a routed link. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);

	rt = cx_route_v4(tpa);
	if (cx_owned_by(rt, ifindex))
		/* A gratuitous ARP or a request for its own address: no one else
		 * may claim it, so there is nothing to answer. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_ARP_IGNORED);

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

static __attribute__((noinline)) int cx_from_wl_ip4(struct __sk_buff *skb, const struct cx_iface *ifc)
{
	struct hdr_cursor c = { .pos = cx_skb_data(skb) + ETH_HLEN };
	void *data_end = cx_skb_data_end(skb);
	__u32 ifindex = skb->ifindex, slot = ifc->counter_slot, len = skb->len, start, src_flags = 0;
	struct cx_dst dst = {};
	struct cx_flow f = {};
	int kind;
	struct cx_node_config *cfg;
	struct cx_tuple *t = cx_tuple_slot(CX_TUPLE_PACKET);
	struct cx_route *rt;
	struct iphdr *iph;
	int nat;

	iph = parse_iphdr(&c, data_end, skb->len - ETH_HLEN);
	if (!iph)
		/* Truncated or invalid IPv4 header: never forward it. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
	if (iph->saddr == 0)
		return cx_from_wl_dhcp(skb, ifc, iph, &c, data_end);
	cfg = cx_get_config();
	if (!t)
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_HELPER, len); /* cannot happen */

	kind = cx_tuple_of(skb, t);
	if (kind == CX_TUPLE_FLOW)
		cx_flow_lookup(t, &f, 0);
	/* The established-flow fast path of a translated flow: one that
	 * started on this interface had its source checked then, and its
	 * route is cached in its entry until the routes change: one hash
	 * lookup, no LPM. TTL 1 goes the slow way (the host stack answers it);
	 * so does a SYN reusing a closed flow's ports (a new flow, policy
	 * included). */
	if (f.nat && cfg && cfg->route_gen && f.nat->ifindex == ifindex && f.nat->route_gen == cfg->route_gen &&
	    iph->ttl > 1 && !cx_flow_closed_syn(t, &f)) {
		if (cx_nat_seen(f.nat, t, len))
			return cx_nat_drop(skb, ifindex, CX_NAT_ERR_TCP_WINDOW, len);
		if (cx_nat_apply4(skb, t, f.nat))
			return cx_nat_drop(skb, ifindex, CX_NAT_ERR_HELPER, len);
		return cx_from_wl_route(skb, ifindex, slot, len, &f.nat->route, CX_NAT_DONE);
	}

	/* A tracked flow's side that was checked on this interface before
	 * skips the source check: its source was the endpoint's then, and
	 * an entry is only ever written for a checked one. */
	if (!(f.ct && (f.side ? f.ct->side[1].ifindex : f.ct->side[0].ifindex) == ifindex &&
	      !cx_flow_closed_syn(t, &f))) {
		rt = cx_route_v4(iph->saddr);
		if (!cx_owned_by(rt, ifindex))
			/* Source address is not one of the endpoint's ipNetworks. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_SPOOF_IP);
		src_flags = rt->flags;
		if (f.ct) {
			/* This side's first packet from here: later ones skip the check. */
			if (f.side)
				f.ct->side[1].ifindex = ifindex;
			else
				f.ct->side[0].ifindex = ifindex;
		}
	}
	if (iph->ttl <= 1) {
		/* Expiring here, wherever it goes: the host stack sends the
		 * time-exceeded, quoting the packet as the workload sent it.
		 * So before any translation: SNAT'd to the node's own address,
		 * it would be a martian to that stack, and no ICMP would come.
		 * Not before policy, though: to the host's own addresses the
		 * stack delivers it whatever its TTL (endpointToHostAction), and
		 * a new flow anywhere else is the egress policy's to allow. */
		int local;

		if (!cx_flow_tracked(&f) && cx_policy_flow(skb, t, ifindex, ifc, len, &local, NULL))
			return cx_nat_drop(skb, ifindex, CX_NAT_ERR_POLICY, len);
		return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	}

	start = CX_START_FIP | CX_START_WORKLOAD | CX_START_TRACK | CX_START_V4;
	if (src_flags & CX_RT_F_NAT_OUTGOING)
		/* (A flow that skipped the source check is tracked already.) */
		start |= CX_START_NAT_OUTGOING;
	nat = cx_nat_policed(skb, t, start, ifindex, ifc, len, kind, &f, &dst);
	if (nat < 0)
		return cx_nat_drop(skb, ifindex, nat, len);

	data_end = cx_skb_data_end(skb);
	iph = cx_skb_data(skb) + ETH_HLEN;
	if ((void *)(iph + 1) > data_end)
		/* Cannot happen: parsed above; the verifier wants it. */
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_MALFORMED, len);

	rt = cx_dst_route(&dst, &t->daddr); /* looked up once, unless translated */
	if (rt && cx_route_cacheable(rt)) {
		if (f.nat && cfg && cfg->route_gen) {
			/* Later packets of this direction take the fast path. */
			f.nat->route = *rt;
			f.nat->ifindex = ifindex;
			f.nat->route_gen = cfg->route_gen;
		}
		return cx_from_wl_route(skb, ifindex, slot, len, rt, nat);
	}
	if (nat == CX_NAT_DONE && !rt && cfg && iph->saddr == cx_addr_ip4(cfg->node_addr)) {
		/* natOutgoing: from the node's address, the host stack would
		 * take it for a martian; it is routed to its destination here. */
		struct cx_route ext = { .type = CX_RT_REMOTE_WORKLOAD, .encap = CX_ENCAP_NONE };

		cx_addr_v4(ext.next_hop, iph->daddr);
		if (f.nat && cfg->route_gen) {
			/* The flow's later packets take the fast path too. */
			f.nat->route = ext;
			f.nat->ifindex = ifindex;
			f.nat->route_gen = cfg->route_gen;
		}
		return cx_to_node(skb, ifindex, slot, &ext, 0, 0);
	}
	return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
}

/* cx_from_wl_dhcp decides a workload's IPv4 packet from 0.0.0.0: the only
 * one it may send is a DHCP request (UDP 68 -> 67) while it has no address,
 * broadcast or to its gateway (the host side's MAC), from the endpoint's own
 * MAC and asking for that MAC. It goes to the host, whose DHCP server
 * answers; everything else from 0.0.0.0 is spoofing. */
static __always_inline int cx_from_wl_dhcp(struct __sk_buff *skb, const struct cx_iface *ifc, struct iphdr *iph,
					   struct hdr_cursor *c, void *data_end)
{
	__u32 ifindex = skb->ifindex;
	struct ethhdr *eth = cx_skb_data(skb);
	struct cx_bootp *bootp;
	struct udphdr *udp;
	int bcast;

	if ((void *)(eth + 1) > data_end)
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
	if (iph->protocol != IPPROTO_UDP || iph->frag_off & bpf_htons(CX_IP_MF_OFFSET))
		/* Nothing but DHCP comes from an address nobody owns. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_SPOOF_IP);
	udp = parse_udphdr(c, data_end);
	if (!udp || udp->source != bpf_htons(CX_DHCP_CLIENT_PORT) || udp->dest != bpf_htons(CX_DHCP_SERVER_PORT))
		/* UDP from 0.0.0.0 that is not a DHCP client's request. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_SPOOF_IP);
	bcast = iph->daddr == CX_IP4_BROADCAST;
	if (bcast ? !cx_mac_is_bcast(eth->h_dest) : !cx_mac_eq(eth->h_dest, ifc->host_mac))
		/* Neither broadcast nor to the gateway (the host side): a
		 * request meant for someone else's server. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_SPOOF_IP);
	if (!bcast) {
		struct cx_identity *id = cx_identity_v4(iph->daddr);

		if (!id || !(id->flags & CX_ID_HOST))
			/* Unicast, but not to the host (a subnet's gateway IP,
			 * the server a lease names): from 0.0.0.0 to anyone
			 * else is no renewal. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_SPOOF_IP);
	}
	bootp = (void *)(udp + 1);
	if ((void *)(bootp + 1) > data_end)
		/* Too short for a DHCP message. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
	if (bootp->op != CX_BOOTREQUEST || bootp->htype != 1 || bootp->hlen != CX_ETH_ALEN)
		/* Not an Ethernet client's request. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
	if (bootp->giaddr)
		/* A relay agent's address: a workload posing as a relay, to be
		 * leased an address of another subnet. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_SPOOF_IP);
	if (!cx_mac_eq(bootp->chaddr, eth->h_source))
		/* A lease asked for another MAC (pool exhaustion, or a lease
		 * stolen for another instance). The frame's own source MAC was
		 * checked against the endpoint's before. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_SPOOF_MAC);
	return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
}

/* cx_route_cacheable says whether a route may be kept in a conntrack entry
 * for the fast path: the ones that end in a delivery or a tunnel. */
static __always_inline int cx_route_cacheable(const struct cx_route *rt)
{
	return rt->type == CX_RT_LOCAL_WORKLOAD || rt->type == CX_RT_REMOTE_WORKLOAD;
}

/* cx_from_wl_route sends a workload's (translated) IPv4 packet on by rt,
 * which is a cacheable route, counted on ifindex (counter slot slot). */
static __always_inline int cx_from_wl_route(struct __sk_buff *skb, __u32 ifindex, __u32 slot, __u32 len,
					    const struct cx_route *rt, int nat)
{
	void *data_end = cx_skb_data_end(skb);
	struct iphdr *iph = cx_skb_data(skb) + ETH_HLEN;

	if ((void *)(iph + 1) > data_end)
		/* Cannot happen: parsed before; the verifier wants it. */
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_MALFORMED, len);
	if (rt->type == CX_RT_REMOTE_WORKLOAD)
		return cx_to_node(skb, ifindex, slot, rt, 0, 0);
	/* Back to the sender only when translated: a workload to its own
	 * floating IP (hairpin). */
	if (rt->ifindex == ifindex && nat != CX_NAT_DONE)
		return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	{
		/* To a workload beside it: the packet must fit the workloads'
		 * MTU, as Linux's forwarding checks the output device's (a
		 * workload that raised its own MTU sends bigger ones). GSO
		 * packets are segments of that size already. */
		struct cx_node_config *cfg = cx_get_config();
		__u32 tot = bpf_ntohs(iph->tot_len);

		if (cfg && cfg->workload_mtu && !skb->gso_size && tot > cfg->workload_mtu) {
			if (!(iph->frag_off & bpf_htons(CX_IP_DF)) || iph->ihl != 5 || tot < CX_ICMP_KEEP)
				/* Fragmenting is not done here; with options there is
				 * no room in our ICMP. */
				return cx_drop_len(skb, ifindex, CX_REASON_DROP_TOO_BIG, len);
			if (cx_icmp_frag_needed(skb, cx_addr_ip4(cfg->node_addr), cfg->workload_mtu))
				/* The helpers refused to rewrite the packet into the ICMP. */
				return cx_drop_len(skb, ifindex, CX_REASON_DROP_HELPER, len);
			return cx_verdict_slot(slot, ifindex, CX_REASON_ICMP_FRAG_NEEDED, len, bpf_redirect(ifindex, 0));
		}
	}
	if (cx_ip4_forward(skb, iph))
		return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	return cx_deliver_local(skb, ifindex, slot, len, CX_REASON_DELIVER_LOCAL, rt);
}

static __attribute__((noinline)) int cx_from_wl_ip6(struct __sk_buff *skb, const struct cx_iface *ifc)
{
	struct hdr_cursor c = { .pos = cx_skb_data(skb) + ETH_HLEN };
	void *data_end = cx_skb_data_end(skb);
	__u32 ifindex = skb->ifindex, src_flags;
	struct ipv6hdr *ip6;
	struct cx_route *rt;
	int e2h_drop;
	__u8 *l4;

	ip6 = parse_ipv6hdr(&c, data_end, skb->len - ETH_HLEN);
	if (!ip6)
		/* Truncated or invalid IPv6 header: never forward it. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);

	l4 = c.pos; /* no extension headers are walked yet */
	if (ip6->nexthdr == IPPROTO_ICMPV6) {
		struct cx_nd *nd = parse_nd(&c, data_end);

		if (nd && nd->type == CX_ICMPV6_NS)
			return cx_from_wl_ns(skb, ifc, ip6, nd);
	}

	{
		struct cx_node_config *cfg = cx_get_config();
		int ndp = 0, svc = 0;

		if ((void *)(l4 + 4) <= data_end) {
			__u16 dport = (__u16)l4[2] << 8 | l4[3];

			/* Neighbour discovery (RS, RA, NS, NA, redirect) is only
			 * ever sent with hop limit 255 (RFC 4861). */
			ndp = ip6->nexthdr == IPPROTO_ICMPV6 && l4[0] >= 133 && l4[0] <= 137 && ip6->hop_limit == 255;
			/* The instance's own DHCPv6, DNS and metadata service
			 * (the agent's proxy on fe80::a9fe:a9fe), as for IPv4. */
			svc = (ip6->nexthdr == IPPROTO_UDP && (dport == CX_DHCP6_SERVER_PORT || dport == CX_DNS_PORT)) ||
			      (ip6->nexthdr == IPPROTO_TCP &&
			       (dport == CX_DNS_PORT || (dport == 80 && cx_is_metadata6(&ip6->daddr))));
		}
		e2h_drop = cfg && cfg->endpoint_to_host == CX_E2H_DROP && !ndp && !svc;

		if (ndp && l4[0] == CX_ICMPV6_NA) {
			struct cx_nd *na = (void *)l4;

			if ((void *)(na + 1) > data_end)
				/* Too short for its target. */
				return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
			/* Every address but the workload's own is the host's on
			 * this link (cx_from_wl_ns answers for it): an NA for any
			 * other (the gateway fe80::1, a neighbour's address) is an
			 * attempt to take it over. A link-local target is the
			 * workload's own (the model does not know those) unless
			 * it is the gateway's. */
			if (!cx_owned_by(cx_route_v6(&na->target), ifindex) &&
			    (!cx_is_link_local6(&na->target) || cx_is_gateway6(&na->target)))
				return cx_drop(skb, ifindex, CX_REASON_DROP_SPOOF_IP);
		}

		/* Link-local and unspecified sources (NDP, DAD) only ever talk
		 * to the host on this link; the host stack answers them. */
		if (cx_is_link_local6(&ip6->saddr) || cx_is_unspecified6(&ip6->saddr)) {
			if (e2h_drop) {
				/* endpointToHostAction Drop: the host is off limits,
				 * through its link-local address too. */
				cx_rule_hit(ifindex, CX_RULE_HOST_DROP, skb->len);
				return cx_drop(skb, ifindex, CX_REASON_DROP_POLICY);
			}
			return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
		}

		rt = cx_route_v6(&ip6->saddr);
		if (!cx_owned_by(rt, ifindex))
			/* Source address is not one of the endpoint's ipNetworks. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_SPOOF_IP);
		if (ndp)
			/* A global-source NA or RS: the host's, whatever the policy. */
			return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
		src_flags = rt->flags;
	}
	if (e2h_drop && (ip6->daddr.in6_u.u6_addr8[0] == 0xff ||
			 ((rt = cx_route_v6(&ip6->daddr)) && rt->type == CX_RT_HOST))) {
		/* endpointToHostAction Drop: to one of the host's addresses,
		 * or multicast (which only the host on this link receives). */
		cx_rule_hit(ifindex, CX_RULE_HOST_DROP, skb->len);
		return cx_drop(skb, ifindex, CX_REASON_DROP_POLICY);
	}
	return cx_from_wl_ip6_flow(skb, ifc, src_flags);
}

/* cx_from_wl_ip6_flow is conntrack, policy and NAT for a workload's IPv6
 * packet whose source was checked (src_flags: its route's), as
 * cx_from_wl_ip4 does them for IPv4 (one code path: cx_nat_policed): then
 * delivered to a workload beside it, sent to another node, sent out
 * translated (natOutgoing), or handed to the host stack, which routes it
 * on. */
static __always_inline int cx_from_wl_ip6_flow(struct __sk_buff *skb, const struct cx_iface *ifc, __u32 src_flags)
{
	__u32 ifindex = skb->ifindex, slot = ifc->counter_slot, len = skb->len;
	__u32 start = CX_START_WORKLOAD | CX_START_TRACK | CX_START_V6;
	struct cx_tuple *t = cx_tuple_slot(CX_TUPLE_PACKET);
	struct cx_node_config *cfg;
	struct cx_dst dst = {};
	struct ipv6hdr *ip6;
	struct cx_route *rt;
	void *data_end;
	int nat;

	if (!t)
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_HELPER, len); /* cannot happen */
	if (src_flags & CX_RT_F_NAT_OUTGOING)
		start |= CX_START_NAT_OUTGOING;
	nat = cx_nat_policed(skb, t, start, ifindex, ifc, len, -1, NULL, &dst);
	if (nat < 0)
		return cx_nat_drop(skb, ifindex, nat, len);
	data_end = cx_skb_data_end(skb);
	ip6 = cx_skb_data(skb) + ETH_HLEN;
	if ((void *)(ip6 + 1) > data_end)
		/* Cannot happen: parsed before; the verifier wants it. */
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_MALFORMED, len);
	rt = cx_dst_route(&dst, &t->daddr);
	if (rt && rt->type == CX_RT_REMOTE_WORKLOAD)
		return cx_to_node(skb, ifindex, slot, rt, 0, 1);
	cfg = cx_get_config();
	if (nat == CX_NAT_DONE && !rt && cfg && cx_addr_eq(&t->saddr, (const struct in6_addr *)cfg->node_addr6)) {
		/* natOutgoing: from the node's address, the host stack would
		 * not forward it; it is routed to its destination over the
		 * IPv6 underlay here, as IPv4 is (cx_from_wl_ip4). */
		struct cx_route ext = { .type = CX_RT_REMOTE_WORKLOAD, .encap = CX_ENCAP_NONE };

		__builtin_memcpy(ext.next_hop, &t->daddr, 16);
		return cx_to_node(skb, ifindex, slot, &ext, 0, 1);
	}
	if (!rt || rt->type != CX_RT_LOCAL_WORKLOAD || rt->ifindex == ifindex || ip6->hop_limit <= 1)
		/* The host stack routes it on, or sends the time-exceeded
		 * (policy has allowed the flow). */
		return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	{
		/* To a workload beside it: the packet must fit the workloads'
		 * MTU, as for IPv4 (cx_from_wl_route); IPv6 gets a Packet Too
		 * Big, whatever it carries. */
		struct cx_node_config *cfg = cx_get_config();
		__u32 tot = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);

		if (cfg && cfg->workload_mtu && !skb->gso_size && tot > cfg->workload_mtu) {
			if (tot < CX_ICMP6_KEEP)
				return cx_drop_len(skb, ifindex, CX_REASON_DROP_TOO_BIG, len);
			if (cx_icmp6_too_big(skb, cfg->workload_mtu))
				/* The helpers refused to rewrite the packet into the ICMPv6. */
				return cx_drop_len(skb, ifindex, CX_REASON_DROP_HELPER, len);
			return cx_verdict_slot(slot, ifindex, CX_REASON_ICMP_FRAG_NEEDED, len, bpf_redirect(ifindex, 0));
		}
	}
	ip6->hop_limit--; /* no IPv6 header checksum to fix */
	return cx_deliver_local(skb, ifindex, slot, len, CX_REASON_DELIVER_LOCAL, rt);
}

/* cx_from_wl_ns answers a workload's neighbour solicitation for any address
 * but its own with the host side's MAC, as cx_from_wl_arp does for IPv4: the
 * gateway (fe80::1 or any other) is always the local host, with no proxy NDP. */
static __always_inline int cx_from_wl_ns(struct __sk_buff *skb, const struct cx_iface *ifc, struct ipv6hdr *ip6,
					 struct cx_nd *nd)
{
	__u32 ifindex = skb->ifindex, len = skb->len; /* counted as it arrived */
	struct in6_addr target, src;
	struct ethhdr *eth;
	struct cx_route *rt;
	void *data, *data_end;
	__u8 *opt;
	struct {
		__be32 len;
		__be32 nexthdr;
	} pseudo = { .len = bpf_htonl(CX_NA_LEN), .nexthdr = bpf_htonl(IPPROTO_ICMPV6) };
	__u64 sum;

	if (nd->code != 0 || ip6->hop_limit != 255)
		/* Not from the link itself (RFC 4861 7.1.1). */
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
	__builtin_memcpy(&target, &nd->target, sizeof(target));
	__builtin_memcpy(&src, &ip6->saddr, sizeof(src));
	if (cx_is_unspecified6(&src))
		/* Duplicate-address detection: it must go unanswered to succeed. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_ND_IGNORED);
	if (!cx_is_link_local6(&src) && !cx_owned_by(cx_route_v6(&src), ifindex))
		/* A global source that is not the endpoint's: NDP spoofing. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_SPOOF_IP);
	rt = cx_route_v6(&target);
	if (cx_owned_by(rt, ifindex) || cx_is_unspecified6(&target))
		/* Its own address: no one else may claim it. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_ND_IGNORED);

	if (skb->len != ETH_HLEN + sizeof(struct ipv6hdr) + CX_NA_LEN &&
	    bpf_skb_change_tail(skb, ETH_HLEN + sizeof(struct ipv6hdr) + CX_NA_LEN, 0))
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_HELPER, len);

	data = cx_skb_data(skb);
	data_end = cx_skb_data_end(skb);
	eth = data;
	ip6 = (void *)(eth + 1);
	nd = (void *)(ip6 + 1);
	opt = (void *)(nd + 1);
	if ((void *)(opt + 8) > data_end)
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_MALFORMED, len);

	__builtin_memcpy(eth->h_dest, eth->h_source, CX_ETH_ALEN);
	__builtin_memcpy(eth->h_source, ifc->host_mac, CX_ETH_ALEN);
	ip6->payload_len = bpf_htons(CX_NA_LEN);
	ip6->nexthdr = IPPROTO_ICMPV6;
	ip6->hop_limit = 255;
	__builtin_memcpy(&ip6->saddr, &target, sizeof(target));
	__builtin_memcpy(&ip6->daddr, &src, sizeof(src));
	nd->type = CX_ICMPV6_NA;
	nd->code = 0;
	nd->checksum = 0;
	nd->flags = bpf_htonl(0xe0000000); /* router, solicited, override */
	opt[0] = 2;                        /* target link-layer address */
	opt[1] = 1;                        /* in units of 8 bytes */
	__builtin_memcpy(&opt[2], ifc->host_mac, CX_ETH_ALEN);

	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ip6->saddr, 2 * sizeof(struct in6_addr), 0);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&pseudo, sizeof(pseudo), sum);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)nd, CX_NA_LEN, sum);
	nd->checksum = cx_csum_fold(sum);
	return cx_verdict_len(ifindex, CX_REASON_ND_REPLY, len, bpf_redirect(ifindex, 0));
}
