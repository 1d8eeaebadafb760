"""`afxdp-proxy bench`: the comparative benchmark, static vs caching, kernel vs AF_XDP, across label depths.

For every repetition, label depth and variant (baselines included) it measures:
  TCP throughput    iperf3, one flow, both ends on CPU 0
  packet rate       64 B and 1500 B frames (sizes before the stack) from the BPF
                    live-frames generator on CPU 0, counted by the receiver
  latency           ICMP echo round trips through the path, one at a time: p50, p99
  proxy CPU/packet  BPF run time of the proxy's programs + the proxy process's CPU,
                    per packet the receiver counted, under the 64 B load
  BPF cost          BPF_PROG_TEST_RUN of RX and TX next to XDP_PASS and LRU-update floors
and once per repetition and proxied variant, header fidelity for the dynamic chain.

Variants are interleaved within each repetition (each depth runs every variant, in an
order rotated per repetition), so drift on this small machine hits them alike; every
figure is also given as a ratio to the baseline of the same topology measured at the
same repetition and depth. Output in --out: bench.json (environment and every sample),
bench.md (summary table), throughput.png, overview.png, fidelity.png; while it runs,
bench.partial.json holds what has been measured so far.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn, TextIO

from afxdp_proxy import signals
from afxdp_proxy.key import MAX_LABELS
from afxdp_proxy.lab import netns
from afxdp_proxy.lab.bench import costs, metrics
from afxdp_proxy.lab.bench.env import environment
from afxdp_proxy.lab.bench.gen import Generator
from afxdp_proxy.lab.bench.stats import summarize
from afxdp_proxy.lab.bench.variants import DEFAULT, VARIANTS, Variant, config_problem, problem, select
from afxdp_proxy.lab.proxyproc import ProxyProcess
from afxdp_proxy.lab.testbed import Testbed, dynamic_stacks

DYNAMIC = None  # the depth slot of the dynamic-chain (fidelity) measurement
FRAME_SIZES = (64, 1500)


@dataclass(frozen=True)
class Settings:
    depths: tuple[int, ...] = (1, 2, 4, 8, 12, 16)
    reps: int = 3
    variants: tuple[str, ...] = DEFAULT
    tcp_seconds: float = 5.0  # iperf3 takes whole seconds
    tcp_omit: int = 1  # seconds of slow start iperf3 leaves out of its figure
    pkt_seconds: float = 1.0
    cpu_seconds: float = 1.0
    ping_count: int = 500
    ping_interval: float = 0.002
    cost_packets: int = 2000
    fidelity_seconds: float = 2.0  # whole seconds too
    quick: bool = False
    flows: int = 1  # TCP flows (iperf3 -P) and UDP flows of the packet rate, sent from every CPU when > 1


QUICK = Settings(depths=(1, 16), reps=1, tcp_seconds=1.0, tcp_omit=0, pkt_seconds=0.2, cpu_seconds=0.2,
                 ping_count=50, ping_interval=0.002, cost_packets=200, fidelity_seconds=1.0, quick=True)


# ---------------------------------------------------------------------- progress


class Progress:
    """A one-line progress bar on stderr (a line per step when stderr is not a terminal)."""

    def __init__(self, total: int, out: TextIO = sys.stderr, width: int = 28) -> None:
        self.total, self.done, self.out, self.width = max(total, 1), 0, out, width
        self.t0 = time.monotonic()
        self.tty = out.isatty()
        self._last = ""

    def show(self, label: str) -> None:
        el = time.monotonic() - self.t0
        frac = min(self.done / self.total, 1.0)
        eta = f" ~{_mmss(el / self.done * (self.total - self.done))} left" if self.done else ""
        bar = "#" * int(frac * self.width) + "-" * (self.width - int(frac * self.width))
        line = f"[{bar}] {self.done}/{self.total} {_mmss(el)}{eta}  {label}"
        if self.tty:
            self.out.write("\r" + line[:160].ljust(len(self._last)))
            self._last = line[:160]
        elif label != self._last:
            self.out.write(line + "\n")
            self._last = label
        self.out.flush()

    def step(self, label: str = "") -> None:
        self.done += 1
        self.show(label)

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


def _mmss(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s"


# ---------------------------------------------------------------------- the run


@dataclass
class Run:
    settings: Settings
    variants: list[Variant]
    samples: list[dict[str, Any]] = field(default_factory=list)
    unavailable: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    points: list[dict[str, Any]] = field(default_factory=list)
    whole_run_unavailable: dict[str, str] = field(default_factory=dict)
    prefixes: list[str] = field(default_factory=list)  # this run's testbeds

    def add(self, rep: int, v: Variant, depth: int | None, metric: str, value: float, **detail: Any) -> None:
        self.samples.append({"rep": rep, "variant": v.name, "depth": depth, "metric": metric, "value": value,
                             "detail": detail})


def _stacks_for(v: Variant, depth: int | None, tb: Testbed) -> list[list[Any]]:
    if not v.labelled:
        return []
    return dynamic_stacks(tb.sf_label) if depth is DYNAMIC else [costs.chain(depth)]


def _env(v: Variant) -> dict[str, str] | None:
    """The lab-only busy polling of the AF_XDP sockets (native/axp_xsk.c, AXP_BUSY_POLL)."""
    bp = v.lab("busy_poll")
    return None if bp is None else {"AXP_BUSY_POLL": str(bp).replace("/", ",")}


def _proxy_name(tb: Testbed, v: Variant) -> str:
    """proxy.name for v: its name in the letters a name may hold ("afxdp:cpu=1" -> "afxdp.cpu-1")."""
    return f"{tb.prefix}-{v.name}".replace(":", ".").replace("=", "-").replace("/", "_")[:64]


def _start_proxy(run: Run, tb: Testbed, v: Variant, depth: int | None, rep: int
                 ) -> tuple[ProxyProcess | None, dict[int, str]]:
    """Start v's proxy for depth; (None, {}) and an 'unavailable' record when it cannot run."""
    toml = v.config(tb, depth)
    reason = config_problem(toml)
    proxy = None
    if reason is None:
        try:
            proxy = ProxyProcess(tb.ns_proxy, toml, name=_proxy_name(tb, v), module=v.runner,
                                 env=_env(v)).start()
        except (RuntimeError, TimeoutError) as e:
            reason = f"proxy did not start: {_one_line(str(e))}"
    if proxy is None:
        run.unavailable.append({"variant": v.name, "depth": depth, "rep": rep, "reason": reason})
        return None, {}
    return proxy, metrics.programs_of(proxy.pid)


