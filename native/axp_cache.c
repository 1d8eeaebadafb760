// SPDX-License-Identifier: BSD-2-Clause
/*
 * The set-associative cache of label stacks (see axp_cache.h for the policy).
 *
 * A set is one 32-byte tag line followed by its slots: a lookup reads the tags
 * (one cache line), then compares the full key only where a tag matches. A
 * tag is the low 32 bits of the key's hash with bit 0 forced on; 0 marks a
 * free slot.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "axp_cache.h"

#define AXP_CACHE_STRIPES 64 /* spinlocks; a set uses stripe (set % STRIPES) */

struct axp_cache_slot {
	struct axp_key key;
	struct axp_entry e;
};

struct axp_cache_set {
	uint32_t tag[AXP_CACHE_WAYS];
	struct axp_cache_slot slot[AXP_CACHE_WAYS];
} __attribute__((aligned(64)));

/* a cache line each, so two threads on different stripes do not share one */
struct axp_cache_stripe {
	int lock;
	int64_t count; /* entries in this stripe's sets */
} __attribute__((aligned(64)));

struct axp_cache {
	struct axp_cache_set *sets;
	size_t map_size;
	uint32_t nsets;
	int shared;
	struct axp_cache_stripe stripe[AXP_CACHE_STRIPES];
};

_Static_assert(sizeof(struct axp_key) == 56, "struct axp_key is hashed as 7 words");

