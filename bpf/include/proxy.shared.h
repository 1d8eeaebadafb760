/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Types shared by the BPF programs, the native extension and (through cffi)
 * the Python package. Plain C only: no BPF helpers, no libc.
 *
 * Every multi-byte field that comes from a packet is kept in network byte
 * order exactly as it was read, so the three implementations (BPF, C, Python)
 * produce byte-identical keys without agreeing on a host byte order.
 */
#ifndef AXP_PROXY_SHARED_H
#define AXP_PROXY_SHARED_H

#ifndef AXP_CDEF
#include <linux/types.h>
#endif

#define AXP_MAX_LABELS 16  /* deepest SR-MPLS stack the proxy caches */
#define AXP_MAX_SFS 64     /* service functions one proxy instance serves */
#define AXP_MAX_STACKS 16  /* stacks the testbed classifier rotates through */
#define AXP_KEY_WORDS 5    /* kind-specific words in struct axp_key */
/*
 * IPv6 extension headers the key walks past (RFC 8200 §4) before it gives up
 * and keys on the bytes after the last one walked (AXP_KEYF_EXT_LIMIT). Six
 * covers every header RFC 8200 §4.1 orders before the upper layer (Hop-by-Hop,
 * Destination Options, Routing, Fragment, AH, Destination Options) once each.
 */
#define AXP_MAX_EXT_HDRS 6
/*
 * VLAN tags (IEEE 802.1Q C-tag, TPID 0x8100; 802.1ad S-tag, 0x88A8) read in
 * front of the label stack: one, or two (QinQ). The tag nearest the stack
 * names the VLAN an SF is chosen by (with the top label), as the sub-interface
 * that would carry MPLS on a router; an outer S-tag is the provider bridge's.
 */
#define AXP_MAX_VLANS 2
/*
 * Reserved label entries removed above the SF label before it decides:
 * explicit null (0, 2) one entry each, an entropy label indicator (7) with its
 * entropy label two (RFC 3032 §2.1, RFC 6790 §4). At most this many removals,
 * so explicit null, then ELI + EL, fit; what is still reserved on top after
 * them goes to the host's kernel.
 */
#define AXP_MAX_REMOVED 3
/*
 * The key of an SF in the label maps: VID << AXP_VLAN_KEY_SHIFT | label (VID 0:
 * untagged). Label 0 never names an SF, so VID << AXP_VLAN_KEY_SHIFT alone
 * marks a VLAN some SF is served on.
 */
#define AXP_VLAN_KEY_SHIFT 20
#define AXP_VID_MASK 0x0fff

enum axp_key_kind {
	AXP_KEY_NONE = 0,
	AXP_KEY_META = 1,   /* artificial key: sequence number carried in skb->mark */
	AXP_KEY_TCP = 2,
	AXP_KEY_RTP = 3,    /* UDP whose payload passes the RTP v2 header test (RFC 3550) */
	AXP_KEY_UDP = 4,
	AXP_KEY_ICMP = 5,   /* ICMP and ICMPv6 */
	AXP_KEY_OTHER = 6,  /* other L4, or an IPv6 extension chain the walk gave up on */
	AXP_KEY_FRAG = 7,   /* a fragment other than the first: no L4 header in it */
	AXP_KEY_TUNNEL = 8, /* UDP tunnel on its standard port, keyed on the inner packet */
};

/* struct axp_key.flags */
enum axp_key_flag {
	AXP_KEYF_FRAG = 1,      /* the packet is a fragment (IPv4 MF or offset, IPv6 Fragment header) */
	AXP_KEYF_EXT_LIMIT = 2, /* IPv6: AXP_MAX_EXT_HDRS walked and another extension header follows */
	AXP_KEYF_INNER_V6 = 4,  /* TUNNEL: the inner packet is IPv6 (w[1] is a flow label, not an id) */
};

