/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The AF_XDP backend's sockets (libxdp xsk.h) on one UMEM shared by every
 * socket of the instance, and one loop per RX queue that moves frames between
 * them in place through the per-packet engine (axp_engine.h): RX batch ->
 * axp_rx_batch -> TX to the SF; RX from the SF -> axp_tx_batch -> TX out.
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
#include "axp_engine.h"

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
