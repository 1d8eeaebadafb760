"""The in-kernel proxy: bpf/proxy.bpf.c loaded by libbpf and attached with BPF links.

Inline:   XDP axp_xdp_rx on net_in (+ TC ingress axp_tc_meta in meta mode),
          TC egress axp_tc_tx on net_out; the namespace's own kernel is the SF.
Attached: XDP axp_xdp_rx on net_in redirects to to_sf, XDP axp_xdp_tx on
          from_sf pushes and redirects to net_out.

Links detach when their fd closes, so even a killed proxy leaves nothing
attached. GRO is turned off on net_in while the proxy runs: GRO would merge
packets whose stacks TX must restore one by one (TX counts and drops merged
skbs as tx_gso_drop should one get through).

Reload (SIGHUP, :meth:`KernelProxy.reload`): the SF, label and TX maps are
updated in place, and links are attached or detached only for interfaces that
appear or disappear; the cache is not touched, so packets in flight keep their
entries. A removed SF stops taking packets at once (its label leaves
axp_labels) while its return path (from_sf, or net_out inline) stays attached
for max_dwell_ms, so what is inside it comes back with its stack.

Restart (``run --keep-cache``, see afxdp_proxy/keep.py): the cache and counter
maps are pinned under /run/afxdp-proxy/bpf/<name>/ and reused by the next
proxy of the same name when their layout matches.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from afxdp_proxy import bpf, counters, keep, state
from afxdp_proxy._native import ffi, lib
from afxdp_proxy.cache import CacheSet, decode_set
from afxdp_proxy.config import ConfigError, ProxyConfig, SfConfig
from afxdp_proxy.iface import Iface, learn_mac, mac_bytes, resolve, set_feature
from afxdp_proxy.log import fields
from afxdp_proxy.mpls import make_stack
from afxdp_proxy.reload import SfChange, assign_slots, changes, check_live, rows_after

log = logging.getLogger(__name__)

PROGRAMS = ("axp_xdp_rx", "axp_tc_meta", "axp_tc_tx", "axp_xdp_tx")  # what proxy.bpf.o holds
# what --keep-cache pins: the SF, label and TX maps are rebuilt from the configuration, and the
# counters go with the cache so that in_flight stays exact across the restart
PINNED = ("axp_cache", "axp_counters")

_KEY_MODE = {"hash": lib.AXP_KEY_MODE_HASH, "meta": lib.AXP_KEY_MODE_META}
_TOPOLOGY = {"inline": lib.AXP_TOPO_INLINE, "attached": lib.AXP_TOPO_ATTACHED}
_MISS = {"pass": lib.AXP_MISS_PASS, "drop": lib.AXP_MISS_DROP}


def config_struct(cfg: ProxyConfig) -> Any:
    """The struct axp_config for a ProxyConfig: BPF .rodata, and the AF_XDP engine's."""
    return ffi.new("struct axp_config *", {
        "key_mode": _KEY_MODE[cfg.key],
        "topology": _TOPOLOGY[cfg.topology],
        "on_miss": _MISS[cfg.on_miss],
        "static_mode": int(cfg.backend == "static"),
        "cache_sets": cfg.cache_sets,
        "max_per_key": cfg.max_per_key,
        "max_dwell_ns": cfg.max_dwell_ms * 1_000_000,
    })


