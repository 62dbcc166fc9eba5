// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* calyx_to_underlay: TC egress on the underlay interface, the host's own
 * packets to remote workloads and floating IPs. */
#include "nat.h"

/* calyx_to_underlay runs at TC egress on the underlay interface: what the
 * host's own stack sends to a remote workload takes the BPF route, as a
 * workload's packet would, so no kernel route per block or node is needed. */
SEC("tc")
int calyx_to_underlay(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex, slot = CX_SLOT_IF_UNDERLAY;
	struct hdr_cursor c;
	struct ethhdr *eth;
	struct iphdr *iph;
	struct cx_route *rt;
	void *data_end;

	if (skb->mark == CX_MARK_ROUTED) {
		/* Routed by a calyx program already (this hook runs again on
		 * redirected packets); not counted twice. */
		skb->mark = 0;
		return TC_ACT_OK;
	}
	if (skb->protocol != bpf_htons(ETH_P_IP) || skb->vlan_present)
		/* Not IPv4, or for a VLAN device on this interface: not ours. */
		return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, skb->len, TC_ACT_OK);

	cx_pull(skb, CX_PULL_LEN);
	data_end = cx_skb_data_end(skb);
	c.pos = cx_skb_data(skb);
	eth = parse_ethhdr(&c, data_end);
	if (!eth)
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);
	iph = parse_iphdr(&c, data_end, skb->len - ETH_HLEN);
	if (!iph)
		return cx_drop(skb, ifindex, CX_REASON_DROP_MALFORMED);

	{
		/* The host's own connections to floating IPs are translated
		 * here, as a workload's are at its first hop. */
		__u32 len = skb->len;
		struct cx_tuple *t = cx_tuple_slot(CX_TUPLE_PACKET);
		int nat;

		if (!t)
			return cx_drop_len(skb, ifindex, CX_REASON_DROP_HELPER, len); /* cannot happen */
		nat = cx_nat_host(skb, t, CX_START_FIP | CX_START_HOST, len);

		if (nat < 0)
			return cx_nat_drop(skb, ifindex, nat, len);
		data_end = cx_skb_data_end(skb);
		eth = cx_skb_data(skb);
		iph = (void *)(eth + 1);
		if ((void *)(iph + 1) > data_end)
			return cx_drop_len(skb, ifindex, CX_REASON_DROP_MALFORMED, len);
		rt = cx_route_v4(iph->daddr);
		if (rt && rt->type == CX_RT_REMOTE_WORKLOAD)
			return cx_to_node(skb, ifindex, slot, rt, 1, 0);
		if (nat == CX_NAT_DONE && rt && rt->type == CX_RT_LOCAL_WORKLOAD) {
			/* A floating IP of an instance on this host: into it. */
			skb->mark = CX_MARK_ROUTED;
			if (rt->flags & CX_RT_F_HAS_MAC) {
				__builtin_memcpy(eth->h_dest, rt->mac, CX_ETH_ALEN);
				__builtin_memcpy(eth->h_source, rt->host_mac, CX_ETH_ALEN);
				return cx_verdict_slot(slot, ifindex, CX_REASON_DELIVER_LOCAL, len, bpf_redirect(rt->ifindex, 0));
			}
			return cx_verdict_slot(slot, ifindex, CX_REASON_DELIVER_LOCAL, len,
					      bpf_redirect_neigh(rt->ifindex, NULL, 0, 0));
		}
		return cx_verdict_slot(slot, ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	}
}
