/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* NAT: floating-IP DNAT (and the SNAT of the hairpin case), natOutgoing
 * SNAT with source-port allocation, the metadata DNAT, and the reverse
 * translation of replies and of ICMP errors about a flow. Only packets
 * without IP options are translated. */
#ifndef CALYX_NAT_H
#define CALYX_NAT_H

#include "conntrack.h"
#include "delivery.h"

/* natOutgoing source ports: above the kernel's default ephemeral range
 * (32768-60999), so they do not collide with the host's own connections. */
/* natOutgoing's source ports when cx_config has none (model.DefaultNATPortRange). */
#define CX_NAT_PORT_MIN 20000
#define CX_NAT_PORT_MAX 29999
#define CX_NAT_PORT_TRIES 16
/* A closed TCP flow's port goes to a new connection once its last packet
 * is this old (last_ns is itself up to CX_CT_LAST_NS behind). */
#define CX_NAT_TAKEOVER_NS 1000000000ULL

/* The metadata service address workloads use (OpenStack, cloud-init). */
#define CX_METADATA_IP bpf_htonl(0xa9fea9fe) /* 169.254.169.254 */
#define CX_METADATA_PORT bpf_htons(80)

/* cx_rewrite_addr replaces a 4-byte address at off, fixing the IP checksum
 * and, through the pseudo-header, the TCP or UDP one (proto 0: a later
 * fragment, whose L4 checksum is in the first). */
static __always_inline int cx_rewrite_addr(struct __sk_buff *skb, __u32 off, __be32 from, __be32 to, __u8 proto)
{
	if (from == to)
		return 0;
	if (bpf_l3_csum_replace(skb, CX_IP_CSUM_OFF, from, to, 4))
		return -1;
	if (proto == IPPROTO_TCP &&
	    bpf_l4_csum_replace(skb, CX_L4_OFF + 16, from, to, BPF_F_PSEUDO_HDR | 4))
		return -1;
	if (proto == IPPROTO_UDP &&
	    bpf_l4_csum_replace(skb, CX_L4_OFF + 6, from, to, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | 4))
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, 4, 0);
}

/* cx_rewrite_port replaces a port (or the ICMP echo identifier) at off, in
 * the L4 header at l4. */
static __always_inline int cx_rewrite_port(struct __sk_buff *skb, __u32 l4, __u32 off, __be16 from, __be16 to,
					   __u8 proto)
{
	if (from == to)
		return 0;
	if (proto == IPPROTO_TCP && bpf_l4_csum_replace(skb, l4 + 16, from, to, 2))
		return -1;
	if (proto == IPPROTO_UDP && bpf_l4_csum_replace(skb, l4 + 6, from, to, BPF_F_MARK_MANGLED_0 | 2))
		return -1;
	if (cx_icmp_proto(proto) && bpf_l4_csum_replace(skb, l4 + 2, from, to, 2))
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, 2, 0);
}

/* cx_nat_ports rewrites the ports of tuple t's packet (an ICMP echo: its
 * identifier) to e's, its L4 header at l4; a later fragment has none. */
static __always_inline int cx_nat_ports(struct __sk_buff *skb, struct cx_tuple *t, const struct cx_nat_entry *e,
					__u32 l4)
{
	if (t->frag == CX_FRAG_LATER)
		return 0;
	if (cx_icmp_proto(t->proto))
		return cx_rewrite_port(skb, l4, l4 + 4, t->sport, e->nat_sport, t->proto);
	if (cx_rewrite_port(skb, l4, l4, t->sport, e->nat_sport, t->proto) ||
	    cx_rewrite_port(skb, l4, l4 + 2, t->dport, e->nat_dport, t->proto))
		return -1;
	return 0;
}

/* cx_nat_apply4 rewrites the IPv4 packet of tuple t to the tuple in e and
 * updates t to match. A later fragment has only its addresses rewritten:
 * the ports and the L4 checksum are in the first. Returns 0, or -1 when a
 * helper refused. */
static __always_inline int cx_nat_apply4(struct __sk_buff *skb, struct cx_tuple *t, const struct cx_nat_entry *e)
{
	__be32 ns = cx_addr_ip4(e->nat_saddr), nd = cx_addr_ip4(e->nat_daddr);
	__u8 l4 = t->frag == CX_FRAG_LATER ? 0 : t->proto;

	if (cx_rewrite_addr(skb, CX_IP_SRC_OFF, CX_IP4(t->saddr), ns, l4) ||
	    cx_rewrite_addr(skb, CX_IP_DST_OFF, CX_IP4(t->daddr), nd, l4))
		return -1;
	if (cx_nat_ports(skb, t, e, CX_L4_OFF))
		return -1;
	CX_IP4(t->saddr) = ns;
	CX_IP4(t->daddr) = nd;
	t->sport = e->nat_sport;
	if (t->proto != IPPROTO_ICMP)
		t->dport = e->nat_dport;
	return 0;
}

/* cx_nat_apply6 is cx_nat_apply4 for IPv6 (NAT66): no header checksum, and
 * the L4 checksum, ICMPv6's too, covers both addresses through the
 * pseudo-header, so one difference of the 32 address bytes fixes it. The
 * L4 header may follow extension headers (t->l4_off). */
