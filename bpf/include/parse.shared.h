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
#define AXP_ETH_P_8021Q 0x8100      /* VLAN tag (C-tag), IEEE 802.1Q */
#define AXP_ETH_P_8021AD 0x88A8     /* service VLAN tag (S-tag), IEEE 802.1ad */
#define AXP_ETH_P_TEB 0x6558        /* transparent Ethernet bridging: Geneve's inner Ethernet */
#define AXP_MPLS_BOS 0x00000100u    /* bottom-of-stack bit, host order */
#define AXP_MPLS_LABEL_SHIFT 12
#define AXP_MPLS_TTL_MASK 0x000000ffu /* host order */
/* reserved labels (RFC 3032 §2.1, RFC 7274): 0..15 never name an SF */
#define AXP_LABEL_IPV4_NULL 0       /* IPv4 explicit null */
#define AXP_LABEL_IPV6_NULL 2       /* IPv6 explicit null */
#define AXP_LABEL_ELI 7             /* entropy label indicator: the entropy label follows (RFC 6790) */
#define AXP_LABEL_MIN_UNRESERVED 16
/* the most bytes in front of the label that decides: Ethernet, tags, removed entries */
#define AXP_HEAD_MAX_LEN (AXP_ETH_HLEN + 4 * AXP_MAX_VLANS + 8 * AXP_MAX_REMOVED)
#define AXP_IPPROTO_HOPOPTS 0
#define AXP_IPPROTO_ICMP 1
#define AXP_IPPROTO_TCP 6
#define AXP_IPPROTO_UDP 17
#define AXP_IPPROTO_ROUTING 43
#define AXP_IPPROTO_FRAGMENT 44
#define AXP_IPPROTO_AH 51
#define AXP_IPPROTO_ICMPV6 58
#define AXP_IPPROTO_DSTOPTS 60
#define AXP_IP_IDENT_MASK 0xffff3fffu /* IPv4 word at offset 4 without DF and the reserved bit */
#define AXP_IP_MF_OFFSET 0x00003fffu  /* ... its MF flag and fragment offset */
#define AXP_IP_OFFSET 0x00001fffu     /* ... its fragment offset */
#define AXP_IP6_FLOW_LABEL 0x000fffffu
#define AXP_IP6_FRAG_OFFSET_M 0x0000fff9u /* Fragment header word 0: offset and M, no next header */
#define AXP_IP6_FRAG_OFFSET 0xfff8u       /* its fragment offset (16-bit half) */
/* UDP tunnels, recognised on their IANA destination ports */
#define AXP_UDP_PORT_GTPU 2152
#define AXP_UDP_PORT_VXLAN 4789
#define AXP_UDP_PORT_GENEVE 6081
#define AXP_UDP_PORT_MPLS 6635
#define AXP_GTPU_MAX_EXT 4          /* GTP-U extension headers walked before giving up */
#define AXP_VNI_MASK 0xffffff00u    /* VXLAN/Geneve word 1: the VNI without its reserved byte */
#define AXP_MPLS_NO_TTL 0xffffff00u /* an LSE without its TTL */
/*
 * Bytes from the start of the Ethernet header that a TC program makes linear
 * before it derives a key: every key shape of the table fits, including a
 * tunnel with an inner IPv6 packet. Only longer extension chains or Geneve
 * options than that can differ between XDP (which sees the whole frame) and TC.
 */
#define AXP_KEY_PULL_LEN 256
/*
 * Bounds no packet can exceed, for axp_rebase: the IP header chain (IPv6 and
 * AXP_MAX_EXT_HDRS extension headers of at most 2 KiB, RFC 8200 §4.3) and a
 * UDP tunnel's headers before its inner IP packet (UDP, GTP-U and
 * AXP_GTPU_MAX_EXT extension headers of at most 1020 bytes).
 */
#define AXP_L3_MAX_HLEN (40 + AXP_MAX_EXT_HDRS * 2048)
#define AXP_TUNNEL_MAX_HLEN (8 + 12 + AXP_GTPU_MAX_EXT * 1020)

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

