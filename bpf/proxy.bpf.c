// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The in-kernel caching SFC proxy for SR-MPLS (and, with static_mode, the
 * static proxy it is compared against).
 *
 *   axp_xdp_rx   XDP on net_in: pop the stack, cache it, pass (inline) or
 *                redirect to the SF (attached)
 *   axp_tc_meta  TC ingress on net_in, meta mode: XDP metadata -> the
 *                meta_mark_mask bits of skb->mark
 *   axp_tc_tx    TC egress on net_out (inline): look up, push
 *   axp_xdp_tx   XDP on from_sf (attached): frames for the proxy host pass to
 *                its kernel (host.bpf.h); the rest: look up, push, redirect
 *                to net_out; a miss passes to the kernel, which routes it
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
	struct axp_trace_pkt tr = {};
	struct axp_sf *sf = NULL;
	__u8 eth[AXP_ETH_HLEN];
	__u64 h = 0;
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
	/* another VLAN's traffic passes untouched whatever it carries */
	if (f.vlans.n) {
		label = axp_sf_key(f.vid, 0);
		if (!bpf_map_lookup_elem(&axp_labels, &label)) {
			axp_count_frame(row, AXP_CNT_RX_PACKETS, AXP_CNT_RX_VLAN_OTHER);
			return XDP_PASS;
		}
	}
	if (res == AXP_PARSE_NOT_MPLS) {
		axp_count_frame(row, AXP_CNT_RX_PACKETS,
				f.vlans.n ? AXP_CNT_RX_VLAN_OTHER : AXP_CNT_RX_NOT_MPLS);
		return XDP_PASS;
	}
	if (res == AXP_PARSE_RESERVED) {
		axp_count_frame(row, AXP_CNT_RX_PACKETS, AXP_CNT_RX_RESERVED_LABEL);
		return XDP_PASS;
	}
	/*
	 * The top label decides first, on its VLAN: another node's traffic (a
	 * pseudowire, a deep stack) passes untouched whatever it carries.
	 * labels[0] is filled as soon as the deciding entry fits in the frame.
	 */
	if (f.top_off) {
		label = axp_sf_key(f.vid, axp_label_of(entry.labels[0]));
		idx = bpf_map_lookup_elem(&axp_labels, &label);
		if (!idx) {
			axp_count_frame(row, AXP_CNT_RX_PACKETS, AXP_CNT_RX_OTHER_LABEL);
			return XDP_PASS;
		}
		row = *idx;
		/* RFC 3032 §2.4.2: never on with a TTL that would reach 0 here */
		if (axp_ttl_of(entry.labels[0]) <= 1) {
			if (axp_cfg.on_ttl_expired == AXP_TTL_PASS) {
				axp_count_frame(row, AXP_CNT_RX_PACKETS, AXP_CNT_RX_TTL_EXPIRED_PASS);
				return XDP_PASS;
			}
			axp_count_frame(row, AXP_CNT_RX_PACKETS, AXP_CNT_RX_TTL_EXPIRED);
			return XDP_DROP;
		}
	}
	if (res != AXP_PARSE_OK || !idx) {
		axp_count_frame(row, AXP_CNT_RX_PACKETS, axp_parse_counter(res));
		return XDP_DROP;
	}
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
		h = axp_cache_hash(&key);
		axp_meta_reclaim(&key, h, row);
	}

	/* pop: keep the Ethernet header, drop tags and stack in front of the IP packet */
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
		entry.vlans = f.vlans;
		/* once: the cache's and the trace's sampling (meta mode: the reclaim's too) */
		if (axp_cfg.key_mode != AXP_KEY_MODE_META)
			h = axp_cache_hash(&key);
		axp_trace_rx(&tr, &key, h, &entry, ctx);
		res = axp_cache_insert(&key, h, &entry, &tr);
		if (res) {
			axp_count_done(&tr, row, AXP_CNT_RX_PACKETS,
				       res == -2 ? AXP_CNT_RX_KEY_FULL : AXP_CNT_RX_CACHE_ERROR, NULL);
			return XDP_DROP;
		}
		axp_last_note(sf_idx, &entry);
	}
	axp_count_done(&tr, row, AXP_CNT_RX_PACKETS, AXP_CNT_RX_POPPED, NULL);
	/* proxied all the same; the count tells how often such chains come by */
	if (key.flags & AXP_KEYF_EXT_LIMIT)
		axp_count(row, AXP_CNT_RX_KEY_EXT_LIMIT);
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
	__u32 mark, mask = axp_cfg.meta_mark_mask;

	/* only the key's bits: whatever else the mark holds stays for the SF */
	if (meta + sizeof(mark) <= data) {
		__builtin_memcpy(&mark, meta, sizeof(mark));
		skb->mark = (skb->mark & ~mask) | (mark & mask);
	}
	return TC_ACT_OK;
}

