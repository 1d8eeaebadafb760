"""The Python key oracle against the table, against known bytes, and against the C parser.

The C side is parse.shared.h compiled into the native extension (``axp_parse_frame``,
``axp_key_of_ip``): the very code the BPF programs run. Both must agree byte for byte on the
table and on a few thousand seeded random frames, good and bad.
"""

from __future__ import annotations

import random
import socket
import struct
import sys
from collections import Counter

import pytest
from afxdp_proxy._native import ffi, lib  # not importorskip: a missing build must fail
from cases import CASES, POPPED, Case
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.rtp import RTP
from scapy.packet import Packet, Raw

from afxdp_proxy.key import (
    KEY_SIZE,
    KEY_WORDS,
    MAX_LABELS,
    Key,
    KeyKind,
    ParsedFrame,
    ParseResult,
    derive_key,
    format_key,
    meta_key,
    parse_mpls_frame,
)


def c_parse(frame: bytes) -> ParsedFrame:
    """axp_parse_frame, reported like the oracle (labels: all MAX_LABELS slots C may write)."""
    labels = ffi.new("uint32_t[]", MAX_LABELS)
    depth, l3_off = ffi.new("uint32_t *"), ffi.new("uint32_t *")
    key = ffi.new("struct axp_key *")
    res = ParseResult(lib.axp_parse_frame(frame, len(frame), labels, depth, l3_off, key))
    words = list(struct.unpack(f"!{MAX_LABELS}I", bytes(ffi.buffer(labels))))
    raw = bytes(ffi.buffer(key))
    return ParsedFrame(res, words, depth[0], l3_off[0], 0, raw if res == ParseResult.OK else None)


def c_key_of_ip(ip: bytes) -> tuple[ParseResult, bytes | None]:
    key = ffi.new("struct axp_key *")
    res = ParseResult(lib.axp_key_of_ip(ip, len(ip), key))
    return res, bytes(ffi.buffer(key)) if res == ParseResult.OK else None


def assert_same(frame: bytes) -> ParsedFrame:
    """Parse with both implementations, require identical reports, return the oracle's."""
    py, c = parse_mpls_frame(frame), c_parse(frame)
    what = f"frame {frame.hex()}"
    assert c.result == py.result, what
    assert (c.depth, c.l3_off) == (py.depth, py.l3_off), what
    # C writes labels[] as it reads them, also on failure: every entry it read must match
    assert c.labels[: len(py.labels)] == py.labels, what
    if py.result == ParseResult.OK:
        assert c.key == py.key, f"{what}\n C  {format_key(c.key)}\n py {format_key(py.key)}"
    return py


def test_oracle_constants_match_the_c_headers() -> None:
    """The oracle's enums and sizes are copies: catch a header that moved on without it."""
    parse = {v: k.removeprefix("AXP_PARSE_") for k, v in ffi.typeof("enum axp_parse_result").relements.items()}
    kinds = {v: k.removeprefix("AXP_KEY_") for k, v in ffi.typeof("enum axp_key_kind").relements.items()}
    assert parse == {r.value: r.name for r in ParseResult}
    assert kinds == {k.value: k.name for k in KeyKind}
    assert (lib.AXP_MAX_LABELS, lib.AXP_KEY_WORDS, ffi.sizeof("struct axp_key")) == (MAX_LABELS, KEY_WORDS, KEY_SIZE)
    for name, off in (("ident", 4), ("saddr", 8), ("daddr", 24), ("sport", 40), ("dport", 42), ("w", 44)):
        assert ffi.offsetof("struct axp_key", name) == off, name


# ---- the table ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_oracle_agrees_with_table(case: Case) -> None:
    got = parse_mpls_frame(case.frame)
    assert got.result == case.parse
    if case.kind is not None:
        assert Key.from_bytes(got.key).kind == case.kind
    if case.stack:
        assert tuple(got.labels) == case.stack
        assert got.depth == case.depth
        assert got.l3_off == 14 + 4 * case.depth
        assert case.popped is not None
        # the key of the frame is the key of the bare packet the SF gets
        assert derive_key(case.popped[14:]) == (ParseResult.OK, got.key)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_c_agrees_with_oracle_on_table(case: Case) -> None:
    assert_same(case.frame)


@pytest.mark.parametrize("case", POPPED, ids=lambda c: c.name)
def test_c_key_of_ip_agrees(case: Case) -> None:
    assert case.popped is not None and case.pushed is not None
    ip = case.popped[14:]
    assert c_key_of_ip(ip) == derive_key(ip)
    # TX sees the packet the SF returned: same key as at RX
    assert derive_key(case.pushed[14 + 4 * (case.depth - 1) :]) == derive_key(ip)


