// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* calyx's BPF object: one program per hook, loaded once and attached to
 * every interface of its kind (what differs per interface is looked up by
 * ifindex). bpf2go builds one object, so that the programs share one set of
 * maps; each hook's program is a file of its own, over headers that each
 * include what they use:
 *
 *   parse.h      packet access, header cursors, protocol constants
 *   calyx.h      map layouts (shared with Go through bpf2go)
 *   maps.h       the maps
 *   counters.h   verdict counters
 *   routes.h     routes, identities, floating IPs, the node's settings
 *   delivery.h   delivery into workloads, to nodes, ICMP too-big
 *   conntrack.h  flow tuples, fragments, cx_ct / cx_nat, TCP tracking
 *   nat.h        translation
 *   policy.h     network policy, and conntrack + policy + NAT together
 *   prefilter.h  the host-wide source deny list
 */
#include "from_wl.c"
#include "to_wl.c"
#include "from_underlay.c"
#include "to_underlay.c"
#include "xdp_prefilter.c"

char __license[] SEC("license") = "Dual BSD/GPL";