static __always_inline int cx_nat_apply6(struct __sk_buff *skb, struct cx_tuple *t, const struct cx_nat_entry *e)
{
	__u32 l4 = t->l4_off & CX_L4_OFF_MAX, csum_off = l4 + 16;
	__u64 flags = BPF_F_PSEUDO_HDR;
	__s64 diff;

	if (t->proto == IPPROTO_UDP) {
		csum_off = l4 + 6;
		flags |= BPF_F_MARK_MANGLED_0;
	} else if (t->proto == IPPROTO_ICMPV6) {
		csum_off = l4 + 2;
	}
	/* saddr and daddr are adjacent in the tuple, the entry and the header. */
	diff = bpf_csum_diff((__be32 *)&t->saddr, 32, (__be32 *)e->nat_saddr, 32, 0);
	if (diff < 0)
		return -1;
	if (t->frag != CX_FRAG_LATER && bpf_l4_csum_replace(skb, csum_off, 0, diff, flags))
		return -1;
	if (bpf_skb_store_bytes(skb, CX_IP6_SRC_OFF, e->nat_saddr, 32, 0))
		return -1;
	if (cx_nat_ports(skb, t, e, l4))
		return -1;
	__builtin_memcpy(&t->saddr, e->nat_saddr, 16);
	__builtin_memcpy(&t->daddr, e->nat_daddr, 16);
	t->sport = e->nat_sport;
	if (t->proto != IPPROTO_ICMPV6)
		t->dport = e->nat_dport;
	return 0;
}

/* cx_nat_apply rewrites the packet of tuple t, of either family (v6:
 * cx_start_v6), to the tuple in e and updates t to match (cx_nat_apply4,
 * cx_nat_apply6). */
static __always_inline int cx_nat_apply(struct __sk_buff *skb, struct cx_tuple *t, const struct cx_nat_entry *e,
					int v6)
{
	if (v6)
		return cx_nat_apply6(skb, t, e);
	return cx_nat_apply4(skb, t, e);
}

/* cx_nat_same says whether two entries rewrite to the same tuple. */
static __always_inline int cx_nat_same(const struct cx_nat_entry *a, const struct cx_nat_entry *b)
{
	return cx_addr_eq((const struct in6_addr *)a->nat_saddr, (const struct in6_addr *)b->nat_saddr) &&
	       cx_addr_eq((const struct in6_addr *)a->nat_daddr, (const struct in6_addr *)b->nat_daddr) &&
	       a->nat_sport == b->nat_sport && a->nat_dport == b->nat_dport;
}

/* cx_nat_scratch is this CPU's cx_nat_entry to build a new flow's entries
 * in (cx_nat_scratch in maps.h). */
static __always_inline struct cx_nat_entry *cx_nat_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&cx_nat_scratch_map, &zero);
}

/* cx_nat_take_closed frees the reply tuple rk for a new connection's SYN
 * when the flow holding it is a closed TCP flow (an RST either way, or a
 * FIN both ways) that has been quiet for CX_NAT_TAKEOVER_NS: both of its
 * entries go. Closed flows otherwise keep their natOutgoing port until the
 * agent collects them, and connections to one server address and port run
 * out of ports at a few hundred a second; Linux conntrack likewise lets a
 * SYN reopen a closed tuple. The server sees the same tuple again, whose
 * TIME_WAIT (if it closed first) takes a newer SYN (RFC 6191). scratch is
 * the caller's, for the old flow's other key. Returns 1 when rk is free. */
static __always_inline int cx_nat_take_closed(const struct cx_nat_key *rk, struct cx_nat_key *scratch, __u64 now)
{
	struct cx_nat_entry *old = bpf_map_lookup_elem(&cx_nat, rk), *orig;
	__u8 mine, theirs = CX_TCP_FIN;

	if (!old || old->dir != CX_CT_REPLY || now - old->last_ns < CX_NAT_TAKEOVER_NS)
		return 0;
	mine = old->tcp.flags;
	cx_nat_other_key(scratch, old, IPPROTO_TCP);
	orig = bpf_map_lookup_elem(&cx_nat, scratch);
	if (orig) {
		if (now - orig->last_ns < CX_NAT_TAKEOVER_NS)
			return 0;
		theirs = orig->tcp.flags;
	}
	if (!((mine | theirs) & CX_TCP_RST) && !(mine & theirs & CX_TCP_FIN))
		/* Open, or half closed: the flow may still carry data. */
		return 0;
	if (orig && !bpf_map_delete_elem(&cx_nat, scratch))
		cx_ct_stat(CX_CTS_NAT_DELETED, 1);
	if (!bpf_map_delete_elem(&cx_nat, rk))
		cx_ct_stat(CX_CTS_NAT_DELETED, 1);
	return 1;
}

/* cx_nat_create tracks a new translated flow whose first packet, tuple t
 * (len bytes as it arrived), is rewritten to (ns, nd, nsp, ndp), the
 * addresses of t's family (IPv4 v4-mapped; they may point into maps): the
 * original-direction entry, which counts that packet, and the reply entry
 * that undoes it. With alloc_port (natOutgoing, the host's own flows to a
 * floating IP), nsp is the sender's own port, kept when it is in
 * cx_config's NAT port range and its reply tuple is free; otherwise random
 * ports of the range are tried until one is (a TCP SYN may take a closed
 * flow's: cx_nat_take_closed). Without, the reply tuple must
 * be free or be this flow's own (its original-direction entry went, LRU,
 * and the reply entry stayed): when another flow's replies already arrive
 * with it, they could not be told from this flow's, and taking it would
 * break that flow, so this one does not start. Every insert is
 * BPF_NOEXIST: two CPUs starting one flow at once end with one flow and
 * one port, the loser giving back the reply entry it wrote. Returns 0, or
 * -1 when no port or no entry could be had. */
