// SPDX-License-Identifier: BSD-2-Clause
/*
 * The AF_XDP backend's sockets and per-queue loop (see axp_xsk.h), built on
 * the per-packet engine (axp_engine.c).
 *
 * Frames never move between queues: worker q owns the UMEM chunks
 * [q * frames, (q + 1) * frames) and cycles them through its own sockets'
 * rings (fill -> RX -> TX -> completion -> free stack -> fill). A frame
 * received on net_in leaves by to_sf from the very same chunk: the stack is
 * popped by moving the descriptor's address forward, and pushed again on the
 * way back by moving it into the 256 bytes of headroom in front of the data.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <linux/if_xdp.h>
#include <xdp/xsk.h>

#include "axp_xsk.h"
#include "axp_internal.h"
#include "role.shared.h"

#ifndef SOL_XDP
#define SOL_XDP 283
#endif
#ifndef SO_PREFER_BUSY_POLL
#define SO_PREFER_BUSY_POLL 69
#endif
#ifndef SO_BUSY_POLL_BUDGET
#define SO_BUSY_POLL_BUDGET 70
#endif
/* Linux 6.17 uapi (frames one copy-mode sendto() may send); Debian 12's headers predate it */
#define AXP_XDP_MAX_TX_SKB_BUDGET 9
#define AXP_RX_ROLES (AXP_PORT_NET_IN | AXP_PORT_FROM_SF)
#define AXP_TX_ROLES (AXP_PORT_TO_SF | AXP_PORT_NET_OUT)
#define AXP_STATS_EVERY_NS 250000000ull /* how often a busy worker refreshes XDP_STATISTICS */
#define AXP_BUSY_TRIES 400 /* x 5 ms: how long a bind waits for a queue a closed socket still holds */

struct axp_sock {
	/* libxdp keeps pointers to these rings until the socket is deleted */
	struct xsk_ring_cons rx;
	struct xsk_ring_prod tx;
	struct xsk_ring_prod fill;
	struct xsk_ring_cons comp;
	struct xsk_socket *xsk;
	int fd;
	uint32_t roles;        /* what the proxy does with it now; 0: retired (no SF uses it) */
	uint32_t shape;        /* the roles it was opened with: which rings it has */
	int polled;            /* among the worker's pfds (an RX socket once in service) */
	uint32_t sf;
	int fill_short;        /* the fill ring was left short of frames: top it up */
	uint32_t nstage;       /* TX descriptors collected this round */
	struct xdp_desc *stage;
	uint64_t outstanding;  /* on the TX ring or in flight, not completed yet */
};

struct axp_worker {
	struct axp_xsk *x;
	uint32_t queue;
	uint64_t *cnt;          /* AXP_CNT_ROWS rows of AXP_XCNT_MAX: per-SF packet counters */
	uint64_t *wcnt;         /* the AXP_SF_NONE row: where the worker's own counters go */
	struct axp_sock *socks; /* one per port, room for AXP_XSK_MAX_PORTS: libxdp points into them */
	uint64_t *free;         /* free chunk addresses, a stack */
	uint32_t nfree;
	uint32_t nframes;
	struct pollfd *pfds;    /* RX sockets, the stop and pause eventfds, RX sockets added later */
	uint32_t npfds;
	uint64_t stats_at;
	/* one RX batch on its way through axp_rx_batch / axp_tx_batch */
	uint64_t *addrs;
	uint8_t **ptrs;
	uint32_t *lens;
	uint32_t *room;
	struct axp_pkt *pkts;
	uint8_t *verdicts;
};

struct axp_xsk {
	struct axp_engine *e;
	struct axp_xsk_opts o;
	struct axp_xsk_port *ports;
	uint32_t nports;
	int16_t to_sf_port[AXP_MAX_SFS]; /* SF -> port its bare packets leave by */
	int16_t out_port[AXP_MAX_SFS];   /* SF -> port its labelled packets leave by */
	uint64_t chunk_mask;
	void *umem_area;
	uint64_t umem_size;
	struct xsk_umem *umem;
	struct axp_worker *workers;
	uint32_t nworkers;
	uint32_t nrx;      /* ports with an RX role: a TX port's stage holds a batch from each */
	int stop_fd;
	int stop;
	int zerocopy;
	/* live changes (axp_xsk_pause): workers park while pause is set */
	int pause_fd;
	int pause;
	int paused;        /* every running worker is parked: the controller may change things */
	uint32_t running;  /* workers inside axp_xsk_run */
	uint32_t parked;
};

