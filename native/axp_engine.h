/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The AF_XDP backend's per-packet engine: configuration, SF table, cache, and
 * the functions axp_rx_frame / axp_tx_frame (and their batch forms) on plain
 * buffers. They make the decisions of proxy.bpf.c's axp_xdp_rx / axp_xdp_tx
 * (attached topology, hash keys) with the same parser and counters, so the
 * packet table tests them without sockets, the micro-benchmark (axp_bench.h)
 * times them and the socket loop (axp_xsk.h) runs them on its batches.
 *
 * Also fed to cffi's cdef (see axp_native.h): plain declarations only.
 * Every int-returning call returns 0 (or a non-negative value) on success
 * and a negative errno on failure unless it says otherwise.
 */
#ifndef AXP_ENGINE_H
#define AXP_ENGINE_H

#ifndef AXP_CDEF
#include <stdint.h>
#endif
#include "proxy.shared.h"
#include "axp_cache.h"

/*
 * Counters of the AF_XDP backend: every slot of enum axp_counter (same names
 * and meaning as the kernel backend's), then these. One array of
 * AXP_XCNT_MAX per row, AXP_CNT_ROWS rows (one per SF, then AXP_SF_NONE, where
 * the worker's own counters go) per queue; names are exported to Python from
 * both enums. The engine writes the axp_counter slots, the socket loop (and
 * xsk.bpf.c) the ones below.
 */
enum axp_xsk_counter {
	AXP_XCNT_XDP_NO_SOCKET = AXP_CNT_MAX, /* drop (xsk.bpf.c): no socket on the frame's queue */
	AXP_XCNT_RX_BATCHES,        /* non-empty RX ring reads */
	AXP_XCNT_TX_KICKS,          /* sendto() calls that drive TX (copy mode) */
	AXP_XCNT_FILL_WAKEUPS,      /* recvfrom() calls for a fill ring that asked for a wakeup */
	AXP_XCNT_SLEEPS,            /* poll() calls of an idle worker */
	AXP_XCNT_TX_RING_FULL,      /* drop: a TX ring stayed full */
	AXP_XCNT_TX_ERRORS,         /* sendto() failures other than "try again" */
	AXP_XCNT_FILL_STARVED,      /* a fill ring could not be topped up: no free frame */
	AXP_XCNT_XSK_RX_DROPPED,    /* kernel XDP_STATISTICS, summed over the worker's sockets */
	AXP_XCNT_XSK_RX_RING_FULL,
	AXP_XCNT_XSK_FILL_RING_EMPTY,
	AXP_XCNT_XSK_RX_INVALID,
	AXP_XCNT_XSK_TX_INVALID,
	AXP_XCNT_MAX
};

struct axp_engine;

/* What a per-packet function decided. */
enum axp_verdict {
	AXP_VERDICT_DROP = 0, /* counted; the frame is recycled */
	AXP_VERDICT_PASS = 1, /* not the proxy's (the XDP program normally passes these) */
	AXP_VERDICT_TX = 2,   /* send the frame described by struct axp_pkt */
};

/* The frame to send: it now starts at buf + off (off < 0: grew in front) and is len long. */
struct axp_pkt {
	int32_t off;
	uint32_t len;
	uint32_t sf; /* the SF whose to_sf (RX) or net_out (TX) the frame leaves by */
};

/*
 * cfg must say topology attached, key_mode hash, static_mode 0: the rest is
 * what the kernel backend serves and AF_XDP cannot (-EOPNOTSUPP). Its cache
 * fields size and tune the cache (-EINVAL when out of range). threads > 1
 * makes the cache thread-safe.
 */
struct axp_engine *axp_engine_new(const struct axp_config *cfg, uint32_t threads, int *err);
/* The same with the cache in a file (axp_cache_new_file: `run --keep-cache`). */
struct axp_engine *axp_engine_new_file(const struct axp_config *cfg, uint32_t threads, int fd,
				       int reuse, int *err);
int axp_engine_add_sf(struct axp_engine *e, uint32_t index, const struct axp_sf *sf);
/*
 * A reload: SF index takes sf (added or changed); serve 0 keeps it for the packets in flight
 * (its return path, its entries) but takes no new ones (its label is no longer served).
 * axp_engine_drop_sf forgets it (and the stack on_miss = last kept for it). While sockets run,
 * call these between axp_xsk_pause and axp_xsk_resume only.
 */
int axp_engine_set_sf(struct axp_engine *e, uint32_t index, const struct axp_sf *sf, int serve);
int axp_engine_drop_sf(struct axp_engine *e, uint32_t index);
struct axp_cache *axp_engine_cache(struct axp_engine *e);
/*
 * Report the stages of the packets `afxdp-proxy trace` samples into area (axp_trace.h); NULL:
 * no more. While no per-packet function runs (before the workers start, after they stop): a
 * packet sampled at its first step reports into the same area at its second.
 */
struct axp_trace_area;
void axp_engine_set_trace(struct axp_engine *e, struct axp_trace_area *area);
void axp_engine_free(struct axp_engine *e);

/* CLOCK_MONOTONIC in ns, the clock of every rx_ns (as bpf_ktime_get_ns). */
uint64_t axp_now_ns(void);

/*
 * RX from net_in: the frame is at frame[0, len). On AXP_VERDICT_TX the stack
 * is popped and cached and the bare packet, addressed to the SF, starts
 * *out->off bytes later. cnt is AXP_CNT_ROWS rows of AXP_XCNT_MAX counters. now_ns 0
 * reads the clock. Returns an enum axp_verdict.
 */
int axp_rx_frame(struct axp_engine *e, uint64_t *cnt, uint8_t *frame, uint32_t len,
		 uint64_t now_ns, struct axp_pkt *out);
/*
 * TX from the SF of index sf (the one whose from_sf the frame came in on):
 * look the packet up and push its stack minus the top label into the
 * headroom bytes in front of frame. Returns an enum axp_verdict.
 */
int axp_tx_frame(struct axp_engine *e, uint64_t *cnt, uint8_t *frame, uint32_t len,
		 uint32_t headroom, uint32_t sf, uint64_t now_ns, struct axp_pkt *out);

/*
 * The same for n frames at once, as the socket loop calls them: in chunks of
 * 16, each step runs for every frame of the chunk before the next step starts
 * (parse; hash and prefetch; cache; RX pop or TX push). The cache misses of a
 * chunk overlap, and a step reads what an earlier one wrote a chunk ago, from
 * the cache rather than the store buffer (a load that spans several narrower
 * stores still in flight waits for them to drain). verdicts[i] (an enum axp_verdict) and out[i] describe frames[i];
 * now_ns 0 reads the clock once for the batch. For TX, every frame came back
 * from the SF of index sf and has headroom[i] bytes in front of it.
 */
void axp_rx_batch(struct axp_engine *e, uint64_t *cnt, uint8_t *const *frames,
		  const uint32_t *lens, uint32_t n, uint64_t now_ns, struct axp_pkt *out,
		  uint8_t *verdicts);
void axp_tx_batch(struct axp_engine *e, uint64_t *cnt, uint8_t *const *frames,
		  const uint32_t *lens, const uint32_t *headroom, uint32_t sf, uint32_t n,
		  uint64_t now_ns, struct axp_pkt *out, uint8_t *verdicts);

#endif /* AXP_ENGINE_H */
