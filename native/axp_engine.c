// SPDX-License-Identifier: BSD-2-Clause
/*
 * The AF_XDP backend's per-packet engine (see axp_engine.h): configuration,
 * SF table, and the RX and TX decisions on plain buffers, one frame or a
 * batch at a time. No sockets here: the socket loop (axp_xsk.c) and the
 * micro-benchmark (axp_bench.c) call it the same way.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "axp_engine.h"
#include "axp_internal.h"
#include "axp_trace.h"
#include "parse.shared.h"
#include "push.shared.h"

/*
 * on_miss = last: the stack RX most recently sent to one SF, shared by the
 * workers. Writers (RX, only when the stack changes) take the lock and make
 * seq odd while they write; readers (TX misses) copy without a lock and retry
 * while seq was odd or moved, so they never see half of two stacks.
 */
struct axp_last_stack {
	uint32_t lock;
	uint32_t seq;
	uint32_t depth; /* 0: no stack went to the SF yet */
	uint32_t labels[AXP_MAX_LABELS];
} __attribute__((aligned(64)));

struct axp_engine {
	struct axp_config cfg;
	struct axp_cache *cache;
	uint32_t nlabels;
	uint32_t labels[AXP_MAX_SFS]; /* axp_sf_key(VLAN, top label) served, scanned in order: a handful at most */
	uint8_t label_sf[AXP_MAX_SFS];
	uint8_t have_sf[AXP_MAX_SFS];
	struct axp_sf sfs[AXP_MAX_SFS];
	struct axp_last_stack last[AXP_MAX_SFS];
	struct axp_trace_area *trace; /* `afxdp-proxy trace`'s ctl and ring, or NULL */
};

uint64_t axp_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct axp_engine *axp_engine_make(const struct axp_config *cfg, uint32_t threads, int fd,
					  int reuse, int *err)
{
	struct axp_engine *e;

	*err = 0;
	if (cfg->topology != AXP_TOPO_ATTACHED || cfg->key_mode != AXP_KEY_MODE_HASH ||
	    cfg->static_mode) {
		*err = -EOPNOTSUPP;
		return NULL;
	}
	if (!cfg->cache_sets || !cfg->max_per_key || cfg->max_per_key > AXP_CACHE_MAX_PER_KEY) {
		*err = -EINVAL;
		return NULL;
	}
	e = aligned_alloc(64, sizeof(*e));
	if (e)
		memset(e, 0, sizeof(*e));
	if (!e) {
		*err = -ENOMEM;
		return NULL;
	}
	e->cfg = *cfg;
	if (fd < 0)
		e->cache = axp_cache_new(cfg->cache_sets, cfg->max_per_key, cfg->max_dwell_ns,
					 threads > 1);
	else
		e->cache = axp_cache_new_file(cfg->cache_sets, cfg->max_per_key, cfg->max_dwell_ns,
					      threads > 1, fd, reuse);
	if (!e->cache) {
		free(e);
		*err = fd < 0 ? -ENOMEM : (errno ? -errno : -EINVAL);
		return NULL;
	}
	return e;
}

struct axp_engine *axp_engine_new(const struct axp_config *cfg, uint32_t threads, int *err)
{
	return axp_engine_make(cfg, threads, -1, 0, err);
}

struct axp_engine *axp_engine_new_file(const struct axp_config *cfg, uint32_t threads, int fd,
				       int reuse, int *err)
{
	return axp_engine_make(cfg, threads, fd, reuse, err);
}

int axp_engine_add_sf(struct axp_engine *e, uint32_t index, const struct axp_sf *sf)
{
	uint32_t i, key = axp_sf_key(sf->vlan_in, sf->label);

	if (index >= AXP_MAX_SFS || e->have_sf[index] || sf->vlan_in > AXP_VID_MASK ||
	    sf->label >> AXP_VLAN_KEY_SHIFT)
		return -EINVAL;
	for (i = 0; i < e->nlabels; i++)
		if (e->labels[i] == key)
			return -EEXIST;
	e->sfs[index] = *sf;
	e->have_sf[index] = 1;
	e->labels[e->nlabels] = key;
	e->label_sf[e->nlabels] = index;
	e->nlabels++;
	return 0;
}

