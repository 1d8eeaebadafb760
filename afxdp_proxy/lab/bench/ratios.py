"""Variants against one reference variant of the same run, at one depth: each figure's median
[min–max] over the repetitions, and its ratio to the reference measured in the same repetition.

    python -m afxdp_proxy.lab.bench.ratios results/bench.json [--to afxdp] [--depth 3]

prints a Markdown table (TCP Gbit/s, 64 B Mpps, proxy CPU ns per packet): how docs/benchmarks.md
compares the AF_XDP backend's tuning variants ("afxdp:ring_size=512", ...) with its default.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from afxdp_proxy.lab.bench.stats import summarize

METRICS = (("tcp_gbps", "TCP Gbit/s", 2), ("mpps_64", "64 B Mpps", 3), ("cpu_ns_per_pkt", "proxy CPU ns/pkt", 0))


def _fmt(xs: list[float], digits: int) -> str:
    if not xs:
        return "–"
    s = summarize(xs)
    return f"{s.median:.{digits}f} [{s.lo:.{digits}f}–{s.hi:.{digits}f}]"


def table(doc: dict[str, Any], to: str = "afxdp", depth: int = 3) -> str:
    by: dict[tuple[str, str], dict[int, float]] = {}
    for s in doc["samples"]:
        if s["depth"] == depth:
            by.setdefault((s["variant"], s["metric"]), {})[s["rep"]] = s["value"]
    head = ["variant"] + [h for _, name, _ in METRICS for h in (name, f"÷ {to}")]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|--:" * (len(head) - 1) + "|"]
    for v in doc["variants"]:
        row = [f"`{v}`"]
        for metric, _, digits in METRICS:
            mine, ref = by.get((v, metric), {}), by.get((to, metric), {})
            row += [_fmt(list(mine.values()), digits),
                    _fmt([x / ref[r] for r, x in mine.items() if ref.get(r)], 2)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def problem(doc: dict[str, Any], to: str, depth: int) -> str | None:
    """Why the table would be empty (dashes only), naming what the file has, or None."""
    depths = sorted({s["depth"] for s in doc["samples"] if s["depth"] is not None})
    if depth not in depths:
        return f"--depth {depth}: the file has no samples at that depth; it has {', '.join(map(str, depths)) or 'none'}"
    if to not in doc["variants"]:
        return f"--to {to}: no such variant in the file; it has {', '.join(doc['variants'])}"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bench_json")
    p.add_argument("--to", default="afxdp", help="the reference variant (default afxdp)")
    p.add_argument("--depth", type=int, default=3, help="label depth (default 3)")
    a = p.parse_args(argv)
    try:
        with open(a.bench_json) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        p.error(f"{a.bench_json}: {getattr(e, 'strerror', None) or e}; give a bench.json of afxdp-proxy bench")
    why = problem(doc, a.to, a.depth)
    if why:
        p.error(why)
    print(table(doc, a.to, a.depth))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
