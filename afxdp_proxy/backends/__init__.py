"""Proxy backends. Each turns a ProxyConfig into attached data paths and counters."""

from __future__ import annotations

from typing import Protocol

from afxdp_proxy.config import ConfigError, ProxyConfig
from afxdp_proxy.counters import Snapshot
from afxdp_proxy.reload import SfChange


class Backend(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def reload(self, cfg: ProxyConfig) -> list[SfChange]:
        """Serve cfg's SFs without a restart; ConfigError (RestartNeeded) changes nothing."""
        ...

    def tick(self) -> list[str]:
        """Housekeeping, about once a second: names of removed SFs that finished draining."""
        ...

    def counters(self) -> dict[str, int]:
        """Every counter summed over rows, and counters.DWELL_TIMED (with_dwell_timed)."""
        ...

    def snapshot(self) -> Snapshot: ...

    def in_flight(self) -> int: ...

    def state(self) -> dict[str, object]: ...


def make_backend(cfg: ProxyConfig, instance: str | None = None, keep_cache: bool = False) -> Backend:
    """instance: the proxy's name, under which --keep-cache keeps the cache for the next one."""
    if cfg.backend in ("kernel", "static"):
        from afxdp_proxy.backends.kernel import KernelProxy

        return KernelProxy(cfg, instance=instance, keep_cache=keep_cache)
    if cfg.backend == "afxdp":
        from afxdp_proxy.backends.afxdp import AfxdpProxy

        return AfxdpProxy(cfg, instance=instance, keep_cache=keep_cache)
    raise ConfigError(f'proxy.backend: "{cfg.backend}" is not available; use "kernel", "static" or "afxdp"')
