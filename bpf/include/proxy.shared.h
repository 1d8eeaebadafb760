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
#define AXP_KEY_WORDS 3    /* kind-specific words in struct axp_key */

enum axp_key_kind {
	AXP_KEY_NONE = 0,
	AXP_KEY_META = 1,  /* artificial key: sequence number carried in skb->mark */
	AXP_KEY_TCP = 2,
	AXP_KEY_RTP = 3,   /* UDP whose payload starts with an RTP v2 header */
	AXP_KEY_UDP = 4,
	AXP_KEY_ICMP = 5,  /* ICMP and ICMPv6 */
	AXP_KEY_OTHER = 6, /* other L4, IPv6 extension headers, later IPv4 fragments */
};

/*
 * The cache key. 56 bytes, no implicit padding (hash maps hash every byte).
 * Fields per kind (w = words in network order):
 *   TCP   sport dport w = {seq, ack, 0}; IPv6 adds w[2] = data offset/flags/window
 *   RTP   sport dport w = first 12 payload bytes {V/P/X/CC/M/PT/seq, timestamp, SSRC}
 *   UDP   sport dport w = first 12 payload bytes (whole words only, rest zero)
 *   ICMP  sport = type/code, w = {rest of header, next two words}
 *   OTHER w = first 12 bytes after the IP header (whole words only)
 *   META  ident = sequence number, everything else zero
 * ident: IPv4 identification in the upper 16 bits, or the IPv6 flow label.
 */
struct axp_key {
	__u8 kind;   /* enum axp_key_kind */
	__u8 family; /* 4 or 6; 0 for META */
	__u8 proto;  /* IP protocol / IPv6 next header */
	__u8 _pad;
	__be32 ident;
	__be32 saddr[4]; /* IPv4 uses saddr[0] */
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__be32 w[AXP_KEY_WORDS];
};

/* The stack the cache holds for packets in flight between RX and TX (cache.shared.h). */
struct axp_entry {
	__be32 labels[AXP_MAX_LABELS]; /* label stack entries as on the wire, outermost first */
	__u64 rx_ns;                   /* CLOCK_MONOTONIC (bpf_ktime_get_ns) at RX of its run's first packet */
	__u8 depth;                    /* labels used */
	__u8 sf;                       /* index into the SF table */
	__u16 _pad;
	__u32 _pad2;
};

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
	__u8 _pad[3];
};

enum axp_key_mode { AXP_KEY_MODE_HASH = 0, AXP_KEY_MODE_META = 1 };
enum axp_topology { AXP_TOPO_INLINE = 0, AXP_TOPO_ATTACHED = 1 };
enum axp_miss_action { AXP_MISS_PASS = 0, AXP_MISS_DROP = 1 };

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
};

/*
 * Counters, one slot each in a per-CPU array. Names are exported to Python
 * from this enum; keep AXP_CNT_MAX last.
 */
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
	AXP_CNT_RX_CACHE_ERROR,      /* drop: no cache set (cannot happen with a sane loader) */
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
	AXP_CNT_MAX
};

/* Per-packet outcome of the shared parser. */
enum axp_parse_result {
	AXP_PARSE_OK = 0,
	AXP_PARSE_NOT_MPLS,
	AXP_PARSE_MALFORMED,
	AXP_PARSE_TOO_MANY_LABELS,
	AXP_PARSE_NOT_IP,
};

#endif /* AXP_PROXY_SHARED_H */
