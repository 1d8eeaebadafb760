// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The in-kernel caching SFC proxy for SR-MPLS (and, with static_mode, the
 * static proxy it is compared against).
 *
 *   axp_xdp_rx   XDP on net_in: pop the stack, cache it, pass (inline) or
 *                redirect to the SF (attached)
 *   axp_tc_meta  TC ingress on net_in, meta mode: XDP metadata -> skb->mark
 *   axp_tc_tx    TC egress on net_out (inline): look up, push
 *   axp_xdp_tx   XDP on from_sf (attached): look up, push, redirect to net_out
 *   axp_xdp_rx_tx  XDP on an interface that is net_in of one SF and from_sf of
 *                another (attached): bare IP takes axp_xdp_tx's path, all else
 *                axp_xdp_rx's (role.shared.h)
 *
 * An interface's XDP roles are known at attach time: the loader attaches the
 * program of its roles, so one-role interfaces pay nothing for the dispatch.
 */
#include <linux/pkt_cls.h>
#include "proxy.bpf.h"
#include "role.shared.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline int axp_xdp_rx_path(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	__u8 *end = (void *)(long)ctx->data_end;
	int want_key = !axp_cfg.static_mode && axp_cfg.key_mode == AXP_KEY_MODE_HASH;
	struct axp_entry entry = {};
	struct axp_frame f = {};
	struct axp_key key AXP_CACHE_KEY_ALIGN = {}, *keyp;
	struct axp_sf *sf = NULL;
	__u8 eth[AXP_ETH_HLEN];
	__u32 label, sf_idx, mark = 0, row = AXP_SF_NONE;
	__u32 *idx = NULL;
	int res;

	keyp = want_key ? &key : NULL;
	/*
	 * Opaque to the compiler: knowing the key 8-byte aligned, it would address
	 * key->family as (key | 1), and the verifier refuses ALU on pointers but add.
	 */
	axp_barrier_var(keyp);
	res = axp_parse_mpls_frame(data, end, entry.labels, &f, keyp);
	if (res == AXP_PARSE_NOT_MPLS) {
		axp_count_frame(row, AXP_CNT_RX_PACKETS, AXP_CNT_RX_NOT_MPLS);
		return XDP_PASS;
	}
	/*
	 * The top label decides first: another node's traffic (a pseudowire, a deep
	 * stack) passes untouched whatever it carries. labels[0] is filled as soon as
	 * one label entry fits in the frame.
	 */
	if (data + AXP_ETH_HLEN + 4 <= end) {
		label = axp_label_of(entry.labels[0]);
		idx = bpf_map_lookup_elem(&axp_labels, &label);
		if (!idx) {
			axp_count_frame(row, AXP_CNT_RX_PACKETS, AXP_CNT_RX_OTHER_LABEL);
			return XDP_PASS;
		}
		row = *idx;
	}
	if (res != AXP_PARSE_OK || !idx) {
		axp_count_frame(row, AXP_CNT_RX_PACKETS, axp_parse_counter(res));
		return XDP_DROP;
	}
	/* proxied all the same; the count tells how often such chains come by */
	if (key.flags & AXP_KEYF_EXT_LIMIT)
		axp_count(row, AXP_CNT_RX_KEY_EXT_LIMIT);
	sf_idx = *idx;
	if (axp_cfg.topology == AXP_TOPO_ATTACHED) {
		sf = bpf_map_lookup_elem(&axp_sfs, &sf_idx);
		if (!sf) {
			axp_count_frame(row, AXP_CNT_RX_PACKETS, AXP_CNT_RX_OTHER_LABEL);
			return XDP_PASS;
		}
	}

	if (!axp_cfg.static_mode && axp_cfg.key_mode == AXP_KEY_MODE_META) {
		mark = axp_next_meta_key();
		axp_meta_key(&key, mark);
	}

	/* pop: keep the Ethernet header, drop the stack in front of the IP packet */
	__builtin_memcpy(eth, data, AXP_ETH_HLEN);
	*(__be16 *)&eth[12] = axp_htons(f.l3_proto);
	if (sf) {
		__builtin_memcpy(eth, sf->sf_mac, 6);
		__builtin_memcpy(eth + 6, sf->to_sf_mac, 6);
	}
	if (bpf_xdp_adjust_head(ctx, f.l3_off - AXP_ETH_HLEN))
		goto pop_failed;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + AXP_ETH_HLEN > end)
		goto pop_failed;
	__builtin_memcpy(data, eth, AXP_ETH_HLEN);

	if (axp_cfg.key_mode == AXP_KEY_MODE_META && !axp_cfg.static_mode) {
		__u8 *meta;

		if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(__u32)))
			goto pop_failed;
		meta = (void *)(long)ctx->data_meta;
		data = (void *)(long)ctx->data;
		if (meta + sizeof(__u32) > data)
			goto pop_failed;
		__builtin_memcpy(meta, &mark, sizeof(mark));
	}

	/* cached last: a packet that got this far leaves, so nothing needs undoing */
	if (!axp_cfg.static_mode) {
		entry.depth = f.depth;
		entry.sf = sf_idx;
		entry.rx_ns = axp_now();
		res = axp_cache_insert(&key, &entry);
		if (res) {
			axp_count_frame(row, AXP_CNT_RX_PACKETS,
					res == -2 ? AXP_CNT_RX_KEY_FULL : AXP_CNT_RX_CACHE_ERROR);
			return XDP_DROP;
		}
	}
	axp_count_frame(row, AXP_CNT_RX_PACKETS, AXP_CNT_RX_POPPED);
	if (sf)
		return bpf_redirect(sf->to_sf_ifindex, 0);
	return XDP_PASS;