static __always_inline int cx_nat_create(const struct cx_tuple *t, const struct in6_addr *ns,
					 const struct in6_addr *nd, __be16 nsp, __be16 ndp, __u8 nat, int alloc_port,
					 __u32 len)
{
	struct cx_node_config *cfg = alloc_port ? cx_get_config() : NULL;
	__u16 pmin = CX_NAT_PORT_MIN, pmax = CX_NAT_PORT_MAX;
	struct cx_nat_key ok, rk;
	/* One value for both entries, off the stack (512 bytes in all). */
	struct cx_nat_entry *rv = cx_nat_scratch();
	__u64 now = bpf_ktime_get_coarse_ns();
	__be16 rsport = ndp, rdport = nsp;
	__u16 want = bpf_ntohs(nsp);
	__u32 range;
	int i, reused = 0;
	/* A connection's SYN may take the port of a closed one. */
	int syn = t->proto == IPPROTO_TCP && (t->tcp_flags & (CX_TCP_SYN | CX_TCP_ACK)) == CX_TCP_SYN;

	if (!rv)
		return -1; /* cannot happen: a per-CPU array's one entry */
	__builtin_memset(rv, 0, sizeof(*rv));
	if (cx_icmp_proto(t->proto)) {
		/* The echo identifier travels in both directions in one field. */
		rsport = nsp;
		rdport = 0;
	}
	rv->dir = CX_CT_REPLY;
	rv->nat = nat;
	rv->created_ns = now;
	rv->last_ns = now;
	__builtin_memcpy(rv->nat_saddr, &t->daddr, 16);
	__builtin_memcpy(rv->nat_daddr, &t->saddr, 16);
	rv->nat_sport = cx_icmp_proto(t->proto) ? t->sport : t->dport;
	rv->nat_dport = cx_icmp_proto(t->proto) ? 0 : t->sport;

	if (!alloc_port) {
		struct cx_ct_key ck;

		cx_nat_key_of(&rk, nd, ns, rsport, rdport, t->proto);
		cx_ct_key_of(&ck, (const struct in6_addr *)rk.saddr, (const struct in6_addr *)rk.daddr, rsport, rdport,
			     t->proto);
		if (bpf_map_lookup_elem(&cx_ct, &ck))
			/* The replies would be a tracked flow's (found first). */
			return -1;
		if (bpf_map_update_elem(&cx_nat, &rk, rv, BPF_NOEXIST)) {
			struct cx_nat_entry *old = bpf_map_lookup_elem(&cx_nat, &rk);

			if (!old || !cx_nat_same(old, rv))
				return -1;
			/* This flow's own reply entry, left by an earlier flow of
			 * the same tuple (or written by a CPU starting it at the
			 * same moment): it starts afresh (counters and TCP
			 * sequence state were the old flow's). */
			bpf_map_update_elem(&cx_nat, &rk, rv, BPF_EXIST);
			reused = 1;
		}
	} else {
		if (cfg && cfg->nat_port_min && cfg->nat_port_max >= cfg->nat_port_min) {
			pmin = cfg->nat_port_min;
			pmax = cfg->nat_port_max;
		}
		range = (__u32)pmax - pmin + 1;
		for (i = 0; i < CX_NAT_PORT_TRIES; i++) {
			/* The sender's own port first when it is in the range
			 * (a resolver's random port keeps its randomness), then
			 * random ones: never a port derived from the flow, which
			 * an attacker could predict (RFC 5452, RFC 6056). */
			__u16 port = (i == 0 && want >= pmin && want <= pmax) ?
					     want : (__u16)(pmin + bpf_get_prandom_u32() % range);
			__be16 p = bpf_htons(port);

			if (cx_icmp_proto(t->proto))
				cx_nat_key_of(&rk, nd, ns, p, 0, t->proto);
			else
				cx_nat_key_of(&rk, nd, ns, rsport, p, t->proto);
			if (!bpf_map_update_elem(&cx_nat, &rk, rv, BPF_NOEXIST) ||
			    (syn && cx_nat_take_closed(&rk, &ok, now) &&
			     !bpf_map_update_elem(&cx_nat, &rk, rv, BPF_NOEXIST))) {
				/* (Another CPU may take a closed flow's port first.) */
				nsp = p;
				break;
			}
			/* Taken: the next try is random. */
		}
		if (i == CX_NAT_PORT_TRIES)
			return -1;
	}

	cx_nat_key_of(&ok, &t->saddr, &t->daddr, t->sport, t->dport, t->proto);
	__builtin_memset(rv, 0, sizeof(*rv));
	rv->dir = CX_CT_ORIG;
	rv->nat = nat;
	rv->created_ns = now;
	rv->last_ns = now;
	__builtin_memcpy(rv->nat_saddr, ns, 16);
	__builtin_memcpy(rv->nat_daddr, nd, 16);
	rv->nat_sport = nsp;
	rv->nat_dport = cx_icmp_proto(t->proto) ? 0 : ndp;
	if (t->proto == IPPROTO_TCP && t->frag != CX_FRAG_LATER)
		cx_tcp_advance(&rv->tcp, t);
	rv->packets = 1;
	rv->bytes = len;
	if (cx_addr_eq(&t->saddr, nd) && cx_addr_eq(&t->daddr, ns) && t->sport == rsport && t->dport == rdport) {
		/* Echo to its own floating IP: both directions carry one
		 * tuple, and the one entry rewrites it both ways. */
		if (bpf_map_update_elem(&cx_nat, &ok, rv, BPF_ANY))
			return -1;
		cx_ct_stat(CX_CTS_NAT_CREATED, 1);
		return 0;
	}
	if (bpf_map_update_elem(&cx_nat, &ok, rv, BPF_NOEXIST)) {
		/* Another CPU started this flow first (or the table refused):
		 * its entries stand, and the reply entry written here goes. */
		if (!reused) {
			cx_ct_stat(CX_CTS_NAT_CREATED, 1);
			if (!bpf_map_delete_elem(&cx_nat, &rk))
				cx_ct_stat(CX_CTS_NAT_DELETED, 1);
		}
		return bpf_map_lookup_elem(&cx_nat, &ok) ? 0 : -1;
	}
	/* Every entry written is counted: the agent tells evictions by them. */
	cx_ct_stat(CX_CTS_NAT_CREATED, reused ? 1 : 2);
	return 0;
}

