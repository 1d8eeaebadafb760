"""Per-packet cost of the proxy's BPF programs, from BPF_PROG_TEST_RUN or in place under load.

Test runs (the default). Every packet is distinct (its own IP id and sequence
numbers), so RX really inserts and TX really finds, takes and pushes an entry.
Packets go through as they do in a proxy: TX of a packet follows RX of the next
--in-flight ones, in a cache of --cache-entries (default: the configuration's).
Each run is one BPF_PROG_TEST_RUN with repeat=1 and the kernel's own per-run
duration; the floor programs (XDP_PASS, one LRU-hash update of the proxy's key
and value sizes) are timed the same way in the same invocation, and the results
are quoted as ratios against them.

In place (--in-place): a testbed of --topology, the proxy started as an operator
starts it (`afxdp-proxy run`), and the kernel's BPF run-time statistics of its RX
and TX programs under load: the 64 B generator (--load gen) or one iperf3 TCP
flow (--load tcp), both on CPU 0 as in `afxdp-proxy bench`.

--reps N repeats the measurement N times and gives each figure's median [min-max]
over the repetitions: one run's figures move with the machine's load (RX / LRU floor
1.35, 1.36, then 0.99 in three runs of the defaults), the spread shows by how much.

--vs-static measures the static proxy (same depth, topology and method) next to
the caching one, --reps times in alternating order (caching first, then static
first, ...), and gives the caching proxy's RX+TX as a ratio to the static
proxy's of the same repetition: the machine's load drifts, ratios of neighbours
hold. --trace N (in place) does the same for the caching proxy with
`afxdp-proxy trace`'s sampling on, 1 in N packets, against itself with it off:
what tracing costs while a tracer (in this process) reads the events.

Programs per configuration: attached runs XDP RX (pop, cache, redirect) and
XDP TX (look up, push, redirect); inline runs XDP RX (pop, cache, pass) and TC
egress TX. In meta mode, TX gets the mark RX put in the packet's XDP metadata
(the TC ingress shim that copies it into skb->mark is not timed: it is a load
and a store). The static backend pops at RX and pushes its configured stack.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import threading
from typing import Any

from afxdp_proxy import bpf, counters, state, trace
from afxdp_proxy._native import ffi
from afxdp_proxy.backends.kernel import ProxyObject
from afxdp_proxy.config import CACHE_MAX, CACHE_MIN, CACHE_WAYS, DEFAULT_CACHE_ENTRIES, ProxyConfig, SfConfig
from afxdp_proxy.key import MAX_LABELS
from afxdp_proxy.lab.bench.stats import Summary, summarize
from afxdp_proxy.lab.frames import ipv4_tcp, mpls_frame
from afxdp_proxy.mpls import Lse, make_stack

SF_LABEL = 1000
TX_IFINDEX = 1  # test runs do not redirect; any index will do
META_LEN = 4  # meta mode: RX leaves the key (a __u32) in front of the frame as XDP metadata
IN_FLIGHT = 100  # packets whose RX runs between a packet's RX and its TX (a 1 Mpps load with 100 us of dwell)


class CacheTooSmall(RuntimeError):
    """Test runs: entries were evicted before their TX, which then did not take the path measured."""


def chain(depth: int) -> list[Lse]:
    """The stack of `depth` labels the benchmarks use: the SF's label, then the rest of the chain."""
    return make_stack([SF_LABEL] + [2000 + i for i in range(depth - 1)], tc=[i % 8 for i in range(depth)])


def _proxy(topology: str, backend: str = "kernel", key: str = "hash", static_stack: list[Lse] | None = None,
           cache_entries: int = DEFAULT_CACHE_ENTRIES) -> ProxyObject:
    cfg = ProxyConfig(backend=backend, key=key, topology=topology, cache_entries=cache_entries,
                      sfs=(SfConfig("sf", SF_LABEL, "a", "b"),))
    p = ProxyObject(cfg)
    sf = ffi.new("struct axp_sf *", {"label": SF_LABEL, "net_out_ifindex": TX_IFINDEX,
                                     "to_sf_ifindex": TX_IFINDEX, "from_sf_ifindex": TX_IFINDEX})
    for j, e in enumerate(static_stack or []):
        sf.static_stack[j] = int.from_bytes(e.to_bytes(), "little")  # wire order in a __be32
    sf.static_depth = len(static_stack or [])
    p.add_sf(0, sf, TX_IFINDEX)
    return p


