"""What `afxdp-proxy run` needs from the host, checked before anything is attached: by
`afxdp-proxy check` and as the first step of `run`, in the proxy's network namespace.

Every check gives one :class:`Finding`, one line naming the config field or the subject
it is about, what was found and, unless it is fine, what to do::

  ok       nothing to do
  fixed    `run` puts it right itself while it runs (GRO on net_in), and says so
  unknown  this namespace cannot see it (a veth peer's offloads, without CAP_SYS_ADMIN or
           without a name for the peer's namespace): the line says what to make sure of
  warn     `run` goes on, but some packets may suffer
  error    `run` would fail or lose packets: it refuses, and `check` exits with 2

The checks only look, with one exception: TCX is probed by attaching a pass-through TC
program to lo for an instant. Interfaces are read through netlink and ethtool (pyroute2);
a veth's other end through netlink's IFLA_LINK_NETNSID, and its ethtool state by entering
its namespace when that namespace has a name under /run/netns (otherwise: "unknown").
"""

from __future__ import annotations

import errno
import os
import resource
import socket
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pyroute2 import IPRoute
from pyroute2.ethtool.ioctl import EthtoolError

from afxdp_proxy import bpf, keep, state
from afxdp_proxy import iface as ifc
from afxdp_proxy.config import MAX_LABELS, ConfigError, MetricsConfig, ProxyConfig

OK, FIXED, UNKNOWN, WARN, ERROR = "ok", "fixed", "unknown", "warn", "error"
STATUSES = (OK, FIXED, UNKNOWN, WARN, ERROR)
EXIT_ERROR = 2

ETH_HLEN = 14
STACK_BYTES = 4 * MAX_LABELS  # the deepest stack the proxy pops or pushes
TAG_BYTES = 4 * 2  # the most VLAN tags the proxy reads in front of a stack (802.1ad over 802.1Q)
XDP_HEADROOM = 256  # XDP_PACKET_HEADROOM: where AF_XDP puts a frame's first byte in its UMEM chunk
# A veth takes native XDP (without multi-buffer support, which the proxy's programs do not
# declare) only while its peer's MTU leaves a frame in one page after XDP's headroom and the
# skb's shared info: 4096 - 256 - 320 - 14 = 3506 here (measured: 3507 fails with ERANGE).
SKB_SHARED_INFO = 320  # SKB_DATA_ALIGN(sizeof(struct skb_shared_info)) on x86_64 and arm64
VETH_XDP_MAX_PEER_MTU = os.sysconf("SC_PAGE_SIZE") - XDP_HEADROOM - SKB_SHARED_INFO - ETH_HLEN

AF_XDP = 44
CAP_NET_ADMIN, CAP_NET_RAW, CAP_IPC_LOCK, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 13, 14, 21, 38, 39
IFF_UP = 0x1
BPFFS = "/sys/fs/bpf"
ROLES = ("net_in", "net_out", "to_sf", "from_sf")  # an SF's interfaces, in the order the file gives them


@dataclass(frozen=True)
class Finding:
    """One precondition: its verdict and the line that says it."""

    check: str  # which check: "privileges", "bpf", "interface", "queues", "redirect", ...
    subject: str  # the config field ("sf[0].to_sf", "proxy.frame_size") or the host facility
    status: str  # ok | fixed | unknown | warn | error
    message: str  # what was found
    fix: str = ""  # what to do about it; empty when there is nothing to do

    def line(self) -> str:
        return f"{self.subject}: {self.message}" + (f"; {self.fix}" if self.fix else "")


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    running: str | None = None  # a proxy of the file's name runs here: the verdict is about a SIGHUP

    def of(self, status: str) -> list[Finding]:
        return [f for f in self.findings if f.status == status]

    @property
    def exit_code(self) -> int:
        return EXIT_ERROR if self.of(ERROR) else 0

    def said_at_run(self) -> list[Finding]:
        """What `run` logs before it starts (errors stop it instead): what was fixed, unknown or
        a warning, and an interface in two roles, which is served as written, so that a slip
        (to_sf = net_in's name) is seen at run too. bpffs matters to bpftool and to pinning,
        not to run: `check` says it."""
        return [f for f in self.findings
                if (f.status in (FIXED, UNKNOWN, WARN) or f.check == "roles") and f.check != "bpffs"]

    def as_dict(self) -> dict[str, Any]:
        return {"ok": not self.of(ERROR), "exit_code": self.exit_code,
                "counts": {s: len(self.of(s)) for s in STATUSES},
                "checks": [asdict(f) | {"line": f.line()} for f in self.findings]}

    def text(self) -> str:
        lines = [f"{f.status:<7} {f.line()}" for f in self.findings]
        n = {s: len(self.of(s)) for s in STATUSES}
        counts = (f"{n[ERROR]} error{'s' * (n[ERROR] != 1)}, {n[WARN]} warning{'s' * (n[WARN] != 1)}, "
                  f"{n[UNKNOWN]} unknown, {n[FIXED]} fixed by run, {n[OK]} ok")
        if self.running:
            verdict = (f"a SIGHUP to proxy {self.running} would refuse it" if self.of(ERROR) else
                       f"a SIGHUP to proxy {self.running} can apply it")
        else:
            verdict = "run would refuse" if self.of(ERROR) else "run can start"
        return "\n".join([*lines, f"check: {counts}: {verdict}"])


