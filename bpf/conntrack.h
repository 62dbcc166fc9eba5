/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking: a packet's flow tuple (fragments included, through
 * cx_frags), its flow in cx_ct_v2 (untranslated, one entry) or cx_nat_v2
 * (translated, an entry per direction), and what TCP tracking learns from
 * each segment. IPv4 only today; the keys hold IPv6 as they are. */
#ifndef CALYX_CONNTRACK_H
#define CALYX_CONNTRACK_H

#include "routes.h"

/* cx_tuple is what identifies a packet's flow, with what the rewrite needs
 * and, for TCP, what sequence tracking needs. */
struct cx_tuple {
	__be32 saddr;
	__be32 daddr;
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
	__u8 pad;
	__u16 policy_port; /* a later fragment: its first fragment's, for policy */
};

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

/* cx_tcp_wscale returns the window-scale shift a SYN offers (RFC 7323), or
 * CX_TCP_NO_WSCALE. Its options (opt_len bytes, at most 40) are copied out
 * with bpf_skb_load_bytes, so they need not be linear (after decap they
 * may not be). Only SYNs carry the option. Requires bpf_loop (5.17). */
static __always_inline int cx_tcp_wscale(struct __sk_buff *skb, __u32 opt_len)
{
	struct cx_tcp_opts o = { .len = opt_len, .wscale = CX_TCP_NO_WSCALE };

	if (opt_len < 3 || opt_len > 40)
		return CX_TCP_NO_WSCALE;
	if (bpf_skb_load_bytes(skb, CX_L4_OFF + 20, o.buf, opt_len))
		return CX_TCP_NO_WSCALE;
	bpf_loop(20, cx_tcp_opt_step, &o, 0);
	return o.wscale;
}

enum cx_tuple_kind {
	CX_TUPLE_NONE = 0,  /* not tracked: options, other protocols */
	CX_TUPLE_FLOW = 1,  /* TCP, UDP or ICMP echo (or a fragment of one) */
	CX_TUPLE_ERROR = 2, /* an ICMP error about another packet */
	CX_TUPLE_ORPHAN = 3, /* a later fragment whose first this hook has not seen */
};

static __always_inline void cx_frag_key_of(struct cx_frag_key *k, const struct iphdr *iph)
{
	__builtin_memset(k, 0, sizeof(*k));
	cx_addr_v4(k->saddr, iph->saddr);
	cx_addr_v4(k->daddr, iph->daddr);
	k->id = iph->id;
	k->proto = iph->protocol;
}

/* cx_frag_later fills t from the first fragment of the datagram a later
 * fragment belongs to. */
