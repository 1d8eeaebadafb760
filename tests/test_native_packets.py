"""tests/cases.py through the C extension's per-packet functions on plain buffers: the same
verdicts, output frames, cache entries and counters as the BPF tests (test_bpf_proxy.py) for
the attached topology the AF_XDP backend serves. One table, three implementations: Python
(the key oracle), BPF and C. No sockets and no root, except where a test says so: those
run build/xsk.bpf.o, the AF_XDP backend's XDP program, under BPF_PROG_TEST_RUN.

Verdicts map onto the XDP program of the kernel backend: drop -> XDP_DROP, pass -> XDP_PASS,
tx (to the SF, or out) -> XDP_REDIRECT.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from afxdp_proxy._native import ffi, lib
from cases import BY_NAME, CASES, HOST_TX, POPPED, Case, Verdict, nat, sf_rewrite, stack_of
from test_bpf_proxy import (
    BAD_TX,
    SFS,
    SHORT_IP_TX,
    TCP4_BARE,
    assert_frame,
    entry_labels,
    frame_for,
    host_addresses,
    labelled,
    rx_expect,
    tagged_frames,
    tx_expect,
    with_macs,
)

from afxdp_proxy import bpf, cache, config, counters
from afxdp_proxy.backends.afxdp import (
    HEADROOM,
    NSLOTS,
    VERDICT_DROP,
    VERDICT_PASS,
    VERDICT_TX,
    XDP_SLOTS,
    Engine,
    snapshot_of,
    xdp_row,
)
from afxdp_proxy.backends.kernel import config_struct, label_keys
from afxdp_proxy.config import ProxyConfig
from afxdp_proxy.counters import in_flight_of
from afxdp_proxy.key import MAX_LABELS, derive_key, parse_mpls_frame
from afxdp_proxy.lab.frames import ether, ipv4_tcp, mpls_frame
from afxdp_proxy.mpls import Lse, tx_stack

XDP_OF = {VERDICT_DROP: bpf.XDP_DROP, VERDICT_PASS: bpf.XDP_PASS, VERDICT_TX: bpf.XDP_REDIRECT}
BASE = set(counters.names())


def make_engine(on_miss: str = "pass", cache_entries: int = 1024, threads: int = 1, max_dwell_ms: int = 1000,
                max_per_key: int = 64, ttl_model: str = "uniform", on_ttl_expired: str = "drop",
                dwell_sample: int = 1) -> Engine:
    """An engine with SFS; every packet's dwell time measured unless dwell_sample says otherwise."""
    cfg = ProxyConfig(backend="afxdp", on_miss=on_miss, cache_entries=cache_entries, max_dwell_ms=max_dwell_ms,
                      max_per_key=max_per_key, ttl_model=ttl_model, on_ttl_expired=on_ttl_expired,
                      dwell_sample=dwell_sample)
    e = Engine(config_struct(cfg), threads)
    for idx, sf in SFS.items():
        e.add_sf(idx, sf.struct())
    return e


@pytest.fixture(scope="module")
def pool() -> Iterator[dict[tuple, Engine]]:
    made: dict[tuple, Engine] = {}
    yield made
    for e in made.values():
        e.close()


@pytest.fixture
def make(pool: dict[tuple, Engine]) -> Callable[..., Engine]:
    """make(**make_engine's arguments) -> an engine with the BPF tests' SFs, empty cache, zero counters."""

    def get(**kw: object) -> Engine:
        k = tuple(sorted(kw.items()))
        if k not in pool:
            pool[k] = make_engine(**kw)  # type: ignore[arg-type]
        e = pool[k]
        lib.axp_cache_clear(e.cache)
        e.reset_counters()
        return e

    return get


def assert_counters(e: Engine, want: dict[str, int]) -> int:
    """The kernel backend's counters exactly as the BPF tests expect them (non-zero ones, apart
    from tx_dwell_ns, which is returned); the extras must agree with the cache."""
    got = e.counters()
    base = {k: v for k, v in got.items() if k in BASE and v and k != "tx_dwell_ns"}
    assert base == want
    assert in_flight_of(got) == e.in_flight()  # the counters agree with the sets
    return got["tx_dwell_ns"]


def entries(e: Engine) -> dict[bytes, object]:
    """{key: struct-like entry} of a cache holding at most one packet per key."""
    out: dict[bytes, object] = {}
    for s in e.sets():
        for r in s.ways:
            if r:
                assert r.key not in out and r.count == 1
                out[r.key] = r.entry
    return out


def tx_of(e: Engine, frame: bytes, sf: int = 0) -> tuple[int, bytes]:
    r = e.tx(frame, sf)
    return XDP_OF[r.verdict], r.data


