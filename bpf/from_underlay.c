// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* calyx_from_underlay: TC ingress on the underlay interface: tunnel
 * packets from other nodes, workload traffic routed here directly, floating
 * IPs from outside, and the host's own traffic, let go first. */
#include "policy.h"
#include "prefilter.h"

/* The program comes first; the paths it takes follow, in the order it
 * takes them. */
static __always_inline int cx_underlay_host_only(const struct cx_node_config *cfg, struct iphdr *iph, void *data_end);
static __always_inline int cx_nat_port(const struct cx_node_config *cfg, __u16 port);
static __always_inline int cx_nat_reply6(const struct cx_node_config *cfg, struct ipv6hdr *ip6, void *data_end);
static __always_inline int cx_decap(struct __sk_buff *skb, const struct cx_node_config *cfg, struct iphdr *outer,
				    struct hdr_cursor *c, void *data_end);

static __attribute__((noinline)) int cx_from_underlay4(struct __sk_buff *skb);
static __attribute__((noinline)) int cx_from_underlay6(struct __sk_buff *skb);

/* cx_local_source4 is cx_local_source for an IPv4 address. */
static __always_inline int cx_local_source4(__be32 saddr)
{
	struct in6_addr a;

	cx_addr_v4(a.in6_u.u6_addr8, saddr);
	return cx_local_source(&a);
}

/* cx_from_underlay6 decides an IPv6 packet from the underlay: one with a
 * source that is this host's own or a local workload's is forged (as for
 * IPv4); a tunnel packet from another node over the IPv6 underlay (IPv6 in
 * IPv6, or VXLAN over IPv6, to this node's IPv6 address) is decapsulated as
 * cx_decap does; what is for a local workload then (or routed here
 * directly) passes its ingress policy and is delivered; the rest is the
 * host's. */
static __attribute__((noinline)) int cx_from_underlay6(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex, len = skb->len, slot = CX_SLOT_IF_UNDERLAY;
	__u32 reason = CX_REASON_DELIVER_LOCAL, room = 0;
	struct cx_tuple *t = cx_tuple_slot(CX_TUPLE_PACKET);
	struct cx_node_config *cfg = cx_get_config();
	struct ipv6hdr *ip6, *inner;
	struct in6_addr node;
	struct cx_route *rt;
	void *data, *data_end;
	int nat;

	cx_pull(skb, CX_PULL_LEN);
	data = cx_skb_data(skb);
	data_end = cx_skb_data_end(skb);
	ip6 = data + ETH_HLEN;
	if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
		/* The host stack drops it too; count it here. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
	if (cx_is_v4mapped(&ip6->saddr) || cx_is_v4mapped(&ip6->daddr))
		/* Never on the wire (RFC 4291 2.5.5.2). */
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
	if (cx_local_source(&ip6->saddr))
		/* From the wire with a source that is this host's own or a
		 * local workload's: forged. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_UNDERLAY_SPOOF);
	if (!cfg || !cx_addr_eq(&ip6->daddr, (const struct in6_addr *)cfg->node_addr6) ||
	    cx_is_unspecified6(&ip6->daddr)) {
		/* Not to this node: workload traffic routed here directly, or
		 * the host's. */
		rt = cx_route_addr(&ip6->daddr);
		if (!rt || rt->type != CX_RT_LOCAL_WORKLOAD)
			return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
		goto deliver;
	}

	/* To this node's IPv6 address: a tunnel packet, or the host's own. */
	if (ip6->nexthdr == IPPROTO_IPV6) {
		room = CX_IP6IP6_OVERHEAD;
		reason = CX_REASON_DECAP_IPIP;
	} else if (ip6->nexthdr == IPPROTO_UDP) {
		struct udphdr *udp = (void *)(ip6 + 1);
		struct cx_vxlanhdr *vx = (void *)(udp + 1);
		struct ethhdr *ieth = (void *)(vx + 1);

		if ((void *)(udp + 1) > data_end || udp->dest != bpf_htons((__u16)cfg->vxlan_port))
			goto untunnelled;
		if ((void *)(ieth + 1) > data_end)
			/* Too short for VXLAN and the inner Ethernet header. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
		if (!(vx->flags & CX_VXLAN_FLAG_I) ||
		    (vx->vni & bpf_htonl(0xffffff00)) != bpf_htonl(cfg->vxlan_vni << 8))
			/* Another overlay's traffic, or not VXLAN at all. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_TUNNEL_VNI);
		if (ieth->h_proto != bpf_htons(ETH_P_IPV6))
			/* The IPv6 underlay carries IPv6 workloads only. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_UNSUPPORTED);
		room = CX_VXLAN6_OVERHEAD;
		reason = CX_REASON_DECAP_VXLAN;
	} else {
		goto untunnelled;
	}
	rt = cx_route_addr(&ip6->saddr);
	if (!rt || rt->type != CX_RT_NODE)
		/* Not from a node: someone injecting packets into workloads. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_TUNNEL_SRC);
	__builtin_memcpy(&node, &ip6->saddr, sizeof(node));
	inner = data + ETH_HLEN + (room & 0x7f);
	if ((void *)(inner + 1) > data_end || inner->version != 6 || cx_is_v4mapped(&inner->saddr) ||
	    cx_is_v4mapped(&inner->daddr))
		/* The inner packet is cut short, not IPv6, or carries
		 * addresses no IPv6 packet has. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
	if (!cx_inner_source_ok(&inner->saddr, 0, &node))
		/* A node tunnelling a source that is not its to use. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_TUNNEL_INNER_SRC);
	rt = cx_route_addr(&inner->daddr);
	if (!rt || (rt->type != CX_RT_LOCAL_WORKLOAD && rt->type != CX_RT_HOST))
		/* Decapsulated traffic is never forwarded on. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_NO_ROUTE);
	/* As cx_decap does for IPv4 (the outer Ethernet type stays IPv6's). */
	if (bpf_skb_adjust_room(skb, -(__s32)room, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_NO_CSUM_RESET | BPF_F_ADJ_ROOM_DECAP_L3_IPV6))
		/* The helper refused: a GSO type it cannot resize, or no memory. */
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_HELPER, len);
	if (reason == CX_REASON_DECAP_VXLAN)
		bpf_csum_level(skb, BPF_CSUM_LEVEL_DEC);