static __always_inline int cx_frag_later(const struct iphdr *iph, struct cx_tuple *t)
{
	struct cx_frag_key k;
	struct cx_frag *f;

	cx_frag_key_of(&k, iph);
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

/* cx_frag_first remembers the ports of a first fragment (MF set, offset 0)
 * for the later ones. A full table forgets the oldest datagram. */
static __always_inline void cx_frag_first(const struct iphdr *iph, struct cx_tuple *t, __u16 policy_port)
{
	struct cx_frag_key k;
	struct cx_frag f = { .sport = t->sport, .dport = t->dport, .icmp_type = t->icmp_type,
			     .policy_port = policy_port };

	cx_frag_key_of(&k, iph);
	bpf_map_update_elem(&cx_frags, &k, &f, BPF_ANY);
	t->frag = CX_FRAG_FIRST;
}

/* cx_tuple_of reads the flow tuple of the IPv4 packet at ETH_HLEN. */
static __always_inline int cx_tuple_of(struct __sk_buff *skb, struct cx_tuple *t)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct iphdr *iph = data + ETH_HLEN;
	__u8 *l4 = data + CX_L4_OFF;
	int kind = CX_TUPLE_NONE;
	__u16 policy_port = 0;

	if ((void *)(iph + 1) > data_end || iph->ihl != 5)
		return CX_TUPLE_NONE;
	t->saddr = iph->saddr;
	t->daddr = iph->daddr;
	t->proto = iph->protocol;
	t->sport = 0;
	t->dport = 0;
	t->tcp_flags = 0;
	t->icmp_type = 0;
	t->frag = CX_FRAG_NONE;
	if (iph->frag_off & bpf_htons(CX_IP_OFFSET)) {
		if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP && iph->protocol != IPPROTO_ICMP)
			return CX_TUPLE_NONE;
		return cx_frag_later(iph, t);
	}
	switch (iph->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr *th = (void *)l4;
		__u32 ip_len = bpf_ntohs(iph->tot_len), hdr = th->doff * 4;

		if ((void *)(th + 1) > data_end)
			return CX_TUPLE_NONE;
		__builtin_memcpy(&t->sport, l4, 2);
		__builtin_memcpy(&t->dport, l4 + 2, 2);
		t->tcp_flags = l4[13];
		t->seq = bpf_ntohl(th->seq);
		t->ack = bpf_ntohl(th->ack_seq);
		t->win = bpf_ntohs(th->window);
		if (!ip_len) /* BIG TCP: the length is the packet's */
			ip_len = skb->len - ETH_HLEN;
		if (hdr < sizeof(*th))
			hdr = sizeof(*th);
		t->seg_len = ip_len > sizeof(*iph) + hdr ? ip_len - sizeof(*iph) - hdr : 0;
		if (t->tcp_flags & CX_TCP_SYN)
			t->seg_len++;
		if (t->tcp_flags & CX_TCP_FIN)
			t->seg_len++;
		t->tcp_wscale = (t->tcp_flags & CX_TCP_SYN) ? cx_tcp_wscale(skb, hdr - sizeof(*th)) : CX_TCP_NO_WSCALE;
		policy_port = bpf_ntohs(t->dport);
		kind = CX_TUPLE_FLOW;
		break;
	}
	case IPPROTO_UDP:
		if ((void *)(l4 + 8) > data_end)
			return CX_TUPLE_NONE;
		__builtin_memcpy(&t->sport, l4, 2);
		__builtin_memcpy(&t->dport, l4 + 2, 2);
		policy_port = bpf_ntohs(t->dport);
		kind = CX_TUPLE_FLOW;
		break;
	case IPPROTO_ICMP:
		if ((void *)(l4 + 8) > data_end)
			return CX_TUPLE_NONE;
		t->icmp_type = l4[0];
		policy_port = (__u16)l4[0] << 8 | l4[1];
		if (l4[0] == CX_ICMP_ECHO || l4[0] == CX_ICMP_ECHO_REPLY) {
			__builtin_memcpy(&t->sport, l4 + 4, 2);
			kind = CX_TUPLE_FLOW;
		} else if (l4[0] == CX_ICMP_DEST_UNREACH || l4[0] == CX_ICMP_TIME_EXCEEDED ||
			   l4[0] == CX_ICMP_PARAMETER_PROB) {
			/* Errors are never fragmented (they quote 576 bytes at most). */
			return CX_TUPLE_ERROR;
		}
		break;
	}
	if (kind == CX_TUPLE_FLOW && (iph->frag_off & bpf_htons(CX_IP_MF)))
		cx_frag_first(iph, t, policy_port);
	return kind;
}

/* cx_ct_key_of fills the normalised key of tuple t (cx_ct_key) and returns
 * the side its packet comes from: 0 when its source is side a, 1 for b. */
static __always_inline __u32 cx_ct_key_of(struct cx_ct_key *k, const struct cx_tuple *t)
{
	__u32 s = bpf_ntohl(t->saddr), d = bpf_ntohl(t->daddr);
	__u32 side;

	if (t->proto == IPPROTO_ICMP)
		/* The echo identifier travels both ways in one field. */
		side = s > d;
	else
		side = s > d || (s == d && bpf_ntohs(t->sport) > bpf_ntohs(t->dport));
	__builtin_memset(k, 0, sizeof(*k));
	k->proto = t->proto;
	if (t->proto == IPPROTO_ICMP) {
		k->port_a = t->sport;
	} else if (side) {
		k->port_a = t->dport;
		k->port_b = t->sport;
	} else {
		k->port_a = t->sport;
		k->port_b = t->dport;
	}
	cx_addr_v4(k->addr_a, side ? t->daddr : t->saddr);
	cx_addr_v4(k->addr_b, side ? t->saddr : t->daddr);
	return side;
}

