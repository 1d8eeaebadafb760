"""A Python reference of the proxy's per-packet decisions, for differential tests.

What ``axp_xdp_rx``, ``axp_tc_tx`` and ``axp_xdp_tx`` (bpf/proxy.bpf.c) and the AF_XDP
engine's ``axp_rx_frame`` / ``axp_tx_frame`` (native/axp_engine.c) do with one frame, written
again from the README's counter table over the two oracles the package already has:
``afxdp_proxy.key`` (parser and key) and ``afxdp_proxy.cache.CacheModel`` (the cache). For
each frame it says the verdict, the bytes that leave, and every counter bumped: exactly one
reason counter besides rx_packets / tx_packets, and its companions (cache_inserts,
cache_takes, evictions, expired, rx_key_ext_limit). tx_dwell_ns is a time, not compared.

Verdicts are named for what happens to the frame, whatever the hook: "drop" (XDP_DROP,
TC_ACT_SHOT, engine drop), "pass" (XDP_PASS, TC_ACT_OK, engine pass: the frame goes on to
the normal path) and "redirect" (XDP_REDIRECT, engine TX: out by another interface).

The from_sf side (attached): what the SF sends the proxy host (host.bpf.h) passes, counted
tx_host, in the BPF program (the AF_XDP engine never sees it: xsk.bpf.c passes it first); a
miss with on_miss = "pass" goes to the host's kernel (BPF) or on unlabelled to the SF's next
hop (the engine, which cannot hand it to the kernel); on_miss = "last" pushes the stack RX
last sent to the packet's SF.

A change to the data path (reserved labels, VLAN, TTL handling ...) changes this file too:
the differential tests then hold BPF, C and this description of the change to each other.
"""

from __future__ import annotations

import struct
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from afxdp_proxy.cache import KEY_FULL, CacheModel, Entry
from afxdp_proxy.config import DEFAULT_META_MARK_MASK
from afxdp_proxy.key import (
    ETH_HLEN,
    ETH_P_8021AD,
    ETH_P_8021Q,
    ETH_P_IP,
    ETH_P_IPV6,
    ETH_P_MPLS_UC,
    MAX_LABELS,
    KeyFlag,
    ParseResult,
    derive_key,
    meta_key,
    parse_mpls_frame,
)

DROP, PASS, REDIRECT = "drop", "pass", "redirect"
VID_MASK = 0x0FFF
RX_REASONS = ("rx_popped", "rx_not_mpls", "rx_other_label", "rx_malformed", "rx_too_many_labels", "rx_not_ip",
              "rx_key_full", "rx_cache_error", "rx_pop_failed", "rx_vlan_other", "rx_reserved_label",
              "rx_ttl_expired", "rx_ttl_expired_pass")  # fmt: skip
TX_REASONS = ("tx_pushed", "tx_plain", "tx_not_ip", "tx_malformed", "tx_miss_pass", "tx_miss_drop", "tx_gso_drop",
              "tx_push_failed", "tx_host", "tx_miss_last")  # fmt: skip
ICMPV6, ND_TYPES = 58, range(133, 138)  # RFC 4861 §4: router solicitation .. redirect
_PARSE_COUNTER = {ParseResult.NOT_MPLS: "rx_not_mpls", ParseResult.TOO_MANY_LABELS: "rx_too_many_labels",
                  ParseResult.NOT_IP: "rx_not_ip", ParseResult.MALFORMED: "rx_malformed"}  # fmt: skip


@dataclass(frozen=True)
class Mode:
    """One configuration of the proxy (struct axp_config's switches)."""

    key_mode: str = "hash"  # hash | meta
    topology: str = "inline"  # inline | attached
    on_miss: str = "pass"  # pass | drop | last
    static: bool = False
    on_ttl_expired: str = "drop"  # drop | pass
    ttl_model: str = "uniform"  # uniform | pipe

    def __str__(self) -> str:
        return f"{self.key_mode}-{self.topology}-miss_{self.on_miss}" + ("-static" if self.static else "")


