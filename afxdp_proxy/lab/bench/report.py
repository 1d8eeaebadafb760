"""Turn the suite's samples into summaries, ratios, a Markdown table and PNG plots.

Ratios pair samples of the same repetition and depth: a variant's figure over
its topology's baseline (TCP, packet rate, latency), a BPF program's cost over
the LRU-update floor timed in the same invocation, one variant over another
(static / kernel-hash, afxdp / kernel-hash, afxdp / afxdp-null: the proxy over the floor of
AF_XDP on the same path). Summaries are the median and the
min-max over repetitions.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# metrics divided by the same-rep, same-depth baseline of the variant's topology
VS_BASELINE = ("tcp_gbps", "mpps_64", "mpps_1500", "rtt_p50_us", "rtt_p99_us")
# BPF costs divided by the LRU-update floor of the same invocation
VS_FLOOR = {"bpf_rx_ns": "floor_lru_ns", "bpf_tx_ns": "floor_lru_ns"}
DYN = "dynamic"
# side-by-side comparisons the issues ask for: static vs caching, AF_XDP vs XDP, the AF_XDP proxy vs
# AF_XDP's floor (afxdp-null: the same sockets and loop, no engine), meta vs hash key
PAIRS = (("static", "kernel-hash"), ("afxdp", "kernel-hash"), ("afxdp", "afxdp-null"), ("afxdp-2q", "kernel-hash"),
         ("kernel-meta", "kernel-hash-inline"))
ALL = "all"  # a baseline's samples of every depth slot


def _dkey(depth: int | None) -> str:
    return DYN if depth is None else str(depth)


def stat(values: Iterable[float]) -> dict[str, float] | None:
    v = sorted(values)
    if not v:
        return None
    return {"median": statistics.median(v), "lo": v[0], "hi": v[-1], "n": len(v)}


def stat_reps(values: Iterable[float]) -> dict[str, Any] | None:
    """stat, and the values themselves: a headline set against a target says how many reps meet it."""
    v = list(values)
    e = stat(v)
    return None if e is None else {**e, "values": v}


# the headlines' targets (issues 2 and 4)
SHARE_TARGET = 0.9  # TCP throughput as a share of the same topology's baseline: at least
DROP_TARGET = 0.10  # kernel-hash's relative drop of that share from 1 to 16 labels: less than
DROP_DEPTHS = ("1", "16")
COST_TARGET = 2.0  # BPF program cost at 8 labels over the LRU-update floor: at most


def verdict(e: dict[str, Any] | None, meets: Callable[[float], bool]) -> str:
    """Whether a figure meets its target, never "met" when the spread crosses it, nor without
    saying that one repetition has no spread."""
    vals = (e or {}).get("values") or []
    if not vals:
        return "not measured"
    k, n = sum(1 for x in vals if meets(x)), len(vals)
    if k == n:
        return "met by its one repetition, no spread" if n == 1 else f"met by all {n} repetitions"
    if k == 0:
        return "not met by its one repetition, no spread" if n == 1 else f"not met by any of the {n} repetitions"
    # some reps meet it and some not: the median alone would hide that
    return (f"median {'meets' if meets(e['median']) else 'misses'} it; {n - k} of {n} repetitions "
            f"{'does' if n - k == 1 else 'do'} not")


class Samples:
    """Samples indexed by (variant, depth, metric) -> {rep: value}."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.by: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
        for s in doc["samples"]:
            self.by[(s["variant"], _dkey(s["depth"]), s["metric"])][s["rep"]] = s["value"]
        self.depths = [str(d) for d in doc["meta"]["settings"]["depths"]]

    def values(self, variant: str, depth: str, metric: str) -> dict[int, float]:
        return self.by.get((variant, depth, metric), {})

    def ratio(self, a: tuple[str, str], b: tuple[str, str], depth: str) -> list[float]:
        """Per-rep a/b, (variant, metric) each, at one depth; reps where both exist."""
        va, vb = self.values(a[0], depth, a[1]), self.values(b[0], depth, b[1])
        return [va[r] / vb[r] for r in sorted(va.keys() & vb.keys()) if vb[r]]


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """{variant: {depth: {metric: {median, lo, hi, n, ratio: {...}|None}}}}"""
    sm = Samples(doc)
    out: dict[str, Any] = defaultdict(lambda: defaultdict(dict))
    for (variant, depth, metric), reps in sorted(sm.by.items()):
        entry: dict[str, Any] = dict(stat(reps.values()) or {})
        ratio = None
        base = doc["variants"][variant]["baseline"]
        if metric in VS_BASELINE and variant != base:
            ratio = stat(sm.ratio((variant, metric), (base, metric), depth))
        elif metric in VS_FLOOR:
            ratio = stat(sm.ratio((variant, metric), (variant, VS_FLOOR[metric]), depth))
        entry["ratio"] = ratio
        out[variant][depth][metric] = entry
    # a baseline carries no labels: its depth slots are repeats of one figure, pooled under "all"
    pooled: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (variant, _depth, metric), reps in sm.by.items():
        if doc["variants"][variant]["baseline"] == variant:
            pooled[(variant, metric)] += reps.values()
    for (variant, metric), vals in pooled.items():
        out[variant][ALL][metric] = {**(stat(vals) or {}), "ratio": None}
    return json.loads(json.dumps(out))


