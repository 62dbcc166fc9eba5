/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking: a packet's flow tuple (fragments included, through
 * cx_frags), its flow in cx_ct (untranslated, one entry) or cx_nat
 * (translated, an entry per direction), and what TCP tracking learns from
 * each segment. IPv4 and IPv6 alike: the keys hold 16-byte addresses. */
#ifndef CALYX_CONNTRACK_H
#define CALYX_CONNTRACK_H

#include "routes.h"

/* cx_tuple is what identifies a packet's flow, with what the rewrite needs
 * and, for TCP, what sequence tracking needs. Both families: IPv4
 * addresses are v4-mapped (CX_IP4 reads them), so every key built from a
 * tuple is the same for either. */
struct cx_tuple {
	struct in6_addr saddr;
	struct in6_addr daddr;
	__be16 sport; /* ICMP echo: the identifier */
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 tcp_wscale; /* TCP SYN: the window-scale shift it offers, or CX_TCP_NO_WSCALE */
	__u32 seq;       /* TCP, host order */
	__u32 ack;
	__u32 seg_len;   /* TCP: the sequence space the segment takes (payload, SYN, FIN) */
	__u16 win;       /* TCP: the window field as sent (unscaled) */
	__u8 frag;       /* enum cx_frag_kind */
	__u8 v6;         /* an IPv6 packet */
	/* What policy matches: the destination port (ICMP: type << 8 |
	 * code), a later fragment's from its first. */
	__u16 policy_port;
	__u16 l4_off; /* where the L4 header starts (IPv6: after its extension headers) */
};

/* A packet's tuple, and the one an ICMP error quotes, are kept per CPU,
 * not on the stack, which the hooks' paths fill to its 512 bytes. Not
 * pinned: nothing outlives the packet. */
enum cx_tuple_slot {
	CX_TUPLE_PACKET = 0,
	CX_TUPLE_QUOTED = 1,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct cx_tuple);
} cx_tuple_scratch SEC(".maps");

/* cx_tuple_slot is this CPU's tuple of a cx_tuple_slot. Never NULL in
 * practice (a per-CPU array's entry); callers check for the verifier. */
static __always_inline struct cx_tuple *cx_tuple_slot(__u32 slot)
{
	return bpf_map_lookup_elem(&cx_tuple_scratch, &slot);
}

enum cx_frag_kind {
	CX_FRAG_NONE = 0,
	CX_FRAG_FIRST = 1, /* the first fragment: it has the L4 header */
	CX_FRAG_LATER = 2, /* a later one: no L4 header, ports from cx_frags */
};

/* last_ns is written at most this often (ns): a flow's packets would
 * otherwise all write to one cache line. */
#define CX_CT_LAST_NS 1000000000ULL

/* cx_ct_stat adds n to a cx_ct_stats counter. */
static __always_inline void cx_ct_stat(__u32 stat, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&cx_ct_stats, &stat);

	if (c)
		*c += n;
}

#define CX_TCP_NO_WSCALE 0xff
#define CX_TCP_MAX_WSCALE 14 /* RFC 7323 2.3 */
#define CX_TCP_OPT_WSCALE 3

/* cx_tcp_opts is a SYN's options as cx_tcp_wscale walks them. The buffer
 * is twice the options' 40 bytes and indexed modulo 64: every read is
 * inside it, whatever the option lengths say. */
struct cx_tcp_opts {
	__u8 buf[64];
	__u32 len;
	__u32 off;
	int wscale;
};

/* cx_tcp_opt_step reads the option at o->off: bpf_loop's callback, so the
 * verifier checks one step, not every path through up to 20 options.
 * Returns 1 to stop. */
static long cx_tcp_opt_step(__u32 i, void *ctx)
{
	struct cx_tcp_opts *o = ctx;
	__u32 off = o->off;
	__u8 kind, len;

	if (off + 2 > o->len)
		return 1;
	kind = o->buf[off & 63];
	if (kind == 0) /* end of options */
		return 1;
	if (kind == 1) { /* no-op */
		o->off = off + 1;
		return 0;
	}
	len = o->buf[(off + 1) & 63];
	if (kind == CX_TCP_OPT_WSCALE && len == 3 && off + 3 <= o->len) {
		__u8 shift = o->buf[(off + 2) & 63];

		/* RFC 7323: a larger shift is taken as 14. */
		o->wscale = shift > CX_TCP_MAX_WSCALE ? CX_TCP_MAX_WSCALE : shift;
		return 1;
	}
	if (len < 2)
		return 1;
	o->off = off + len;
	return 0;
}

