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
 * flight. A set is 20 cache lines, laid out by who reads them: line 0 holds
 * what every insert and take scans (the lock, a 16-bit tag per way from the
 * key's hash, never 0, 0 = free way; the run's packet count and arrival
 * number), line 1 the RX time of each run's newest packet (inserts age the
 * set by it), lines 2-3 the rest of each run's stack (depth, SF, VLAN tags,
 * RX time of its first packet), then each way's key on a line of its own and its labels
 * on the next. An insert reads lines 0 and 1 and writes the new run's meta,
 * key and labels lines; a take reads line 0, the matching key and that run's
 * meta and labels: 4 or 5 lines of 20. Sets start on a cache line (the BPF
 * map is BPF_F_MMAPABLE, whose values start on a page; the C cache's memory
 * is mmap'ed). A lookup compares full keys only where the tag matches; every
 * way stores its full key, so a hash collision never hands out another
 * packet's stack.
 *
 * Hash. 64-bit multiplies only (BPF has none wider), over the key as
 * sizeof(struct axp_key) / 8 native-endian 64-bit words; the set is the upper
 * 32 bits of the hash scaled onto [0, sets) (multiply-shift, any set count),
 * the tag its lower 16 bits with bit 0 set.
 *
 * Insert (RX; now is the cache's clock, in ns, which the set's ageing times
 * keep: CLOCK_MONOTONIC in the C cache, jiffies in the BPF one; e->rx_ns is
 * the packet's RX time for its dwell time, kept in the run's meta, 0 when not
 * measured; max_dwell_ns and max_per_key come from struct axp_config):
 *  1. Every run of the set whose newest packet is older than max_dwell_ns is
 *     presumed lost and freed; its packets are reported as expired. So an
 *     identical retry of a packet the SF dropped replaces that packet's run,
 *     and stale space is used before anything younger is evicted.
 *  2. If max_per_key packets with this key are in flight, the packet is
 *     refused (key full).
 *  3. If the key's newest run has the same stack (labels, depth, SF, VLAN
 *     tags), the packet joins it: consecutive duplicates share a way (joined).
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
/*
 * The meaning of a set's bytes (and of the key and hash they depend on): a cache kept across
 * a restart (`run --keep-cache`) is reused only by a proxy built with the same number. Bump
 * it whenever the layout, the hash or the key derivation changes in a way sizes do not show.
 */
/* 2: an entry holds the SF label and the tags; 3: sets by cache line, 16-bit tags, a lock word; 4: BPF ages by jiffies */
#define AXP_CACHE_LAYOUT 4
#define AXP_CACHE_MAX_PER_KEY 255 /* a run's count is a __u8 */

/* A run's stack but its labels (struct axp_entry without labels): 16 bytes, four to a line. */
struct axp_cache_meta {
	__u64 rx_ns;             /* RX time of the run's first packet */
	__u8 depth;
	__u8 sf;
	struct axp_vlans vlans;  /* the tags its packets arrived with */
};

/* A way's key and labels: a cache line each. */
struct axp_cache_way {
	struct axp_key key;
	__be32 labels[AXP_MAX_LABELS];
};

