"""The in-kernel proxy: bpf/proxy.bpf.c loaded by libbpf and attached with BPF links.

Inline:   XDP axp_xdp_rx on net_in (+ TC ingress axp_tc_meta in meta mode),
          TC egress axp_tc_tx on net_out; the namespace's own kernel is the SF.
Attached: XDP axp_xdp_rx on net_in redirects to to_sf, XDP axp_xdp_tx on
          from_sf pushes and redirects to net_out, and passes to the host's
          kernel what the SF sends the host (its addresses kept current by
          afxdp_proxy.hostaddrs). bpf/redirect.bpf.c on xdp:xdp_redirect_err
          counts the redirects the kernel refused (rx_redirect_err,
          tx_redirect_err).

Programs go by interface role, not by SF: a chain's reverse direction is an SF
of its own with the interfaces swapped, so an interface may be net_in of one SF
and net_out of another (inline: XDP RX and TC egress TX on it), or to_sf of one
and from_sf of another (attached: a redirect target with XDP TX on it). An
interface with both XDP roles (net_in and an attached from_sf) gets
axp_xdp_rx_tx, which sends bare IP down the TX path and all else down RX's.

Links detach when their fd closes, so even a killed proxy leaves nothing
attached. GRO is turned off on net_in while the proxy runs: GRO would merge
packets whose stacks TX must restore one by one (TX counts and drops merged
skbs as tx_gso_drop should one get through). So is VLAN tag stripping: a tag
stripped before XDP would be lost, and the SF chosen as if the frame were
untagged. Both are put back on stop; each is on record (state.InterfaceChanges)
before it changes, so that what a killed proxy turned off is put back by the
next proxy's start or `stats` (state.sweep_dead).

Reload (SIGHUP, :meth:`KernelProxy.reload`): the SF, label and TX maps are
updated in place, and links are attached or detached only for interfaces that
appear or disappear (an interface whose XDP roles change keeps its link, with
the program of its new roles swapped in); the cache is not touched, so packets
in flight keep their entries. A removed SF stops taking packets at once (its
label leaves axp_labels) while its return path (from_sf, or net_out inline)
stays attached for max_dwell_ms, so what is inside it comes back with its
stack. axp_xdp_rx_tx is loaded at start only when some interface needs it: a
reload that gives an interface both XDP roles without it takes a restart.

Restart (``run --keep-cache``, see afxdp_proxy/keep.py): the cache and counter
maps are pinned under /run/afxdp-proxy/bpf/<name>/ and reused by the next
proxy of the same name when their layout matches.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from afxdp_proxy import bpf, counters, hostaddrs, keep, state, trace
from afxdp_proxy._native import ffi, lib
from afxdp_proxy.cache import CacheSet, decode_set
from afxdp_proxy.config import ConfigError, ProxyConfig, SfConfig, meta_mark_layout
from afxdp_proxy.iface import VLAN_STRIPPING, Iface, get_feature, learn_mac, mac_bytes, resolve
from afxdp_proxy.log import fields
from afxdp_proxy.mpls import make_stack
from afxdp_proxy.reload import RestartNeeded, SfChange, assign_slots, changes, check_live, rows_after

log = logging.getLogger(__name__)

PROGRAMS = ("axp_xdp_rx", "axp_tc_meta", "axp_tc_tx", "axp_xdp_tx", "axp_xdp_rx_tx")  # what proxy.bpf.o holds
# what --keep-cache pins: the SF, label and TX maps are rebuilt from the configuration, and the
# counters go with the cache so that in_flight stays exact across the restart
PINNED = ("axp_cache", "axp_counters")

_KEY_MODE = {"hash": lib.AXP_KEY_MODE_HASH, "meta": lib.AXP_KEY_MODE_META}
_TOPOLOGY = {"inline": lib.AXP_TOPO_INLINE, "attached": lib.AXP_TOPO_ATTACHED}
_TTL_MODEL = {"uniform": lib.AXP_TTL_UNIFORM, "pipe": lib.AXP_TTL_PIPE}
_TTL_ACTION = {"drop": lib.AXP_TTL_DROP, "pass": lib.AXP_TTL_PASS}
_MISS = {"pass": lib.AXP_MISS_PASS, "drop": lib.AXP_MISS_DROP, "last": lib.AXP_MISS_LAST}
MIN_META_SEQ_BITS = 10  # meta keys a CPU hands out before one comes round again: 2^10 at least


def label_keys(vlan_in: int, label: int) -> tuple[int, int]:
    """The keys an SF takes in the label maps (axp_labels, axp_xsk_labels): its (VLAN, label), and
    (VLAN, 0), which tells RX that some SF is served on that VLAN (axp_sf_key, proxy.shared.h)."""
    shift = lib.AXP_VLAN_KEY_SHIFT
    return vlan_in << shift | label, vlan_in << shift


def meta_layout(cfg: ProxyConfig) -> tuple[int, int]:
    """(shift, sequence bits) of meta keys in cfg.meta_mark_mask on this host's CPUs."""
    shift, seq_bits = meta_mark_layout(cfg.meta_mark_mask, bpf.NCPUS)
    if cfg.key == "meta" and seq_bits < MIN_META_SEQ_BITS:
        raise ConfigError(f"proxy.meta_mark_mask: {cfg.meta_mark_mask:#010x} leaves {max(seq_bits, 0)} bits for "
                          f"the sequence numbers next to the {bpf.NCPUS} CPUs' numbers; give it "
                          f"{cfg.meta_mark_mask.bit_count() + MIN_META_SEQ_BITS - seq_bits} bits or more")
    return shift, seq_bits