/*
 * The cache key: 64 bytes, eight 64-bit words, no implicit padding (hash maps
 * hash every byte). Everything read from the packet stays in network order.
 *
 * ident  IPv4: the word at IP offset 4 with DF and the reserved bit masked off:
 *        identification, MF, fragment offset (RFC 791 §3.1), so the fragments
 *        of one datagram and an unfragmented packet with the same id all differ.
 *        IPv6: the flow label, or the Fragment header's identification when
 *        there is one (RFC 8200 §4.5).
 * proto  IP protocol / the IPv6 next header the key was taken from.
 * Words per kind (w, rest zero; payload words are whole words only):
 *   TCP     sport dport, w = {seq, ack, data offset/flags/window}; never options
 *   UDP     sport dport, w = the first 5 payload words
 *   RTP     as UDP: only the kind differs
 *   ICMP    sport = type/code (never the checksum), w = 5 words from offset 4
 *   OTHER   w = the first 5 words after the last IP / extension header walked
 *   FRAG    IPv4: w = the first 5 payload words; IPv6: w[0] = fragment
 *           offset and M flag (the rest of that word masked), w[1..4] = payload
 *   TUNNEL  outer ident, sport, dport; w[0] = tunnel id (VXLAN/Geneve VNI,
 *           GTP-U TEID, MPLS-in-UDP top LSE with TTL masked), w[1] = inner
 *           ident (IPv4 word as above, or the inner flow label with
 *           AXP_KEYF_INNER_V6), w[2..4] = inner TCP {seq, ack, offset/flags/
 *           window}, UDP {ports, 2 payload words}, ICMP {type/code with the
 *           checksum masked, 2 words from offset 4}, else (later fragment,
 *           IPv6 extension header, other protocol) the 3 words after the
 *           inner IP header. Formats and limits: parse.shared.h.
 *   META    ident = sequence number (host order), everything else zero
 */
struct axp_key {
	__u8 kind;   /* enum axp_key_kind */
	__u8 family; /* 4 or 6; 0 for META */
	__u8 proto;  /* IP protocol / IPv6 next header */
	__u8 flags;  /* enum axp_key_flag bits */
	__be32 ident;
	__be32 saddr[4]; /* IPv4 uses saddr[0] */
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__be32 w[AXP_KEY_WORDS];
};

#ifndef AXP_CDEF
_Static_assert(sizeof(struct axp_key) == 64, "struct axp_key: 8 x u64 without padding");
#endif

/*
 * VLAN tags a frame arrived with, outermost first: what TX puts back in front
 * of the stack unless the SF names vlan_out. 6 bytes, no padding.
 */
struct axp_vlans {
	__u8 n;                     /* tags: 0..AXP_MAX_VLANS */
	__u8 ad;                    /* bit i: tag i had TPID 0x88A8 (802.1ad), else 0x8100 (802.1Q) */
	__be16 tci[AXP_MAX_VLANS];  /* their TCIs (PCP, DEI, VID) as on the wire */
};

/*
 * The stack the cache holds for packets in flight between RX and TX
 * (cache.shared.h), and the VLAN tags the packet arrived with: the cache is
 * where everything TX restores waits, so the tags need no state of their own.
 */
struct axp_entry {
	__be32 labels[AXP_MAX_LABELS]; /* from the SF label to the bottom of stack, as on the wire */
	__u64 rx_ns;                   /* CLOCK_MONOTONIC at RX of its run's first packet (BPF: 0 unless its dwell is measured) */
	__u8 depth;                    /* labels used */
	__u8 sf;                       /* index into the SF table */
	struct axp_vlans vlans;        /* the tags it arrived with */
};

#ifndef AXP_CDEF
_Static_assert(sizeof(struct axp_vlans) == 6, "struct axp_vlans: no padding");
_Static_assert(sizeof(struct axp_entry) % 8 == 0, "struct axp_entry: whole 64-bit words (cache ways)");
#endif