/* cx_tcp_wscale returns the window-scale shift a SYN (its TCP header at
 * l4_off) offers (RFC 7323), or CX_TCP_NO_WSCALE. Its options (opt_len
 * bytes, at most 40) are copied out
 * with bpf_skb_load_bytes, so they need not be linear (after decap they
 * may not be). Only SYNs carry the option. Requires bpf_loop (5.17). */
static __always_inline int cx_tcp_wscale(struct __sk_buff *skb, __u32 l4_off, __u32 opt_len)
{
	struct cx_tcp_opts o = { .len = opt_len, .wscale = CX_TCP_NO_WSCALE };

	if (opt_len < 3 || opt_len > 40)
		return CX_TCP_NO_WSCALE;
	if (bpf_skb_load_bytes(skb, l4_off + 20, o.buf, opt_len))
		return CX_TCP_NO_WSCALE;
	bpf_loop(20, cx_tcp_opt_step, &o, 0);
	return o.wscale;
}

enum cx_tuple_kind {
	CX_TUPLE_NONE = 0,  /* not tracked: options, other protocols */
	CX_TUPLE_FLOW = 1,  /* TCP, UDP or ICMP echo (or a fragment of one) */
	CX_TUPLE_ERROR = 2, /* an ICMP error about another packet */
	CX_TUPLE_ORPHAN = 3, /* a later fragment whose first this hook has not seen */
	CX_TUPLE_BAD = 4,    /* an IPv6 packet with a v4-mapped address: dropped as malformed */
};

/* cx_icmp_proto says whether proto is ICMP of either family: its echo
 * identifier travels both ways in one field. */
static __always_inline int cx_icmp_proto(__u8 proto)
{
	return proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6;
}

/* cx_icmp_echo_request says whether t is an echo request, the only ICMP
 * packet that starts a flow. */
static __always_inline int cx_icmp_echo_request(const struct cx_tuple *t)
{
	return t->icmp_type == (t->v6 ? CX_ICMPV6_ECHO : CX_ICMP_ECHO);
}

static __always_inline void cx_frag_key_of(struct cx_frag_key *k, const struct cx_tuple *t, __u32 id)
{
	__builtin_memset(k, 0, sizeof(*k));
	__builtin_memcpy(k->saddr, &t->saddr, 16);
	__builtin_memcpy(k->daddr, &t->daddr, 16);
	k->id = id;
	k->proto = t->proto;
}

/* cx_frag_later fills t from the first fragment of the datagram a later
 * fragment (IP identification id) belongs to. */
static __always_inline int cx_frag_later(struct cx_tuple *t, __u32 id)
{
	struct cx_frag_key k;
	struct cx_frag *f;

	cx_frag_key_of(&k, t, id);
	f = bpf_map_lookup_elem(&cx_frags, &k);
	if (!f) {
		cx_ct_stat(CX_CTS_FRAG_ORPHANS, 1);
		return CX_TUPLE_ORPHAN;
	}
	t->sport = f->sport;
	t->dport = f->dport;
	t->icmp_type = f->icmp_type;
	t->policy_port = f->policy_port;
	t->frag = CX_FRAG_LATER;
	return CX_TUPLE_FLOW;
}

/* cx_frag_first remembers the ports of a first fragment (more to come,
 * offset 0) for the later ones. A full table forgets the oldest datagram. */
static __always_inline void cx_frag_first(struct cx_tuple *t, __u32 id)
{
	struct cx_frag_key k;
	struct cx_frag f = { .sport = t->sport, .dport = t->dport, .icmp_type = t->icmp_type,
			     .policy_port = t->policy_port };

	cx_frag_key_of(&k, t, id);
	bpf_map_update_elem(&cx_frags, &k, &f, BPF_ANY);
	t->frag = CX_FRAG_FIRST;
}

/* cx_l4_of reads the L4 header of t's packet at t->l4_off, ip_end being
 * where the IP datagram ends in the packet, and returns the tuple kind.
 * Ports and types are read even where the flow is not tracked (IPv4
 * options): policy matches them. */
