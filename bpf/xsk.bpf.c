// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The AF_XDP backend's only kernel code, one loaded copy per RX interface:
 * frames the proxy wants go to the AF_XDP socket of their RX queue, all else
 * (ARP, traffic for the host, other nodes' labels) passes to the kernel.
 *
 *   axp_xsk_net_in   SR-MPLS whose top label is ours on its VLAN, or too
 *                    short to tell -> socket; other ethertypes, VLANs and
 *                    labels, reserved labels on top, and (on_ttl_expired =
 *                    pass) our label with TTL <= 1 pass
 *   axp_xsk_from_sf  IPv4/IPv6, or too short to tell -> socket; what is
 *                    meant for the proxy host (host.bpf.h: neighbour
 *                    discovery, multicast, link-local, its addresses) and
 *                    anything else passes: user space cannot hand a frame
 *                    back to the kernel
 *   axp_xsk_rx_tx    an interface that is net_in of one SF and from_sf of
 *                    another: bare IP as axp_xsk_from_sf, all else as
 *                    axp_xsk_net_in (role.shared.h), to the one socket of
 *                    the queue; user space splits the batch by the same test
 *
 * Only the head of a frame is read here (axp_parse_head); user space judges
 * the whole frame with the same parser as proxy.bpf.c. What passes is counted
 * under the kernel backend's counter names, so the two backends report the
 * same way: frames of net_in in the row axp_xdp_rx counts them in (an SF's,
 * or AXP_SF_NONE), those of from_sf in AXP_SF_NONE's.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "parse.shared.h"
#include "host.bpf.h"
#include "role.shared.h"

/* frames for a queue without a socket: AXP_XCNT_XDP_NO_SOCKET in native/axp_engine.h */
#define AXP_XSK_CNT_NO_SOCKET AXP_CNT_MAX
#define AXP_XSK_CNT_SLOTS (AXP_CNT_MAX + 1) /* slots of a counter row here */

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader before load (libbpf .rodata): on_ttl_expired is read here */
const volatile struct axp_config axp_cfg = {};

/* RX queue -> AF_XDP socket */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64); /* resized to the proxy's queues before load */
	__type(key, __u32);
	__type(value, __u32);
} axp_xsks SEC(".maps");

/* axp_sf_key(VID, top label) the proxy serves (net_in only) -> SF index; (VID, 0): a VLAN served */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXP_MAX_SFS);
	__type(key, __u32);
	__type(value, __u32);
} axp_xsk_labels SEC(".maps");

/* AXP_CNT_ROWS rows of AXP_XSK_CNT_SLOTS: row = SF index or AXP_SF_NONE, as proxy.bpf.c's */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AXP_CNT_ROWS * AXP_XSK_CNT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} axp_counters SEC(".maps");

static __always_inline void axp_count(__u32 row, __u32 slot)
{
	__u32 i = (row < AXP_MAX_SFS ? row : AXP_SF_NONE) * AXP_XSK_CNT_SLOTS + slot;
	__u64 *c = bpf_map_lookup_elem(&axp_counters, &i);

	if (c)
		*c += 1;
}

/* Passed to the kernel: counted as the kernel backend's RX or TX program would. */
static __always_inline int axp_pass(__u32 row, __u32 seen, __u32 reason)
{
	axp_count(row, seen);
	axp_count(row, reason);
	return XDP_PASS;
}

/* To the socket of the frame's RX queue. */
static __always_inline int axp_to_socket(struct xdp_md *ctx)
{
	__u32 queue = ctx->rx_queue_index;

	/* the loader binds a socket to every queue before attaching: this is a safety net */
	if (!bpf_map_lookup_elem(&axp_xsks, &queue)) {
		axp_count(AXP_SF_NONE, AXP_XSK_CNT_NO_SOCKET);
		return XDP_DROP;
	}
	return bpf_redirect_map(&axp_xsks, queue, XDP_DROP);
}

static __always_inline int axp_xsk_net_in_path(struct xdp_md *ctx)
{
	const __u8 *data = (void *)(long)ctx->data;
	const __u8 *end = (void *)(long)ctx->data_end;
	struct axp_frame f = {};
	__u32 key, *idx;
	__be32 top = 0;
	int res;

	/* the decisions of proxy.bpf.c's axp_xdp_rx up to the label, in its order */
	res = axp_parse_head(data, end, &f, &top);
	if (f.vlans.n) {
		key = axp_sf_key(f.vid, 0);
		if (!bpf_map_lookup_elem(&axp_xsk_labels, &key))
			return axp_pass(AXP_SF_NONE, AXP_CNT_RX_PACKETS, AXP_CNT_RX_VLAN_OTHER);
	}
	if (res == AXP_PARSE_NOT_MPLS)
		return axp_pass(AXP_SF_NONE, AXP_CNT_RX_PACKETS,
				f.vlans.n ? AXP_CNT_RX_VLAN_OTHER : AXP_CNT_RX_NOT_MPLS);
	if (res == AXP_PARSE_RESERVED)
		return axp_pass(AXP_SF_NONE, AXP_CNT_RX_PACKETS, AXP_CNT_RX_RESERVED_LABEL);
	if (f.top_off) {
		key = axp_sf_key(f.vid, axp_label_of(top));
		idx = bpf_map_lookup_elem(&axp_xsk_labels, &key);
		if (!idx)
			return axp_pass(AXP_SF_NONE, AXP_CNT_RX_PACKETS, AXP_CNT_RX_OTHER_LABEL);
		/* only the kernel can take it to the host: user space drops the others */
		if (axp_ttl_of(top) <= 1 && axp_cfg.on_ttl_expired == AXP_TTL_PASS)
			return axp_pass(*idx, AXP_CNT_RX_PACKETS, AXP_CNT_RX_TTL_EXPIRED_PASS);
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
			return axp_pass(AXP_SF_NONE, AXP_CNT_TX_PACKETS, AXP_CNT_TX_NOT_IP);
		/* the IP version nibble rules, as in axp_derive_key */
		if (data + AXP_ETH_HLEN + 1 > end ||
		    (data[AXP_ETH_HLEN] >> 4 != 4 && data[AXP_ETH_HLEN] >> 4 != 6))
			return axp_pass(AXP_SF_NONE, AXP_CNT_TX_PACKETS, AXP_CNT_TX_NOT_IP);
		if (axp_for_host(data, end))
			return axp_pass(AXP_SF_NONE, AXP_CNT_TX_PACKETS, AXP_CNT_TX_HOST);
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
