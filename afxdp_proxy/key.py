"""Python reference of the cache key: the test oracle for the BPF and the C parser.

Mirrors ``axp_derive_key``, ``axp_parse_head`` and ``axp_parse_mpls_frame`` in ``bpf/include/parse.shared.h``
line for line, and produces the 64 bytes of ``struct axp_key`` exactly as C lays them
out. Packet fields are kept in network order (as the C reads them with memcpy), so the
bytes are the same whatever the host byte order.
"""

from __future__ import annotations

import ipaddress
import struct
import sys
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

MAX_LABELS = 16  # AXP_MAX_LABELS
KEY_WORDS = 5  # AXP_KEY_WORDS
MAX_EXT_HDRS = 6  # AXP_MAX_EXT_HDRS
MAX_VLANS = 2  # AXP_MAX_VLANS
MAX_REMOVED = 3  # AXP_MAX_REMOVED
ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_MPLS_UC = 0x8847
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_TEB = 0x6558
MPLS_BOS = 0x100
VID_MASK = 0x0FFF
LABEL_IPV4_NULL, LABEL_IPV6_NULL, LABEL_ELI = 0, 2, 7  # removed above the SF label (RFC 3032, RFC 6790)
LABEL_MIN_UNRESERVED = 16
IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_DSTOPTS = 60
IPV6_EXT_HDRS = (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_AH, IPPROTO_DSTOPTS)
IP_IDENT_MASK = 0xFFFF3FFF  # IPv4 word at offset 4 without DF and the reserved bit
IP_MF_OFFSET = 0x3FFF
IP_OFFSET = 0x1FFF
IP6_FLOW_LABEL = 0x000FFFFF
IP6_FRAG_OFFSET_M = 0x0000FFF9
IP6_FRAG_OFFSET = 0xFFF8
UDP_PORT_GTPU = 2152
UDP_PORT_VXLAN = 4789
UDP_PORT_GENEVE = 6081
UDP_PORT_MPLS = 6635
GTPU_MAX_EXT = 4
VNI_MASK = 0xFFFFFF00
MPLS_NO_TTL = 0xFFFFFF00


class KeyKind(IntEnum):
    """enum axp_key_kind"""

    NONE = 0
    META = 1
    TCP = 2
    RTP = 3
    UDP = 4
    ICMP = 5
    OTHER = 6
    FRAG = 7
    TUNNEL = 8


class KeyFlag(IntFlag):
    """enum axp_key_flag"""

    FRAG = 1
    EXT_LIMIT = 2
    INNER_V6 = 4


class ParseResult(IntEnum):
    """enum axp_parse_result"""

    OK = 0
    NOT_MPLS = 1
    MALFORMED = 2
    TOO_MANY_LABELS = 3
    NOT_IP = 4
    RESERVED = 5


# struct axp_key: kind family proto flags | ident | saddr[16] | daddr[16] | sport dport | w[5]
# Every integer is packed big-endian because C copies it from the wire unconverted.
_KEY = struct.Struct(f"!BBBBI16s16sHH{KEY_WORDS}I")
KEY_SIZE = _KEY.size
assert KEY_SIZE == 64


@dataclass
class Key:
    """struct axp_key with network-order values as Python ints (IPv4 ``ident`` = IP id << 16 | MF | offset)."""

    kind: KeyKind = KeyKind.NONE
    family: int = 0
    proto: int = 0
    flags: int = 0  # KeyFlag bits
    ident: int = 0
    saddr: bytes = bytes(16)
    daddr: bytes = bytes(16)
    sport: int = 0
    dport: int = 0
    w: list[int] = field(default_factory=lambda: [0] * KEY_WORDS)

    def to_bytes(self) -> bytes:
        raw = _KEY.pack(
            self.kind,
            self.family,
            self.proto,
            self.flags,
            self.ident,
            self.saddr,
            self.daddr,
            self.sport,
            self.dport,
            *self.w,
        )
        if self.kind == KeyKind.META:
            # the meta key holds the mark as a host-order __u32, not a wire field
            raw = raw[:4] + self.ident.to_bytes(4, sys.byteorder) + raw[8:]
        return raw

    @classmethod
    def from_bytes(cls, raw: bytes) -> Key:
        kind, family, proto, flags, ident, saddr, daddr, sport, dport, *w = _KEY.unpack(bytes(raw))
        if kind == KeyKind.META:
            ident = int.from_bytes(raw[4:8], sys.byteorder)
        known = kind in KeyKind._value2member_map_
        return cls(KeyKind(kind) if known else kind, family, proto, flags, ident, saddr, daddr, sport, dport, w)