/*
 * The offset of p from base as a number the verifier knows nothing about until
 * the caller bounds it: paths that reached p differently (label depths,
 * extension chains, tunnel headers) then share one verifier state, instead of
 * all that follows being verified again for each. Without it the RX program
 * goes past the verifier's million-instruction limit; with it, it takes about
 * 11k. The verifier allows the pointer subtraction to CAP_PERFMON (root).
 */
static __always_inline __u64 axp_offset_of(const __u8 *base, const __u8 *p)
{
	__u64 off = (__u64)(unsigned long)p;

#if defined(__bpf__)
	/* in asm: the compiler must not fold it into a constant the verifier would see */
	__asm__ __volatile__("%0 -= %1" : "+r"(off) : "r"(base));
#else
	off -= (__u64)(unsigned long)base;
#endif
	return off;
}

/*
 * p again, as base + axp_offset_of(base, p); NULL beyond base + max. Callers
 * pass a max no packet can exceed, so the NULL is there for the verifier only.
 */
static __always_inline const __u8 *axp_rebase(const __u8 *base, const __u8 *p, __u64 max)
{
	__u64 off = axp_offset_of(base, p);

	if (off > max)
		return 0;
	p = base + off;
	axp_barrier_var(p);
	return p;
}

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

static __always_inline __u32 axp_ttl_of(__be32 lse)
{
	return axp_ntohl(lse) & AXP_MPLS_TTL_MASK;
}

/* The key of an SF in the label maps: its VLAN and its label (AXP_VLAN_KEY_SHIFT). */
static __always_inline __u32 axp_sf_key(__u32 vid, __u32 label)
{
	return vid << AXP_VLAN_KEY_SHIFT | label;
}

/* Copy up to n whole 32-bit words starting at p into w; missing words stay zero. */
static __always_inline void axp_copy_words(const __u8 *p, const __u8 *end, __be32 *w, __u32 n)
{
	__u32 i;

	for (i = 0; i < AXP_KEY_WORDS; i++) {
		if (i >= n || p + 4 * (i + 1) > end)
			return;
		w[i] = axp_load32(p + 4 * i);
	}
}

/*
 * Inner key of a tunnelled IP packet: w[1..4] and AXP_KEYF_INNER_V6. Returns 0,
 * or -1 (nothing written) when no IPv4/IPv6 packet with a whole L4 header is
 * there: the caller then keys the datagram as plain UDP. No IPv6 extension
 * header walk inside (one level, kept small): such an inner packet is keyed on
 * the 3 words after its fixed header, as an inner IPv4 later fragment is.
 */
static __always_inline int axp_key_inner(const __u8 *ip, const __u8 *end, struct axp_key *key)
{
	const __u8 *l4;
	__be32 ident;
	__u8 proto, flags = 0;
	int later = 0;

	if (ip + 1 > end)
		return -1;
	if ((ip[0] >> 4) == 4) {
		if (ip + 20 > end || (ip[0] & 0x0f) < 5)
			return -1;
		ident = axp_load32(ip + 4) & axp_htonl(AXP_IP_IDENT_MASK);
		later = (ident & axp_htonl(AXP_IP_OFFSET)) != 0;
		proto = ip[9];
		l4 = ip + (ip[0] & 0x0f) * 4;
		axp_barrier_var(l4);
		if (l4 > end)
			return -1;
	} else if ((ip[0] >> 4) == 6) {
		if (ip + 40 > end)
			return -1;
		ident = axp_load32(ip) & axp_htonl(AXP_IP6_FLOW_LABEL);
		proto = ip[6];
		flags = AXP_KEYF_INNER_V6;
		l4 = ip + 40;
	} else {
		return -1;
	}
	if (!later && proto == AXP_IPPROTO_TCP) {
		if (l4 + 20 > end)
			return -1;
		key->w[2] = axp_load32(l4 + 4);  /* seq */
		key->w[3] = axp_load32(l4 + 8);  /* ack */
		key->w[4] = axp_load32(l4 + 12); /* data offset, flags, window */
	} else if (!later && proto == AXP_IPPROTO_UDP) {
		if (l4 + 8 > end)
			return -1;
		key->w[2] = axp_load32(l4); /* ports */
		axp_copy_words(l4 + 8, end, &key->w[3], 2);
	} else if (!later && (proto == AXP_IPPROTO_ICMP || proto == AXP_IPPROTO_ICMPV6)) {
		if (l4 + 8 > end)
			return -1;
		key->w[2] = axp_load32(l4) & axp_htonl(0xffff0000); /* type, code; not the checksum */
		axp_copy_words(l4 + 4, end, &key->w[3], 2);
	} else {
		axp_copy_words(l4, end, &key->w[2], 3);
	}
	key->w[1] = ident;
	key->flags |= flags;
	return 0;
}