def headline(doc: dict[str, Any]) -> dict[str, Any]:
    """The numbers issues 2 and 4 ask for, from this run's samples alone."""
    sm = Samples(doc)
    var = doc["variants"]
    have = [v for v in var if not var[v]["unavailable"] and any(k[0] == v for k in sm.by)]
    depths = sm.depths
    out: dict[str, Any] = {"pairs": {}}
    if "kernel-hash" in have:
        kh_base = var["kernel-hash"]["baseline"]
        out["kernel_hash_tcp_share_of_baseline"] = {
            d: stat_reps(sm.ratio(("kernel-hash", "tcp_gbps"), (kh_base, "tcp_gbps"), d)) for d in depths}
        # the relative drop of the share of baseline, 1 - share(hi) / share(lo), per rep: the slots of
        # two depths lie minutes apart, and dividing each by its own baseline first keeps the
        # machine's drift out of the figure
        lo, hi = min(depths, key=int), max(depths, key=int)  # --depths may come in any order
        if lo != hi:  # one depth has no drop to tell
            a = dict(zip(*_reps_ratio(sm, ("kernel-hash", "tcp_gbps"), (kh_base, "tcp_gbps"), lo), strict=True))
            b = dict(zip(*_reps_ratio(sm, ("kernel-hash", "tcp_gbps"), (kh_base, "tcp_gbps"), hi), strict=True))
            out["kernel_hash_tcp_drop"] = {"from": int(lo), "to": int(hi),
                                           "drop": stat_reps(1 - b[r] / a[r] for r in sorted(a.keys() & b.keys())
                                                             if a[r])}
    if "3" in depths:
        out["issue2_tcp_3_labels_vs_baseline"] = {
            v: stat_reps(sm.ratio((v, "tcp_gbps"), (var[v]["baseline"], "tcp_gbps"), "3"))
            for v in ("kernel-hash", "kernel-hash-inline") if v in have}
    # and every variant against its floor, an overridden one's too (afxdp:queues=2 / afxdp-null:queues=2)
    floors = [(v, var[v]["floor"]) for v in have if var[v].get("floor")]
    for a, b in dict.fromkeys([*PAIRS, *floors]):
        if a in have and b in have:
            out["pairs"][f"{a} / {b}"] = {
                m: {d: stat(sm.ratio((a, m), (b, m), d)) for d in depths} for m in ("tcp_gbps", "mpps_64")}
    if "8" in depths:
        costs = {}
        for v in have:
            rx, tx, lru, xpass = (sm.values(v, "8", m) for m in
                                  ("bpf_rx_ns", "bpf_tx_ns", "floor_lru_ns", "floor_pass_ns"))
            if not rx:
                continue
            costs[v] = {"rx_ns": stat(rx.values()), "tx_ns": stat(tx.values()),
                        "floor_lru_ns": stat(lru.values()), "floor_pass_ns": stat(xpass.values()),
                        "rx_vs_lru": stat_reps(sm.ratio((v, "bpf_rx_ns"), (v, "floor_lru_ns"), "8")),
                        "tx_vs_lru": stat_reps(sm.ratio((v, "bpf_tx_ns"), (v, "floor_lru_ns"), "8")),
                        # a repeat=1 run carries a fixed overhead (timer, context): the XDP_PASS floor
                        # measures it, and the ratio net of it is the stricter reading
                        "rx_vs_lru_net": stat(_net(rx, lru, xpass)), "tx_vs_lru_net": stat(_net(tx, lru, xpass)),
                        "in_situ_ns_per_run": _in_situ(doc, v, 8)}
        out["issue2_bpf_cost_8_labels"] = costs
    out["fidelity"] = {v: stat(sm.values(v, DYN, "fidelity").values()) for v in have
                       if sm.values(v, DYN, "fidelity")}
    return out


