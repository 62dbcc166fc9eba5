/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Verdict counters: every packet a program returns is counted once per
 * interface under the reason for what became of it (cx_counters). */
#ifndef CALYX_COUNTERS_H
#define CALYX_COUNTERS_H

#include <linux/pkt_cls.h> /* TC_ACT_SHOT: what a drop returns */
#include "maps.h"
#include "parse.h"

/* cx_count adds a packet of len bytes to the per-CPU counter at key of
 * map (cx_counters, cx_policy_hits), creating it on first use. A full LRU
 * map makes room; a failed insert only costs the count. Inlined: as a
 * BPF-to-BPF call it had the verifier walk the hooks' paths a third longer
 * (calyx_from_wl 437,000 instructions against 343,000 inlined). */
static __always_inline void cx_count(void *map, const void *key, __u32 len)
{
	struct cx_counter *c = bpf_map_lookup_elem(map, key);

	if (!c) {
		struct cx_counter zero = {};

		bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(map, key);
		if (!c)
			return;
	}
	c->packets++;
	c->bytes += len;
}

/* cx_verdict_len records a verdict under its reason for the interface and
 * returns it, so every return path is one line and counted. A packet is
 * counted once per interface, under the reason for what became of it, with
 * its length as the program got it: paths that resize the packet (encap,
 * decap, ICMP) pass the length they started with. */
static __always_inline int cx_verdict_len(__u32 ifindex, __u32 reason, __u32 len, int verdict)
{
	struct cx_counter_key key = { .ifindex = ifindex, .reason = reason };

	cx_count(&cx_counters, &key, len);
	return verdict;
}

static __always_inline int cx_verdict(struct __sk_buff *skb, __u32 ifindex, __u32 reason, int verdict)
{
	return cx_verdict_len(ifindex, reason, skb->len, verdict);
}

/* cx_event_budget_take says whether this CPU may send another policy
 * event this second (CX_EVENTS_PER_SEC), counting the ones it may not. */
static __always_inline int cx_event_budget_take(void)
{
	__u32 zero = 0;
	struct cx_event_window *b = bpf_map_lookup_elem(&cx_event_budget, &zero);
	__u64 now = bpf_ktime_get_coarse_ns();

	if (!b)
		return 0; /* cannot happen: a per-CPU array's one entry */
	if (now - b->window_ns >= 1000000000ULL) {
		b->window_ns = now;
		b->sent = 0;
	}
	if (b->sent >= CX_EVENTS_PER_SEC) {
		b->suppressed++;
		return 0;
	}
	b->sent++;
	return 1;
}

/* cx_drop_event tells the agent (calyxctl monitor) of a packet dropped on
 * ifindex for reason (len bytes as it arrived): the start of it as it is
 * now, within the CPU's event budget. A full ring loses the event. A
 * BPF-to-BPF call: inlined at each of the hooks' hundred-odd drops it made
 * calyx_from_underlay's body outgrow the 16-bit jump range; its frame (16
 * bytes) fits beside calyx_from_wl's deepest path. Returns TC_ACT_SHOT. */
static __attribute__((noinline)) int cx_drop_event(struct __sk_buff *skb, __u32 ifindex, __u32 reason, __u32 len)
{
	struct cx_drop_event *e;

	if (!cx_event_budget_take())
		return TC_ACT_SHOT;
	e = bpf_ringbuf_reserve(&cx_drop_log, sizeof(*e), 0);
	if (!e)
		return TC_ACT_SHOT;
	e->ifindex = ifindex;
	e->reason = reason;
	e->len = len;
	/* Constant sizes, the largest the packet has: 64 bytes hold any
	 * flow's headers (Ethernet, IPv6, the ports). */
	if (!bpf_skb_load_bytes(skb, 0, e->head, CX_DROP_HEAD))
		e->head_len = CX_DROP_HEAD;
	else if (!bpf_skb_load_bytes(skb, 0, e->head, 64))
		e->head_len = 64;
	else if (!bpf_skb_load_bytes(skb, 0, e->head, 34))
		e->head_len = 34; /* Ethernet and an IPv4 header */
	else
		e->head_len = 0;
	bpf_ringbuf_submit(e, 0);
	return TC_ACT_SHOT;
}

/* cx_drop_len counts a dropped packet (len bytes as it arrived) under its
 * reason for the interface and reports it (cx_drop_event). Every drop goes
 * through here or cx_drop, but a policy denial's, whose event
 * cx_policy_decide sent with its rule. Returns TC_ACT_SHOT. */
static __always_inline int cx_drop_len(struct __sk_buff *skb, __u32 ifindex, __u32 reason, __u32 len)
{
	cx_verdict_len(ifindex, reason, len, TC_ACT_SHOT);
	return cx_drop_event(skb, ifindex, reason, len);
}

/* cx_drop is cx_drop_len with the packet's length as it is. */
static __always_inline int cx_drop(struct __sk_buff *skb, __u32 ifindex, __u32 reason)
{
	return cx_drop_len(skb, ifindex, reason, skb->len);
}

/* CX_SLOT_IF_UNDERLAY stands for "the underlay's slot if ifindex is the
 * underlay interface, else none", looked up where the verdict is counted.
 * Worked out where the underlay programs start and carried down their
 * paths, a slot the verifier knows as 0 on one path and 1 on the other
 * would have it walk everything after that point twice. */
#define CX_SLOT_IF_UNDERLAY 0xffffffffU

/* cx_verdict_slot is cx_verdict_len for an interface with a counter slot
 * (cx_iface, cx_route, CX_SLOT_IF_UNDERLAY): a verdict that passes the
 * packet on is counted in the slot's per-CPU array entry, the cheap way
 * (calyx.h, cx_slot_counters); drops, and an interface without a slot
 * (0), in cx_counters. */
static __always_inline int cx_verdict_slot(__u32 slot, __u32 ifindex, __u32 reason, __u32 len, int verdict)
{
	if (slot == CX_SLOT_IF_UNDERLAY) {
		struct cx_node_config *cfg = cx_get_config();

		slot = cfg && cfg->underlay_ifindex == ifindex ? CX_COUNTER_SLOT_UNDERLAY : 0;
	}
	if (slot && slot < CX_COUNTER_SLOTS && reason < CX_REASON_FIRST_DROP) {
		__u32 key = slot * CX_REASON_FIRST_DROP + reason;
		struct cx_counter *c = bpf_map_lookup_elem(&cx_slot_counters, &key);

		if (c) {
			c->packets++;
			c->bytes += len;
		}
		return verdict;
	}
	return cx_verdict_len(ifindex, reason, len, verdict);
}

/* cx_to_workload counts a packet entering a workload, on its interface
 * (ifindex, counter slot): at the delivery when it goes by redirect_peer
 * (the host side's egress hook does not run), else in that egress hook
 * (calyx_to_wl). Ingress policy and reverse NAT are done by whichever path
 * decided the delivery, before either: once per packet. */
static __always_inline int cx_to_workload(struct __sk_buff *skb, __u32 ifindex, __u32 slot, int verdict)
{
	return cx_verdict_slot(slot, ifindex, CX_REASON_TO_WORKLOAD, skb->len, verdict);
}

#endif /* CALYX_COUNTERS_H */
