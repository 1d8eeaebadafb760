// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Floors for per-packet cost figures: the cheapest XDP program and one that
 * does exactly one LRU-hash update with the proxy's key and value sizes.
 * Benchmarks quote the proxy's costs next to these, measured in the same run.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "proxy.shared.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct axp_key);
	__type(value, struct axp_entry);
} floor_cache SEC(".maps");

SEC("xdp")
int floor_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int floor_lru_update(struct xdp_md *ctx)
{
	struct axp_entry entry = {};
	struct axp_key key = {};

	key.ident = (__u32)bpf_ktime_get_ns(); /* a fresh key each run, like a new packet */
	bpf_map_update_elem(&floor_cache, &key, &entry, BPF_ANY);
	return XDP_PASS;
}
