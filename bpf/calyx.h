/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map layouts shared by every calyx program. The Go side gets these types from
 * bpf2go; change a layout only together with a new pin version (loader/). */
#ifndef CALYX_H
#define CALYX_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define CX_ETH_ALEN 6
#define CX_IP4_BROADCAST 0xffffffff /* 255.255.255.255, the same in either byte order */

/* Addresses are stored as 16 bytes in network order; IPv4 as v4-mapped IPv6
 * (::ffff:a.b.c.d) so one map serves both families and bpftool shows bytes
 * in the order people read them. */
#define CX_V4_PREFIX_BITS 96

enum cx_iface_flags {
	CX_IFACE_WORKLOAD = 1 << 0,  /* host side of a workload tap/veth */
	CX_IFACE_CHECK_MAC = 1 << 1, /* the endpoint has a MAC: enforce it */
};

/* What kind of device a workload interface is, as the agent found it when
 * it attached: it decides how a packet is delivered into the workload. */
enum cx_iface_kind {
	CX_IFACE_KIND_OTHER = 0,  /* anything else: bpf_redirect to its egress */
	CX_IFACE_KIND_VETH = 1,   /* veth, peer in another namespace: bpf_redirect_peer */
	CX_IFACE_KIND_NETKIT = 2, /* netkit: bpf_redirect_peer */
	CX_IFACE_KIND_TAP = 3,    /* tap (a VM's NIC): bpf_redirect to its egress, the VM's queue */
};

/* cx_ifaces: what each attached interface is, keyed by its ifindex. */
struct cx_iface {
	__u32 flags;
	__u32 endpoint_id;
	__u8 mac[CX_ETH_ALEN];      /* the workload's MAC (CX_IFACE_CHECK_MAC) */
	__u8 host_mac[CX_ETH_ALEN]; /* the host side's MAC: answer to every ARP */
	/* The endpoint's policy tables in cx_policy; 0: no policy selects it
	 * in that direction, and everything passes. */
	__u32 ingress_table;
	__u32 egress_table;
	__u32 kind; /* enum cx_iface_kind */
	/* Where the interface's verdicts of reasons below
	 * CX_REASON_FIRST_DROP are counted in cx_slot_counters; 0: none
	 * free, counted in cx_counters. Stable for the interface's life. */
	__u32 counter_slot;
};

enum cx_route_type {
	CX_RT_UNSPEC = 0,
	CX_RT_LOCAL_WORKLOAD = 1,
	CX_RT_REMOTE_WORKLOAD = 2,
	CX_RT_HOST = 3,
	CX_RT_NODE = 4, /* another node's underlay address: a tunnel peer */
	CX_RT_POOL = 5, /* a workload pool: its addresses are not "outside" for natOutgoing */
	CX_RT_FIP = 6,  /* a floating IP; next_hop is the node of its instance */
};

/* How a remote-workload route leaves this host. Decided per route by the
 * agent (pool mode, CrossSubnet against this node's subnet), so the programs
 * never compare subnets. */
enum cx_encap {
	CX_ENCAP_NONE = 0,  /* routed directly to the node's underlay address */
	CX_ENCAP_IPIP = 1,  /* IP in IP: IPv4 in IPv4 (4), IPv6 in IPv4 (41), IPv6 in IPv6 (41) */
	CX_ENCAP_VXLAN = 2, /* VXLAN over UDP (IPv4 or IPv6), port and VNI from cx_config */
};