# ---------------------------------------------------------------------- the host


def _caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def umem_bytes(cfg: ProxyConfig, queues: int, rx_ports: int, tx_ports: int) -> int:
    """The AF_XDP backend's UMEM (native/axp_xsk.c, axp_xsk_open): a ring's worth of frames per
    RX and TX socket, per queue."""
    return cfg.ring_size * (rx_ports + tx_ports) * cfg.frame_size * queues


def check_privileges(cfg: ProxyConfig, umem: int) -> Finding:
    caps = _caps()
    has = lambda cap: bool(caps >> cap & 1)  # noqa: E731
    names = {CAP_BPF: "CAP_BPF", CAP_PERFMON: "CAP_PERFMON", CAP_NET_ADMIN: "CAP_NET_ADMIN",
             CAP_NET_RAW: "CAP_NET_RAW", CAP_IPC_LOCK: "CAP_IPC_LOCK"}
    # the verifier lets the parser's packet pointer arithmetic pass only with CAP_PERFMON;
    # CAP_SYS_ADMIN stands in for both CAP_BPF and CAP_PERFMON
    need = [CAP_BPF, CAP_NET_ADMIN] + ([CAP_NET_RAW] if cfg.backend == "afxdp" else [CAP_PERFMON])
    missing = [c for c in need if not has(c) and not (c in (CAP_BPF, CAP_PERFMON) and has(CAP_SYS_ADMIN))]
    grant = " ".join(names[c] for c in need) + (" CAP_IPC_LOCK" if cfg.backend == "afxdp" else "")
    if missing:
        return Finding("privileges", "privileges", ERROR, "missing " + ", ".join(names[c] for c in missing),
                       f"run as root, or grant {grant} (systemd: CapabilityBoundingSet=)")
    if cfg.backend == "afxdp" and not has(CAP_IPC_LOCK):
        soft = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
        if soft != resource.RLIM_INFINITY and soft < umem:
            return Finding("privileges", "privileges", ERROR,
                           f"the UMEM needs {umem >> 20} MiB of locked memory, RLIMIT_MEMLOCK allows "
                           f"{soft >> 20} MiB and CAP_IPC_LOCK is missing",
                           "grant CAP_IPC_LOCK or raise the limit (ulimit -l unlimited; systemd: "
                           "LimitMEMLOCK=infinity)")
    have = [names[c] for c in need if has(c)] or ["CAP_SYS_ADMIN"]
    return Finding("privileges", "privileges", OK, ", ".join(have))


def check_bpf(cfg: ProxyConfig) -> Iterator[Finding]:
    """Load the trivial probe programs; attach the TC one to lo through TCX when the
    configuration needs TCX (inline: TC egress; key meta: TC ingress)."""
    from afxdp_proxy import bpf

    needs_tcx = cfg.topology == "inline" or cfg.key == "meta"
    try:
        obj = bpf.BpfObject(bpf.object_path("probe"))
    except FileNotFoundError as e:
        yield Finding("bpf", "bpf", ERROR, str(e).split(":")[0], "reinstall afxdp-proxy (pip install .)")
        return
    with obj:
        try:
            obj.load()
        except bpf.BpfError as e:
            if e.errno in (errno.EPERM, errno.EACCES):
                fix = "run as root, or grant CAP_BPF and CAP_NET_ADMIN"
            else:
                fix = "use a kernel with BPF and XDP (CONFIG_BPF_SYSCALL, CONFIG_XDP_SOCKETS, CONFIG_NET_CLS_BPF)"
            yield Finding("bpf", "bpf", ERROR, f"cannot load a trivial XDP or TC program ({e.strerror})", fix)
            return
        yield Finding("bpf", "bpf", OK, "XDP and TC programs load")
        if not needs_tcx:
            return
        why = "topology inline" if cfg.topology == "inline" else "key meta"
        try:
            link = bpf.Link.tcx(obj.prog_fd("axp_probe_tc"), socket.if_nametoindex("lo"), egress=False)
            link.close()
        except (bpf.BpfError, OSError) as e:
            yield Finding("tcx", "tcx", ERROR, f"cannot attach a TC program through TCX ({e.strerror}), "
                          f"which {why} needs", 'use Linux 6.6 or later, or topology = "attached" with key = "hash"')
            return
        yield Finding("tcx", "tcx", OK, f"TC programs attach through TCX ({why} needs it)")