static __always_inline int cx_l4_of(struct __sk_buff *skb, struct cx_tuple *t, __u32 ip_end)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	__u32 off = t->l4_off & CX_L4_OFF_MAX;
	__u8 *l4 = data + off;

	switch (t->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = (void *)l4;
		__u32 hdr;

		if ((void *)(th + 1) > data_end)
			return CX_TUPLE_NONE;
		__builtin_memcpy(&t->sport, l4, 2);
		__builtin_memcpy(&t->dport, l4 + 2, 2);
		t->policy_port = bpf_ntohs(t->dport);
		t->tcp_flags = l4[13];
		t->seq = bpf_ntohl(th->seq);
		t->ack = bpf_ntohl(th->ack_seq);
		t->win = bpf_ntohs(th->window);
		hdr = th->doff * 4;
		if (hdr < sizeof(*th))
			hdr = sizeof(*th);
		t->seg_len = ip_end > off + hdr ? ip_end - off - hdr : 0;
		if (t->tcp_flags & CX_TCP_SYN)
			t->seg_len++;
		if (t->tcp_flags & CX_TCP_FIN)
			t->seg_len++;
		t->tcp_wscale = (t->tcp_flags & CX_TCP_SYN) ? cx_tcp_wscale(skb, off, hdr - sizeof(*th)) :
							      CX_TCP_NO_WSCALE;
		return CX_TUPLE_FLOW;
	}
	case IPPROTO_UDP:
	case CX_IPPROTO_SCTP:
		if ((void *)(l4 + 8) > data_end)
			return CX_TUPLE_NONE;
		__builtin_memcpy(&t->sport, l4, 2);
		__builtin_memcpy(&t->dport, l4 + 2, 2);
		t->policy_port = bpf_ntohs(t->dport);
		/* SCTP is matched by port but not tracked. */
		return t->proto == IPPROTO_UDP ? CX_TUPLE_FLOW : CX_TUPLE_NONE;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if ((void *)(l4 + 8) > data_end)
			return CX_TUPLE_NONE;
		t->icmp_type = l4[0];
		t->policy_port = (__u16)l4[0] << 8 | l4[1];
		if (t->v6 ? (l4[0] == CX_ICMPV6_ECHO || l4[0] == CX_ICMPV6_ECHO_REPLY) :
			    (l4[0] == CX_ICMP_ECHO || l4[0] == CX_ICMP_ECHO_REPLY)) {
			__builtin_memcpy(&t->sport, l4 + 4, 2);
			return CX_TUPLE_FLOW;
		}
		/* Errors are never fragmented (they quote 576 bytes at most,
		 * IPv6's 1280). */
		if (t->v6 ? l4[0] < 128 :
			    (l4[0] == CX_ICMP_DEST_UNREACH || l4[0] == CX_ICMP_TIME_EXCEEDED ||
			     l4[0] == CX_ICMP_PARAMETER_PROB))
			return CX_TUPLE_ERROR;
		return CX_TUPLE_NONE;
	}
	return CX_TUPLE_NONE;
}

/* cx_tuple_of4 reads the flow tuple of the IPv4 packet at ETH_HLEN. A
 * packet with options is not tracked (nor translated), but its ports are
 * read for policy. */
static __always_inline int cx_tuple_of4(struct __sk_buff *skb, struct cx_tuple *t)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct iphdr *iph = data + ETH_HLEN;
	__u32 ip_end;
	int kind;

	if ((void *)(iph + 1) > data_end)
		return CX_TUPLE_NONE;
	cx_addr_v4(t->saddr.in6_u.u6_addr8, iph->saddr);
	cx_addr_v4(t->daddr.in6_u.u6_addr8, iph->daddr);
	t->proto = iph->protocol;
	t->l4_off = ETH_HLEN + (iph->ihl & 0xf) * 4;
	ip_end = bpf_ntohs(iph->tot_len);
	if (!ip_end) /* BIG TCP: the length is the packet's */
		ip_end = skb->len - ETH_HLEN;
	ip_end += ETH_HLEN;
	if (iph->frag_off & bpf_htons(CX_IP_OFFSET)) {
		if (iph->ihl != 5 || (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP &&
				      iph->protocol != IPPROTO_ICMP))
			return CX_TUPLE_NONE;
		return cx_frag_later(t, iph->id);
	}
	kind = cx_l4_of(skb, t, ip_end);
	if (iph->ihl != 5)
		return CX_TUPLE_NONE;
	data = cx_skb_data(skb);
	data_end = cx_skb_data_end(skb);
	iph = data + ETH_HLEN;
	if ((void *)(iph + 1) > data_end)
		return CX_TUPLE_NONE;
	if (kind == CX_TUPLE_FLOW && (iph->frag_off & bpf_htons(CX_IP_MF)))
		cx_frag_first(t, iph->id);
	return kind;
}

/* The IPv6 extension headers cx_tuple_of6 walks to find the L4 header. */
#define CX_IPV6_EXT_MAX 4
#define CX_NEXTHDR_HOP 0
#define CX_NEXTHDR_ROUTING 43
#define CX_NEXTHDR_FRAGMENT 44
#define CX_NEXTHDR_AUTH 51
#define CX_NEXTHDR_DEST 60

