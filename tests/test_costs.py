"""The cost bench (afxdp_proxy.lab.bench.costs) in each of its modes, once: test runs and in place,
the caching proxy side by side with the static one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afxdp_proxy import bpf
from afxdp_proxy.lab.bench import costs, metrics

pytestmark = [pytest.mark.root]


def _check_side_by_side(r: dict, reps: int) -> None:
    assert len(r["runs"]) == reps
    for run in r["runs"]:
        for who in ("proxy", "static"):
            assert 1 < run[who]["rx"] < 100_000 and 1 < run[who]["tx"] < 100_000
        assert run["ratio"] == pytest.approx((run["proxy"]["rx"] + run["proxy"]["tx"]) /
                                             (run["static"]["rx"] + run["static"]["tx"]))
    assert r["ratio_to_static"]["n"] == reps
    # over repetitions the spread is min-max and says so, as the text does
    assert r["ratio_to_static"]["min"] <= r["ratio_to_static"]["median"] <= r["ratio_to_static"]["max"]


def test_test_runs_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "costs.json"
    assert costs.main(["--topology", "attached", "--packets", "200", "--in-flight", "20", "--cache-entries", "1024",
                       "--vs-static", "--reps", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "kernel-hash RX+TX / static RX+TX" in text and "1024 cache entries" in text
    r = json.loads(out.read_text())
    _check_side_by_side(r, 2)
    assert r["runs"][0]["proxy"]["detail"]["in_flight"] == 20
    # the first repetition's programs in full: over its packets, median [p10-p90]
    assert "median [p10-p90] ns over the packets" in text
    assert set(r["runs"][0]["proxy"]["detail"]["ns"]["rx"]) == {"median", "p10", "p90", "n"}


def test_test_runs_repeated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--reps without --vs-static: each figure's median [min-max] over the repetitions, not one run's."""
    out = tmp_path / "costs.json"
    assert costs.main(["--packets", "100", "--in-flight", "10", "--reps", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 repetition(s), median [min-max] over them" in text and "RX / LRU floor" in text
    r = json.loads(out.read_text())
    assert len(r["runs"]) == 3
    ratios = [run["rx_to_lru_floor"] for run in r["runs"]]
    assert r["summary"]["rx_to_lru_floor"] == {"median": sorted(ratios)[1], "min": min(ratios), "max": max(ratios),
                                               "n": 3}


def test_a_cache_too_small_for_the_packets_in_flight_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Whether entries in flight are evicted depends on where they hash; found after the runs, still no traceback."""
    assert costs.main(["--packets", "300", "--cache-entries", "128"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--cache-entries" in err and "evicted" in err, err


@pytest.mark.e2e
def test_in_place_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "costs.json"
    assert costs.main(["--topology", "inline", "--depth", "3", "--in-place", "--seconds", "0.3", "--vs-static",
                       "--reps", "2", "--json", str(out)]) == 0
    assert "in place, 3 labels" in capsys.readouterr().out
    r = json.loads(out.read_text())
    _check_side_by_side(r, 2)
    # the programs timed are the proxy's own, RX at XDP and TX at TC egress inline
    assert {"axp_xdp_rx", "axp_tc_tx"} <= set(r["runs"][0]["proxy"]["detail"]["programs"])


def test_programs_of_a_process_are_its_own() -> None:
    """What the bench times is what the proxy holds, not what others load meanwhile."""
    import os

    mine = bpf.BpfObject(bpf.object_path("floor"))
    try:
        mine.load()
        ids = metrics.programs_of(os.getpid())
        assert set(ids.values()) >= {"floor_xdp_pass", "floor_lru_updat"}  # names: 15 characters at most
        assert all(bpf.loaded_programs()[i] == n for i, n in ids.items())
    finally:
        mine.close()
    assert "floor_xdp_pass" not in metrics.programs_of(os.getpid()).values()