def _pin(pid: int, cpu: int) -> None:
    """Pin a process and every thread it has now (the proxy's workers start before it attaches)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), {cpu})


@contextlib.contextmanager
def _napi(tb: Testbed, v: Variant) -> Iterator[None]:
    """The variant's napi_defer_hard_irqs / gro_flush_timeout on the proxy's interfaces, put back after."""
    files = {k: f for k, f in (("napi_defer", "napi_defer_hard_irqs"), ("gro_flush", "gro_flush_timeout"))
             if v.lab(k) is not None}
    ifs = [i for i in (tb.net_in, tb.net_out, tb.to_sf, tb.from_sf) if i]
    old: list[tuple[str, str]] = []

    def sh(script: str) -> str:
        # ip netns exec mounts the namespace's own /sys (a setns() alone keeps the host's)
        return subprocess.run(["ip", "netns", "exec", tb.ns_proxy, "sh", "-c", script], check=True,
                              capture_output=True, text=True).stdout.strip()

    def write(path: str, value: str) -> None:
        sh(f"echo {value} > {path}")

    try:
        for key, f in files.items():
            for i in ifs:
                path = f"/sys/class/net/{i}/{f}"
                old.append((path, sh(f"cat {path}")))
                write(path, str(v.lab(key)))
        yield
    finally:
        for path, value in reversed(old):
            write(path, value)


def _one_line(s: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in s.strip().splitlines() if ln.strip()]
    # the proxy's own error line says most: prefer it over the wrapper's first line
    errs = [ln for ln in lines if "error" in ln.lower()]
    text = errs[-1] if errs else (lines[0] if lines else "")
    return text[:limit]


def testbeds(run: Run, stack: ExitStack) -> dict[tuple[str, int | None], Testbed]:
    """One testbed per (topology, veth queues) the variants need, torn down by stack."""
    beds: dict[tuple[str, int | None], Testbed] = {}
    for key in dict.fromkeys(v.bed for v in run.variants):
        topology, queues = key
        try:
            beds[key] = stack.enter_context(Testbed(topology) if queues is None
                                            else Testbed(topology, queues=queues))
            run.prefixes.append(beds[key].prefix)
        except TypeError as e:  # a testbed without multi-queue veths
            for v in run.variants:
                if v.bed == key:
                    run.whole_run_unavailable[v.name] = f"the testbed cannot give its veths {queues} queues ({e})"
    return beds


def probe(run: Run, beds: dict[tuple[str, int | None], Testbed]) -> None:
    """Start each proxied variant once; one that cannot start is unavailable for the whole run."""
    for v in run.variants:
        if v.is_baseline or v.name in run.whole_run_unavailable:
            continue
        tb = beds[v.bed]
        tb.set_stacks(_stacks_for(v, 2, tb))
        proxy, _ = _start_proxy(run, tb, v, 2, -1)
        if proxy is None:
            run.whole_run_unavailable[v.name] = run.unavailable.pop()["reason"]
        else:
            proxy.stop()


def _measure(run: Run, label: str, rep: int, v: Variant, depth: int | None, fn: Callable[[], dict[str, Any]],
             progress: Progress, **names: str) -> dict[str, Any] | None:
    """Run one metric; a failure is recorded with its reason, and the suite goes on."""
    progress.show(f"rep {rep + 1} depth {depth if depth is not None else 'dyn'} {v.name}: {label}")
    try:
        res = fn()
    except Exception as e:  # a metric failing is a result to report, not a reason to stop
        run.errors.append({"variant": v.name, "depth": depth, "rep": rep, "metric": label,
                           "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(limit=3)})
        return None
    for metric, key in names.items():
        detail = {k: x for k, x in res.items() if k not in ("value", *names.values())}
        run.add(rep, v, depth, metric, float(res[key]), **detail)
    return res


def point(run: Run, tb: Testbed, gen: Generator, v: Variant, depth: int | None, rep: int,
          progress: Progress) -> None:
    """Everything measured for one variant at one depth in one repetition."""
    s = run.settings
    tb.set_stacks(_stacks_for(v, depth, tb))
    tb.reset_counters()
    proxy, progs = None, {}
    if not v.is_baseline:
        progress.show(f"rep {rep + 1} depth {depth if depth is not None else 'dyn'} {v.name}: starting proxy")
        proxy, progs = _start_proxy(run, tb, v, depth, rep)
        if proxy is None:
            return
        cpu = v.lab("cpu")
        if cpu is not None:
            _pin(proxy.pid, int(cpu))
    record: dict[str, Any] = {"variant": v.name, "depth": depth, "rep": rep, "programs": progs,
                              "others": others(run)}
    lab = ExitStack()
    try:
        lab.enter_context(_napi(tb, v))
        stack = costs.chain(depth) if depth is not DYNAMIC and v.labelled else []
        if depth is DYNAMIC:
            _measure(run, "fidelity", rep, v, depth, lambda: metrics.fidelity(tb, s.fidelity_seconds), progress,
                     fidelity="value")
        else:
            _measure(run, "tcp", rep, v, depth, lambda: metrics.tcp(tb, s.tcp_seconds, s.tcp_omit, s.flows),
                     progress, tcp_gbps="value")
            with ExitStack() as napi:
                if v.is_baseline:
                    napi.enter_context(metrics.napi_on(tb))
                for size in FRAME_SIZES:
                    _measure(run, f"packet rate {size} B", rep, v, depth,
                             lambda size=size: metrics.packet_rate(tb, gen, stack, size, s.pkt_seconds, s.flows),
                             progress,
                             **{f"mpps_{size}": "value"})
            _measure(run, "latency", rep, v, depth, lambda: metrics.latency(tb, s.ping_count, s.ping_interval),
                     progress, rtt_p50_us="p50", rtt_p99_us="p99")
            if proxy is not None:
                _measure(run, "proxy CPU", rep, v, depth,
                         lambda: metrics.proxy_cpu(tb, gen, stack, s.cpu_seconds, proxy.pid, progs), progress,
                         cpu_ns_per_pkt="value")
        if proxy is not None:
            try:
                record["counters"] = proxy.counters()
            except RuntimeError as e:
                record["counters_error"] = str(e)
    finally:
        lab.close()
        if proxy is not None:
            record["proxy_exit"] = proxy.stop()
    run.points.append(record)
    if depth is not DYNAMIC and v.cost_programs is not None:
        backend, key, topology = v.cost_programs

        def timed() -> dict[str, Any]:
            r = costs.samples(depth, s.cost_packets, topology, backend, key)
            med = {k: summarize(x).median for k, x in r.items()}
            return {**med, "packets": s.cost_packets}

        _measure(run, "BPF cost", rep, v, depth, timed, progress, bpf_rx_ns="rx", bpf_tx_ns="tx",
                 floor_pass_ns="floor_xdp_pass", floor_lru_ns="floor_lru_update")


def others(run: Run) -> dict[str, Any]:
    """Signs that something else shares the machine right now (the figures do not stand alone then):
    network namespaces that are not this run's testbeds, and the load average."""
    foreign = [n for n in netns.list_ns() if not any(n.startswith(p + "-") for p in run.prefixes)]
    return {"foreign_namespaces": len(foreign), "loadavg_1m": os.getloadavg()[0]}


