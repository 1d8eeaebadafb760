/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* BPF-only pieces of the proxy: maps, counters, configuration, hook shims. */
#ifndef AXP_PROXY_BPF_H
#define AXP_PROXY_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "parse.shared.h"
#include "cache.shared.h"

/* Set by the loader before load (libbpf .rodata). */
const volatile struct axp_config axp_cfg = {};

/*
 * The cache (cache.shared.h): one set per element, each with its own lock word.
 * Mmapable only for where that puts the values: from the start of a page, so
 * every set starts on a cache line and its lines are the ones cache.shared.h
 * lays out.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 8192); /* resized to axp_cfg.cache_sets before load */
	__type(key, __u32);
	__type(value, struct axp_cache_set);
} axp_cache SEC(".maps");

/*
 * Added to bpf_ktime_get_ns() wherever the proxy reads the clock: 0 in service;
 * tests move the proxy's clock forward to age the cache without waiting.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} axp_clock SEC(".maps");

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

static __always_inline __u64 axp_now(void)
{
	__u32 zero = 0;
	__u64 *skew = bpf_map_lookup_elem(&axp_clock, &zero);

	return bpf_ktime_get_ns() + (skew ? *skew : 0);
}

/*
 * A set's lock: its lock and next_seq fields as one 64-bit word (the BPF
 * instruction set has no narrower compare-and-swap before v3), taken by a
 * compare-and-swap and released by an exchange, both inline in the JITed
 * program. bpf_spin_lock costs two helper calls and an interrupt save and
 * restore on each side of every packet: in place under load, RX + TX cost 70
 * to 150 ns more with it than with these atomics (docs/benchmarks.md).
 * Interrupts stay on, which is safe: only these programs take the lock, and
 * they run with bottom halves off (XDP in NAPI, TC under rcu_read_lock_bh,
 * test runs alike), so no holder is interrupted by another on its own CPU;
 * and no CPU waits forever. One that finds the lock held tries again in a
 * bpf_loop, at most AXP_CACHE_SPIN_MAX times (a holder keeps it for well under
 * a microsecond), then gives up: the caller counts and drops the packet (RX)
 * or takes it as a miss (TX). The C cache takes the same lock field with C
 * atomics (native/axp_cache.c).
 */
#define AXP_CACHE_SPIN_MAX (1 << 16)
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define AXP_CACHE_LOCK_BITS 0x00000000ffffffffull /* the lock field in the word */
#define AXP_CACHE_LOCK_HELD 0x0000000000000001ull
#else
#define AXP_CACHE_LOCK_BITS 0xffffffff00000000ull
#define AXP_CACHE_LOCK_HELD 0x0000000100000000ull
#endif

static __always_inline axp_cache_u64 *axp_cache_lock_word(struct axp_cache_set *s)
{
	return (axp_cache_u64 *)&s->lock;
}

static __always_inline int axp_cache_try_lock(struct axp_cache_set *s)
{
	__u64 w = *(volatile axp_cache_u64 *)axp_cache_lock_word(s);

	/* read first: a compare-and-swap on a held lock would pull its line from the holder */
	if (w & AXP_CACHE_LOCK_BITS)
		return 0;
	return __sync_val_compare_and_swap(axp_cache_lock_word(s), w, w | AXP_CACHE_LOCK_HELD) == w;
}

struct axp_cache_spin {
	struct axp_cache_set *s;
	__u64 locked;
};

static long axp_cache_spin_once(__u64 i, void *ctx)
{
	struct axp_cache_spin *sp = ctx;

	if (!axp_cache_try_lock(sp->s))
		return 0;
	sp->locked = 1;
	return 1;
}

/*
 * The lock was held: try again, a bounded number of times; 1 when locked.
 * Not inlined: the programs stay as the compiler laid them out before there
 * was a loop in them.
 */
