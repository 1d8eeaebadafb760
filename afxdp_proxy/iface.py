"""Interfaces of the proxy's network namespace, through netlink (pyroute2): links, MACs,
ethtool features and channels, XDP features, and what can be seen of a veth's other end."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.ethtool import Ethtool
from pyroute2.ethtool.ioctl import NotSupportedError
from pyroute2.netlink import NLM_F_REQUEST, genlmsg
from pyroute2.netlink.generic import AsyncGenericNetlinkSocket, GenericNetlinkSocket

from afxdp_proxy.config import ConfigError
from afxdp_proxy.state import NETNS_DIR, in_netns

NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80  # REACHABLE STALE DELAY PROBE PERMANENT
T = TypeVar("T")


@dataclass(frozen=True)
class Iface:
    name: str
    index: int
    mac: str
    mtu: int


def mac_bytes(mac: str) -> bytes:
    return bytes(int(b, 16) for b in mac.split(":"))


def resolve(ipr: IPRoute, name: str, field: str) -> Iface:
    """The interface called name, or a ConfigError naming the config field."""
    links = ipr.get_links(ifname=name) if name else []
    if not links:
        raise ConfigError(f"{field}: no interface {name!r} in this network namespace; {missing_fix(name)}")
    link = links[0]
    return Iface(name, link["index"], link.get_attr("IFLA_ADDRESS") or "00:00:00:00:00:00",
                 link.get_attr("IFLA_MTU") or 0)


def neighbour_mac(ipr: IPRoute, iface: Iface) -> str | None:
    """The MAC behind iface when the neighbour table knows exactly one host there."""
    macs = {
        n.get_attr("NDA_LLADDR")
        for n in ipr.get_neighbours(ifindex=iface.index)
        if n["state"] & NUD_USABLE and n.get_attr("NDA_LLADDR")
    }
    return macs.pop() if len(macs) == 1 else None


def veth_peer_mac(ipr: IPRoute, iface: Iface) -> str | None:
    """The MAC of iface's veth peer, in this namespace or another (its link attributes come
    through IFLA_TARGET_NETNSID, as for veth_peer); None for any other kind of device, or a
    peer that is a bridge's port."""
    if link_kind(ipr, iface.index) != "veth":
        return None
    link = ipr.get_links(iface.index)[0]
    peer = link.get_attr("IFLA_LINK")
    nsid = link.get_attr("IFLA_LINK_NETNSID")
    if not peer:
        return None
    try:
        plink = ipr.get_links(peer)[0] if nsid is None else ipr.get_links(peer, IFLA_IF_NETNSID=nsid)[0]
    except Exception:
        return None
    if plink.get_attr("IFLA_MASTER"):
        return None  # a bridge (or bond) port: the next hop is behind it, not the port
    return plink.get_attr("IFLA_ADDRESS")


def learn_mac(ipr: IPRoute, iface: Iface) -> str | None:
    return neighbour_mac(ipr, iface) or veth_peer_mac(ipr, iface)


def get_feature(name: str, feature: str) -> bool | None:
    """An ethtool feature (e.g. "rx-gro"), or None when the device lacks it."""
    with Ethtool() as eth:
        feats = eth.get_features(name).features
    return feats[feature].enable if feature in feats else None


def set_feature(name: str, feature: str, on: bool) -> bool | None:
    """Set an ethtool feature; returns its previous state (None: not present)."""
    with Ethtool() as eth:
        feats = eth.get_features(name)
        if feature not in feats.features:
            return None
        before = feats.features[feature].enable
        if before != on:
            feats.features[feature].enable = on
            try:
                eth.set_features(name, feats)
            except OSError as e:
                if e.errno != errno.EOPNOTSUPP:
                    raise
        return before


# Hardware VLAN tag stripping (ethtool -k: rx-vlan-offload, rx-vlan-stag-hw-parse): a stripped
# tag travels beside the frame, where XDP does not see it and a redirect does not take it along
VLAN_STRIPPING = ("rx-vlan-hw-parse", "rx-vlan-stag-hw-parse")


def fixed_features(name: str) -> set[str]:
    """The device's features that cannot be changed (ethtool -k: "[fixed]")."""
    with Ethtool() as eth:
        return {k for k, v in eth.get_features(name).features.items() if k and not v.available}


def ethtool_features(name: str) -> dict[str, bool]:
    """Every ethtool feature of the device (ethtool -k names) and whether it is on."""
    with Ethtool() as eth:
        return {k: bool(v.enable) for k, v in eth.get_features(name).features.items() if k}