# ---- known answers (the oracle against the layout comment, not against C) -----------------


def test_known_tcp4_key() -> None:
    ip = IP(src="192.0.2.1", dst="198.51.100.7", id=0xBEEF, ttl=3) / TCP(
        sport=1234, dport=80, seq=0x01020304, ack=0xA0B0C0D0
    )
    want = (
        bytes([KeyKind.TCP, 4, 6, 0])
        + bytes.fromhex("beef0000")
        + socket.inet_aton("192.0.2.1") + bytes(12)
        + socket.inet_aton("198.51.100.7") + bytes(12)
        + bytes.fromhex("04d2 0050 01020304 a0b0c0d0 00000000")
    )  # fmt: skip
    assert len(want) == KEY_SIZE
    assert derive_key(bytes(ip)) == (ParseResult.OK, want)


def test_known_rtp6_key() -> None:
    ip = (
        IPv6(src="2001:db8::1", dst="2001:db8::2", fl=0x54321, tc=0xFF, hlim=1)
        / UDP(sport=5004, dport=5005)
        / RTP(version=2, payload_type=0, sequence=0x0102, timestamp=0x03040506, sourcesync=0x0708090A)
    )
    want = (
        bytes([KeyKind.RTP, 6, 17, 0])
        + bytes.fromhex("00054321")
        + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
        + socket.inet_pton(socket.AF_INET6, "2001:db8::2")
        + bytes.fromhex("138c 138d 80000102 03040506 0708090a")
    )  # fmt: skip
    assert derive_key(bytes(ip)) == (ParseResult.OK, want)


def test_meta_key_is_host_order_mark() -> None:
    raw = meta_key(0x01000005)
    assert raw == bytes([KeyKind.META, 0, 0, 0]) + (0x01000005).to_bytes(4, sys.byteorder) + bytes(48)
    assert Key.from_bytes(raw).ident == 0x01000005
    assert format_key(raw) == "meta mark=0x01000005"


def test_format_key() -> None:
    _, raw = derive_key(bytes(IP(src="10.0.0.1", dst="10.0.0.2", id=0x1234) / TCP(sport=1, dport=2, seq=3)))
    assert raw is not None
    assert format_key(raw) == "tcp proto=6 10.0.0.1:1 > 10.0.0.2:2 id=0x1234 w=[00000003 00000000 00000000]"
    _, raw = derive_key(bytes(IPv6(src="::1", dst="::2", fl=5) / ICMPv6EchoRequest(id=1, seq=2)))
    assert raw is not None
    assert format_key(raw) == "icmp proto=58 ::1 > ::2 type=128 code=0 flow=0x00005 w=[00010002 00000000 00000000]"


# ---- seeded random frames -----------------------------------------------------------------


def _random_l4(rng: random.Random, proto: int) -> bytes:
    body = bytearray(rng.randbytes(rng.choice([0, 3, 7, 8, 12, 19, 20, 24, 40])))
    if proto == 17 and len(body) >= 10 and rng.random() < 0.6:
        body[8] = 0x80 | rng.getrandbits(6)  # RTP/RTCP version 2
        body[9] = rng.choice([0, 96, 0xE0, 72, 76, 200, 204, 0xC7, 0xCD, rng.getrandbits(8)])
    return bytes(body)


def _random_ip4(rng: random.Random) -> bytes:
    ihl = rng.choice([5, 5, 5, 6, 7, 15, 4, 0, rng.getrandbits(4)])
    hdr = bytearray(rng.randbytes(20))
    hdr[0] = 0x40 | ihl
    proto = rng.choice([6, 17, 1, 58, 47, 0, rng.getrandbits(8)])
    hdr[9] = proto
    frag = rng.choice([0, 0, 0x2000, 0x4000, rng.getrandbits(16), 185])
    hdr[6:8] = frag.to_bytes(2, "big")
    opts = rng.randbytes(max(ihl * 4 - 20, 0))
    return bytes(hdr) + opts + _random_l4(rng, proto)


def _random_ip6(rng: random.Random) -> bytes:
    hdr = bytearray(rng.randbytes(40))
    hdr[0] = 0x60 | (hdr[0] & 0x0F)
    nh = rng.choice([6, 17, 58, 1, 0, 43, 44, 59, rng.getrandbits(8)])
    hdr[6] = nh
    return bytes(hdr) + _random_l4(rng, nh)


