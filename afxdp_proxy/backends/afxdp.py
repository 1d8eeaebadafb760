"""The AF_XDP proxy: a minimal XDP program hands frames to AF_XDP sockets and the
C extension (native/axp_xsk.c, the socket loop, on native/axp_engine.c, the per-packet
engine) does the proxying in user space.

Attached topology only (AF_XDP transmits out of an interface; it cannot hand a
packet to the local stack)::

  net_in  --XDP axp_xsk_net_in--> socket --pop, cache--> socket on to_sf   --> SF
  from_sf --XDP axp_xsk_from_sf--> socket --look up, push--> socket on net_out --> next hop

What the SF sends the proxy host itself (neighbour discovery, multicast,
link-local traffic, the host's addresses: afxdp_proxy.hostaddrs keeps them
current) never reaches a socket: axp_xsk_from_sf passes it to the kernel, as
user space could not. A packet without a cache entry, on the other hand, is in
user space already: on_miss = pass sends it on unlabelled to the next hop.
An interface is opened once, with every role it has: a chain's reverse direction
(an SF of its own, interfaces swapped) makes net_out an RX interface too, and
to_sf one the SF returns on. One that is net_in of one SF and from_sf of another
gets axp_xsk_rx_tx, and its worker splits each batch the way that program sorted
it (bpf/include/role.shared.h): bare IP from the SF, all else from the network.

One UMEM holds the frames of every socket of the instance, so a frame goes
from the RX socket to the TX socket without a copy in user space. Each RX
queue has one socket per interface and one worker thread, which runs the C
loop with the GIL released until stop(). The cache is shared by the workers.

Counters have the kernel backend's names (enum axp_counter) plus the extras of
enum axp_xsk_counter. The workers keep them in a small file under
/run/afxdp-proxy, mapped shared, so `afxdp-proxy stats` in another process
reads them; the XDP programs count the frames they pass in BPF maps. The
events of sampled packets (`afxdp-proxy trace`) take the same route: a file
the workers write and trace maps (afxdp_proxy.trace.TraceFile).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2.ethtool import Ethtool

from afxdp_proxy import bpf, counters, hostaddrs, keep, state, trace
from afxdp_proxy._native import ffi, lib
from afxdp_proxy.backends.kernel import (
    KernelProxy,
    _Sf,
    config_struct,
    features_off,
    label_keys,
    plan_reload,
    retire_drained,
    warn_vlan_stripping,
)
from afxdp_proxy.cache import CacheSet, decode_set
from afxdp_proxy.config import ConfigError, ProxyConfig
from afxdp_proxy.iface import VLAN_STRIPPING, Iface, driver_of
from afxdp_proxy.log import fields
from afxdp_proxy.reload import RestartNeeded, SfChange, assign_slots, check_live, rows_after

log = logging.getLogger(__name__)

HEADROOM = 256  # XDP_PACKET_HEADROOM: where AF_XDP puts received data in a frame
STOP_TIMEOUT = 2.0  # seconds a worker gets to return after stop (it needs microseconds)
VERDICT_DROP, VERDICT_PASS, VERDICT_TX = lib.AXP_VERDICT_DROP, lib.AXP_VERDICT_PASS, lib.AXP_VERDICT_TX
# bind flags by proxy.bind_mode (include/uapi/linux/if_xdp.h); with neither, the kernel tries
# zero-copy and falls back to copy (xp_assign_dev)
XDP_COPY, XDP_ZEROCOPY = 1 << 1, 1 << 2
BIND_FLAGS = {"auto": 0, "zerocopy": XDP_ZEROCOPY, "copy": XDP_COPY}
ROLE_NET_IN, ROLE_FROM_SF = lib.AXP_PORT_NET_IN, lib.AXP_PORT_FROM_SF
ROLE_TO_SF, ROLE_NET_OUT = lib.AXP_PORT_TO_SF, lib.AXP_PORT_NET_OUT
NSLOTS = counters.ROWS * counters.XSK_SLOTS  # one queue's counters: a row per SF, then NONE_ROW's
XDP_SLOTS = lib.AXP_XCNT_XDP_NO_SOCKET + 1  # a row of xsk.bpf.c's counters: enum axp_counter, then no_socket


def snapshot_of(arrays: list[Any]) -> counters.Snapshot:
    """Counter rows summed over per-queue arrays of NSLOTS (cffi arrays or lists)."""
    snap = counters.Snapshot(afxdp=True)
    width = counters.XSK_SLOTS
    for arr in arrays:
        for r in range(counters.ROWS):
            row = arr[r * width:(r + 1) * width]
            if any(row):
                snap.add_to_row(r, row)
    return snap


# ---------------------------------------------------------------------- the engine, without sockets


@dataclass(frozen=True)
class Result:
    """What a per-packet function did: its verdict, the frame as it leaves (or as it was
    left, for drop and pass), and the SF whose interface it leaves by."""

    verdict: int
    data: bytes
    sf: int


class Engine:
    """The C engine (configuration, SF table, cache) with the per-packet functions on plain
    buffers: what the socket loop runs for every frame, callable from tests and benchmarks."""

    def __init__(self, cfg: Any, threads: int = 1, cache_fd: int = -1, reuse: bool = False) -> None:
        """cache_fd: a file to keep the cache in (axp_cache_new_file), reused as it is or zeroed."""
        err = ffi.new("int *")
        if cache_fd < 0:
            ptr = lib.axp_engine_new(cfg, threads, err)
        else:
            ptr = lib.axp_engine_new_file(cfg, threads, cache_fd, int(reuse), err)
        if ptr == ffi.NULL:
            bpf.check(err[0], "AF_XDP engine")
        self.ptr = ptr
        self.cnt = ffi.new("uint64_t[]", NSLOTS)

    def add_sf(self, index: int, sf: Any) -> None:
        bpf.check(lib.axp_engine_add_sf(self.ptr, index, sf), f"SF {index}")

    def set_trace(self, area: Any) -> None:
        """Report sampled packets into area (a ``struct axp_trace_area *``, trace.TraceFile's),
        which must outlive the engine's use of it; ffi.NULL: no more."""
        lib.axp_engine_set_trace(self.ptr, area)

    def set_sf(self, index: int, sf: Any, serve: bool = True) -> None:
        """Add or change SF index; serve False: no new packets, only those in flight (draining).
        With sockets running, only while their workers are paused."""
        bpf.check(lib.axp_engine_set_sf(self.ptr, index, sf, int(serve)), f"SF {index}")

    def drop_sf(self, index: int) -> None:
        bpf.check(lib.axp_engine_drop_sf(self.ptr, index), f"SF {index}")

    def close(self) -> None:
        if self.ptr != ffi.NULL:
            lib.axp_engine_free(self.ptr)
            self.ptr = ffi.NULL

    def _run(self, frame: bytes, tx_sf: int | None, now_ns: int) -> Result:
        buf = ffi.new("uint8_t[]", HEADROOM + len(frame))
        ffi.memmove(buf + HEADROOM, frame, len(frame))
        out = ffi.new("struct axp_pkt *")
        if tx_sf is None:
            v = lib.axp_rx_frame(self.ptr, self.cnt, buf + HEADROOM, len(frame), now_ns, out)
        else:
            v = lib.axp_tx_frame(self.ptr, self.cnt, buf + HEADROOM, len(frame), HEADROOM, tx_sf, now_ns, out)
        if v == VERDICT_TX:
            return Result(v, bytes(ffi.buffer(buf + HEADROOM + out.off, out.len)), out.sf)
        return Result(v, bytes(ffi.buffer(buf + HEADROOM, len(frame))), -1)

    def rx(self, frame: bytes, now_ns: int = 0) -> Result:
        """A frame from net_in (now_ns 0: the C reads the clock)."""
        return self._run(frame, None, now_ns)

    def tx(self, frame: bytes, sf: int = 0, now_ns: int = 0) -> Result:
        """A frame back from the SF of index sf, with HEADROOM bytes in front to push into."""
        return self._run(frame, sf, now_ns)

    @property
    def cache(self) -> Any:
        return lib.axp_engine_cache(self.ptr)

    def snapshot(self) -> counters.Snapshot:
        return snapshot_of([self.cnt])

    def counters(self) -> dict[str, int]:
        """Counters summed over rows (SFs)."""
        return self.snapshot().total()

    def reset_counters(self) -> None:
        ffi.memmove(self.cnt, bytes(8 * NSLOTS), 8 * NSLOTS)

    def in_flight(self) -> int:
        """Packets the cache holds, counted in its sets."""
        return int(lib.axp_cache_packets(self.cache))

    def sets(self) -> list[CacheSet]:
        """Every set of the cache, as the model (afxdp_proxy.cache) holds one."""
        buf = ffi.new("struct axp_cache_set *")
        out = []
        for i in range(lib.axp_cache_sets(self.cache)):
            bpf.check(lib.axp_cache_copy_set(self.cache, i, buf), f"cache set {i}")
            out.append(decode_set(buf))
        return out


# ---------------------------------------------------------------------- counters shared with `stats`


class CounterFile:
    """queues x NSLOTS uint64 (per queue: a row of counters per SF, then the row of frames of no
    SF) in a file under /run/afxdp-proxy, mapped shared: the workers
    write, `afxdp-proxy stats` reads from another process."""

    def __init__(self, name: str, queues: int, path: Path | None = None, keep: bool = False) -> None:
        """path: a file kept by the last proxy of this name (`run --keep-cache`): its counters go
        on where they were left when it has this size (same queues), so that in_flight stays
        exact for the cache kept with them. keep: leave the file when closed."""
        state.STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.path = path or state.STATE_DIR / f"{name}.{os.getpid()}.{id(self):x}.counters"
        self.kept = keep
        self.size = 8 * NSLOTS * queues
        self.reused = path is not None and path.exists() and path.stat().st_size == self.size
        self.map = state.map_shared(self.path, self.size, keep=self.reused)
        self.array = ffi.from_buffer("uint64_t[]", self.map)
        self.queues = queues

    def per_queue(self) -> list[list[int]]:
        return [list(self.array[q * NSLOTS:(q + 1) * NSLOTS]) for q in range(self.queues)]

    def close(self) -> None:
        ffi.release(self.array)
        self.map.close()
        if not self.kept:
            self.path.unlink(missing_ok=True)


def read_counter_file(path: str | Path, queues: int) -> list[list[int]]:
    """Per-queue counter arrays from a running proxy's counter file."""
    data = Path(path).read_bytes()
    if len(data) != 8 * NSLOTS * queues:
        raise RuntimeError(f"{path}: {len(data)} bytes, expected {8 * NSLOTS * queues}: "
                           "written by another build of the extension?")
    arr = ffi.from_buffer("uint64_t[]", data)
    return [list(arr[q * NSLOTS:(q + 1) * NSLOTS]) for q in range(queues)]


def xdp_row(m: bpf.Map, row: int) -> list[int]:
    """One row of an XDP program's counters (xsk.bpf.c), summed over CPUs."""
    return [int(sum(m.lookup(row * XDP_SLOTS + slot) or [])) for slot in range(XDP_SLOTS)]


def _snapshot(per_queue: list[list[int]], bpf_maps: list[bpf.Map], nsfs: int) -> counters.Snapshot:
    snap = snapshot_of(per_queue)
    # the XDP programs count what they pass (and frames for a queue without a socket) in rows like
    # the workers', in slots that line up with a row's (AXP_XCNT_XDP_NO_SOCKET follows AXP_CNT_MAX)
    for m in bpf_maps:
        for row in counters.rows_of(nsfs):
            snap.add_to_row(row, xdp_row(m, row))
    return snap


def read_snapshot(info: dict[str, Any]) -> counters.Snapshot:
    """The counter rows of a running afxdp proxy, from its state file entry."""
    per_queue = read_counter_file(info["counters_file"], int(info["queues"]))
    maps = [bpf.Map.from_id(i, "uint32_t", "uint64_t") for i in info["maps"]["xsk_counters"]]
    try:
        return _snapshot(per_queue, maps, len(info.get("sfs", [])))
    finally:
        for m in maps:
            m.close()


# ---------------------------------------------------------------------- the backend


def _queue_counts(iface: Iface) -> tuple[int, int]:
    """The RX and TX queues in use (ethtool channels: a veth has 1 of each unless created or
    set with more), counting combined channels; 1 each for a device without channels."""
    try:
        with Ethtool() as eth:
            ch = eth.get_channels(iface.name)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            return 1, 1
        raise
    return (ch.rx_count + ch.combined_count) or 1, (ch.tx_count + ch.combined_count) or 1


@dataclass
class _Port:
    """One interface the proxy opens on every queue (struct axp_xsk_port)."""

    iface: Iface
    field: str  # config field that named it first, for error messages
    roles: int = 0
    sf: int = 0
    obj: bpf.BpfObject | None = None  # RX interfaces: their loaded xsk.bpf.o
    prog: str = ""  # the program of obj (it stays loaded, with its counters, once retired)
    link: bpf.Link | None = None  # its XDP program attached
    labels: dict[int, int] = field(default_factory=dict)  # net_in: what its axp_xsk_labels holds


def _host_addrs(port: _Port) -> bpf.Map:
    """The host's addresses map of a from_sf port's XDP program (hostaddrs fills it)."""
    assert port.obj is not None
    return port.obj.map("axp_host_addrs", "struct axp_host_addr", "uint8_t")


def _field(sf: _Sf, key: str, cfg: ProxyConfig) -> str:
    """The config field of interface `key` of sf, for messages (one removed since: as it was)."""
    where = next((i for i, c in enumerate(cfg.sfs) if c.name == sf.cfg.name), None)
    if where is not None or sf.cfg.where:
        return sf.cfg.field(key, where or 0)
    return f"sf {sf.cfg.name}.{key}"


def layout(cfg: ProxyConfig) -> dict[str, Any]:
    """What a kept cache must match to be reused (keep.mismatch says how it differs)."""
    return {"backend": "afxdp", "layout": lib.AXP_CACHE_LAYOUT, "set_bytes": ffi.sizeof("struct axp_cache_set"),
            "sets": cfg.cache_sets, "key": cfg.key, "counter_slots": NSLOTS}


class AfxdpProxy:
    """Sockets, UMEM, XDP programs and worker threads for one configuration; stop() undoes all.

    Reload (:meth:`reload`): the engine's SF table and the ports change while the workers are
    paused between two rounds (axp_xsk_pause: they park within a round, and the change takes
    tens of microseconds; the reload's log line says how long). The cache is not touched. A new
    interface is opened on every queue, on the same UMEM; an interface no SF uses any more is
    retired: its XDP program detached, its sockets left open until the proxy stops (the frames
    on their rings with them), and reused if it comes back in the same roles. An interface whose
    roles change (a net_out that becomes a to_sf, ...) needs other rings: that takes a restart.
    A removed SF keeps its return path for max_dwell_ms, as in the kernel backend.

    Restart (``keep_cache``): the cache's memory is a file under /run/afxdp-proxy/kept, mapped
    shared, and the counters likewise; the next proxy of this name maps them again.

    ``null_forward`` (the lab's benchmark floor, afxdp_proxy/lab/bench/null.py; no configuration
    reaches it): the same sockets, rings, XDP programs and worker loop, but every IP frame goes on
    to the hop the proxy would send it to with only its Ethernet addresses rewritten (no parse,
    no cache, no labels: axp_xsk_opts.null_fwd). net_in takes bare IP, as from_sf does.
    """

    def __init__(self, cfg: ProxyConfig, obj_path: str | None = None, spin: int | None = None,
                 bind_flags: int | None = None, instance: str | None = None, keep_cache: bool = False,
                 null_forward: bool = False) -> None:
        if cfg.topology != "attached":
            raise ConfigError('proxy.topology: the afxdp backend needs topology = "attached" '
                              "(AF_XDP sends out of an interface, it cannot hand packets to the local stack)")
        self.cfg = cfg
        self.name = "afxdp"
        self.instance = instance or cfg.name or state.default_instance()
        self.keep_cache = keep_cache
        self.kept = False
        self._obj_path = obj_path
        self._spin = lib.AXP_XSK_DEFAULT_SPIN if spin is None else spin
        self._bind_flags = BIND_FLAGS[cfg.bind_mode] if bind_flags is None else bind_flags
        self.null_forward = null_forward
        self.queues = cfg.queues  # 0 until start() counts the interfaces' queues
        self._undo = ExitStack()
        self.engine: Engine | None = None
        self._xsk: Any = None
        self._file: CounterFile | None = None
        self._trace: trace.TraceFile | None = None
        self._ports: list[_Port] = []  # every interface opened in this proxy's life, retired ones too
        self._sfs: dict[int, _Sf] = {}  # by slot: the SFs served and the removed ones draining
        self.rows: list[str] = []  # counter rows (SF slots) by the name of the SF last given each
        self._threads: list[threading.Thread] = []
        self._results: dict[int, int] = {}
        self._final = counters.Snapshot(afxdp=True)
        self._final_queues: list[list[int]] = []
        self.zerocopy = False
        self.last_pause_us = 0.0  # how long the workers were parked by the last reload
        self._addrs: hostaddrs.HostAddresses | None = None  # the host's addresses in the from_sf programs
        self._vlan_undo: dict[int, ExitStack] = {}  # net_in ifindex -> how to put VLAN stripping back
        self._changes = state.InterfaceChanges(self.instance)  # the same, on record for after a SIGKILL

    # -- set-up ---------------------------------------------------------------

    def _ports_of(self, ifaces: list[dict[str, Iface]]) -> list[_Port]:
        """Unique interfaces with their roles when SF i of the config uses ifaces[i] (an
        interface may serve several SFs): what start() opens, and what `check` asks about."""
        sfs = {i: _Sf(sf, ifaces[i], None) for i, sf in enumerate(self.cfg.sfs)}
        return [_Port(*p) for p in self._roles_of(sfs, self.cfg).values()]

    @staticmethod
    def _roles_of(sfs: dict[int, _Sf], cfg: ProxyConfig) -> dict[int, tuple[Iface, str, int, int]]:
        """{ifindex: (interface, config field, roles, SF slot it returns)} of every interface the
        SFs (by slot) use, with every role it has; a draining SF needs its way back only (from_sf,
        net_out, and to_sf, whose rings it has)."""
        out: dict[int, tuple[Iface, str, int, int]] = {}
        for slot, sf, key, role in AfxdpProxy._uses(sfs):
            iface = sf.ifs[key]
            cur = out.get(iface.index, (iface, _field(sf, key, cfg), 0, 0))
            out[iface.index] = (iface, cur[1], cur[2] | role, slot if role == ROLE_FROM_SF else cur[3])
        return out

    @staticmethod
    def _uses(sfs: dict[int, _Sf]) -> list[tuple[int, _Sf, str, int]]:
        """(slot, SF, config key, role) of every interface use of the SFs; draining SFs first (a
        from_sf that a served SF returns by too is the served one's), without their net_in."""
        roles = (("net_in", ROLE_NET_IN), ("from_sf", ROLE_FROM_SF), ("to_sf", ROLE_TO_SF),
                 ("net_out", ROLE_NET_OUT))
        return [(slot, sf, key, role)
                for slot, sf in sorted(sfs.items(), key=lambda item: (item[1].drain_until is None, item[0]))
                for key, role in roles if role != ROLE_NET_IN or sf.drain_until is None]

    def _count_queues(self) -> int:
        """The queues to serve: every RX queue of the RX interfaces, which must agree with
        each other and with proxy.queues when set. Fewer sockets than queues would let the
        frames of the other queues bypass the proxy."""
        counts = {port.iface.name: _queue_counts(port.iface) for port in self._ports}
        rx_ports = [p for p in self._ports if p.roles & (ROLE_NET_IN | ROLE_FROM_SF)]
        q = self.cfg.queues or counts[rx_ports[0].iface.name][0]
        rx_counts = frozenset(counts[p.iface.name][0] for p in rx_ports)
        for port in self._ports:
            self._check_queues(port, q, counts[port.iface.name], rx_ports[0].iface.name, rx_counts)
        if q > lib.AXP_XSK_MAX_QUEUES:
            raise ConfigError(f"proxy.queues: {q} RX queues; at most {lib.AXP_XSK_MAX_QUEUES}: reduce the channels")
        return q

    def _check_queues(self, port: _Port, q: int, counts: tuple[int, int], first: str | None,
                      rx_counts: frozenset[int] = frozenset()) -> None:
        """A ConfigError naming port's interface and the fix unless it has q RX queues (an RX
        interface: every queue needs a socket) or q TX queues at least (each worker sends on its
        own). first: the RX interface whose count is q when proxy.queues is left out; None: q is
        the running proxy's (a reload). rx_counts: the RX interfaces' queue counts (at start)."""
        rxq, txq = counts
        name = port.iface.name
        if port.roles & (ROLE_NET_IN | ROLE_FROM_SF) and rxq != q:
            has = f"{name} ({port.field}) has {rxq} RX queue(s), and every RX queue needs a socket"
            if first is None:
                raise ConfigError(f"proxy.queues: the running proxy serves {q} queue(s), but {has}: give {name} "
                                  f"{q} RX queue(s) (ethtool -L); the proxy's own count changes only with a restart")
            if not self.cfg.queues:
                raise ConfigError(f"proxy.queues: {first} has {q} RX queue(s), but {has}: give the interfaces "
                                  "the same number of RX queues (ethtool -L)")
            # queues given: the interfaces' own count is the fix when they agree on one
            fix = (f"set queues = {rxq} (its queue count) or leave queues out" if rx_counts == {rxq} else
                   "give the interfaces the same number of RX queues (ethtool -L), then set queues to it or "
                   "leave queues out")
            raise ConfigError(f"proxy.queues: {q}, but {has}: {fix}")
        if port.roles & (ROLE_TO_SF | ROLE_NET_OUT) and txq < q:
            served = f"{q}" if self.cfg.queues or first is None else f"{q} ({first}'s RX queues)"
            raise ConfigError(f"proxy.queues: {served}, but {name} ({port.field}) has only {txq} TX queue(s), and "
                              f"each queue's worker sends on its own: give {name} {q} or more (ethtool -L)")

    @staticmethod
    def _prog_of(roles: int) -> str:
        """The XDP program of an RX interface, by its RX roles."""
        if roles & ROLE_NET_IN and roles & ROLE_FROM_SF:
            return "axp_xsk_rx_tx"
        return "axp_xsk_from_sf" if roles & ROLE_FROM_SF else "axp_xsk_net_in"

    def _load_xdp(self, port: _Port, roles: int) -> None:
        """Load port's XDP program for RX roles (its label map is _sync_labels' job)."""
        # the null forwarder's traffic is plain IP on net_in too: what from_sf's program takes
        prog = "axp_xsk_from_sf" if self.null_forward else self._prog_of(roles)
        obj = bpf.BpfObject(self._obj_path or bpf.object_path("xsk"))
        try:
            for name in ("axp_xsk_net_in", "axp_xsk_from_sf", "axp_xsk_rx_tx"):
                obj.set_autoload(name, name == prog)
            obj.set_max_entries("axp_xsks", self.queues)
            obj.set_rodata(config_struct(self.cfg))
            obj.load()
        except BaseException:
            obj.close()
            raise
        port.obj, port.prog = obj, prog

    def _sync_labels(self) -> None:
        """Each net_in's XDP program hands its socket the (VLAN, label) keys of the SFs served
        there (label_keys)."""
        for port in self._ports:
            if not (port.obj and port.roles & ROLE_NET_IN):
                continue
            want = {key: slot for slot, sf in sorted(self._sfs.items(), reverse=True)
                    if sf.drain_until is None and sf.ifs["net_in"].index == port.iface.index
                    for key in label_keys(sf.cfg.vlan_in, sf.cfg.label)}
            if want == port.labels:
                continue
            m = port.obj.map("axp_xsk_labels", "uint32_t", "uint32_t")
            for label, slot in want.items():
                if port.labels.get(label) != slot:
                    m.update(label, slot)
            for label in port.labels.keys() - want.keys():
                m.delete(label)
            port.labels = want

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        cfg = self.cfg
        state.sweep_dead()  # a killed proxy's files go, and what it turned off goes back on
        describe = KernelProxy(cfg)  # its interface and SF description, nothing loaded
        sfs = describe._describe(cfg)
        cache_fd, reuse, rows, counters_path = self._kept_cache()
        slots = assign_slots(cfg.sfs, rows)
        self._sfs = {slots[sf.cfg.name]: sf for sf in sfs}
        self.rows = rows_after(rows, slots)
        self._ports = [_Port(*p) for p in self._roles_of(self._sfs, cfg).values()]
        self.queues = self._count_queues()

        try:
            engine = Engine(config_struct(cfg), self.queues, cache_fd, reuse)
        finally:
            if cache_fd >= 0:
                os.close(cache_fd)
        self._undo.callback(engine.close)
        self.engine = engine
        for slot, sf in self._sfs.items():
            engine.set_sf(slot, sf.struct)

        self._file = CounterFile(self.instance, self.queues, counters_path, keep=self.kept)
        self._undo.callback(self._close_file)
        self._trace = trace.TraceFile(self.instance)
        self._undo.callback(self._close_trace)  # after the workers have stopped
        engine.set_trace(self._trace.area)
        self._undo.callback(self._close_objects)
        for port in self._ports:
            if port.roles & (ROLE_NET_IN | ROLE_FROM_SF):
                self._load_xdp(port, port.roles)
        self._sync_labels()

        host_maps = [_host_addrs(p) for p in self._ports if p.obj is not None and p.roles & ROLE_FROM_SF]
        self._addrs = hostaddrs.HostAddresses(host_maps).start()
        self._undo.callback(self._stop_addrs)

        self._undo.callback(self._snapshot)  # runs after the sockets close, before the objects do
        self._open_sockets()
        self._undo.callback(self._close_sockets)
        self._undo.callback(self._detach)
        for port in self._ports:
            if port.obj is not None:
                port.link = bpf.Link.xdp(port.obj.prog_fd(port.prog), port.iface.index)
        self._sync_vlan()
        for q in range(self.queues):
            t = threading.Thread(target=self._work, args=(q,), name=f"axp-xsk-q{q}", daemon=True)
            t.start()
            self._threads.append(t)
        self._undo.callback(self._stop_workers)
        self._write_record()

    def _kept_cache(self) -> tuple[int, bool, list[str], Path | None]:
        """What a cache kept by an earlier proxy of this name gives this one: the fd of the file
        for the cache (-1: anonymous memory), whether to reuse what it holds, the kept SF rows,
        and the counters file to go on with."""
        name, cfg = self.instance, self.cfg
        rec = keep.read(name)
        cache_path, counters_path = keep.file_path(name, "cache"), keep.file_path(name, "counters")
        size = cfg.cache_sets * ffi.sizeof("struct axp_cache_set")
        reuse, rows = False, []
        if rec is not None or cache_path.exists():
            diff = keep.mismatch(rec.get("layout", {}), layout(cfg)) if rec else ["a cache file without a record"]
            if not diff and (not cache_path.exists() or cache_path.stat().st_size != size):
                diff = [f"{cache_path}: not {size} bytes"]
            if diff:
                keep.forget(name)
                log.info("cache: what %s kept does not fit (%s): starting with an empty cache", name, ", ".join(diff),
                         extra=fields(event="cache_fresh", name=name, reason=", ".join(diff)))
            else:
                reuse, rows = True, [str(r) for r in rec.get("rows", [])] if rec else []
                log.info("cache: reusing the cache %s kept (%s)", name, cache_path,
                         extra=fields(event="cache_reused", name=name, file=str(cache_path)))
        if not self.keep_cache:
            if not reuse:
                return -1, False, rows, None
            # taken over: mapped by this proxy alone, nothing of it left when it ends
            fd = os.open(cache_path, os.O_RDWR | os.O_CLOEXEC)
            taken = state.STATE_DIR / f"{name}.{os.getpid()}.taken.counters"
            if counters_path.exists():
                os.replace(counters_path, taken)
            keep.forget(name)
            return fd, True, rows, taken
        keep.KEPT_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(cache_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self.kept = True
        return fd, reuse, rows, counters_path

    def _write_record(self) -> None:
        if self.kept:
            keep.write(self.instance, {"backend": "afxdp", "layout": layout(self.cfg), "rows": self.rows,
                                       "cache": str(keep.file_path(self.instance, "cache")), "pid": os.getpid(),
                                       "written": time.time()})

    def _xsk_ports(self, ports: list[_Port] | None = None) -> Any:
        """struct axp_xsk_port[] of ports (default: every port)."""
        ports = self._ports if ports is None else ports
        out = ffi.new("struct axp_xsk_port[]", max(1, len(ports)))
        for i, port in enumerate(ports):
            out[i].ifname = port.iface.name.encode()
            out[i].ifindex = port.iface.index
            out[i].roles = port.roles
            out[i].sf = self._null_sf(port) if self.null_forward and port.roles & ROLE_NET_IN else port.sf
            out[i].xskmap_fd = port.obj.map("axp_xsks", "uint32_t", "uint32_t").fd if port.obj else -1
        return out

    def _null_sf(self, port: _Port) -> int:
        """The null forwarder's SF for the frames of net_in port: the first one arriving there."""
        return min(slot for slot, sf in self._sfs.items() if sf.ifs["net_in"].index == port.iface.index)

    def _open_sockets(self) -> None:
        cfg = self.cfg
        ports = self._xsk_ports()
        opts = ffi.new("struct axp_xsk_opts *", {
            "queues": self.queues, "ring_size": cfg.ring_size, "frame_size": cfg.frame_size,
            "batch_size": cfg.batch_size, "bind_flags": self._bind_flags, "spin": self._spin,
            "null_fwd": int(self.null_forward),
        })
        err = ffi.new("int *")
        msg = ffi.new("char[]", 256)
        assert self.engine is not None and self._file is not None
        x = lib.axp_xsk_open(self.engine.ptr, opts, ports, len(self._ports), self._file.array, err, msg, 256)
        if x == ffi.NULL:
            text = ffi.string(msg).decode(errors="replace")
            raise self._open_error(-err[0], text)
        self._xsk = x
        self.zerocopy = bool(lib.axp_xsk_zerocopy(x))
        log.info("AF_XDP sockets in %s mode (bind_mode = %s)", "zero-copy" if self.zerocopy else "copy",
                 cfg.bind_mode)

    def _open_error(self, err: int, text: str) -> Exception:
        """One line naming the config field: the interface's, or proxy.backend for the kernel's lack."""
        if err in (errno.EAFNOSUPPORT, errno.ENOPROTOOPT):
            return ConfigError(f"proxy.backend: afxdp needs AF_XDP sockets: {text}")
        if err == errno.EOPNOTSUPP and self._bind_flags & XDP_ZEROCOPY:
            port = next((p for p in self._ports if text.startswith(p.iface.name + " ")), None)
            where = f"{port.iface.name} (driver {driver_of(port.iface)})" if port else "an interface"
            return ConfigError(f'proxy.bind_mode: "zerocopy", but {where} has no AF_XDP zero-copy support; set '
                               'bind_mode = "auto" (zero-copy where the driver has it, else copy) or "copy"')
        for port in self._ports:
            if text.startswith(port.iface.name + " ") or text.startswith(port.iface.name + ":"):
                return ConfigError(f"{port.field}: {text}")
        for key in ("queues", "ring_size", "frame_size", "batch_size"):
            if text.startswith(key + ":"):
                return ConfigError(f"proxy.{text}")
        return bpf.BpfError(err, f"AF_XDP: {text}")

    def _work(self, queue: int) -> None:
        # the C loop; cffi releases the GIL for the whole call
        self._results[queue] = lib.axp_xsk_run(self._xsk, queue)

    def _stop_workers(self) -> None:
        if self._xsk is None:
            return
        lib.axp_xsk_stop(self._xsk)
        for t in self._threads:
            t.join(STOP_TIMEOUT)
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            # never free what a running loop uses: leak the sockets rather than crash
            log.error("AF_XDP workers %s did not stop; leaving their sockets open", stuck)
            self._xsk = None
        self._threads.clear()

    def _detach(self) -> None:
        for port in self._ports:
            if port.link is not None:
                port.link.close()
                port.link = None
        self._sync_vlan()

    def _sync_vlan(self) -> None:
        """VLAN tag stripping off on every net_in while its XDP program is attached (a tag stripped
        before XDP would be lost), put back as it was where it no longer is."""
        rx = {p.iface.index: p.iface for p in self._ports if p.link is not None and p.roles & ROLE_NET_IN}
        for idx, iface in rx.items():
            if idx not in self._vlan_undo:
                with ExitStack() as undo:
                    warn_vlan_stripping(iface.name, features_off(self._changes, iface, VLAN_STRIPPING, undo))
                    self._vlan_undo[idx] = undo.pop_all()
        for idx in self._vlan_undo.keys() - rx.keys():
            self._vlan_undo.pop(idx).close()

    def _stop_addrs(self) -> None:
        if self._addrs is not None:
            self._addrs.stop()
            self._addrs = None

    def _close_objects(self) -> None:
        for port in self._ports:
            if port.obj is not None:
                port.obj.close()
                port.obj = None

    def _close_sockets(self) -> None:
        if self._xsk is not None:
            lib.axp_xsk_close(self._xsk)
            self._xsk = None

    def _snapshot(self) -> None:
        """The last counters, kept for counters() after stop."""
        if self._file is not None:
            self._final_queues = self._file.per_queue()
            self._final = self._snapshot_now()

    def _close_trace(self) -> None:
        if self._trace is not None:
            if self.engine is not None:
                self.engine.set_trace(ffi.NULL)
            self._trace.close()
            self._trace = None

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def stop(self) -> None:
        """Stop the workers, detach, close sockets and unload; safe to call twice. A kept cache
        stays in its file."""
        self._undo.close()
        self.engine = None
        self._ports = []
        self._sfs = {}

    # -- reload ---------------------------------------------------------------

    def reload(self, new: ProxyConfig) -> list[SfChange]:
        """Serve new's SFs (see the class's docstring). Raises ConfigError (RestartNeeded for
        what cannot change live) before changing anything; returns what changed."""
        if self.null_forward:
            raise RestartNeeded("the null forwarder (a lab tool) does not reload: restart it")
        check_live(self.cfg, new)
        target, slots, done = plan_reload(self._sfs, self.rows, self.cfg, new, KernelProxy(new)._describe(new))
        self._apply(target, new)
        self.cfg = new
        self.rows = rows_after(self.rows, slots)
        self._write_record()
        return done

    def tick(self) -> list[str]:
        """Retire what removed SFs no longer need once they have drained; returns their names.
        Sampling set by a trace that has gone is turned off."""
        if self._trace is not None:
            trace.release_orphan(self._trace.control)
        stay, names = retire_drained(self._sfs)
        if names:
            self._apply(stay, self.cfg)
        return names

    def _apply(self, target: dict[int, _Sf], cfg: ProxyConfig) -> None:
        """Serve exactly target (by slot): new interfaces' XDP programs loaded first, then the
        engine's SF table and the ports changed while the workers are paused, then the new
        interfaces' programs attached and the retired ones' detached."""
        assert self.engine is not None and self._xsk is not None
        want = self._roles_of(target, cfg)
        by_index = {p.iface.index: p for p in self._ports}
        for idx, (iface, fld, roles, _) in want.items():
            port = by_index.get(idx)
            if port is not None and port.roles and port.roles != roles:
                # named by an SF that gives it a role it did not have, if one does
                fld = next((_field(sf, key, cfg) for _, sf, key, role in self._uses(target)
                            if sf.ifs[key].index == idx and role & roles & ~port.roles), fld)
                raise RestartNeeded(f"{fld}: {iface.name} changes roles; the afxdp backend opened its sockets "
                                    "for the old ones: restart the proxy to apply (run --keep-cache keeps the "
                                    "cache across it; the running configuration stays)")
        if want.keys() - by_index.keys():
            counts = {idx: _queue_counts(iface) for idx, (iface, *_) in want.items() if idx not in by_index}
            for idx, c in counts.items():
                iface, fld, roles, sf = want[idx]
                self._check_queues(_Port(iface, fld, roles, sf), self.queues, c, None)
        fresh = [_Port(iface, fld, roles, sf) for idx, (iface, fld, roles, sf) in want.items() if idx not in by_index]
        ports = [*self._ports, *fresh]
        # the ports as they will be: (roles, SF returned) by interface; 0 roles: retired
        after = {p.iface.index: want[p.iface.index][2:] if p.iface.index in want else (0, p.sf) for p in ports}
        loaded: list[_Port] = []
        try:
            for port in ports:
                roles, sf = after[port.iface.index]
                if port.obj is None and roles & (ROLE_NET_IN | ROLE_FROM_SF):
                    self._load_xdp(port, roles)
                    loaded.append(port)
            live = [_Port(p.iface, p.field, *after[p.iface.index], obj=p.obj) for p in ports
                    if after[p.iface.index][0]]
            arr, msg = self._xsk_ports(live), ffi.new("char[]", 256)  # ready before the workers stop
            if fresh:
                # the binds take milliseconds: done while the workers run, the ports out of service
                new = [p for p in live if p.iface.index not in by_index]
                rc = lib.axp_xsk_open_ports(self._xsk, self._xsk_ports(new), len(new), msg, 256)
                if rc < 0:
                    raise self._open_error(-rc, ffi.string(msg).decode(errors="replace"))
            t0 = time.perf_counter()
            bpf.check(lib.axp_xsk_pause(self._xsk, 1000), "pause the AF_XDP workers")
            try:
                self._engine_table(target)
                rc = lib.axp_xsk_set_ports(self._xsk, arr, len(live), msg, 256)
                if rc < 0:
                    self._engine_table(self._sfs, drop=set(target) - set(self._sfs))
                    raise self._open_error(-rc, ffi.string(msg).decode(errors="replace"))
            finally:
                lib.axp_xsk_resume(self._xsk)
                self.last_pause_us = (time.perf_counter() - t0) * 1e6
        except BaseException:
            for port in loaded:
                assert port.obj is not None
                port.obj.close()
                port.obj = None
            raise
        for port in ports:
            port.roles, port.sf = after[port.iface.index]
        self._ports = ports
        self._sfs = dict(target)
        if self._addrs is not None:  # a new from_sf passes what the SF sends the host from its first frame
            for port in loaded:
                if port.roles & ROLE_FROM_SF:
                    self._addrs.add_map(_host_addrs(port))
        for port in self._ports:
            if port.roles and port.obj is not None and port.link is None:
                port.link = bpf.Link.xdp(port.obj.prog_fd(port.prog), port.iface.index)
            elif not port.roles and port.link is not None:
                port.link.close()  # retired: its frames go to the kernel again
                port.link = None
        self._sync_labels()
        self._sync_vlan()

    def _engine_table(self, sfs: dict[int, _Sf], drop: set[int] | None = None) -> None:
        """The engine's SF table as sfs says (workers paused); drop: slots to forget besides."""
        assert self.engine is not None
        # labels leave before they are given again: an SF renamed keeps its label
        for slot, sf in sfs.items():
            if sf.drain_until is not None:
                self.engine.set_sf(slot, sf.struct, serve=False)
        for slot in (set(self._sfs) - set(sfs)) | (drop or set()):
            if slot not in sfs:
                self.engine.drop_sf(slot)
        for slot, sf in sfs.items():
            if sf.drain_until is None:
                self.engine.set_sf(slot, sf.struct)

    # -- observation ----------------------------------------------------------

    def _bpf_maps(self) -> list[bpf.Map]:
        return [p.obj.map("axp_counters", "uint32_t", "uint64_t") for p in self._ports if p.obj]

    def _snapshot_now(self) -> counters.Snapshot:
        assert self._file is not None
        return _snapshot(self._file.per_queue(), self._bpf_maps(), len(self.rows))

    def snapshot(self) -> counters.Snapshot:
        """Counter rows, summed over queues and XDP programs (the last ones after stop)."""
        if self._file is not None and any(p.obj for p in self._ports):
            return self._snapshot_now()
        return self._final

    def counters(self) -> dict[str, int]:
        """Counters summed over SFs, queues and XDP programs (the last ones after stop), and
        tx_dwell_timed."""
        return counters.with_dwell_timed(self.snapshot())

    def queue_counters(self) -> list[dict[str, int]]:
        """The workers' own counters, summed over SFs, one dict per queue (no XDP program counts)."""
        per_queue = self._file.per_queue() if self._file is not None else self._final_queues
        return [snapshot_of([arr]).total() for arr in per_queue]

    def in_flight(self) -> int:
        return counters.in_flight_of(self.counters())

    def worker_results(self) -> dict[int, int]:
        """Return codes of the finished workers' loops by queue (0: stopped when asked)."""
        return dict(self._results)

    def state(self) -> dict[str, object]:
        assert self._file is not None and self._xsk is not None
        return {
            "counters_file": str(self._file.path),
            "trace_file": str(self._trace.path) if self._trace else None,
            "queues": self.queues,
            "maps": {"xsk_counters": [m.id for m in self._bpf_maps()]},
            "progs": [p.obj.prog_id(p.prog) for p in self._ports if p.obj],
            "sfs": self.rows,
            "kept": str(keep.file_path(self.instance, "cache")) if self.kept else None,
            "xsk": {"mode": "zero-copy" if self.zerocopy else "copy",
                    "umem_bytes": int(lib.axp_xsk_umem_size(self._xsk)),
                    "ring_size": self.cfg.ring_size, "frame_size": self.cfg.frame_size,
                    "batch_size": self.cfg.batch_size, **({"forward": "null"} if self.null_forward else {})},
        }


def queue_threads() -> list[str]:
    """Names of live worker threads in this process (for leak checks)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("axp-xsk-q")]

