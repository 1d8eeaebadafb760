"""The metrics endpoint without a data path: [metrics] validation, the collector against fake
snapshots (its exposition parsed back with prometheus_client's parser), the HTTP server's life
and its bind errors, and the README and `run --help` naming what it serves."""

from __future__ import annotations

import random
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from afxdp_proxy import counters, metrics
from afxdp_proxy.config import ConfigError, MetricsConfig, ProxyConfig, parse_config

README = Path(__file__).resolve().parent.parent / "README.md"
SFS = ["fw1", "nat2"]
BASE = {"proxy": {"topology": "inline"},
        "sf": [{"name": n, "label": 1000 + i, "net_in": "a", "net_out": "b"} for i, n in enumerate(SFS)]}


def _cfg(**metrics_table: object) -> ProxyConfig:
    return parse_config({**BASE, "metrics": metrics_table})


# ---- [metrics] in the config ------------------------------------------------------------------


def test_no_metrics_table_means_no_server() -> None:
    assert parse_config(BASE).metrics is None
    assert metrics.Exporter(None).listen is None


def test_a_proxy_without_metrics_does_not_import_prometheus_client() -> None:
    """Neither `stats` (which imports the runner) nor a proxy without [metrics] pays for it."""
    code = "import sys, afxdp_proxy.cli, afxdp_proxy.runner; print('prometheus_client' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.strip() == "False"


@pytest.mark.parametrize(("listen", "host", "port"), [
    ("127.0.0.1:9464", "127.0.0.1", 9464), ("0.0.0.0:1", "0.0.0.0", 1), ("[::1]:9464", "::1", 9464),
    ("[::]:65535", "::", 65535), ("localhost:9464", "localhost", 9464), ("proxy-1.example:80", "proxy-1.example", 80),
])
def test_listen_addresses(listen: str, host: str, port: int) -> None:
    assert _cfg(listen=listen).metrics == MetricsConfig(listen, host, port)


@pytest.mark.parametrize("table", [
    {}, {"listen": 9464}, {"listen": "9464"}, {"listen": ":9464"}, {"listen": "127.0.0.1:"},
    {"listen": "127.0.0.1:0"}, {"listen": "127.0.0.1:65536"}, {"listen": "127.0.0.1:http"},
    {"listen": "::1:9464"}, {"listen": "[fe80::zz]:9464"}, {"listen": "300.1.1.1:9464"},
    {"listen": "bad_name:9464"}, {"listen": "127.0.0.1:9464", "path": "/metrics"},
])
def test_bad_metrics_is_one_line_naming_the_field(table: dict) -> None:
    with pytest.raises(ConfigError) as e:
        _cfg(**table)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("metrics.path:" if "path" in table else "metrics.listen:"), msg


def test_metrics_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"^metrics: must be a table"):
        parse_config({**BASE, "metrics": "127.0.0.1:9464"})


# ---- the collector against fake snapshots -----------------------------------------------------


def _fake(afxdp: bool, seed: int = 1) -> counters.Snapshot:
    """Random slots in the rows of SFS and of frames of no SF."""
    rng = random.Random(seed)
    snap = counters.Snapshot(afxdp=afxdp)
    width = counters.XSK_SLOTS if afxdp else counters.SLOTS
    for row in counters.rows_of(len(SFS)):
        snap.add_to_row(row, [rng.randrange(0, 1 << 40) for _ in range(width)])
    return snap


class _Backend:
    def __init__(self, snap: counters.Snapshot) -> None:
        self.snap = snap
        self.reads = 0

    def snapshot(self) -> counters.Snapshot:
        self.reads += 1
        return self.snap


def _scrape(snap: counters.Snapshot, backend: str = "kernel") -> dict:
    """The collector's exposition, parsed back: {family name: family}."""
    cfg = parse_config({**BASE, "proxy": {"topology": "attached", "backend": backend}, "sf": [
        {"name": n, "label": 1000 + i, "net_in": f"i{i}", "net_out": f"o{i}", "to_sf": f"t{i}", "from_sf": f"f{i}"}
        for i, n in enumerate(SFS)]})
    collector = metrics.ProxyCollector()
    collector.watch(_Backend(snap), cfg, "edge1")
    registry = CollectorRegistry()
    registry.register(collector)
    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


def _value(fams: dict, family: str, sample: str, labels: dict[str, str]) -> float:
    hits = [s.value for s in fams[family].samples if s.name == sample and s.labels == labels]
    assert len(hits) == 1, (sample, labels, hits)
    return hits[0]


