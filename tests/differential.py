"""Differential fuzzing: every frame through the BPF programs, the AF_XDP engine's C and the
Python reference (tests/reference.py), which must agree on verdict, output bytes, counters
and cache contents.

Targets, loaded once for a whole run (the cache is left empty after every frame, counters
are read as deltas):

* ``bpf:<mode>``: build/proxy.bpf.o for a configuration, under BPF_PROG_TEST_RUN: axp_xdp_rx,
  then axp_tc_tx (inline) or axp_xdp_tx (attached). All 16 configurations are loaded (key
  hash / meta x inline / attached x on_miss pass / drop x caching / static): none may be
  refused by the verifier. The four hash ones are the product's and see most frames.
* ``c:<mode>``: the AF_XDP engine (attached, hash) with ``Engine.rx`` / ``Engine.tx``.

For each RX frame: the RX outcome; for a popped frame, its cache set (the oracle's key and
stack, under the lock for BPF); then the bare packet back through TX, as the SF returns it
(its MACs, TTL, DSCP and checksums rewritten or not, seeded by the frame so a replay does
the same; now and then its source address too, a NAT: then TX misses); the cache set again.
TX also gets frames straight from an SF that no RX popped (garbage, unknown keys), on either
SF's interface or on one no SF uses. Every 20th frame, a burst: up to 24 frames, many with one
key, into a one-set cache, back through TX shuffled (joins, runs, evictions, rx_key_full). Besides
agreeing with the reference, every outcome must bump rx_packets / tx_packets and exactly
one reason counter, and at the end each target's reason counters must add up to the frames
it saw.

Run it as ``make fuzz`` (FUZZ_FRAMES, FUZZ_SEED, FUZZ_OUT, FUZZ_REPLAY) or
``python tests/differential.py --help``: a summary, the failing frames as hex lines in a
file that ``--replay`` runs again (through every target), and exit 1 on any disagreement.
"""

from __future__ import annotations

import argparse
import itertools
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from afxdp_proxy._native import ffi, lib
from fuzz import FrameGen, chance, cuts, sf_rewrite
from reference import (
    DROP,
    PASS,
    REDIRECT,
    RX_REASONS,
    TX_REASONS,
    Mode,
    Outcome,
    Reference,
    tc_test_run_refuses,
    xdp_test_run_refuses,
)
from test_bpf_proxy import SFS, SKB_CTX_SIZE, SKB_MARK, TX_IFINDEX, add_sfs

from afxdp_proxy import bpf, cache, counters
from afxdp_proxy.backends.afxdp import VERDICT_DROP, VERDICT_PASS, VERDICT_TX, Engine
from afxdp_proxy.backends.kernel import ProxyObject, config_struct, meta_layout
from afxdp_proxy.config import DEFAULT_META_MARK_MASK, ProxyConfig
from afxdp_proxy.key import Key, KeyFlag, derive_key, format_key, meta_key

CACHE_ENTRIES = 1024
# meta keys in skb->mark: ((cpu + 1) << seq_bits | seq) << shift, within the default mask
MARK_MASK = DEFAULT_META_MARK_MASK
MARK_SHIFT, _SEQ_BITS = meta_layout(ProxyConfig(key="meta"))
MARK_CPU_SHIFT = MARK_SHIFT + _SEQ_BITS
BURST_CACHE_ENTRIES, BURST_MAX_PER_KEY = 8, 3  # one set, few packets a key: bursts fill it
MAX_DWELL_MS = 3_600_000  # nothing ages in a run (the reference's cache never does), however slow the machine
NAMES = counters.names()  # scalar slots of a counter row (the dwell histogram's are not compared)
NSLOTS = len(NAMES)
ROWS = [*SFS, counters.NONE_ROW]  # the counter rows the SFs of the tests use
NO_SF = lib.AXP_MAX_SFS - 1  # an SF index no SF has: the engine's "interface of no SF"
ALL_MODES = [Mode(k, t, m, s) for k, t, m, s in
             itertools.product(("hash", "meta"), ("inline", "attached"), ("pass", "drop"), (False, True))]  # fmt: skip
