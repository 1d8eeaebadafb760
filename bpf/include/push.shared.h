/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What TX puts back in front of the packet an SF returned, written once for
 * the BPF programs and the native extension: the VLAN tags the frame leaves
 * with and the TTL of the label that comes on top (RFC 3443). Plain C, no
 * helpers, no libc.
 */
#ifndef AXP_PUSH_SHARED_H
#define AXP_PUSH_SHARED_H

#include "parse.shared.h"

/*
 * The VLAN tags a frame leaves with, outermost first, as on the wire (TPID,
 * then TCI) into tags[AXP_MAX_VLANS]; returns how many. With the SF's
 * vlan_out: one 802.1Q tag of that VID, with the PCP and DEI of the tag
 * nearest the stack the packet arrived with (0 when it came untagged).
 * Otherwise the tags it arrived with, TPIDs, PCP and DEI as they were.
 */
static __always_inline __u32 axp_vlans_out(const struct axp_sf *sf, const struct axp_vlans *in,
					   __be32 *tags)
{
	__u32 n = in->n < AXP_MAX_VLANS ? in->n : AXP_MAX_VLANS;
	__u32 i, tpid, prio = 0;

	if (sf->vlan_out) {
		if (n)
			prio = axp_ntohs(n == 2 ? in->tci[1] : in->tci[0]) & ~AXP_VID_MASK & 0xffff;
		tags[0] = axp_htonl(AXP_ETH_P_8021Q << 16 | prio | (sf->vlan_out & AXP_VID_MASK));
		return 1;
	}
	for (i = 0; i < AXP_MAX_VLANS; i++) {
		if (i >= n)
			break;
		tpid = (in->ad >> i) & 1 ? AXP_ETH_P_8021AD : AXP_ETH_P_8021Q;
		tags[i] = axp_htonl(tpid << 16 | axp_ntohs(in->tci[i]));
	}
	return n;
}

/*
 * RFC 3443 §3.1, the uniform model, applied to the stack of an entry with at
 * least two labels: the entry TX exposes on top (labels[1]) takes the SF
 * label's TTL as it arrived, minus one. Each pass through the proxy costs one,
 * so a forwarding loop through it ends (RX never sends a TTL <= 1 to the SF).
 * The pipe model (§3.3) leaves every entry as it arrived. Label, TC and S stay.
 * Returns next (the entry below sf_lse) with that TTL.
 */
static __always_inline __be32 axp_ttl_uniform_lse(__be32 sf_lse, __be32 next)
{
	__u32 ttl = axp_ttl_of(sf_lse);

	return (next & axp_htonl(~AXP_MPLS_TTL_MASK)) | axp_htonl(ttl ? ttl - 1 : 0);
}

/* axp_ttl_uniform_lse on an entry's stack, in place */
static __always_inline void axp_ttl_uniform(struct axp_entry *e)
{
	e->labels[1] = axp_ttl_uniform_lse(e->labels[0], e->labels[1]);
}

#endif /* AXP_PUSH_SHARED_H */