/* Forget the label entry of SF index, if it has one. */
static void axp_engine_unlabel(struct axp_engine *e, uint32_t index)
{
	uint32_t i;

	for (i = 0; i < e->nlabels; i++) {
		if (e->label_sf[i] != index)
			continue;
		e->nlabels--;
		e->labels[i] = e->labels[e->nlabels];
		e->label_sf[i] = e->label_sf[e->nlabels];
		return;
	}
}

int axp_engine_set_sf(struct axp_engine *e, uint32_t index, const struct axp_sf *sf, int serve)
{
	uint32_t i, key = axp_sf_key(sf->vlan_in, sf->label);

	if (index >= AXP_MAX_SFS || sf->vlan_in > AXP_VID_MASK || sf->label >> AXP_VLAN_KEY_SHIFT)
		return -EINVAL;
	for (i = 0; serve && i < e->nlabels; i++)
		if (e->labels[i] == key && e->label_sf[i] != index)
			return -EEXIST;
	axp_engine_unlabel(e, index);
	e->sfs[index] = *sf;
	e->have_sf[index] = 1;
	if (serve) {
		e->labels[e->nlabels] = key;
		e->label_sf[e->nlabels] = index;
		e->nlabels++;
	}
	return 0;
}

int axp_engine_drop_sf(struct axp_engine *e, uint32_t index)
{
	if (index >= AXP_MAX_SFS || !e->have_sf[index])
		return -ENOENT;
	axp_engine_unlabel(e, index);
	e->have_sf[index] = 0;
	memset(&e->sfs[index], 0, sizeof(e->sfs[index]));
	/* on_miss = last: an SF given this slot later starts without this one's stack */
	memset(&e->last[index], 0, sizeof(e->last[index]));
	return 0;
}

const struct axp_sf *axp_engine_sf(const struct axp_engine *e, uint32_t index)
{
	return index < AXP_MAX_SFS && e->have_sf[index] ? &e->sfs[index] : NULL;
}

void axp_engine_set_trace(struct axp_engine *e, struct axp_trace_area *area)
{
	e->trace = area;
}

struct axp_cache *axp_engine_cache(struct axp_engine *e)
{
	return e->cache;
}

void axp_engine_free(struct axp_engine *e)
{
	if (!e)
		return;
	axp_cache_free(e->cache);
	free(e);
}

/* The SF of a top label on a VLAN (axp_sf_key), or -1. */
static inline int axp_sf_of_key(const struct axp_engine *e, uint32_t key)
{
	uint32_t i;

	for (i = 0; i < e->nlabels; i++)
		if (e->labels[i] == key)
			return e->label_sf[i];
	return -1;
}

