"""The in-kernel proxy: bpf/proxy.bpf.c loaded by libbpf and attached with BPF links.

Inline:   XDP axp_xdp_rx on net_in (+ TC ingress axp_tc_meta in meta mode),
          TC egress axp_tc_tx on net_out; the namespace's own kernel is the SF.
Attached: XDP axp_xdp_rx on net_in redirects to to_sf, XDP axp_xdp_tx on
          from_sf pushes and redirects to net_out.

Links detach when their fd closes, so even a killed proxy leaves nothing
attached. GRO is turned off on net_in while the proxy runs: GRO would merge
packets whose stacks TX must restore one by one (TX counts and drops merged
skbs as tx_gso_drop should one get through).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import Any

from pyroute2 import IPRoute

from afxdp_proxy import bpf
from afxdp_proxy._native import ffi, lib
from afxdp_proxy.cache import CacheSet, decode_set, in_flight_of
from afxdp_proxy.config import ConfigError, ProxyConfig, SfConfig
from afxdp_proxy.iface import Iface, learn_mac, mac_bytes, resolve, set_feature
from afxdp_proxy.mpls import make_stack

log = logging.getLogger(__name__)

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

    def __init__(self, cfg: ProxyConfig, obj_path: str | None = None) -> None:
        self.obj = bpf.BpfObject(obj_path or bpf.object_path("proxy"))
        try:
            self.obj.set_rodata(config_struct(cfg))
            # the static proxy caches nothing: one set keeps the map valid
            self.obj.set_max_entries("axp_cache", 1 if cfg.backend == "static" else cfg.cache_sets)
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
        """Every set of the cache (its lock word is the programs' own, which user space does
        not take: exact while no packet is passing, as in tests and dumps of an idle proxy)."""
        return [decode_set(self.cache.lookup(i)) for i in range(self.cache.max_entries)]

    def clear_cache(self) -> None:
        """Every way free and every lock open (tests, between packets; a running proxy never needs it)."""
        zero = ffi.new("struct axp_cache_set *")
        for i in range(self.cache.max_entries):
            self.cache.update(i, zero)

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


class KernelProxy:
    """Load, configure and attach the BPF proxy; undo all of it on stop()."""

    def __init__(self, cfg: ProxyConfig, obj_path: str | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.backend
        self._obj_path = obj_path
        self._undo = ExitStack()
        self.obj: ProxyObject | None = None
        self.counter_map: bpf.Map | None = None
        self.cache_map: bpf.Map | None = None

    # -- set-up -------------------------------------------------------------

    def _resolve(self, ipr: IPRoute) -> list[dict[str, Iface]]:
        out = []
        for i, sf in enumerate(self.cfg.sfs):
            ifs = {"net_in": resolve(ipr, sf.net_in, f"sf[{i}].net_in"),
                   "net_out": resolve(ipr, sf.net_out, f"sf[{i}].net_out")}
            if self.cfg.topology == "attached":
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

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        cfg = self.cfg
        with IPRoute() as ipr:
            ifaces = self._resolve(ipr)
            sf_structs = [self._sf_struct(ipr, i, sf, ifaces[i]) for i, sf in enumerate(cfg.sfs)]

        obj = ProxyObject(cfg, self._obj_path)
        self._undo.callback(obj.close)
        self.obj = obj
        self.counter_map = obj.counters
        self.cache_map = obj.cache
        for i, s in enumerate(sf_structs):
            obj.add_sf(i, s, ifaces[i]["from_sf" if cfg.topology == "attached" else "net_out"].index)

        rx_fd = obj.prog_fd("axp_xdp_rx")
        net_ins = {ifs["net_in"].index: ifs["net_in"] for ifs in ifaces}
        for iface in net_ins.values():
            self._attach(bpf.Link.xdp(rx_fd, iface.index))
            if cfg.key == "meta":
                self._attach(bpf.Link.tcx(obj.prog_fd("axp_tc_meta"), iface.index, egress=False))
        if cfg.topology == "inline":
            outs = {ifs["net_out"].index: ifs["net_out"] for ifs in ifaces}
            for iface in outs.values():
                self._attach(bpf.Link.tcx(obj.prog_fd("axp_tc_tx"), iface.index, egress=True))
        else:
            tx_fd = obj.prog_fd("axp_xdp_tx")
            for ifs in ifaces:
                self._attach(bpf.Link.xdp(tx_fd, ifs["from_sf"].index))
        # after attaching: veth may turn GRO on for XDP's sake
        for iface in net_ins.values():
            before = set_feature(iface.name, "rx-gro", False)
            if before:
                self._undo.callback(set_feature, iface.name, "rx-gro", True)

    def _attach(self, link: bpf.Link) -> None:
        self._undo.callback(link.close)

    def stop(self) -> None:
        """Detach and unload everything start() did; safe to call twice."""
        self._undo.close()
        self.obj = None
        self.counter_map = None
        self.cache_map = None

    # -- observation ----------------------------------------------------------

    def counters(self) -> dict[str, int]:
        return read_counters(self.counter_map) if self.counter_map else {}

    def in_flight(self) -> int:
        return in_flight_of(self.counters())

    def state(self) -> dict[str, object]:
        assert self.counter_map and self.cache_map
        return {"maps": {"counters": self.counter_map.id, "cache": self.cache_map.id}}


def read_counters(counter_map: bpf.Map) -> dict[str, int]:
    """Named counters summed over CPUs."""
    names = bpf.counter_names()
    out = {}
    for slot, name in enumerate(names):
        per_cpu = counter_map.lookup(slot) or []
        out[name] = int(sum(per_cpu))
    return out
