/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map layouts shared by every calyx program. The Go side gets these types from
 * bpf2go; change a layout only together with a new pin version (loader/). */
#ifndef CALYX_H
#define CALYX_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define CX_ETH_ALEN 6

/* Addresses are stored as 16 bytes in network order; IPv4 as v4-mapped IPv6
 * (::ffff:a.b.c.d) so one map serves both families and bpftool shows bytes
 * in the order people read them. */
#define CX_V4_PREFIX_BITS 96

enum cx_iface_flags {
	CX_IFACE_WORKLOAD = 1 << 0,  /* host side of a workload tap/veth */
	CX_IFACE_CHECK_MAC = 1 << 1, /* the endpoint has a MAC: enforce it */
};

/* cx_ifaces: what each attached interface is, keyed by its ifindex. */
struct cx_iface {
	__u32 flags;
	__u32 endpoint_id;
	__u8 mac[CX_ETH_ALEN];      /* the workload's MAC (CX_IFACE_CHECK_MAC) */
	__u8 host_mac[CX_ETH_ALEN]; /* the host side's MAC: answer to every ARP */
};

enum cx_route_type {
	CX_RT_UNSPEC = 0,
	CX_RT_LOCAL_WORKLOAD = 1,
	CX_RT_REMOTE_WORKLOAD = 2,
	CX_RT_HOST = 3,
};

enum cx_route_flags {
	CX_RT_F_HAS_MAC = 1 << 0, /* mac is the workload's: L2 rewrite + redirect_peer */
};

struct cx_route_key {
	__u32 prefixlen; /* bits of addr; 96 + n for IPv4 /n */
	__u8 addr[16];
};

/* cx_routes: the BPF route table (LPM). Kernel routes are for the underlay only. */
struct cx_route {
	__u32 type;    /* enum cx_route_type; a __u32 so the map's BTF loads */
	__u32 flags;   /* enum cx_route_flags */
	__u32 ifindex; /* local workload: its host-side interface */
	__u32 pad;
	__u8 next_hop[16];          /* remote: the owning node's underlay address */
	__u8 mac[CX_ETH_ALEN];      /* local workload: its MAC (CX_RT_F_HAS_MAC) */
	__u8 host_mac[CX_ETH_ALEN]; /* local workload: the host side's MAC */
};

/* Every verdict a program returns is counted under one of these reasons, per
 * interface. Values are stable: they are the keys operators scrape. */
enum cx_reason {
	CX_REASON_PASS_HOST = 0,       /* handed to the host stack */
	CX_REASON_DELIVER_LOCAL = 1,   /* redirected to a local workload */
	CX_REASON_ARP_REPLY = 2,       /* ARP answered in BPF */
	CX_REASON_TO_WORKLOAD = 3,     /* passed into the workload */
	CX_REASON_DROP_MALFORMED = 16, /* truncated or invalid headers */
	CX_REASON_DROP_SPOOF_IP = 17,  /* source IP not the endpoint's */
	CX_REASON_DROP_SPOOF_MAC = 18, /* source MAC not the endpoint's */
	CX_REASON_DROP_NO_ENDPOINT = 19, /* interface has no endpoint (being removed) */
	CX_REASON_DROP_UNSUPPORTED = 20, /* an ethertype a workload may not send */
	CX_REASON_DROP_ARP_IGNORED = 21, /* ARP probe / request for its own address */
	CX_REASON_MAX = 32,
};

#define CX_REASON_FIRST_DROP CX_REASON_DROP_MALFORMED

struct cx_counter_key {
	__u32 ifindex;
	__u32 reason; /* enum cx_reason */
};

struct cx_counter {
	__u64 packets;
	__u64 bytes;
};

enum cx_attach_mode {
	CX_ATTACH_TCX = 1,
	CX_ATTACH_CLSACT = 2,
};

/* cx_links: the agent's record of what it attached where, so calyxctl and a
 * restarted agent can list links (Debian's bpftool cannot show TCX links).
 * Never read by the programs. */
struct cx_link {
	char ifname[16];
	__u32 mode; /* enum cx_attach_mode */
	__u32 ingress_prog_id;
	__u32 egress_prog_id;
	__u32 endpoint_id;
};

#endif /* CALYX_H */