enum cx_route_flags {
	CX_RT_F_HAS_MAC = 1 << 0,      /* mac is the workload's: L2 rewrite, then a redirect */
	CX_RT_F_NAT_OUTGOING = 1 << 1, /* local workload in a natOutgoing pool */
	/* Local workload on a veth/netkit whose peer is in another namespace:
	 * delivered with bpf_redirect_peer. Without it (taps, anything else)
	 * the packet goes to the interface's egress with bpf_redirect. */
	CX_RT_F_PEER = 1 << 2,
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
	__u16 encap;   /* remote workload: enum cx_encap */
	/* local workload: its interface's counter slot (cx_iface). A __u16
	 * beside encap, so the route cached in cx_nat keeps its size. */
	__u16 counter_slot;
	/* remote: the owning node's underlay address, IPv4 (v4-mapped) or
	 * IPv6: the underlay the packet takes */
	__u8 next_hop[16];
	__u8 mac[CX_ETH_ALEN];      /* local workload: its MAC (CX_RT_F_HAS_MAC) */
	__u8 host_mac[CX_ETH_ALEN]; /* local workload: the host side's MAC */
};

/* Every verdict a program returns is counted under one of these reasons, per
 * interface: one reason per packet on the interface it came in on, with its
 * length as it came in (a delivery also counts to-workload on the
 * destination, with what enters it). Values are stable: they are the keys
 * operators scrape. */
enum cx_reason {
	CX_REASON_PASS_HOST = 0,       /* handed to the host stack */
	CX_REASON_DELIVER_LOCAL = 1,   /* redirected to a local workload */
	CX_REASON_ARP_REPLY = 2,       /* ARP answered in BPF */
	CX_REASON_TO_WORKLOAD = 3,     /* passed into the workload */
	CX_REASON_ENCAP_IPIP = 4,      /* sent to a node in IP-in-IP */
	CX_REASON_ENCAP_VXLAN = 5,     /* sent to a node in VXLAN */
	CX_REASON_FORWARD_DIRECT = 6,  /* routed to a node without encapsulation */
	CX_REASON_DECAP_IPIP = 7,      /* IP-in-IP from a node, decapsulated and delivered */
	CX_REASON_DECAP_VXLAN = 8,     /* VXLAN from a node, decapsulated and delivered */
	CX_REASON_ICMP_FRAG_NEEDED = 9, /* too big for the tunnel: ICMP sent back */
	CX_REASON_ND_REPLY = 10,       /* IPv6 neighbour solicitation answered in BPF */
	CX_REASON_DROP_MALFORMED = 16, /* truncated or invalid headers */
	CX_REASON_DROP_SPOOF_IP = 17,  /* source IP not the endpoint's */
	CX_REASON_DROP_SPOOF_MAC = 18, /* source MAC not the endpoint's */
	CX_REASON_DROP_NO_ENDPOINT = 19, /* interface has no endpoint (being removed) */
	CX_REASON_DROP_UNSUPPORTED = 20, /* an ethertype a workload may not send */
	CX_REASON_DROP_ARP_IGNORED = 21, /* ARP probe / request for its own address */
	CX_REASON_DROP_TUNNEL_SRC = 22, /* encapsulated, outer source not a known node */
	CX_REASON_DROP_TUNNEL_DST = 23, /* encapsulated, outer destination not this node */
	CX_REASON_DROP_TUNNEL_VNI = 24, /* VXLAN with another VNI or without the I flag */
	CX_REASON_DROP_NO_ROUTE = 25,   /* decapsulated, but for no workload here */
	CX_REASON_DROP_TOO_BIG = 26,    /* too big for the tunnel and may not get ICMP */
	CX_REASON_DROP_FIB = 27,        /* the underlay has no route to the node */
	CX_REASON_DROP_HELPER = 28,     /* a kernel helper refused to resize the packet */
	CX_REASON_DROP_ND_IGNORED = 29, /* NDP duplicate-address probe / solicitation for its own address */
	CX_REASON_DROP_NAT_PORTS = 30,  /* natOutgoing found no free source port */
	CX_REASON_DROP_CT_FULL = 31,    /* a new flow's conntrack entries could not be written (its reply tuple is another flow's) */
	CX_REASON_DROP_POLICY = 32,     /* network policy (or endpointToHostAction) denied a new flow */
	CX_REASON_DROP_PREFILTER = 33,  /* the source is on the host-wide prefilter deny list */
	CX_REASON_DROP_UNDERLAY_SPOOF = 34, /* from the underlay with this host's, a local workload's or a local floating IP's source */
	CX_REASON_DROP_TUNNEL_INNER_SRC = 35, /* decapsulated, inner source not the sending node's to use */
	CX_REASON_DROP_VLAN = 36,       /* a workload's 802.1Q/802.1ad tagged frame */
	CX_REASON_DROP_TCP_WINDOW = 37, /* a TCP RST of a tracked flow outside its window (a blind reset) */
	CX_REASON_DROP_FRAG_ORPHAN = 38, /* a fragment after the first, whose first fragment this hook has not seen */
	CX_REASON_MAX = 48,
};

