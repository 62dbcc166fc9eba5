// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/* calyx_xdp_prefilter: XDP on a physical underlay NIC. */
#include "counters.h"
#include "prefilter.h"

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