/* cx_nat_outgoing_dst says whether a workload's IPv4 packet to dst may leave as
 * the node (natOutgoing): only when the underlay routes it on. Link-local
 * destinations are never forwarded (RFC 3927; 169.254.169.254 may be the
 * node's own cloud metadata service, not the workload's to reach as the
 * node); the host's own addresses, broadcast and multicast are the host
 * stack's, and so is a destination without a route, which the host answers
 * with an ICMP unreachable. Translated, a packet from the node's address
 * would be a martian to that stack. */
static __always_inline int cx_nat_outgoing_dst(struct __sk_buff *skb, __be32 node, __be32 dst)
{
	struct cx_nexthop nh;

	if ((dst & bpf_htonl(0xffff0000)) == bpf_htonl(0xa9fe0000))
		return 0;
	return !cx_fib_nexthop(skb, node, dst, &nh);
}

/* cx_nat_outgoing_dst6 is cx_nat_outgoing_dst for IPv6 (NAT66): never to a
 * link-local (fe80::/10, the metadata service's fe80::a9fe:a9fe among
 * them) or multicast destination, and only when the IPv6 underlay routes
 * it on. */
static __always_inline int cx_nat_outgoing_dst6(struct __sk_buff *skb, const void *node, const struct in6_addr *dst)
{
	struct cx_nexthop nh;

	if (cx_is_link_local6(dst) || dst->in6_u.u6_addr8[0] == 0xff)
		return 0;
	return !cx_fib_nexthop6(skb, node, dst, &nh);
}

/* The outcomes of cx_nat. */
enum cx_nat_result {
	CX_NAT_NONE = 0,    /* untracked, or tracked without translation */
	CX_NAT_DONE = 1,    /* translated: route on the new destination */
	CX_NAT_ERR_PORTS = -1,
	CX_NAT_ERR_CT = -2,
	CX_NAT_ERR_HELPER = -3,
	CX_NAT_ERR_POLICY = -4, /* network policy denied the new flow */
	CX_NAT_ERR_TCP_WINDOW = -5, /* a TCP RST outside its flow's window */
	CX_NAT_ERR_FRAG = -6, /* a later fragment whose first was not seen */
	CX_NAT_ERR_MALFORMED = -7, /* an IPv6 packet with a v4-mapped address */
};

/* What a hook may start. Replies and known flows are translated anywhere. */
enum cx_nat_start {
	CX_START_FIP = 1 << 0,          /* DNAT to a floating IP's fixed IP */
	CX_START_WORKLOAD = 1 << 1,     /* hairpin, metadata and natOutgoing: from a workload */
	CX_START_TRACK = 1 << 2,        /* track untranslated flows too */
	CX_START_NAT_OUTGOING = 1 << 3, /* the source is in a natOutgoing pool */
	/* DNAT only to an instance on this node (CX_FIP_LOCAL): traffic from
	 * outside. The instance's replies leave from its own node, which must
	 * know the flow, so only that node may translate it; elsewhere it is
	 * forwarded there as it came. A first hop (a workload, the host) may
	 * translate for any instance: the replies come back to it. */
	CX_START_FIP_HERE = 1 << 4,
	/* The hook's flows are mostly translated ones: cx_nat is looked
	 * up first. */
	CX_START_NAT_FIRST = 1 << 5,
	/* The host's own flows (calyx_to_underlay): a floating IP's flow
	 * also gets a source port of the NAT range, so that its replies are
	 * told from the host's other traffic by their port alone (the
	 * underlay's cheap exit). */
	CX_START_HOST = 1 << 6,
	/* From the underlay: a later fragment without its first is dropped
	 * only when it is for a workload or a floating IP here; the host's
	 * own go to its stack, which reassembles or times them out. */
	CX_START_ORPHAN_HOST = 1 << 7,
	/* The packet's family, where the hook's path knows it (a constant
	 * there): the verifier then walks that family's code only. A hook
	 * taking both sets neither (cx_start_v6). */
	CX_START_V4 = 1 << 8,
	CX_START_V6 = 1 << 9,
};

/* cx_start_v6 is t->v6, known at compile time where start says the family. */
static __always_inline int cx_start_v6(__u32 start, const struct cx_tuple *t)
{
	if (start & CX_START_V6)
		return 1;
	if (start & CX_START_V4)
		return 0;
	return t->v6;
}

/* cx_icmp6_quoted is cx_icmp_quoted for an ICMPv6 error (outer tuple t):
 * the quoted IPv6 header must be followed by its L4 header (no extension
 * headers). */