def meta_key(mark: int) -> bytes:
    """The key of meta mode: the artificial sequence number, everything else zero."""
    return Key(KeyKind.META, ident=mark).to_bytes()


def _u16(b: bytes, off: int) -> int:
    return int.from_bytes(b[off : off + 2], "big")


def _u32(b: bytes, off: int) -> int:
    return int.from_bytes(b[off : off + 4], "big")


def _copy_words(b: bytes, off: int, w: list[int], at: int = 0, n: int = KEY_WORDS) -> None:
    # up to n whole 32-bit words into w[at:], as axp_copy_words: a partial word stays zero
    for i in range(n):
        if off + 4 * (i + 1) > len(b):
            return
        w[at + i] = _u32(b, off + 4 * i)


def _key_inner(b: bytes, ip: int, key: Key) -> bool:
    """axp_key_inner: w[1..4] and INNER_V6 from the tunnelled packet, or False with nothing written."""
    end = len(b)
    if ip + 1 > end:
        return False
    w = [0] * KEY_WORDS
    flags = 0
    later = False
    if b[ip] >> 4 == 4:
        if ip + 20 > end or b[ip] & 0x0F < 5:
            return False
        ident = _u32(b, ip + 4) & IP_IDENT_MASK
        later = bool(ident & IP_OFFSET)
        proto = b[ip + 9]
        l4 = ip + (b[ip] & 0x0F) * 4
        if l4 > end:
            return False
    elif b[ip] >> 4 == 6:
        if ip + 40 > end:
            return False
        ident = _u32(b, ip) & IP6_FLOW_LABEL
        proto = b[ip + 6]
        flags = KeyFlag.INNER_V6
        l4 = ip + 40
    else:
        return False
    if not later and proto == IPPROTO_TCP:
        if l4 + 20 > end:
            return False
        w[2], w[3], w[4] = _u32(b, l4 + 4), _u32(b, l4 + 8), _u32(b, l4 + 12)  # seq, ack, offset/flags/window
    elif not later and proto == IPPROTO_UDP:
        if l4 + 8 > end:
            return False
        w[2] = _u32(b, l4)  # ports
        _copy_words(b, l4 + 8, w, 3, 2)
    elif not later and proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        if l4 + 8 > end:
            return False
        w[2] = _u32(b, l4) & 0xFFFF0000  # type, code; not the checksum
        _copy_words(b, l4 + 4, w, 3, 2)
    else:
        _copy_words(b, l4, w, 2, 3)
    key.w[1:] = [ident, *w[2:]]
    key.flags |= flags
    return True


def _skip_inner_eth(b: bytes, p: int) -> int | None:
    """axp_skip_inner_eth: past an inner Ethernet header followed by IPv4/IPv6 (no VLAN)."""
    if p + ETH_HLEN > len(b) or _u16(b, p + 12) not in (ETH_P_IP, ETH_P_IPV6):
        return None
    return p + ETH_HLEN


def _tunnel_inner(b: bytes, pl: int, dport: int) -> tuple[int | None, int]:
    """axp_tunnel_inner: (offset of the inner IP packet or None, tunnel id)."""
    end = len(b)
    if dport == UDP_PORT_VXLAN:  # RFC 7348 §5
        if pl + 8 > end or not b[pl] & 0x08:
            return None, 0
        return _skip_inner_eth(b, pl + 8), _u32(b, pl + 4) & VNI_MASK
    if dport == UDP_PORT_GENEVE:  # RFC 8926 §3.4
        if pl + 8 > end or b[pl] >> 6 != 0:
            return None, 0
        vni = _u32(b, pl + 4) & VNI_MASK
        p = pl + 8 + (b[pl] & 0x3F) * 4
        ptype = _u16(b, pl + 2)
        if ptype == ETH_P_TEB:
            return _skip_inner_eth(b, p), vni
        return (p if ptype in (ETH_P_IP, ETH_P_IPV6) else None), vni
    if dport == UDP_PORT_GTPU:  # 3GPP TS 29.281 §5.1, §5.2.1
        if pl + 8 > end or b[pl] & 0xF0 != 0x30 or b[pl + 1] != 255:
            return None, 0
        teid = _u32(b, pl + 4)
        p = pl + 8
        if not b[pl] & 0x07:
            return p, teid
        if p + 4 > end:
            return None, teid
        nxt = b[p + 3]
        p += 4
        if not b[pl] & 0x04:
            return p, teid
        for _ in range(GTPU_MAX_EXT):
            if not nxt:
                return p, teid
            if p + 1 > end or not b[p]:
                return None, teid
            p += b[p] * 4 - 1  # at the next-type byte that ends this header
            if p + 1 > end:
                return None, teid
            nxt = b[p]
            p += 1
        return (None if nxt else p), teid
    if dport == UDP_PORT_MPLS:  # RFC 7510 §3
        if pl + 4 > end:
            return None, 0
        top = _u32(b, pl) & MPLS_NO_TTL
        p = pl
        for _ in range(MAX_LABELS):
            if p + 4 > end:
                return None, top
            lse = _u32(b, p)
            p += 4
            if lse & MPLS_BOS:
                return p, top
        return None, top
    return None, 0


