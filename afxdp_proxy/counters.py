"""The proxy's counters, in one place: names, meanings, which are drops, and how they are read.

Slots are ``enum axp_counter`` (``bpf/include/proxy.shared.h``: the kernel backend and the
afxdp backend's engine count alike) followed, in the afxdp backend, by ``enum axp_xsk_counter``
(``native/axp_engine.h``: sockets, rings, batching). Names come from those enums through cffi
(``AXP_CNT_RX_POPPED`` -> ``rx_popped``); what each one means, and what the proxy did with the
frame, is :data:`TABLE` below (a test holds the two to each other and to the README).

Counters come in rows: one per SF (row = the SF's slot, afxdp_proxy/reload.py) and a last row,
:data:`NONE_ROW`, for frames no SF can be named for (not SR-MPLS, another node's label, a frame
too short to read its label) and for the afxdp workers' own figures. Every frame counts once in
``rx_packets`` or ``tx_packets`` and once in exactly one reason of the same row. The SF's dwell
time (RX to TX of a cache hit) is also kept as a histogram per row (:func:`dwell_bounds_ns`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from afxdp_proxy._native import ffi, lib

NONE_ROW = lib.AXP_SF_NONE  # the row of frames of no SF
ROWS = lib.AXP_CNT_ROWS
DWELL_SLOT = lib.AXP_CNT_TX_DWELL_HIST  # first slot of the dwell histogram
DWELL_BUCKETS = lib.AXP_DWELL_BUCKETS
SLOTS = lib.AXP_CNT_MAX  # slots of a row in the kernel backend
XSK_SLOTS = lib.AXP_XCNT_MAX  # slots of a row in the afxdp backend


@dataclass(frozen=True)
class Info:
    """What one counter means. action: what happened to the frame it counts ("drop", "pass":
    handed to the host's kernel untouched, "forward": on through the proxy), or "info" for a
    figure that is not a frame's fate (cache bookkeeping, companions, batching)."""

    name: str
    action: str
    meaning: str


TABLE: tuple[Info, ...] = (
    Info("rx_packets", "info", "frames the RX side saw (each also counts in one rx_ reason)"),
    Info("rx_popped", "forward", "stack popped and cached, bare packet sent on to the SF"),
    Info("rx_not_mpls", "pass", "untagged, not SR-MPLS (ARP, plain IP)"),
    Info("rx_other_label", "pass", "top label addresses no SF of this proxy on its VLAN"),
    Info("rx_malformed", "drop", "truncated Ethernet/MPLS/IP/L4 header under our label"),
    Info("rx_too_many_labels", "drop", "no bottom of stack within 16 labels"),
    Info("rx_not_ip", "drop", "no IPv4/IPv6 packet below the stack"),
    Info("rx_key_full", "drop", "max_per_key packets with this key in flight, or every entry of its set holds it"),
    Info("cache_inserts", "info", "packets cached at RX"),
    Info("cache_takes", "info", "packets whose stack TX took back out"),
    Info("evictions", "info", "packets of entries pushed out of a full set by newer ones (counted in the row "
         "of the SF whose insert did it)"),
    Info("expired", "info", "packets of entries older than max_dwell_ms, or in meta mode whose key came round "
         "again, presumed lost (row: as evictions)"),
    Info("rx_cache_error", "drop", "no cache set for the key (a loader that sized the cache wrong), or the "
         "set's lock still held after the kernel backend's bounded spin"),
    Info("rx_pop_failed", "drop", "the kernel refused the head adjustment"),
    Info("tx_packets", "info", "frames the TX side saw (each also counts in one tx_ reason)"),
    Info("tx_pushed", "forward", "cache hit, stack minus its top label pushed"),
    Info("tx_plain", "forward", "cache hit, no label left: sent as plain IP"),
    Info("tx_not_ip", "pass", "not IP (ARP, ...)"),
    Info("tx_malformed", "drop", "truncated IP/L4 header, or an entry no RX could have written"),
    Info("tx_miss_pass", "forward", "no cache entry: on unlabelled (on_miss = pass): attached, the host's kernel "
         "routes it (afxdp: straight to the next hop); inline, it leaves as it is"),
    Info("tx_miss_drop", "drop", "no cache entry (on_miss = drop)"),
    Info("tx_gso_drop", "drop", "merged (GSO) skb: one stack cannot be right for all its packets"),
    Info("tx_push_failed", "drop", "the kernel refused the room for the stack"),
    Info("tx_dwell_ns", "info", "sum of the SF's dwell times (RX to TX of cache hits), ns"),
    Info("rx_key_ext_limit", "info", "popped all the same: IPv6 with more than 6 extension headers, keyed on "
         "what follows the sixth"),
    Info("rx_vlan_other", "pass", "VLAN-tagged, and not SR-MPLS or on a VLAN no SF's vlan_in names"),
    Info("rx_reserved_label", "pass", "a reserved label on top that the proxy does not remove (router alert, GAL, "
         "OAM alert, ...), or only reserved labels"),
    Info("rx_ttl_expired", "drop", "the SF label's TTL is 1 or 0 (on_ttl_expired = drop)"),
    Info("rx_ttl_expired_pass", "pass", "the SF label's TTL is 1 or 0, handed to the host (on_ttl_expired = pass)"),
    Info("tx_host", "pass", "from the SF to the proxy host, not SF output: neighbour discovery, multicast or "
         "broadcast, link-local, or to one of the host's addresses"),
    Info("tx_miss_last", "forward", "no cache entry: the stack last sent to the SF pushed (on_miss = last)"),
    Info("rx_redirect_err", "drop", "the kernel refused the redirect to to_sf of a frame counted popped "
         "(counted besides rx_popped)"),
    Info("tx_redirect_err", "drop", "the kernel refused the redirect to net_out of a frame counted relabelled "
         "(counted besides its tx_ reason)"),
    # afxdp backend only (enum axp_xsk_counter)
    Info("xdp_no_socket", "drop", "frame on a queue without an AF_XDP socket"),
    Info("rx_batches", "info", "non-empty RX ring reads"),
    Info("tx_kicks", "info", "sendto() calls that drive TX (copy mode)"),
    Info("fill_wakeups", "info", "recvfrom() calls for a fill ring that asked for a wakeup"),
    Info("sleeps", "info", "poll() calls of an idle worker"),
    Info("tx_ring_full", "drop", "a TX ring stayed full"),
    Info("tx_errors", "info", "sendto() failures other than 'try again'"),
    Info("fill_starved", "info", "a fill ring could not be topped up: no free frame"),
    Info("xsk_rx_dropped", "drop", "the kernel's AF_XDP statistics: frames dropped at the socket"),
    Info("xsk_rx_ring_full", "drop", "the kernel's AF_XDP statistics: RX ring full"),
    Info("xsk_fill_ring_empty", "info", "the kernel's AF_XDP statistics: fill ring empty"),
    Info("xsk_rx_invalid", "drop", "the kernel's AF_XDP statistics: invalid RX descriptors"),
    Info("xsk_tx_invalid", "drop", "the kernel's AF_XDP statistics: invalid TX descriptors"),
)
INFO: dict[str, Info] = {i.name: i for i in TABLE}
DROPS: tuple[str, ...] = tuple(i.name for i in TABLE if i.action == "drop")


def _enum_names(enum: str, prefix: str, lo: int, hi: int) -> list[str]:
    items = ffi.typeof(enum).elements
    return [items[i].removeprefix(prefix).lower() for i in range(lo, hi)]


# scalar slots of a row: the kernel backend's, then the afxdp backend's extras
NAMES: list[str] = _enum_names("enum axp_counter", "AXP_CNT_", 0, DWELL_SLOT)
XSK_NAMES: list[str] = _enum_names("enum axp_xsk_counter", "AXP_XCNT_", SLOTS, XSK_SLOTS)


def names(afxdp: bool = False) -> list[str]:
    """Scalar counter names of a row in slot order (the histogram's slots are not among them)."""
    return NAMES + (XSK_NAMES if afxdp else [])


def slot_names(afxdp: bool = False) -> dict[int, str]:
    """{slot: name} of a row's scalar slots (the histogram's slots have no name)."""
    out = dict(enumerate(NAMES))
    if afxdp:
        out.update({SLOTS + i: n for i, n in enumerate(XSK_NAMES)})
    return out


def slot_of(name: str) -> int:
    """The slot of a counter in a row."""
    if name in NAMES:
        return NAMES.index(name)
    return SLOTS + XSK_NAMES.index(name)


def dwell_bounds_ns() -> list[int]:
    """Upper bounds (exclusive) of the dwell histogram's buckets, in ns; the last bucket has
    none (everything from 512 << (DWELL_BUCKETS - 1) ns on): see axp_dwell_bucket."""
    return [1024 << b for b in range(DWELL_BUCKETS - 1)]


def dwell_bucket(ns: int) -> int:
    """Python twin of axp_dwell_bucket: the bucket a dwell time of ns lands in."""
    return min((ns >> 10).bit_length(), DWELL_BUCKETS - 1)


# not a slot: the packets whose dwell time tx_dwell_ns and the histogram hold (1 in the config's
# dwell_sample), the histogram's own count, given next to the counters summed over rows
DWELL_TIMED = "tx_dwell_timed"


def with_dwell_timed(snap: Snapshot) -> dict[str, int]:
    """snap.total() and DWELL_TIMED: what `stats` and the proxy's own lines show."""
    return {**snap.total(), DWELL_TIMED: sum(snap.dwell_hist())}


def mean_dwell_us(counters: Mapping[str, int]) -> float | None:
    """The SF's mean dwell time in us over the packets it was measured for (None: none yet)."""
    timed = counters.get(DWELL_TIMED, 0)
    return counters.get("tx_dwell_ns", 0) / timed / 1000 if timed else None


def in_flight_of(counters: Mapping[str, int]) -> int:
    """Packets whose stacks the cache holds, from counters alone (exact for both backends):
    cache_inserts - cache_takes - evictions - expired."""
    c = counters.get
    return c("cache_inserts", 0) - c("cache_takes", 0) - c("evictions", 0) - c("expired", 0)


@dataclass
class Snapshot:
    """Counter rows as read at one moment: {row: slots}, row = SF index or NONE_ROW."""

    rows: dict[int, list[int]] = field(default_factory=dict)
    afxdp: bool = False

    def row(self, row: int) -> dict[str, int]:
        """Scalar counters of one row by name."""
        slots = self.rows.get(row)
        if slots is None:
            return dict.fromkeys(names(self.afxdp), 0)
        out = {n: int(slots[i]) for i, n in enumerate(NAMES)}
        if self.afxdp:
            out.update({n: int(slots[SLOTS + i]) for i, n in enumerate(XSK_NAMES)})
        return out

    def total(self) -> dict[str, int]:
        """Scalar counters summed over rows."""
        out = dict.fromkeys(names(self.afxdp), 0)
        for r in self.rows:
            for k, v in self.row(r).items():
                out[k] += v
        return out

    def dwell_hist(self, row: int | None = None) -> list[int]:
        """Per-bucket counts (not cumulative) of one row's dwell histogram, or all rows'."""
        rows = [row] if row is not None else list(self.rows)
        out = [0] * DWELL_BUCKETS
        for r in rows:
            slots = self.rows.get(r)
            if slots is not None:
                for b in range(DWELL_BUCKETS):
                    out[b] += int(slots[DWELL_SLOT + b])
        return out

    def by_sf(self, sf_names: Sequence[str]) -> dict[str, dict[str, int]]:
        """{SF name: its row and its DWELL_TIMED}, then "-" for the row of frames of no SF.
        sf_names[i] names row i; "" for a row no SF has used."""
        rows = {name: i for i, name in enumerate(sf_names) if name}
        rows["-"] = NONE_ROW
        return {name: {**self.row(i), DWELL_TIMED: sum(self.dwell_hist(i))} for name, i in rows.items()}

    def add_to_row(self, row: int, slots: Iterable[int]) -> None:
        """Add slot values (e.g. an XDP program's own counters) into a row."""
        width = XSK_SLOTS if self.afxdp else SLOTS
        cur = self.rows.setdefault(row, [0] * width)
        for i, v in enumerate(slots):
            cur[i] += int(v)


def read_map(counter_map: Any, rows: Iterable[int]) -> Snapshot:
    """Rows of the kernel backend's per-CPU counters map (AXP_CNT_ROWS x AXP_CNT_MAX), summed over
    CPUs; only the rows asked for (the configured SFs and NONE_ROW) are read."""
    snap = Snapshot()
    for first, n in _spans(rows):  # one batch lookup per run of consecutive rows
        vals = counter_map.lookup_range(first * SLOTS, n * SLOTS)
        for i in range(n):
            snap.rows[first + i] = [int(sum(v)) for v in vals[i * SLOTS:(i + 1) * SLOTS]]
    return snap


def _spans(rows: Iterable[int]) -> list[tuple[int, int]]:
    """Runs of consecutive row numbers as (first, count)."""
    out: list[tuple[int, int]] = []
    for r in sorted(set(rows)):
        if out and sum(out[-1]) == r:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((r, 1))
    return out


def rows_of(nsfs: int) -> list[int]:
    """The rows a proxy with nsfs SFs uses."""
    return [*range(nsfs), NONE_ROW]


def help_text(afxdp_only: bool = False) -> str:
    """The counter list of `run --help`, from TABLE."""
    lines = []
    for info in TABLE:
        if (info.name in XSK_NAMES) != afxdp_only:
            continue
        what = f"{info.action}: {info.meaning}" if info.action in ("drop", "pass") else info.meaning
        lines += textwrap.wrap(what, 80, initial_indent=f"  {info.name:20} ", subsequent_indent=" " * 23)
    return "\n".join(lines)