deliver:
	if (!t)
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_HELPER, len); /* cannot happen */
	nat = cx_nat_policed(skb, t, CX_START_V6, 0, NULL, len, -1, NULL, NULL);
	if (nat < 0)
		return cx_nat_drop(skb, ifindex, nat, len);
	if (rt->type == CX_RT_HOST)
		/* For this host itself: its stack takes the inner packet. */
		return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
delivered:
	data_end = cx_skb_data_end(skb);
	ip6 = cx_skb_data(skb) + ETH_HLEN;
	if ((void *)(ip6 + 1) > data_end)
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_MALFORMED, len);
	if (ip6->hop_limit <= 1)
		/* Expiring: the host stack sends the time-exceeded. */
		return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	ip6->hop_limit--;
	return cx_deliver_local(skb, ifindex, slot, len, reason, rt);

untunnelled:
	/* To this node's address, no tunnel: the replies of natOutgoing
	 * (NAT66) flows go back to their workload; the rest is the host's. */
	if (!t || !cx_nat_reply6(cfg, ip6, data_end))
		return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	nat = cx_nat_policed(skb, t, CX_START_V6 | CX_START_NAT_FIRST, 0, NULL, len, -1, NULL, NULL);
	if (nat < 0)
		return cx_nat_drop(skb, ifindex, nat, len);
	rt = nat == CX_NAT_DONE ? cx_route_addr(&t->daddr) : NULL;
	if (!rt || rt->type != CX_RT_LOCAL_WORKLOAD)
		/* Not a translated flow's, or its workload is gone. */
		return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	reason = CX_REASON_DELIVER_LOCAL;
	goto delivered;
}

/* calyx_from_underlay runs at TC ingress on the underlay interface: tunnel
 * packets from other nodes are decapsulated, workload traffic routed here
 * directly is delivered, and everything else goes to the host stack. Each
 * family's path is a BPF-to-BPF call (cx_from_underlay4, _6): one body
 * holding both would outgrow the 16-bit reach of the program's jumps, and
 * this frame stays small, so each call's stack fits beside it. */