/* The inner Ethernet header of VXLAN / Geneve: IPv4 or IPv6 right after it (no VLAN tag). */
static __always_inline const __u8 *axp_skip_inner_eth(const __u8 *p, const __u8 *end)
{
	if (p + AXP_ETH_HLEN > end)
		return 0;
	if (axp_load16(p + 12) != axp_htons(AXP_ETH_P_IP) &&
	    axp_load16(p + 12) != axp_htons(AXP_ETH_P_IPV6))
		return 0;
	return p + AXP_ETH_HLEN;
}

/*
 * Where the inner IP packet of a UDP tunnel starts (0 if this payload is not
 * one we can read), and the tunnel's own identifier in *id. pl is the UDP
 * payload, dport the destination port in network order.
 */
static __always_inline const __u8 *axp_tunnel_inner(const __u8 *pl, const __u8 *end, __be16 dport,
						     __be32 *id)
{
	const __u8 *p;
	__u32 i, len;
	__be32 lse;
	__u8 next;

	if (dport == axp_htons(AXP_UDP_PORT_VXLAN)) {
		/* RFC 7348 §5: flags (I = 0x08: VNI valid), 24 reserved bits, VNI, 8 reserved bits */
		if (pl + 8 > end || !(pl[0] & 0x08))
			return 0;
		*id = axp_load32(pl + 4) & axp_htonl(AXP_VNI_MASK);
		return axp_skip_inner_eth(pl + 8, end);
	}
	if (dport == axp_htons(AXP_UDP_PORT_GENEVE)) {
		/*
		 * RFC 8926 §3.4: version (2 bits, 0) and option length (6 bits, in
		 * 4-byte words), O/C flags, protocol type, VNI and a reserved byte,
		 * then the options.
		 */
		if (pl + 8 > end || (pl[0] >> 6) != 0)
			return 0;
		*id = axp_load32(pl + 4) & axp_htonl(AXP_VNI_MASK);
		p = pl + 8 + (pl[0] & 0x3f) * 4;
		axp_barrier_var(p);
		if (axp_load16(pl + 2) == axp_htons(AXP_ETH_P_TEB))
			return axp_skip_inner_eth(p, end);
		if (axp_load16(pl + 2) == axp_htons(AXP_ETH_P_IP) ||
		    axp_load16(pl + 2) == axp_htons(AXP_ETH_P_IPV6))
			return p;
		return 0;
	}
	if (dport == axp_htons(AXP_UDP_PORT_GTPU)) {
		/*
		 * 3GPP TS 29.281 §5.1: flags (version 1, PT 1, E, S, PN), message
		 * type (255: G-PDU, the only one carrying a user packet), length,
		 * TEID; with any of E/S/PN 4 more bytes (sequence number, N-PDU
		 * number, next extension header type); with E, extension headers
		 * (§5.2.1): a length byte in 4-byte units, content, next type last.
		 */
		if (pl + 8 > end || (pl[0] & 0xf0) != 0x30 || pl[1] != 255)
			return 0;
		*id = axp_load32(pl + 4);
		p = pl + 8;
		if (!(pl[0] & 0x07))
			return p;
		if (p + 4 > end)
			return 0;
		next = p[3];
		p += 4;
		if (!(pl[0] & 0x04))
			return p;
		for (i = 0; i < AXP_GTPU_MAX_EXT; i++) {
			if (!next)
				return p;
			if (p + 1 > end || !p[0])
				return 0;
			len = p[0] * 4;
			p += len - 1; /* at the next-type byte that ends this header */
			axp_barrier_var(p);
			if (p + 1 > end)
				return 0;
			next = p[0];
			p += 1;
		}
		return next ? 0 : p;
	}
	if (dport == axp_htons(AXP_UDP_PORT_MPLS)) {
		/* RFC 7510 §3: a label stack; below its bottom, the packet (IP by its version nibble) */
		if (pl + 4 > end)
			return 0;
		*id = axp_load32(pl) & axp_htonl(AXP_MPLS_NO_TTL);
		p = pl;
		for (i = 0; i < AXP_MAX_LABELS; i++) {
			if (p + 4 > end)
				return 0;
			lse = axp_load32(p);
			p += 4;
			if (lse & axp_htonl(AXP_MPLS_BOS))
				return p;
		}
		return 0;
	}
	return 0;
}