pop_failed:
	axp_count_frame(row, AXP_CNT_RX_PACKETS, AXP_CNT_RX_POP_FAILED);
	return XDP_DROP;
}

SEC("tc")
int axp_tc_meta(struct __sk_buff *skb)
{
	__u8 *meta = (void *)(long)skb->data_meta;
	__u8 *data = (void *)(long)skb->data;
	__u32 mark;

	if (meta + sizeof(mark) <= data) {
		__builtin_memcpy(&mark, meta, sizeof(mark));
		skb->mark = mark;
	}
	return TC_ACT_OK;
}

/* The TX lookup: fill *key from the bare packet. Returns an enum axp_parse_result. */
static __always_inline int axp_tx_key(const __u8 *data, const __u8 *end, __u32 mark,
				      struct axp_key *key)
{
	if (axp_cfg.key_mode == AXP_KEY_MODE_META) {
		axp_meta_key(key, mark);
		return AXP_PARSE_OK;
	}
	if (data + AXP_ETH_HLEN > end)
		return AXP_PARSE_MALFORMED;
	return axp_derive_key(data + AXP_ETH_HLEN, end, key);
}

/* The counter row of a TX frame without a cache entry: the SF of its TX interface, if one. */
static __always_inline __u32 axp_tx_row(__u32 ifindex)
{
	__u32 *idx = bpf_map_lookup_elem(&axp_tx_sf, &ifindex);

	return idx ? *idx : AXP_SF_NONE;
}

static __always_inline int axp_tx_miss_drops(__u32 row)
{
	if (axp_cfg.on_miss == AXP_MISS_DROP) {
		axp_count_frame(row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_MISS_DROP);
		return 1;
	}
	axp_count_frame(row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_MISS_PASS);
	return 0;
}

/*
 * Find what TX pushes for this packet: the cached entry (caching) or the SF
 * of the TX interface (static). Returns the SF or NULL on a miss.
 */
static __always_inline struct axp_sf *axp_tx_lookup(struct axp_key *key, __u32 ifindex,
						    struct axp_entry *entry)
{
	__u32 sf_idx, *idx;
	__u64 dwell;

	if (axp_cfg.static_mode) {
		idx = bpf_map_lookup_elem(&axp_tx_sf, &ifindex);
		if (!idx)
			return NULL;
		sf_idx = *idx;
		entry->sf = sf_idx; /* the counter row */
		return bpf_map_lookup_elem(&axp_sfs, &sf_idx);
	}
	if (axp_cache_take(key, entry))
		return NULL;
	dwell = axp_now() - entry->rx_ns;
	axp_count_add(entry->sf, AXP_CNT_TX_DWELL_NS, dwell);
	axp_count(entry->sf, AXP_CNT_TX_DWELL_HIST + axp_dwell_bucket(dwell));
	sf_idx = entry->sf;
	return bpf_map_lookup_elem(&axp_sfs, &sf_idx);
}

