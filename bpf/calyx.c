// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* calyx TC programs. One program per hook, loaded once and attached to every
 * interface of its kind; what differs per interface is looked up by ifindex. */
#include "calyx.h"
#include "parse.h"

#include <linux/pkt_cls.h>
#include <linux/in.h>

char __license[] SEC("license") = "Dual BSD/GPL";

/* cx_skb_data and cx_skb_data_end read the packet bounds straight from the
 * context. Written as "cx_skb_data(skb)", clang may keep &skb->data
 * in a register and load through it later, which the verifier refuses
 * ("dereference of modified ctx ptr"). */
static __always_inline void *cx_skb_data(struct __sk_buff *skb)
{
	void *p;

	asm volatile("%[p] = *(u32 *)(%[ctx] + %[off])"
		     : [p] "=r"(p)
		     : [ctx] "r"(skb), [off] "i"(__builtin_offsetof(struct __sk_buff, data)));
	return p;
}

static __always_inline void *cx_skb_data_end(struct __sk_buff *skb)
{
	void *p;

	asm volatile("%[p] = *(u32 *)(%[ctx] + %[off])"
		     : [p] "=r"(p)
		     : [ctx] "r"(skb), [off] "i"(__builtin_offsetof(struct __sk_buff, data_end)));
	return p;
}

/* cx_pull makes the first n bytes of the packet (or all of it, if shorter)
 * linear, so the headers a program reads are within data_end. */
static __always_inline void cx_pull(struct __sk_buff *skb, __u32 n)
{
	if (skb->data_end - skb->data < n && skb->len > skb->data_end - skb->data)
		bpf_skb_pull_data(skb, skb->len < n ? skb->len : n);
}

/* Ethernet, the longest IPv4 header, and the L4 bytes conntrack reads: an
 * ICMP error's header and the quoted IPv4 header and ports. */
#define CX_PULL_LEN (ETH_HLEN + 60 + 8 + 20 + 8)
/* An underlay packet's headers: outer IPv4, UDP, VXLAN, inner Ethernet and
 * the longest inner IPv4 header. */
#define CX_UNDERLAY_PULL_LEN (ETH_HLEN + 20 + 8 + 8 + ETH_HLEN + 60)

#define CX_AF_INET 2
#define CX_IP_DF 0x4000
#define CX_IP_MF_OFFSET 0x3fff
#define CX_IP_MF 0x2000
#define CX_IP_OFFSET 0x1fff
#define CX_IPIP_OVERHEAD 20                      /* outer IPv4 */
#define CX_VXLAN_OVERHEAD (20 + 8 + 8 + ETH_HLEN) /* outer IPv4, UDP, VXLAN, inner Ethernet */
#define CX_OUTER_TTL 64
#define CX_ICMP_DEST_UNREACH 3
#define CX_ICMP_FRAG_NEEDED 4

/* ICMP destination unreachable (linux/icmp.h drags in libc headers). */
struct cx_icmp_unreach {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 unused;
	__be16 mtu; /* next-hop MTU, with code 4 (RFC 1191) */
};

/* Debian 12's UAPI headers predate these. */
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#endif

/* skb->mark of a packet a calyx program has already translated, routed and
 * redirected to the egress of an underlay or workload interface: that
 * interface's egress hook lets it through rather than routing or looking it
 * up a second time (a redirect to egress runs the hook again). The mark is
 * scrubbed when a packet crosses into another namespace. */
#define CX_MARK_ROUTED 0x0ca10000

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct cx_iface);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct cx_route_key);
	__type(value, struct cx_route);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_routes SEC(".maps");

/* LRU so that counters of long-gone interfaces make room rather than new
 * interfaces going uncounted; the agent also deletes them on removal. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct cx_counter_key);
	__type(value, struct cx_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct cx_link);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_links SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cx_node_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct cx_fip_key);
	__type(value, struct cx_fip);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_fips SEC(".maps");

/* LRU: when a table is full the least recently used flows go, not new
 * ones. The loader sizes cx_ct_v2 from Config.ctMapSize and cx_nat_v2
 * from Config.natMapSize. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct cx_ct_key);
	__type(value, struct cx_ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_ct_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct cx_nat_key);
	__type(value, struct cx_nat_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_nat_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CX_CTS_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_ct_stats SEC(".maps");

/* A datagram's fragments arrive within moments of each other: a small LRU. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct cx_frag_key);
	__type(value, struct cx_frag);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_frags SEC(".maps");

/* cx_ipcache: the policy identity of addresses (agent/policy). Sized by
 * the loader like cx_routes. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct cx_route_key);
	__type(value, struct cx_identity);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_ipcache SEC(".maps");

/* cx_policy: every endpoint's compiled policy tables. Entries take memory
 * only when written (NO_PREALLOC). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 20);
	__type(key, struct cx_policy_key);
	__type(value, struct cx_policy_verdict);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_policy SEC(".maps");

/* LRU for the reason cx_counters is. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct cx_rule_hit_key);
	__type(value, struct cx_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_policy_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_policy_log SEC(".maps");

/* cx_prefilter: source prefixes the underlay drops before anything else
 * (Config.prefilterDeny). The value is unused. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct cx_route_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_prefilter SEC(".maps");

/* Written by the agent for calyxctl; never read here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct cx_ep_status);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_endpoints SEC(".maps");

/* Written by the agent's DHCP servers for calyxctl; never read here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, struct cx_lease_key);
	__type(value, struct cx_lease);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_leases SEC(".maps");

/* Keep the enums in the object's BTF so bpf2go emits their constants for Go. */
const enum cx_reason cx_enum_reason __attribute__((unused));
const enum cx_route_type cx_enum_route_type __attribute__((unused));
const enum cx_route_flags cx_enum_route_flags __attribute__((unused));
const enum cx_iface_flags cx_enum_iface_flags __attribute__((unused));
const enum cx_iface_kind cx_enum_iface_kind __attribute__((unused));
const enum cx_ep_state cx_enum_ep_state __attribute__((unused));
const enum cx_attach_mode cx_enum_attach_mode __attribute__((unused));
const enum cx_encap cx_enum_encap __attribute__((unused));
const enum cx_fip_flags cx_enum_fip_flags __attribute__((unused));
const enum cx_ct_dir cx_enum_ct_dir __attribute__((unused));
const enum cx_ct_seq cx_enum_ct_seq __attribute__((unused));
const enum cx_ct_stat cx_enum_ct_stat __attribute__((unused));
const enum cx_nat cx_enum_nat __attribute__((unused));
const enum cx_config_flags cx_enum_config_flags __attribute__((unused));
const enum cx_endpoint_to_host cx_enum_e2h __attribute__((unused));
const enum cx_identity_flags cx_enum_identity_flags __attribute__((unused));
const enum cx_policy_action cx_enum_policy_action __attribute__((unused));
const enum cx_rule_special cx_enum_rule_special __attribute__((unused));
/* Only ever on the stack, so clang would leave it out of the BTF. */
const struct cx_policy_event cx_type_policy_event __attribute__((unused));

/* cx_count adds a packet of len bytes to the per-CPU counter at key of
 * map (cx_counters, cx_policy_hits), creating it on first use. A full LRU
 * map makes room; a failed insert only costs the count. */
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

static __always_inline void cx_addr_v4(__u8 addr[16], __be32 ip)
{
	__builtin_memset(addr, 0, 10);
	addr[10] = 0xff;
	addr[11] = 0xff;
	__builtin_memcpy(&addr[12], &ip, 4);
}

static __always_inline struct cx_route *cx_route_v4(__be32 ip)
{
	struct cx_route_key key = { .prefixlen = CX_V4_PREFIX_BITS + 32 };

	cx_addr_v4(key.addr, ip);
	return bpf_map_lookup_elem(&cx_routes, &key);
}

/* cx_route_v6 looks up an IPv6 address. IPv4 routes live in the same trie
 * as ::ffff:a.b.c.d, so a v4-mapped address in an IPv6 header would match
 * them: an IPv6 packet from ::ffff:<its IPv4> would pass as the endpoint's
 * own, and one to ::ffff:<another workload's IPv4> would be delivered.
 * v4-mapped addresses never appear on the wire (RFC 4291 2.5.5.2; Linux drops
 * them in ip6_rcv_core), so they have no route here. */
static __always_inline struct cx_route *cx_route_v6(const struct in6_addr *ip)
{
	struct cx_route_key key = { .prefixlen = 128 };

	if ((ip->in6_u.u6_addr32[0] | ip->in6_u.u6_addr32[1]) == 0 &&
	    ip->in6_u.u6_addr32[2] == bpf_htonl(0x0000ffff))
		return NULL;
	__builtin_memcpy(key.addr, ip, 16);
	return bpf_map_lookup_elem(&cx_routes, &key);
}