def random_frame(rng: random.Random) -> bytes:
    depth = rng.choice([1, 1, 2, 3, 5, 8, 15, 16, 17, 18, 0])
    lses = [rng.getrandbits(32) & ~0x100 for _ in range(depth)]
    if lses and rng.random() < 0.9:
        lses[-1] |= 0x100
    if lses and rng.random() < 0.05:  # a stray bottom-of-stack bit early
        lses[rng.randrange(len(lses))] |= 0x100
    ethertype = rng.choice([0x8847] * 12 + [0x0800, 0x86DD, 0x8848, rng.getrandbits(16)])
    l3 = rng.choice([_random_ip4, _random_ip4, _random_ip6, lambda r: r.randbytes(r.randrange(30))])(rng)
    frame = rng.randbytes(12) + ethertype.to_bytes(2, "big") + struct.pack(f"!{depth}I", *lses) + l3
    if rng.random() < 0.25:
        frame = frame[: rng.randrange(len(frame) + 1)]
    if rng.random() < 0.1:  # a flipped bit anywhere
        i = rng.randrange(len(frame)) if frame else 0
        if frame:
            frame = frame[:i] + bytes([frame[i] ^ (1 << rng.randrange(8))]) + frame[i + 1 :]
    return frame


def test_random_frames_agree() -> None:
    rng = random.Random(0xA7D9)
    results: Counter[ParseResult] = Counter()
    kinds: Counter[int] = Counter()
    for _ in range(4000):
        got = assert_same(random_frame(rng))
        results[got.result] += 1
        if got.key is not None:
            kinds[got.key[0]] += 1
    # the generator must reach every outcome, or agreeing proves little
    assert set(results) == set(ParseResult), results
    assert set(kinds) == {KeyKind.TCP, KeyKind.RTP, KeyKind.UDP, KeyKind.ICMP, KeyKind.OTHER}, kinds


def test_random_ip_packets_agree() -> None:
    rng = random.Random(0x5EED)
    for _ in range(2000):
        ip = rng.choice([_random_ip4, _random_ip6])(rng)
        if rng.random() < 0.3:
            ip = ip[: rng.randrange(len(ip) + 1)]
        assert c_key_of_ip(ip) == derive_key(ip), ip.hex()


# ---- which header bytes are in the key ----------------------------------------------------

Flip = tuple[str, int, int]  # (what, offset into the IP packet, xor mask)


def _v4_rewrites(l4_csum: int, extra: tuple[Flip, ...] = ()) -> tuple[Flip, ...]:
    return (
        ("DSCP", 1, 0xFC),
        ("ECN", 1, 0x03),
        ("total length", 2, 0x01),
        ("total length", 3, 0x40),
        ("TTL", 8, 0x3F),
        ("IP checksum", 10, 0xFF),
        ("IP checksum", 11, 0x5A),
        ("L4 checksum", 20 + l4_csum, 0xFF),
        ("L4 checksum", 21 + l4_csum, 0x01),
        *extra,
    )


def _v6_rewrites(l4_csum: int, extra: tuple[Flip, ...] = ()) -> tuple[Flip, ...]:
    return (
        ("traffic class", 0, 0x0F),
        ("traffic class", 1, 0xF0),
        ("payload length", 4, 0x01),
        ("payload length", 5, 0x80),
        ("hop limit", 7, 0x3F),
        ("L4 checksum", 40 + l4_csum, 0xFF),
        ("L4 checksum", 41 + l4_csum, 0x01),
        *extra,
    )


def _span(what: str, start: int, n: int) -> tuple[Flip, ...]:
    return tuple((what, start + i, 0x01 << (i % 8)) for i in range(n))


V4_ADDRS = (*_span("IP id", 4, 2), *_span("IPv4 src", 12, 4), *_span("IPv4 dst", 16, 4))
V6_ADDRS = (("flow label", 1, 0x0F), *_span("flow label", 2, 2), *_span("IPv6 src", 8, 16),
            *_span("IPv6 dst", 24, 16))  # fmt: skip
PAYLOAD = Raw(bytes(range(0x30, 0x50)))