class ProxyObject:
    """build/proxy.bpf.o loaded for one configuration, with its maps at hand."""

    def __init__(self, cfg: ProxyConfig, obj_path: str | None = None, pin_dir: Path | None = None,
                 programs: tuple[str, ...] = PROGRAMS) -> None:
        self.obj = bpf.BpfObject(obj_path or bpf.object_path("proxy"))
        self.programs = programs  # the ones loaded: the verifier takes seconds over them all
        try:
            for prog in PROGRAMS:
                if prog not in programs:
                    self.obj.set_autoload(prog, False)
            self.obj.set_rodata(config_struct(cfg))
            # the static proxy caches nothing: one set keeps the map valid
            self.obj.set_max_entries("axp_cache", 1 if cfg.backend == "static" else cfg.cache_sets)
            for name in PINNED if pin_dir else ():
                self.obj.set_pin_path(name, pin_dir / name)  # reused when pinned there, else pinned by load
            self.obj.load()
        except BaseException:
            self.obj.close()
            raise
        self.counters = self.obj.map("axp_counters", "uint32_t", "uint64_t")
        self.cache = self.obj.map("axp_cache", "uint32_t", "struct axp_cache_set")
        self.clock = self.obj.map("axp_clock", "uint32_t", "uint64_t")
        self.sfs = self.obj.map("axp_sfs", "uint32_t", "struct axp_sf")
        self.labels = self.obj.map("axp_labels", "uint32_t", "uint32_t")
        self.tx_sf = self.obj.map("axp_tx_sf", "uint32_t", "uint32_t")

    def cache_sets(self) -> list[CacheSet]:
        """Every set of the cache, each copied under its bpf_spin_lock (BPF_F_LOCK)."""
        return [decode_set(self.cache.lookup(i, bpf.BPF_F_LOCK)) for i in range(self.cache.max_entries)]

    def clear_cache(self) -> None:
        """Every way free (tests; a running proxy never needs it)."""
        zero = ffi.new("struct axp_cache_set *")
        for i in range(self.cache.max_entries):
            self.cache.update(i, zero, bpf.BPF_F_LOCK)

    def set_clock_skew(self, ns: int) -> None:
        """Move the programs' clock ns ahead of CLOCK_MONOTONIC (tests age the cache with it)."""
        self.clock.update(0, ns)

    def add_sf(self, index: int, sf: Any, tx_ifindex: int) -> None:
        """Serve an SF: its struct axp_sf, its top label, the interface its TX runs on."""
        self.sfs.update(index, sf)
        self.labels.update(sf.label, index)
        self.tx_sf.update(tx_ifindex, index)

    def prog_fd(self, name: str) -> int:
        return self.obj.prog_fd(name)

    def close(self) -> None:
        self.obj.close()


def layout(cfg: ProxyConfig) -> dict[str, Any]:
    """What a kept cache must match to be reused (keep.mismatch says how it differs)."""
    return {"backend": "kernel", "layout": lib.AXP_CACHE_LAYOUT, "set_bytes": ffi.sizeof("struct axp_cache_set"),
            "sets": cfg.cache_sets, "key": cfg.key, "counter_slots": lib.AXP_CNT_ROWS * lib.AXP_CNT_MAX}


def programs_of(cfg: ProxyConfig) -> tuple[str, ...]:
    """The programs a configuration attaches (a reload never changes topology or key)."""
    tx = "axp_tc_tx" if cfg.topology == "inline" else "axp_xdp_tx"
    return ("axp_xdp_rx", tx) + (("axp_tc_meta",) if cfg.key == "meta" else ())


# a link: (kind, ifindex); its program and hook by kind
LINKS = {"xdp_rx": "axp_xdp_rx", "tcx_meta": "axp_tc_meta", "tcx_tx": "axp_tc_tx", "xdp_tx": "axp_xdp_tx"}


@dataclass
class _Sf:
    """An SF as the data path sees it: its config, interfaces and struct axp_sf. drain_until:
    removed by a reload, its return path stays until then (time.monotonic())."""

    cfg: SfConfig
    ifs: dict[str, Iface]
    struct: Any
    drain_until: float | None = None


