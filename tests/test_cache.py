"""The cache (bpf/include/cache.shared.h) against its Python model (afxdp_proxy/cache.py):
the C cache of the extension through cffi, and, under root, the real BPF programs through
BPF_PROG_TEST_RUN. Same outcome, same sets (way by way), same counters.

The semantics, checked here on the model and held to both backends: consecutive packets with
one key and one stack share a run; one key with other stacks is served in arrival order;
max_per_key and the ways of a set bound a key; a run older than max_dwell_ms is reclaimed by
the next insert into its set; a full set evicts exactly one run, the oldest of another key.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Iterator

import pytest
from afxdp_proxy._native import ffi, lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from afxdp_proxy import cache, counters
from afxdp_proxy.cache import HIT, JOINED, KEY_FULL, MISS, OPENED, CacheModel, Entry
from afxdp_proxy.key import KEY_SIZE

MS = 1_000_000


def key_of(n: int) -> bytes:
    """A distinct struct axp_key for every n (TCP kind, the number in the sequence word)."""
    return bytes([2, 4, 6, 0]) + struct.pack("!I", n) + bytes(KEY_SIZE - 12) + struct.pack("!I", n * 7919)


def entry_of(stack: int, rx_ns: int, sf: int = 0) -> Entry:
    """Stack number `stack` as struct axp_entry would hold it: `stack % 5 + 1` labels."""
    depth = stack % 5 + 1
    labels = b"".join(struct.pack("!I", (1000 + stack * 16 + i) << 12) for i in range(depth))
    return Entry(labels.ljust(cache.STACK_BYTES, b"\0"), depth, sf, rx_ns)


# ---- one definition -------------------------------------------------------------------------


def test_constants_and_layout_agree_with_c() -> None:
    assert cache.WAYS == lib.AXP_CACHE_WAYS
    assert cache.MAX_PER_KEY == lib.AXP_CACHE_MAX_PER_KEY
    names = ffi.typeof("enum axp_cache_result").elements  # value -> name
    assert {names[n]: v for n, v in cache.RESULTS.items()} == {
        "AXP_CACHE_MISS": "miss", "AXP_CACHE_HIT": "hit", "AXP_CACHE_JOINED": "joined",
        "AXP_CACHE_OPENED": "opened", "AXP_CACHE_KEY_FULL": "key_full"}
    assert ffi.sizeof("struct axp_key") % 8 == 0
    assert ffi.sizeof(ffi.typeof("struct axp_entry").fields[0][1].type) == cache.STACK_BYTES
    assert ffi.sizeof(ffi.typeof("struct axp_cache_way").fields[1][1].type) == cache.STACK_BYTES
    assert ffi.offsetof("struct axp_cache_set", "lock") == 0
    assert set(cache.COUNTERS) <= {n.removeprefix("AXP_CNT_").lower() for n in ffi.typeof("enum axp_counter").relements}


def test_hash_set_and_tag_agree_with_c() -> None:
    rng = random.Random(7)
    k = ffi.new("struct axp_key *")
    for i in range(3000):
        key = rng.randbytes(KEY_SIZE) if i % 3 else key_of(i)
        ffi.memmove(k, key, KEY_SIZE)
        h = lib.axp_cache_hash_key(k)
        assert h == cache.key_hash(key)
        for sets in (1, 3, 128, 8192, 1 << 21):
            assert lib.axp_cache_set_of_hash(h, sets) == cache.set_index(h, sets) < sets
        assert cache.tag_of(h) & 1


def test_keys_spread_over_the_sets() -> None:
    """Keys differing in one field only (what a flow produces) fill the sets evenly."""
    sets = 64
    hits = [0] * sets
    for n in range(64 * 200):
        hits[cache.set_index(cache.key_hash(key_of(n)), sets)] += 1
    assert max(hits) < 1.5 * 200 and min(hits) > 0.5 * 200, hits


# ---- the semantics, on the model --------------------------------------------------------------


def test_same_key_same_stack_shares_a_run() -> None:
    m = CacheModel(1)
    for i in range(3):
        assert m.insert(key_of(1), entry_of(0, 100 + i)).result == (OPENED if i == 0 else JOINED)
    runs = [r for r in m.sets[0].ways if r]
    assert len(runs) == 1 and runs[0].count == 3 and runs[0].rx_ns == 102 and runs[0].entry.rx_ns == 100
    for _ in range(3):
        assert m.take(key_of(1))[1] == entry_of(0, 100)
    assert m.take(key_of(1))[0].result == MISS
    assert m.counters == {"cache_inserts": 3, "cache_takes": 3, "evictions": 0, "expired": 0, "rx_key_full": 0}


def test_same_key_other_stacks_come_back_in_arrival_order() -> None:
    m = CacheModel(1)
    order = [0, 1, 1, 2, 0, 0]  # runs: 0, 1 (x2), 2, 0 (x2)
    for i, s in enumerate(order):
        m.insert(key_of(1), entry_of(s, 10 + i))
    assert [r.count for r in m.sets[0].ways if r] == [1, 2, 1, 2]
    got = [m.take(key_of(1))[1] for _ in order]
    assert [(e.labels, e.depth) for e in got] == [(entry_of(s, 0).labels, entry_of(s, 0).depth) for s in order]


def test_max_per_key_bounds_a_key() -> None:
    m = CacheModel(1, max_per_key=3)
    res = [m.insert(key_of(1), entry_of(i % 2, 10)).result for i in range(5)]
    assert res == [OPENED, OPENED, OPENED, KEY_FULL, KEY_FULL]
    assert m.counters["rx_key_full"] == 2
    m.take(key_of(1))
    assert m.insert(key_of(1), entry_of(0, 11)).result == JOINED  # room again: joins the newest run (stack 0)


def test_a_key_never_takes_the_last_way_from_itself() -> None:
    m = CacheModel(1, max_per_key=255)
    res = [m.insert(key_of(1), entry_of(i % 2, 10)).result for i in range(cache.WAYS + 1)]
    assert res == [OPENED] * cache.WAYS + [KEY_FULL]  # every way holds a live run of the key


def test_a_stale_run_is_replaced_by_an_identical_retry() -> None:
    """The SF dropped the packet: after max_dwell the same packet gets through (no longer
    queued behind its lost twin), and the lost one is counted as expired."""
    m = CacheModel(1, max_dwell_ns=1000 * MS)
    m.insert(key_of(1), entry_of(0, 0))
    assert m.insert(key_of(1), entry_of(0, 1000 * MS)).result == JOINED  # not older than max_dwell: a duplicate
    out = m.insert(key_of(1), entry_of(0, 2000 * MS + 1))
    assert (out.result, out.expired) == (OPENED, 2)
    assert m.take(key_of(1))[1] == entry_of(0, 2000 * MS + 1)
    assert m.packets() == 0


def test_stale_space_is_used_before_anything_younger_is_evicted() -> None:
    m = CacheModel(1, max_dwell_ns=10 * MS)
    for n in range(cache.WAYS):
        m.insert(key_of(n), entry_of(0, 0 if n == 5 else 9 * MS))  # way 5 is the oldest
    out = m.insert(key_of(99), entry_of(0, 10 * MS + 1))  # way 5 is stale now, the others young
    assert (out.result, out.way, out.expired, out.evicted) == (OPENED, 5, 1, 0)
    assert m.counters["evictions"] == 0 and m.counters["expired"] == 1


def test_a_full_set_evicts_exactly_the_oldest_run_of_another_key() -> None:
    m = CacheModel(1)
    for n in range(cache.WAYS):
        m.insert(key_of(n), entry_of(0, 10))
    m.insert(key_of(0), entry_of(0, 11))  # key 0 joined again: now the youngest
    out = m.insert(key_of(99), entry_of(0, 12))
    assert (out.result, out.evicted) == (OPENED, 1)
    assert m.sets[0].ways[out.way] is not None and out.way == 1  # key 1: the oldest newest packet
    assert m.take(key_of(1))[0].result == MISS  # its packet finds nothing: never another stack
    assert m.counters["evictions"] == 1 and counters.in_flight_of(m.counters) == m.packets() == cache.WAYS + 1


def test_ages_survive_the_arrival_numbers_wrapping() -> None:
    m = CacheModel(1)
    m.sets[0].next_seq = (1 << 32) - 3
    for i in range(6):
        m.insert(key_of(1), entry_of(i % 2, 10))
    assert [m.take(key_of(1))[1].depth for _ in range(6)] == [entry_of(i % 2, 0).depth for i in range(6)]


def test_model_validates_its_arguments() -> None:
    with pytest.raises(ValueError):
        CacheModel(0)
    with pytest.raises(ValueError):
        CacheModel(1, max_per_key=256)


# ---- the C cache against the model --------------------------------------------------------------


class CCache:
    """The extension's cache (native/axp_cache.c) with the model's interface."""

    def __init__(self, sets: int, max_per_key: int, max_dwell_ns: int) -> None:
        self.ptr = lib.axp_cache_new(sets, max_per_key, max_dwell_ns, 1)
        assert self.ptr != ffi.NULL
        self.k = ffi.new("struct axp_key *")
        self.e = ffi.new("struct axp_entry *")
        self.out = ffi.new("struct axp_cache_outcome *")

    def close(self) -> None:
        lib.axp_cache_free(self.ptr)

    def _key(self, key: bytes) -> None:
        ffi.memmove(self.k, key, len(key))

    def insert(self, key: bytes, entry: Entry) -> cache.Outcome:
        self._key(key)
        ffi.memmove(self.e.labels, entry.labels, cache.STACK_BYTES)
        self.e.depth, self.e.sf, self.e.rx_ns = entry.depth, entry.sf, entry.rx_ns
        r = lib.axp_cache_insert(self.ptr, self.k, self.e, self.out)
        assert r == self.out.result
        return cache.Outcome(r, self.out.expired, self.out.evicted, self.out.way)

    def take(self, key: bytes) -> tuple[cache.Outcome, Entry | None]:
        self._key(key)
        r = lib.axp_cache_take(self.ptr, self.k, self.e, self.out)
        if r != HIT:
            return cache.Outcome(r), None
        e = Entry(bytes(ffi.buffer(self.e.labels)), self.e.depth, self.e.sf, self.e.rx_ns)
        return cache.Outcome(r, 0, 0, self.out.way), e

    def sets(self) -> list[cache.CacheSet]:
        buf = ffi.new("struct axp_cache_set *")
        out = []
        for i in range(lib.axp_cache_sets(self.ptr)):
            assert lib.axp_cache_copy_set(self.ptr, i, buf) == 0
            assert cache.tags_agree(buf)
            out.append(cache.decode_set(buf))
        return out


# one step: ("rx", key number, stack number) | ("tx", key number) | ("clock", ms forward)
STEPS = st.lists(st.one_of(
    st.tuples(st.just("rx"), st.integers(0, 11), st.integers(0, 2)),
    st.tuples(st.just("tx"), st.integers(0, 11)),
    st.tuples(st.just("clock"), st.sampled_from([0, 1, 30, 200])),
), min_size=1, max_size=120)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS, sets=st.sampled_from([1, 2, 3]), max_per_key=st.sampled_from([1, 3, 64]))
def test_c_cache_follows_the_model(steps: list[tuple], sets: int, max_per_key: int) -> None:
    dwell = 100 * MS
    model, c = CacheModel(sets, max_per_key, dwell), CCache(sets, max_per_key, dwell)
    counted = dict.fromkeys(cache.COUNTERS, 0)
    now = 1_000 * MS
    try:
        for step in steps:
            if step[0] == "clock":
                now += step[1] * MS
                continue
            now += 1  # every packet its own nanosecond, so RX times tell them apart
            if step[0] == "rx":
                entry = entry_of(step[2], now, sf=step[2] % 2)
                want, got = model.insert(key_of(step[1]), entry), c.insert(key_of(step[1]), entry)
                counted["expired"] += got.expired
                counted["evictions"] += got.evicted
                counted["rx_key_full" if got.result == KEY_FULL else "cache_inserts"] += 1
            else:
                want, got = model.take(key_of(step[1])), c.take(key_of(step[1]))
                counted["cache_takes"] += want[0].result == HIT
            assert got == want, step
            assert c.sets() == model.sets
        assert counted == model.counters
        assert counters.in_flight_of(counted) == model.packets() == lib.axp_cache_packets(c.ptr)
    finally:
        c.close()


@pytest.mark.parametrize("runs_of_key_0", [1, 2])
def test_c_cache_takes_from_every_way_of_a_full_set(runs_of_key_0: int) -> None:
    """Every way of a full one-set cache hands back its own stack, in either tag word (ways
    0-3 and 4-7): the take that compares one way's key when only that way has the tag, and,
    with two runs of key 0, the scan that picks the oldest of several."""
    model, c = CacheModel(1, 255, 10**18), CCache(1, 255, 10**18)
    try:
        keys = [0] * runs_of_key_0 + list(range(1, cache.WAYS - runs_of_key_0 + 1))
        for i, k in enumerate(keys):
            e = entry_of(i, 100 + i)
            assert c.insert(key_of(k), e) == model.insert(key_of(k), e)
        assert c.sets() == model.sets and all(model.sets[0].ways)
        for k in reversed(keys):
            want = model.take(key_of(k))
            assert want[0].result == HIT and c.take(key_of(k)) == want
        assert c.take(key_of(0))[0].result == MISS and lib.axp_cache_packets(c.ptr) == 0
    finally:
        c.close()


def test_c_cache_is_safe_for_threads_on_one_set() -> None:
    """Two threads insert and take on a one-set cache at once (the GIL released in the C
    batch functions is tested in test_native_packets; here the set lock alone)."""
    import threading

    c = lib.axp_cache_new(1, 255, 10**18, 1)
    n = 20000
    errors: list[str] = []

    def work(t: int) -> None:
        k, e, o = ffi.new("struct axp_key *"), ffi.new("struct axp_entry *"), ffi.new("struct axp_cache_outcome *")
        key = key_of(1000 + t)
        ffi.memmove(k, key, len(key))
        for i in range(n):
            e.depth, e.sf = 1 + i % 3, t
            e.labels[0] = i
            if lib.axp_cache_insert(c, k, e, o) == KEY_FULL:
                errors.append("key full")
                return
            got = ffi.new("struct axp_entry *")
            if lib.axp_cache_take(c, k, got, o) != HIT or got.sf != t or got.labels[0] != i:
                errors.append(f"thread {t} packet {i}: got sf {got.sf} label {got.labels[0]}")
                return

    try:
        threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        assert lib.axp_cache_packets(c) == 0
    finally:
        lib.axp_cache_free(c)


# ---- the BPF cache against the model (root) ------------------------------------------------------


# Far beyond the real time a whole example takes (40 steps of test runs and set dumps on a loaded
# machine took more than the 100 ms this was): runs age only by the "clock" step, alike on both
# sides, never by the real clock, which the programs read in jiffies and the model in ns.
MODEL_DWELL_MS = 60_000


@pytest.fixture(scope="module")
def bpf_proxy() -> Iterator[object]:
    from test_bpf_proxy import Cfg, Proxy

    px = Proxy(Cfg(topology="attached", cache_entries=16, max_dwell_ms=MODEL_DWELL_MS, max_per_key=3))
    yield px
    px.close()


@pytest.mark.root
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.one_of(
    st.tuples(st.just("rx"), st.integers(0, 9), st.integers(0, 2)),
    st.tuples(st.just("tx"), st.integers(0, 9)),
    st.tuples(st.just("clock"), st.just(0)),
), min_size=1, max_size=40))
def test_bpf_cache_follows_the_model(bpf_proxy: object, steps: list[tuple]) -> None:
    """The real RX and TX programs: RX pops and caches or drops (key full), TX pushes what
    the model hands out or misses; the sets, read under their locks, match the model's.
    The programs read the real clock: "clock" moves theirs 10 x max_dwell ahead, and max_dwell
    is far beyond the time a whole example takes, so ageing is decided alike on both sides."""
    from test_bpf_proxy import SFS, frame_for, labelled, with_macs

    from afxdp_proxy import bpf
    from afxdp_proxy.key import derive_key
    from afxdp_proxy.mpls import Lse, tx_stack

    px = bpf_proxy
    px.reset()
    dwell = MODEL_DWELL_MS * MS
    model = CacheModel(2, 3, dwell)  # cache_entries 16: 2 sets
    skew = 0
    out_macs = (SFS[0].next_hop_mac, SFS[0].net_out_mac)
    for step in steps:
        if step[0] == "clock":
            skew += 10 * dwell
            px.obj.set_clock_skew(skew)
            continue
        frame, bare, stack = frame_for(step[1], step[2] if step[0] == "rx" else 0)
        _, key = derive_key(bare[14:])
        assert key is not None
        if step[0] == "rx":
            labels = b"".join(e.to_bytes() for e in stack).ljust(cache.STACK_BYTES, b"\0")
            want = model.insert(key, Entry(labels, len(stack), 0, skew + time.monotonic_ns()))
            r = px.rx(frame)
            assert r.retval == (bpf.XDP_DROP if want.result == KEY_FULL else bpf.XDP_REDIRECT), step
        else:
            _, e = model.take(key)
            t = px.xdp_tx(bare)
            assert t.retval == (bpf.XDP_PASS if e is None else bpf.XDP_REDIRECT)
            if e is None:  # a miss goes to the kernel as it came (on_miss = pass)
                assert t.data == bare, step
            else:
                left = tx_stack([Lse.decode(int.from_bytes(e.labels[4 * i:4 * i + 4], "big")) for i in range(e.depth)])
                assert t.data == with_macs(labelled(bare, left), *out_macs), step
        assert [s.untimed() for s in px.obj.cache_sets()] == [s.untimed() for s in model.sets], step
    got = px.counters()
    assert {k: got.get(k, 0) for k in cache.COUNTERS} == model.counters
    assert counters.in_flight_of(got) == model.packets()