# ---- the table -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_table(make: Callable[..., Engine], case: Case) -> None:
    e = make(**case.settings)
    before = time.monotonic_ns()
    r = e.rx(case.frame)
    want_verdict, want_frame = rx_expect(case, "attached")
    assert XDP_OF[r.verdict] == want_verdict
    assert_frame(r.data, want_frame)
    # a frame shorter than Ethernet, which BPF_PROG_TEST_RUN refuses, is counted like any truncation
    also = dict.fromkeys(case.rx_also, 1)
    cached = {"cache_inserts": 1} if case.rx == Verdict.POP else {}
    assert_counters(e, {"rx_packets": 1, case.rx_counter: 1, **cached, **also})
    if case.rx != Verdict.POP:
        assert entries(e) == {}
        return

    key = parse_mpls_frame(case.frame).key  # the Python oracle's key: the C cached under the same bytes
    assert key is not None and case.sf is not None
    got = entries(e)
    assert list(got) == [key]
    ent = got[key]
    assert ent.labels == entry_labels(case.stack)
    assert (ent.depth, ent.sf, r.sf) == (case.depth, case.sf, case.sf)
    assert before < ent.rx_ns <= time.monotonic_ns()  # CLOCK_MONOTONIC, like bpf_ktime_get_ns

    verdict, data = tx_of(e, r.data, case.sf)
    want_verdict, want_frame = tx_expect(case, "attached")
    assert verdict == want_verdict
    assert_frame(data, want_frame)
    assert case.tx_counter is not None
    dwell = assert_counters(e, {"rx_packets": 1, "rx_popped": 1, "tx_packets": 1, case.tx_counter: 1,
                                 "cache_inserts": 1, "cache_takes": 1, **also})
    assert 0 < dwell < time.monotonic_ns() - before
    assert entries(e) == {}, "TX must take the entry out of the cache"
    c = e.counters()
    assert (c["cache_inserts"], c["cache_takes"], c["evictions"]) == (1, 1, 0)


def test_ext_limit_is_counted_only_for_a_popped_packet() -> None:
    """As in the BPF tests: a twin refused as rx_key_full is not counted in rx_key_ext_limit."""
    e = make_engine(max_per_key=1)
    try:
        frame = BY_NAME["ext6_limit"].frame
        e.rx(frame)
        e.rx(frame)
        assert_counters(e, {"rx_packets": 2, "rx_popped": 1, "rx_key_full": 1, "rx_key_ext_limit": 1,
                            "cache_inserts": 1})
    finally:
        e.close()


def test_an_sf_table_set_by_a_reload_chooses_as_add_sf_does(make: Callable[..., Engine]) -> None:
    """axp_engine_set_sf (a reload) keys an SF by (vlan_in, label) as axp_engine_add_sf does:
    an engine whose table a reload filled, each SF in another slot, sends every frame of the
    table to the same SF (label 100 untagged and on VLAN 10 are two SFs)."""
    slot = {idx: 9 + idx for idx in SFS}
    e = Engine(config_struct(ProxyConfig(backend="afxdp", cache_entries=1024)))
    try:
        for idx, sf in SFS.items():
            e.set_sf(slot[idx], sf.struct())
        ref = make()
        for case in CASES:
            if case.settings:
                continue
            want, got = ref.rx(case.frame), e.rx(case.frame)
            assert (got.verdict, got.data) == (want.verdict, want.data), case.name
            assert got.sf == (slot[want.sf] if want.sf >= 0 else -1), case.name
    finally:
        e.close()


def test_a_reload_refuses_an_sf_key_twice_and_frees_a_dropped_one() -> None:
    e = make_engine()
    try:
        dup = SFS[2].struct()  # (VLAN 10, label 100)
        with pytest.raises(bpf.BpfError) as err:
            e.set_sf(20, dup)
        assert err.value.errno == errno.EEXIST
        e.set_sf(2, dup, serve=False)  # draining: its key is served no more
        e.set_sf(20, dup)
        e.drop_sf(2)
        for field, value in (("vlan_in", 4096), ("label", 1 << 20)):
            bad = SFS[0].struct()
            setattr(bad, field, value)
            with pytest.raises(bpf.BpfError) as err:
                e.set_sf(21, bad)
            assert err.value.errno == errno.EINVAL, field
    finally:
        e.close()


@pytest.mark.parametrize("case", POPPED, ids=lambda c: c.name)
def test_table_pipe_ttl(make: Callable[..., Engine], case: Case) -> None:
    """ttl_model = "pipe" (RFC 3443 §3.3): every entry TX pushes keeps the TTL it arrived with."""
    e = make(ttl_model="pipe")
    r = e.rx(case.frame)
    assert case.pushed_pipe is not None and case.sf is not None
    verdict, data = tx_of(e, r.data, case.sf)
    assert verdict == bpf.XDP_REDIRECT
    assert_frame(data, with_macs(case.pushed_pipe, SFS[case.sf].next_hop_mac, SFS[case.sf].net_out_mac))
    assert entries(e) == {}


def test_counts_land_in_the_row_of_their_sf(make: Callable[..., Engine]) -> None:
    """As in the BPF tests: the second SF's packet counts in its row, a frame of no SF in the last."""
    e = make()
    case = BY_NAME["tcp4_sf1"]
    r = e.rx(case.frame, now_ns=1_000_000)
    assert r.verdict == VERDICT_TX
    t = e.tx(r.data, sf=1, now_ns=1_000_000 + 5_000)
    assert t.verdict == VERDICT_TX
    e.rx(BY_NAME["ipv4_plain"].frame)
    snap = e.snapshot()
    nonzero = {r: {k: v for k, v in snap.row(r).items() if v} for r in snap.rows}
    assert nonzero == {
        1: {"rx_packets": 1, "rx_popped": 1, "cache_inserts": 1, "tx_packets": 1, "tx_pushed": 1, "cache_takes": 1,
            "tx_dwell_ns": 5_000},
        counters.NONE_ROW: {"rx_packets": 1, "rx_not_mpls": 1},
    }
    hist = snap.dwell_hist(1)
    assert sum(hist) == 1 and hist[counters.dwell_bucket(5_000)] == 1 == hist[3]  # [4096, 8192) ns


