"""The environment a benchmark ran in: kernel, CPU, offloads, versions."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from afxdp_proxy.lab import netns
from afxdp_proxy.lab.testbed import Testbed

REPO = Path(__file__).resolve().parents[3]
# offloads that change what the data path does per packet; the rest of ethtool -k is noise here
OFFLOADS = ("rx-gro", "rx-gro-list", "rx-udp-gro-forwarding", "rx-checksum", "tx-checksum-ip-generic",
            "tx-scatter-gather", "tx-generic-segmentation", "tx-tcp-segmentation", "tx-udp-segmentation")


def _cmd(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else ""


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _dist(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _deb(pkgs: list[str]) -> dict[str, str]:
    out = {}
    for p in pkgs:
        v = _cmd(["dpkg-query", "-W", "-f=${Version}", p])
        out[p] = v or "not installed"
    return out


def git_state() -> dict[str, Any]:
    head = _cmd(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    # what the run used beyond the commit: others' work in progress shares this tree
    status = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True,
                            text=True).stdout.splitlines()
    return {"commit": head, "dirty": bool(status), "changes": status}


def offloads(beds: list[Testbed]) -> dict[str, dict[str, bool]]:
    """{"prefix (topology)/role/interface": {feature: on}} for every veth end of every testbed."""
    out: dict[str, dict[str, bool]] = {}
    for tb in beds:
        for wire in tb.wires:
            for end in wire:
                feats = netns.get_features(tb.nsname(end.role), end.ifname)
                out[f"{tb.prefix} ({tb.topology})/{end.role}/{end.ifname}"] = {
                    k: feats[k] for k in OFFLOADS if k in feats}
    return out


def environment(beds: list[Testbed]) -> dict[str, Any]:
    u = os.uname()
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "kernel": f"{u.sysname} {u.release} {u.version}",
        "machine": u.machine,
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": sys.version.split()[0],
        "versions": {
            "afxdp-proxy": _dist("afxdp-proxy"), "numpy": _dist("numpy"), "matplotlib": _dist("matplotlib"),
            "pyroute2": _dist("pyroute2"), "iperf3": _cmd(["iperf3", "--version"]),
            "clang": _cmd(["clang", "--version"]), **_deb(["libbpf1", "libxdp1"]),
        },
        "git": git_state(),
        "offloads": offloads(beds),
    }
