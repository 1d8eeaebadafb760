"""The namespace testbed every end-to-end test, the demo and the benchmarks use.

Two topologies (see DESIGN.md)::

  inline    src ns [src0]─[src_cls ⇒ src_out] ── [p_in] proxy ns [p_out] ── [dst0] dst ns
            (the proxy namespace's own kernel routing is the SF)

  attached  src ns [src0]─[src_cls ⇒ src_out] ── [p_in] proxy ns [p_out] ── [dst0] dst ns
                                                [p_sf_tx]  [p_sf_rx]
                                                    │          │
                                                [sf_in] sf ns [sf_out]   (kernel-forwarding SF)

The sender's SR-MPLS classifier (``tb_tc_classify``, TC ingress on src_cls, the
peer of the sender's src0, redirecting to src_out) pushes one of the configured
stacks on every IP packet, rotating per packet. It sits one veth behind src0
because TC egress on src0 would see TCP's GSO skbs, not packets. The
receiver's XDP (``tb_xdp_decap``) pops whatever arrives and counts it by depth.
Both can record key -> stack so a test compares what was sent with what
arrived. The testbed attaches nothing to the proxy namespace's interfaces:
those belong to the proxy under test.

Without a proxy, plain IP still flows (the baselines): in ``attached`` a policy
rule sends what enters on p_in through the SF namespace, and the main table
sends what comes back from it (and the return traffic) on by kernel routing.
Labelled packets, on the other hand, die in the proxy namespace (this kernel
has no MPLS routing): only a proxy gets them through.

Every interface name and MAC is fixed (locally administered, derived from the
subnet and host number), so the proxy configuration is deterministic.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afxdp_proxy import state
from afxdp_proxy.config import DEFAULT_CACHE_ENTRIES
from afxdp_proxy.lab import netns, traffic
from afxdp_proxy.mpls import Lse, make_stack

log = logging.getLogger(__name__)

TOPOLOGIES = ("inline", "attached")
ROLES = ("src", "proxy", "sf", "dst")
LINK_MTU = 1600  # room for a deep stack on the links that carry labels
ROUTE_MTU = 1500  # what the sender sizes packets for, before labels
SF_MTU = ROUTE_MTU  # the SF's links carry bare packets (1600 >= 1500 + 16 labels of 4 bytes)
TABLE_VIA_SF = 100  # attached: policy table for traffic that entered on p_in


def _tb() -> Any:
    """The extension's lib, whose TB_* constants are bpf/lab/testbed.shared.h's slots (written
    once, in C). Imported on use: the CLI lists the lab's commands without the extension."""
    from afxdp_proxy._native import lib

    return lib


@dataclass(frozen=True)
class End:
    """One end of a veth: its namespace role, name, MAC and addresses."""

    role: str
    ifname: str
    net: int  # subnet number: 10.0.<net>.0/24, fd00:0:0:<net>::/64
    host: int  # 1 for hosts and the SF, 254 for the proxy's side

    @property
    def mac(self) -> str:
        return f"02:00:00:00:{self.net:02x}:{self.host:02x}"

    @property
    def ip4(self) -> str:
        return f"10.0.{self.net}.{self.host}"

    @property
    def ip6(self) -> str:
        return f"fd00:0:0:{self.net}::{self.host:x}"


SRC0 = End("src", "src0", 1, 1)
# the sender's classifier hop, inside the src namespace: src0's peer and the veth facing p_in
SRC_CLS = End("src", "src_cls", 1, 2)
SRC_OUT = End("src", "src_out", 1, 3)
P_IN = End("proxy", "p_in", 1, 254)
P_OUT = End("proxy", "p_out", 2, 254)
DST0 = End("dst", "dst0", 2, 1)
P_SF_TX = End("proxy", "p_sf_tx", 3, 254)
SF_IN = End("sf", "sf_in", 3, 1)
SF_OUT = End("sf", "sf_out", 4, 1)
P_SF_RX = End("proxy", "p_sf_rx", 4, 254)