# the settings of the TTL rules: expired frames passed to the host, and the pipe model
ALL_MODES += [Mode("hash", t, "pass", on_ttl_expired="pass", ttl_model="pipe") for t in ("inline", "attached")]
# on_miss = "last" (attached, caching): NATed packets back from the SF get its last stack
ALL_MODES += [Mode("hash", "attached", "last")]
HASH_MODES = [m for m in ALL_MODES if m.key_mode == "hash" and not m.static and m.on_miss != "last"]
OTHER_MODES = [m for m in ALL_MODES if m not in HASH_MODES]
XDP_VERDICTS = {bpf.XDP_DROP: DROP, bpf.XDP_PASS: PASS, bpf.XDP_REDIRECT: REDIRECT}
TC_VERDICTS = {bpf.TC_ACT_SHOT: DROP, bpf.TC_ACT_OK: PASS}
ENGINE_VERDICTS = {VERDICT_DROP: DROP, VERDICT_PASS: PASS, VERDICT_TX: REDIRECT}


class Refused(Exception):
    """The test run refused the frame before any program ran (errno)."""


# ---- the targets ---------------------------------------------------------------------------

class PercpuCounters:
    """The counters of a loaded object, summed over the rows the tests use and over CPUs (a
    batch lookup per run of rows: the fuzzer reads them after every program run)."""

    def __init__(self, counter_map: bpf.Map) -> None:
        self.map = counter_map

    def read(self) -> list[int]:
        total = counters.read_map(self.map, ROWS).total()
        return [total[n] for n in NAMES]


def _delta(before: list[int], after: list[int]) -> dict[str, int]:
    return {NAMES[i]: a - b for i, (b, a) in enumerate(zip(before, after, strict=True)) if a != b}


def _outcome(verdict: str, data: bytes | None, delta: dict[str, int]) -> Outcome:
    """An observed outcome: tx_dwell_ns apart from the counters the reference predicts."""
    dwell = delta.pop("tx_dwell_ns", 0)
    return Outcome(verdict, data if verdict != DROP else None, delta, dwell=dwell)


class Target:
    """One implementation in one configuration, with its reference."""

    name: str
    mode: Mode
    ref: Reference

    def __init__(self) -> None:
        self.rx_in = self.tx_in = 0  # frames each program ran on (refused ones not)
        self.verdicts: Counter[str] = Counter()

    def rx(self, frame: bytes) -> Outcome: ...
    def tx(self, frame: bytes, mark: int, tx_sf: int | None) -> Outcome: ...
    def cache_set(self, index: int) -> cache.CacheSet: ...
    def clear_cache(self, index: int | None = None) -> None:
        """Empty one set (or all), in the target and in its reference's model alike."""
    def totals(self) -> dict[str, int]: ...
    def close(self) -> None: ...