def check_af_xdp() -> Finding:
    try:
        socket.socket(AF_XDP, socket.SOCK_RAW, 0).close()
    except OSError as e:
        if e.errno == errno.EAFNOSUPPORT:
            return Finding("af_xdp", "af_xdp", ERROR, "this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS)",
                           'use backend = "kernel"')
        if e.errno in (errno.EPERM, errno.EACCES):
            return Finding("af_xdp", "af_xdp", ERROR, "socket(AF_XDP) is not permitted", "grant CAP_NET_RAW")
        return Finding("af_xdp", "af_xdp", ERROR, f"socket(AF_XDP) failed: {e.strerror}", 'use backend = "kernel"')
    return Finding("af_xdp", "af_xdp", OK, "AF_XDP sockets open")


def check_bpffs(cfg: ProxyConfig) -> Finding:
    """The bpffs mounts, said without blocking anything: run reaches its maps by ID (state.py)
    and needs none. bpftool wants one at /sys/fs/bpf; run --keep-cache (kernel backend, key
    hash) pins the cache in the one at keep.PIN_ROOT, which `afxdp-proxy pinfs` mounts. Either
    must be mounted in the host's mount namespace: under `ip netns exec` a mount dies with the
    command (it gives each one a mount namespace of its own, /sys remounted)."""
    host = "in the host's mount namespace (under `ip netns exec` a mount dies with the command)"
    if keep.is_bpffs(BPFFS):
        sys_fs = f"mounted at {BPFFS}"
    else:
        sys_fs = f"none at {BPFFS}: run does not need one, bpftool does (mount -t bpf bpf {BPFFS} {host})"
    if cfg.backend != "kernel" or cfg.key != "hash":
        return Finding("bpffs", "bpffs", OK, sys_fs)  # nothing of theirs is pinned
    if keep.is_bpffs(keep.PIN_ROOT):
        return Finding("bpffs", "bpffs", OK, f"{sys_fs}; mounted at {keep.PIN_ROOT}, where run --keep-cache "
                       "pins the cache")
    return Finding("bpffs", "bpffs", OK, f"{sys_fs}; none at {keep.PIN_ROOT}, where run --keep-cache pins the "
                   f"cache, so it would keep nothing (afxdp-proxy pinfs mounts one: run it {host})")


# ---------------------------------------------------------------------- the interfaces


@dataclass
class _If:
    """A configured interface: the first config field naming it, its roles, what netlink says."""

    name: str
    field: str
    roles: set[str]
    role_fields: dict[str, str] = field(default_factory=dict)  # role -> the first field naming it so
    link: Any = None
    iface: ifc.Iface | None = None
    peer: ifc.Peer | None = None
    kind: str | None = None
    features: dict[str, bool] | None = None
    fixed: set[str] = field(default_factory=set)  # features that cannot be changed
    xdp: int | None = None  # NETDEV_XDP_ACT_* bits; None: the kernel cannot tell
    channels: tuple[int, int] | None = None
    elsewhere: tuple[str, ...] = ()  # missing here: the namespaces under /run/netns that have it


def _interfaces(cfg: ProxyConfig) -> list[_If]:
    """Every configured interface with all its roles; a reverse direction ([sf.reverse]) is an
    SF of its own, so an interface may be net_in of one direction and net_out of the other."""
    out: dict[str, _If] = {}
    for i, sf in enumerate(cfg.sfs):
        for role in ROLES:
            name = getattr(sf, role)
            if name:
                x = out.setdefault(name, _If(name, sf.field(role, i), set()))
                x.roles.add(role)
                x.role_fields.setdefault(role, sf.field(role, i))
    return list(out.values())


# how the data path serves one interface in two roles of one SF; every pair is served (the XDP
# program goes by the interface's roles, backends/kernel.py xdp_roles, afxdp _roles_of)
_SHARED = {
    ("net_in", "net_out"): "frames leave by the interface they arrived on (a one-armed proxy)",
    ("to_sf", "from_sf"): "the SF takes and returns frames on one interface (a one-armed SF)",
    ("net_in", "to_sf"): "popped frames go back out of it to the SF",
    ("net_out", "to_sf"): "the SF and the next hop share the link",
    ("net_out", "from_sf"): "the SF returns frames on the next hop's link",
}
# net_in and from_sf, of one SF or two: one program sorts the frames (role.shared.h)
_RX_TX = ("one XDP program serves both roles: bare IP arriving there, whoever sends it, is taken for the "
          "SF's return (looked up, pushed, sent to net_out), all else for the network's")


def check_shared_roles(cfg: ProxyConfig) -> Iterator[Finding]:
    """An interface in two roles of one SF, or net_in of one and from_sf of another: said, with
    how it is served, so that a slip (net_out = net_in's name) is seen for what it is."""
    rx_tx: set[str] = set()
    for i, sf in enumerate(cfg.sfs):
        named = [(r, getattr(sf, r)) for r in ROLES if getattr(sf, r)]
        for j, (first, name) in enumerate(named):
            for second, other in named[j + 1:]:
                if other != name:
                    continue
                if (first, second) == ("net_in", "from_sf"):
                    rx_tx.add(name)
                how = _RX_TX if (first, second) == ("net_in", "from_sf") else _SHARED[first, second]
                yield Finding("roles", sf.field(second, i), OK, f"{name} is also {sf.field(first, i)}: {how}")
    for x in _interfaces(cfg):
        if {"net_in", "from_sf"} <= x.roles and x.name not in rx_tx:
            yield Finding("roles", x.role_fields["from_sf"], OK,
                          f"{x.name} is also {x.role_fields['net_in']}: {_RX_TX}")