def _reps_ratio(sm: Samples, a: tuple[str, str], b: tuple[str, str], depth: str) -> tuple[list[int], list[float]]:
    """(reps, a/b per rep) at one depth."""
    va, vb = sm.values(a[0], depth, a[1]), sm.values(b[0], depth, b[1])
    reps = [r for r in sorted(va.keys() & vb.keys()) if vb[r]]
    return reps, [va[r] / vb[r] for r in reps]


def _net(prog: dict[int, float], lru: dict[int, float], xpass: dict[int, float]) -> list[float]:
    """Per rep (prog - XDP_PASS floor) / (LRU floor - XDP_PASS floor)."""
    return [(prog[r] - xpass[r]) / (lru[r] - xpass[r]) for r in sorted(prog.keys() & lru.keys() & xpass.keys())
            if lru[r] > xpass[r]]


def _in_situ(doc: dict[str, Any], variant: str, depth: int) -> dict[str, Any]:
    """{program: ns per run} from the kernel's run-time stats under the 64 B load (warm, in place)."""
    per: dict[str, list[float]] = defaultdict(list)
    for s in doc["samples"]:
        if s["variant"] == variant and s["depth"] == depth and s["metric"] == "cpu_ns_per_pkt":
            for name, p in s["detail"].get("programs", {}).items():
                if p.get("ns_per_run") is not None:
                    per[name].append(p["ns_per_run"])
    return {name: stat(v) for name, v in sorted(per.items())}


def shortfall(doc: dict[str, Any]) -> str | None:
    """What the run did not measure, in one line (None: everything): variants unavailable for the
    whole run, points whose proxy did not start, measurements that failed, each with its reason."""
    parts = [f"{v} ({info['unavailable']})" for v, info in doc["variants"].items() if info["unavailable"]]
    per: dict[str, set[str]] = defaultdict(set)
    for u in doc["unavailable"]:
        per[u["variant"]].add(f"depth {_dkey(u['depth'])} rep {u['rep'] + 1}: {u['reason']}")
    parts += [f"{v} at {'; '.join(sorted(rs))}" for v, rs in per.items()]
    if doc["errors"]:
        failed = sorted({f"{e['variant']} {e['metric']}" for e in doc["errors"]})
        parts.append(f"{len(doc['errors'])} measurement(s) failed ({', '.join(failed)})")
    return "; ".join(parts) or None


# ---------------------------------------------------------------------- Markdown


def _num(x: float, digits: int) -> str:
    return f"{x:.{digits}f}"


def cell(e: dict[str, Any] | None, digits: int = 2) -> str:
    """median [min-max], or the lone value of a single repetition."""
    if not e:
        return "–"
    if e["n"] == 1:
        return _num(e["median"], digits)
    return f"{_num(e['median'], digits)} [{_num(e['lo'], digits)}–{_num(e['hi'], digits)}]"


def _ratio_cell(e: dict[str, Any] | None, digits: int = 2) -> str:
    return cell((e or {}).get("ratio"), digits)


def _pct(e: dict[str, Any] | None) -> str:
    if not e:
        return "–"
    if e["n"] == 1:
        return f"{100 * e['median']:.1f}%"
    return f"{100 * e['median']:.1f}% [{100 * e['lo']:.1f}–{100 * e['hi']:.1f}%]"


def _loss(doc: dict[str, Any], variant: str, depth: str, size: int) -> dict[str, float] | None:
    """Share of the generator's frames the receiver did not count, over the whole runs."""
    return stat(1 - s["detail"]["received"] / s["detail"]["sent"] for s in doc["samples"]
                if s["variant"] == variant and s["metric"] == f"mpps_{size}" and s["detail"].get("sent")
                and (depth == ALL or _dkey(s["depth"]) == depth))


def _reasons(doc: dict[str, Any], variant: str, depth: str) -> str | None:
    whole = doc["variants"][variant]["unavailable"]
    if whole:
        return whole
    rs = {u["reason"] for u in doc["unavailable"] if u["variant"] == variant and _dkey(u["depth"]) == depth}
    return "; ".join(sorted(rs)) or None