def is_rtp(b: bytes, udp: int) -> bool:
    """axp_is_rtp: RFC 3550 §5.1 v2 header, static/dynamic payload type, even port, header fits."""
    end = len(b)
    rtp = udp + 8
    if rtp + 12 > end or _u16(b, udp + 2) & 1:
        return False
    if b[rtp] >> 6 != 2 or 34 < b[rtp + 1] & 0x7F < 96:
        return False
    plen = _u16(b, udp + 4)  # the UDP length: the kind must not depend on padding or linear data
    hlen = 12 + (b[rtp] & 0x0F) * 4
    if plen < 8 or hlen > plen - 8:
        return False
    if not b[rtp] & 0x10:
        return True
    p = rtp + hlen
    if p + 4 > end:
        return False
    return hlen + 4 + _u16(b, p + 2) * 4 <= plen - 8


def _key_l4(b: bytes, l4: int, proto: int, key: Key) -> ParseResult:
    end = len(b)
    key.proto = proto
    if proto == IPPROTO_TCP:
        if l4 + 20 > end:
            return ParseResult.MALFORMED
        key.kind = KeyKind.TCP
        key.sport, key.dport = _u16(b, l4), _u16(b, l4 + 2)
        key.w[0], key.w[1], key.w[2] = _u32(b, l4 + 4), _u32(b, l4 + 8), _u32(b, l4 + 12)  # seq ack off/flags/win
        return ParseResult.OK
    if proto == IPPROTO_UDP:
        if l4 + 8 > end:
            return ParseResult.MALFORMED
        key.sport, key.dport = _u16(b, l4), _u16(b, l4 + 2)
        inner, tid = _tunnel_inner(b, l4 + 8, key.dport)  # a tunnel header is constant per flow
        if inner is not None and _key_inner(b, inner, key):
            key.kind = KeyKind.TUNNEL
            key.w[0] = tid
            return ParseResult.OK
        key.kind = KeyKind.RTP if is_rtp(b, l4) else KeyKind.UDP
        _copy_words(b, l4 + 8, key.w)
        return ParseResult.OK
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        if l4 + 8 > end:
            return ParseResult.MALFORMED
        key.kind = KeyKind.ICMP
        key.sport = _u16(b, l4)  # type and code, never the checksum
        _copy_words(b, l4 + 4, key.w)
        return ParseResult.OK
    key.kind = KeyKind.OTHER
    _copy_words(b, l4, key.w)
    return ParseResult.OK


def _derive_key_v4(b: bytes, l3: int, key: Key) -> ParseResult:  # RFC 791 §3.1
    end = len(b)
    if l3 + 20 > end:
        return ParseResult.MALFORMED
    ihl = b[l3] & 0x0F
    if ihl < 5:
        return ParseResult.MALFORMED
    key.family = 4
    key.ident = _u32(b, l3 + 4) & IP_IDENT_MASK  # id, MF, fragment offset
    if key.ident & IP_MF_OFFSET:
        key.flags |= KeyFlag.FRAG
    key.saddr = b[l3 + 12 : l3 + 16] + bytes(12)
    key.daddr = b[l3 + 16 : l3 + 20] + bytes(12)
    l4 = l3 + ihl * 4
    if l4 > end:
        return ParseResult.MALFORMED
    if key.ident & IP_OFFSET:  # later fragment: no L4 header, key on payload words
        key.proto = b[l3 + 9]
        key.kind = KeyKind.FRAG
        _copy_words(b, l4, key.w)
        return ParseResult.OK
    return _key_l4(b, l4, b[l3 + 9], key)


