"""Per-packet cost of the proxy's BPF programs from BPF_PROG_TEST_RUN.

Every packet is distinct (its own IP id and sequence numbers), so RX really
inserts and TX really finds, takes and pushes an entry. Each run is one
BPF_PROG_TEST_RUN with repeat=1 and the kernel's own per-run duration; the
floor programs (XDP_PASS, one LRU-hash update of the proxy's key and value
sizes) are timed the same way in the same invocation, and the results are
quoted as ratios against them (--vs-static: also against the static proxy).

Programs per configuration: attached runs XDP RX (pop, cache, redirect) and
XDP TX (look up, push, redirect); inline runs XDP RX (pop, cache, pass) and TC
egress TX. In meta mode, TX gets the mark RX put in the packet's XDP metadata
(the TC ingress shim that copies it into skb->mark is not timed: it is a load
and a store). The static backend pops at RX and pushes its configured stack.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from dataclasses import asdict
from typing import Any

from afxdp_proxy import bpf, counters
from afxdp_proxy._native import ffi
from afxdp_proxy.backends.kernel import ProxyObject
from afxdp_proxy.config import ProxyConfig, SfConfig
from afxdp_proxy.lab.bench.stats import Summary, summarize
from afxdp_proxy.lab.frames import ipv4_tcp, mpls_frame
from afxdp_proxy.mpls import Lse, make_stack

SF_LABEL = 1000
TX_IFINDEX = 1  # test runs do not redirect; any index will do
META_LEN = 4  # meta mode: RX leaves the key (a __u32) in front of the frame as XDP metadata


def chain(depth: int) -> list[Lse]:
    """The stack of `depth` labels the benchmarks use: the SF's label, then the rest of the chain."""
    return make_stack([SF_LABEL] + [2000 + i for i in range(depth - 1)], tc=[i % 8 for i in range(depth)])


def _proxy(topology: str, backend: str = "kernel", key: str = "hash", static_stack: list[Lse] | None = None
           ) -> ProxyObject:
    cfg = ProxyConfig(backend=backend, key=key, topology=topology, cache_entries=65536,
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
        r = bpf.test_run(prog_fd, data, ctx=ctxs[i] if ctxs else None)
        if r.retval != want:
            raise RuntimeError(f"program returned {r.retval}, expected {want}")
        times.append(float(r.duration_ns))
        outs.append(r.data)
    return times, outs


def _mark_ctx(meta_prefixed: bytes) -> tuple[bytes, bytes]:
    """Split RX's output in meta mode into (TC ctx with skb->mark set, the frame)."""
    mark = struct.unpack("=I", meta_prefixed[:META_LEN])[0]
    # struct __sk_buff starts len, pkt_type, mark; the kernel accepts a shorter ctx
    return struct.pack("=III", 0, 0, mark), meta_prefixed[META_LEN:]


def samples(depth: int = 8, packets: int = 2000, topology: str = "inline", backend: str = "kernel",
            key: str = "hash") -> dict[str, list[float]]:
    """ns per run of RX, TX and both floors at `depth` labels, all in this one invocation."""
    static = backend == "static"
    ins = frames(depth, packets)
    floor = bpf.BpfObject(bpf.object_path("floor"))
    proxy = _proxy(topology, backend, key, chain(depth)[1:] if static else None)
    try:
        floor.load()
        rx_want = bpf.XDP_REDIRECT if topology == "attached" else bpf.XDP_PASS
        rx_ns, popped = _run_each(proxy.prog_fd("axp_xdp_rx"), ins, rx_want)
        if topology == "attached":
            tx_ns, _ = _run_each(proxy.prog_fd("axp_xdp_tx"), popped, bpf.XDP_REDIRECT)
        elif key == "meta" and not static:
            ctxs, bare = zip(*(_mark_ctx(p) for p in popped), strict=True)
            tx_ns, _ = _run_each(proxy.prog_fd("axp_tc_tx"), list(bare), bpf.TC_ACT_OK, list(ctxs))
        else:
            tx_ns, _ = _run_each(proxy.prog_fd("axp_tc_tx"), popped, bpf.TC_ACT_OK)
        pass_ns, _ = _run_each(floor.prog_fd("floor_xdp_pass"), ins, bpf.XDP_PASS)
        lru_ns, _ = _run_each(floor.prog_fd("floor_lru_update"), ins, bpf.XDP_PASS)
        c = counters.read_map(proxy.counters, counters.rows_of(1)).total()
        # every run took the real path: popped and cached, then found and pushed (or sent plain)
        if c["rx_popped"] != packets or c["tx_pushed"] + c["tx_plain"] != packets:
            raise RuntimeError(f"expected {packets} pops and pushes, counters say {c}")
    finally:
        proxy.close()
        floor.close()
    return {"rx": rx_ns, "tx": tx_ns, "floor_xdp_pass": pass_ns, "floor_lru_update": lru_ns}


def measure(depth: int = 8, packets: int = 2000, topology: str = "inline", backend: str = "kernel",
            key: str = "hash") -> dict[str, Any]:
    """Summaries (median [p10-p90]) of samples() and the ratios to the LRU floor."""
    res = {name: summarize(v, (0.1, 0.9)) for name, v in samples(depth, packets, topology, backend, key).items()}
    lru = res["floor_lru_update"].median
    return {
        "depth": depth, "packets": packets, "topology": topology, "backend": backend, "key": key,
        "ns": {k: asdict(v) for k, v in res.items()},
        "ratio_to_lru_floor": {"rx": res["rx"].median / lru, "tx": res["tx"].median / lru},
    }


def report(r: dict[str, Any]) -> str:
    lines = [f"per-packet cost, {r['depth']} labels, {r['packets']} distinct packets, {r['backend']} backend, "
             f"key {r['key']}, topology {r['topology']} (BPF_PROG_TEST_RUN, repeat=1 each; median [p10-p90] ns)"]
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
    p.add_argument("--backend", choices=("kernel", "static"), default="kernel")
    p.add_argument("--key", choices=("hash", "meta"), default="hash")
    p.add_argument("--vs-static", action="store_true",
                   help="also measure the static proxy (same depth and topology) in this invocation and "
                   "give the caching proxy's RX+TX as a ratio to it")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    r = measure(args.depth, args.packets, args.topology, args.backend, args.key)
    print(report(r))
    if args.vs_static:
        s = measure(args.depth, args.packets, args.topology, "static", "hash")
        print(report(s))
        both = [x["ns"]["rx"]["median"] + x["ns"]["tx"]["median"] for x in (r, s)]
        ratio = both[0] / both[1]
        print(f"  {args.backend}-{args.key} RX+TX / static RX+TX = {ratio:.2f}x")
        r = {"proxy": r, "static": s, "ratio_to_static": ratio}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