def markdown(doc: dict[str, Any]) -> str:
    summ = summarize(doc)
    head = headline(doc)
    meta, env, s = doc["meta"], doc["environment"], doc["meta"]["settings"]
    pol = meta["policy"]
    lines = [
        f"# afxdp-proxy benchmark{' (quick)' if s['quick'] else ''}",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(meta['started']))}, {meta['seconds'] / 60:.1f} min; "
        f"{env['kernel'].split(' #')[0]}, {env['cpu']} ({env['cpus']} CPUs); git {env['git']['commit'][:10]}"
        f"{' (dirty)' if env['git']['dirty'] else ''}.",
        f"{s['reps']} repetition(s), label depths {', '.join(map(str, s['depths']))}; iperf3 {s['tcp_seconds']:g} s "
        f"(first {s['tcp_omit']} s omitted), both ends on CPU {pol['iperf3_affinity']['client_cpu']}; "
        f"generator on CPU {pol['generator_cpu']}, {s['pkt_seconds']:g} s per frame size; "
        f"{s['ping_count']} pings every {s['ping_interval'] * 1e3:g} ms; "
        f"{s['cost_packets']} distinct packets per BPF program.",
        "Offloads " + pol["offloads"].replace("as the testbed sets them for every variant: ",
                                               "(the testbed's, the same for every variant): ") + ".",
        "Figures: median [min–max] over repetitions; ×base = ratio to the same topology's baseline measured at the "
        "same repetition and depth; BPF RX/TX ns are BPF_PROG_TEST_RUN medians with ×LRU = ratio to the one-LRU-"
        "update floor of the same invocation; proxy ns/pkt = the proxy's BPF run time + process CPU per packet "
        "delivered under the 64 B load.",
        *_caveats(doc, summ),
        "",
        "| variant | labels | TCP Gbit/s | ×base | Mpps 64 B | ×base | lost 64 B | Mpps 1500 B | ×base "
        "| RTT p50 µs | RTT p99 µs | BPF RX ns | ×LRU | BPF TX ns | ×LRU | proxy ns/pkt |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for v in doc["variants"]:
        base = doc["variants"][v]["baseline"] == v
        for d in [ALL] if base else [str(x) for x in s["depths"]]:
            m = summ.get(v, {}).get(d, {})
            reason = _reasons(doc, v, d)
            if not m:
                lines.append(f"| {v} | {d} | unavailable ({reason or 'no sample'}) |" + " |" * 13)
                if doc["variants"][v]["unavailable"]:
                    break  # one row says it for every depth
                continue
            def vs_base(metric: str, m: dict[str, Any] = m, base: bool = base) -> str:
                return "" if base else _ratio_cell(m.get(metric))

            # a proxy run on plain IP (the floor) is measured in each depth slot all the same
            labels = "none" if base else d if doc["variants"][v].get("labelled", True) else f"none ({d})"
            lines.append(
                f"| {v} | {labels} | {cell(m.get('tcp_gbps'))} | {vs_base('tcp_gbps')} "
                f"| {cell(m.get('mpps_64'), 3)} | {vs_base('mpps_64')} | {_pct(_loss(doc, v, d, 64))} "
                f"| {cell(m.get('mpps_1500'), 3)} | {vs_base('mpps_1500')} "
                f"| {cell(m.get('rtt_p50_us'), 0)} | {cell(m.get('rtt_p99_us'), 0)} "
                f"| {cell(m.get('bpf_rx_ns'), 0)} | {_ratio_cell(m.get('bpf_rx_ns'))} "
                f"| {cell(m.get('bpf_tx_ns'), 0)} | {_ratio_cell(m.get('bpf_tx_ns'))} "
                f"| {cell(m.get('cpu_ns_per_pkt'), 0)} |")
    lines += ["", "Baseline rows pool every depth slot: the baseline carries no labels, and it is measured again "
              "at each depth so that every ratio divides samples taken side by side.", ""]
    lines += ["## Header fidelity, dynamic chain", "",
              "Share of packets of one TCP flow whose stacks differ per packet (labels, TC bits, depth) that reach "
              "the receiver with their own stack minus the top label.", "",
              "| variant | kept own stack | packets compared |", "|---|--:|--:|"]
    for v in doc["variants"]:
        e = summ.get(v, {}).get(DYN, {}).get("fidelity")
        if e:
            n = [x["detail"]["compared"] for x in doc["samples"] if x["variant"] == v and x["metric"] == "fidelity"]
            lines.append(f"| {v} | {_pct(e)} | {sum(n)} |")
        elif doc["variants"][v].get("labelled", doc["variants"][v]["baseline"] != v):
            lines.append(f"| {v} | unavailable ({_reasons(doc, v, DYN) or 'no sample'}) | |")
    lines += ["", "## Headline numbers", "", *_headline_lines(head)]
    shared = [p for p in doc.get("points", []) if p.get("others", {}).get("foreign_namespaces")]
    if shared:
        lines += ["", f"Note: during {len(shared)} of {len(doc['points'])} points other network namespaces existed "
                  "on the machine (someone else's tests or testbeds): those figures may carry their load."]
    if doc["errors"]:
        lines += ["", "## Measurement errors", ""]
        lines += [f"- {e['variant']} depth {_dkey(e['depth'])} rep {e['rep'] + 1}, {e['metric']}: {e['error']}"
                  for e in doc["errors"]]
    return "\n".join(lines) + "\n"


