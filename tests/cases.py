"""The packet table: one row per input frame and what every proxy implementation must do with it.

Implementation-neutral: the BPF tests (BPF_PROG_TEST_RUN), the C extension tests, the key
oracle tests and the micro-benchmark all iterate over ``CASES``. A row says what the RX side
does with the frame (pop and cache / pass / drop, and which named counter counts it), what the
parser reports, what the cache entry holds, and what the TX side emits when the SF hands the
bare packet back unchanged (inline topology: MACs as they came; attached backends rewrite them),
under each TTL model (RFC 3443: uniform, the default, and pipe). A row may name proxy settings
it needs (``config``, e.g. on_ttl_expired = "pass"); the others run with the defaults.

Label stacks vary label, TC and TTL per entry, so a push that rebuilds entries instead of
restoring them ("kept as they were") is caught.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from scapy.contrib.geneve import GENEVE
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.layers.rtp import RTP
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

from afxdp_proxy.key import MAX_EXT_HDRS, MAX_LABELS, KeyFlag, KeyKind, ParseResult, parse_mpls_frame
from afxdp_proxy.mpls import Lse, tx_stack

SRC_MAC = "02:aa:00:00:00:01"  # the previous hop
DST_MAC = "02:bb:00:00:00:02"  # the proxy's net_in
SF_LABELS = {100: 0, 200: 1}  # untagged top label -> SF index: the labels the proxy under test serves
# every SF of the proxy under test by (VLAN it arrives on, 0: untagged; top label) -> SF index:
# label 100 again on VLAN 10, and SFs that leave on a VLAN of their own (vlan_out)
SF_KEYS = {(0, 100): 0, (0, 200): 1, (10, 100): 2, (20, 400): 3, (0, 500): 4}
SF_VLAN_OUT = {3: 30, 4: 40}  # SF index -> vlan_out; the others leave as they arrived
OTHER_LABEL = 300  # a label no SF of ours answers to
C_TAG, S_TAG = 0x8100, 0x88A8  # TPIDs: IEEE 802.1Q, 802.1ad
SRC4, DST4 = "10.1.0.1", "10.2.0.2"
SRC6, DST6 = "fd00:1::1", "fd00:2::2"
NO_FLAGS = KeyFlag(0)


class Verdict(StrEnum):
    POP = "pop"  # stack popped and cached, bare packet sent on (to the SF)
    PASS = "pass"  # frame left alone, handed to the normal path
    DROP = "drop"


@dataclass(frozen=True)
class Case:
    name: str  # short id, used as the pytest id
    description: str
    frame: bytes  # what arrives on net_in
    rx: Verdict
    rx_counter: str  # name of the counter (enum axp_counter) the RX side bumps besides rx_packets
    parse: ParseResult  # what the shared parser returns for the frame
    kind: KeyKind | None = None  # key kind when the parse is OK
    flags: KeyFlag = NO_FLAGS  # the key's flags when the parse is OK
    stack: tuple[int, ...] = ()  # the cached label stack entries, outermost first (when popped)
    sf: int | None = None  # SF index the cache entry belongs to (when popped)
    popped: bytes | None = None  # RX output: the bare frame (when popped)
    pushed: bytes | None = None  # TX output for the popped frame coming back unchanged
    tx_counter: str | None = None  # tx_pushed, or tx_plain when only the SF's own label was there
    rx_also: tuple[str, ...] = ()  # further counters RX bumps once (besides rx_packets, rx_counter)
    pushed_pipe: bytes | None = None  # TX output under ttl_model = "pipe" (pushed: "uniform", the default)
    config: tuple[tuple[str, str], ...] = ()  # proxy settings the row needs, e.g. (("on_ttl_expired", "pass"),)

    @property
    def depth(self) -> int:
        return len(self.stack)

    @property
    def settings(self) -> dict[str, str]:
        return dict(self.config)


def stack_of(depth: int, top: int = 100) -> list[Lse]:
    """A well-formed stack whose entries all differ in label, TC and TTL."""
    return [
        Lse(top if i == 0 else 1000 + 111 * i, (5 + 3 * i) % 8, i == depth - 1, (64 + 37 * i) % 256)
        for i in range(depth)
    ]


def _mpls(stack: list[Lse]) -> list[Packet]:
    return [MPLS(label=e.label, cos=e.tc, s=int(e.bos), ttl=e.ttl) for e in stack]


def _eth(tags: tuple[tuple[int, int], ...] = ()) -> Packet:
    """Ethernet from the previous hop to the proxy, with VLAN tags (TPID, TCI), outermost first."""
    p: Packet = Ether(src=SRC_MAC, dst=DST_MAC)
    for tpid, tci in tags:
        p = p / (Dot1AD if tpid == S_TAG else Dot1Q)(prio=tci >> 13, dei=tci >> 12 & 1, vlan=tci & 0xFFF)
    return p


def _frame(stack: list[Lse], payload: Packet | bytes, eth_type: int | None = None,
           tags: tuple[tuple[int, int], ...] = ()) -> Packet:
    p = _eth(tags)
    if eth_type is not None:
        p.lastlayer().type = eth_type
    for m in _mpls(stack):
        p = p / m
    return p / (Raw(payload) if isinstance(payload, bytes) else payload)


def _tags_out(sf: int, tags: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """The tags a frame of SF sf leaves with (push.shared.h, axp_vlans_out): one C-tag of its
    vlan_out with the PCP and DEI of the tag nearest the stack, or the tags it arrived with."""
    if sf in SF_VLAN_OUT:
        return ((C_TAG, (tags[-1][1] & 0xF000 if tags else 0) | SF_VLAN_OUT[sf]),)
    return tags


def popping(
    name: str,
    description: str,
    stack: list[Lse],
    ip: Packet | bytes,
    kind: KeyKind,
    flags: KeyFlag = NO_FLAGS,
    rx_also: tuple[str, ...] = (),
    tags: tuple[tuple[int, int], ...] = (),
    above: tuple[Lse, ...] = (),
) -> Case:
    """A frame the proxy serves: pop tags, the reserved entries `above` the stack and the stack,
    cache them, and at TX push the stack minus our label (TTL by the model) behind the tags the
    SF leaves with. The SF is chosen by (VLAN of the tag nearest the stack, top label)."""
    ip = Raw(ip) if isinstance(ip, bytes) else ip
    vid = tags[-1][1] & 0xFFF if tags else 0
    sf = SF_KEYS[vid, stack[0].label]
    out = _eth(_tags_out(sf, tags))

    def leaving(rest: list[Lse]) -> bytes:
        p = out
        for m in _mpls(rest):
            p = p / m
        return bytes(p / ip)

    return Case(
        name=name,
        description=description,
        frame=bytes(_frame([*above, *stack], ip, tags=tags)),
        rx=Verdict.POP,
        rx_counter="rx_popped",
        parse=ParseResult.OK,
        kind=kind,
        flags=flags,
        stack=tuple(e.encode() for e in stack),
        sf=sf,
        popped=bytes(Ether(src=SRC_MAC, dst=DST_MAC) / ip),
        pushed=leaving(tx_stack(stack, "uniform")),
        tx_counter="tx_pushed" if stack[1:] else "tx_plain",
        rx_also=rx_also,
        pushed_pipe=leaving(tx_stack(stack, "pipe")),
    )


def refused(name: str, description: str, frame: Packet | bytes, rx: Verdict, counter: str, parse: ParseResult,
            config: tuple[tuple[str, str], ...] = ()) -> Case:
    """A frame the proxy does not pop: passed on untouched or dropped, and counted."""
    return Case(name, description, bytes(frame), rx, counter, parse, config=config)


def _ip4(**kw: object) -> IP:
    return IP(src=SRC4, dst=DST4, **kw)


def _ip6(**kw: object) -> IPv6:
    return IPv6(src=SRC6, dst=DST6, **kw)


def _tcp(seq: int = 0x11223344, ack: int = 0x55667788) -> TCP:
    return TCP(sport=40000, dport=443, seq=seq, ack=ack, flags="PA", window=501) / Raw(b"GET / HTTP/1.1\r\n")


def _rtp(ssrc: int = 0xCAFEF00D) -> Packet:
    return (
        UDP(sport=5004, dport=5006)
        / RTP(version=2, payload_type=96, sequence=4242, timestamp=0x0BADBEEF, sourcesync=ssrc)
        / Raw(b"\x55" * 40)
    )


def _ip4_bytes(ip: Packet, *, byte0: int | None = None, length: int | None = None) -> bytes:
    """Raw IPv4 bytes with the version/IHL byte overridden or the packet cut short."""
    raw = bytearray(bytes(ip))
    if byte0 is not None:
        raw[0] = byte0
    return bytes(raw[:length] if length is not None else raw)


TCP4 = _ip4(id=0x1001, tos=0xB9, ttl=61) / _tcp()
# one UDP datagram in three IPv4 fragments (offsets 0, 8, 16 in 8-byte units)
FRAGS4 = fragment(_ip4(id=0x1105) / UDP(sport=6000, dport=6001) / Raw(bytes(range(150))), 64)
assert len(FRAGS4) == 3


def _inner_tcp4(seq: int) -> Packet:
    """The packet inside a tunnel: another flow's TCP segment."""
    return IP(src="192.168.7.1", dst="192.168.7.2", id=0x7001) / _tcp(seq=seq)