# IP links: addresses on both ends, each end a permanent neighbour of the other
LINKS = {
    "inline": [(SRC0, P_IN), (P_OUT, DST0)],
    "attached": [(SRC0, P_IN), (P_OUT, DST0), (P_SF_TX, SF_IN), (SF_OUT, P_SF_RX)],
}
# veth pairs: the same, except that src0 reaches p_in through the classifier hop
WIRES = {topo: [(SRC0, SRC_CLS), (SRC_OUT, P_IN), *links[1:]] for topo, links in LINKS.items()}


@dataclass(frozen=True)
class ChainCheck:
    """Packets recorded at both ends: {key: (stack pushed, stack received)}. A packet kept
    its stack when it arrived with the pushed one minus the top (the SF's) label."""

    pairs: dict[bytes, tuple[tuple[int, ...], tuple[int, ...]]]

    @property
    def compared(self) -> int:
        return len(self.pairs)

    @property
    def wrong(self) -> dict[bytes, tuple[tuple[int, ...], tuple[int, ...]]]:
        return {k: (s, r) for k, (s, r) in self.pairs.items() if r != s[1:]}

    @property
    def kept(self) -> int:
        return self.compared - len(self.wrong)

    @property
    def arrived(self) -> set[tuple[int, ...]]:
        """The distinct stacks the receiver saw."""
        return {r for _, r in self.pairs.values()}


def dynamic_stacks(sf_label: int = 1000) -> list[list[Lse]]:
    """A dynamic chain for one flow: every stack starts with the SF's label,
    the rest differ per packet in labels, TC bits and depth (one has nothing
    after the SF, so the proxy must send that packet on as plain IP)."""
    return [
        make_stack([sf_label, 2001], [0, 1]),
        make_stack([sf_label, 2002, 3002], [2, 3, 4]),
        make_stack([sf_label], [5]),
        make_stack([sf_label, 2004, 3004, 4004, 5004], [6, 7, 0, 1, 2]),
    ]


def _state_name(prefix: str) -> str:
    # shares /run/afxdp-proxy with running proxies; the kind field and name keep them apart
    return f"testbed-{prefix}"


def _state_file(prefix: str) -> Path:
    return state.STATE_DIR / f"{_state_name(prefix)}.json"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))  # a TOML basic string for plain ASCII