def plain(doc: dict[str, Any]) -> list[str]:
    """Proxied variants the sender gives plain IP (the floor, afxdp-null): they push no labels, so
    their depth slots are repeats of one measure, not points along the label axis."""
    var = doc["variants"]
    return [v for v, info in var.items() if info["baseline"] != v and not info.get("labelled", True)]


def _caveats(doc: dict[str, Any], summ: dict[str, Any]) -> list[str]:
    """What the reader must know before comparing the table's figures."""
    s = doc["meta"]["settings"]
    out = ["Depth slots are measured one after another (minutes apart in a full run) and the machine drifts "
           "between them: the same traffic has "
           "differed by some 30% from one slot to the next, so compare absolute figures within a slot only; "
           "every ratio here (×base, ×LRU, a / b) divides samples of the same slot and repetition."]
    for v in plain(doc):
        meds = [e["tcp_gbps"]["median"] for d in map(str, s["depths"])
                if (e := summ.get(v, {}).get(d, {})).get("tcp_gbps")]
        if len(meds) > 1 and min(meds) > 0:
            out[0] += (f" In this run {v}, the same plain IP in every slot, gave TCP medians of "
                       f"{min(meds):.2f}–{max(meds):.2f} Gbit/s ({100 * (max(meds) / min(meds) - 1):.0f}% apart).")
    if s["reps"] <= 2:
        out.append(f"**{s['reps']} repetition(s) only**: " + (
            "each figure is one sample, with no spread." if s["reps"] == 1 else
            "the median of two samples is their mean, and [min–max] is just the two samples, not a spread "
            "to judge noise by.") + " Use --reps 3 or more for that.")
    return out