def _derive_key_v6(b: bytes, l3: int, key: Key) -> ParseResult:  # RFC 8200 §3, §4
    end = len(b)
    if l3 + 40 > end:
        return ParseResult.MALFORMED
    key.family = 6
    key.ident = _u32(b, l3) & IP6_FLOW_LABEL
    key.saddr = b[l3 + 8 : l3 + 24]
    key.daddr = b[l3 + 24 : l3 + 40]
    nh = b[l3 + 6]
    p = l3 + 40
    for _ in range(MAX_EXT_HDRS):
        if nh == IPPROTO_FRAGMENT:
            if p + 8 > end:
                return ParseResult.MALFORMED
            key.flags |= KeyFlag.FRAG
            key.ident = _u32(b, p + 4)  # identification: one per datagram
            if _u16(b, p + 2) & IP6_FRAG_OFFSET:  # a later fragment
                key.proto = b[p]
                key.kind = KeyKind.FRAG
                key.w[0] = _u32(b, p) & IP6_FRAG_OFFSET_M
                _copy_words(b, p + 8, key.w, 1, KEY_WORDS - 1)
                return ParseResult.OK
            length = 8
        elif nh in (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS):
            if p + 2 > end:
                return ParseResult.MALFORMED
            length = (b[p + 1] + 1) * 8
        elif nh == IPPROTO_AH:  # RFC 4302 §2.2
            if p + 2 > end:
                return ParseResult.MALFORMED
            length = (b[p + 1] + 2) * 4
        else:
            break
        nh = b[p]
        p += length
        if p > end:
            return ParseResult.MALFORMED
    if nh in IPV6_EXT_HDRS:
        key.flags |= KeyFlag.EXT_LIMIT
    return _key_l4(b, p, nh, key)


def _derive_key(b: bytes, l3: int, key: Key) -> ParseResult:
    end = len(b)
    if l3 + 1 > end:
        return ParseResult.NOT_IP
    if b[l3] >> 4 == 4:
        return _derive_key_v4(b, l3, key)
    if b[l3] >> 4 == 6:
        return _derive_key_v6(b, l3, key)
    return ParseResult.NOT_IP


def derive_key(ip: bytes) -> tuple[ParseResult, bytes | None]:
    """Hash-mode key of an IP packet (``axp_derive_key``): the result and the key on success."""
    key = Key()
    res = _derive_key(bytes(ip), 0, key)
    return res, key.to_bytes() if res == ParseResult.OK else None


@dataclass
class ParsedFrame:
    """What ``axp_parse_mpls_frame`` reports for one Ethernet frame (``struct axp_frame``)."""

    result: ParseResult
    labels: list[int]  # LSEs read from the deciding entry down (as C fills labels[], also on failure)
    depth: int = 0  # set once a bottom of stack is found, as struct axp_frame
    l3_off: int = 0
    l3_proto: int = 0  # ETH_P_IP / ETH_P_IPV6 when an IP packet follows
    key: bytes | None = None  # the 64 key bytes when result is OK
    vid: int = 0  # VID of the tag nearest the stack; 0: untagged
    top_off: int = 0  # offset of the deciding entry (labels[0]); 0: none read
    removed: int = 0  # explicit null, ELI and EL entries removed above it
    tags: list[tuple[int, int]] = field(default_factory=list)  # (TPID, TCI) in front of the stack, outermost first


def parse_head(b: bytes, out: ParsedFrame) -> tuple[ParseResult, int]:
    """``axp_parse_head``: tags, the MPLS ethertype, explicit null and ELI + EL removed above the
    label that decides. Returns the result and that label's offset (0 when none was read)."""
    if len(b) < ETH_HLEN:
        return ParseResult.MALFORMED, 0
    p = 12
    for _ in range(MAX_VLANS):
        if p + 2 > len(b):
            return ParseResult.MALFORMED, 0
        tpid = _u16(b, p)
        if tpid not in (ETH_P_8021Q, ETH_P_8021AD):
            break
        if p + 6 > len(b):
            return ParseResult.MALFORMED, 0
        out.tags.append((tpid, _u16(b, p + 2)))
        out.vid = _u16(b, p + 2) & VID_MASK
        p += 4
    if p + 2 > len(b):
        return ParseResult.MALFORMED, 0
    if _u16(b, p) != ETH_P_MPLS_UC:
        return ParseResult.NOT_MPLS, 0
    p += 2
    for _ in range(MAX_REMOVED):
        if p + 4 > len(b):
            return ParseResult.MALFORMED, 0
        lse = _u32(b, p)
        if lse & MPLS_BOS:
            break
        if lse >> 12 == LABEL_ELI:
            if p + 8 > len(b):
                return ParseResult.MALFORMED, 0
            if _u32(b, p + 4) & MPLS_BOS:
                break
            p += 8
            out.removed += 2
        elif lse >> 12 in (LABEL_IPV4_NULL, LABEL_IPV6_NULL):
            p += 4
            out.removed += 1
        else:
            break
    if p + 4 > len(b):
        return ParseResult.MALFORMED, 0
    out.labels.append(_u32(b, p))
    out.top_off = p
    if _u32(b, p) >> 12 < LABEL_MIN_UNRESERVED:
        return ParseResult.RESERVED, p
    return ParseResult.OK, p


