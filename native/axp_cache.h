/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The AF_XDP backend's cache: bpf/include/cache.shared.h (the algorithm and
 * the set layout the kernel backend runs in BPF) over an array of sets in
 * memory of its own, allocated once.
 *
 * With shared != 0 several threads may use the cache at once: each set is
 * locked by a spin lock on its own lock word (the word the BPF programs take
 * with their atomics, taken with C atomics here); without, it takes no locks.
 * Also fed to cffi's cdef (see axp_native.h): plain declarations only.
 */
#ifndef AXP_CACHE_H
#define AXP_CACHE_H

#ifndef AXP_CDEF
#include <stddef.h>
#include <stdint.h>
#endif
#include "cache.shared.h"

struct axp_cache;

/*
 * sets of AXP_CACHE_WAYS runs; max_per_key (1..AXP_CACHE_MAX_PER_KEY) and
 * max_dwell_ns as in struct axp_config. NULL on bad arguments or no memory.
 */
struct axp_cache *axp_cache_new(uint32_t sets, uint32_t max_per_key, uint64_t max_dwell_ns,
				int shared);
/*
 * The same over a file (fd, at least sets x sizeof(struct axp_cache_set) bytes), mapped
 * shared: a proxy that restarts maps it again and finds the cache as it was left
 * (`run --keep-cache`). reuse: keep what the file holds, every set's lock opened (a proxy
 * that died may have held one); else every set is zeroed. The fd may be closed afterwards.
 */
struct axp_cache *axp_cache_new_file(uint32_t sets, uint32_t max_per_key, uint64_t max_dwell_ns,
				     int shared, int fd, int reuse);
void axp_cache_free(struct axp_cache *c);
uint32_t axp_cache_sets(const struct axp_cache *c);
uint32_t axp_cache_capacity(const struct axp_cache *c); /* runs: sets x ways */
/*
 * Cache a packet's stack; e->rx_ns is its RX time. Returns the enum
 * axp_cache_result and fills *out (which the caller counts).
 */
int axp_cache_insert(struct axp_cache *c, const struct axp_key *key, const struct axp_entry *e,
		     struct axp_cache_outcome *out);
/* Take the stack of the key's oldest run into *e: AXP_CACHE_HIT or AXP_CACHE_MISS. */
int axp_cache_take(struct axp_cache *c, const struct axp_key *key, struct axp_entry *e,
		   struct axp_cache_outcome *out);
/*
 * A batch hashes every key and prefetches its set first (axp_cache_prefetch
 * below), then inserts or takes with the hash it has: the set's cache miss
 * overlaps other work.
 */
int axp_cache_insert_hashed(struct axp_cache *c, const struct axp_key *key, uint64_t hash,
			    const struct axp_entry *e, struct axp_cache_outcome *out);
int axp_cache_take_hashed(struct axp_cache *c, const struct axp_key *key, uint64_t hash,
			  struct axp_entry *e, struct axp_cache_outcome *out);
/* Copy set `index` out under its lock (tests, dumps); -EINVAL past the last set. */
int axp_cache_copy_set(struct axp_cache *c, uint32_t index, struct axp_cache_set *out);
/* Packets held now, counted in the sets (exact when no thread is changing the cache). */
uint64_t axp_cache_packets(struct axp_cache *c);
void axp_cache_clear(struct axp_cache *c);
/* The shared hash and set index, for the tests to hold to the Python model. */
uint64_t axp_cache_hash_key(const struct axp_key *key);
uint32_t axp_cache_set_of_hash(uint64_t hash, uint32_t sets);

#ifndef AXP_CDEF
struct axp_cache {
	struct axp_cache_set *sets;
	size_t map_size;
	uint32_t nsets;
	uint32_t max_per_key;
	uint64_t max_dwell_ns;
	int shared;
};

static inline void axp_cache_prefetch(const struct axp_cache *c, uint64_t h)
{
	const struct axp_cache_set *set = &c->sets[axp_cache_set_index(h, c->nsets)];

	__builtin_prefetch(set, 1);                     /* line 0: what every scan reads */
	__builtin_prefetch((const char *)set + 64, 1); /* line 1: RX times, which an insert reads */
}
#endif /* !AXP_CDEF */

#endif /* AXP_CACHE_H */
