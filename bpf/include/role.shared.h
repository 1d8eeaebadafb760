/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Which way a frame goes on an interface with both XDP roles: the net_in of one
 * SF and the from_sf of another (a chain's two directions meet on one interface
 * when, say, the network and the SF share a link). The role of an interface is
 * known when the loader attaches (each backend picks the program, or the socket
 * path, of its roles), so only such an interface pays for this one test, and
 * the kernel backend (proxy.bpf.c), the AF_XDP front program (xsk.bpf.c) and
 * the AF_XDP socket loop (native/axp_xsk.c) all decide with this same function.
 */
#ifndef AXP_ROLE_SHARED_H
#define AXP_ROLE_SHARED_H

#include "parse.shared.h"

/*
 * 1: bare IPv4/IPv6, an SF's output, for the TX path (look up, push). 0: all
 * else (SR-MPLS, ARP, a frame too short to tell) for the RX path, which pops
 * our labels and passes or counts the rest as on any net_in.
 */
static __always_inline int axp_frame_from_sf(const __u8 *data, const __u8 *end)
{
	__u16 proto;

	if (data + AXP_ETH_HLEN > end)
		return 0;
	proto = axp_load16(data + 12);
	return proto == axp_htons(AXP_ETH_P_IP) || proto == axp_htons(AXP_ETH_P_IPV6);
}

#endif /* AXP_ROLE_SHARED_H */
