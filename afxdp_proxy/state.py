"""Where a running proxy says how to reach it: /run/afxdp-proxy/<name>.json.

bpffs pins would not do: `ip netns exec` remounts /sys, so a pin made by one
invocation is invisible to the next. Map IDs are global, and the running
proxy keeps its maps alive, so `stats` opens them by ID.
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path
from typing import Any

STATE_DIR = Path(os.environ.get("AXP_STATE_DIR", "/run/afxdp-proxy"))
NETNS_DIR = "/run/netns"  # where `ip netns` names namespaces


def netns_id() -> str:
    """An identifier of the caller's network namespace (its inode)."""
    return f"netns-{os.stat('/proc/self/ns/net').st_ino}"


def netns_name() -> str | None:
    """The name under /run/netns of the caller's network namespace, or None."""
    try:
        mine = os.stat("/proc/self/ns/net")
        for name in sorted(os.listdir(NETNS_DIR)):
            st = os.stat(os.path.join(NETNS_DIR, name))
            if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                return name
    except OSError:
        pass
    return None


def default_instance() -> str:
    """The instance name of a proxy without proxy.name: its network namespace's name under
    /run/netns (what `ip netns exec NS` and the systemd unit's %i give), else netns-<inode>."""
    return netns_name() or netns_id()


def alive(pid: int) -> bool:
    """Whether process pid exists (another user's, which we may not signal, does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write(name: str, data: dict[str, Any]) -> Path:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path = STATE_DIR / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
    return path


def map_shared(path: Path, size: int, keep: bool = False, mode: int = 0o644) -> mmap.mmap:
    """path (created if need be, with mode) sized to `size` bytes and mapped shared, read and
    write: how a proxy shares what its workers write (counters, trace events) with the commands
    that read it. keep: what the file holds stays; else it starts zeroed."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | (0 if keep else os.O_TRUNC)
    fd = os.open(path, flags, mode)
    try:
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


def remove(name: str) -> None:
    (STATE_DIR / f"{name}.json").unlink(missing_ok=True)


def running(kind: str = "proxy") -> dict[str, dict[str, Any]]:
    """State of live instances by name; files of dead processes are removed."""
    out: dict[str, dict[str, Any]] = {}
    if not STATE_DIR.is_dir():
        return out
    for path in sorted(STATE_DIR.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("kind") != kind:
            continue
        if "pid" in data and not alive(int(data["pid"])):
            path.unlink(missing_ok=True)
            continue
        out[path.stem] = data
    return out
