"""The cache of label stacks in Python: the oracle the tests hold the C cache and the BPF
cache to, and the one place that reads their sets.

bpf/include/cache.shared.h is the cache itself, compiled into the BPF programs and into
the native extension; its comment has the semantics. This module repeats the algorithm
line for line (hash, set index, tag, insert, take, ageing, eviction) over plain Python
objects, decodes a ``struct axp_cache_set`` as either backend holds it, and derives the
packets in flight from counters, the same way for both backends.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Any

WAYS = 8  # AXP_CACHE_WAYS (a test compares)
MAX_PER_KEY = 255  # AXP_CACHE_MAX_PER_KEY: a run's count is a __u8
STACK_BYTES = 64  # struct axp_entry.labels

# enum axp_cache_result (a test compares)
MISS, HIT, JOINED, OPENED, KEY_FULL = range(5)
RESULTS = {MISS: "miss", HIT: "hit", JOINED: "joined", OPENED: "opened", KEY_FULL: "key_full"}

# the counters the cache drives, by enum axp_counter name
COUNTERS = ("cache_inserts", "cache_takes", "evictions", "expired", "rx_key_full")

_M64, _M32, _M16 = (1 << 64) - 1, (1 << 32) - 1, (1 << 16) - 1
_P1, _P2, _P3 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


# ---------------------------------------------------------------------- hash, set, tag


def key_hash(key: bytes) -> int:
    """axp_cache_hash: the key as native-endian 64-bit words, each salted by its position
    and multiplied on its own, folded and summed, then splitmix64's finaliser."""
    if len(key) % 8:
        raise ValueError(f"a key is whole 64-bit words, not {len(key)} bytes")
    h = len(key)
    for i in range(len(key) // 8):
        w = int.from_bytes(key[8 * i:8 * i + 8], sys.byteorder)
        x = ((w + (i + 1) * _P1) * _P2) & _M64
        h = (h + (x ^ (x >> 31))) & _M64
    h ^= h >> 30
    h = (h * _P2) & _M64
    h ^= h >> 27
    h = (h * _P3) & _M64
    h ^= h >> 31
    return h


def set_index(h: int, sets: int) -> int:
    """axp_cache_set_index: the upper half of the hash scaled onto [0, sets)."""
    return ((h >> 32) * sets) >> 32


def tag_of(h: int) -> int:
    """axp_cache_tag: the lower 16 bits with bit 0 set, so a used way's tag is never 0."""
    return (h & _M16) | 1


def is_timed(h: int, mask: int) -> bool:
    """axp_cache_timed: whether a key's dwell time is measured, by hash bits 16-31 under mask
    (dwell_sample - 1)."""
    return not (h >> 16) & mask


def is_stale(rx_ns: int, now: int, max_dwell_ns: int) -> bool:
    """axp_cache_is_stale: now - rx_ns > max_dwell_ns as signed 64-bit numbers, computed as the
    sign of max_dwell_ns - (now - rx_ns) (a run stamped after now is young)."""
    return bool(((max_dwell_ns - (now - rx_ns)) & _M64) >> 63)


# ---------------------------------------------------------------------- model


@dataclass(frozen=True)
class Entry:
    """struct axp_entry: the stack (labels as stored, 16 big-endian words), depth, SF, RX time,
    and the VLAN tags the packet arrived with (struct axp_vlans' 6 bytes as stored)."""

    labels: bytes
    depth: int
    sf: int
    rx_ns: int = 0
    vlans: bytes = bytes(6)

    def same_stack(self, other: Entry) -> bool:
        return (self.labels, self.depth, self.sf, self.vlans) == (other.labels, other.depth, other.sf, other.vlans)


@dataclass(frozen=True)
class Run:
    """One way in use: a key, its stack (entry.rx_ns: the first packet's RX time), the packets
    of it in flight, the arrival number and RX time of its newest packet."""

    key: bytes
    entry: Entry
    count: int
    seq: int
    rx_ns: int

    def untimed(self) -> Run:
        """Without the RX times, to compare with a cache that read a real clock."""
        return replace(self, entry=replace(self.entry, rx_ns=0), rx_ns=0)


@dataclass
class CacheSet:
    """One set: its ways (None when free) and the arrival number of its next insert."""

    ways: list[Run | None] = field(default_factory=lambda: [None] * WAYS)
    next_seq: int = 0

    def untimed(self) -> CacheSet:
        return CacheSet([r.untimed() if r else None for r in self.ways], self.next_seq)

    def age(self, run: Run) -> int:
        """Inserts into this set since the run's newest packet (32-bit arrival numbers, wrapping)."""
        return (self.next_seq - run.seq) & _M32

    def packets(self) -> int:
        return sum(r.count for r in self.ways if r)


@dataclass(frozen=True)
class Outcome:
    """struct axp_cache_outcome: the result and the packets an insert expired or evicted."""

    result: int
    expired: int = 0
    evicted: int = 0
    way: int = WAYS


class CacheModel:
    """The cache of cache.shared.h over Python objects, counting as the backends count."""

    def __init__(self, sets: int, max_per_key: int = 64, max_dwell_ns: int = 1_000_000_000) -> None:
        if not sets or not 1 <= max_per_key <= MAX_PER_KEY:
            raise ValueError("sets >= 1 and max_per_key in 1..255")
        self.sets = [CacheSet() for _ in range(sets)]
        self.max_per_key = max_per_key
        self.max_dwell_ns = max_dwell_ns
        self.counters = dict.fromkeys(COUNTERS, 0)

    def set_of(self, key: bytes) -> int:
        return set_index(key_hash(key), len(self.sets))

    def insert(self, key: bytes, entry: Entry, now: int | None = None) -> Outcome:
        """Cache one packet at now, the cache's clock (by default entry.rx_ns, its RX time, as in
        the C cache; the BPF one ages by jiffies)."""
        s = self.sets[self.set_of(key)]
        now = entry.rx_ns if now is None else now
        free_w = newest_w = oldest_w = None
        key_pkts = expired = 0
        for w, run in enumerate(s.ways):
            if run is None:
                free_w = w if free_w is None else free_w
            elif is_stale(run.rx_ns, now, self.max_dwell_ns):  # presumed lost: goes whatever happens next
                expired += run.count
                s.ways[w] = None
                free_w = w if free_w is None else free_w
            elif run.key == key:
                key_pkts += run.count
                if newest_w is None or s.age(run) < s.age(s.ways[newest_w]):
                    newest_w = w
            elif oldest_w is None or s.age(run) > s.age(s.ways[oldest_w]):
                oldest_w = w
        self.counters["expired"] += expired
        if key_pkts >= self.max_per_key:
            return self._key_full(expired)
        if newest_w is not None and s.ways[newest_w].entry.same_stack(entry):
            run = s.ways[newest_w]
            s.ways[newest_w] = replace(run, count=run.count + 1, seq=s.next_seq, rx_ns=now)
            s.next_seq = (s.next_seq + 1) & _M32
            self.counters["cache_inserts"] += 1
            return Outcome(JOINED, expired, 0, newest_w)
        evicted = 0
        if free_w is None:
            if oldest_w is None:
                return self._key_full(expired)  # every way holds a live run of this key
            evicted = s.ways[oldest_w].count
            self.counters["evictions"] += evicted
            free_w = oldest_w
        s.ways[free_w] = Run(key, entry, 1, s.next_seq, now)
        s.next_seq = (s.next_seq + 1) & _M32
        self.counters["cache_inserts"] += 1
        return Outcome(OPENED, expired, evicted, free_w)

    def _key_full(self, expired: int) -> Outcome:
        self.counters["rx_key_full"] += 1
        return Outcome(KEY_FULL, expired, 0, WAYS)

    def take(self, key: bytes) -> tuple[Outcome, Entry | None]:
        """The stack of the key's oldest run; its way is freed with its last packet."""
        s = self.sets[self.set_of(key)]
        best = None
        for w, run in enumerate(s.ways):
            if run is not None and run.key == key and (best is None or s.age(run) > s.age(s.ways[best])):
                best = w
        if best is None:
            return Outcome(MISS), None
        run = s.ways[best]
        s.ways[best] = replace(run, count=run.count - 1) if run.count > 1 else None
        self.counters["cache_takes"] += 1
        return Outcome(HIT, 0, 0, best), run.entry

    def packets(self) -> int:
        return sum(s.packets() for s in self.sets)

    def clear(self) -> None:
        self.sets = [CacheSet() for _ in self.sets]


# ---------------------------------------------------------------------- reading the backends' sets


def decode_set(s: Any) -> CacheSet:
    """A cffi ``struct axp_cache_set`` (a lookup in the kernel backend's map, or a
    copy out of the C cache) as the model's CacheSet."""
    from afxdp_proxy._native import ffi

    ways: list[Run | None] = []
    for w in range(WAYS):
        if not s.tag[w]:
            ways.append(None)
            continue
        way, meta = s.way[w], s.meta[w]
        entry = Entry(bytes(ffi.buffer(way.labels)), int(meta.depth), int(meta.sf), int(meta.rx_ns),
                      bytes(ffi.buffer(ffi.addressof(meta, "vlans"), ffi.sizeof(meta.vlans))))
        ways.append(Run(bytes(ffi.buffer(ffi.addressof(way, "key"), ffi.sizeof(way.key))), entry,
                        int(s.count[w]), int(s.seq[w]), int(s.rx_ns[w])))
    return CacheSet(ways, int(s.next_seq))


def encode_set(out: Any, s: CacheSet) -> None:
    """Fill a cffi ``struct axp_cache_set`` from a CacheSet (tests seed a backend's cache with
    what no RX could have written); the inverse of decode_set."""
    from afxdp_proxy._native import ffi

    ffi.memmove(out, bytes(ffi.sizeof(out[0])), ffi.sizeof(out[0]))
    out.next_seq = s.next_seq
    for w, run in enumerate(s.ways):
        if run is None:
            continue
        out.tag[w] = tag_of(key_hash(run.key))
        out.seq[w], out.count[w], out.rx_ns[w] = run.seq, run.count, run.rx_ns
        way, meta = out.way[w], out.meta[w]
        ffi.memmove(ffi.addressof(way, "key"), run.key, len(run.key))
        ffi.memmove(way.labels, run.entry.labels, len(run.entry.labels))
        meta.depth, meta.sf, meta.rx_ns = run.entry.depth, run.entry.sf, run.entry.rx_ns
        ffi.memmove(ffi.addressof(meta, "vlans"), run.entry.vlans, len(run.entry.vlans))


def tags_agree(s: Any) -> bool:
    """Every used way's tag is its key's (what a lookup relies on)."""
    from afxdp_proxy._native import ffi

    for w in range(WAYS):
        if s.tag[w]:
            key = bytes(ffi.buffer(ffi.addressof(s.way[w], "key"), ffi.sizeof(s.way[w].key)))
            if tag_of(key_hash(key)) != s.tag[w]:
                return False
    return True