def _headline_lines(h: dict[str, Any]) -> list[str]:
    out = []

    def share_ok(x: float) -> bool:
        return x >= SHARE_TARGET

    def cost_ok(x: float) -> bool:
        return x <= COST_TARGET

    if "kernel_hash_tcp_share_of_baseline" in h:
        shares = ", ".join(f"{d}: {cell(e)} ({verdict(e, share_ok)})"
                           for d, e in h["kernel_hash_tcp_share_of_baseline"].items())
        out.append(f"- kernel-hash TCP throughput as a share of baseline, by labels (target ≥ {SHARE_TARGET:g}): "
                   f"{shares}")
    dr = h.get("kernel_hash_tcp_drop")
    if dr:
        what = (f"- kernel-hash TCP drop from {dr['from']} to {dr['to']} labels, relative change of its share of "
                f"baseline, 1 − share({dr['to']}) / share({dr['from']}) per repetition (negative: it rose): "
                f"{_pct(dr['drop'])}")
        if (str(dr["from"]), str(dr["to"])) == DROP_DEPTHS:
            out.append(f"{what}; target < {100 * DROP_TARGET:g}%: {verdict(dr['drop'], lambda x: x < DROP_TARGET)}")
        else:  # the target is a 1 -> 16 figure: another span says nothing about it
            out.append(f"{what}; not the target's measure (< {100 * DROP_TARGET:g}% from 1 to 16 labels: "
                       "run depths 1 and 16 for it)")
    for v, e in h.get("issue2_tcp_3_labels_vs_baseline", {}).items():
        out.append(f"- issue 2: {v} with 3 labels / plain IP in the same topology, TCP (target ≥ {SHARE_TARGET:g}): "
                   f"{cell(e)} ({verdict(e, share_ok)})")
    for pair, ms in h["pairs"].items():
        t = ", ".join(f"{d}: {cell(e)}" for d, e in ms["tcp_gbps"].items())
        p = ", ".join(f"{d}: {cell(e)}" for d, e in ms["mpps_64"].items())
        out.append(f"- {pair}, TCP by labels: {t}; 64 B packet rate: {p}")
    for v, c in h.get("issue2_bpf_cost_8_labels", {}).items():
        out.append(f"- BPF cost at 8 labels, {v} (BPF_PROG_TEST_RUN, target ≤ {COST_TARGET:g}× the LRU floor): "
                   f"RX {cell(c['rx_ns'], 0)} ns = {cell(c['rx_vs_lru'])}× LRU floor "
                   f"({verdict(c['rx_vs_lru'], cost_ok)}; {cell(c['rx_vs_lru_net'])}× net of XDP_PASS), "
                   f"TX {cell(c['tx_ns'], 0)} ns = {cell(c['tx_vs_lru'])}× ({verdict(c['tx_vs_lru'], cost_ok)}; "
                   f"{cell(c['tx_vs_lru_net'])}× net); "
                   f"floors: LRU update {cell(c['floor_lru_ns'], 0)} ns, XDP_PASS {cell(c['floor_pass_ns'], 0)} ns")
        if c.get("in_situ_ns_per_run"):
            out.append("  - in place under the 64 B load (kernel run-time stats, ns per run): " + ", ".join(
                f"{name} {cell(e, 0)}" for name, e in c["in_situ_ns_per_run"].items()))
    if h.get("fidelity"):
        out.append("- header fidelity: " + ", ".join(f"{v} {_pct(e)}" for v, e in h["fidelity"].items()))
    return out


# ---------------------------------------------------------------------- plots


def _series(summ: dict[str, Any], v: str, depths: list[str], metric: str, ratio: bool = False
            ) -> tuple[list[int], list[float], list[list[float]]]:
    xs, ys, lo, hi = [], [], [], []
    for d in depths:
        e = summ.get(v, {}).get(d, {}).get(metric)
        if ratio and e:
            e = e.get("ratio")
        if e:
            xs.append(int(d))
            ys.append(e["median"])
            lo.append(e["median"] - e["lo"])
            hi.append(e["hi"] - e["median"])
    return xs, ys, [lo, hi]


def _flat(summ: dict[str, Any], v: str, depths: list[str], metric: str, ratio: bool = False
          ) -> tuple[float, float, float] | None:
    """(median of the slots' medians, lowest, highest) of a variant with no depth of its own."""
    _, ys, (lo, hi) = _series(summ, v, depths, metric, ratio)
    if not ys:
        return None
    return statistics.median(ys), min(y - d for y, d in zip(ys, lo, strict=True)), \
        max(y + d for y, d in zip(ys, hi, strict=True))


