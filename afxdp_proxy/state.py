"""Where a running proxy says how to reach it: /run/afxdp-proxy/<name>.json.

bpffs pins would not do: `ip netns exec` remounts /sys, so a pin made by one
invocation is invisible to the next. Map IDs are global, and the running
proxy keeps its maps alive, so `stats` opens them by ID.

What a proxy changes on its interfaces (InterfaceChanges) is written down here
too, before each change, so that what a killed proxy could not put back is put
back by the next command that looks for running proxies (sweep_dead).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import json
import logging
import mmap
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

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
    """State of live instances by name; files of dead processes are removed (sweep_dead)."""
    out: dict[str, dict[str, Any]] = {}
    if not STATE_DIR.is_dir():
        return out
    sweep_dead()
    for path in sorted(STATE_DIR.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if "pid" in data and not alive(int(data["pid"])):
            # a dead pid's record goes whatever its kind: `testbed down` asks for testbeds only, and
            # a SIGKILLed proxy's record stayed until something asked for proxies
            path.unlink(missing_ok=True)
            continue
        if data.get("kind") != kind:
            continue
        out[path.stem] = data
    return out


# ---------------------------------------------------------------------- what a dead proxy leaves

CLONE_NEWNET = 0x40000000


SO_NETNS_COOKIE = 71  # include/uapi/asm-generic/socket.h, Linux 5.14


def netns_cookie() -> int | None:
    """The caller's network namespace's cookie: never reused while the machine runs, where a freed
    namespace's nsfs inode is (the next namespace may get it). None before Linux 5.14."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), sys.byteorder)
    except OSError:
        return None


def _netns_ident() -> dict[str, Any]:
    """The caller's network namespace: its nsfs (device, inode), its cookie, and its name under
    /run/netns."""
    st = os.stat("/proc/self/ns/net")
    return {"dev": st.st_dev, "ino": st.st_ino, "cookie": netns_cookie(), "name": netns_name()}


class InterfaceChanges:
    """The ethtool features a proxy turns off on its interfaces, each written down in
    /run/afxdp-proxy/<name>.<pid>.<id>.restore (with its interface's index and network namespace)
    before it is changed, and crossed out when put back. A proxy killed before it puts them back
    (SIGKILL) leaves the file, and sweep_dead puts them back. A file of its own, not the state
    record: the backends change features while they start, before that record is written."""

    def __init__(self, name: str) -> None:
        self.path = STATE_DIR / f"{name}.{os.getpid()}.{id(self):x}.restore"
        self.changed: list[dict[str, Any]] = []

    def turn_off(self, ifname: str, ifindex: int, feature: str) -> bool | None:
        """Turn feature off on ifname (in the caller's namespace), on record first when it is on.
        Returns its state before (None: the device has no such feature)."""
        from afxdp_proxy.iface import get_feature, set_feature

        before = get_feature(ifname, feature)
        if before:
            entry = {"ifindex": ifindex, "ifname": ifname, "feature": feature, "on": True, "netns": _netns_ident()}
            if not any(_same(e, entry) for e in self.changed):
                self.changed.append(entry)
                self._write()
            set_feature(ifname, feature, False)
        return before

    def put_back(self, ifname: str, ifindex: int, feature: str) -> None:
        """Turn feature on again and cross it out (the record goes with the last one)."""
        from afxdp_proxy.iface import set_feature

        set_feature(ifname, feature, True)
        self.changed = [e for e in self.changed if (e["ifindex"], e["feature"]) != (ifindex, feature)]
        self._write()

    def _write(self) -> None:
        if not self.changed:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "features": self.changed}, indent=1))
        tmp.replace(self.path)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["ifindex"], a["feature"], a["netns"]["dev"], a["netns"]["ino"]) == \
        (b["ifindex"], b["feature"], b["netns"]["dev"], b["netns"]["ino"])


def _pid_of(path: Path) -> int | None:
    """The pid in <name>.<pid>.<id>.<kind>: the files a proxy's process owns."""
    try:
        return int(path.name.split(".")[-3])
    except (IndexError, ValueError):
        return None


def _dead(path: Path) -> bool:
    pid = _pid_of(path)
    return pid is not None and not alive(pid)