def _xdp_rx(cfg: ProxyConfig, x: _If) -> bool:
    """An interface the proxy attaches XDP to: net_in, and from_sf in the attached topology."""
    return "net_in" in x.roles or (cfg.topology == "attached" and "from_sf" in x.roles)


def _redirect_target(cfg: ProxyConfig, x: _If) -> bool:
    """An interface the kernel backends XDP_REDIRECT frames into (attached: to_sf, net_out);
    the afxdp backend sends through its sockets instead."""
    return cfg.backend != "afxdp" and cfg.topology == "attached" and bool(x.roles & {"to_sf", "net_out"})


def check_exists_up(ipr: IPRoute, x: _If) -> Finding:
    links = ipr.get_links(ifname=x.name)
    if not links:
        x.elsewhere = tuple(ifc.netns_holding(x.name))
        return Finding("interface", x.field, ERROR, f"no interface {x.name!r} in this network namespace",
                       ifc.missing_fix(x.name, list(x.elsewhere)))
    link = x.link = links[0]
    x.iface = ifc.Iface(x.name, link["index"], link.get_attr("IFLA_ADDRESS") or "00:00:00:00:00:00",
                        link.get_attr("IFLA_MTU") or 0)
    x.kind = ifc.link_kind(ipr, x.iface.index)
    x.peer = ifc.veth_peer(ipr, x.iface) if x.kind == "veth" else None
    oper = link.get_attr("IFLA_OPERSTATE") or "UNKNOWN"
    if not link["flags"] & IFF_UP:
        return Finding("interface", x.field, ERROR, f"{x.name} is down", f"bring it up: ip link set {x.name} up")
    if oper not in ("UP", "UNKNOWN"):
        if x.peer:
            return Finding("interface", x.field, ERROR,
                           f"{x.name} has no carrier ({oper}): its veth peer {x.peer.where} is down",
                           "bring it up: " + x.peer.cmd(f"ip link set {x.peer.name} up"))
        return Finding("interface", x.field, ERROR, f"{x.name} has no carrier ({oper})", "connect it or bring its "
                       "other end up")
    return Finding("interface", x.field, OK, f"{x.name} is up, MTU {x.iface.mtu}")


def one_line_per_place(checked: list[tuple[_If, Finding]]) -> list[Finding]:
    """check_exists_up's findings, those of interfaces missing here but found in the same other
    namespaces made one line, where the first was: a file written for another namespace has one
    problem, not one per interface."""
    together: dict[tuple[str, ...], list[_If]] = {}
    for x, _ in checked:
        if x.elsewhere:
            together.setdefault(x.elsewhere, []).append(x)
    out = []
    for x, f in checked:
        group = together.get(x.elsewhere, [])
        if len(group) < 2:
            out.append(f)
        elif x is group[0]:
            names = [repr(g.name) for g in group]
            out.append(Finding("interface", x.field, ERROR, f"no interface {', '.join(names[:-1])} or {names[-1]} "
                               "in this network namespace", ifc.missing_fix(x.name, list(x.elsewhere), many=True)))
    return out


def check_macs(ipr: IPRoute, cfg: ProxyConfig, ifs: dict[str, _If]) -> Iterator[Finding]:
    """Attached topology: the SF's and the next hop's MACs, configured or learnable."""
    if cfg.topology != "attached":
        return
    for i, sf in enumerate(cfg.sfs):
        for key, behind, what, mac in (("sf_mac", sf.to_sf, "the SF's", sf.sf_mac),
                                       ("next_hop_mac", sf.net_out, "the next hop's", sf.next_hop_mac)):
            x = ifs.get(behind or "")
            if x is None or x.iface is None:
                continue  # the missing interface has its own line
            if mac:
                yield Finding("mac", sf.field(key, i), OK, f"{mac} (configured)")
                continue
            learned = ifc.learn_mac(ipr, x.iface)
            if learned:
                yield Finding("mac", sf.field(key, i), OK, f"{learned} (learned behind {behind})")
            else:
                yield Finding("mac", sf.field(key, i), ERROR,
                              f"cannot learn {what} MAC behind {behind} (no single neighbour there)", f"set {key}")


def proxy_on(name: str, prog: int) -> tuple[str, int] | None:
    """(name, pid) of the live proxy whose record (state.running) lists XDP program prog (IDs
    are global), or else interface name in this network namespace (names are per namespace)."""
    live = {n: rec for n, rec in state.running().items() if "pid" in rec}
    for n, rec in live.items():
        if prog in rec.get("progs", ()):
            return n, int(rec["pid"])
    here = state.netns_id()
    for n, rec in live.items():
        if rec.get("netns") == here and name in rec.get("interfaces", ()):
            return n, int(rec["pid"])
    return None