/*
 * RTP (RFC 3550 §5.1): version 2, a payload type in the static (0..34) or
 * dynamic (96..127) range, so never RTCP (types 200..204 read as 72..76 here,
 * §12.1), an even destination port (§11: RTCP takes the odd one above), and a
 * fixed header, CSRC list and header extension (§5.3.1) that fit the payload.
 * "The payload" is what the UDP length says, not the bytes at hand: the kind is
 * part of the key, so it must not depend on padding or on how much of the
 * packet a TC program sees. Random payloads pass about 6.5% of the time with
 * an even port (1/4 for the version, 67/128 for the type, ~1/2 for X), 3.2%
 * with any port; the test before, version and not RTCP, took 24% (measured
 * in tests/test_key.py).
 */
static __always_inline int axp_is_rtp(const __u8 *udp, const __u8 *end)
{
	const __u8 *rtp = udp + 8, *p;
	__u32 plen, hlen;

	if (rtp + 12 > end || (axp_load16(udp + 2) & axp_htons(1)))
		return 0;
	if ((rtp[0] >> 6) != 2 || ((rtp[1] & 0x7f) > 34 && (rtp[1] & 0x7f) < 96))
		return 0;
	plen = axp_ntohs(axp_load16(udp + 4));
	hlen = 12 + (rtp[0] & 0x0f) * 4;
	if (plen < 8 || hlen > plen - 8)
		return 0;
	if (!(rtp[0] & 0x10))
		return 1;
	p = rtp + hlen;
	axp_barrier_var(p);
	if (p + 4 > end)
		return 0;
	return hlen + 4 + axp_ntohs(axp_load16(p + 2)) * 4 <= plen - 8;
}

/* Fill the L4 part of the key. Returns AXP_PARSE_OK or AXP_PARSE_MALFORMED. */
static __always_inline int axp_key_l4(const __u8 *l4, const __u8 *end, __u8 proto,
				      struct axp_key *key)
{
	const __u8 *inner;
	__be32 id = 0;

	key->proto = proto;
	if (proto == AXP_IPPROTO_TCP) {
		if (l4 + 20 > end)
			return AXP_PARSE_MALFORMED;
		key->kind = AXP_KEY_TCP;
		key->sport = axp_load16(l4);
		key->dport = axp_load16(l4 + 2);
		key->w[0] = axp_load32(l4 + 4);  /* seq */
		key->w[1] = axp_load32(l4 + 8);  /* ack */
		key->w[2] = axp_load32(l4 + 12); /* data offset, flags, window: keeps pure ACKs apart */
		return AXP_PARSE_OK;
	}
	if (proto == AXP_IPPROTO_UDP) {
		if (l4 + 8 > end)
			return AXP_PARSE_MALFORMED;
		key->sport = axp_load16(l4);
		key->dport = axp_load16(l4 + 2);
		/* a tunnel's own header is constant per flow: key on the packet inside */
		inner = axp_tunnel_inner(l4 + 8, end, key->dport, &id);
		if (inner)
			inner = axp_rebase(l4, inner, AXP_TUNNEL_MAX_HLEN);
		if (inner && !axp_key_inner(inner, end, key)) {
			key->kind = AXP_KEY_TUNNEL;
			key->w[0] = id;
			return AXP_PARSE_OK;
		}
		key->kind = axp_is_rtp(l4, end) ? AXP_KEY_RTP : AXP_KEY_UDP;
		axp_copy_words(l4 + 8, end, key->w, AXP_KEY_WORDS);
		return AXP_PARSE_OK;
	}
	if (proto == AXP_IPPROTO_ICMP || proto == AXP_IPPROTO_ICMPV6) {
		if (l4 + 8 > end)
			return AXP_PARSE_MALFORMED;
		key->kind = AXP_KEY_ICMP;
		key->sport = axp_load16(l4); /* type, code; never the checksum */
		axp_copy_words(l4 + 4, end, key->w, AXP_KEY_WORDS);
		return AXP_PARSE_OK;
	}
	key->kind = AXP_KEY_OTHER;
	axp_copy_words(l4, end, key->w, AXP_KEY_WORDS);
	return AXP_PARSE_OK;
}

