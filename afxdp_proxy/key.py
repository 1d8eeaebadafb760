"""Python reference of the cache key: the test oracle for the BPF and the C parser.

Mirrors ``axp_derive_key`` and ``axp_parse_mpls_frame`` in ``bpf/include/parse.shared.h``
line for line, and produces the 56 bytes of ``struct axp_key`` exactly as C lays them
out. Packet fields are kept in network order (as the C reads them with memcpy), so the
bytes are the same whatever the host byte order.
"""

from __future__ import annotations

import ipaddress
import struct
import sys
from dataclasses import dataclass, field
from enum import IntEnum

MAX_LABELS = 16  # AXP_MAX_LABELS
KEY_WORDS = 3  # AXP_KEY_WORDS
ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_MPLS_UC = 0x8847
MPLS_BOS = 0x100
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58


class KeyKind(IntEnum):
    """enum axp_key_kind"""

    NONE = 0
    META = 1
    TCP = 2
    RTP = 3
    UDP = 4
    ICMP = 5
    OTHER = 6


class ParseResult(IntEnum):
    """enum axp_parse_result"""

    OK = 0
    NOT_MPLS = 1
    MALFORMED = 2
    TOO_MANY_LABELS = 3
    NOT_IP = 4


# struct axp_key: kind family proto _pad | ident | saddr[16] | daddr[16] | sport dport | w[3]
# Every integer is packed big-endian because C copies it from the wire unconverted.
_KEY = struct.Struct("!BBBxI16s16sHH3I")
KEY_SIZE = _KEY.size
assert KEY_SIZE == 56


@dataclass
class Key:
    """struct axp_key with network-order values as Python ints (``ident`` = IP id << 16 for IPv4)."""

    kind: KeyKind = KeyKind.NONE
    family: int = 0
    proto: int = 0
    ident: int = 0
    saddr: bytes = bytes(16)
    daddr: bytes = bytes(16)
    sport: int = 0
    dport: int = 0
    w: list[int] = field(default_factory=lambda: [0] * KEY_WORDS)

    def to_bytes(self) -> bytes:
        raw = _KEY.pack(
            self.kind, self.family, self.proto, self.ident, self.saddr, self.daddr, self.sport, self.dport, *self.w
        )
        if self.kind == KeyKind.META:
            # the meta key holds the mark as a host-order __u32, not a wire field
            raw = raw[:4] + self.ident.to_bytes(4, sys.byteorder) + raw[8:]
        return raw

    @classmethod
    def from_bytes(cls, raw: bytes) -> Key:
        kind, family, proto, ident, saddr, daddr, sport, dport, *w = _KEY.unpack(bytes(raw))
        if kind == KeyKind.META:
            ident = int.from_bytes(raw[4:8], sys.byteorder)
        known = kind in KeyKind._value2member_map_
        return cls(KeyKind(kind) if known else kind, family, proto, ident, saddr, daddr, sport, dport, w)


def meta_key(mark: int) -> bytes:
    """The key of meta mode: the artificial sequence number, everything else zero."""
    return Key(KeyKind.META, ident=mark).to_bytes()


def _u16(b: bytes, off: int) -> int:
    return int.from_bytes(b[off : off + 2], "big")


def _u32(b: bytes, off: int) -> int:
    return int.from_bytes(b[off : off + 4], "big")


def _copy_words(b: bytes, off: int, key: Key) -> None:
    # whole 32-bit words only, as axp_copy_words: a partial word stays zero
    for i in range(KEY_WORDS):
        if off + 4 * (i + 1) > len(b):
            return
        key.w[i] = _u32(b, off + 4 * i)


def _key_l4(b: bytes, l4: int, proto: int, is_v6: bool, key: Key) -> ParseResult:
    end = len(b)
    key.proto = proto
    if proto == IPPROTO_TCP:
        if l4 + 20 > end:
            return ParseResult.MALFORMED
        key.kind = KeyKind.TCP
        key.sport, key.dport = _u16(b, l4), _u16(b, l4 + 2)
        key.w[0], key.w[1] = _u32(b, l4 + 4), _u32(b, l4 + 8)  # seq, ack
        if is_v6:  # no IP id in IPv6: offset/flags/window keeps pure ACKs apart
            key.w[2] = _u32(b, l4 + 12)
        return ParseResult.OK
    if proto == IPPROTO_UDP:
        if l4 + 8 > end:
            return ParseResult.MALFORMED
        key.sport, key.dport = _u16(b, l4), _u16(b, l4 + 2)
        key.kind = KeyKind.UDP
        # RTP v2, but not RTCP (payload type byte 200..204 masks to 72..76)
        if l4 + 20 <= end and b[l4 + 8] >> 6 == 2 and not 72 <= b[l4 + 9] & 0x7F <= 76:
            key.kind = KeyKind.RTP
        _copy_words(b, l4 + 8, key)
        return ParseResult.OK
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        if l4 + 8 > end:
            return ParseResult.MALFORMED
        key.kind = KeyKind.ICMP
        key.sport = _u16(b, l4)  # type and code, never the checksum
        _copy_words(b, l4 + 4, key)
        return ParseResult.OK
    key.kind = KeyKind.OTHER
    _copy_words(b, l4, key)
    return ParseResult.OK