def xdp_taken(field: str, name: str, prog: int) -> Finding:
    """Interface name runs XDP program prog, not ours: the proxy that attached it, when one did."""
    holder = proxy_on(name, prog)
    if holder is None:
        return Finding("xdp", field, ERROR, f"{name} already runs XDP program {prog}",
                       f"stop the proxy or tool that attached it (bpftool net show dev {name})")
    other, pid = holder
    return Finding("xdp", field, ERROR, f"proxy {other} (pid {pid}) runs on {name} (XDP program {prog})",
                   f"stop it first (kill {pid}) or give another interface")


def check_xdp_rx(cfg: ProxyConfig, x: _If, own: frozenset[str] = frozenset()) -> Iterator[Finding]:
    """An interface XDP attaches to: free (or in `own`, the interfaces of a running proxy
    being reloaded, whose program it is), native XDP for all its queues, a veth peer's MTU
    within veth's XDP limit, checksums filled in and VLAN tags left in the frame by the
    sender (a veth's peer; a NIC's own VLAN stripping), GRO."""
    assert x.iface is not None and x.link is not None
    prog = ifc.xdp_prog_of(x.link)
    if prog and x.name not in own:
        yield xdp_taken(x.field, x.name, prog)
    peer = x.peer
    rxq = x.channels[0] if x.channels else 1
    if peer is not None:
        if peer.mtu > VETH_XDP_MAX_PEER_MTU:
            yield Finding("xdp_mtu", x.field, ERROR,
                          f"its veth peer {peer.where} has MTU {peer.mtu}, above {VETH_XDP_MAX_PEER_MTU}, the most a "
                          f"veth peer may have for native XDP on {x.name} (the attach fails with ERANGE)",
                          "lower it: " + peer.cmd(f"ip link set {peer.name} mtu {VETH_XDP_MAX_PEER_MTU}"))
        peer_tx = peer.channels[1] if peer.channels else None
        if (peer_tx is not None and peer_tx > rxq) or (x.xdp == 0 and peer_tx is None):
            sends = f"sends on {peer_tx} TX queues," if peer_tx else "sends on"
            yield Finding("queues", x.field, ERROR,
                          f"its veth peer {peer.where} {sends} more than {x.name}'s {rxq} RX queue(s): frames sent "
                          "on the others skip native XDP (the attach fails with ENOSPC)",
                          "give both ends as many queues: " + peer.cmd(f"ethtool -L {peer.name} tx {rxq}")
                          + f" (or ethtool -L {x.name} rx {peer_tx or 'N'})")
        else:
            yield Finding("queues", x.field, OK, f"native XDP on {x.name}'s {rxq} RX queue(s), "
                          f"its peer sends on {peer_tx if peer_tx is not None else 'no more'} TX queue(s)")
        yield from _peer_offloads(x, peer)
    else:
        if x.xdp is not None and not x.xdp & ifc.XDP_ACT_BASIC:
            yield Finding("xdp", x.field, WARN, f"the driver of {x.name} has no native XDP: generic XDP runs "
                          "instead, far slower", "use an interface whose driver supports XDP")
        if "net_in" in x.roles and x.features is not None:
            yield check_vlan_stripping(cfg, x)
        elif x.features is not None and x.features.get("rx-vlan-hw-parse"):
            yield Finding("vlan", x.field, WARN, f"{x.name} strips VLAN tags before XDP sees the frame "
                          "(rx-vlan-offload on): a tagged frame would leave without its tag",
                          f"ethtool -K {x.name} rxvlan off")
        else:
            yield Finding("vlan", x.field, OK, f"{x.name} leaves VLAN tags in the frame")
    if "net_in" in x.roles and cfg.backend != "afxdp" and x.features is not None:
        if x.features.get("rx-gro"):
            yield Finding("gro", x.field, FIXED, f"{x.name} has GRO on, which would merge packets whose stacks "
                          "differ", "run turns it off while it runs and back on when it stops")
        else:
            yield Finding("gro", x.field, OK, f"{x.name} has GRO off")


def check_vlan_stripping(cfg: ProxyConfig, x: _If) -> Finding:
    """A device that strips VLAN tags (rx-vlan-offload) hands XDP the frame without them: run
    turns that off on net_in while it runs. Where the device cannot, tagged frames would be taken
    for untagged ones (another VLAN's SR-MPLS for ours) and leave untagged: an error when an SF
    on it names a VLAN, a warning otherwise (a link that never carries tags loses nothing)."""
    assert x.features is not None
    on = [f for f in ifc.VLAN_STRIPPING if x.features.get(f)]
    if not on:
        return Finding("vlan", x.field, OK, f"{x.name} leaves VLAN tags in the frame")
    fixed = [f for f in on if f in x.fixed]
    if not fixed:
        return Finding("vlan", x.field, FIXED, f"{x.name} strips VLAN tags before XDP sees the frame "
                       "(rx-vlan-offload on)", "run turns it off while it runs and back on when it stops")
    vlans = any(sf.vlan_in or sf.vlan_out for sf in cfg.sfs if sf.net_in == x.name)
    return Finding("vlan", x.field, ERROR if vlans else WARN,
                   f"{x.name} strips VLAN tags before XDP sees the frame and cannot stop ({', '.join(fixed)} "
                   "fixed on): tagged frames would be proxied as untagged and leave without their tags",
                   "use a NIC or driver that can turn VLAN stripping off (ethtool -K DEV rxvlan off)")