class BpfTarget(Target):
    def __init__(self, mode: Mode, cache_entries: int = CACHE_ENTRIES, max_per_key: int = 64) -> None:
        super().__init__()
        self.mode = mode
        self.name = f"bpf:{mode}" + ("" if cache_entries == CACHE_ENTRIES else f"-cache{cache_entries}")
        cfg = ProxyConfig(backend="static" if mode.static else "kernel", key=mode.key_mode, topology=mode.topology,
                          cache_entries=cache_entries, on_miss=mode.on_miss, max_dwell_ms=MAX_DWELL_MS,
                          max_per_key=max_per_key, on_ttl_expired=mode.on_ttl_expired,
                          ttl_model=mode.ttl_model)  # fmt: skip
        self.obj = ProxyObject(cfg)  # a verifier rejection raises BpfError, with the log
        add_sfs(self.obj.sfs, self.obj.labels)
        self.obj.tx_sf.update(TX_IFINDEX, 0)  # test runs see the loopback device: SF 0's interface
        self.tx_sf_now: int | None = 0
        self.obj.clear_cache()
        self.ref = Reference(mode, SFS, cfg.cache_sets, max_per_key)
        self.rx_fd = self.obj.prog_fd("axp_xdp_rx")
        self.inline = mode.topology == "inline"
        self.tx_fd = self.obj.prog_fd("axp_tc_tx" if self.inline else "axp_xdp_tx")
        self.counters = PercpuCounters(self.obj.counters)
        self.last = self.counters.read()
        self._zero_set = ffi.new("struct axp_cache_set *")

    def _run(self, fd: int, frame: bytes, ctx: bytes | None = None) -> tuple[int, bytes, dict[str, int]]:
        try:
            r = bpf.test_run(fd, frame, ctx=ctx)
        except bpf.BpfError as e:
            raise Refused(e.errno) from None
        now = self.counters.read()
        delta, self.last = _delta(self.last, now), now
        return r.retval, r.data, delta

    def rx(self, frame: bytes) -> Outcome:
        ret, data, c = self._run(self.rx_fd, frame)
        self.rx_in += 1
        return _outcome(XDP_VERDICTS.get(ret, f"retval {ret}"), data, c)

    def tx(self, frame: bytes, mark: int, tx_sf: int | None) -> Outcome:
        ctx = None
        if self.inline and mark:
            buf = bytearray(SKB_CTX_SIZE)
            struct.pack_into("=I", buf, SKB_MARK, mark)
            ctx = bytes(buf)
        if tx_sf != self.tx_sf_now:  # test runs come in on the loopback device: make it tx_sf's interface
            if tx_sf is None:
                self.obj.tx_sf.delete(TX_IFINDEX)
            else:
                self.obj.tx_sf.update(TX_IFINDEX, tx_sf)
            self.tx_sf_now = tx_sf
        ret, data, c = self._run(self.tx_fd, frame, ctx)
        self.tx_in += 1
        return _outcome((TC_VERDICTS if self.inline else XDP_VERDICTS).get(ret, f"retval {ret}"), data, c)

    def cache_set(self, index: int) -> cache.CacheSet:
        # between test runs no program holds a set's lock: a plain lookup is a snapshot
        return cache.decode_set(self.obj.cache.lookup(index))

    def clear_cache(self, index: int | None = None) -> None:
        if index is None:
            self.obj.clear_cache()
            self.ref.cache.clear()
        else:
            self.obj.cache.update(index, self._zero_set)
            self.ref.cache.sets[index] = cache.CacheSet()

    def totals(self) -> dict[str, int]:
        return dict(zip(NAMES, self.counters.read(), strict=True))

    def close(self) -> None:
        self.obj.close()


class EngineTarget(Target):
    """The AF_XDP backend's per-packet C (attached topology, hash keys only)."""

    def __init__(self, on_miss: str, cache_entries: int = CACHE_ENTRIES, max_per_key: int = 64) -> None:
        super().__init__()
        self.mode = Mode("hash", "attached", on_miss)
        self.name = f"c:{self.mode}" + ("" if cache_entries == CACHE_ENTRIES else f"-cache{cache_entries}")
        cfg = ProxyConfig(backend="afxdp", cache_entries=cache_entries, on_miss=on_miss, max_dwell_ms=MAX_DWELL_MS,
                          max_per_key=max_per_key)  # fmt: skip
        self.engine = Engine(config_struct(cfg))
        for idx, sf in SFS.items():
            self.engine.add_sf(idx, sf.struct())
        self.ref = Reference(self.mode, SFS, cfg.cache_sets, max_per_key, afxdp=True)
        self.last = self._read()
        self._set = ffi.new("struct axp_cache_set *")

    def _read(self) -> list[int]:
        total = self.engine.snapshot().total()
        return [total[n] for n in NAMES]

    def _outcome(self, r: object) -> Outcome:
        now = self._read()
        c, self.last = _delta(self.last, now), now
        verdict = ENGINE_VERDICTS.get(r.verdict, f"verdict {r.verdict}")  # type: ignore[attr-defined]
        return _outcome(verdict, r.data, c)  # type: ignore[attr-defined]

    def rx(self, frame: bytes) -> Outcome:
        self.rx_in += 1
        return self._outcome(self.engine.rx(frame))

    def tx(self, frame: bytes, mark: int, tx_sf: int | None) -> Outcome:
        self.tx_in += 1
        return self._outcome(self.engine.tx(frame, NO_SF if tx_sf is None else tx_sf))

    def cache_set(self, index: int) -> cache.CacheSet:
        bpf.check(lib.axp_cache_copy_set(self.engine.cache, index, self._set), f"cache set {index}")
        return cache.decode_set(self._set)

    def clear_cache(self, index: int | None = None) -> None:
        lib.axp_cache_clear(self.engine.cache)  # whole (a memset), and so its model
        self.ref.cache.clear()

    def totals(self) -> dict[str, int]:
        return dict(zip(NAMES, self._read(), strict=True))

    def close(self) -> None:
        self.engine.close()