/* One served SF. Filled by the loader into an array map indexed by SF id. */
struct axp_sf {
	__u32 label;          /* top label (20 bits) addressing this SF */
	__u32 net_out_ifindex;
	__u32 to_sf_ifindex;  /* attached: bare packets leave here */
	__u32 from_sf_ifindex;
	__u8 sf_mac[6];       /* attached: destination MAC towards the SF */
	__u8 to_sf_mac[6];    /* attached: our MAC on to_sf */
	__u8 next_hop_mac[6]; /* destination MAC behind net_out */
	__u8 net_out_mac[6];  /* our MAC on net_out */
	__be32 static_stack[AXP_MAX_LABELS]; /* static backend: what TX pushes */
	__u8 static_depth;
	__u8 _pad;
	__u16 vlan_in;  /* VID its traffic arrives on; 0: untagged (or a priority tag) */
	__u16 vlan_out; /* VID of the one 802.1Q tag TX puts on; 0: the tags it arrived with */
	__u16 _pad2;
};

enum axp_key_mode { AXP_KEY_MODE_HASH = 0, AXP_KEY_MODE_META = 1 };
enum axp_topology { AXP_TOPO_INLINE = 0, AXP_TOPO_ATTACHED = 1 };
/* RFC 3443: the TTL of the label TX exposes on top (uniform: the SF label's, minus one) */
enum axp_ttl_model { AXP_TTL_UNIFORM = 0, AXP_TTL_PIPE = 1 };
/* a top label with TTL <= 1: dropped, or passed to the host (an OAM responder there) */
enum axp_ttl_action { AXP_TTL_DROP = 0, AXP_TTL_PASS = 1 };
/* on_miss: pass; drop; last: push the SF's most recent stack (attached, NAT-tolerant) */
enum axp_miss_action { AXP_MISS_PASS = 0, AXP_MISS_DROP = 1, AXP_MISS_LAST = 2 };

/*
 * Load-time configuration; lives in .rodata so the verifier prunes unused modes.
 * The cache fields are explained in cache.shared.h.
 */
struct axp_config {
	__u32 key_mode;     /* enum axp_key_mode */
	__u32 topology;     /* enum axp_topology */
	__u32 on_miss;      /* enum axp_miss_action */
	__u32 static_mode;  /* 1: static proxy, no cache */
	__u32 cache_sets;   /* sets of AXP_CACHE_WAYS runs: cache_entries rounded up */
	__u32 max_per_key;  /* packets with one key in flight at most (1..255) */
	__u64 max_dwell_ns; /* a run whose newest packet is older than this is presumed lost */
	__u32 ttl_model;      /* enum axp_ttl_model */
	__u32 on_ttl_expired; /* enum axp_ttl_action */
	/*
	 * Meta mode: the part of skb->mark that carries the key (contiguous, at
	 * least 16 bits), where it starts, and how many of its bits count
	 * packets (the others number the CPU): the loader derives the last two.
	 */
	__u32 meta_mark_mask;
	__u32 meta_shift;
	__u32 meta_seq_bits;
	__u32 dwell_sample_mask; /* dwell_sample - 1: the SF's dwell time is measured for 1 in dwell_sample keys */
	__u64 tick_ns;           /* ns per jiffy (1/HZ): the BPF cache ages runs by jiffies x tick_ns */
};

/*
 * Counters: one row of AXP_CNT_MAX slots per SF (row = SF index) plus a last
 * row, AXP_SF_NONE, for frames no SF can be named for (not SR-MPLS, another
 * node's label, not IP at TX, a frame too short to read its label). Every
 * frame is counted once in its direction's *_PACKETS slot and once in exactly
 * one reason slot of the same row. Names are exported to Python from this
 * enum; meanings and which counters are drops live in afxdp_proxy/counters.py;
 * keep AXP_CNT_MAX last.
 */