SEC("tc")
int axp_tc_tx(struct __sk_buff *skb)
{
	struct axp_entry entry = {};
	struct axp_key key AXP_CACHE_KEY_ALIGN = {};
	const __be32 *labels = NULL;
	__be16 mpls = axp_htons(AXP_ETH_P_MPLS_UC);
	struct axp_sf *sf;
	__u8 *data, *end;
	__u32 n, pull, row = AXP_SF_NONE;
	int res;

	if (skb->protocol != axp_htons(AXP_ETH_P_IP) && skb->protocol != axp_htons(AXP_ETH_P_IPV6)) {
		axp_count_frame(axp_tx_row(skb->ifindex), AXP_CNT_TX_PACKETS, AXP_CNT_TX_NOT_IP);
		return TC_ACT_OK;
	}
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	res = axp_tx_key(data, end, skb->mark, &key);
	/*
	 * Headers beyond the linear part: pull them in once, only on this slow
	 * path. Besides a header cut short, any key but TCP's may have been cut
	 * short by the linear end (payload words, a tunnel's inner packet) where
	 * XDP at RX saw the whole frame.
	 */
	pull = skb->len < AXP_KEY_PULL_LEN ? skb->len : AXP_KEY_PULL_LEN;
	if (data + pull > end &&
	    (res == AXP_PARSE_MALFORMED ||
	     (res == AXP_PARSE_OK && key.kind != AXP_KEY_TCP && key.kind != AXP_KEY_META))) {
		bpf_skb_pull_data(skb, pull);
		__builtin_memset(&key, 0, sizeof(key));
		res = axp_tx_key((void *)(long)skb->data, (void *)(long)skb->data_end, skb->mark,
				 &key);
	}
	if (res == AXP_PARSE_NOT_IP) {
		axp_count_frame(axp_tx_row(skb->ifindex), AXP_CNT_TX_PACKETS, AXP_CNT_TX_NOT_IP);
		return TC_ACT_OK;
	}
	if (res != AXP_PARSE_OK) {
		axp_count_frame(axp_tx_row(skb->ifindex), AXP_CNT_TX_PACKETS, AXP_CNT_TX_MALFORMED);
		return TC_ACT_SHOT;
	}
	sf = axp_tx_lookup(&key, skb->ifindex, &entry);
	if (!sf)
		return axp_tx_miss_drops(axp_tx_row(skb->ifindex)) ? TC_ACT_SHOT : TC_ACT_OK;
	row = entry.sf;
	/* one skb, many packets (GRO upstream): one stack cannot be right for all */
	if (skb->gso_segs > 1) {
		axp_count_frame(row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_GSO_DROP);
		return TC_ACT_SHOT;
	}
	res = axp_tx_stack(&entry, sf, &labels);
	if (res < 0) {
		axp_count_frame(row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_MALFORMED);
		return TC_ACT_SHOT;
	}
	n = res;
	if (!n) {
		axp_count_frame(row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_PLAIN);
		return TC_ACT_OK;
	}
	/* one adjust for the whole stack: it needs skb->protocol to still be IP */
	if (bpf_skb_adjust_room(skb, n * 4, BPF_ADJ_ROOM_MAC, 0) ||
	    bpf_skb_store_bytes(skb, AXP_ETH_HLEN, labels, n * 4, 0))
		goto push_failed;
	/* the Ethernet header is linear after the adjust: a plain store beats a helper call */
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	if (data + AXP_ETH_HLEN > end)
		goto push_failed;
	__builtin_memcpy(data + 12, &mpls, sizeof(mpls));
	axp_count_frame(row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_PUSHED);
	return TC_ACT_OK;

push_failed:
	axp_count_frame(row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_PUSH_FAILED);
	return TC_ACT_SHOT;
}

