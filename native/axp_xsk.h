/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The AF_XDP backend's data path, in two layers:
 *
 * 1. An engine (configuration, SF table, cache) and the per-packet functions
 *    axp_rx_frame / axp_tx_frame on plain buffers. They make the decisions of
 *    proxy.bpf.c's axp_xdp_rx / axp_xdp_tx (attached topology, hash keys) with
 *    the same parser and counters, so the packet table tests them without
 *    sockets and the micro-benchmark times them.
 * 2. AF_XDP sockets (libxdp xsk.h) on one UMEM shared by every socket of the
 *    instance, and one loop per RX queue that moves frames between them in
 *    place: RX batch -> axp_rx_frame -> TX to the SF; RX from the SF ->
 *    axp_tx_frame -> TX out.
 *
 * Also fed to cffi's cdef (see axp_native.h): plain declarations only.
 * Every int-returning call returns 0 (or a non-negative value) on success
 * and a negative errno on failure unless it says otherwise.
 */
#ifndef AXP_XSK_H
#define AXP_XSK_H

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
 * both enums.
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

/* ---- layer 1: the engine and the per-packet functions ---------------------- */

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
 * The same for n frames at once, as the socket loop calls them: chunks of 16
 * are parsed and their cache sets prefetched before the first one touches the
 * cache. verdicts[i] (an enum axp_verdict) and out[i] describe frames[i];
 * now_ns 0 reads the clock once for the batch. For TX, every frame came back
 * from the SF of index sf and has headroom[i] bytes in front of it.
 */
void axp_rx_batch(struct axp_engine *e, uint64_t *cnt, uint8_t *const *frames,
		  const uint32_t *lens, uint32_t n, uint64_t now_ns, struct axp_pkt *out,
		  uint8_t *verdicts);
void axp_tx_batch(struct axp_engine *e, uint64_t *cnt, uint8_t *const *frames,
		  const uint32_t *lens, const uint32_t *headroom, uint32_t sf, uint32_t n,
		  uint64_t now_ns, struct axp_pkt *out, uint8_t *verdicts);

/*
 * Micro-benchmark of the per-packet path: rounds x (copy the next batch of the
 * nframes templates, len bytes each, into frame buffers; axp_rx_batch them;
 * axp_tx_batch them, as the socket loop does); ns[0..2] accumulate the time of the copy, RX and TX
 * phases. nframes == batch reuses the same keys (hot cache sets); many more
 * spread them over the cache. Returns how many frames did not come out as
 * AXP_VERDICT_TX (0 when all went well).
 */
long axp_bench_batch(struct axp_engine *e, uint64_t *cnt, const uint8_t *frames, uint32_t len,
		     uint32_t nframes, uint32_t batch, uint32_t rounds, uint64_t *ns);

/* ---- layer 2: AF_XDP sockets and the per-queue loop ------------------------ */

/* What the proxy does with an interface (bits; one interface may have several). */
enum axp_port_role {
	AXP_PORT_NET_IN = 1,   /* RX: SR-MPLS from the network */
	AXP_PORT_FROM_SF = 2,  /* RX: bare packets back from an SF */
	AXP_PORT_TO_SF = 4,    /* TX: bare packets to an SF */
	AXP_PORT_NET_OUT = 8,  /* TX: labelled packets on to the network */
};

/* One interface, as the loader describes it; the library opens it on every queue. */
struct axp_xsk_port {
	char ifname[16];
	uint32_t ifindex;
	uint32_t roles;    /* enum axp_port_role bits */
	uint32_t sf;       /* AXP_PORT_FROM_SF: the SF whose packets return here */
	int32_t xskmap_fd; /* RX roles: the XSKMAP (axp_xsks) of its xsk.bpf.o; else -1 */
};

/* Defaults (config.py repeats them, a test compares); an enum so cffi exports them */
enum axp_xsk_defaults {
	AXP_XSK_DEFAULT_RING_SIZE = 2048,  /* entries of every RX, TX, fill, completion ring */
	AXP_XSK_DEFAULT_FRAME_SIZE = 4096, /* UMEM chunk: 256 bytes of headroom, then the frame */
	AXP_XSK_DEFAULT_BATCH_SIZE = 64,   /* descriptors taken from an RX ring at once */
	AXP_XSK_DEFAULT_SPIN = 256,        /* empty rounds before an idle worker sleeps */
	AXP_XSK_MAX_QUEUES = 64,
	AXP_XSK_MAX_PORTS = 256,          /* interfaces opened in one proxy's life (reloads add) */
};

struct axp_xsk_opts {
	uint32_t queues;     /* RX queues served, 0..queues-1, one worker each */
	uint32_t ring_size;  /* power of 2 */
	uint32_t frame_size; /* 2048 or 4096 */
	uint32_t batch_size; /* 1..ring_size */
	uint32_t bind_flags; /* XDP_COPY or XDP_ZEROCOPY to force a mode; 0: the kernel picks */
	uint32_t spin;       /* empty polling rounds before a worker sleeps in poll() */
};

struct axp_xsk;

/*
 * Create the UMEM, open every port on every queue and enter each RX socket in
 * its XSKMAP. counters: queues x AXP_CNT_ROWS x AXP_XCNT_MAX, zeroed by the caller (may be
 * shared memory that another process reads). On failure returns NULL, *err
 * and a one-line message naming the interface and step in msg.
 */
struct axp_xsk *axp_xsk_open(struct axp_engine *e, const struct axp_xsk_opts *opts,
			     const struct axp_xsk_port *ports, uint32_t nports, uint64_t *counters,
			     int *err, char *msg, uint32_t msglen);
/* The loop of one queue: returns after axp_xsk_stop() (0) or on a fatal error (< 0). */
int axp_xsk_run(struct axp_xsk *x, uint32_t queue);
/* Ask every loop to return; they do within one batch. Safe from any thread. */
void axp_xsk_stop(struct axp_xsk *x);
/*
 * Live changes (a reload): pause returns once every running worker is parked between two
 * rounds (each frame on a ring or free), or -ETIMEDOUT (then nothing is paused); until
 * resume, the caller may change the engine's SF table and the ports. Workers park within a
 * round: microseconds.
 */
int axp_xsk_pause(struct axp_xsk *x, uint32_t timeout_ms);
void axp_xsk_resume(struct axp_xsk *x);
/*
 * Open, on every queue, each of ports[0..nports) not open yet, out of service (the workers
 * run meanwhile: no pause needed for the slow part, the binds). Its roles are the rings it
 * gets; attach its XDP program only once it is in service.
 */
int axp_xsk_open_ports(struct axp_xsk *x, const struct axp_xsk_port *ports, uint32_t nports,
		       char *msg, uint32_t msglen);
/*
 * While paused: the ports in service are now ports[0..nports), every one open already and
 * in the roles it was opened with (its rings); one open but not in the list is retired (its
 * sockets stay open, unused, until close: the frames on their rings with them). The SF ->
 * port maps follow the engine's SF table. On failure nothing changed.
 */
int axp_xsk_set_ports(struct axp_xsk *x, const struct axp_xsk_port *ports, uint32_t nports,
		      char *msg, uint32_t msglen);
/* Delete the sockets and the UMEM. Call after every axp_xsk_run has returned. */
void axp_xsk_close(struct axp_xsk *x);
/* 1 when the sockets run in zero-copy mode, 0 in copy mode. */
int axp_xsk_zerocopy(struct axp_xsk *x);
/* UMEM bytes (all queues), for the record. */
uint64_t axp_xsk_umem_size(struct axp_xsk *x);

#endif /* AXP_XSK_H */