SEC("tc")
int calyx_from_underlay(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex, slot = CX_SLOT_IF_UNDERLAY;
	struct cx_node_config *cfg;

	cfg = cx_get_config();
	if (cfg && (cfg->flags & CX_CFG_PREFILTER_TC)) {
		cx_pull(skb, ETH_HLEN + sizeof(struct ipv6hdr));
		if (cx_prefiltered(cx_skb_data(skb), cx_skb_data_end(skb)))
			/* Config.prefilterDeny: this source may not reach the host or its workloads. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_PREFILTER);
	}
	if (skb->vlan_present || !cfg || !cx_addr_ip4(cfg->node_addr) ||
	    (skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6)))
		/* ARP and the rest are the host's, and everything until this
		 * node is configured; so are tagged frames on a trunk (the
		 * kernel moved the tag into skb->vlan_tci): calyx's underlay is
		 * this interface's untagged traffic, or a VLAN device of its own
		 * as the underlay. */
		return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, skb->len, TC_ACT_OK);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return cx_from_underlay6(skb);
	return cx_from_underlay4(skb);
}

/* cx_from_underlay4 decides an IPv4 packet from the underlay of a
 * configured node. */
static __attribute__((noinline)) int cx_from_underlay4(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex, slot = CX_SLOT_IF_UNDERLAY;
	struct cx_node_config *cfg = cx_get_config();
	struct hdr_cursor c;
	struct ethhdr *eth;
	struct iphdr *iph;
	struct cx_route *rt;
	void *data_end;

	if (!cfg)
		/* Cannot happen: the caller read it. */
		return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, skb->len, TC_ACT_OK);
	cx_pull(skb, CX_UNDERLAY_PULL_LEN);

	data_end = cx_skb_data_end(skb);
	c.pos = cx_skb_data(skb);
	eth = parse_ethhdr(&c, data_end);
	if (!eth)
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
	iph = parse_iphdr(&c, data_end, skb->len - ETH_HLEN);
	if (!iph)
		/* The host stack would drop it too; count it here. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
	if (cx_local_source4(iph->saddr))
		/* From the wire with a source that is this host's own, a local
		 * workload's or a local floating IP's: forged. Checked before
		 * anything goes to the host stack too: its replies would reach
		 * the workload whose address was forged (no rp_filter need be
		 * on). */
		return cx_drop(skb, ifindex, CX_REASON_DROP_UNDERLAY_SPOOF);
	if (cx_underlay_host_only(cfg, iph, data_end))
		/* The host's own traffic (storage, migration, SSH): no
		 * conntrack, NAT or policy lookup. */
		return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, skb->len, TC_ACT_OK);
	if (iph->protocol == IPPROTO_IPIP || iph->protocol == IPPROTO_IPV6)
		return cx_decap(skb, cfg, iph, &c, data_end);
	if (iph->protocol == IPPROTO_UDP) {
		struct udphdr *udp = c.pos;

		if ((void *)(udp + 1) <= data_end && udp->dest == bpf_htons((__u16)cfg->vxlan_port))
			return cx_decap(skb, cfg, iph, &c, data_end);
	}

	{
		/* From outside: the flows of a floating IP whose instance is
		 * here start here (DNAT), and replies of natOutgoing flows go
		 * back to their workload. */
		__u32 len = skb->len;
		struct cx_tuple *t = cx_tuple_slot(CX_TUPLE_PACKET);
		struct cx_dst dst = {};
		int nat;

		if (!t)
			return cx_drop_len(skb, ifindex, CX_REASON_DROP_HELPER, len); /* cannot happen */
		nat = cx_nat_policed(skb, t, CX_START_FIP_HERE | CX_START_NAT_FIRST | CX_START_ORPHAN_HOST | CX_START_V4, 0, NULL, len,
				     -1, NULL, &dst);

		if (nat < 0)
			return cx_nat_drop(skb, ifindex, nat, len);
		data_end = cx_skb_data_end(skb);
		iph = cx_skb_data(skb) + ETH_HLEN;
		if ((void *)(iph + 1) > data_end)
			return cx_drop_len(skb, ifindex, CX_REASON_DROP_MALFORMED, len);

		/* Workload traffic a node routed here without encapsulation. */
		rt = cx_dst_route(&dst, &t->daddr);
		if (rt && rt->type == CX_RT_LOCAL_WORKLOAD) {
			if (cx_ip4_forward(skb, iph))
				return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
			return cx_deliver_local(skb, ifindex, slot, len, CX_REASON_DELIVER_LOCAL, rt);
		}
		if (nat == CX_NAT_DONE && rt && rt->type == CX_RT_REMOTE_WORKLOAD)
			/* Translated by an entry whose fixed IP lives on another
			 * node now (the instance moved): sent there. */
			return cx_to_node(skb, ifindex, slot, rt, 0, 0);
		if (nat == CX_NAT_NONE && rt && rt->type == CX_RT_FIP) {
			/* A floating IP whose instance runs on another node: sent
			 * there as it came, as the fixed IP's route says. That
			 * node translates it, and sees the replies. */
			struct cx_fip *fip = cx_fip_of(iph->daddr);

			if (fip && !(fip->flags & CX_FIP_LOCAL)) {
				rt = cx_route_v4(cx_addr_ip4(fip->fixed));
				if (rt && rt->type == CX_RT_REMOTE_WORKLOAD)
					return cx_to_node(skb, ifindex, slot, rt, 0, 0);
			}
			/* To a floating IP, but neither a flow this node knows
			 * nor one a packet like this may start (a TCP segment
			 * without SYN, an echo reply), or one whose instance has
			 * no route: never to the host stack, which would route
			 * it back out to the fabric that sent it here. */
			return cx_drop_len(skb, ifindex, CX_REASON_DROP_NO_ROUTE, len);
		}
		return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	}
}

