// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The AF_XDP backend's only kernel code, one loaded copy per RX interface:
 * frames the proxy wants go to the AF_XDP socket of their RX queue, all else
 * (ARP, traffic for the host, other nodes' labels) passes to the kernel.
 *
 *   axp_xsk_net_in   SR-MPLS whose top label is ours, or too short to tell
 *                    -> socket; other ethertypes and labels pass
 *   axp_xsk_from_sf  IPv4/IPv6, or too short to tell -> socket; anything
 *                    else passes
 *   axp_xsk_rx_tx    an interface that is net_in of one SF and from_sf of
 *                    another: bare IP as axp_xsk_from_sf, all else as
 *                    axp_xsk_net_in (role.shared.h), to the one socket of
 *                    the queue; user space splits the batch by the same test
 *
 * Only cheap checks here; user space judges the whole frame with the same
 * parser as proxy.bpf.c. What passes is counted under the kernel backend's
 * counter names, so the two backends report the same way.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "parse.shared.h"
#include "role.shared.h"

/* frames for a queue without a socket: AXP_XCNT_XDP_NO_SOCKET in native/axp_xsk.h */
#define AXP_XSK_CNT_NO_SOCKET AXP_CNT_MAX

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* RX queue -> AF_XDP socket */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64); /* resized to the proxy's queues before load */
	__type(key, __u32);
	__type(value, __u32);
} axp_xsks SEC(".maps");

/* top labels the proxy serves (net_in only) -> SF index */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXP_MAX_SFS);
	__type(key, __u32);
	__type(value, __u32);
} axp_xsk_labels SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AXP_CNT_MAX + 1);
	__type(key, __u32);
	__type(value, __u64);
} axp_counters SEC(".maps");

static __always_inline void axp_count(__u32 slot)
{
	__u64 *c = bpf_map_lookup_elem(&axp_counters, &slot);

	if (c)
		*c += 1;
}

/* Passed to the kernel: counted as the kernel backend's RX or TX program would. */
static __always_inline int axp_pass(__u32 seen, __u32 reason)
{
	axp_count(seen);
	axp_count(reason);
	return XDP_PASS;
}

/* To the socket of the frame's RX queue. */
static __always_inline int axp_to_socket(struct xdp_md *ctx)
{
	__u32 queue = ctx->rx_queue_index;

	/* the loader binds a socket to every queue before attaching: this is a safety net */
	if (!bpf_map_lookup_elem(&axp_xsks, &queue)) {
		axp_count(AXP_XSK_CNT_NO_SOCKET);
		return XDP_DROP;
	}
	return bpf_redirect_map(&axp_xsks, queue, XDP_DROP);
}

static __always_inline int axp_xsk_net_in_path(struct xdp_md *ctx)
{
	const __u8 *data = (void *)(long)ctx->data;
	const __u8 *end = (void *)(long)ctx->data_end;

	if (data + AXP_ETH_HLEN <= end) {
		if (axp_load16(data + 12) != axp_htons(AXP_ETH_P_MPLS_UC))
			return axp_pass(AXP_CNT_RX_PACKETS, AXP_CNT_RX_NOT_MPLS);
		/* the top label decides first, as in proxy.bpf.c */
		if (data + AXP_ETH_HLEN + 4 <= end) {
			__u32 label = axp_label_of(axp_load32(data + AXP_ETH_HLEN));

			if (!bpf_map_lookup_elem(&axp_xsk_labels, &label))
				return axp_pass(AXP_CNT_RX_PACKETS, AXP_CNT_RX_OTHER_LABEL);
		}
	}
	return axp_to_socket(ctx);
}

static __always_inline int axp_xsk_from_sf_path(struct xdp_md *ctx)
{
	const __u8 *data = (void *)(long)ctx->data;
	const __u8 *end = (void *)(long)ctx->data_end;

	if (data + AXP_ETH_HLEN <= end) {
		__u16 proto = axp_load16(data + 12);

		if (proto != axp_htons(AXP_ETH_P_IP) && proto != axp_htons(AXP_ETH_P_IPV6))
			return axp_pass(AXP_CNT_TX_PACKETS, AXP_CNT_TX_NOT_IP);
		/* the IP version nibble rules, as in axp_derive_key */
		if (data + AXP_ETH_HLEN + 1 > end ||
		    (data[AXP_ETH_HLEN] >> 4 != 4 && data[AXP_ETH_HLEN] >> 4 != 6))
			return axp_pass(AXP_CNT_TX_PACKETS, AXP_CNT_TX_NOT_IP);
	}
	return axp_to_socket(ctx);
}

SEC("xdp")
int axp_xsk_net_in(struct xdp_md *ctx)
{
	return axp_xsk_net_in_path(ctx);
}

SEC("xdp")
int axp_xsk_from_sf(struct xdp_md *ctx)
{
	return axp_xsk_from_sf_path(ctx);
}

SEC("xdp")
int axp_xsk_rx_tx(struct xdp_md *ctx)
{
	if (axp_frame_from_sf((void *)(long)ctx->data, (void *)(long)ctx->data_end))
		return axp_xsk_from_sf_path(ctx);
	return axp_xsk_net_in_path(ctx);
}
