"""Interfaces of the proxy's network namespace, through netlink (pyroute2)."""

from __future__ import annotations

import errno
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.ethtool import Ethtool

from afxdp_proxy.config import ConfigError

NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80  # REACHABLE STALE DELAY PROBE PERMANENT


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
        raise ConfigError(f"{field}: no interface {name!r} in this network namespace; "
                          "run the proxy inside the namespace that holds it (ip netns exec NS ...)")
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
    """The MAC of iface's veth peer when that peer lives in this namespace."""
    link = ipr.get_links(iface.index)[0]
    peer = link.get_attr("IFLA_LINK")
    if not peer or link.get_attr("IFLA_LINK_NETNSID") is not None:
        return None
    try:
        return ipr.get_links(peer)[0].get_attr("IFLA_ADDRESS")
    except Exception:
        return None


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