/* cx_owned_by says whether a route is the /32 (/128) of the endpoint on ifindex. */
static __always_inline int cx_owned_by(const struct cx_route *rt, __u32 ifindex)
{
	return rt && rt->type == CX_RT_LOCAL_WORKLOAD && rt->ifindex == ifindex;
}

static __always_inline int cx_mac_eq(const __u8 *a, const __u8 *b)
{
	/* Byte-wise: clang 14 does not lower memcmp for BPF, and the MACs in
	 * packets are only 2-byte aligned. */
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
	       a[5] == b[5];
}

static __always_inline int cx_mac_is_bcast(const __u8 *a)
{
	return (a[0] & a[1] & a[2] & a[3] & a[4] & a[5]) == 0xff;
}

/* cx_to_workload counts a packet entering a workload: at the delivery when
 * it goes by redirect_peer (the host side's egress hook does not run), else
 * in that egress hook (calyx_to_wl). Ingress policy and reverse NAT are done
 * by whichever path decided the delivery, before either: once per packet. */
static __always_inline int cx_to_workload(struct __sk_buff *skb, __u32 ifindex, int verdict)
{
	return cx_verdict(skb, ifindex, CX_REASON_TO_WORKLOAD, verdict);
}

/* cx_deliver_local hands an IP packet to a workload on this host, the way
 * its interface kind takes it (dst->flags, from the kind the agent recorded):
 *   - veth/netkit with the MAC known: L2 rewrite, bpf_redirect_peer straight
 *     into the workload's namespace; counted to-workload here;
 *   - tap (a VM) or any other kind with the MAC known: L2 rewrite,
 *     bpf_redirect to the interface's egress, the VM's queue (redirect_peer
 *     there would have the kernel free the packet); its egress hook counts
 *     it, the mark telling it the packet is translated and policed already;
 *   - MAC unknown: the kernel's neighbour table on the interface resolves
 *     it (bpf_redirect_neigh), and the egress hook counts it as above.
 * The packet is counted on in_ifindex under reason (deliver-local, or
 * decap-* for a packet that was decapsulated first) with in_len, its length
 * as it came in. */
static __always_inline int cx_deliver_local(struct __sk_buff *skb, __u32 in_ifindex, __u32 in_len,
					    __u32 reason, const struct cx_route *dst)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct ethhdr *eth = data;
	__u32 out_ifindex = dst->ifindex;

	if ((void *)(eth + 1) > data_end)
		return cx_verdict_len(in_ifindex, CX_REASON_DROP_MALFORMED, in_len, TC_ACT_SHOT);

	cx_verdict_len(in_ifindex, reason, in_len, 0);
	if (!(dst->flags & CX_RT_F_HAS_MAC)) {
		skb->mark = CX_MARK_ROUTED;
		return bpf_redirect_neigh(out_ifindex, NULL, 0, 0);
	}
	__builtin_memcpy(eth->h_dest, dst->mac, CX_ETH_ALEN);
	__builtin_memcpy(eth->h_source, dst->host_mac, CX_ETH_ALEN);
	if (dst->flags & CX_RT_F_PEER)
		return cx_to_workload(skb, out_ifindex, bpf_redirect_peer(out_ifindex, 0));
	skb->mark = CX_MARK_ROUTED;
	return bpf_redirect(out_ifindex, 0);
}

/* cx_ip4_dec_ttl decrements the TTL of the IPv4 header right after the
 * Ethernet header and fixes its checksum. Packet pointers are invalid after. */
static __always_inline void cx_ip4_dec_ttl(struct __sk_buff *skb, struct iphdr *iph)
{
	__u32 off = ETH_HLEN + __builtin_offsetof(struct iphdr, check);
	__be16 old, new;

	old = *(__be16 *)&iph->ttl;
	iph->ttl--;
	new = *(__be16 *)&iph->ttl;
	bpf_l3_csum_replace(skb, off, old, new, sizeof(__u16));
}

/* cx_ip4_forward decrements the TTL as a router must. It returns 0 when the
 * packet may be forwarded; a TTL that runs out is left to the host stack,
 * which sends the ICMP time-exceeded. */
static __always_inline int cx_ip4_forward(struct __sk_buff *skb, struct iphdr *iph)
{
	if (iph->ttl <= 1)
		return -1;
	cx_ip4_dec_ttl(skb, iph);
	return 0;
}

static __always_inline struct cx_node_config *cx_get_config(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&cx_config, &key);
}

static __always_inline __be32 cx_addr_ip4(const __u8 addr[16])
{
	__be32 ip;

	__builtin_memcpy(&ip, &addr[12], 4);
	return ip;
}

static __always_inline __u16 cx_csum_fold(__u64 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return ~csum;
}

static __always_inline void cx_ip4_set_csum(struct iphdr *iph)
{
	iph->check = 0;
	iph->check = cx_csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)iph, sizeof(*iph), 0));
}

/* cx_nexthop is where the underlay sends a packet for a node. */
struct cx_nexthop {
	__u32 ifindex;
	__be32 gw; /* the neighbour: the node itself, or the router towards it */
	__u8 smac[CX_ETH_ALEN];
	__u8 dmac[CX_ETH_ALEN];
	int resolved; /* the neighbour's MAC is known */
};

/* cx_fib_nexthop asks the kernel FIB, which holds the underlay only, how to
 * reach node. It returns 0 with nh filled, or -1 when there is no route. */
static __always_inline int cx_fib_nexthop(struct __sk_buff *skb, __be32 src, __be32 node,
					  struct cx_nexthop *nh)
{
	struct bpf_fib_lookup p = {};
	int rc;

	p.family = CX_AF_INET;
	p.ipv4_src = src;
	p.ipv4_dst = node;
	p.ifindex = skb->ifindex;
	rc = bpf_fib_lookup(skb, &p, sizeof(p), 0);
	/* FRAG_NEEDED: the route and the neighbour were found, but the skb as
	 * it is now is longer than the output device's MTU (the helper checks
	 * that when no tot_len is given). Whether the packet fits once it is
	 * encapsulated is cx_to_node's call, against the underlay MTU, and it
	 * answers with ICMP rather than a silent drop. */
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		nh->resolved = 1;
		__builtin_memcpy(nh->smac, p.smac, CX_ETH_ALEN);
		__builtin_memcpy(nh->dmac, p.dmac, CX_ETH_ALEN);
	} else if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		nh->resolved = 0;
	} else {
		return -1;
	}
	nh->ifindex = p.ifindex;
	nh->gw = p.ipv4_dst; /* the lookup overwrote node with the next hop */
	return 0;
}

/* cx_icmp_frag_needed turns an IPv4 packet (Ethernet + a 20-byte header,
 * at least CX_ICMP_KEEP bytes) into the ICMP "fragmentation needed" its
 * sender must get, from src, advertising mtu, with the Ethernet addresses
 * swapped. It keeps the original header and 20 bytes of its payload: more
 * than the 8 RFC 792 asks for, because a CHECKSUM_PARTIAL skb may not be cut
 * before its L4 checksum field. Returns 0, or -1 when a helper refused. */
#define CX_ICMP_KEEP 40
static __always_inline int cx_icmp_frag_needed(struct __sk_buff *skb, __be32 src, __u32 mtu)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	__u8 smac[CX_ETH_ALEN], dmac[CX_ETH_ALEN];
	struct cx_icmp_unreach *icmp;
	__be32 dst;

	if ((void *)(iph + 1) > data_end)
		return -1;
	__builtin_memcpy(smac, eth->h_dest, CX_ETH_ALEN);
	__builtin_memcpy(dmac, eth->h_source, CX_ETH_ALEN);
	dst = iph->saddr;

	if (bpf_skb_change_tail(skb, ETH_HLEN + CX_ICMP_KEEP, 0))
		return -1;
	if (bpf_skb_adjust_room(skb, sizeof(struct iphdr) + sizeof(struct cx_icmp_unreach), BPF_ADJ_ROOM_MAC, 0))
		return -1;

	data = cx_skb_data(skb);
	data_end = cx_skb_data_end(skb);
	eth = data;
	iph = (void *)(eth + 1);
	icmp = (void *)(iph + 1);
	if ((void *)icmp + sizeof(*icmp) + CX_ICMP_KEEP > data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, dmac, CX_ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, CX_ETH_ALEN);

	iph->version = 4;
	iph->ihl = 5;
	iph->tos = 0xc0; /* network control, as the kernel sends ICMP errors */
	iph->tot_len = bpf_htons(sizeof(*iph) + sizeof(*icmp) + CX_ICMP_KEEP);
	iph->id = 0;
	iph->frag_off = 0;
	iph->ttl = CX_OUTER_TTL;
	iph->protocol = IPPROTO_ICMP;
	iph->saddr = src;
	iph->daddr = dst;
	cx_ip4_set_csum(iph);

	icmp->type = CX_ICMP_DEST_UNREACH;
	icmp->code = CX_ICMP_FRAG_NEEDED;
	icmp->checksum = 0;
	icmp->unused = 0;
	icmp->mtu = bpf_htons(mtu);
	icmp->checksum = cx_csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)icmp, sizeof(*icmp) + CX_ICMP_KEEP, 0));
	return 0;
}