def get_channels(name: str) -> tuple[int, int] | None:
    """The (RX, TX) queues in use (ethtool channels, combined counted in both), or None for a
    device that does not report channels."""
    try:
        with Ethtool() as eth:
            ch = eth.get_channels(name)
    except NotSupportedError:
        return None
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            return None
        raise
    return (ch.rx_count + ch.combined_count) or 1, (ch.tx_count + ch.combined_count) or 1


# ---------------------------------------------------------------------- XDP features (netdev family)

XDP_ACT_BASIC = 1 << 0  # native XDP: XDP_PASS, XDP_DROP, XDP_TX
XDP_ACT_REDIRECT = 1 << 1  # XDP_REDIRECT out of this device's XDP
XDP_ACT_NDO_XMIT = 1 << 2  # takes XDP_REDIRECTed frames (a veth: only while its peer runs NAPI)
XDP_ACT_XSK_ZEROCOPY = 1 << 3


class _NetdevMsg(genlmsg):
    prefix = "NETDEV_A_DEV_"
    nla_map = (
        ("NETDEV_A_DEV_UNSPEC", "none"),
        ("NETDEV_A_DEV_IFINDEX", "uint32"),
        ("NETDEV_A_DEV_PAD", "none"),
        ("NETDEV_A_DEV_XDP_FEATURES", "uint64"),
        ("NETDEV_A_DEV_XDP_ZC_MAX_SEGS", "uint32"),
        ("NETDEV_A_DEV_XDP_RX_METADATA_FEATURES", "uint64"),
        ("NETDEV_A_DEV_XSK_FEATURES", "uint64"),
    )


class _AsyncNetdev(AsyncGenericNetlinkSocket):
    async def setup_endpoint(self) -> None:
        if getattr(self.local, "transport", None) is not None:
            return
        await super().setup_endpoint()
        await self.bind("netdev", _NetdevMsg)

    async def dev_get(self, ifindex: int) -> Any:
        msg = _NetdevMsg()
        msg["cmd"] = 1  # NETDEV_CMD_DEV_GET
        msg["version"] = 1
        msg["attrs"] = [("NETDEV_A_DEV_IFINDEX", ifindex)]
        return await self.nlm_request(msg, msg_type=self.prid, msg_flags=NLM_F_REQUEST)


class _Netdev(GenericNetlinkSocket):
    """The kernel's "netdev" generic netlink family (Linux 6.3+): what a device's XDP can do."""

    async_class = _AsyncNetdev

    def dev_get(self, ifindex: int) -> Any:
        return self._run_sync_cleanup(self.asyncore.dev_get, ifindex)


def xdp_features(index: int) -> int | None:
    """The device's NETDEV_XDP_ACT_* bits as the kernel advertises them right now, or None when
    the kernel has no netdev family to ask. A veth's bits follow its peer: NDO_XMIT while the
    peer runs NAPI (an XDP program or GRO there), none while the peer has more TX queues than
    the veth has RX queues."""
    try:
        with _Netdev() as nd:
            msgs = nd.dev_get(index)
    except Exception as e:  # no such family (before 6.3) or no such device: nothing to tell
        if isinstance(e, OSError) and e.errno not in (errno.ENOENT, errno.ENODEV, errno.EOPNOTSUPP):
            raise
        return None
    for m in msgs:
        value = m.get_attr("NETDEV_A_DEV_XDP_FEATURES")
        if value is not None:
            return int(value)
    return None


# ---------------------------------------------------------------------- a veth's other end


@dataclass(frozen=True)
class Peer:
    """What this namespace can see of a veth's other end. The peer may live in another network
    namespace: its link attributes come through netlink's IFLA_TARGET_NETNSID; its ethtool state
    (features, channels) only by entering its namespace, which needs a name under /run/netns and
    CAP_SYS_ADMIN, so features and channels are None ("unknown") otherwise."""

    index: int
    name: str
    netns: str | None  # its namespace's name under /run/netns; None: ours, or one without a name
    same_netns: bool
    mtu: int
    xdp_prog: int  # ID of the XDP program attached there, 0: none
    features: dict[str, bool] | None
    channels: tuple[int, int] | None  # (RX, TX) queues in use

    @property
    def where(self) -> str:
        """The peer for a message: "src_out (namespace src)", "src_out", or "src_out (in namespace id 3)"."""
        if self.same_netns:
            return self.name
        return f"{self.name} (namespace {self.netns})" if self.netns else self.name + " (in an unnamed namespace)"

    def cmd(self, argv: str) -> str:
        """A shell command to run where the peer is: "ip netns exec NS ethtool ..."."""
        return f"ip netns exec {self.netns} {argv}" if self.netns and not self.same_netns else argv


