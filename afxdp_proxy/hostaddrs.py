"""The proxy host's own addresses, for the from_sf programs' map ``axp_host_addrs``
(``bpf/include/host.bpf.h``): a frame the SF sends to one of them is for the host's kernel
(XDP_PASS, counted ``tx_host``), not SF output to relabel.

Every address of every interface of the proxy's network namespace, read through netlink when
the proxy starts and again every second while it runs (a background thread), so an address
added or removed later is known within a second.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import threading
from collections.abc import Iterable

from pyroute2 import IPRoute

from afxdp_proxy import bpf

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0


def key_of(addr: str) -> bytes:
    """struct axp_host_addr of an address: IPv6 as is, IPv4 mapped (::ffff:a.b.c.d)."""
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return bytes(10) + b"\xff\xff" + ip.packed
    return ip.packed


def local_addresses(ipr: IPRoute) -> set[bytes]:
    """Keys of every address of the namespace ipr was opened in."""
    out = set()
    for msg in ipr.get_addr():
        addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if addr:
            out.add(key_of(addr))
    return out


class HostAddresses:
    """Keeps the maps' local addresses current: start() fills them and starts the refresh
    thread, stop() ends it. Open it in the namespace the proxy runs in (its netlink socket
    stays there)."""

    def __init__(self, maps: Iterable[bpf.Map], refresh: float = REFRESH_SECONDS) -> None:
        self.maps = list(maps)
        self.refresh_seconds = refresh
        self.held: set[bytes] = set()
        self._ipr: IPRoute | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False
        self._lock = threading.Lock()  # the refresh thread against add_map

    def start(self) -> HostAddresses:
        self._ipr = IPRoute()
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="axp-host-addrs", daemon=True)
        self._thread.start()
        return self

    def refresh(self) -> None:
        """Add what the namespace gained since, remove what it lost."""
        assert self._ipr is not None
        with self._lock:
            now = local_addresses(self._ipr)
            for key in now - self.held:
                for m in self.maps:
                    self._add(m, key)
            for key in self.held - now:
                for m in self.maps:
                    m.delete(key)
            self.held = now

    def add_map(self, m: bpf.Map) -> None:
        """One map more (a program loaded since, by a reload), given what the others hold."""
        with self._lock:
            for key in self.held:
                self._add(m, key)
            self.maps.append(m)

    def _add(self, m: bpf.Map, key: bytes) -> None:
        try:
            m.update(key, bpf.ffi.new("uint8_t *", 1))
        except bpf.BpfError as e:
            if e.errno != errno.E2BIG:
                raise
            if not self._warned:  # more addresses than the map holds: these go unnoticed
                log.warning("more than %d local addresses: frames from the SF to the others are "
                            "proxied as SF output", m.max_entries)
                self._warned = True

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception as e:  # a netlink hiccup must not end the proxy; the next round retries
                log.warning("reading the host's addresses failed: %s", e)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