def frames(depth: int, n: int) -> list[bytes]:
    stack = chain(depth)
    return [mpls_frame(stack, ipv4_tcp("10.0.0.1", "10.0.0.2", i & 0xFFFF, 40000, 5201, 1000 + i * 1448, 7 + i))
            for i in range(n)]


def _run_each(prog_fd: int, inputs: list[bytes], want: int, ctxs: list[bytes] | None = None
              ) -> tuple[list[float], list[bytes]]:
    times, outs = [], []
    for i, data in enumerate(inputs):
        r = _run(prog_fd, data, want, ctxs[i] if ctxs else None)
        times.append(float(r.duration_ns))
        outs.append(r.data)
    return times, outs


def _run(prog_fd: int, data: bytes, want: int, ctx: bytes | None = None) -> Any:
    r = bpf.test_run(prog_fd, data, ctx=ctx)
    if r.retval != want:
        raise RuntimeError(f"program returned {r.retval}, expected {want}")
    return r


def _mark_ctx(meta_prefixed: bytes) -> tuple[bytes, bytes]:
    """Split RX's output in meta mode into (TC ctx with skb->mark set, the frame)."""
    mark = struct.unpack("=I", meta_prefixed[:META_LEN])[0]
    # struct __sk_buff starts len, pkt_type, mark; the kernel accepts a shorter ctx
    return struct.pack("=III", 0, 0, mark), meta_prefixed[META_LEN:]


def samples(depth: int = 8, packets: int = 2000, topology: str = "inline", backend: str = "kernel",
            key: str = "hash", in_flight: int = IN_FLIGHT, cache_entries: int = DEFAULT_CACHE_ENTRIES
            ) -> dict[str, list[float]]:
    """ns per run of RX, TX and both floors at `depth` labels, all in this one invocation.
    A packet's TX runs after the RX of the in_flight packets behind it."""
    static = backend == "static"
    ins = frames(depth, packets)
    floor = bpf.BpfObject(bpf.object_path("floor"))
    proxy = _proxy(topology, backend, key, chain(depth)[1:] if static else None, cache_entries)
    try:
        floor.load()
        rx_want = bpf.XDP_REDIRECT if topology == "attached" else bpf.XDP_PASS
        rx_fd = proxy.prog_fd("axp_xdp_rx")
        tx_fd, tx_want = ((proxy.prog_fd("axp_xdp_tx"), bpf.XDP_REDIRECT) if topology == "attached"
                          else (proxy.prog_fd("axp_tc_tx"), bpf.TC_ACT_OK))
        rx_ns: list[float] = []
        tx_ns: list[float] = []
        popped: list[bytes] = []
        for i in range(packets + in_flight):
            if i < packets:
                r = _run(rx_fd, ins[i], rx_want)
                rx_ns.append(float(r.duration_ns))
                popped.append(r.data)
            if i >= in_flight:
                out, ctx = popped[i - in_flight], None
                if topology == "inline" and key == "meta" and not static:
                    ctx, out = _mark_ctx(out)
                tx_ns.append(float(_run(tx_fd, out, tx_want, ctx).duration_ns))
        pass_ns, _ = _run_each(floor.prog_fd("floor_xdp_pass"), ins, bpf.XDP_PASS)
        lru_ns, _ = _run_each(floor.prog_fd("floor_lru_update"), ins, bpf.XDP_PASS)
        c = counters.read_map(proxy.counters, counters.rows_of(1)).total()
        # every run took the real path: popped and cached, then found and pushed (or sent plain)
        if c["evictions"] and not static:
            raise CacheTooSmall(f"{c['evictions']} of {packets} packets' entries were evicted before their TX "
                                f"({cache_entries} cache entries, {in_flight} in flight), so TX did not find them")
        if c["rx_popped"] != packets or c["tx_pushed"] + c["tx_plain"] != packets:
            raise RuntimeError(f"expected {packets} pops and pushes, counters say {c}")
    finally:
        proxy.close()
        floor.close()
    return {"rx": rx_ns, "tx": tx_ns, "floor_xdp_pass": pass_ns, "floor_lru_update": lru_ns}