/* 1 when some SF is served on VLAN vid (0: untagged). */
static inline int axp_vlan_served(const struct axp_engine *e, uint32_t vid)
{
	uint32_t i;

	for (i = 0; i < e->nlabels; i++)
		if (e->labels[i] >> AXP_VLAN_KEY_SHIFT == vid)
			return 1;
	return 0;
}
/* RX, on_miss = last: the stack in e just went to its SF; keep it if it differs from the last. */
static inline void axp_last_note(struct axp_last_stack *l, const struct axp_entry *e)
{
	uint32_t i, same, seq;

	/* a racy look first: while the stack stays the same (a static chain) nothing is written */
	same = __atomic_load_n(&l->depth, __ATOMIC_RELAXED) == e->depth;
	for (i = 0; i < AXP_MAX_LABELS; i++)
		same &= __atomic_load_n(&l->labels[i], __ATOMIC_RELAXED) == e->labels[i];
	if (same)
		return;
	while (__atomic_exchange_n(&l->lock, 1, __ATOMIC_ACQUIRE))
		axp_cpu_relax();
	seq = l->seq;
	__atomic_store_n(&l->seq, seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	__atomic_store_n(&l->depth, e->depth, __ATOMIC_RELAXED);
	for (i = 0; i < AXP_MAX_LABELS; i++)
		__atomic_store_n(&l->labels[i], e->labels[i], __ATOMIC_RELAXED);
	__atomic_store_n(&l->seq, seq + 2, __ATOMIC_RELEASE);
	__atomic_store_n(&l->lock, 0, __ATOMIC_RELEASE);
}

/* TX, on_miss = last: the SF's last stack into *e. Returns 0, or -1 while there is none. */
static inline int axp_last_take(struct axp_last_stack *l, struct axp_entry *e)
{
	uint32_t i, s0, s1;

	for (;;) {
		s0 = __atomic_load_n(&l->seq, __ATOMIC_ACQUIRE);
		if (s0 & 1) {
			axp_cpu_relax();
			continue;
		}
		e->depth = (uint8_t)__atomic_load_n(&l->depth, __ATOMIC_RELAXED);
		for (i = 0; i < AXP_MAX_LABELS; i++)
			e->labels[i] = __atomic_load_n(&l->labels[i], __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		s1 = __atomic_load_n(&l->seq, __ATOMIC_RELAXED);
		if (s0 == s1)
			break;
	}
	e->rx_ns = 0;
	return e->depth ? 0 : -1;
}

static inline void axp_write_eth(uint8_t *eth, const uint8_t *dst, const uint8_t *src,
				 uint16_t proto_be)
{
	memcpy(eth, dst, 6);
	memcpy(eth + 6, src, 6);
	memcpy(eth + 12, &proto_be, 2);
}

/*
 * One frame between the steps of a batch, each run for every frame of a chunk
 * before the next: RX parses (step 1), hashes and prefetches (2), caches and
 * pops (3); TX parses (1), hashes and prefetches (2), takes (3) and pushes
 * (4). The cache misses of a chunk overlap instead of stalling one after the
 * other, and no step reads, as a wider load, fields that the step before
 * wrote a moment ago: such a load waits for the stores to drain (measured:
 * 49 -> 42 ns of RX, 62 -> 51 ns of TX per packet at 8 labels, make bench-native).
 */
struct axp_job {
	struct axp_key key;
	struct axp_entry entry;
	struct axp_frame f; /* RX: the parsed stack */
	uint64_t hash;
	int idx;            /* RX: the SF of the top label */
	uint16_t proto;     /* TX: the ethertype, as on the wire */
	uint32_t reason;    /* TX: the counter of a miss, 0 on a hit */
	uint32_t n;         /* TX: labels to push */
	uint8_t sf;         /* TX: the SF whose next hop the frame goes to */
	uint8_t traced;     /* sampled by `afxdp-proxy trace` (trace.shared.h): report its stages */
};

#define AXP_CHUNK 16     /* frames a step runs for before the next step */
#define AXP_PENDING 0xff /* verdict slot: the next step still to run */

/* The counter row of SF sf in cnt (AXP_CNT_ROWS rows of AXP_XCNT_MAX); any other sf: AXP_SF_NONE's. */
static inline uint64_t *axp_row(uint64_t *cnt, uint32_t sf)
{
	return cnt + (size_t)(sf < AXP_MAX_SFS ? sf : AXP_SF_NONE) * AXP_XCNT_MAX;
}

/* One frame seen in a direction (AXP_CNT_RX_PACKETS or AXP_CNT_TX_PACKETS) and its reason. */
static inline void axp_count_frame(uint64_t *cnt, uint32_t sf, uint32_t seen, uint32_t reason)
{
	uint64_t *row = axp_row(cnt, sf);

	row[seen]++;
	row[reason]++;
}

/* A stage of a traced packet (trace.shared.h); key and entry may be NULL. */
static inline void axp_trace(const struct axp_engine *e, const struct axp_job *j, uint32_t stage,
			     uint32_t result, uint32_t sf, uint64_t value, const struct axp_key *key,
			     const struct axp_entry *entry)
{
	if (j->traced)
		axp_trace_report(e->trace, stage, result, j->hash, sf, value, key, entry);
}

/* axp_count_frame of a frame whose packet may be traced: its verdict is reported too. */
static inline void axp_count_done(const struct axp_engine *e, uint64_t *cnt, const struct axp_job *j,
				  uint32_t sf, uint32_t seen, uint32_t reason, const struct axp_entry *entry)
{
	axp_count_frame(cnt, sf, seen, reason);
	axp_trace(e, j, seen == AXP_CNT_RX_PACKETS ? AXP_TRACE_RX_DONE : AXP_TRACE_TX_DONE, reason,
		  sf < AXP_MAX_SFS ? sf : AXP_SF_NONE, 0, NULL, entry);
}

/* RX step 1: returns an enum axp_verdict, or AXP_PENDING when the frame goes on to the cache. */
static inline int axp_rx_parse(const struct axp_engine *e, uint64_t *cnt, const uint8_t *frame,
			       uint32_t len, struct axp_job *j)
{
	int res, idx = -1;

	memset(&j->entry, 0, sizeof(j->entry));
	memset(&j->key, 0, sizeof(j->key));
	memset(&j->f, 0, sizeof(j->f));
	res = axp_parse_mpls_frame(frame, frame + len, j->entry.labels, &j->f, &j->key);
	/* the decisions of proxy.bpf.c's axp_xdp_rx, in its order */
	if (j->f.vlans.n && !axp_vlan_served(e, j->f.vid)) {
		axp_count_frame(cnt, AXP_SF_NONE, AXP_CNT_RX_PACKETS, AXP_CNT_RX_VLAN_OTHER);
		return AXP_VERDICT_PASS;
	}
	if (res == AXP_PARSE_NOT_MPLS) {
		axp_count_frame(cnt, AXP_SF_NONE, AXP_CNT_RX_PACKETS,
				j->f.vlans.n ? AXP_CNT_RX_VLAN_OTHER : AXP_CNT_RX_NOT_MPLS);
		return AXP_VERDICT_PASS;
	}
	if (res == AXP_PARSE_RESERVED) {
		axp_count_frame(cnt, AXP_SF_NONE, AXP_CNT_RX_PACKETS, AXP_CNT_RX_RESERVED_LABEL);
		return AXP_VERDICT_PASS;
	}
	/* the top label decides first, on its VLAN: other nodes' traffic passes whatever it carries */
	if (j->f.top_off) {
		idx = axp_sf_of_key(e, axp_sf_key(j->f.vid, axp_label_of(j->entry.labels[0])));
		if (idx < 0) {
			axp_count_frame(cnt, AXP_SF_NONE, AXP_CNT_RX_PACKETS, AXP_CNT_RX_OTHER_LABEL);
			return AXP_VERDICT_PASS;
		}
		if (axp_ttl_of(j->entry.labels[0]) <= 1) {
			/* as axp_xdp_rx; with pass, xsk.bpf.c hands them to the host before a socket sees them */
			if (e->cfg.on_ttl_expired == AXP_TTL_PASS) {
				axp_count_frame(cnt, idx, AXP_CNT_RX_PACKETS, AXP_CNT_RX_TTL_EXPIRED_PASS);
				return AXP_VERDICT_PASS;
			}
			axp_count_frame(cnt, idx, AXP_CNT_RX_PACKETS, AXP_CNT_RX_TTL_EXPIRED);
			return AXP_VERDICT_DROP;
		}
	}
	if (res != AXP_PARSE_OK || idx < 0) {
		axp_count_frame(cnt, idx < 0 ? AXP_SF_NONE : (uint32_t)idx, AXP_CNT_RX_PACKETS,
				axp_parse_counter(res));
		return AXP_VERDICT_DROP;
	}
	j->idx = idx;
	return AXP_PENDING;
}

/* RX step 2: hash the key, prefetch its set, and decide whether trace samples the packet. */
static inline void axp_rx_hash(const struct axp_engine *e, uint32_t len, struct axp_job *j)
{
	j->hash = axp_cache_hash(&j->key);
	axp_cache_prefetch(e->cache, j->hash);
	j->traced = axp_trace_on(e->trace) && axp_trace_pick(&e->trace->ctl, j->hash, &j->key) &&
		    axp_trace_label_match(&e->trace->ctl, j->entry.labels, j->f.depth);
	if (j->traced) {
		j->entry.depth = j->f.depth;
		axp_trace(e, j, AXP_TRACE_RX, 0, j->idx, len - (j->f.l3_off - AXP_ETH_HLEN), &j->key,
			  &j->entry);
	}
}

/* RX step 3: cache the stack, pop it. */
static inline int axp_rx_commit(struct axp_engine *e, uint64_t *cnt, uint8_t *frame, uint32_t len,
				uint64_t now, struct axp_job *j, struct axp_pkt *out)
{
	const struct axp_sf *sf = &e->sfs[j->idx];
	uint64_t *row = axp_row(cnt, j->idx);
	struct axp_cache_outcome o;
	uint32_t pop;

	j->entry.depth = j->f.depth;
	j->entry.sf = j->idx;
	j->entry.vlans = j->f.vlans;
	j->entry.rx_ns = now;
	axp_cache_insert_hashed(e->cache, &j->key, j->hash, &j->entry, &o);
	axp_trace(e, j, AXP_TRACE_INSERT, o.result, j->idx, (uint64_t)o.expired << 32 | o.evicted, NULL, NULL);
	/* the runs freed or pushed out are counted in the row of the SF whose insert did it */
	row[AXP_CNT_EXPIRED] += o.expired;
	row[AXP_CNT_EVICTIONS] += o.evicted;
	if (o.result == AXP_CACHE_KEY_FULL) {
		axp_count_done(e, cnt, j, j->idx, AXP_CNT_RX_PACKETS, AXP_CNT_RX_KEY_FULL, NULL);
		return AXP_VERDICT_DROP;
	}
	row[AXP_CNT_CACHE_INSERTS]++;
	if (e->cfg.on_miss == AXP_MISS_LAST)
		axp_last_note(&e->last[j->idx], &j->entry);

	/* pop: an Ethernet header towards the SF right in front of the IP header */
	pop = j->f.l3_off - AXP_ETH_HLEN;
	axp_write_eth(frame + pop, sf->sf_mac, sf->to_sf_mac, axp_htons(j->f.l3_proto));
	axp_count_done(e, cnt, j, j->idx, AXP_CNT_RX_PACKETS, AXP_CNT_RX_POPPED, NULL);
	/* proxied all the same; the count tells how often such chains come by */
	if (j->key.flags & AXP_KEYF_EXT_LIMIT)
		row[AXP_CNT_RX_KEY_EXT_LIMIT]++;
	out->off = (int32_t)pop;
	out->len = len - pop;
	out->sf = j->idx;
	return AXP_VERDICT_TX;
}

void axp_rx_batch(struct axp_engine *e, uint64_t *cnt, uint8_t *const *frames,
		  const uint32_t *lens, uint32_t n, uint64_t now_ns, struct axp_pkt *out,
		  uint8_t *verdicts)
{
	struct axp_job jobs[AXP_CHUNK];
	uint32_t base, i, m;

	if (!now_ns)
		now_ns = axp_now_ns();
	for (base = 0; base < n; base += m) {
		m = n - base < AXP_CHUNK ? n - base : AXP_CHUNK;
		for (i = 0; i < m; i++)
			verdicts[base + i] = axp_rx_parse(e, cnt, frames[base + i], lens[base + i], &jobs[i]);
		for (i = 0; i < m; i++)
			if (verdicts[base + i] == AXP_PENDING)
				axp_rx_hash(e, lens[base + i], &jobs[i]);
		for (i = 0; i < m; i++)
			if (verdicts[base + i] == AXP_PENDING)
				verdicts[base + i] = axp_rx_commit(e, cnt, frames[base + i], lens[base + i],
								   now_ns, &jobs[i], &out[base + i]);
	}
}

int axp_rx_frame(struct axp_engine *e, uint64_t *cnt, uint8_t *frame, uint32_t len,
		 uint64_t now_ns, struct axp_pkt *out)
{
	uint8_t verdict;

	axp_rx_batch(e, cnt, &frame, &len, 1, now_ns, out, &verdict);
	return verdict;
}

/* TX step 1: returns an enum axp_verdict, or AXP_PENDING when the frame goes on to the cache. */
static inline int axp_tx_parse(const struct axp_engine *e, uint64_t *cnt, const uint8_t *frame,
			       uint32_t len, uint32_t sf, struct axp_job *j)
{
	int res;

	if (len < AXP_ETH_HLEN) {
		axp_count_frame(cnt, sf, AXP_CNT_TX_PACKETS, AXP_CNT_TX_MALFORMED);
		return AXP_VERDICT_DROP;
	}
	memcpy(&j->proto, frame + 12, 2);
	if (j->proto != axp_htons(AXP_ETH_P_IP) && j->proto != axp_htons(AXP_ETH_P_IPV6)) {
		axp_count_frame(cnt, sf, AXP_CNT_TX_PACKETS, AXP_CNT_TX_NOT_IP);
		return AXP_VERDICT_PASS;
	}
	memset(&j->key, 0, sizeof(j->key));
	res = axp_derive_key(frame + AXP_ETH_HLEN, frame + len, &j->key);
	if (res == AXP_PARSE_NOT_IP) {
		axp_count_frame(cnt, sf, AXP_CNT_TX_PACKETS, AXP_CNT_TX_NOT_IP);
		return AXP_VERDICT_PASS;
	}
	if (res != AXP_PARSE_OK) {
		axp_count_frame(cnt, sf, AXP_CNT_TX_PACKETS, AXP_CNT_TX_MALFORMED);
		return AXP_VERDICT_DROP;
	}
	return AXP_PENDING;
}

/* TX step 2: hash the key, prefetch its set, and decide whether trace samples the packet. */
static inline void axp_tx_hash(const struct axp_engine *e, struct axp_job *j)
{
	j->hash = axp_cache_hash(&j->key);
	axp_cache_prefetch(e->cache, j->hash);
	/* a label filter waits for the stack the cache hands back (axp_trace_take) */
	j->traced = axp_trace_on(e->trace) && axp_trace_pick(&e->trace->ctl, j->hash, &j->key);
}

/* TX: the take of a traced packet, a hit or not; a label filter decides on the stack it got. */
static void axp_trace_take(const struct axp_engine *e, struct axp_job *j, int hit, uint64_t now)
{
	const struct axp_trace_ctl *c = &e->trace->ctl;

	if (c->label && (!hit || !axp_trace_label_match(c, j->entry.labels, j->entry.depth))) {
		j->traced = 0;
		return;
	}
	axp_trace(e, j, AXP_TRACE_TAKE, hit ? AXP_CACHE_HIT : AXP_CACHE_MISS, hit ? j->entry.sf : AXP_SF_NONE,
		  hit && now > j->entry.rx_ns ? now - j->entry.rx_ns : 0, &j->key, hit ? &j->entry : NULL);
}

/*
 * TX step 3: take the entry and decide what goes in front of the packet: j->sf,
 * j->n (labels to push: the stack minus the top label, which addressed this
 * SF) and j->reason (the counter of a miss, 0 on a hit). Returns an enum
 * axp_verdict, or AXP_PENDING when step 4 pushes.
 */
static inline int axp_tx_take(struct axp_engine *e, uint64_t *cnt, uint32_t sf_idx, uint64_t now,
			      struct axp_job *j)
{
	struct axp_cache_outcome o;
	uint64_t *row, dwell;
	uint32_t n;
	int known = sf_idx < AXP_MAX_SFS && e->have_sf[sf_idx], hit;

	j->reason = 0;
	hit = axp_cache_take_hashed(e->cache, &j->key, j->hash, &j->entry, &o) == AXP_CACHE_HIT;
	if (j->traced)
		axp_trace_take(e, j, hit, now);
	if (!hit) {
		if (e->cfg.on_miss == AXP_MISS_DROP) {
			axp_count_done(e, cnt, j, sf_idx, AXP_CNT_TX_PACKETS, AXP_CNT_TX_MISS_DROP, NULL);
			return AXP_VERDICT_DROP;
		}
		/* the tags a miss leaves with: the SF's vlan_out, if it names one */
		memset(&j->entry.vlans, 0, sizeof(j->entry.vlans));
		/* last: the stack RX most recently sent to the SF the packet came back from */
		if (e->cfg.on_miss == AXP_MISS_LAST && known &&
		    !axp_last_take(&e->last[sf_idx], &j->entry)) {
			j->entry.sf = sf_idx;
			j->reason = AXP_CNT_TX_MISS_LAST;
			goto stack;
		}
		/*
		 * pass: user space cannot hand the packet to the kernel to route, so it
		 * goes on unlabelled to the next hop of the SF it came back from
		 */
		if (!known) {
			axp_count_done(e, cnt, j, sf_idx, AXP_CNT_TX_PACKETS, AXP_CNT_TX_MISS_PASS, NULL);
			return AXP_VERDICT_PASS;
		}
		j->sf = sf_idx;
		j->n = 0;
		j->reason = AXP_CNT_TX_MISS_PASS;
		return AXP_PENDING;
	}
	row = axp_row(cnt, j->entry.sf);
	row[AXP_CNT_CACHE_TAKES]++;
	/* the dwell time of the same keys as the kernel backend's (clock reads are per batch here) */
	if (axp_cache_timed(j->hash, e->cfg.dwell_sample_mask)) {
		/* another worker may have stamped the entry after this batch read the clock */
		dwell = now > j->entry.rx_ns ? now - j->entry.rx_ns : 0;
		row[AXP_CNT_TX_DWELL_NS] += dwell;
		row[AXP_CNT_TX_DWELL_HIST + axp_dwell_bucket(dwell)]++;
	}
stack:
	n = j->entry.depth;
	sf_idx = j->entry.sf;
	if (n < 1 || n > AXP_MAX_LABELS || sf_idx >= AXP_MAX_SFS || !e->have_sf[sf_idx]) {
		/* an entry no RX could have written */
		axp_count_done(e, cnt, j, sf_idx, AXP_CNT_TX_PACKETS, AXP_CNT_TX_MALFORMED, &j->entry);
		return AXP_VERDICT_DROP;
	}
	j->sf = sf_idx;
	j->n = n - 1;
	return AXP_PENDING;
}

/*
 * Copy n labels (n <= AXP_MAX_LABELS - 1) as whole chunks of fixed size, the last
 * two overlapping: no call to memcpy, and no load narrower than the stores of
 * the entry's copy out of the cache, which a batch pass ago wrote it.
 */
static inline void axp_copy_labels(uint8_t *dst, const __be32 *src, uint32_t n)
{
	const uint8_t *s = (const uint8_t *)src;
	uint32_t len = n * 4;

	if (len >= 32) {
		memcpy(dst, s, 32);
		memcpy(dst + len - 32, s + len - 32, 32);
	} else if (len >= 16) {
		memcpy(dst, s, 16);
		memcpy(dst + len - 16, s + len - 16, 16);
	} else if (len >= 8) {
		memcpy(dst, s, 8);
		memcpy(dst + len - 8, s + len - 8, 8);
	} else if (len) {
		memcpy(dst, s, 4);
	}
}

/* TX step 4: push the labels step 3 chose, the tags and the Ethernet header towards the next hop. */
static inline int axp_tx_push(const struct axp_engine *e, uint64_t *cnt, uint8_t *frame, uint32_t len,
			      uint32_t headroom, struct axp_job *j, struct axp_pkt *out)
{
	const struct axp_sf *sf = &e->sfs[j->sf];
	const struct axp_entry *shown = j->reason == AXP_CNT_TX_MISS_PASS ? NULL : &j->entry;
	uint32_t n = j->n, t;
	uint16_t proto = j->proto;
	__be32 tags[AXP_MAX_VLANS], lse;

	t = axp_vlans_out(sf, &j->entry.vlans, tags);
	if ((n + t) * 4 > headroom) {
		axp_count_done(e, cnt, j, j->sf, AXP_CNT_TX_PACKETS, AXP_CNT_TX_PUSH_FAILED, shown);
		return AXP_VERDICT_DROP;
	}
	/* push in place: the labels end where the IP header starts, tags and MACs precede them */
	frame -= (n + t) * 4;
	len += (n + t) * 4;
	axp_copy_labels(frame + AXP_ETH_HLEN + t * 4, &j->entry.labels[1], n);
	if (n) {
		proto = axp_htons(AXP_ETH_P_MPLS_UC);
		/* written into the frame after the copy, so the copy reads no half-written word */
		if (e->cfg.ttl_model == AXP_TTL_UNIFORM) {
			lse = axp_ttl_uniform_lse(j->entry.labels[0], j->entry.labels[1]);
			memcpy(frame + AXP_ETH_HLEN + t * 4, &lse, 4);
			j->entry.labels[1] = lse; /* as trace shows the stack */
		}
	}
	axp_count_done(e, cnt, j, j->sf, AXP_CNT_TX_PACKETS,
		       j->reason ? j->reason : n ? AXP_CNT_TX_PUSHED : AXP_CNT_TX_PLAIN, shown);
	memcpy(frame, sf->next_hop_mac, 6);
	memcpy(frame + 6, sf->net_out_mac, 6);
	memcpy(frame + 12, tags, t * 4);
	memcpy(frame + 12 + t * 4, &proto, 2);
	out->off = -(int32_t)((n + t) * 4);
	out->len = len;
	out->sf = j->sf;
	return AXP_VERDICT_TX;
}

void axp_tx_batch(struct axp_engine *e, uint64_t *cnt, uint8_t *const *frames,
		  const uint32_t *lens, const uint32_t *headroom, uint32_t sf, uint32_t n,
		  uint64_t now_ns, struct axp_pkt *out, uint8_t *verdicts)
{
	struct axp_job jobs[AXP_CHUNK];
	uint32_t base, i, m;

	if (!now_ns)
		now_ns = axp_now_ns();
	for (base = 0; base < n; base += m) {
		m = n - base < AXP_CHUNK ? n - base : AXP_CHUNK;
		for (i = 0; i < m; i++)
			verdicts[base + i] = axp_tx_parse(e, cnt, frames[base + i], lens[base + i], sf,
							  &jobs[i]);
		for (i = 0; i < m; i++)
			if (verdicts[base + i] == AXP_PENDING)
				axp_tx_hash(e, &jobs[i]);
		for (i = 0; i < m; i++)
			if (verdicts[base + i] == AXP_PENDING)
				verdicts[base + i] = axp_tx_take(e, cnt, sf, now_ns, &jobs[i]);
		for (i = 0; i < m; i++)
			if (verdicts[base + i] == AXP_PENDING)
				verdicts[base + i] = axp_tx_push(e, cnt, frames[base + i], lens[base + i],
								 headroom[base + i], &jobs[i], &out[base + i]);
	}
}

int axp_tx_frame(struct axp_engine *e, uint64_t *cnt, uint8_t *frame, uint32_t len,
		 uint32_t headroom, uint32_t sf, uint64_t now_ns, struct axp_pkt *out)
{
	uint8_t verdict;

	axp_tx_batch(e, cnt, &frame, &len, &headroom, sf, 1, now_ns, out, &verdict);
	return verdict;
}
