/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Network policy. A new flow's verdict costs the
 * same whatever the number of policies and rules: the remote address's
 * identity (one LPM lookup in cx_ipcache), then the endpoint's table (one
 * LPM lookup in cx_policy; when the identity has no entries of its own,
 * again with the identity of the address's nets, then with identity 0;
 * one more when the source port decides). The agent
 * compiles the ordered rules into those tables (agent/policy). Packets of
 * tracked flows never get here. */
#ifndef CALYX_POLICY_H
#define CALYX_POLICY_H

#include "nat.h"

#define CX_IPPROTO_SCTP 132
#define CX_POLICY_PREFIX_FULL (64 + 8 + 16)
#define CX_DHCP_SERVER_PORT 67
#define CX_DNS_PORT 53
#define CX_DHCP6_SERVER_PORT 547

/* cx_flow_info is what a policy rule can match in a packet: addresses,
 * protocol and ports (host order; for ICMP, port is type << 8 | code). */
struct cx_flow_info {
	__be32 saddr;
	__be32 daddr;
	__u16 port;
	__u16 sport;
	__u8 proto;
};

/* cx_flow_info_of reads the IPv4 packet at ETH_HLEN, whose header callers
 * have parsed already (the linear area holds it, cx_pull). A fragment after
 * the first has no ports: it matches as port 0. */
static __always_inline int cx_flow_info_of(struct __sk_buff *skb, struct cx_flow_info *f)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct iphdr *iph = data + ETH_HLEN;
	__u8 *l4;

	if ((void *)(iph + 1) > data_end)
		return -1;
	f->saddr = iph->saddr;
	f->daddr = iph->daddr;
	f->proto = iph->protocol;
	f->port = 0;
	f->sport = 0;
	if (iph->frag_off & bpf_htons(0x1fff))
		return 0;
	l4 = (void *)iph + ((iph->ihl & 0xf) << 2);
	switch (f->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case CX_IPPROTO_SCTP:
		if ((void *)(l4 + 4) > data_end)
			return 0;
		f->sport = (__u16)l4[0] << 8 | l4[1];
		f->port = (__u16)l4[2] << 8 | l4[3];
		break;
	case IPPROTO_ICMP:
		if ((void *)(l4 + 2) > data_end)
			return 0;
		f->port = (__u16)l4[0] << 8 | l4[1];
		break;
	}
	return 0;
}

/* cx_policy_lookup finds the verdict of table for a packet from (ingress)
 * or to (egress) a remote of identity rid (NULL: identity 0). */
static __always_inline struct cx_policy_verdict *cx_policy_lookup(__u32 table, const struct cx_identity *rid,
								  const struct cx_flow_info *f)
{
	__u32 id = rid ? rid->id : 0, net_id = rid ? rid->net_id : 0;
	struct cx_policy_key k = { .prefixlen = CX_POLICY_PREFIX_FULL, .table = table, .identity = id,
				   .proto = f->proto };
	struct cx_policy_verdict *v;

	k.port[0] = f->port >> 8;
	k.port[1] = f->port & 0xff;
	v = bpf_map_lookup_elem(&cx_policy, &k);
	if (!v && net_id && net_id != id) {
		/* An identity whose verdicts are those of its nets alone has
		 * no entries of its own. */
		k.identity = net_id;
		v = bpf_map_lookup_elem(&cx_policy, &k);
	}
	if (!v && id) {
		/* Nor one whose verdicts are those of the world. */
		k.identity = 0;
		v = bpf_map_lookup_elem(&cx_policy, &k);
	}
	if (v && v->action == CX_POLICY_SPORT) {
		struct cx_policy_key s = { .prefixlen = CX_POLICY_PREFIX_FULL, .table = v->sub };

		s.port[0] = f->sport >> 8;
		s.port[1] = f->sport & 0xff;
		v = bpf_map_lookup_elem(&cx_policy, &s);
	}
	return v;
}

/* cx_rule_hit counts a rule's decision for an endpoint. */
static __always_inline void cx_rule_hit(__u32 ifindex, __u32 rule, __u32 len)
{
	struct cx_rule_hit_key key = { .ifindex = ifindex, .rule = rule };

	cx_count(&cx_policy_hits, &key, len);
}

/* cx_policy_log_event tells the agent a Log rule matched. A full ring
 * loses the event, never the packet. */