# The BPF programs age runs by jiffies (axp_cache_now): a run's age is off by up to a tick, and
# more while the tick itself lags behind (1.6 ticks measured here under load, docs/benchmarks.md);
# max_dwell_ns gets AGEING_SLACK_TICKS of slack, so a run is presumed lost after max_dwell_ms,
# not before. CLOCK_MONOTONIC_COARSE moves once a jiffy: its resolution is the tick.
_CLOCK_MONOTONIC_COARSE = 6  # linux/time.h; not in Python's time module
TICK_NS = int(time.clock_getres(_CLOCK_MONOTONIC_COARSE) * 1e9)
AGEING_SLACK_TICKS = 3


def config_struct(cfg: ProxyConfig) -> Any:
    """The struct axp_config for a ProxyConfig: BPF .rodata, and the AF_XDP engine's. The BPF
    programs' max_dwell_ns has AGEING_SLACK_TICKS of slack for their jiffies clock; the AF_XDP
    engine's cache reads CLOCK_MONOTONIC and has none."""
    shift, seq_bits = meta_layout(cfg)
    return ffi.new("struct axp_config *", {
        "key_mode": _KEY_MODE[cfg.key],
        "topology": _TOPOLOGY[cfg.topology],
        "on_miss": _MISS[cfg.on_miss],
        "static_mode": int(cfg.backend == "static"),
        "cache_sets": cfg.cache_sets,
        "max_per_key": cfg.max_per_key,
        "max_dwell_ns": cfg.max_dwell_ms * 1_000_000 + (AGEING_SLACK_TICKS * TICK_NS if cfg.backend != "afxdp" else 0),
        "ttl_model": _TTL_MODEL[cfg.ttl_model],
        "on_ttl_expired": _TTL_ACTION[cfg.on_ttl_expired],
        "meta_mark_mask": cfg.meta_mark_mask,
        "meta_shift": shift,
        "meta_seq_bits": max(seq_bits, 0),
        "dwell_sample_mask": cfg.dwell_sample - 1,
        "tick_ns": TICK_NS,
    })


# what an interface with both XDP roles needs, and nothing else: the verifier takes a while
# over it (both paths), so it is loaded only on request
BOTH_ROLES = "axp_xdp_rx_tx"
ONE_ROLE_PROGRAMS = tuple(p for p in PROGRAMS if p != BOTH_ROLES)