# ---- the harness -------------------------------------------------------------------------------


@dataclass
class Disagreement:
    direction: str  # rx: an RX frame (and the TX of its bare packet); tx: straight into TX; burst: frames
    frames: tuple[bytes, ...]  # what replays it: the frame, or a burst's frames
    target: str
    what: str
    detail: str

    @property
    def frame(self) -> bytes:
        return self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)

    def __str__(self) -> str:
        return f"{self.direction} {self.target} {self.what}: {self.detail}"


@dataclass
class Stats:
    rx_frames: int = 0
    tx_frames: int = 0  # garbage straight into TX
    tx_after_pop: int = 0
    bursts: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # test runs that refused a frame, by program
    shapes: Counter[str] = field(default_factory=Counter)
    rx_reasons: Counter[str] = field(default_factory=Counter)  # by the reference, over every target
    tx_reasons: Counter[str] = field(default_factory=Counter)
    companions: Counter[str] = field(default_factory=Counter)  # cache_* , evictions, rx_key_ext_limit ...
    key_kinds: Counter[str] = field(default_factory=Counter)  # of frames the hash references popped
    key_flags: Counter[str] = field(default_factory=Counter)

    def count(self, o: Outcome, reasons: tuple[str, ...]) -> None:
        for k in o.counters:
            if k in reasons:
                (self.rx_reasons if reasons is RX_REASONS else self.tx_reasons)[k] += 1
            elif k not in ("rx_packets", "tx_packets"):
                self.companions[k] += o.counters[k]


def _hexdiff(want: bytes | None, got: bytes | None) -> str:
    if want is None or got is None:
        return f"want {want.hex() if want else want}, got {got.hex() if got else got}"
    at = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got)))
    return f"first difference at byte {at} (lengths {len(want)} / {len(got)}): want {want.hex()} got {got.hex()}"


