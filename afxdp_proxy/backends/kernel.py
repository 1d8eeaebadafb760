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
untagged.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import Any

from pyroute2 import IPRoute

from afxdp_proxy import bpf, counters, hostaddrs
from afxdp_proxy._native import ffi, lib
from afxdp_proxy.cache import CacheSet, decode_set
from afxdp_proxy.config import ConfigError, ProxyConfig, SfConfig, meta_mark_layout
from afxdp_proxy.iface import Iface, keep_vlan_tags, learn_mac, mac_bytes, resolve, set_feature
from afxdp_proxy.mpls import make_stack

log = logging.getLogger(__name__)

PROGRAMS = ("axp_xdp_rx", "axp_tc_meta", "axp_tc_tx", "axp_xdp_tx", "axp_xdp_rx_tx")  # what proxy.bpf.o holds
# the XDP program of an interface by its XDP roles: RX (a net_in), TX (an attached from_sf)
XDP_PROGRAM = {(True, False): "axp_xdp_rx", (False, True): "axp_xdp_tx", (True, True): "axp_xdp_rx_tx"}

_KEY_MODE = {"hash": lib.AXP_KEY_MODE_HASH, "meta": lib.AXP_KEY_MODE_META}
_TOPOLOGY = {"inline": lib.AXP_TOPO_INLINE, "attached": lib.AXP_TOPO_ATTACHED}
_TTL_MODEL = {"uniform": lib.AXP_TTL_UNIFORM, "pipe": lib.AXP_TTL_PIPE}
_TTL_ACTION = {"drop": lib.AXP_TTL_DROP, "pass": lib.AXP_TTL_PASS}


def label_keys(vlan_in: int, label: int) -> tuple[int, int]:
    """The keys an SF takes in the label maps (axp_labels, axp_xsk_labels): its (VLAN, label), and
    (VLAN, 0), which tells RX that some SF is served on that VLAN (axp_sf_key, proxy.shared.h)."""
    shift = lib.AXP_VLAN_KEY_SHIFT
    return vlan_in << shift | label, vlan_in << shift
_MISS = {"pass": lib.AXP_MISS_PASS, "drop": lib.AXP_MISS_DROP, "last": lib.AXP_MISS_LAST}
MIN_META_SEQ_BITS = 10  # meta keys a CPU hands out before one comes round again: 2^10 at least


def meta_layout(cfg: ProxyConfig) -> tuple[int, int]:
    """(shift, sequence bits) of meta keys in cfg.meta_mark_mask on this host's CPUs."""
    shift, seq_bits = meta_mark_layout(cfg.meta_mark_mask, bpf.NCPUS)
    if cfg.key == "meta" and seq_bits < MIN_META_SEQ_BITS:
        raise ConfigError(f"proxy.meta_mark_mask: {cfg.meta_mark_mask:#010x} leaves {max(seq_bits, 0)} bits for "
                          f"the sequence numbers next to the {bpf.NCPUS} CPUs' numbers; give it "
                          f"{cfg.meta_mark_mask.bit_count() + MIN_META_SEQ_BITS - seq_bits} bits or more")
    return shift, seq_bits


def config_struct(cfg: ProxyConfig) -> Any:
    """The struct axp_config for a ProxyConfig: BPF .rodata, and the AF_XDP engine's."""
    shift, seq_bits = meta_layout(cfg)
    return ffi.new("struct axp_config *", {
        "key_mode": _KEY_MODE[cfg.key],
        "topology": _TOPOLOGY[cfg.topology],
        "on_miss": _MISS[cfg.on_miss],
        "static_mode": int(cfg.backend == "static"),
        "cache_sets": cfg.cache_sets,
        "max_per_key": cfg.max_per_key,
        "max_dwell_ns": cfg.max_dwell_ms * 1_000_000,
        "ttl_model": _TTL_MODEL[cfg.ttl_model],
        "on_ttl_expired": _TTL_ACTION[cfg.on_ttl_expired],
        "meta_mark_mask": cfg.meta_mark_mask,
        "meta_shift": shift,
        "meta_seq_bits": max(seq_bits, 0),
    })


