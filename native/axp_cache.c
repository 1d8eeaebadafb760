// SPDX-License-Identifier: BSD-2-Clause
/*
 * The set-associative cache of label stacks (see axp_cache.h for the policy
 * and the layout of a set).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "axp_cache.h"

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
	/* sets are hit at random: huge pages spare a TLB miss per packet where THP allows */
	madvise(mem, c->map_size, MADV_HUGEPAGE);
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
	return axp_cache_insert_hashed(c, key, axp_cache_hash(key), e, replace);
}

int axp_cache_take(struct axp_cache *c, const struct axp_key *key, struct axp_entry *out)
{
	return axp_cache_take_hashed(c, key, axp_cache_hash(key), out);
}

int axp_cache_insert_hashed(struct axp_cache *c, const struct axp_key *key, uint64_t h,
			    const struct axp_entry *e, int replace)
{
	uint32_t si = axp_cache_set_of(c, h), tag = (uint32_t)h | 1;
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

int axp_cache_take_hashed(struct axp_cache *c, const struct axp_key *key, uint64_t h,
			  struct axp_entry *out)
{
	uint32_t si = axp_cache_set_of(c, h), tag = (uint32_t)h | 1;
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
