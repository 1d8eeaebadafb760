"""`afxdp-proxy demo`: the testbed, the proxy and traffic, end to end, in about a minute.

One TCP flow whose packets carry a dynamic chain (every packet its own label
stack) goes through the proxy and a kernel-forwarding SF. The receiver
records the stack every packet arrived with; the demo compares it with what
the sender pushed, for the caching proxy and for the static one.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from afxdp_proxy.counters import DWELL_TIMED, mean_dwell_us
from afxdp_proxy.lab.proxyproc import ProxyProcess
from afxdp_proxy.lab.testbed import Testbed, dynamic_stacks
from afxdp_proxy.lab.traffic import IperfResult


@dataclass
class Row:
    variant: str
    result: IperfResult
    compared: int = 0
    kept: int = 0
    counters: dict[str, int] | None = None

    @property
    def fidelity(self) -> str:
        return f"{100.0 * self.kept / self.compared:5.1f}%" if self.compared else "    -"


def _fidelity(tb: Testbed) -> tuple[int, int]:
    """(packets compared, packets whose received stack is the sent one minus its top label)."""
    check = tb.check_chain()
    return check.compared, check.kept


def _proxied(tb: Testbed, variant: str, config: str, seconds: float) -> Row:
    tb.set_stacks(dynamic_stacks(tb.sf_label))
    with ProxyProcess(tb.ns_proxy, config, name=f"{tb.prefix}-demo") as proxy:
        tb.set_recording(True)
        res = tb.iperf3(seconds=seconds)
        tb.set_recording(False, clear=False)
        counters = proxy.counters()
    compared, kept = _fidelity(tb)
    return Row(variant, res, compared, kept, counters)


def run_demo(topology: str = "attached", seconds: float = 3.0, out=sys.stdout, backend: str = "kernel") -> list[Row]:
    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    say(f"bringing up the {topology} testbed (sender, proxy, SF, receiver namespaces)...")
    with Testbed(topology) as tb:
        say(f"  namespaces: {', '.join(tb.namespaces)}")
        rows = []
        tb.set_stacks([])
        say(f"no proxy, no labels: iperf3 TCP for {seconds:g}s...")
        rows.append(Row("no proxy, plain IP", tb.iperf3(seconds=seconds)))
        stacks = dynamic_stacks(tb.sf_label)
        say("dynamic chain, per packet (label/tc: label and traffic class): " + " | ".join(
            "[" + " ".join(f"{e.label}/tc{e.tc}" for e in s) + "]" for s in stacks))
        say(f"caching proxy ({backend} backend, hash key)...")
        rows.append(_proxied(tb, f"caching proxy ({backend}, hash)", tb.proxy_config(backend=backend), seconds))
        static = tb.proxy_config(backend="static").replace("[[sf]]\n", "[[sf]]\nstatic_stack = [2001]\n")
        say("static proxy (pushes [2001] whatever the packet carried)...")
        rows.append(_proxied(tb, "static proxy", static, seconds))
        say("tearing the testbed down...")
    base = rows[0].result.bits_per_second or 1.0
    say("")
    say(f"{'variant':30} {'TCP Mbit/s':>11} {'vs plain':>9} {'retrans':>8} {'packets checked':>16} "
        f"{'own stack kept':>15}")
    for r in rows:
        say(f"{r.variant:30} {r.result.bits_per_second / 1e6:11.0f} {r.result.bits_per_second / base:9.2f} "
            f"{r.result.retransmits or 0:8d} {r.compared or '-':>16} {r.fidelity:>15}")
    from afxdp_proxy._native import lib  # on use, as the testbed imports it

    say(f"(packets checked: those the sender recorded and the receiver matched by key, at most "
        f"{lib.TB_RECORD_ENTRIES}; a key sent twice with two stacks is left out)")
    cache = rows[1].counters or {}
    dwell = mean_dwell_us(cache)
    if dwell is not None:
        say(f"\ncaching proxy: {cache.get('rx_popped', 0)} stacks cached, {cache.get('tx_pushed', 0)} pushed back, "
            f"{cache.get('tx_plain', 0)} sent as plain IP (nothing left after the SF's label), "
            f"{cache.get('tx_miss_pass', 0)} misses, mean time in the SF {dwell:.1f} us "
            f"(of {cache[DWELL_TIMED]} packets timed)")
    return rows


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="testbed + proxy + traffic, a result table, then clean up",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topology", choices=("attached", "inline"), default="attached")
    p.add_argument("--seconds", type=float, default=3.0, help="iperf3 time per variant (default 3)")
    p.add_argument("--backend", choices=("kernel", "afxdp"), default="kernel",
                   help="the caching proxy's backend (default kernel; afxdp needs --topology attached)")

    def go(args: argparse.Namespace) -> int:
        if args.backend == "afxdp" and args.topology != "attached":
            print("afxdp-proxy: error: --backend afxdp needs --topology attached", file=sys.stderr)
            return 2
        rows = run_demo(args.topology, args.seconds, backend=args.backend)
        ok = rows[1].compared > 0 and rows[1].kept == rows[1].compared
        if not ok:
            print("afxdp-proxy: error: the caching proxy did not restore every packet's stack", file=sys.stderr)
        return 0 if ok else 1

    p.set_defaults(func=go)
