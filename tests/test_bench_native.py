"""The table of `make bench-native` (afxdp_proxy/lab/bench/native.py): what it computes from the C loop's
timings, without running the loop."""

from __future__ import annotations

from afxdp_proxy.lab.bench.native import per_frame


def test_per_frame_gives_the_calls_spread_next_to_median_and_fastest() -> None:
    # 10 calls of 100 frames: memcpy 1000 ns, RX 100k..1M ns, TX twice that
    samples = [(1000, 100_000 * k, 200_000 * k) for k in range(1, 11)]
    r = per_frame(samples, 100)
    assert r["rx_best_ns"] == 1000 and r["tx_best_ns"] == 2000
    assert r["rx_ns"] == 5500 and r["tx_ns"] == 11000
    # p10-p90 of the calls: the spread of a run, which the median and the fastest call alone do not show
    assert (r["rx_p10_ns"], r["rx_p90_ns"]) == (2000, 9000)
    assert (r["tx_p10_ns"], r["tx_p90_ns"]) == (4000, 18000)
    assert r["rx_over_memcpy"] == 550.0
