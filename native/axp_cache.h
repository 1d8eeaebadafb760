/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The AF_XDP backend's cache: label stacks of packets in flight between RX
 * and TX, keyed by struct axp_key (proxy.shared.h), the user-space twin of
 * proxy.bpf.c's LRU hash map.
 *
 * Fixed capacity, allocated once: ceil(capacity / AXP_CACHE_WAYS) sets of
 * AXP_CACHE_WAYS slots. A key hashes to one set; a full set gives up its oldest
 * entry (smallest rx_ns), so entries of packets the SF dropped age out instead
 * of filling the cache, while young entries (packets still in the SF) stay.
 * Every slot stores the full key, compared in full: a hash collision can never
 * hand out another packet's stack.
 *
 * With shared != 0 the cache is safe for several threads (one spinlock per
 * stripe of sets); without, it takes no locks.
 * Also fed to cffi's cdef (see axp_native.h): plain declarations only.
 */
#ifndef AXP_CACHE_H
#define AXP_CACHE_H

#ifndef AXP_CDEF
#include <stdint.h>
#endif
#include "proxy.shared.h"

#define AXP_CACHE_WAYS 8

struct axp_cache;

/* What axp_cache_insert did. */
enum axp_cache_result {
	AXP_CACHE_INSERTED = 0, /* new entry in a free slot */
	AXP_CACHE_EVICTED = 1,  /* new entry in place of the set's oldest one */
	AXP_CACHE_REPLACED = 2, /* key was in flight: its entry replaced (replace != 0) */
	AXP_CACHE_CONFLICT = 3, /* key was in flight: nothing changed (replace == 0) */
};

struct axp_cache *axp_cache_new(uint32_t capacity, int shared);
void axp_cache_free(struct axp_cache *c);
uint32_t axp_cache_capacity(const struct axp_cache *c);
/*
 * A batch hashes every key and prefetches its set first (axp_cache_hash,
 * axp_cache_prefetch below), then inserts or takes with the hash it has: the
 * set's cache miss overlaps other work.
 */
int axp_cache_insert_hashed(struct axp_cache *c, const struct axp_key *key, uint64_t hash,
			    const struct axp_entry *e, int replace);
int axp_cache_take_hashed(struct axp_cache *c, const struct axp_key *key, uint64_t hash,
			  struct axp_entry *out);
/* Returns an enum axp_cache_result. */
int axp_cache_insert(struct axp_cache *c, const struct axp_key *key, const struct axp_entry *e,
		     int replace);
/* Move the entry for key into *out and free its slot. 0 on a hit, -ENOENT on a miss. */
int axp_cache_take(struct axp_cache *c, const struct axp_key *key, struct axp_entry *out);
/* Entries held now (exact when no thread is changing the cache). */
uint64_t axp_cache_count(struct axp_cache *c);
/* Copy up to max entries out (tests, debugging); returns how many. */
uint32_t axp_cache_dump(struct axp_cache *c, struct axp_key *keys, struct axp_entry *entries,
			uint32_t max);
void axp_cache_clear(struct axp_cache *c);

#ifndef AXP_CDEF
/*
 * Internals the per-packet path inlines (hash, set, prefetch); cffi's cdef
 * sees struct axp_cache as opaque.
 *
 * A set is one 32-byte tag line followed by its slots: a lookup reads the tags
 * (one cache line), then compares the full key only where a tag matches. A
 * tag is the low 32 bits of the key's hash with bit 0 forced on; 0 marks a
 * free slot.
 */
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

_Static_assert(sizeof(struct axp_key) == 64, "struct axp_key is hashed as 8 words");

/* 64x64 -> 128-bit multiply, halves folded: the mixing step of wyhash-style hashes */
static inline uint64_t axp_mum(uint64_t a, uint64_t b)
{
	unsigned __int128 r = (unsigned __int128)a * b;

	return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/*
 * Four independent multiplies rather than a chain of eight: the key is hashed
 * once per packet and direction, so the latency of the chain is what counts.
 */
static inline uint64_t axp_cache_hash(const struct axp_key *k)
{
	uint64_t w[8];

	__builtin_memcpy(w, k, sizeof(w));
	return axp_mum(axp_mum(w[0] ^ 0xa0761d6478bd642full, w[1] ^ 0xe7037ed1a0b428dbull) ^
			       axp_mum(w[2] ^ 0x8ebc6af09c88c6e3ull, w[3] ^ 0x589965cc75374cc3ull) ^
			       axp_mum(w[4] ^ 0x1d8e4e27c47d124full, w[5] ^ 0x9e3779b97f4a7c15ull) ^
			       axp_mum(w[6] ^ 0xbf58476d1ce4e5b9ull, w[7] ^ 0x94d049bb133111ebull),
		       0xd6e8feb86659fd93ull);
}

/* set index: the hash's upper half scaled onto [0, nsets) (no modulo, no power of 2 needed) */
static inline uint32_t axp_cache_set_of(const struct axp_cache *c, uint64_t h)
{
	return (uint32_t)(((h >> 32) * (uint64_t)c->nsets) >> 32);
}

static inline void axp_cache_prefetch(const struct axp_cache *c, uint64_t h)
{
	const struct axp_cache_set *set = &c->sets[axp_cache_set_of(c, h)];

	__builtin_prefetch(set->tag, 1);
	__builtin_prefetch(&set->slot[0], 1);
}
#endif /* !AXP_CDEF */

#endif /* AXP_CACHE_H */