def quantiles(s: Summary) -> dict[str, float]:
    """A summarize(v, (0.1, 0.9)) as JSON: its spread named for what it is."""
    return {"median": s.median, "p10": s.lo, "p90": s.hi, "n": s.n}


def over_reps(values: list[float]) -> dict[str, float]:
    """median, min and max over repetitions, as JSON."""
    s = summarize(values)
    return {"median": s.median, "min": s.lo, "max": s.hi, "n": s.n}


def _p10_p90(d: dict[str, float]) -> Summary:
    return Summary(d["median"], d["p10"], d["p90"], int(d["n"]))


def _min_max(d: dict[str, float]) -> Summary:
    return Summary(d["median"], d["min"], d["max"], int(d["n"]))


def measure(depth: int = 8, packets: int = 2000, topology: str = "inline", backend: str = "kernel",
            key: str = "hash", in_flight: int = IN_FLIGHT, cache_entries: int = DEFAULT_CACHE_ENTRIES
            ) -> dict[str, Any]:
    """Summaries (median [p10-p90]) of samples() and the ratios to the LRU floor."""
    res = {name: summarize(v, (0.1, 0.9))
           for name, v in samples(depth, packets, topology, backend, key, in_flight, cache_entries).items()}
    lru = res["floor_lru_update"].median
    return {
        "depth": depth, "packets": packets, "topology": topology, "backend": backend, "key": key,
        "in_flight": in_flight, "cache_entries": cache_entries,
        "ns": {k: quantiles(v) for k, v in res.items()},
        "ratio_to_lru_floor": {"rx": res["rx"].median / lru, "tx": res["tx"].median / lru},
    }


def _cache_words(backend: str, entries: int) -> str:
    """", N cache entries" for a report's heading; nothing for the static proxy, which has no cache."""
    return "" if backend == "static" else f", {entries} cache entries"


def report(r: dict[str, Any]) -> str:
    cache = _cache_words(r["backend"], r["cache_entries"])
    key = "" if r["backend"] == "static" else f", key {r['key']}"
    lines = [f"per-packet cost, {r['depth']} labels, {r['packets']} distinct packets ({r['in_flight']} in flight"
             f"{cache}), {r['backend']} backend{key}, topology {r['topology']} "
             "(BPF_PROG_TEST_RUN, repeat=1 each; median [p10-p90] ns over the packets)"]
    for name, s in r["ns"].items():
        lines.append(f"  {name:18} {_p10_p90(s).fmt(' ns')}")
    ratio = r["ratio_to_lru_floor"]
    lines.append(f"  RX / LRU floor = {ratio['rx']:.2f}x   TX / LRU floor = {ratio['tx']:.2f}x   (target <= 2x)")
    return "\n".join(lines)