/* cx_encap wraps the IPv4 packet in skb for node. A GSO packet whose
 * segments would not fit the underlay after encapsulation has its segment
 * size lowered by the overhead instead (no ICMP can tell a local TCP that).
 * Returns 0, or -1 when a helper refused the packet. */
static __always_inline int cx_encap(struct __sk_buff *skb, const struct cx_node_config *cfg, __u32 encap,
				    __be32 src, __be32 node, __u32 seg_len)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct ethhdr *eth = data, inner_eth;
	struct iphdr *iph = (void *)(eth + 1), *outer;
	__u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4;
	__u32 room = CX_IPIP_OVERHEAD, hash = 0;
	__u8 tos;

	if ((void *)(iph + 1) > data_end)
		return -1;
	__builtin_memcpy(&inner_eth, eth, sizeof(inner_eth));
	tos = iph->tos;
	if (encap == CX_ENCAP_VXLAN) {
		room = CX_VXLAN_OVERHEAD;
		flags |= BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH |
			 BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN);
		/* The inner flow's hash, before the headers change: it picks
		 * the VXLAN source port, so the underlay spreads flows over its
		 * paths. (A flow dissection when the skb has no hash yet: not
		 * paid for IP-in-IP, which has no port to fill.) */
		hash = bpf_get_hash_recalc(skb);
	}
	if (seg_len + room <= cfg->underlay_mtu)
		flags |= BPF_F_ADJ_ROOM_FIXED_GSO;

	if (bpf_skb_adjust_room(skb, room, BPF_ADJ_ROOM_MAC, flags))
		return -1;

	data = cx_skb_data(skb);
	data_end = cx_skb_data_end(skb);
	outer = data + ETH_HLEN;
	if ((void *)(outer + 1) > data_end)
		return -1;
	outer->version = 4;
	outer->ihl = 5;
	outer->tos = tos;
	outer->tot_len = bpf_htons(skb->len - ETH_HLEN);
	outer->id = 0;
	/* Never fragmented: what does not fit got ICMP or a smaller MSS. */
	outer->frag_off = bpf_htons(CX_IP_DF);
	outer->ttl = CX_OUTER_TTL;
	outer->saddr = src;
	outer->daddr = node;

	if (encap == CX_ENCAP_VXLAN) {
		struct udphdr *udp = (void *)(outer + 1);
		struct cx_vxlanhdr *vx = (void *)(udp + 1);
		struct ethhdr *ieth = (void *)(vx + 1);

		if ((void *)(ieth + 1) > data_end)
			return -1;
		outer->protocol = IPPROTO_UDP;
		/* The kernel's own choice of range (udp_flow_src_port). */
		udp->source = bpf_htons((__u16)((((__u64)hash * (61000 - 32768)) >> 32) + 32768));
		udp->dest = bpf_htons((__u16)cfg->vxlan_port);
		udp->len = bpf_htons(skb->len - ETH_HLEN - sizeof(*outer));
		udp->check = 0; /* optional over IPv4 (RFC 7348) */
		vx->flags = CX_VXLAN_FLAG_I;
		vx->vni = bpf_htonl(cfg->vxlan_vni << 8);
		__builtin_memcpy(ieth, &inner_eth, sizeof(*ieth));
	} else {
		outer->protocol = IPPROTO_IPIP;
	}
	cx_ip4_set_csum(outer);
	return 0;
}

/* cx_seg_len is the size on the wire of the packets skb will leave as: its
 * IP length, or for a GSO packet one segment with its headers. */
static __always_inline __u32 cx_seg_len(struct __sk_buff *skb, struct iphdr *iph, void *data_end)
{
	__u32 gso = skb->gso_size;
	__u32 l4 = sizeof(struct udphdr);

	if (!gso)
		return bpf_ntohs(iph->tot_len);
	if (iph->protocol == IPPROTO_TCP) {
		__u8 *doff = (void *)iph + sizeof(*iph) + 12;

		l4 = 60; /* the longest TCP header, unless it can be read */
		if (iph->ihl == 5 && (void *)(doff + 1) <= data_end)
			l4 = (*doff >> 4) * 4;
	}
	return iph->ihl * 4 + l4 + gso;
}

/* cx_to_node sends an IPv4 packet towards the node that hosts its
 * destination, encapsulated as rt says. in_ifindex is where the verdict is
 * counted; from_host says the packet comes from the host's own stack (the
 * underlay egress hook) rather than from a workload. */
