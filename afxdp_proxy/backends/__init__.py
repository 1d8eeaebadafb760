"""Proxy backends. Each turns a ProxyConfig into attached data paths and counters."""

from __future__ import annotations

from typing import Protocol

from afxdp_proxy.config import ConfigError, ProxyConfig
from afxdp_proxy.counters import Snapshot


class Backend(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def counters(self) -> dict[str, int]: ...

    def snapshot(self) -> Snapshot: ...

    def in_flight(self) -> int: ...

    def state(self) -> dict[str, object]: ...


def make_backend(cfg: ProxyConfig) -> Backend:
    if cfg.backend in ("kernel", "static"):
        from afxdp_proxy.backends.kernel import KernelProxy

        return KernelProxy(cfg)
    if cfg.backend == "afxdp":
        from afxdp_proxy.backends.afxdp import AfxdpProxy

        return AfxdpProxy(cfg)
    raise ConfigError(f'proxy.backend: "{cfg.backend}" is not available; use "kernel", "static" or "afxdp"')
