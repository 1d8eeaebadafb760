/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* BPF-only pieces of the proxy: maps, counters, configuration, hook shims. */
#ifndef AXP_PROXY_BPF_H
#define AXP_PROXY_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "parse.shared.h"

/* Set by the loader before load (libbpf .rodata). */
const volatile struct axp_config axp_cfg = {};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* resized from cache_entries before load */
	__type(key, struct axp_key);
	__type(value, struct axp_entry);
} axp_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AXP_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} axp_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AXP_MAX_SFS);
	__type(key, __u32);
	__type(value, struct axp_sf);
} axp_sfs SEC(".maps");

/* top label -> SF index */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXP_MAX_SFS);
	__type(key, __u32);
	__type(value, __u32);
} axp_labels SEC(".maps");

/* TX interface (from_sf when attached, net_out when inline) -> SF index */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXP_MAX_SFS);
	__type(key, __u32);
	__type(value, __u32);
} axp_tx_sf SEC(".maps");

/* meta mode: per-CPU sequence number for artificial keys */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} axp_seq SEC(".maps");

static __always_inline void axp_count_add(__u32 slot, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&axp_counters, &slot);

	if (c)
		*c += n;
}

static __always_inline void axp_count(__u32 slot)
{
	axp_count_add(slot, 1);
}

/* Artificial key: (cpu + 1) << 24 | per-CPU sequence; never 0, which means "no key". */
static __always_inline __u32 axp_next_meta_key(void)
{
	__u32 zero = 0, *seq = bpf_map_lookup_elem(&axp_seq, &zero);
	__u32 v;

	if (!seq)
		return 0;
	v = ++*seq;
	return ((bpf_get_smp_processor_id() + 1) << 24) | (v & 0xffffff);
}

static __always_inline void axp_meta_key(struct axp_key *key, __u32 mark)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->kind = AXP_KEY_META;
	key->ident = mark;
}

/*
 * Take the entry for key out of the cache (lookup + delete) into *out.
 * Returns 0 on a hit.
 */
static __always_inline int axp_cache_take(struct axp_key *key, struct axp_entry *out)
{
	struct axp_entry *e = bpf_map_lookup_elem(&axp_cache, key);

	if (!e)
		return -1;
	__builtin_memcpy(out, e, sizeof(*out));
	bpf_map_delete_elem(&axp_cache, key);
	return 0;
}

/*
 * The stack TX pushes: the cached one without its outermost label, or the
 * SF's configured one in static mode. Sets *labels and returns how many
 * labels to push, or -1 for an entry that cannot be right.
 */
static __always_inline int axp_tx_stack(struct axp_entry *e, struct axp_sf *sf,
					const __be32 **labels)
{
	int n;

	if (axp_cfg.static_mode) {
		n = sf->static_depth;
		if (n > AXP_MAX_LABELS)
			return -1;
		*labels = sf->static_stack;
		return n;
	}
	n = e->depth;
	if (n < 1 || n > AXP_MAX_LABELS)
		return -1;
	*labels = &e->labels[1];
	return n - 1;
}

#endif /* AXP_PROXY_BPF_H */