@pytest.mark.parametrize("afxdp", [False, True], ids=["kernel", "afxdp"])
def test_every_counter_of_every_row_is_exported_with_its_value(afxdp: bool) -> None:
    snap = _fake(afxdp)
    fams = _scrape(snap, "afxdp" if afxdp else "kernel")
    rows = [*enumerate(SFS), (counters.NONE_ROW, metrics.NO_SF)]
    for name in counters.names(afxdp):
        family, labels = metrics.metric_of(name)
        for row, sf in rows:
            want = snap.row(row)[name]
            if name == metrics.DWELL_SUM:
                if row == counters.NONE_ROW:
                    assert not [s for s in fams[family].samples if s.labels.get("sf") == sf]
                    continue
                assert _value(fams, family, f"{family}_sum", {"sf": sf}) == pytest.approx(want / 1e9, rel=1e-12)
            else:
                assert fams[family].type == "counter"
                assert _value(fams, family, f"{family}_total", {"sf": sf, **labels}) == want, name
    xsk = {s.labels["counter"] for s in fams[metrics.XSK].samples} if metrics.XSK in fams else set()
    assert xsk == (set(counters.XSK_NAMES) if afxdp else set()), "the afxdp figures only where they apply"


def test_metric_names_and_labels() -> None:
    assert metrics.metric_of("rx_popped") == ("afxdp_proxy_packets",
                                              {"direction": "rx", "reason": "popped", "action": "forward"})
    assert metrics.metric_of("tx_miss_drop") == ("afxdp_proxy_packets",
                                                 {"direction": "tx", "reason": "miss_drop", "action": "drop"})
    assert metrics.metric_of("rx_packets") == ("afxdp_proxy_frames", {"direction": "rx"})
    assert metrics.metric_of("evictions") == ("afxdp_proxy_cache_evictions", {})
    assert metrics.metric_of("tx_dwell_ns") == ("afxdp_proxy_dwell_seconds", {})
    assert metrics.metric_of("xsk_rx_dropped") == ("afxdp_proxy_xsk_events",
                                                   {"counter": "xsk_rx_dropped", "action": "drop"})
    for name in counters.names(afxdp=True):
        family = metrics.metric_of(name)[0]
        assert re.fullmatch(r"afxdp_proxy_[a-z0-9_]+", family), family
        assert not family.endswith("_total")  # the sample gets it; the family has none
    # every drop is told apart by its labels, whatever family it lands in
    for name in counters.DROPS:
        assert metrics.metric_of(name)[1].get("action") == "drop", name


def test_reasons_of_a_direction_add_up_to_its_frames() -> None:
    """Frame fates and frames per direction partition the kernel enum's rx_/tx_ counters as
    counters.py says: each frame counts in rx_packets/tx_packets and in one reason."""
    snap = counters.Snapshot()
    row = dict.fromkeys(counters.NAMES, 0)
    rng = random.Random(2)
    for name in counters.NAMES:
        family, labels = metrics.metric_of(name)
        if family == "afxdp_proxy_packets":
            row[name] = rng.randrange(1000)
            row[f"{labels['direction']}_packets"] += row[name]
    snap.add_to_row(0, [row[n] for n in counters.NAMES])
    fams = _scrape(snap)
    for direction in metrics.DIRECTIONS:
        reasons = sum(s.value for s in fams["afxdp_proxy_packets"].samples
                      if s.labels["sf"] == "fw1" and s.labels["direction"] == direction)
        assert reasons == _value(fams, "afxdp_proxy_frames", "afxdp_proxy_frames_total",
                                 {"sf": "fw1", "direction": direction}) > 0


def test_dwell_histogram_is_cumulative_and_matches_the_buckets() -> None:
    snap = _fake(afxdp=False, seed=3)
    fams = _scrape(snap)
    hist = fams[metrics.DWELL]
    assert hist.type == "histogram"
    les = [floatToGoString(b / 1e9) for b in counters.dwell_bounds_ns()] + ["+Inf"]
    for i, sf in enumerate(SFS):
        buckets = [(s.labels["le"], s.value) for s in hist.samples
                   if s.name.endswith("_bucket") and s.labels["sf"] == sf]
        assert [le for le, _ in buckets] == les
        values = [v for _, v in buckets]
        assert values == sorted(values), "cumulative: never decreasing"
        per_bucket = [b - a for a, b in zip([0.0, *values], values, strict=False)]
        assert per_bucket == snap.dwell_hist(i)
        assert _value(fams, metrics.DWELL, f"{metrics.DWELL}_count", {"sf": sf}) == values[-1] == sum(
            snap.dwell_hist(i))
    # le in seconds: the first bound is 1024 ns, the last finite one 2^29 ns (about 0.54 s)
    assert float(les[0]) == 1.024e-6 and float(les[-2]) == (1024 << (counters.DWELL_BUCKETS - 2)) / 1e9


def test_in_flight_and_info() -> None:
    snap = _fake(afxdp=False, seed=4)
    fams = _scrape(snap)
    assert _value(fams, "afxdp_proxy_cache_in_flight_packets", "afxdp_proxy_cache_in_flight_packets", {}) == \
        counters.in_flight_of(snap.total())
    info = fams["afxdp_proxy_info"].samples[0]
    assert info.name == "afxdp_proxy_info" and info.value == 1
    assert info.labels == {"name": "edge1", "backend": "kernel", "key": "hash", "topology": "attached",
                           "version": metrics.version()}


