// SPDX-License-Identifier: BSD-2-Clause
/*
 * The micro-benchmark of the per-packet engine (see axp_bench.h): what the
 * socket loop does with a batch, on buffers laid out like UMEM chunks, timed
 * phase by phase. afxdp_proxy/lab/bench/native.py drives it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "axp_bench.h"

long axp_bench_batch(struct axp_engine *e, uint64_t *cnt, const uint8_t *frames, uint32_t len,
		     uint32_t nframes, uint32_t batch, uint32_t rounds, uint64_t *ns)
{
	/* frame buffers laid out like UMEM chunks: 256 bytes of headroom, 2 KiB apart */
	const uint32_t hr = 256, stride = 2048;
	uint32_t r, i, next = 0, *lens, *room;
	uint64_t t0, t1, t2, t3;
	struct axp_pkt *pk, *tx;
	uint8_t *bufs, **ptr, *v;
	long bad = -ENOMEM;

	if (!nframes || !batch || hr + len > stride)
		return -EINVAL;
	bufs = aligned_alloc(64, (size_t)batch * stride);
	pk = calloc(batch, sizeof(*pk));
	tx = calloc(batch, sizeof(*tx));
	ptr = calloc(batch, sizeof(*ptr));
	lens = calloc(batch, sizeof(*lens));
	room = calloc(batch, sizeof(*room));
	v = calloc(batch, 1);
	if (!bufs || !pk || !tx || !ptr || !lens || !room || !v)
		goto out;
	bad = 0;
	for (r = 0; r < rounds; r++) {
		t0 = axp_now_ns();
		for (i = 0; i < batch; i++) {
			memcpy(bufs + (size_t)i * stride + hr, frames + (size_t)next * len, len);
			next = next + 1 < nframes ? next + 1 : 0;
		}
		t1 = axp_now_ns();
		/* what the socket loop does with an RX batch from net_in, then one from from_sf */
		for (i = 0; i < batch; i++) {
			ptr[i] = bufs + (size_t)i * stride + hr;
			lens[i] = len;
		}
		axp_rx_batch(e, cnt, ptr, lens, batch, t1, pk, v);
		for (i = 0; i < batch; i++) {
			bad += v[i] != AXP_VERDICT_TX;
			room[i] = hr + (v[i] == AXP_VERDICT_TX ? pk[i].off : 0);
			ptr[i] = bufs + (size_t)i * stride + room[i];
			lens[i] = v[i] == AXP_VERDICT_TX ? pk[i].len : 0;
		}
		t2 = axp_now_ns();
		axp_tx_batch(e, cnt, ptr, lens, room, 0, batch, t2, tx, v);
		t3 = axp_now_ns();
		for (i = 0; i < batch; i++)
			bad += v[i] != AXP_VERDICT_TX;
		ns[0] += t1 - t0;
		ns[1] += t2 - t1;
		ns[2] += t3 - t2;
	}
out:
	free(bufs);
	free(pk);
	free(tx);
	free(ptr);
	free(lens);
	free(room);
	free(v);
	return bad;
}