def _peer_offloads(x: _If, peer: ifc.Peer) -> Iterator[Finding]:
    """What a veth's sender does to the frames XDP on this end gets. A veth hands the skb over
    as it is: a checksum left to offload stays unfilled (CHECKSUM_PARTIAL, which an XDP frame
    cannot carry), and a VLAN tag the sender offloaded travels beside the frame, not in it."""
    if peer.features is None:
        why = (f"entering namespace {peer.netns} needs CAP_SYS_ADMIN" if peer.netns
               else "its namespace has no name under /run/netns")
        yield Finding("offloads", x.field, UNKNOWN,
                      f"cannot see whether its veth peer {peer.where} offloads TX checksums or VLAN tags ({why}): "
                      "if it does, packets it sends reach XDP with unfilled L4 checksums or without their tags",
                      f"make sure it does not: ethtool -K {peer.name} tx off txvlan off")
        return
    if peer.features.get("tx-checksum-ip-generic"):
        yield Finding("checksum", x.field, WARN,
                      f"its veth peer {peer.where} leaves TX checksums to offload: packets it sends reach XDP with "
                      "unfilled L4 checksums, and their receivers drop them",
                      "turn it off there (and on the veths behind it): " + peer.cmd(f"ethtool -K {peer.name} tx off"))
    else:
        yield Finding("checksum", x.field, OK, f"its veth peer {peer.name} fills in TX checksums itself")
    if peer.features.get("tx-vlan-hw-insert"):
        yield Finding("vlan", x.field, WARN,
                      f"its veth peer {peer.where} hands VLAN tags over beside the frame (tx-vlan-offload on): XDP "
                      f"on {x.name} sees tagged frames without their tag, and a frame it redirects leaves without it",
                      "turn it off there: " + peer.cmd(f"ethtool -K {peer.name} txvlan off"))
    else:
        yield Finding("vlan", x.field, OK, f"its veth peer {peer.name} keeps VLAN tags in the frame")


def check_redirect_target(x: _If) -> Finding:
    """A veth delivers XDP_REDIRECTed frames only while its peer runs NAPI (an XDP program
    there, or GRO); the kernel says so in the device's NDO_XMIT feature, which drops the
    frames (uncounted) of a device without it."""
    peer = x.peer
    if x.xdp is not None and x.xdp & ifc.XDP_ACT_NDO_XMIT:
        gro = peer.features.get("rx-gro") if peer and peer.features is not None else None
        if peer and "to_sf" in x.roles and gro:
            return Finding("redirect", x.field, WARN,
                           f"its veth peer {peer.where} merges packets (GRO on), so the SF gets merged packets "
                           "whose stacks cannot be restored one by one",
                           "attach an XDP program there instead (one returning XDP_PASS will do) and turn GRO off: "
                           + peer.cmd(f"ethtool -K {peer.name} gro off"))
        how = "" if peer is None else " (its peer runs XDP)" if peer.xdp_prog else " (GRO on at its peer)"
        return Finding("redirect", x.field, OK, f"{x.name} takes redirected frames{how}")
    if peer is None:
        if x.xdp is None:
            return Finding("redirect", x.field, UNKNOWN, f"cannot tell whether {x.name} takes redirected frames "
                           "(this kernel has no netdev netlink family to tell)",
                           "make sure its driver implements ndo_xdp_xmit")
        return Finding("redirect", x.field, ERROR, f"{x.name} cannot take redirected frames: its driver does not "
                       "transmit XDP frames (no ndo_xdp_xmit)", 'use an interface that can, or backend = "afxdp"')
    gro = peer.features.get("rx-gro") if peer.features is not None else None
    if x.xdp is None and (peer.xdp_prog or gro):
        return Finding("redirect", x.field, OK, f"{x.name} takes redirected frames (its peer runs "
                       f"{'XDP' if peer.xdp_prog else 'GRO'})")
    if x.xdp is None and gro is None:
        return Finding("redirect", x.field, UNKNOWN, f"cannot tell whether {x.name} takes redirected frames: its veth "
                       f"peer {peer.where} runs no XDP program and its GRO cannot be seen from here",
                       "attach an XDP program to the peer (one returning XDP_PASS will do)")
    if peer.xdp_prog:
        return Finding("redirect", x.field, ERROR, f"frames redirected to {x.name} vanish: its veth peer {peer.where} "
                       f"sends on more TX queues than {x.name} has RX queues",
                       "give both ends as many queues: "
                       + peer.cmd(f"ethtool -L {peer.name} tx {x.channels[0] if x.channels else 1}"))
    # GRO on would do for the network side, not towards the SF (it would merge the SF's packets)
    attach = peer.cmd(f"ip link set dev {peer.name} xdp obj {_pass_object()} sec xdp")
    fix = (f"attach an XDP program to the peer (one returning XDP_PASS will do): {attach}" if "to_sf" in x.roles
           else "attach an XDP program to the peer (one returning XDP_PASS will do) or turn GRO on there: "
           + peer.cmd(f"ethtool -K {peer.name} gro on"))
    return Finding("redirect", x.field, ERROR,
                   f"frames redirected to {x.name} vanish: its veth peer {peer.where} runs no XDP program and has "
                   "GRO off, so it takes no XDP frames", fix)


