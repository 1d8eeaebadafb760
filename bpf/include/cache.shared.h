/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The cache of label stacks, written once: the BPF programs run it over a
 * BPF_MAP_TYPE_ARRAY of sets (proxy.bpf.h), the native extension over memory
 * of its own (native/axp_cache.c), and afxdp_proxy/cache.py models it in
 * Python as the tests' oracle. Plain C, no helpers, no libc.
 *
 * Layout. The cache is an array of sets; a key goes to one set and may use
 * any of its AXP_CACHE_WAYS ways. A way holds one *run*: a key, a stack
 * (struct axp_entry) and how many packets with that key and that stack are in
 * flight. The set's header keeps what a scan needs next to each other: a
 * 32-bit tag per way (from the key's hash, never 0; 0 = free way), the run's
 * arrival number, its packet count and the RX time of its newest packet. A
 * lookup compares full keys only where the tag matches; every way stores its
 * full key, so a hash collision never hands out another packet's stack.
 *
 * Hash. 64-bit multiplies only (BPF has none wider), over the key as
 * sizeof(struct axp_key) / 8 native-endian 64-bit words; the set is the upper
 * 32 bits of the hash scaled onto [0, sets) (multiply-shift, any set count),
 * the tag its lower 32 bits with bit 0 set.
 *
 * Insert (RX; the packet's RX time is e->rx_ns, the cache's "now"; max_dwell_ns
 * and max_per_key come from struct axp_config):
 *  1. Every run of the set whose newest packet is older than max_dwell_ns is
 *     presumed lost and freed; its packets are reported as expired. So an
 *     identical retry of a packet the SF dropped replaces that packet's run,
 *     and stale space is used before anything younger is evicted.
 *  2. If max_per_key packets with this key are in flight, the packet is
 *     refused (key full).
 *  3. If the key's newest run has the same stack (labels, depth, SF), the
 *     packet joins it: consecutive duplicates share a way (joined).
 *  4. Otherwise it opens a new run: in a free way, else in place of the
 *     oldest run of another key, exactly one, whose packets are reported as
 *     evicted; if every way holds this key, the packet is refused (key full).
 * Take (TX): the key's oldest run (see Order below) hands out its
 * stack, and its way is freed when its last packet has left. Packets with
 * one key thus get their stacks back in arrival order (FIFO).
 *
 * Order: each set numbers its inserts (32 bits, wrapping); a run carries the
 * number of its newest packet, and its age is the set's next number minus that
 * (exact while a run lives through fewer than 2^32 inserts of its set). "Oldest"
 * and "newest" above mean largest and smallest age; ties go to the lowest way.
 *
 * Locking: the functions below work on one set and take no lock; the caller
 * holds the set's lock around each: the set's own lock word, taken with a
 * compare-and-swap and released with an exchange (proxy.bpf.h with BPF
 * atomics, axp_cache.c with C atomics). They report what happened in struct
 * axp_cache_outcome, and the caller counts after unlocking.
 */
#ifndef AXP_CACHE_SHARED_H
#define AXP_CACHE_SHARED_H

#include "proxy.shared.h"

#define AXP_CACHE_WAYS 8          /* runs per set */
#define AXP_CACHE_MAX_PER_KEY 255 /* a run's count is a __u8 */

/* One way: the key and stack of a run. e.rx_ns is the RX time of its first packet. */
struct axp_cache_slot {
	struct axp_key key;
	struct axp_entry e;
};

/* One set: the map value of the BPF array, and an element of the C cache's array. */
struct axp_cache_set {
	__u32 lock;                    /* 0: free; 1: held. With next_seq one 64-bit word (see proxy.bpf.h) */
	__u32 next_seq;                /* arrival number of the set's next insert */
	__u32 tag[AXP_CACHE_WAYS];     /* key hash tag of the way's run; 0: the way is free */
	__u32 seq[AXP_CACHE_WAYS];     /* arrival number of the run's newest packet */
	__u8 count[AXP_CACHE_WAYS];    /* packets of the run in flight */
	__u64 rx_ns[AXP_CACHE_WAYS];   /* RX time of the run's newest packet */
	struct axp_cache_slot slot[AXP_CACHE_WAYS];
};

enum axp_cache_result {
	AXP_CACHE_MISS = 0,     /* take: no run of the key */
	AXP_CACHE_HIT = 1,      /* take: the stack of the key's oldest run copied out */
	AXP_CACHE_JOINED = 2,   /* insert: one more packet in the key's newest run */
	AXP_CACHE_OPENED = 3,   /* insert: a new run */
	AXP_CACHE_KEY_FULL = 4, /* insert refused: max_per_key of this key in flight, or no way left */
};

/* What an insert or take did, for the caller to count once the set is unlocked. */
struct axp_cache_outcome {
	__u32 result;  /* enum axp_cache_result */
	__u32 expired; /* insert: packets of stale runs freed */
	__u32 evicted; /* insert: packets of the run pushed out (at most one run) */
	__u32 way;     /* the way used or taken from (tests, dumps) */
};

#ifndef AXP_CDEF

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* the loops below are over a handful of ways and words: unrolled, so BPF sees no back edge */
#ifdef __clang__
#define AXP_CACHE_UNROLL _Pragma("unroll")
#else
#define AXP_CACHE_UNROLL _Pragma("GCC unroll 16")
#endif

#define AXP_CACHE_KEY_WORDS (sizeof(struct axp_key) / 8)
#define AXP_CACHE_STACK_WORDS (sizeof(((struct axp_entry *)0)->labels) / 8)

_Static_assert(sizeof(struct axp_key) % 8 == 0, "struct axp_key is hashed and compared as 64-bit words");
_Static_assert(sizeof(((struct axp_entry *)0)->labels) % 8 == 0, "stacks are compared as 64-bit words");
_Static_assert(sizeof(struct axp_cache_slot) % 8 == 0, "ways stay 8-byte aligned");
_Static_assert(__builtin_offsetof(struct axp_cache_set, lock) == 0 &&
	       __builtin_offsetof(struct axp_cache_set, next_seq) == 4, "the lock word leads a set");

#define AXP_CACHE_P1 0x9e3779b97f4a7c15ull /* 2^64 / golden ratio: per-word salt */
#define AXP_CACHE_P2 0xbf58476d1ce4e5b9ull /* splitmix64's multipliers */
#define AXP_CACHE_P3 0x94d049bb133111ebull

/*
 * Word i of a key or stack. BPF lowers a memcpy it cannot prove aligned to byte
 * loads, and the verifier wants stack access aligned: BPF reads whole words,
 * and its callers keep keys 8-byte aligned (AXP_CACHE_KEY_ALIGN); C copies.
 */
#ifdef __bpf__
#define AXP_CACHE_KEY_ALIGN __attribute__((aligned(8)))
/* may_alias: the words are read over __be32 fields that the parser wrote as such */
typedef __u64 __attribute__((__may_alias__)) axp_cache_u64;
static __always_inline __u64 axp_cache_word(const void *p, __u32 i)
{
	return ((const axp_cache_u64 *)p)[i];
}
#else
#define AXP_CACHE_KEY_ALIGN
static __always_inline __u64 axp_cache_word(const void *p, __u32 i)
{
	__u64 v;

	__builtin_memcpy(&v, (const __u8 *)p + 8 * i, sizeof(v));
	return v;
}
#endif

/*
 * Each word is salted by its position and multiplied on its own (independent
 * multiplies, no chain), the products are folded and summed, and splitmix64's
 * finaliser spreads every bit over the result.
 */
static __always_inline __u64 axp_cache_hash(const struct axp_key *k)
{
	__u64 h = sizeof(*k), x;
	__u32 i;

AXP_CACHE_UNROLL
	for (i = 0; i < AXP_CACHE_KEY_WORDS; i++) {
		x = (axp_cache_word(k, i) + (i + 1) * AXP_CACHE_P1) * AXP_CACHE_P2;
		h += x ^ (x >> 31);
	}
	h ^= h >> 30;
	h *= AXP_CACHE_P2;
	h ^= h >> 27;
	h *= AXP_CACHE_P3;
	h ^= h >> 31;
	return h;
}

/* multiply-shift range reduction: no modulo, any number of sets */
static __always_inline __u32 axp_cache_set_index(__u64 h, __u32 sets)
{
	return (__u32)(((h >> 32) * (__u64)sets) >> 32);
}

static __always_inline __u32 axp_cache_tag(__u64 h)
{
	return (__u32)h | 1;
}

/*
 * Hide a value from the compiler, which would otherwise recognise the sign
 * tricks below as comparisons and emit branches (BPF has no conditional move).
 */
#define axp_cache_opaque(x) __asm__ __volatile__("" : "+r"(x))

static __always_inline __u64 axp_cache_is_zero(__u64 x) /* 1 if x == 0, else 0 */
{
	__u64 y = x | -x;

	axp_cache_opaque(y);
	return (y >> 63) ^ 1;
}

static __always_inline __u64 axp_cache_key_equal(const struct axp_key *a, const struct axp_key *b)
{
	__u64 d = 0;
	__u32 i;

AXP_CACHE_UNROLL
	for (i = 0; i < AXP_CACHE_KEY_WORDS; i++)
		d |= axp_cache_word(a, i) ^ axp_cache_word(b, i);
	return axp_cache_is_zero(d);
}

static __always_inline int axp_cache_same_stack(const struct axp_entry *a, const struct axp_entry *b)
{
	__u64 d = (__u64)(a->depth ^ b->depth) | (__u64)(a->sf ^ b->sf);
	__u32 i;

AXP_CACHE_UNROLL
	for (i = 0; i < AXP_CACHE_STACK_WORDS; i++)
		d |= axp_cache_word(a->labels, i) ^ axp_cache_word(b->labels, i);
	return !d;
}

/*
 * Branch-free arithmetic on 64-bit words. The verifier explores every path of
 * the locked region separately, and a scan that picked ways with branches
 * would give it one path per combination of choices; these keep the scan one
 * straight line per way, which also spares the CPU mispredicted branches.
 */
static __always_inline __u64 axp_cache_max(__u64 a, __u64 b) /* for a, b < 2^63 */
{
	__u64 d = a - b;

	axp_cache_opaque(d);
	return a ^ ((a ^ b) & -(d >> 63));
}

/*
 * A run's age: inserts into its set since its newest packet, the set's
 * arrival numbers being 32-bit and wrapping (exact while a run lives through
 * fewer than 2^32 inserts of its set). Larger is older.
 */
static __always_inline __u64 axp_cache_age(const struct axp_cache_set *s, __u32 w)
{
	return (__u32)(s->next_seq - s->seq[w]);
}

/*
 * 1 when the way's run is older than max_dwell_ns at now, as a signed
 * comparison (a run stamped by another CPU after this packet read the clock is
 * young), written as the sign of a difference.
 */
static __always_inline __u64 axp_cache_is_stale(const struct axp_cache_set *s, __u32 w, __u64 now,
						__u64 max_dwell_ns)
{
	__u64 d = max_dwell_ns - (now - s->rx_ns[w]);

	axp_cache_opaque(d);
	return d >> 63;
}

/*
 * A way's score when choosing among ways: class in bits 36 and up, then 32
 * bits of rank, then the way inverted in the low 3 bits, so that the highest
 * score is the best class, then the best rank, then the lowest way.
 */
#define AXP_CACHE_SCORE(class, rank, w) (((__u64)(class) << 36) | ((__u64)(rank) << 3) | (7 - (w)))
#define AXP_CACHE_SCORE_CLASS(score) ((score) >> 36)
#define AXP_CACHE_SCORE_WAY(score) ((__u32)(7 - ((score) & 7)))
_Static_assert(AXP_CACHE_WAYS <= 8, "a score keeps the way in 3 bits");

/* 1 when way w holds a run of key (whose hash tag is tag) */
static __always_inline __u64 axp_cache_holds(const struct axp_cache_set *s, __u32 w,
					     const struct axp_key *key, __u32 tag)
{
	if (s->tag[w] != tag)
		return 0;
	return axp_cache_key_equal(&s->slot[w].key, key);
}

/*
 * Cache one packet (see the top of this file). e->rx_ns is its RX time; tag
 * is axp_cache_tag() of key's hash, which chose this set. The caller holds
 * the set's lock.
 *
 * One pass over the ways scores three choices: the key's newest run (to join),
 * the way a new run goes to (free or stale ways first, lowest first; else the
 * oldest run of another key) and the packets of the key and of stale runs.
 */
static __always_inline void axp_cache_set_insert(struct axp_cache_set *s, const struct axp_key *key,
						 __u32 tag, const struct axp_entry *e, __u64 max_dwell_ns,
						 __u32 max_per_key, struct axp_cache_outcome *out)
{
	__u64 now = e->rx_ns, newest = 0, victim = 0, key_pkts = 0, expired = 0;
	__u64 used, stale, mine, count, age;
	__u32 w, nw, vw;

	out->evicted = 0;
AXP_CACHE_UNROLL
	for (w = 0; w < AXP_CACHE_WAYS; w++) {
		used = axp_cache_is_zero(s->tag[w]) ^ 1;
		stale = used & axp_cache_is_stale(s, w, now, max_dwell_ns);
		count = s->count[w];
		age = axp_cache_age(s, w);
		expired += count & -stale;
		mine = 0;
		if (s->tag[w] == tag) { /* rare: only then is a full key compared */
			mine = (used ^ stale) & axp_cache_key_equal(&s->slot[w].key, key);
			key_pkts += count & -mine;
			/* newest of mine: the lowest age */
			newest = axp_cache_max(newest, AXP_CACHE_SCORE(1, 0xffffffffu - age, w) & -mine);
		}
		/* free or stale: class 2; another key's live run: class 1 by age; mine: class 0 */
		victim = axp_cache_max(victim, AXP_CACHE_SCORE(2 - used + stale - mine, age & -(used ^ stale), w));
		s->tag[w] &= (__u32)(stale - 1); /* a stale run goes, whatever happens next */
	}
	out->expired = expired;
	if (key_pkts >= max_per_key)
		goto key_full;
	nw = AXP_CACHE_SCORE_WAY(newest);
	vw = AXP_CACHE_SCORE_WAY(victim);
	if (AXP_CACHE_SCORE_CLASS(newest) && nw < AXP_CACHE_WAYS &&
	    axp_cache_same_stack(&s->slot[nw].e, e)) {
		s->count[nw]++;
		s->seq[nw] = s->next_seq++;
		s->rx_ns[nw] = now;
		out->result = AXP_CACHE_JOINED;
		out->way = nw;
		return;
	}
	if (!AXP_CACHE_SCORE_CLASS(victim) || vw >= AXP_CACHE_WAYS)
		goto key_full; /* every way holds a live run of this key */
	if (AXP_CACHE_SCORE_CLASS(victim) == 1)
		out->evicted = s->count[vw];
	s->tag[vw] = tag;
	s->count[vw] = 1;
	s->seq[vw] = s->next_seq++;
	s->rx_ns[vw] = now;
	__builtin_memcpy(&s->slot[vw].key, key, sizeof(*key));
	__builtin_memcpy(&s->slot[vw].e, e, sizeof(*e));
	out->result = AXP_CACHE_OPENED;
	out->way = vw;
	return;

key_full:
	out->result = AXP_CACHE_KEY_FULL;
	out->way = AXP_CACHE_WAYS;
}

/*
 * Take the stack of key's oldest run into *e (e->rx_ns: its first packet's RX
 * time). The caller holds the set's lock.
 */
static __always_inline void axp_cache_set_take(struct axp_cache_set *s, const struct axp_key *key,
					       __u32 tag, struct axp_entry *e,
					       struct axp_cache_outcome *out)
{
	__u64 oldest = 0;
	__u32 w;

	out->expired = 0;
	out->evicted = 0;
AXP_CACHE_UNROLL
	for (w = 0; w < AXP_CACHE_WAYS; w++)
		oldest = axp_cache_max(oldest, AXP_CACHE_SCORE(1, axp_cache_age(s, w), w) &
					       -axp_cache_holds(s, w, key, tag));
	w = AXP_CACHE_SCORE_WAY(oldest);
	if (!AXP_CACHE_SCORE_CLASS(oldest) || w >= AXP_CACHE_WAYS) {
		out->result = AXP_CACHE_MISS;
		out->way = AXP_CACHE_WAYS;
		return;
	}
	__builtin_memcpy(e, &s->slot[w].e, sizeof(*e));
	if (--s->count[w] == 0)
		s->tag[w] = 0;
	out->result = AXP_CACHE_HIT;
	out->way = w;
}

#endif /* !AXP_CDEF */

#endif /* AXP_CACHE_SHARED_H */