static __always_inline void cx_nat_key_of(struct cx_nat_key *k, __be32 saddr, __be32 daddr, __be16 sport,
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
 * direction in cx_nat_v2 when the flow is translated, or its entry in
 * cx_ct_v2 and the side the packet comes from; neither when untracked. */
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
		cx_nat_key_of(&nk, t->saddr, t->daddr, t->sport, t->dport, t->proto);
		f->nat = bpf_map_lookup_elem(&cx_nat_v2, &nk);
		if (f->nat)
			return;
	}
	f->side = cx_ct_key_of(&ck, t);
	f->ct = bpf_map_lookup_elem(&cx_ct_v2, &ck);
	if (f->ct || nat_first)
		return;
	cx_nat_key_of(&nk, t->saddr, t->daddr, t->sport, t->dport, t->proto);
	f->nat = bpf_map_lookup_elem(&cx_nat_v2, &nk);
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
	if (proto == IPPROTO_ICMP)
		cx_nat_key_of(k, cx_addr_ip4(e->nat_daddr), cx_addr_ip4(e->nat_saddr), e->nat_sport, 0, proto);
	else
		cx_nat_key_of(k, cx_addr_ip4(e->nat_daddr), cx_addr_ip4(e->nat_saddr), e->nat_dport, e->nat_sport,
			      proto);
}

/* cx_nat_other returns the entry of a translated TCP flow's other direction. */
static __always_inline struct cx_nat_entry *cx_nat_other(const struct cx_nat_entry *e)
{
	struct cx_nat_key k;

	cx_nat_other_key(&k, e, IPPROTO_TCP);
	return bpf_map_lookup_elem(&cx_nat_v2, &k);
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
	if (bpf_map_lookup_elem(&cx_nat_v2, &k))
		return;
	v.dir = e->dir == CX_CT_ORIG ? CX_CT_REPLY : CX_CT_ORIG;
	v.nat = e->nat;
	v.created_ns = e->created_ns;
	v.last_ns = e->last_ns;
	v.tcp.state = CX_CT_SEQ_RESYNC;
	cx_addr_v4(v.nat_saddr, t->daddr);
	cx_addr_v4(v.nat_daddr, t->saddr);
	v.nat_sport = t->proto == IPPROTO_ICMP ? t->sport : t->dport;
	v.nat_dport = t->proto == IPPROTO_ICMP ? 0 : t->sport;
	if (!bpf_map_update_elem(&cx_nat_v2, &k, &v, BPF_NOEXIST))
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
		if (!bpf_map_delete_elem(&cx_nat_v2, &k))
			cx_ct_stat(CX_CTS_NAT_DELETED, 1);
		cx_nat_key_of(&k, t->saddr, t->daddr, t->sport, t->dport, IPPROTO_TCP);
		if (!bpf_map_delete_elem(&cx_nat_v2, &k))
			cx_ct_stat(CX_CTS_NAT_DELETED, 1);
	} else {
		struct cx_ct_key k;

		cx_ct_key_of(&k, t);
		if (!bpf_map_delete_elem(&cx_ct_v2, &k))
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
	__u32 side = cx_ct_key_of(&k, t);
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

		if (t->proto == IPPROTO_ICMP)
			cx_nat_key_of(&rk, t->daddr, t->saddr, t->sport, 0, t->proto);
		else
			cx_nat_key_of(&rk, t->daddr, t->saddr, t->dport, t->sport, t->proto);
		if (bpf_map_lookup_elem(&cx_nat_v2, &rk))
			return -1;
	}
	if (!bpf_map_update_elem(&cx_ct_v2, &k, &v, BPF_NOEXIST)) {
		cx_ct_stat(CX_CTS_CT_CREATED, 1);
		return 0;
	}
	won = bpf_map_lookup_elem(&cx_ct_v2, &k);
	if (!won)
		return -1;
	cx_ct_seen(won, side, t, len);
	return 0;
}

#endif /* CALYX_CONNTRACK_H */
