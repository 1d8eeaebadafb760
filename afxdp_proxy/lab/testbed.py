"""The namespace testbed every end-to-end test, the demo and the benchmarks use.

Two topologies (README.md, section "Topologies", shows them from the proxy's side)::

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

Bidirectional (``bidirectional=True``): the receiver's replies are classified
too, by a second copy of the programs (maps of its own) mirrored at the other
end: the receiver gets the same classifier hop (dst0─[dst_cls ⇒ dst_out]── p_out),
its classifier pushes the reverse direction's stacks (top label: the reverse
SF label), and the sender's decapsulator, on src_out, records what arrived::

  src ns [src0]─[src_cls ⇒ src_out] ── [p_in] proxy ns [p_out] ── [dst_out ⇐ dst_cls]─[dst0] dst ns

Plain replies pass the SF as well then (attached: a policy rule sends what
enters on p_out through the SF namespace, in on sf_out, out on sf_in).

The SF (``sf=``, see afxdp_proxy.lab.sfs) forwards, filters (an nftables
stateful firewall) or masquerades (an nftables NAT), in the SF namespace, or
inline in the proxy namespace's own kernel.

Without a proxy, plain IP still flows (the baselines): in ``attached`` a policy
rule sends what enters on p_in through the SF namespace, and the main table
sends what comes back from it (and the return traffic) on by kernel routing.
Labelled packets, on the other hand, die in the proxy namespace (this kernel
has no MPLS routing): only a proxy gets them through.

Every interface name and MAC is fixed (locally administered, derived from the
subnet and host number), so the proxy configuration is deterministic.

Neighbours are permanent entries on every link, except with ``sf_nd`` (attached):
then the SF namespace and the proxy namespace's SF-facing interfaces (p_sf_tx,
p_sf_rx) have link-local addresses and learn each other by neighbour discovery
and ARP, as an SF that routes does; its solicitations for the proxy arrive on
from_sf, where only the proxy's control-plane handling lets them through.
"""

from __future__ import annotations

import argparse
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
from afxdp_proxy.config import BACKENDS, DEFAULT_CACHE_ENTRIES, MAX_QUEUES
from afxdp_proxy.key import MAX_LABELS
from afxdp_proxy.lab import netns, sfs, traffic
from afxdp_proxy.mpls import Lse, make_stack, tx_words

log = logging.getLogger(__name__)

TOPOLOGIES = ("inline", "attached")
ROLES = ("src", "proxy", "sf", "dst")
LINK_MTU = 1600  # room for a deep stack on the links that carry labels
ROUTE_MTU = 1500  # what the sender sizes packets for, before labels
SF_MTU = ROUTE_MTU  # the SF's links carry bare packets (1600 >= 1500 + 16 labels of 4 bytes)
TABLE_VIA_SF = 100  # attached: policy table for traffic that entered on p_in
TABLE_BACK_VIA_SF = 101  # attached, bidirectional: policy table for traffic that entered on p_out
SF_KINDS = sfs.KINDS
REVERSE = "reverse."  # prefix of the reverse direction's programs and maps in map_ids / prog_ids


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
# bidirectional: the receiver's classifier hop, dst0's peer and the veth facing p_out
DST_CLS = End("dst", "dst_cls", 2, 2)
DST_OUT = End("dst", "dst_out", 2, 3)

# IP links: addresses on both ends, each end a permanent neighbour of the other
LINKS = {
    "inline": [(SRC0, P_IN), (P_OUT, DST0)],
    "attached": [(SRC0, P_IN), (P_OUT, DST0), (P_SF_TX, SF_IN), (SF_OUT, P_SF_RX)],
}


def wires(topology: str, bidirectional: bool) -> list[tuple[End, End]]:
    """veth pairs: the IP links, except that src0 reaches p_in through the classifier hop,
    and dst0 reaches p_out through one of its own when bidirectional."""
    links = LINKS[topology]
    dst = [(DST0, DST_CLS), (DST_OUT, P_OUT)] if bidirectional else [links[1]]
    return [(SRC0, SRC_CLS), (SRC_OUT, P_IN), *dst, *links[2:]]