#define CX_REASON_FIRST_DROP CX_REASON_DROP_MALFORMED

/* cx_slot_counters: the verdicts that pass a packet on (every reason below
 * CX_REASON_FIRST_DROP), per interface with a slot, in a per-CPU array:
 * the counting on every forwarded packet's path is an array index, not a
 * hash lookup. Slot s holds reason r at s * CX_REASON_FIRST_DROP + r.
 * Slot 0 is none (counted in cx_counters, as drops always are), slot 1 the
 * underlay interface (cx_config's underlay_ifindex); the agent gives each
 * workload interface one of the others and zeroes it before. */
enum cx_counter_slot {
	CX_COUNTER_SLOT_NONE = 0,
	CX_COUNTER_SLOT_UNDERLAY = 1,
	CX_COUNTER_SLOT_FIRST_WORKLOAD = 2,
	CX_COUNTER_SLOTS = 1024, /* slots in all: 256 KiB per CPU */
};

struct cx_counter_key {
	__u32 ifindex;
	__u32 reason; /* enum cx_reason */
};

struct cx_counter {
	__u64 packets;
	__u64 bytes;
};

/* cx_config: host-wide settings the agent writes (one entry, key 0). Zero
 * node_addr means not configured yet: nothing is encapsulated or decapsulated. */
struct cx_node_config {
	__u8 node_addr[16];     /* this node's underlay IPv4, v4-mapped */
	__u32 underlay_ifindex; /* where tunnel packets arrive */
	__u32 underlay_mtu;     /* the MTU encapsulated packets must fit */
	__u32 vxlan_vni;
	__u32 vxlan_port; /* host byte order */
	__u8 metadata_addr[16]; /* where 169.254.169.254:80 is DNAT'd to (zero: off) */
	__u32 metadata_port;    /* host byte order */
	__u32 route_gen;        /* bumped by the agent after every cx_routes change */
	__u32 flags;            /* enum cx_config_flags */
	__u32 endpoint_to_host; /* enum cx_endpoint_to_host */
	/* natOutgoing's source ports (host order); 0: the built-in range. */
	__u16 nat_port_min;
	__u16 nat_port_max;
	/* The MTU the agent gives workloads: a packet from one to another on
	 * this host must fit it (0: not checked). */
	__u32 workload_mtu;
	/* This node's underlay IPv6 (Node.spec.ipv6Address; zero: none): the
	 * outer source and decap destination of the IPv6 underlay, which
	 * carries IPv6 workloads' traffic to nodes with an IPv6 address. */
	__u8 node_addr6[16];
};

enum cx_config_flags {
	/* The underlay's TC ingress checks cx_prefilter: there are entries and
	 * no XDP program does it first. */
	CX_CFG_PREFILTER_TC = 1 << 0,
	/* A fragment after the first whose first fragment was not seen goes
	 * on untracked instead of being dropped (Config.orphanFragments). */
	CX_CFG_FRAG_ORPHAN_PASS = 1 << 1,
};

/* What becomes of a workload's new flow to this host (Config.endpointToHostAction). */
enum cx_endpoint_to_host {
	CX_E2H_ACCEPT = 0, /* allowed whatever the egress policy says */
	CX_E2H_DROP = 1,   /* dropped, except DHCP, DNS to the host and metadata */
	CX_E2H_RETURN = 2, /* the endpoint's egress policy decides */
};

