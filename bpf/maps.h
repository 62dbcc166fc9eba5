/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every map the programs share, declared once: one object (calyx.c) holds
 * every program, so each map exists once and is pinned by name. Layouts
 * are calyx.h's. */
#ifndef CALYX_MAPS_H
#define CALYX_MAPS_H

#include "calyx.h"

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

/* Not rebuildable: the counts outlive the agent (calyx.h says the layout). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CX_COUNTER_SLOTS * CX_REASON_FIRST_DROP);
	__type(key, __u32);
	__type(value, struct cx_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_slot_counters SEC(".maps");

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
 * ones. The loader sizes cx_ct from Config.ctMapSize and cx_nat
 * from Config.natMapSize. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct cx_ct_key);
	__type(value, struct cx_ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct cx_nat_key);
	__type(value, struct cx_nat_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_nat SEC(".maps");

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

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cx_event_window);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_event_budget SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cx_drop_log SEC(".maps");

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

/* A new translated flow's entry is built here, not on the stack, which
 * the hooks' paths fill to its 512 bytes. Not pinned: nothing outlives
 * the packet. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cx_nat_entry);
} cx_nat_scratch_map SEC(".maps");

/* A FIB lookup's parameters (a struct bpf_fib_lookup, 64 bytes) are built
 * here, not on the stack, which a workload's path fills to its 512 bytes;
 * the IPv6 next hop of the last lookup is read back from it. Bytes, so
 * that bpf2go need not render the struct's anonymous unions. Not pinned. */
struct cx_fib_buf {
	__u8 b[64];
};
_Static_assert(sizeof(struct cx_fib_buf) == sizeof(struct bpf_fib_lookup), "cx_fib_buf holds a bpf_fib_lookup");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cx_fib_buf);
} cx_fib_scratch SEC(".maps");

/* cx_get_config is cx_config's one entry. */
static __always_inline struct cx_node_config *cx_get_config(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&cx_config, &key);
}

/* Keep the enums in the object's BTF so bpf2go emits their constants for Go. */
const enum cx_reason cx_enum_reason __attribute__((unused));
const enum cx_route_type cx_enum_route_type __attribute__((unused));
const enum cx_route_flags cx_enum_route_flags __attribute__((unused));
const enum cx_iface_flags cx_enum_iface_flags __attribute__((unused));
const enum cx_iface_kind cx_enum_iface_kind __attribute__((unused));
const enum cx_policy_event_kind cx_enum_policy_event_kind __attribute__((unused));
/* And a ring buffer's record type, which no map declaration names. */
const struct cx_drop_event cx_type_drop_event __attribute__((unused));
const enum cx_counter_slot cx_enum_counter_slot __attribute__((unused));
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

#endif /* CALYX_MAPS_H */
