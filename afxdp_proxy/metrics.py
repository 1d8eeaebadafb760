"""Prometheus metrics of a running proxy: `[metrics] listen = "HOST:PORT"` in the config.

prometheus_client's HTTP server answers in a daemon thread; every scrape reads the backend's
counters at that moment (:meth:`Backend.snapshot`, what `afxdp-proxy stats` reads too) through
:class:`ProxyCollector`: nothing is copied in the background and nothing is ever reset.

Every counter of :data:`afxdp_proxy.counters.TABLE` is exported, per SF (label ``sf``: the SF's
name, ``-`` for the row of frames of no SF), under the name :func:`metric_of` gives it:

- a frame's fate (action drop, pass or forward, name ``rx_*``/``tx_*``):
  ``afxdp_proxy_packets_total{sf, direction, reason, action}``, e.g. ``rx_popped`` is
  ``{direction="rx", reason="popped", action="forward"}``; ``rx_packets`` and ``tx_packets`` are
  ``afxdp_proxy_frames_total{sf, direction}``, the sum of that direction's reasons;
- the cache's books: ``afxdp_proxy_cache_{inserts,takes,evictions,expired}_total{sf}``, and the
  packets it holds now (the proxy's, exact): ``afxdp_proxy_cache_in_flight_packets``;
- the SF's dwell time, of 1 in ``dwell_sample`` packets: the histogram
  ``afxdp_proxy_dwell_seconds{sf}`` (buckets of
  :func:`afxdp_proxy.counters.dwell_bounds_ns`, ``_sum`` from ``tx_dwell_ns``);
- the afxdp backend's own figures (sockets, rings, batching; only where that backend runs):
  ``afxdp_proxy_xsk_events_total{sf, counter, action}``;
- any other counter: ``afxdp_proxy_<name>_total{sf}`` (plus ``action`` when it is a frame's fate).

Plus ``afxdp_proxy_info{name, backend, key, topology, version}`` and the process's own figures
(``process_*``, ``python_*``) from prometheus_client, which is imported only by a proxy that
serves metrics (importing it takes a noticeable part of a second on a busy machine).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Iterator, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

from afxdp_proxy import counters
from afxdp_proxy.config import ConfigError, MetricsConfig, ProxyConfig

if TYPE_CHECKING:
    from prometheus_client.core import InfoMetricFamily, Metric

    from afxdp_proxy.backends import Backend

log = logging.getLogger(__name__)

PREFIX = "afxdp_proxy"
NO_SF = "-"  # the sf label of the row of frames of no SF, as in `stats`
DIRECTIONS = ("rx", "tx")
# the cache's books: counter -> metric (packets, counted where the cache does)
CACHE = {"cache_inserts": "cache_inserts", "cache_takes": "cache_takes", "evictions": "cache_evictions",
         "expired": "cache_expired"}
FATES = ("drop", "pass", "forward")
DWELL = f"{PREFIX}_dwell_seconds"
DWELL_SUM = "tx_dwell_ns"  # the histogram's _sum, in ns
XSK = f"{PREFIX}_xsk_events"

HELP = {
    f"{PREFIX}_packets": "Frames by what the proxy did with them (reason: the counter without its rx_/tx_ "
                         "prefix; action: drop, pass to the host's kernel, or forward through the proxy)",
    f"{PREFIX}_frames": "Frames the RX / TX side saw; each also counts in one afxdp_proxy_packets_total reason",
    XSK: "The afxdp backend's own figures (sockets, rings, batching); counter: its name in `run --help`",
    DWELL: "The SF's dwell time (RX to TX of a cache hit) of 1 in dwell_sample cache hits, from the data "
           "path's power-of-two buckets",
    f"{PREFIX}_cache_in_flight_packets": "Packets whose stacks the cache holds now: cache_inserts - cache_takes "
                                         "- evictions - expired, over every SF",
}


def metric_of(name: str) -> tuple[str, dict[str, str]]:
    """Where a counter of counters.TABLE is exported: (metric family, the labels besides sf that tell
    it apart). Families of counters are named without _total, as prometheus_client and its parser do."""
    info = counters.INFO[name]
    if name == DWELL_SUM:
        return DWELL, {}  # the histogram's _sum
    if name in counters.XSK_NAMES:
        return XSK, {"counter": name, "action": info.action}
    if name in CACHE:
        return f"{PREFIX}_{CACHE[name]}", {}
    direction, _, reason = name.partition("_")
    if direction in DIRECTIONS and reason == "packets":
        return f"{PREFIX}_frames", {"direction": direction}
    if direction in DIRECTIONS and info.action in FATES:
        return f"{PREFIX}_packets", {"direction": direction, "reason": reason, "action": info.action}
    return f"{PREFIX}_{name}", ({"action": info.action} if info.action in FATES else {})


def dwell_buckets(hist: Sequence[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (counters.Snapshot.dwell_hist) as Prometheus buckets: cumulative, le in
    seconds, the last one +Inf. The data path's bound is exclusive (a dwell of exactly 1024 ns
    lands in the second bucket), Prometheus's le inclusive: 1 ns apart, in integer nanoseconds."""
    from prometheus_client.utils import floatToGoString

    les = [floatToGoString(b / 1e9) for b in counters.dwell_bounds_ns()] + ["+Inf"]
    out, running = [], 0
    for le, n in zip(les, hist, strict=True):
        running += n
        out.append((le, float(running)))
    return out