class Differential:
    """All targets, loaded once; check_rx / check_tx / check_burst return the disagreements
    of one frame (or burst)."""

    def __init__(self) -> None:
        self.bpf = {m: BpfTarget(m) for m in ALL_MODES}  # every configuration loads
        self.engines = {m: EngineTarget(m) for m in ("pass", "drop")}
        # bursts: a small cache that fills, few packets a key
        small = {"cache_entries": BURST_CACHE_ENTRIES, "max_per_key": BURST_MAX_PER_KEY}
        self.burst_targets: list[Target] = [
            BpfTarget(Mode(topology="inline"), **small),
            BpfTarget(Mode(topology="attached", on_miss="drop"), **small),
            EngineTarget("drop", **small),
        ]
        self.stats = Stats()

    @property
    def targets(self) -> list[Target]:
        return [*self.bpf.values(), *self.engines.values(), *self.burst_targets]

    def pick(self, i: int | None) -> list[Target]:
        """Frame i's targets: the hash ones of one on_miss action (alternating), the engine,
        and one of the other twelve configurations in turn; every one when i is None."""
        if i is None:
            return [*self.bpf.values(), *self.engines.values()]
        miss = ("pass", "drop")[i % 2]
        hashed = [self.bpf[m] for m in HASH_MODES if m.on_miss == miss]
        return [*hashed, self.engines[miss], self.bpf[OTHER_MODES[i % len(OTHER_MODES)]]]

    def close(self) -> None:
        for t in self.targets:
            t.close()

    # ---- comparing ------------------------------------------------------------------------

    def _compare(self, case: tuple[str, tuple[bytes, ...]], t: Target, want: Outcome, got: Outcome,
                 reasons: tuple[str, ...], out: list[Disagreement]) -> bool:  # fmt: skip
        """Outcome against the reference, and the counting rules on their own. True if alike."""
        n = len(out)

        def bad(what: str, detail: str) -> None:
            out.append(Disagreement(*case, t.name, what, detail))

        if got.verdict != want.verdict:
            bad("verdict", f"want {want.verdict} ({_reason(want, reasons)}), "
                           f"got {got.verdict} ({_reason(got, reasons)})")
        elif got.data != want.data:
            bad("output", _hexdiff(want.data, got.data))
        if got.counters != want.counters:
            bad("counters", f"want {want.counters}, got {got.counters}")
        if got.dwell < 0 or (got.dwell and "cache_takes" not in got.counters):
            bad("counters", f"tx_dwell_ns grew by {got.dwell} without a cache hit")
        packets = "rx_packets" if reasons is RX_REASONS else "tx_packets"
        bumped = [v for k, v in got.counters.items() if k in reasons]
        if got.counters.get(packets) != 1 or bumped != [1]:
            bad("counting", f"{packets} and exactly one reason counter must count the frame once: {got.counters}")
        return len(out) == n

    def _compare_set(self, case: tuple[str, tuple[bytes, ...]], t: Target, key: bytes | None,
                     out: list[Disagreement], index: int | None = None) -> None:  # fmt: skip
        """The key's cache set (or set `index`) in the target as in the reference's model, RX
        times aside: the same keys (the oracle's), stacks, SFs, counts and arrival numbers."""
        i = t.ref.cache.set_of(key) if key is not None else index
        assert i is not None
        want, got = t.ref.cache.sets[i].untimed(), t.cache_set(i).untimed()
        if got == want or any(d.what == "cache" and d.target == t.name and d.frames == case[1] for d in out):
            return  # alike, or told already
        detail = f"set {i}: want {_runs(want)}, got {_runs(got)}"
        elsewhere = [f"set {j}: {_runs(s)}" for j in range(len(t.ref.cache.sets)) if j != i
                     for s in [t.cache_set(j).untimed()] if s != t.ref.cache.sets[j].untimed()]  # fmt: skip
        if elsewhere:  # a key the oracle did not derive lands in another set
            detail += "; the target's other sets differ too: " + "; ".join(elsewhere)
        out.append(Disagreement(*case, t.name, "cache", detail))

    def _tidy(self, t: Target, keys: Iterable[bytes | None], failed: bool) -> None:
        """Leave the target's cache and its model empty: the sets these keys touched, or
        everything after a disagreement."""
        if failed:
            t.clear_cache()
            return
        for key in keys:
            if key is not None and t.ref.cache.sets[t.ref.cache.set_of(key)].packets():
                t.clear_cache(t.ref.cache.set_of(key))

    # ---- running one program on one target ---------------------------------------------------

    def _rx(self, case: tuple[str, tuple[bytes, ...]], t: Target, frame: bytes,
            out: list[Disagreement]) -> tuple[Outcome, Outcome, int] | None:  # fmt: skip
        """RX on one target and in its reference: (want, got, meta mark), None when refused."""
        try:
            got = t.rx(frame)
        except Refused as e:
            self.stats.refused["xdp_rx"] += 1
            if not xdp_test_run_refuses(frame):
                out.append(Disagreement(*case, t.name, "refused", f"the RX test run refused {frame.hex()}: {e}"))
            return None
        mark = 0
        if t.mode.key_mode == "meta" and not t.mode.static and got.data is not None and len(got.data) >= 4:
            mark = int.from_bytes(got.data[:4], sys.byteorder)
        want = t.ref.rx(frame, mark)
        self.stats.count(want, RX_REASONS)
        t.verdicts[f"rx {got.verdict}"] += 1
        self._compare(case, t, want, got, RX_REASONS, out)
        if want.key is not None and want.verdict != DROP:
            if t.mode.key_mode == "meta" and not (mark & ~MARK_MASK == 0 and 1 <= mark >> MARK_CPU_SHIFT <= bpf.NCPUS):
                out.append(Disagreement(*case, t.name, "meta", f"mark {mark:#x} is not ((cpu + 1) << "
                                        f"{MARK_CPU_SHIFT - MARK_SHIFT} | seq) << {MARK_SHIFT}"))
            if t.mode.key_mode == "hash":
                k = Key.from_bytes(want.key)
                self.stats.key_kinds[k.kind.name] += 1
                self.stats.key_flags.update(f.name for f in KeyFlag if k.flags & f)
        if want.key is not None:
            self._compare_set(case, t, want.key, out)
        return want, got, mark

    def _tx(self, case: tuple[str, tuple[bytes, ...]], t: Target, frame: bytes, mark: int, tx_sf: int | None,
            out: list[Disagreement]) -> bytes | None:  # fmt: skip
        """TX on one target and in its reference; returns the key TX looked up."""
        inline = t.mode.topology == "inline"
        try:
            got = t.tx(frame, mark, tx_sf)
        except Refused as e:  # never ran: the reference must not run either
            self.stats.refused["tc_tx" if inline else "xdp_tx"] += 1
            if not (tc_test_run_refuses if inline else xdp_test_run_refuses)(frame):
                out.append(Disagreement(*case, t.name, "refused", f"the TX test run refused {frame.hex()}: {e}"))
            return None
        want = t.ref.tx(frame, mark, tx_sf)
        self.stats.count(want, TX_REASONS)
        t.verdicts[f"tx {got.verdict}"] += 1
        self._compare(case, t, want, got, TX_REASONS, out)
        key = _tx_key(t.mode, frame, mark)
        if key is not None:
            self._compare_set(case, t, key, out)
        return key

    # ---- one frame, one burst -------------------------------------------------------------------

    def check_rx(self, frame: bytes, i: int | None = None, shape: str | None = None) -> list[Disagreement]:
        """An RX frame through frame i's targets (every single-frame target when i is None); a
        popped frame back through TX as the SF returns it."""
        self.stats.rx_frames += 1
        if shape:
            self.stats.shapes[shape] += 1
        case = ("rx", (frame,))
        out: list[Disagreement] = []
        for t in self.pick(i):
            n = len(out)
            r = self._rx(case, t, frame, out)
            keys = []
            if r is not None:
                want, got, mark = r
                keys.append(want.key)
                if want.bare is not None and got.verdict == want.verdict:
                    rng = random.Random(b"sf" + frame)  # the same rewrite for every target, and on replay
                    bare = sf_rewrite(rng, want.bare, nat=chance(rng, 0.05)) if chance(rng, 0.6) else want.bare
                    self.stats.tx_after_pop += 1
                    keys.append(self._tx(case, t, bare, mark, want.sf, out))
                    if want.key is not None:
                        self._compare_set(case, t, want.key, out)
            self._tidy(t, keys, failed=len(out) > n)
        return out

    def check_tx(self, frame: bytes, i: int | None = None, shape: str | None = None,
                 tx_sf: int | None = 0) -> list[Disagreement]:  # fmt: skip
        """A frame straight from an SF into TX (the interface of SF 0, or of none): nothing in
        the cache has its key."""
        self.stats.tx_frames += 1
        if shape:
            self.stats.shapes[shape] += 1
        case = ("tx", (frame,))
        out: list[Disagreement] = []
        for t in self.pick(i):
            n = len(out)
            mark = 0x01FFFFFF if t.mode.key_mode == "meta" else 0  # a mark no RX gave out yet
            key = self._tx(case, t, frame, mark, tx_sf, out)
            self._tidy(t, (key,), failed=len(out) > n)
        return out

    def check_burst(self, frames: list[bytes]) -> list[Disagreement]:
        """Several frames through RX into a small cache (same keys with other stacks, a set that
        fills: joins, runs, evictions, rx_key_full), then the bare packets back through TX in a
        shuffled order, some twice (oldest run first, misses once drained). Every outcome and
        every touched set against the reference; the cache is emptied afterwards."""
        self.stats.bursts += 1
        self.stats.rx_frames += len(frames)
        self.stats.shapes["burst"] += len(frames)
        case = ("burst", tuple(frames))
        out: list[Disagreement] = []
        for t in self.burst_targets:
            bares = []
            for f in frames:
                r = self._rx(case, t, f, out)
                if r is not None and r[0].bare is not None and r[1].verdict == r[0].verdict:
                    bares.append((r[0].bare, r[0].sf))
            rng = random.Random(b"order" + b"".join(frames) + bytes([len(bares) & 0xFF]))
            back = bares + [rng.choice(bares) for _ in range(rng.randrange(3))] if bares else []
            rng.shuffle(back)
            for bare, sf in back:
                self.stats.tx_after_pop += 1
                self._tx(case, t, bare, 0, sf, out)
            for i in range(len(t.ref.cache.sets)):
                self._compare_set(case, t, None, out, index=i)
            t.clear_cache()
        return out

    def check_counted(self) -> list[str]:
        """Every frame counted: per target, rx_packets and the RX reason counters add up to the
        RX frames it ran, likewise for TX; the cache's books balance."""
        problems = []
        for t in self.targets:
            c = t.totals()
            rx, tx = sum(c[k] for k in RX_REASONS), sum(c[k] for k in TX_REASONS)
            if (c["rx_packets"], rx, c["tx_packets"], tx) != (t.rx_in, t.rx_in, t.tx_in, t.tx_in):
                problems.append(f"{t.name}: {t.rx_in} RX frames: rx_packets {c['rx_packets']}, reasons {rx}; "
                                f"{t.tx_in} TX frames: tx_packets {c['tx_packets']}, reasons {tx}")  # fmt: skip
            if counters.in_flight_of(c) < 0:
                problems.append(f"{t.name}: cache books do not balance: {c}")
        return problems