def _pass_object() -> str:
    """A BPF object with an XDP program that returns XDP_PASS: the package's probe.bpf.o."""
    try:
        return str(bpf.object_path("probe"))
    except FileNotFoundError:
        return "<an object with an XDP_PASS program>"


def check_headroom(cfg: ProxyConfig, x: _If, ifs: dict[str, _If]) -> Finding | None:
    """Links that carry labels need room for the deepest stack on top of the largest bare
    packet: the SF links' MTU (attached), or net_in's (inline: what arrived must leave)."""
    assert x.iface is not None
    own = x.iface.mtu
    mtu, of = own, ""
    peer = x.peer if "net_out" in x.roles else None
    if peer is not None and peer.mtu < mtu:
        # a veth takes what fits its receiving end: the peer's MTU is the one that limits
        mtu, of = peer.mtu, f" (of its veth peer {peer.where})"

    def raise_cmd(m: int) -> str:
        """Every end below m, so one round of fixes does (a veth's two ends, net_out's first)."""
        cmds = [f"ip link set {x.name} mtu {m}"] if own < m else []
        if peer is not None and peer.mtu < m:
            cmds.append(peer.cmd(f"ip link set {peer.name} mtu {m}"))
        return "; ".join(cmds)
    if cfg.topology == "attached":
        sf_links = [ifs[getattr(sf, r)] for sf in cfg.sfs for r in ("to_sf", "from_sf")
                    if x.name in (sf.net_in, sf.net_out) and getattr(sf, r) in ifs]
        mtus = [s.iface.mtu for s in sf_links if s.iface is not None]
        if not mtus:
            return None
        bare = max(mtus)
        need = bare + STACK_BYTES
        if mtu >= need:
            return Finding("mtu", x.field, OK, f"MTU {mtu}{of} carries the SF links' {bare}-byte packets under the "
                           f"deepest stack ({MAX_LABELS} labels, {STACK_BYTES} bytes)")
        return Finding("mtu", x.field, WARN,
                       f"MTU {mtu}{of} cannot carry the SF links' {bare}-byte packets under a {MAX_LABELS}-label "
                       f"stack ({STACK_BYTES} bytes): packets that large with stacks that deep are dropped",
                       f"raise it to {need} or more ({raise_cmd(need)}), or lower the SF links' MTU "
                       f"to {mtu - STACK_BYTES}")
    if "net_out" not in x.roles:
        return None
    ins = [ifs[sf.net_in].iface.mtu for sf in cfg.sfs if sf.net_out == x.name and ifs[sf.net_in].iface is not None]
    if not ins:
        return None
    if mtu >= max(ins):
        return Finding("mtu", x.field, OK, f"MTU {mtu}{of} carries whatever net_in's MTU {max(ins)} let in")
    return Finding("mtu", x.field, WARN, f"MTU {mtu}{of} is below net_in's {max(ins)}: a packet that arrived with "
                   f"its stack may not leave with it", f"raise it to {max(ins)} ({raise_cmd(max(ins))})")


def check_afxdp_queues(ipr: IPRoute, cfg: ProxyConfig) -> Finding:
    """afxdp: a socket and a worker for every RX queue, so the RX interfaces' queue counts agree
    with each other and with proxy.queues, and the TX interfaces have as many: the backend's own
    rule (AfxdpProxy._count_queues), asked without opening anything."""
    from afxdp_proxy.backends.afxdp import AfxdpProxy
    from afxdp_proxy.backends.kernel import KernelProxy

    px = AfxdpProxy(cfg)
    try:
        px._ports = px._ports_of(KernelProxy(cfg)._resolve(ipr))
        queues = px._count_queues()
    except ConfigError as e:
        subject, _, problem = str(e).partition(": ")
        return Finding("queues", subject, ERROR, problem)
    return Finding("queues", "proxy.queues", OK, f"{queues} queue(s): a socket on every interface and a worker "
                   "for each")


def check_metrics(mcfg: MetricsConfig) -> Finding:
    """[metrics]: the address can be listened on (run would refuse to start otherwise)."""
    from afxdp_proxy.metrics import listen_problem

    problem = listen_problem(mcfg)
    if problem is None:
        return Finding("metrics", "metrics.listen", OK, f"{mcfg.listen} can be listened on")
    return Finding("metrics", "metrics.listen", ERROR, problem)


