/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet access and header cursors: each parser checks bounds against
 * data_end, advances the cursor and returns NULL when the header does not
 * fit; the constants of the protocols calyx reads. */
#ifndef CALYX_PARSE_H
#define CALYX_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/tcp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct hdr_cursor {
	void *pos;
};

struct cx_arp_eth {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__u8 spa[4];
	__u8 tha[ETH_ALEN];
	__u8 tpa[4];
} __attribute__((packed));

#define CX_ARP_HTYPE_ETHER 1
#define CX_ARP_OP_REQUEST 1
#define CX_ARP_OP_REPLY 2

static __always_inline struct ethhdr *parse_ethhdr(struct hdr_cursor *c, void *data_end)
{
	struct ethhdr *eth = c->pos;

	if ((void *)(eth + 1) > data_end)
		return NULL;
	c->pos = eth + 1;
	return eth;
}

static __always_inline struct cx_arp_eth *parse_arp(struct hdr_cursor *c, void *data_end)
{
	struct cx_arp_eth *arp = c->pos;

	if ((void *)(arp + 1) > data_end)
		return NULL;
	if (arp->htype != bpf_htons(CX_ARP_HTYPE_ETHER) || arp->ptype != bpf_htons(ETH_P_IP) ||
	    arp->hlen != ETH_ALEN || arp->plen != 4)
		return NULL;
	c->pos = arp + 1;
	return arp;
}

/* parse_iphdr also rejects what no router would forward: a bad version, a
 * header shorter than 20 bytes, or a total length past the end of the packet.
 * l3_len is the packet's length from this header on (skb->len based: data_end
 * only bounds the linear head, which a GSO skb keeps short). A total length
 * of 0 is BIG TCP's, for a packet longer than 64 KiB (only GSO makes one). */
static __always_inline struct iphdr *parse_iphdr(struct hdr_cursor *c, void *data_end, __u32 l3_len)
{
	struct iphdr *iph = c->pos;
	__u32 hdrlen;

	if ((void *)(iph + 1) > data_end)
		return NULL;
	if (iph->version != 4 || iph->ihl < 5)
		return NULL;
	hdrlen = iph->ihl * 4;
	if (c->pos + hdrlen > data_end)
		return NULL;
	if (!iph->tot_len && l3_len > 0xffff)
		; /* BIG TCP */
	else if (bpf_ntohs(iph->tot_len) < hdrlen || bpf_ntohs(iph->tot_len) > l3_len)
		return NULL;
	c->pos += hdrlen;
	return iph;
}

static __always_inline struct ipv6hdr *parse_ipv6hdr(struct hdr_cursor *c, void *data_end, __u32 l3_len)
{
	struct ipv6hdr *ip6 = c->pos;

	if ((void *)(ip6 + 1) > data_end)
		return NULL;
	if (ip6->version != 6)
		return NULL;
	if (sizeof(*ip6) + bpf_ntohs(ip6->payload_len) > l3_len)
		return NULL;
	c->pos = ip6 + 1;
	return ip6;
}

/* An ICMPv6 neighbour solicitation or advertisement (RFC 4861 4.3, 4.4),
 * without options. */
struct cx_nd {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 flags; /* NA: router, solicited, override; NS: reserved */
	struct in6_addr target;
};

#define CX_ICMPV6_NS 135
#define CX_ICMPV6_NA 136

static __always_inline struct cx_nd *parse_nd(struct hdr_cursor *c, void *data_end)
{
	struct cx_nd *nd = c->pos;

	if ((void *)(nd + 1) > data_end)
		return NULL;
	c->pos = nd + 1;
	return nd;
}

/* An 802.1Q / 802.1ad tag after the Ethernet addresses. */
struct cx_vlanhdr {
	__be16 tci;
	__be16 encap_proto;
};

struct cx_vxlanhdr {
	__be32 flags; /* 0x08000000: the VNI is valid (RFC 7348 "I" flag) */
	__be32 vni;   /* VNI << 8 */
};

#define CX_VXLAN_FLAG_I bpf_htonl(0x08000000)

static __always_inline struct udphdr *parse_udphdr(struct hdr_cursor *c, void *data_end)
{
	struct udphdr *udp = c->pos;

	if ((void *)(udp + 1) > data_end)
		return NULL;
	c->pos = udp + 1;
	return udp;
}

static __always_inline struct cx_vxlanhdr *parse_vxlanhdr(struct hdr_cursor *c, void *data_end)
{
	struct cx_vxlanhdr *vx = c->pos;

	if ((void *)(vx + 1) > data_end)
		return NULL;
	c->pos = vx + 1;
	return vx;
}

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
#define CX_IP6IP6_OVERHEAD 40                      /* outer IPv6 */
#define CX_VXLAN6_OVERHEAD (40 + 8 + 8 + ETH_HLEN) /* outer IPv6, UDP, VXLAN, inner Ethernet */
#define CX_AF_INET6 10
#define CX_OUTER_TTL 64
#define CX_ICMP_DEST_UNREACH 3
#define CX_ICMP_FRAG_NEEDED 4

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

#define CX_IP_CSUM_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, check))
#define CX_IP_SRC_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, saddr))
#define CX_IP_DST_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, daddr))
#define CX_IP6_SRC_OFF (ETH_HLEN + __builtin_offsetof(struct ipv6hdr, saddr))
#define CX_L4_OFF (ETH_HLEN + sizeof(struct iphdr))

/* Where an L4 header may start (IPv6 after its extension headers): a mask,
 * so the verifier knows the bound. */
#define CX_L4_OFF_MAX 511
#define CX_IPPROTO_SCTP 132

#define CX_ICMPV6_ECHO 128
#define CX_ICMPV6_ECHO_REPLY 129
#define CX_ICMPV6_PKT_TOOBIG 2

#define CX_ICMP_ECHO_REPLY 0
#define CX_ICMP_ECHO 8
#define CX_ICMP_TIME_EXCEEDED 11
#define CX_ICMP_PARAMETER_PROB 12

#define CX_TCP_FIN 0x01
#define CX_TCP_SYN 0x02
#define CX_TCP_RST 0x04
#define CX_TCP_ACK 0x10

#endif /* CALYX_PARSE_H */