def _tx_key(mode: Mode, bare: bytes, mark: int) -> bytes | None:
    """The key TX looks up for this frame (None: none, or the mode needs none)."""
    if mode.static:
        return None
    if mode.key_mode == "meta":
        return meta_key(mark & MARK_MASK if mode.topology == "inline" else 0)
    return derive_key(bare[14:])[1] if len(bare) >= 14 else None


def _reason(o: Outcome, reasons: tuple[str, ...]) -> str:
    return ",".join(k for k in o.counters if k in reasons) or "no reason counted"


def _runs(s: cache.CacheSet) -> str:
    runs = [f"{format_key(r.key)} depth={r.entry.depth} sf={r.entry.sf} count={r.count} seq={r.seq}"
            for r in s.ways if r]  # fmt: skip
    return f"next_seq={s.next_seq} [" + "; ".join(runs) + "]"


# ---- a run ---------------------------------------------------------------------------------------


def table_frames() -> list[bytes]:
    """The packet table's frames cut at every offset (tests/cases.py), each cut once."""
    from cases import CASES

    seen: set[bytes] = set()
    out = []
    for case in CASES:
        for f in cuts(case.frame):
            if f not in seen:
                seen.add(f)
                out.append(f)
    return out


def burst_frames(gen: FrameGen, rng: random.Random) -> list[bytes]:
    """2..24 frames, about 40 % of them variants of earlier ones (same packet below the stack)."""
    frames: list[bytes] = []
    for _ in range(rng.randrange(2, 25)):
        if frames and rng.random() < 0.4:
            frames.append(gen.variant(rng.choice(frames)).data)
        else:
            frames.append(gen.rx_frame().data)
    return frames


