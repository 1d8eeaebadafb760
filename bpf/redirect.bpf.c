// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Redirects the kernel refused, counted as the drops they are.
 *
 * An XDP program's XDP_REDIRECT is only a request: when the target cannot
 * take the frame (a veth whose peer runs no NAPI, a NIC without XDP of its
 * own, an interface down, a frame above its MTU), the kernel drops it after
 * the program has returned and counted success (rx_popped, tx_pushed).
 * What it tells is the tracepoint xdp:xdp_redirect_err (this kernel folds
 * xdp_redirect_map_err into it: map redirects come with map_type and map_id),
 * so this program listens there, keeps only failures of the proxy's own
 * programs (by program ID) and counts them in the proxy's counters map, which
 * the loader hands over (bpf_map__reuse_fd) before load.
 *
 *   axp_redirect_err   tp_btf/xdp_redirect_err: (dev, prog, target, err,
 *                      map type, map ID, index); for a plain bpf_redirect
 *                      the index is the target's ifindex
 *
 * Frames dropped later, when the target's queue is flushed (a full veth
 * ring), are reported by xdp:xdp_devmap_xmit instead and not counted here.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "counters.bpf.h" /* the proxy's counters: the loader reuses the proxy's map */

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Kernel types, only the fields read here: CO-RE relocates them against the running kernel's BTF. */
struct net_device {
	int ifindex;
} __attribute__((preserve_access_index));

struct bpf_prog_aux {
	__u32 id;
} __attribute__((preserve_access_index));

struct bpf_prog {
	struct bpf_prog_aux *aux;
} __attribute__((preserve_access_index));

/* (program, interface, target) -> where it counts; (program, 0, 0): the program's fallback */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4 * AXP_MAX_SFS + 8);
	__type(key, struct axp_redirect_key);
	__type(value, struct axp_redirect_slot);
} axp_redirect_slots SEC(".maps");

SEC("tp_btf/xdp_redirect_err")
int axp_redirect_err(__u64 *ctx)
{
	const struct net_device *dev = (const void *)ctx[0];
	const struct bpf_prog *prog = (const void *)ctx[1];
	struct axp_redirect_key k = {};
	struct axp_redirect_slot *s;

	k.prog_id = prog->aux->id;
	k.ifindex = dev->ifindex;
	k.to_ifindex = (__u32)ctx[6];
	s = bpf_map_lookup_elem(&axp_redirect_slots, &k);
	if (!s) {
		k.ifindex = k.to_ifindex = 0;
		s = bpf_map_lookup_elem(&axp_redirect_slots, &k);
		if (!s)
			return 0; /* not one of ours */
	}
	if (s->row >= AXP_CNT_ROWS || s->slot >= AXP_CNT_MAX)
		return 0;
	axp_count(s->row, s->slot);
	return 0;
}
