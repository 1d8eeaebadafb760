/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Slots and sizes shared by the testbed's BPF programs (bpf/lab/testbed.bpf.c)
 * and afxdp_proxy/lab/testbed.py, which reads the #defines below as lib.NAME
 * constants of the native extension (native/build_native.py exports them), so
 * they are written once. Keep every constant a plain `#define NAME number`.
 *
 * Stacks live in an array map whose value is struct axp_entry (labels[] and
 * depth; the other fields are unused), so Python reads them with the cffi
 * type the extension already declares.
 */
#ifndef AXP_TESTBED_SHARED_H
#define AXP_TESTBED_SHARED_H

#include "proxy.shared.h"

/* tb_cfg: array of __u32 */
#define TB_CFG_N_STACKS 0 /* stacks the classifier rotates through; 0 = push nothing */
#define TB_CFG_RECORD 1   /* nonzero: record key -> stack in tb_sent / tb_received */
#define TB_CFG_FWD_IFINDEX 2  /* classifier: redirect to this interface's egress (0: TC_ACT_OK) */
#define TB_CFG_BACK_IFINDEX 3 /* tb_tc_return: redirect to this interface's egress */
#define TB_CFG_SLOTS 4

/* tb_depths: per-CPU __u64 packet counts seen by the decapsulator */
#define TB_HIST_NOT_IP 17 /* neither IP nor MPLS (ARP, ...): passed */
#define TB_HIST_BAD 18    /* MPLS it could not parse (no IP below, too deep, truncated): passed */
#define TB_HIST_SLOTS 19  /* slots 0..AXP_MAX_LABELS count packets by stack depth */
/* tb_gen_depths: per-CPU __u64, the generator's frames only (UDP over IPv4 to GEN_UDP_DPORT), by depth */
#define TB_GEN_SLOTS 17   /* AXP_MAX_LABELS + 1 */

/* tb_stats: per-CPU __u64 counters of the classifier */
#define TB_STAT_TC_SEEN 0        /* every packet on the sender's egress */
#define TB_STAT_TC_PUSHED 1      /* a stack was pushed */
#define TB_STAT_TC_PLAIN 2       /* IP sent unlabelled (n_stacks = 0 or a depth-0 stack) */
#define TB_STAT_TC_NOT_IP 3      /* ARP, ...: left alone */
#define TB_STAT_TC_GSO 4         /* merged (GSO) skb: sent unlabelled; the testbed makes this 0 */
#define TB_STAT_TC_PUSH_FAILED 5 /* room/store failed: dropped */
#define TB_STAT_SLOTS 6

/* Entries of the recording maps (LRU: old records age out, nothing fails) */
#define TB_RECORD_ENTRIES 65536
/*
 * In a tb_sent record's sf byte: the key went out again with another stack (identical packets,
 * such as TCP's duplicate RSTs at teardown, carrying different stacks). Which of them is "its
 * own" cannot be told at the receiver, by the proxy or by anyone: such keys are not compared.
 */
#define TB_REC_MIXED 255

#endif /* AXP_TESTBED_SHARED_H */
