// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Trivial programs `afxdp-proxy check` (and `run`, before it attaches anything)
 * loads to learn whether this kernel and these privileges let the proxy load
 * XDP and TC programs; the TC one is attached to lo through TCX for an instant
 * when the configuration needs TCX. Neither changes a packet.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int axp_probe_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("tc")
int axp_probe_tc(struct __sk_buff *skb)
{
	return -1; /* TCX_NEXT (Linux 6.6 uapi; older headers lack the name): the next program decides */
}