@dataclass
class Outcome:
    """What one program run did: verdict, the frame as it leaves (None when dropped), counters
    (non-zero ones, tx_dwell_ns left out), and for a popped frame its key, the bare packet
    (without the metadata a meta-mode XDP run puts in front) and its SF."""

    verdict: str
    data: bytes | None
    counters: dict[str, int] = field(default_factory=dict)
    key: bytes | None = None
    bare: bytes | None = None
    sf: int | None = None  # the SF a popped frame goes to (and comes back from)
    dwell: int = 0  # observed only: what tx_dwell_ns grew by


def entry_labels(lses: list[int]) -> bytes:
    """struct axp_entry.labels as stored: the stack's entries as on the wire, zero-padded."""
    return struct.pack(f"!{len(lses)}I", *lses).ljust(4 * MAX_LABELS, b"\0")


def vlans_bytes(tags: list[tuple[int, int]]) -> bytes:
    """struct axp_vlans as the cache entry stores it: count, 802.1ad bits, the TCIs as on the wire."""
    ad = sum(1 << i for i, (tpid, _) in enumerate(tags) if tpid == ETH_P_8021AD)
    tcis = b"".join(tci.to_bytes(2, "big") for _, tci in tags).ljust(4, b"\0")
    return bytes([len(tags), ad]) + tcis


def tags_out(sf: Any, vlans: bytes) -> bytes:
    """The VLAN tags a frame leaves with (axp_vlans_out), TPID and TCI a tag, outermost first:
    the SF's vlan_out with the PCP/DEI of the arriving tag nearest the stack, else the tags it
    arrived with."""
    n, ad = vlans[0], vlans[1]
    tcis = [int.from_bytes(vlans[2 + 2 * i : 4 + 2 * i], "big") for i in range(n)]
    vlan_out = getattr(sf, "vlan_out", 0)
    if vlan_out:
        prio = tcis[-1] & ~VID_MASK & 0xFFFF if n else 0
        return struct.pack("!HH", ETH_P_8021Q, prio | vlan_out)
    return b"".join(struct.pack("!HH", ETH_P_8021AD if ad >> i & 1 else ETH_P_8021Q, tci) for i, tci in enumerate(tcis))


def for_host(frame: bytes, host_addrs: frozenset[bytes] = frozenset()) -> bool:
    """axp_for_host (host.bpf.h) on an IPv4 / IPv6 frame: for the proxy host, not the network.
    host_addrs: the host's addresses as 16 bytes (IPv4 mapped into ::ffff:0:0/96)."""
    if frame[0] & 1:  # multicast, broadcast
        return True
    ip = frame[ETH_HLEN:]
    if int.from_bytes(frame[12:14], "big") == ETH_P_IP:
        if len(ip) < 20:
            return False
        if ip[12:14] == b"\xa9\xfe" or ip[16:18] == b"\xa9\xfe":  # 169.254/16
            return True
        return bytes(10) + b"\xff\xff" + ip[16:20] in host_addrs
    if len(ip) < 40:
        return False
    if any(ip[o] == 0xFE and ip[o + 1] & 0xC0 == 0x80 for o in (8, 24)):  # fe80::/10
        return True
    if ip[6] == ICMPV6 and len(ip) > 40 and ip[40] in ND_TYPES:
        return True
    return ip[24:40] in host_addrs


def tc_test_run_refuses(frame: bytes) -> bool:
    """BPF_PROG_TEST_RUN refuses a TC frame before the program runs (EINVAL) when it is shorter
    than Ethernet or, by its ethertype, carries less than an IPv4 / IPv6 header: such an skb
    never reaches TC egress on a real path. (Checked on Linux 6.18.)"""
    if len(frame) < ETH_HLEN:
        return True
    etype = int.from_bytes(frame[12:14], "big")
    need = {ETH_P_IP: 20, ETH_P_IPV6: 40}.get(etype, 0)
    return len(frame) - ETH_HLEN < need


def xdp_test_run_refuses(frame: bytes) -> bool:
    """An XDP test run refuses a frame shorter than Ethernet (EINVAL)."""
    return len(frame) < ETH_HLEN