/* cx_underlay_host_only says whether a packet from the underlay is the
 * host's own and cannot be calyx's: TCP or UDP, not a fragment, to this
 * node's address and to a port that is neither in the NAT port range (the
 * replies of natOutgoing flows and of the host's own flows to floating IPs
 * come to those) nor VXLAN's. Floating IPs, workloads and tunnels are other
 * addresses or that port. */
static __always_inline int cx_underlay_host_only(const struct cx_node_config *cfg, struct iphdr *iph, void *data_end)
{
	__u16 port;
	__u8 *l4 = (void *)(iph + 1);

	if (iph->daddr != cx_addr_ip4(cfg->node_addr) || iph->ihl != 5 ||
	    (iph->frag_off & bpf_htons(CX_IP_MF_OFFSET)) ||
	    (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP) || (void *)(l4 + 4) > data_end)
		return 0;
	port = (__u16)l4[2] << 8 | l4[3];
	if (iph->protocol == IPPROTO_UDP && port == cfg->vxlan_port)
		return 0;
	return !cx_nat_port(cfg, port);
}

/* cx_nat_port says whether port (host order) is in the NAT port range:
 * where the replies of translated flows come to the node's address. */
static __always_inline int cx_nat_port(const struct cx_node_config *cfg, __u16 port)
{
	__u16 pmin = CX_NAT_PORT_MIN, pmax = CX_NAT_PORT_MAX;

	if (cfg->nat_port_min && cfg->nat_port_max >= cfg->nat_port_min) {
		pmin = cfg->nat_port_min;
		pmax = cfg->nat_port_max;
	}
	return port >= pmin && port <= pmax;
}

/* cx_nat_reply6 says whether an IPv6 packet to this node's address that is
 * no tunnel packet may be for a natOutgoing (NAT66) flow: TCP or UDP to a
 * port of the NAT range, an echo reply, an ICMPv6 error. The rest (the
 * host's own SSH, NDP, pings) goes to the host with no lookup. */
static __always_inline int cx_nat_reply6(const struct cx_node_config *cfg, struct ipv6hdr *ip6, void *data_end)
{
	__u8 *l4 = (void *)(ip6 + 1);

	if ((void *)(l4 + 4) > data_end)
		return 0;
	if (ip6->nexthdr == IPPROTO_TCP || ip6->nexthdr == IPPROTO_UDP)
		return cx_nat_port(cfg, (__u16)l4[2] << 8 | l4[3]);
	return ip6->nexthdr == IPPROTO_ICMPV6 && (l4[0] == CX_ICMPV6_ECHO_REPLY || l4[0] < 128);
}

/* cx_inner_source_ok4 is cx_inner_source_ok for an IPv4 source. */
static __always_inline int cx_inner_source_ok4(__be32 saddr, __be32 node)
{
	struct in6_addr a;

	cx_addr_v4(a.in6_u.u6_addr8, saddr);
	return cx_inner_source_ok(&a, node, NULL);
}

/* cx_decap takes the outer headers off a tunnel packet from another node
 * and delivers the inner packet, IPv4 or IPv6 (6in4, protocol 41, or VXLAN
 * with an IPv6 inner frame). Only a packet between two nodes, to this one,
 * is accepted: anything else encapsulated is dropped, never passed to a
 * stack that might route it. A delivered packet is counted as decap-*, one
 * for the host's stack as pass-host. Both families share the policy and
 * delivery below (IPv6 is not translated). */