# packet, rewrites an SF may do (key unchanged), fields the key is made of (key changes)
KEY_FIELDS: list[tuple[str, Packet, tuple[Flip, ...], tuple[Flip, ...]]] = [
    (
        "tcp4",
        IP(src="10.0.0.1", dst="10.0.0.2", id=7) / TCP(sport=1, dport=2, seq=3, ack=4) / PAYLOAD,
        _v4_rewrites(16),
        (*V4_ADDRS, *_span("TCP ports", 20, 4), *_span("TCP seq", 24, 4), *_span("TCP ack", 28, 4)),
    ),
    (
        "rtp4",
        IP(src="10.0.0.1", dst="10.0.0.2", id=7)
        / UDP(sport=5004, dport=5006)
        / RTP(sequence=1, timestamp=2, sourcesync=3)
        / PAYLOAD,
        _v4_rewrites(6, (("UDP length", 24, 0x01), ("UDP length", 25, 0x10))),
        (*V4_ADDRS, *_span("UDP ports", 20, 4), *_span("RTP seq/ts/SSRC", 28, 12)),
    ),
    (
        "udp4",
        IP(src="10.0.0.1", dst="10.0.0.2", id=7) / UDP(sport=53, dport=53) / PAYLOAD,
        _v4_rewrites(6, (("UDP length", 24, 0x01),)),
        (*V4_ADDRS, *_span("UDP ports", 20, 4), *_span("UDP payload", 28, 12)),
    ),
    (
        "icmp4",
        IP(src="10.0.0.1", dst="10.0.0.2", id=7) / ICMP(id=5, seq=6) / PAYLOAD,
        _v4_rewrites(2),
        (*V4_ADDRS, *_span("ICMP type/code", 20, 2), *_span("ICMP id/seq/data", 24, 12)),
    ),
    (
        "tcp6",
        IPv6(src="fd00::1", dst="fd00::2", fl=9) / TCP(sport=1, dport=2, seq=3, ack=4) / PAYLOAD,
        _v6_rewrites(16),
        (*V6_ADDRS, *_span("TCP ports", 40, 4), *_span("TCP seq/ack/flags/window", 44, 12)),
    ),
    (
        "udp6",
        IPv6(src="fd00::1", dst="fd00::2", fl=9) / UDP(sport=53, dport=53) / PAYLOAD,
        _v6_rewrites(6, (("UDP length", 44, 0x01),)),
        (*V6_ADDRS, *_span("UDP ports", 40, 4), *_span("UDP payload", 48, 12)),
    ),
    (
        "icmp6",
        IPv6(src="fd00::1", dst="fd00::2", fl=9) / ICMPv6EchoRequest(id=5, seq=6, data=bytes(PAYLOAD)),
        _v6_rewrites(2),
        (*V6_ADDRS, *_span("ICMPv6 type/code", 40, 2), *_span("ICMPv6 id/seq/data", 44, 12)),
    ),
]


def _flipped(ip: bytes, off: int, mask: int) -> bytes:
    return ip[:off] + bytes([ip[off] ^ mask]) + ip[off + 1 :]


def _key(ip: bytes) -> bytes:
    res, py = derive_key(ip)
    assert res == ParseResult.OK and c_key_of_ip(ip) == (res, py)
    assert py is not None
    return py


@pytest.mark.parametrize(("name", "pkt", "rewrites", "_fields"), KEY_FIELDS, ids=[k[0] for k in KEY_FIELDS])
def test_sf_rewrites_keep_the_key(name: str, pkt: Packet, rewrites: tuple[Flip, ...], _fields: object) -> None:
    ip = bytes(pkt)
    base = _key(ip)
    for what, off, mask in rewrites:
        assert _key(_flipped(ip, off, mask)) == base, f"{name}: rewriting {what} (byte {off}) changed the key"
    # all at once, as a NAT-free router + DSCP remarker + checksum fixer would
    together = ip
    for _, off, mask in rewrites:
        together = _flipped(together, off, mask)
    assert _key(together) == base


@pytest.mark.parametrize(("name", "pkt", "_rewrites", "fields"), KEY_FIELDS, ids=[k[0] for k in KEY_FIELDS])
def test_each_key_field_changes_the_key(name: str, pkt: Packet, _rewrites: object, fields: tuple[Flip, ...]) -> None:
    ip = bytes(pkt)
    base = _key(ip)
    for what, off, mask in fields:
        assert _key(_flipped(ip, off, mask)) != base, f"{name}: {what} (byte {off}) is not in the key"


def test_only_listed_bytes_matter() -> None:
    """Every header byte of the TCP/IPv4 packet is either a key field or provably ignored."""
    name, pkt, _, fields = KEY_FIELDS[0]
    ip = bytes(pkt)
    base = _key(ip)
    in_key = {off for _, off, _ in fields}
    structural = {0, 6, 7, 9}  # version/IHL, flags/fragment offset, protocol: they steer the parse
    for off in range(40):
        if off in in_key or off in structural:
            continue
        changed = _key(_flipped(ip, off, 0xFF)) != base
        assert not changed, f"{name}: byte {off} changes the key but is not a listed key field"