def test_each_packet_gets_its_own_stack_back(make: Callable[..., Engine]) -> None:
    e = make()
    stacks = [stack_of(2), stack_of(5), [Lse(100, 7, False, 9), Lse(42, 0, False, 2), Lse(43, 4, True, 3)]]
    ips = [ipv4_tcp("10.9.0.1", "10.9.0.2", 1, 7, 8, n, 0) for n in range(3)]
    popped = [e.rx(mpls_frame(s, ip)).data for s, ip in zip(stacks, ips, strict=True)]
    assert e.in_flight() == 3
    for i in (2, 0, 1):
        verdict, data = tx_of(e, popped[i])
        assert verdict == bpf.XDP_REDIRECT
        want = with_macs(labelled(mpls_frame([], ips[i]), tx_stack(stacks[i])), SFS[0].next_hop_mac,
                         SFS[0].net_out_mac)
        assert_frame(data, want)
    assert_counters(e, {"rx_packets": 3, "rx_popped": 3, "tx_packets": 3, "tx_pushed": 3, "cache_inserts": 3,
                        "cache_takes": 3})


def test_sf_rewrites_do_not_lose_the_entry(make: Callable[..., Engine]) -> None:
    e = make()
    names = ("tcp4_8", "rtp4", "icmp4", "tcp6", "udp6")
    for name in names:
        case = next(c for c in POPPED if c.name == name)
        assert case.popped is not None
        assert e.rx(case.frame).verdict == VERDICT_TX
        rewritten = sf_rewrite(case.popped)
        want = with_macs(labelled(rewritten, tx_stack([Lse.decode(w) for w in case.stack])),
                         SFS[0].next_hop_mac, SFS[0].net_out_mac)
        assert_frame(tx_of(e, rewritten)[1], want)
    n = len(names)
    assert_counters(e, {"rx_packets": n, "rx_popped": n, "tx_packets": n, "tx_pushed": n, "cache_inserts": n,
                        "cache_takes": n})
    assert entries(e) == {}


def test_the_whole_table_as_one_batch(make: Callable[..., Engine]) -> None:
    """What the socket loop calls: axp_rx_batch / axp_tx_batch over many frames at once (parsed,
    hashed and prefetched in chunks before any touches the cache) agree with frame-by-frame.
    Rows whose key an earlier row holds (duplicate ACKs differing only in SACK blocks) are left
    out: two packets with one key in flight are the cache's business, tested apart; so are rows
    that need settings of their own (case.config)."""
    e = make()
    held: set[bytes | None] = set()
    cases = []
    for case in CASES:
        if case.config:
            continue
        key = parse_mpls_frame(case.frame).key if case.rx == Verdict.POP else None
        if key is None or key not in held:
            cases.append(case)
            held.add(key)
    assert len(cases) < len(CASES)  # the table has such twins: this filter is not dead code
    frames = [c.frame for c in cases]
    n = len(frames)
    bufs = [ffi.new("uint8_t[]", HEADROOM + len(f)) for f in frames]
    for b, f in zip(bufs, frames, strict=True):
        ffi.memmove(b + HEADROOM, f, len(f))
    ptrs = ffi.new("uint8_t *[]", [b + HEADROOM for b in bufs])
    lens = ffi.new("uint32_t[]", [len(f) for f in frames])
    out = ffi.new("struct axp_pkt[]", n)
    verdicts = ffi.new("uint8_t[]", n)
    lib.axp_rx_batch(e.ptr, e.cnt, ptrs, lens, n, 0, out, verdicts)
    popped = []
    for i, case in enumerate(cases):
        want_verdict, want_frame = rx_expect(case, "attached")
        assert XDP_OF[verdicts[i]] == want_verdict, case.name
        if verdicts[i] == VERDICT_TX:
            assert_frame(bytes(ffi.buffer(ptrs[i] + out[i].off, out[i].len)), want_frame)
            popped.append((case, ptrs[i] + out[i].off, out[i].len, HEADROOM + out[i].off))
    want = {"rx_packets": n}
    for case in cases:
        for name in (case.rx_counter, *case.rx_also):
            want[name] = want.get(name, 0) + 1
    want["cache_inserts"] = want["rx_popped"]
    assert_counters(e, want)
    m = len(popped)
    tx_ptrs = ffi.new("uint8_t *[]", [p[1] for p in popped])
    tx_lens = ffi.new("uint32_t[]", [p[2] for p in popped])
    rooms = ffi.new("uint32_t[]", [p[3] for p in popped])
    lib.axp_tx_batch(e.ptr, e.cnt, tx_ptrs, tx_lens, rooms, 0, m, 0, out, verdicts)
    for i, (case, *_) in enumerate(popped):
        want_verdict, want_frame = tx_expect(case, "attached")
        assert XDP_OF[verdicts[i]] == want_verdict, case.name
        assert_frame(bytes(ffi.buffer(tx_ptrs[i] + out[i].off, out[i].len)), want_frame)
    assert entries(e) == {}
    c = e.counters()
    assert c["tx_packets"] == c["cache_takes"] == m == sum(case.rx == Verdict.POP for case in cases)


# ---- TX without an entry, or with a bad one, or bad input ------------------------------------