static __always_inline int cx_to_node(struct __sk_buff *skb, __u32 in_ifindex, const struct cx_route *rt,
				      int from_host)
{
	void *data = cx_skb_data(skb);
	void *data_end = cx_skb_data_end(skb);
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	__u32 encap = rt->encap, len = skb->len, room = 0, reason, seg_len;
	struct cx_node_config *cfg = cx_get_config();
	struct cx_nexthop nh = {};
	__be32 src, node;

	if (!cfg || !cfg->underlay_mtu || (void *)(iph + 1) > data_end)
		/* Not configured yet: the host stack knows as much as we do. */
		return cx_verdict_len(in_ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	src = cx_addr_ip4(cfg->node_addr);
	node = cx_addr_ip4(rt->next_hop);
	if (!src || !node)
		return cx_verdict_len(in_ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	if (!from_host && iph->ttl <= 1)
		/* A workload's packet this host, its first router, may not
		 * forward: the host stack sends the ICMP time-exceeded. */
		return cx_verdict_len(in_ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);

	if (cx_fib_nexthop(skb, src, node, &nh))
		/* The underlay cannot reach the node (link down, route gone). */
		return cx_verdict_len(in_ifindex, CX_REASON_DROP_FIB, len, TC_ACT_SHOT);

	if (encap == CX_ENCAP_IPIP)
		room = CX_IPIP_OVERHEAD;
	else if (encap == CX_ENCAP_VXLAN)
		room = CX_VXLAN_OVERHEAD;
	seg_len = cx_seg_len(skb, iph, data_end);
	/* Checked before the TTL changes, so that the ICMP quotes the header
	 * as the sender sent it (as ip_forward does). Routed directly, the
	 * packet must fit the underlay too: veth and NICs drop what does not,
	 * silently. GSO packets are cut to size by cx_encap instead. */
	if (!skb->gso_size && seg_len + room > cfg->underlay_mtu) {
		/* Too big for the underlay. */
		if (!(iph->frag_off & bpf_htons(CX_IP_DF)) || iph->ihl != 5 ||
		    seg_len < CX_ICMP_KEEP)
			/* Fragmenting before encapsulation is not done here, and a
			 * header with options has no room in our ICMP: drop. */
			return cx_verdict_len(in_ifindex, CX_REASON_DROP_TOO_BIG, len, TC_ACT_SHOT);
		/* The error comes from this node to a workload, or, for the
		 * host's own packets, from the remote node: a packet from one of
		 * its own addresses would be a martian to the host. */
		if (cx_icmp_frag_needed(skb, from_host ? node : src, cfg->underlay_mtu - room))
			/* The helpers refused to rewrite the packet into the ICMP. */
			return cx_verdict_len(in_ifindex, CX_REASON_DROP_HELPER, len, TC_ACT_SHOT);
		return cx_verdict_len(in_ifindex, CX_REASON_ICMP_FRAG_NEEDED, len,
				      bpf_redirect(skb->ifindex, from_host ? BPF_F_INGRESS : 0));
	}

	if (!from_host) {
		/* A workload's packet: this host is its first router. */
		cx_ip4_dec_ttl(skb, iph);
	}

	reason = CX_REASON_FORWARD_DIRECT;
	if (room) {
		if (cx_encap(skb, cfg, encap, src, node, seg_len))
			/* bpf_skb_adjust_room refused: e.g. a GSO type it cannot
			 * resize, or an skb that was decapsulated before. */
			return cx_verdict_len(in_ifindex, CX_REASON_DROP_HELPER, len, TC_ACT_SHOT);
		reason = encap == CX_ENCAP_IPIP ? CX_REASON_ENCAP_IPIP : CX_REASON_ENCAP_VXLAN;
	}

	data = cx_skb_data(skb);
	data_end = cx_skb_data_end(skb);
	eth = data;
	if ((void *)(eth + 1) > data_end)
		/* Cannot happen after the checks above; the verifier wants it. */
		return cx_verdict_len(in_ifindex, CX_REASON_DROP_MALFORMED, len, TC_ACT_SHOT);
	if (nh.resolved) {
		__builtin_memcpy(eth->h_dest, nh.dmac, CX_ETH_ALEN);
		__builtin_memcpy(eth->h_source, nh.smac, CX_ETH_ALEN);
		if (from_host && nh.ifindex == skb->ifindex)
			/* Already on its way out of the right interface. */
			return cx_verdict_len(in_ifindex, reason, len, TC_ACT_OK);
		skb->mark = CX_MARK_ROUTED;
		return cx_verdict_len(in_ifindex, reason, len, bpf_redirect(nh.ifindex, 0));
	}
	skb->mark = CX_MARK_ROUTED;
	{
		struct bpf_redir_neigh neigh = { .nh_family = CX_AF_INET, .ipv4_nh = nh.gw };

		return cx_verdict_len(in_ifindex, reason, len,
				      bpf_redirect_neigh(nh.ifindex, &neigh, sizeof(neigh), 0));
	}
}

#include "nat.h"
#include "policy.h"

/* cx_nat_drop counts a failed translation under its reason. */
static __always_inline int cx_nat_drop(__u32 ifindex, int nat, __u32 len)
{
	if (nat == CX_NAT_ERR_PORTS)
		/* natOutgoing: every candidate source port to this server is taken. */
		return cx_verdict_len(ifindex, CX_REASON_DROP_NAT_PORTS, len, TC_ACT_SHOT);
	if (nat == CX_NAT_ERR_POLICY)
		/* Network policy denies the new flow (counted per rule in
		 * cx_policy_hits). */
		return cx_verdict_len(ifindex, CX_REASON_DROP_POLICY, len, TC_ACT_SHOT);
	if (nat == CX_NAT_ERR_TCP_WINDOW)
		/* An RST of a tracked flow outside its window: a blind reset,
		 * which no end of the flow would accept (RFC 5961). Dropped here
		 * so that no end has to, and the flow's state is unchanged. */
		return cx_verdict_len(ifindex, CX_REASON_DROP_TCP_WINDOW, len, TC_ACT_SHOT);
	if (nat == CX_NAT_ERR_FRAG)
		/* A fragment after the first, whose first fragment this hook
		 * has not seen (lost, reordered, or never sent: a way past
		 * policy, which cannot see its ports). */
		return cx_verdict_len(ifindex, CX_REASON_DROP_FRAG_ORPHAN, len, TC_ACT_SHOT);
	if (nat == CX_NAT_ERR_CT)
		/* The flow's conntrack entries could not be written: its reply
		 * tuple is another flow's (or the table refused): untranslatable. */
		return cx_verdict_len(ifindex, CX_REASON_DROP_CT_FULL, len, TC_ACT_SHOT);
	/* A helper refused to rewrite the packet. */
	return cx_verdict_len(ifindex, CX_REASON_DROP_HELPER, len, TC_ACT_SHOT);
}

/* cx_local_source_rt says whether saddr (whose route is rt) is this host's
 * to send from: one of its own addresses (and subnet gateways), a local
 * workload's, or a floating IP whose instance runs here. Nothing from the underlay, nor
 * decapsulated from a tunnel, may carry such a source: TC delivery skips
 * the kernel's martian and reverse-path checks, and these sources are
 * trusted (CX_ID_HOST skips ingress policy) or attributed to a workload. */
static __always_inline int cx_local_source_rt(__be32 saddr, const struct cx_route *rt)
{
	struct cx_identity *id = cx_identity_v4(saddr);
	struct cx_fip *fip;

	if (id && (id->flags & CX_ID_HOST))
		return 1;
	if (!rt)
		return 0;
	if (rt->type == CX_RT_LOCAL_WORKLOAD || rt->type == CX_RT_HOST)
		return 1;
	if (rt->type != CX_RT_FIP)
		return 0;
	fip = cx_fip_of(saddr);
	return fip && (fip->flags & CX_FIP_LOCAL);
}

/* cx_local_source is cx_local_source_rt with saddr's route looked up. */
static __always_inline int cx_local_source(__be32 saddr)
{
	return cx_local_source_rt(saddr, cx_route_v4(saddr));
}

/* cx_inner_source_ok says whether a node (its underlay address node) may
 * tunnel a packet with source saddr to this host: not from this host or
 * its workloads (cx_local_source), not from another node's address, and,
 * when the route map knows saddr as a workload, only from the workload's
 * node. Sources that are no workload's (external clients whose traffic the
 * node forwards to a floating IP here) stay allowed. What remains trusted
 * is the outer source: the underlay is assumed not to forge node addresses
 * (IPsec/WireGuard between nodes would be needed to drop that assumption). */
static __always_inline int cx_inner_source_ok(__be32 saddr, __be32 node)
{
	struct cx_route *rt = cx_route_v4(saddr); /* one lookup for both checks */

	if (cx_local_source_rt(saddr, rt))
		return 0;
	if (!rt)
		return 1;
	if (rt->type == CX_RT_NODE)
		return saddr == node;
	if (rt->type == CX_RT_REMOTE_WORKLOAD)
		return cx_addr_ip4(rt->next_hop) == node;
	return 1;
}

static __always_inline int cx_from_wl_arp(struct __sk_buff *skb, const struct cx_iface *ifc,
					  struct hdr_cursor *c, void *data_end)
{
	__u32 ifindex = skb->ifindex;
	struct ethhdr *eth = cx_skb_data(skb);
	struct cx_arp_eth *arp;
	struct cx_route *rt;
	__be32 spa, tpa;

	arp = parse_arp(c, data_end);
	if (!arp || (void *)(eth + 1) > data_end)
		/* Not Ethernet/IPv4 ARP, or cut short: nothing a workload needs. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);

	if (ifc->flags & CX_IFACE_CHECK_MAC && !cx_mac_eq(arp->sha, ifc->mac))
		/* ARP poisoning: the sender claims a MAC that is not the endpoint's. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_MAC, TC_ACT_SHOT);

	__builtin_memcpy(&spa, arp->spa, 4);
	__builtin_memcpy(&tpa, arp->tpa, 4);

	if (arp->op == bpf_htons(CX_ARP_OP_REQUEST) && spa == 0)
		/* Duplicate-address probe: it must go unanswered to succeed. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_ARP_IGNORED, TC_ACT_SHOT);

	rt = cx_route_v4(spa);
	if (!cx_owned_by(rt, ifindex))
		/* The sender IP is not the endpoint's: ARP spoofing. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_IP, TC_ACT_SHOT);

	if (arp->op == bpf_htons(CX_ARP_OP_REPLY))
		/* The workload answering the host's own ARP request. */
		return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
	if (arp->op != bpf_htons(CX_ARP_OP_REQUEST))
		/* RARP/InARP opcodes have no use on a routed link. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);

	rt = cx_route_v4(tpa);
	if (cx_owned_by(rt, ifindex))
		/* A gratuitous ARP or a request for its own address: no one else
		 * may claim it, so there is nothing to answer. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_ARP_IGNORED, TC_ACT_SHOT);

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

/* cx_route_cacheable says whether a route may be kept in a conntrack entry
 * for the fast path: the ones that end in a delivery or a tunnel. */
static __always_inline int cx_route_cacheable(const struct cx_route *rt)
{
	return rt->type == CX_RT_LOCAL_WORKLOAD || rt->type == CX_RT_REMOTE_WORKLOAD;
}

/* cx_from_wl_route sends a workload's (translated) IPv4 packet on by rt,
 * which is a cacheable route. */
static __always_inline int cx_from_wl_route(struct __sk_buff *skb, __u32 ifindex, __u32 len, const struct cx_route *rt,
					    int nat)
{
	void *data_end = cx_skb_data_end(skb);
	struct iphdr *iph = cx_skb_data(skb) + ETH_HLEN;

	if ((void *)(iph + 1) > data_end)
		/* Cannot happen: parsed before; the verifier wants it. */
		return cx_verdict_len(ifindex, CX_REASON_DROP_MALFORMED, len, TC_ACT_SHOT);
	if (rt->type == CX_RT_REMOTE_WORKLOAD)
		return cx_to_node(skb, ifindex, rt, 0);
	/* Back to the sender only when translated: a workload to its own
	 * floating IP (hairpin). */
	if (rt->ifindex == ifindex && nat != CX_NAT_DONE)
		return cx_verdict_len(ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
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
				return cx_verdict_len(ifindex, CX_REASON_DROP_TOO_BIG, len, TC_ACT_SHOT);
			if (cx_icmp_frag_needed(skb, cx_addr_ip4(cfg->node_addr), cfg->workload_mtu))
				/* The helpers refused to rewrite the packet into the ICMP. */
				return cx_verdict_len(ifindex, CX_REASON_DROP_HELPER, len, TC_ACT_SHOT);
			return cx_verdict_len(ifindex, CX_REASON_ICMP_FRAG_NEEDED, len, bpf_redirect(ifindex, 0));
		}
	}
	if (cx_ip4_forward(skb, iph))
		return cx_verdict_len(ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	return cx_deliver_local(skb, ifindex, len, CX_REASON_DELIVER_LOCAL, rt);
}

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
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);
	if (iph->protocol != IPPROTO_UDP || iph->frag_off & bpf_htons(CX_IP_MF_OFFSET))
		/* Nothing but DHCP comes from an address nobody owns. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_IP, TC_ACT_SHOT);
	udp = parse_udphdr(c, data_end);
	if (!udp || udp->source != bpf_htons(CX_DHCP_CLIENT_PORT) || udp->dest != bpf_htons(CX_DHCP_SERVER_PORT))
		/* UDP from 0.0.0.0 that is not a DHCP client's request. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_IP, TC_ACT_SHOT);
	bcast = iph->daddr == CX_IP4_BROADCAST;
	if (bcast ? !cx_mac_is_bcast(eth->h_dest) : !cx_mac_eq(eth->h_dest, ifc->host_mac))
		/* Neither broadcast nor to the gateway (the host side): a
		 * request meant for someone else's server. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_IP, TC_ACT_SHOT);
	if (!bcast) {
		struct cx_identity *id = cx_identity_v4(iph->daddr);

		if (!id || !(id->flags & CX_ID_HOST))
			/* Unicast, but not to the host (a subnet's gateway IP,
			 * the server a lease names): from 0.0.0.0 to anyone
			 * else is no renewal. */
			return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_IP, TC_ACT_SHOT);
	}
	bootp = (void *)(udp + 1);
	if ((void *)(bootp + 1) > data_end)
		/* Too short for a DHCP message. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);
	if (bootp->op != CX_BOOTREQUEST || bootp->htype != 1 || bootp->hlen != CX_ETH_ALEN)
		/* Not an Ethernet client's request. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);
	if (bootp->giaddr)
		/* A relay agent's address: a workload posing as a relay, to be
		 * leased an address of another subnet. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_IP, TC_ACT_SHOT);
	if (!cx_mac_eq(bootp->chaddr, eth->h_source))
		/* A lease asked for another MAC (pool exhaustion, or a lease
		 * stolen for another instance). The frame's own source MAC was
		 * checked against the endpoint's before. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_MAC, TC_ACT_SHOT);
	return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
}

static __always_inline int cx_from_wl_ip4(struct __sk_buff *skb, const struct cx_iface *ifc, struct hdr_cursor *c,
					  void *data_end)
{
	__u32 ifindex = skb->ifindex, len = skb->len, start, src_flags = 0;
	struct cx_flow f = {};
	int kind;
	struct cx_node_config *cfg;
	struct cx_tuple t = {};
	struct cx_route *rt;
	struct iphdr *iph;
	int nat;

	iph = parse_iphdr(c, data_end, skb->len - ETH_HLEN);
	if (!iph)
		/* Truncated or invalid IPv4 header: never forward it. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);
	if (iph->saddr == 0)
		return cx_from_wl_dhcp(skb, ifc, iph, c, data_end);
	cfg = cx_get_config();

	kind = cx_tuple_of(skb, &t);
	if (kind == CX_TUPLE_FLOW)
		cx_flow_lookup(&t, &f, 0);
	/* The established-flow fast path of a translated flow: one that
	 * started on this interface had its source checked then, and its
	 * route is cached in its entry until the routes change: one hash
	 * lookup, no LPM. TTL 1 goes the slow way (the host stack answers it);
	 * so does a SYN reusing a closed flow's ports (a new flow, policy
	 * included). */
	if (f.nat && cfg && cfg->route_gen && f.nat->ifindex == ifindex && f.nat->route_gen == cfg->route_gen &&
	    iph->ttl > 1 && !cx_flow_closed_syn(&t, &f)) {
		if (cx_nat_seen(f.nat, &t, len))
			return cx_nat_drop(ifindex, CX_NAT_ERR_TCP_WINDOW, len);
		if (cx_nat_apply(skb, &t, f.nat))
			return cx_nat_drop(ifindex, CX_NAT_ERR_HELPER, len);
		return cx_from_wl_route(skb, ifindex, len, &f.nat->route, CX_NAT_DONE);
	}

	/* A tracked flow's side that was checked on this interface before
	 * skips the source check: its source was the endpoint's then, and
	 * an entry is only ever written for a checked one. */
	if (!(f.ct && (f.side ? f.ct->side[1].ifindex : f.ct->side[0].ifindex) == ifindex &&
	      !cx_flow_closed_syn(&t, &f))) {
		rt = cx_route_v4(iph->saddr);
		if (!cx_owned_by(rt, ifindex))
			/* Source address is not one of the endpoint's ipNetworks. */
			return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_IP, TC_ACT_SHOT);
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

		if (!cx_flow_tracked(&f) && cx_policy_flow(skb, &t, ifindex, ifc, len, &local))
			return cx_nat_drop(ifindex, CX_NAT_ERR_POLICY, len);
		return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
	}

	start = CX_START_FIP | CX_START_WORKLOAD | CX_START_TRACK;
	if (src_flags & CX_RT_F_NAT_OUTGOING)
		/* (A flow that skipped the source check is tracked already.) */
		start |= CX_START_NAT_OUTGOING;
	nat = cx_nat_policed(skb, &t, start, ifindex, ifc, len, kind, &f);
	if (nat < 0)
		return cx_nat_drop(ifindex, nat, len);

	data_end = cx_skb_data_end(skb);
	iph = cx_skb_data(skb) + ETH_HLEN;
	if ((void *)(iph + 1) > data_end)
		/* Cannot happen: parsed above; the verifier wants it. */
		return cx_verdict_len(ifindex, CX_REASON_DROP_MALFORMED, len, TC_ACT_SHOT);

	rt = cx_route_v4(iph->daddr);
	if (rt && cx_route_cacheable(rt)) {
		if (f.nat && cfg && cfg->route_gen) {
			/* Later packets of this direction take the fast path. */
			f.nat->route = *rt;
			f.nat->ifindex = ifindex;
			f.nat->route_gen = cfg->route_gen;
		}
		return cx_from_wl_route(skb, ifindex, len, rt, nat);
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
		return cx_to_node(skb, ifindex, &ext, 0);
	}
	return cx_verdict_len(ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
}