def driver_of(iface: Iface) -> str:
    """The device's driver as `ethtool -i` names it (sysfs), or its link kind ("veth", ...) for a
    virtual device without one, or "unknown"."""
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{iface.name}/device/driver"))
    except OSError:
        pass
    with contextlib.suppress(Exception), IPRoute() as ipr:
        kind = link_kind(ipr, iface.index)
        if kind:
            return str(kind)
    return "unknown"


def link_kind(ipr: IPRoute, index: int) -> str | None:
    """The link's kind ("veth", "dummy", ...), None for a plain device."""
    link = ipr.get_links(index)[0]
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def xdp_prog_of(link: Any) -> int:
    xdp = link.get_attr("IFLA_XDP")
    return int(xdp.get_attr("IFLA_XDP_PROG_ID") or 0) if xdp is not None else 0


def _named_netns(ipr: IPRoute, nsid: int) -> str | None:
    """The name under /run/netns of the namespace this one knows as nsid."""
    try:
        names = sorted(os.listdir(NETNS_DIR))
    except OSError:
        return None
    for name in names:
        try:
            fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
        except OSError:
            continue
        try:
            got = ipr.get_netnsid(fd=fd)
        except Exception:
            continue
        finally:
            os.close(fd)
        if got and got.get("nsid") == nsid:
            return name
    return None


def _in_netns(netns: str, fn: Callable[[], T]) -> T | None:
    """fn() on a thread that entered /run/netns/<netns>; None when that is not allowed (EPERM
    without CAP_SYS_ADMIN: the caller says "unknown") or fails."""
    try:
        return in_netns(os.path.join(NETNS_DIR, netns), fn)
    except OSError:
        return None


def netns_holding(name: str, limit: int = 256) -> list[str]:
    """The namespaces under /run/netns (the first `limit` looked at) with an interface called name."""
    try:
        names = sorted(os.listdir(NETNS_DIR))[:limit]
    except OSError:
        names = []

    def here() -> bool:
        try:
            socket.if_nametoindex(name)
        except OSError:
            return False
        return True

    return [ns for ns in names if _in_netns(ns, here)]


def missing_fix(name: str, found: list[str] | None = None, many: bool = False) -> str:
    """The fix for an interface not in this namespace (many: for several, found in the same
    namespaces): run the proxy where it is (found: those namespaces, looked up when None),
    else a check of the name. Moving the interface here is not offered: it would drop its
    addresses and routes, and take it from whatever uses it there."""
    found = netns_holding(name) if found is None else found
    if found:
        where = ", ".join(found[:3]) + (" ..." if len(found) > 3 else "")
        it, an = ("they are", "interfaces") if many else ("it is", "an interface")
        there = "there" if len(found) == 1 else "in the one it serves"
        return (f"{it} in namespace{'s' * (len(found) > 1)} {where}: run the proxy {there} "
                f"(ip netns exec {found[0]} afxdp-proxy ...), or name {an} of this namespace")
    return ("no namespace under /run/netns has one either: check the name (ip -br link), or run the proxy "
            "inside the namespace that holds it (ip netns exec NS ...)")


def _ethtool_state(name: str) -> tuple[dict[str, bool], tuple[int, int] | None]:
    return ethtool_features(name), get_channels(name)


def veth_peer(ipr: IPRoute, iface: Iface) -> Peer | None:
    """The other end of a veth, None for any other kind of device."""
    if link_kind(ipr, iface.index) != "veth":
        return None
    link = ipr.get_links(iface.index)[0]
    peer_index = link.get_attr("IFLA_LINK")
    nsid = link.get_attr("IFLA_LINK_NETNSID")
    if not peer_index:
        return None
    same = nsid is None
    try:
        plink = ipr.get_links(peer_index)[0] if same else ipr.get_links(peer_index, IFLA_IF_NETNSID=nsid)[0]
    except Exception:
        return None
    name = plink.get_attr("IFLA_IFNAME")
    netns = None if same else _named_netns(ipr, nsid)
    if same:
        state: tuple[dict[str, bool], tuple[int, int] | None] | None = _ethtool_state(name)
    elif netns:
        state = _in_netns(netns, lambda: _ethtool_state(name))
    else:
        state = None
    return Peer(peer_index, name, netns, same, int(plink.get_attr("IFLA_MTU") or 0), xdp_prog_of(plink),
                state[0] if state else None, state[1] if state else None)
