"""The counters' one home (afxdp_proxy/counters.py) against the C enums, the README and the C
histogram bucket function."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from afxdp_proxy._native import lib

from afxdp_proxy import counters

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_counter_has_a_meaning_and_every_meaning_a_counter() -> None:
    assert set(counters.names(afxdp=True)) == set(counters.INFO)
    assert all(i.action in ("drop", "pass", "forward", "info") for i in counters.TABLE)


def test_the_readme_lists_every_counter() -> None:
    text = README.read_text()
    missing = [n for n in counters.names(afxdp=True) if not re.search(rf"`{n}`", text)]
    assert not missing, f"README.md does not mention {missing}"


def test_rows_and_slots_are_the_c_layout() -> None:
    assert counters.ROWS == lib.AXP_MAX_SFS + 1 and counters.NONE_ROW == lib.AXP_MAX_SFS
    assert counters.SLOTS == lib.AXP_CNT_MAX == lib.AXP_CNT_TX_DWELL_HIST + lib.AXP_DWELL_BUCKETS
    assert counters.slot_of("xdp_no_socket") == lib.AXP_XCNT_XDP_NO_SOCKET
    assert counters.slot_of("rx_popped") == lib.AXP_CNT_RX_POPPED


@pytest.mark.parametrize("ns", [0, 1, 1023, 1024, 1025, 2047, 2048, 5000, 10**6, 512 << 19, (512 << 20) - 1,
                                512 << 20, 1024 << 20, 10**12, 2**63, 2**64 - 1])
def test_dwell_buckets_agree_with_c(ns: int) -> None:
    b = counters.dwell_bucket(ns)
    assert b == lib.axp_dwell_bucket_of(ns)
    bounds = counters.dwell_bounds_ns()
    if b < len(bounds):
        assert ns < bounds[b] and (b == 0 or ns >= bounds[b - 1])
    else:
        assert ns >= bounds[-1]


def test_a_snapshot_sums_rows_and_names_them() -> None:
    snap = counters.Snapshot()
    snap.add_to_row(0, [1] * counters.SLOTS)
    snap.add_to_row(counters.NONE_ROW, [2] * counters.SLOTS)
    assert snap.total()["rx_packets"] == 3
    per_sf = snap.by_sf(["fw1"])
    assert list(per_sf) == ["fw1", "-"] and per_sf["fw1"]["tx_pushed"] == 1 and per_sf["-"]["tx_pushed"] == 2
    assert snap.dwell_hist() == [3] * counters.DWELL_BUCKETS
    assert counters.in_flight_of({"cache_inserts": 5, "cache_takes": 2, "evictions": 1, "expired": 1}) == 1


def test_live_line_shows_what_only_some_configurations_count() -> None:
    """The live line (and the log's counters record) names on_miss = last, the host's control
    plane and the other optional outcomes once they count, and not before."""
    from afxdp_proxy.runner import live_line

    quiet = live_line({"rx_packets": 10, "rx_popped": 10}, {}, 1.0, 0)
    assert "miss-last" not in quiet and "to-host" not in quiet
    busy = live_line({"rx_packets": 10, "tx_miss_last": 7, "tx_host": 2, "rx_ttl_expired_pass": 1}, {}, 1.0, 0)
    assert "miss-last 7" in busy and "to-host 2" in busy and "ttl-pass 1" in busy