class ProxyObject:
    """build/proxy.bpf.o loaded for one configuration, with its maps at hand; of its
    programs only `programs` (by default all but axp_xdp_rx_tx). pin_dir: where the maps
    --keep-cache keeps are pinned (reused when pinned there already)."""

    def __init__(self, cfg: ProxyConfig, obj_path: str | None = None,
                 programs: tuple[str, ...] = ONE_ROLE_PROGRAMS, pin_dir: Path | None = None) -> None:
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
        self.host_addrs = self.obj.map("axp_host_addrs", "struct axp_host_addr", "uint8_t")
        # struct axp_last_stack (proxy.bpf.h, BPF only): its lock, depth and labels; zeroed only
        self.last = self.obj.map("axp_last", "uint32_t", f"uint8_t[{4 * (2 + lib.AXP_MAX_LABELS)}]")
        # `afxdp-proxy trace`: what to sample (the section of the global axp_trace), and the events
        self.trace_ctl = self.obj.map(".data.trace", "uint32_t", "struct axp_trace_ctl")
        self.trace = trace.Control(ctl_map=self.trace_ctl)
        self.trace_events_id = self.obj.map_id("axp_trace_events")

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
        """Serve an SF: its struct axp_sf, its (VLAN, top label), the interface its TX runs on."""
        self.sfs.update(index, sf)
        for key in label_keys(sf.vlan_in, sf.label):
            self.labels.update(key, index)
        self.tx_sf.update(tx_ifindex, index)

    def prog_fd(self, name: str) -> int:
        return self.obj.prog_fd(name)

    def close(self) -> None:
        self.obj.close()


def warn_vlan_stripping(name: str, left: list[str]) -> None:
    """A device that strips VLAN tags and cannot stop (check refuses it where an SF names a VLAN)."""
    if left:
        log.warning("%s strips VLAN tags (%s fixed on): tagged frames reach XDP without their tags", name,
                    ", ".join(left))


def features_off(changes: state.InterfaceChanges, iface: Iface, features: tuple[str, ...],
                 undo: ExitStack) -> list[str]:
    """Turn features off on iface, each on record in `changes` first (a killed proxy's are put
    back by the next one) and put back by `undo`. Returns those that stay on (fixed)."""
    left = []
    for feature in features:
        if changes.turn_off(iface.name, iface.index, feature):
            undo.callback(changes.put_back, iface.name, iface.index, feature)
            if get_feature(iface.name, feature):
                left.append(feature)
    return left


class RedirectErrors:
    """bpf/redirect.bpf.c on the tracepoint xdp:xdp_redirect_err: the redirects of the proxy's
    programs that the kernel refused, counted in the proxy's own counters map. slots:
    {(program ID, interface it ran on, target ifindex): (row, slot)}; (ID, 0, 0) is a program's
    fallback. set_slots() changes them (a reload)."""

    def __init__(self, counters_fd: int, slots: dict[tuple[int, int, int], tuple[int, int]],
                 obj_path: str | None = None) -> None:
        self.obj = bpf.BpfObject(obj_path or bpf.object_path("redirect"))
        self.link: bpf.Link | None = None
        self.slots: dict[tuple[int, int, int], tuple[int, int]] = {}
        try:
            self.obj.reuse_map("axp_counters", counters_fd)
            self.obj.load()
            self._map = self.obj.map("axp_redirect_slots", "struct axp_redirect_key", "struct axp_redirect_slot")
            self.set_slots(slots)
            self.link = bpf.Link.raw_tp(self.obj.prog_fd("axp_redirect_err"), "xdp:xdp_redirect_err")
        except BaseException:
            self.close()
            raise
        self.prog_id = self.obj.prog_id("axp_redirect_err")

    def set_slots(self, slots: dict[tuple[int, int, int], tuple[int, int]]) -> None:
        """Count in slots from now on: what changed is written, what is gone deleted."""
        for key, val in slots.items():
            if self.slots.get(key) != val:
                self._map.update(ffi.new("struct axp_redirect_key *", list(key)),
                                 ffi.new("struct axp_redirect_slot *", list(val)))
        for key in self.slots.keys() - slots.keys():
            self._map.delete(ffi.new("struct axp_redirect_key *", list(key)))
        self.slots = dict(slots)

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        self.obj.close()


