/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Slots and sizes shared by the live-frames packet generator (bpf/lab/gen.bpf.c)
 * and afxdp_proxy/lab/bench/gen.py, which reads the #defines below as lib.NAME
 * constants of the native extension (native/build_native.py exports them), so
 * they are written once. Keep every constant a plain `#define NAME number`.
 */
#ifndef AXP_GEN_SHARED_H
#define AXP_GEN_SHARED_H

/* gen_tmpl: one entry of GEN_TMPL_MAX bytes (a power of two): the headers written into every frame */
#define GEN_TMPL_MAX 128

/*
 * The frames' UDP destination port (discard, RFC 863): the testbed's receiver
 * counts frames to it apart (tb_gen_depths), so other traffic in flight (a TCP
 * test's late segments, neighbour discovery) never counts as the generator's.
 */
#define GEN_UDP_DPORT 9

/* gen_cfg: array of __u32 */
#define GEN_CFG_TMPL_LEN 0 /* bytes of gen_tmpl copied to the frame's start (a multiple of 8); 0 = off */
#define GEN_CFG_SEQ_OFF 1  /* where the 64-bit big-endian sequence number goes */
#define GEN_CFG_FLOWS 2    /* 0 or 1: one flow; n: the UDP source port is sport + seq % n */
#define GEN_CFG_SPORT_OFF 3 /* where the UDP source port goes (with GEN_CFG_FLOWS > 1) */
#define GEN_CFG_SPORT 4    /* the first source port (with GEN_CFG_FLOWS > 1) */
#define GEN_CFG_SLOTS 5

/* gen_stats: per-CPU __u64 counters */
#define GEN_STAT_SENT 0   /* frames handed back as XDP_TX */
#define GEN_STAT_FAILED 1 /* no template or the frame too short for it: XDP_ABORTED */
#define GEN_STAT_SLOTS 2

#endif /* AXP_GEN_SHARED_H */