static __always_inline int cx_is_unspecified6(const struct in6_addr *a)
{
	return (a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1] | a->in6_u.u6_addr32[2] | a->in6_u.u6_addr32[3]) == 0;
}

static __always_inline int cx_is_link_local6(const struct in6_addr *a)
{
	return a->in6_u.u6_addr8[0] == 0xfe && (a->in6_u.u6_addr8[1] & 0xc0) == 0x80;
}

/* cx_is_gateway6 says whether a is fe80::1, the workloads' IPv6 gateway. */
static __always_inline int cx_is_gateway6(const struct in6_addr *a)
{
	return a->in6_u.u6_addr32[0] == bpf_htonl(0xfe800000) && !a->in6_u.u6_addr32[1] && !a->in6_u.u6_addr32[2] &&
	       a->in6_u.u6_addr32[3] == bpf_htonl(1);
}

/* An NA with one option: the target's link-layer address (RFC 4861 4.6.1). */
#define CX_NA_LEN (sizeof(struct cx_nd) + 8)

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
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);
	__builtin_memcpy(&target, &nd->target, sizeof(target));
	__builtin_memcpy(&src, &ip6->saddr, sizeof(src));
	if (cx_is_unspecified6(&src))
		/* Duplicate-address detection: it must go unanswered to succeed. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_ND_IGNORED, TC_ACT_SHOT);
	if (!cx_is_link_local6(&src) && !cx_owned_by(cx_route_v6(&src), ifindex))
		/* A global source that is not the endpoint's: NDP spoofing. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_IP, TC_ACT_SHOT);
	rt = cx_route_v6(&target);
	if (cx_owned_by(rt, ifindex) || cx_is_unspecified6(&target))
		/* Its own address: no one else may claim it. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_ND_IGNORED, TC_ACT_SHOT);

	if (skb->len != ETH_HLEN + sizeof(struct ipv6hdr) + CX_NA_LEN &&
	    bpf_skb_change_tail(skb, ETH_HLEN + sizeof(struct ipv6hdr) + CX_NA_LEN, 0))
		return cx_verdict_len(ifindex, CX_REASON_DROP_HELPER, len, TC_ACT_SHOT);

	data = cx_skb_data(skb);
	data_end = cx_skb_data_end(skb);
	eth = data;
	ip6 = (void *)(eth + 1);
	nd = (void *)(ip6 + 1);
	opt = (void *)(nd + 1);
	if ((void *)(opt + 8) > data_end)
		return cx_verdict_len(ifindex, CX_REASON_DROP_MALFORMED, len, TC_ACT_SHOT);

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

static __always_inline int cx_from_wl_ip6(struct __sk_buff *skb, const struct cx_iface *ifc, struct hdr_cursor *c,
					  void *data_end)
{
	__u32 ifindex = skb->ifindex;
	struct ipv6hdr *ip6;
	struct cx_route *rt;
	int e2h_drop;
	__u8 *l4;

	ip6 = parse_ipv6hdr(c, data_end, skb->len - ETH_HLEN);
	if (!ip6)
		/* Truncated or invalid IPv6 header: never forward it. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);

	l4 = c->pos; /* no extension headers are walked yet */
	if (ip6->nexthdr == IPPROTO_ICMPV6) {
		struct cx_nd *nd = parse_nd(c, data_end);

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
			/* The instance's own DHCPv6 and DNS, as for IPv4. */
			svc = (ip6->nexthdr == IPPROTO_UDP && (dport == CX_DHCP6_SERVER_PORT || dport == CX_DNS_PORT)) ||
			      (ip6->nexthdr == IPPROTO_TCP && dport == CX_DNS_PORT);
		}
		e2h_drop = cfg && cfg->endpoint_to_host == CX_E2H_DROP && !ndp && !svc;

		if (ndp && l4[0] == CX_ICMPV6_NA) {
			struct cx_nd *na = (void *)l4;

			if ((void *)(na + 1) > data_end)
				/* Too short for its target. */
				return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);
			/* Every address but the workload's own is the host's on
			 * this link (cx_from_wl_ns answers for it): an NA for any
			 * other (the gateway fe80::1, a neighbour's address) is an
			 * attempt to take it over. A link-local target is the
			 * workload's own (the model does not know those) unless
			 * it is the gateway's. */
			if (!cx_owned_by(cx_route_v6(&na->target), ifindex) &&
			    (!cx_is_link_local6(&na->target) || cx_is_gateway6(&na->target)))
				return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_IP, TC_ACT_SHOT);
		}

		/* Link-local and unspecified sources (NDP, DAD) only ever talk
		 * to the host on this link; the host stack answers them. */
		if (cx_is_link_local6(&ip6->saddr) || cx_is_unspecified6(&ip6->saddr)) {
			if (e2h_drop) {
				/* endpointToHostAction Drop: the host is off limits,
				 * through its link-local address too. */
				cx_rule_hit(ifindex, CX_RULE_HOST_DROP, skb->len);
				return cx_verdict(skb, ifindex, CX_REASON_DROP_POLICY, TC_ACT_SHOT);
			}
			return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
		}

		rt = cx_route_v6(&ip6->saddr);
		if (!cx_owned_by(rt, ifindex))
			/* Source address is not one of the endpoint's ipNetworks. */
			return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_IP, TC_ACT_SHOT);
		if (ndp)
			/* A global-source NA or RS: the host's, whatever the policy. */
			return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
	}
	if (ifc->egress_table) {
		/* Policy is enforced for IPv4, where conntrack lets replies
		 * through; an endpoint under egress policy sends no IPv6
		 * beyond its link (fail closed). */
		cx_rule_hit(ifindex, CX_RULE_DEFAULT_DENY_EGRESS, skb->len);
		return cx_verdict(skb, ifindex, CX_REASON_DROP_POLICY, TC_ACT_SHOT);
	}

	rt = cx_route_v6(&ip6->daddr);
	if (rt && rt->type == CX_RT_LOCAL_WORKLOAD && rt->ifindex != ifindex) {
		__u32 dst_ifindex = rt->ifindex;
		struct cx_iface *dst = bpf_map_lookup_elem(&cx_ifaces, &dst_ifindex);

		if (dst && dst->ingress_table) {
			/* The destination is under ingress policy, which is
			 * enforced for IPv4 only: no IPv6 from beyond its link
			 * gets in (fail closed), as from the host stack. */
			cx_rule_hit(dst_ifindex, CX_RULE_DEFAULT_DENY_INGRESS, skb->len);
			return cx_verdict(skb, ifindex, CX_REASON_DROP_POLICY, TC_ACT_SHOT);
		}
		if (ip6->hop_limit <= 1)
			return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
		ip6->hop_limit--; /* no IPv6 header checksum to fix */
		return cx_deliver_local(skb, ifindex, skb->len, CX_REASON_DELIVER_LOCAL, rt);
	}
	if (e2h_drop && ((rt && rt->type == CX_RT_HOST) || ip6->daddr.in6_u.u6_addr8[0] == 0xff)) {
		/* endpointToHostAction Drop: to one of the host's addresses,
		 * or multicast (which only the host on this link receives). */
		cx_rule_hit(ifindex, CX_RULE_HOST_DROP, skb->len);
		return cx_verdict(skb, ifindex, CX_REASON_DROP_POLICY, TC_ACT_SHOT);
	}
	return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
}