def run(diff: Differential, frames: int, seed: int, sweep: bool = True, tx_ratio: float = 0.3,
        burst_every: int = 20, stop_after: int = 20) -> list[Disagreement]:  # fmt: skip
    """The table swept at every offset, then `frames` generated RX frames, about tx_ratio as
    many straight into TX, and a burst every burst_every frames. Stops after stop_after
    failing frames."""
    failed: list[Disagreement] = []
    bad = 0

    def note(got: list[Disagreement]) -> None:
        nonlocal bad
        failed.extend(got)
        bad += bool(got)

    i = 0
    if sweep:
        for f in table_frames():
            note(diff.check_rx(f, i, "table-cut"))
            i += 1
    gen = FrameGen(random.Random(seed))
    pick = random.Random(seed ^ 0x5F5F)
    for n in range(frames):
        if bad >= stop_after:
            break
        fr = gen.rx_frame()
        note(diff.check_rx(fr.data, i, fr.shape))
        if pick.random() < tx_ratio:
            tf = gen.tx_frame()
            tx_sf = pick.choice([0, 0, 0, 1, 1, None])  # SF 0's interface, SF 1's, or one no SF uses
            note(diff.check_tx(tf.data, i, tf.shape + ("/no-sf" if tx_sf is None else ""), tx_sf))
        if burst_every and n % burst_every == burst_every - 1:
            note(diff.check_burst(burst_frames(gen, pick)))
        i += 1
    return failed


