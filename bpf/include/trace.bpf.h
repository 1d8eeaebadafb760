/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The kernel backend's side of `afxdp-proxy trace` (trace.shared.h): sampled
 * packets' events go to a BPF ring buffer (Documentation/bpf/ringbuf.rst),
 * which the reader maps and polls: events are submitted without a wake-up,
 * so a sampled packet never pays for one. What to sample is struct
 * axp_trace_ctl, a global in a section of its own: one map (".data.trace")
 * that `trace` updates, and one load for a packet while tracing is off.
 *
 * A program keeps a struct axp_trace_pkt for its packet, zeroed at its start:
 * the start of each direction samples it (axp_trace_rx, axp_trace_tx), and
 * every stage after that reports only while t->on. The reports are
 * subprograms of their own: the packet path stays as it was laid out, and
 * the verifier sees each of them once per call site.
 */
#ifndef AXP_TRACE_BPF_H
#define AXP_TRACE_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "trace.shared.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, AXP_TRACE_RINGBUF_BYTES);
} axp_trace_events SEC(".maps");

/* Written by `afxdp-proxy trace` while it runs; all zero (off) otherwise. */
struct axp_trace_ctl axp_trace SEC(".data.trace") = {};

/* What a program keeps of its packet for the trace: on is 0 unless it is sampled. */
struct axp_trace_pkt {
	__u64 hash;  /* of its key */
	__u64 value; /* the next event's value */
	__u32 on;
	__u32 sf;    /* its SF, once known */
};

/* One event: what = stage | result << 8; key and e (its depth and labels) may be NULL. */
static __noinline void axp_trace_emit(const struct axp_trace_pkt *t, __u32 what,
				      const struct axp_key *key, const struct axp_entry *e)
{
	struct axp_trace_event *ev;

	if (!t)
		return;
	ev = bpf_ringbuf_reserve(&axp_trace_events, sizeof(*ev), 0);
	if (!ev) {
		__sync_fetch_and_add(&axp_trace.lost, 1);
		return;
	}
	ev->ts_ns = bpf_ktime_get_ns();
	ev->hash = t->hash;
	ev->value = t->value;
	ev->cpu = bpf_get_smp_processor_id();
	ev->result = what >> 8;
	ev->stage = what & 0xff;
	ev->sf = t->sf;
	ev->depth = e ? e->depth : 0;
	__builtin_memset(ev->_pad, 0, sizeof(ev->_pad));
	if (key)
		__builtin_memcpy(&ev->key, key, sizeof(ev->key));
	else
		__builtin_memset(&ev->key, 0, sizeof(ev->key));
	if (e)
		__builtin_memcpy(ev->labels, e->labels, sizeof(ev->labels));
	else
		__builtin_memset(ev->labels, 0, sizeof(ev->labels));
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

/* RX, a packet whose hash is sampled: the filters, then its first event. */
static __noinline void axp_trace_rx_start(struct axp_trace_pkt *t, const struct axp_key *key,
					  const struct axp_entry *e)
{
	if (!t || !key || !e)
		return;
	if ((axp_trace.flow && !axp_trace_flow_match(&axp_trace, key)) ||
	    !axp_trace_label_match(&axp_trace, e->labels, e->depth))
		return;
	t->on = 1;
	axp_trace_emit(t, AXP_TRACE_RX, key, e);
}

/*
 * XDP RX: sample the packet of key (hash h), whose stack e (depth and SF set)
 * goes to its SF in the frame of ctx. The hash bits are tested here: a packet
 * not sampled calls nothing.
 */
static __always_inline void axp_trace_rx(struct axp_trace_pkt *t, const struct axp_key *key, __u64 h,
					 const struct axp_entry *e, struct xdp_md *ctx)
{
	if (!axp_trace.on || !axp_cache_timed(h, axp_trace.mask))
		return;
	t->hash = h;
	t->sf = e->sf;
	t->value = bpf_xdp_get_buff_len(ctx); /* the verifier allows no arithmetic on the end pointer */
	axp_trace_rx_start(t, key, e);
}

static __noinline void axp_trace_tx_start(struct axp_trace_pkt *t, const struct axp_key *key)
{
	if (!t || !key)
		return;
	t->on = !axp_trace.flow || axp_trace_flow_match(&axp_trace, key);
}

/* TX, before the take: sample the packet of key (hash h) as far as its stack does not matter. */
static __always_inline void axp_trace_tx(struct axp_trace_pkt *t, const struct axp_key *key, __u64 h)
{
	if (!axp_trace.on || !axp_cache_timed(h, axp_trace.mask))
		return;
	t->hash = h;
	t->sf = AXP_SF_NONE;
	axp_trace_tx_start(t, key);
}

static __noinline void axp_trace_took(struct axp_trace_pkt *t, const struct axp_key *key,
				      const struct axp_entry *e, __u32 hit)
{
	if (!t || !e)
		return;
	/* a label filter knows the stack now: the one the cache hands back */
	if (axp_trace.label && (!hit || !axp_trace_label_match(&axp_trace, e->labels, e->depth))) {
		t->on = 0;
		return;
	}
	if (hit)
		t->sf = e->sf;
	axp_trace_emit(t, AXP_TRACE_TAKE | (hit ? AXP_CACHE_HIT : AXP_CACHE_MISS) << 8, key, hit ? e : NULL);
}

/* TX: the cache take, a hit (e: the stack, dwell ns) or not. */
static __always_inline void axp_trace_take(struct axp_trace_pkt *t, const struct axp_key *key,
					   const struct axp_entry *e, __u32 hit, __u64 dwell)
{
	if (!t->on)
		return;
	t->value = dwell;
	axp_trace_took(t, key, e, hit);
}

/* RX: what the insert did (struct axp_cache_outcome's result, expired, evicted). */
static __always_inline void axp_trace_insert(struct axp_trace_pkt *t, __u32 result, __u32 expired,
					     __u32 evicted)
{
	if (!t->on)
		return;
	t->value = (__u64)expired << 32 | evicted;
	axp_trace_emit(t, AXP_TRACE_INSERT | result << 8, NULL, NULL);
}

/* Either side's verdict: the reason and the row it was counted in; TX: e, the stack it leaves with. */
static __always_inline void axp_trace_done(struct axp_trace_pkt *t, __u32 stage, __u32 reason, __u32 row,
					   const struct axp_entry *e)
{
	if (!t->on)
		return;
	t->value = 0;
	t->sf = row;
	axp_trace_emit(t, stage | reason << 8, NULL, e);
}

#endif /* AXP_TRACE_BPF_H */
