/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* BPF-only pieces of the proxy: maps, counters, configuration, hook shims. */
#ifndef AXP_PROXY_BPF_H
#define AXP_PROXY_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "parse.shared.h"
#include "push.shared.h"
#include "cache.shared.h"
#include "host.bpf.h"
#include "counters.bpf.h"
#include "trace.bpf.h"

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
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AXP_MAX_SFS);
	__type(key, __u32);
	__type(value, struct axp_sf);
} axp_sfs SEC(".maps");

/* axp_sf_key(VID, top label) -> SF index; axp_sf_key(VID, 0): some SF is served on that VLAN */
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

/*
 * on_miss = last: the stack RX most recently sent to each SF (NAT-tolerant
 * fallback), under a lock so TX never reads half of one stack and half of
 * another. RX writes it only when the stack changes: a static chain costs a
 * read of a shared line per packet, no write.
 */
struct axp_last_stack {
	struct bpf_spin_lock lock;
	__u32 depth; /* 0: no stack went to the SF yet */
	__be32 labels[AXP_MAX_LABELS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AXP_MAX_SFS);
	__type(key, __u32);
	__type(value, struct axp_last_stack);
} axp_last SEC(".maps");

/* meta mode: per-CPU sequence number for artificial keys */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} axp_seq SEC(".maps");

/*
 * axp_count_frame for a frame whose packet may be traced: its verdict (the
 * reason) is reported too, with e, the stack it leaves with (TX), if any.
 */
static __always_inline void axp_count_done(struct axp_trace_pkt *t, __u32 sf, __u32 seen, __u32 reason,
					   const struct axp_entry *e)
{
	axp_count_frame(sf, seen, reason);
	axp_trace_done(t, seen == AXP_CNT_RX_PACKETS ? AXP_TRACE_RX_DONE : AXP_TRACE_TX_DONE, reason, sf, e);
}

/*
 * Artificial key, placed in the meta_mark_mask bits of the mark:
 * ((cpu + 1) << meta_seq_bits | per-CPU sequence) << meta_shift. The loader
 * leaves enough bits above the sequence for every possible CPU, so the key is
 * never 0, which means "no key".
 */
static __always_inline __u32 axp_next_meta_key(void)
{
	__u32 zero = 0, *seq = bpf_map_lookup_elem(&axp_seq, &zero);
	__u32 bits = axp_cfg.meta_seq_bits & 31, v;

	if (!seq)
		return 0;
	v = ++*seq & ((1u << bits) - 1);
	return (((bpf_get_smp_processor_id() + 1) << bits) | v) << (axp_cfg.meta_shift & 31);
}

static __always_inline void axp_meta_key(struct axp_key *key, __u32 mark)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->kind = AXP_KEY_META;
	key->ident = mark;
}

static __always_inline __u64 axp_clock_skew(void)
{
	__u32 zero = 0;
	__u64 *skew = bpf_map_lookup_elem(&axp_clock, &zero);

	return skew ? *skew : 0;
}

/*
 * CLOCK_MONOTONIC: for the SF's dwell time, read only for the packets it is
 * measured for (axp_cache_timed), since a read costs about 40 ns here
 * (docs/benchmarks.md, "The cache's cost").
 */
static __always_inline __u64 axp_now(void)
{
	return bpf_ktime_get_ns() + axp_clock_skew();
}

/*
 * The cache's clock, which runs are aged by: jiffies in ns, which the
 * verifier inlines to one load. It moves once a tick and may lag behind by
 * more than one, so the loader gives max_dwell_ns a few ticks of slack
 * (kernel.py, config_struct).
 */
static __always_inline __u64 axp_cache_now(void)
{
	return bpf_jiffies64() * axp_cfg.tick_ns + axp_clock_skew();
}