/* calyx_from_wl runs at TC ingress on the host side of a workload interface:
 * everything a workload sends. */
SEC("tc")
int calyx_from_wl(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct hdr_cursor c;
	struct cx_iface *ifc;
	struct ethhdr *eth;
	void *data_end;

	/* Headers this program reads must be in the linear area: Ethernet plus
	 * the longest IPv4 header (60 bytes with options; IPv6's is 40). */
	cx_pull(skb, CX_PULL_LEN);

	ifc = bpf_map_lookup_elem(&cx_ifaces, &ifindex);
	if (!ifc || !(ifc->flags & CX_IFACE_WORKLOAD))
		/* Attached but not (or no longer) an endpoint: fail closed. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_NO_ENDPOINT, TC_ACT_SHOT);

	data_end = cx_skb_data_end(skb);
	c.pos = cx_skb_data(skb);
	eth = parse_ethhdr(&c, data_end);
	if (!eth)
		/* Shorter than an Ethernet header. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);

	if (ifc->flags & CX_IFACE_CHECK_MAC && !cx_mac_eq(eth->h_source, ifc->mac))
		/* Source MAC is not the endpoint's. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_SPOOF_MAC, TC_ACT_SHOT);
	if (skb->vlan_present || eth->h_proto == bpf_htons(ETH_P_8021Q) || eth->h_proto == bpf_htons(ETH_P_8021AD))
		/* A tagged frame: the kernel moves an outer tag into
		 * skb->vlan_tci before this hook, so the rest of the frame
		 * looks untagged. A routed endpoint has no VLANs; forwarding it
		 * as untagged would let it reach a VLAN it is not on. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_VLAN, TC_ACT_SHOT);

	switch (eth->h_proto) {
	case bpf_htons(ETH_P_ARP):
		return cx_from_wl_arp(skb, ifc, &c, data_end);
	case bpf_htons(ETH_P_IP):
		return cx_from_wl_ip4(skb, ifc, &c, data_end);
	case bpf_htons(ETH_P_IPV6):
		return cx_from_wl_ip6(skb, ifc, &c, data_end);
	}
	/* VLAN tags, LLDP, raw L2 protocols: a routed endpoint has no business
	 * sending them to the host. */
	return cx_verdict(skb, ifindex, CX_REASON_DROP_UNSUPPORTED, TC_ACT_SHOT);
}

/* cx_to_wl_ip6_denied says whether an IPv6 packet from the host stack
 * may not enter an endpoint under ingress policy. Policy is enforced for
 * IPv4, where conntrack lets replies through; under ingress policy only the
 * link's own traffic (link-local sources, neighbour discovery) gets in:
 * fail closed. */