def layout(cfg: ProxyConfig) -> dict[str, Any]:
    """What a kept cache must match to be reused (keep.mismatch says how it differs)."""
    return {"backend": "kernel", "layout": lib.AXP_CACHE_LAYOUT, "set_bytes": ffi.sizeof("struct axp_cache_set"),
            "sets": cfg.cache_sets, "key": cfg.key, "counter_slots": lib.AXP_CNT_ROWS * lib.AXP_CNT_MAX}


@dataclass
class _Sf:
    """An SF as the data path sees it: its config, interfaces and struct axp_sf. drain_until:
    removed by a reload, its return path stays until then (time.monotonic())."""

    cfg: SfConfig
    ifs: dict[str, Iface]
    struct: Any
    drain_until: float | None = None


# a link: (kind, ifindex); its program by kind. An interface has one XDP link, its kind by its
# XDP roles: RX (the net_in of an SF served), TX (an attached from_sf), or both.
LINKS = {"xdp_rx": "axp_xdp_rx", "xdp_tx": "axp_xdp_tx", "xdp_rx_tx": BOTH_ROLES,
         "tcx_meta": "axp_tc_meta", "tcx_tx": "axp_tc_tx"}
XDP_KIND = {(True, False): "xdp_rx", (False, True): "xdp_tx", (True, True): "xdp_rx_tx"}
RX_KINDS = ("xdp_rx", "xdp_rx_tx")  # where GRO and VLAN tag stripping are kept off


def xdp_roles(sfs: Iterable[_Sf], topology: str) -> dict[int, tuple[Iface, bool, bool]]:
    """{ifindex: (interface, RX, TX)} of every interface with an XDP role: RX on the net_in of
    an SF served, TX on the from_sf of any (attached; inline has none), draining ones too."""
    roles: dict[int, tuple[Iface, bool, bool]] = {}
    for sf in sfs:
        keys = ([] if sf.drain_until is not None else ["net_in"]) + (["from_sf"] if topology == "attached" else [])
        for key in keys:
            iface = sf.ifs[key]
            _, rx, tx = roles.get(iface.index, (iface, False, False))
            roles[iface.index] = (iface, rx or key == "net_in", tx or key == "from_sf")
    return roles


def programs_of(cfg: ProxyConfig, sfs: Iterable[_Sf]) -> tuple[str, ...]:
    """The programs a configuration attaches: RX and its topology's TX (a reload never changes
    topology or key, so they serve any reload), the meta shim, and axp_xdp_rx_tx when one of
    the SFs' interfaces has both XDP roles."""
    tx = "axp_tc_tx" if cfg.topology == "inline" else "axp_xdp_tx"
    both = any(rx and tx_ for _, rx, tx_ in xdp_roles(sfs, cfg.topology).values())
    return ("axp_xdp_rx", tx) + (("axp_tc_meta",) if cfg.key == "meta" else ()) + ((BOTH_ROLES,) if both else ())


def plan_reload(current: dict[int, _Sf], rows: list[str], old: ProxyConfig, new: ProxyConfig,
                described: list[_Sf]) -> tuple[dict[int, _Sf], dict[str, int], list[SfChange]]:
    """What a reload serves, by slot: new's SFs (described) in their slots, the SFs it removes
    draining for max_dwell_ms, those draining already; the slots by name; what changed. Both
    backends' reload."""
    draining = {slot for slot, sf in current.items() if sf.drain_until is not None}
    slots = assign_slots(new.sfs, rows, busy=draining)
    served = {sf.cfg.name: slot for slot, sf in current.items() if sf.drain_until is None}
    done = changes(old.sfs, new.sfs, served, slots)
    until = time.monotonic() + new.max_dwell_ms / 1000
    target = {slot: sf for slot, sf in current.items() if sf.drain_until is not None}
    for c in done:
        if c.kind == "removed":
            gone = current[c.slot]
            target[c.slot] = _Sf(gone.cfg, gone.ifs, gone.struct, until)
    target.update({slots[sf.cfg.name]: sf for sf in described})  # an SF back by name stops draining
    return target, slots, done