/*
 * A set's lock: its lock and next_seq fields as one 64-bit word (the BPF
 * instruction set has no narrower compare-and-swap before v3), taken by a
 * compare-and-swap and released by an exchange, both inline in the JITed
 * program, where bpf_spin_lock costs two helper calls and an interrupt save
 * and restore on each side of every packet (what that measured here:
 * docs/benchmarks.md, "The cache's cost"). Interrupts stay on, which is
 * safe: only these programs take the lock, and they run with bottom halves
 * off (XDP in NAPI, TC under rcu_read_lock_bh, test runs alike), so no holder
 * is interrupted by another on its own CPU; and no CPU waits forever. One that
 * finds the lock held tries again in a bpf_loop, at most AXP_CACHE_SPIN_MAX
 * times (a holder keeps it for well under a microsecond), then gives up: the
 * caller drops the packet, counted as rx_cache_error (RX), or takes it as a
 * miss (TX). The C cache takes the same lock field with C atomics
 * (native/axp_cache.c).
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
 * parser, hundreds of instructions: the TX programs were a third larger
 * (docs/benchmarks.md, "The cache's cost"). An address the compiler must
 * assume is read keeps the struct whole (in every path of the calling
 * program, the static proxy's too); the cache reads it as words anyway.
 */
#define axp_cache_in_memory(p) __asm__ __volatile__("" : : "r"(p) : "memory")

/*
 * Cache the packet's stack (h: its key's axp_cache_hash), count what the cache
 * did and trace it (t); e->rx_ns is set here: CLOCK_MONOTONIC for a packet
 * whose dwell time is measured, else 0. Returns 0 when cached; the packet is
 * to be dropped on -1 (no set: a loader that sized the map wrong; or its lock
 * still held after AXP_CACHE_SPIN_MAX tries) and -2 (max_per_key, or its set
 * full of its key).
 */
static __always_inline int axp_cache_insert(const struct axp_key *key, __u64 h, struct axp_entry *e,
					    struct axp_trace_pkt *t)
{
	__u64 max_dwell_ns = axp_cfg.max_dwell_ns;
	__u32 max_per_key = axp_cfg.max_per_key;
	struct axp_cache_outcome o;
	struct axp_cache_set *s;

	axp_cache_in_memory(key);
	axp_cache_in_memory(e);
	e->rx_ns = axp_cache_timed(h, axp_cfg.dwell_sample_mask) ? axp_now() : 0;
	s = axp_cache_set_of(h);
	if (!s || !axp_cache_lock(s)) {
		axp_trace_insert(t, AXP_CACHE_MISS, 0, 0);
		return -1;
	}
	axp_cache_set_insert(s, key, axp_cache_tag(h), e, axp_cache_now(), max_dwell_ns, max_per_key, &o);
	axp_cache_unlock(s);
	axp_trace_insert(t, o.result, o.expired, o.evicted);
	/* the runs freed or pushed out are counted in the row of the SF whose insert did it */
	if (o.expired)
		axp_count_add(e->sf, AXP_CNT_EXPIRED, o.expired);
	if (o.evicted)
		axp_count_add(e->sf, AXP_CNT_EVICTIONS, o.evicted);
	if (o.result == AXP_CACHE_KEY_FULL)
		return -2;
	axp_count(e->sf, AXP_CNT_CACHE_INSERTS);
	return 0;
}

/*
 * Take the stack of the key's oldest run into *out (h: the key's
 * axp_cache_hash). Returns -1 on a miss, on a hit 1 when the packet's dwell
 * time is measured (out->rx_ns is then precise), else 0.
 */
static __always_inline int axp_cache_take(const struct axp_key *key, __u64 h, struct axp_entry *out)
{
	struct axp_cache_outcome o;
	struct axp_cache_set *s;

	axp_cache_in_memory(key);
	axp_cache_in_memory(out);
	s = axp_cache_set_of(h);
	if (!s || !axp_cache_lock(s))
		return -1;
	axp_cache_set_take(s, key, axp_cache_tag(h), out, &o);
	axp_cache_unlock(s);
	if (o.result != AXP_CACHE_HIT)
		return -1;
	axp_count(out->sf, AXP_CNT_CACHE_TAKES);
	return axp_cache_timed(h, axp_cfg.dwell_sample_mask);
}

/*
 * Meta mode, before the insert (h: the key's hash, which the insert uses too):
 * a run the cache still holds under this new key
 * is stale, since a CPU hands out a key again only after 2^meta_seq_bits
 * packets. Its packet is presumed lost (counted expired, in the row of sf), so
 * a narrow mark field cannot give a new packet an old packet's stack.
 */
static __always_inline void axp_meta_reclaim(const struct axp_key *key, __u64 h, __u32 sf)
{
	struct axp_cache_set *s = axp_cache_set_of(h);
	struct axp_cache_outcome o;
	struct axp_entry old;

	if (!s || !axp_cache_lock(s))
		return; /* the insert that follows finds the lock held too, and counts */
	axp_cache_set_take(s, key, axp_cache_tag(h), &old, &o);
	axp_cache_unlock(s);
	if (o.result == AXP_CACHE_HIT)
		axp_count(sf, AXP_CNT_EXPIRED);
}