#define AXP_SF_NONE 64  /* the counter row of frames of no SF: AXP_MAX_SFS */
#define AXP_CNT_ROWS 65 /* AXP_MAX_SFS + 1 (plain numbers: Python reads them through cffi) */
#ifndef AXP_CDEF
_Static_assert(AXP_SF_NONE == AXP_MAX_SFS && AXP_CNT_ROWS == AXP_MAX_SFS + 1, "counter rows");
#endif
/*
 * The SF's dwell time (RX to TX of a cache hit) as a histogram: bucket b
 * counts dwell times below 1024 << b ns (about 1 us, 2 us, ... 0.5 s), the
 * last one everything longer (see axp_dwell_bucket).
 */
#define AXP_DWELL_BUCKETS 21

enum axp_counter {
	AXP_CNT_RX_PACKETS = 0,      /* every frame the RX program saw */
	AXP_CNT_RX_POPPED,           /* stack popped and cached, bare packet sent on */
	AXP_CNT_RX_NOT_MPLS,         /* pass: not SR-MPLS (ARP, plain IP, ...) */
	AXP_CNT_RX_OTHER_LABEL,      /* pass: top label addresses no SF of ours */
	AXP_CNT_RX_MALFORMED,        /* drop: truncated Ethernet/MPLS/IP/L4 header */
	AXP_CNT_RX_TOO_MANY_LABELS,  /* drop: no bottom-of-stack within AXP_MAX_LABELS */
	AXP_CNT_RX_NOT_IP,           /* drop: no IPv4/IPv6 packet below the stack */
	/* the cache (cache.shared.h); in flight = inserts - takes - evictions - expired */
	AXP_CNT_RX_KEY_FULL,         /* drop: max_per_key packets with this key in flight, or its set holds only it */
	AXP_CNT_CACHE_INSERTS,       /* packets cached at RX (a new run, or one more in the key's newest run) */
	AXP_CNT_CACHE_TAKES,         /* packets whose stack TX took back out */
	AXP_CNT_EVICTIONS,           /* packets of runs pushed out of a full set by newer ones */
	AXP_CNT_EXPIRED,             /* packets of runs older than max_dwell_ms reclaimed: presumed lost */
	AXP_CNT_RX_CACHE_ERROR,      /* drop: no cache set (a loader's error), or its lock held too long */
	AXP_CNT_RX_POP_FAILED,       /* drop: head adjustment failed */
	AXP_CNT_TX_PACKETS,          /* every frame the TX program saw */
	AXP_CNT_TX_PUSHED,           /* cache hit, stack minus top label pushed */
	AXP_CNT_TX_PLAIN,            /* cache hit, nothing left to push: sent as plain IP */
	AXP_CNT_TX_NOT_IP,           /* pass: not IP (ARP, ...) */
	AXP_CNT_TX_MALFORMED,        /* drop: truncated IP/L4 header */
	AXP_CNT_TX_MISS_PASS,        /* no cache entry, sent on unlabelled (on_miss=pass) */
	AXP_CNT_TX_MISS_DROP,        /* drop: no cache entry (on_miss=drop) */
	AXP_CNT_TX_GSO_DROP,         /* drop: merged (GSO) skb cannot carry per-packet stacks */
	AXP_CNT_TX_PUSH_FAILED,      /* drop: head/room adjustment failed */
	AXP_CNT_TX_DWELL_NS,         /* sum of RX-to-TX times of cache hits, in ns */
	AXP_CNT_RX_KEY_EXT_LIMIT,    /* popped, hash key with AXP_KEYF_EXT_LIMIT: IPv6 chain too long */
	AXP_CNT_RX_VLAN_OTHER,       /* pass: tagged, and not SR-MPLS or on a VLAN no SF is served on */
	AXP_CNT_RX_RESERVED_LABEL,   /* pass: a reserved label on top that is not removed (router alert, GAL, ...) */
	AXP_CNT_RX_TTL_EXPIRED,      /* drop: the SF label's TTL <= 1 (on_ttl_expired = drop) */
	AXP_CNT_RX_TTL_EXPIRED_PASS, /* pass: the SF label's TTL <= 1 (on_ttl_expired = pass) */
	AXP_CNT_TX_HOST,             /* pass: from the SF to the proxy host (host.bpf.h), not proxied */
	AXP_CNT_TX_MISS_LAST,        /* no cache entry, the SF's last stack pushed (on_miss=last) */
	/* besides a frame's reason (redirect.bpf.c): the kernel refused the redirect asked for */
	AXP_CNT_RX_REDIRECT_ERR,     /* drop: a popped frame did not reach to_sf */
	AXP_CNT_TX_REDIRECT_ERR,     /* drop: a relabelled frame did not reach net_out */
	AXP_CNT_TX_DWELL_HIST,       /* first of AXP_DWELL_BUCKETS slots: the dwell histogram */
	AXP_CNT_MAX = AXP_CNT_TX_DWELL_HIST + AXP_DWELL_BUCKETS
};

