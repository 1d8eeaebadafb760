"""`afxdp-proxy trace` without a testbed: the sampling rule, the filters and the events of the
kernel backend's programs under BPF_PROG_TEST_RUN (build/proxy.bpf.o, as tests/test_bpf_proxy.py
loads it), read back through the same ring buffer reader the command uses; and the grouping and
rendering of events into packets.

A sampled packet's RX run reports rx, insert and rx_verdict, its TX run take and tx_verdict,
all under its key's hash; an unsampled one reports nothing; and tracing on changes no verdict,
byte or counter of any row of the packet table.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from afxdp_proxy._native import ffi, lib
from cases import CASES, POPPED, Case, Verdict
from test_bpf_proxy import SFS, Proxy, make, pool  # noqa: F401  (the loaded-object fixtures)

from afxdp_proxy import bpf, cache, cli, state, trace
from afxdp_proxy.backends.afxdp import Engine
from afxdp_proxy.backends.kernel import config_struct
from afxdp_proxy.config import ProxyConfig
from afxdp_proxy.key import ETH_HLEN, parse_mpls_frame
from afxdp_proxy.lab.frames import ipv4_tcp, mpls_frame
from afxdp_proxy.mpls import make_stack

RX, INSERT, RX_DONE, TAKE, TX_DONE = trace.RX, trace.INSERT, trace.RX_DONE, trace.TAKE, trace.TX_DONE


class Traced:
    """A loaded proxy with a trace on it: its ctl and a reader of its ring buffer."""

    def __init__(self, px: Proxy) -> None:
        self.px = px
        self.control = px.obj.trace
        self.reader = trace.Reader(ringbuf_fd=bpf.check(lib.axp_obj_map_fd(px.obj.obj._obj, b"axp_trace_events"),
                                                        "ring buffer"))
        self.reader.read()  # what an earlier test left

    def set(self, sampling: trace.Sampling | None) -> None:
        if sampling is None:
            self.control.clear()
        else:
            self.control.write(sampling.ctl(owner=0))

    def events(self) -> list[trace.Event]:
        return self.reader.read()

    def close(self) -> None:
        self.control.clear()
        self.reader.close()


@pytest.fixture
def traced(make: Callable[..., Proxy]) -> Iterator[Callable[..., Traced]]:  # noqa: F811
    opened: list[Traced] = []

    def get(**cfg: object) -> Traced:
        t = Traced(make(**cfg))
        opened.append(t)
        return t

    yield get
    for t in opened:
        t.close()


def key_of(case: Case) -> bytes:
    key = parse_mpls_frame(case.frame).key
    assert key is not None
    return key


# ---- the kernel backend's events ---------------------------------------------------------------


@pytest.mark.root
@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_a_sampled_packet_reports_every_stage_in_order(traced: Callable[..., Traced], topology: str) -> None:
    t = traced(topology=topology)
    case = POPPED[2]
    key = key_of(case)
    t.set(trace.Sampling())
    before = time.monotonic_ns()  # bpf_ktime_get_ns is CLOCK_MONOTONIC
    r = t.px.rx(case.frame)
    got = t.events()
    assert [e.stage for e in got] == [RX, INSERT, RX_DONE]
    rx, ins, rx_done = got
    h = cache.key_hash(key)
    assert {e.hash for e in got} == {h}
    assert rx.key == key and rx.labels == case.stack and rx.sf == case.sf
    assert rx.value == len(r.data)  # the bytes of the frame that leaves for the SF
    assert ins.result == cache.OPENED and ins.value == 0
    assert rx_done.reason == "rx_popped" and rx_done.sf == case.sf
    assert before < rx.ts_ns <= ins.ts_ns <= rx_done.ts_ns

    t.px.tx(r.data)
    back = t.events()
    assert [e.stage for e in back] == [TAKE, TX_DONE]
    take, tx_done = back
    assert {e.hash for e in back} == {h}
    assert take.result == cache.HIT and take.key == key and take.labels == case.stack
    assert 0 < take.value < take.ts_ns - before  # the dwell, from the entry's RX time
    assert tx_done.reason == case.tx_counter
    assert len(tx_done.labels) == len(case.stack) and tx_done.labels[2:] == case.stack[2:]
    assert rx_done.ts_ns <= take.ts_ns <= tx_done.ts_ns


@pytest.mark.root
def test_an_unsampled_packet_reports_nothing(traced: Callable[..., Traced]) -> None:
    t = traced(topology="attached")
    case = POPPED[2]
    h = cache.key_hash(key_of(case))
    # 1 in 2^k with k the lowest sampled hash bit that is set: this packet is not sampled
    k = next(b for b in range(31) if h >> (16 + b) & 1) + 1
    t.set(trace.Sampling(1 << k))
    assert not trace.sampled(h, 1 << k) and trace.sampled(h, 1 << (k - 1))
    r = t.px.rx(case.frame)
    t.px.tx(r.data)
    assert t.events() == []
    t.set(None)  # and off means off
    t.px.tx(t.px.rx(case.frame).data)
    assert t.events() == []
    t.set(trace.Sampling(1 << (k - 1)))
    t.px.tx(t.px.rx(case.frame).data)
    assert [e.stage for e in t.events()] == [RX, INSERT, RX_DONE, TAKE, TX_DONE]


@pytest.mark.root
def test_a_label_filter_reads_the_stack_at_rx_and_at_tx(traced: Callable[..., Traced]) -> None:
    t = traced(topology="attached")
    case = POPPED[2]
    deep = case.stack[-1] >> 12
    t.set(trace.Sampling(label=deep))
    r = t.px.rx(case.frame)
    t.px.tx(r.data)
    assert [e.stage for e in t.events()] == [RX, INSERT, RX_DONE, TAKE, TX_DONE]
    t.set(trace.Sampling(label=77777))
    t.px.tx(t.px.rx(case.frame).data)
    assert t.events() == []


@pytest.mark.root
def test_a_label_filter_at_tx_uses_the_stack_the_cache_hands_back(traced: Callable[..., Traced]) -> None:
    """Sampling turned on while the packet was in the SF: TX alone reports it, by its cached stack."""
    t = traced(topology="attached")
    case = POPPED[2]
    r = t.px.rx(case.frame)
    t.set(trace.Sampling(label=case.stack[1] >> 12))
    t.px.tx(r.data)
    got = t.events()
    assert [e.stage for e in got] == [TAKE, TX_DONE] and got[0].labels == case.stack


@pytest.mark.root
def test_a_flow_filter_at_both_ends(traced: Callable[..., Traced]) -> None:
    t = traced(topology="attached")
    stack = make_stack([100, 2000])
    frame = mpls_frame(stack, ipv4_tcp("10.9.0.1", "10.9.0.2", 7, 1000, 80, 1, 0))
    for spec, want in (("10.9.0.2", True), ("10.9.0.3", False), ("tcp,10.9.0.1,1000,10.9.0.2,80", True),
                       ("tcp,*,*,*,81", False), ("udp,*,*,*,*", False), ("6,10.9.0.1,*,*,80", True),
                       ("fd00::1", False)):
        t.px.reset()
        t.set(trace.Sampling(flow=trace.Flow.parse(spec)))
        t.px.tx(t.px.rx(frame).data)
        assert len(t.events()) == (5 if want else 0), spec


@pytest.mark.root
@pytest.mark.parametrize("on_miss", ["pass", "drop"])
def test_a_miss_reports_take_and_the_miss(traced: Callable[..., Traced], on_miss: str) -> None:
    t = traced(topology="attached", on_miss=on_miss)
    case = POPPED[2]
    assert case.popped is not None
    t.set(trace.Sampling())
    t.px.xdp_tx(case.popped)
    got = t.events()
    assert [(e.stage, e.result) for e in got] == [(TAKE, cache.MISS), (TX_DONE, lib.AXP_CNT_TX_MISS_PASS if
                                                                          on_miss == "pass" else
                                                                          lib.AXP_CNT_TX_MISS_DROP)]
    assert got[1].sf == 0  # counted in the row of the TX interface's SF


@pytest.mark.root
def test_a_refused_insert_is_the_rx_verdict(traced: Callable[..., Traced]) -> None:
    t = traced(topology="attached", max_per_key=1)
    case = POPPED[2]
    t.set(trace.Sampling())
    t.px.rx(case.frame)
    t.px.rx(case.frame)
    got = t.events()
    assert [(e.stage, e.result) for e in got][3:] == [(RX, 0), (INSERT, cache.KEY_FULL),
                                                      (RX_DONE, lib.AXP_CNT_RX_KEY_FULL)]


@pytest.mark.root
def test_meta_keys_are_followed_by_their_hash(traced: Callable[..., Traced]) -> None:
    """Key meta (inline): RX's artificial key and TX's, read from the mark, hash alike."""
    t = traced(topology="inline", key_mode="meta")
    case = POPPED[2]
    t.set(trace.Sampling())
    r = t.px.rx(case.frame)
    mark = int.from_bytes(r.data[:4], "little")
    t.px.tc_tx(r.data[4:], mark=mark)
    got = t.events()
    assert [e.stage for e in got] == [RX, INSERT, RX_DONE, TAKE, TX_DONE]
    assert len({e.hash for e in got}) == 1 and got[3].result == cache.HIT


@pytest.mark.root
def test_the_static_proxy_is_never_sampled(traced: Callable[..., Traced]) -> None:
    t = traced(topology="attached", static=True)
    case = POPPED[2]
    t.set(trace.Sampling())
    t.px.tx(t.px.rx(case.frame).data)
    assert t.events() == []


def _run(px: Proxy, case: Case, topology: str) -> tuple[object, ...]:
    if len(case.frame) < ETH_HLEN:
        return ("short",)
    r = px.rx(case.frame)
    out: tuple[object, ...] = (r.retval, r.data)
    if case.rx == Verdict.POP:
        t = px.tx(r.data)
        out += (t.retval, t.data)
    counts = {k: v for k, v in px.counters().items() if k != "tx_dwell_ns"}
    return (*out, counts, [(k, e.labels, e.depth, e.sf) for k, e in px.entries().items()])


@pytest.mark.root
@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_tracing_changes_no_verdict_byte_or_counter(traced: Callable[..., Traced], topology: str) -> None:
    """Every row of the packet table, each packet sampled, against the same with tracing off."""
    t = traced(topology=topology)
    for case in CASES:
        if case.settings:
            continue
        t.set(None)
        t.px.reset()
        off = _run(t.px, case, topology)
        t.set(trace.Sampling())
        t.px.reset()
        on = _run(t.px, case, topology)
        assert on == off, case.name
        got = t.events()
        if case.rx == Verdict.POP:
            assert [e.stage for e in got] == [RX, INSERT, RX_DONE, TAKE, TX_DONE], case.name
        else:
            assert all(e.stage in (RX, INSERT, RX_DONE) for e in got), case.name


@pytest.mark.root
def test_a_full_ring_counts_what_it_lost(traced: Callable[..., Traced]) -> None:
    t = traced(topology="attached", cache_entries=65536)
    t.set(trace.Sampling())
    per = ffi.sizeof("struct axp_trace_event") + 8
    n = lib.AXP_TRACE_RINGBUF_BYTES // per // 3 + 10  # three events a packet at RX
    stack = make_stack([100, 2000])
    for i in range(n):
        t.px.rx(mpls_frame(stack, ipv4_tcp("10.9.0.1", "10.9.0.2", 7, 1000, 80, i, 0)))
    lost = t.control.read().lost
    assert lost > 0
    assert len(t.events()) + lost == 3 * n


# ---- grouping and rendering, no kernel needed -------------------------------------------------


def _ev(stage: int, h: int, ts: int, result: int = 0, value: int = 0, labels: tuple[int, ...] = (),
        key: bytes = b"", sf: int = 0) -> trace.Event:
    return trace.Event(stage, ts, h, 0, sf, result, value, key, labels)


def test_packets_group_by_hash_and_the_caches_order() -> None:
    stack = tuple(e.encode() for e in make_stack([1000, 2001]))
    popped = lib.AXP_CNT_RX_POPPED
    evs = [
        _ev(RX, 7, 0, labels=stack), _ev(INSERT, 7, 1, cache.OPENED), _ev(RX_DONE, 7, 2, popped),
        _ev(RX, 7, 10, labels=stack), _ev(INSERT, 7, 11, cache.JOINED), _ev(RX_DONE, 7, 12, popped),
        _ev(RX, 9, 13, labels=stack), _ev(INSERT, 9, 14, cache.KEY_FULL),
        _ev(RX_DONE, 9, 15, lib.AXP_CNT_RX_KEY_FULL),
        _ev(TAKE, 7, 20, cache.HIT, 20, stack), _ev(TX_DONE, 7, 21, lib.AXP_CNT_TX_PUSHED, labels=stack),
        _ev(TAKE, 5, 22, cache.MISS), _ev(TX_DONE, 5, 23, lib.AXP_CNT_TX_MISS_PASS),
    ]
    ps = trace.Packets(wait=1.0)
    done = ps.feed(evs, now=0.0)
    # the key-full packet ends at RX; the first packet of hash 7 leaves first; a TX-only packet
    assert [(p.hash, [e.ts_ns for e in p.events]) for p in done] == [
        (9, [13, 14, 15]), (7, [0, 1, 2, 20, 21]), (5, [22, 23])]
    assert [p.hash for p in ps.open] == [7] and ps.open[0].in_sf
    assert ps.expire(now=0.5) == [] and len(ps.expire(now=1.0)) == 1
    text = done[1].text(["fw1"])
    assert "rx_popped (forward)" in text and "pushed 2001" in text and "0.0 µs in the SF" in text
    d = done[1].as_dict(["fw1"])
    assert [s["stage"] for s in d["stages"]] == ["rx", "insert", "rx_verdict", "take", "tx_verdict"]
    assert d["stages"][0]["stack"] == [1000, 2001] and d["sf"] == "fw1" and d["complete"]


@pytest.mark.parametrize("n, every", [(1, 1), (2, 2), (3, 2), (1000, 1024), (1500, 1024), (1600, 2048), (700, 512)])
def test_sample_takes_the_nearest_power_of_two(n: int, every: int) -> None:
    assert trace.Sampling.nearest(n).every == every


@pytest.mark.parametrize("spec, error", [("10.0.0", "not an IPv4 or IPv6"), ("tcp,1,2", "PROTO,SRC"),
                                         ("xyz,*,*,*,*", "not a protocol"), ("tcp,*,70000,*,*", "not a port"),
                                         ("tcp,10.0.0.1,*,::1,*", "an IPv4 and an IPv6")])
def test_a_bad_flow_says_why(spec: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        trace.Flow.parse(spec)


def test_the_ctl_holds_the_flow_as_the_key_does() -> None:
    c = trace.Sampling(4, 1000, trace.Flow.parse("udp,10.0.1.1,4000,*,7777")).ctl(owner=42)
    assert (c.on, c.mask, c.label, c.owner, c.proto, c.family) == (1, 3, 1000, 42, 17, 4)
    assert bytes(ffi.buffer(c.saddr)) == bytes([10, 0, 1, 1]) + bytes(12)
    assert (c.sport, c.dport) == (int.from_bytes((4000).to_bytes(2, "big"), "little"),
                                  int.from_bytes((7777).to_bytes(2, "big"), "little"))
    assert c.flow == lib.AXP_TRACE_FLOW_PROTO | lib.AXP_TRACE_FLOW_SADDR | lib.AXP_TRACE_FLOW_SPORT | \
        lib.AXP_TRACE_FLOW_DPORT


# ---- the afxdp backend's area: many writers, one reader ---------------------------------------


def _area(slots: int) -> tuple[object, object]:
    size = lib.axp_trace_area_size(slots)
    buf = ffi.new("uint8_t[]", size)
    area = ffi.cast("struct axp_trace_area *", buf)
    assert lib.axp_trace_area_init(area, size, slots) == 0
    return buf, area


def test_the_area_keeps_every_writers_events_whole_and_in_order() -> None:
    """Four threads write (cffi calls run without the GIL) while one reads: every event arrives
    once and whole, each writer's in the order written, or is counted lost."""
    buf, area = _area(64)
    reader = trace.Reader(area=area, size=len(ffi.buffer(buf)))
    n, writers = 5000, 4
    stack = make_stack([1000, 2000, 3000])
    entry = ffi.new("struct axp_entry *", {"depth": 3})
    for i, e in enumerate(stack):
        entry.labels[i] = int.from_bytes(e.to_bytes(), "little")  # as on the wire

    def write(w: int) -> None:
        for i in range(n):
            lib.axp_trace_report(area, RX, 0, w, w, i, ffi.NULL, entry)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for th in threads:
        th.start()
    got: list[trace.Event] = []
    while any(th.is_alive() for th in threads):
        got += reader.read()
    for th in threads:
        th.join()
    got += reader.read()
    reader.close()
    lost = area.ctl.lost
    assert len(got) + lost == n * writers
    assert len(got) >= 64  # a ring's worth at least, whatever the scheduler did
    for w in range(writers):
        seq = [e.value for e in got if e.hash == w]
        assert seq == sorted(seq) and len(set(seq)) == len(seq)
    assert all(e.labels == tuple(x.encode() for x in stack) and e.sf == e.hash for e in got)


