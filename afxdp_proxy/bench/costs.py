"""Per-packet cost of the proxy's BPF programs from BPF_PROG_TEST_RUN.

Every packet is distinct (its own IP id and sequence numbers), so RX really
inserts and TX really finds, takes and pushes an entry. Each run is one
BPF_PROG_TEST_RUN with repeat=1 and the kernel's own per-run duration; the
floor programs (XDP_PASS, one LRU-hash update of the proxy's key and value
sizes) are timed the same way in the same invocation, and the results are
quoted as ratios against them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from afxdp_proxy import bpf
from afxdp_proxy._native import ffi
from afxdp_proxy.backends.kernel import ProxyObject, read_counters
from afxdp_proxy.bench.stats import Summary, summarize
from afxdp_proxy.config import ProxyConfig, SfConfig
from afxdp_proxy.frames import ipv4_tcp, mpls_frame
from afxdp_proxy.mpls import make_stack

SF_LABEL = 1000
TX_IFINDEX = 1  # test runs do not redirect; any index will do


def _proxy(topology: str, static: bool = False) -> ProxyObject:
    cfg = ProxyConfig(backend="static" if static else "kernel", topology=topology, cache_entries=65536,
                      sfs=(SfConfig("sf", SF_LABEL, "a", "b"),))
    p = ProxyObject(cfg)
    sf = ffi.new("struct axp_sf *", {"label": SF_LABEL, "net_out_ifindex": TX_IFINDEX,
                                     "to_sf_ifindex": TX_IFINDEX, "from_sf_ifindex": TX_IFINDEX})
    p.add_sf(0, sf, TX_IFINDEX)
    return p


def frames(depth: int, n: int) -> list[bytes]:
    labels = [SF_LABEL] + [2000 + i for i in range(depth - 1)]
    stack = make_stack(labels, tc=[i % 8 for i in range(depth)])
    return [mpls_frame(stack, ipv4_tcp("10.0.0.1", "10.0.0.2", i & 0xFFFF, 40000, 5201, 1000 + i * 1448, 7 + i))
            for i in range(n)]


def _run_each(prog_fd: int, inputs: list[bytes], want: int) -> tuple[list[float], list[bytes]]:
    times, outs = [], []
    for data in inputs:
        r = bpf.test_run(prog_fd, data)
        if r.retval != want:
            raise RuntimeError(f"program returned {r.retval}, expected {want}")
        times.append(float(r.duration_ns))
        outs.append(r.data)
    return times, outs


def measure(depth: int = 8, packets: int = 2000, topology: str = "inline") -> dict[str, Any]:
    """ns per packet for RX and TX at `depth` labels next to the floors, same invocation."""
    ins = frames(depth, packets)
    floor = bpf.BpfObject(bpf.object_path("floor"))
    proxy = _proxy(topology)
    try:
        floor.load()
        rx_want = bpf.XDP_REDIRECT if topology == "attached" else bpf.XDP_PASS
        rx_ns, popped = _run_each(proxy.prog_fd("axp_xdp_rx"), ins, rx_want)
        if topology == "attached":
            tx_ns, _ = _run_each(proxy.prog_fd("axp_xdp_tx"), popped, bpf.XDP_REDIRECT)
        else:
            tx_ns, _ = _run_each(proxy.prog_fd("axp_tc_tx"), popped, bpf.TC_ACT_OK)
        pass_ns, _ = _run_each(floor.prog_fd("floor_xdp_pass"), ins, bpf.XDP_PASS)
        lru_ns, _ = _run_each(floor.prog_fd("floor_lru_update"), ins, bpf.XDP_PASS)
        c = read_counters(proxy.counters)
        if c["rx_popped"] != packets or c["tx_pushed"] != packets:  # every run took the real path
            raise RuntimeError(f"expected {packets} pops and pushes, counters say {c}")
    finally:
        proxy.close()
        floor.close()
    res = {name: summarize(v, (0.1, 0.9)) for name, v in
           (("rx", rx_ns), ("tx", tx_ns), ("floor_xdp_pass", pass_ns), ("floor_lru_update", lru_ns))}
    lru = res["floor_lru_update"].median
    return {
        "depth": depth, "packets": packets, "topology": topology,
        "ns": {k: asdict(v) for k, v in res.items()},
        "ratio_to_lru_floor": {"rx": res["rx"].median / lru, "tx": res["tx"].median / lru},
    }


def report(r: dict[str, Any]) -> str:
    lines = [f"per-packet cost, {r['depth']} labels, {r['packets']} distinct packets, topology {r['topology']} "
             "(BPF_PROG_TEST_RUN, repeat=1 each; median [p10-p90] ns)"]
    for name, s in r["ns"].items():
        lines.append(f"  {name:18} {Summary(**s).fmt(' ns')}")
    ratio = r["ratio_to_lru_floor"]
    lines.append(f"  RX / LRU floor = {ratio['rx']:.2f}x   TX / LRU floor = {ratio['tx']:.2f}x   (target <= 2x)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=8, help="labels per packet (default 8)")
    p.add_argument("--packets", type=int, default=2000, help="distinct packets per program (default 2000)")
    p.add_argument("--topology", choices=("inline", "attached"), default="inline")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    r = measure(args.depth, args.packets, args.topology)
    print(report(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
