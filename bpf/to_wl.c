// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* calyx_to_wl: TC egress on the host side of a workload interface, what
 * the host stack sends into the workload. */
#include "policy.h"

/* The program comes first; the paths it takes follow, in the order it
 * takes them. */
static __always_inline int cx_to_wl_ip6_link(struct __sk_buff *skb);

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
		return cx_drop(skb, ifindex, CX_REASON_DROP_NO_ENDPOINT);
	if (skb->mark == CX_MARK_ROUTED) {
		/* Delivered by a calyx program (bpf_redirect_neigh), which did
		 * its translation: conntrack is not consulted twice. */
		skb->mark = 0;
		return cx_to_workload(skb, ifindex, ifc->counter_slot, TC_ACT_OK);
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6) && cx_to_wl_ip6_link(skb))
		/* The link's own traffic: no flow, no policy. */
		return cx_to_workload(skb, ifindex, ifc->counter_slot, TC_ACT_OK);
	if (skb->protocol == bpf_htons(ETH_P_IP) || skb->protocol == bpf_htons(ETH_P_IPV6)) {
		/* Replies from the host stack to translated flows (the
		 * metadata service) get the address the workload asked for;
		 * new flows pass the endpoint's ingress policy first, and
		 * replies of its own flows pass as replies. */
		__u32 len = skb->len;
		struct cx_tuple *t = cx_tuple_slot(CX_TUPLE_PACKET);
		int nat;

		if (!t)
			return cx_drop_len(skb, ifindex, CX_REASON_DROP_HELPER, len); /* cannot happen */
		cx_pull(skb, CX_PULL_LEN);
		nat = cx_nat_policed(skb, t, 0, 0, NULL, len, -1, NULL, NULL);
		if (nat < 0)
			return cx_nat_drop(skb, ifindex, nat, len);
	}
	return cx_to_workload(skb, ifindex, ifc->counter_slot, TC_ACT_OK);
}

/* cx_to_wl_ip6_link says whether an IPv6 packet from the host stack is
 * the link's own traffic, which a workload always gets whatever its policy:
 * from a link-local source (the host's router advertisements, DHCPv6
 * replies, neighbour discovery), or neighbour discovery from any source
 * (hop limit 255, RFC 4861). */
static __always_inline int cx_to_wl_ip6_link(struct __sk_buff *skb)
{
	void *data, *data_end;
	struct ipv6hdr *ip6;
	__u8 *icmp;

	cx_pull(skb, ETH_HLEN + sizeof(*ip6) + 4);
	data = cx_skb_data(skb);
	data_end = cx_skb_data_end(skb);
	ip6 = data + ETH_HLEN;
	icmp = (void *)(ip6 + 1);
	if ((void *)(ip6 + 1) > data_end)
		return 0;
	if (cx_is_link_local6(&ip6->saddr))
		return 1;
	/* Neighbour discovery: router/neighbour solicitation and advertisement. */
	return ip6->nexthdr == IPPROTO_ICMPV6 && ip6->hop_limit == 255 && (void *)(icmp + 1) <= data_end &&
	       icmp[0] >= 133 && icmp[0] <= 137;
}