@pytest.mark.parametrize("on_miss", ["pass", "drop"])
def test_miss(make: Callable[..., Engine], on_miss: str) -> None:
    e = make(on_miss=on_miss)
    case = POPPED[2]
    assert case.popped is not None
    verdict, data = tx_of(e, case.popped, sf=1)
    if on_miss == "pass":  # unlabelled, to the next hop of the SF it came back from
        assert verdict == bpf.XDP_REDIRECT
        assert_frame(data, with_macs(case.popped, SFS[1].next_hop_mac, SFS[1].net_out_mac))
    else:
        assert verdict == bpf.XDP_DROP
    assert_counters(e, {"tx_packets": 1, f"tx_miss_{on_miss}": 1})


def test_miss_from_an_unknown_sf_passes(make: Callable[..., Engine]) -> None:
    e = make()
    case = POPPED[2]
    assert case.popped is not None
    verdict, data = tx_of(e, case.popped, sf=7)
    assert verdict == bpf.XDP_PASS
    assert_frame(data, case.popped)
    assert_counters(e, {"tx_packets": 1, "tx_miss_pass": 1})


def test_on_miss_last_pushes_the_stack_last_sent_to_the_sf(make: Callable[..., Engine]) -> None:
    """As in the BPF tests: a NATed packet gets the stack RX last sent to the SF it came back from
    (tx_miss_last), nothing before the first one (then as on_miss = pass: on unlabelled)."""
    e = make(on_miss="last")
    out = (SFS[0].next_hop_mac, SFS[0].net_out_mac)
    f1, bare1, s1 = frame_for(1, 0)
    assert_frame(tx_of(e, nat(bare1))[1], with_macs(nat(bare1), *out))
    e.rx(f1)
    verdict, data = tx_of(e, nat(bare1))
    assert verdict == bpf.XDP_REDIRECT
    assert_frame(data, with_macs(labelled(nat(bare1), tx_stack(s1)), *out))
    f2, bare2, s2 = frame_for(2, 2)
    e.rx(f2)
    e.rx(BY_NAME["tcp4_sf1"].frame)  # SF 1's stack: SF 0's last stays s2
    assert_frame(tx_of(e, nat(bare2))[1], with_macs(labelled(nat(bare2), tx_stack(s2)), *out))
    assert_frame(tx_of(e, bare2)[1], with_macs(labelled(bare2, tx_stack(s2)), *out))  # its own entry
    ip = ipv4_tcp("10.9.0.1", "10.9.0.2", 7, 1000, 80, 3, 0)
    e.rx(mpls_frame(stack_of(1), ip))  # the SF's label alone: a miss leaves as plain IP
    assert_frame(tx_of(e, nat(ether(ip)))[1], with_macs(nat(ether(ip)), *out))
    assert_counters(e, {"rx_packets": 4, "rx_popped": 4, "cache_inserts": 4, "tx_packets": 5, "tx_miss_pass": 1,
                        "tx_miss_last": 3, "tx_pushed": 1, "cache_takes": 1})


def test_a_dropped_sf_leaves_its_slot_no_last_stack() -> None:
    """on_miss = last across a reload that removes an SF and gives its slot to another: a miss
    of the new SF before any stack went to it leaves unlabelled, not with the old one's stack."""
    e = make_engine(on_miss="last")
    try:
        out = (SFS[0].next_hop_mac, SFS[0].net_out_mac)
        f1, bare1, s1 = frame_for(1, 0)
        e.rx(f1)
        assert_frame(tx_of(e, nat(bare1))[1], with_macs(labelled(nat(bare1), tx_stack(s1)), *out))
        e.drop_sf(0)
        e.set_sf(0, SFS[0].struct())
        assert_frame(tx_of(e, nat(bare1))[1], with_macs(nat(bare1), *out))
        assert e.counters()["tx_miss_last"] == 1 and e.counters()["tx_miss_pass"] == 1
    finally:
        e.close()


def test_the_last_stack_is_never_torn() -> None:
    """Two workers: one sends stacks of depth 3 and 9 to the SF by turns, the other takes NATed
    misses meanwhile; every pushed stack is one of the two, whole (depth and labels agree)."""
    e = make_engine(on_miss="last", threads=2)
    stacks = [stack_of(3), stack_of(9)]
    frames = [mpls_frame(s, ipv4_tcp("10.9.0.1", "10.9.0.2", 7, 1000, 80, 5, 0)) for s in stacks]
    bare = nat(ether(ipv4_tcp("10.9.0.1", "10.9.0.2", 7, 1000, 80, 5, 0)))
    want = {with_macs(labelled(bare, tx_stack(s)), SFS[0].next_hop_mac, SFS[0].net_out_mac) for s in stacks}
    e.rx(frames[0])
    stop = threading.Event()
    cnt = ffi.new("uint64_t[]", NSLOTS)

    def writer() -> None:
        i = 0
        while not stop.is_set():
            buf = ffi.new("uint8_t[]", frames[i % 2])
            lib.axp_rx_frame(e.ptr, cnt, buf, len(frames[i % 2]), 0, ffi.new("struct axp_pkt *"))
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        got = {tx_of(e, bare)[1] for _ in range(3000)}
    finally:
        stop.set()
        t.join()
        e.close()
    assert got <= want and got