/* One set: the map value of the BPF array, and an element of the C cache's array. */
struct axp_cache_set {
	/* line 0: scanned by every insert and take */
	__u32 lock;                   /* 0: free; 1: held. With next_seq one 64-bit word (see proxy.bpf.h) */
	__u32 next_seq;               /* arrival number of the set's next insert */
	__u16 tag[AXP_CACHE_WAYS];    /* key hash tag of the way's run; 0: the way is free */
	__u8 count[AXP_CACHE_WAYS];   /* packets of the run in flight */
	__u32 seq[AXP_CACHE_WAYS];    /* arrival number of the run's newest packet */
	/* line 1: read by inserts, which age the set */
	__u64 rx_ns[AXP_CACHE_WAYS];  /* RX time of the run's newest packet */
	/* lines 2-3, then 16 lines of keys and labels */
	struct axp_cache_meta meta[AXP_CACHE_WAYS];
	struct axp_cache_way way[AXP_CACHE_WAYS];
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

_Static_assert(sizeof(struct axp_key) == 64, "a key is one cache line, hashed and compared as 64-bit words");
_Static_assert(sizeof(((struct axp_entry *)0)->labels) == 64, "a stack's labels are one cache line");
_Static_assert(__builtin_offsetof(struct axp_cache_set, seq) + sizeof(((struct axp_cache_set *)0)->seq) <= 64,
	       "what a scan reads is one cache line");
_Static_assert(__builtin_offsetof(struct axp_cache_set, rx_ns) == 64, "the RX times are line 1");
_Static_assert(sizeof(struct axp_cache_meta) == 16, "a run's meta: four to a line");
_Static_assert(__builtin_offsetof(struct axp_cache_set, way) % 64 == 0, "keys and labels are whole lines");
_Static_assert(sizeof(struct axp_cache_set) % 64 == 0, "sets start on a cache line");
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

static __always_inline __u16 axp_cache_tag(__u64 h)
{
	return (__u16)h | 1;
}

/*
 * Whether a packet's dwell time in the SF is measured: for 1 in mask + 1 keys
 * (dwell_sample, a power of two), chosen by hash bits 16-31, which neither the
 * set nor the tag uses. RX and TX decide alike from the key alone, so a timed
 * packet is stamped by the precise clock at RX and timed again at TX, and the
 * others read no precise clock at all (see proxy.bpf.h, axp_now).
 */
static __always_inline int axp_cache_timed(__u64 h, __u32 mask)
{
	return !((h >> 16) & mask);
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

/* 1 when way w's run has e's stack (labels, depth, SF, VLAN tags) */
static __always_inline int axp_cache_same_stack(const struct axp_cache_set *s, __u32 w,
						const struct axp_entry *e)
{
	/* the tags a packet arrived with are restored too: part of what must be the same */
	__u64 d = (__u64)(s->meta[w].depth ^ e->depth) | (__u64)(s->meta[w].sf ^ e->sf) |
		  (__u64)(s->meta[w].vlans.n ^ e->vlans.n) | (__u64)(s->meta[w].vlans.ad ^ e->vlans.ad) |
		  (__u64)(s->meta[w].vlans.tci[0] ^ e->vlans.tci[0]) |
		  (__u64)(s->meta[w].vlans.tci[1] ^ e->vlans.tci[1]);
	__u32 i;

AXP_CACHE_UNROLL
	for (i = 0; i < AXP_CACHE_STACK_WORDS; i++)
		d |= axp_cache_word(s->way[w].labels, i) ^ axp_cache_word(e->labels, i);
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
					     const struct axp_key *key, __u16 tag)
{
	if (s->tag[w] != tag)
		return 0;
	return axp_cache_key_equal(&s->way[w].key, key);
}

/*
 * The ways whose tag is tag, as the top bit of each 16-bit lane of the set's
 * two tag words (0: no way has it). Exact per lane: the low 15 bits of each
 * lane are added without a carry out of it.
 */
static __always_inline __u64 axp_cache_tag_lanes(const struct axp_cache_set *s, __u16 tag, __u32 i)
{
	__u64 x = axp_cache_word(s->tag, i) ^ ((__u64)tag * 0x0001000100010001ull);

	return ~(((x & 0x7fff7fff7fff7fffull) + 0x7fff7fff7fff7fffull) | x) & 0x8000800080008000ull;
}

static __always_inline __u64 axp_cache_tag_matches(const struct axp_cache_set *s, __u16 tag)
{
	return axp_cache_tag_lanes(s, tag, 0) | axp_cache_tag_lanes(s, tag, 1);
}

/*
 * The way whose tag lane is the only one set in m0 (ways 0-3) and m1 (ways
 * 4-7), as axp_cache_tag_lanes gives them; AXP_CACHE_WAYS when none or more
 * than one is. A lane's top bit 15 + 16k, shifted down to bit 16k, times a
 * constant holding 3 - k in its 16-bit digit k, puts k in the top digit.
 */
static __always_inline __u32 axp_cache_only_way(__u64 m0, __u64 m1)
{
	__u64 m = m0 | m1;

	if (!m || (m & (m - 1)) || (m0 && m1))
		return AXP_CACHE_WAYS;
	return (__u32)(((m >> 15) * 0x0000000100020003ull) >> 48) + (m1 ? 4 : 0);
}

/* The tag words, or-ed: 0 when every way is free. */
static __always_inline __u64 axp_cache_any_used(const struct axp_cache_set *s)
{
	return axp_cache_word(s->tag, 0) | axp_cache_word(s->tag, 1);
}
_Static_assert(AXP_CACHE_WAYS == 8, "two tag words of four lanes");
_Static_assert(sizeof(((struct axp_cache_set *)0)->tag) == 16 &&
	       __builtin_offsetof(struct axp_cache_set, tag) % 8 == 0, "the tags are two aligned words");

/* Open a new run of key with e's stack in way vw (the caller chose it), at now. */
static __always_inline void axp_cache_open(struct axp_cache_set *s, __u32 vw, const struct axp_key *key,
					   __u16 tag, const struct axp_entry *e, __u64 now,
					   struct axp_cache_outcome *out)
{
	s->tag[vw] = tag;
	s->count[vw] = 1;
	s->seq[vw] = s->next_seq++;
	s->rx_ns[vw] = now;
	s->meta[vw].rx_ns = e->rx_ns;
	s->meta[vw].depth = e->depth;
	s->meta[vw].sf = e->sf;
	s->meta[vw].vlans = e->vlans;
	__builtin_memcpy(&s->way[vw].key, key, sizeof(*key));
	__builtin_memcpy(s->way[vw].labels, e->labels, sizeof(e->labels));
	out->result = AXP_CACHE_OPENED;
	out->way = vw;
}

/*
 * Insert where some way carries key's tag: one pass over the ways scores three
 * choices: the key's newest run (to join), the way a new run goes to (free or
 * stale ways first, lowest first; else the oldest run of another key) and the
 * packets of the key and of stale runs.
 */
static __always_inline void axp_cache_insert_tagged(struct axp_cache_set *s, const struct axp_key *key,
						    __u16 tag, const struct axp_entry *e, __u64 now,
						    __u64 max_dwell_ns, __u32 max_per_key,
						    struct axp_cache_outcome *out)
{
	__u64 newest = 0, victim = 0, key_pkts = 0, expired = 0;
	__u64 used, stale, mine, count, age;
	__u32 w, nw, vw;

AXP_CACHE_UNROLL
	for (w = 0; w < AXP_CACHE_WAYS; w++) {
		used = axp_cache_is_zero(s->tag[w]) ^ 1;
		stale = used & axp_cache_is_stale(s, w, now, max_dwell_ns);
		count = s->count[w];
		age = axp_cache_age(s, w);
		expired += count & -stale;
		mine = 0;
		if (s->tag[w] == tag) { /* only then is a full key compared */
			mine = (used ^ stale) & axp_cache_key_equal(&s->way[w].key, key);
			key_pkts += count & -mine;
			/* newest of mine: the lowest age */
			newest = axp_cache_max(newest, AXP_CACHE_SCORE(1, 0xffffffffu - age, w) & -mine);
		}
		/* free or stale: class 2; another key's live run: class 1 by age; mine: class 0 */
		victim = axp_cache_max(victim, AXP_CACHE_SCORE(2 - used + stale - mine, age & -(used ^ stale), w));
		s->tag[w] &= (__u16)(stale - 1); /* a stale run goes, whatever happens next */
	}
	out->expired = expired;
	if (key_pkts >= max_per_key)
		goto key_full;
	nw = AXP_CACHE_SCORE_WAY(newest);
	vw = AXP_CACHE_SCORE_WAY(victim);
	if (AXP_CACHE_SCORE_CLASS(newest) && nw < AXP_CACHE_WAYS && axp_cache_same_stack(s, nw, e)) {
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
	axp_cache_open(s, vw, key, tag, e, now, out);
	return;

key_full:
	out->result = AXP_CACHE_KEY_FULL;
	out->way = AXP_CACHE_WAYS;
}

/*
 * Where no way carries the key's tag, no run is the key's: free the stale
 * runs and return the lowest free or stale way; only when there is none, the
 * oldest run (of another key), whose packets are evicted. Used tags have bit
 * 0 set, so a tag's bit 0 says whether its way is used.
 */
static __always_inline __u32 axp_cache_victim(struct axp_cache_set *s, __u64 now, __u64 max_dwell_ns,
					      struct axp_cache_outcome *out)
{
	__u64 expired = 0, oldest = 0, t, stale, avail;
	__u32 w, vw = AXP_CACHE_WAYS;

	/* from the top: the last way found free or stale is the lowest */
AXP_CACHE_UNROLL
	for (w = AXP_CACHE_WAYS; w-- > 0;) {
		t = s->tag[w];
		stale = t & axp_cache_is_stale(s, w, now, max_dwell_ns);
		expired += s->count[w] & -stale;
		s->tag[w] = t & (__u16)(stale - 1); /* a stale run goes, whatever happens next */
		avail = (t & 1) ^ 1 ^ stale;
		vw ^= (vw ^ w) & (__u32)-avail;
	}
	out->expired = expired;
	if (vw < AXP_CACHE_WAYS)
		return vw;
AXP_CACHE_UNROLL
	for (w = 0; w < AXP_CACHE_WAYS; w++) /* every way holds a live run */
		oldest = axp_cache_max(oldest, AXP_CACHE_SCORE(1, axp_cache_age(s, w), w));
	vw = AXP_CACHE_SCORE_WAY(oldest);
	if (vw < AXP_CACHE_WAYS)
		out->evicted = s->count[vw];
	return vw;
}

/*
 * Cache one packet at now (see the top of this file); tag
 * is axp_cache_tag() of key's hash, which chose this set. The caller holds
 * the set's lock. Three paths to one result: a set with a way of key's tag
 * (rare but for runs of one key: the full scan), an empty set (common in a
 * cache sized for its traffic: way 0), and the rest (free or stale way, else
 * evict the oldest).
 */
static __always_inline void axp_cache_set_insert(struct axp_cache_set *s, const struct axp_key *key,
						 __u16 tag, const struct axp_entry *e, __u64 now,
						 __u64 max_dwell_ns, __u32 max_per_key,
						 struct axp_cache_outcome *out)
{
	__u32 vw = 0;

	out->expired = 0;
	out->evicted = 0;
	if (axp_cache_tag_matches(s, tag)) {
		axp_cache_insert_tagged(s, key, tag, e, now, max_dwell_ns, max_per_key, out);
		return;
	}
	if (axp_cache_any_used(s))
		vw = axp_cache_victim(s, now, max_dwell_ns, out);
	/* a way is always found here; the mask tells the verifier, on the register the address takes */
	axp_cache_opaque(vw);
	axp_cache_open(s, vw & (AXP_CACHE_WAYS - 1), key, tag, e, now, out);
}

/*
 * Take the stack of key's oldest run into *e (e->rx_ns: its first packet's RX
 * time). The caller holds the set's lock. Full keys are compared only where
 * the tag matches, a set without the tag is a miss at once, and a set with
 * one way of the tag (the common case) compares that way's key alone.
 */
static __always_inline void axp_cache_set_take(struct axp_cache_set *s, const struct axp_key *key,
					       __u16 tag, struct axp_entry *e,
					       struct axp_cache_outcome *out)
{
	__u64 oldest = 0, m0, m1;
	__u32 w;

	out->expired = 0;
	out->evicted = 0;
	out->result = AXP_CACHE_MISS;
	out->way = AXP_CACHE_WAYS;
	m0 = axp_cache_tag_lanes(s, tag, 0);
	m1 = axp_cache_tag_lanes(s, tag, 1);
	if (!(m0 | m1))
		return;
	w = axp_cache_only_way(m0, m1);
	if (w < AXP_CACHE_WAYS) {
		/* one way has the tag: every run of the key would, so that run is the oldest, or none is */
		axp_cache_opaque(w);
		w &= AXP_CACHE_WAYS - 1;
		if (!axp_cache_key_equal(&s->way[w].key, key))
			return;
	} else {
AXP_CACHE_UNROLL
		for (w = 0; w < AXP_CACHE_WAYS; w++)
			oldest = axp_cache_max(oldest, AXP_CACHE_SCORE(1, axp_cache_age(s, w), w) &
						       -axp_cache_holds(s, w, key, tag));
		w = AXP_CACHE_SCORE_WAY(oldest);
		if (!AXP_CACHE_SCORE_CLASS(oldest) || w >= AXP_CACHE_WAYS)
			return;
	}
	__builtin_memcpy(e->labels, s->way[w].labels, sizeof(e->labels));
	e->rx_ns = s->meta[w].rx_ns;
	e->depth = s->meta[w].depth;
	e->sf = s->meta[w].sf;
	e->vlans = s->meta[w].vlans;
	if (--s->count[w] == 0)
		s->tag[w] = 0;
	out->result = AXP_CACHE_HIT;
	out->way = w;
}

#endif /* !AXP_CDEF */

#endif /* AXP_CACHE_SHARED_H */