def test_a_full_area_drops_new_events_and_counts_them() -> None:
    _, area = _area(8)
    for i in range(11):
        lib.axp_trace_report(area, TAKE, cache.HIT, 1, 0, i, ffi.NULL, ffi.NULL)
    assert area.ctl.lost == 3
    reader = trace.Reader(area=area, size=lib.axp_trace_area_size(8))
    assert [e.value for e in reader.read()] == list(range(8))
    lib.axp_trace_report(area, TAKE, cache.HIT, 1, 0, 99, ffi.NULL, ffi.NULL)
    assert [e.value for e in reader.read()] == [99]
    reader.close()


# ---- the AF_XDP engine: the same events as BPF ------------------------------------------------


def _same(e: trace.Event) -> tuple[object, ...]:
    """An event without what differs between two runs of one packet: its time, CPU, the dwell."""
    return (e.stage, e.hash, e.sf, e.result, e.value if e.stage != TAKE else None, e.key, e.labels)


@pytest.mark.root
@pytest.mark.parametrize("case", POPPED, ids=lambda c: c.name)
def test_the_engine_reports_what_bpf_reports(traced: Callable[..., Traced], case: Case) -> None:
    """Each popped row of the table, sampled, through axp_xdp_rx/axp_xdp_tx and through the
    engine's axp_rx_frame/axp_tx_frame: the same stages, hashes, SFs, results, keys and stacks."""
    t = traced(topology="attached", **case.settings)
    t.set(trace.Sampling())
    r = t.px.rx(case.frame)
    t.px.xdp_tx(r.data)
    want = t.events()
    eng = make_engine(**case.settings)
    buf, area = _area(64)
    try:
        eng.set_trace(area)
        trace.Control(area=area).write(trace.Sampling().ctl(owner=0))
        reader = trace.Reader(area=area, size=len(ffi.buffer(buf)))
        out = eng.rx(case.frame)
        eng.tx(out.data, sf=out.sf)
        got = reader.read()
        reader.close()
    finally:
        eng.set_trace(ffi.NULL)
        eng.close()
    assert [_same(e) for e in got] == [_same(e) for e in want]
    assert got[3].value > 0  # the dwell, measured by the engine's own clock


