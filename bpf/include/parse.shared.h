/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Frame parsing and cache-key derivation, written once for the BPF programs
 * and the native extension. Plain C over a [data, end) byte range: every read
 * is preceded by a bounds check against `end` (which the verifier needs and
 * which keeps user space safe on short buffers). No helpers, no libc.
 */
#ifndef AXP_PARSE_SHARED_H
#define AXP_PARSE_SHARED_H

#include "proxy.shared.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define AXP_ETH_HLEN 14
#define AXP_ETH_P_IP 0x0800
#define AXP_ETH_P_IPV6 0x86DD
#define AXP_ETH_P_MPLS_UC 0x8847
#define AXP_MPLS_BOS 0x00000100u    /* bottom-of-stack bit, host order */
#define AXP_MPLS_LABEL_SHIFT 12
#define AXP_IPPROTO_ICMP 1
#define AXP_IPPROTO_TCP 6
#define AXP_IPPROTO_UDP 17
#define AXP_IPPROTO_ICMPV6 58

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define axp_htons(x) ((__u16)__builtin_bswap16(x))
#define axp_htonl(x) ((__u32)__builtin_bswap32(x))
#else
#define axp_htons(x) ((__u16)(x))
#define axp_htonl(x) ((__u32)(x))
#endif
#define axp_ntohs axp_htons
#define axp_ntohl axp_htonl

/*
 * Make the compiler treat x as opaque, so it keeps using the one pointer whose
 * bounds were checked instead of re-deriving it from the base (which the BPF
 * verifier would see as a new, unchecked pointer). Costs nothing in user space.
 */
#define axp_barrier_var(x) __asm__ __volatile__("" : "+r"(x))

static __always_inline __u32 axp_load32(const __u8 *p)
{
	__u32 v;

	__builtin_memcpy(&v, p, sizeof(v));
	return v;
}

static __always_inline __u16 axp_load16(const __u8 *p)
{
	__u16 v;

	__builtin_memcpy(&v, p, sizeof(v));
	return v;
}

static __always_inline __u32 axp_label_of(__be32 lse)
{
	return axp_ntohl(lse) >> AXP_MPLS_LABEL_SHIFT;
}

/* Copy up to AXP_KEY_WORDS whole 32-bit words starting at p; missing words stay zero. */
static __always_inline void axp_copy_words(const __u8 *p, const __u8 *end, __be32 *w)
{
	if (p + 4 > end)
		return;
	w[0] = axp_load32(p);
	if (p + 8 > end)
		return;
	w[1] = axp_load32(p + 4);
	if (p + 12 > end)
		return;
	w[2] = axp_load32(p + 8);
}

/* Fill the L4 part of the key. Returns AXP_PARSE_OK or AXP_PARSE_MALFORMED. */
static __always_inline int axp_key_l4(const __u8 *l4, const __u8 *end, __u8 proto,
				      int is_v6, struct axp_key *key)
{
	key->proto = proto;
	if (proto == AXP_IPPROTO_TCP) {
		if (l4 + 20 > end)
			return AXP_PARSE_MALFORMED;
		key->kind = AXP_KEY_TCP;
		key->sport = axp_load16(l4);
		key->dport = axp_load16(l4 + 2);
		key->w[0] = axp_load32(l4 + 4); /* seq */
		key->w[1] = axp_load32(l4 + 8); /* ack */
		/* IPv6 has no IP id: the flags/window word keeps pure ACKs apart */
		if (is_v6)
			key->w[2] = axp_load32(l4 + 12);
		return AXP_PARSE_OK;
	}
	if (proto == AXP_IPPROTO_UDP) {
		if (l4 + 8 > end)
			return AXP_PARSE_MALFORMED;
		key->sport = axp_load16(l4);
		key->dport = axp_load16(l4 + 2);
		key->kind = AXP_KEY_UDP;
		/* RTP v2 header (not RTCP, whose type byte is 200..204): ts, SSRC, seq */
		if (l4 + 20 <= end && (l4[8] >> 6) == 2 &&
		    ((l4[9] & 0x7f) < 72 || (l4[9] & 0x7f) > 76))
			key->kind = AXP_KEY_RTP;
		axp_copy_words(l4 + 8, end, key->w);
		return AXP_PARSE_OK;
	}
	if (proto == AXP_IPPROTO_ICMP || proto == AXP_IPPROTO_ICMPV6) {
		if (l4 + 8 > end)
			return AXP_PARSE_MALFORMED;
		key->kind = AXP_KEY_ICMP;
		key->sport = axp_load16(l4); /* type, code; never the checksum */
		axp_copy_words(l4 + 4, end, key->w);
		return AXP_PARSE_OK;
	}
	key->kind = AXP_KEY_OTHER;
	axp_copy_words(l4, end, key->w);
	return AXP_PARSE_OK;
}