def plots(doc: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ = summarize(doc)
    depths = [str(d) for d in doc["meta"]["settings"]["depths"]]
    variants = doc["variants"]
    flat = plain(doc)  # no labels pushed: a reference band across the axis, not points on it
    proxied = [v for v in variants if variants[v]["baseline"] != v and v not in flat]
    bases = [v for v in variants if variants[v]["baseline"] == v]
    missing = [v for v in proxied + flat if variants[v]["unavailable"]]
    note = ("unavailable: " + ", ".join(missing)) if missing else ""
    colors = {v: f"C{i}" for i, v in enumerate(variants)}
    files = []

    def lines(ax: Any, metric: str, ratio: bool = False, with_bases: bool = True) -> None:
        for v in proxied:
            xs, ys, err = _series(summ, v, depths, metric, ratio)
            if xs:
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=v, color=colors[v])
        if with_bases and not ratio:
            for b in bases:
                xs, ys, err = _series(summ, b, depths, metric)
                if xs:
                    ax.errorbar(xs, ys, yerr=err, linestyle="--", capsize=2, label=f"{b} (no labels)",
                                color=colors[b], alpha=0.7)
        for v in flat:
            ref = _flat(summ, v, depths, metric, ratio)
            if ref:
                ax.axhline(ref[0], color=colors[v], linestyle="-.", label=f"{v} (plain IP, no labels; all slots)")
                ax.axhspan(ref[1], ref[2], color=colors[v], alpha=0.12)
        ax.set_xlabel("MPLS labels pushed by the sender")
        ax.set_xticks([int(d) for d in depths])
        ax.grid(alpha=0.3)

    # the slides' figure: throughput against the number of labels, per variant
    fig, ax = plt.subplots(figsize=(8, 5))
    lines(ax, "tcp_gbps")
    ax.set_ylabel("TCP throughput, Gbit/s (median, min–max)")
    ax.set_ylim(bottom=0)
    ax.set_title("iperf3 TCP through the proxy vs label depth" + (f"\n({note})" if note else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(out / "throughput.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)

    fig, axs = plt.subplots(2, 3, figsize=(16, 9))
    panels = [
        (axs[0][0], "tcp_gbps", True, "TCP throughput / baseline"),
        (axs[0][1], "mpps_64", False, "packet rate, 64 B frames, Mpps"),
        (axs[0][2], "mpps_1500", False, "packet rate, 1500 B frames, Mpps"),
        (axs[1][0], "bpf_rx_ns", False, "BPF_PROG_TEST_RUN ns/packet (solid RX, dotted TX)"),
        (axs[1][1], "rtt_p50_us", False, "ICMP RTT µs (solid p50, dotted p99)"),
        (axs[1][2], "cpu_ns_per_pkt", False, "proxy CPU ns per packet (64 B load), log scale"),
    ]
    for ax, metric, ratio, title in panels:
        lines(ax, metric, ratio, with_bases=metric not in ("bpf_rx_ns", "cpu_ns_per_pkt"))
        ax.set_title(title, fontsize=10)
    axs[0][0].axhline(0.9, color="grey", linestyle=":", label="target 0.9")
    for twin, ax in (("bpf_tx_ns", axs[1][0]), ("rtt_p99_us", axs[1][1])):
        for v in (proxied if twin == "bpf_tx_ns" else proxied + bases):
            xs, ys, _ = _series(summ, v, depths, twin)
            if xs:
                ax.plot(xs, ys, linestyle=":", marker="x", color=colors[v])
        for v in flat:
            ref = _flat(summ, v, depths, twin)
            if ref:
                ax.axhline(ref[0], color=colors[v], linestyle=":")
    for floor, style in (("floor_lru_ns", "-."), ("floor_pass_ns", ":")):
        vals = [e[floor]["median"] for v in proxied for e in summ.get(v, {}).values() if floor in e]
        if vals:
            axs[1][0].axhline(statistics.median(vals), color="black", linestyle=style, alpha=0.6,
                              label=f"{floor.removesuffix('_ns').replace('_', ' ')} (median)")
    axs[1][2].set_yscale("log")  # user-space and in-kernel proxies differ by an order of magnitude
    for ax in axs.flat:
        if ax.get_yscale() == "linear":
            ax.set_ylim(bottom=0)  # after every line is drawn: this freezes the top too
        if ax.get_legend_handles_labels()[0]:  # a panel no variant has a figure for has no legend
            ax.legend(fontsize=7)
    if note:
        fig.suptitle(note, fontsize=9)
    fig.tight_layout()
    files.append(out / "overview.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    names, vals, errs = [], [], [[], []]
    for v in proxied:
        e = summ.get(v, {}).get(DYN, {}).get("fidelity")
        if e:
            names.append(v)
            vals.append(100 * e["median"])
            errs[0].append(100 * (e["median"] - e["lo"]))
            errs[1].append(100 * (e["hi"] - e["median"]))
    ax.bar(names, vals, yerr=errs, capsize=4, color=[colors[n] for n in names])
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of packets with their own stack")
    ax.set_title("Header fidelity, dynamic chain" + (f"\n({note})" if note else ""))
    fig.tight_layout()
    files.append(out / "fidelity.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)
    return files


def write(doc: dict[str, Any], out: Path) -> list[Path]:
    """bench.json (with the summaries), bench.md and the plots in out."""
    doc = {**doc, "summary": summarize(doc), "headline": headline(doc)}
    js = out / "bench.json"
    js.write_text(json.dumps(doc, indent=1))
    md = out / "bench.md"
    md.write_text(markdown(doc))
    return [js, md, *plots(doc, out)]