/* cx_tuple_of6 reads the flow tuple of the IPv6 packet at ETH_HLEN,
 * walking up to CX_IPV6_EXT_MAX extension headers (hop-by-hop, routing,
 * fragment, authentication, destination options) to its L4 header. A
 * packet with more, or with an unknown one, is not tracked and matches
 * policy by that header's number alone; one with a v4-mapped address is
 * CX_TUPLE_BAD (it would share IPv4 flows' keys). */
static __always_inline int cx_tuple_of6(struct __sk_buff *skb, struct cx_tuple *t)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	__u32 off = ETH_HLEN + sizeof(*ip6), ip_end, id = 0;
	__u8 nh;
	int i, kind, more = 0;

	if ((void *)(ip6 + 1) > data_end)
		return CX_TUPLE_NONE;
	t->v6 = 1;
	__builtin_memcpy(&t->saddr, &ip6->saddr, 16);
	__builtin_memcpy(&t->daddr, &ip6->daddr, 16);
	nh = ip6->nexthdr;
	ip_end = bpf_ntohs(ip6->payload_len);
	if (!ip_end) /* a jumbogram (BIG TCP): the length is the packet's */
		ip_end = skb->len - ETH_HLEN - sizeof(*ip6);
	ip_end += off;
	if (cx_is_v4mapped(&t->saddr) || cx_is_v4mapped(&t->daddr))
		return CX_TUPLE_BAD;
#pragma unroll
	for (i = 0; i < CX_IPV6_EXT_MAX; i++) {
		__u8 ext[8];

		if (nh != CX_NEXTHDR_HOP && nh != CX_NEXTHDR_ROUTING && nh != CX_NEXTHDR_FRAGMENT &&
		    nh != CX_NEXTHDR_AUTH && nh != CX_NEXTHDR_DEST)
			break;
		if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)))
			return CX_TUPLE_NONE;
		if (nh == CX_NEXTHDR_FRAGMENT) {
			__u16 fo = (__u16)ext[2] << 8 | ext[3];

			__builtin_memcpy(&id, &ext[4], 4);
			if (fo & 0xfff8) {
				/* A later fragment: its L4 header is in the first. */
				t->proto = ext[0];
				t->l4_off = 0;
				if (t->proto != IPPROTO_TCP && t->proto != IPPROTO_UDP && t->proto != IPPROTO_ICMPV6)
					return CX_TUPLE_NONE;
				return cx_frag_later(t, id);
			}
			more = fo & 1;
			off += 8;
		} else if (nh == CX_NEXTHDR_AUTH) {
			off += ((__u32)ext[1] + 2) * 4;
		} else {
			off += ((__u32)ext[1] + 1) * 8;
		}
		nh = ext[0];
	}
	t->proto = nh;
	t->l4_off = off;
	if (off > CX_L4_OFF_MAX)
		return CX_TUPLE_NONE;
	kind = cx_l4_of(skb, t, ip_end);
	if (kind == CX_TUPLE_FLOW && more)
		cx_frag_first(t, id);
	return kind;
}

/* cx_tuple_of reads the flow tuple of the IP packet at ETH_HLEN, of either
 * family. */
static __always_inline int cx_tuple_of(struct __sk_buff *skb, struct cx_tuple *t)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct ethhdr *eth = data;

	__builtin_memset(t, 0, sizeof(*t));
	if ((void *)(eth + 1) > data_end)
		return CX_TUPLE_NONE;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return cx_tuple_of6(skb, t);
	return cx_tuple_of4(skb, t);
}

/* cx_addr_gt says whether a > b, both as 128-bit numbers in network order. */
static __always_inline int cx_addr_gt(const struct in6_addr *a, const struct in6_addr *b)
{
	int i;

#pragma unroll
	for (i = 0; i < 4; i++) {
		__u32 x = bpf_ntohl(a->in6_u.u6_addr32[i]), y = bpf_ntohl(b->in6_u.u6_addr32[i]);

		if (x != y)
			return x > y;
	}
	return 0;
}

/* cx_ct_key_of fills the normalised key (cx_ct_key) of the flow whose
 * packet goes from (saddr, sport) to (daddr, dport) and returns the side
 * that packet comes from: 0 when its source is side a, 1 for b. */