class Reference:
    """The proxy of one Mode, serving `sfs` ({index: object with label, sf_mac, to_sf_mac,
    next_hop_mac, net_out_mac, static (a tuple of Lse)}), with its own cache model. afxdp:
    the AF_XDP engine's TX rather than the BPF program's (see the module's text)."""

    def __init__(self, mode: Mode, sfs: dict[int, Any], cache_sets: int, max_per_key: int = 64,
                 afxdp: bool = False) -> None:  # fmt: skip
        self.mode = mode
        self.afxdp = afxdp
        self.meta_mark_mask = DEFAULT_META_MARK_MASK  # TX: the mark's bits that hold the key
        self.sfs = sfs
        self.last: dict[int, Entry] = {}  # on_miss = "last": the entry RX last sent each SF
        # an SF is chosen by (VID of the tag nearest the stack, top label); 0: untagged
        self.by_label = {(getattr(sf, "vlan_in", 0), sf.label): i for i, sf in sfs.items()}
        self.vlans = {vid for vid, _ in self.by_label}
        self.cache = CacheModel(cache_sets, max_per_key, max_dwell_ns=1 << 62)  # nothing ages in a test

    @property
    def caching(self) -> bool:
        return not self.mode.static

    # ---- RX: axp_xdp_rx, axp_rx_frame ----------------------------------------------------

    def rx(self, frame: bytes, mark: int = 0) -> Outcome:
        """The RX program on one frame. mark: the meta-mode sequence number the run under test
        drew (it depends on the CPU and on every frame before)."""
        mode = self.mode
        c: Counter[str] = Counter(rx_packets=1)
        p = parse_mpls_frame(frame)
        want_key = not mode.static and mode.key_mode == "hash"
        # another VLAN's traffic passes untouched whatever it carries
        if p.tags and p.vid not in self.vlans:
            return self._out(PASS, frame, c, "rx_vlan_other")
        if p.result == ParseResult.NOT_MPLS:
            return self._out(PASS, frame, c, "rx_vlan_other" if p.tags else "rx_not_mpls")
        if p.result == ParseResult.RESERVED:
            return self._out(PASS, frame, c, "rx_reserved_label")
        # without a hash key the parser checks only that IPv4 or IPv6 follows the stack
        res = p.result if want_key or not p.l3_proto else ParseResult.OK
        sf_idx = None
        if p.top_off:  # the top label decides first, on its VLAN
            sf_idx = self.by_label.get((p.vid, p.labels[0] >> 12))
            if sf_idx is None:
                return self._out(PASS, frame, c, "rx_other_label")
            if p.labels[0] & 0xFF <= 1:  # RFC 3032 §2.4.2: never on with a TTL that reaches 0
                if mode.on_ttl_expired == "pass":
                    return self._out(PASS, frame, c, "rx_ttl_expired_pass")
                return self._out(DROP, None, c, "rx_ttl_expired")
        if res != ParseResult.OK or sf_idx is None:
            return self._out(DROP, None, c, _PARSE_COUNTER[res])
        key = p.key if want_key else meta_key(mark) if not mode.static else None

        eth = frame[:12] + p.l3_proto.to_bytes(2, "big")
        if mode.topology == "attached":
            sf = self.sfs[sf_idx]
            eth = sf.sf_mac + sf.to_sf_mac + eth[12:]
        bare = eth + frame[p.l3_off :]
        out = bare
        if mode.key_mode == "meta" and not mode.static:
            out = mark.to_bytes(4, sys.byteorder) + bare
        if self.caching:
            assert key is not None
            o = self.cache.insert(key, Entry(entry_labels(p.labels[: p.depth]), p.depth, sf_idx,
                                             vlans=vlans_bytes(p.tags)))
            c["expired"] += o.expired
            c["evictions"] += o.evicted
            if o.result == KEY_FULL:
                return self._out(DROP, None, c, "rx_key_full")
            c["cache_inserts"] += 1
            if mode.on_miss == "last":
                self.last[sf_idx] = Entry(entry_labels(p.labels[: p.depth]), p.depth, sf_idx)
        if want_key and p.key is not None and p.key[3] & KeyFlag.EXT_LIMIT:
            c["rx_key_ext_limit"] += 1  # counted only for a packet that is popped
        res_out = self._out(REDIRECT if mode.topology == "attached" else PASS, out, c, "rx_popped")
        res_out.key, res_out.bare, res_out.sf = key, bare, sf_idx
        return res_out

    # ---- TX: axp_tc_tx (inline), axp_xdp_tx and axp_tx_frame (attached) --------------------

    def tx(self, frame: bytes, mark: int = 0, tx_sf: int | None = 0) -> Outcome:
        """The TX program of the topology on one frame back from an SF: mark is skb->mark
        (inline; XDP has none), tx_sf the SF whose interface it came in on (None: an
        interface no SF uses)."""
        mode = self.mode
        inline = mode.topology == "inline"
        c: Counter[str] = Counter(tx_packets=1)
        if len(frame) < ETH_HLEN:
            return self._out(DROP, None, c, "tx_malformed")
        etype = int.from_bytes(frame[12:14], "big")
        if etype not in (ETH_P_IP, ETH_P_IPV6):  # TC: skb->protocol, as eth_type_trans set it
            return self._out(PASS, frame, c, "tx_not_ip")
        if not inline and not self.afxdp and for_host(frame):
            return self._out(PASS, frame, c, "tx_host")
        key: bytes | None = None
        if mode.static:  # no key: the static proxy pushes onto whatever IP comes back
            if len(frame) <= ETH_HLEN or frame[ETH_HLEN] >> 4 not in (4, 6):
                return self._out(PASS, frame, c, "tx_not_ip")
        elif mode.key_mode == "meta":
            key = meta_key(mark & self.meta_mark_mask if inline else 0)
        else:
            res, key = derive_key(frame[ETH_HLEN:])
            if res == ParseResult.NOT_IP:
                return self._out(PASS, frame, c, "tx_not_ip")
            if res != ParseResult.OK:
                return self._out(DROP, None, c, "tx_malformed")

        # the lookup: the cached entry, or the SF of the TX interface (static)
        labels: list[int] | None = None
        sf_idx = None
        reason = ""
        vlans = bytes(6)  # the static proxy and a miss have no arriving tags
        if mode.static:
            if tx_sf is not None and tx_sf in self.sfs:
                sf_idx = tx_sf
                labels = [e.encode() for e in self.sfs[tx_sf].static]
        else:
            assert key is not None
            _, entry = self.cache.take(key)
            if entry is not None:
                c["cache_takes"] += 1
            elif mode.on_miss == "last" and not inline and tx_sf in self.last:
                entry = self.last[tx_sf]
                reason = "tx_miss_last"
            if entry is not None:
                sf_idx = entry.sf
                vlans = entry.vlans if not reason else bytes(6)
                words = list(struct.unpack(f"!{MAX_LABELS}I", entry.labels))
                if mode.ttl_model == "uniform" and entry.depth > 1:
                    # RFC 3443 §3.1: the entry now on top takes the SF label's TTL minus one
                    ttl = words[0] & 0xFF
                    words[1] = (words[1] & ~0xFF) | (ttl - 1 if ttl else 0)
                labels = words[1 : entry.depth]
        if labels is None:
            if mode.on_miss == "drop":
                return self._out(DROP, None, c, "tx_miss_drop")
            if inline or tx_sf is None or tx_sf not in self.sfs or not self.afxdp:
                return self._out(PASS, frame, c, "tx_miss_pass")  # BPF: to the host's kernel, which routes it
            # the engine: on unlabelled to the SF's next hop, with its vlan_out tag if it names one
            out = frame[:12] + tags_out(self.sfs[tx_sf], bytes(6)) + frame[12:]
            return self._out(REDIRECT, self._macs(out, tx_sf), c, "tx_miss_pass")

        assert sf_idx is not None
        tags = tags_out(self.sfs[sf_idx], vlans)
        stack = struct.pack(f"!{len(labels)}I", *labels)
        etype = ETH_P_MPLS_UC.to_bytes(2, "big") if labels else frame[12:14]
        out = frame[:12] + tags + etype + stack + frame[14:]
        if not inline:
            out = self._macs(out, sf_idx)
        return self._out(PASS if inline else REDIRECT, out, c, reason or ("tx_pushed" if labels else "tx_plain"))

    def _macs(self, frame: bytes, sf_idx: int) -> bytes:
        sf = self.sfs[sf_idx]
        return sf.next_hop_mac + sf.net_out_mac + frame[12:]

    @staticmethod
    def _out(verdict: str, data: bytes | None, c: Counter[str], reason: str) -> Outcome:
        c[reason] += 1
        return Outcome(verdict, data if verdict != DROP else None, {k: v for k, v in c.items() if v})