def plan(run: Run) -> list[tuple[int, int | None, Variant]]:
    """(rep, depth, variant) in run order: depths in order, variants rotated per repetition."""
    s = run.settings
    live = [v for v in run.variants if v.name not in run.whole_run_unavailable]
    out = []
    for rep in range(s.reps):
        k = rep % len(live) if live else 0
        order = live[k:] + live[:k]
        for depth in (*s.depths, DYNAMIC):
            out += [(rep, depth, v) for v in order if not (depth is DYNAMIC and not v.labelled)]
    return out


def document(run: Run, env: dict[str, Any], started: float) -> dict[str, Any]:
    """The results document: settings, policies, environment, variants and every sample."""
    return {
        "meta": {
            "started": started, "seconds": time.time() - started, "argv": sys.argv,
            "settings": asdict(run.settings),
            "policy": {
                "iperf3_affinity": {"client_cpu": metrics.IPERF_AFFINITY[0], "server_cpu": metrics.IPERF_AFFINITY[1]},
                "generator_cpu": metrics.GEN_CPU,
                "frame_sizes": "bytes of the bare Ethernet frame (no FCS); the label stack adds 4 B a label",
                "packet_rate": "receiver's count between samples taken inside each generator call (steady state)",
                "baseline_packet_rate": "an XDP_PASS program holds NAPI on the proxy's net_in (veth needs it "
                                        "for XDP_TX frames from its peer); GRO stays off there as with the proxies",
                "run_time_stats": "kernel BPF run-time accounting is on only during the proxy-CPU window",
                "offloads": "as the testbed sets them for every variant: TX checksum and segmentation off on "
                            "all veths, GRO off on p_in and sf_in (see environment.offloads)",
                "order": "per repetition: depths in order; at each depth every variant, order rotated per rep",
            },
        },
        "environment": env,
        "variants": {v.name: {"topology": v.topology, "backend": v.backend, "key": v.key, "queues": v.queues,
                              "baseline": v.baseline, "labelled": v.labelled, "runner": v.runner,
                              "floor": v.floor, "about": v.about,
                              "unavailable": run.whole_run_unavailable.get(v.name)} for v in run.variants},
        "samples": run.samples,
        "unavailable": run.unavailable,
        "errors": run.errors,
        "points": run.points,
    }