static __always_inline int cx_to_wl_ip6_denied(struct __sk_buff *skb)
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
		return 1;
	if (cx_is_link_local6(&ip6->saddr))
		return 0;
	/* Neighbour discovery: router/neighbour solicitation and advertisement. */
	return !(ip6->nexthdr == IPPROTO_ICMPV6 && (void *)(icmp + 1) <= data_end && icmp[0] >= 133 &&
		 icmp[0] <= 137);
}

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
		return cx_verdict(skb, ifindex, CX_REASON_DROP_NO_ENDPOINT, TC_ACT_SHOT);
	if (skb->mark == CX_MARK_ROUTED) {
		/* Delivered by a calyx program (bpf_redirect_neigh), which did
		 * its translation: conntrack is not consulted twice. */
		skb->mark = 0;
		return cx_to_workload(skb, ifindex, TC_ACT_OK);
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6) && ifc->ingress_table && cx_to_wl_ip6_denied(skb)) {
		cx_rule_hit(ifindex, CX_RULE_DEFAULT_DENY_INGRESS, skb->len);
		return cx_verdict(skb, ifindex, CX_REASON_DROP_POLICY, TC_ACT_SHOT);
	}
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		/* Replies from the host stack to translated flows (the
		 * metadata service) get the address the workload asked for;
		 * new flows pass the endpoint's ingress policy first. */
		__u32 len = skb->len;
		struct cx_tuple t = {};
		int nat;

		cx_pull(skb, CX_PULL_LEN);
		nat = cx_nat_policed(skb, &t, 0, 0, NULL, len, -1, NULL);
		if (nat < 0)
			return cx_nat_drop(ifindex, nat, len);
	}
	return cx_to_workload(skb, ifindex, TC_ACT_OK);
}

/* cx_decap takes the outer headers off a tunnel packet from another node
 * and delivers the inner packet. Only a packet between two nodes, to this
 * one, is accepted: anything else encapsulated is dropped, never passed to
 * a stack that might route it. A delivered packet is counted as decap-*,
 * one for the host's stack as pass-host. */
static __always_inline int cx_decap(struct __sk_buff *skb, const struct cx_node_config *cfg, struct iphdr *outer,
				    struct hdr_cursor *c, void *data_end)
{
	__u32 ifindex = skb->ifindex, len = skb->len, room, reason;
	struct cx_route *rt;
	struct iphdr *iph;
	void *data;

	if (outer->daddr != cx_addr_ip4(cfg->node_addr))
		/* Tunnelled to another address: this host is no tunnel router. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_TUNNEL_DST, TC_ACT_SHOT);
	rt = cx_route_v4(outer->saddr);
	if (!rt || rt->type != CX_RT_NODE)
		/* Not from a node: someone injecting packets into workloads. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_TUNNEL_SRC, TC_ACT_SHOT);
	if (outer->ihl != 5 || outer->frag_off & bpf_htons(CX_IP_MF_OFFSET))
		/* Nodes send neither options nor fragments (DF is always set). */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);

	if (outer->protocol == IPPROTO_IPIP) {
		room = CX_IPIP_OVERHEAD;
		reason = CX_REASON_DECAP_IPIP;
	} else {
		struct cx_vxlanhdr *vx;
		struct ethhdr *ieth;

		if (!parse_udphdr(c, data_end))
			/* Cannot happen: the caller read the port. */
			return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);
		vx = parse_vxlanhdr(c, data_end);
		if (!vx)
			/* Too short for a VXLAN header. */
			return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);
		/* The VNI's low byte is reserved: ignored on receipt (RFC 7348). */
		if (!(vx->flags & CX_VXLAN_FLAG_I) ||
		    (vx->vni & bpf_htonl(0xffffff00)) != bpf_htonl(cfg->vxlan_vni << 8))
			/* Another overlay's traffic, or not VXLAN at all. */
			return cx_verdict(skb, ifindex, CX_REASON_DROP_TUNNEL_VNI, TC_ACT_SHOT);
		ieth = parse_ethhdr(c, data_end);
		if (!ieth)
			/* Too short for the inner Ethernet header. */
			return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);
		if (ieth->h_proto != bpf_htons(ETH_P_IP))
			/* Nodes only tunnel IPv4 today. */
			return cx_verdict(skb, ifindex, CX_REASON_DROP_UNSUPPORTED, TC_ACT_SHOT);
		room = CX_VXLAN_OVERHEAD;
		reason = CX_REASON_DECAP_VXLAN;
	}

	/* The inner packet is checked, and routed, before the outer headers
	 * go: a runt or a broken inner header is malformed (and the helper
	 * below never sees it), and a packet for nowhere is dropped as it
	 * came. c->pos is at ETH_HLEN + room (outer ihl is 5). */
	iph = parse_iphdr(c, data_end, skb->len - ETH_HLEN - room);
	if (!iph)
		/* The inner packet is cut short or not IPv4. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);
	if (!cx_inner_source_ok(iph->saddr, outer->saddr))
		/* A node tunnelling a source that is not its to use: this
		 * host's, a local workload's, another node's or its workloads'. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_TUNNEL_INNER_SRC, TC_ACT_SHOT);
	rt = cx_route_v4(iph->daddr);
	if (rt && rt->type == CX_RT_FIP) {
		/* A floating IP from outside, forwarded by the node it reached
		 * to this one, its instance's, to be translated here. */
		struct cx_fip *fip = cx_fip_of(iph->daddr);

		if (!fip || !(fip->flags & CX_FIP_LOCAL))
			/* Its instance is not here: never forwarded on. */
			return cx_verdict(skb, ifindex, CX_REASON_DROP_NO_ROUTE, TC_ACT_SHOT);
	} else if (!rt || (rt->type != CX_RT_LOCAL_WORKLOAD && rt->type != CX_RT_HOST)) {
		/* Decapsulated traffic is never forwarded on: a node only
		 * tunnels to the node that hosts the destination. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_NO_ROUTE, TC_ACT_SHOT);
	}

	/* FIXED_GSO: the inner segments keep the size the sender gave them.
	 * NO_CSUM_RESET: a checksum the NIC verified stays verified (the
	 * kernel would otherwise have the inner one computed again); for
	 * VXLAN the outer UDP checksum was its first level, gone with the
	 * outer headers. DECAP_L3_IPV4 names what is left. */
	if (bpf_skb_adjust_room(skb, -(__s32)room, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_NO_CSUM_RESET | BPF_F_ADJ_ROOM_DECAP_L3_IPV4))
		/* The helper refused: a GSO type it cannot resize, or no memory. */
		return cx_verdict_len(ifindex, CX_REASON_DROP_HELPER, len, TC_ACT_SHOT);
	if (reason == CX_REASON_DECAP_VXLAN)
		bpf_csum_level(skb, BPF_CSUM_LEVEL_DEC);

	data = cx_skb_data(skb);
	data_end = cx_skb_data_end(skb);
	iph = data + ETH_HLEN;
	if ((void *)(iph + 1) > data_end)
		/* Cannot happen: checked before the decap; the verifier wants it. */
		return cx_verdict_len(ifindex, CX_REASON_DROP_MALFORMED, len, TC_ACT_SHOT);
	{
		/* Replies of flows this node translated at their first hop
		 * (a workload here to a floating IP elsewhere) get their
		 * floating IP back; flows from outside to a floating IP of an
		 * instance here, forwarded by another node, start here. */
		struct cx_tuple t = {};
		int nat = cx_nat_policed(skb, &t, CX_START_FIP_HERE | CX_START_NAT_FIRST, 0, NULL, len, -1, NULL);

		if (nat < 0)
			return cx_nat_drop(ifindex, nat, len);
		if (nat != CX_NAT_DONE && rt->type == CX_RT_FIP)
			/* To a floating IP, but not the start of a flow nor one
			 * this node knows (a TCP segment without SYN): nowhere
			 * to go. Never to the host stack, which would route the
			 * floating IP back out. */
			return cx_verdict_len(ifindex, CX_REASON_DROP_NO_ROUTE, len, TC_ACT_SHOT);
		if (nat == CX_NAT_DONE) {
			rt = cx_route_v4(t.daddr);
			if (!rt || (rt->type != CX_RT_LOCAL_WORKLOAD && rt->type != CX_RT_HOST))
				/* Translated to an address that is not here. */
				return cx_verdict_len(ifindex, CX_REASON_DROP_NO_ROUTE, len, TC_ACT_SHOT);
			data = cx_skb_data(skb);
			data_end = cx_skb_data_end(skb);
			iph = data + ETH_HLEN;
			if ((void *)(iph + 1) > data_end)
				return cx_verdict_len(ifindex, CX_REASON_DROP_MALFORMED, len, TC_ACT_SHOT);
		}
	}
	if (rt->type == CX_RT_HOST)
		/* For this host itself: its stack takes the inner packet. */
		return cx_verdict_len(ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	if (cx_ip4_forward(skb, iph))
		/* Expiring: the host stack sends the time-exceeded for it. */
		return cx_verdict_len(ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	return cx_deliver_local(skb, ifindex, len, reason, rt);
}

/* cx_underlay_host_only says whether a packet from the underlay is the
 * host's own and cannot be calyx's: TCP or UDP, not a fragment, to this
 * node's address and to a port that is neither in the NAT port range (the
 * replies of natOutgoing flows and of the host's own flows to floating IPs
 * come to those) nor VXLAN's. Floating IPs, workloads and tunnels are other
 * addresses or that port. */
static __always_inline int cx_underlay_host_only(const struct cx_node_config *cfg, struct iphdr *iph, void *data_end)
{
	__u16 pmin = CX_NAT_PORT_MIN, pmax = CX_NAT_PORT_MAX, port;
	__u8 *l4 = (void *)(iph + 1);

	if (iph->daddr != cx_addr_ip4(cfg->node_addr) || iph->ihl != 5 ||
	    (iph->frag_off & bpf_htons(CX_IP_MF_OFFSET)) ||
	    (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP) || (void *)(l4 + 4) > data_end)
		return 0;
	port = (__u16)l4[2] << 8 | l4[3];
	if (iph->protocol == IPPROTO_UDP && port == cfg->vxlan_port)
		return 0;
	if (cfg->nat_port_min && cfg->nat_port_max >= cfg->nat_port_min) {
		pmin = cfg->nat_port_min;
		pmax = cfg->nat_port_max;
	}
	return port < pmin || port > pmax;
}

/* calyx_from_underlay runs at TC ingress on the underlay interface: tunnel
 * packets from other nodes are decapsulated, workload traffic routed here
 * directly is delivered, and everything else goes to the host stack. */
SEC("tc")
int calyx_from_underlay(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct cx_node_config *cfg;
	struct hdr_cursor c;
	struct ethhdr *eth;
	struct iphdr *iph;
	struct cx_route *rt;
	void *data_end;

	cfg = cx_get_config();
	if (cfg && (cfg->flags & CX_CFG_PREFILTER_TC)) {
		cx_pull(skb, ETH_HLEN + sizeof(struct ipv6hdr));
		if (cx_prefiltered(cx_skb_data(skb), cx_skb_data_end(skb)))
			/* Config.prefilterDeny: this source may not reach the host or its workloads. */
			return cx_verdict(skb, ifindex, CX_REASON_DROP_PREFILTER, TC_ACT_SHOT);
	}
	if (skb->protocol != bpf_htons(ETH_P_IP) || skb->vlan_present)
		/* ARP, IPv6 and the rest are the host's; so are tagged frames
		 * on a trunk (the kernel moved the tag into skb->vlan_tci):
		 * calyx's underlay is this interface's untagged traffic, or a
		 * VLAN device of its own as the underlay. */
		return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);
	if (!cfg || !cx_addr_ip4(cfg->node_addr))
		return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);

	cx_pull(skb, CX_UNDERLAY_PULL_LEN);

	data_end = cx_skb_data_end(skb);
	c.pos = cx_skb_data(skb);
	eth = parse_ethhdr(&c, data_end);
	if (!eth)
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);
	iph = parse_iphdr(&c, data_end, skb->len - ETH_HLEN);
	if (!iph)
		/* The host stack would drop it too; count it here. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);
	if (cx_underlay_host_only(cfg, iph, data_end))
		/* The host's own traffic (storage, migration, SSH): no map
		 * lookup. Its stack makes its own martian checks. */
		return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);

	if (cx_local_source(iph->saddr))
		/* From the wire with a source that is this host's own, a local
		 * workload's or a local floating IP's: forged. */
		return cx_verdict(skb, ifindex, CX_REASON_DROP_UNDERLAY_SPOOF, TC_ACT_SHOT);
	if (iph->protocol == IPPROTO_IPIP)
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
		struct cx_tuple t = {};
		int nat = cx_nat_policed(skb, &t, CX_START_FIP_HERE | CX_START_NAT_FIRST | CX_START_ORPHAN_HOST, 0, NULL,
					 len, -1, NULL);

		if (nat < 0)
			return cx_nat_drop(ifindex, nat, len);
		data_end = cx_skb_data_end(skb);
		iph = cx_skb_data(skb) + ETH_HLEN;
		if ((void *)(iph + 1) > data_end)
			return cx_verdict_len(ifindex, CX_REASON_DROP_MALFORMED, len, TC_ACT_SHOT);

		/* Workload traffic a node routed here without encapsulation. */
		rt = cx_route_v4(iph->daddr);
		if (rt && rt->type == CX_RT_LOCAL_WORKLOAD) {
			if (cx_ip4_forward(skb, iph))
				return cx_verdict_len(ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
			return cx_deliver_local(skb, ifindex, len, CX_REASON_DELIVER_LOCAL, rt);
		}
		if (nat == CX_NAT_DONE && rt && rt->type == CX_RT_REMOTE_WORKLOAD)
			/* Translated by an entry whose fixed IP lives on another
			 * node now (the instance moved): sent there. */
			return cx_to_node(skb, ifindex, rt, 0);
		if (nat == CX_NAT_NONE && rt && rt->type == CX_RT_FIP) {
			/* A floating IP whose instance runs on another node: sent
			 * there as it came, as the fixed IP's route says. That
			 * node translates it, and sees the replies. */
			struct cx_fip *fip = cx_fip_of(iph->daddr);

			if (fip && !(fip->flags & CX_FIP_LOCAL)) {
				rt = cx_route_v4(cx_addr_ip4(fip->fixed));
				if (rt && rt->type == CX_RT_REMOTE_WORKLOAD)
					return cx_to_node(skb, ifindex, rt, 0);
			}
			/* To a floating IP, but neither a flow this node knows
			 * nor one a packet like this may start (a TCP segment
			 * without SYN, an echo reply), or one whose instance has
			 * no route: never to the host stack, which would route
			 * it back out to the fabric that sent it here. */
			return cx_verdict_len(ifindex, CX_REASON_DROP_NO_ROUTE, len, TC_ACT_SHOT);
		}
		return cx_verdict_len(ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	}
}

