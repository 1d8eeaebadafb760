// SPDX-License-Identifier: BSD-2-Clause
/*
 * The trace rings (see axp_trace.h): the AF_XDP workers' area and the
 * readers of both backends' rings.
 */
#define _GNU_SOURCE /* sched_getcpu */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>

#include <bpf/bpf.h>
#include <linux/bpf.h>

#include "axp_trace.h"

_Static_assert(sizeof(struct axp_trace_area) == 256, "the ctl, then head and tail on lines of their own");

size_t axp_trace_area_size(uint32_t slots)
{
	return sizeof(struct axp_trace_area) + (size_t)slots * sizeof(struct axp_trace_slot);
}

int axp_trace_area_init(void *mem, size_t size, uint32_t slots)
{
	struct axp_trace_area *a = mem;
	uint32_t i;

	if (!slots || (slots & (slots - 1)) || size < axp_trace_area_size(slots))
		return -EINVAL;
	memset(a, 0, sizeof(*a));
	a->slots = slots;
	for (i = 0; i < slots; i++)
		a->slot[i].seq = i;
	return 0;
}

void axp_trace_put(struct axp_trace_area *a, const struct axp_trace_event *ev)
{
	uint64_t pos = __atomic_load_n(&a->head, __ATOMIC_RELAXED), seq;
	struct axp_trace_slot *s;
	int64_t d;

	for (;;) {
		s = &a->slot[pos & (a->slots - 1)];
		seq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
		d = (int64_t)(seq - pos);
		if (d == 0) {
			/* free for this position: claim it (a failed claim reloads pos) */
			if (__atomic_compare_exchange_n(&a->head, &pos, pos + 1, 1, __ATOMIC_RELAXED,
							__ATOMIC_RELAXED))
				break;
		} else if (d < 0) {
			/* the slot still holds what was written a lap ago: the reader is behind */
			__atomic_fetch_add(&a->ctl.lost, 1, __ATOMIC_RELAXED);
			return;
		} else {
			pos = __atomic_load_n(&a->head, __ATOMIC_RELAXED);
		}
	}
	s->ev = *ev;
	__atomic_store_n(&s->seq, pos + 1, __ATOMIC_RELEASE);
}

void axp_trace_report(struct axp_trace_area *a, uint32_t stage, uint32_t result, uint64_t hash,
		      uint32_t sf, uint64_t value, const struct axp_key *key, const struct axp_entry *e)
{
	struct axp_trace_event ev = {
		.hash = hash,
		.value = value,
		.result = (uint16_t)result,
		.stage = (uint8_t)stage,
		.sf = (uint8_t)sf,
	};
	struct timespec ts;
	int cpu = sched_getcpu();

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ev.ts_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	ev.cpu = cpu < 0 ? 0 : (uint32_t)cpu;
	if (key)
		ev.key = *key;
	if (e) {
		ev.depth = e->depth;
		memcpy(ev.labels, e->labels, sizeof(ev.labels));
	}
	axp_trace_put(a, &ev);
}

struct axp_trace_reader {
	/* an area */
	struct axp_trace_area *area;
	/* a BPF ring buffer: its consumer page (ours to write), producer page and data (twice) */
	unsigned long *consumer;
	unsigned long *producer;
	uint8_t *data;
	size_t mask;
	size_t page;
	int fd;
};

struct axp_trace_reader *axp_trace_open_area(void *mem, size_t size, int *err)
{
	struct axp_trace_area *a = mem;
	struct axp_trace_reader *r;

	*err = 0;
	if (size < sizeof(*a) || !a->slots || (a->slots & (a->slots - 1)) ||
	    size < axp_trace_area_size(a->slots)) {
		*err = -EINVAL;
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		*err = -ENOMEM;
		return NULL;
	}
	r->area = a;
	r->fd = -1;
	return r;
}

struct axp_trace_reader *axp_trace_open_ringbuf(int map_fd, int *err)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);
	struct axp_trace_reader *r;
	void *p;

	*err = 0;
	if (bpf_obj_get_info_by_fd(map_fd, &info, &len)) {
		*err = -errno;
		return NULL;
	}
	if (info.type != BPF_MAP_TYPE_RINGBUF) {
		*err = -EINVAL;
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		*err = -ENOMEM;
		return NULL;
	}
	r->page = (size_t)sysconf(_SC_PAGESIZE);
	r->mask = info.max_entries - 1;
	r->fd = dup(map_fd);
	if (r->fd < 0)
		goto fail;
	/* the consumer position, the one page user space may write */
	p = mmap(NULL, r->page, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
	if (p == MAP_FAILED)
		goto fail;
	r->consumer = p;
	/* the producer position, then the data mapped twice: a record that wraps reads on */
	p = mmap(NULL, r->page + 2 * (size_t)info.max_entries, PROT_READ, MAP_SHARED, r->fd,
		 (off_t)r->page);
	if (p == MAP_FAILED)
		goto fail;
	r->producer = p;
	r->data = (uint8_t *)p + r->page;
	return r;
fail:
	*err = -errno;
	axp_trace_close(r);
	return NULL;
}

static int axp_trace_read_area(struct axp_trace_area *a, struct axp_trace_event *out, uint32_t max)
{
	uint64_t tail = __atomic_load_n(&a->tail, __ATOMIC_RELAXED);
	struct axp_trace_slot *s;
	uint32_t n = 0;

	while (n < max) {
		s = &a->slot[tail & (a->slots - 1)];
		if (__atomic_load_n(&s->seq, __ATOMIC_ACQUIRE) != tail + 1)
			break; /* not written yet */
		out[n++] = s->ev;
		__atomic_store_n(&s->seq, tail + a->slots, __ATOMIC_RELEASE);
		tail++;
	}
	__atomic_store_n(&a->tail, tail, __ATOMIC_RELAXED);
	return (int)n;
}

/* As libbpf's ringbuf_process_ring: records in order, a busy one ends the read for now. */
static int axp_trace_read_ringbuf(struct axp_trace_reader *r, struct axp_trace_event *out, uint32_t max)
{
	unsigned long cons = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
	unsigned long prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
	uint32_t n = 0, len, *hdr;

	while (cons < prod && n < max) {
		hdr = (uint32_t *)(r->data + (cons & r->mask));
		len = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);
		if (len & BPF_RINGBUF_BUSY_BIT)
			break;
		if (!(len & BPF_RINGBUF_DISCARD_BIT) && (len & ~BPF_RINGBUF_DISCARD_BIT) == sizeof(*out))
			memcpy(&out[n++], (uint8_t *)hdr + BPF_RINGBUF_HDR_SZ, sizeof(*out));
		len &= ~BPF_RINGBUF_DISCARD_BIT;
		cons += (len + BPF_RINGBUF_HDR_SZ + 7) & ~7u;
		__atomic_store_n(r->consumer, cons, __ATOMIC_RELEASE);
	}
	return (int)n;
}

int axp_trace_read(struct axp_trace_reader *r, struct axp_trace_event *out, uint32_t max)
{
	if (r->area)
		return axp_trace_read_area(r->area, out, max);
	return axp_trace_read_ringbuf(r, out, max);
}

void axp_trace_close(struct axp_trace_reader *r)
{
	if (!r)
		return;
	if (r->consumer)
		munmap(r->consumer, r->page);
	if (r->producer)
		munmap(r->producer, r->page + 2 * (r->mask + 1));
	if (r->fd >= 0)
		close(r->fd);
	free(r);
}