/* cx_ipcache: the policy identity of remote addresses (LPM, keyed like
 * cx_routes). A miss is identity 0: an address no rule names. */
enum cx_identity_flags {
	CX_ID_HOST = 1 << 0, /* one of this node's own addresses */
};

struct cx_identity {
	__u32 id;
	__u32 flags;  /* enum cx_identity_flags */
	__u32 net_id; /* the identity of the address's nets alone: the fallback */
};

/* cx_policy: compiled policy (LPM). table and identity always match in
 * full; then the protocol and the port (destination port, or ICMP
 * type << 8 | code), as many leading bits as the entry says. A source-port
 * sub-table has the high bit in table, identity and proto 0, and the
 * source port in port. prefixlen counts from table: 64 + 8 + 16 at most. */
struct cx_policy_key {
	__u32 prefixlen;
	__u32 table;
	__u32 identity;
	__u8 proto;
	__u8 port[2]; /* network order */
	__u8 pad;
};

enum cx_policy_action {
	CX_POLICY_ALLOW = 1,
	CX_POLICY_DENY = 2,
	CX_POLICY_SPORT = 3, /* look up sub-table sub with the source port */
};

struct cx_policy_verdict {
	__u32 action;   /* enum cx_policy_action */
	__u32 rule;     /* the deciding rule, for cx_policy_hits */
	__u32 log_rule; /* the first Log rule matched on the way, or 0 */
	__u32 sub;
};

/* Rule numbers below 16 are not rules of a policy. */
enum cx_rule_special {
	CX_RULE_DEFAULT_DENY_INGRESS = 1,
	CX_RULE_DEFAULT_DENY_EGRESS = 2,
	CX_RULE_HOST_DROP = 3,
};

/* cx_policy_hits: how often each rule decided a new flow of an endpoint. */
struct cx_rule_hit_key {
	__u32 ifindex; /* the endpoint's interface */
	__u32 rule;
};

/* cx_policy_log carries one of these per packet a Log rule matched
 * (CX_PEV_LOG) and per new flow policy denied (CX_PEV_DENY: what
 * calyxctl monitor shows), within the per-CPU budget (cx_event_budget). */
struct cx_policy_event {
	__u32 ifindex;
	__u32 rule;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* host order */
	__u16 dport;
	__u8 proto;
	__u8 allowed;
	__u8 kind; /* enum cx_policy_event_kind */
	__u8 pad;
};

enum cx_policy_event_kind {
	CX_PEV_LOG = 0,  /* a Log rule matched */
	CX_PEV_DENY = 1, /* policy denied a new flow: rule is the deciding one */
};

/* Policy events each CPU may send per second: a flood of denied packets
 * costs the host a counter, not a ring full of events for the agent to
 * read. */
#define CX_EVENTS_PER_SEC 256

/* cx_drop_log carries one of these per dropped packet (but those policy
 * denied: cx_policy_event says more of them), within the same budget: the
 * start of the packet as it was dropped, for calyxctl monitor to show its
 * flow. */
#define CX_DROP_HEAD 128
struct cx_drop_event {
	__u32 ifindex;
	__u32 reason; /* enum cx_reason */
	__u32 len;      /* the packet's length as the program got it */
	__u32 head_len; /* how much of head is the packet's */
	__u8 head[CX_DROP_HEAD];
};

/* cx_event_budget: per CPU, the events (cx_policy_log's and
 * cx_drop_log's) sent in the current second and, for the agent's metrics,
 * every one the budget suppressed. Layout v2: suppressed is 64 bits (v1's
 * 32 wrapped after about 4.3 billion, twenty minutes of a flood at a few
 * million packets a second per CPU, and Prometheus read the wrap as a
 * reset); the loader converts a v1 map's windows and totals. */
