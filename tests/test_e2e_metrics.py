"""The metrics endpoint of a running proxy, read by a real Prometheus server.

The proxy runs in the testbed's proxy namespace (`afxdp-proxy run`, as an operator runs it) and
listens on that namespace's loopback; Prometheus (Debian's package) runs in the same namespace,
as a node-local agent would, so the endpoint needs no address outside the namespace. Prometheus
scrapes every second; the test waits (polling, with deadlines) for it to be ready and to have
scraped, drives traffic through the proxy, and reads a counter and the dwell histogram back
through Prometheus's HTTP API, against the proxy's own `stats --json`."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import harness
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from afxdp_proxy import counters, state
from afxdp_proxy.lab import netns
from afxdp_proxy.lab.proxyproc import ProxyProcess
from afxdp_proxy.lab.testbed import Testbed
from afxdp_proxy.mpls import make_stack

pytestmark = [pytest.mark.root, pytest.mark.e2e]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SF = 1000
JOB = "afxdp-proxy"
READY_TIMEOUT = 30.0  # seconds for Prometheus to start, or to scrape once more; it needs one or two
POPPED = 'afxdp_proxy_packets_total{sf="fw1",direction="rx",reason="popped"}'


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    tb = Testbed("attached").up()
    yield tb
    assert tb.down() == []


def _prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        why = "no prometheus binary: install Debian's prometheus package (scripts/install-deps.sh does)"
        if IN_CI:
            pytest.fail(f"CI=true: {why}", pytrace=False)
        pytest.skip(why)
    return path


def _free_ports(ns: str, n: int) -> list[int]:
    """n distinct ports nothing in namespace ns listens on (the kernel's picks for port 0)."""
    socks = [netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _get(ns: str, url: str) -> tuple[int, str]:
    """GET from inside namespace ns (the socket is made there), never through an HTTP proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with netns.enter(ns):
        try:
            with opener.open(url, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except (urllib.error.URLError, ConnectionError):
            return 0, ""


class Prometheus:
    """A Prometheus server in namespace ns scraping target every second; its API on 127.0.0.1:port."""

    def __init__(self, tb: Testbed, port: int, target: str, tmp: Path) -> None:
        self.ns = tb.ns_proxy
        self.port = port
        config = tmp / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{target}']\n")
        self.log = tmp / "prometheus.log"
        argv = [_prometheus_binary(), f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        with open(self.log, "w") as log:
            self.proc = tb.popen("proxy", argv, stdout=log, stderr=subprocess.STDOUT)

    def ready(self) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {self.log.read_text()}")
            return _get(self.ns, f"http://127.0.0.1:{self.port}/-/ready")[0] == 200

        netns.wait_until(up, READY_TIMEOUT, what="prometheus to be ready")

    def query(self, promql: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, body = _get(self.ns, url)
        assert status == 200, (promql, status, body)
        data = json.loads(body)
        assert data["status"] == "success", data
        return data["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The one value of an instant query, None when it has none yet."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        netns.stop(self.proc)


@contextmanager
def prometheus(tb: Testbed, port: int, target: str, tmp: Path) -> Iterator[Prometheus]:
    prom = Prometheus(tb, port, target, tmp)
    try:
        yield prom
    finally:
        prom.stop()


def _proxy(tb: Testbed, backend: str, listen: str) -> ProxyProcess:
    cfg = tb.proxy_config(backend=backend) + f'\n[metrics]\nlisten = "{listen}"\n'
    return ProxyProcess(tb.ns_proxy, cfg, name=f"{tb.prefix}-{backend}-metrics")


def _scrape(ns: str, listen: str) -> dict:
    status, body = _get(ns, f"http://{listen}/metrics")
    assert status == 200, body
    return {f.name: f for f in text_string_to_metric_families(body)}


def _sample(fams: dict, family: str, sample: str, **labels: str) -> float:
    hits = [s.value for s in fams[family].samples if s.name == sample and s.labels == labels]
    assert len(hits) == 1, (sample, labels, hits)
    return hits[0]


def _quantile(q: float, per_bucket: list[int]) -> float:
    """PromQL's histogram_quantile over the dwell buckets (linear within the bucket; the lowest
    starts at 0; in the +Inf bucket, the highest finite bound), in seconds."""
    bounds = [b / 1e9 for b in counters.dwell_bounds_ns()]
    rank, seen = q * sum(per_bucket), 0
    for i, n in enumerate(per_bucket):
        if seen + n >= rank and n:
            if i == len(bounds):
                return bounds[-1]
            lo = bounds[i - 1] if i else 0.0
            return lo + (bounds[i] - lo) * (rank - seen) / n
        seen += n
    return math.nan


def _agree(proxy: ProxyProcess, listen: str, backend: str) -> dict:
    """`stats --json` and a scrape of the endpoint show the same counters (same source): every
    counter of every row lies between a `stats` taken before the scrape and one taken after (all
    counters only grow), the SF's row, its histogram and in_flight exactly, once the SF's row
    stays still across the scrape (traffic over). Returns the `stats --json` after the scrape."""
    from afxdp_proxy.metrics import DWELL, DWELL_SUM, NO_SF, metric_of

    def scraped(fams: dict, sf: str, name: str) -> float:
        if name == counters.DWELL_TIMED:
            return _sample(fams, DWELL, f"{DWELL}_count", sf=sf)
        family, labels = metric_of(name)
        if name == DWELL_SUM:
            return _sample(fams, family, f"{family}_sum", sf=sf) * 1e9
        return _sample(fams, family, f"{family}_total", sf=sf, **labels)

    def settled() -> tuple[dict, dict, dict] | None:
        before = proxy.stats()
        fams = _scrape(proxy.ns, listen)
        after = proxy.stats()
        sfs = [sf for sf in after["sfs"] if sf != NO_SF]
        return (before, fams, after) if all(before["sfs"][sf] == after["sfs"][sf] for sf in sfs) else None

    before, fams, after = netns.wait_until(settled, 15, interval=0.2, what="the SF's counters to settle")
    for sf, row in after["sfs"].items():
        for name, value in row.items():
            if name in (DWELL_SUM, counters.DWELL_TIMED) and sf == NO_SF:
                continue  # frames of no SF have no dwell time
            got = scraped(fams, sf, name)
            if name == DWELL_SUM:
                assert got == pytest.approx(value, rel=1e-12)
            else:
                assert before["sfs"][sf][name] <= got <= value, (sf, name)
            if sf != NO_SF:
                assert got == pytest.approx(value, rel=1e-12), (sf, name)
    for sf, hist in after["dwell_histogram_ns"].items():
        les = [floatToGoString(int(le) / 1e9) if le != "+Inf" else le for le in hist]
        cumulative = [sum(list(hist.values())[:i + 1]) for i in range(len(hist))]
        got = [_sample(fams, DWELL, f"{DWELL}_bucket", sf=sf, le=le) for le in les]
        assert got == cumulative, sf
    assert _sample(fams, "afxdp_proxy_cache_in_flight_packets", "afxdp_proxy_cache_in_flight_packets") == \
        after["in_flight"]
    info = fams["afxdp_proxy_info"].samples[0].labels
    assert (info["backend"], info["name"]) == (backend, proxy.name)
    return after


@pytest.mark.parametrize("backend", ["kernel", "afxdp"])
def test_prometheus_reads_what_stats_shows(bed: Testbed, backend: str, tmp_path: Path) -> None:
    tb = bed
    port, prom_port = _free_ports(tb.ns_proxy, 2)
    listen = f"127.0.0.1:{port}"
    tb.set_stacks([make_stack([SF, 2000, 3000], [1, 2, 3])])
    with prometheus(tb, prom_port, listen, tmp_path) as prom, _proxy(tb, backend, listen) as proxy:
        info = state.running()[proxy.name]
        prom.ready()
        netns.wait_until(lambda: prom.value(f'up{{job="{JOB}"}}') == 1, READY_TIMEOUT, interval=0.2,
                         what="prometheus to scrape the proxy")
        res = tb.iperf3(seconds=2, bitrate="20M")
        assert res.bits_per_second > 5e6
        st = _agree(proxy, listen, backend)
        popped = st["sfs"]["fw1"]["rx_popped"]
        assert popped > 1000
        # Prometheus has it once a scrape after the traffic has been taken: within a scrape or two
        netns.wait_until(lambda: prom.value(POPPED) == popped, READY_TIMEOUT, interval=0.2,
                         what=f"prometheus to read rx_popped = {popped} (has {prom.value(POPPED)})")
        assert prom.value('afxdp_proxy_frames_total{sf="fw1",direction="rx"}') == st["sfs"]["fw1"]["rx_packets"]
        hist = list(st["dwell_histogram_ns"]["fw1"].values())
        assert prom.value('afxdp_proxy_dwell_seconds_count{sf="fw1"}') == sum(hist)
        takes = st["sfs"]["fw1"]["cache_takes"]  # 1 in dwell_sample (16) of them timed, by the keys' hashes
        assert takes / 64 < sum(hist) < takes / 4
        assert prom.value('afxdp_proxy_dwell_seconds_sum{sf="fw1"}') == pytest.approx(
            st["sfs"]["fw1"]["tx_dwell_ns"] / 1e9, rel=1e-9)
        median = prom.value('histogram_quantile(0.5, afxdp_proxy_dwell_seconds_bucket{sf="fw1"})')
        assert median == pytest.approx(_quantile(0.5, hist), rel=1e-9)
        # the operator's form: the median of the last 30 s, within the buckets that saw packets
        recent = prom.value('histogram_quantile(0.5, sum by (le) (rate(afxdp_proxy_dwell_seconds_bucket'
                            '{sf="fw1"}[30s])))')
        used = [i for i, n in enumerate(hist) if n]
        bounds = [0.0] + [b / 1e9 for b in counters.dwell_bounds_ns()]
        assert recent is not None and bounds[used[0]] <= recent <= bounds[min(used[-1] + 1, len(bounds) - 1)]
        if backend == "afxdp":
            assert prom.value('sum(afxdp_proxy_xsk_events_total{counter="rx_batches"})') > 0
        else:
            assert prom.query("afxdp_proxy_xsk_events_total") == []
        assert proxy.stop() == 0
    harness.wait_programs_unloaded(info["progs"])


@pytest.mark.parametrize(("listen", "problem"), [
    (None, "Address already in use; something else listens there"),
    ("192.0.2.1:9464", "Cannot assign requested address; no interface of this network namespace"),
])
def test_an_endpoint_it_cannot_open_stops_run_before_attaching(bed: Testbed, tmp_path: Path, listen: str | None,
                                                               problem: str) -> None:
    tb = bed
    with netns.socket_in(tb.ns_proxy, socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        listen = listen or f"127.0.0.1:{holder.getsockname()[1]}"
        path = tmp_path / "p.toml"
        path.write_text(tb.proxy_config() + f'\n[metrics]\nlisten = "{listen}"\n')
        r = tb.run("proxy", [sys.executable, "-m", "afxdp_proxy", "run", "-c", str(path), "-d", "5"])
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("afxdp-proxy: error:")]
    assert len(errors) == 1, r.stderr
    assert errors[0].startswith(f"afxdp-proxy: error: metrics.listen: cannot listen on {listen}: {problem}")
    harness.wait_no_xdp(tb.ns_proxy, (tb.net_in, tb.net_out, tb.from_sf))