@pytest.mark.parametrize("sample, label, n", [(1 << 20, 0, 0), (1, 4242, 0), (1, 0, 5)])
def test_the_engine_samples_as_bpf_does(sample: int, label: int, n: int) -> None:
    """Unsampled by hash or by label: nothing; sampled: every stage."""
    case = POPPED[2]
    eng = make_engine()
    buf, area = _area(64)
    h = cache.key_hash(key_of(case))
    every = sample if not trace.sampled(h, sample) else sample << 1
    try:
        eng.set_trace(area)
        trace.Control(area=area).write(trace.Sampling(every if n == 0 and not label else 1, label).ctl(owner=0))
        reader = trace.Reader(area=area, size=len(ffi.buffer(buf)))
        out = eng.rx(case.frame)
        eng.tx(out.data, sf=out.sf)
        assert len(reader.read()) == n
        reader.close()
    finally:
        eng.set_trace(ffi.NULL)
        eng.close()


def make_engine(**settings: object) -> Engine:
    cfg = ProxyConfig(backend="afxdp", **settings)  # type: ignore[arg-type]
    eng = Engine(config_struct(cfg))
    for idx, sf in SFS.items():
        eng.add_sf(idx, sf.struct())
    return eng


# ---- the command's edges, no proxy needed ------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_proxy_clears_what_a_gone_tracer_left_on() -> None:
    _, area = _area(8)
    control = trace.Control(area=area)
    control.write(trace.Sampling(4).ctl(owner=os.getpid()))
    assert trace.release_orphan(control) == 0 and control.read().on == 1  # its tracer lives
    gone = _dead_pid()
    control.write(trace.Sampling(4).ctl(owner=gone))
    assert trace.release_orphan(control) == gone
    c = control.read()
    assert (c.on, c.mask, c.owner) == (0, 0, 0)