def families(snap: counters.Snapshot, sf_names: Sequence[str], info: dict[str, str]) -> list[Metric]:
    """Every metric of one snapshot (what a scrape shows, in order); sf_names[i] names row i
    ("": a row no SF has used, not shown)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    values = snap.by_sf(sf_names)  # {SF: its row}, then NO_SF: the rows `stats` shows
    fams: dict[str, Metric] = {}
    extra_labels: dict[str, list[str]] = {}
    for name in counters.names(snap.afxdp):
        family, labels = metric_of(name)
        if family == DWELL:
            continue
        if family not in fams:
            extra_labels[family] = list(labels)
            help_text = HELP.get(family) or counters.INFO[name].meaning
            fams[family] = CounterMetricFamily(family, help_text, labels=["sf", *labels])
        for sf in values:
            fams[family].add_metric([sf, *(labels[k] for k in extra_labels[family])], values[sf][name])
    dwell = HistogramMetricFamily(DWELL, HELP[DWELL], labels=["sf"], unit="seconds")
    for i, sf in enumerate(sf_names):  # frames of no SF have no dwell time
        if not sf:
            continue
        dwell.add_metric([sf], dwell_buckets(snap.dwell_hist(i)), values[sf][DWELL_SUM] / 1e9)
    in_flight = GaugeMetricFamily(f"{PREFIX}_cache_in_flight_packets", HELP[f"{PREFIX}_cache_in_flight_packets"],
                                  value=counters.in_flight_of(snap.total()))
    return [info_family(info), *fams.values(), dwell, in_flight]


def info_family(info: dict[str, str]) -> InfoMetricFamily:
    from prometheus_client.core import InfoMetricFamily

    return InfoMetricFamily(PREFIX, "The running proxy: instance name, backend, key, topology, version", value=info)


def version() -> str:
    try:
        return metadata.version("afxdp-proxy")
    except metadata.PackageNotFoundError:
        return "unknown"


class ProxyCollector:
    """A prometheus_client collector that reads the watched backend's counters at scrape time.

    Between watch() and unwatch() a scrape reads backend.snapshot() under a lock, so unwatch()
    returns only once no scrape is reading: the backend may then close its maps and files."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backend: Backend | None = None
        self._sf_names: list[str] = []
        self._info: dict[str, str] = {}

    def watch(self, backend: Backend, cfg: ProxyConfig, name: str) -> None:
        """Read backend from now on. Its counter rows are its SFs' slots (afxdp_proxy/reload.py),
        named by its `rows` when it has them ("" for a slot no SF used; a removed SF's row keeps
        its name, as in `stats`), else one per SF of cfg in order."""
        rows = getattr(backend, "rows", None)
        with self._lock:
            self._backend = backend
            self._sf_names = list(rows) if rows else [sf.name for sf in cfg.sfs]
            self._info = {"name": name, "backend": cfg.backend, "key": cfg.key, "topology": cfg.topology,
                          "version": version()}

    def unwatch(self) -> None:
        with self._lock:
            self._backend = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._backend is None:
                return  # not started yet, or stopping: nothing to read
            snap = self._backend.snapshot()
            sf_names, info = list(self._sf_names), dict(self._info)
        yield from families(snap, sf_names, info)


class Exporter:
    """The metrics endpoint of one proxy: prometheus_client's HTTP server in a daemon thread, bound
    and serving from the start (only the process's figures until watch()). Without [metrics]
    (mcfg None) it serves nothing. A bind error is a ConfigError naming metrics.listen."""

    def __init__(self, mcfg: MetricsConfig | None) -> None:
        self.collector = ProxyCollector()
        self.listen = mcfg.listen if mcfg else None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        if mcfg is None:
            return
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.platform_collector import PlatformCollector
        from prometheus_client.process_collector import ProcessCollector

        registry = CollectorRegistry()
        registry.register(self.collector)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        try:
            self._server, self._thread = start_http_server(mcfg.port, mcfg.host, registry=registry)
        except OSError as e:
            raise ConfigError(f"metrics.listen: cannot listen on {mcfg.listen}: {_why(e)}") from None
        log.info("metrics on http://%s/metrics", mcfg.listen)

    def watch(self, backend: Backend, cfg: ProxyConfig, name: str) -> None:
        """Serve this (started) backend's counters (a reload calls it again with the new one)."""
        self.collector.watch(backend, cfg, name)

    def unwatch(self) -> None:
        """Stop reading the backend (returns once no scrape is): call it before the backend stops."""
        self.collector.unwatch()

    def close(self) -> None:
        """Stop serving (waiting for a scrape in progress) and release the port; safe to call twice."""
        self.collector.unwatch()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None


def listen_problem(mcfg: MetricsConfig) -> str | None:
    """Why the endpoint could not listen on mcfg.listen (as `run` would say it), or None: the
    address resolved and a TCP socket bound to it, with SO_REUSEADDR as the HTTP server binds,
    then closed again. For `check`."""
    try:
        infos = socket.getaddrinfo(mcfg.host, mcfg.port, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
    except OSError as e:
        return f"cannot listen on {mcfg.listen}: {_why(e)}"
    return None


def _why(e: OSError) -> str:
    if isinstance(e, socket.gaierror):
        return f"{e.strerror}; use an address, or a name this host resolves"
    hints = {
        "EADDRINUSE": "something else listens there (another proxy?); pick another port",
        "EADDRNOTAVAIL": "no interface of this network namespace has that address; use one it has, "
                         "e.g. 127.0.0.1",
        "EACCES": "ports below 1024 need CAP_NET_BIND_SERVICE; pick a port above 1023",
    }
    hint = hints.get(errno.errorcode.get(e.errno or 0, ""), "")
    return f"{e.strerror or e}" + (f"; {hint}" if hint else "")