def _tunnel(dport: int, sport: int = 49152) -> UDP:
    return UDP(sport=sport, dport=dport)


def _tcp_ack(sack: tuple[int, int]) -> TCP:
    """A duplicate ACK of one flow; only its SACK block differs from another's."""
    return TCP(sport=40001, dport=443, seq=0x6A000001, ack=0x6B000001, flags="A", window=1000,
               options=[("NOP", None), ("NOP", None), ("SAck", sack)])  # fmt: skip


# IPv6 extension chains: one header more than the walk takes
EXT_TOO_LONG = IPv6ExtHdrHopByHop()
for _ in range(MAX_EXT_HDRS):
    EXT_TOO_LONG = EXT_TOO_LONG / IPv6ExtHdrDestOpt()

CASES: list[Case] = [
    # ---- popped: stack depths ------------------------------------------------------------
    popping("tcp4_1", "IPv4 TCP, one label (ours): TX sends plain IP", stack_of(1), TCP4, KeyKind.TCP),
    popping("tcp4_2", "IPv4 TCP, two labels", stack_of(2), _ip4(id=0x1002) / _tcp(seq=2), KeyKind.TCP),
    popping("tcp4_8", "IPv4 TCP, eight labels", stack_of(8), _ip4(id=0x1008) / _tcp(seq=8), KeyKind.TCP),
    popping(
        "tcp4_16",
        f"IPv4 TCP, {MAX_LABELS} labels (the maximum)",
        stack_of(MAX_LABELS),
        _ip4(id=0x1016) / _tcp(seq=16),
        KeyKind.TCP,
    ),
    popping(
        "tcp4_sf1",
        "IPv4 TCP for the second SF (label 200)",
        stack_of(3, top=200),
        _ip4(id=0x1003) / _tcp(seq=3),
        KeyKind.TCP,
    ),
    # ---- popped: IPv4 flavours -------------------------------------------------------------
    popping(
        "tcp4_options",
        "IPv4 with options (IHL 7): the key reads TCP after them",
        stack_of(3),
        _ip4(
            id=0x1101, options=[IPOption_Router_Alert(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP()]
        )
        / _tcp(seq=0x1101),
        KeyKind.TCP,
    ),
    popping(
        "tcp4_first_frag",
        "IPv4 first fragment (MF, offset 0): still keyed as TCP, flagged",
        stack_of(2),
        _ip4(id=0x1102, flags="MF") / _tcp(seq=0x1102),
        KeyKind.TCP,
        KeyFlag.FRAG,
    ),
    popping(
        "frag4_later",
        "IPv4 later fragment (offset 185): no L4 header, keyed on payload words",
        stack_of(2),
        _ip4(id=0x1103, frag=185, proto=6) / Raw(bytes(range(64, 100))),
        KeyKind.FRAG,
        KeyFlag.FRAG,
    ),
    popping("rtp4", "IPv4 UDP carrying RTP v2", stack_of(3), _ip4(id=0x1201) / _rtp(), KeyKind.RTP),
    popping(
        "rtcp4",
        "IPv4 UDP carrying RTCP (version 2, type 200): plain UDP key",
        stack_of(2),
        _ip4(id=0x1202) / UDP(sport=5005, dport=5007) / Raw(bytes([0x80, 200, 0, 6]) + bytes(range(24))),
        KeyKind.UDP,
    ),
    popping(
        "udp4",
        "IPv4 UDP, not RTP (first payload byte 0x12)",
        stack_of(2),
        _ip4(id=0x1203) / UDP(sport=3333, dport=53) / Raw(bytes.fromhex("12340100000100000000000003777777")),
        KeyKind.UDP,
    ),
    popping(
        "udp4_short",
        "IPv4 UDP with a 6-byte payload: one whole key word, the rest zero",
        stack_of(2),
        _ip4(id=0x1204) / UDP(sport=7, dport=7) / Raw(b"abcdef"),
        KeyKind.UDP,
    ),
    popping(
        "icmp4",
        "IPv4 ICMP echo request",
        stack_of(4),
        _ip4(id=0x1301) / ICMP(type=8, id=0x77, seq=9) / Raw(b"ping-payload-1234"),
        KeyKind.ICMP,
    ),
    popping(
        "gre4",
        "IPv4 with another protocol (GRE): keyed on the first payload words",
        stack_of(2),
        _ip4(id=0x1401, proto=47) / Raw(bytes.fromhex("00000800") + bytes(range(30))),
        KeyKind.OTHER,
    ),
    # ---- popped: IPv6 ------------------------------------------------------------------------
    popping(
        "tcp6",
        "IPv6 TCP, flow label and traffic class set",
        stack_of(3),
        _ip6(fl=0xABCDE, tc=0xB8, hlim=17) / _tcp(seq=0x6001),
        KeyKind.TCP,
    ),
    popping(
        "udp6",
        "IPv6 UDP",
        stack_of(2),
        _ip6(fl=0x12345) / UDP(sport=1234, dport=4321) / Raw(b"x" * 20),
        KeyKind.UDP,
    ),
    popping("rtp6", "IPv6 UDP carrying RTP v2", stack_of(5), _ip6(fl=7) / _rtp(0x600D), KeyKind.RTP),
    popping(
        "icmp6",
        "IPv6 ICMPv6 echo request",
        stack_of(2),
        _ip6() / ICMPv6EchoRequest(id=0x66, seq=3, data=b"ping6-payload"),
        KeyKind.ICMP,
    ),
    popping(
        "hbh6",
        "IPv6 UDP behind a hop-by-hop extension header",
        stack_of(2),
        _ip6(fl=0x2222) / IPv6ExtHdrHopByHop() / UDP(sport=9, dport=9) / Raw(b"y" * 8),
        KeyKind.UDP,
    ),
    popping(
        "frag6",
        "IPv6 first fragment (offset 0, M): UDP key, fragment id for the flow label, flagged",
        stack_of(3),
        _ip6() / IPv6ExtHdrFragment(id=0x5EED, m=1) / UDP(sport=9, dport=9) / Raw(b"z" * 16),
        KeyKind.UDP,
        KeyFlag.FRAG,
    ),
    # ---- popped: fragments --------------------------------------------------------------------
    popping(
        "frag4_first",
        "IPv4 first fragment of a UDP datagram (MF, offset 0): UDP key, flagged",
        stack_of(2),
        FRAGS4[0],
        KeyKind.UDP,
        KeyFlag.FRAG,
    ),
    popping(
        "frag4_middle",
        "IPv4 middle fragment of the same datagram (MF, offset 8): the offset keeps it apart",
        stack_of(2),
        FRAGS4[1],
        KeyKind.FRAG,
        KeyFlag.FRAG,
    ),
    popping(
        "frag4_last",
        "IPv4 last fragment of the same datagram (offset 16, no MF)",
        stack_of(2),
        FRAGS4[2],
        KeyKind.FRAG,
        KeyFlag.FRAG,
    ),
    popping(
        "frag6_later",
        "IPv6 later fragment (offset 8): fragment id, offset/M and payload words",
        stack_of(2),
        _ip6(fl=0x3333) / IPv6ExtHdrFragment(id=0x5EED, offset=8, m=1, nh=17) / Raw(bytes(range(100, 164))),
        KeyKind.FRAG,
        KeyFlag.FRAG,
    ),
    # ---- popped: IPv6 extension headers ---------------------------------------------------------
    popping(
        "tcp6_dstopts",
        "IPv6 TCP behind Destination Options: the TCP key of what follows",
        stack_of(2),
        _ip6(fl=0x4444) / IPv6ExtHdrDestOpt() / _tcp(seq=0x6002),
        KeyKind.TCP,
    ),
    popping(
        "tcp6_chain",
        "IPv6 TCP behind Hop-by-Hop, Routing and Destination Options",
        stack_of(3),
        _ip6(fl=0x4445) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt() / _tcp(seq=0x6003),
        KeyKind.TCP,
    ),
    popping(
        "tcp6_ah",
        "IPv6 TCP behind AH (length in 4-byte units, RFC 4302)",
        stack_of(2),
        _ip6(fl=0x4446) / AH(nh=6, payloadlen=4, spi=0x100, seq=7, icv=bytes(12)) / _tcp(seq=0x6004),
        KeyKind.TCP,
    ),
    popping(
        "ext6_limit",
        f"IPv6 with {MAX_EXT_HDRS + 1} extension headers: keyed on what follows the last walked, "
        "flagged and counted, proxied all the same",
        stack_of(2),
        _ip6(fl=0x4447) / EXT_TOO_LONG / _tcp(seq=0x6005),
        KeyKind.OTHER,
        KeyFlag.EXT_LIMIT,
        rx_also=("rx_key_ext_limit",),
    ),
    popping(
        "dupack6_sack_a",
        "IPv6 duplicate ACK with one SACK block: options are not keyed (SFs clamp MSS)",
        stack_of(2),
        _ip6(fl=0x5555) / _tcp_ack((0x6B001000, 0x6B002000)),
        KeyKind.TCP,
    ),
    popping(
        "dupack6_sack_b",
        "the same duplicate ACK with another SACK block: the same key (the cache queues such twins)",
        stack_of(3),
        _ip6(fl=0x5555) / _tcp_ack((0x6B003000, 0x6B004000)),
        KeyKind.TCP,
    ),
    # ---- popped: UDP tunnels and RTP ---------------------------------------------------------------
    popping(
        "vxlan4",
        "VXLAN (RFC 7348) carrying TCP: VNI and the inner segment",
        stack_of(2),
        _ip4(id=0x1501) / _tunnel(4789) / VXLAN(vni=0xABCDE) / Ether() / _inner_tcp4(0x7101),
        KeyKind.TUNNEL,
    ),
    popping(
        "geneve4",
        "Geneve (RFC 8926) with an option, inner Ethernet carrying TCP",
        stack_of(2),
        _ip4(id=0x1502)
        / _tunnel(6081)
        / GENEVE(vni=0x12345, proto=0x6558, optionlen=2, options=bytes.fromhex("0102030400000000"))
        / Ether()
        / _inner_tcp4(0x7102),
        KeyKind.TUNNEL,
    ),
    popping(
        "geneve6_ip6",
        "Geneve over IPv6 carrying IPv6 TCP directly (protocol type 0x86DD)",
        stack_of(2),
        _ip6(fl=0x6666)
        / _tunnel(6081)
        / GENEVE(vni=7, proto=0x86DD)
        / IPv6(src="fd07::1", dst="fd07::2", fl=0x77777)
        / _tcp(seq=0x7103),
        KeyKind.TUNNEL,
        KeyFlag.INNER_V6,
    ),
    popping(
        "gtpu4",
        "GTP-U (3GPP TS 29.281) G-PDU with a PDU session container, carrying TCP",
        stack_of(2),
        _ip4(id=0x1503)
        / _tunnel(2152, sport=2152)
        / GTP_U_Header(teid=0xC0FFEE, E=1, next_ex=0x85)
        / GTPPDUSessionContainer(type=1, QFI=5)
        / _inner_tcp4(0x7104),
        KeyKind.TUNNEL,
    ),
    popping(
        "mplsudp4",
        "MPLS-in-UDP (RFC 7510), two labels, carrying TCP",
        stack_of(2),
        _ip4(id=0x1504) / _tunnel(6635) / MPLS(label=5000, s=0, ttl=9) / MPLS(label=6000, ttl=8) / _inner_tcp4(0x7105),
        KeyKind.TUNNEL,
    ),
    popping(
        "vxlan4_not_ip",
        "VXLAN carrying ARP: no inner IP packet, plain UDP key",
        stack_of(2),
        _ip4(id=0x1505) / _tunnel(4789) / VXLAN(vni=3) / Ether() / ARP(),
        KeyKind.UDP,
    ),
    popping(
        "udp4_rtp_like",
        "IPv4 UDP, even port, RTP v2 with type 96, but 15 CSRCs that do not fit: not RTP",
        stack_of(2),
        _ip4(id=0x1206) / UDP(sport=5004, dport=5008) / Raw(bytes([0x8F, 96]) + bytes(range(38))),
        KeyKind.UDP,
    ),
    # ---- refused: not for us -----------------------------------------------------------------
    refused(
        "arp",
        "ARP: not MPLS, passed",
        Ether(src=SRC_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=DST4),
        Verdict.PASS,
        "rx_not_mpls",
        ParseResult.NOT_MPLS,
    ),
    refused(
        "ipv4_plain",
        "plain IPv4: not MPLS, passed",
        Ether(src=SRC_MAC, dst=DST_MAC) / TCP4,
        Verdict.PASS,
        "rx_not_mpls",
        ParseResult.NOT_MPLS,
    ),
    refused(
        "mpls_mc",
        "multicast MPLS (0x8848): not SR-MPLS unicast, passed",
        _frame(stack_of(2), TCP4, eth_type=0x8848),
        Verdict.PASS,
        "rx_not_mpls",
        ParseResult.NOT_MPLS,
    ),
    refused(
        "other_label",
        "top label serves no SF of ours: passed untouched",
        _frame(stack_of(3, top=OTHER_LABEL), TCP4),
        Verdict.PASS,
        "rx_other_label",
        ParseResult.OK,
    ),
    refused(
        "ours_below",
        "our label second in the stack, another on top: passed",
        _frame([Lse(OTHER_LABEL, 1, False, 9), Lse(100, 2, True, 8)], TCP4),
        Verdict.PASS,
        "rx_other_label",
        ParseResult.OK,
    ),
    refused(
        "other_label_pw",
        "another label over a pseudowire (control word, nibble 0): not ours, passed, not judged",
        _frame([Lse(OTHER_LABEL, 0, True, 40)], bytes(4) + bytes(Ether(src=SRC_MAC, dst=DST_MAC) / TCP4)),
        Verdict.PASS,
        "rx_other_label",
        ParseResult.NOT_IP,
    ),
    refused(
        "other_label_deep",
        f"another label on top of {MAX_LABELS + 1} labels: not ours, passed",
        _frame(stack_of(MAX_LABELS + 1, top=OTHER_LABEL), TCP4),
        Verdict.PASS,
        "rx_other_label",
        ParseResult.TOO_MANY_LABELS,
    ),
    refused(
        "other_label_truncated",
        "another label over a truncated IPv4 header: not ours, passed",
        _frame(stack_of(2, top=OTHER_LABEL), _ip4_bytes(TCP4, length=12)),
        Verdict.PASS,
        "rx_other_label",
        ParseResult.MALFORMED,
    ),
    # ---- refused: malformed ------------------------------------------------------------------
    refused(
        "eth_truncated",
        "10-byte frame: truncated Ethernet header",
        bytes(Ether(src=SRC_MAC, dst=DST_MAC))[:10],
        Verdict.DROP,
        "rx_malformed",
        ParseResult.MALFORMED,
    ),
    refused(
        "mpls_no_label",
        "MPLS ethertype and nothing after it",
        Ether(src=SRC_MAC, dst=DST_MAC, type=0x8847),
        Verdict.DROP,
        "rx_malformed",
        ParseResult.MALFORMED,
    ),
    refused(
        "stack_truncated",
        "two labels without bottom of stack, then two bytes",
        bytes(_frame([Lse(100, 1, False, 5), Lse(1001, 2, False, 6)], b"")) + b"\x45\x00",
        Verdict.DROP,
        "rx_malformed",
        ParseResult.MALFORMED,
    ),
    refused(
        "labels16_no_bos",
        f"{MAX_LABELS} labels without bottom of stack, frame ends",
        _frame([Lse(100 + i, i % 8, False, 64 + i) for i in range(MAX_LABELS)], b""),
        Verdict.DROP,
        "rx_too_many_labels",
        ParseResult.TOO_MANY_LABELS,
    ),
    refused(
        "labels17_no_bos",
        f"{MAX_LABELS + 1} labels, none with bottom of stack, then IPv4",
        _frame([Lse(100 + i, i % 8, False, 64 + i) for i in range(MAX_LABELS + 1)], TCP4),
        Verdict.DROP,
        "rx_too_many_labels",
        ParseResult.TOO_MANY_LABELS,
    ),
    refused(
        "labels17",
        f"{MAX_LABELS + 1} labels, bottom of stack on the last: deeper than the maximum",
        _frame(stack_of(MAX_LABELS + 1), TCP4),
        Verdict.DROP,
        "rx_too_many_labels",
        ParseResult.TOO_MANY_LABELS,
    ),
    refused(
        "not_ip_nibble0",
        "bottom of stack, then a payload starting with nibble 0 (pseudowire CW)",
        _frame(stack_of(2), bytes(16)),
        Verdict.DROP,
        "rx_not_ip",
        ParseResult.NOT_IP,
    ),
    refused(
        "not_ip_nibble5",
        "bottom of stack, then a payload starting with nibble 5",
        _frame(stack_of(1), b"\x50" + bytes(30)),
        Verdict.DROP,
        "rx_not_ip",
        ParseResult.NOT_IP,
    ),
    refused(
        "not_ip_empty",
        "the frame ends at the bottom of stack",
        _frame(stack_of(3), b""),
        Verdict.DROP,
        "rx_not_ip",
        ParseResult.NOT_IP,
    ),
    refused(
        "ipv4_truncated",
        "IPv4 header cut at 12 bytes",
        _frame(stack_of(2), _ip4_bytes(TCP4, length=12)),
        Verdict.DROP,
        "rx_malformed",
        ParseResult.MALFORMED,
    ),
    refused(
        "ipv4_ihl4",
        "IPv4 with IHL 4 (< 5)",
        _frame(stack_of(2), _ip4_bytes(TCP4, byte0=0x44)),
        Verdict.DROP,
        "rx_malformed",
        ParseResult.MALFORMED,
    ),
    refused(
        "ipv4_ihl_past_end",
        "IPv4 with IHL 15 in a 30-byte packet",
        _frame(stack_of(2), _ip4_bytes(TCP4, byte0=0x4F, length=30)),
        Verdict.DROP,
        "rx_malformed",
        ParseResult.MALFORMED,
    ),
    refused(
        "tcp4_truncated",
        "IPv4 TCP with 12 bytes of TCP header",
        _frame(stack_of(2), _ip4_bytes(TCP4, length=32)),
        Verdict.DROP,
        "rx_malformed",
        ParseResult.MALFORMED,
    ),
    refused(
        "udp4_truncated",
        "IPv4 UDP with 4 bytes of UDP header",
        _frame(stack_of(2), _ip4_bytes(_ip4() / UDP(sport=1, dport=2), length=24)),
        Verdict.DROP,
        "rx_malformed",
        ParseResult.MALFORMED,
    ),
    refused(
        "icmp4_truncated",
        "IPv4 ICMP with 4 bytes of ICMP header",
        _frame(stack_of(2), _ip4_bytes(_ip4() / ICMP(), length=24)),
        Verdict.DROP,
        "rx_malformed",
        ParseResult.MALFORMED,
    ),
    refused(
        "ipv6_truncated",
        "IPv6 header cut at 30 bytes",
        _frame(stack_of(2), bytes(_ip6() / _tcp())[:30]),
        Verdict.DROP,
        "rx_malformed",
        ParseResult.MALFORMED,
    ),
    refused(
        "tcp6_truncated",
        "IPv6 TCP with 19 bytes of TCP header",
        _frame(stack_of(2), bytes(_ip6() / _tcp())[:59]),
        Verdict.DROP,
        "rx_malformed",
        ParseResult.MALFORMED,
    ),
    # ---- VLAN tags in front of the stack (IEEE 802.1Q, 802.1ad) ------------------------------------
    popping(
        "vlan1",
        "one C-tag (VLAN 10, PCP 5): label 100 there is SF 2's; the tag is removed before the SF, "
        "restored at TX",
        stack_of(3),
        _ip4(id=0x1601) / _tcp(seq=0x1601),
        KeyKind.TCP,
        tags=((C_TAG, 5 << 13 | 10),),
    ),
    popping(
        "vlan2_qinq",
        "802.1ad S-tag 77 (DEI set) over C-tag 10: the tag nearest the stack chooses, both come back",
        stack_of(2),
        _ip6(fl=0x1602) / _tcp(seq=0x1602),
        KeyKind.TCP,
        tags=((S_TAG, 1 << 12 | 77), (C_TAG, 3 << 13 | 10)),
    ),
    popping(
        "vlan1_stag",
        "one 802.1ad S-tag (VLAN 10): restored with its TPID",
        stack_of(2),
        _ip4(id=0x1603) / _tcp(seq=0x1603),
        KeyKind.TCP,
        tags=((S_TAG, 10),),
    ),
    popping(
        "vlan1_plain",
        "one C-tag, only our label: TX sends plain IP behind the tag",
        stack_of(1),
        _ip4(id=0x1604) / _tcp(seq=0x1604),
        KeyKind.TCP,
        tags=((C_TAG, 10),),
    ),
    popping(
        "vlan_prio_tag",
        "a priority tag (VID 0, PCP 6): chooses as untagged (SF 0), restored as it came",
        stack_of(2),
        _ip4(id=0x1605) / _tcp(seq=0x1605),
        KeyKind.TCP,
        tags=((C_TAG, 6 << 13),),
    ),
    popping(
        "vlan_out",
        "VLAN 20 in, label 400 (SF 3, vlan_out 30): leaves with one C-tag 30, PCP 3 kept",
        stack_of(3, top=400),
        _ip4(id=0x1606) / _tcp(seq=0x1606),
        KeyKind.TCP,
        tags=((S_TAG, 99), (C_TAG, 3 << 13 | 20)),
    ),
    popping(
        "vlan_out_untagged_in",
        "untagged in, label 500 (SF 4, vlan_out 40): leaves tagged, PCP 0",
        stack_of(2, top=500),
        _ip4(id=0x1607) / _tcp(seq=0x1607),
        KeyKind.TCP,
    ),
    refused(
        "vlan_unserved",
        "SR-MPLS on VLAN 99, where no SF is served: passed untouched, whatever its label",
        _frame(stack_of(2), TCP4, tags=((C_TAG, 99),)),
        Verdict.PASS,
        "rx_vlan_other",
        ParseResult.OK,
    ),
    refused(
        "vlan_unserved_truncated",
        "a truncated stack on VLAN 99: another VLAN's, passed untouched",
        bytes(_frame([Lse(100, 1, False, 5)], b"", tags=((C_TAG, 99),))),
        Verdict.PASS,
        "rx_vlan_other",
        ParseResult.MALFORMED,
    ),
    refused(
        "vlan_not_mpls",
        "tagged IPv4 on VLAN 10 (served): not SR-MPLS, passed and counted apart from rx_not_mpls",
        _eth(((C_TAG, 10),)) / TCP4,
        Verdict.PASS,
        "rx_vlan_other",
        ParseResult.NOT_MPLS,
    ),
    refused(
        "vlan_other_sf_label",
        "VLAN 10 with label 200, which is served untagged (SF 1): not ours on this VLAN, passed",
        _frame(stack_of(2, top=200), TCP4, tags=((C_TAG, 10),)),
        Verdict.PASS,
        "rx_other_label",
        ParseResult.OK,
    ),
    refused(
        "vlan_missing_tag",
        "untagged label 400, which is served on VLAN 20 (SF 3): not ours untagged, passed",
        _frame(stack_of(2, top=400), TCP4),
        Verdict.PASS,
        "rx_other_label",
        ParseResult.OK,
    ),
    refused(
        "vlan3",
        "three tags: the third is not read (at most two), passed",
        bytes(_frame(stack_of(2), TCP4, tags=((S_TAG, 10), (C_TAG, 10), (C_TAG, 10)))),
        Verdict.PASS,
        "rx_vlan_other",
        ParseResult.NOT_MPLS,
    ),
    refused(
        "vlan_truncated",
        "a C-tag cut after its TCI: truncated, dropped",
        bytes(_eth())[:12] + bytes.fromhex("8100000a"),
        Verdict.DROP,
        "rx_malformed",
        ParseResult.MALFORMED,
    ),
    # ---- reserved labels above ours (RFC 3032 §2.1, RFC 6790, RFC 7274) ---------------------------
    popping(
        "expnull4_top",
        "IPv4 explicit null (0) on top of our label: removed, then our label decides; not restored",
        stack_of(3),
        _ip4(id=0x1701) / _tcp(seq=0x1701),
        KeyKind.TCP,
        above=(Lse(0, 0, False, 1),),
    ),
    popping(
        "expnull6_top",
        "IPv6 explicit null (2) on top of our label: removed",
        stack_of(2),
        _ip6(fl=0x1702) / _tcp(seq=0x1702),
        KeyKind.TCP,
        above=(Lse(2, 3, False, 9),),
    ),
    popping(
        "eli_el_top",
        "entropy label indicator (7) and entropy label on top of our label: both removed",
        stack_of(3),
        _ip4(id=0x1703) / _tcp(seq=0x1703),
        KeyKind.TCP,
        above=(Lse(7, 0, False, 0), Lse(0xABCDE, 0, False, 0)),
    ),
    popping(
        "expnull_eli_el_top",
        "explicit null, then ELI and EL, then our label on VLAN 10: all three removed",
        stack_of(2),
        _ip4(id=0x1704) / _tcp(seq=0x1704),
        KeyKind.TCP,
        tags=((C_TAG, 10),),
        above=(Lse(0, 0, False, 64), Lse(7, 0, False, 64), Lse(0x12345, 0, False, 64)),
    ),
    refused(
        "expnull_bos",
        "explicit null at the bottom of the stack (IPv4 for this host): reserved, passed",
        _frame([Lse(0, 0, True, 64)], TCP4),
        Verdict.PASS,
        "rx_reserved_label",
        ParseResult.RESERVED,
    ),
    refused(
        "eli_el_bos",
        "ELI and an entropy label at the bottom of the stack: nothing of ours below, passed",
        _frame([Lse(7, 0, False, 64), Lse(0x12345, 0, True, 64)], TCP4),
        Verdict.PASS,
        "rx_reserved_label",
        ParseResult.RESERVED,
    ),
    refused(
        "router_alert_top",
        "router alert (1) on top of our label: for the host's kernel, passed",
        _frame([Lse(1, 0, False, 64), *stack_of(2)], TCP4),
        Verdict.PASS,
        "rx_reserved_label",
        ParseResult.RESERVED,
    ),
    refused(
        "gal_top",
        "GAL (13) on top of our label: passed",
        _frame([Lse(13, 0, False, 64), *stack_of(2)], TCP4),
        Verdict.PASS,
        "rx_reserved_label",
        ParseResult.RESERVED,
    ),
    refused(
        "oam_alert_top",
        "OAM alert (14) on top of our label: passed",
        _frame([Lse(14, 0, False, 64), *stack_of(2)], TCP4),
        Verdict.PASS,
        "rx_reserved_label",
        ParseResult.RESERVED,
    ),
    refused(
        "expnull_router_alert",
        "explicit null removed, then router alert on top: passed",
        _frame([Lse(0, 0, False, 64), Lse(1, 0, False, 64), *stack_of(2)], TCP4),
        Verdict.PASS,
        "rx_reserved_label",
        ParseResult.RESERVED,
    ),
    refused(
        "expnull_other_label",
        "explicit null removed, then another node's label: passed",
        _frame([Lse(0, 0, False, 64), *stack_of(2, top=OTHER_LABEL)], TCP4),
        Verdict.PASS,
        "rx_other_label",
        ParseResult.OK,
    ),
    refused(
        "expnull_too_many",
        "four explicit nulls: three are removed, the fourth decides (reserved), passed",
        _frame([Lse(0, 0, False, 64)] * 4 + stack_of(2), TCP4),
        Verdict.PASS,
        "rx_reserved_label",
        ParseResult.RESERVED,
    ),
    refused(
        "eli_truncated",
        "ELI, and the frame ends before its entropy label: truncated, dropped",
        _frame([Lse(7, 0, False, 64)], b""),
        Verdict.DROP,
        "rx_malformed",
        ParseResult.MALFORMED,
    ),
    # ---- the SF label's TTL (RFC 3032 §2.4) and the TTL TX exposes (RFC 3443) ----------------------
    refused(
        "ttl1_top",
        "our label with TTL 1: never sent to the SF, dropped (on_ttl_expired = drop, the default)",
        _frame([Lse(100, 2, False, 1), *stack_of(3)[1:]], TCP4),
        Verdict.DROP,
        "rx_ttl_expired",
        ParseResult.OK,
    ),
    refused(
        "ttl0_top",
        "our label with TTL 0 on VLAN 10: dropped",
        _frame([Lse(100, 0, True, 0)], TCP4, tags=((C_TAG, 10),)),
        Verdict.DROP,
        "rx_ttl_expired",
        ParseResult.OK,
    ),
    refused(
        "ttl1_top_pass",
        "our label with TTL 1, on_ttl_expired = pass: to the host's kernel (an OAM responder), untouched",
        _frame([Lse(100, 2, False, 1), *stack_of(3)[1:]], TCP4),
        Verdict.PASS,
        "rx_ttl_expired_pass",
        ParseResult.OK,
        config=(("on_ttl_expired", "pass"),),
    ),
    refused(
        "ttl0_top_pass",
        "our label with TTL 0 under explicit null, on_ttl_expired = pass: passed",
        _frame([Lse(0, 0, False, 64), Lse(200, 0, True, 0)], TCP4),
        Verdict.PASS,
        "rx_ttl_expired_pass",
        ParseResult.OK,
        config=(("on_ttl_expired", "pass"),),
    ),
    refused(
        "ttl1_other_label",
        "another node's label with TTL 1: not ours to judge, passed",
        _frame([Lse(OTHER_LABEL, 0, True, 1)], TCP4),
        Verdict.PASS,
        "rx_other_label",
        ParseResult.OK,
    ),
    refused(
        "ttl1_bad_below",
        "our label with TTL 1 over a truncated IPv4 header: the TTL decides first",
        _frame([Lse(100, 0, True, 1)], _ip4_bytes(TCP4, length=12)),
        Verdict.DROP,
        "rx_ttl_expired",
        ParseResult.MALFORMED,
    ),
    popping(
        "ttl2_top",
        "our label with TTL 2: sent on; uniform exposes the next label with TTL 1, pipe with its own",
        [Lse(100, 1, False, 2), Lse(1111, 2, False, 200), Lse(2222, 3, True, 100)],
        _ip4(id=0x1801) / _tcp(seq=0x1801),
        KeyKind.TCP,
    ),
    popping(
        "ttl1_below",
        "TTL 1 on the label below ours: only ours is judged; uniform gives it 63, pipe keeps 1",
        [Lse(100, 1, False, 64), Lse(1111, 2, True, 1)],
        _ip4(id=0x1802) / _tcp(seq=0x1802),
        KeyKind.TCP,
    ),
    popping(
        "expnull_ttl1",
        "explicit null with TTL 1 over our label with TTL 64: removed; our label's TTL decides",
        stack_of(2),
        _ip4(id=0x1803) / _tcp(seq=0x1803),
        KeyKind.TCP,
        above=(Lse(0, 0, False, 1),),
    ),
]

_PARSE_COUNTER = {ParseResult.TOO_MANY_LABELS: "rx_too_many_labels", ParseResult.NOT_IP: "rx_not_ip"}


def expected_rx(frame: bytes, on_ttl_expired: str = "drop") -> tuple[Verdict, str, int | None]:
    """What RX does with a frame (hash keys) for the SFs of SF_KEYS: the verdict, the counter
    besides rx_packets, the SF row. The decisions of axp_xdp_rx and axp_rx_parse in their order,
    over the parser's oracle: another VLAN's frames pass whatever they carry; then not SR-MPLS,
    a reserved label on top, another node's label pass; then our label's TTL; then the rest."""
    f = parse_mpls_frame(frame)
    if f.tags and f.vid not in {vid for vid, _ in SF_KEYS}:
        return Verdict.PASS, "rx_vlan_other", None
    if f.result == ParseResult.NOT_MPLS:
        return Verdict.PASS, "rx_vlan_other" if f.tags else "rx_not_mpls", None
    if f.result == ParseResult.RESERVED:
        return Verdict.PASS, "rx_reserved_label", None
    sf = None
    if f.top_off:
        sf = SF_KEYS.get((f.vid, f.labels[0] >> 12))
        if sf is None:
            return Verdict.PASS, "rx_other_label", None
        if f.labels[0] & 0xFF <= 1:
            if on_ttl_expired == "pass":
                return Verdict.PASS, "rx_ttl_expired_pass", sf
            return Verdict.DROP, "rx_ttl_expired", sf
    if f.result != ParseResult.OK or sf is None:
        return Verdict.DROP, _PARSE_COUNTER.get(f.result, "rx_malformed"), sf
    return Verdict.POP, "rx_popped", sf


BY_NAME = {c.name: c for c in CASES}
assert len(BY_NAME) == len(CASES), "case names must be unique"
POPPED = [c for c in CASES if c.rx == Verdict.POP]


def sf_rewrite(popped: bytes) -> bytes:
    """What a routing SF does to a bare packet: TTL/hop limit down, DSCP/ECN remarked, and
    checksums changed (or broken). None of it is in the key, so the stack must come back."""
    pkt = Ether(popped)
    if IP in pkt:
        pkt[IP].ttl -= 1
        pkt[IP].tos = 0x2E << 2 | 1
        del pkt[IP].chksum
    else:
        pkt[IPv6].hlim -= 1
        pkt[IPv6].tc = 0x2E << 2
    layer = pkt[IP if IP in pkt else IPv6].payload
    if hasattr(layer, "chksum"):
        layer.chksum = 0x1234
    return bytes(pkt)


# ---- from the SF to the proxy host, not SF output (bpf/include/host.bpf.h) ---------------------------

SF_MAC, FROM_SF_MAC = "02:5f:00:00:00:01", "02:f5:00:00:00:01"  # the SF's output side, the proxy's from_sf
HOST4, HOST6 = "10.4.0.254", "fd00:4::fe"  # addresses of the proxy host (its from_sf), in its map in the tests


def _to_proxy(dst_mac: str = FROM_SF_MAC) -> Ether:
    return Ether(src=SF_MAC, dst=dst_mac)


HOST_TX: list[tuple[str, bytes]] = [
    # neighbour discovery: the SF resolving the proxy, its next hop, and answering the proxy
    ("ns6_solicited_node", bytes(_to_proxy("33:33:ff:00:00:fe") / IPv6(src="fe80::5f", dst="ff02::1:ff00:fe", hlim=255)
                                 / ICMPv6ND_NS(tgt=HOST6))),
    ("ns6_nud_global", bytes(_to_proxy() / IPv6(src="fd00:4::1", dst="fd00:9::9", hlim=255) / ICMPv6ND_NS(tgt=HOST6))),
    ("na6_global", bytes(_to_proxy() / IPv6(src="fd00:4::1", dst="fd00:9::9", hlim=255)
                         / ICMPv6ND_NA(tgt="fd00:4::1"))),
    ("rs6", bytes(_to_proxy("33:33:00:00:00:02") / IPv6(src="fe80::5f", dst="ff02::2", hlim=255) / ICMPv6ND_RS())),
    ("ra6_unicast", bytes(_to_proxy() / IPv6(src="fd00:4::1", dst=DST6, hlim=255) / ICMPv6ND_RA())),
    ("redirect6", bytes(_to_proxy() / IPv6(src="fd00:4::1", dst=DST6, hlim=255)
                        / ICMPv6ND_Redirect(tgt="fd00:4::2", dst=DST6))),
    # link-local, either end
    ("ll6_src", bytes(_to_proxy() / IPv6(src="fe80::5f", dst=DST6) / UDP(sport=1, dport=2) / Raw(b"x" * 8))),
    ("ll6_dst", bytes(_to_proxy() / IPv6(src=SRC6, dst="fe80::f5") / UDP(sport=1, dport=2) / Raw(b"x" * 8))),
    ("ll4_src", bytes(_to_proxy() / IP(src="169.254.7.1", dst=DST4) / UDP(sport=1, dport=2) / Raw(b"x" * 8))),
    ("ll4_dst", bytes(_to_proxy() / IP(src=SRC4, dst="169.254.0.1") / UDP(sport=1, dport=2) / Raw(b"x" * 8))),
    # multicast and broadcast: routing protocols, DHCP, mDNS
    ("ospf4", bytes(_to_proxy("01:00:5e:00:00:05") / IP(src="10.4.0.1", dst="224.0.0.5", proto=89) / Raw(bytes(40)))),
    ("dhcp4", bytes(_to_proxy("ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
                    / UDP(sport=68, dport=67) / Raw(bytes(240)))),
    ("mdns6", bytes(_to_proxy("33:33:00:00:00:fb") / IPv6(src="fd00:4::1", dst="ff02::fb")
                    / UDP(sport=5353, dport=5353) / Raw(bytes(12)))),
    # the host's own addresses: ping, SSH to the proxy
    ("ping_host4", bytes(_to_proxy() / IP(src="10.4.0.1", dst=HOST4) / ICMP(id=5, seq=1))),
    ("ssh_host6", bytes(_to_proxy() / IPv6(src="fd00:4::1", dst=HOST6) / TCP(sport=40000, dport=22, flags="S"))),
]


def nat(bare: bytes) -> bytes:
    """What a masquerading SF makes of a bare packet: its own source address and another source
    port, so the packet's key no longer finds the stack RX cached (on_miss decides)."""
    pkt = Ether(bare)
    if IP in pkt:
        pkt[IP].src = "10.4.0.1"
        del pkt[IP].chksum
    else:
        pkt[IPv6].src = "fd00:4::1"
    if TCP in pkt:
        pkt[TCP].sport = 61000
        del pkt[TCP].chksum
    return bytes(pkt)