static __always_inline int cx_icmp6_quoted(struct __sk_buff *skb, const struct cx_tuple *t, struct cx_tuple *it,
					   struct cx_flow *qf)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	__u32 off = (t->l4_off + 8) & CX_L4_OFF_MAX;
	struct ipv6hdr *inner = data + off;
	__u8 *l4 = (void *)(inner + 1);

	if ((void *)(l4 + 8) > data_end)
		return 0;
	it->v6 = 1;
	it->proto = inner->nexthdr;
	if (it->proto == IPPROTO_ICMPV6) {
		if (l4[0] != CX_ICMPV6_ECHO && l4[0] != CX_ICMPV6_ECHO_REPLY)
			return 0;
		__builtin_memcpy(&it->sport, l4 + 4, 2);
		it->dport = 0;
	} else if (it->proto == IPPROTO_TCP || it->proto == IPPROTO_UDP) {
		__builtin_memcpy(&it->sport, l4 + 2, 2);
		__builtin_memcpy(&it->dport, l4, 2);
	} else {
		return 0;
	}
	/* The quoted packet went the other way: its reverse is this
	 * direction's tuple. */
	__builtin_memcpy(&it->saddr, &inner->daddr, 16);
	__builtin_memcpy(&it->daddr, &inner->saddr, 16);
	if (cx_is_v4mapped(&it->saddr) || cx_is_v4mapped(&it->daddr))
		return 0;
	cx_flow_lookup(it, qf, 1);
	return cx_flow_tracked(qf);
}

/* cx_icmp_quoted finds the flow an ICMP error (tuple kind CX_TUPLE_ERROR,
 * outer tuple t) is about, with that flow's tuple in this packet's
 * direction in *it, and says whether it is tracked. */
static __always_inline int cx_icmp_quoted(struct __sk_buff *skb, const struct cx_tuple *t, struct cx_tuple *it,
					  struct cx_flow *qf)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct iphdr *outer = data + ETH_HLEN;
	struct iphdr *inner = data + CX_L4_OFF + 8;
	__be16 ports[2];

	__builtin_memset(it, 0, sizeof(*it));
	if (t->v6)
		return cx_icmp6_quoted(skb, t, it, qf);
	if ((void *)(inner + 1) + 8 > data_end || inner->ihl != 5)
		return 0;
	if (bpf_ntohs(outer->tot_len) < sizeof(*outer) + 8 + sizeof(*inner) + 8)
		/* The quoted ports lie past the datagram (in a frame's
		 * trailer): not part of the error, and outside its checksum. */
		return 0;
	__builtin_memcpy(ports, (void *)(inner + 1), 4);
	if (inner->protocol == IPPROTO_ICMP) {
		__u8 *ic = (void *)(inner + 1);

		if (ic[0] != CX_ICMP_ECHO && ic[0] != CX_ICMP_ECHO_REPLY)
			return 0;
		__builtin_memcpy(&ports[0], ic + 4, 2);
		ports[1] = 0;
	} else if (inner->protocol != IPPROTO_TCP && inner->protocol != IPPROTO_UDP) {
		return 0;
	}
	/* The quoted packet went the other way: its reverse is this
	 * direction's tuple. */
	cx_addr_v4(it->saddr.in6_u.u6_addr8, inner->daddr);
	cx_addr_v4(it->daddr.in6_u.u6_addr8, inner->saddr);
	it->proto = inner->protocol;
	if (it->proto == IPPROTO_ICMP) {
		it->sport = ports[0];
	} else {
		it->sport = ports[1];
		it->dport = ports[0];
	}
	cx_flow_lookup(it, qf, 1);
	return cx_flow_tracked(qf);
}

/* cx_icmp_related says whether the ICMP error in skb (outer tuple t) is
 * related to a tracked flow, found in *qf: it goes to the end that sent the
 * quoted packet, and comes from the flow's other end or, when router_ok is
 * set (it came from the underlay or the host), from a router on the path
 * (RFC 5508: a NAT forwards their errors). A workload is nobody's router:
 * an error it sends about a flow it is not an end of is no flow's (the
 * caller treats it as a new flow, for policy). The quoted tuple, in this
 * packet's direction, is left in *it. */
static __always_inline int cx_icmp_related(struct __sk_buff *skb, const struct cx_tuple *t, struct cx_tuple *it,
					   struct cx_flow *qf, int router_ok)
{
	if (!cx_icmp_quoted(skb, t, it, qf) || !cx_addr_eq(&t->daddr, &it->daddr))
		return 0;
	return router_ok || cx_addr_eq(&t->saddr, &it->saddr);
}

/* cx_icmp6_error_xlate is cx_icmp_error_xlate's translation for an ICMPv6
 * error (at t->l4_off) about a NAT66 flow whose entry for this direction is
 * e, it being the quoted packet's tuple reversed: the outer addresses the
 * flow's own packets carry, then the quoted packet's addresses and ports.
 * The ICMPv6 checksum covers the outer addresses (pseudo-header) and every
 * quoted byte: each change is folded in as a difference, computed from
 * the tuples and the entry, with nothing built on the stack. */