static void axp_msg(char *msg, uint32_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void axp_msg(char *msg, uint32_t len, const char *fmt, ...)
{
	va_list ap;

	if (!msg || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, len, fmt, ap);
	va_end(ap);
}

static inline void axp_free_push(struct axp_worker *w, uint64_t addr)
{
	/* can only overflow through a bug; then the chunk is lost, not written twice */
	if (w->nfree < w->nframes)
		w->free[w->nfree++] = addr & w->x->chunk_mask;
}

static void axp_drain_comp(struct axp_worker *w, struct axp_sock *s)
{
	uint32_t idx, n, i;

	n = xsk_ring_cons__peek(&s->comp, w->x->o.ring_size, &idx);
	if (!n)
		return;
	for (i = 0; i < n; i++)
		axp_free_push(w, *xsk_ring_cons__comp_addr(&s->comp, idx + i));
	xsk_ring_cons__release(&s->comp, n);
	s->outstanding -= n < s->outstanding ? n : s->outstanding;
}

/*
 * Make the kernel transmit what the TX ring holds. In copy mode one sendto()
 * sends up to the socket's budget and says EAGAIN while more is left (or the
 * completion ring is full: drained here); zero-copy drivers clear the wakeup
 * flag and need no call at all.
 */
static void axp_kick_tx(struct axp_worker *w, struct axp_sock *s)
{
	uint32_t before;
	int i;

	for (i = 0; i < 64; i++) {
		if (!xsk_ring_prod__needs_wakeup(&s->tx))
			return;
		before = __atomic_load_n(s->tx.consumer, __ATOMIC_ACQUIRE);
		if (before == *s->tx.producer)
			return; /* nothing left to send */
		w->wcnt[AXP_XCNT_TX_KICKS]++;
		if (sendto(s->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0)
			continue;
		if (errno == EBUSY) {
			/* the device dropped one frame (its completion still comes): go on */
			w->wcnt[AXP_XCNT_TX_ERRORS]++;
			continue;
		}
		if (errno != EAGAIN && errno != ENOBUFS) {
			w->wcnt[AXP_XCNT_TX_ERRORS]++;
			return;
		}
		axp_drain_comp(w, s);
		if (__atomic_load_n(s->tx.consumer, __ATOMIC_ACQUIRE) == before)
			return; /* no progress: the device is busy, retry next round */
	}
}

static void axp_flush_tx(struct axp_worker *w, struct axp_sock *s)
{
	uint32_t n = s->nstage, done = 0, tries = 0, room, idx = 0, i;

	while (done < n) {
		room = xsk_prod_nb_free(&s->tx, n - done);
		if (room > n - done)
			room = n - done;
		if (!room) {
			/* the kernel has not consumed the ring yet: push it along once or twice */
			if (++tries > 2)
				break;
			axp_kick_tx(w, s);
			axp_drain_comp(w, s);
			continue;
		}
		xsk_ring_prod__reserve(&s->tx, room, &idx);
		for (i = 0; i < room; i++)
			*xsk_ring_prod__tx_desc(&s->tx, idx + i) = s->stage[done + i];
		xsk_ring_prod__submit(&s->tx, room);
		s->outstanding += room;
		done += room;
	}
	for (i = done; i < n; i++) {
		w->wcnt[AXP_XCNT_TX_RING_FULL]++;
		axp_free_push(w, s->stage[i].addr);
	}
	s->nstage = 0;
	axp_kick_tx(w, s);
}

static void axp_refill(struct axp_worker *w, struct axp_sock *s)
{
	uint32_t ring = w->x->o.ring_size, slots, n, idx = 0, i;

	/* asking for the whole ring refreshes the kernel's consumer index when needed */
	slots = xsk_prod_nb_free(&s->fill, ring);
	n = slots < w->nfree ? slots : w->nfree;
	s->fill_short = n < slots;
	if (s->fill_short)
		w->wcnt[AXP_XCNT_FILL_STARVED]++;
	if (!n)
		return;
	xsk_ring_prod__reserve(&s->fill, n, &idx);
	for (i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&s->fill, idx + i) = w->free[--w->nfree];
	xsk_ring_prod__submit(&s->fill, n);
	if (xsk_ring_prod__needs_wakeup(&s->fill)) {
		w->wcnt[AXP_XCNT_FILL_WAKEUPS]++;
		recvfrom(s->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
	}
}

/* The kernel's per-socket drop counters, summed over the worker's sockets. */
static void axp_worker_stats(struct axp_worker *w)
{
	uint64_t sum[5] = {0};
	uint32_t p;

	for (p = 0; p < w->x->nports; p++) {
		struct xdp_statistics st;
		socklen_t len = sizeof(st);

		if (!w->socks[p].xsk ||
		    getsockopt(w->socks[p].fd, SOL_XDP, XDP_STATISTICS, &st, &len))
			continue;
		sum[0] += st.rx_dropped;
		sum[1] += st.rx_ring_full;
		sum[2] += st.rx_fill_ring_empty_descs;
		sum[3] += st.rx_invalid_descs;
		sum[4] += st.tx_invalid_descs;
	}
	w->wcnt[AXP_XCNT_XSK_RX_DROPPED] = sum[0];
	w->wcnt[AXP_XCNT_XSK_RX_RING_FULL] = sum[1];
	w->wcnt[AXP_XCNT_XSK_FILL_RING_EMPTY] = sum[2];
	w->wcnt[AXP_XCNT_XSK_RX_INVALID] = sum[3];
	w->wcnt[AXP_XCNT_XSK_TX_INVALID] = sum[4];
}

/* struct axp_sf keeps each hop's two addresses as an Ethernet header does: destination, source */
_Static_assert(offsetof(struct axp_sf, to_sf_mac) == offsetof(struct axp_sf, sf_mac) + 6, "sf MACs");
_Static_assert(offsetof(struct axp_sf, net_out_mac) == offsetof(struct axp_sf, next_hop_mac) + 6,
	       "next hop MACs");

/*
 * The floor (axp_xsk_opts.null_fwd): frames [first, first + n) of an RX batch go on to the hop
 * the proxy would send them to with that hop's Ethernet addresses, the rest of them untouched.
 */
static void axp_null_batch(struct axp_worker *w, const struct axp_sock *s, uint32_t first,
			   uint32_t n, int rx)
{
	const struct axp_sf *sf = axp_engine_sf(w->x->e, s->sf); /* once a batch, not a frame */
	uint32_t i;

	for (i = first; i < first + n; i++) {
		w->verdicts[i] = AXP_VERDICT_DROP;
		if (!sf || w->lens[i] < AXP_ETH_HLEN)
			continue;
		memcpy(w->ptrs[i], rx ? sf->sf_mac : sf->next_hop_mac, 12);
		w->pkts[i].off = 0;
		w->pkts[i].len = w->lens[i];
		w->pkts[i].sf = s->sf;
		w->verdicts[i] = AXP_VERDICT_TX;
	}
}

/*
 * Step frames [first, first + n) of an RX batch through the per-packet functions
 * of a role (rx: from a net_in; else from the SF returning on this socket), stage
 * what leaves, free the rest.
 */
static void axp_handle_batch(struct axp_worker *w, struct axp_sock *s, uint32_t first, uint32_t n,
			     int rx, uint64_t now)
{
	struct axp_xsk *x = w->x;
	uint32_t i;

	if (!n)
		return;
	if (x->o.null_fwd)
		axp_null_batch(w, s, first, n, rx);
	else if (rx)
		axp_rx_batch(x->e, w->cnt, w->ptrs + first, w->lens + first, n, now, w->pkts + first,
			     w->verdicts + first);
	else
		axp_tx_batch(x->e, w->cnt, w->ptrs + first, w->lens + first, w->room + first, s->sf, n,
			     now, w->pkts + first, w->verdicts + first);
	for (i = first; i < first + n; i++) {
		struct axp_pkt *pk = &w->pkts[i];
		struct axp_sock *t;
		int port = -1;

		if (w->verdicts[i] == AXP_VERDICT_TX)
			port = rx ? x->to_sf_port[pk->sf] : x->out_port[pk->sf];
		/* dropped, or passed (which the XDP program already does): the chunk is free again */
		if (port < 0) {
			axp_free_push(w, w->addrs[i]);
			continue;
		}
		t = &w->socks[port];
		t->stage[t->nstage].addr = w->addrs[i] + pk->off;
		t->stage[t->nstage].len = pk->len;
		t->stage[t->nstage].options = 0;
		t->nstage++;
	}
}

static inline void axp_batch_swap(struct axp_worker *w, uint32_t a, uint32_t b)
{
	uint64_t addr = w->addrs[a];
	uint8_t *ptr = w->ptrs[a];
	uint32_t len = w->lens[a], room = w->room[a];

	w->addrs[a] = w->addrs[b];
	w->ptrs[a] = w->ptrs[b];
	w->lens[a] = w->lens[b];
	w->room[a] = w->room[b];
	w->addrs[b] = addr;
	w->ptrs[b] = ptr;
	w->lens[b] = len;
	w->room[b] = room;
}

/* One pass over every ring of the worker. Returns the frames received. */
static uint32_t axp_worker_round(struct axp_worker *w)
{
	struct axp_xsk *x = w->x;
	uint32_t p, idx, n, i, j, lo, hi, total = 0;
	uint64_t now = 0;
	int both;

	for (p = 0; p < x->nports; p++) {
		struct axp_sock *s = &w->socks[p];

		if (!(s->roles & AXP_RX_ROLES))
			continue;
		n = xsk_ring_cons__peek(&s->rx, x->o.batch_size, &idx);
		if (!n) {
			if (s->fill_short)
				axp_refill(w, s);
			continue;
		}
		/* one clock read per batch: the RX stamp and the dwell time of its packets */
		if (!now)
			now = axp_now_ns();
		w->wcnt[AXP_XCNT_RX_BATCHES]++;
		/*
		 * A socket with both RX roles (net_in of one SF, from_sf of another) gets both
		 * kinds of frame, told apart as its XDP program told them (role.shared.h): the
		 * network's fill the batch from the front, the SF's from the back.
		 */
		both = (s->roles & AXP_RX_ROLES) == AXP_RX_ROLES;
		lo = 0;
		hi = n;
		for (i = 0; i < n; i++) {
			const struct xdp_desc *d = xsk_ring_cons__rx_desc(&s->rx, idx + i);
			uint8_t *data = xsk_umem__get_data(x->umem_area, d->addr);
			uint32_t k = both && axp_frame_from_sf(data, data + d->len) ? --hi : lo++;

			w->addrs[k] = d->addr;
			w->ptrs[k] = data;
			/* the kernel wrote the frame on another CPU: start fetching its headers now */
			__builtin_prefetch(data);
			w->lens[k] = d->len;
			w->room[k] = (uint32_t)(d->addr & ~x->chunk_mask); /* headroom to push into */
		}
		/* the chunks are ours until they go back on a fill ring: release the slots now */
		xsk_ring_cons__release(&s->rx, n);
		/* the SF's frames in arrival order again */
		for (i = hi, j = n - 1; i < j; i++, j--)
			axp_batch_swap(w, i, j);
		axp_handle_batch(w, s, 0, lo, both || (s->roles & AXP_PORT_NET_IN), now);
		axp_handle_batch(w, s, hi, n - hi, 0, now);
		total += n;
	}
	for (p = 0; p < x->nports; p++) {
		struct axp_sock *s = &w->socks[p];

		if (s->nstage)
			axp_flush_tx(w, s);
		if (s->outstanding)
			axp_drain_comp(w, s);
	}
	if (!total)
		return 0;
	for (p = 0; p < x->nports; p++)
		if (w->socks[p].roles & AXP_RX_ROLES)
			axp_refill(w, &w->socks[p]);
	if (now - w->stats_at > AXP_STATS_EVERY_NS) {
		w->stats_at = now;
		axp_worker_stats(w);
	}
	return total;
}

/*
 * Idle: sleep until a frame arrives or stop is asked. Completions arrive
 * without a wakeup, so while frames run short and some are still out on TX,
 * sleep only a moment: the fill rings need them back.
 */
static void axp_worker_sleep(struct axp_worker *w)
{
	int timeout = 1000, p;

	for (p = 0; p < (int)w->x->nports; p++)
		if (w->socks[p].outstanding && w->nfree < w->x->o.ring_size)
			timeout = 1;
	axp_worker_stats(w);
	w->wcnt[AXP_XCNT_SLEEPS]++;
	/* poll() also wakes a driver whose fill ring asked for it (need_wakeup) */
	poll(w->pfds, w->npfds, timeout);
}

/* Wait while the controller changes the engine or the sockets (axp_xsk_pause). */
static void axp_worker_park(struct axp_xsk *x)
{
	struct timespec nap = {0, 20000};

	__atomic_add_fetch(&x->parked, 1, __ATOMIC_ACQ_REL);
	while (__atomic_load_n(&x->pause, __ATOMIC_ACQUIRE) && !__atomic_load_n(&x->stop, __ATOMIC_ACQUIRE))
		nanosleep(&nap, NULL);
	__atomic_sub_fetch(&x->parked, 1, __ATOMIC_ACQ_REL);
}

int axp_xsk_run(struct axp_xsk *x, uint32_t queue)
{
	struct axp_worker *w;
	uint32_t idle = 0;

	if (queue >= x->nworkers)
		return -EINVAL;
	w = &x->workers[queue];
	__atomic_add_fetch(&x->running, 1, __ATOMIC_ACQ_REL);
	while (!__atomic_load_n(&x->stop, __ATOMIC_ACQUIRE)) {
		/* between rounds: every frame of the last one is on a ring or free again */
		if (__atomic_load_n(&x->pause, __ATOMIC_ACQUIRE)) {
			axp_worker_park(x);
			idle = 0;
			continue;
		}
		if (axp_worker_round(w)) {
			idle = 0;
			continue;
		}
		/* spin a little first: a poll() wakeup costs more than a few empty rounds */
		if (++idle < x->o.spin) {
			axp_cpu_relax();
			continue;
		}
		idle = 0;
		axp_worker_sleep(w);
	}
	axp_worker_stats(w);
	__atomic_sub_fetch(&x->running, 1, __ATOMIC_ACQ_REL);
	return 0;
}

int axp_xsk_pause(struct axp_xsk *x, uint32_t timeout_ms)
{
	struct timespec nap = {0, 5000};
	uint64_t one = 1, until = axp_now_ns() + (uint64_t)timeout_ms * 1000000ull;

	__atomic_store_n(&x->pause, 1, __ATOMIC_SEQ_CST);
	/* wakes the workers asleep in poll() */
	if (write(x->pause_fd, &one, sizeof(one)) != sizeof(one))
		return -errno;
	while (__atomic_load_n(&x->parked, __ATOMIC_ACQUIRE) <
	       __atomic_load_n(&x->running, __ATOMIC_ACQUIRE)) {
		if (axp_now_ns() > until) {
			axp_xsk_resume(x);
			return -ETIMEDOUT;
		}
		nanosleep(&nap, NULL);
	}
	x->paused = 1;
	return 0;
}

void axp_xsk_resume(struct axp_xsk *x)
{
	uint64_t n;

	x->paused = 0;
	/* the eventfd reads empty again, so sleeping workers wait for frames once more */
	if (read(x->pause_fd, &n, sizeof(n)) < 0)
		n = 0;
	__atomic_store_n(&x->pause, 0, __ATOMIC_SEQ_CST);
}

void axp_xsk_stop(struct axp_xsk *x)
{
	uint64_t one = 1;

	__atomic_store_n(&x->stop, 1, __ATOMIC_RELEASE);
	/* wakes every sleeping worker at once; if the write fails the flag still stops them */
	if (write(x->stop_fd, &one, sizeof(one)) != sizeof(one))
		return;
}

int axp_xsk_zerocopy(struct axp_xsk *x)
{
	return x->zerocopy;
}

uint64_t axp_xsk_umem_size(struct axp_xsk *x)
{
	return x->umem_size;
}

void axp_xsk_close(struct axp_xsk *x)
{
	uint32_t q, p;

	if (!x)
		return;
	/* sockets first (the first one holds the UMEM's fd), then the UMEM, then its memory */
	for (q = x->nworkers; q-- > 0;) {
		struct axp_worker *w = &x->workers[q];

		for (p = x->nports; w->socks && p-- > 0;)
			if (w->socks[p].xsk)
				xsk_socket__delete(w->socks[p].xsk);
	}
	if (x->umem)
		xsk_umem__delete(x->umem);
	if (x->umem_area)
		munmap(x->umem_area, x->umem_size);
	for (q = 0; q < x->nworkers; q++) {
		struct axp_worker *w = &x->workers[q];

		for (p = 0; w->socks && p < x->nports; p++)
			free(w->socks[p].stage);
		free(w->socks);
		free(w->free);
		free(w->pfds);
		free(w->addrs);
		free(w->ptrs);
		free(w->lens);
		free(w->room);
		free(w->pkts);
		free(w->verdicts);
	}
	if (x->stop_fd >= 0)
		close(x->stop_fd);
	if (x->pause_fd >= 0)
		close(x->pause_fd);
	free(x->workers);
	free(x->ports);
	free(x);
}

static int axp_check_opts(const struct axp_xsk_opts *o, char *msg, uint32_t msglen)
{
	if (!o->queues || o->queues > AXP_XSK_MAX_QUEUES) {
		axp_msg(msg, msglen, "queues: %u is not in 1..%d", o->queues, AXP_XSK_MAX_QUEUES);
		return -EINVAL;
	}
	if (o->ring_size < 64 || o->ring_size > 16384 || (o->ring_size & (o->ring_size - 1))) {
		axp_msg(msg, msglen, "ring_size: %u is not a power of 2 in 64..16384", o->ring_size);
		return -EINVAL;
	}
	if (o->frame_size != 2048 && o->frame_size != 4096) {
		axp_msg(msg, msglen, "frame_size: %u is neither 2048 nor 4096", o->frame_size);
		return -EINVAL;
	}
	if (!o->batch_size || o->batch_size > o->ring_size) {
		axp_msg(msg, msglen, "batch_size: %u is not in 1..ring_size (%u)", o->batch_size,
			o->ring_size);
		return -EINVAL;
	}
	return 0;
}

/* Which port each SF's traffic leaves by (to_sf[], out[]), and that every port makes sense. */
static int axp_map_ports(const struct axp_engine *e, const struct axp_xsk_port *ports,
			 uint32_t nports, int null_fwd, int16_t *to_sf, int16_t *out, char *msg,
			 uint32_t msglen)
{
	uint32_t i, p;

	for (p = 0; p < nports; p++) {
		const struct axp_xsk_port *pt = &ports[p];

		if ((pt->roles & AXP_RX_ROLES) && pt->xskmap_fd < 0) {
			axp_msg(msg, msglen, "%s: no XSKMAP for an RX interface", pt->ifname);
			return -EINVAL;
		}
		if ((pt->roles & AXP_PORT_FROM_SF) && !axp_engine_sf(e, pt->sf)) {
			axp_msg(msg, msglen, "%s: returns SF %u, which is not configured", pt->ifname,
				pt->sf);
			return -EINVAL;
		}
		if (null_fwd && (pt->roles & AXP_RX_ROLES) == AXP_RX_ROLES) {
			axp_msg(msg, msglen, "%s: net_in and from_sf at once: the null forwarder "
				"cannot tell their frames apart", pt->ifname);
			return -EINVAL;
		}
		if (null_fwd && (pt->roles & AXP_PORT_NET_IN) && !axp_engine_sf(e, pt->sf)) {
			axp_msg(msg, msglen, "%s: sends to SF %u, which is not configured", pt->ifname,
				pt->sf);
			return -EINVAL;
		}
	}
	for (i = 0; i < AXP_MAX_SFS; i++) {
		const struct axp_sf *sf = axp_engine_sf(e, i);

		to_sf[i] = out[i] = -1;
		if (!sf)
			continue;
		for (p = 0; p < nports; p++) {
			if ((ports[p].roles & AXP_PORT_TO_SF) && ports[p].ifindex == sf->to_sf_ifindex)
				to_sf[i] = p;
			if ((ports[p].roles & AXP_PORT_NET_OUT) && ports[p].ifindex == sf->net_out_ifindex)
				out[i] = p;
		}
		if (to_sf[i] < 0 || out[i] < 0) {
			axp_msg(msg, msglen, "SF %u: no to_sf or net_out interface among the ports", i);
			return -EINVAL;
		}
	}
	return 0;
}

/* A port's socket state on one queue before it is opened; TX ports get their stage. */
static int axp_sock_init(struct axp_xsk *x, struct axp_worker *w, uint32_t p)
{
	struct axp_sock *s = &w->socks[p];

	s->roles = s->shape = x->ports[p].roles;
	s->sf = x->ports[p].sf;
	s->fd = -1;
	if (!(s->roles & AXP_TX_ROLES))
		return 0;
	/* one round can send at most a batch from every RX socket through this one */
	s->stage = calloc((size_t)x->o.batch_size * x->nrx, sizeof(struct xdp_desc));
	return s->stage ? 0 : -ENOMEM;
}

static int axp_worker_init(struct axp_xsk *x, uint32_t q, uint64_t *counters)
{
	struct axp_worker *w = &x->workers[q];
	uint32_t p, i, n = 0;

	w->x = x;
	w->queue = q;
	w->cnt = counters + (size_t)q * AXP_CNT_ROWS * AXP_XCNT_MAX;
	w->wcnt = w->cnt + (size_t)AXP_SF_NONE * AXP_XCNT_MAX;
	w->nframes = (uint32_t)(x->umem_size / x->o.frame_size / x->nworkers);
	w->socks = calloc(AXP_XSK_MAX_PORTS, sizeof(*w->socks));
	w->free = calloc(w->nframes, sizeof(*w->free));
	w->pfds = calloc(AXP_XSK_MAX_PORTS + 2, sizeof(*w->pfds));
	w->addrs = calloc(x->o.batch_size, sizeof(*w->addrs));
	w->ptrs = calloc(x->o.batch_size, sizeof(*w->ptrs));
	w->lens = calloc(x->o.batch_size, sizeof(*w->lens));
	w->room = calloc(x->o.batch_size, sizeof(*w->room));
	w->pkts = calloc(x->o.batch_size, sizeof(*w->pkts));
	w->verdicts = calloc(x->o.batch_size, sizeof(*w->verdicts));
	if (!w->socks || !w->free || !w->pfds || !w->addrs || !w->ptrs || !w->lens || !w->room ||
	    !w->pkts || !w->verdicts)
		return -ENOMEM;
	for (p = 0; p < x->nports; p++)
		if (axp_sock_init(x, w, p))
			return -ENOMEM;
	/* highest first, so the stack hands out low addresses first */
	for (i = w->nframes; i-- > 0;)
		w->free[n++] = ((uint64_t)q * w->nframes + i) * x->o.frame_size;
	w->nfree = n;
	return 0;
}

/*
 * Lab only, for the benchmark's busy-polling variant: AXP_BUSY_POLL="usecs[,budget]"
 * sets SO_PREFER_BUSY_POLL, SO_BUSY_POLL and SO_BUSY_POLL_BUDGET on every socket,
 * so that the worker's poll() and sendto() run the device's NAPI themselves.
 * Not a configuration knob (docs/benchmarks.md, Tuning the AF_XDP backend).
 */
static void axp_busy_poll(int fd)
{
	const char *env = getenv("AXP_BUSY_POLL");
	int one = 1, usecs, budget = 64;

	if (!env || sscanf(env, "%d,%d", &usecs, &budget) < 1)
		return;
	setsockopt(fd, SOL_SOCKET, SO_PREFER_BUSY_POLL, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_BUSY_POLL, &usecs, sizeof(usecs));
	setsockopt(fd, SOL_SOCKET, SO_BUSY_POLL_BUDGET, &budget, sizeof(budget));
}

static int axp_open_socket(struct axp_xsk *x, uint32_t q, uint32_t p, char *msg, uint32_t msglen)
{
	struct axp_worker *w = &x->workers[q];
	struct axp_sock *s = &w->socks[p];
	const struct axp_xsk_port *pt = &x->ports[p];
	int rx = !!(pt->roles & AXP_RX_ROLES), tx = !!(pt->roles & AXP_TX_ROLES);
	struct xsk_socket_config cfg = {
		.rx_size = rx ? x->o.ring_size : 0,
		.tx_size = tx ? x->o.ring_size : 0,
		.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
		/* only the first socket's flags count: the others share its UMEM and mode */
		.bind_flags = XDP_USE_NEED_WAKEUP | x->o.bind_flags,
	};
	struct timespec pause = {0, 5000000};
	uint32_t budget;
	int err, tries;

	/*
	 * A socket closed a moment ago (a proxy just stopped) frees its queue in a
	 * kernel work item, after close() returns: bind says EBUSY until then.
	 */
	for (tries = 0;; tries++) {
		err = xsk_socket__create_shared(&s->xsk, pt->ifname, q, x->umem, rx ? &s->rx : NULL,
						tx ? &s->tx : NULL, &s->fill, &s->comp, &cfg);
		if (err != -EBUSY || tries >= AXP_BUSY_TRIES)
			break;
		nanosleep(&pause, NULL);
	}
	if (err) {
		s->xsk = NULL;
		axp_msg(msg, msglen, "%s queue %u: AF_XDP socket: %s", pt->ifname, q, strerror(-err));
		return err;
	}
	s->fd = xsk_socket__fd(s->xsk);
	fcntl(s->fd, F_SETFD, FD_CLOEXEC); /* libxdp opens without it; children need not hold it */
	axp_busy_poll(s->fd);
	if (tx) {
		/* one sendto() per batch instead of one per 32 frames, where the kernel allows it */
		budget = x->o.batch_size * 2 > x->o.ring_size ? x->o.ring_size : x->o.batch_size * 2;
		if (budget > 32)
			setsockopt(s->fd, SOL_XDP, AXP_XDP_MAX_TX_SKB_BUDGET, &budget, sizeof(budget));
	}
	if (rx) {
		err = xsk_socket__update_xskmap(s->xsk, pt->xskmap_fd);
		if (err) {
			err = err < 0 && err != -1 ? err : -errno;
			axp_msg(msg, msglen, "%s queue %u: XSKMAP update: %s", pt->ifname, q,
				strerror(-err));
			return err;
		}
	}
	return 0;
}

/* An RX socket goes into service: polled when idle, its fill ring topped up. */
static void axp_sock_activate(struct axp_worker *w, struct axp_sock *s)
{
	if (!(s->shape & AXP_RX_ROLES))
		return;
	if (!s->polled) {
		w->pfds[w->npfds].fd = s->fd;
		w->pfds[w->npfds].events = POLLIN;
		w->npfds++;
		s->polled = 1;
	}
	axp_refill(w, s);
}

int axp_xsk_open_ports(struct axp_xsk *x, const struct axp_xsk_port *ports, uint32_t nports,
		       char *msg, uint32_t msglen)
{
	uint32_t i, q, at, k;
	int err;

	if (msg && msglen)
		msg[0] = '\0';
	for (i = 0; i < nports; i++) {
		for (at = 0; at < x->nports && x->ports[at].ifindex != ports[i].ifindex; at++)
			;
		if (at < x->nports)
			continue;
		if (at == AXP_XSK_MAX_PORTS) {
			axp_msg(msg, msglen, "%s: more than %d interfaces in this proxy's life",
				ports[i].ifname, AXP_XSK_MAX_PORTS);
			return -ENOSPC;
		}
		x->ports[at] = ports[i];
		x->ports[at].ifname[sizeof(x->ports[at].ifname) - 1] = '\0';
		for (q = 0; q < x->nworkers; q++) {
			struct axp_sock *s = &x->workers[q].socks[at];

			err = axp_sock_init(x, &x->workers[q], at);
			s->roles = 0; /* out of service until axp_xsk_set_ports */
			if (!err)
				err = axp_open_socket(x, q, at, msg, msglen);
			if (err) {
				/* no frame is on their rings yet: they go without a trace */
				for (k = 0; k <= q; k++) {
					s = &x->workers[k].socks[at];
					if (s->xsk)
						xsk_socket__delete(s->xsk);
					free(s->stage);
					memset(s, 0, sizeof(*s));
				}
				return err;
			}
		}
		x->ports[at].roles = 0;
		/* the workers see the port from here on, out of service */
		__atomic_store_n(&x->nports, at + 1, __ATOMIC_RELEASE);
	}
	return 0;
}

int axp_xsk_set_ports(struct axp_xsk *x, const struct axp_xsk_port *ports, uint32_t nports,
		      char *msg, uint32_t msglen)
{
	struct axp_xsk_port *np;
	int16_t to_sf[AXP_MAX_SFS], out[AXP_MAX_SFS];
	uint32_t p, q, i, at, nrx = 0;
	int err;

	if (msg && msglen)
		msg[0] = '\0';
	if (!x->paused) {
		axp_msg(msg, msglen, "the workers are not paused");
		return -EBUSY;
	}
	/* the ports as they will be: every one open so far, retired unless in the list */
	np = calloc(AXP_XSK_MAX_PORTS, sizeof(*np));
	if (!np)
		return -ENOMEM;
	memcpy(np, x->ports, x->nports * sizeof(*np));
	for (p = 0; p < x->nports; p++)
		np[p].roles = 0;
	for (i = 0; i < nports; i++) {
		for (at = 0; at < x->nports && np[at].ifindex != ports[i].ifindex; at++)
			;
		if (at == x->nports) {
			axp_msg(msg, msglen, "%s: not open (axp_xsk_open_ports first)", ports[i].ifname);
			free(np);
			return -EINVAL;
		}
		if (x->workers[0].socks[at].shape != ports[i].roles) {
			/* the rings a socket has are fixed when it is opened */
			axp_msg(msg, msglen, "%s: its roles change (%#x, opened as %#x): a restart is needed",
				ports[i].ifname, ports[i].roles, x->workers[0].socks[at].shape);
			free(np);
			return -EINVAL;
		}
		np[at] = ports[i];
		np[at].ifname[sizeof(np[at].ifname) - 1] = '\0';
	}
	err = axp_map_ports(x->e, np, x->nports, x->o.null_fwd, to_sf, out, msg, msglen);
	if (err) {
		free(np);
		return err;
	}
	for (p = 0; p < x->nports; p++)
		nrx += !!(np[p].roles & AXP_RX_ROLES);
	/* a TX port's stage holds a batch from every RX port in service: grow them first */
	for (q = 0; nrx > x->nrx && q < x->nworkers; q++) {
		for (p = 0; p < x->nports; p++) {
			struct axp_sock *sk = &x->workers[q].socks[p];
			struct xdp_desc *st;

			if (!(sk->shape & AXP_TX_ROLES))
				continue;
			st = realloc(sk->stage, (size_t)x->o.batch_size * nrx * sizeof(*st));
			if (!st) {
				free(np);
				return -ENOMEM;
			}
			sk->stage = st;
		}
	}
	if (nrx > x->nrx)
		x->nrx = nrx;
	memcpy(x->ports, np, x->nports * sizeof(*np));
	free(np);
	for (q = 0; q < x->nworkers; q++) {
		struct axp_worker *w = &x->workers[q];

		for (p = 0; p < x->nports; p++) {
			int was = !!w->socks[p].roles;

			w->socks[p].roles = x->ports[p].roles;
			w->socks[p].sf = x->ports[p].sf;
			if (!was && w->socks[p].roles)
				axp_sock_activate(w, &w->socks[p]);
		}
	}
	memcpy(x->to_sf_port, to_sf, sizeof(to_sf));
	memcpy(x->out_port, out, sizeof(out));
	return 0;
}

struct axp_xsk *axp_xsk_open(struct axp_engine *e, const struct axp_xsk_opts *opts,
			     const struct axp_xsk_port *ports, uint32_t nports, uint64_t *counters,
			     int *err, char *msg, uint32_t msglen)
{
	struct xsk_umem_config ucfg = {0};
	struct xdp_options xo;
	socklen_t len = sizeof(xo);
	uint32_t q, p, nrx = 0, ntx = 0;
	uint64_t frames;
	struct axp_xsk *x;

	if (msg && msglen)
		msg[0] = '\0';
	*err = axp_check_opts(opts, msg, msglen);
	if (*err)
		return NULL;
	if (!nports || nports > AXP_XSK_MAX_PORTS) {
		axp_msg(msg, msglen, "%u interfaces; 1..%d", nports, AXP_XSK_MAX_PORTS);
		*err = -EINVAL;
		return NULL;
	}
	x = calloc(1, sizeof(*x));
	if (!x) {
		*err = -ENOMEM;
		return NULL;
	}
	x->stop_fd = x->pause_fd = -1;
	x->e = e;
	x->o = *opts;
	if (!x->o.spin)
		x->o.spin = 1;
	x->chunk_mask = ~(uint64_t)(opts->frame_size - 1);
	x->nports = nports;
	x->ports = calloc(AXP_XSK_MAX_PORTS, sizeof(*ports)); /* reloads add ports */
	if (!x->ports)
		goto nomem;
	memcpy(x->ports, ports, nports * sizeof(*ports));
	for (p = 0; p < nports; p++) {
		x->ports[p].ifname[sizeof(x->ports[p].ifname) - 1] = '\0';
		nrx += !!(ports[p].roles & AXP_RX_ROLES);
		ntx += !!(ports[p].roles & AXP_TX_ROLES);
	}
	x->nrx = nrx;
	*err = axp_map_ports(e, x->ports, x->nports, opts->null_fwd, x->to_sf_port, x->out_port, msg,
			     msglen);
	if (*err)
		goto fail;

	x->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	x->pause_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (x->stop_fd < 0 || x->pause_fd < 0) {
		*err = -errno;
		axp_msg(msg, msglen, "eventfd: %s", strerror(errno));
		goto fail;
	}
	/*
	 * Chunks per worker: a full ring's worth for each RX socket's fill ring
	 * and as many again for each ring that holds frames on their way
	 * (RX, TX, completion), so the fill rings can be kept full under load.
	 */
	frames = (uint64_t)opts->ring_size * (nrx + ntx);
	x->umem_size = frames * opts->frame_size * opts->queues;
	x->umem_area = mmap(NULL, x->umem_size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (x->umem_area == MAP_FAILED) {
		x->umem_area = NULL;
		*err = -errno;
		axp_msg(msg, msglen, "UMEM of %llu bytes: %s", (unsigned long long)x->umem_size,
			strerror(errno));
		goto fail;
	}
	x->nworkers = opts->queues;
	x->workers = calloc(x->nworkers, sizeof(*x->workers));
	if (!x->workers)
		goto nomem;
	for (q = 0; q < x->nworkers; q++)
		if (axp_worker_init(x, q, counters))
			goto nomem;

	ucfg.fill_size = opts->ring_size;
	ucfg.comp_size = opts->ring_size;
	ucfg.frame_size = opts->frame_size;
	/* the first socket (queue 0, port 0) takes over the UMEM's own fill and completion rings */
	*err = xsk_umem__create(&x->umem, x->umem_area, x->umem_size, &x->workers[0].socks[0].fill,
				&x->workers[0].socks[0].comp, &ucfg);
	if (*err) {
		x->umem = NULL;
		if (*err == -EAFNOSUPPORT)
			axp_msg(msg, msglen, "AF_XDP sockets are not supported by this kernel "
				"(CONFIG_XDP_SOCKETS)");
		else
			axp_msg(msg, msglen, "AF_XDP UMEM of %llu bytes: %s",
				(unsigned long long)x->umem_size, strerror(-*err));
		goto fail;
	}
	for (q = 0; q < x->nworkers; q++) {
		for (p = 0; p < nports; p++) {
			*err = axp_open_socket(x, q, p, msg, msglen);
			if (*err)
				goto fail;
			axp_sock_activate(&x->workers[q], &x->workers[q].socks[p]);
		}
		x->workers[q].pfds[x->workers[q].npfds].fd = x->stop_fd;
		x->workers[q].pfds[x->workers[q].npfds].events = POLLIN;
		x->workers[q].npfds++;
		x->workers[q].pfds[x->workers[q].npfds].fd = x->pause_fd;
		x->workers[q].pfds[x->workers[q].npfds].events = POLLIN;
		x->workers[q].npfds++;
	}
	if (!getsockopt(x->workers[0].socks[0].fd, SOL_XDP, XDP_OPTIONS, &xo, &len))
		x->zerocopy = !!(xo.flags & XDP_OPTIONS_ZEROCOPY);
	return x;

nomem:
	*err = -ENOMEM;
	axp_msg(msg, msglen, "out of memory");
fail:
	axp_xsk_close(x);
	return NULL;
}
