// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The testbed's own programs, outside the proxy under test:
 *
 *   tb_tc_classify  TC egress on the sender: the SR-MPLS classifier. Pushes
 *                   one of n configured stacks onto every IP packet, rotating
 *                   per packet, so one flow carries different stacks.
 *   tb_xdp_decap    XDP on the receiver: pops whatever VLAN tags and stack
 *                   arrived, counts packets by depth (the packet
 *                   generator's frames apart too), optionally records
 *                   key -> stack and tags.
 *   tb_xdp_pass     XDP_PASS on veths that receive XDP_REDIRECTed frames:
 *                   a veth delivers those only while its peer runs NAPI.
 *
 * Keys come from parse.shared.h, the same code the proxy uses, so a record
 * on the sender and one on the receiver match exactly when the proxy kept
 * the packet's immutable headers.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "parse.shared.h"
#include "testbed.shared.h"
#include "gen.shared.h"

_Static_assert(TB_HIST_NOT_IP == AXP_MAX_LABELS + 1, "depth slots come first");
_Static_assert(TB_HIST_SLOTS == AXP_MAX_LABELS + 3, "two extra histogram slots");
_Static_assert(TB_GEN_SLOTS == AXP_MAX_LABELS + 1, "one slot per depth");

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TB_CFG_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} tb_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AXP_MAX_STACKS);
	__type(key, __u32);
	__type(value, struct axp_entry); /* labels[] + depth */
} tb_stacks SEC(".maps");

/* one global packet counter: the rotation is per packet, whatever the CPU */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tb_rr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TB_RECORD_ENTRIES);
	__type(key, struct axp_key);
	__type(value, struct axp_entry);
} tb_sent SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TB_RECORD_ENTRIES);
	__type(key, struct axp_key);
	__type(value, struct axp_entry);
} tb_received SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TB_HIST_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} tb_depths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TB_GEN_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} tb_gen_depths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TB_STAT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} tb_stats SEC(".maps");

static __always_inline void tb_inc(void *map, __u32 slot)
{
	__u64 *c = bpf_map_lookup_elem(map, &slot);

	if (c)
		*c += 1;
}

static __always_inline __u32 tb_cfg_get(__u32 slot)
{
	__u32 *v = bpf_map_lookup_elem(&tb_cfg, &slot);

	return v ? *v : 0;
}

/* Record key(l3) -> stack. Best effort: an unparsable packet is simply not recorded. */
static __always_inline void tb_record(void *map, const __u8 *l3, const __u8 *end,
				      const struct axp_entry *stack, __u32 tag)
{
	struct axp_entry e = {};
	struct axp_key key = {};

	if (axp_derive_key(l3, end, &key) != AXP_PARSE_OK)
		return;
	if (stack)
		__builtin_memcpy(&e, stack, sizeof(e));
	/* sent records: which stack of the table (tag, 0 for none); another one for the key: mixed */
	e.sf = tag;
	if (tag) {
		const struct axp_entry *old = bpf_map_lookup_elem(map, &key);

		if (old && old->sf != tag)
			e.sf = TB_REC_MIXED;
	}
	e.rx_ns = bpf_ktime_get_ns();
	bpf_map_update_elem(map, &key, &e, BPF_ANY);
}

/*
 * Count the frame in tb_gen_depths when it is one of the packet generator's:
 * IPv4 without options, UDP, first fragment, to GEN_UDP_DPORT (bench/gen.py).
 */
static __always_inline void tb_count_gen(const __u8 *data, const __u8 *end, __u32 l3_off, __u32 depth)
{
	/* 256 bounds every l3_off the parser gives: tags, reserved entries and the deepest stack */
	const __u8 *ip = axp_rebase(data, data + l3_off, 256);

	if (!ip || ip + 20 + 8 > end)
		return;
	if (ip[0] != 0x45 || ip[9] != 17 || (axp_load16(ip + 6) & axp_htons(0x1fff)))
		return;
	if (axp_load16(ip + 20 + 2) == axp_htons(GEN_UDP_DPORT))
		tb_inc(&tb_gen_depths, depth);
}

/* Send on out of the interface in a tb_cfg slot, or carry on where we are (slot 0). */
static __always_inline int tb_out(__u32 slot)
{
	__u32 ifindex = tb_cfg_get(slot);

	return ifindex ? bpf_redirect(ifindex, 0) : TC_ACT_OK;
}