@dataclass(frozen=True)
class ChainCheck:
    """Packets recorded at both ends: {key: (stack pushed, stack received)}. A packet kept
    its stack when it arrived with the pushed one minus the top (the SF's) label, the TTL of
    the label exposed on top as the proxy's ttl_model says (mpls.tx_stack)."""

    pairs: dict[bytes, tuple[tuple[int, ...], tuple[int, ...]]]
    ttl_model: str = "uniform"

    @property
    def compared(self) -> int:
        return len(self.pairs)

    @property
    def wrong(self) -> dict[bytes, tuple[tuple[int, ...], tuple[int, ...]]]:
        return {k: (s, r) for k, (s, r) in self.pairs.items() if r != tx_words(s, self.ttl_model)}

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
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
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
        sf_nd: bool = False,
        sf: str = "forward",
        bidirectional: bool = False,
        reverse_label: int | None = None,
    ) -> None:
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {TOPOLOGIES}, not {topology!r}")
        if sf not in SF_KINDS:
            raise ValueError(f"sf must be one of {SF_KINDS}, not {sf!r}")
        self.topology = topology
        self.sf = sf  # what the SF does: sfs.KINDS
        self.bidirectional = bidirectional
        self.reverse_label = sf_label + 1 if reverse_label is None else reverse_label
        self.prefix = prefix or f"axp-{uuid.uuid4().hex[:6]}"
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", self.prefix):
            raise ValueError(f"bad prefix {self.prefix!r}: 1 to 40 of A-Z, a-z, 0-9, '_', '.' and '-'")
        self.ipv6 = ipv6
        self.sf_label = sf_label
        if queues is not None and not 1 <= queues <= MAX_QUEUES:
            raise ValueError(f"queues must be in 1..{MAX_QUEUES}, not {queues}")
        self.queues = queues  # RX and TX queues of every veth (as many as a proxy serves); None: the kernel's default
        if sf_nd and topology != "attached":
            raise ValueError("sf_nd (--sf-nd) needs the attached topology (the SF's own namespace)")
        self.sf_nd = sf_nd  # the SF's links learn neighbours by ND / ARP, not permanent entries
        self.links = LINKS[topology]
        self.wires = wires(topology, bidirectional)
        # namespace names, by role; no SF namespace inline (the proxy's kernel is the SF)
        self.ns_src = f"{self.prefix}-src"
        self.ns_proxy = f"{self.prefix}-proxy"
        self.ns_sf = f"{self.prefix}-sf" if topology == "attached" else None
        self.ns_dst = f"{self.prefix}-dst"
        # interfaces
        self.src_if, self.dst_if = SRC0.ifname, DST0.ifname
        # the sender's wire side (peer of p_in): raw frames sent here skip the classifier;
        # the receiver's (peer of p_out): dst_out when bidirectional, else dst0 itself
        self.src_wire = SRC_OUT.ifname
        self.dst_wire = DST_OUT.ifname if bidirectional else DST0.ifname
        self.net_in, self.net_out = P_IN.ifname, P_OUT.ifname
        self.to_sf = P_SF_TX.ifname if topology == "attached" else None
        self.from_sf = P_SF_RX.ifname if topology == "attached" else None
        self.sf_in = SF_IN.ifname if topology == "attached" else None
        self.sf_out = SF_OUT.ifname if topology == "attached" else None
        # where the SF's rules live: its own namespace, or the proxy's kernel inline
        self.ns_sf_rules = self.ns_sf or self.ns_proxy
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
        for end in (SRC_CLS, SRC_OUT, *((DST_CLS, DST_OUT) if self.bidirectional else ())):
            self.ns(end.role).link_up(end.ifname)
        self._routes()
        self._sf_rules()
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
        # The same for the receiver's own link when it sends through a classifier too.
        mtu = SF_MTU if "sf" in (a.role, b.role) else LINK_MTU
        if self.queues is None or a in (SRC0, DST0):
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
        if end in (P_IN, SF_IN) or (self.bidirectional and end in (P_OUT, SF_OUT)):
            # GRO behind an XDP program (the proxy's on p_in, tb_xdp_pass on sf_in; on p_out
            # and sf_out for the reverse direction) would merge bare packets whose stacks
            # differ; the TX side must relabel them one by one
            feats["rx-gro"] = False
        self.ns(end.role).set_features(end.ifname, **feats)

    def _configure_end(self, end: End, peer: End) -> None:
        ns = self.ns(end.role)
        learn = self.sf_nd and "sf" in (end.role, peer.role)
        if learn and self.ipv6:
            # a link-local address (EUI-64) when the link comes up: neighbour solicitations for
            # forwarded packets need one to come from (the testbed's default is none)
            ns.sysctl(f"net.ipv6.conf.{end.ifname}.addr_gen_mode", 0)
        ns.add_address(end.ifname, f"{end.ip4}/24")
        if self.ipv6:
            ns.add_address(end.ifname, f"{end.ip6}/64")
        ns.link_up(end.ifname)
        if learn:
            return  # neighbour discovery (IPv6) and ARP (IPv4) find the peer
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
        self._route(SF_IN, SRC0.net, P_SF_TX)  # for replies, and ICMP errors the SF sends back
        if self.bidirectional:
            # the reverse direction: what enters on p_out goes through the SF the other way
            self._route(P_SF_RX, SRC0.net, SF_OUT, table=TABLE_BACK_VIA_SF)
            proxy.add_rule(TABLE_BACK_VIA_SF, 101, iifname=P_OUT.ifname, family=4)
            if self.ipv6:
                proxy.add_rule(TABLE_BACK_VIA_SF, 101, iifname=P_OUT.ifname, family=6)
        # replies to the SF's own address (a NAT's, masquerading on sf_out) go back the way
        # they came: the proxy namespace has that subnet connected on p_sf_rx
        self._route(DST0, SF_OUT.net, P_OUT, mtu=ROUTE_MTU)

    def set_sf(self, sf: str) -> None:
        """Make the SF another kind (sfs.KINDS): its rules replaced at once, in place."""
        if sf not in SF_KINDS:
            raise ValueError(f"sf must be one of {SF_KINDS}, not {sf!r}")
        if self.sf != "forward":
            sfs.unload(self.ns_sf_rules)
        self.sf = sf
        self._sf_rules()
        self.save_state()

    def _sf_rules(self) -> None:
        """The SF's nftables rules (sfs.py): in the SF namespace, or the proxy's inline."""
        if self.sf == "firewall":
            v6 = (f"fd00:0:0:{SRC0.net}::/64", f"fd00:0:0:{DST0.net}::/64") if self.ipv6 else (None, None)
            sfs.load(self.ns_sf_rules, sfs.firewall_rules(f"10.0.{SRC0.net}.0/24", f"10.0.{DST0.net}.0/24", *v6))
        elif self.sf == "nat":
            sfs.load(self.ns_sf_rules, sfs.nat_rules(SF_OUT.ifname if self.ns_sf else P_OUT.ifname))

    def _load_programs(self) -> None:
        # The classifier sits behind src0, not on its egress: TCP hands TC egress GSO skbs
        # whatever the device's offloads (the kernel forces GSO on for TCP sockets), and a
        # stack pushed there would be one stack for many packets that software segmentation
        # cannot even parse. src0 segments in software (no TSO); src_cls's ingress then sees
        # each packet, labels it and sends it on out of src_out; tb_tc_return brings the
        # return traffic back to src0. Bidirectional, a second copy (maps of its own) does
        # the same at the receiver, and its decapsulator sits on the sender's src_out.
        # A veth delivers XDP_REDIRECTed frames only while its peer runs NAPI: tb_xdp_pass
        # on the SF's side of the links the proxy redirects into (sf_in; sf_out in reverse).
        dst_decap = (DST_OUT if self.bidirectional else DST0).ifname
        sf_in = [("sf", SF_IN.ifname)] if self.ns_sf else []
        self._load_direction("", ("src", SRC_CLS.ifname), ("src", SRC_OUT.ifname), ("dst", dst_decap), sf_in)
        if self.bidirectional:
            sf_out = [("sf", SF_OUT.ifname)] if self.ns_sf else []
            self._load_direction(REVERSE, ("dst", DST_CLS.ifname), ("dst", DST_OUT.ifname),
                                 ("src", SRC_OUT.ifname), sf_out)
        # the attached programs keep the maps alive; reopen them by id so this works
        # the same for a testbed loaded from its state file
        self._open_maps()

    def _load_direction(self, prefix: str, classify: tuple[str, str], back: tuple[str, str],
                        decap: tuple[str, str], napi: list[tuple[str, str]]) -> None:
        """One copy of testbed.bpf.o for one direction: its classifier on TC ingress of the
        sending end's classifier hop, sending on out of the wire side, whose TC ingress brings
        the traffic coming back to the sender; its decapsulator on the receiving end; an
        XDP_PASS on the interfaces (role, name) in napi."""
        from afxdp_proxy import bpf

        (cls_role, cls_if), (back_role, back_if), (decap_role, decap_if) = classify, back, decap
        with bpf.BpfObject(bpf.object_path("testbed")) as obj:
            obj.load()
            for name in ("tb_tc_classify", "tb_tc_return", "tb_xdp_decap", "tb_xdp_pass"):
                self.prog_ids[prefix + name] = obj.prog_id(name)
            cfg = obj.map("tb_cfg", "uint32_t", "uint32_t")
            cfg.update(_tb().TB_CFG_FWD_IFINDEX, self.ifindex(back_role, back_if))
            cfg.update(_tb().TB_CFG_BACK_IFINDEX, self.ifindex(cls_role, cls_if))
            with netns.enter(self.nsname(cls_role)):
                bpf.tc_attach(self.ifindex(cls_role, cls_if), obj.prog_fd("tb_tc_classify"), egress=False)
                bpf.tc_attach(self.ifindex(back_role, back_if), obj.prog_fd("tb_tc_return"), egress=False)
            with netns.enter(self.nsname(decap_role)):
                bpf.xdp_attach(self.ifindex(decap_role, decap_if), obj.prog_fd("tb_xdp_decap"))
            for role, ifname in napi:
                with netns.enter(self.nsname(role)):
                    bpf.xdp_attach(self.ifindex(role, ifname), obj.prog_fd("tb_xdp_pass"))
            for name, kt, vt in self._map_types():
                self.map_ids[prefix + name] = obj.map(name, kt, vt).id

    @staticmethod
    def _map_types() -> list[tuple[str, str, str]]:
        return [
            ("tb_cfg", "uint32_t", "uint32_t"),
            ("tb_stacks", "uint32_t", "struct axp_entry"),
            ("tb_rr", "uint32_t", "uint64_t"),
            ("tb_sent", "struct axp_key", "struct axp_entry"),
            ("tb_received", "struct axp_key", "struct axp_entry"),
            ("tb_depths", "uint32_t", "uint64_t"),
            ("tb_gen_depths", "uint32_t", "uint64_t"),
            ("tb_stats", "uint32_t", "uint64_t"),
        ]

    def _open_maps(self) -> None:
        from afxdp_proxy import bpf

        for prefix in self._directions():
            for name, kt, vt in self._map_types():
                m = bpf.Map.from_id(self.map_ids[prefix + name], kt, vt)
                self._maps[prefix + name] = m
                self._reg.defer(f"close map {prefix}{name}", m.close)

    def _directions(self) -> tuple[str, ...]:
        """Map and program name prefixes of the directions classified: "", and REVERSE."""
        return ("", REVERSE) if self.bidirectional else ("",)

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
            self.forget_kept()
        self._owned = False
        self.is_up = False
        return failed

    def forget_kept(self) -> list[str]:
        """Drop what proxies named after this testbed kept (see forget_kept)."""
        return forget_kept(self.prefix)

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
            "sf_nd": self.sf_nd,
            "sf": self.sf,
            "bidirectional": self.bidirectional,
            "reverse_label": self.reverse_label,
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
                 queues=data.get("queues"), sf_nd=data.get("sf_nd", False), sf=data.get("sf", "forward"),
                 bidirectional=data.get("bidirectional", False), reverse_label=data.get("reverse_label"))
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
        checks = [("src", SRC_CLS.ifname, "tc"), ("src", SRC_OUT.ifname, "tc"), ("dst", self.dst_wire, "xdp")]
        if self.bidirectional:
            checks += [("dst", DST_CLS.ifname, "tc"), ("dst", DST_OUT.ifname, "tc"), ("src", SRC_OUT.ifname, "xdp")]
        if self.ns_sf:
            checks += [("sf", SF_IN.ifname, "xdp")] + ([("sf", SF_OUT.ifname, "xdp")] if self.bidirectional else [])
        for role, ifname, kind in checks:
            name = self.nsname(role)
            if not netns.ns_exists(name):
                continue
            with netns.enter(name):
                idx = self.ifindex(role, ifname)
                hooks[f"{role}/{ifname}/{kind}"] = (
                    bpf.tc_prog_id(idx, egress=False) if kind == "tc" else bpf.xdp_prog_id(idx)
                )
        out = {
            "prefix": self.prefix,
            "topology": self.topology,
            "sf": self.sf,
            "bidirectional": self.bidirectional,
            "sender": {"namespace": self.ns_src, "interface": self.src_if, "ipv4": self.src_ip,
                       "ipv6": self.src_ip6 if self.ipv6 else None},
            "receiver": {"namespace": self.ns_dst, "interface": self.dst_if, "ipv4": self.dst_ip,
                         "ipv6": self.dst_ip6 if self.ipv6 else None},
            "namespaces": {n: netns.ns_exists(n) for n in self.namespaces},
            "programs": hooks,
            "stacks": [_stack_text(st) for st in self.stacks()] if self._maps else [],
            "counters": self.counters() if self._maps else {},
            "depths": self.depth_histogram() if self._maps else {},
        }
        if self.bidirectional:
            out["reverse"] = {"stacks": [_stack_text(st) for st in self.stacks(reverse=True)] if self._maps else [],
                              "counters": self.counters(reverse=True) if self._maps else {},
                              "depths": self.depth_histogram(reverse=True) if self._maps else {}}
        if self.sf != "forward" and netns.ns_exists(self.ns_sf_rules):
            out["sf_ruleset"] = sfs.ruleset(self.ns_sf_rules)
        return out

    # ------------------------------------------------------------------ classifier and records
    # Every call takes reverse=True for the reverse direction of a bidirectional testbed: the
    # receiver's classifier (its replies) and the sender's decapsulator.

    def _map(self, name: str, reverse: bool = False) -> Any:
        if reverse and not self.bidirectional:
            raise ValueError("the reverse direction is classified only in a bidirectional testbed "
                             "(testbed up --bidirectional)")
        key = (REVERSE if reverse else "") + name
        if key not in self._maps:
            raise RuntimeError("the testbed is not up")
        return self._maps[key]

    def set_stacks(self, stacks: Sequence[Sequence[Lse]], reverse: bool = False) -> None:
        """Stacks the sender's classifier (reverse: the receiver's) pushes, rotating per
        packet from the first. [] sends plain IP (the no-label baseline); an empty stack in
        the list sends that packet plain."""
        from afxdp_proxy._native import ffi, lib

        if len(stacks) > lib.AXP_MAX_STACKS:
            raise ValueError(f"at most {lib.AXP_MAX_STACKS} stacks, got {len(stacks)}")
        cfg, tbl, rr = (self._map(n, reverse) for n in ("tb_cfg", "tb_stacks", "tb_rr"))
        cfg.update(lib.TB_CFG_N_STACKS, 0)  # stop pushing while the table changes
        for i, stack in enumerate(stacks):
            if len(stack) > lib.AXP_MAX_LABELS:
                raise ValueError(f"stack {i + 1} has {len(stack)} labels; at most {lib.AXP_MAX_LABELS}")
            e = ffi.new("struct axp_entry *")
            for j, lse in enumerate(stack):
                e.labels[j] = socket.htonl(lse.encode())  # as on the wire
            e.depth = len(stack)
            tbl.update(i, e)
        rr.update(0, 0)  # so the rotation starts at the first stack
        cfg.update(lib.TB_CFG_N_STACKS, len(stacks))

    def stacks(self, reverse: bool = False) -> list[list[Lse]]:
        """The stacks the classifier pushes now, in rotation order (set_stacks read back)."""
        from afxdp_proxy._native import lib

        n = int(self._map("tb_cfg", reverse).lookup(lib.TB_CFG_N_STACKS) or 0)
        tbl = self._map("tb_stacks", reverse)
        out = []
        for i in range(min(n, lib.AXP_MAX_STACKS)):
            e = tbl.lookup(i)
            out.append([Lse.decode(socket.ntohl(e.labels[j])) for j in range(min(int(e.depth), lib.AXP_MAX_LABELS))])
        return out

    def set_recording(self, on: bool, clear: bool = True) -> None:
        """Record key -> stack where each direction is classified (tb_sent) and where it
        arrives (tb_received): both directions of a bidirectional testbed."""
        if clear:
            self.clear_records()
        for prefix in self._directions():
            self._map(prefix + "tb_cfg").update(_tb().TB_CFG_RECORD, int(on))

    def clear_records(self) -> None:
        for prefix in self._directions():
            self._map(prefix + "tb_sent").clear()
            self._map(prefix + "tb_received").clear()

    @staticmethod
    def _records(m: Any) -> dict[bytes, tuple[int, ...]]:
        from afxdp_proxy._native import ffi

        out = {}
        for key, val in m.items():
            depth = min(int(val.depth), len(val.labels))
            out[bytes(ffi.buffer(key))] = tuple(socket.ntohl(val.labels[i]) for i in range(depth))
        return out

    def sent_mixed(self, reverse: bool = False) -> set[bytes]:
        """Keys sent more than once with different stacks (TB_REC_MIXED): identical packets whose
        own stacks no one can tell apart at the receiver."""
        from afxdp_proxy._native import ffi

        mixed = _tb().TB_REC_MIXED
        return {bytes(ffi.buffer(k)) for k, v in self._map("tb_sent", reverse).items() if int(v.sf) == mixed}

    def sent(self, reverse: bool = False) -> dict[bytes, tuple[int, ...]]:
        """{struct axp_key bytes: label stack entries pushed (Lse.encode() ints), () for plain}."""
        return self._records(self._map("tb_sent", reverse))

    def received(self, reverse: bool = False) -> dict[bytes, tuple[int, ...]]:
        """{struct axp_key bytes: label stack entries the packet arrived with, () for plain IP}."""
        return self._records(self._map("tb_received", reverse))

    def received_tags(self, reverse: bool = False) -> dict[bytes, tuple[tuple[int, int], ...]]:
        """{struct axp_key bytes: the VLAN tags the packet arrived with, (TPID, TCI) outermost first}."""
        from afxdp_proxy._native import ffi
        from afxdp_proxy.key import ETH_P_8021AD, ETH_P_8021Q

        out = {}
        for key, val in self._map("tb_received", reverse).items():
            v = val.vlans
            out[bytes(ffi.buffer(key))] = tuple((ETH_P_8021AD if v.ad >> i & 1 else ETH_P_8021Q, socket.ntohs(v.tci[i]))
                                                for i in range(min(int(v.n), len(v.tci))))
        return out

    def check_chain(self, family: int | None = None, ttl_model: str = "uniform", reverse: bool = False) -> ChainCheck:
        """Compare what was pushed with what arrived, in one direction (recording must have
        been on); family 4 or 6 keeps only that IP version's packets."""
        sent, received, mixed = self.sent(reverse), self.received(reverse), self.sent_mixed(reverse)
        return ChainCheck({k: (sent[k], received[k]) for k in (sent.keys() & received.keys()) - mixed
                           if family is None or k[1] == family}, ttl_model)  # struct axp_key.family

    def _percpu_sums(self, name: str, reverse: bool = False) -> list[int]:
        m = self._map(name, reverse)
        return [sum(m.lookup(i) or [0]) for i in range(m.max_entries)]

    def depth_histogram(self, reverse: bool = False) -> dict[int, int]:
        """{stack depth: packets} seen by the receiver's decapsulator (reverse: the sender's;
        0 = plain IP), nonzero only."""
        sums = self._percpu_sums("tb_depths", reverse)
        return {d: n for d, n in enumerate(sums[: _tb().TB_HIST_NOT_IP]) if n}

    def generator_histogram(self) -> dict[int, int]:
        """depth_histogram of the packet generator's frames alone (UDP over IPv4 to
        lib.GEN_UDP_DPORT, bench/gen.py): what else arrives meanwhile (a TCP test's
        late segments, neighbour discovery) is not counted."""
        return {d: n for d, n in enumerate(self._percpu_sums("tb_gen_depths")) if n}

    def link_drops(self, a: End, b: End) -> int:
        """Frames the veth from a to b dropped so far (a's tx_dropped, b's rx_dropped): a veth
        whose peer runs XDP queues frames in a 256-slot ring and drops when it is full
        (drivers/net/veth.c), after the program that sent them counted them sent on."""
        return self.ns(a.role).link_stats(a.ifname).get("tx_dropped", 0) + self.ns(b.role).link_stats(
            b.ifname
        ).get("rx_dropped", 0)

    def delivery_drops(self) -> int:
        """link_drops from the proxy to the receiver (p_out to dst0)."""
        return self.link_drops(P_OUT, DST0)

    def sf_drops(self) -> int:
        """link_drops on the way to the SF and back (attached; 0 inline, where the proxy's
        kernel is the SF)."""
        if self.topology != "attached":
            return 0
        return self.link_drops(P_SF_TX, SF_IN) + self.link_drops(SF_OUT, P_SF_RX)

    def counters(self, reverse: bool = False) -> dict[str, int]:
        """Classifier counters plus the decapsulator's non-IP and unparsable counts."""
        stats = self._percpu_sums("tb_stats", reverse)
        lib = _tb()
        names = {getattr(lib, k): k.removeprefix("TB_STAT_").lower() for k in dir(lib) if k.startswith("TB_STAT_TC")}
        out = {names[i]: n for i, n in enumerate(stats) if i in names}
        depths = self._percpu_sums("tb_depths", reverse)
        out["decap_not_ip"] = depths[lib.TB_HIST_NOT_IP]
        out["decap_bad"] = depths[lib.TB_HIST_BAD]
        return out

    def reset_counters(self) -> None:
        from afxdp_proxy.bpf import NCPUS, ffi

        zeros = ffi.new("uint64_t[]", NCPUS)
        for prefix in self._directions():
            for name in ("tb_depths", "tb_gen_depths", "tb_stats"):
                m = self._map(prefix + name)
                for i in range(m.max_entries):
                    m.update(i, zeros)

    # ------------------------------------------------------------------ the SF

    def sf_dropped(self) -> int:
        """Packets the firewall SF dropped (0 for the other kinds)."""
        return sfs.dropped(self.ns_sf_rules) if self.sf == "firewall" else 0

    # ------------------------------------------------------------------ proxy configuration

    def proxy_config(self, backend: str = "kernel", key: str = "hash",
                     reverse: bool | dict[str, Any] | None = None, **overrides: Any) -> str:
        """TOML for the proxy serving this testbed's SF. Overrides of [[sf]] keys
        (name, label, net_in, ..., static_stack) go there, anything else into [proxy].
        reverse: the [sf.reverse] table (True: this testbed's reverse label and MACs; a
        dict: those with its keys overriding; False: none); by default when bidirectional."""
        if key == "meta" and self.topology != "inline":
            raise ValueError("key = meta needs the inline topology (skb->mark does not cross namespaces): "
                             "a testbed from testbed up --topology inline")
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
        sf_keys = {"name", "label", "net_in", "net_out", "to_sf", "from_sf", "sf_mac", "next_hop_mac", "static_stack",
                   "vlan_in", "vlan_out"}
        for k, v in overrides.items():
            (sf if k in sf_keys else proxy)[k] = v
        if reverse is None:
            reverse = self.bidirectional
        back: dict[str, Any] = {}
        if reverse is not False:
            # the interfaces are the forward direction's, swapped (config.py); the MACs its own
            back = {"label": self.reverse_label}
            if self.topology == "attached":
                back["sf_mac"] = SF_OUT.mac
            back["next_hop_mac"] = SRC0.mac
            back.update(reverse if isinstance(reverse, dict) else {})
        lines = ["[proxy]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in proxy.items() if v is not None]
        lines += ["", "[[sf]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in sf.items() if v is not None]
        if back:
            lines += ["", "[sf.reverse]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in back.items() if v is not None]
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


def forget_kept(prefix: str) -> list[str]:
    """Drop what proxies named after a testbed (<prefix>-...) kept with --keep-cache, where no
    proxy of that name runs to use it: nothing of a testbed outlives it. Returns the names."""
    from afxdp_proxy import keep

    names = [n for n in keep.kept() if n.startswith(f"{prefix}-") and n not in state.running()]
    for name in names:
        keep.forget(name)
    return names


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


def parse_stack(text: str) -> list[Lse]:
    """A stack as the testbed CLI takes it: labels top first, separated by "/" ("1000/2000/3000");
    "-" sends that packet as plain IP. TC 0, TTL 64, S on the last."""
    if text == "-":
        return []
    try:
        labels = [int(x) for x in text.split("/")]
    except ValueError:
        raise ValueError(f"{text!r} is not labels separated by '/', e.g. 1000/2000/3000 (or - for plain IP)") \
            from None
    if any(not 0 <= lab < 1 << 20 for lab in labels):
        raise ValueError(f"{text!r}: a label is not in 0..1048575")
    return make_stack(labels)


def _foreign_option(args: Any) -> str | None:
    """The first option given that args.action does not take, as an error line, or None
    (args.action_options: (dest, flag, actions, default) of the options only some actions
    take, which the parser leaves out of args unless given)."""
    for dest, flag, actions, _ in args.action_options:
        if args.action not in actions and hasattr(args, dest):
            return f"testbed {args.action}: {flag} is for {' and '.join(sorted(actions))} only; leave it out"
    if args.stacks and args.action != "stacks":
        return f"testbed {args.action}: takes no stacks ({' '.join(args.stacks)}); they are for testbed stacks"
    if args.action == "down" and getattr(args, "all", False) and args.prefix:
        return "testbed down: --all takes every testbed down, --prefix one; give one of them"
    return None


def _fill_defaults(args: Any) -> None:
    """The defaults of the options only some actions take, where not given."""
    for dest, _, _, default in args.action_options:
        if not hasattr(args, dest):
            setattr(args, dest, default)


def _stack_text(stack: Sequence[Lse]) -> str:
    """A stack as `testbed stacks` takes it: labels top first, '/' between; '-' for none."""
    return "/".join(str(e.label) for e in stack) or "-"


def _endpoints(tb: Testbed) -> str:
    """The sender's and receiver's namespaces, interfaces and addresses, one line."""
    v6 = f" {tb.src_ip6}" if tb.ipv6 else ""
    v6_dst = f" {tb.dst_ip6}" if tb.ipv6 else ""
    return f"  sender {tb.ns_src} {tb.src_if} {tb.src_ip}{v6}, receiver {tb.ns_dst} {tb.dst_if} {tb.dst_ip}{v6_dst}"


def _cmd(args: Any) -> int:
    foreign = _foreign_option(args)
    if foreign:
        print(f"afxdp-proxy: error: {foreign}", file=sys.stderr)
        return 2
    _fill_defaults(args)
    if args.action == "up":
        if args.prefix and args.prefix in Testbed.saved():
            print(f"afxdp-proxy: error: --prefix: a testbed {args.prefix!r} is up already; take it down first "
                  f"(afxdp-proxy testbed down --prefix {args.prefix}) or pick another prefix", file=sys.stderr)
            return 2
        try:
            tb = Testbed(args.topology, prefix=args.prefix, ipv6=not args.no_ipv6, sf=args.sf,
                         bidirectional=args.bidirectional, sf_nd=args.sf_nd)
        except ValueError as e:  # options that do not go together
            print(f"afxdp-proxy: error: {e}", file=sys.stderr)
            return 2
        try:
            tb.up()
        except FileExistsError as e:  # namespaces of that prefix, without a state file
            print(f"afxdp-proxy: error: --prefix: {e}", file=sys.stderr)
            return 2
        both = ", both directions classified" if tb.bidirectional else ""
        print(f"testbed {tb.prefix} ({tb.topology}, SF {tb.sf}{both}) is up: namespaces {', '.join(tb.namespaces)}")
        print(_endpoints(tb))
        print(f"  proxy config: afxdp-proxy testbed config --prefix {tb.prefix} > proxy.toml")
        return 0
    if args.action == "down":
        prefixes = Testbed.saved() if args.all else [_pick_prefix(args.prefix)]
        for p in prefixes:
            try:
                tb = Testbed.load(p)
            except (FileNotFoundError, RuntimeError) as e:
                if isinstance(e, FileNotFoundError) and not any(netns.ns_exists(f"{p}-{r}") for r in ROLES):
                    up = ", ".join(Testbed.saved()) or "none"
                    print(f"afxdp-proxy: error: --prefix: no testbed {p!r} is up, nor any of its namespaces "
                          f"(testbeds up: {up})", file=sys.stderr)
                    return 1
                # half-gone testbed: remove whatever still carries its names
                print(f"afxdp-proxy: {e}; removing what is left", file=sys.stderr)
                for name in (f"{p}-{role}" for role in ROLES):
                    if netns.ns_exists(name):
                        netns.delete_ns(name)
                state.remove(_state_name(p))
                forget_kept(p)
                continue
            failed = tb.down()
            for f in failed:
                print(f"afxdp-proxy: teardown: {f}", file=sys.stderr)
            print(f"testbed {p} is down")
        return 0
    tb = Testbed.load(_pick_prefix(args.prefix))
    if args.action == "config":
        if args.backend == "afxdp" and tb.topology != "attached":
            print(f"afxdp-proxy: error: --backend afxdp: testbed {tb.prefix} is {tb.topology}; the afxdp backend "
                  "needs an attached testbed (testbed up --topology attached)", file=sys.stderr)
            return 2
        try:
            # static: it pushes one fixed stack below the SF's label; this one until the operator sets theirs
            extra = {"static_stack": STATIC_STACK} if args.backend == "static" else {}
            sys.stdout.write(tb.proxy_config(backend=args.backend, key=args.key, **extra))
        except ValueError as e:
            print(f"afxdp-proxy: error: --key {args.key}: {e}", file=sys.stderr)
            return 2
        return 0
    if args.action == "stacks":
        try:
            stacks = [parse_stack(text) for text in args.stacks]
            tb.set_stacks(stacks, reverse=args.reverse)
        except ValueError as e:
            print(f"afxdp-proxy: error: stacks: {e}", file=sys.stderr)
            return 2
        side = "receiver's (reverse)" if args.reverse else "sender's"
        shown = ", ".join(_stack_text(s) for s in stacks)
        print(f"testbed {tb.prefix}: the {side} classifier pushes " +
              (f"{shown}, rotating per packet" if stacks else "nothing: plain IP"))
        return 0
    st = tb.status()
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        both = ", both directions classified" if st["bidirectional"] else ""
        print(f"testbed {st['prefix']} ({st['topology']}, SF {st['sf']}{both})")
        print(_endpoints(tb))
        for name, ok in st["namespaces"].items():
            print(f"  namespace {name}: {'present' if ok else 'MISSING'}")
        for hook, pid in st["programs"].items():
            print(f"  {hook}: {'program ' + str(pid) if pid else 'nothing attached'}")
        print("  classifier pushes: " + (", ".join(st["stacks"]) + ", rotating per packet" if st["stacks"]
                                          else "nothing: plain IP"))
        print("  classifier: " + ", ".join(f"{k}={v}" for k, v in st["counters"].items()))
        print("  received by depth: " + (", ".join(f"{d}:{n}" for d, n in st["depths"].items()) or "nothing"))
        if "reverse" in st:
            rev = st["reverse"]
            print("  reverse classifier pushes: "
                  + (", ".join(rev["stacks"]) if rev["stacks"] else "nothing: plain IP"))
            print("  reverse classifier: " + ", ".join(f"{k}={v}" for k, v in rev["counters"].items()))
            print("  reverse received by depth: "
                  + (", ".join(f"{d}:{n}" for d, n in rev["depths"].items()) or "nothing"))
        if st.get("sf_ruleset"):
            print("  SF rules:\n" + "\n".join("    " + line for line in st["sf_ruleset"].splitlines()))
    return 0


STATIC_STACK = [2000, 3000]  # what `testbed config --backend static` pushes below the SF's label


# what each action does, for `testbed --help` and `testbed ACTION --help`
ACTIONS = {
    "up": "create a testbed: namespaces, veths, SF, classifier (it stays up)",
    "down": "remove a testbed: namespaces, programs, pins and state file",
    "status": "show its addresses, namespaces, programs, stacks, counters",
    "config": "print a proxy configuration (TOML) for `afxdp-proxy run`",
    "stacks": "set the label stacks the sender's classifier pushes in turn",
}
MAX_STACKS = 16  # AXP_MAX_STACKS (tests hold the two alike): the classifier's, without loading the extension
STACKS_HELP = ("what the classifier pushes, rotating per packet: labels top first, separated by '/' "
               f"(1000/2000/3000: the SF's label, 1000, first), - for plain IP; at most {MAX_STACKS} stacks of "
               f"at most {MAX_LABELS} labels; none given: plain IP only")


def _options() -> list[tuple[tuple[str, ...], dict[str, Any], frozenset[str] | None]]:
    """Every option of `testbed`: (flags, add_argument keywords, the actions that take it; None: all)."""
    static = "/".join(map(str, STATIC_STACK))
    return [
        (("--prefix",), {"help": "namespace name prefix (up: default a random one; the other actions: default "
                         "the one testbed that is up)"}, None),
        (("--topology",), {"choices": TOPOLOGIES, "default": "attached", "help": "for up (default: attached)"},
         frozenset({"up"})),
        (("--no-ipv6",), {"action": "store_true", "help": "for up: IPv4 only"}, frozenset({"up"})),
        (("--sf-nd",), {"action": "store_true", "help": "for up (attached): the SF's links learn neighbours by ND "
                        "and ARP, not permanent entries"}, frozenset({"up"})),
        (("--sf",), {"choices": SF_KINDS, "default": "forward", "help": "for up: what the SF does: forward (kernel "
                     "routing), firewall (nftables, stateful: new flows only from sender to receiver), nat (nftables "
                     "masquerade) (default: forward)"}, frozenset({"up"})),
        (("--bidirectional",), {"action": "store_true", "help": "for up: classify the receiver's replies too (the "
                                "reverse direction, label + 1), decapsulate and record them at the sender; config "
                                "then adds [sf.reverse]"}, frozenset({"up"})),
        (("--all",), {"action": "store_true", "help": "for down: every testbed"}, frozenset({"down"})),
        (("--json",), {"action": "store_true", "help": "for status: machine-readable"}, frozenset({"status"})),
        (("--backend",), {"default": "kernel", "choices": BACKENDS, "help": "for config (default: kernel; static "
                          f"pushes {static} below the SF's label)"}, frozenset({"config"})),
        (("--key",), {"default": "hash", "choices": ("hash", "meta"), "help": "for config (default: hash)"},
         frozenset({"config"})),
        (("--reverse",), {"action": "store_true", "help": "for stacks: the receiver's classifier (bidirectional)"},
         frozenset({"stacks"})),
    ]


class _ActionHelp(argparse.Action):
    """-h/--help: after an action (`testbed up --help`), that action's options only; else all."""

    def __init__(self, option_strings: list[str], helps: dict[str, argparse.ArgumentParser],
                 dest: str = argparse.SUPPRESS, default: Any = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, default=default, nargs=0, help=help)
        self.helps = helps

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        self.helps.get(getattr(namespace, "action", None), parser).print_help()
        parser.exit()


def register_cli(sub: Any) -> None:
    """Add ``testbed up|down|status|config|stacks`` to the CLI's subparsers: one parser for every
    action (an option an action does not take is refused in _cmd, in one line), and a help of
    its own for each action."""
    actions = "\n".join(f"  {name:8} {text}" for name, text in ACTIONS.items())
    p = sub.add_parser(
        "testbed", add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="bring the namespace testbed up or down, show its state",
        description="The namespace testbed (README, section Testbed, demo, tests): it stays up between\n"
        "commands; its state lives in /run/afxdp-proxy/testbed-<prefix>.json.\n\n"
        f"actions:\n{actions}\n\nafxdp-proxy testbed ACTION --help: that action's options only.",
    )
    helps = {name: argparse.ArgumentParser(prog=f"{p.prog} {name}", description=text, add_help=False)
             for name, text in ACTIONS.items()}
    for hp in (p, *helps.values()):
        hp.add_argument("-h", "--help", action=_ActionHelp, helps=helps, help="show this help message and exit")
    p.add_argument("action", choices=tuple(ACTIONS))
    p.add_argument("stacks", nargs="*", default=[], metavar="STACK", help="for stacks: " + STACKS_HELP)
    helps["stacks"].add_argument("stacks", nargs="*", metavar="STACK", help=STACKS_HELP)
    only_some = []
    for flags, kw, takers in _options():
        for name, hp in helps.items():
            if takers is None or name in takers:
                hp.add_argument(*flags, **kw)
        if takers is None:
            p.add_argument(*flags, **kw)
            continue
        # left out of the namespace unless given, so that _foreign_option sees what was given
        a = p.add_argument(*flags, **{**kw, "default": argparse.SUPPRESS})
        only_some.append((a.dest, flags[0], takers, helps[min(takers)].get_default(a.dest)))
    p.set_defaults(func=_cmd, action_options=only_some, action_parsers=helps)
