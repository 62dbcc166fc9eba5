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

#define CX_POLICY_PREFIX_FULL (64 + 8 + 16)
#define CX_DHCP_SERVER_PORT 67
#define CX_DNS_PORT 53
#define CX_DHCP6_SERVER_PORT 547

/* cx_flow_info is what a policy rule can match in a packet beyond its
 * addresses (the tuple's): protocol and ports (host order; for ICMP and
 * ICMPv6, port is type << 8 | code). */
struct cx_flow_info {
	__u16 port;
	__u16 sport;
	__u8 proto;
	__u8 v6;
};

/* cx_flow_info_of takes what policy matches from tuple t, which
 * cx_tuple_of filled for any packet with an IP header (tracked or not). A
 * fragment after the first matches with its first's ports, or as port 0
 * when that was not seen. */
static __always_inline void cx_flow_info_of(const struct cx_tuple *t, struct cx_flow_info *f)
{
	f->proto = t->proto;
	f->v6 = t->v6;
	f->port = t->policy_port;
	f->sport = 0;
	if (t->proto == IPPROTO_TCP || t->proto == IPPROTO_UDP || t->proto == CX_IPPROTO_SCTP)
		f->sport = bpf_ntohs(t->sport);
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

/* cx_policy_event tells the agent a Log rule matched, or that policy denied
 * a new flow (kind), within the CPU's budget. It is written in place in the
 * ring (no copy on the stack). A full ring loses the event, never the
 * packet. */
static __always_inline void cx_policy_event(__u32 ifindex, __u32 rule, const struct cx_tuple *t,
					    const struct cx_flow_info *f, int allowed, enum cx_policy_event_kind kind)
{
	struct cx_policy_event *e;

	if (!cx_event_budget_take())
		return;
	e = bpf_ringbuf_reserve(&cx_policy_log, sizeof(*e), 0);
	if (!e)
		return;
	e->ifindex = ifindex;
	e->rule = rule;
	__builtin_memcpy(e->saddr, &t->saddr, 16);
	__builtin_memcpy(e->daddr, &t->daddr, 16);
	e->sport = f->sport;
	e->dport = f->port;
	e->proto = f->proto;
	e->allowed = allowed;
	e->kind = kind;
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
}

/* cx_policy_decide applies one endpoint's table to a new flow and counts
 * the deciding rule. Returns 1 when the flow is allowed. */
static __always_inline int cx_policy_decide(__u32 ifindex, __u32 table, const struct cx_identity *rid,
					    const struct cx_tuple *t, const struct cx_flow_info *f, __u32 len,
					    __u32 deny_rule)
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
			cx_policy_event(ifindex, v->log_rule, t, f, allowed, CX_PEV_LOG);
		}
	}
	cx_rule_hit(ifindex, rule, len);
	if (!allowed)
		/* For calyxctl monitor: which rule, which flow. */
		cx_policy_event(ifindex, rule, t, f, 0, CX_PEV_DENY);
	return allowed;
}

/* cx_host_service says whether a workload's packet is for a service every
 * workload may reach on its host whatever the policy: DHCP(v6) and DNS. (The
 * metadata service is 169.254.169.254, checked by the caller.) */
static __always_inline int cx_host_service(const struct cx_flow_info *f)
{
	if (f->proto == IPPROTO_UDP && f->port == (f->v6 ? CX_DHCP6_SERVER_PORT : CX_DHCP_SERVER_PORT))
		return 1;
	return (f->proto == IPPROTO_UDP || f->proto == IPPROTO_TCP) && f->port == CX_DNS_PORT;
}

