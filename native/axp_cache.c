// SPDX-License-Identifier: BSD-2-Clause
/*
 * The AF_XDP backend's cache: the shared algorithm (cache.shared.h) over an
 * array of sets, each behind a spin lock on its own lock word.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "axp_cache.h"
#include "axp_internal.h"

/*
 * A set's lock field, taken with C atomics (the BPF programs take it with the set's
 * next_seq in one 64-bit compare-and-swap, proxy.bpf.h: the same field, the same values).
 */
static inline void axp_set_lock(const struct axp_cache *c, struct axp_cache_set *s)
{
	if (!c->shared)
		return;
	while (__atomic_exchange_n(&s->lock, 1, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(&s->lock, __ATOMIC_RELAXED))
			axp_cpu_relax();
}

static inline void axp_set_unlock(const struct axp_cache *c, struct axp_cache_set *s)
{
	if (c->shared)
		__atomic_store_n(&s->lock, 0, __ATOMIC_RELEASE);
}

/*
 * The cache over sets * sizeof(struct axp_cache_set) bytes mapped from fd (MAP_SHARED: a
 * cache kept for the next proxy, reuse 1 keeps its entries), or anonymous memory (fd < 0).
 */
static struct axp_cache *axp_cache_map(uint32_t sets, uint32_t max_per_key, uint64_t max_dwell_ns,
				       int shared, int fd, int reuse)
{
	struct axp_cache *c;
	void *mem;
	uint32_t i;

	if (!sets || !max_per_key || max_per_key > AXP_CACHE_MAX_PER_KEY)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->nsets = sets;
	c->max_per_key = max_per_key;
	c->max_dwell_ns = max_dwell_ns;
	c->shared = !!shared;
	c->map_size = (size_t)sets * sizeof(struct axp_cache_set);
	if (fd < 0)
		/*
		 * anonymous memory: zeroed (every way free, every lock open), page-aligned (so
		 * every set starts on a cache line, as cache.shared.h lays it out), returned to
		 * the system on free
		 */
		mem = mmap(NULL, c->map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	else
		mem = mmap(NULL, c->map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED) {
		free(c);
		return NULL;
	}
	c->sets = mem;
	if (fd < 0) {
		/* sets are hit at random: huge pages spare a TLB miss per packet where THP allows */
		madvise(mem, c->map_size, MADV_HUGEPAGE);
	} else if (!reuse) {
		memset(mem, 0, c->map_size);
	} else {
		/* a lock held by a process that died holding it */
		for (i = 0; i < sets; i++)
			__atomic_store_n(&c->sets[i].lock, 0, __ATOMIC_RELEASE);
	}
	return c;
}

struct axp_cache *axp_cache_new(uint32_t sets, uint32_t max_per_key, uint64_t max_dwell_ns,
				int shared)
{
	return axp_cache_map(sets, max_per_key, max_dwell_ns, shared, -1, 0);
}

struct axp_cache *axp_cache_new_file(uint32_t sets, uint32_t max_per_key, uint64_t max_dwell_ns,
				     int shared, int fd, int reuse)
{
	return fd < 0 ? NULL : axp_cache_map(sets, max_per_key, max_dwell_ns, shared, fd, reuse);
}

void axp_cache_free(struct axp_cache *c)
{
	if (!c)
		return;
	munmap(c->sets, c->map_size);
	free(c);
}

uint32_t axp_cache_sets(const struct axp_cache *c)
{
	return c->nsets;
}

uint32_t axp_cache_capacity(const struct axp_cache *c)
{
	return c->nsets * AXP_CACHE_WAYS;
}

uint64_t axp_cache_hash_key(const struct axp_key *key)
{
	return axp_cache_hash(key);
}

uint32_t axp_cache_set_of_hash(uint64_t hash, uint32_t sets)
{
	return axp_cache_set_index(hash, sets);
}

int axp_cache_insert_hashed(struct axp_cache *c, const struct axp_key *key, uint64_t h,
			    const struct axp_entry *e, struct axp_cache_outcome *out)
{
	struct axp_cache_set *s = &c->sets[axp_cache_set_index(h, c->nsets)];

	axp_set_lock(c, s);
	/* the C cache's clock is the packet's RX time, CLOCK_MONOTONIC */
	axp_cache_set_insert(s, key, axp_cache_tag(h), e, e->rx_ns, c->max_dwell_ns, c->max_per_key, out);
	axp_set_unlock(c, s);
	return out->result;
}

int axp_cache_take_hashed(struct axp_cache *c, const struct axp_key *key, uint64_t h,
			  struct axp_entry *e, struct axp_cache_outcome *out)
{
	struct axp_cache_set *s = &c->sets[axp_cache_set_index(h, c->nsets)];

	axp_set_lock(c, s);
	axp_cache_set_take(s, key, axp_cache_tag(h), e, out);
	axp_set_unlock(c, s);
	return out->result;
}

int axp_cache_insert(struct axp_cache *c, const struct axp_key *key, const struct axp_entry *e,
		     struct axp_cache_outcome *out)
{
	return axp_cache_insert_hashed(c, key, axp_cache_hash(key), e, out);
}

int axp_cache_take(struct axp_cache *c, const struct axp_key *key, struct axp_entry *e,
		   struct axp_cache_outcome *out)
{
	return axp_cache_take_hashed(c, key, axp_cache_hash(key), e, out);
}

int axp_cache_copy_set(struct axp_cache *c, uint32_t index, struct axp_cache_set *out)
{
	struct axp_cache_set *s;

	if (index >= c->nsets)
		return -EINVAL;
	s = &c->sets[index];
	axp_set_lock(c, s);
	*out = *s;
	axp_set_unlock(c, s);
	out->lock = 0; /* a copy holds no lock */
	return 0;
}

uint64_t axp_cache_packets(struct axp_cache *c)
{
	uint64_t n = 0;
	uint32_t i;
	int w;

	for (i = 0; i < c->nsets; i++) {
		struct axp_cache_set *s = &c->sets[i];

		axp_set_lock(c, s);
		for (w = 0; w < AXP_CACHE_WAYS; w++)
			if (s->tag[w])
				n += s->count[w];
		axp_set_unlock(c, s);
	}
	return n;
}

void axp_cache_clear(struct axp_cache *c)
{
	uint32_t i;

	for (i = 0; i < c->nsets; i++) {
		struct axp_cache_set *s = &c->sets[i];

		axp_set_lock(c, s);
		/* as the kernel backend's tests zero a BPF set: everything but the lock */
		memset((char *)s + sizeof(s->lock), 0, sizeof(*s) - sizeof(s->lock));
		axp_set_unlock(c, s);
	}
}
