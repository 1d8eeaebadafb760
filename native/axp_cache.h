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

#endif /* AXP_CACHE_H */