static __always_inline int cx_icmp6_error_xlate(struct __sk_buff *skb, struct cx_tuple *t, const struct cx_tuple *it,
						const struct cx_nat_entry *e)
{
	__u32 l4 = t->l4_off & CX_L4_OFF_MAX, inner = l4 + 8, iports = inner + sizeof(struct ipv6hdr);
	int src = cx_addr_eq(&t->saddr, &it->saddr), dst = cx_addr_eq(&t->daddr, &it->daddr);
	__s64 outer = 0, quoted;

	if (src)
		outer = bpf_csum_diff((__be32 *)&t->saddr, 16, (__be32 *)e->nat_saddr, 16, 0);
	if (dst && outer >= 0)
		outer = bpf_csum_diff((__be32 *)&t->daddr, 16, (__be32 *)e->nat_daddr, 16, outer);
	/* The quoted packet went the other way: its source is it's daddr. */
	quoted = bpf_csum_diff((__be32 *)&it->daddr, 16, (__be32 *)e->nat_daddr, 16, 0);
	if (quoted >= 0)
		quoted = bpf_csum_diff((__be32 *)&it->saddr, 16, (__be32 *)e->nat_saddr, 16, quoted);
	if (outer < 0 || quoted < 0)
		return CX_NAT_ERR_HELPER;
	if (bpf_l4_csum_replace(skb, l4 + 2, 0, outer, BPF_F_PSEUDO_HDR) ||
	    bpf_l4_csum_replace(skb, l4 + 2, 0, quoted, 0))
		return CX_NAT_ERR_HELPER;
	if ((src && bpf_skb_store_bytes(skb, CX_IP6_SRC_OFF, e->nat_saddr, 16, 0)) ||
	    (dst && bpf_skb_store_bytes(skb, CX_IP6_SRC_OFF + 16, e->nat_daddr, 16, 0)) ||
	    bpf_skb_store_bytes(skb, inner + __builtin_offsetof(struct ipv6hdr, saddr), e->nat_daddr, 16, 0) ||
	    bpf_skb_store_bytes(skb, inner + __builtin_offsetof(struct ipv6hdr, daddr), e->nat_saddr, 16, 0))
		return CX_NAT_ERR_HELPER;
	if (it->proto == IPPROTO_ICMPV6) {
		/* A quoted echo: its identifier. */
		if (cx_rewrite_port(skb, l4, iports + 4, it->sport, e->nat_sport, IPPROTO_ICMPV6))
			return CX_NAT_ERR_HELPER;
	} else if (cx_rewrite_port(skb, l4, iports, it->dport, e->nat_dport, IPPROTO_ICMPV6) ||
		   cx_rewrite_port(skb, l4, iports + 2, it->sport, e->nat_sport, IPPROTO_ICMPV6)) {
		return CX_NAT_ERR_HELPER;
	}
	if (src)
		__builtin_memcpy(&t->saddr, e->nat_saddr, 16);
	if (dst)
		__builtin_memcpy(&t->daddr, e->nat_daddr, 16);
	return CX_NAT_DONE;
}

/* cx_icmp_error_xlate translates an ICMP error related to a tracked flow
 * (cx_icmp_related, with router_ok): the outer addresses and the quoted
 * header, as the flow's own packets would be. v6 says t is IPv6
 * (cx_start_v6): an ICMPv6 error about a NAT66 flow (cx_icmp6_error_xlate). Returns CX_NAT_DONE,
 * CX_NAT_NONE when it is related to no translated flow, or an error. Only
 * the ICMP and IP checksums are fixed: the quoted L4 checksum is left as it
 * was (RFC 5508 does not ask for it). */
static __always_inline int cx_icmp_error_xlate(struct __sk_buff *skb, struct cx_tuple *t, __u32 len, int router_ok,
					       int v6)
{
	void *data, *data_end;
	struct iphdr *inner;
	__u32 ioff = CX_L4_OFF + 8;
	struct cx_tuple *it = cx_tuple_slot(CX_TUPLE_QUOTED);
	struct cx_nat_entry *e;
	struct cx_flow qf;
	__be32 ns, nd, old_isum, new_isum;
	__be16 nsp, ndp;
	__u16 isum;

	if (!it || !cx_icmp_related(skb, t, it, &qf, router_ok))
		return CX_NAT_NONE;
	/* An ICMP error is no TCP segment: only counted. */
	cx_flow_count(&qf, len);
	if (!qf.nat)
		return CX_NAT_NONE;
	e = qf.nat;
	if (v6)
		return cx_icmp6_error_xlate(skb, t, it, e);
	ns = cx_addr_ip4(e->nat_saddr);
	nd = cx_addr_ip4(e->nat_daddr);
	nsp = e->nat_sport;
	ndp = e->nat_dport;

	/* The outer header: only the addresses the flow's own packets carry. */
	if (CX_IP4(t->saddr) == CX_IP4(it->saddr) &&
	    cx_rewrite_addr(skb, CX_IP_SRC_OFF, CX_IP4(t->saddr), ns, IPPROTO_ICMP))
		return CX_NAT_ERR_HELPER;
	if (CX_IP4(t->daddr) == CX_IP4(it->daddr) &&
	    cx_rewrite_addr(skb, CX_IP_DST_OFF, CX_IP4(t->daddr), nd, IPPROTO_ICMP))
		return CX_NAT_ERR_HELPER;

	/* The quoted header, reversed: its destination is our source. */
	data = cx_skb_data(skb);
	data_end = cx_skb_data_end(skb);
	inner = data + ioff;
	if ((void *)(inner + 1) + 8 > data_end)
		return CX_NAT_ERR_HELPER;
	old_isum = inner->check;
	{
		struct iphdr ih;

		__builtin_memcpy(&ih, inner, sizeof(ih));
		ih.saddr = nd;
		ih.daddr = ns;
		ih.check = 0;
		isum = cx_csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)&ih, sizeof(ih), 0));
	}
	new_isum = isum;
	/* The ICMP checksum covers the quoted bytes: each change is folded in. */
	if (bpf_l4_csum_replace(skb, CX_L4_OFF + 2, CX_IP4(it->daddr), nd, 4) ||
	    bpf_l4_csum_replace(skb, CX_L4_OFF + 2, CX_IP4(it->saddr), ns, 4) ||
	    bpf_l4_csum_replace(skb, CX_L4_OFF + 2, (__u16)old_isum, (__u16)new_isum, 2))
		return CX_NAT_ERR_HELPER;
	if (bpf_skb_store_bytes(skb, ioff + __builtin_offsetof(struct iphdr, saddr), &nd, 4, 0) ||
	    bpf_skb_store_bytes(skb, ioff + __builtin_offsetof(struct iphdr, daddr), &ns, 4, 0) ||
	    bpf_skb_store_bytes(skb, ioff + __builtin_offsetof(struct iphdr, check), &isum, 2, 0))
		return CX_NAT_ERR_HELPER;
	if (it->proto == IPPROTO_ICMP) {
		if (nsp != it->sport &&
		    (bpf_l4_csum_replace(skb, CX_L4_OFF + 2, it->sport, nsp, 2) ||
		     bpf_skb_store_bytes(skb, ioff + sizeof(struct iphdr) + 4, &nsp, 2, 0)))
			return CX_NAT_ERR_HELPER;
	} else {
		if (ndp != it->dport &&
		    (bpf_l4_csum_replace(skb, CX_L4_OFF + 2, it->dport, ndp, 2) ||
		     bpf_skb_store_bytes(skb, ioff + sizeof(struct iphdr), &ndp, 2, 0)))
			return CX_NAT_ERR_HELPER;
		if (nsp != it->sport &&
		    (bpf_l4_csum_replace(skb, CX_L4_OFF + 2, it->sport, nsp, 2) ||
		     bpf_skb_store_bytes(skb, ioff + sizeof(struct iphdr) + 2, &nsp, 2, 0)))
			return CX_NAT_ERR_HELPER;
	}
	if (CX_IP4(t->saddr) == CX_IP4(it->saddr))
		CX_IP4(t->saddr) = ns;
	if (CX_IP4(t->daddr) == CX_IP4(it->daddr))
		CX_IP4(t->daddr) = nd;
	return CX_NAT_DONE;
}

