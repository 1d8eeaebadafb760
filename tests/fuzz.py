"""A structure-aware generator of frames for differential fuzzing (tests/differential.py).

One generator, two sources of randomness: every decision is a call on a ``random.Random``,
so ``FrameGen(random.Random(seed))`` is seeded and reproducible, and
``FrameGen(draw(st.randoms(use_true_random=False)))`` (the strategies at the end) lets
hypothesis drive the same decisions and shrink a failing frame. Choices list their
simplest option first and optional features go through :func:`chance`, which shrinks to
"no": a shrunk frame is as plain as the failure allows.

What it builds, bottom up (each a documented shape, counted in a run's summary):

* Ethernet with every ethertype the proxy must tell apart: SR-MPLS (0x8847, most frames),
  plain IPv4 / IPv6, ARP, VLAN tags (0x8100, 0x88A8, stacked) over MPLS or IP, multicast
  MPLS (0x8848), 802.3 lengths, random ethertypes.
* Label stacks of depth 0..MAX_LABELS + 1 with the bottom of stack on the last entry, on
  none or too early; top labels the proxy serves, reserved labels (0..15: explicit null,
  router alert, ELI/EL ...) and labels of other nodes, anywhere in the stack; TTL 0, 1, 255.
* Below the stack: IPv4, IPv6, pseudowire control words and other version nibbles, nothing.
* IPv4 with every IHL (options as bytes), DF / MF / offsets / the reserved bit; IPv6 with
  extension header chains (Hop-by-Hop, Routing, Fragment first and later, AH, Destination
  Options, in any order) below, at and beyond the walk limit, ending in an upper layer,
  ESP, No Next Header or an unknown value.
* TCP (data offsets, options), UDP (RTP-like payloads, lengths that tell or lie), ICMP,
  ICMPv6, other protocols; UDP tunnels on their ports (VXLAN, Geneve, GTP-U, MPLS-in-UDP)
  with good and broken tunnel headers and inner packets.
* Then, sometimes: the frame cut at a random offset or next to a header boundary, or one
  bit flipped. ``cuts`` lists every truncation of a frame, for a sweep over a table.

Frames stay at most MAX_FRAME bytes: BPF_PROG_TEST_RUN takes an XDP frame in one page.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import strategies as st

from afxdp_proxy.key import (
    ETH_HLEN,
    ETH_P_IP,
    ETH_P_IPV6,
    ETH_P_MPLS_UC,
    ETH_P_TEB,
    GTPU_MAX_EXT,
    MAX_EXT_HDRS,
    MAX_LABELS,
    UDP_PORT_GENEVE,
    UDP_PORT_GTPU,
    UDP_PORT_MPLS,
    UDP_PORT_VXLAN,
    parse_mpls_frame,
)

MAX_FRAME = 3400  # under what an XDP test run holds in one page (4096 - headroom - tailroom)
ETH_P_ARP, ETH_P_8021Q, ETH_P_8021AD, ETH_P_MPLS_MC = 0x0806, 0x8100, 0x88A8, 0x8848
SERVED_LABELS = (100, 200, 400, 500)  # the top labels of the SFs the fuzzed proxy serves (tests/cases.py)
SERVED_VIDS = (10, 20)  # VLANs some of them arrive on (cases.SF_KEYS)
SERVED_ON = {0: (100, 200, 500), 10: (100,), 20: (400,)}  # VLAN (0: untagged) -> the labels served there
OTHER_LABELS = (300, 16, 1000, 0xFFFFF)  # plain labels nobody here serves
RESERVED_LABELS = (0, 1, 2, 3, 7, 13, 14, 15)  # RFC 3032 / 7274 / 6790 special-purpose labels
# IPv6 extension headers the key walks (RFC 8200 §4) and next headers that end a chain
HOPOPTS, ROUTING, FRAGMENT, ESP, AH, NO_NEXT, DSTOPTS, MOBILITY = 0, 43, 44, 50, 51, 59, 60, 135
EXT_HDRS = (HOPOPTS, ROUTING, FRAGMENT, AH, DSTOPTS)
TCP, UDP, ICMP, ICMPV6, GRE, SCTP = 6, 17, 1, 58, 47, 132
TUNNEL_PORTS = (UDP_PORT_VXLAN, UDP_PORT_GENEVE, UDP_PORT_GTPU, UDP_PORT_MPLS)


def chance(rng: random.Random, p: float) -> bool:
    """True with probability p; hypothesis shrinks it to False (its random() shrinks to 0)."""
    return rng.random() >= 1.0 - p


@dataclass
class Frame:
    """A generated frame, how it was built (shape: 'mpls3/ip6+ext2/udp-vxlan/cut'), and the
    offsets where its headers end (truncation points worth trying)."""

    data: bytes
    shape: str
    marks: list[int] = field(default_factory=list)


class _Buf:
    """Bytes being built, the shape's parts, and header boundaries."""

    def __init__(self) -> None:
        self.b = bytearray()
        self.parts: list[str] = []
        self.marks: list[int] = []

    def add(self, data: bytes, mark: bool = True) -> None:
        self.b += data
        if mark:
            self.marks.append(len(self.b))