class KernelProxy:
    """Load, configure and attach the BPF proxy; undo all of it on stop()."""

    def __init__(self, cfg: ProxyConfig, obj_path: str | None = None, instance: str | None = None,
                 keep_cache: bool = False) -> None:
        self.cfg = cfg
        self.name = cfg.backend
        self.instance = instance or cfg.name or state.netns_id()  # what --keep-cache keeps is kept under it
        self.keep_cache = keep_cache
        self._obj_path = obj_path
        self._undo = ExitStack()
        self.obj: ProxyObject | None = None
        self.counter_map: bpf.Map | None = None
        self.cache_map: bpf.Map | None = None
        self.rows: list[str] = []  # counter rows (SF slots) by the name of the SF last given each
        self.kept = False  # the cache is pinned for the next proxy of this name
        self._sfs: dict[int, _Sf] = {}  # by slot: the SFs served and the removed ones draining
        self._links: dict[tuple[str, int], bpf.Link] = {}
        self._gro: dict[int, str | None] = {}  # net_in ifindex -> name when we turned its GRO off
        self._labels: dict[int, int] = {}  # what axp_labels holds
        self._tx: dict[int, int] = {}  # what axp_tx_sf holds

    # -- set-up -------------------------------------------------------------

    def _resolve(self, ipr: IPRoute, cfg: ProxyConfig | None = None) -> list[dict[str, Iface]]:
        cfg = cfg or self.cfg
        out = []
        for i, sf in enumerate(cfg.sfs):
            ifs = {"net_in": resolve(ipr, sf.net_in, f"sf[{i}].net_in"),
                   "net_out": resolve(ipr, sf.net_out, f"sf[{i}].net_out")}
            if cfg.topology == "attached":
                assert sf.to_sf and sf.from_sf
                ifs["to_sf"] = resolve(ipr, sf.to_sf, f"sf[{i}].to_sf")
                ifs["from_sf"] = resolve(ipr, sf.from_sf, f"sf[{i}].from_sf")
            out.append(ifs)
        return out

    def _sf_struct(self, ipr: IPRoute, i: int, sf: SfConfig, ifs: dict[str, Iface]) -> Any:
        s = ffi.new("struct axp_sf *")
        s.label = sf.label
        s.net_out_ifindex = ifs["net_out"].index
        s.net_out_mac = mac_bytes(ifs["net_out"].mac)
        if self.cfg.topology == "attached":
            s.to_sf_ifindex = ifs["to_sf"].index
            s.from_sf_ifindex = ifs["from_sf"].index
            s.to_sf_mac = mac_bytes(ifs["to_sf"].mac)
            sf_mac = sf.sf_mac or learn_mac(ipr, ifs["to_sf"])
            if not sf_mac:
                raise ConfigError(f"sf[{i}].sf_mac: cannot learn the SF's MAC behind {sf.to_sf} "
                                  "(no single neighbour there); set sf_mac")
            hop = sf.next_hop_mac or learn_mac(ipr, ifs["net_out"])
            if not hop:
                raise ConfigError(f"sf[{i}].next_hop_mac: cannot learn the next hop's MAC behind "
                                  f"{sf.net_out} (no single neighbour there); set next_hop_mac")
            s.sf_mac = mac_bytes(sf_mac)
            s.next_hop_mac = mac_bytes(hop)
        stack = make_stack(list(sf.static_stack)) if sf.static_stack else []
        for j, e in enumerate(stack):
            s.static_stack[j] = int.from_bytes(e.to_bytes(), "little")  # wire order in a __be32
        s.static_depth = len(stack)
        return s

    def _describe(self, cfg: ProxyConfig) -> list[_Sf]:
        """Every SF of cfg with its interfaces and struct; a ConfigError names the field."""
        with IPRoute() as ipr:
            ifaces = self._resolve(ipr, cfg)
            return [_Sf(sf, ifaces[i], self._sf_struct(ipr, i, sf, ifaces[i])) for i, sf in enumerate(cfg.sfs)]

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        cfg = self.cfg
        sfs = self._describe(cfg)
        pins, rows = self._kept_cache()
        obj = ProxyObject(cfg, self._obj_path, pin_dir=pins, programs=programs_of(cfg))
        self._undo.callback(obj.close)
        self.obj = obj
        self.counter_map = obj.counters
        self.cache_map = obj.cache
        if pins and not self.keep_cache:
            keep.forget(self.instance)  # taken over: the maps live on in this process, nothing after it
        self._undo.callback(self._detach_all)
        slots = assign_slots(cfg.sfs, rows)
        self._sync({slots[sf.cfg.name]: sf for sf in sfs})
        self.rows = rows_after(rows, slots)
        self._write_record()

    def _kept_cache(self) -> tuple[Path | None, list[str]]:
        """What to do with a cache kept by an earlier proxy of this name: the directory the maps
        are pinned in (reused from there, or pinned there now) or None, and the kept SF rows."""
        name, cfg = self.instance, self.cfg
        rec, pins = keep.read(name), keep.pin_dir(name)
        usable = cfg.backend == "kernel" and cfg.key == "hash"
        reuse, rows = False, []
        if rec is not None or pins.is_dir():
            problem = self._kept_problem(rec, pins) if usable else f"nothing to keep with {self._why_not()}"
            if problem:
                keep.forget(name)
                log.info("cache: what %s kept does not fit (%s): starting with an empty cache", name, problem,
                         extra=fields(event="cache_fresh", name=name, reason=problem))
            else:
                reuse, rows = True, [str(r) for r in rec.get("rows", [])] if rec else []
                log.info("cache: reusing the cache %s kept (%s)", name, pins,
                         extra=fields(event="cache_reused", name=name, pins=str(pins)))
        if not self.keep_cache:
            return (pins if reuse else None), rows
        if not usable:
            log.warning("--keep-cache: nothing to keep with %s", self._why_not(),
                        extra=fields(event="cache_not_kept", name=name))
            return None, rows
        if not keep.is_bpffs(keep.PIN_ROOT):
            log.warning("--keep-cache: no bpffs mounted at %s, so the cache is not kept; mount one in the "
                        "host's mount namespace first: afxdp-proxy pinfs", keep.PIN_ROOT,
                        extra=fields(event="cache_not_kept", name=name))
            return None, rows
        pins.mkdir(mode=0o700, exist_ok=True)
        self.kept = True
        return pins, rows

    def _why_not(self) -> str:
        return "the static backend (no cache)" if self.cfg.backend == "static" else \
            "key meta (its sequence numbers start again)"

    def _kept_problem(self, rec: dict[str, Any] | None, pins: Path) -> str | None:
        """Why a kept cache cannot be reused, or None."""
        if rec is None:
            return "pins without a record"
        diff = keep.mismatch(rec.get("layout", {}), layout(self.cfg))
        if diff:
            return ", ".join(diff)
        for name, vtype, entries in (("axp_cache", "struct axp_cache_set", self.cfg.cache_sets),
                                     ("axp_counters", "uint64_t", lib.AXP_CNT_ROWS * lib.AXP_CNT_MAX)):
            try:
                fd = bpf.obj_get(pins / name)
            except OSError as e:
                return f"{name}: {e}"
            try:
                m = bpf.Map(fd, "uint32_t", vtype)
                if m.max_entries != entries:
                    return f"{name}: {m.max_entries} entries, not {entries}"
            except ValueError as e:  # another value size
                return f"{name}: {e}"
            finally:
                bpf.lib.axp_close_fd(fd)
        return None

    def _write_record(self) -> None:
        if self.kept:
            keep.write(self.instance, {"backend": "kernel", "layout": layout(self.cfg), "rows": self.rows,
                                       "pins": str(keep.pin_dir(self.instance)), "pid": os.getpid(),
                                       "written": time.time()})

    def _wanted_links(self, sfs: dict[int, _Sf]) -> dict[tuple[str, int], Iface]:
        """The links the SFs need: RX on net_in (and the meta shim), TX on from_sf (attached) or
        net_out (inline); a draining SF needs its TX side only."""
        want: dict[tuple[str, int], Iface] = {}
        for sf in sfs.values():
            if sf.drain_until is None:
                want[("xdp_rx", sf.ifs["net_in"].index)] = sf.ifs["net_in"]
                if self.cfg.key == "meta":
                    want[("tcx_meta", sf.ifs["net_in"].index)] = sf.ifs["net_in"]
            tx = self._tx_iface(sf)
            want[("tcx_tx" if self.cfg.topology == "inline" else "xdp_tx", tx.index)] = tx
        return want

    def _tx_iface(self, sf: _Sf) -> Iface:
        return sf.ifs["from_sf" if self.cfg.topology == "attached" else "net_out"]

    def _link(self, kind: str, iface: Iface) -> bpf.Link:
        assert self.obj is not None
        fd = self.obj.prog_fd(LINKS[kind])
        if kind.startswith("xdp"):
            return bpf.Link.xdp(fd, iface.index)
        return bpf.Link.tcx(fd, iface.index, egress=kind == "tcx_tx")

    def _sync(self, sfs: dict[int, _Sf]) -> None:
        """Make the maps and links serve exactly sfs (by slot). New links are attached first (all
        or none: a failure leaves everything as it was), then the SF and TX maps take the new
        SFs before their labels do, so a packet popped for an SF always finds its return path;
        what is no longer needed goes last."""
        obj = self.obj
        assert obj is not None
        want = self._wanted_links(sfs)
        added: list[tuple[str, int]] = []
        try:
            for key, iface in want.items():
                if key not in self._links:
                    self._links[key] = self._link(key[0], iface)
                    added.append(key)
        except BaseException:
            for key in added:
                self._links.pop(key).close()
            raise
        for slot, sf in sfs.items():
            old = self._sfs.get(slot)
            if old is None or bytes(ffi.buffer(old.struct)) != bytes(ffi.buffer(sf.struct)):
                obj.sfs.update(slot, sf.struct)
        # an interface two SFs return by belongs to the one served, not the one draining
        served_last = sorted(sfs.items(), key=lambda item: item[1].drain_until is None)
        tx = {self._tx_iface(sf).index: slot for slot, sf in served_last}
        labels = {sf.cfg.label: slot for slot, sf in sfs.items() if sf.drain_until is None}
        for ifindex, slot in tx.items():
            if self._tx.get(ifindex) != slot:
                obj.tx_sf.update(ifindex, slot)
        for label, slot in labels.items():
            if self._labels.get(label) != slot:
                obj.labels.update(label, slot)
        for label in self._labels.keys() - labels.keys():
            obj.labels.delete(label)
        for ifindex in self._tx.keys() - tx.keys():
            obj.tx_sf.delete(ifindex)
        for key in self._links.keys() - want.keys():
            self._links.pop(key).close()
        zero = ffi.new("struct axp_sf *")
        for slot in self._sfs.keys() - sfs.keys():
            obj.sfs.update(slot, zero)
        self._sfs, self._labels, self._tx = dict(sfs), labels, tx
        self._sync_gro()

    def _sync_gro(self) -> None:
        """GRO off on every interface XDP RX runs on (after attaching: veth may turn GRO on for
        XDP's sake), back on where we turned it off and RX no longer runs."""
        rx = {idx: self._sfs_iface(idx) for kind, idx in self._links if kind == "xdp_rx"}
        for idx, name in rx.items():
            if idx not in self._gro:
                self._gro[idx] = name if set_feature(name, "rx-gro", False) else None
        for idx in self._gro.keys() - rx.keys():
            name = self._gro.pop(idx)
            if name:
                set_feature(name, "rx-gro", True)

    def _sfs_iface(self, ifindex: int) -> str:
        return next(sf.ifs["net_in"].name for sf in self._sfs.values() if sf.ifs["net_in"].index == ifindex)

    def _detach_all(self) -> None:
        for key in list(self._links):
            self._links.pop(key).close()
        for name in [n for n in self._gro.values() if n]:
            set_feature(name, "rx-gro", True)
        self._gro.clear()

    def stop(self) -> None:
        """Detach and unload everything start() did; safe to call twice. A kept cache stays pinned."""
        self._undo.close()
        self.obj = None
        self.counter_map = None
        self.cache_map = None
        self._sfs, self._labels, self._tx = {}, {}, {}

    # -- reload ---------------------------------------------------------------

    def reload(self, new: ProxyConfig) -> list[SfChange]:
        """Serve new's SFs (see the module's docstring). Raises ConfigError (RestartNeeded for
        what cannot change live) before changing anything; returns what changed."""
        check_live(self.cfg, new)
        sfs = self._describe(new)
        draining = {slot for slot, sf in self._sfs.items() if sf.drain_until is not None}
        slots = assign_slots(new.sfs, self.rows, busy=draining)
        served = {sf.cfg.name: slot for slot, sf in self._sfs.items() if sf.drain_until is None}
        done = changes(self.cfg.sfs, new.sfs, served, slots)
        until = time.monotonic() + new.max_dwell_ms / 1000
        target = {slot: sf for slot, sf in self._sfs.items() if sf.drain_until is not None}
        for c in done:
            if c.kind == "removed":
                old = self._sfs[c.slot]
                target[c.slot] = _Sf(old.cfg, old.ifs, old.struct, until)
        target.update({slots[sf.cfg.name]: sf for sf in sfs})  # an SF back by name stops draining
        self._sync(target)
        self.cfg = new
        self.rows = rows_after(self.rows, slots)
        self._write_record()
        return done

    def tick(self) -> list[str]:
        """Detach what removed SFs no longer need once they have drained; returns their names."""
        now = time.monotonic()
        done = [slot for slot, sf in self._sfs.items() if sf.drain_until is not None and sf.drain_until <= now]
        if not done:
            return []
        names = [self._sfs[slot].cfg.name for slot in done]
        self._sync({slot: sf for slot, sf in self._sfs.items() if slot not in done})
        return names

    # -- observation ----------------------------------------------------------

    def used_rows(self) -> list[int]:
        return [i for i, n in enumerate(self.rows) if n]

    def snapshot(self) -> counters.Snapshot:
        """Counter rows of the SFs (every slot used in this proxy's life) and of frames of no SF
        (empty once stopped)."""
        if not self.counter_map:
            return counters.Snapshot()
        return counters.read_map(self.counter_map, [*self.used_rows(), counters.NONE_ROW])

    def counters(self) -> dict[str, int]:
        """Counters summed over SFs and CPUs."""
        return self.snapshot().total() if self.counter_map else {}

    def in_flight(self) -> int:
        return counters.in_flight_of(self.counters())

    def links(self) -> dict[tuple[str, int], int]:
        """{(kind, ifindex): link fd} of what is attached now (tests: reload leaves the others be)."""
        return {k: link.fd for k, link in self._links.items()}

    def state(self) -> dict[str, object]:
        assert self.obj and self.counter_map and self.cache_map
        progs = [self.obj.obj.prog_id(p) for p in self.obj.programs]  # all loaded, attached or not
        return {"maps": {"counters": self.counter_map.id, "cache": self.cache_map.id}, "progs": progs,
                "sfs": self.rows, "kept": str(keep.pin_dir(self.instance)) if self.kept else None}