#ifndef AXP_CDEF
/*
 * The histogram bucket of a dwell time: 0 below 1024 ns, b for
 * [512 << b, 1024 << b) ns, AXP_DWELL_BUCKETS - 1 from 512 << 20 ns (0.54 s)
 * on. A binary search on the bit length: BPF has no count-leading-zeros.
 */
static inline __attribute__((always_inline)) __u32 axp_dwell_bucket(__u64 ns)
{
	__u64 v = ns >> 10;
	__u32 b = 0;

	if (v >> 16) {
		v >>= 16;
		b += 16;
	}
	if (v >> 8) {
		v >>= 8;
		b += 8;
	}
	if (v >> 4) {
		v >>= 4;
		b += 4;
	}
	if (v >> 2) {
		v >>= 2;
		b += 2;
	}
	if (v >> 1) {
		v >>= 1;
		b += 1;
	}
	b += (__u32)v; /* v is 0 or 1 now: b is the bit length of ns >> 10 */
	return b < AXP_DWELL_BUCKETS - 1 ? b : AXP_DWELL_BUCKETS - 1;
}
#endif

/*
 * A local address of the proxy host's namespace (host.bpf.h's map, filled by
 * the loader): IPv6 as on the wire, IPv4 as ::ffff:a.b.c.d (RFC 4291 §2.5.5.2).
 */
struct axp_host_addr {
	__be32 addr[4];
};

/*
 * redirect.bpf.c: where a failed redirect of one of the proxy's programs
 * counts. Key: the program, the interface it ran on and the target's ifindex
 * (or 0, 0 for the program's fallback); value: the counter row and slot.
 */
struct axp_redirect_key {
	__u32 prog_id;
	__u32 ifindex;
	__u32 to_ifindex;
};

struct axp_redirect_slot {
	__u32 row;  /* SF index, or AXP_SF_NONE */
	__u32 slot; /* AXP_CNT_RX_REDIRECT_ERR or AXP_CNT_TX_REDIRECT_ERR */
};

/* Per-packet outcome of the shared parser. */
enum axp_parse_result {
	AXP_PARSE_OK = 0,
	AXP_PARSE_NOT_MPLS,
	AXP_PARSE_MALFORMED,
	AXP_PARSE_TOO_MANY_LABELS,
	AXP_PARSE_NOT_IP,
	AXP_PARSE_RESERVED, /* a reserved label (0..15) on top once explicit null and ELI + EL are gone */
};

/* What the shared parser found in front of and below the label stack (parse.shared.h). */
struct axp_frame {
	__u32 depth;          /* labels from the SF label to the bottom of stack */
	__u32 l3_off;         /* offset of the IP header from the start of the frame */
	__u16 l3_proto;       /* AXP_ETH_P_IP or AXP_ETH_P_IPV6, host order */
	__u16 vid;            /* VID of the tag nearest the stack (host order); 0: untagged */
	__u32 top_off;        /* offset of the label that decides (labels[0]); 0: none read */
	__u32 removed;        /* reserved entries removed above it (explicit null, ELI, EL) */
	struct axp_vlans vlans; /* the tags in front of the stack */
	__u16 _pad;
};

#endif /* AXP_PROXY_SHARED_H */