static __always_inline int cx_decap(struct __sk_buff *skb, const struct cx_node_config *cfg, struct iphdr *outer,
				    struct hdr_cursor *c, void *data_end)
{
	__u32 ifindex = skb->ifindex, len = skb->len, room, reason, slot = CX_SLOT_IF_UNDERLAY, start;
	__u64 decap_l3 = BPF_F_ADJ_ROOM_DECAP_L3_IPV4;
	struct cx_route *rt;
	struct iphdr *iph;
	void *data;
	int v6 = 0;

	if (outer->daddr != cx_addr_ip4(cfg->node_addr))
		/* Tunnelled to another address: this host is no tunnel router. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_TUNNEL_DST);
	rt = cx_route_v4(outer->saddr);
	if (!rt || rt->type != CX_RT_NODE)
		/* Not from a node: someone injecting packets into workloads. */
		return cx_drop(skb, ifindex, CX_REASON_DROP_TUNNEL_SRC);
	if (outer->ihl != 5 || outer->frag_off & bpf_htons(CX_IP_MF_OFFSET))
		/* Nodes send neither options nor fragments (DF is always set). */
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);

	if (outer->protocol == IPPROTO_IPIP || outer->protocol == IPPROTO_IPV6) {
		room = CX_IPIP_OVERHEAD;
		reason = CX_REASON_DECAP_IPIP;
		v6 = outer->protocol == IPPROTO_IPV6;
	} else {
		struct cx_vxlanhdr *vx;
		struct ethhdr *ieth;

		if (!parse_udphdr(c, data_end))
			/* Cannot happen: the caller read the port. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
		vx = parse_vxlanhdr(c, data_end);
		if (!vx)
			/* Too short for a VXLAN header. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
		/* The VNI's low byte is reserved: ignored on receipt (RFC 7348). */
		if (!(vx->flags & CX_VXLAN_FLAG_I) ||
		    (vx->vni & bpf_htonl(0xffffff00)) != bpf_htonl(cfg->vxlan_vni << 8))
			/* Another overlay's traffic, or not VXLAN at all. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_TUNNEL_VNI);
		ieth = parse_ethhdr(c, data_end);
		if (!ieth)
			/* Too short for the inner Ethernet header. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
		v6 = ieth->h_proto == bpf_htons(ETH_P_IPV6);
		if (!v6 && ieth->h_proto != bpf_htons(ETH_P_IP))
			/* Nodes tunnel IP only. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_UNSUPPORTED);
		room = CX_VXLAN_OVERHEAD;
		reason = CX_REASON_DECAP_VXLAN;
	}

	/* The inner packet is checked, and routed, before the outer headers
	 * go: a runt or a broken inner header is malformed (and the helper
	 * below never sees it), and a packet for nowhere is dropped as it
	 * came. c->pos is at ETH_HLEN + room (outer ihl is 5). */
	if (v6) {
		struct ipv6hdr *ip6 = parse_ipv6hdr(c, data_end, skb->len - ETH_HLEN - room);

		if (!ip6 || cx_is_v4mapped(&ip6->saddr) || cx_is_v4mapped(&ip6->daddr))
			/* The inner packet is cut short, not IPv6, or carries
			 * addresses no IPv6 packet has. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
		if (!cx_inner_source_ok(&ip6->saddr, outer->saddr, NULL))
			/* A node tunnelling a source that is not its to use. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_TUNNEL_INNER_SRC);
		rt = cx_route_addr(&ip6->daddr);
		if (!rt || (rt->type != CX_RT_LOCAL_WORKLOAD && rt->type != CX_RT_HOST))
			/* Decapsulated traffic is never forwarded on. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_NO_ROUTE);
		decap_l3 = BPF_F_ADJ_ROOM_DECAP_L3_IPV6;
	} else {
		iph = parse_iphdr(c, data_end, skb->len - ETH_HLEN - room);
		if (!iph)
			/* The inner packet is cut short or not IPv4. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
		if (!cx_inner_source_ok4(iph->saddr, outer->saddr))
			/* A node tunnelling a source that is not its to use: this
			 * host's, a local workload's, another node's or its workloads'. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_TUNNEL_INNER_SRC);
		rt = cx_route_v4(iph->daddr);
		if (rt && rt->type == CX_RT_FIP) {
			/* A floating IP from outside, forwarded by the node it reached
			 * to this one, its instance's, to be translated here. */
			struct cx_fip *fip = cx_fip_of(iph->daddr);

			if (!fip || !(fip->flags & CX_FIP_LOCAL))
				/* Its instance is not here: never forwarded on. */
				return cx_drop(skb, ifindex, CX_REASON_DROP_NO_ROUTE);
		} else if (!rt || (rt->type != CX_RT_LOCAL_WORKLOAD && rt->type != CX_RT_HOST)) {
			/* Decapsulated traffic is never forwarded on: a node only
			 * tunnels to the node that hosts the destination. */
			return cx_drop(skb, ifindex, CX_REASON_DROP_NO_ROUTE);
		}
	}

	/* FIXED_GSO: the inner segments keep the size the sender gave them.
	 * NO_CSUM_RESET: a checksum the NIC verified stays verified (the
	 * kernel would otherwise have the inner one computed again); for
	 * VXLAN the outer UDP checksum was its first level, gone with the
	 * outer headers. DECAP_L3_* names what is left (and makes
	 * skb->protocol match it). */
	if (bpf_skb_adjust_room(skb, -(__s32)room, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_NO_CSUM_RESET | decap_l3))
		/* The helper refused: a GSO type it cannot resize, or no memory. */
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_HELPER, len);
	if (reason == CX_REASON_DECAP_VXLAN)
		bpf_csum_level(skb, BPF_CSUM_LEVEL_DEC);

	data = cx_skb_data(skb);
	data_end = cx_skb_data_end(skb);
	iph = data + ETH_HLEN;
	if ((void *)(iph + 1) > data_end)
		/* Cannot happen: checked before the decap; the verifier wants it. */
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_MALFORMED, len);
	if (v6)
		/* 6in4 leaves the outer Ethernet header's type (IPv4's). */
		((struct ethhdr *)data)->h_proto = bpf_htons(ETH_P_IPV6);
	/* Replies of flows this node translated at their first hop (a
	 * workload here to a floating IP elsewhere) get their floating IP
	 * back; flows from outside to a floating IP of an instance here,
	 * forwarded by another node, start here. IPv6: policy only. */
	start = v6 ? 0 : CX_START_FIP_HERE | CX_START_NAT_FIRST;
	{
		struct cx_tuple *t = cx_tuple_slot(CX_TUPLE_PACKET);
		int nat;

		if (!t)
			return cx_drop_len(skb, ifindex, CX_REASON_DROP_HELPER, len); /* cannot happen */
		nat = cx_nat_policed(skb, t, start, 0, NULL, len, -1, NULL, NULL);
		if (nat < 0)
			return cx_nat_drop(skb, ifindex, nat, len);
		if (nat != CX_NAT_DONE && rt->type == CX_RT_FIP)
			/* To a floating IP, but not the start of a flow nor one
			 * this node knows (a TCP segment without SYN): nowhere
			 * to go. Never to the host stack, which would route the
			 * floating IP back out. */
			return cx_drop_len(skb, ifindex, CX_REASON_DROP_NO_ROUTE, len);
		if (nat == CX_NAT_DONE) {
			rt = cx_route_addr(&t->daddr);
			if (!rt || (rt->type != CX_RT_LOCAL_WORKLOAD && rt->type != CX_RT_HOST))
				/* Translated to an address that is not here. */
				return cx_drop_len(skb, ifindex, CX_REASON_DROP_NO_ROUTE, len);
		}
	}
	if (rt->type == CX_RT_HOST)
		/* For this host itself: its stack takes the inner packet. */
		return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	data = cx_skb_data(skb);
	data_end = cx_skb_data_end(skb);
	iph = data + ETH_HLEN;
	if (v6) {
		struct ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) > data_end)
			return cx_drop_len(skb, ifindex, CX_REASON_DROP_MALFORMED, len);
		if (ip6->hop_limit <= 1)
			/* Expiring: the host stack sends the time-exceeded for it. */
			return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
		ip6->hop_limit--;
	} else {
		if ((void *)(iph + 1) > data_end)
			return cx_drop_len(skb, ifindex, CX_REASON_DROP_MALFORMED, len);
		if (cx_ip4_forward(skb, iph))
			/* Expiring: the host stack sends the time-exceeded for it. */
			return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	}
	return cx_deliver_local(skb, ifindex, slot, len, reason, rt);
}
