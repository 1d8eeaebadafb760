/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * `afxdp-proxy trace` in the extension (the events: bpf/include/trace.shared.h):
 *
 * - the AF_XDP backend's event ring, a struct axp_trace_area in a file the
 *   proxy maps shared: its struct axp_trace_ctl, which `trace` writes and the
 *   workers read, and a ring of event slots that any worker writes into
 *   (a bounded multi-producer queue, each slot with a sequence number: the
 *   workers claim positions with a compare-and-swap) and `trace`, in another
 *   process, reads;
 * - readers for `trace`: of that ring, and of the kernel backend's BPF ring
 *   buffer (Documentation/bpf/ringbuf.rst), behind one call.
 *
 * Also fed to cffi's cdef (see axp_native.h): plain declarations only.
 */
#ifndef AXP_TRACE_H
#define AXP_TRACE_H

#ifndef AXP_CDEF
#include <stddef.h>
#include <stdint.h>
#endif
#include "trace.shared.h"

/* slots of an area's ring: a power of two */
#define AXP_TRACE_AREA_SLOTS 1024

struct axp_trace_slot {
	uint64_t seq; /* position + 1 once written, position + slots once read */
	struct axp_trace_event ev;
};

struct axp_trace_area {
	struct axp_trace_ctl ctl;
	uint32_t slots;
	uint32_t _pad[13];
	uint64_t head;     /* the next position a worker claims */
	uint64_t _pad1[7];
	uint64_t tail;     /* the next position the reader reads */
	uint64_t _pad2[7];
	struct axp_trace_slot slot[];
};

/* Bytes of an area of `slots` slots (a power of two). */
size_t axp_trace_area_size(uint32_t slots);
/* Make mem (size bytes, zeroed or not) an empty area of `slots` slots, tracing off; -EINVAL: too small. */
int axp_trace_area_init(void *mem, size_t size, uint32_t slots);
/* One event into the ring; a full ring drops it and counts ctl.lost. Any thread. */
void axp_trace_put(struct axp_trace_area *a, const struct axp_trace_event *ev);
/*
 * The engine's report of one stage of a sampled packet (see trace.shared.h), stamped now
 * (CLOCK_MONOTONIC) on the calling thread's CPU; key and e (its depth and labels) may be NULL.
 */
void axp_trace_report(struct axp_trace_area *a, uint32_t stage, uint32_t result, uint64_t hash,
		      uint32_t sf, uint64_t value, const struct axp_key *key, const struct axp_entry *e);

#ifndef AXP_CDEF
/* 1 while a trace samples: what an unsampled packet pays is this load (a: NULL without an area). */
static inline int axp_trace_on(const struct axp_trace_area *a)
{
	return a && __atomic_load_n(&a->ctl.on, __ATOMIC_RELAXED);
}
#endif

struct axp_trace_reader;

/* A reader of the kernel backend's BPF ring buffer (its map's fd; the reader keeps its own). */
struct axp_trace_reader *axp_trace_open_ringbuf(int map_fd, int *err);
/* A reader of an area mapped by the caller (mem, size bytes), which must outlive the reader. */
struct axp_trace_reader *axp_trace_open_area(void *mem, size_t size, int *err);
/* Copy up to max events in the order written into out, without waiting: how many, or < 0. */
int axp_trace_read(struct axp_trace_reader *r, struct axp_trace_event *out, uint32_t max);
void axp_trace_close(struct axp_trace_reader *r);

#endif /* AXP_TRACE_H */
