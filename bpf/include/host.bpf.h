/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The proxy host's control plane on from_sf. What the SF sends there is its
 * output for the network, to be relabelled and sent on, except what is meant
 * for the proxy host itself: neighbour discovery (the SF resolving its next
 * hop, which is the proxy), multicast, link-local traffic and anything
 * addressed to one of the host's own addresses. Such frames go to the host's
 * kernel untouched (XDP_PASS), by both backends' from_sf programs
 * (proxy.bpf.c's axp_xdp_tx, xsk.bpf.c's axp_xsk_from_sf), counted tx_host.
 * The caller has checked that the ethertype is IPv4 or IPv6.
 */
#ifndef AXP_HOST_BPF_H
#define AXP_HOST_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "parse.shared.h"

#define AXP_HOST_ADDRS 1024 /* local addresses of the proxy's namespace the map holds */
#define AXP_ICMPV6_ND_FIRST 133 /* RFC 4861 §4: router solicitation ... */
#define AXP_ICMPV6_ND_LAST 137  /* ... redirect */

/*
 * The namespace's local addresses (struct axp_host_addr), filled by the loader
 * through netlink when it starts and kept current while it runs.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AXP_HOST_ADDRS);
	__type(key, struct axp_host_addr);
	__type(value, __u8);
} axp_host_addrs SEC(".maps");

/*
 * 1 when the frame is for the proxy host, not for the network: a multicast or
 * broadcast destination MAC; IPv4 from or to 169.254/16 (RFC 3927); IPv6 from
 * or to fe80::/10 (RFC 4291 §2.5.6); ICMPv6 neighbour discovery (types
 * 133-137, RFC 4861) right behind the IPv6 header; a destination among the
 * host's addresses. A header cut short is left to the caller to judge.
 */
static __always_inline int axp_for_host(const __u8 *data, const __u8 *end)
{
	struct axp_host_addr a = {};
	const __u8 *ip;
	__u16 proto;

	if (data + AXP_ETH_HLEN > end)
		return 0;
	if (data[0] & 1) /* the group bit: multicast, broadcast */
		return 1;
	proto = axp_load16(data + 12);
	/*
	 * From an opaque offset: the bounds checks below then teach the verifier
	 * nothing about data, so the caller's paths after a "no" share one state
	 * whichever IP version it was (else the key derivation is verified twice).
	 */
	ip = axp_rebase(data, data + AXP_ETH_HLEN, AXP_ETH_HLEN);
	if (!ip)
		return 0;
	if (proto == axp_htons(AXP_ETH_P_IP)) {
		if (ip + 20 > end)
			return 0;
		if ((ip[12] == 169 && ip[13] == 254) || (ip[16] == 169 && ip[17] == 254))
			return 1;
		a.addr[2] = axp_htonl(0xffff);
		a.addr[3] = axp_load32(ip + 16);
	} else {
		if (ip + 40 > end)
			return 0;
		if ((ip[8] == 0xfe && (ip[9] & 0xc0) == 0x80) || (ip[24] == 0xfe && (ip[25] & 0xc0) == 0x80))
			return 1;
		if (ip[6] == AXP_IPPROTO_ICMPV6 && ip + 41 <= end && ip[40] >= AXP_ICMPV6_ND_FIRST &&
		    ip[40] <= AXP_ICMPV6_ND_LAST)
			return 1;
		__builtin_memcpy(a.addr, ip + 24, 16);
	}
	return bpf_map_lookup_elem(&axp_host_addrs, &a) != 0;
}

#endif /* AXP_HOST_BPF_H */
