"""Small pyroute2 helpers for network namespaces: links, addresses, routes,
neighbours, sysctls, offloads, and programs run inside a namespace.

Everything goes through netlink, ioctl or setns(2); nothing shells out to
``ip``/``tc``/``ethtool``. Code that needs the namespace on the calling thread
(ethtool ioctls, /proc/sys, sockets, libbpf's netlink attach) runs under
:func:`enter`, which always restores the thread's namespace.

A :class:`Registry` collects undo actions as resources are created, so a
half-built topology is torn down as completely as a finished one.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as _pr_netns
from pyroute2.ethtool import Ethtool

log = logging.getLogger(__name__)

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
IFA_F_NODAD = 0x02
T = TypeVar("T")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def ns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def ns_exists(name: str) -> bool:
    return os.path.exists(ns_path(name))


def list_ns(prefix: str = "") -> list[str]:
    return sorted(n for n in _pr_netns.listnetns(NETNS_DIR) if n.startswith(prefix))


def create_ns(name: str) -> None:
    """Create a named namespace (like ``ip netns add``) with loopback up."""
    if ns_exists(name):
        raise FileExistsError(errno.EEXIST, f"namespace {name} exists")
    _pr_netns.create(name)
    with IPRoute(netns=name, flags=0) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def ns_pids(name: str) -> list[int]:
    """Processes whose network namespace is `name` (by inode of the bind mount)."""
    try:
        st = os.stat(ns_path(name))
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            s = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (s.st_dev, s.st_ino) == (st.st_dev, st.st_ino):
            pids.append(int(entry))
    return pids


def delete_ns(name: str, kill: bool = True, timeout: float = 5.0) -> None:
    """Remove a namespace; its links go with it once no process holds it.

    With kill, processes still inside are terminated first (SIGTERM, then
    SIGKILL): a lingering iperf3 would otherwise keep the veths alive.
    """
    if kill:
        pids = [p for p in ns_pids(name) if p != os.getpid()]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if wait_until(lambda: not any(_alive(p) for p in pids), timeout / 2, raise_=False):
                break
    if ns_exists(name):
        _pr_netns.remove(name)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@contextlib.contextmanager
def enter(name: str | None) -> Iterator[None]:
    """Run the body with the calling thread in namespace `name` (None: stay)."""
    if name is None:
        yield
        return
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(ns_path(name), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(saved)
    finally:
        os.close(saved)


def call_in(name: str | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs) with the calling thread inside namespace `name`."""
    with enter(name):
        return fn(*args, **kwargs)