@pytest.mark.parametrize("depth", [0, MAX_LABELS + 1])
def test_tx_refuses_an_impossible_entry(make: Callable[..., Engine], depth: int) -> None:
    e = make()
    case = POPPED[1]
    assert case.popped is not None
    _, key = derive_key(case.popped[14:])
    ent = ffi.new("struct axp_entry *")
    ent.labels[0] = 0xFFFFFFFF
    ent.depth = depth
    ent.rx_ns = time.monotonic_ns()
    k = ffi.new("struct axp_key *")
    ffi.memmove(k, key, len(key))
    assert lib.axp_cache_insert(e.cache, k, ent, ffi.new("struct axp_cache_outcome *")) == lib.AXP_CACHE_OPENED
    assert tx_of(e, case.popped)[0] == bpf.XDP_DROP
    got = {k: v for k, v in e.counters().items() if v and k in BASE and k != "tx_dwell_ns"}
    assert got == {"tx_packets": 1, "tx_malformed": 1, "cache_takes": 1}
    assert entries(e) == {}


@pytest.mark.parametrize(("name", "frame", "what"), [*BAD_TX, *SHORT_IP_TX, ("runt", TCP4_BARE[:10], "malformed")],
                         ids=[b[0] for b in [*BAD_TX, *SHORT_IP_TX]] + ["runt"])
def test_bad_tx_input(make: Callable[..., Engine], name: str, frame: bytes, what: str) -> None:
    e = make()
    verdict, data = tx_of(e, frame)
    assert verdict == (bpf.XDP_PASS if what == "not_ip" else bpf.XDP_DROP)
    assert_frame(data, frame)  # passed or dropped, never changed
    assert_counters(e, {"tx_packets": 1, f"tx_{what}": 1})


def test_push_needs_headroom(make: Callable[..., Engine]) -> None:
    """A frame with less room in front than the stack needs is dropped and counted, never overrun."""
    e = make()
    case = next(c for c in POPPED if c.name == "tcp4_8")
    r = e.rx(case.frame)
    buf = ffi.new("uint8_t[]", 8 + len(r.data))
    ffi.memmove(buf + 8, r.data, len(r.data))
    out = ffi.new("struct axp_pkt *")
    assert lib.axp_tx_frame(e.ptr, e.cnt, buf + 8, len(r.data), 8, 0, 0, out) == VERDICT_DROP
    assert e.counters()["tx_push_failed"] == 1


# ---- one key in flight more than once, ageing, eviction (explicit clocks) ---------------------
# (the rules are in bpf/include/cache.shared.h; tests/test_cache.py holds them to the model)

MS = 1_000_000
OUT_MACS = (SFS[0].next_hop_mac, SFS[0].net_out_mac)


def _tx_want(bare: bytes, stack: list[Lse]) -> bytes:
    return with_macs(labelled(bare, tx_stack(stack)), *OUT_MACS)


def test_same_key_and_stack_share_a_run(make: Callable[..., Engine]) -> None:
    e = make()
    frame, bare, stack = frame_for(1, 0)
    assert e.rx(frame, now_ns=10 * MS).verdict == e.rx(frame, now_ns=11 * MS).verdict == VERDICT_TX
    [run] = [r for s in e.sets() for r in s.ways if r]
    assert (run.count, run.rx_ns, run.entry.rx_ns) == (2, 11 * MS, 10 * MS)
    for _ in range(2):
        assert_frame(tx_of(e, bare)[1], _tx_want(bare, stack))
    assert_counters(e, {"rx_packets": 2, "rx_popped": 2, "cache_inserts": 2, "tx_packets": 2, "tx_pushed": 2,
                        "cache_takes": 2})


def test_same_key_other_stacks_leave_in_arrival_order(make: Callable[..., Engine]) -> None:
    e = make()
    order = [0, 1, 1, 2]
    for i, n in enumerate(order):
        assert e.rx(frame_for(1, n)[0], now_ns=10 * MS + i).verdict == VERDICT_TX
    _, bare, _ = frame_for(1, 0)
    for n in order:
        assert_frame(tx_of(e, bare)[1], _tx_want(bare, frame_for(1, n)[2]))
    assert_frame(tx_of(e, bare)[1], with_macs(bare, *OUT_MACS))  # nothing left: a miss, unlabelled
    assert_counters(e, {"rx_packets": 4, "rx_popped": 4, "cache_inserts": 4, "tx_packets": 5, "tx_pushed": 4,
                        "cache_takes": 4, "tx_miss_pass": 1})


def test_same_key_other_tags_keep_their_tags(make: Callable[..., Engine]) -> None:
    """As in the BPF tests: one key, one stack, other PCPs: two runs, each packet its own tag."""
    e = make()
    frames, wants, bare = tagged_frames([1, 5, 5])
    for f in frames:
        assert e.rx(f, now_ns=10 * MS).verdict == VERDICT_TX
    assert sorted(r.count for s in e.sets() for r in s.ways if r) == [1, 2]
    for want in wants:
        assert_frame(tx_of(e, bare, sf=2)[1], with_macs(want, SFS[2].next_hop_mac, SFS[2].net_out_mac))
    assert entries(e) == {}