SEC("tc")
int tb_tc_classify(struct __sk_buff *skb)
{
	__be16 mpls = axp_htons(AXP_ETH_P_MPLS_UC);
	const struct axp_entry *stack = NULL;
	__u32 zero = 0, n, idx = 0, depth, len;
	__u8 *data, *end;
	__u64 *rr;

	tb_inc(&tb_stats, TB_STAT_TC_SEEN);
	if (skb->protocol != axp_htons(AXP_ETH_P_IP) && skb->protocol != axp_htons(AXP_ETH_P_IPV6)) {
		tb_inc(&tb_stats, TB_STAT_TC_NOT_IP);
		return tb_out(TB_CFG_FWD_IFINDEX);
	}
	n = tb_cfg_get(TB_CFG_N_STACKS);
	if (n > AXP_MAX_STACKS)
		n = AXP_MAX_STACKS;
	if (n) {
		rr = bpf_map_lookup_elem(&tb_rr, &zero);
		if (!rr)
			return tb_out(TB_CFG_FWD_IFINDEX);
		idx = __sync_fetch_and_add(rr, 1) % n;
		stack = bpf_map_lookup_elem(&tb_stacks, &idx);
	}
	depth = stack ? stack->depth : 0;
	/* a merged skb would need one stack per segment, and MPLS GSO is not built in */
	if (skb->gso_segs > 1) {
		tb_inc(&tb_stats, TB_STAT_TC_GSO);
		depth = 0;
	}
	if (tb_cfg_get(TB_CFG_RECORD)) {
		/* the key reads up to AXP_KEY_PULL_LEN bytes: make them linear */
		bpf_skb_pull_data(skb, skb->len < AXP_KEY_PULL_LEN ? skb->len : AXP_KEY_PULL_LEN);
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		if (data + AXP_ETH_HLEN <= end)
			tb_record(&tb_sent, data + AXP_ETH_HLEN, end, depth ? stack : NULL,
				  depth ? idx % TB_REC_MIXED + 1 : TB_REC_MIXED - 1);
	}
	if (!depth || depth > AXP_MAX_LABELS) {
		tb_inc(&tb_stats, TB_STAT_TC_PLAIN);
		return tb_out(TB_CFG_FWD_IFINDEX);
	}
	len = depth * 4;
	/* one adjust for the whole stack: MAC mode wants skb->protocol still IP */
	if (bpf_skb_adjust_room(skb, len, BPF_ADJ_ROOM_MAC, 0) ||
	    bpf_skb_store_bytes(skb, AXP_ETH_HLEN, stack->labels, len, 0) ||
	    bpf_skb_store_bytes(skb, 12, &mpls, sizeof(mpls), 0)) {
		tb_inc(&tb_stats, TB_STAT_TC_PUSH_FAILED);
		return TC_ACT_SHOT;
	}
	tb_inc(&tb_stats, TB_STAT_TC_PUSHED);
	return tb_out(TB_CFG_FWD_IFINDEX);
}

/* The sender's return path: from the wire side back towards the stack. */
SEC("tc")
int tb_tc_return(struct __sk_buff *skb)
{
	return tb_out(TB_CFG_BACK_IFINDEX);
}

SEC("xdp")
int tb_xdp_decap(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	__u8 *end = (void *)(long)ctx->data_end;
	__u32 record = tb_cfg_get(TB_CFG_RECORD);
	struct axp_entry e = {};
	struct axp_frame f = {};
	struct axp_key key = {};
	__u8 eth[AXP_ETH_HLEN];
	__u16 proto;
	int res;

	if (data + AXP_ETH_HLEN > end) {
		tb_inc(&tb_depths, TB_HIST_BAD);
		return XDP_PASS;
	}
	proto = axp_ntohs(axp_load16(data + 12));
	if (proto == AXP_ETH_P_IP || proto == AXP_ETH_P_IPV6) {
		tb_inc(&tb_depths, 0);
		if (proto == AXP_ETH_P_IP)
			tb_count_gen(data, end, AXP_ETH_HLEN, 0);
		/* depth 0 recorded too: "arrived as plain IP" must be visible */
		if (record)
			tb_record(&tb_received, data + AXP_ETH_HLEN, end, NULL, 0);
		return XDP_PASS;
	}
	/* the proxy's parser: tags in front and explicit null or ELI + EL on top go too */
	res = axp_parse_mpls_frame(data, end, e.labels, &f, record ? &key : NULL);
	if (res == AXP_PARSE_NOT_MPLS) {
		tb_inc(&tb_depths, TB_HIST_NOT_IP);
		return XDP_PASS;
	}
	if (res != AXP_PARSE_OK || f.depth < 1 || f.depth > AXP_MAX_LABELS) {
		/* passed unchanged: this kernel has no MPLS stack and drops it, visibly counted here */
		tb_inc(&tb_depths, TB_HIST_BAD);
		return XDP_PASS;
	}
	tb_inc(&tb_depths, f.depth);
	if (f.l3_proto == AXP_ETH_P_IP)
		tb_count_gen(data, end, f.l3_off, f.depth);
	if (record) {
		e.depth = f.depth;
		e.vlans = f.vlans;
		e.rx_ns = bpf_ktime_get_ns();
		bpf_map_update_elem(&tb_received, &key, &e, BPF_ANY);
	}

	/* pop: same MACs, IP ethertype, tags and stack gone */
	__builtin_memcpy(eth, data, 12);
	*(__be16 *)&eth[12] = axp_htons(f.l3_proto);
	if (bpf_xdp_adjust_head(ctx, f.l3_off - AXP_ETH_HLEN)) {
		tb_inc(&tb_depths, TB_HIST_BAD);
		return XDP_DROP;
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + AXP_ETH_HLEN > end)
		return XDP_DROP;
	__builtin_memcpy(data, eth, AXP_ETH_HLEN);
	return XDP_PASS;
}

SEC("xdp")
int tb_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