struct cx_event_window {
	__u64 window_ns;
	__u64 suppressed;
	__u32 sent;
	__u32 pad;
};

/* cx_fips: the floating-IP table, the same on every node. */
struct cx_fip_key {
	__u8 addr[16]; /* the floating IP, v4-mapped */
};

enum cx_fip_flags {
	CX_FIP_LOCAL = 1 << 0, /* the instance runs on this node */
};

struct cx_fip {
	__u8 fixed[16]; /* the instance's fixed IP */
	__u8 node[16];  /* the underlay address of the instance's node */
	__u32 endpoint_id;
	__u32 flags; /* enum cx_fip_flags */
};

/* Connection tracking keeps two tables, so that a flood of new tracked
 * flows (spoofed SYNs at a workload under policy) can evict only tracking,
 * never a tenant's translations:
 *   - cx_ct: flows that need no translation, one entry per flow, found
 *     from either direction (the key is the tuple normalised);
 *   - cx_nat: translated flows, two entries (one per direction), each
 *     keyed by the tuple that direction's packets carry when they arrive
 *     and holding what to rewrite them to.
 * Addresses are 16 bytes (IPv4 v4-mapped), so IPv6 flows take the same
 * layout. The _v2 in the pin names is the layout's version: an agent that
 * finds the previous layout's cx_ct migrates its flows (loader/). */

/* cx_tcp_dir is what TCP tracking knows of one direction of a flow. */
struct cx_tcp_dir {
	/* The sequence number after the last this direction sent, and the
	 * largest window field it sent (unscaled): what a blind attacker does
	 * not know (CX_CT_SEQ_KNOWN). */
	__u32 seq_end;
	__u16 max_win;
	__u8 flags; /* the TCP flags of this direction's in-sequence segments */
	__u8 state; /* enum cx_ct_seq */
};

/* cx_tcp_dir.state */
enum cx_ct_seq {
	CX_CT_WSCALE_MASK = 0x0f,
	/* The direction's entry was recreated from the other one (cx_nat):
	 * its first ACK that is no RST is taken as in sequence. */
	CX_CT_SEQ_RESYNC = 0x10,
	CX_CT_SIDE_ORIG = 0x20,      /* cx_ct: this side sent the flow's first packet */
	CX_CT_WSCALE_OFFERED = 0x40, /* this direction's SYN offered window scaling */
	CX_CT_SEQ_KNOWN = 0x80,      /* seq_end and max_win hold this direction's */
};

/* cx_ct_key is a flow's tuple normalised: side a is the end with the lower
 * (address, port), b the other, so both directions find one entry. For ICMP
 * echo, port_a is the identifier and port_b 0, whatever the sides. */
struct cx_ct_key {
	__u8 addr_a[16];
	__u8 addr_b[16];
	__be16 port_a;
	__be16 port_b;
	__u8 proto;
	__u8 pad[3];
};

/* cx_ct_side is one end of a tracked flow: what it sent. */
struct cx_ct_side {
	struct cx_tcp_dir tcp;
	__u32 packets;
	/* The workload interface this side's packets come from, checked as
	 * its source when the flow started or this side first sent: later
	 * packets from it skip the source check (0: none yet). */
	__u32 ifindex;
};

/* cx_ct_entry is a flow without translation: 64 bytes. */
struct cx_ct_entry {
	__u64 created_ns; /* bpf_ktime_get_coarse_ns (CLOCK_MONOTONIC) */
	__u64 last_ns;    /* written at most once a CX_CT_LAST_NS */
	__u64 bytes[2];   /* sent by side a, side b */
	struct cx_ct_side side[2];
};

/* cx_nat_key: the tuple packets of one direction of a translated flow
 * carry when they arrive. For ICMP echo, sport is the identifier, dport 0. */
struct cx_nat_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

enum cx_ct_dir {
	CX_CT_ORIG = 0,  /* the direction of the flow's first packet */
	CX_CT_REPLY = 1,
};