def test_max_per_key_bounds_one_key(make: Callable[..., Engine]) -> None:
    e = make(max_per_key=3)
    verdicts = [e.rx(frame_for(1, n % 2)[0], now_ns=10 * MS).verdict for n in range(5)]
    assert verdicts == [VERDICT_TX] * 3 + [VERDICT_DROP] * 2
    assert_counters(e, {"rx_packets": 5, "rx_popped": 3, "cache_inserts": 3, "rx_key_full": 2})


def test_dwell_is_measured_for_the_sampled_keys_only(make: Callable[..., Engine]) -> None:
    """dwell_sample = 4: as in the kernel backend, the keys whose hash is_timed have their dwell
    time measured (and only they), whatever the clock."""
    e = make(dwell_sample=4)
    timed = 0
    for n in range(64):
        frame, _, _ = frame_for(n, 0)
        assert e.rx(frame, now_ns=10 * MS).verdict == VERDICT_TX
        key = parse_mpls_frame(frame).key
        assert key is not None
        timed += cache.is_timed(cache.key_hash(key), 3)
    for n in range(64):
        _, bare, stack = frame_for(n, 0)
        assert_frame(e.tx(bare, now_ns=10 * MS + 5_000).data, _tx_want(bare, stack))
    snap = e.snapshot()
    assert 4 <= timed <= 32
    assert sum(snap.dwell_hist()) == snap.dwell_hist()[counters.dwell_bucket(5_000)] == timed
    assert snap.total()["tx_dwell_ns"] == 5_000 * timed


def test_a_lost_packets_retry_gets_through_after_max_dwell(make: Callable[..., Engine]) -> None:
    e = make(max_per_key=1, max_dwell_ms=1000)
    frame, bare, stack = frame_for(1, 0)
    assert e.rx(frame, now_ns=10 * MS).verdict == VERDICT_TX  # ... and the SF drops it
    assert e.rx(frame, now_ns=1010 * MS).verdict == VERDICT_DROP  # exactly max_dwell old: still in flight
    assert e.rx(frame, now_ns=1010 * MS + 1).verdict == VERDICT_TX  # older: presumed lost, replaced
    assert_frame(e.tx(bare, now_ns=1011 * MS).data, _tx_want(bare, stack))
    assert_counters(e, {"rx_packets": 3, "rx_popped": 2, "cache_inserts": 2, "rx_key_full": 1, "expired": 1,
                        "tx_packets": 1, "tx_pushed": 1, "cache_takes": 1})
    assert e.counters()["tx_dwell_ns"] == MS - 1


def test_a_run_stamped_after_now_is_young(make: Callable[..., Engine]) -> None:
    """Another worker may stamp a run after this batch read the clock: it is not stale."""
    e = make(max_dwell_ms=1)
    e.rx(frame_for(1, 0)[0], now_ns=500 * MS)
    e.rx(frame_for(2, 0)[0], now_ns=400 * MS)
    assert e.counters()["expired"] == 0 and e.in_flight() == 2


def test_stale_runs_go_before_younger_ones_are_evicted() -> None:
    e = make_engine(cache_entries=cache.WAYS, max_dwell_ms=10)
    try:
        for n in range(cache.WAYS):
            e.rx(frame_for(n, 0)[0], now_ns=MS)
            e.rx(frame_for(n, 0)[0], now_ns=MS)
        for n in range(100, 100 + cache.WAYS):
            assert e.rx(frame_for(n, 1)[0], now_ns=20 * MS).verdict == VERDICT_TX
        c = e.counters()
        assert (c["expired"], c["evictions"]) == (2 * cache.WAYS, 0)
        for n in range(100, 100 + cache.WAYS):
            _, bare, stack = frame_for(n, 1)
            assert_frame(tx_of(e, bare)[1], _tx_want(bare, stack))
        assert in_flight_of(e.counters()) == e.in_flight() == 0
    finally:
        e.close()


# ---- what the engine refuses to be -----------------------------------------------------------


@pytest.mark.parametrize("cfg", [ProxyConfig(topology="inline"), ProxyConfig(key="meta", topology="inline"),
                                 ProxyConfig(backend="static")], ids=["inline", "meta", "static"])
def test_engine_serves_attached_hash_caching_only(cfg: ProxyConfig) -> None:
    with pytest.raises(bpf.BpfError) as err:
        Engine(config_struct(cfg))
    assert err.value.not_supported


@pytest.mark.parametrize("field", ["cache_sets", "max_per_key"])
def test_engine_refuses_a_cache_out_of_range(field: str) -> None:
    cfg = config_struct(ProxyConfig(backend="afxdp"))
    setattr(cfg, field, 0 if field == "cache_sets" else 256)
    with pytest.raises(bpf.BpfError) as err:
        Engine(cfg)
    assert err.value.errno == errno.EINVAL


# ---- the cache ---------------------------------------------------------------------------------


def _frames(n: int, first: int = 0, labels: int = 2) -> list[bytes]:
    """n frames of one flow, each with its own key (TCP seq) and a stack for SF 0."""
    stack = stack_of(labels)
    return [mpls_frame(stack, ipv4_tcp("10.7.0.1", "10.7.0.2", 1, 1000, 80, first + i, 0, b"x" * 8))
            for i in range(n)]