/* cx_nat_first translates a flow's first packet, t, by the entry
 * cx_nat_create just wrote for it (or the one another CPU won with), and
 * leaves it in f. */
static __always_inline int cx_nat_first(struct __sk_buff *skb, struct cx_tuple *t, struct cx_flow *f, int v6)
{
	struct cx_nat_key k;
	struct cx_nat_entry *e;

	cx_nat_key_of(&k, &t->saddr, &t->daddr, t->sport, t->dport, t->proto);
	e = bpf_map_lookup_elem(&cx_nat, &k);
	if (!e || cx_nat_apply(skb, t, e, v6))
		return CX_NAT_ERR_HELPER;
	f->nat = e;
	return CX_NAT_DONE;
}

/* cx_nat_flow tracks and translates a TCP, UDP or ICMP echo packet of
 * tuple t whose flow has been looked up already (f). A new flow starts
 * what start allows; src_ifindex is the workload interface it comes from
 * (0: none); dst_rt (may be NULL) keeps the destination's route. It returns what cx_nat does, and leaves in f the NAT entry a
 * translated packet matched or started, for the caller to cache its
 * routing decision in. */
static __always_inline int cx_nat_flow(struct __sk_buff *skb, struct cx_tuple *t, struct cx_flow *f, __u32 start,
				       __u32 len, __u32 src_ifindex, struct cx_dst *dst_rt)
{
	struct cx_node_config *cfg;
	struct cx_fip *fip;

	if (f->nat) {
		if (cx_nat_seen(f->nat, t, len))
			return CX_NAT_ERR_TCP_WINDOW;
		if (cx_nat_apply(skb, t, f->nat, cx_start_v6(start, t)))
			return CX_NAT_ERR_HELPER;
		return CX_NAT_DONE;
	}
	if (f->ct)
		return cx_ct_seen(f->ct, f->side, t, len) ? CX_NAT_ERR_TCP_WINDOW : CX_NAT_NONE;
	/* Only a flow's first packet may start it: a TCP segment that is not a
	 * SYN belongs to a flow this node does not know, and is left alone; a
	 * later fragment's flow was started by its first, or not at all. */
	if (t->proto == IPPROTO_TCP && (t->tcp_flags & (CX_TCP_SYN | CX_TCP_ACK)) != CX_TCP_SYN)
		return CX_NAT_NONE;
	if (cx_icmp_proto(t->proto) && !cx_icmp_echo_request(t))
		return CX_NAT_NONE;
	if (t->frag == CX_FRAG_LATER)
		return CX_NAT_NONE;
	cfg = (start & CX_START_WORKLOAD) ? cx_get_config() : NULL;
	/* IPv6 has neither floating IPs nor a metadata DNAT (the host answers
	 * fe80::a9fe:a9fe itself): natOutgoing (NAT66) alone. */
	if (!cx_start_v6(start, t) && (start & (CX_START_FIP | CX_START_FIP_HERE))) {
		struct cx_route *rt = dst_rt ? cx_dst_route(dst_rt, &t->daddr) : NULL;

		/* A floating IP has its route: most new flows pay no fip lookup. */
		fip = !dst_rt || (rt && rt->type == CX_RT_FIP) ? cx_fip_of_addr(&t->daddr) : NULL;
		if (fip && ((start & CX_START_FIP) || (fip->flags & CX_FIP_LOCAL))) {
			const struct in6_addr *fixed = (const struct in6_addr *)fip->fixed, *ns = &t->saddr;
			__u8 nat = CX_NAT_DNAT;
			int alloc = 0;

			if ((start & CX_START_WORKLOAD) && cx_addr_eq(&t->saddr, fixed)) {
				/* Hairpin: the instance talks to its own floating IP.
				 * It must see the floating IP as the source, or its
				 * replies would bypass the translation. */
				ns = &t->daddr;
				nat |= CX_NAT_SNAT;
			} else if (start & CX_START_HOST) {
				alloc = 1;
				nat |= CX_NAT_SNAT;
			}
			if (cx_nat_create(t, ns, fixed, t->sport, t->dport, nat, alloc, len) < 0)
				return alloc ? CX_NAT_ERR_PORTS : CX_NAT_ERR_CT;
			return cx_nat_first(skb, t, f, cx_start_v6(start, t));
		}
	}
	if (!cx_start_v6(start, t) && cfg && CX_IP4(t->daddr) == CX_METADATA_IP && t->proto == IPPROTO_TCP && t->dport == CX_METADATA_PORT &&
	    cx_addr_ip4(cfg->metadata_addr)) {
		/* The metadata service, served by the host. */
		if (cx_nat_create(t, &t->saddr, (const struct in6_addr *)cfg->metadata_addr, t->sport,
				  bpf_htons((__u16)cfg->metadata_port), CX_NAT_DNAT, 0, len) < 0)
			return CX_NAT_ERR_CT;
		return cx_nat_first(skb, t, f, cx_start_v6(start, t));
	}
	if ((start & CX_START_NAT_OUTGOING) && cfg && !cx_dst_route(dst_rt, &t->daddr)) {
		/* Outside every pool and not a node: leave as the node's
		 * address of the packet's family, from the workload's own port
		 * when cx_nat_create may keep it. One call for both families:
		 * the port search is the biggest code the verifier walks. */
		int v6 = cx_start_v6(start, t);
		const struct in6_addr *node = (const struct in6_addr *)(v6 ? cfg->node_addr6 : cfg->node_addr);
		int out = v6 ? !cx_is_unspecified6(node) && cx_nat_outgoing_dst6(skb, node, &t->daddr) :
				  cx_addr_ip4(cfg->node_addr) &&
					  cx_nat_outgoing_dst(skb, cx_addr_ip4(cfg->node_addr), CX_IP4(t->daddr));

		if (out) {
			if (cx_nat_create(t, node, &t->daddr, t->sport, t->dport, CX_NAT_SNAT, 1, len) < 0)
				return CX_NAT_ERR_PORTS;
			return cx_nat_first(skb, t, f, cx_start_v6(start, t));
		}
	}
	if (start & CX_START_TRACK)
		/* Tracked without translation: replies pass policy as replies,
		 * and calyxctl ct dump shows the flow. A full table only costs
		 * that (the LRU makes room first). */
		cx_ct_create(t, len, src_ifindex);
	return CX_NAT_NONE;
}