static __always_inline int axp_xdp_tx_path(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	__u8 *end = (void *)(long)ctx->data_end;
	__be16 proto = axp_htons(AXP_ETH_P_MPLS_UC);
	struct axp_entry entry = {};
	struct axp_key key AXP_CACHE_KEY_ALIGN = {};
	const __be32 *labels = NULL;
	struct axp_sf *sf;
	__u32 i, n, ifindex = ctx->ingress_ifindex, row = AXP_SF_NONE;
	int res;

	if (data + AXP_ETH_HLEN > end) {
		axp_count_frame(axp_tx_row(ifindex), AXP_CNT_TX_PACKETS, AXP_CNT_TX_MALFORMED);
		return XDP_DROP;
	}
	if (axp_load16(data + 12) != axp_htons(AXP_ETH_P_IP) &&
	    axp_load16(data + 12) != axp_htons(AXP_ETH_P_IPV6)) {
		axp_count_frame(axp_tx_row(ifindex), AXP_CNT_TX_PACKETS, AXP_CNT_TX_NOT_IP);
		return XDP_PASS;
	}
	res = axp_tx_key(data, end, 0, &key);
	if (res == AXP_PARSE_NOT_IP) {
		axp_count_frame(axp_tx_row(ifindex), AXP_CNT_TX_PACKETS, AXP_CNT_TX_NOT_IP);
		return XDP_PASS;
	}
	if (res != AXP_PARSE_OK) {
		axp_count_frame(axp_tx_row(ifindex), AXP_CNT_TX_PACKETS, AXP_CNT_TX_MALFORMED);
		return XDP_DROP;
	}
	sf = axp_tx_lookup(&key, ifindex, &entry);
	if (!sf) {
		__u32 *idx;

		/* pass: the SF's output goes on unlabelled, like the kernel would route it */
		idx = bpf_map_lookup_elem(&axp_tx_sf, &ifindex);
		if (axp_tx_miss_drops(idx ? *idx : AXP_SF_NONE))
			return XDP_DROP;
		if (!idx)
			return XDP_PASS;
		i = *idx;
		sf = bpf_map_lookup_elem(&axp_sfs, &i);
		if (!sf)
			return XDP_PASS;
		proto = axp_load16(data + 12);
		n = 0;
		goto out;
	}
	row = entry.sf;
	res = axp_tx_stack(&entry, sf, &labels);
	if (res < 0) {
		axp_count_frame(row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_MALFORMED);
		return XDP_DROP;
	}
	n = res;
	if (!n) {
		proto = axp_load16(data + 12);
		axp_count_frame(row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_PLAIN);
		goto out;
	}
	if (bpf_xdp_adjust_head(ctx, -(int)(n * 4)))
		goto push_failed;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	for (i = 0; i < AXP_MAX_LABELS; i++) {
		__u8 *p = data + AXP_ETH_HLEN + i * 4;

		if (i >= n)
			break;
		if (p + 4 > end)
			goto push_failed;
		__builtin_memcpy(p, &labels[i], 4);
	}
	axp_count_frame(row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_PUSHED);
out:
	if (data + AXP_ETH_HLEN > end)
		goto push_failed;
	__builtin_memcpy(data, sf->next_hop_mac, 6);
	__builtin_memcpy(data + 6, sf->net_out_mac, 6);
	__builtin_memcpy(data + 12, &proto, sizeof(proto));
	return bpf_redirect(sf->net_out_ifindex, 0);

push_failed:
	axp_count_frame(row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_PUSH_FAILED);
	return XDP_DROP;
}

SEC("xdp")
int axp_xdp_rx(struct xdp_md *ctx)
{
	return axp_xdp_rx_path(ctx);
}

SEC("xdp")
int axp_xdp_tx(struct xdp_md *ctx)
{
	return axp_xdp_tx_path(ctx);
}

/*
 * The two paths as subprograms of their own (BPF-to-BPF calls): each is verified
 * as it is in its one-role program, and neither's register pressure leaks into
 * the other's code. The one-role programs above inline them instead.
 */
static __noinline int axp_xdp_rx_call(struct xdp_md *ctx)
{
	return axp_xdp_rx_path(ctx);
}

static __noinline int axp_xdp_tx_call(struct xdp_md *ctx)
{
	return axp_xdp_tx_path(ctx);
}

SEC("xdp")
int axp_xdp_rx_tx(struct xdp_md *ctx)
{
	if (axp_frame_from_sf((void *)(long)ctx->data, (void *)(long)ctx->data_end))
		return axp_xdp_tx_call(ctx);
	return axp_xdp_rx_call(ctx);
}
