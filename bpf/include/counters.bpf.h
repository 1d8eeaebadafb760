/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The proxy's counters map and how a program counts in it: proxy.bpf.c's
 * programs, and redirect.bpf.c's, which the loader gives the proxy's map
 * (bpf_map__reuse_fd) before load. The slots are enum axp_counter
 * (proxy.shared.h).
 */
#ifndef AXP_COUNTERS_BPF_H
#define AXP_COUNTERS_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "proxy.shared.h"

/* AXP_CNT_ROWS rows of AXP_CNT_MAX slots, row = SF index or AXP_SF_NONE */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AXP_CNT_ROWS * AXP_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} axp_counters SEC(".maps");

/* Add n to counter slot of SF sf's row (any sf out of range: the AXP_SF_NONE row). */
static __always_inline void axp_count_add(__u32 sf, __u32 slot, __u64 n)
{
	__u32 i = (sf < AXP_MAX_SFS ? sf : AXP_SF_NONE) * AXP_CNT_MAX + slot;
	__u64 *c = bpf_map_lookup_elem(&axp_counters, &i);

	if (c)
		*c += n;
}

static __always_inline void axp_count(__u32 sf, __u32 slot)
{
	axp_count_add(sf, slot, 1);
}

/* One frame seen in a direction (AXP_CNT_RX_PACKETS or AXP_CNT_TX_PACKETS) and its reason. */
static __always_inline void axp_count_frame(__u32 sf, __u32 seen, __u32 reason)
{
	axp_count(sf, seen);
	axp_count(sf, reason);
}

#endif
