// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The benchmarks' packet generator, run by BPF_PROG_RUN with
 * BPF_F_TEST_XDP_LIVE_FRAMES in the sender's namespace: every run's frame
 * leaves by XDP_TX out of the interface named in the run's ingress_ifindex
 * (this kernel has no pktgen, and xdp-trafficgen does not load on it).
 *
 * Live frames live in a page pool and are recycled without their data being
 * reset, and the path they take (the proxy's pop and push, the kernel's TTL
 * decrement) rewrites them in place: so every run writes the whole header
 * template again, then a fresh sequence number into the payload, which makes
 * each frame's cache key unique (a repeated key would be a conflict). With
 * GEN_CFG_FLOWS > 1 the UDP source port cycles through that many flows, for
 * paths that spread flows by hash (an SF's kernel choosing a TX queue); the
 * UDP checksum is 0 (none), so nothing else changes.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "gen.shared.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct gen_tmpl {
	__u8 bytes[GEN_TMPL_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_tmpl);
} gen_tmpl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GEN_CFG_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} gen_cfg SEC(".maps");

/* one global sequence: keys stay unique whichever CPU runs the generator */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gen_seq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GEN_STAT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} gen_stats SEC(".maps");

static __always_inline void gen_count(__u32 slot)
{
	__u64 *c = bpf_map_lookup_elem(&gen_stats, &slot);

	if (c)
		*c += 1;
}

static __always_inline __u32 gen_cfg_get(__u32 slot)
{
	__u32 *v = bpf_map_lookup_elem(&gen_cfg, &slot);

	return v ? *v : 0;
}

SEC("xdp")
int gen_xdp_tx(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	__u8 *end = (void *)(long)ctx->data_end;
	__u32 len = gen_cfg_get(GEN_CFG_TMPL_LEN), off = gen_cfg_get(GEN_CFG_SEQ_OFF);
	__u32 flows = gen_cfg_get(GEN_CFG_FLOWS), zero = 0, i;
	__u8 *p, *sp;
	__u16 port;
	struct gen_tmpl *t = bpf_map_lookup_elem(&gen_tmpl, &zero);
	__u64 *seq = bpf_map_lookup_elem(&gen_seq, &zero);
	__u64 n;

	if (!t || !seq || !len)
		goto fail;
	/* whole words: the loader rounds the template up to 8 bytes within the frame */
	for (i = 0; i < GEN_TMPL_MAX / 8; i++) {
		if (i * 8 >= len)
			break;
		if (data + i * 8 + 8 > end)
			goto fail;
		__builtin_memcpy(data + i * 8, &t->bytes[i * 8], 8);
	}
	off &= GEN_TMPL_MAX - 1; /* a bound the verifier sees; the loader keeps it in range */
	p = data + off;
	if (p + sizeof(n) > end)
		goto fail;
	n = __sync_fetch_and_add(seq, 1);
	if (flows > 1) {
		sp = data + (gen_cfg_get(GEN_CFG_SPORT_OFF) & (GEN_TMPL_MAX - 1));
		if (sp + sizeof(port) > end)
			goto fail;
		port = __builtin_bswap16((__u16)(gen_cfg_get(GEN_CFG_SPORT) + n % flows));
		__builtin_memcpy(sp, &port, sizeof(port));
	}
	n = __builtin_bswap64(n);
	__builtin_memcpy(p, &n, sizeof(n));
	gen_count(GEN_STAT_SENT);
	return XDP_TX;
fail:
	gen_count(GEN_STAT_FAILED);
	return XDP_ABORTED;
}