/* 64x64 -> 128-bit multiply, halves folded: the mixing step of wyhash-style hashes */
static inline uint64_t axp_mum(uint64_t a, uint64_t b)
{
	unsigned __int128 r = (unsigned __int128)a * b;

	return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/*
 * Four independent multiplies rather than a chain of seven: the key is hashed
 * once per packet and direction, so the latency of the chain is what counts.
 */
static inline uint64_t axp_key_hash(const struct axp_key *k)
{
	uint64_t w[7];

	memcpy(w, k, sizeof(w));
	return axp_mum(axp_mum(w[0] ^ 0xa0761d6478bd642full, w[1] ^ 0xe7037ed1a0b428dbull) ^
			       axp_mum(w[2] ^ 0x8ebc6af09c88c6e3ull, w[3] ^ 0x589965cc75374cc3ull) ^
			       axp_mum(w[4] ^ 0x1d8e4e27c47d124full, w[5] ^ 0x9e3779b97f4a7c15ull) ^
			       axp_mum(w[6] ^ 0xbf58476d1ce4e5b9ull, 0x94d049bb133111ebull),
		       0xd6e8feb86659fd93ull);
}

static inline int axp_key_equal(const struct axp_key *a, const struct axp_key *b)
{
	uint64_t x[7], y[7], d = 0;
	int i;

	memcpy(x, a, sizeof(x));
	memcpy(y, b, sizeof(y));
	for (i = 0; i < 7; i++)
		d |= x[i] ^ y[i];
	return !d;
}

static inline void axp_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static inline struct axp_cache_stripe *axp_lock(struct axp_cache *c, uint32_t set)
{
	struct axp_cache_stripe *s = &c->stripe[set % AXP_CACHE_STRIPES];

	if (c->shared) {
		while (__atomic_exchange_n(&s->lock, 1, __ATOMIC_ACQUIRE))
			while (__atomic_load_n(&s->lock, __ATOMIC_RELAXED))
				axp_cpu_relax();
	}
	return s;
}

static inline void axp_unlock(struct axp_cache *c, struct axp_cache_stripe *s)
{
	if (c->shared)
		__atomic_store_n(&s->lock, 0, __ATOMIC_RELEASE);
}

/* set index: the hash's upper half scaled onto [0, nsets) (no modulo, no power of 2 needed) */
static inline uint32_t axp_set_of(const struct axp_cache *c, uint64_t h)
{
	return (uint32_t)(((h >> 32) * (uint64_t)c->nsets) >> 32);
}

struct axp_cache *axp_cache_new(uint32_t capacity, int shared)
{
	struct axp_cache *c;
	void *mem;

	if (!capacity)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->nsets = (capacity + AXP_CACHE_WAYS - 1) / AXP_CACHE_WAYS;
	c->shared = !!shared;
	c->map_size = (size_t)c->nsets * sizeof(struct axp_cache_set);
	/* anonymous memory: zeroed (all slots free), returned to the system on free */
	mem = mmap(NULL, c->map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		free(c);
		return NULL;
	}
	c->sets = mem;
	return c;
}

void axp_cache_free(struct axp_cache *c)
{
	if (!c)
		return;
	munmap(c->sets, c->map_size);
	free(c);
}

uint32_t axp_cache_capacity(const struct axp_cache *c)
{
	return c->nsets * AXP_CACHE_WAYS;
}

int axp_cache_insert(struct axp_cache *c, const struct axp_key *key, const struct axp_entry *e,
		     int replace)
{
	uint64_t h = axp_key_hash(key);
	uint32_t si = axp_set_of(c, h), tag = (uint32_t)h | 1;
	struct axp_cache_set *set = &c->sets[si];
	struct axp_cache_stripe *st = axp_lock(c, si);
	int w, free_way = -1, oldest = 0, res;

	for (w = 0; w < AXP_CACHE_WAYS; w++) {
		if (set->tag[w] == tag && axp_key_equal(&set->slot[w].key, key)) {
			if (replace)
				set->slot[w].e = *e;
			axp_unlock(c, st);
			return replace ? AXP_CACHE_REPLACED : AXP_CACHE_CONFLICT;
		}
		if (!set->tag[w]) {
			if (free_way < 0)
				free_way = w;
		} else if (set->slot[w].e.rx_ns < set->slot[oldest].e.rx_ns) {
			oldest = w;
		}
	}
	if (free_way >= 0) {
		w = free_way;
		st->count++;
		res = AXP_CACHE_INSERTED;
	} else {
		w = oldest;
		res = AXP_CACHE_EVICTED;
	}
	set->tag[w] = tag;
	set->slot[w].key = *key;
	set->slot[w].e = *e;
	axp_unlock(c, st);
	return res;
}

int axp_cache_take(struct axp_cache *c, const struct axp_key *key, struct axp_entry *out)
{
	uint64_t h = axp_key_hash(key);
	uint32_t si = axp_set_of(c, h), tag = (uint32_t)h | 1;
	struct axp_cache_set *set = &c->sets[si];
	struct axp_cache_stripe *st = axp_lock(c, si);
	int w;

	for (w = 0; w < AXP_CACHE_WAYS; w++) {
		if (set->tag[w] == tag && axp_key_equal(&set->slot[w].key, key)) {
			*out = set->slot[w].e;
			set->tag[w] = 0;
			st->count--;
			axp_unlock(c, st);
			return 0;
		}
	}
	axp_unlock(c, st);
	return -ENOENT;
}

uint64_t axp_cache_count(struct axp_cache *c)
{
	int64_t n = 0;
	int i;

	/* a stripe's count can dip below zero while another thread is mid-way; the sum cannot */
	for (i = 0; i < AXP_CACHE_STRIPES; i++)
		n += __atomic_load_n(&c->stripe[i].count, __ATOMIC_RELAXED);
	return n > 0 ? (uint64_t)n : 0;
}

uint32_t axp_cache_dump(struct axp_cache *c, struct axp_key *keys, struct axp_entry *entries,
			uint32_t max)
{
	uint32_t si, n = 0;
	int w;

	for (si = 0; si < c->nsets && n < max; si++) {
		struct axp_cache_set *set = &c->sets[si];
		struct axp_cache_stripe *st = axp_lock(c, si);

		for (w = 0; w < AXP_CACHE_WAYS && n < max; w++) {
			if (!set->tag[w])
				continue;
			keys[n] = set->slot[w].key;
			entries[n] = set->slot[w].e;
			n++;
		}
		axp_unlock(c, st);
	}
	return n;
}

void axp_cache_clear(struct axp_cache *c)
{
	uint32_t si;

	for (si = 0; si < c->nsets; si++) {
		struct axp_cache_stripe *st = axp_lock(c, si);

		memset(c->sets[si].tag, 0, sizeof(c->sets[si].tag));
		st->count = 0;
		axp_unlock(c, st);
	}
}