static __always_inline void cx_policy_log_event(__u32 ifindex, __u32 rule, const struct cx_flow_info *f, int allowed)
{
	struct cx_policy_event e = { .ifindex = ifindex, .rule = rule, .sport = f->sport, .dport = f->port,
				     .proto = f->proto, .allowed = allowed };

	cx_addr_v4(e.saddr, f->saddr);
	cx_addr_v4(e.daddr, f->daddr);
	bpf_ringbuf_output(&cx_policy_log, &e, sizeof(e), 0);
}

/* cx_policy_decide applies one endpoint's table to a new flow and counts
 * the deciding rule. Returns 1 when the flow is allowed. */
static __always_inline int cx_policy_decide(__u32 ifindex, __u32 table, const struct cx_identity *rid,
					    const struct cx_flow_info *f, __u32 len, __u32 deny_rule)
{
	struct cx_policy_verdict *v = cx_policy_lookup(table, rid, f);
	__u32 rule = deny_rule;
	int allowed = 0;

	/* Identity 0's entries cover every packet, so a miss means the table
	 * is being replaced under us: fail closed. */
	if (v) {
		rule = v->rule;
		allowed = v->action == CX_POLICY_ALLOW;
		if (v->log_rule) {
			cx_rule_hit(ifindex, v->log_rule, len);
			cx_policy_log_event(ifindex, v->log_rule, f, allowed);
		}
	}
	cx_rule_hit(ifindex, rule, len);
	return allowed;
}

/* cx_host_service says whether a workload's packet is for a service every
 * workload may reach on its host whatever the policy: DHCP and DNS. (The
 * metadata service is 169.254.169.254, checked by the caller.) */
static __always_inline int cx_host_service(const struct cx_flow_info *f)
{
	if (f->proto == IPPROTO_UDP && f->port == CX_DHCP_SERVER_PORT)
		return 1;
	return (f->proto == IPPROTO_UDP || f->proto == IPPROTO_TCP) && f->port == CX_DNS_PORT;
}

/* cx_policy_flow decides whether the IPv4 packet in skb may start a flow
 * (or, untracked, pass): the egress policy of the workload it comes from
 * (src, on src_ifindex; NULL when it does not come from a workload) and
 * the ingress policy of the local workload it is for, after a floating
 * IP's DNAT. *dst_local says whether it is for a local workload. Returns 0,
 * or the reason to drop it. */
static __always_inline int cx_policy_flow(struct __sk_buff *skb, const struct cx_tuple *t, __u32 src_ifindex,
					  const struct cx_iface *src, __u32 len, int *dst_local, struct cx_dst *dst_rt)
{
	struct cx_node_config *cfg = cx_get_config();
	__u32 e2h = cfg ? cfg->endpoint_to_host : CX_E2H_ACCEPT;
	struct cx_flow_info f;
	struct cx_identity *rid;
	struct cx_route *rt;
	struct cx_iface *dst;
	struct cx_fip *fip;
	__u32 dst_ifindex;
	__be32 daddr;

	*dst_local = 0;
	if (cx_flow_info_of(skb, &f))
		/* Cannot happen: callers parsed the header. */
		return CX_REASON_DROP_MALFORMED;
	if (t->frag == CX_FRAG_LATER) {
		/* No L4 header: matched with its first fragment's ports. */
		f.sport = bpf_ntohs(t->sport);
		f.port = t->policy_port;
	}
	rid = cx_identity_v4(f.daddr);
	if (src && (src->egress_table || e2h != CX_E2H_ACCEPT) &&
	    /* DHCP to the host (a gateway IP) or broadcast: the instance's
	     * own lease. UDP 67 anywhere else is a flow like any other. */
	    !(f.proto == IPPROTO_UDP && f.port == CX_DHCP_SERVER_PORT &&
	      (f.daddr == CX_IP4_BROADCAST || (rid && (rid->flags & CX_ID_HOST)))) &&
	    !(f.daddr == CX_METADATA_IP && f.proto == IPPROTO_TCP && f.port == bpf_ntohs(CX_METADATA_PORT))) {
		int check = src->egress_table != 0;

		if (rid && (rid->flags & CX_ID_HOST)) {
			if (e2h == CX_E2H_DROP && !cx_host_service(&f)) {
				/* endpointToHostAction Drop: the host is off limits. */
				cx_rule_hit(src_ifindex, CX_RULE_HOST_DROP, len);
				return CX_REASON_DROP_POLICY;
			}
			check = check && e2h == CX_E2H_RETURN;
		}
		if (check && !cx_policy_decide(src_ifindex, src->egress_table, rid, &f, len, CX_RULE_DEFAULT_DENY_EGRESS))
			/* The endpoint's egress policy does not allow it. */
			return CX_REASON_DROP_POLICY;
	}

	/* The destination as the workload will see it: a floating IP's
	 * fixed IP (its route says it is one; most packets pay no fip lookup). */
	daddr = f.daddr;
	rt = cx_dst_route(dst_rt, daddr);
	if (rt && rt->type == CX_RT_FIP) {
		fip = cx_fip_of(daddr);
		rt = fip ? cx_route_v4(cx_addr_ip4(fip->fixed)) : NULL;
	}
	if (!rt || rt->type != CX_RT_LOCAL_WORKLOAD)
		return 0;
	*dst_local = 1;
	dst_ifindex = rt->ifindex;
	dst = bpf_map_lookup_elem(&cx_ifaces, &dst_ifindex);
	if (!dst || !dst->ingress_table)
		return 0;
	rid = cx_identity_v4(f.saddr);
	if (rid && (rid->flags & CX_ID_HOST))
		/* A host always reaches its own workloads (health checks). */
		return 0;
	if (!cx_policy_decide(dst_ifindex, dst->ingress_table, rid, &f, len, CX_RULE_DEFAULT_DENY_INGRESS))
		/* The destination's ingress policy does not allow it. */
		return CX_REASON_DROP_POLICY;
	return 0;
}