def test_a_collector_reads_only_while_it_watches() -> None:
    backend = _Backend(_fake(afxdp=False))
    collector = metrics.ProxyCollector()
    assert list(collector.collect()) == []
    collector.watch(backend, _cfg(listen="127.0.0.1:1"), "x")
    assert list(collector.collect()) and backend.reads == 1
    collector.unwatch()
    assert list(collector.collect()) == [] and backend.reads == 1


def test_rows_are_named_by_slot_after_a_reload() -> None:
    """A backend's rows are its SFs' slots: after a reload that removed the first SF and added
    another, the rows are not the configuration's order; a slot no SF used is not exported."""
    snap = counters.Snapshot()
    for row, value in ((0, 10), (1, 20), (3, 40), (counters.NONE_ROW, 5)):
        snap.add_to_row(row, [value] * counters.SLOTS)
    backend = _Backend(snap)
    backend.rows = ["gone", "fw2", "", "fw3"]  # type: ignore[attr-defined]
    cfg = parse_config({**BASE, "proxy": {"topology": "attached"}, "sf": [
        {"name": n, "label": 1000 + i, "net_in": "i", "net_out": "o", "to_sf": "t", "from_sf": f"f{i}"}
        for i, n in enumerate(("fw3", "fw2"))]})
    collector = metrics.ProxyCollector()
    collector.watch(backend, cfg, "edge1")
    registry = CollectorRegistry()
    registry.register(collector)
    fams = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    family, labels = metrics.metric_of("rx_popped")
    got = {s.labels["sf"]: s.value for s in fams[family].samples
           if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items())}
    assert got == {"gone": 10, "fw2": 20, "fw3": 40, metrics.NO_SF: 5}
    assert {s.labels["sf"] for s in fams[metrics.DWELL].samples} == {"gone", "fw2", "fw3"}


# ---- the HTTP server ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an HTTP proxy
    with opener.open(url, timeout=5) as r:
        return r.read().decode()


def test_the_server_serves_at_scrape_time_and_releases_its_port() -> None:
    port = _free_port()
    cfg = _cfg(listen=f"127.0.0.1:{port}")
    backend = _Backend(_fake(afxdp=False, seed=5))
    exporter = metrics.Exporter(cfg.metrics)
    try:
        before = _get(f"http://127.0.0.1:{port}/metrics")
        assert "afxdp_proxy_" not in before and "process_cpu_seconds_total" in before  # not watching yet
        exporter.watch(backend, cfg, "x")
        fams = {f.name: f for f in text_string_to_metric_families(_get(f"http://127.0.0.1:{port}/metrics"))}
        assert backend.reads == 1 and "afxdp_proxy_packets" in fams
        backend.snap = _fake(afxdp=False, seed=6)  # a later scrape reads the counters again
        fams2 = {f.name: f for f in text_string_to_metric_families(_get(f"http://127.0.0.1:{port}/metrics"))}
        assert backend.reads == 2 and fams2["afxdp_proxy_packets"] != fams["afxdp_proxy_packets"]
    finally:
        exporter.close()
    exporter.close()  # twice is fine
    metrics.Exporter(cfg.metrics).close()  # the port is free again: a proxy restarted in-process binds it


def test_a_port_in_use_is_a_one_line_error_naming_metrics_listen() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        listen = f"127.0.0.1:{holder.getsockname()[1]}"
        with pytest.raises(ConfigError) as e:
            metrics.Exporter(_cfg(listen=listen).metrics)
    assert str(e.value).startswith(f"metrics.listen: cannot listen on {listen}: Address already in use;")
    assert "\n" not in str(e.value)


def test_an_address_this_host_lacks_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match=r"^metrics.listen: cannot listen on 192.0.2.1:9464: Cannot assign "
                                          r"requested address; no interface"):
        metrics.Exporter(_cfg(listen="192.0.2.1:9464").metrics)


# ---- documentation -----------------------------------------------------------------------------


def test_run_help_mentions_metrics() -> None:
    from afxdp_proxy.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = sub.choices["run"].format_help()
    assert "[metrics]" in text and "listen" in text


def test_the_readme_names_every_metric() -> None:
    text = README.read_text()
    assert "## Metrics" in text
    assert "afxdp_proxy_<name>_total" in text  # the rule for counters without a family of their own
    fallback = {metrics.metric_of(n)[0] for n in counters.names(afxdp=True)} & {
        f"afxdp_proxy_{n}" for n in counters.names(afxdp=True)}
    fams = _scrape(_fake(afxdp=True), "afxdp")
    names = {s.name for f in fams.values() if f.name not in fallback for s in f.samples}
    missing = sorted(n for n in names if n not in text)
    assert not missing, f"README.md does not name {missing}"