def run_suite(settings: Settings, progress_out: TextIO = sys.stderr,
              checkpoint: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Bring up the testbeds, measure everything, tear down; return the results document.
    checkpoint gets the document so far after every point (a long run keeps what it measured)."""
    variants = select(list(settings.variants))
    run = Run(settings, variants)
    started = time.time()
    with ExitStack() as stack:
        beds = testbeds(run, stack)
        gen = stack.enter_context(Generator())
        env = environment(list(beds.values()))
        probe(run, beds)
        steps = plan(run)
        progress = Progress(len(steps), progress_out)
        try:
            for rep, depth, v in steps:
                point(run, beds[v.bed], gen, v, depth, rep, progress)
                progress.step(f"rep {rep + 1} depth {depth if depth is not None else 'dyn'} {v.name}: done")
                if checkpoint:
                    checkpoint(document(run, env, started))
        finally:
            progress.close()
    return document(run, env, started)


# ---------------------------------------------------------------------- command line


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not vals or any(not 1 <= d <= MAX_LABELS for d in vals):
        raise argparse.ArgumentTypeError(f"depths must be 1..{MAX_LABELS} (the proxy's maximum stack)")
    dup = sorted({d for d in vals if vals.count(d) > 1})
    if dup:  # a depth twice would be measured twice and shown as two rows of one figure
        raise argparse.ArgumentTypeError(f"depth {', '.join(map(str, dup))} given twice; name each depth once")
    return vals


def _count(most: int) -> Callable[[str], int]:
    """argparse type: a whole number in 1..most (0 once fell back to the default, -1 ran nothing)."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give one in 1..{most}") from None
        if not 1 <= n <= most:
            raise argparse.ArgumentTypeError(f"{n} is out of range; give a whole number in 1..{most}")
        return n
    return parse