static __always_inline __u32 cx_ct_key_of(struct cx_ct_key *k, const struct in6_addr *saddr,
					  const struct in6_addr *daddr, __be16 sport, __be16 dport, __u8 proto)
{
	__u32 side;

	if (cx_icmp_proto(proto))
		/* The echo identifier travels both ways in one field. */
		side = cx_addr_gt(saddr, daddr);
	else
		side = cx_addr_gt(saddr, daddr) ||
		       (cx_addr_eq(saddr, daddr) && bpf_ntohs(sport) > bpf_ntohs(dport));
	__builtin_memset(k, 0, sizeof(*k));
	k->proto = proto;
	if (cx_icmp_proto(proto)) {
		k->port_a = sport;
	} else if (side) {
		k->port_a = dport;
		k->port_b = sport;
	} else {
		k->port_a = sport;
		k->port_b = dport;
	}
	__builtin_memcpy(k->addr_a, side ? daddr : saddr, 16);
	__builtin_memcpy(k->addr_b, side ? saddr : daddr, 16);
	return side;
}

/* cx_ct_key_of_tuple is cx_ct_key_of for tuple t's packet. */
static __always_inline __u32 cx_ct_key_of_tuple(struct cx_ct_key *k, const struct cx_tuple *t)
{
	return cx_ct_key_of(k, &t->saddr, &t->daddr, t->sport, t->dport, t->proto);
}

/* cx_nat_key_of fills the key of the packets from (saddr, sport) to
 * (daddr, dport), addresses of either family as the maps keep them. */
static __always_inline void cx_nat_key_of(struct cx_nat_key *k, const void *saddr, const void *daddr,
					  __be16 sport, __be16 dport, __u8 proto)
{
	__builtin_memset(k, 0, sizeof(*k));
	__builtin_memcpy(k->saddr, saddr, 16);
	__builtin_memcpy(k->daddr, daddr, 16);
	k->sport = sport;
	k->dport = dport;
	k->proto = proto;
}

/* cx_nat_key_of4 is cx_nat_key_of for IPv4 addresses (the translations
 * that are IPv4's alone). */
static __always_inline void cx_nat_key_of4(struct cx_nat_key *k, __be32 saddr, __be32 daddr, __be16 sport,
					   __be16 dport, __u8 proto)
{
	__builtin_memset(k, 0, sizeof(*k));
	cx_addr_v4(k->saddr, saddr);
	cx_addr_v4(k->daddr, daddr);
	k->sport = sport;
	k->dport = dport;
	k->proto = proto;
}

/* cx_flow is what conntrack knows of a packet's flow: the entry of its
 * direction in cx_nat when the flow is translated, or its entry in
 * cx_ct and the side the packet comes from; neither when untracked. */
struct cx_flow {
	struct cx_nat_entry *nat;
	struct cx_ct_entry *ct;
	__u32 side;
};

/* cx_flow_lookup finds the flow of tuple t. nat_first says which table is
 * likelier to hold it, to look there first: a packet pays a second lookup
 * only when its flow is in the other table or nowhere. */
static __always_inline void cx_flow_lookup(const struct cx_tuple *t, struct cx_flow *f, int nat_first)
{
	struct cx_nat_key nk;
	struct cx_ct_key ck;

	f->nat = NULL;
	f->ct = NULL;
	if (nat_first) {
		cx_nat_key_of(&nk, &t->saddr, &t->daddr, t->sport, t->dport, t->proto);
		f->nat = bpf_map_lookup_elem(&cx_nat, &nk);
		if (f->nat)
			return;
	}
	f->side = cx_ct_key_of_tuple(&ck, t);
	f->ct = bpf_map_lookup_elem(&cx_ct, &ck);
	if (f->ct || nat_first)
		return;
	cx_nat_key_of(&nk, &t->saddr, &t->daddr, t->sport, t->dport, t->proto);
	f->nat = bpf_map_lookup_elem(&cx_nat, &nk);
}

static __always_inline int cx_flow_tracked(const struct cx_flow *f)
{
	if (f->nat)
		return 1;
	/* Two tests, not one on the pointers or'ed together: the verifier
	 * refuses arithmetic on a pointer that may be NULL. */
	asm volatile("" ::: "memory");
	return f->ct != NULL;
}

/* cx_nat_reply_key_of is the key of the other direction of a translated
 * flow: its packets arrive as this entry's rewrite, reversed. */
static __always_inline void cx_nat_other_key(struct cx_nat_key *k, const struct cx_nat_entry *e, __u8 proto)
{
	if (cx_icmp_proto(proto))
		cx_nat_key_of(k, e->nat_daddr, e->nat_saddr, e->nat_sport, 0, proto);
	else
		cx_nat_key_of(k, e->nat_daddr, e->nat_saddr, e->nat_dport, e->nat_sport, proto);
}