/* cx_nat_policed is conntrack, policy and NAT for the IPv4 packet in skb:
 * a packet of a tracked flow (or an ICMP error about one) is translated as
 * its entry says and skips policy; any other packet must pass
 * cx_policy_flow first, and a new flow to a local workload is tracked, so
 * its replies pass that workload's egress policy as replies. kind and f
 * are the tuple kind and flow when the caller looked them up already
 * (kind < 0: not yet; f may be NULL then); dst_rt, when not NULL, keeps
 * the destination's route for the caller. Returns an enum cx_nat_result,
 * with the flow the packet matched or started in *f. */
static __always_inline int cx_nat_policed(struct __sk_buff *skb, struct cx_tuple *t, __u32 start, __u32 src_ifindex,
					  const struct cx_iface *src, __u32 len, int kind, struct cx_flow *f,
					  struct cx_dst *dst_rt)
{
	struct cx_flow own = {};
	int local = 0;

	if (!f)
		f = &own;
	if (kind < 0) {
		f->nat = NULL;
		f->ct = NULL;
		kind = cx_tuple_of(skb, t);
		if (kind == CX_TUPLE_FLOW)
			cx_flow_lookup(t, f, start & CX_START_NAT_FIRST);
	}
	if (kind == CX_TUPLE_ORPHAN) {
		struct cx_node_config *cfg = cx_get_config();

		if (cfg && (cfg->flags & CX_CFG_FRAG_ORPHAN_PASS)) {
			/* Config.orphanFragments Pass: untracked, and matched
			 * by policy without ports. */
			kind = CX_TUPLE_NONE;
		} else if (start & CX_START_ORPHAN_HOST) {
			struct cx_route *rt = cx_dst_route(dst_rt, t->daddr);

			if (rt && (rt->type == CX_RT_LOCAL_WORKLOAD || rt->type == CX_RT_FIP))
				return CX_NAT_ERR_FRAG;
			return CX_NAT_NONE;
		} else {
			return CX_NAT_ERR_FRAG;
		}
	}
	if (cx_flow_tracked(f))
		cx_flow_reopened(t, f);
	if (!cx_flow_tracked(f)) {
		struct cx_tuple it = {};
		struct cx_flow qf;

		/* An ICMP error related to a tracked flow is that flow's; any
		 * other (one a workload sends about someone else's flow, one
		 * about no flow) is a new flow for policy. */
		if (kind != CX_TUPLE_ERROR || !cx_icmp_related(skb, t, &it, &qf, !src)) {
			if (cx_policy_flow(skb, t, src_ifindex, src, len, &local, dst_rt))
				return CX_NAT_ERR_POLICY;
			if (local)
				start |= CX_START_TRACK;
		}
	}
	if (kind == CX_TUPLE_ERROR)
		return cx_icmp_error_xlate(skb, t, len, !src);
	if (kind != CX_TUPLE_FLOW)
		return CX_NAT_NONE;
	return cx_nat_flow(skb, t, f, start, len, src_ifindex, dst_rt);
}

#endif /* CALYX_POLICY_H */
