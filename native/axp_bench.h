/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The per-packet engine's micro-benchmark (fed to cffi's cdef, see axp_native.h).
 */
#ifndef AXP_BENCH_H
#define AXP_BENCH_H

#ifndef AXP_CDEF
#include <stdint.h>
#endif
#include "axp_engine.h"

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

#endif /* AXP_BENCH_H */