/* IPv4 (RFC 791 §3.1). */
static __always_inline int axp_derive_key_v4(const __u8 *l3, const __u8 *end, struct axp_key *key)
{
	const __u8 *l4;
	__u32 ihl;

	if (l3 + 20 > end)
		return AXP_PARSE_MALFORMED;
	ihl = l3[0] & 0x0f;
	if (ihl < 5)
		return AXP_PARSE_MALFORMED;
	key->family = 4;
	key->ident = axp_load32(l3 + 4) & axp_htonl(AXP_IP_IDENT_MASK);
	if (key->ident & axp_htonl(AXP_IP_MF_OFFSET))
		key->flags |= AXP_KEYF_FRAG;
	key->saddr[0] = axp_load32(l3 + 12);
	key->daddr[0] = axp_load32(l3 + 16);
	l4 = axp_rebase(l3, l3 + ihl * 4, AXP_L3_MAX_HLEN);
	if (!l4 || l4 > end)
		return AXP_PARSE_MALFORMED;
	/* later fragments carry no L4 header: key on their first payload words */
	if (key->ident & axp_htonl(AXP_IP_OFFSET)) {
		key->proto = l3[9];
		key->kind = AXP_KEY_FRAG;
		axp_copy_words(l4, end, key->w, AXP_KEY_WORDS);
		return AXP_PARSE_OK;
	}
	return axp_key_l4(l4, end, l3[9], key);
}

/*
 * IPv6 (RFC 8200 §3), walking up to AXP_MAX_EXT_HDRS extension headers (§4):
 * Hop-by-Hop Options, Routing, Destination Options (§4.3-4.6: length in
 * 8-byte units, not counting the first 8), Fragment (§4.5: 8 bytes) and AH
 * (RFC 4302 §2.2: length in 4-byte units, not counting the first 2). An
 * unknown next header (ESP, Mobility, No Next Header, ...) is keyed as OTHER on
 * the bytes after the last header walked, and so is a chain longer than the
 * limit, with AXP_KEYF_EXT_LIMIT set. A header cut short is malformed.
 */