class FrameGen:
    """Frames for RX (``rx_frame``) and for TX straight from an SF (``tx_frame``)."""

    def __init__(self, rng: random.Random, served: tuple[int, ...] = SERVED_LABELS) -> None:
        self.rng = rng
        self.served = served
        self.vid = 0  # the VLAN of the frame being built: a served label is mostly one served there

    # ---- small pieces ------------------------------------------------------------------

    def _u(self, bits: int) -> int:
        return self.rng.getrandbits(bits)

    def _pick(self, options: list[int], bits: int = 0) -> int:
        """One of options, or (bits > 0) a random value of that many bits: one draw picks, so
        hypothesis shrinks towards options[0], and the random value is drawn only when picked."""
        i = self.rng.randrange(len(options) + (1 if bits else 0))
        return options[i] if i < len(options) else self._u(bits)

    def _bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n) if n > 0 else b""

    def _macs(self) -> bytes:
        r = self.rng
        dst = r.choice([bytes.fromhex("02bb00000002"), b"\xff" * 6, bytes.fromhex("01005e000001"), self._bytes(6)])
        return dst + r.choice([bytes.fromhex("02aa00000001"), self._bytes(6)])

    def _label(self, top: bool) -> int:
        r = self.rng
        if top:
            kind = r.choice(["served"] * 12 + ["other", "reserved"])
        else:
            kind = r.choice(["other", "other", "served", "reserved"])
        if kind == "served":
            on = SERVED_ON.get(self.vid)
            return r.choice(on if on and chance(r, 0.9) else self.served)
        if kind == "reserved":
            return r.choice(RESERVED_LABELS)
        return self._pick(list(OTHER_LABELS), 20)

    def _stack(self, buf: _Buf) -> None:
        """A label stack: depth 0..MAX_LABELS + 1, bottom of stack last / nowhere / too early."""
        r = self.rng
        depth = self._pick([1, 2, 3, 1, 2, 3, 4, 5, 8, MAX_LABELS - 1, MAX_LABELS, MAX_LABELS + 1, 0])
        if chance(r, 0.1):
            depth = r.randrange(MAX_LABELS + 2)
        bos = [i == depth - 1 for i in range(depth)]
        where = "" if depth else "-empty"
        if depth and chance(r, 0.08):
            bos[-1] = False
            where = "-nobos"
        elif depth > 1 and chance(r, 0.05):
            bos[r.randrange(depth - 1)] = True
            where = "-earlybos"
        for i in range(depth):
            # the top entry's TTL decides at RX (1 or 0: expired): rarely, or little else is reached
            ttl = self._pick([64, 255, 2, 1, 0], 8) if i or chance(r, 0.1) else self._pick([64, 255, 128, 2])
            lse = self._label(i == 0) << 12 | self._u(3) << 9 | int(bos[i]) << 8 | ttl
            buf.add(struct.pack("!I", lse))
        buf.parts.append(f"mpls{depth}{where}")

    # ---- L4 and tunnels ----------------------------------------------------------------

    def _tcp(self) -> bytes:
        r = self.rng
        doff = self._pick([5, 5, 6, 8, 15, 4, 0], 4)
        flags = self._pick([0x18, 0x10, 0x02, 0x12, 0x11, 0x04], 8)
        hdr = struct.pack("!HHIIBBHHH", self._u(16), self._u(16), self._u(32), self._u(32), doff << 4,
                          flags, self._u(16), self._u(16), self._u(16))  # fmt: skip
        return hdr + self._bytes(max(doff - 5, 0) * 4) + self._bytes(r.choice([0, 16, 1, 4, 100]))

    def _rtp_like(self, udp: bytearray) -> None:
        """Turn a UDP datagram into RTP more or less: version 2, payload types around the
        ranges' edges, CSRCs and an extension that fit or not, even or odd ports."""
        r = self.rng
        udp[8] = 0x80 | self._pick([0, 0, 0x10, 0x01, 0x20], 6)  # P, X, CC
        udp[9] = self._pick([96, 0, 0xE0, 34, 35, 95, 127, 200, 72, 76], 8)
        if udp[8] & 0x10 and chance(r, 0.7):
            hlen = 12 + (udp[8] & 0x0F) * 4
            if 8 + hlen + 4 <= len(udp):
                udp[8 + hlen + 2 : 8 + hlen + 4] = self._pick([0, 1, 2], 16).to_bytes(2, "big")
        udp[3] = udp[3] | 1 if chance(r, 0.3) else udp[3] & 0xFE  # the destination port's low bit

    def _gtpu(self) -> bytes:
        r = self.rng
        flags = self._pick([0x30, 0x32, 0x34, 0x36, 0x31, 0x33, 0x34, 0x20, 0x50, 0x37, 0x35])
        hdr = bytes([flags, r.choice([255, 255, 255, 254, 1])]) + self._bytes(6)
        if not flags & 0x07:
            return hdr
        n_ext = r.choice([1, 0, 1, 2, GTPU_MAX_EXT, GTPU_MAX_EXT + 1]) if flags & 0x04 else 0
        hdr += self._bytes(3) + bytes([0x85 if n_ext else r.choice([0, 0x85])])
        for k in range(n_ext):
            units = r.choice([1, 1, 2, 3, 0, 255])
            nxt = 0x85 if k < n_ext - 1 else r.choice([0, 0x85, 0x40])
            hdr += bytes([units]) + self._bytes(max(units * 4 - 2, 0)) + bytes([nxt])
        return hdr

    def _inner_eth(self) -> bytes:
        etype = self._pick([ETH_P_IP, ETH_P_IPV6] * 2 + [ETH_P_ARP, ETH_P_8021Q, ETH_P_MPLS_UC], 16)
        return self._bytes(12) + etype.to_bytes(2, "big")

    def _inner_packet(self) -> bytes:
        """What a tunnel carries: IPv4 or IPv6 (one level: no further tunnel), cut short or
        not IP at all now and then."""
        r = self.rng
        kind = r.choice(["ip4", "ip6", "ip4", "ip6", "junk", "empty"])
        if kind == "junk":
            return self._bytes(r.choice([1, 8, 40]))
        if kind == "empty":
            return b""
        inner = _Buf()
        (self._ip4 if kind == "ip4" else self._ip6)(inner, nested=True)
        data = bytes(inner.b)
        return data[: r.randrange(len(data) + 1)] if chance(r, 0.15) else data

    def _tunnel(self, buf: _Buf, port: int) -> bytes:
        """A tunnel header on its UDP port, good or broken, and the packet inside."""
        r = self.rng
        if port == UDP_PORT_VXLAN:  # RFC 7348: I flag, VNI, inner Ethernet
            hdr = bytes([self._pick([0x08, 0x08, 0x0C, 0x00], 8)]) + self._bytes(7) + self._inner_eth()
            name = "vxlan"
        elif port == UDP_PORT_GENEVE:  # RFC 8926: version, option length, protocol type, VNI
            opt = r.choice([0, 0, 1, 2, 63])
            ptype = self._pick([ETH_P_TEB, ETH_P_IP, ETH_P_IPV6, ETH_P_TEB], 16)
            hdr = bytes([self._pick([0, 0, 0, 0x40, 0x80]) | opt, self._u(8)]) + ptype.to_bytes(2, "big")
            hdr += self._bytes(4) + self._bytes(4 * opt) + (self._inner_eth() if ptype == ETH_P_TEB else b"")
            name = "geneve"
        elif port == UDP_PORT_GTPU:
            hdr, name = self._gtpu(), "gtpu"
        else:  # MPLS-in-UDP (RFC 7510): a stack, sometimes without a bottom
            n = r.choice([1, 2, 5, MAX_LABELS, MAX_LABELS + 1])
            lses = [self._u(32) & ~0x100 for _ in range(n)]
            if not chance(r, 0.1):
                lses[-1] |= 0x100
            hdr, name = struct.pack(f"!{n}I", *lses), "mplsudp"
        buf.parts[-1] += f"-{name}"
        return hdr + self._inner_packet()

    def _udp(self, buf: _Buf, nested: bool) -> bytes:
        r = self.rng
        port = r.choice(TUNNEL_PORTS) if not nested and chance(r, 0.5) else self._pick([53, 5004, 4242], 16)
        payload = self._tunnel(buf, port) if port in TUNNEL_PORTS else self._bytes(r.choice([0, 20, 3, 12, 100]))
        length = self._pick([8 + len(payload), 8 + len(payload), 8, 20], 16)
        udp = bytearray(struct.pack("!HHHH", self._u(16), port, length & 0xFFFF, self._u(16)) + payload)
        if port not in TUNNEL_PORTS and len(udp) >= 20 and chance(r, 0.5):
            self._rtp_like(udp)
        return bytes(udp)

    def _icmp(self) -> bytes:
        r = self.rng
        return bytes([self._pick([8, 0, 128, 129, 3], 8), self._u(8)]) + self._bytes(2) + \
            self._bytes(r.choice([4, 0, 20, 40]))

    def _l4(self, buf: _Buf, proto: int, nested: bool) -> None:
        name = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMPV6: "icmp6"}.get(proto, "other")
        buf.parts.append(name)
        if proto == TCP:
            data = self._tcp()
        elif proto == UDP:
            data = self._udp(buf, nested)
        elif proto in (ICMP, ICMPV6):
            data = self._icmp()
        else:
            data = self._bytes(self.rng.choice([20, 0, 3, 4, 40]))
        # headers end at fixed offsets: mark them for truncation
        for n in (8, 20):
            if n < len(data):
                buf.marks.append(len(buf.b) + n)
        buf.add(data)

    def _proto(self) -> int:
        r = self.rng
        if chance(r, 0.2):
            return self._pick([GRE, SCTP, 0, ESP], 8)
        return r.choice([TCP, UDP, TCP, UDP, UDP, ICMP, ICMPV6])

    # ---- IP ----------------------------------------------------------------------------

    def _ip4(self, buf: _Buf, nested: bool = False) -> None:
        r = self.rng
        ihl = self._pick([5, 5, 5, 5, 5, 6, 7, 15, 4, 0], 4)
        proto = self._proto()
        frag = self._pick([0, 0x4000] * 6 + [0x2000, 0x2000 | 185, 185, 0x4000 | 1, 0x8000], 16)
        body_len = self._u(16)
        hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, self._u(8), body_len, self._u(16), frag, r.choice([64, 1, 0]),
                          proto, self._u(16), self._bytes(4), self._bytes(4))  # fmt: skip
        opts = self._bytes(max(ihl * 4 - 20, 0))
        if opts and chance(self.rng, 0.5):  # real options: router alert, NOPs, end of list
            opts = (b"\x94\x04\x00\x00" + b"\x01" * 40 + b"\x00")[: len(opts)]
        later = frag & 0x1FFF
        buf.parts.append("ip4" + ("-opts" if ihl > 5 else "") + ("-ihl<5" if ihl < 5 else "") +
                         ("-frag" if later else ("-mf" if frag & 0x2000 else "")))  # fmt: skip
        buf.add(hdr)
        buf.add(opts)
        if later:
            buf.add(self._bytes(r.choice([24, 0, 3, 8, 100])))
        else:
            self._l4(buf, proto, nested)

    def _ext_chain(self, last: int) -> tuple[int, bytes, str]:
        """IPv6 extension headers in a random order, below, at or beyond the walk limit:
        (first next header, bytes, shape)."""
        r = self.rng
        n = r.choice([1, 2, 0, 3, MAX_EXT_HDRS - 1, MAX_EXT_HDRS, MAX_EXT_HDRS + 1, MAX_EXT_HDRS + 2])
        nh, out, later = last, b"", False
        for _ in range(n):
            kind = r.choice(EXT_HDRS)
            if kind == FRAGMENT:
                offset_m = self._pick([1, 0, 1, 0, 8 << 3 | 1, 8 << 3], 16)
                later = later or bool(offset_m & 0xFFF8)
                hdr = bytes([nh, self._u(8)]) + offset_m.to_bytes(2, "big") + self._bytes(4)
            elif kind == AH:
                units = self._pick([4, 1, 7, 0], 8)  # (units + 2) * 4 bytes
                hdr = bytes([nh, units]) + self._bytes((units + 2) * 4 - 2)
            else:
                units = self._pick([0, 1, 2, 255], 5)  # (units + 1) * 8 bytes
                hdr = bytes([nh, units]) + self._bytes((units + 1) * 8 - 2)
            nh, out = kind, hdr + out
        shape = f"+ext{n}" if n <= MAX_EXT_HDRS else "+ext>max"
        return nh, out, shape + ("-fragl" if later else "")

    def _ip6(self, buf: _Buf, nested: bool = False) -> None:
        r = self.rng
        last = self._proto() if not chance(r, 0.1) else r.choice([NO_NEXT, MOBILITY, *EXT_HDRS])
        nh, chain, shape = self._ext_chain(last) if chance(r, 0.45) else (last, b"", "")
        hdr = bytearray(self._bytes(40))
        hdr[0] = 0x60 | (hdr[0] & 0x0F)
        hdr[6] = nh
        buf.parts.append("ip6" + shape)
        buf.add(bytes(hdr))
        buf.add(chain)
        self._l4(buf, last, nested)

    def _below_stack(self, buf: _Buf) -> None:
        r = self.rng
        kind = r.choice(["ip4", "ip6"] * 6 + ["pw", "nibble", "empty"])
        if kind == "ip4":
            self._ip4(buf)
        elif kind == "ip6":
            self._ip6(buf)
        elif kind == "pw":  # pseudowire control word (nibble 0), then an Ethernet frame
            buf.parts.append("pwcw")
            buf.add(bytes(4) + self._macs() + b"\x08\x00")
            self._ip4(buf)
        elif kind == "nibble":
            nibble = self._pick([5, 1, 7, 15], 4)
            buf.parts.append(f"nibble{nibble}")
            buf.add(bytes([nibble << 4 | self._u(4)]) + self._bytes(r.choice([40, 0, 19])))
        else:
            buf.parts.append("nothing")

    # ---- frames ------------------------------------------------------------------------

    def _l2(self, buf: _Buf, etype: int) -> None:
        buf.add(self._macs() + etype.to_bytes(2, "big"))

    def rx_frame(self) -> Frame:
        """A frame arriving on net_in: mostly SR-MPLS, every other ethertype too."""
        r = self.rng
        buf = _Buf()
        self.vid = 0
        kind = r.choice(["mpls"] * 60 + ["ip4", "ip6", "arp", "vlan", "mpls_mc", "len802_3", "random"])
        if kind == "mpls":
            self._l2(buf, ETH_P_MPLS_UC)
            self._stack(buf)
            self._below_stack(buf)
        elif kind in ("ip4", "ip6"):
            self._l2(buf, ETH_P_IP if kind == "ip4" else ETH_P_IPV6)
            (self._ip4 if kind == "ip4" else self._ip6)(buf)
        elif kind == "arp":
            self._l2(buf, ETH_P_ARP)
            buf.parts.append("arp")
            buf.add(bytes.fromhex("0001080006040001") + self._bytes(20))
        elif kind == "vlan":  # one or two tags, then MPLS or IP (tags are not stripped here)
            self._l2(buf, r.choice([ETH_P_8021Q, ETH_P_8021AD]))
            tags = 1
            if chance(r, 0.3):
                buf.add(struct.pack("!HH", self._u(16), ETH_P_8021Q))
                tags = 2
            inner = r.choice([ETH_P_MPLS_UC, ETH_P_IP, ETH_P_IPV6])
            # the TCI nearest the stack: a served VLAN mostly, else any (PCP and DEI random)
            vid = r.choice(SERVED_VIDS) if chance(r, 0.7) else self._u(12)
            buf.add(struct.pack("!HH", self._u(4) << 12 | vid, inner))
            self.vid = vid
            buf.parts.append(f"vlan{tags}")
            if inner == ETH_P_MPLS_UC:
                self._stack(buf)
                self._below_stack(buf)
            else:
                (self._ip4 if inner == ETH_P_IP else self._ip6)(buf)
        else:
            etype = ETH_P_MPLS_MC if kind == "mpls_mc" else self._pick([46, 1500, 0]) if kind == "len802_3" else \
                self._u(16)
            self._l2(buf, etype)
            buf.parts.append(kind)
            if kind == "mpls_mc":
                self._stack(buf)
                self._below_stack(buf)
            else:
                buf.add(self._bytes(r.choice([46, 0, 10])))
        return self._finish(buf)

    def tx_frame(self) -> Frame:
        """A frame arriving from an SF that RX never saw: bare IP (its key unknown to the cache),
        truncated, or not IP at all."""
        r = self.rng
        buf = _Buf()
        kind = r.choice(["ip4", "ip6", "ip4", "ip6", "mpls", "arp", "vlan", "nibble", "random"])
        buf.parts.append("tx")
        if kind in ("ip4", "ip6"):
            self._l2(buf, ETH_P_IP if kind == "ip4" else ETH_P_IPV6)
            (self._ip4 if kind == "ip4" else self._ip6)(buf)
        elif kind == "mpls":
            self._l2(buf, ETH_P_MPLS_UC)
            self._stack(buf)
            self._below_stack(buf)
        elif kind == "nibble":  # an IP ethertype over something else
            self._l2(buf, r.choice([ETH_P_IP, ETH_P_IPV6]))
            buf.parts.append("nibble")
            buf.add(bytes([r.choice([0x00, 0x50, 0x60, 0x45, 0xF0])]) + self._bytes(r.choice([39, 59, 10])))
        else:
            etype = {"arp": ETH_P_ARP, "vlan": ETH_P_8021Q}.get(kind, self._u(16))
            self._l2(buf, etype)
            buf.parts.append(kind)
            buf.add(self._bytes(r.choice([46, 28, 0])))
        return self._finish(buf)

    def variant(self, frame: bytes) -> Frame:
        """Another frame with the same packet below the stack, so the same key when it has one:
        the very same frame (a retransmission), another stack under the same top label (a
        dynamic chain), or the other SF's label on top."""
        r = self.rng
        p = parse_mpls_frame(frame)
        if not p.l3_off or chance(r, 0.3):
            return Frame(frame, "same")
        top = p.labels[0] >> 12
        if chance(r, 0.2):
            others = [lab for lab in self.served if lab != top]
            top = r.choice(others) if others else top
            shape = "other-sf"
        else:
            shape = "restacked"
        depth = r.choice([1, 2, 3, 5, MAX_LABELS])
        lses = [(top if i == 0 else self._pick(list(OTHER_LABELS), 20)) << 12 | self._u(3) << 9 |
                int(i == depth - 1) << 8 | r.choice([64, 255, 1]) for i in range(depth)]  # fmt: skip
        return Frame(frame[:ETH_HLEN] + struct.pack(f"!{depth}I", *lses) + frame[p.l3_off :], shape)

    def _finish(self, buf: _Buf) -> Frame:
        """Cut or damage the frame now and then; cap its size."""
        r = self.rng
        data = bytes(buf.b)
        if chance(r, 0.2):
            if buf.marks and chance(r, 0.5):  # next to a header boundary
                at = r.choice(buf.marks) + r.choice([0, -1, 1, -2])
            else:  # anywhere
                at = r.randrange(len(data) + 1)
            data = data[: max(at, 0)]
            buf.parts.append("cut")
        if data and chance(r, 0.05):
            i = r.randrange(len(data))
            data = data[:i] + bytes([data[i] ^ 1 << r.randrange(8)]) + data[i + 1 :]
            buf.parts.append("flip")
        if len(data) > MAX_FRAME:
            data = data[:MAX_FRAME]
            buf.parts.append("cap")
        return Frame(data, "/".join(buf.parts), [m for m in buf.marks if m <= len(data)])