# what an interface with both XDP roles needs, and nothing else: the verifier takes a while
# over it (both paths), so it is loaded only on request
BOTH_ROLES = "axp_xdp_rx_tx"
ONE_ROLE_PROGRAMS = tuple(p for p in PROGRAMS if p != BOTH_ROLES)


class ProxyObject:
    """build/proxy.bpf.o loaded for one configuration, with its maps at hand; of its
    programs only `programs` (by default all but axp_xdp_rx_tx)."""

    def __init__(self, cfg: ProxyConfig, obj_path: str | None = None,
                 programs: tuple[str, ...] = ONE_ROLE_PROGRAMS) -> None:
        self.obj = bpf.BpfObject(obj_path or bpf.object_path("proxy"))
        self.programs = programs
        try:
            for prog in PROGRAMS:
                if prog not in programs:
                    self.obj.set_autoload(prog, False)
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
        self.host_addrs = self.obj.map("axp_host_addrs", "struct axp_host_addr", "uint8_t")

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
class RedirectErrors:
    """bpf/redirect.bpf.c on the tracepoint xdp:xdp_redirect_err: the redirects of the proxy's
    programs that the kernel refused, counted in the proxy's own counters map. slots:
    {(program ID, interface it ran on, target ifindex): (row, slot)}; (ID, 0, 0) is a program's
    fallback."""

    def __init__(self, counters_fd: int, slots: dict[tuple[int, int, int], tuple[int, int]],
                 obj_path: str | None = None) -> None:
        self.obj = bpf.BpfObject(obj_path or bpf.object_path("redirect"))
        self.link: bpf.Link | None = None
        try:
            self.obj.reuse_map("axp_counters", counters_fd)
            self.obj.load()
            m = self.obj.map("axp_redirect_slots", "struct axp_redirect_key", "struct axp_redirect_slot")
            for (prog, ifindex, to), (row, slot) in slots.items():
                m.update(ffi.new("struct axp_redirect_key *", [prog, ifindex, to]),
                         ffi.new("struct axp_redirect_slot *", [row, slot]))
            self.link = bpf.Link.raw_tp(self.obj.prog_fd("axp_redirect_err"), "xdp:xdp_redirect_err")
        except BaseException:
            self.close()
            raise
        self.prog_id = self.obj.prog_id("axp_redirect_err")

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
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
        self.redirects: RedirectErrors | None = None

    # -- set-up -------------------------------------------------------------

    def _resolve(self, ipr: IPRoute) -> list[dict[str, Iface]]:
        out = []
        for i, sf in enumerate(self.cfg.sfs):
            ifs = {"net_in": resolve(ipr, sf.net_in, sf.field("net_in", i)),
                   "net_out": resolve(ipr, sf.net_out, sf.field("net_out", i))}
            if self.cfg.topology == "attached":
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

        xdp = self._xdp_programs(ifaces)
        both = any(prog == BOTH_ROLES for _, prog in xdp)
        obj = ProxyObject(cfg, self._obj_path, PROGRAMS if both else ONE_ROLE_PROGRAMS)
        self._undo.callback(obj.close)
        self.obj = obj
        self.counter_map = obj.counters
        self.cache_map = obj.cache
        for i, s in enumerate(sf_structs):
            obj.add_sf(i, s, ifaces[i]["from_sf" if cfg.topology == "attached" else "net_out"].index)

        if cfg.topology == "attached":
            # the host's addresses first: from the first frame on, what the SF sends the host is passed
            addrs = hostaddrs.HostAddresses([obj.host_addrs]).start()
            self._undo.callback(addrs.stop)
        for iface, prog in xdp:
            self._attach(bpf.Link.xdp(obj.prog_fd(prog), iface.index))
        net_ins = {ifs["net_in"].index: ifs["net_in"] for ifs in ifaces}
        if cfg.key == "meta":
            for iface in net_ins.values():
                self._attach(bpf.Link.tcx(obj.prog_fd("axp_tc_meta"), iface.index, egress=False))
        if cfg.topology == "inline":
            outs = {ifs["net_out"].index: ifs["net_out"] for ifs in ifaces}
            for iface in outs.values():
                self._attach(bpf.Link.tcx(obj.prog_fd("axp_tc_tx"), iface.index, egress=True))
        else:
            self._count_redirect_errors(obj, ifaces)
        # after attaching: veth may turn GRO on for XDP's sake
        for iface in net_ins.values():
            before = set_feature(iface.name, "rx-gro", False)
            if before:
                self._undo.callback(set_feature, iface.name, "rx-gro", True)
            warn_vlan_stripping(iface.name, keep_vlan_tags(iface.name, self._undo))

    def _count_redirect_errors(self, obj: ProxyObject, ifaces: list[dict[str, Iface]]) -> None:
        """Attached: the redirects to to_sf (RX) and net_out (TX) the kernel refuses are counted
        in the SF's row; without the tracer (no kernel BTF, say) they are not, and the log says so."""
        rx, tx = obj.obj.prog_id("axp_xdp_rx"), obj.obj.prog_id("axp_xdp_tx")
        rxs, txs = [rx], [tx]
        if BOTH_ROLES in obj.programs:  # its redirects are the RX path's or the TX path's, by target
            rxs.append(obj.obj.prog_id(BOTH_ROLES))
            txs.append(obj.obj.prog_id(BOTH_ROLES))
        slots = {(rx, 0, 0): (counters.NONE_ROW, lib.AXP_CNT_RX_REDIRECT_ERR),
                 (tx, 0, 0): (counters.NONE_ROW, lib.AXP_CNT_TX_REDIRECT_ERR)}
        for i, ifs in enumerate(ifaces):
            # SFs behind one net_in and to_sf share a key: the first one's row counts
            for p in rxs:
                slots.setdefault((p, ifs["net_in"].index, ifs["to_sf"].index), (i, lib.AXP_CNT_RX_REDIRECT_ERR))
            for p in txs:
                slots[(p, ifs["from_sf"].index, ifs["net_out"].index)] = (i, lib.AXP_CNT_TX_REDIRECT_ERR)
        assert self.counter_map is not None
        try:
            self.redirects = RedirectErrors(self.counter_map.fd, slots)
        except bpf.BpfError as e:
            log.warning("redirects the kernel refuses will not be counted (rx_redirect_err, tx_redirect_err): "
                        "the tracepoint program did not load: %s", e)
            return
        self._undo.callback(self._close_redirects)

    def _close_redirects(self) -> None:
        if self.redirects is not None:
            self.redirects.close()
            self.redirects = None

    @staticmethod
    def _xdp_programs(ifaces: list[dict[str, Iface]]) -> list[tuple[Iface, str]]:
        """Every interface with an XDP role and its program: RX on a net_in, TX on a from_sf
        (attached; inline has none), axp_xdp_rx_tx on an interface that is both."""
        roles: dict[int, tuple[Iface, bool, bool]] = {}
        for ifs in ifaces:
            for key in ("net_in", "from_sf"):
                if key in ifs:
                    iface, rx, tx = roles.get(ifs[key].index, (ifs[key], False, False))
                    roles[iface.index] = (iface, rx or key == "net_in", tx or key == "from_sf")
        return [(iface, XDP_PROGRAM[rx, tx]) for iface, rx, tx in roles.values()]

    def _attach(self, link: bpf.Link) -> None:
        self._undo.callback(link.close)

    def stop(self) -> None:
        """Detach and unload everything start() did; safe to call twice."""
        self._undo.close()
        self.obj = None
        self.counter_map = None
        self.cache_map = None

    # -- observation ----------------------------------------------------------

    def snapshot(self) -> counters.Snapshot:
        """Counter rows of the configured SFs and of frames of no SF (empty once stopped)."""
        if not self.counter_map:
            return counters.Snapshot()
        return counters.read_map(self.counter_map, counters.rows_of(len(self.cfg.sfs)))

    def counters(self) -> dict[str, int]:
        """Counters summed over SFs and CPUs."""
        return self.snapshot().total() if self.counter_map else {}

    def in_flight(self) -> int:
        return counters.in_flight_of(self.counters())

    def state(self) -> dict[str, object]:
        assert self.obj and self.counter_map and self.cache_map
        progs = [self.obj.obj.prog_id(p) for p in self.obj.programs]  # all loaded, attached or not
        if self.redirects is not None:
            progs.append(self.redirects.prog_id)
        return {"maps": {"counters": self.counter_map.id, "cache": self.cache_map.id}, "progs": progs}