static __noinline int axp_cache_lock_slow(struct axp_cache_set *s)
{
	struct axp_cache_spin sp = { .s = s };

	if (!s)
		return 0;
	bpf_loop(AXP_CACHE_SPIN_MAX, axp_cache_spin_once, &sp, 0);
	return sp.locked;
}

/* Returns 1 with the set locked, 0 after AXP_CACHE_SPIN_MAX tries. */
static __always_inline int axp_cache_lock(struct axp_cache_set *s)
{
	return axp_cache_try_lock(s) || axp_cache_lock_slow(s);
}

static __always_inline void axp_cache_unlock(struct axp_cache_set *s)
{
	__u64 w = *axp_cache_lock_word(s) & ~AXP_CACHE_LOCK_BITS; /* next_seq as the holder left it */

	__sync_lock_test_and_set(axp_cache_lock_word(s), w); /* an exchange: every store above is seen first */
}

/* The set of a key, by its hash; NULL only for a loader that sized the map wrong. */
static __always_inline struct axp_cache_set *axp_cache_set_of(__u64 h)
{
	__u32 idx = axp_cache_set_index(h, axp_cfg.cache_sets);

	return bpf_map_lookup_elem(&axp_cache, &idx);
}

/*
 * Keep a struct in memory. A key or stack that only ever reaches the cache
 * through inlined functions is split by the compiler into one variable per
 * field (scalar replacement), which then rebuilds it on every path of the
 * parser, hundreds of instructions: the TX programs were a third larger, and
 * in place under load RX + TX cost 20 to 80 ns more. An address the compiler
 * must assume is read keeps the struct whole (in every path of the calling
 * program, the static proxy's too); the cache reads it as words anyway.
 */
#define axp_cache_in_memory(p) __asm__ __volatile__("" : : "r"(p) : "memory")

/*
 * Cache the packet's stack (e->rx_ns: its RX time) and count what happened.
 * Returns 0 when cached, -1 when the packet is to be dropped (counted).
 */
static __always_inline int axp_cache_insert(const struct axp_key *key, const struct axp_entry *e)
{
	__u64 h, max_dwell_ns = axp_cfg.max_dwell_ns;
	__u32 max_per_key = axp_cfg.max_per_key;
	struct axp_cache_outcome o;
	struct axp_cache_set *s;

	axp_cache_in_memory(key);
	axp_cache_in_memory(e);
	h = axp_cache_hash(key);
	s = axp_cache_set_of(h);
	if (!s || !axp_cache_lock(s)) {
		axp_count(AXP_CNT_RX_CACHE_ERROR);
		return -1;
	}
	axp_cache_set_insert(s, key, axp_cache_tag(h), e, max_dwell_ns, max_per_key, &o);
	axp_cache_unlock(s);
	if (o.expired)
		axp_count_add(AXP_CNT_EXPIRED, o.expired);
	if (o.evicted)
		axp_count_add(AXP_CNT_EVICTIONS, o.evicted);
	if (o.result == AXP_CACHE_KEY_FULL) {
		axp_count(AXP_CNT_RX_KEY_FULL);
		return -1;
	}
	axp_count(AXP_CNT_CACHE_INSERTS);
	return 0;
}

/* Take the stack of the key's oldest run into *out. Returns 0 on a hit. */
static __always_inline int axp_cache_take(const struct axp_key *key, struct axp_entry *out)
{
	struct axp_cache_outcome o;
	struct axp_cache_set *s;
	__u64 h;

	axp_cache_in_memory(key);
	axp_cache_in_memory(out);
	h = axp_cache_hash(key);
	s = axp_cache_set_of(h);
	if (!s || !axp_cache_lock(s))
		return -1;
	axp_cache_set_take(s, key, axp_cache_tag(h), out, &o);
	axp_cache_unlock(s);
	if (o.result != AXP_CACHE_HIT)
		return -1;
	axp_count(AXP_CNT_CACHE_TAKES);
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
