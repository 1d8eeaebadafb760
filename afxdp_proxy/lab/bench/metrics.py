"""One measurement each, on a testbed whose proxy (if any) is already running.

Every function returns a flat dict: the figure under "value" and whatever
explains it (counts, retransmits, raw percentiles) beside it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from afxdp_proxy import bpf
from afxdp_proxy.lab import netns, traffic
from afxdp_proxy.lab.bench.gen import Generator, udp_frame
from afxdp_proxy.lab.testbed import P_IN, SRC_OUT, Testbed, dynamic_stacks
from afxdp_proxy.mpls import Lse

# One policy for every variant: both iperf3 ends on CPU 0. With the ends on different
# CPUs, packets of one flow leave from two per-CPU backlogs and get reordered on the
# veths (hundreds of spurious retransmits a second, see traffic.iperf3_client); on CPU 0
# the whole path runs in that CPU's softirq, so the figure is one core's worth of path.
IPERF_AFFINITY = (0, 0)
GEN_CPU = 0  # the generator too: its frames' whole path runs on the CPU that sends them


def tcp(tb: Testbed, seconds: float, omit: int = 0, flows: int = 1) -> dict[str, Any]:
    """iperf3 TCP, `flows` flows (one by default), Gbit/s at the receiver, all flows together."""
    extra = ["-O", str(omit)] if omit else []
    r = tb.iperf3(seconds=_whole(seconds), affinity=IPERF_AFFINITY, extra=extra, parallel=flows)
    return {"value": r.bits_per_second / 1e9, "retransmits": r.retransmits, "stalls": r.stalls,
            "sent_gbps": r.sent_bits_per_second / 1e9}


def _whole(seconds: float) -> int:
    """iperf3 takes whole seconds (and -t 0 means forever)."""
    return max(1, round(seconds))


def _received(tb: Testbed) -> dict[int, int]:
    """The generator's frames the receiver counted so far, by depth: nothing else in flight."""
    return tb.generator_histogram()


def _settled(tb: Testbed, quiet: float = 0.1, timeout: float = 2.0) -> dict[int, int]:
    """The receiver's histogram once nothing more arrived for `quiet` seconds (frames still in
    flight land, also when a busy machine's softirq work waits a while for its CPU): what
    lands later would count in the next measurement's window."""
    last, since = _received(tb), time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = _received(tb)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def _delta(after: dict[int, int], before: dict[int, int]) -> dict[int, int]:
    return {d: n - before.get(d, 0) for d, n in after.items() if n - before.get(d, 0)}


def frame_for(tb: Testbed, stack: Sequence[Lse], size: int) -> tuple[bytes, int]:
    """The generator's frame from the sender's wire side to the proxy's net_in."""
    return udp_frame(stack, size, SRC_OUT.mac, P_IN.mac, tb.src_ip, tb.dst_ip)


def packet_rate(tb: Testbed, gen: Generator, stack: Sequence[Lse], size: int, seconds: float,
                flows: int = 1) -> dict[str, Any]:
    """Frames of `size` bytes (before the stack) as fast as the generator goes; Mpps at the receiver.
    flows > 1: that many UDP flows, from a generator on every CPU at once (one veth queue each)."""
    frame, seq_off = frame_for(tb, stack, size)
    before = _received(tb)
    total = lambda: sum(_received(tb).values())  # noqa: E731
    if flows > 1:
        run = gen.send_spread(tb.ns_src, tb.src_wire, frame, seq_off, seconds, sorted(os.sched_getaffinity(0)),
                              total, flows)
    else:
        run = gen.send(tb.ns_src, tb.src_wire, frame, seq_off, seconds, count=total, cpu=GEN_CPU)
    got = _delta(_settled(tb), before)
    received = sum(got.values())
    if not received:
        raise RuntimeError(f"the receiver counted none of {run.frames} frames")
    # the steady-state rate; whole-run figures (set-up and tear-down included) stay beside it
    return {"value": (run.rate or received / run.seconds) / 1e6, "sent": run.frames, "received": received,
            "seconds": run.seconds, "window_seconds": run.window_seconds,
            "mpps_whole_run": received / run.seconds / 1e6, "depths": got, "wire_bytes": len(frame)}


def latency(tb: Testbed, count: int, interval: float) -> dict[str, Any]:
    """ICMP echo round trips through the proxy path under light load (one at a time)."""
    r = traffic.ping(tb.ns_src, tb.dst_ip, count=count, interval=interval, timeout=1.0)
    if not r.rtts_ms:
        raise RuntimeError(f"no echo reply came back ({r.sent} sent)")
    us = sorted(x * 1e3 for x in r.rtts_ms)
    return {"p50": statistics.median(us), "p99": _quantile(us, 0.99), "lost": r.sent - r.received,
            "count": r.sent}