/* The TX lookup: fill *key from the bare packet. Returns an enum axp_parse_result. */
static __always_inline int axp_tx_key(const __u8 *data, const __u8 *end, __u32 mark,
				      struct axp_key *key)
{
	if (axp_cfg.static_mode) {
		/* the static proxy pushes onto whatever IP comes back: no key, nothing else to check */
		if (data + AXP_ETH_HLEN + 1 > end ||
		    (data[AXP_ETH_HLEN] >> 4 != 4 && data[AXP_ETH_HLEN] >> 4 != 6))
			return AXP_PARSE_NOT_IP;
		return AXP_PARSE_OK;
	}
	if (axp_cfg.key_mode == AXP_KEY_MODE_META) {
		/* the SF's own bits of the mark are none of the key's business */
		axp_meta_key(key, mark & axp_cfg.meta_mark_mask);
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

/*
 * Find what TX pushes for this packet: the cached entry (caching) or the SF
 * of the TX interface (static). Returns the SF or NULL on a miss.
 */
static __always_inline struct axp_sf *axp_tx_lookup(struct axp_key *key, __u32 ifindex,
						    struct axp_entry *entry, struct axp_trace_pkt *t)
{
	__u32 sf_idx, *idx;
	__u64 dwell, h;
	int timed;

	if (axp_cfg.static_mode) {
		idx = bpf_map_lookup_elem(&axp_tx_sf, &ifindex);
		if (!idx)
			return NULL;
		sf_idx = *idx;
		entry->sf = sf_idx; /* the counter row */
		return bpf_map_lookup_elem(&axp_sfs, &sf_idx);
	}
	h = axp_cache_hash(key);
	axp_trace_tx(t, key, h);
	timed = axp_cache_take(key, h, entry);
	if (timed < 0) {
		axp_trace_take(t, key, entry, 0, 0);
		return NULL;
	}
	if (timed) {
		dwell = axp_now() - entry->rx_ns;
		axp_count_add(entry->sf, AXP_CNT_TX_DWELL_NS, dwell);
		axp_count(entry->sf, AXP_CNT_TX_DWELL_HIST + axp_dwell_bucket(dwell));
	}
	axp_trace_take(t, key, entry, 1, timed ? dwell : 0);
	sf_idx = entry->sf;
	return bpf_map_lookup_elem(&axp_sfs, &sf_idx);
}

SEC("tc")
int axp_tc_tx(struct __sk_buff *skb)
{
	struct axp_entry entry = {};
	struct axp_key key AXP_CACHE_KEY_ALIGN = {};
	struct axp_trace_pkt tr = {};
	const __be32 *labels = NULL;
	__be32 tags[AXP_MAX_VLANS] = {};
	struct axp_sf *sf;
	__u8 *data, *end;
	__u32 n, t, pull, row = AXP_SF_NONE;
	__be16 proto;
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
	if (data + pull > end && !axp_cfg.static_mode &&
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
	sf = axp_tx_lookup(&key, skb->ifindex, &entry, &tr);
	/* the host's own traffic has no entry either: it leaves as it came (on_miss = pass) */
	if (!sf)
		return axp_tx_miss(axp_tx_row(skb->ifindex), &entry, 0, &tr) == AXP_MISS_DROP ? TC_ACT_SHOT
												: TC_ACT_OK;
	row = entry.sf;
	/* one skb, many packets (GRO upstream): one stack cannot be right for all */
	if (skb->gso_segs > 1) {
		axp_count_done(&tr, row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_GSO_DROP, &entry);
		return TC_ACT_SHOT;
	}
	res = axp_tx_stack(&entry, sf, &labels);
	if (res < 0) {
		axp_count_done(&tr, row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_MALFORMED, &entry);
		return TC_ACT_SHOT;
	}
	n = res;
	t = axp_vlans_out(sf, &entry.vlans, tags);
	if (!n && !t) {
		axp_count_done(&tr, row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_PLAIN, &entry);
		return TC_ACT_OK;
	}
	proto = n ? axp_htons(AXP_ETH_P_MPLS_UC) : (__be16)skb->protocol;
	/* one adjust for tags and stack: it needs skb->protocol to still be IP */
	if (t > AXP_MAX_VLANS || bpf_skb_adjust_room(skb, (t + n) * 4, BPF_ADJ_ROOM_MAC, 0) ||
	    (n && bpf_skb_store_bytes(skb, AXP_ETH_HLEN + t * 4, labels, n * 4, 0)))
		goto push_failed;
	/* the Ethernet header and tags are linear after the adjust: plain stores beat helper calls */
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	if (axp_write_tags(data, end, tags, t, proto))
		goto push_failed;
	axp_count_done(&tr, row, AXP_CNT_TX_PACKETS, n ? AXP_CNT_TX_PUSHED : AXP_CNT_TX_PLAIN, &entry);
	return TC_ACT_OK;

push_failed:
	axp_count_done(&tr, row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_PUSH_FAILED, &entry);
	return TC_ACT_SHOT;
}

static __always_inline int axp_xdp_tx_path(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	__u8 *end = (void *)(long)ctx->data_end;
	__be16 proto = axp_htons(AXP_ETH_P_MPLS_UC);
	struct axp_entry entry = {};
	struct axp_key key AXP_CACHE_KEY_ALIGN = {};
	struct axp_trace_pkt tr = {};
	const __be32 *labels = NULL;
	__be32 tags[AXP_MAX_VLANS] = {};
	struct axp_sf *sf;
	__u32 i, n, t = 0, ifindex = ctx->ingress_ifindex, row, reason = 0;
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
	/* the SF talking to the proxy host (neighbour discovery, ...), not to the network */
	if (axp_for_host(data, end)) {
		axp_count_frame(axp_tx_row(ifindex), AXP_CNT_TX_PACKETS, AXP_CNT_TX_HOST);
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
	sf = axp_tx_lookup(&key, ifindex, &entry, &tr);
	if (sf) {
		row = entry.sf;
	} else {
		/*
		 * A miss: drop; or pass to the kernel, which routes (or delivers) it as
		 * it would without the proxy; or the SF's last stack (on_miss = last).
		 */
		row = axp_tx_row(ifindex);
		res = axp_tx_miss(row, &entry, 1, &tr);
		if (res != AXP_MISS_LAST)
			return res == AXP_MISS_DROP ? XDP_DROP : XDP_PASS;
		sf = bpf_map_lookup_elem(&axp_sfs, &row);
		if (!sf) {
			axp_count_done(&tr, row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_MISS_PASS, NULL);
			return XDP_PASS;
		}
		reason = AXP_CNT_TX_MISS_LAST;
	}
	res = axp_tx_stack(&entry, sf, &labels);
	if (res < 0) {
		axp_count_done(&tr, row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_MALFORMED, &entry);
		return XDP_DROP;
	}
	n = res;
	t = axp_vlans_out(sf, &entry.vlans, tags);
	if (!n)
		proto = axp_load16(data + 12); /* plain IP, behind the tags if there are any */
	if (t > AXP_MAX_VLANS)
		goto push_failed;
	if (n + t) {
		if (bpf_xdp_adjust_head(ctx, -(int)((n + t) * 4)))
			goto push_failed;
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		for (i = 0; i < AXP_MAX_LABELS; i++) {
			__u8 *p = data + AXP_ETH_HLEN + (t + i) * 4;

			if (i >= n)
				break;
			if (p + 4 > end)
				goto push_failed;
			__builtin_memcpy(p, &labels[i], 4);
		}
	}
	axp_count_done(&tr, row, AXP_CNT_TX_PACKETS, reason ? reason : n ? AXP_CNT_TX_PUSHED : AXP_CNT_TX_PLAIN,
		       &entry);
	if (data + AXP_ETH_HLEN > end)
		goto push_failed;
	__builtin_memcpy(data, sf->next_hop_mac, 6);
	__builtin_memcpy(data + 6, sf->net_out_mac, 6);
	if (axp_write_tags(data, end, tags, t, proto))
		goto push_failed;
	return bpf_redirect(sf->net_out_ifindex, 0);

push_failed:
	axp_count_done(&tr, row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_PUSH_FAILED, &entry);
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