def test_a_full_cache_evicts_exactly_one_run_per_insert() -> None:
    """Packets the SF dropped cannot fill the cache: an insert into a full set evicts exactly
    one run, the oldest, counted; an evicted packet misses at TX (unlabelled, never with
    another packet's stack); the newest packets still find theirs."""
    e = make_engine(cache_entries=16, max_dwell_ms=3_600_000)  # evictions, not ageing
    try:
        cap = lib.axp_cache_capacity(e.cache)
        assert cap == 16
        frames = _frames(1000)
        for i, f in enumerate(frames):
            before = e.counters()["evictions"]
            full = e.in_flight() == cap
            assert e.rx(f, now_ns=1_000_000 + i).verdict == VERDICT_TX
            evicted = e.counters()["evictions"] - before
            assert evicted == int(full) or (not full and evicted <= 1)
        c = e.counters()
        assert e.in_flight() <= cap
        assert c["evictions"] == 1000 - e.in_flight() == c["cache_inserts"] - e.in_flight()
        ages = sorted(1_000_000 + 999 - r.rx_ns for s in e.sets() for r in s.ways if r)
        assert ages[-1] < 64, f"an old run survived newer ones: ages {ages}"
        first, newest = (f[:12] + b"\x08\x00" + f[14 + 4 * 2:] for f in (frames[0], frames[-1]))
        assert_frame(tx_of(e, first)[1], with_macs(first, *OUT_MACS))  # evicted: a miss, unlabelled
        assert_frame(tx_of(e, newest)[1], _tx_want(newest, stack_of(2)))
        c = e.counters()
        assert (c["tx_miss_pass"], c["tx_pushed"]) == (1, 1)
    finally:
        e.close()


def test_capacity_rounds_up_to_whole_sets() -> None:
    e = make_engine(cache_entries=1000)
    try:
        assert lib.axp_cache_capacity(e.cache) == 1000  # 125 sets of 8
    finally:
        e.close()
    e = make_engine(cache_entries=17)
    try:
        assert lib.axp_cache_capacity(e.cache) == 24
    finally:
        e.close()


