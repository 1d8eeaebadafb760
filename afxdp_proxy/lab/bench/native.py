"""Micro-benchmark of the AF_XDP backend's per-packet path, without sockets.

Batches of 64 frames (Ethernet, 1, 8 or 16 labels, IPv4, TCP, 64 bytes of payload) go
through axp_rx_batch (parse, pop, key, cache insert) and back through axp_tx_batch (key,
look up, push), as the socket loop calls them, next to a memcpy of the same frames, all
inside one C loop (axp_bench_batch) so Python's call overhead does not count. The C loop
times its three phases with the monotonic clock (one read per phase per batch).

The table this prints at the end gives, per case, in ns per frame: the frame's size
(bytes), the memcpy of it into its buffer (memcpy), RX and TX as the median over the 60 calls
after 10 of warm-up with the p10-p90 of those calls beside them (RX p10-p90, TX p10-p90), the fastest
call (RX best, TX best), and RX and TX medians over the memcpy's. The fastest call is the figure
to compare builds by: on this VM the median is bimodal from one run to the next (about 40 or
about 65 ns for one build; a tenant on the core's sibling, as far as one can tell from inside),
while the fastest call is stable to a few percent (docs/benchmarks.md, "The C per-packet path").
The p10-p90 shows how far a run's calls were from it. pytest-benchmark's own table, printed
after this one (at the session's end), times whole calls in ms (12800 frames each), the
draining of the trace area between calls included.

  hot     the same 64 keys every batch: the cache sets stay in L1/L2
  spread  65536 distinct keys cycled through a 65536-entry cache: sets all over its 9 MiB

and with `afxdp-proxy trace`'s sampling off (no trace area, as a proxy has none until it
starts) or on at 1 in 1024 (an area, drained between calls as trace would drain it).

Not collected by the normal test run (tests/ only); run it with

  make bench-native     (= .venv/bin/python -m pytest afxdp_proxy/lab/bench/native.py -q -s -p no:cacheprovider)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from afxdp_proxy import trace
from afxdp_proxy._native import ffi, lib
from afxdp_proxy.backends.afxdp import NSLOTS, Engine
from afxdp_proxy.backends.kernel import config_struct
from afxdp_proxy.config import ProxyConfig
from afxdp_proxy.lab.bench.stats import summarize
from afxdp_proxy.lab.frames import ipv4_tcp, mpls_frame
from afxdp_proxy.mpls import Lse

BATCH = 64
ROUNDS = 200  # batches per timed call: 12800 frames
CACHE_ENTRIES = 65536
PAYLOAD = 64


def _engine() -> Engine:
    e = Engine(config_struct(ProxyConfig(backend="afxdp", cache_entries=CACHE_ENTRIES)))
    sf = ffi.new("struct axp_sf *")
    sf.label = 1000
    sf.sf_mac = b"\x02\x00\x00\x00\x03\x01"
    sf.to_sf_mac = b"\x02\x00\x00\x00\x03\xfe"
    sf.next_hop_mac = b"\x02\x00\x00\x00\x02\x01"
    sf.net_out_mac = b"\x02\x00\x00\x00\x02\xfe"
    e.add_sf(0, sf)
    return e


def _frames(n: int, labels: int) -> tuple[bytes, int]:
    """n frames of one length, each with its own cache key (TCP seq), as one blob."""
    stack = [Lse(1000 if i == 0 else 2000 + i, i % 8, i == labels - 1, 64) for i in range(labels)]
    frames = [mpls_frame(stack, ipv4_tcp("10.0.1.1", "10.0.2.1", i & 0xFFFF, 40000, 5201, i, 1, bytes(PAYLOAD)))
              for i in range(n)]
    assert len({len(f) for f in frames}) == 1
    return b"".join(frames), len(frames[0])


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    e = _engine()
    yield e
    e.close()


RESULTS: dict[str, dict[str, float]] = {}
CALLS, WARMUP = 60, 10  # calls per case after warm-up; pedantic's warm-up calls go through call() too, first


def per_frame(samples: list[tuple[int, int, int]], per: int) -> dict[str, float]:
    """ns per frame from the C loop's (memcpy, RX, TX) ns per call: the medians over calls, RX and TX's
    p10-p90 over calls (how far the calls spread), and the fastest call (what the code costs when no
    other tenant of the machine interferes)."""
    copy, rx, tx = (summarize([s[i] / per for s in samples], (0.1, 0.9)) for i in range(3))
    return {"memcpy_ns": round(copy.median, 2), "rx_ns": round(rx.median, 2), "tx_ns": round(tx.median, 2),
            "rx_p10_ns": round(rx.lo, 2), "rx_p90_ns": round(rx.hi, 2),
            "tx_p10_ns": round(tx.lo, 2), "tx_p90_ns": round(tx.hi, 2),
            "rx_best_ns": round(min(s[1] for s in samples) / per, 2),
            "tx_best_ns": round(min(s[2] for s in samples) / per, 2),
            "rx_over_memcpy": round(rx.median / copy.median, 1), "tx_over_memcpy": round(tx.median / copy.median, 1)}


TRACE_EVERY = 1024


@pytest.mark.parametrize("traced", ["off", f"1/{TRACE_EVERY}"])
@pytest.mark.parametrize("labels", [8, 1, 16])
@pytest.mark.parametrize("keys", ["hot", "spread"])
def test_per_packet_path(benchmark: pytest.FixtureRequest, engine: Engine, labels: int, keys: str,
                         traced: str) -> None:
    blob, length = _frames(BATCH if keys == "hot" else CACHE_ENTRIES, labels)
    nframes = len(blob) // length
    cnt = ffi.new("uint64_t[]", NSLOTS)
    samples: list[tuple[int, int, int]] = []
    size = lib.axp_trace_area_size(trace.AREA_SLOTS)
    buf = ffi.new("uint8_t[]", size)
    area = ffi.cast("struct axp_trace_area *", buf)
    lib.axp_trace_area_init(area, size, trace.AREA_SLOTS)
    reader = trace.Reader(area=area, size=size)
    if traced != "off":
        trace.Control(area=area).write(trace.Sampling(TRACE_EVERY).ctl(owner=0))
        engine.set_trace(area)

    def call() -> None:
        ns = ffi.new("uint64_t[3]")
        bad = lib.axp_bench_batch(engine.ptr, cnt, blob, length, nframes, BATCH, ROUNDS, ns)
        assert bad == 0, f"{bad} frames did not come out as TX"
        samples.append((ns[0], ns[1], ns[2]))
        reader.read()  # outside the C loop's timing, as trace reads in a process of its own

    try:
        benchmark.pedantic(call, rounds=CALLS, warmup_rounds=WARMUP)
    finally:
        engine.set_trace(ffi.NULL)
        reader.close()
    assert engine.in_flight() == 0
    lost = int(area.ctl.lost)  # hot keys: a sampled one is sampled in every batch
    info = {"frame_bytes": length, **per_frame(samples[WARMUP:], BATCH * ROUNDS), "trace_lost": lost}
    benchmark.extra_info.update(info)
    RESULTS[f"{labels:2d} labels, {keys + ',':7} trace {traced}"] = info


def teardown_module() -> None:
    if not RESULTS:
        return
    print("\nper packet (ns), median over calls with their p10-p90, and the fastest call; "
          "RX = parse+pop+key+insert, TX = key+lookup+push")
    print(f"{'case':36} {'bytes':>5} {'memcpy':>7} {'RX':>7} {'RX p10-p90':>12} {'TX':>7} {'TX p10-p90':>12} "
          f"{'RX best':>8} {'TX best':>8} {'RX/memcpy':>10} {'TX/memcpy':>10}")
    for name, i in sorted(RESULTS.items()):
        rx_spread, tx_spread = (f"{i[d + '_p10_ns']:.1f}-{i[d + '_p90_ns']:.1f}" for d in ("rx", "tx"))
        print(f"{name:36} {i['frame_bytes']:5d} {i['memcpy_ns']:7.1f} {i['rx_ns']:7.1f} {rx_spread:>12} "
              f"{i['tx_ns']:7.1f} {tx_spread:>12} {i['rx_best_ns']:8.1f} {i['tx_best_ns']:8.1f} "
              f"{i['rx_over_memcpy']:10.1f} {i['tx_over_memcpy']:10.1f}")