def check_frame_size(cfg: ProxyConfig, ifs: list[_If]) -> Finding | None:
    """afxdp: a UMEM chunk holds XDP's headroom, then the frame: the MTU, the Ethernet header
    and, pushed in place, the deepest stack."""
    sized = [x for x in ifs if x.iface is not None]
    if not sized:
        return None
    big = max(sized, key=lambda x: x.iface.mtu if x.iface else 0)
    assert big.iface is not None
    # VLAN tags sit outside the MTU (like the Ethernet header) but inside the chunk
    tags = TAG_BYTES if any(sf.vlan_in or sf.vlan_out for sf in cfg.sfs) else 0
    head = ETH_HLEN + tags
    need = XDP_HEADROOM + head + big.iface.mtu + STACK_BYTES
    if cfg.frame_size >= need:
        return Finding("frame_size", "proxy.frame_size", OK, f"{cfg.frame_size} bytes hold {XDP_HEADROOM} of headroom "
                       f"and the largest frame ({big.name}'s MTU {big.iface.mtu} + {head} + {STACK_BYTES})")
    most = cfg.frame_size - XDP_HEADROOM - head - STACK_BYTES
    fix = "set frame_size = 4096" if cfg.frame_size < 4096 else "lower the MTU"
    return Finding("frame_size", "proxy.frame_size", ERROR,
                   f"{cfg.frame_size} bytes cannot hold {XDP_HEADROOM} of headroom and a frame of {big.name}'s MTU "
                   f"{big.iface.mtu} + {head} + {STACK_BYTES} for the deepest stack ({need} bytes): such frames "
                   "are dropped", f"{fix}, or lower {big.name}'s MTU to {most} or less")


# ---------------------------------------------------------------------- all of it


def interfaces_of(cfg: ProxyConfig) -> list[str]:
    """The interfaces a configuration's proxy attaches to (what a running one's state file lists)."""
    return [x.name for x in _interfaces(cfg)]


def run_checks(cfg: ProxyConfig, own: Iterable[str] = (), own_listen: str | None = None) -> Report:
    """Every check, in the order an operator fixes things: the host, the interfaces, the
    MACs, then what the data path needs of each interface. own, own_listen: the interfaces and
    the metrics address of the running proxy that cfg would replace (a SIGHUP reload, or
    `check` of an edited file while it runs), whose own XDP programs and endpoint are no
    obstacle."""
    own = frozenset(own)
    report = Report()
    add = report.findings.append
    ifs_list = _interfaces(cfg)
    ifs = {x.name: x for x in ifs_list}
    with IPRoute() as ipr:
        present, checked = [], []
        for x in ifs_list:
            checked.append((x, check_exists_up(ipr, x)))
            if x.iface is not None:
                present.append(x)
                x.features = _features(x.name)
                x.fixed = _fixed(x.name)
                x.channels = ifc.get_channels(x.name)
                x.xdp = ifc.xdp_features(x.iface.index)
        report.findings.extend(one_line_per_place(checked))
        rx_ports = sum(1 for x in ifs_list if x.roles & {"net_in", "from_sf"})
        tx_ports = sum(1 for x in ifs_list if x.roles & {"to_sf", "net_out"})
        first_in = next((x for x in present if "net_in" in x.roles), None)
        queues = cfg.queues or (first_in.channels[0] if first_in and first_in.channels else 1)
        host = [check_privileges(cfg, umem_bytes(cfg, queues, rx_ports, tx_ports)), *check_bpf(cfg)]
        if cfg.backend == "afxdp":
            host.append(check_af_xdp())
        host.append(check_bpffs(cfg))
        if cfg.metrics is not None and cfg.metrics.listen != own_listen:
            host.append(check_metrics(cfg.metrics))
        report.findings[:0] = host
        report.findings.extend(check_macs(ipr, cfg, ifs))
    report.findings.extend(check_shared_roles(cfg))
    for x in present:
        # each finding named by the role it is about: a chain's two directions swap
        # interfaces, so p_out is the forward direction's net_out and the reverse one's net_in
        if _xdp_rx(cfg, x):
            role = "net_in" if "net_in" in x.roles else "from_sf"
            report.findings.extend(replace(f, subject=x.role_fields[role]) for f in check_xdp_rx(cfg, x, own))
        if _redirect_target(cfg, x):
            role = "to_sf" if "to_sf" in x.roles else "net_out"
            add(replace(check_redirect_target(x), subject=x.role_fields[role]))
        if x.roles & {"net_in", "net_out"}:
            f = check_headroom(cfg, x, ifs)
            if f is not None:
                add(f)
    if cfg.backend == "afxdp" and len(present) == len(ifs_list):
        with IPRoute() as ipr:
            add(check_afxdp_queues(ipr, cfg))
    if cfg.backend == "afxdp":
        f = check_frame_size(cfg, ifs_list)
        if f is not None:
            add(f)
    return report


def _features(name: str) -> dict[str, bool] | None:
    try:
        return ifc.ethtool_features(name)
    except (OSError, EthtoolError):
        return None


def _fixed(name: str) -> set[str]:
    try:
        return ifc.fixed_features(name)
    except (OSError, EthtoolError):
        return set()