def socket_in(name: str | None, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A socket bound to namespace `name`; usable from any thread afterwards."""
    with enter(name):
        return socket.socket(family, type_, proto)


PR_SET_PDEATHSIG = 1


def _preexec(fd: int, user_preexec: Callable[[], Any] | None, die_with_parent: bool) -> Callable[[], None]:
    def go() -> None:
        _setns(fd)
        if die_with_parent:
            # SIGTERM when the thread that started us dies, even by SIGKILL: the child unwinds
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if user_preexec is not None:
            user_preexec()

    return go


def popen(name: str | None, argv: Sequence[str], die_with_parent: bool = False, **kw: Any) -> subprocess.Popen:
    """subprocess.Popen of argv inside namespace `name` (setns in the child).

    The child gets its own process group (``start_new_session``) unless told
    otherwise, so it can be signalled with everything it spawned. With
    die_with_parent it gets SIGTERM when the calling thread dies, however it
    dies (a killed test or benchmark leaves no proxy running behind it).
    """
    if name is None:
        return subprocess.Popen(list(argv), **kw)
    fd = os.open(ns_path(name), os.O_RDONLY)
    try:
        kw.setdefault("start_new_session", True)
        # the child runs preexec_fn before it closes inherited fds: fd is still open there
        kw["preexec_fn"] = _preexec(fd, kw.get("preexec_fn"), die_with_parent)
        return subprocess.Popen(list(argv), **kw)
    finally:
        os.close(fd)


def run(
    name: str | None, argv: Sequence[str], timeout: float = 30.0, check: bool = False, **kw: Any
) -> subprocess.CompletedProcess:
    """Run argv inside namespace `name`, capture text output, kill it on timeout."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    with popen(name, argv, **kw) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(p)
            out, err = p.communicate()
            raise
        res = subprocess.CompletedProcess(list(argv), p.returncode, out, err)
    if check:
        res.check_returncode()
    return res


def stop(p: subprocess.Popen, timeout: float = 3.0) -> int | None:
    """Terminate a process (and its process group), escalating to SIGKILL."""
    if p.poll() is not None:
        return p.returncode
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(sig)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            continue
    return p.poll()


def wait_until(
    pred: Callable[[], T],
    timeout: float = 5.0,
    interval: float = 0.01,
    what: str = "condition",
    raise_: bool = True,
) -> T:
    """Poll pred until it returns something truthy; return that, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            if raise_:
                raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
            return v
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def listening(pid: int, port: int, proto: str = "tcp") -> bool:
    """True when the namespace of process `pid` has a socket on `port` (TCP LISTEN or UDP bound)."""
    for fam in ("", "6"):
        try:
            with open(f"/proc/{pid}/net/{proto}{fam}") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    lport = int(cols[1].rsplit(":", 1)[1], 16)
                    if lport == port and (proto == "udp" or cols[3] == "0A"):
                        return True
        except FileNotFoundError:
            continue
    return False


def sysctl(name: str | None, key: str, value: str | int) -> None:
    """Write a sysctl (``net.ipv4.ip_forward``) as seen from namespace `name`."""
    path = "/proc/sys/" + key.replace(".", "/")
    with enter(name), open(path, "w") as f:
        f.write(str(value))


def sysctl_get(name: str | None, key: str) -> str:
    path = "/proc/sys/" + key.replace(".", "/")
    with enter(name), open(path) as f:
        return f.read().strip()


def get_features(name: str | None, ifname: str) -> dict[str, bool]:
    """Offload features of ifname (ethtool -k names) as {name: enabled}."""
    with enter(name), Ethtool() as et:
        return {k: bool(v.enable) for k, v in et.get_features(ifname).features.items()}


def set_features(name: str | None, ifname: str, features: dict[str, bool]) -> dict[str, bool]:
    """Set offload features (ethtool -K names); return the resulting state of those asked.

    Raises KeyError for a name the device does not know and RuntimeError when
    the kernel kept a feature at the other value (fixed features).
    """
    with enter(name), Ethtool() as et:
        cur = et.get_features(ifname)
        for k, v in features.items():
            if k not in cur.features:
                raise KeyError(f"{ifname}: no feature {k}")
            cur.features[k].enable = v
        et.set_features(ifname, cur)
        got = {k: bool(v.enable) for k, v in et.get_features(ifname).features.items()}
    wrong = {k: got[k] for k, v in features.items() if got[k] != v}
    if wrong:
        raise RuntimeError(f"{ifname}: features stayed {wrong}")
    return {k: got[k] for k in features}


class Namespace:
    """One named namespace and a lazily opened RTNL socket inside it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ipr: IPRoute | None = None

    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = IPRoute(netns=self.name, flags=0)
        return self._ipr

    def close(self) -> None:
        """Close the RTNL socket (it keeps the namespace alive while open)."""
        if self._ipr is not None:
            with contextlib.suppress(Exception):
                self._ipr.close()
            self._ipr = None

    def ifindex(self, ifname: str) -> int:
        idx = self.ipr.link_lookup(ifname=ifname)
        if not idx:
            raise LookupError(f"{self.name}: no interface {ifname}")
        return int(idx[0])

    def links(self) -> list[str]:
        return [str(link.get("ifname")) for link in self.ipr.get_links()]

    def mac(self, ifname: str) -> str:
        return str(self.ipr.get_links(self.ifindex(ifname))[0].get("IFLA_ADDRESS"))

    def link_stats(self, ifname: str) -> dict[str, int]:
        """The interface's ``rtnl_link_stats64`` (``ip -s link``): rx_packets, tx_dropped, ..."""
        stats = self.ipr.get_links(self.ifindex(ifname))[0].get("IFLA_STATS64")
        return {k: int(v) for k, v in stats.items()} if stats else {}

    def operstate(self, ifname: str) -> str:
        return str(self.ipr.get_links(self.ifindex(ifname))[0].get("IFLA_OPERSTATE"))

    def link_set(self, ifname: str, **kw: Any) -> None:
        """``ip link set``: e.g. state="up", mtu=1600, address="02:..."."""
        self.ipr.link("set", index=self.ifindex(ifname), **kw)

    def link_up(self, ifname: str) -> None:
        self.link_set(ifname, state="up")

    def add_address(self, ifname: str, cidr: str) -> None:
        """Add "10.0.0.1/24" or "fd00::1/64" (IPv6 without DAD, so usable at once)."""
        addr, plen = cidr.split("/")
        kw: dict[str, Any] = {}
        if ":" in addr:
            kw["flags"] = IFA_F_NODAD
        self.ipr.addr("add", index=self.ifindex(ifname), address=addr, prefixlen=int(plen), **kw)

    def add_route(
        self,
        dst: str,
        via: str | None = None,
        dev: str | None = None,
        mtu: int | None = None,
        table: int | None = None,
    ) -> None:
        """``ip route add dst [via G] [dev D] [mtu M] [table T]``; dst "default" works."""
        kw: dict[str, Any] = {}
        family = socket.AF_INET6 if ":" in (via or dst) else socket.AF_INET
        if dst != "default":
            kw["dst"] = dst
        if via:
            kw["gateway"] = via
        if dev:
            kw["oif"] = self.ifindex(dev)
        if mtu:
            kw["metrics"] = {"mtu": mtu}
        if table:
            kw["table"] = table
        self.ipr.route("add", family=family, **kw)

    def add_rule(self, table: int, priority: int, iifname: str | None = None, family: int = 4) -> None:
        """``ip [-6] rule add [iif I] lookup T pref P``."""
        kw: dict[str, Any] = {"iifname": iifname} if iifname else {}
        fam = socket.AF_INET6 if family == 6 else socket.AF_INET
        self.ipr.rule("add", table=table, priority=priority, family=fam, **kw)

    def add_neighbour(self, ifname: str, addr: str, mac: str) -> None:
        """A permanent neighbour entry: no ARP/ND, no resolution races."""
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self.ipr.neigh("add", dst=addr, lladdr=mac, ifindex=self.ifindex(ifname), state="permanent", family=fam)

    def sysctl(self, key: str, value: str | int) -> None:
        sysctl(self.name, key, value)

    def set_features(self, ifname: str, **features: bool) -> dict[str, bool]:
        """set_features(name, ifname, {"rx-gro": False}) with keyword names (rx_gro=False)."""
        names = {k if "-" in k else k.replace("_", "-"): v for k, v in features.items()}
        return set_features(self.name, ifname, names)

    def get_features(self, ifname: str) -> dict[str, bool]:
        return get_features(self.name, ifname)

    def wait_up(self, ifname: str, timeout: float = 5.0) -> None:
        """Wait for carrier (operstate UP): both veth ends are up."""
        wait_until(lambda: self.operstate(ifname) == "UP", timeout, what=f"{self.name}/{ifname} up")

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return call_in(self.name, fn, *args, **kwargs)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        return popen(self.name, argv, **kw)

    def run(self, argv: Sequence[str], timeout: float = 30.0, **kw: Any) -> subprocess.CompletedProcess:
        return run(self.name, argv, timeout, **kw)


def add_veth(
    a: Namespace,
    name_a: str,
    b: Namespace,
    name_b: str,
    mac_a: str | None = None,
    mac_b: str | None = None,
    mtu: int = 1500,
) -> None:
    """A veth pair created inside `a` with its peer placed in `b` at once: it
    never exists in the host namespace, so names cannot clash there."""
    if len(name_a) > 15 or len(name_b) > 15:
        raise ValueError(f"interface names are at most 15 characters: {name_a}, {name_b}")
    peer: dict[str, Any] = {"ifname": name_b, "net_ns_fd": ns_path(b.name), "mtu": mtu}
    kw: dict[str, Any] = {"mtu": mtu}
    if mac_a:
        kw["address"] = mac_a
    if mac_b:
        peer["address"] = mac_b
    a.ipr.link("add", ifname=name_a, kind="veth", peer=peer, **kw)


class Registry:
    """Undo actions, run last-in first-out by close(); errors are logged, not raised,
    so one failed step never stops the rest of a teardown."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], Any]]] = []

    def defer(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._undo.append((what, lambda: fn(*args, **kwargs)))

    def namespace(self, name: str) -> Namespace:
        """Create namespace `name` and register its removal."""
        create_ns(name)
        ns = Namespace(name)
        self.defer(f"delete namespace {name}", delete_ns, name)
        self.defer(f"close RTNL socket of {name}", ns.close)
        return ns

    def process(self, p: subprocess.Popen) -> subprocess.Popen:
        self.defer(f"stop pid {p.pid}", stop, p)
        return p

    def close(self) -> list[str]:
        """Run every undo action; return descriptions of those that failed."""
        failed = []
        while self._undo:
            what, fn = self._undo.pop()
            try:
                fn()
            except Exception as e:  # teardown goes on whatever one step did
                log.warning("teardown: %s failed: %s", what, e)
                failed.append(f"{what}: {e}")
        return failed

    def __len__(self) -> int:
        return len(self._undo)

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