/* cx_nat_other returns the entry of a translated TCP flow's other direction. */
static __always_inline struct cx_nat_entry *cx_nat_other(const struct cx_nat_entry *e)
{
	struct cx_nat_key k;

	cx_nat_other_key(&k, e, IPPROTO_TCP);
	return bpf_map_lookup_elem(&cx_nat, &k);
}

/* cx_tcp_window is the most the receiver (rcv) has let the sender (snd)
 * send: the largest window it advertised, scaled when both SYNs offered
 * scaling (RFC 7323). Its SYN's window, never scaled, is scaled with the
 * rest: the estimate errs wide, never narrow. */
static __always_inline __u32 cx_tcp_window(const struct cx_tcp_dir *rcv, const struct cx_tcp_dir *snd)
{
	__u32 win = rcv->max_win;

	if ((rcv->state & CX_CT_WSCALE_OFFERED) && (snd->state & CX_CT_WSCALE_OFFERED))
		win <<= rcv->state & CX_CT_WSCALE_MASK;
	return win;
}

/* cx_tcp_in_order is the common case of cx_tcp_in_sequence: the segment
 * starts exactly where this direction's last one ended. */
static __always_inline int cx_tcp_in_order(const struct cx_tcp_dir *d, const struct cx_tuple *t)
{
	return (d->state & CX_CT_SEQ_KNOWN) && t->seq == d->seq_end;
}

/* cx_tcp_in_sequence says whether TCP segment t of direction d (whose other
 * direction is other, NULL when unknown) lies where a sender that really is
 * this flow's end could put it, the test Linux conntrack makes in spirit
 * (RFC 5961 makes a stricter one for RSTs at the endpoint):
 * - a direction's first segment (the other end's SYN-ACK or RST) must
 *   acknowledge exactly what the other direction has sent: its SYN;
 * - later ones must start at the end of what this direction sent, or
 *   within the other end's window of it, either side (retransmissions,
 *   segments lost before this hook). Until the other end has sent
 *   anything, only the exact next sequence number is. */
static __always_inline int cx_tcp_in_sequence(const struct cx_tcp_dir *d, const struct cx_tcp_dir *other,
					      const struct cx_tuple *t)
{
	__u32 dist, win;

	if (d->state & CX_CT_SEQ_KNOWN) {
		dist = t->seq - d->seq_end;
		if (!dist)
			return 1;
		if (!other || !(other->state & CX_CT_SEQ_KNOWN))
			return 0;
		win = cx_tcp_window(other, d);
		if ((__s32)dist > 0)
			return dist <= win;
		/* Behind: a retransmission, or an RST or FIN at the first
		 * byte of the window the receiver has (its last ACK). */
		return -dist <= win + 1;
	}
	/* A simultaneous open's SYN acknowledges nothing. */
	if ((t->tcp_flags & (CX_TCP_SYN | CX_TCP_ACK | CX_TCP_RST)) == CX_TCP_SYN)
		return 1;
	if (!(t->tcp_flags & CX_TCP_ACK))
		return 0;
	if ((d->state & CX_CT_SEQ_RESYNC) && !(t->tcp_flags & CX_TCP_RST))
		/* Recreated mid-flow: it learns where this direction is from
		 * its first ACK; an RST waits until then. */
		return 1;
	return other && (other->state & CX_CT_SEQ_KNOWN) && t->ack == other->seq_end;
}

/* cx_tcp_advance records an in-sequence segment t on its direction. */
static __always_inline void cx_tcp_advance(struct cx_tcp_dir *d, const struct cx_tuple *t)
{
	__u32 end = t->seq + t->seg_len;
	__u8 st = (d->state & ~CX_CT_SEQ_RESYNC) | CX_CT_SEQ_KNOWN;

	if (!(d->state & CX_CT_SEQ_KNOWN) || (__s32)(end - d->seq_end) > 0)
		d->seq_end = end;
	if (t->win > d->max_win)
		d->max_win = t->win;
	if (t->tcp_wscale != CX_TCP_NO_WSCALE)
		st = (st & ~CX_CT_WSCALE_MASK) | CX_CT_WSCALE_OFFERED | t->tcp_wscale;
	if (st != d->state)
		d->state = st;
	if (t->tcp_flags & ~d->flags)
		d->flags |= t->tcp_flags;
}

/* cx_ct_touch moves a flow's last_ns on when it is older than
 * CX_CT_LAST_NS, and says whether it did. */
static __always_inline int cx_ct_touch(__u64 *last_ns)
{
	__u64 now = bpf_ktime_get_coarse_ns();

	if (now - *last_ns < CX_CT_LAST_NS)
		return 0;
	*last_ns = now;
	return 1;
}