/* on_miss = last, at RX: e is the stack just sent to SF sf; keep it if it differs from the last. */
static __always_inline void axp_last_note(__u32 sf, const struct axp_entry *e)
{
	struct axp_last_stack *l;
	__u32 i, same;

	if (axp_cfg.on_miss != AXP_MISS_LAST)
		return;
	l = bpf_map_lookup_elem(&axp_last, &sf);
	if (!l)
		return;
	/* read without the lock: a torn read only makes a needless write */
	same = l->depth == e->depth;
#pragma unroll
	for (i = 0; i < AXP_MAX_LABELS; i++)
		same &= l->labels[i] == e->labels[i];
	if (same)
		return;
	bpf_spin_lock(&l->lock);
	l->depth = e->depth;
	__builtin_memcpy(l->labels, e->labels, sizeof(l->labels));
	bpf_spin_unlock(&l->lock);
}

/* on_miss = last, at TX: the last stack sent to SF sf into *e. Returns 0, or -1 while there is none. */
static __always_inline int axp_last_take(__u32 sf, struct axp_entry *e)
{
	struct axp_last_stack *l = bpf_map_lookup_elem(&axp_last, &sf);

	if (!l)
		return -1;
	bpf_spin_lock(&l->lock);
	e->depth = l->depth;
	__builtin_memcpy(e->labels, l->labels, sizeof(e->labels));
	bpf_spin_unlock(&l->lock);
	e->sf = sf;
	e->rx_ns = 0;
	return e->depth ? 0 : -1;
}

/*
 * A TX frame without a cache entry, from the SF of counter row `row` (its TX
 * interface's). Returns AXP_MISS_DROP or AXP_MISS_PASS, the frame counted
 * (tx_miss_drop, tx_miss_pass), or AXP_MISS_LAST with the SF's last stack in
 * *e, to be pushed and counted by the caller. With may_last 0 (TC egress,
 * where the host's own traffic has no entry either) last acts as pass, and so
 * it does while no stack went to the SF yet.
 */
static __always_inline int axp_tx_miss(__u32 row, struct axp_entry *e, int may_last,
				       struct axp_trace_pkt *t)
{
	if (axp_cfg.on_miss == AXP_MISS_DROP) {
		axp_count_done(t, row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_MISS_DROP, NULL);
		return AXP_MISS_DROP;
	}
	if (axp_cfg.on_miss == AXP_MISS_LAST && may_last && row < AXP_MAX_SFS && !axp_last_take(row, e))
		return AXP_MISS_LAST;
	axp_count_done(t, row, AXP_CNT_TX_PACKETS, AXP_CNT_TX_MISS_PASS, NULL);
	return AXP_MISS_PASS;
}

/*
 * The stack TX pushes: the cached one without its outermost label (the one
 * exposed on top with its TTL as ttl_model says), or the SF's configured one
 * in static mode. Sets *labels and returns how many labels to push, or -1 for
 * an entry that cannot be right.
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
	if (axp_cfg.ttl_model == AXP_TTL_UNIFORM && n > 1)
		axp_ttl_uniform(e);
	*labels = &e->labels[1];
	return n - 1;
}

/*
 * After the MACs of a frame TX grew in front: the t VLAN tags (axp_vlans_out)
 * at offset 12, then the ethertype. Returns -1 when the frame is shorter than
 * that, which a successful head or room adjustment rules out.
 */
static __always_inline int axp_write_tags(__u8 *data, const __u8 *end, const __be32 *tags, __u32 t,
					  __be16 type)
{
	__u8 *p;
	__u32 i;

	if (t > AXP_MAX_VLANS)
		return -1;
	for (i = 0; i < AXP_MAX_VLANS; i++) {
		if (i >= t)
			break;
		p = data + 12 + 4 * i;
		if (p + 4 > end)
			return -1;
		__builtin_memcpy(p, &tags[i], 4);
	}
	p = data + 12 + 4 * t;
	if (p + 2 > end)
		return -1;
	__builtin_memcpy(p, &type, sizeof(type));
	return 0;
}

#endif /* AXP_PROXY_BPF_H */