def parse_mpls_frame(frame: bytes) -> ParsedFrame:
    """Parse an SR-MPLS frame: tags, label stack, where the IP packet starts, and its key."""
    b = bytes(frame)
    out = ParsedFrame(ParseResult.MALFORMED, [])
    res, top = parse_head(b, out)
    if res != ParseResult.OK:
        out.result = res
        return out
    out.labels = []
    p = top
    for i in range(MAX_LABELS):
        if p + 4 > len(b):
            out.result = ParseResult.MALFORMED
            return out
        lse = _u32(b, p)
        out.labels.append(lse)
        p += 4
        if not lse & MPLS_BOS:
            continue
        out.depth, out.l3_off = i + 1, p
        if p + 1 > len(b) or b[p] >> 4 not in (4, 6):
            out.result = ParseResult.NOT_IP
            return out
        out.l3_proto = ETH_P_IP if b[p] >> 4 == 4 else ETH_P_IPV6
        key = Key()
        out.result = _derive_key(b, p, key)
        if out.result == ParseResult.OK:
            out.key = key.to_bytes()
        return out
    out.result = ParseResult.TOO_MANY_LABELS
    return out


_TUNNELS = {UDP_PORT_VXLAN: "vxlan vni", UDP_PORT_GENEVE: "geneve vni", UDP_PORT_GTPU: "gtpu teid",
            UDP_PORT_MPLS: "mpls label"}  # fmt: skip


def _tunnel_id(k: Key) -> str:
    """The tunnel's own identifier in w[0], named as its RFC names it."""
    shift = {UDP_PORT_GTPU: 0, UDP_PORT_MPLS: 12}.get(k.dport, 8)  # TEID whole, label 20 bits, VNI 24
    return f"{_TUNNELS.get(k.dport, 'id')}=0x{k.w[0] >> shift:x}"


def format_key(raw: bytes) -> str:
    """One readable line for a key, e.g. ``tcp proto=6 10.0.0.1:1000 > 10.0.0.2:80 id=0x1234 w=[...]``."""
    k = Key.from_bytes(raw)
    kind = k.kind.name.lower() if isinstance(k.kind, KeyKind) else f"kind{k.kind}"
    if k.kind == KeyKind.META:
        return f"meta mark=0x{k.ident:08x}"
    if k.family == 4:
        src, dst = ipaddress.IPv4Address(k.saddr[:4]), ipaddress.IPv4Address(k.daddr[:4])
        ident = f"id=0x{k.ident >> 16:04x}"
        if k.ident & IP_MF_OFFSET:
            ident += f" off={k.ident & IP_OFFSET}" + (" mf" if k.ident & 0x2000 else "")
    elif k.family == 6:
        src, dst = ipaddress.IPv6Address(k.saddr), ipaddress.IPv6Address(k.daddr)
        ident = f"fragid=0x{k.ident:08x}" if k.flags & KeyFlag.FRAG else f"flow=0x{k.ident:05x}"
    else:
        return f"{kind} family={k.family} raw={bytes(raw).hex()}"
    if k.kind in (KeyKind.TCP, KeyKind.UDP, KeyKind.RTP):
        where = f"{src}:{k.sport} > {dst}:{k.dport}"
    elif k.kind == KeyKind.TUNNEL:
        where = f"{src}:{k.sport} > {dst}:{k.dport} {_tunnel_id(k)}"
    elif k.kind == KeyKind.ICMP:
        where = f"{src} > {dst} type={k.sport >> 8} code={k.sport & 0xFF}"
    else:
        where = f"{src} > {dst}"
    if k.flags:
        names = [f.name.lower() for f in KeyFlag if f & k.flags and f.name]
        ident += f" flags={','.join(names)}"
    words = " ".join(f"{w:08x}" for w in k.w)
    return f"{kind} proto={k.proto} {where} {ident} w=[{words}]"