/* cx_tcp_seen applies a segment to direction d: what it tells of the
 * direction when it is in sequence. A segment that is not changes nothing:
 * a blind attacker, who does not know the sequence numbers, cannot mark a
 * flow closing (FIN, RST) nor move its window. Returns -1 for an RST that
 * is not in sequence (the caller drops it: no end would accept it). */
static __always_inline int cx_tcp_seen(struct cx_tcp_dir *d, const struct cx_tcp_dir *other, const struct cx_tuple *t)
{
	if (!cx_tcp_in_sequence(d, other, t))
		return (t->tcp_flags & CX_TCP_RST) ? -1 : 0;
	cx_tcp_advance(d, t);
	return 0;
}

/* cx_ct_seen records a packet of side side on a tracked flow. Counters are
 * plain adds: a flow's packets are on one CPU at a time but for races that
 * cost a count, never a verdict. Returns what cx_tcp_seen does. */
static __always_inline int cx_ct_seen(struct cx_ct_entry *ct, __u32 side, const struct cx_tuple *t, __u32 len)
{
	struct cx_ct_side *me = side ? &ct->side[1] : &ct->side[0];
	struct cx_ct_side *peer = side ? &ct->side[0] : &ct->side[1];

	cx_ct_touch(&ct->last_ns);
	me->packets++;
	if (side)
		ct->bytes[1] += len;
	else
		ct->bytes[0] += len;
	if (t->proto != IPPROTO_TCP || t->frag == CX_FRAG_LATER)
		return 0;
	if (cx_tcp_in_order(&me->tcp, t)) {
		cx_tcp_advance(&me->tcp, t);
		return 0;
	}
	return cx_tcp_seen(&me->tcp, &peer->tcp, t);
}

/* cx_nat_recreate_other writes the other direction's entry of a translated
 * flow from this one (tuple t, before translation), when the LRU evicted it:
 * replies would otherwise leave untranslated. Never over another flow's
 * entry (BPF_NOEXIST): when its tuple has been taken since, the replies are
 * that flow's. */
static __always_inline void cx_nat_recreate_other(const struct cx_nat_entry *e, const struct cx_tuple *t)
{
	struct cx_nat_entry v = {};
	struct cx_nat_key k;

	cx_nat_other_key(&k, e, t->proto);
	if (bpf_map_lookup_elem(&cx_nat, &k))
		return;
	v.dir = e->dir == CX_CT_ORIG ? CX_CT_REPLY : CX_CT_ORIG;
	v.nat = e->nat;
	v.created_ns = e->created_ns;
	v.last_ns = e->last_ns;
	v.tcp.state = CX_CT_SEQ_RESYNC;
	__builtin_memcpy(v.nat_saddr, &t->daddr, 16);
	__builtin_memcpy(v.nat_daddr, &t->saddr, 16);
	v.nat_sport = cx_icmp_proto(t->proto) ? t->sport : t->dport;
	v.nat_dport = cx_icmp_proto(t->proto) ? 0 : t->sport;
	if (!bpf_map_update_elem(&cx_nat, &k, &v, BPF_NOEXIST))
		cx_ct_stat(CX_CTS_NAT_CREATED, 1);
}

/* cx_nat_seen records a packet t (before translation) on its direction's
 * entry of a translated flow. Once a second per flow direction it also
 * makes sure the other direction's entry is there. */
static __always_inline int cx_nat_seen(struct cx_nat_entry *e, const struct cx_tuple *t, __u32 len)
{
	struct cx_nat_entry *o;

	if (cx_ct_touch(&e->last_ns))
		cx_nat_recreate_other(e, t);
	e->packets++;
	e->bytes += len;
	if (t->proto != IPPROTO_TCP || t->frag == CX_FRAG_LATER)
		return 0;
	if (cx_tcp_in_order(&e->tcp, t)) {
		cx_tcp_advance(&e->tcp, t);
		return 0;
	}
	o = cx_nat_other(e);
	return cx_tcp_seen(&e->tcp, o ? &o->tcp : NULL, t);
}

/* cx_flow_count counts a packet that says nothing of the flow's state
 * (an ICMP error about it). */
static __always_inline void cx_flow_count(const struct cx_flow *f, __u32 len)
{
	if (f->nat) {
		f->nat->packets++;
		f->nat->bytes += len;
	} else if (f->ct && f->side) {
		f->ct->side[1].packets++;
		f->ct->bytes[1] += len;
	} else if (f->ct) {
		f->ct->side[0].packets++;
		f->ct->bytes[0] += len;
	}
}