/* cx_policy_flow decides whether the IP packet of tuple t may start a flow
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

	*dst_local = 0;
	cx_flow_info_of(t, &f);
	rid = cx_identity_of(&t->daddr);
	if (src && (src->egress_table || e2h != CX_E2H_ACCEPT) &&
	    /* DHCP to the host (a gateway IP) or broadcast: the instance's
	     * own lease. UDP 67 anywhere else is a flow like any other. */
	    !(!f.v6 && f.proto == IPPROTO_UDP && f.port == CX_DHCP_SERVER_PORT &&
	      (CX_IP4(t->daddr) == CX_IP4_BROADCAST || (rid && (rid->flags & CX_ID_HOST)))) &&
	    !(!f.v6 && CX_IP4(t->daddr) == CX_METADATA_IP && f.proto == IPPROTO_TCP &&
	      f.port == bpf_ntohs(CX_METADATA_PORT))) {
		int check = src->egress_table != 0;

		if (rid && (rid->flags & CX_ID_HOST)) {
			if (e2h == CX_E2H_DROP && !cx_host_service(&f)) {
				/* endpointToHostAction Drop: the host is off limits. */
				cx_rule_hit(src_ifindex, CX_RULE_HOST_DROP, len);
				return CX_REASON_DROP_POLICY;
			}
			check = check && e2h == CX_E2H_RETURN;
		}
		if (check &&
		    !cx_policy_decide(src_ifindex, src->egress_table, rid, t, &f, len, CX_RULE_DEFAULT_DENY_EGRESS))
			/* The endpoint's egress policy does not allow it. */
			return CX_REASON_DROP_POLICY;
	}

	/* The destination as the workload will see it: a floating IP's
	 * fixed IP (its route says it is one; most packets pay no fip lookup). */
	rt = cx_dst_route(dst_rt, &t->daddr);
	if (rt && rt->type == CX_RT_FIP) {
		fip = cx_fip_of_addr(&t->daddr);
		rt = fip ? cx_route_addr((const struct in6_addr *)fip->fixed) : NULL;
	}
	if (!rt || rt->type != CX_RT_LOCAL_WORKLOAD)
		return 0;
	*dst_local = 1;
	dst_ifindex = rt->ifindex;
	dst = bpf_map_lookup_elem(&cx_ifaces, &dst_ifindex);
	if (!dst || !dst->ingress_table)
		return 0;
	rid = cx_identity_of(&t->saddr);
	if (rid && (rid->flags & CX_ID_HOST))
		/* A host always reaches its own workloads (health checks). */
		return 0;
	if (!cx_policy_decide(dst_ifindex, dst->ingress_table, rid, t, &f, len, CX_RULE_DEFAULT_DENY_INGRESS))
		/* The destination's ingress policy does not allow it. */
		return CX_REASON_DROP_POLICY;
	return 0;
}

/* cx_nat_policed is conntrack, policy and NAT for the IP packet in skb:
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
	int local = 0, nat;

	if (!f)
		f = &own;
	if (kind < 0) {
		f->nat = NULL;
		f->ct = NULL;
		kind = cx_tuple_of(skb, t);
		if (kind == CX_TUPLE_FLOW)
			cx_flow_lookup(t, f, start & CX_START_NAT_FIRST);
	}
	if (kind == CX_TUPLE_BAD)
		return CX_NAT_ERR_MALFORMED;
	if (kind == CX_TUPLE_ORPHAN) {
		struct cx_node_config *cfg = cx_get_config();

		if (cfg && (cfg->flags & CX_CFG_FRAG_ORPHAN_PASS)) {
			/* Config.orphanFragments Pass: untracked, and matched
			 * by policy without ports. */
			kind = CX_TUPLE_NONE;
		} else if (start & CX_START_ORPHAN_HOST) {
			struct cx_route *rt = cx_dst_route(dst_rt, &t->daddr);

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
		struct cx_tuple *it = cx_tuple_slot(CX_TUPLE_QUOTED);
		struct cx_flow qf;

		/* An ICMP error related to a tracked flow is that flow's; any
		 * other (one a workload sends about someone else's flow, one
		 * about no flow) is a new flow for policy. */
		if (!it)
			return CX_NAT_ERR_HELPER; /* cannot happen */
		if (kind != CX_TUPLE_ERROR || !cx_icmp_related(skb, t, it, &qf, !src)) {
			if (cx_policy_flow(skb, t, src_ifindex, src, len, &local, dst_rt))
				return CX_NAT_ERR_POLICY;
			if (local)
				start |= CX_START_TRACK;
		}
	}
	if (kind == CX_TUPLE_ERROR)
		nat = cx_icmp_error_xlate(skb, t, len, !src, cx_start_v6(start, t));
	else if (kind != CX_TUPLE_FLOW)
		return CX_NAT_NONE;
	else
		nat = cx_nat_flow(skb, t, f, start, len, src_ifindex, dst_rt);
	if (nat == CX_NAT_DONE && dst_rt)
		/* The destination may be another now. */
		dst_rt->looked = 0;
	return nat;
}

#endif /* CALYX_POLICY_H */