def test_workers_share_the_cache_safely() -> None:
    """Two threads run the C batch loop at once (GIL released) on one engine: every packet
    finds its own entry, nothing is lost or left behind."""
    e = make_engine(cache_entries=4096, threads=2)
    n, rounds = 64, 300
    results: list[int] = []
    cnts = [ffi.new("uint64_t[]", NSLOTS) for _ in range(2)]

    def work(t: int) -> None:
        blob = b"".join(_frames(n, first=t * 100_000, labels=8))
        ns = ffi.new("uint64_t[3]")
        results.append(lib.axp_bench_batch(e.ptr, cnts[t], blob, len(blob) // n, n, n, rounds, ns))

    try:
        threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [0, 0]
        total = snapshot_of(cnts).total()
        assert total["rx_popped"] == total["tx_pushed"] == 2 * n * rounds
        assert total["cache_inserts"] == total["cache_takes"] == 2 * n * rounds
        assert e.in_flight() == 0
    finally:
        e.close()


# ---- one definition, checked -------------------------------------------------------------------


def test_counter_names() -> None:
    names = counters.names(afxdp=True)
    slots = counters.slot_names(afxdp=True)
    assert len(names) == len(set(names)) == lib.AXP_XCNT_MAX - lib.AXP_DWELL_BUCKETS
    assert names[: lib.AXP_CNT_TX_DWELL_HIST] == counters.names()
    assert slots[lib.AXP_XCNT_XDP_NO_SOCKET] == "xdp_no_socket"
    assert {"evictions", "expired", "tx_ring_full", "tx_errors", "cache_inserts", "cache_takes"} <= set(names)
    # the cache counters are the kernel backend's, counted the same way
    assert {"cache_inserts", "cache_takes", "evictions", "expired", "rx_key_full"} <= set(counters.names())


def test_config_defaults_are_the_c_defaults() -> None:
    assert config.DEFAULT_RING_SIZE == lib.AXP_XSK_DEFAULT_RING_SIZE
    assert config.DEFAULT_FRAME_SIZE == lib.AXP_XSK_DEFAULT_FRAME_SIZE
    assert config.DEFAULT_BATCH_SIZE == lib.AXP_XSK_DEFAULT_BATCH_SIZE
    assert config.MAX_QUEUES == lib.AXP_XSK_MAX_QUEUES


# ---- the XDP program in front of the sockets (root: BPF_PROG_TEST_RUN) ---------------------------


XskProgs = Callable[..., tuple[int, bpf.Map]]


@pytest.fixture(scope="module")
def xsk_progs() -> Iterator[XskProgs]:
    """xsk_progs(role, on_ttl_expired="drop") -> (prog fd, counters map): build/xsk.bpf.o loaded as
    the AF_XDP backend loads it for net_in (serving the test SFs) or for from_sf (the proxy host's
    addresses in its map), loaded on first use."""
    objs: dict[tuple[str, str], bpf.BpfObject] = {}

    def get(role: str, on_ttl_expired: str = "drop") -> tuple[int, bpf.Map]:
        if (role, on_ttl_expired) not in objs:
            obj = bpf.BpfObject(bpf.object_path("xsk"))
            obj.set_max_entries("axp_xsks", 2)
            obj.set_rodata(config_struct(ProxyConfig(backend="afxdp", on_ttl_expired=on_ttl_expired)))
            obj.load()
            objs[role, on_ttl_expired] = obj
            labels = obj.map("axp_xsk_labels", "uint32_t", "uint32_t")
            for idx, sf in SFS.items():
                for key in label_keys(sf.vlan_in, sf.label):
                    labels.update(key, idx)
            host_addresses(obj.map("axp_host_addrs", "struct axp_host_addr", "uint8_t"))
        obj = objs[role, on_ttl_expired]
        return obj.prog_fd(f"axp_xsk_{role}"), obj.map("axp_counters", "uint32_t", "uint64_t")

    yield get
    for obj in objs.values():
        obj.close()


def _xdp_counts(m: bpf.Map) -> dict[str, int]:
    """The XDP program's counters by name, summed over the rows the test SFs use; then zeroed."""
    names = counters.slot_names(afxdp=True)
    out: dict[str, int] = {}
    zeros = ffi.new("uint64_t[]", bpf.NCPUS)
    for row in counters.rows_of(len(SFS)):
        for slot, total in enumerate(xdp_row(m, row)):
            if total:
                out[names[slot]] = out.get(names[slot], 0) + total
                m.update(row * XDP_SLOTS + slot, zeros)
    return out


@pytest.mark.root
@pytest.mark.parametrize("case", [c for c in CASES if len(c.frame) >= 14], ids=lambda c: c.name)
def test_xdp_program_passes_what_the_proxy_does_not_want(xsk_progs: XskProgs, case: Case) -> None:
    """On net_in, what the table passes is passed and counted in BPF, as the kernel backend counts
    it, in the same row; everything else goes to the queue's socket (here none is bound: dropped
    and counted)."""
    fd, counters_map = xsk_progs("net_in", **case.settings)
    _xdp_counts(counters_map)
    r = bpf.test_run(fd, case.frame)
    if case.rx == Verdict.PASS:
        assert r.retval == bpf.XDP_PASS
        assert _xdp_counts(counters_map) == {"rx_packets": 1, case.rx_counter: 1}
    else:
        assert r.retval == bpf.XDP_DROP
        assert _xdp_counts(counters_map) == {"xdp_no_socket": 1}
    assert_frame(r.data, case.frame)


@pytest.mark.root
def test_xdp_program_counts_a_passed_ttl_in_the_row_of_its_sf(xsk_progs: XskProgs) -> None:
    """The frames the XDP program passes for an SF (TTL <= 1, on_ttl_expired = pass) count in that
    SF's row, as axp_xdp_rx counts them; the others in the row of no SF."""
    fd, counters_map = xsk_progs("net_in", on_ttl_expired="pass")
    _xdp_counts(counters_map)
    for name in ("ttl0_top_pass", "ttl1_top_pass", "arp"):
        assert bpf.test_run(fd, BY_NAME[name].frame).retval == bpf.XDP_PASS
    names = counters.slot_names(afxdp=True)
    rows = {row: {names[i]: v for i, v in enumerate(xdp_row(counters_map, row)) if v}
            for row in counters.rows_of(len(SFS))}
    assert {r: c for r, c in rows.items() if c} == {
        0: {"rx_packets": 1, "rx_ttl_expired_pass": 1},
        1: {"rx_packets": 1, "rx_ttl_expired_pass": 1},
        counters.NONE_ROW: {"rx_packets": 1, "rx_not_mpls": 1},
    }
    _xdp_counts(counters_map)


@pytest.mark.root
@pytest.mark.parametrize(("name", "frame", "what"), [*BAD_TX, *SHORT_IP_TX, ("ok", TCP4_BARE, "ok")],
                         ids=[b[0] for b in [*BAD_TX, *SHORT_IP_TX]] + ["ok"])
def test_xdp_program_on_from_sf(xsk_progs: XskProgs, name: str, frame: bytes, what: str) -> None:
    """On from_sf, non-IP passes (tx_not_ip, as axp_xdp_tx counts it); IP goes to the socket."""
    fd, counters_map = xsk_progs("from_sf")
    _xdp_counts(counters_map)
    r = bpf.test_run(fd, frame)
    if what == "not_ip":
        assert r.retval == bpf.XDP_PASS
        assert _xdp_counts(counters_map) == {"tx_packets": 1, "tx_not_ip": 1}
    else:
        assert r.retval == bpf.XDP_DROP
        assert _xdp_counts(counters_map) == {"xdp_no_socket": 1}


@pytest.mark.root
@pytest.mark.parametrize(("name", "frame"), HOST_TX, ids=[h[0] for h in HOST_TX])
def test_xdp_program_passes_what_the_sf_sends_the_host(xsk_progs: XskProgs, name: str, frame: bytes) -> None:
    """On from_sf, what the SF sends the proxy host never reaches a socket (user space could not hand it
    back to the kernel): neighbour discovery, multicast, link-local, the host's addresses pass."""
    fd, counters_map = xsk_progs("from_sf")
    _xdp_counts(counters_map)
    r = bpf.test_run(fd, frame)
    assert r.retval == bpf.XDP_PASS
    assert_frame(r.data, frame)
    assert _xdp_counts(counters_map) == {"tx_packets": 1, "tx_host": 1}


@pytest.mark.root
def test_xdp_counter_slots_match_the_extension(xsk_progs: XskProgs) -> None:
    """xsk.bpf.c counts frames without a socket in the slot after enum axp_counter's, in rows
    like the extension's."""
    _, counters_map = xsk_progs("net_in")
    assert XDP_SLOTS == lib.AXP_XCNT_XDP_NO_SOCKET + 1
    assert counters_map.max_entries == counters.ROWS * XDP_SLOTS
