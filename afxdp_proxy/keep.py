"""What a proxy keeps for the next proxy of its name (`run --keep-cache`): its cache, so that
packets inside an SF while the proxy restarts (an upgrade, a crash) come back with their own
stacks.

* kernel backend: the cache map and the counters map, pinned in a bpffs mounted at
  /run/afxdp-proxy/bpf (``PIN_ROOT``), under ``<name>/``. Not /sys/fs/bpf: ``ip netns exec``
  remounts /sys, and a pin made under it by one invocation is invisible to the next; a bpffs
  mounted elsewhere in the host's mount namespace is seen by every later ``ip netns exec``.
  A bpffs mounted from inside ``ip netns exec`` would die with that process, so the proxy never
  mounts it itself: ``afxdp-proxy pinfs`` (or the systemd unit, or the lab) does, beforehand.
* afxdp backend: the cache's memory is a file, /run/afxdp-proxy/kept/<name>.cache, mapped
  shared; the counters likewise (<name>.counters).
* both: a record, /run/afxdp-proxy/kept/<name>.json, says which backend kept what, in which
  layout, and the SFs' slots (the index a cache entry and a counter row carry), so the next
  proxy gives every SF its old slot.

The next proxy of the same name reuses what was kept when the layout matches (same backend,
cache layout version, set size, number of sets, key mode, counter slots), and starts empty
otherwise, saying why in one log line. A proxy run without --keep-cache that finds a matching
kept cache takes it over too, and drops the pins at once: when it ends, nothing is left.

Nothing stays forever: a clean stop without --keep-cache leaves nothing; with it, what was kept
stays until the next start of that name (reused or replaced), ``afxdp-proxy forget NAME``, or a
reboot (/run is in memory).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from afxdp_proxy import state

PIN_ROOT = Path(os.environ.get("AXP_PIN_DIR", str(state.STATE_DIR / "bpf")))
KEPT_DIR = state.STATE_DIR / "kept"


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal
    return field.encode().decode("unicode_escape")


def is_bpffs(path: Path | str) -> bool:
    """True when a bpffs is mounted exactly at path, in this mount namespace."""
    want = os.path.realpath(path)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    found = False
    for line in lines:
        left, _, right = line.partition(" - ")
        parts = left.split()
        if len(parts) >= 5 and _unescape(parts[4]) == want:
            found = right.split()[:1] == ["bpf"]  # the last mount on a path hides the earlier ones
    return found


def ensure_pinfs(path: Path | str = PIN_ROOT) -> bool:
    """Mount a bpffs on path unless one is there. Returns True when it mounted one now.
    Run it in the host's mount namespace: one mounted inside `ip netns exec` dies with it."""
    from afxdp_proxy import bpf

    p = Path(path)
    p.mkdir(mode=0o700, parents=True, exist_ok=True)
    if is_bpffs(p):
        return False
    bpf.mount_bpffs(p)
    return True


def pin_dir(name: str) -> Path:
    """Where name's maps are pinned. A bpffs refuses '.' in a name (EPERM: kernel/bpf/inode.c,
    bpf_lookup), which proxy names and namespace names may hold: '.' is written +2E, and '+'
    itself +2B, so that every name has a directory of its own."""
    return PIN_ROOT / name.replace("+", "+2B").replace(".", "+2E")


def _name_of_pin_dir(d: Path) -> str:
    return d.name.replace("+2E", ".").replace("+2B", "+")


def record_path(name: str) -> Path:
    return KEPT_DIR / f"{name}.json"


def file_path(name: str, what: str) -> Path:
    """A kept file of the afxdp backend: what = "cache" or "counters"."""
    return KEPT_DIR / f"{name}.{what}"


def read(name: str) -> dict[str, Any] | None:
    try:
        data = json.loads(record_path(name).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write(name: str, data: dict[str, Any]) -> None:
    KEPT_DIR.mkdir(parents=True, exist_ok=True)
    path = record_path(name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def mismatch(kept: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """How a kept layout differs from the one wanted: ``"sets 8192 -> 128"``, ..."""
    return [f"{k} {kept.get(k)} -> {v}" for k, v in want.items() if kept.get(k) != v]


def forget(name: str) -> list[str]:
    """Remove everything kept under name: pins, files, record. Returns what it removed."""
    removed = []
    pins = pin_dir(name)
    if pins.is_dir():
        for p in sorted(pins.iterdir()):
            p.unlink(missing_ok=True)  # a pin is a file of the bpffs: unlinking it drops the reference
            removed.append(str(p))
        pins.rmdir()
    for p in sorted(KEPT_DIR.glob(f"{name}.*")) if KEPT_DIR.is_dir() else []:
        if p.name in (f"{name}.json", f"{name}.tmp", f"{name}.cache", f"{name}.counters"):
            p.unlink(missing_ok=True)
            removed.append(str(p))
    return removed


def kept() -> dict[str, dict[str, Any]]:
    """Records of every name with something kept."""
    out: dict[str, dict[str, Any]] = {}
    if KEPT_DIR.is_dir():
        for p in sorted(KEPT_DIR.glob("*.json")):
            data = read(p.stem)
            if data is not None:
                out[p.stem] = data
    if PIN_ROOT.is_dir():
        for d in sorted(PIN_ROOT.iterdir()):
            if d.is_dir() and _name_of_pin_dir(d) not in out:
                out[_name_of_pin_dir(d)] = {"pins": str(d)}  # pins without a record: forget removes them
    return out