def _quantile(s: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on sorted s."""
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def fidelity(tb: Testbed, seconds: float) -> dict[str, Any]:
    """Share of dynamic-chain packets that reach the receiver with their own stack minus the top label.

    The classifier must already push dynamic_stacks(); a light TCP flow carries them.
    """
    tb.set_recording(True)
    try:
        tb.iperf3(seconds=_whole(seconds), bitrate="40M", affinity=IPERF_AFFINITY)
    finally:
        tb.set_recording(False, clear=False)
    check, sent = tb.check_chain(), len(tb.sent())
    if not check.compared:
        raise RuntimeError(f"no packet of the dynamic chain was recorded at both ends "
                           f"({sent} sent, {len(tb.received())} received)")
    return {"value": check.kept / check.compared, "compared": check.compared, "kept": check.kept,
            "sent": sent, "patterns": len(dynamic_stacks(tb.sf_label))}


# ---------------------------------------------------------------------- CPU per packet


def programs_of(pid: int) -> dict[int, str]:
    """{id: name} of the BPF programs process pid holds open: a proxy's own, whatever other
    programs the machine's other users load meanwhile."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/fdinfo/{fd}") as f:
            ids.update(int(line.split()[1]) for line in f if line.startswith("prog_id:"))
    return {i: n for i, n in bpf.loaded_programs().items() if i in ids}


def _prog_stats(ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    from afxdp_proxy._native import lib

    out = {}
    for i in ids:
        fd = lib.axp_prog_fd_by_id(i)
        if fd < 0:
            continue  # unloaded meanwhile
        try:
            info = bpf.prog_info(fd)
            out[i] = (int(info.run_time_ns), int(info.run_cnt))
        finally:
            lib.axp_close_fd(fd)
    return out


def process_cpu_ns(pid: int) -> int:
    """CPU time of every thread of pid so far, in ns (schedstat), or from utime+stime."""
    total, found = 0, False
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        with contextlib.suppress(OSError), open(path) as f:
            total += int(f.read().split()[0])
            found = True
    if found:
        return total
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _per_run(p0: dict[int, tuple[int, int]], p1: dict[int, tuple[int, int]], prog_ids: dict[int, str]
             ) -> dict[str, dict[str, Any]]:
    """Run time and runs between p0 and p1 by program name, summed over the programs of one
    name (the null forwarder loads axp_xsk_from_sf for net_in and for from_sf: two ids)."""
    sums: dict[str, list[int]] = {}
    for i, (t1, n1) in p1.items():
        t0, n0 = p0.get(i, (0, 0))
        acc = sums.setdefault(prog_ids[i], [0, 0])
        acc[0] += t1 - t0
        acc[1] += n1 - n0
    return {name: {"run_ns": t, "runs": n, "ns_per_run": t / n if n else None} for name, (t, n) in sums.items()}


def run_time_during(prog_ids: dict[int, str], load: Callable[[], Any]) -> tuple[dict[str, dict[str, Any]], Any]:
    """Each program's run time per run (kernel accounting, on for this window only) while
    load() runs, and what load() returned."""
    with run_stats():
        p0 = _prog_stats(list(prog_ids))
        res = load()
        p1 = _prog_stats(list(prog_ids))
    return _per_run(p0, p1, prog_ids), res


@contextlib.contextmanager
def run_stats() -> Iterator[None]:
    """Kernel BPF run-time accounting, on only inside the block: it costs every program a clock read."""
    fd = bpf.enable_run_stats()
    try:
        yield
    finally:
        os.close(fd)


def proxy_cpu(tb: Testbed, gen: Generator, stack: Sequence[Lse], seconds: float, pid: int | None,
              prog_ids: dict[int, str]) -> dict[str, Any]:
    """CPU the proxy spends per packet delivered, under the 64-byte generator load.

    BPF run time of the proxy's programs (kernel accounting, on for this window only)
    plus the proxy process's own CPU time (the whole data path for afxdp, ~0 for the
    in-kernel proxies), divided by the packets the receiver counted.
    """
    frame, seq_off = frame_for(tb, stack, 64)
    with run_stats():
        p0 = _prog_stats(list(prog_ids))
        c0 = process_cpu_ns(pid) if pid else 0
        before = _received(tb)
        run = gen.send(tb.ns_src, tb.src_wire, frame, seq_off, seconds, cpu=GEN_CPU)
        got = sum(_delta(_settled(tb), before).values())
        p1 = _prog_stats(list(prog_ids))
        c1 = process_cpu_ns(pid) if pid else 0
    progs = _per_run(p0, p1, prog_ids)
    bpf_ns = sum(p["run_ns"] for p in progs.values())
    proc_ns = c1 - c0
    if not got:
        raise RuntimeError("the receiver counted no packet")
    return {"value": (bpf_ns + proc_ns) / got, "bpf_ns_per_pkt": bpf_ns / got, "process_ns_per_pkt": proc_ns / got,
            "received": got, "sent": run.frames, "programs": progs}


@contextlib.contextmanager
def napi_on(tb: Testbed) -> Iterator[None]:
    """A baseline has no program on net_in, but a veth takes XDP_TX frames from its peer only
    while it runs NAPI: hold an XDP_PASS program there (GRO kept off, as the proxies keep it)."""
    with bpf.BpfObject(bpf.object_path("testbed")) as obj:
        obj.load()
        with netns.enter(tb.ns_proxy):
            link = bpf.Link.xdp(obj.prog_fd("tb_xdp_pass"), tb.ifindex("proxy", tb.net_in))
        try:
            # attaching XDP turns GRO on for a veth that did not ask for it
            netns.set_features(tb.ns_proxy, tb.net_in, {"rx-gro": False})
            yield
        finally:
            link.close()