def cuts(frame: bytes) -> list[bytes]:
    """The frame cut at every offset, from nothing to whole."""
    return [frame[:n] for n in range(len(frame) + 1)]


def sf_rewrite(rng: random.Random, bare: bytes, nat: bool = False) -> bytes:
    """What an SF may do to a bare packet without changing its key: other MACs, TTL / hop
    limit, DSCP / ECN, the IPv4 checksum. With nat, also a source address: the key changes."""
    b = bytearray(bare)
    if chance(rng, 0.5):
        b[0:12] = rng.randbytes(12)
    etype = int.from_bytes(b[12:14], "big")
    l3 = ETH_HLEN
    if etype == ETH_P_IP and len(b) >= l3 + 20 and b[l3] >> 4 == 4:
        b[l3 + 8] = (b[l3 + 8] - 1) & 0xFF
        b[l3 + 1] = rng.getrandbits(8)
        b[l3 + 10 : l3 + 12] = rng.randbytes(2)
        if nat:
            b[l3 + 12] ^= 0x01
    elif etype == ETH_P_IPV6 and len(b) >= l3 + 40 and b[l3] >> 4 == 6:
        b[l3 + 7] = (b[l3 + 7] - 1) & 0xFF
        tc = rng.getrandbits(8)
        b[l3] = 0x60 | tc >> 4
        b[l3 + 1] = (tc & 0x0F) << 4 | (b[l3 + 1] & 0x0F)
        if nat:
            b[l3 + 8] ^= 0x01
    return bytes(b)


# ---- hypothesis --------------------------------------------------------------------------


def _strategy(make: Callable[[FrameGen], Frame]) -> st.SearchStrategy[Frame]:
    @st.composite
    def frames(draw: st.DrawFn) -> Frame:
        return make(FrameGen(draw(st.randoms(use_true_random=False))))

    return frames()


def rx_frames() -> st.SearchStrategy[Frame]:
    """Frames for RX, drawn by hypothesis (they shrink towards one plain label over plain IP)."""
    return _strategy(FrameGen.rx_frame)


def tx_frames() -> st.SearchStrategy[Frame]:
    """Frames straight into TX, drawn by hypothesis."""
    return _strategy(FrameGen.tx_frame)