static __always_inline int axp_derive_key_v6(const __u8 *l3, const __u8 *end, struct axp_key *key)
{
	const __u8 *p = l3 + 40;
	__u32 i, len;
	__u8 nh;

	if (l3 + 40 > end)
		return AXP_PARSE_MALFORMED;
	key->family = 6;
	key->ident = axp_load32(l3) & axp_htonl(AXP_IP6_FLOW_LABEL);
	__builtin_memcpy(key->saddr, l3 + 8, 16);
	__builtin_memcpy(key->daddr, l3 + 24, 16);
	nh = l3[6];
	for (i = 0; i < AXP_MAX_EXT_HDRS; i++) {
		if (nh == AXP_IPPROTO_FRAGMENT) {
			if (p + 8 > end)
				return AXP_PARSE_MALFORMED;
			key->flags |= AXP_KEYF_FRAG;
			key->ident = axp_load32(p + 4); /* identification: one per datagram */
			if (axp_load16(p + 2) & axp_htons(AXP_IP6_FRAG_OFFSET)) {
				/* a later fragment: what follows is the middle of the payload */
				key->proto = p[0];
				key->kind = AXP_KEY_FRAG;
				key->w[0] = axp_load32(p) & axp_htonl(AXP_IP6_FRAG_OFFSET_M);
				axp_copy_words(p + 8, end, &key->w[1], AXP_KEY_WORDS - 1);
				return AXP_PARSE_OK;
			}
			len = 8;
		} else if (nh == AXP_IPPROTO_HOPOPTS || nh == AXP_IPPROTO_ROUTING ||
			   nh == AXP_IPPROTO_DSTOPTS) {
			if (p + 2 > end)
				return AXP_PARSE_MALFORMED;
			len = (p[1] + 1) * 8;
		} else if (nh == AXP_IPPROTO_AH) {
			if (p + 2 > end)
				return AXP_PARSE_MALFORMED;
			len = (p[1] + 2) * 4;
		} else {
			break;
		}
		nh = p[0];
		p = axp_rebase(l3, p + len, AXP_L3_MAX_HLEN);
		if (!p || p > end)
			return AXP_PARSE_MALFORMED;
	}
	p = axp_rebase(l3, p, AXP_L3_MAX_HLEN); /* also when no extension header came */
	if (!p)
		return AXP_PARSE_MALFORMED;
	if (nh == AXP_IPPROTO_HOPOPTS || nh == AXP_IPPROTO_ROUTING || nh == AXP_IPPROTO_FRAGMENT ||
	    nh == AXP_IPPROTO_AH || nh == AXP_IPPROTO_DSTOPTS)
		key->flags |= AXP_KEYF_EXT_LIMIT;
	return axp_key_l4(p, end, nh, key);
}

/*
 * Derive the hash-mode key of the IP packet at l3. The caller zeroes *key.
 * Only fields an SF leaves alone are used: never TTL/hop limit, checksums,
 * lengths, DSCP/ECN or TCP options (SFs clamp the MSS).
 */
static __always_inline int axp_derive_key(const __u8 *l3, const __u8 *end, struct axp_key *key)
{
	if (l3 + 1 > end)
		return AXP_PARSE_NOT_IP;
	if ((l3[0] >> 4) == 4)
		return axp_derive_key_v4(l3, end, key);
	if ((l3[0] >> 4) == 6)
		return axp_derive_key_v6(l3, end, key);
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
	case AXP_PARSE_RESERVED:
		return AXP_CNT_RX_RESERVED_LABEL;
	default:
		return AXP_CNT_RX_MALFORMED;
	}
}

/*
 * The front of a frame, up to the label entry that decides: the Ethernet
 * header, up to AXP_MAX_VLANS VLAN tags (802.1Q or 802.1ad, in any order; the
 * VID of the one nearest the stack in f->vid), the MPLS ethertype, and the
 * reserved entries removed above the SF label: explicit null (0, 2) and an
 * entropy label indicator (7) with its entropy label (RFC 3032 §2.1, RFC 6790
 * §4.2: both are consumed by the node the label below addresses), at most
 * AXP_MAX_REMOVED removals. Such an entry at the bottom of the stack (or an
 * ELI whose entropy label is) is not removed: nothing of ours follows it.
 *
 * Returns NOT_MPLS (after the tags), MALFORMED (cut short before the deciding
 * entry: f->top_off stays 0), RESERVED (a reserved label decides: router
 * alert, GAL, OAM alert, ...), or OK; with RESERVED and OK, *top holds the
 * deciding entry and f->top_off its offset.
 */