def replay(diff: Differential, path: Path) -> list[Disagreement]:
    """Every 'rx <hex>' / 'tx <hex>' / 'burst <hex> <hex> ...' line of a failures file, the
    single frames through every target."""
    failed: list[Disagreement] = []
    for line in path.read_text().splitlines():
        what, _, rest = line.partition(" ")
        if what not in ("rx", "tx", "burst"):
            continue  # a comment: what disagreed
        frames = [bytes.fromhex(h) for h in rest.split()]
        if what == "rx":
            failed += diff.check_rx(frames[0], None, "replay")
        elif what == "tx":
            failed += diff.check_tx(frames[0], None, "replay")
        elif what == "burst":
            failed += diff.check_burst(frames)
    return failed


def write_failures(path: Path, failed: list[Disagreement], header: str) -> None:
    by_case: dict[tuple[str, tuple[bytes, ...]], list[Disagreement]] = {}
    for d in failed:
        by_case.setdefault((d.direction, d.frames), []).append(d)
    lines = [f"# {header}", "# replay: make fuzz FUZZ_REPLAY=<this file>"]
    for (direction, frames), ds in by_case.items():
        lines.append(f"{direction} {' '.join(f.hex() for f in frames)}")
        lines += [f"#   {d.target} {d.what}: {d.detail}" for d in ds]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _family(shape: str) -> str:
    """A shape without depths and counts: 'mpls3/ip6+ext2/udp-vxlan' -> 'mpls/ip6+ext/udp-vxlan'."""
    return "/".join(part.rstrip("0123456789").replace("ext>max", "ext").rstrip("0123456789")
                    for part in shape.split("/"))  # fmt: skip


def summary(diff: Differential, failed: list[Disagreement], seconds: float, top: int = 30) -> str:
    s = diff.stats
    runs = sum(t.rx_in + t.tx_in for t in diff.targets)
    families: Counter[str] = Counter()
    for shape, n in s.shapes.items():
        families[_family(shape)] += n
    lines = [
        f"frames: {s.rx_frames} RX ({s.tx_after_pop} bare packets back through TX), {s.tx_frames} straight into TX, "
        f"{s.bursts} bursts; {runs} program runs over {len(diff.targets)} targets; "
        f"refused by test runs (frames too short for them): {dict(s.refused)}",
        f"RX reasons (reference, per target run): {dict(s.rx_reasons.most_common())}",
        f"TX reasons (reference, per target run): {dict(s.tx_reasons.most_common())}",
        f"companion counters: {dict(s.companions.most_common())}",
        f"popped key kinds (hash): {dict(s.key_kinds.most_common())}, flags: {dict(s.key_flags)}",
        f"shapes: {len(s.shapes)} distinct, {len(families)} families; frames per family (the {top} largest):",
        *(f"  {n:8d}  {fam}" for fam, n in families.most_common(top)),
        "verdicts per target:",
        *(f"  {t.name:42s} {dict(sorted(t.verdicts.items()))}" for t in diff.targets),
        f"disagreements: {len(failed)} in {len({(d.direction, d.frames) for d in failed})} frames or bursts",
        f"time: {seconds:.1f} s ({runs / max(seconds, 1e-9):.0f} program runs/s)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--frames", type=int, default=100_000, help="generated RX frames (default 100000)")
    ap.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    ap.add_argument("--out", type=Path, default=Path("build/fuzz-failures.txt"),
                    help="where failing frames go, as hex lines (default build/fuzz-failures.txt)")
    ap.add_argument("--replay", type=Path, help="run the frames of a failures file instead")
    ap.add_argument("--no-sweep", action="store_true", help="skip the table frames cut at every offset")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    diff = Differential()
    try:
        if args.replay:
            failed = replay(diff, args.replay)
        else:
            failed = run(diff, args.frames, args.seed, sweep=not args.no_sweep)
        counted = diff.check_counted()
        print(summary(diff, failed, time.monotonic() - t0))
    finally:
        diff.close()
    for p in counted:
        print(f"NOT COUNTED: {p}")
    if failed:
        for d in failed[:20]:
            print(f"DISAGREEMENT {d}\n  frames {' '.join(f.hex() for f in d.frames)}")
        out = args.out if not args.replay else args.out.with_suffix(".replay.txt")
        write_failures(out, failed, f"seed {args.seed}, frames {args.frames}" if not args.replay else f"{args.replay}")
        print(f"failing frames: {out}")
    return 1 if failed or counted else 0


if __name__ == "__main__":
    sys.exit(main())