class Testbed:
    """Namespaces, veths, addresses, routes and the testbed's BPF programs for one topology.

    Use as a context manager (``with Testbed("attached") as tb:``), or call
    up()/down(); down() removes everything even after a failed up().
    """

    __test__ = False  # not a pytest class, whatever its name

    def __init__(
        self,
        topology: str = "attached",
        prefix: str | None = None,
        ipv6: bool = True,
        sf_label: int = 1000,
        queues: int | None = None,
    ) -> None:
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {TOPOLOGIES}, not {topology!r}")
        self.topology = topology
        self.prefix = prefix or f"axp-{uuid.uuid4().hex[:6]}"
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", self.prefix):
            raise ValueError(f"bad prefix {self.prefix!r}")
        self.ipv6 = ipv6
        self.sf_label = sf_label
        if queues is not None and not 1 <= queues <= 64:
            raise ValueError(f"queues must be in 1..64, not {queues}")
        self.queues = queues  # RX and TX queues of every veth; None: the kernel's default
        self.links = LINKS[topology]
        self.wires = WIRES[topology]
        # namespace names, by role; no SF namespace inline (the proxy's kernel is the SF)
        self.ns_src = f"{self.prefix}-src"
        self.ns_proxy = f"{self.prefix}-proxy"
        self.ns_sf = f"{self.prefix}-sf" if topology == "attached" else None
        self.ns_dst = f"{self.prefix}-dst"
        # interfaces
        self.src_if, self.dst_if = SRC0.ifname, DST0.ifname
        # the sender's wire side (peer of p_in): raw frames sent here skip the classifier
        self.src_wire = SRC_OUT.ifname
        self.net_in, self.net_out = P_IN.ifname, P_OUT.ifname
        self.to_sf = P_SF_TX.ifname if topology == "attached" else None
        self.from_sf = P_SF_RX.ifname if topology == "attached" else None
        self.sf_in = SF_IN.ifname if topology == "attached" else None
        self.sf_out = SF_OUT.ifname if topology == "attached" else None
        self.macs = {e.ifname: e.mac for wire in self.wires for e in wire}
        # addresses
        self.src_ip, self.dst_ip = SRC0.ip4, DST0.ip4
        self.src_ip6, self.dst_ip6 = SRC0.ip6, DST0.ip6
        self.link_mtu, self.route_mtu = LINK_MTU, ROUTE_MTU
        self._reg = netns.Registry()
        self._ns: dict[str, netns.Namespace] = {}
        self._procs: list[subprocess.Popen] = []
        self._maps: dict[str, Any] = {}
        self.map_ids: dict[str, int] = {}
        self.prog_ids: dict[str, int] = {}
        self.is_up = False
        self._owned = False  # up() or load() made this object responsible for the names

    # ------------------------------------------------------------------ names

    @property
    def namespaces(self) -> list[str]:
        return [n for n in (self.ns_src, self.ns_proxy, self.ns_sf, self.ns_dst) if n]

    def nsname(self, ns: str) -> str:
        """A role ("src", "proxy", "sf", "dst") or a full namespace name -> the name."""
        if ns in ROLES:
            name = getattr(self, f"ns_{ns}")
            if name is None:
                raise ValueError(f"no {ns} namespace in the {self.topology} topology")
            return str(name)
        if ns in self.namespaces:
            return ns
        raise ValueError(f"{ns!r} is neither a role {ROLES} nor one of {self.namespaces}")

    def ns(self, ns: str) -> netns.Namespace:
        name = self.nsname(ns)
        if name not in self._ns:
            self._ns[name] = netns.Namespace(name)
            self._reg.defer(f"close RTNL socket of {name}", self._ns[name].close)
        return self._ns[name]

    def ifindex(self, ns: str, ifname: str) -> int:
        return self.ns(ns).ifindex(ifname)

    @property
    def state_file(self) -> Path:
        return _state_file(self.prefix)

    # ------------------------------------------------------------------ life cycle

    def __enter__(self) -> Testbed:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> Testbed:
        """Build everything; on any failure tear down what was built and re-raise."""
        if self.is_up:
            return self
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        self.is_up = True
        return self

    def _up(self) -> None:
        taken = [n for n in self.namespaces if netns.ns_exists(n)]
        if taken or self.state_file.exists():
            raise FileExistsError(f"testbed {self.prefix} exists (namespaces {taken}); pick another prefix")
        self._owned = True  # from here on, down() removes what carries our names
        for name in self.namespaces:
            netns.create_ns(name)
        for role in ROLES:
            if getattr(self, f"ns_{role}"):
                self._sysctls(role)
        for a, b in self.wires:
            self._add_veth(a, b)
            for end in (a, b):
                self._features(end)
        for a, b in self.links:
            for end, peer in ((a, b), (b, a)):
                self._configure_end(end, peer)
        for end in (SRC_CLS, SRC_OUT):
            self.ns(end.role).link_up(end.ifname)
        self._routes()
        self._load_programs()
        for a, b in self.wires:
            self.ns(a.role).wait_up(a.ifname)
            self.ns(b.role).wait_up(b.ifname)
        self.save_state()

    def _add_veth(self, a: End, b: End) -> None:
        # The sender's own link keeps the kernel's default: a veth skb keeps its TX queue
        # index, which src_out's queue selection after the classifier's redirect reads as a
        # recorded RX queue (measured: nearly every flow then left by queue 0). From a
        # single-queue link, src_out spreads flows over its queues by hash, as RSS would.
        mtu = SF_MTU if "sf" in (a.role, b.role) else LINK_MTU
        if self.queues is None or a is SRC0:
            netns.add_veth(self.ns(a.role), a.ifname, self.ns(b.role), b.ifname, a.mac, b.mac, mtu)
            return
        # netns.add_veth with both ends given N queues (IFLA_NUM_RX/TX_QUEUES)
        q = {"num_rx_queues": self.queues, "num_tx_queues": self.queues}
        peer = {"ifname": b.ifname, "net_ns_fd": netns.ns_path(self.nsname(b.role)), "mtu": mtu,
                "address": b.mac, **q}
        self.ns(a.role).ipr.link("add", ifname=a.ifname, kind="veth", peer=peer, mtu=mtu, address=a.mac, **q)

    def _sysctls(self, role: str) -> None:
        ns = self.ns(role)
        # no reverse-path filtering: the attached path enters and leaves by different interfaces
        for scope in ("all", "default"):
            ns.sysctl(f"net.ipv4.conf.{scope}.rp_filter", 0)
        if not self.ipv6:
            for scope in ("all", "default"):
                ns.sysctl(f"net.ipv6.conf.{scope}.disable_ipv6", 1)
        else:
            # no link-local addresses, RS, RA or DAD: fewer stray packets for the classifier
            # to label, and global addresses usable at once (neighbours are permanent)
            for key, val in (
                ("addr_gen_mode", 1),
                ("accept_ra", 0),
                ("router_solicitations", 0),
                ("accept_dad", 0),
                ("dad_transmits", 0),
            ):
                ns.sysctl(f"net.ipv6.conf.default.{key}", val)
        if role in ("proxy", "sf"):
            ns.sysctl("net.ipv4.ip_forward", 1)
            for scope in ("all", "default"):
                ns.sysctl(f"net.ipv4.conf.{scope}.send_redirects", 0)
            if self.ipv6:
                ns.sysctl("net.ipv6.conf.all.forwarding", 1)

    def _features(self, end: End) -> None:
        # veth TX checksum offload leaves L4 checksums unfilled for XDP/AF_XDP consumers,
        # and a VLAN tag offloaded at TX travels beside the frame, where XDP does not see it.
        # Without TX checksums TSO goes too: what leaves a veth is segmented in software first,
        # so every skb the peer sees is one packet, and one pushed stack labels one packet
        # (there is no MPLS GSO in this kernel to split a labelled GSO skb)
        feats = {"tx-checksum-ip-generic": False, "tx-generic-segmentation": False, "tx-vlan-hw-insert": False}
        if end.ifname in (P_IN.ifname, SF_IN.ifname):
            # GRO behind an XDP program (the proxy's on p_in, tb_xdp_pass on sf_in) would merge
            # bare packets whose stacks differ; the TX side must relabel them one by one
            feats["rx-gro"] = False
        self.ns(end.role).set_features(end.ifname, **feats)

    def _configure_end(self, end: End, peer: End) -> None:
        ns = self.ns(end.role)
        ns.add_address(end.ifname, f"{end.ip4}/24")
        if self.ipv6:
            ns.add_address(end.ifname, f"{end.ip6}/64")
        ns.link_up(end.ifname)
        ns.add_neighbour(end.ifname, peer.ip4, peer.mac)
        if self.ipv6:
            ns.add_neighbour(end.ifname, peer.ip6, peer.mac)

    def _route(self, dev: End, net: int, via: End, mtu: int | None = None, table: int | None = None) -> None:
        """In dev's namespace: subnet `net` via the peer `via` out of dev."""
        ns = self.ns(dev.role)
        ns.add_route(f"10.0.{net}.0/24", via=via.ip4, dev=dev.ifname, mtu=mtu, table=table)
        if self.ipv6:
            ns.add_route(f"fd00:0:0:{net}::/64", via=via.ip6, dev=dev.ifname, mtu=mtu, table=table)

    def _routes(self) -> None:
        # hosts: route MTU 1500 while the links allow 1600, so pushed labels fit
        self._route(SRC0, DST0.net, P_IN, mtu=ROUTE_MTU)
        self._route(DST0, SRC0.net, P_OUT, mtu=ROUTE_MTU)
        if self.topology == "inline":
            return  # the proxy namespace has both subnets connected
        # attached: what enters on p_in goes through the SF; what comes back from it,
        # and the return traffic, follow the main table (connected p_out / p_in)
        self._route(P_SF_TX, DST0.net, SF_IN, table=TABLE_VIA_SF)
        proxy = self.ns("proxy")
        proxy.add_rule(TABLE_VIA_SF, 100, iifname=P_IN.ifname, family=4)
        if self.ipv6:
            proxy.add_rule(TABLE_VIA_SF, 100, iifname=P_IN.ifname, family=6)
        self._route(SF_OUT, DST0.net, P_SF_RX)
        self._route(SF_IN, SRC0.net, P_SF_TX)  # for ICMP errors the SF sends back

    def _load_programs(self) -> None:
        from afxdp_proxy import bpf

        with bpf.BpfObject(bpf.object_path("testbed")) as obj:
            obj.load()
            for name in ("tb_tc_classify", "tb_tc_return", "tb_xdp_decap", "tb_xdp_pass"):
                self.prog_ids[name] = obj.prog_id(name)
            # The classifier sits behind src0, not on its egress: TCP hands TC egress
            # GSO skbs whatever the device's offloads (the kernel forces GSO on for TCP
            # sockets), and a stack pushed there would be one stack for many packets
            # that software segmentation cannot even parse. src0 segments in software (no TSO);
            # src_cls's ingress then sees each packet, labels it and sends it on out
            # of src_out; tb_tc_return brings the return traffic back to src0.
            cfg = obj.map("tb_cfg", "uint32_t", "uint32_t")
            cfg.update(_tb().TB_CFG_FWD_IFINDEX, self.ifindex("src", SRC_OUT.ifname))
            cfg.update(_tb().TB_CFG_BACK_IFINDEX, self.ifindex("src", SRC_CLS.ifname))
            with netns.enter(self.ns_src):
                bpf.tc_attach(self.ifindex("src", SRC_CLS.ifname), obj.prog_fd("tb_tc_classify"), egress=False)
                bpf.tc_attach(self.ifindex("src", SRC_OUT.ifname), obj.prog_fd("tb_tc_return"), egress=False)
            with netns.enter(self.ns_dst):
                bpf.xdp_attach(self.ifindex("dst", DST0.ifname), obj.prog_fd("tb_xdp_decap"))
            if self.ns_sf:
                # a veth delivers XDP_REDIRECTed frames only while its peer runs NAPI
                with netns.enter(self.ns_sf):
                    bpf.xdp_attach(self.ifindex("sf", SF_IN.ifname), obj.prog_fd("tb_xdp_pass"))
            for name, kt, vt in self._map_types():
                self.map_ids[name] = obj.map(name, kt, vt).id
        # the attached programs keep the maps alive; reopen them by id so this works
        # the same for a testbed loaded from its state file
        self._open_maps()

    @staticmethod
    def _map_types() -> list[tuple[str, str, str]]:
        return [
            ("tb_cfg", "uint32_t", "uint32_t"),
            ("tb_stacks", "uint32_t", "struct axp_entry"),
            ("tb_rr", "uint32_t", "uint64_t"),
            ("tb_sent", "struct axp_key", "struct axp_entry"),
            ("tb_received", "struct axp_key", "struct axp_entry"),
            ("tb_depths", "uint32_t", "uint64_t"),
            ("tb_stats", "uint32_t", "uint64_t"),
        ]

    def _open_maps(self) -> None:
        from afxdp_proxy import bpf

        for name, kt, vt in self._map_types():
            m = bpf.Map.from_id(self.map_ids[name], kt, vt)
            self._maps[name] = m
            self._reg.defer(f"close map {name}", m.close)

    def down(self) -> list[str]:
        """Stop processes, remove namespaces (with their veths and programs) and the
        state file. Returns descriptions of teardown steps that failed."""
        for p in self._procs:
            netns.stop(p)
        self._procs.clear()
        failed = self._reg.close()
        self._ns.clear()
        self._maps.clear()
        if self._owned:
            # namespaces take their veths and attached programs with them
            for name in self.namespaces:
                try:
                    netns.delete_ns(name)
                except Exception as e:
                    failed.append(f"delete namespace {name}: {e}")
            self._remove_state()
        self._owned = False
        self.is_up = False
        return failed

    # ------------------------------------------------------------------ persistence

    def save_state(self) -> Path:
        """Write what `load` needs to reopen this testbed from another process.

        bpffs pins would not do: `ip netns exec` remounts /sys. The map IDs do,
        as long as the attached programs keep the maps alive.
        """
        data = {
            "kind": "testbed",
            "prefix": self.prefix,
            "topology": self.topology,
            "ipv6": self.ipv6,
            "sf_label": self.sf_label,
            "queues": self.queues,
            "namespaces": self.namespaces,
            "map_ids": self.map_ids,
            "prog_ids": self.prog_ids,
            "created": time.time(),
        }
        return state.write(_state_name(self.prefix), data)

    def _remove_state(self) -> None:
        state.remove(_state_name(self.prefix))

    @classmethod
    def saved(cls) -> list[str]:
        """Prefixes of testbeds with a state file."""
        return sorted(d["prefix"] for d in state.running("testbed").values())

    @classmethod
    def load(cls, prefix: str) -> Testbed:
        """Reopen a testbed another process brought up (see save_state)."""
        path = _state_file(prefix)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no testbed {prefix!r}: {path} does not exist") from None
        tb = cls(data["topology"], prefix=data["prefix"], ipv6=data["ipv6"], sf_label=data["sf_label"],
                 queues=data.get("queues"))
        tb.map_ids = {k: int(v) for k, v in data["map_ids"].items()}
        tb.prog_ids = {k: int(v) for k, v in data["prog_ids"].items()}
        missing = [n for n in tb.namespaces if not netns.ns_exists(n)]
        if missing:
            raise RuntimeError(f"testbed {prefix}: namespaces {missing} are gone; run down to clean up")
        tb._owned = True
        try:
            tb._open_maps()
        except OSError as e:
            tb._reg.close()
            raise RuntimeError(f"testbed {prefix}: its maps are gone ({e}); run down to clean up") from None
        tb.is_up = True
        return tb

    def status(self) -> dict[str, Any]:
        """Namespaces present, programs attached, counters."""
        from afxdp_proxy import bpf

        hooks: dict[str, int] = {}
        checks = [("src", SRC_CLS.ifname, "tc"), ("src", SRC_OUT.ifname, "tc"), ("dst", DST0.ifname, "xdp")]
        if self.ns_sf:
            checks.append(("sf", SF_IN.ifname, "xdp"))
        for role, ifname, kind in checks:
            name = self.nsname(role)
            if not netns.ns_exists(name):
                continue
            with netns.enter(name):
                idx = self.ifindex(role, ifname)
                hooks[f"{role}/{ifname}/{kind}"] = (
                    bpf.tc_prog_id(idx, egress=False) if kind == "tc" else bpf.xdp_prog_id(idx)
                )
        return {
            "prefix": self.prefix,
            "topology": self.topology,
            "namespaces": {n: netns.ns_exists(n) for n in self.namespaces},
            "programs": hooks,
            "counters": self.counters() if self._maps else {},
            "depths": self.depth_histogram() if self._maps else {},
        }

    # ------------------------------------------------------------------ classifier and records

    def _map(self, name: str) -> Any:
        if name not in self._maps:
            raise RuntimeError("the testbed is not up")
        return self._maps[name]

    def set_stacks(self, stacks: Sequence[Sequence[Lse]]) -> None:
        """Stacks the sender's classifier pushes, rotating per packet from the first.
        [] sends plain IP (the no-label baseline); an empty stack in the list sends
        that packet plain."""
        from afxdp_proxy._native import ffi, lib

        if len(stacks) > lib.AXP_MAX_STACKS:
            raise ValueError(f"at most {lib.AXP_MAX_STACKS} stacks, got {len(stacks)}")
        cfg, tbl, rr = self._map("tb_cfg"), self._map("tb_stacks"), self._map("tb_rr")
        cfg.update(lib.TB_CFG_N_STACKS, 0)  # stop pushing while the table changes
        for i, stack in enumerate(stacks):
            if len(stack) > lib.AXP_MAX_LABELS:
                raise ValueError(f"stack {i} is deeper than the maximum: {len(stack)}")
            e = ffi.new("struct axp_entry *")
            for j, lse in enumerate(stack):
                e.labels[j] = socket.htonl(lse.encode())  # as on the wire
            e.depth = len(stack)
            tbl.update(i, e)
        rr.update(0, 0)  # so the rotation starts at the first stack
        cfg.update(lib.TB_CFG_N_STACKS, len(stacks))

    def set_recording(self, on: bool, clear: bool = True) -> None:
        """Record key -> stack on the sender (tb_sent) and receiver (tb_received)."""
        if clear:
            self.clear_records()
        self._map("tb_cfg").update(_tb().TB_CFG_RECORD, int(on))

    def clear_records(self) -> None:
        self._map("tb_sent").clear()
        self._map("tb_received").clear()

    @staticmethod
    def _records(m: Any) -> dict[bytes, tuple[int, ...]]:
        from afxdp_proxy._native import ffi

        out = {}
        for key, val in m.items():
            depth = min(int(val.depth), len(val.labels))
            out[bytes(ffi.buffer(key))] = tuple(socket.ntohl(val.labels[i]) for i in range(depth))
        return out

    def sent(self) -> dict[bytes, tuple[int, ...]]:
        """{struct axp_key bytes: label stack entries pushed (Lse.encode() ints), () for plain}."""
        return self._records(self._map("tb_sent"))

    def received(self) -> dict[bytes, tuple[int, ...]]:
        """{struct axp_key bytes: label stack entries the packet arrived with, () for plain IP}."""
        return self._records(self._map("tb_received"))

    def check_chain(self, family: int | None = None) -> ChainCheck:
        """Compare what the sender pushed with what the receiver got (recording must have
        been on); family 4 or 6 keeps only that IP version's packets."""
        sent, received = self.sent(), self.received()
        return ChainCheck({k: (sent[k], received[k]) for k in sent.keys() & received.keys()
                           if family is None or k[1] == family})  # struct axp_key.family

    def _percpu_sums(self, name: str) -> list[int]:
        m = self._map(name)
        return [sum(m.lookup(i) or [0]) for i in range(m.max_entries)]

    def depth_histogram(self) -> dict[int, int]:
        """{stack depth: packets} seen by the receiver's decapsulator (0 = plain IP), nonzero only."""
        sums = self._percpu_sums("tb_depths")
        return {d: n for d, n in enumerate(sums[: _tb().TB_HIST_NOT_IP]) if n}

    def counters(self) -> dict[str, int]:
        """Classifier counters plus the decapsulator's non-IP and unparsable counts."""
        stats = self._percpu_sums("tb_stats")
        lib = _tb()
        names = {getattr(lib, k): k.removeprefix("TB_STAT_").lower() for k in dir(lib) if k.startswith("TB_STAT_TC")}
        out = {names[i]: n for i, n in enumerate(stats) if i in names}
        depths = self._percpu_sums("tb_depths")
        out["decap_not_ip"] = depths[lib.TB_HIST_NOT_IP]
        out["decap_bad"] = depths[lib.TB_HIST_BAD]
        return out

    def reset_counters(self) -> None:
        from afxdp_proxy.bpf import NCPUS, ffi

        zeros = ffi.new("uint64_t[]", NCPUS)
        for name in ("tb_depths", "tb_stats"):
            m = self._map(name)
            for i in range(m.max_entries):
                m.update(i, zeros)

    # ------------------------------------------------------------------ proxy configuration

    def proxy_config(self, backend: str = "kernel", key: str = "hash", **overrides: Any) -> str:
        """TOML for the proxy serving this testbed's SF. Overrides of [[sf]] keys
        (name, label, net_in, ...) go there, anything else into [proxy]."""
        if key == "meta" and self.topology != "inline":
            raise ValueError("key = meta needs the inline topology (skb->mark does not cross namespaces)")
        proxy: dict[str, Any] = {
            "backend": backend,
            "key": key,
            "topology": self.topology,
            "cache_entries": DEFAULT_CACHE_ENTRIES,
            "on_miss": "pass",
        }
        sf: dict[str, Any] = {"name": "fw1", "label": self.sf_label, "net_in": self.net_in, "net_out": self.net_out}
        if self.topology == "attached":
            sf.update(to_sf=self.to_sf, from_sf=self.from_sf, sf_mac=SF_IN.mac)
        sf["next_hop_mac"] = DST0.mac
        sf_keys = {"name", "label", "net_in", "net_out", "to_sf", "from_sf", "sf_mac", "next_hop_mac"}
        for k, v in overrides.items():
            (sf if k in sf_keys else proxy)[k] = v
        lines = ["[proxy]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in proxy.items() if v is not None]
        lines += ["", "[[sf]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in sf.items() if v is not None]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ programs in namespaces

    def popen(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Start argv inside a namespace (role or name); down() stops it if still running."""
        p = netns.popen(self.nsname(ns), argv, **kw)
        self._procs.append(p)
        return p

    def run(self, ns: str, argv: Sequence[str], timeout: float = 30.0, **kw: Any) -> subprocess.CompletedProcess:
        """Run argv inside a namespace to completion (text output captured)."""
        return netns.run(self.nsname(ns), argv, timeout, **kw)

    def ping(
        self, dst: str | None = None, ns: str = "src", count: int = 3, interval: float = 0.1, timeout: float = 1.0
    ) -> traffic.PingResult:
        """Ping dst (default: the receiver's IPv4 address) from ns."""
        return traffic.ping(self.nsname(ns), dst or self.dst_ip, count, interval, timeout)

    def iperf3(self, seconds: float = 3.0, v6: bool = False, **kw: Any) -> traffic.IperfResult:
        """iperf3 from the sender to the receiver (kw: udp, bitrate, length, parallel, ...)."""
        dst = self.dst_ip6 if v6 else self.dst_ip
        return traffic.iperf3(self.ns_src, self.ns_dst, dst, seconds, **kw)


# ---------------------------------------------------------------------- command line


def _pick_prefix(prefix: str | None) -> str:
    saved = Testbed.saved()
    if prefix:
        return prefix
    if len(saved) == 1:
        return saved[0]
    raise SystemExit(
        "afxdp-proxy: error: "
        + ("no testbed is up" if not saved else f"several testbeds ({', '.join(saved)}): pick one with --prefix")
    )


def _cmd(args: Any) -> int:
    if args.action == "up":
        tb = Testbed(args.topology, prefix=args.prefix, ipv6=not args.no_ipv6).up()
        print(f"testbed {tb.prefix} ({tb.topology}) is up: namespaces {', '.join(tb.namespaces)}")
        print(f"  sender {tb.ns_src} {tb.src_if} {tb.src_ip}, receiver {tb.ns_dst} {tb.dst_if} {tb.dst_ip}")
        print(f"  proxy config: afxdp-proxy testbed config --prefix {tb.prefix} > proxy.toml")
        return 0
    if args.action == "down":
        prefixes = Testbed.saved() if args.all else [_pick_prefix(args.prefix)]
        for p in prefixes:
            try:
                tb = Testbed.load(p)
            except (FileNotFoundError, RuntimeError) as e:
                # half-gone testbed: remove whatever still carries its names
                print(f"afxdp-proxy: {e}; removing what is left", file=sys.stderr)
                for name in (f"{p}-{role}" for role in ROLES):
                    if netns.ns_exists(name):
                        netns.delete_ns(name)
                state.remove(_state_name(p))
                continue
            failed = tb.down()
            for f in failed:
                print(f"afxdp-proxy: teardown: {f}", file=sys.stderr)
            print(f"testbed {p} is down")
        return 0
    tb = Testbed.load(_pick_prefix(args.prefix))
    if args.action == "config":
        sys.stdout.write(tb.proxy_config(backend=args.backend, key=args.key))
        return 0
    st = tb.status()
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        print(f"testbed {st['prefix']} ({st['topology']})")
        for name, ok in st["namespaces"].items():
            print(f"  namespace {name}: {'present' if ok else 'MISSING'}")
        for hook, pid in st["programs"].items():
            print(f"  {hook}: {'program ' + str(pid) if pid else 'nothing attached'}")
        print("  classifier: " + ", ".join(f"{k}={v}" for k, v in st["counters"].items()))
        print("  received by depth: " + (", ".join(f"{d}:{n}" for d, n in st["depths"].items()) or "nothing"))
    return 0


def register_cli(sub: Any) -> None:
    """Add ``testbed up|down|status|config`` to the CLI's subparsers."""
    p = sub.add_parser(
        "testbed",
        help="bring the namespace testbed up or down, show its state",
        description="The namespace testbed (see DESIGN.md): it stays up between commands; "
        "its state lives in /run/afxdp-proxy/testbed-<prefix>.json.",
    )
    p.add_argument("action", choices=("up", "down", "status", "config"))
    p.add_argument("--topology", choices=TOPOLOGIES, default="attached", help="for up (default: attached)")
    p.add_argument("--prefix", help="namespace name prefix (up: default random; others: the only testbed)")
    p.add_argument("--no-ipv6", action="store_true", help="for up: IPv4 only")
    p.add_argument("--all", action="store_true", help="for down: every testbed")
    p.add_argument("--json", action="store_true", help="for status: machine-readable")
    p.add_argument("--backend", default="kernel", help="for config (default: kernel)")
    p.add_argument("--key", default="hash", choices=("hash", "meta"), help="for config (default: hash)")
    p.set_defaults(func=_cmd)