/* calyx_to_underlay runs at TC egress on the underlay interface: what the
 * host's own stack sends to a remote workload takes the BPF route, as a
 * workload's packet would, so no kernel route per block or node is needed. */
SEC("tc")
int calyx_to_underlay(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
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
		return cx_verdict(skb, ifindex, CX_REASON_PASS_HOST, TC_ACT_OK);

	cx_pull(skb, CX_PULL_LEN);
	data_end = cx_skb_data_end(skb);
	c.pos = cx_skb_data(skb);
	eth = parse_ethhdr(&c, data_end);
	if (!eth)
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);
	iph = parse_iphdr(&c, data_end, skb->len - ETH_HLEN);
	if (!iph)
		return cx_verdict(skb, ifindex, CX_REASON_DROP_MALFORMED, TC_ACT_SHOT);

	{
		/* The host's own connections to floating IPs are translated
		 * here, as a workload's are at its first hop. */
		__u32 len = skb->len;
		struct cx_tuple t = {};
		int nat = cx_nat(skb, &t, CX_START_FIP | CX_START_HOST, len);

		if (nat < 0)
			return cx_nat_drop(ifindex, nat, len);
		data_end = cx_skb_data_end(skb);
		eth = cx_skb_data(skb);
		iph = (void *)(eth + 1);
		if ((void *)(iph + 1) > data_end)
			return cx_verdict_len(ifindex, CX_REASON_DROP_MALFORMED, len, TC_ACT_SHOT);
		rt = cx_route_v4(iph->daddr);
		if (rt && rt->type == CX_RT_REMOTE_WORKLOAD)
			return cx_to_node(skb, ifindex, rt, 1);
		if (nat == CX_NAT_DONE && rt && rt->type == CX_RT_LOCAL_WORKLOAD) {
			/* A floating IP of an instance on this host: into it. */
			skb->mark = CX_MARK_ROUTED;
			if (rt->flags & CX_RT_F_HAS_MAC) {
				__builtin_memcpy(eth->h_dest, rt->mac, CX_ETH_ALEN);
				__builtin_memcpy(eth->h_source, rt->host_mac, CX_ETH_ALEN);
				return cx_verdict_len(ifindex, CX_REASON_DELIVER_LOCAL, len, bpf_redirect(rt->ifindex, 0));
			}
			return cx_verdict_len(ifindex, CX_REASON_DELIVER_LOCAL, len,
					      bpf_redirect_neigh(rt->ifindex, NULL, 0, 0));
		}
		return cx_verdict_len(ifindex, CX_REASON_PASS_HOST, len, TC_ACT_OK);
	}
}

/* calyx_xdp_prefilter runs at XDP on a physical underlay NIC: sources on
 * the host-wide deny list (Config.prefilterDeny) are dropped before the
 * kernel allocates an skb for them. Everything else goes on to the TC
 * programs, which count it. */
SEC("xdp")
int calyx_xdp_prefilter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (cx_prefiltered(data, data_end))
		/* Config.prefilterDeny: this source may not reach the host or its workloads. */
		return cx_verdict_len(ctx->ingress_ifindex, CX_REASON_DROP_PREFILTER, data_end - data, XDP_DROP);
	return XDP_PASS;
}