def retire_drained(current: dict[int, _Sf]) -> tuple[dict[int, _Sf], list[str]]:
    """Removed SFs whose max_dwell_ms is over, taken out: (the SFs that stay, by slot; the names of
    those that went, none when nothing has drained)."""
    now = time.monotonic()
    gone = [slot for slot, sf in current.items() if sf.drain_until is not None and sf.drain_until <= now]
    return {slot: sf for slot, sf in current.items() if slot not in gone}, [current[s].cfg.name for s in gone]


class KernelProxy:
    """Load, configure and attach the BPF proxy; undo all of it on stop()."""

    def __init__(self, cfg: ProxyConfig, obj_path: str | None = None, instance: str | None = None,
                 keep_cache: bool = False) -> None:
        self.cfg = cfg
        self.name = cfg.backend
        self.instance = instance or cfg.name or state.default_instance()  # what --keep-cache keeps is kept under it
        self.keep_cache = keep_cache
        self._obj_path = obj_path
        self._undo = ExitStack()
        self.obj: ProxyObject | None = None
        self.counter_map: bpf.Map | None = None
        self.cache_map: bpf.Map | None = None
        self.redirects: RedirectErrors | None = None
        self.rows: list[str] = []  # counter rows (SF slots) by the name of the SF last given each
        self.kept = False  # the cache is pinned for the next proxy of this name
        self._sfs: dict[int, _Sf] = {}  # by slot: the SFs served and the removed ones draining
        self._links: dict[tuple[str, int], bpf.Link] = {}
        self._rx_undo: dict[int, ExitStack] = {}  # XDP RX ifindex -> how to put GRO and VLAN stripping back
        self._changes = state.InterfaceChanges(self.instance)  # the same, on record for after a SIGKILL
        self._labels: dict[int, int] = {}  # what axp_labels holds
        self._tx: dict[int, int] = {}  # what axp_tx_sf holds

    # -- set-up -------------------------------------------------------------

    def _resolve(self, ipr: IPRoute, cfg: ProxyConfig | None = None) -> list[dict[str, Iface]]:
        cfg = cfg or self.cfg
        out = []
        for i, sf in enumerate(cfg.sfs):
            ifs = {"net_in": resolve(ipr, sf.net_in, sf.field("net_in", i)),
                   "net_out": resolve(ipr, sf.net_out, sf.field("net_out", i))}
            if cfg.topology == "attached":
                assert sf.to_sf and sf.from_sf
                ifs["to_sf"] = resolve(ipr, sf.to_sf, sf.field("to_sf", i))
                ifs["from_sf"] = resolve(ipr, sf.from_sf, sf.field("from_sf", i))
            out.append(ifs)
        return out

    def _sf_struct(self, ipr: IPRoute, i: int, sf: SfConfig, ifs: dict[str, Iface]) -> Any:
        s = ffi.new("struct axp_sf *")
        s.label = sf.label
        s.vlan_in, s.vlan_out = sf.vlan_in, sf.vlan_out
        s.net_out_ifindex = ifs["net_out"].index
        s.net_out_mac = mac_bytes(ifs["net_out"].mac)
        if self.cfg.topology == "attached":
            s.to_sf_ifindex = ifs["to_sf"].index
            s.from_sf_ifindex = ifs["from_sf"].index
            s.to_sf_mac = mac_bytes(ifs["to_sf"].mac)
            sf_mac = sf.sf_mac or learn_mac(ipr, ifs["to_sf"])
            if not sf_mac:
                raise ConfigError(f"{sf.field('sf_mac', i)}: cannot learn the SF's MAC behind {sf.to_sf} "
                                  "(no single neighbour there); set sf_mac")
            hop = sf.next_hop_mac or learn_mac(ipr, ifs["net_out"])
            if not hop:
                raise ConfigError(f"{sf.field('next_hop_mac', i)}: cannot learn the next hop's MAC behind "
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
        state.sweep_dead()  # what a killed proxy left off goes back on before this one looks at it
        sfs = self._describe(cfg)
        pins, rows = self._kept_cache()
        obj = ProxyObject(cfg, self._obj_path, programs=programs_of(cfg, sfs), pin_dir=pins)
        self._undo.callback(obj.close)
        self.obj = obj
        self.counter_map = obj.counters
        self.cache_map = obj.cache
        if pins and not self.keep_cache:
            keep.forget(self.instance)  # taken over: the maps live on in this process, nothing after it
        slots = assign_slots(cfg.sfs, rows)
        target = {slots[sf.cfg.name]: sf for sf in sfs}
        if cfg.topology == "attached":
            # the host's addresses first: from the first frame on, what the SF sends the host is passed
            addrs = hostaddrs.HostAddresses([obj.host_addrs]).start()
            self._undo.callback(addrs.stop)
            self._count_redirect_errors(target)
        self._undo.callback(self._detach_all)
        self._sync(target)
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

    def _count_redirect_errors(self, sfs: dict[int, _Sf]) -> None:
        """Attached: the redirects to to_sf (RX) and net_out (TX) the kernel refuses are counted
        in the SF's row; without the tracer (no kernel BTF, say) they are not, and the log says so."""
        assert self.counter_map is not None
        try:
            self.redirects = RedirectErrors(self.counter_map.fd, self._redirect_slots(sfs))
        except bpf.BpfError as e:
            log.warning("redirects the kernel refuses will not be counted (rx_redirect_err, tx_redirect_err): "
                        "the tracepoint program did not load: %s", e)
            return
        self._undo.callback(self._close_redirects)

    def _redirect_slots(self, sfs: dict[int, _Sf]) -> dict[tuple[int, int, int], tuple[int, int]]:
        """RedirectErrors' slots for the SFs by slot: RX's redirects of the SFs served, TX's of
        every SF (a draining one's too)."""
        obj = self.obj
        assert obj is not None
        rx, tx = obj.obj.prog_id("axp_xdp_rx"), obj.obj.prog_id("axp_xdp_tx")
        rxs, txs = [rx], [tx]
        if BOTH_ROLES in obj.programs:  # its redirects are the RX path's or the TX path's, by target
            rxs.append(obj.obj.prog_id(BOTH_ROLES))
            txs.append(obj.obj.prog_id(BOTH_ROLES))
        slots = {(rx, 0, 0): (counters.NONE_ROW, lib.AXP_CNT_RX_REDIRECT_ERR),
                 (tx, 0, 0): (counters.NONE_ROW, lib.AXP_CNT_TX_REDIRECT_ERR)}
        # draining SFs first: one that returns by the from_sf and net_out of an SF served leaves them to it
        for slot, sf in sorted(sfs.items(), key=lambda item: (item[1].drain_until is None, item[0])):
            ifs = sf.ifs
            if sf.drain_until is None:
                # SFs behind one net_in and to_sf share a key: the first one's row counts
                for p in rxs:
                    slots.setdefault((p, ifs["net_in"].index, ifs["to_sf"].index),
                                     (slot, lib.AXP_CNT_RX_REDIRECT_ERR))
            for p in txs:
                slots[(p, ifs["from_sf"].index, ifs["net_out"].index)] = (slot, lib.AXP_CNT_TX_REDIRECT_ERR)
        return slots

    def _close_redirects(self) -> None:
        if self.redirects is not None:
            self.redirects.close()
            self.redirects = None

    def _wanted_links(self, sfs: dict[int, _Sf]) -> dict[tuple[str, int], Iface]:
        """The links the SFs need: one XDP link per interface by its XDP roles (RX on the net_in
        of an SF served, TX on an attached from_sf, rx_tx on one that is both), the meta shim on
        net_in, TC egress TX on an inline net_out; a draining SF needs its TX side only."""
        want: dict[tuple[str, int], Iface] = {}
        for idx, (iface, rx, tx) in xdp_roles(sfs.values(), self.cfg.topology).items():
            want[(XDP_KIND[rx, tx], idx)] = iface
        for sf in sfs.values():
            if sf.drain_until is None and self.cfg.key == "meta":
                want[("tcx_meta", sf.ifs["net_in"].index)] = sf.ifs["net_in"]
            if self.cfg.topology == "inline":
                want[("tcx_tx", sf.ifs["net_out"].index)] = sf.ifs["net_out"]
        return want

    def _need_programs(self, new: ProxyConfig, sfs: dict[int, _Sf]) -> None:
        """RestartNeeded, naming the SF, when sfs need a program this proxy did not load at
        start: axp_xdp_rx_tx, for an interface that is to have both XDP roles."""
        assert self.obj is not None
        served = {sf.cfg.name: sf for sf in sfs.values() if sf.drain_until is None}
        now = {(sf.cfg.name, role, sf.ifs[role].index) for sf in self._sfs.values() for role in sf.ifs}
        for (kind, idx), iface in self._wanted_links(sfs).items():
            if LINKS[kind] in self.obj.programs:
                continue
            # the SFs with an XDP role there, the one that takes it by this reload first
            found = [(i, sf, role) for role in ("net_in", "from_sf") for i, sf in enumerate(new.sfs)
                     if role in served[sf.name].ifs and served[sf.name].ifs[role].index == idx]
            i, sf, role = min(found, key=lambda f: (f[1].name, f[2], idx) in now)
            raise RestartNeeded(f"{sf.field(role, i)}: SF {sf.name} makes {iface.name} both a net_in and a "
                                f"from_sf, which needs {LINKS[kind]}, not loaded at start as no interface needed "
                                "it then; restart the proxy to apply (run --keep-cache keeps the cache across it; "
                                "the running configuration stays)")

    def _tx_iface(self, sf: _Sf) -> Iface:
        return sf.ifs["from_sf" if self.cfg.topology == "attached" else "net_out"]

    def _link(self, kind: str, iface: Iface) -> bpf.Link:
        assert self.obj is not None
        fd = self.obj.prog_fd(LINKS[kind])
        if kind.startswith("xdp"):
            return bpf.Link.xdp(fd, iface.index)
        return bpf.Link.tcx(fd, iface.index, egress=kind == "tcx_tx")

    def _xdp_link_on(self, ifindex: int) -> tuple[str, int] | None:
        return next((key for key in self._links if key[1] == ifindex and key[0].startswith("xdp")), None)

    def _sync(self, sfs: dict[int, _Sf]) -> None:
        """Make the maps and links serve exactly sfs (by slot). New links are attached first, and
        an interface whose XDP roles change has its link's program swapped (all or none: a failure
        leaves everything as it was), then the SF and TX maps take the new SFs before their labels
        do, so a packet popped for an SF always finds its return path; what is no longer needed
        goes last."""
        obj = self.obj
        assert obj is not None
        want = self._wanted_links(sfs)
        added: list[tuple[str, int]] = []
        swapped: list[tuple[tuple[str, int], tuple[str, int]]] = []
        try:
            for key, iface in want.items():
                if key in self._links:
                    continue
                old = self._xdp_link_on(key[1]) if key[0].startswith("xdp") else None
                if old is None:
                    self._links[key] = self._link(key[0], iface)
                    added.append(key)
                else:  # one XDP program per interface: the new one replaces the old in place
                    self._links[old].update(obj.prog_fd(LINKS[key[0]]))
                    self._links[key] = self._links.pop(old)
                    swapped.append((old, key))
        except BaseException:
            for key in added:
                self._links.pop(key).close()
            for old, key in reversed(swapped):
                self._links[key].update(obj.prog_fd(LINKS[old[0]]))
                self._links[old] = self._links.pop(key)
            raise
        for slot, sf in sfs.items():
            old_sf = self._sfs.get(slot)
            if old_sf is None or bytes(ffi.buffer(old_sf.struct)) != bytes(ffi.buffer(sf.struct)):
                obj.sfs.update(slot, sf.struct)
        # an interface two SFs return by belongs to the one served, not the one draining
        served_last = sorted(sfs.items(), key=lambda item: item[1].drain_until is None)
        tx = {self._tx_iface(sf).index: slot for slot, sf in served_last}
        labels = {key: slot for slot, sf in sorted(sfs.items(), reverse=True) if sf.drain_until is None
                  for key in label_keys(sf.cfg.vlan_in, sf.cfg.label)}
        for ifindex, slot in tx.items():
            if self._tx.get(ifindex) != slot:
                obj.tx_sf.update(ifindex, slot)
        for key, slot in labels.items():
            if self._labels.get(key) != slot:
                obj.labels.update(key, slot)
        for key in self._labels.keys() - labels.keys():
            obj.labels.delete(key)
        for ifindex in self._tx.keys() - tx.keys():
            obj.tx_sf.delete(ifindex)
        for key in self._links.keys() - want.keys():
            self._links.pop(key).close()
        zero, no_stack = ffi.new("struct axp_sf *"), ffi.new(f"uint8_t[{obj.last.value_size}]")
        for slot in self._sfs.keys() - sfs.keys():
            obj.sfs.update(slot, zero)
            obj.last.update(slot, no_stack, bpf.BPF_F_LOCK)  # on_miss = last: the slot's next SF starts afresh
        self._sfs, self._labels, self._tx = dict(sfs), labels, tx
        if self.redirects is not None:
            self.redirects.set_slots(self._redirect_slots(sfs))
        self._sync_rx({idx: iface for (kind, idx), iface in want.items() if kind in RX_KINDS})

    def _sync_rx(self, rx: dict[int, Iface]) -> None:
        """GRO and VLAN tag stripping off on every interface XDP RX runs on (after attaching: veth
        may turn GRO on for XDP's sake), each put back as it was where RX no longer runs."""
        for idx, iface in rx.items():
            if idx in self._rx_undo:
                continue
            with ExitStack() as undo:
                features_off(self._changes, iface, ("rx-gro",), undo)
                warn_vlan_stripping(iface.name, features_off(self._changes, iface, VLAN_STRIPPING, undo))
                self._rx_undo[idx] = undo.pop_all()
        for idx in self._rx_undo.keys() - rx.keys():
            self._rx_undo.pop(idx).close()

    def _detach_all(self) -> None:
        for key in list(self._links):
            self._links.pop(key).close()
        for idx in list(self._rx_undo):
            self._rx_undo.pop(idx).close()

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
        target, slots, done = plan_reload(self._sfs, self.rows, self.cfg, new, self._describe(new))
        self._need_programs(new, target)
        self._sync(target)
        self.cfg = new
        self.rows = rows_after(self.rows, slots)
        self._write_record()
        return done

    def tick(self) -> list[str]:
        """Detach what removed SFs no longer need once they have drained; returns their names.
        Sampling set by a trace that has gone is turned off."""
        if self.obj is not None:
            trace.release_orphan(self.obj.trace)
        stay, names = retire_drained(self._sfs)
        if names:
            self._sync(stay)
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
        """Counters summed over SFs and CPUs, and tx_dwell_timed."""
        return counters.with_dwell_timed(self.snapshot()) if self.counter_map else {}

    def in_flight(self) -> int:
        return counters.in_flight_of(self.counters())

    def links(self) -> dict[tuple[str, int], int]:
        """{(kind, ifindex): link fd} of what is attached now (tests: reload leaves the others be)."""
        return {k: link.fd for k, link in self._links.items()}

    def state(self) -> dict[str, object]:
        assert self.obj and self.counter_map and self.cache_map
        progs = [self.obj.obj.prog_id(p) for p in self.obj.programs]  # all loaded, attached or not
        if self.redirects is not None:
            progs.append(self.redirects.prog_id)
        maps = {"counters": self.counter_map.id, "cache": self.cache_map.id,
                "trace_ctl": self.obj.trace_ctl.id, "trace_events": self.obj.trace_events_id}
        return {"maps": maps, "progs": progs,
                "sfs": self.rows, "kept": str(keep.pin_dir(self.instance)) if self.kept else None}