/*
 * Derive the hash-mode key of the IP packet at l3. The caller zeroes *key.
 * Only fields an SF leaves alone are used: never TTL/hop limit, checksums,
 * lengths or DSCP/ECN.
 */
static __always_inline int axp_derive_key(const __u8 *l3, const __u8 *end, struct axp_key *key)
{
	if (l3 + 1 > end)
		return AXP_PARSE_NOT_IP;
	if ((l3[0] >> 4) == 4) {
		const __u8 *l4;
		__u8 proto;
		__u16 frag;
		__u32 ihl;

		if (l3 + 20 > end)
			return AXP_PARSE_MALFORMED;
		ihl = l3[0] & 0x0f;
		if (ihl < 5)
			return AXP_PARSE_MALFORMED;
		proto = l3[9];
		frag = axp_load16(l3 + 6);
		key->family = 4;
		__builtin_memcpy(&key->ident, l3 + 4, 2); /* IP id, upper half */
		key->saddr[0] = axp_load32(l3 + 12);
		key->daddr[0] = axp_load32(l3 + 16);
		l4 = l3 + ihl * 4;
		axp_barrier_var(l4);
		if (l4 > end)
			return AXP_PARSE_MALFORMED;
		/* later fragments carry no L4 header: key on their first payload words */
		if (frag & axp_htons(0x1fff)) {
			key->proto = proto;
			key->kind = AXP_KEY_OTHER;
			axp_copy_words(l4, end, key->w);
			return AXP_PARSE_OK;
		}
		return axp_key_l4(l4, end, proto, 0, key);
	}
	if ((l3[0] >> 4) == 6) {
		if (l3 + 40 > end)
			return AXP_PARSE_MALFORMED;
		key->family = 6;
		key->ident = axp_load32(l3) & axp_htonl(0x000fffff);
		__builtin_memcpy(key->saddr, l3 + 8, 16);
		__builtin_memcpy(key->daddr, l3 + 24, 16);
		return axp_key_l4(l3 + 40, end, l3[6], 1, key);
	}
	return AXP_PARSE_NOT_IP;
}

/* The RX counter of a frame the parser refused: one mapping for BPF and the extension. */
static __always_inline int axp_parse_counter(int res)
{
	switch (res) {
	case AXP_PARSE_NOT_MPLS:
		return AXP_CNT_RX_NOT_MPLS;
	case AXP_PARSE_TOO_MANY_LABELS:
		return AXP_CNT_RX_TOO_MANY_LABELS;
	case AXP_PARSE_NOT_IP:
		return AXP_CNT_RX_NOT_IP;
	default:
		return AXP_CNT_RX_MALFORMED;
	}
}

/* Where the IP packet below a parsed label stack starts. */
struct axp_frame {
	__u32 depth;    /* labels in the stack */
	__u32 l3_off;   /* offset of the IP header from the start of the frame */
	__u16 l3_proto; /* AXP_ETH_P_IP or AXP_ETH_P_IPV6, host order */
};

/*
 * Parse an Ethernet frame carrying SR-MPLS: copy the label stack (outermost
 * first) into labels[] and describe it in *f. With key != NULL also derive the
 * hash-mode key of the packet below the stack (the caller zeroes *key);
 * without, only check that an IP packet follows.
 */
static __always_inline int axp_parse_mpls_frame(const __u8 *data, const __u8 *end,
						__be32 *labels, struct axp_frame *f,
						struct axp_key *key)
{
	const __u8 *p = data + AXP_ETH_HLEN;
	__u32 i;

	if (p > end)
		return AXP_PARSE_MALFORMED;
	if (axp_load16(data + 12) != axp_htons(AXP_ETH_P_MPLS_UC))
		return AXP_PARSE_NOT_MPLS;
	for (i = 0; i < AXP_MAX_LABELS; i++) {
		__be32 lse;

		if (p + 4 > end)
			return AXP_PARSE_MALFORMED;
		lse = axp_load32(p);
		labels[i] = lse;
		p += 4;
		if (!(lse & axp_htonl(AXP_MPLS_BOS)))
			continue;
		f->depth = i + 1;
		f->l3_off = AXP_ETH_HLEN + (i + 1) * 4;
		if (p + 1 > end)
			return AXP_PARSE_NOT_IP;
		if ((p[0] >> 4) == 4)
			f->l3_proto = AXP_ETH_P_IP;
		else if ((p[0] >> 4) == 6)
			f->l3_proto = AXP_ETH_P_IPV6;
		else
			return AXP_PARSE_NOT_IP;
		return key ? axp_derive_key(p, end, key) : AXP_PARSE_OK;
	}
	return AXP_PARSE_TOO_MANY_LABELS;
}

#endif /* AXP_PARSE_SHARED_H */