@contextmanager
def _locked() -> Iterator[None]:
    """STATE_DIR locked (flock): two sweeps never put back the same record, and a proxy's start,
    which sweeps before it changes anything, waits for one under way."""
    fd = os.open(STATE_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def sweep_dead() -> None:
    """What proxies that died without cleaning up (SIGKILL) left in STATE_DIR: the features they
    turned off put back on the interfaces still there (InterfaceChanges), their counter and
    trace files (afxdp backend) removed. Never raises: a failure is logged, the record kept."""
    try:
        found = [p for pat in ("*.restore", "*.counters", "*.trace") for p in STATE_DIR.glob(pat) if _dead(p)]
        if not found:
            return
        with _locked():
            for path in sorted(STATE_DIR.glob("*.restore")):
                if _dead(path) and _put_back(path):
                    path.unlink(missing_ok=True)
            for path in [*STATE_DIR.glob("*.counters"), *STATE_DIR.glob("*.trace")]:
                if _dead(path):
                    path.unlink(missing_ok=True)
    except OSError as e:
        log.warning("%s: cannot clean up after dead proxies (%s); run afxdp-proxy stats as root", STATE_DIR, e)


def _put_back(path: Path) -> bool:
    """Put back what the dead proxy's record `path` lists; False when some of it failed."""
    try:
        data = json.loads(path.read_text())
        changed = [e for e in data["features"] if isinstance(e, dict)]
    except (OSError, ValueError, KeyError, TypeError):
        return True  # unreadable (half written, by another build): nothing to put back from it
    pid = data.get("pid", "?")
    ok = True
    by_ns: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for e in changed:
        by_ns.setdefault((e["netns"]["dev"], e["netns"]["ino"]), []).append(e)
    for (dev, ino), entries in by_ns.items():
        where = _netns_path(dev, ino, entries[0]["netns"].get("name"))
        if where is None:
            continue  # the namespace is gone, and its virtual interfaces with it
        try:
            done = in_netns(where, lambda entries=entries: _put_back_here(entries))
        except Exception as e:
            ok = False
            name = entries[0]["netns"].get("name")
            cmd = f"ip netns exec {name} " if name else ""
            log.warning("%s: cannot put back %s that proxy pid %s turned off before it died (%s); put them back "
                        "by hand: %s", ", ".join(sorted({x["ifname"] for x in entries})),
                        ", ".join(sorted({x["feature"] for x in entries})), pid, e,
                        "; ".join(f"{cmd}ethtool -K {x['ifname']} {x['feature']} on" for x in entries))
            continue
        for e in done:
            log.info("%s: %s on again, as it was before proxy pid %s, which died without putting it back",
                     e["ifname"], e["feature"], pid)
    return ok


def _put_back_here(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set entries' features as they were, in the caller's namespace, on the interfaces that still
    have their index and name (another with the index is another device). Returns those set."""
    from afxdp_proxy.iface import set_feature

    cookie = entries[0]["netns"].get("cookie")
    if cookie is not None and netns_cookie() != cookie:
        return []  # a namespace that took the dead one's inode (a testbed made again): not its devices
    done = []
    for e in entries:
        try:
            if socket.if_indextoname(int(e["ifindex"])) != e["ifname"]:
                continue
        except OSError:
            continue  # gone
        if set_feature(e["ifname"], e["feature"], bool(e["on"])) is not None:
            done.append(e)
    return done


def _netns_path(dev: int, ino: int, name: str | None) -> str | None:
    """A path to the network namespace (dev, ino): "" for the caller's, its name under /run/netns,
    or a process's in it; None when none is found (the namespace is gone)."""
    mine = os.stat("/proc/self/ns/net")
    if (mine.st_dev, mine.st_ino) == (dev, ino):
        return ""
    try:
        named = sorted(os.listdir(NETNS_DIR))
    except OSError:
        named = []
    if name in named:
        named.insert(0, name)
    procs = (f"/proc/{p}/ns/net" for p in os.listdir("/proc") if p.isdigit())
    for path in [*(os.path.join(NETNS_DIR, n) for n in named), *procs]:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (dev, ino):
            return path
    return None


_libc: Any = None


def in_netns(path: str, fn: Callable[[], Any]) -> Any:
    """fn() in the network namespace at path ("": the caller's), on a thread of its own (setns
    changes the calling thread's); its exception, or setns's OSError, is raised here."""
    global _libc
    if not path:
        return fn()
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    out: list[Any] = []
    err: list[BaseException] = []

    def go() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns {path}: {os.strerror(e)}")
            finally:
                os.close(fd)
            out.append(fn())
        except BaseException as e:
            err.append(e)

    t = threading.Thread(target=go, name="axp-in-netns", daemon=True)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]
