/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The host-wide prefilter (Config.prefilterDeny): sources the underlay
 * drops before anything else, at XDP or at TC. */
#ifndef CALYX_PREFILTER_H
#define CALYX_PREFILTER_H

#include "routes.h"

/* cx_prefiltered says whether the source of an IPv4 or IPv6 packet is on
 * the host-wide deny list. */
static __always_inline int cx_prefiltered(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct cx_route_key key = {};

	void *l3 = eth + 1;
	__be16 proto;
	int i;

	if ((void *)(eth + 1) > data_end)
		return 0;
	proto = eth->h_proto;
	/* Up to two tags (802.1ad outer, 802.1Q inner): XDP sees them in the
	 * frame; TC only an inner one, the kernel having moved the outer. */
	for (i = 0; i < 2; i++) {
		struct cx_vlanhdr *vh = l3;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end)
			return 0;
		proto = vh->encap_proto;
		l3 = vh + 1;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = l3;

		if ((void *)(iph + 1) > data_end)
			return 0;
		key.prefixlen = CX_V4_PREFIX_BITS + 32;
		cx_addr_v4(key.addr, iph->saddr);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end)
			return 0;
		key.prefixlen = 128;
		__builtin_memcpy(key.addr, &ip6->saddr, 16);
	} else {
		return 0;
	}
	return bpf_map_lookup_elem(&cx_prefilter, &key) != NULL;
}

#endif /* CALYX_PREFILTER_H */