def _seconds(text: str) -> int:
    """argparse type of --seconds: whole seconds >= 1, as iperf3 runs them (2.5 once ran 2, -1 ran 1)."""
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give whole seconds, 1 or more") from None
    if not math.isfinite(s) or s < 1 or not s.is_integer():
        raise argparse.ArgumentTypeError(f"{text}: iperf3 runs whole seconds; give a whole number, 1 or more")
    return int(s)


def settings_from(args: argparse.Namespace) -> Settings:
    # `is not None`: an option given is never dropped for the default (0 once was)
    s = QUICK if args.quick else Settings()
    if args.depths is not None:
        s = replace(s, depths=args.depths)
    if args.reps is not None:
        s = replace(s, reps=args.reps)
    if args.variants is not None:
        s = replace(s, variants=tuple(x for x in args.variants.split(",") if x))
    if args.seconds is not None:
        s = replace(s, tcp_seconds=float(args.seconds))
    if args.flows is not None:
        s = replace(s, flows=args.flows)
    return s


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _refuse(args: argparse.Namespace, message: str) -> NoReturn:
    """One line and exit 2, as argparse refuses an option: the bench's usage, if the CLI gave its parser."""
    parser = getattr(args, "command_parser", None)
    if parser is not None:
        parser.error(message)
    print(f"afxdp-proxy bench: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_out(out: Path) -> str | None:
    """Why the results cannot go to out, or None: created if missing and written to once, so that a
    file or a read-only place is refused before anything is measured, not after the first point."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return f"--out {out}: that is a file; name a directory (it is created if missing)"
    except OSError as e:
        return f"--out {out}: cannot create it ({e.strerror}); name a directory you can write to"
    probe = out / f".bench-write-test-{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        return f"--out {out}: cannot write there ({e.strerror}); name a directory you can write to"
    return None


def check(args: argparse.Namespace) -> Settings:
    """The run's settings, or a one-line refusal (exit 2) naming the option: everything the user
    gave is checked here, before any testbed is built."""
    settings = settings_from(args)
    if not settings.variants:
        _refuse(args, f"--variants: name at least one of {', '.join(VARIANTS)}")
    twice = sorted({v for v in settings.variants if settings.variants.count(v) > 1})
    if twice:  # as a depth given twice: the same rows twice, nothing compared
        _refuse(args, f"--variants: {', '.join(twice)} given twice; name each variant once")
    try:
        chosen = select(list(settings.variants))
    except ValueError as e:
        _refuse(args, f"--variants: {e}")
    for v in chosen:
        why = problem(v, settings.depths)
        if why:
            _refuse(args, f"--variants {why}")
    why = check_out(Path(args.out))
    if why:
        _refuse(args, why)
    return settings


def _interrupted(out: Path, partial: Path) -> str:
    """The line Ctrl-C leaves: what was kept, and whose the other files in out are."""
    kept = (f"what was measured is in {partial}" if partial.exists()
            else "nothing was measured (no point finished)")
    old = [p.name for p in sorted(out.glob("bench.*")) + sorted(out.glob("*.png")) if p != partial]
    earlier = f"; {', '.join(old)} there are from an earlier run" if old else ""
    return f"afxdp-proxy bench: interrupted; {kept}{earlier}"


def main(args: argparse.Namespace) -> int:
    from afxdp_proxy.lab.bench import report

    settings = check(args)
    out = Path(args.out)
    # an earlier run's partial file would pass for this run's if this one stops before its first point
    partial = out / "bench.partial.json"
    partial.unlink(missing_ok=True)
    # a long run stopped with kill (or from a background shell, where SIGINT is ignored) still
    # tears its testbeds down: the signal unwinds like Ctrl-C
    signals.install(_interrupt, (signal.SIGTERM, signal.SIGHUP))
    try:
        doc = run_suite(settings, checkpoint=lambda d: partial.write_text(json.dumps(d)))
    except KeyboardInterrupt:
        print(_interrupted(out, partial), file=sys.stderr)
        raise
    files = report.write(doc, out)
    partial.unlink(missing_ok=True)
    print(report.markdown(doc))
    print("\n" + "\n".join(f"wrote {p}" for p in files))
    missing = report.shortfall(doc)
    if missing:
        # the files are written all the same; a script sees the gap in the exit status
        print(f"afxdp-proxy bench: not everything was measured: {missing}", file=sys.stderr)
        return 1
    return 0


EPILOG = """\
figures and units (bench.md): TCP Gbit/s (iperf3, at the receiver); Mpps 64 B and 1500 B
(million frames per second the receiver counted; lost = share of the generator's frames
it did not count); RTT p50/p99 µs (ICMP echo); BPF RX/TX ns per packet (BPF_PROG_TEST_RUN);
proxy ns/pkt (the proxy's BPF run time + process CPU per packet delivered, 64 B load);
header fidelity % of packets. Every figure is median [min–max] over the repetitions (a lone
value with one repetition); ×base, ×LRU and the ratios are per-repetition ratios, summarised
the same way.

exit status: 0 every point measured; 1 the files are written but some variant or point was
not measured (a proxy that did not start, e.g. a backend this machine lacks, or a measurement
that failed): the last line on stderr names them, bench.md says why; 2 an option refused
(before anything is measured); 130 interrupted (Ctrl-C, SIGTERM): bench.partial.json keeps
the points measured, and the line printed says which other files in --out are an earlier run's.
"""


def register_cli(sub: Any) -> None:
    """Add ``bench`` to the CLI's subparsers."""
    p = sub.add_parser("bench", help="comparative benchmark: baseline, static, caching proxies, across depths",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="depths 1 and 16, one repetition, short runs: 24 points with the default variants, "
                   "about 1 m 40 s on a 2-CPU machine (set-up and teardown included), more when it is loaded")
    p.add_argument("--depths", type=_ints,
                   help=f"label depths, each once, in 1..{MAX_LABELS}, e.g. 1,2,4,8,12,16 (the default)")
    p.add_argument("--reps", type=_count(1000), metavar="N", help="repetitions, 1 or more (default 3; --quick 1); "
                   "with 1 or 2 the spread is no more than the samples themselves")
    p.add_argument("--variants", help=f"comma-separated, from {', '.join(VARIANTS)} "
                   f"(default {','.join(DEFAULT)}; the baselines and floors they need are added); "
                   "NAME:key=value:... overrides [proxy] keys, or the lab-only cpu (pin the proxy), "
                   "napi_defer, gro_flush (its veths' sysfs) and busy_poll=USECS[/BUDGET] (afxdp sockets), "
                   "e.g. afxdp:ring_size=512:cpu=1; checked as the proxy checks its config before anything runs")
    p.add_argument("--seconds", type=_seconds, metavar="S",
                   help="iperf3 time per point, whole seconds, 1 or more (iperf3 runs whole seconds; "
                   "default 5; --quick 1)")
    p.add_argument("--flows", type=_count(128), metavar="N",
                   help="N TCP flows (iperf3 -P N, at most 128) and N UDP flows from a generator on every CPU "
                   "(a veth queue each), for the spread over queues (afxdp-2q against afxdp); default 1 flow "
                   "from CPU 0")
    p.add_argument("--out", default="results",
                   help="output directory, created if missing (default results/); files of an earlier run "
                   "there are overwritten at the end")
    p.set_defaults(func=main)
