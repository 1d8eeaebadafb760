"""The proxy's TOML configuration: parsing and validation.

Every error is a :class:`ConfigError` whose message is one line naming the
field (``sf[1].label``) and what to do about it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afxdp_proxy.cache import MAX_PER_KEY
from afxdp_proxy.cache import WAYS as CACHE_WAYS  # cache_entries is rounded up to whole sets of this many runs
from afxdp_proxy.mpls import LABEL_MAX, LABEL_MIN_UNRESERVED

BACKENDS = ("kernel", "static", "afxdp")
KEY_MODES = ("hash", "meta")
TOPOLOGIES = ("inline", "attached")
MISS_ACTIONS = ("pass", "drop")
MAX_SFS = 64  # AXP_MAX_SFS
MAX_LABELS = 16  # AXP_MAX_LABELS
CACHE_MIN, CACHE_MAX = 16, 1 << 24
# 8192 sets of 8 ways: up to ~8000 packets in flight (rate x dwell, 8 Mpps x 1 ms) a set rarely holds 8 live
# runs. A cache sized to its traffic costs less per packet: its sets stay in the CPU's caches (docs/benchmarks.md)
DEFAULT_CACHE_ENTRIES = 65536
DEFAULT_MAX_DWELL_MS, MAX_DWELL_MS = 1000, 3_600_000  # a run older than this is presumed lost
DEFAULT_MAX_PER_KEY = 64  # packets with one key in flight, at most MAX_PER_KEY
# keys that were removed, with what replaced them
_REMOVED = {
    "on_conflict": "packets with one key in flight now queue in arrival order (bounded by max_per_key, "
                   "aged by max_dwell_ms); remove it",
}
# AF_XDP backend knobs; the defaults are enum axp_xsk_defaults in native/axp_xsk.h (a test compares)
XSK_KEYS = ("queues", "ring_size", "frame_size", "batch_size")
DEFAULT_QUEUES = 0  # RX queues served (one socket per interface and one worker each); 0: all of net_in's
DEFAULT_RING_SIZE = 2048  # entries of every RX, TX, fill and completion ring
DEFAULT_FRAME_SIZE = 4096  # UMEM frame: 256 bytes of headroom (room to push a stack), then the frame
DEFAULT_BATCH_SIZE = 64  # descriptors a worker takes from an RX ring at once
MAX_QUEUES = 64
FRAME_SIZES = (2048, 4096)
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")


class ConfigError(ValueError):
    """A configuration problem; str() is the one-line message for the operator."""


@dataclass(frozen=True)
class SfConfig:
    name: str
    label: int
    net_in: str
    net_out: str
    to_sf: str | None = None
    from_sf: str | None = None
    sf_mac: str | None = None
    next_hop_mac: str | None = None
    static_stack: tuple[int, ...] = ()


@dataclass(frozen=True)
class ProxyConfig:
    backend: str = "kernel"
    key: str = "hash"
    topology: str = "attached"
    cache_entries: int = DEFAULT_CACHE_ENTRIES
    on_miss: str = "pass"
    max_dwell_ms: int = DEFAULT_MAX_DWELL_MS
    max_per_key: int = DEFAULT_MAX_PER_KEY
    sfs: tuple[SfConfig, ...] = field(default_factory=tuple)
    name: str | None = None
    queues: int = DEFAULT_QUEUES
    ring_size: int = DEFAULT_RING_SIZE
    frame_size: int = DEFAULT_FRAME_SIZE
    batch_size: int = DEFAULT_BATCH_SIZE

    @property
    def cache_sets(self) -> int:
        """Sets of CACHE_WAYS runs: cache_entries rounded up."""
        return -(-self.cache_entries // CACHE_WAYS)


_PROXY_KEYS = {"backend", "key", "topology", "cache_entries", "on_miss", "max_dwell_ms", "max_per_key", "name",
               *XSK_KEYS}
_SF_KEYS = {"name", "label", "net_in", "net_out", "to_sf", "from_sf", "sf_mac", "next_hop_mac", "static_stack"}


def _choice(table: dict[str, Any], where: str, key: str, choices: tuple[str, ...], default: str) -> str:
    value = table.get(key, default)
    if value not in choices:
        options = " | ".join(f'"{c}"' for c in choices)
        raise ConfigError(f"{where}.{key}: {value!r} is not one of {options}")
    return value


def _int(table: dict[str, Any], where: str, key: str, lo: int, hi: int, default: int | None = None) -> int:
    if key not in table and default is not None:
        return default
    if key not in table:
        raise ConfigError(f"{where}.{key}: missing; set an integer in {lo}..{hi}")
    value = table[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: {value!r} is not an integer; set an integer in {lo}..{hi}")
    if not lo <= value <= hi:
        raise ConfigError(f"{where}.{key}: {value} is out of range; set an integer in {lo}..{hi}")
    return value


def _ifname(table: dict[str, Any], where: str, key: str, required: bool) -> str | None:
    value = table.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}.{key}: missing; set the interface name")
        return None
    if not isinstance(value, str) or not _IFNAME.match(value):
        raise ConfigError(f"{where}.{key}: {value!r} is not an interface name (1-15 characters, no spaces)")
    return value


def _mac(table: dict[str, Any], where: str, key: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not _MAC.match(value):
        raise ConfigError(f'{where}.{key}: {value!r} is not a MAC address like "02:00:00:00:00:01"')
    return value.lower()


def _unknown(table: dict[str, Any], where: str, allowed: set[str]) -> None:
    for key in table:
        if where == "proxy" and key in _REMOVED:
            raise ConfigError(f"{where}.{key}: no longer exists: {_REMOVED[key]}")
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key; expected one of {', '.join(sorted(allowed))}")


def _sf(table: Any, i: int, topology: str, backend: str) -> SfConfig:
    where = f"sf[{i}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table ([[sf]])")
    _unknown(table, where, _SF_KEYS)
    name = table.get("name", f"sf{i}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name: must be a non-empty string")
    attached = topology == "attached"
    for key in ("to_sf", "from_sf", "sf_mac"):
        if not attached and key in table:
            raise ConfigError(f'{where}.{key}: only used with topology = "attached"; remove it')
    stack = table.get("static_stack", [])
    if backend == "static" and "static_stack" not in table:
        raise ConfigError(f"{where}.static_stack: the static backend needs the stack to push, e.g. [2000, 3000] "
                          "([] sends plain IP)")
    if backend != "static" and "static_stack" in table:
        raise ConfigError(f'{where}.static_stack: only used with backend = "static"; remove it')
    if not isinstance(stack, list) or len(stack) > MAX_LABELS:
        raise ConfigError(f"{where}.static_stack: must be a list of at most {MAX_LABELS} labels")
    for j, lab in enumerate(stack):
        if not isinstance(lab, int) or isinstance(lab, bool) or not 0 <= lab <= LABEL_MAX:
            raise ConfigError(f"{where}.static_stack[{j}]: {lab!r} is not a label in 0..{LABEL_MAX}")
    return SfConfig(
        name=name,
        label=_int(table, where, "label", LABEL_MIN_UNRESERVED, LABEL_MAX),
        net_in=_ifname(table, where, "net_in", True) or "",
        net_out=_ifname(table, where, "net_out", True) or "",
        to_sf=_ifname(table, where, "to_sf", attached),
        from_sf=_ifname(table, where, "from_sf", attached),
        sf_mac=_mac(table, where, "sf_mac"),
        next_hop_mac=_mac(table, where, "next_hop_mac"),
        static_stack=tuple(stack),
    )


def parse_config(data: dict[str, Any]) -> ProxyConfig:
    """Validate a decoded TOML document."""
    _unknown(data, "config", {"proxy", "sf"})
    proxy = data.get("proxy", {})
    if not isinstance(proxy, dict):
        raise ConfigError("proxy: must be a table ([proxy])")
    _unknown(proxy, "proxy", _PROXY_KEYS)
    backend = _choice(proxy, "proxy", "backend", BACKENDS, "kernel")
    key = _choice(proxy, "proxy", "key", KEY_MODES, "hash")
    topology = _choice(proxy, "proxy", "topology", TOPOLOGIES, "attached")
    if key == "meta" and topology != "inline":
        raise ConfigError('proxy.key: "meta" needs topology = "inline" (skb->mark does not cross namespaces)')
    if backend == "afxdp" and topology != "attached":
        raise ConfigError('proxy.topology: the afxdp backend needs topology = "attached" '
                          "(AF_XDP sends out of an interface; it cannot hand packets to the local stack)")
    xsk = _xsk_knobs(proxy, backend)
    name = proxy.get("name")
    if name is not None and (not isinstance(name, str) or not re.match(r"^[\w.-]{1,64}$", name)):
        raise ConfigError("proxy.name: use 1-64 letters, digits, '.', '_' or '-'")
    sfs_raw = data.get("sf", [])
    if not isinstance(sfs_raw, list) or not sfs_raw:
        raise ConfigError("sf: no [[sf]] table; add one per service function")
    if len(sfs_raw) > MAX_SFS:
        raise ConfigError(f"sf: {len(sfs_raw)} service functions; at most {MAX_SFS} per proxy")
    sfs = tuple(_sf(t, i, topology, backend) for i, t in enumerate(sfs_raw))
    seen_labels: dict[int, int] = {}
    seen_names: dict[str, int] = {}
    for i, sf in enumerate(sfs):
        if sf.label in seen_labels:
            raise ConfigError(f"sf[{i}].label: {sf.label} is already used by sf[{seen_labels[sf.label]}]")
        if sf.name in seen_names:
            raise ConfigError(f"sf[{i}].name: {sf.name!r} is already used by sf[{seen_names[sf.name]}]")
        seen_labels[sf.label] = i
        seen_names[sf.name] = i
    if topology == "attached":
        owners: dict[str, int] = {}
        for i, sf in enumerate(sfs):
            assert sf.from_sf is not None
            if sf.from_sf in owners:
                raise ConfigError(f"sf[{i}].from_sf: {sf.from_sf} already returns sf[{owners[sf.from_sf]}]")
            owners[sf.from_sf] = i
    return ProxyConfig(
        backend=backend,
        key=key,
        topology=topology,
        cache_entries=_int(proxy, "proxy", "cache_entries", CACHE_MIN, CACHE_MAX, DEFAULT_CACHE_ENTRIES),
        on_miss=_choice(proxy, "proxy", "on_miss", MISS_ACTIONS, "pass"),
        max_dwell_ms=_int(proxy, "proxy", "max_dwell_ms", 1, MAX_DWELL_MS, DEFAULT_MAX_DWELL_MS),
        max_per_key=_int(proxy, "proxy", "max_per_key", 1, MAX_PER_KEY, DEFAULT_MAX_PER_KEY),
        sfs=sfs,
        name=name,
        **xsk,
    )


def _xsk_knobs(proxy: dict[str, Any], backend: str) -> dict[str, int]:
    """queues, ring_size, frame_size, batch_size: afxdp only."""
    if backend != "afxdp":
        for key in XSK_KEYS:
            if key in proxy:
                raise ConfigError(f'proxy.{key}: only used with backend = "afxdp"; remove it')
        return {}
    ring = _int(proxy, "proxy", "ring_size", 64, 16384, DEFAULT_RING_SIZE)
    if ring & (ring - 1):
        raise ConfigError(f"proxy.ring_size: {ring} is not a power of 2; set one in 64..16384")
    frame = proxy.get("frame_size", DEFAULT_FRAME_SIZE)
    if frame not in FRAME_SIZES or isinstance(frame, bool):
        raise ConfigError(f"proxy.frame_size: {frame!r} is not 2048 or 4096")
    return {
        "queues": _int(proxy, "proxy", "queues", 1, MAX_QUEUES, DEFAULT_QUEUES),  # absent: 0, all
        "ring_size": ring,
        "frame_size": frame,
        "batch_size": _int(proxy, "proxy", "batch_size", 1, ring, DEFAULT_BATCH_SIZE),
    }


def load_config(path: str | Path) -> ProxyConfig:
    """Read and validate a TOML file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None
    return parse_config(data)
