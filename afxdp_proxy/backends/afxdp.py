"""The AF_XDP proxy: a minimal XDP program hands frames to AF_XDP sockets and the
C extension (native/axp_xsk.c) does the proxying in user space.

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
reads them; the XDP programs count the frames they pass in BPF maps.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.ethtool import Ethtool

from afxdp_proxy import bpf, counters, hostaddrs, state
from afxdp_proxy._native import ffi, lib
from afxdp_proxy.backends.kernel import KernelProxy, config_struct, label_keys, warn_vlan_stripping
from afxdp_proxy.cache import CacheSet, decode_set
from afxdp_proxy.config import ConfigError, ProxyConfig
from afxdp_proxy.iface import Iface, driver_of, keep_vlan_tags

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

    def __init__(self, cfg: Any, threads: int = 1) -> None:
        err = ffi.new("int *")
        ptr = lib.axp_engine_new(cfg, threads, err)
        if ptr == ffi.NULL:
            bpf.check(err[0], "AF_XDP engine")
        self.ptr = ptr
        self.cnt = ffi.new("uint64_t[]", NSLOTS)

    def add_sf(self, index: int, sf: Any) -> None:
        bpf.check(lib.axp_engine_add_sf(self.ptr, index, sf), f"SF {index}")

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

    def __init__(self, name: str, queues: int) -> None:
        state.STATE_DIR.mkdir(parents=True, exist_ok=True)
        _remove_stale_counter_files()
        self.path = state.STATE_DIR / f"{name}.{os.getpid()}.{id(self):x}.counters"
        self.size = 8 * NSLOTS * queues
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, self.size)
            self.map = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.array = ffi.from_buffer("uint64_t[]", self.map)
        self.queues = queues

    def per_queue(self) -> list[list[int]]:
        return [list(self.array[q * NSLOTS:(q + 1) * NSLOTS]) for q in range(self.queues)]

    def close(self) -> None:
        ffi.release(self.array)
        self.map.close()
        self.path.unlink(missing_ok=True)


def _remove_stale_counter_files() -> None:
    """Counter files of proxies that died without cleaning up (SIGKILL)."""
    for path in state.STATE_DIR.glob("*.counters"):
        parts = path.name.split(".")
        try:
            pid = int(parts[-3])
        except (IndexError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except PermissionError:
            pass


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


class AfxdpProxy:
    """Sockets, UMEM, XDP programs and worker threads for one configuration; stop() undoes all."""

    def __init__(self, cfg: ProxyConfig, obj_path: str | None = None, spin: int | None = None,
                 bind_flags: int | None = None) -> None:
        if cfg.topology != "attached":
            raise ConfigError('proxy.topology: the afxdp backend needs topology = "attached" '
                              "(AF_XDP sends out of an interface, it cannot hand packets to the local stack)")
        self.cfg = cfg
        self.name = "afxdp"
        self._obj_path = obj_path
        self._spin = lib.AXP_XSK_DEFAULT_SPIN if spin is None else spin
        self._bind_flags = BIND_FLAGS[cfg.bind_mode] if bind_flags is None else bind_flags
        self.queues = cfg.queues  # 0 until start() counts the interfaces' queues
        self._undo = ExitStack()
        self.engine: Engine | None = None
        self._xsk: Any = None
        self._file: CounterFile | None = None
        self._ports: list[_Port] = []
        self._threads: list[threading.Thread] = []
        self._results: dict[int, int] = {}
        self._final = counters.Snapshot(afxdp=True)
        self._final_queues: list[list[int]] = []
        self.zerocopy = False

    # -- set-up ---------------------------------------------------------------

    def _ports_of(self, ifaces: list[dict[str, Iface]]) -> list[_Port]:
        """Unique interfaces with their roles; an interface may appear in several SFs."""
        by_index: dict[int, _Port] = {}
        roles = (("net_in", ROLE_NET_IN), ("from_sf", ROLE_FROM_SF), ("to_sf", ROLE_TO_SF),
                 ("net_out", ROLE_NET_OUT))
        for i, ifs in enumerate(ifaces):
            for key, role in roles:
                iface = ifs[key]
                port = by_index.setdefault(iface.index, _Port(iface, self.cfg.sfs[i].field(key, i)))
                if role == ROLE_FROM_SF:
                    port.sf = i
                port.roles |= role
        return list(by_index.values())

    def _count_queues(self) -> int:
        """The queues to serve: every RX queue of the RX interfaces, which must agree with
        each other and with proxy.queues when set. Fewer sockets than queues would let the
        frames of the other queues bypass the proxy."""
        counts = {port.iface.name: _queue_counts(port.iface) for port in self._ports}
        rx_ports = [p for p in self._ports if p.roles & (ROLE_NET_IN | ROLE_FROM_SF)]
        q = self.cfg.queues or counts[rx_ports[0].iface.name][0]
        for port in self._ports:
            rxq, txq = counts[port.iface.name]
            if port in rx_ports and rxq != q:
                what = f"proxy.queues: {q}" if self.cfg.queues else \
                    f"proxy.queues: {rx_ports[0].iface.name} has {q} RX queue(s)"
                raise ConfigError(f"{what}, but {port.iface.name} ({port.field}) has {rxq}; every queue "
                                  "needs a socket: give the interfaces the same number of queues or set queues")
            if port.roles & (ROLE_TO_SF | ROLE_NET_OUT) and txq < q:
                raise ConfigError(f"proxy.queues: {q}, but {port.iface.name} ({port.field}) has only {txq} "
                                  "TX queue(s)")
        if q > lib.AXP_XSK_MAX_QUEUES:
            raise ConfigError(f"proxy.queues: {q} RX queues; at most {lib.AXP_XSK_MAX_QUEUES}: reduce the channels")
        return q

    @staticmethod
    def _prog_of(port: _Port) -> str:
        """The XDP program of an RX interface, by its RX roles."""
        if port.roles & ROLE_NET_IN and port.roles & ROLE_FROM_SF:
            return "axp_xsk_rx_tx"
        return "axp_xsk_from_sf" if port.roles & ROLE_FROM_SF else "axp_xsk_net_in"

    def _load_xdp(self, port: _Port, labels: dict[int, int]) -> bpf.BpfObject:
        """xsk.bpf.o for one RX interface; labels: its label map's keys (label_keys) -> SF index."""
        obj = bpf.BpfObject(self._obj_path or bpf.object_path("xsk"))
        try:
            for prog in ("axp_xsk_net_in", "axp_xsk_from_sf", "axp_xsk_rx_tx"):
                obj.set_autoload(prog, prog == self._prog_of(port))
            obj.set_max_entries("axp_xsks", self.queues)
            obj.set_rodata(config_struct(self.cfg))
            obj.load()
            label_map = obj.map("axp_xsk_labels", "uint32_t", "uint32_t")
            for label, sf in labels.items():
                label_map.update(label, sf)
        except BaseException:
            obj.close()
            raise
        return obj

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        cfg = self.cfg
        describe = KernelProxy(cfg)  # its interface and SF description, nothing loaded
        with IPRoute() as ipr:
            ifaces = describe._resolve(ipr)
            sf_structs = [describe._sf_struct(ipr, i, sf, ifaces[i]) for i, sf in enumerate(cfg.sfs)]
            self._ports = self._ports_of(ifaces)
        self.queues = self._count_queues()

        engine = Engine(config_struct(cfg), self.queues)
        self._undo.callback(engine.close)
        self.engine = engine
        for i, s in enumerate(sf_structs):
            engine.add_sf(i, s)

        self._file = CounterFile(cfg.name or state.netns_id(), self.queues)
        self._undo.callback(self._close_file)

        for port in self._ports:
            if port.roles & (ROLE_NET_IN | ROLE_FROM_SF):
                labels = {k: i for i, sf in enumerate(cfg.sfs) if ifaces[i]["net_in"].index == port.iface.index
                          for k in label_keys(sf.vlan_in, sf.label)}
                port.obj = self._load_xdp(port, labels)
                self._undo.callback(port.obj.close)

        host_maps = [p.obj.map("axp_host_addrs", "struct axp_host_addr", "uint8_t") for p in self._ports
                     if p.obj is not None and p.roles & ROLE_FROM_SF]
        addrs = hostaddrs.HostAddresses(host_maps).start()
        self._undo.callback(addrs.stop)

        self._undo.callback(self._snapshot)  # runs after the sockets close, before the objects do
        self._open_sockets()
        self._undo.callback(self._close_sockets)
        for port in self._ports:
            if port.obj is not None:
                link = bpf.Link.xdp(port.obj.prog_fd(self._prog_of(port)), port.iface.index)
                self._undo.callback(link.close)
                if port.roles & ROLE_NET_IN:
                    warn_vlan_stripping(port.iface.name, keep_vlan_tags(port.iface.name, self._undo))
        for q in range(self.queues):
            t = threading.Thread(target=self._work, args=(q,), name=f"axp-xsk-q{q}", daemon=True)
            t.start()
            self._threads.append(t)
        self._undo.callback(self._stop_workers)

    def _open_sockets(self) -> None:
        cfg = self.cfg
        ports = ffi.new("struct axp_xsk_port[]", len(self._ports))
        for i, port in enumerate(self._ports):
            ports[i].ifname = port.iface.name.encode()
            ports[i].ifindex = port.iface.index
            ports[i].roles = port.roles
            ports[i].sf = port.sf
            ports[i].xskmap_fd = port.obj.map("axp_xsks", "uint32_t", "uint32_t").fd if port.obj else -1
        opts = ffi.new("struct axp_xsk_opts *", {
            "queues": self.queues, "ring_size": cfg.ring_size, "frame_size": cfg.frame_size,
            "batch_size": cfg.batch_size, "bind_flags": self._bind_flags, "spin": self._spin,
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
            if text.startswith(port.iface.name + " "):
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

    def _close_sockets(self) -> None:
        if self._xsk is not None:
            lib.axp_xsk_close(self._xsk)
            self._xsk = None

    def _snapshot(self) -> None:
        """The last counters, kept for counters() after stop."""
        if self._file is not None:
            self._final_queues = self._file.per_queue()
            self._final = self._snapshot_now()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def stop(self) -> None:
        """Stop the workers, detach, close sockets and unload; safe to call twice."""
        self._undo.close()
        self.engine = None
        self._ports = []

    # -- observation ----------------------------------------------------------

    def _bpf_maps(self) -> list[bpf.Map]:
        return [p.obj.map("axp_counters", "uint32_t", "uint64_t") for p in self._ports if p.obj]

    def _snapshot_now(self) -> counters.Snapshot:
        assert self._file is not None
        return _snapshot(self._file.per_queue(), self._bpf_maps(), len(self.cfg.sfs))

    def snapshot(self) -> counters.Snapshot:
        """Counter rows, summed over queues and XDP programs (the last ones after stop)."""
        if self._file is not None and any(p.obj for p in self._ports):
            return self._snapshot_now()
        return self._final

    def counters(self) -> dict[str, int]:
        """Counters summed over SFs, queues and XDP programs (the last ones after stop)."""
        return self.snapshot().total()

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
            "queues": self.queues,
            "maps": {"xsk_counters": [m.id for m in self._bpf_maps()]},
            "progs": [p.obj.prog_id(self._prog_of(p)) for p in self._ports if p.obj],
            "xsk": {"mode": "zero-copy" if self.zerocopy else "copy",
                    "umem_bytes": int(lib.axp_xsk_umem_size(self._xsk)),
                    "ring_size": self.cfg.ring_size, "frame_size": self.cfg.frame_size,
                    "batch_size": self.cfg.batch_size},
        }


def queue_threads() -> list[str]:
    """Names of live worker threads in this process (for leak checks)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("axp-xsk-q")]

