/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Following sampled packets through the proxy (`afxdp-proxy trace`), written
 * once for the BPF programs (trace.bpf.h: a BPF ring buffer), the AF_XDP
 * engine (native/axp_trace.h: a ring in a file the workers map) and, through
 * cffi, the Python reader (afxdp_proxy/trace.py). Plain C, no helpers.
 *
 * Sampling. `trace` writes a struct axp_trace_ctl into the data path (a BPF
 * global, a shared page) and clears it when it leaves; while ctl.on is 0 a
 * packet costs one load and a branch. A packet is sampled by its cache key's
 * hash (axp_cache_hash), which RX and TX both compute: one packet is followed
 * at both ends without a flag in its cache entry. 1 in N (N a power of two)
 * is the rule dwell_sample uses (cache.shared.h's axp_cache_timed: hash bits
 * from 16 on, masked with N - 1, are 0), so every packet of a key is sampled
 * or none is, and with N >= dwell_sample every sampled packet's dwell is
 * measured too. Filters narrow it down: a
 * flow (the key's protocol, addresses, ports; a tunnel's outer ones) at both
 * ends, a label at RX on the stack the packet arrived with and at TX on the
 * stack the cache hands back.
 *
 * Events. Fixed-size records, one per stage a sampled packet passes:
 *
 *   RX      the RX side chose the packet's SF: its key, the stack it arrived
 *           with (labels[0] is the SF label); value: the bytes of the frame
 *           that leaves for the SF
 *   INSERT  the cache insert: result is an enum axp_cache_result (MISS: not
 *           tried, the set's lock was held too long); value: packets of runs
 *           it freed, expired << 32 | evicted
 *   RX_DONE what RX did with it: result is the reason it was counted under
 *           (enum axp_counter: rx_popped, rx_key_full, ...)
 *   TAKE    the TX side's cache take: result HIT or MISS; on a hit the stack
 *           handed back and value = the SF's dwell (RX to TX) in ns, when
 *           the packet's is measured (the kernel backend: dwell_sample),
 *           else 0
 *   TX_DONE what TX did with it: result is its reason (tx_pushed, tx_plain,
 *           tx_miss_pass, ...); labels: the stack it left with, of which
 *           labels[1..depth) were pushed (the top label addressed the SF)
 *
 * Frames the RX side passes before its key and SF are known (not SR-MPLS,
 * another node's label, malformed) are never sampled; nor is the static
 * proxy, which has no key to follow a packet by.
 */
#ifndef AXP_TRACE_SHARED_H
#define AXP_TRACE_SHARED_H

#include "proxy.shared.h"
#include "cache.shared.h"

/* bytes of the kernel backend's BPF ring buffer: about 1500 events */
#define AXP_TRACE_RINGBUF_BYTES 262144

enum axp_trace_stage {
	AXP_TRACE_RX = 1,
	AXP_TRACE_INSERT = 2,
	AXP_TRACE_RX_DONE = 3,
	AXP_TRACE_TAKE = 4,
	AXP_TRACE_TX_DONE = 5,
};

/* struct axp_trace_ctl.flow: the fields of the key a flow filter compares */
enum axp_trace_flow {
	AXP_TRACE_FLOW_PROTO = 1,
	AXP_TRACE_FLOW_SADDR = 2,  /* saddr (and family) */
	AXP_TRACE_FLOW_DADDR = 4,  /* daddr (and family) */
	AXP_TRACE_FLOW_SPORT = 8,
	AXP_TRACE_FLOW_DPORT = 16,
	AXP_TRACE_FLOW_EITHER = 32, /* with SADDR: saddr is either of the key's addresses */
};

/*
 * What `trace` sets for the data path, and what the data path reports back.
 * Packet fields in network order, as struct axp_key holds them (IPv4 in
 * saddr[0], daddr[0], the other words 0).
 */
struct axp_trace_ctl {
	__u32 on;     /* 0: tracing off, the one field an unsampled packet reads */
	__u32 mask;   /* N - 1 for 1 in N */
	__u32 label;  /* 0, or only stacks holding this label */
	__u32 owner;  /* pid of the `trace` that set it: the proxy clears it once that is gone */
	__u32 flow;   /* enum axp_trace_flow bits; 0: any flow */
	__u8 proto;
	__u8 family;  /* 4 or 6, with an address */
	__be16 sport;
	__be16 dport;
	__u16 _pad;
	__be32 saddr[4];
	__be32 daddr[4];
	__u32 _pad2;
	__u64 lost;   /* events the data path dropped: its ring was full */
};

/* One stage of one sampled packet (see the top of this file). 168 bytes. */
struct axp_trace_event {
	__u64 ts_ns;   /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 hash;    /* axp_cache_hash of the key: RX and TX of one packet agree */
	__u64 value;   /* by stage */
	__u32 cpu;     /* the CPU it ran on */
	__u16 result;  /* by stage */
	__u8 stage;    /* enum axp_trace_stage */
	__u8 sf;       /* SF index; AXP_SF_NONE when none is known */
	__u8 depth;    /* labels[] used, 0 for a stage without a stack */
	__u8 _pad[7];
	struct axp_key key; /* RX and TAKE; zero in the others */
	__be32 labels[AXP_MAX_LABELS];
};

#ifndef AXP_CDEF
#include "parse.shared.h" /* axp_label_of; not for cffi's cdef */

_Static_assert(sizeof(struct axp_trace_ctl) == 72, "struct axp_trace_ctl: no implicit padding");
_Static_assert(sizeof(struct axp_trace_event) == 168, "struct axp_trace_event: no implicit padding");

static __always_inline int axp_trace_addr_eq(const __be32 *a, const __be32 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

/* 1 when the key is of the flow c names (every field c->flow sets matches) */
static __always_inline int axp_trace_flow_match(const struct axp_trace_ctl *c, const struct axp_key *k)
{
	__u32 f = c->flow;

	if ((f & AXP_TRACE_FLOW_PROTO) && k->proto != c->proto)
		return 0;
	if ((f & AXP_TRACE_FLOW_SPORT) && k->sport != c->sport)
		return 0;
	if ((f & AXP_TRACE_FLOW_DPORT) && k->dport != c->dport)
		return 0;
	if ((f & (AXP_TRACE_FLOW_SADDR | AXP_TRACE_FLOW_DADDR)) && k->family != c->family)
		return 0;
	if ((f & AXP_TRACE_FLOW_SADDR) && !axp_trace_addr_eq(k->saddr, c->saddr) &&
	    !((f & AXP_TRACE_FLOW_EITHER) && axp_trace_addr_eq(k->daddr, c->saddr)))
		return 0;
	if ((f & AXP_TRACE_FLOW_DADDR) && !axp_trace_addr_eq(k->daddr, c->daddr))
		return 0;
	return 1;
}

/* 1 when a packet of key hash h and key k is sampled, as far as its stack does not matter */
static __always_inline int axp_trace_pick(const struct axp_trace_ctl *c, __u64 h,
					  const struct axp_key *k)
{
	return axp_cache_timed(h, c->mask) && (!c->flow || axp_trace_flow_match(c, k));
}

/* 1 when the stack (depth labels, as on the wire) holds c->label, or c names none */
static __always_inline int axp_trace_label_match(const struct axp_trace_ctl *c, const __be32 *labels,
						 __u32 depth)
{
	__u32 i, want = c->label;

	if (!want)
		return 1;
AXP_CACHE_UNROLL
	for (i = 0; i < AXP_MAX_LABELS; i++)
		if (i < depth && axp_label_of(labels[i]) == want)
			return 1;
	return 0;
}
#endif /* !AXP_CDEF */

#endif /* AXP_TRACE_SHARED_H */