static __always_inline int axp_parse_head(const __u8 *data, const __u8 *end, struct axp_frame *f,
					  __be32 *top)
{
	const __u8 *p;
	__be32 lse, el;
	__be16 type;
	__u32 i, label;

	if (data + AXP_ETH_HLEN > end)
		return AXP_PARSE_MALFORMED;
	/* from an opaque offset, so checks on p teach the verifier nothing about data */
	p = axp_rebase(data, data + 12, 12);
	if (!p)
		return AXP_PARSE_MALFORMED;
	for (i = 0; i < AXP_MAX_VLANS; i++) {
		if (p + 2 > end)
			return AXP_PARSE_MALFORMED;
		type = axp_load16(p);
		if (type != axp_htons(AXP_ETH_P_8021Q) && type != axp_htons(AXP_ETH_P_8021AD))
			break;
		if (p + 6 > end)
			return AXP_PARSE_MALFORMED; /* a tag cut short, or nothing after it */
		f->vlans.tci[i] = axp_load16(p + 2);
		if (type == axp_htons(AXP_ETH_P_8021AD))
			f->vlans.ad |= 1 << i;
		f->vlans.n = i + 1;
		f->vid = axp_ntohs(f->vlans.tci[i]) & AXP_VID_MASK;
		p += 4;
	}
	if (p + 2 > end)
		return AXP_PARSE_MALFORMED;
	if (axp_load16(p) != axp_htons(AXP_ETH_P_MPLS_UC))
		return AXP_PARSE_NOT_MPLS; /* a third tag too: not ours to read */
	p += 2;
	for (i = 0; i < AXP_MAX_REMOVED; i++) {
		if (p + 4 > end)
			return AXP_PARSE_MALFORMED;
		lse = axp_load32(p);
		label = axp_label_of(lse);
		if (lse & axp_htonl(AXP_MPLS_BOS))
			break;
		if (label == AXP_LABEL_ELI) {
			if (p + 8 > end)
				return AXP_PARSE_MALFORMED;
			el = axp_load32(p + 4);
			if (el & axp_htonl(AXP_MPLS_BOS))
				break;
			p += 8;
			f->removed += 2;
		} else if (label == AXP_LABEL_IPV4_NULL || label == AXP_LABEL_IPV6_NULL) {
			p += 4;
			f->removed += 1;
		} else {
			break;
		}
	}
	if (p + 4 > end)
		return AXP_PARSE_MALFORMED;
	*top = axp_load32(p);
	f->top_off = axp_offset_of(data, p);
	if (axp_label_of(*top) < AXP_LABEL_MIN_UNRESERVED)
		return AXP_PARSE_RESERVED;
	return AXP_PARSE_OK;
}

/*
 * Parse an Ethernet frame carrying SR-MPLS: its head (axp_parse_head), then
 * copy the label stack from the deciding entry down (outermost first) into
 * labels[] and describe it in *f. labels[0] is the deciding entry whenever
 * f->top_off is set. With key != NULL also derive the hash-mode key of the
 * packet below the stack (the caller zeroes *key and *f); without, only check
 * that an IP packet follows.
 */
static __always_inline int axp_parse_mpls_frame(const __u8 *data, const __u8 *end,
						__be32 *labels, struct axp_frame *f,
						struct axp_key *key)
{
	const __u8 *top, *p;
	__u64 off;
	__u32 i;
	int res;

	res = axp_parse_head(data, end, f, &labels[0]);
	if (res != AXP_PARSE_OK)
		return res;
	/*
	 * Walk the stack from an opaque offset: bounds checks on p then teach the
	 * verifier nothing about data, which callers keep, so frames of every
	 * head and depth leave data in one state.
	 */
	top = axp_rebase(data, data + f->top_off, AXP_HEAD_MAX_LEN);
	if (!top)
		return AXP_PARSE_MALFORMED; /* for the verifier only */
	p = top;
	for (i = 0; i < AXP_MAX_LABELS; i++) {
		__be32 lse;

		if (p + 4 > end)
			return AXP_PARSE_MALFORMED;
		lse = axp_load32(p);
		labels[i] = lse;
		p += 4;
		if (lse & axp_htonl(AXP_MPLS_BOS))
			break;
	}
	if (i == AXP_MAX_LABELS)
		return AXP_PARSE_TOO_MANY_LABELS;
	/* depth and offset from p, not from i: every depth goes on in one verifier state */
	off = axp_offset_of(top, p);
	if (off < 4 || off > AXP_MAX_LABELS * 4)
		return AXP_PARSE_TOO_MANY_LABELS; /* for the verifier only */
	f->depth = off / 4;
	f->l3_off = f->top_off + off;
	p = top + off;
	axp_barrier_var(p);
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

#endif /* AXP_PARSE_SHARED_H */