/* cx_flow_seen records a packet on its flow; see cx_tcp_seen. */
static __always_inline int cx_flow_seen(const struct cx_flow *f, const struct cx_tuple *t, __u32 len)
{
	if (f->nat)
		return cx_nat_seen(f->nat, t, len);
	if (f->ct)
		return cx_ct_seen(f->ct, f->side, t, len);
	return 0;
}

/* cx_flow_closed_syn says whether a packet is the SYN of a new connection
 * that reuses the ports of a tracked one its sender already closed (FIN or
 * RST seen in this direction), within the closed flow's expiry. Such a
 * packet must start a flow of its own, policy included, as Linux conntrack
 * does for a SYN on a TIME_WAIT or CLOSE entry. */
static __always_inline int cx_flow_closed_syn(const struct cx_tuple *t, const struct cx_flow *f)
{
	__u8 flags = 0;

	if (t->proto != IPPROTO_TCP || (t->tcp_flags & (CX_TCP_SYN | CX_TCP_ACK)) != CX_TCP_SYN)
		return 0;
	if (f->nat)
		flags = f->nat->tcp.flags;
	else if (f->ct)
		flags = f->side ? f->ct->side[1].tcp.flags : f->ct->side[0].tcp.flags;
	return (flags & (CX_TCP_FIN | CX_TCP_RST)) != 0;
}

/* cx_flow_reopened removes the closed flow's entries when the packet is
 * such a SYN, and says whether it was. */
static __always_inline int cx_flow_reopened(const struct cx_tuple *t, struct cx_flow *f)
{
	if (!cx_flow_closed_syn(t, f))
		return 0;
	if (f->nat) {
		struct cx_nat_key k;

		cx_nat_other_key(&k, f->nat, IPPROTO_TCP);
		if (!bpf_map_delete_elem(&cx_nat, &k))
			cx_ct_stat(CX_CTS_NAT_DELETED, 1);
		cx_nat_key_of(&k, &t->saddr, &t->daddr, t->sport, t->dport, IPPROTO_TCP);
		if (!bpf_map_delete_elem(&cx_nat, &k))
			cx_ct_stat(CX_CTS_NAT_DELETED, 1);
	} else {
		struct cx_ct_key k;

		cx_ct_key_of_tuple(&k, t);
		if (!bpf_map_delete_elem(&cx_ct, &k))
			cx_ct_stat(CX_CTS_CT_DELETED, 1);
	}
	f->nat = NULL;
	f->ct = NULL;
	return 1;
}

/* cx_ct_create tracks a new flow that needs no translation: one entry, its
 * first packet (tuple t, len bytes as it arrived, from workload interface
 * ifindex or 0) counted on it. Two CPUs starting the same flow at once
 * write one entry (BPF_NOEXIST): the loser's packet is counted on the
 * winner's. Returns 0, or -1 when the table refused. */
static __always_inline int cx_ct_create(const struct cx_tuple *t, __u32 len, __u32 ifindex)
{
	struct cx_ct_entry v = {};
	struct cx_ct_key k;
	__u32 side = cx_ct_key_of_tuple(&k, t);
	struct cx_ct_side *me = side ? &v.side[1] : &v.side[0];
	struct cx_ct_entry *won;

	v.created_ns = bpf_ktime_get_coarse_ns();
	v.last_ns = v.created_ns;
	me->tcp.state = CX_CT_SIDE_ORIG;
	me->packets = 1;
	me->ifindex = ifindex;
	if (side)
		v.bytes[1] = len;
	else
		v.bytes[0] = len;
	if (t->proto == IPPROTO_TCP && t->frag != CX_FRAG_LATER)
		cx_tcp_advance(&me->tcp, t);
	{
		/* Packets that arrive as a translated flow's reply would,
		 * tracked here, be found here first and leave untranslated:
		 * such a tuple is that flow's. */
		struct cx_nat_key rk;

		if (cx_icmp_proto(t->proto))
			cx_nat_key_of(&rk, &t->daddr, &t->saddr, t->sport, 0, t->proto);
		else
			cx_nat_key_of(&rk, &t->daddr, &t->saddr, t->dport, t->sport, t->proto);
		if (bpf_map_lookup_elem(&cx_nat, &rk))
			return -1;
	}
	if (!bpf_map_update_elem(&cx_ct, &k, &v, BPF_NOEXIST)) {
		cx_ct_stat(CX_CTS_CT_CREATED, 1);
		return 0;
	}
	won = bpf_map_lookup_elem(&cx_ct, &k);
	if (!won)
		return -1;
	cx_ct_seen(won, side, t, len);
	return 0;
}

#endif /* CALYX_CONNTRACK_H */