enum cx_nat {
	CX_NAT_DNAT = 1 << 0,
	CX_NAT_SNAT = 1 << 1,
};

struct cx_nat_entry {
	__u8 nat_saddr[16]; /* what matching packets are rewritten to */
	__u8 nat_daddr[16];
	__be16 nat_sport;
	__be16 nat_dport;
	__u8 dir; /* enum cx_ct_dir */
	__u8 nat; /* enum cx_nat bits, the same in both entries */
	__u8 pad[2];
	struct cx_tcp_dir tcp;
	__u64 created_ns;
	__u64 last_ns;
	__u64 packets;
	__u64 bytes;
	/* The established-flow fast path (from-workload): a packet of this
	 * direction from workload interface ifindex whose source was checked
	 * when the flow started, and the route of its translated destination,
	 * valid while cx_config.route_gen is route_gen. */
	__u32 ifindex;
	__u32 route_gen; /* 0: nothing cached */
	struct cx_route route;
};

/* cx_ct_stats: per-CPU counts, indexed by this enum, of the entries the
 * programs wrote into and deleted from the conntrack maps. The LRU evicts
 * silently; the agent tells its evictions from these and the maps' fill. */
enum cx_ct_stat {
	CX_CTS_CT_CREATED = 0,
	CX_CTS_NAT_CREATED = 1,
	CX_CTS_CT_DELETED = 2,
	CX_CTS_NAT_DELETED = 3,
	CX_CTS_FRAG_ORPHANS = 4, /* later fragments without their first (dropped or passed) */
	CX_CTS_MAX = 8,
};

/* cx_frags: the L4 ports of a fragmented datagram, from its first
 * fragment, so that the later ones (which carry no L4 header) are matched
 * and translated like it. Keyed as the fragments arrive. */
struct cx_frag_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 id; /* the IP identification (IPv6: the fragment header's) */
	__u8 proto;
	__u8 pad[3];
};

struct cx_frag {
	__be16 sport; /* ICMP echo: the identifier */
	__be16 dport;
	__u16 policy_port; /* host order: what policy matches (ICMP: type << 8 | code) */
	__u8 icmp_type;
	__u8 pad;
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

/* What became of a local endpoint, as the agent decided it. */
enum cx_ep_state {
	CX_EP_READY = 1,   /* programs attached, maps written */
	CX_EP_PENDING = 2, /* its interface does not exist (yet) */
	/* Refused: the interface is one the agent never attaches workload
	 * programs to nor changes sysctls of. */
	CX_EP_REFUSED_UNDERLAY = 3,  /* the underlay interface */
	CX_EP_REFUSED_LOOPBACK = 4,  /* a loopback interface */
	CX_EP_REFUSED_HOST_ADDR = 5, /* it holds one of the host's own addresses */
	CX_EP_ATTACH_FAILED = 6,     /* attaching its programs failed; retried with backoff */
	CX_EP_CONFLICT = 7,          /* its interface or an address is an earlier endpoint's or a node's */
};

/* cx_endpoints: the state of each endpoint of this node, keyed by endpoint
 * id, for calyxctl and bpftool. Never read by the programs. */
struct cx_ep_status {
	__u32 state; /* enum cx_ep_state */
	__u32 ifindex; /* 0 unless the interface exists */
	char ifname[16]; /* spec.interface */
};

/* cx_leases: the addresses the agent's DHCPv4/DHCPv6 servers leased, by
 * interface and family, for calyxctl dhcp leases. Never read by the programs. */
struct cx_lease_key {
	__u32 ifindex;
	__u32 family; /* 4 or 6 */
};

struct cx_lease {
	__u8 addr[16]; /* v4-mapped for IPv4 */
	__u8 mac[CX_ETH_ALEN]; /* the client's */
	__u8 pad[2];
	__u32 endpoint_id;
	__u32 pad2;
	__u64 expires;   /* unix seconds */
	__u64 last_seen; /* unix seconds: the client's last message */
};

#endif /* CALYX_H */