/* cx_nat_host tracks and translates the IP packet in skb for a hook without
 * policy (the host's own packets, calyx_to_underlay): a packet of a tracked
 * flow is rewritten as its entry says; a new flow starts what start
 * allows. len is the packet's length as it arrived (for the counters).
 * Returns an enum cx_nat_result; t holds the tuple as rewritten. */
static __always_inline int cx_nat_host(struct __sk_buff *skb, struct cx_tuple *t, __u32 start, __u32 len)
{
	struct cx_flow f = {};
	int kind = cx_tuple_of(skb, t);

	if (kind == CX_TUPLE_ERROR)
		/* Not policed: the host's own packets (routers allowed). */
		return cx_icmp_error_xlate(skb, t, len, 1, t->v6);
	if (kind != CX_TUPLE_FLOW)
		/* A later fragment of the host's own without its first: the
		 * host's business. */
		return CX_NAT_NONE;
	cx_flow_lookup(t, &f, 1);
	return cx_nat_flow(skb, t, &f, start, len, 0, NULL);
}

/* cx_nat_drop counts a failed translation under its reason. */
static __always_inline int cx_nat_drop(struct __sk_buff *skb, __u32 ifindex, int nat, __u32 len)
{
	if (nat == CX_NAT_ERR_PORTS)
		/* natOutgoing: every candidate source port to this server is taken. */
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_NAT_PORTS, len);
	if (nat == CX_NAT_ERR_POLICY)
		/* Network policy denies the new flow (counted per rule in
		 * cx_policy_hits). Its event, with the rule, went already
		 * (cx_policy_decide): counted only. */
		return cx_verdict_len(ifindex, CX_REASON_DROP_POLICY, len, TC_ACT_SHOT);
	if (nat == CX_NAT_ERR_TCP_WINDOW)
		/* An RST of a tracked flow outside its window: a blind reset,
		 * which no end of the flow would accept (RFC 5961). Dropped here
		 * so that no end has to, and the flow's state is unchanged. */
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_TCP_WINDOW, len);
	if (nat == CX_NAT_ERR_FRAG)
		/* A fragment after the first, whose first fragment this hook
		 * has not seen (lost, reordered, or never sent: a way past
		 * policy, which cannot see its ports). */
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_FRAG_ORPHAN, len);
	if (nat == CX_NAT_ERR_MALFORMED)
		/* IPv6 with a v4-mapped address (never on the wire, RFC 4291
		 * 2.5.5.2): tracked, it would share IPv4 flows' entries. */
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_MALFORMED, len);
	if (nat == CX_NAT_ERR_CT)
		/* The flow's conntrack entries could not be written: its reply
		 * tuple is another flow's (or the table refused): untranslatable. */
		return cx_drop_len(skb, ifindex, CX_REASON_DROP_CT_FULL, len);
	/* A helper refused to rewrite the packet. */
	return cx_drop_len(skb, ifindex, CX_REASON_DROP_HELPER, len);
}

#endif /* CALYX_NAT_H */