class Tracing:
    """`afxdp-proxy trace`'s sampling (1 in every) on a running proxy, its events read as trace
    reads them, in a thread, until close(); `events` counts them."""

    def __init__(self, name: str, every: int) -> None:
        self.tracer = trace.Tracer(state.running()[name])
        self.events = 0
        self._stop = threading.Event()
        self.tracer.start(trace.Sampling(every))
        self._thread = threading.Thread(target=self._read, name="costs-trace", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.wait(trace.POLL):
            self.events += len(self.tracer.read())

    def close(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        lost = self.tracer.lost()
        self.tracer.close()
        return {"events": self.events, "lost": lost}


def in_place(tb: Any, gen: Any, backend: str, key: str, depth: int, cache_entries: int, load: str = "gen",
             seconds: float = 1.0, trace_every: int = 0) -> dict[str, Any]:
    """ns per run of the RX and TX programs of a proxy started on testbed tb, under load: the
    kernel's run-time statistics while the generator (gen, 64 B frames) or iperf3 (tcp) runs.
    trace_every: sample 1 in that many packets meanwhile, as `afxdp-proxy trace` does."""
    from afxdp_proxy.lab.bench import metrics
    from afxdp_proxy.lab.bench.variants import Variant
    from afxdp_proxy.lab.proxyproc import ProxyProcess

    v = Variant(f"{backend}-{key}", tb.topology, backend, key)
    tb.set_stacks([chain(depth)])
    proxy = ProxyProcess(tb.ns_proxy, v.config(tb, depth, cache_entries=cache_entries),
                         name=f"{tb.prefix}-costs").start()
    tracing = None
    try:
        progs = metrics.programs_of(proxy.pid)
        if trace_every:
            tracing = Tracing(proxy.name, trace_every)
        if load == "gen":
            r = metrics.proxy_cpu(tb, gen, chain(depth), seconds, None, progs)
            per_prog, extra = r["programs"], {"received": r["received"]}
        else:
            per_prog, t = metrics.run_time_during(progs, lambda: tb.iperf3(
                seconds=max(1, round(seconds)), affinity=metrics.IPERF_AFFINITY))
            extra = {"tcp_gbps": t.bits_per_second / 1e9}
        if tracing is not None:
            extra["trace"] = tracing.close()
            tracing = None
    finally:
        if tracing is not None:
            tracing.close()
        proxy.stop()
    tx = "axp_xdp_tx" if tb.topology == "attached" else "axp_tc_tx"
    ns = {"rx": per_prog.get("axp_xdp_rx", {}).get("ns_per_run"), "tx": per_prog.get(tx, {}).get("ns_per_run")}
    if ns["rx"] is None or ns["tx"] is None:
        raise RuntimeError(f"the {backend} proxy's programs did not run under the load: {per_prog}")
    return {"ns": ns, "programs": per_prog, **extra}


def side_by_side(measure_one: Any, reps: int, backend: str, key: str) -> dict[str, Any]:
    """measure_one(backend, key) -> {"rx": ns, "tx": ns, ...} for the caching and the static
    proxy, reps times in alternating order; the ratio of RX+TX per repetition."""
    runs = []
    for rep in range(reps):
        order = [(backend, key), ("static", "hash")]
        got = {b: measure_one(b, k) for b, k in (order if rep % 2 == 0 else order[::-1])}
        c, s = got[backend], got["static"]
        runs.append({"proxy": c, "static": s, "ratio": (c["rx"] + c["tx"]) / (s["rx"] + s["tx"])})
    return {
        "runs": runs,
        "summary": {
            who: {d: over_reps([r[who][d] for r in runs]) for d in ("rx", "tx")} for who in ("proxy", "static")
        },
        "ratio_to_static": over_reps([r["ratio"] for r in runs]),
    }


def report_side_by_side(r: dict[str, Any], label: str, how: str) -> str:
    n = len(r["runs"])
    lines = [f"side by side, {how}: {n} repetition(s) in alternating order, median [min-max] over them"]
    for who, name in (("proxy", label), ("static", "static")):
        rx, tx = (_min_max(r["summary"][who][d]) for d in ("rx", "tx"))
        lines.append(f"  {name:18} RX {rx.fmt(' ns', 0)}   TX {tx.fmt(' ns', 0)}")
    ratio = _min_max(r["ratio_to_static"])
    lines.append(f"  {label} RX+TX / static RX+TX = {ratio.median:.2f}x [{ratio.lo:.2f}-{ratio.hi:.2f}] "
                 "(per repetition; target <= 1.5x)")
    return "\n".join(lines)


def traced_vs_not(measure_one: Any, reps: int, every: int) -> dict[str, Any]:
    """measure_one(trace_every) -> {"rx": ns, "tx": ns, ...} with tracing off (0) and on (1 in
    every), reps times in alternating order; the ratio of RX+TX, on to off, per repetition."""
    runs = []
    for rep in range(reps):
        order = [0, every] if rep % 2 == 0 else [every, 0]
        got = {n: measure_one(n) for n in order}
        off, on = got[0], got[every]
        runs.append({"off": off, "on": on, "ratio": (on["rx"] + on["tx"]) / (off["rx"] + off["tx"])})
    return {
        "every": every, "runs": runs,
        "summary": {who: {d: over_reps([r[who][d] for r in runs]) for d in ("rx", "tx")}
                    for who in ("off", "on")},
        "ratio_on_to_off": over_reps([r["ratio"] for r in runs]),
    }


def report_traced(r: dict[str, Any], label: str, how: str) -> str:
    n = len(r["runs"])
    lines = [f"tracing on (1 in {r['every']}) and off, {how}: {n} repetition(s) in alternating order, "
             "median [min-max] over them"]
    for who in ("off", "on"):
        rx, tx = (_min_max(r["summary"][who][d]) for d in ("rx", "tx"))
        lines.append(f"  {label + ' trace ' + who:24} RX {rx.fmt(' ns', 0)}   TX {tx.fmt(' ns', 0)}")
    ratio = _min_max(r["ratio_on_to_off"])
    events = [run["on"]["detail"].get("trace", {}) for run in r["runs"]]
    lines.append(f"  RX+TX on / off = {ratio.median:.3f}x [{ratio.lo:.3f}-{ratio.hi:.3f}] (per repetition; "
                 f"target < 1.05x); events read {sum(e.get('events', 0) for e in events)}, "
                 f"lost {sum(e.get('lost', 0) for e in events)}")
    return "\n".join(lines)


def repeated(measure_one: Any, reps: int, names: tuple[str, ...]) -> dict[str, Any]:
    """measure_one() -> {name: number, ..., "detail": ...} reps times; each name's median [min-max] over them.
    One run's figures move with the machine's load: only the spread over runs shows by how much."""
    runs = [measure_one() for _ in range(reps)]
    return {"runs": runs, "summary": {n: over_reps([r[n] for r in runs]) for n in names}}


def report_repeated(r: dict[str, Any], how: str, rows: tuple[tuple[str, str], ...], unit: str, digits: int) -> str:
    """rows: (name in r["summary"], how the line calls it)."""
    lines = [f"{how}: {len(r['runs'])} repetition(s), median [min-max] over them"]
    lines += [f"  {text:18} {_min_max(r['summary'][name]).fmt(unit, digits)}" for name, text in rows]
    return "\n".join(lines)


# options that only one mode takes: given in the other, they would do nothing (their defaults: DEFAULTS)
TEST_RUN_ONLY = {"packets": "--packets", "in_flight": "--in-flight"}
IN_PLACE_ONLY = {"load": "--load", "seconds": "--seconds", "trace": "--trace"}
CACHING_ONLY = {"key": "--key", "cache_entries": "--cache-entries"}  # the static proxy has neither
DEFAULTS: dict[str, Any] = {"packets": 2000, "in_flight": IN_FLIGHT, "load": "gen", "seconds": 1.0, "trace": 0,
                            "key": "hash", "cache_entries": DEFAULT_CACHE_ENTRIES}

EPILOG = f"""\
spreads: a single measurement prints, per program, the median over its packets with their p10-p90
(JSON: ns.<program>.median, p10, p90, n); over --reps repetitions, the median of the repetitions'
figures with their min-max (JSON: summary.<figure>.median, min, max, n; runs: each repetition).
--packets and --in-flight are for test runs, --load, --seconds and --trace for --in-place;
--key and --cache-entries for the caching proxy (not --backend static). Cache entries are
rounded up to whole sets of {CACHE_WAYS}, as the proxy rounds [proxy] cache_entries.
"""


def _writable(path: str) -> str | None:
    """Why the results could not be written to path, or None; checked by opening it, without
    truncating a file that is there or leaving one that was not."""
    try:
        if os.path.exists(path):
            open(path, "a").close()
        else:
            open(path, "x").close()
            os.unlink(path)
    except OSError as e:
        return e.strerror or str(e)
    return None


def _check(args: argparse.Namespace) -> str | None:
    """The first problem with the options, as a one-line error naming the option and the fix, or None;
    fills in the defaults of the options left out. All before anything is measured or a testbed built."""
    given = set(vars(args))
    if args.in_place:
        for dest, flag in TEST_RUN_ONLY.items():
            if dest in given:
                return f"{flag}: for test runs only, it does nothing with --in-place; leave it out"
    else:
        for dest, flag in IN_PLACE_ONLY.items():
            if dest in given:
                return f"{flag}: for --in-place only, test runs do not use it; add --in-place or leave it out"
    if args.backend == "static":
        for dest, flag in CACHING_ONLY.items():
            if dest in given:
                return f"{flag}: the static proxy keeps no cache and no key; leave it out with --backend static"
    for dest, value in DEFAULTS.items():
        if dest not in given:
            setattr(args, dest, value)
    if not 1 <= args.depth <= MAX_LABELS:
        return f"--depth {args.depth}: the proxy takes 1 to {MAX_LABELS} labels; give one of them"
    if args.packets < 1:
        return f"--packets {args.packets}: give 1 or more"
    if args.in_flight < 0:
        return f"--in-flight {args.in_flight}: give 0 or more"
    if not CACHE_MIN <= args.cache_entries <= CACHE_MAX:
        return (f"--cache-entries {args.cache_entries}: out of range; give {CACHE_MIN} to {CACHE_MAX}, "
                "as [proxy] cache_entries takes")
    entries = ProxyConfig(cache_entries=args.cache_entries).cache_sets * CACHE_WAYS
    if not args.in_place and args.backend != "static" and args.in_flight >= entries:
        # a packet's TX finds its entry only if it and the in_flight behind it all fit
        return (f"--cache-entries {args.cache_entries}: holds {entries}, fewer than --in-flight {args.in_flight} "
                "+ 1; give more entries (several times --in-flight) or fewer in flight")
    if args.reps < 1:
        return f"--reps {args.reps}: give 1 or more"
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        return f"--seconds {args.seconds}: give a finite number of seconds above 0, e.g. 1"
    if "trace" in given:
        if args.trace < 1 or args.trace & (args.trace - 1) or args.trace > trace.MAX_SAMPLE:
            return f"--trace {args.trace}: N samples 1 in N packets; give a power of two from 1 to {trace.MAX_SAMPLE}"
        if args.vs_static or args.backend == "static":
            return "--trace: measures the caching proxy against itself; leave out --vs-static and --backend static"
    if args.key == "meta" and args.topology != "inline":
        return "--key meta: needs --topology inline (TC egress reads the mark); give --topology inline or --key hash"
    if args.vs_static and args.backend == "static":
        return "--vs-static: compares the caching proxy (--backend kernel) with the static one; leave out --backend"
    if args.json:
        why = _writable(args.json)
        if why:
            return f"--json {args.json}: cannot write it ({why}); give a path in a writable directory"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="costs", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--depth", type=int, default=8, help=f"labels per packet, 1 to {MAX_LABELS} (default %(default)s)")
    p.add_argument("--packets", type=int,
                   help=f"test runs: distinct packets per program (default {DEFAULTS['packets']})")
    p.add_argument("--topology", choices=("inline", "attached"), default="inline",
                   help="inline: TX at TC egress; attached: TX at XDP (default %(default)s)")
    p.add_argument("--backend", choices=("kernel", "static"), default="kernel",
                   help="the caching proxy (kernel) or the static one (default %(default)s)")
    p.add_argument("--key", choices=("hash", "meta"), help=f"the caching proxy's key (default {DEFAULTS['key']})")
    p.add_argument("--in-flight", type=int,
                   help=f"test runs: packets whose RX runs between a packet's RX and its TX (default {IN_FLIGHT})")
    p.add_argument("--cache-entries", type=int,
                   help=f"the cache's size, as [proxy] cache_entries, {CACHE_MIN} to {CACHE_MAX} "
                   f"(default {DEFAULT_CACHE_ENTRIES})")
    p.add_argument("--in-place", action="store_true", default=False,
                   help="measure on a testbed under load (kernel run-time statistics) instead of test runs")
    p.add_argument("--load", choices=("gen", "tcp"),
                   help="--in-place: 64 B frames from the generator or one iperf3 TCP flow "
                   f"(default {DEFAULTS['load']})")
    p.add_argument("--seconds", type=float,
                   help=f"--in-place: seconds of load per measurement (default {DEFAULTS['seconds']:g})")
    p.add_argument("--reps", type=int, default=1,
                   help="repeat the measurement this many times and give median [min-max] over them; with "
                   "--vs-static or --trace, in alternating order (default %(default)s)")
    p.add_argument("--vs-static", action="store_true", default=False,
                   help="also measure the static proxy (same depth, topology and method) in this invocation and "
                   "give the caching proxy's RX+TX as a ratio to it")
    p.add_argument("--trace", type=int, metavar="N",
                   help="--in-place: measure with `afxdp-proxy trace`'s sampling on (1 in N, N a power of two) and "
                   "off, --reps times in alternating order, and give RX+TX on as a ratio to off")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    problem = _check(args)
    if problem:
        print(f"costs: error: {problem}", file=sys.stderr)
        return 2
    label = args.backend if args.backend == "static" else f"{args.backend}-{args.key}"
    try:
        r = _in_place(args, label) if args.in_place else _test_runs(args, label)
    except CacheTooSmall as e:
        print(f"costs: error: {e}; give a larger --cache-entries or a smaller --in-flight", file=sys.stderr)
        return 2
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(r, f, indent=1)
        except OSError as e:
            print(f"costs: error: --json {args.json}: {e.strerror or e}", file=sys.stderr)
            return 1
    return 0


def _test_runs(args: argparse.Namespace, label: str) -> dict[str, Any]:
    def timed(backend: str, key: str) -> dict[str, Any]:
        m = measure(args.depth, args.packets, args.topology, backend, key, args.in_flight, args.cache_entries)
        return {"rx": m["ns"]["rx"]["median"], "tx": m["ns"]["tx"]["median"],
                "floor_xdp_pass": m["ns"]["floor_xdp_pass"]["median"],
                "floor_lru_update": m["ns"]["floor_lru_update"]["median"],
                "rx_to_lru_floor": m["ratio_to_lru_floor"]["rx"], "tx_to_lru_floor": m["ratio_to_lru_floor"]["tx"],
                "detail": m}

    cache = _cache_words(args.backend, args.cache_entries)
    how = (f"BPF_PROG_TEST_RUN, {args.depth} labels, {args.packets} distinct packets, {args.in_flight} in "
           f"flight{cache}, topology {args.topology}; per repetition the median ns per run")
    if args.vs_static:
        r = side_by_side(timed, args.reps, args.backend, args.key)
        print(report(r["runs"][0]["proxy"]["detail"]))  # the first repetition's programs and floors in full
        print(report_side_by_side(r, label, how))
        return r
    r = repeated(lambda: timed(args.backend, args.key), args.reps,
                 ("rx", "tx", "floor_xdp_pass", "floor_lru_update", "rx_to_lru_floor", "tx_to_lru_floor"))
    if args.reps == 1:
        print(report(r["runs"][0]["detail"]))
        return r
    print(report_repeated(r, f"per-packet cost, {label}, {how}",
                          (("rx", "RX"), ("tx", "TX"), ("floor_xdp_pass", "floor_xdp_pass"),
                           ("floor_lru_update", "floor_lru_update")), " ns", 1))
    print(report_repeated(r, "ratios to the LRU floor of the same repetition (target <= 2x)",
                          (("rx_to_lru_floor", "RX / LRU floor"), ("tx_to_lru_floor", "TX / LRU floor")), "x", 2))
    return r


def _in_place(args: argparse.Namespace, label: str) -> dict[str, Any]:
    from afxdp_proxy.lab.bench.gen import Generator
    from afxdp_proxy.lab.testbed import Testbed

    with Testbed(args.topology) as tb, Generator() as gen:
        def one(backend: str, key: str, every: int = 0) -> dict[str, Any]:
            r = in_place(tb, gen, backend, key, args.depth, args.cache_entries, args.load, args.seconds,
                         trace_every=every)
            return {**r["ns"], "detail": r}

        cache = _cache_words(args.backend, args.cache_entries)
        how = (f"in place, {args.depth} labels{cache}, topology {args.topology}, "
               f"under the {'64 B generator' if args.load == 'gen' else 'iperf3 TCP'} load for "
               f"{args.seconds:g} s (kernel run-time statistics, ns per run)")
        if args.trace:
            r = traced_vs_not(lambda every: one(args.backend, args.key, every), args.reps, args.trace)
            print(report_traced(r, label, how))
        elif args.vs_static:
            r = side_by_side(one, args.reps, args.backend, args.key)
            print(report_side_by_side(r, label, how))
        else:
            r = repeated(lambda: one(args.backend, args.key), args.reps, ("rx", "tx"))
            print(report_repeated(r, how, (("rx", f"{label} RX"), ("tx", f"{label} TX")), " ns", 0))
    return r


if __name__ == "__main__":
    sys.exit(main())