def _derive_key(b: bytes, l3: int, key: Key) -> ParseResult:
    end = len(b)
    if l3 + 1 > end:
        return ParseResult.NOT_IP
    version = b[l3] >> 4
    if version == 4:
        if l3 + 20 > end:
            return ParseResult.MALFORMED
        ihl = b[l3] & 0x0F
        if ihl < 5:
            return ParseResult.MALFORMED
        proto = b[l3 + 9]
        key.family = 4
        key.ident = _u16(b, l3 + 4) << 16  # IP id in the upper half
        key.saddr = b[l3 + 12 : l3 + 16] + bytes(12)
        key.daddr = b[l3 + 16 : l3 + 20] + bytes(12)
        l4 = l3 + ihl * 4
        if l4 > end:
            return ParseResult.MALFORMED
        if _u16(b, l3 + 6) & 0x1FFF:  # later fragment: no L4 header, key on payload words
            key.proto = proto
            key.kind = KeyKind.OTHER
            _copy_words(b, l4, key)
            return ParseResult.OK
        return _key_l4(b, l4, proto, False, key)
    if version == 6:
        if l3 + 40 > end:
            return ParseResult.MALFORMED
        key.family = 6
        key.ident = _u32(b, l3) & 0x000FFFFF  # flow label
        key.saddr = b[l3 + 8 : l3 + 24]
        key.daddr = b[l3 + 24 : l3 + 40]
        return _key_l4(b, l3 + 40, b[l3 + 6], True, key)
    return ParseResult.NOT_IP


def derive_key(ip: bytes) -> tuple[ParseResult, bytes | None]:
    """Hash-mode key of an IP packet (``axp_derive_key``): the result and the key on success."""
    key = Key()
    res = _derive_key(bytes(ip), 0, key)
    return res, key.to_bytes() if res == ParseResult.OK else None


@dataclass
class ParsedFrame:
    """What ``axp_parse_mpls_frame`` reports for one Ethernet frame."""

    result: ParseResult
    labels: list[int]  # LSEs read, outermost first (as C fills labels[], also on failure)
    depth: int = 0  # set once a bottom of stack is found, as struct axp_frame
    l3_off: int = 0
    l3_proto: int = 0  # ETH_P_IP / ETH_P_IPV6 when an IP packet follows
    key: bytes | None = None  # the 56 key bytes when result is OK


def parse_mpls_frame(frame: bytes) -> ParsedFrame:
    """Parse an SR-MPLS frame: label stack, where the IP packet starts, and its key."""
    b = bytes(frame)
    out = ParsedFrame(ParseResult.MALFORMED, [])
    if len(b) < ETH_HLEN:
        return out
    if _u16(b, 12) != ETH_P_MPLS_UC:
        out.result = ParseResult.NOT_MPLS
        return out
    p = ETH_HLEN
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


def format_key(raw: bytes) -> str:
    """One readable line for a key, e.g. ``tcp 10.0.0.1:1000 > 10.0.0.2:80 id=0x1234 w=...``."""
    k = Key.from_bytes(raw)
    kind = k.kind.name.lower() if isinstance(k.kind, KeyKind) else f"kind{k.kind}"
    if k.kind == KeyKind.META:
        return f"meta mark=0x{k.ident:08x}"
    if k.family == 4:
        src, dst = ipaddress.IPv4Address(k.saddr[:4]), ipaddress.IPv4Address(k.daddr[:4])
        ident = f"id=0x{k.ident >> 16:04x}"
    elif k.family == 6:
        src, dst = ipaddress.IPv6Address(k.saddr), ipaddress.IPv6Address(k.daddr)
        ident = f"flow=0x{k.ident:05x}"
    else:
        return f"{kind} family={k.family} raw={bytes(raw).hex()}"
    if k.kind in (KeyKind.TCP, KeyKind.UDP, KeyKind.RTP):
        where = f"{src}:{k.sport} > {dst}:{k.dport}"
    elif k.kind == KeyKind.ICMP:
        where = f"{src} > {dst} type={k.sport >> 8} code={k.sport & 0xFF}"
    else:
        where = f"{src} > {dst}"
    words = " ".join(f"{w:08x}" for w in k.w)
    return f"{kind} proto={k.proto} {where} {ident} w=[{words}]"