def test_the_trace_file_is_an_empty_area_and_goes_when_closed(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "STATE_DIR", tmp_path)
    f = trace.TraceFile("edge1")
    assert f.path.parent == tmp_path and f.path.stat().st_mode & 0o777 == 0o600
    assert f.area.slots == trace.AREA_SLOTS and f.control.read().on == 0
    tracer = trace.Tracer({"backend": "afxdp", "pid": os.getpid(), "trace_file": str(f.path)})
    tracer.start(trace.Sampling(2, 1000))
    c = f.control.read()
    assert (c.on, c.mask, c.label, c.owner) == (1, 1, 1000, os.getpid())
    with pytest.raises(trace.TraceError, match="another trace"):
        other = trace.Tracer({"backend": "afxdp", "pid": os.getpid(), "trace_file": str(f.path)})
        other.pid = _dead_pid()  # as another process would be
        try:
            other.start(trace.Sampling())
        finally:
            other.close()
    tracer.close()
    assert f.control.read().on == 0
    f.close()
    assert not f.path.exists()


@pytest.mark.parametrize("argv, error", [
    (["trace", "--name", "nope"], "no running proxy named 'nope'"),
    (["trace"], "no proxy is running"),
    (["trace", "--flow", "tcp,1"], "PROTO,SRC,SPORT,DST,DPORT"),
    (["trace", "--label", "2000000"], "label 2000000"),
])
def test_trace_refuses_in_one_line_with_exit_2(argv: list[str], error: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(state, "STATE_DIR", tmp_path)
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("afxdp-proxy: error: ") and error in lines[0], lines


@pytest.mark.root
@pytest.mark.parametrize("as_json", [False, True])
def test_follow_prints_each_packet_as_it_completes(traced: Callable[..., Traced], as_json: bool) -> None:
    """The command's loop on a kernel backend's maps, found by ID as a state file gives them."""
    t = traced(topology="attached")
    obj = t.px.obj
    info = {"backend": "kernel", "pid": os.getpid(), "sfs": ["fw0"],
            "maps": {"trace_ctl": obj.trace_ctl.id, "trace_events": obj.trace_events_id}}
    tracer = trace.Tracer(info)
    case = POPPED[2]
    try:
        tracer.start(trace.Sampling())
        t.px.xdp_tx(t.px.rx(case.frame).data)
        t.px.rx(POPPED[3].frame)  # still in the SF when the trace ends
        out = io.StringIO()
        summary = trace.follow(tracer, out, info["sfs"], count=2, seconds=0.5, as_json=as_json)
    finally:
        tracer.close()
    assert t.control.read().on == 0
    assert (summary.packets, summary.complete, summary.lost) == (2, 1, 0)
    text = out.getvalue()
    stack = trace.stack_text(case.stack)
    if as_json:
        first, second = (json.loads(line) for line in text.splitlines())
        assert [s["stage"] for s in first["stages"]] == ["rx", "insert", "rx_verdict", "take", "tx_verdict"]
        assert first["stages"][0]["stack"] == [w >> 12 for w in case.stack] and first["sf"] == "fw0"
        assert first["complete"] and not second["complete"]
    else:
        first, second = text.strip().split("\n\n")
        lines = first.splitlines()
        assert lines[0].startswith("tcp ") and "SF fw0" in lines[0]
        # a stage's line: µs since the first, its name; the SF's dwell between RX and TX has no time of its own
        names = [ln.split()[0] if ln.split()[0] == "sf" else ln.split()[1] for ln in lines[1:]]
        assert names == ["rx", "insert", "rx_verdict", "sf", "take", "tx_verdict"]
        assert f"stack {stack}" in lines[1] and "in the SF" in lines[4]
        assert "the trace ended before its TX" in second.splitlines()[0]


@pytest.mark.root
def test_a_packet_seen_at_tx_only_says_why(traced: Callable[..., Traced]) -> None:
    """Plain IP from the SF that this proxy never popped: a miss at TX, shown as TX only with
    the reason (not "its RX came before the trace"), and the summary keeps it apart from the
    packets followed from RX; a hit whose RX came before the trace says that."""
    t = traced(topology="attached")
    obj = t.px.obj
    info = {"backend": "kernel", "pid": os.getpid(), "sfs": ["fw0"],
            "maps": {"trace_ctl": obj.trace_ctl.id, "trace_events": obj.trace_events_id}}
    tracer = trace.Tracer(info)
    popped = t.px.rx(POPPED[2].frame).data  # before the trace: its TX is a hit
    plain = popped[:ETH_HLEN] + ipv4_tcp("10.9.0.1", "10.9.0.2", 7, 1000, 80, 99, 0)  # never popped: a miss
    try:
        tracer.start(trace.Sampling())
        t.px.xdp_tx(plain)
        t.px.xdp_tx(popped)
        out = io.StringIO()
        summary = trace.follow(tracer, out, info["sfs"], count=2, seconds=0.5)
    finally:
        tracer.close()
    miss, hit = out.getvalue().strip().split("\n\n")
    assert "(TX only: no cache entry, so not popped here" in miss.splitlines()[0], miss
    assert "(its RX came before the trace)" in hit.splitlines()[0], hit
    assert (summary.packets, summary.complete, summary.from_rx) == (2, 2, 0)
    assert summary.line() == "2 packets traced, 0 followed from RX to TX or to their drop (2 seen at TX only)"
