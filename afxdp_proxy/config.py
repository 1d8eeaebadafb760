"""The proxy's TOML configuration: parsing and validation.

Every error is a :class:`ConfigError` whose message is one line naming the
field (``sf[1].label``) and what to do about it.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afxdp_proxy.cache import MAX_PER_KEY
from afxdp_proxy.cache import WAYS as CACHE_WAYS  # cache_entries is rounded up to whole sets of this many runs
from afxdp_proxy.key import MAX_LABELS
from afxdp_proxy.mpls import LABEL_MAX, LABEL_MIN_UNRESERVED

BACKENDS = ("kernel", "static", "afxdp")
KEY_MODES = ("hash", "meta")
TOPOLOGIES = ("inline", "attached")
TTL_MODELS = ("uniform", "pipe")  # RFC 3443 §3.1 / §3.3: the TTL of the label TX exposes on top
TTL_ACTIONS = ("drop", "pass")  # an SF label with TTL <= 1: dropped, or handed to the host (an OAM responder)
VID_MIN, VID_MAX = 1, 4094  # IEEE 802.1Q: 0 is a priority tag, 4095 reserved
MISS_ACTIONS = ("pass", "drop", "last")
MAX_SFS = 64  # AXP_MAX_SFS
CACHE_MIN, CACHE_MAX = 16, 1 << 24
# 8192 sets of 8 ways: up to ~8000 packets in flight (rate x dwell, 8 Mpps x 1 ms) a set rarely holds 8 live
# runs. A cache sized to its traffic costs less per packet: its sets stay in the CPU's caches (docs/benchmarks.md)
DEFAULT_CACHE_ENTRIES = 65536
DEFAULT_MAX_DWELL_MS, MAX_DWELL_MS = 1000, 3_600_000  # a run older than this is presumed lost
DEFAULT_MAX_PER_KEY = 64  # packets with one key in flight, at most MAX_PER_KEY
# the SF's dwell time is measured for 1 in dwell_sample keys (a power of two; 1: every packet): a
# precise clock read costs tens of ns in BPF, per direction (axp_cache_timed, docs/benchmarks.md)
DEFAULT_DWELL_SAMPLE, MAX_DWELL_SAMPLE = 16, 1 << 16
# key = "meta": the bits of skb->mark that carry the key (README, "Meta keys and the SF's marks"):
# the upper half, clear of kube-proxy's 0x4000/0x8000, the 0x0000ff00 masquerade and mark ranges,
# policy-routing marks and connmark values of the lower half
DEFAULT_META_MARK_MASK = 0xFFFF0000
MIN_META_MARK_BITS = 16
# keys that were removed, with what replaced them
_REMOVED = {
    "on_conflict": "packets with one key in flight now queue in arrival order (bounded by max_per_key, "
                   "aged by max_dwell_ms); remove it",
}
# AF_XDP backend knobs; the defaults are enum axp_xsk_defaults in native/axp_xsk.h (a test compares)
XSK_KEYS = ("queues", "ring_size", "frame_size", "batch_size", "bind_mode")
# how the AF_XDP sockets bind: auto (zero-copy where the driver has it, else copy), or forced
BIND_MODES = ("auto", "zerocopy", "copy")
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


def toml_repr(value: Any) -> str:
    """A value as the TOML file spells it (true, not Python's True), strings quoted as repr()
    quotes them, for the messages that echo what was written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_repr(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_repr(v)}" for k, v in value.items()) + "}"
    return repr(value)


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
    vlan_in: int = 0  # VID its traffic arrives on; 0: untagged
    vlan_out: int = 0  # VID of the one tag it leaves with; 0: the tags it arrived with
    # the table it was read from, for error messages: "sf[0]", or "sf[0].reverse" for the
    # reverse direction of sf[0], which is an SF of its own here (its own label, counters, name);
    # not part of what the SF is: one that only moves in the file is not changed by a reload
    where: str = field(default="", compare=False)

    def field(self, key: str, i: int = 0) -> str:
        """The config field an error about this SF's key names (i: its index, for an SF built
        without a table)."""
        return f"{self.where or f'sf[{i}]'}.{key}"


@dataclass(frozen=True)
class MetricsConfig:
    """[metrics]: where the Prometheus endpoint listens (host as written, brackets removed)."""

    listen: str
    host: str
    port: int


@dataclass(frozen=True)
class ProxyConfig:
    backend: str = "kernel"
    key: str = "hash"
    topology: str = "attached"
    cache_entries: int = DEFAULT_CACHE_ENTRIES
    on_miss: str = "pass"
    max_dwell_ms: int = DEFAULT_MAX_DWELL_MS
    max_per_key: int = DEFAULT_MAX_PER_KEY
    dwell_sample: int = DEFAULT_DWELL_SAMPLE
    ttl_model: str = "uniform"
    on_ttl_expired: str = "drop"
    sfs: tuple[SfConfig, ...] = field(default_factory=tuple)
    name: str | None = None
    queues: int = DEFAULT_QUEUES
    ring_size: int = DEFAULT_RING_SIZE
    frame_size: int = DEFAULT_FRAME_SIZE
    batch_size: int = DEFAULT_BATCH_SIZE
    bind_mode: str = "auto"
    metrics: MetricsConfig | None = None  # [metrics]; None: no metrics server
    meta_mark_mask: int = DEFAULT_META_MARK_MASK

    @property
    def cache_sets(self) -> int:
        """Sets of CACHE_WAYS runs: cache_entries rounded up."""
        return -(-self.cache_entries // CACHE_WAYS)


_PROXY_KEYS = {"backend", "key", "topology", "cache_entries", "on_miss", "max_dwell_ms", "max_per_key", "dwell_sample",
               "name",
               "ttl_model", "on_ttl_expired", "meta_mark_mask", *XSK_KEYS}
_SF_KEYS = {"name", "label", "net_in", "net_out", "to_sf", "from_sf", "sf_mac", "next_hop_mac", "static_stack",
            "vlan_in", "vlan_out", "reverse"}
# [sf.reverse]: the chain's reverse direction through the same SF. It arrives on the forward
# direction's net_out, reaches the SF on from_sf, comes back on to_sf and leaves on net_in;
# its own label (and static_stack) must be given, the MACs are its own (learned by default),
# and so are its VLANs (vlan_in, vlan_out: untagged unless given)
_REVERSE_KEYS = _SF_KEYS - {"reverse"}
_SWAPPED = {"net_in": "net_out", "net_out": "net_in", "to_sf": "from_sf", "from_sf": "to_sf"}


def _choice(table: dict[str, Any], where: str, key: str, choices: tuple[str, ...], default: str) -> str:
    value = table.get(key, default)
    if value not in choices:
        options = " | ".join(f'"{c}"' for c in choices)
        raise ConfigError(f"{where}.{key}: {toml_repr(value)} is not one of {options}")
    return value


def _power_of_two(table: dict[str, Any], where: str, key: str, hi: int, default: int) -> int:
    value = _int(table, where, key, 1, hi, default)
    if value & (value - 1):
        raise ConfigError(f"{where}.{key}: {value} is not a power of two; set one of 1, 2, 4, ... {hi}")
    return value


def _int(table: dict[str, Any], where: str, key: str, lo: int, hi: int, default: int | None = None,
         absent: str = "") -> int:
    """table[key], an integer in lo..hi, or default when absent. absent: what leaving the key out
    means, when no value in range says it (queues: all of net_in's), for the fix to offer."""
    if key not in table and default is not None:
        return default
    fix = f"set an integer in {lo}..{hi}" + (f", or leave {key} out ({absent})" if absent else "")
    if key not in table:
        raise ConfigError(f"{where}.{key}: missing; {fix}")
    value = table[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: {toml_repr(value)} is not an integer; {fix}")
    if not lo <= value <= hi:
        raise ConfigError(f"{where}.{key}: {value} is out of range; {fix}")
    return value


def _ifname(table: dict[str, Any], where: str, key: str, required: bool) -> str | None:
    value = table.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}.{key}: missing; set the interface name")
        return None
    if not isinstance(value, str) or not _IFNAME.match(value):
        raise ConfigError(f"{where}.{key}: {toml_repr(value)} is not an interface name (1-15 characters, no spaces)")
    return value


def _mac(table: dict[str, Any], where: str, key: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not _MAC.match(value):
        raise ConfigError(f'{where}.{key}: {toml_repr(value)} is not a MAC address like "02:00:00:00:00:01"')
    return value.lower()


def _unknown(table: dict[str, Any], where: str, allowed: set[str]) -> None:
    for key in table:
        if where == "proxy" and key in _REMOVED:
            raise ConfigError(f"{where}.{key}: no longer exists: {_REMOVED[key]}")
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key; expected one of {', '.join(sorted(allowed))}")


def _sf(table: Any, where: str, topology: str, backend: str, default_name: str,
        inherit: dict[str, Any] | None = None) -> SfConfig:
    """One direction of an SF: an [[sf]] table, or its [sf.reverse] table with `inherit`
    holding the forward direction's interfaces, swapped."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table ([[sf]])" if inherit is None else
                          f"{where}: must be a table ([sf.reverse] with at least label = ...)")
    _unknown(table, where, _SF_KEYS if inherit is None else _REVERSE_KEYS)
    if inherit:
        table = {**inherit, **table}
    name = table.get("name", default_name)
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
            raise ConfigError(f"{where}.static_stack[{j}]: {toml_repr(lab)} is not a label in 0..{LABEL_MAX}")
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
        vlan_in=_int(table, where, "vlan_in", VID_MIN, VID_MAX, 0),
        vlan_out=_int(table, where, "vlan_out", VID_MIN, VID_MAX, 0),
        where=where,
    )


def _default_name(table: Any) -> str:
    """An unnamed SF's name, from what addresses it (label, and VLAN): not from its position,
    which would pass the name to another SF when one above it is removed on a reload."""
    if not isinstance(table, dict):
        return "sf"
    vlan = table.get("vlan_in")
    return f"sf-{table.get('label')}" + (f"-vlan{vlan}" if vlan else "")


def _directions(table: Any, i: int, topology: str, backend: str) -> list[SfConfig]:
    """An [[sf]] table: its forward direction, then its reverse one if it has [sf.reverse]."""
    fwd = _sf(table, f"sf[{i}]", topology, backend, _default_name(table))
    if "reverse" not in table:
        return [fwd]
    swapped = {key: getattr(fwd, other) for key, other in _SWAPPED.items() if getattr(fwd, other) is not None}
    rev = _sf(table["reverse"], f"sf[{i}].reverse", topology, backend, f"{fwd.name}.reverse", swapped)
    return [fwd, rev]


def parse_config(data: dict[str, Any]) -> ProxyConfig:
    """Validate a decoded TOML document."""
    _unknown(data, "config", {"proxy", "sf", "metrics"})
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
    on_miss = _choice(proxy, "proxy", "on_miss", MISS_ACTIONS, "pass")
    if on_miss == "last" and topology != "attached":
        raise ConfigError('proxy.on_miss: "last" needs topology = "attached" (inline, the host\'s own traffic '
                          "leaves by net_out without an entry too and would take the SF's stack)")
    if on_miss == "last" and backend == "static":
        raise ConfigError('proxy.on_miss: "last" is for the caching backends; the static proxy pushes its '
                          "static_stack anyway")
    mask = _meta_mark_mask(proxy, key)
    name = proxy.get("name")
    # not from a '.': the name heads files under /run/afxdp-proxy ('.' and '..' made hidden ones)
    if name is not None and (not isinstance(name, str) or not re.match(r"^[\w-][\w.-]{0,63}$", name)):
        raise ConfigError("proxy.name: use 1-64 letters, digits, '.', '_' or '-', not starting with '.'")
    sfs_raw = data.get("sf", [])
    if not isinstance(sfs_raw, list) or not sfs_raw:
        raise ConfigError("sf: no [[sf]] table; add one per service function")
    if len(sfs_raw) > MAX_SFS:
        raise ConfigError(f"sf: {len(sfs_raw)} service functions; at most {MAX_SFS} per proxy")
    sfs = tuple(sf for i, t in enumerate(sfs_raw) for sf in _directions(t, i, topology, backend))
    if len(sfs) > MAX_SFS:
        raise ConfigError(f"sf: {len(sfs)} service functions, counting each [sf.reverse] as one; "
                          f"at most {MAX_SFS} per proxy")
    seen_labels: dict[tuple[int, int], str] = {}  # (VLAN, label): the SF is chosen by both
    seen_names: dict[str, str] = {}
    for sf in sfs:
        if (sf.vlan_in, sf.label) in seen_labels:
            on = f" on VLAN {sf.vlan_in}" if sf.vlan_in else ""
            raise ConfigError(f"{sf.where}.label: {sf.label}{on} is already used by "
                              f"{seen_labels[sf.vlan_in, sf.label]}; give {sf.where} a label of its own "
                              "(or another vlan_in)")
        if sf.name in seen_names:
            raise ConfigError(f"{sf.where}.name: {sf.name!r} is already used by {seen_names[sf.name]}; give "
                              f"{sf.where} a name of its own (stats and reloads know an SF by it)")
        seen_labels[sf.vlan_in, sf.label] = sf.where
        seen_names[sf.name] = sf.where
    if backend == "static" and "ttl_model" in proxy:
        raise ConfigError('proxy.ttl_model: the static backend keeps no per-packet state: it pushes static_stack '
                          "with the TTLs it configures (64), whatever arrived; remove it")
    if topology == "attached":
        owners: dict[str, str] = {}
        for sf in sfs:
            assert sf.from_sf is not None
            if sf.from_sf in owners:
                raise ConfigError(f"{sf.where}.from_sf: {sf.from_sf} already returns {owners[sf.from_sf]}; give "
                                  f"{sf.where} a from_sf of its own (TX tells SFs apart by it)")
            owners[sf.from_sf] = sf.where
    return ProxyConfig(
        backend=backend,
        key=key,
        topology=topology,
        cache_entries=_int(proxy, "proxy", "cache_entries", CACHE_MIN, CACHE_MAX, DEFAULT_CACHE_ENTRIES),
        on_miss=on_miss,
        max_dwell_ms=_int(proxy, "proxy", "max_dwell_ms", 1, MAX_DWELL_MS, DEFAULT_MAX_DWELL_MS),
        max_per_key=_int(proxy, "proxy", "max_per_key", 1, MAX_PER_KEY, DEFAULT_MAX_PER_KEY),
        dwell_sample=_power_of_two(proxy, "proxy", "dwell_sample", MAX_DWELL_SAMPLE, DEFAULT_DWELL_SAMPLE),
        ttl_model=_choice(proxy, "proxy", "ttl_model", TTL_MODELS, "uniform"),
        on_ttl_expired=_choice(proxy, "proxy", "on_ttl_expired", TTL_ACTIONS, "drop"),
        sfs=sfs,
        name=name,
        metrics=_metrics(data.get("metrics")),
        meta_mark_mask=mask,
        **xsk,
    )


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


def _metrics(table: Any) -> MetricsConfig | None:
    """[metrics] listen = "HOST:PORT": an IPv4 address, [an IPv6 address] or a name, and a port."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError("metrics: must be a table ([metrics])")
    _unknown(table, "metrics", {"listen"})
    example = 'e.g. "127.0.0.1:9464" or "[::1]:9464"'
    if "listen" not in table:
        raise ConfigError(f'metrics.listen: missing; set "HOST:PORT", {example} (or remove [metrics])')
    listen = table["listen"]
    if not isinstance(listen, str) or ":" not in listen:
        raise ConfigError(f'metrics.listen: {toml_repr(listen)} is not "HOST:PORT"; {example}')
    host, _, port_text = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"metrics.listen: [{host}] is not an IPv6 address; {example}") from None
    elif ":" in host:
        raise ConfigError(f'metrics.listen: {listen!r}: put an IPv6 address in brackets, e.g. "[::1]:9464"')
    elif re.fullmatch(r"[\d.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(f"metrics.listen: {host!r} is not an IPv4 address; {example}") from None
    elif not _HOSTNAME.match(host):
        raise ConfigError(f"metrics.listen: {host!r} is neither an address nor a host name; {example}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"metrics.listen: port {port_text!r} is not in 1..65535; {example}")
    return MetricsConfig(listen=listen, host=host, port=int(port_text))
def _meta_mark_mask(proxy: dict[str, Any], key: str) -> int:
    """The bits of skb->mark that carry a meta key: one contiguous run of at least 16."""
    if "meta_mark_mask" not in proxy:
        return DEFAULT_META_MARK_MASK
    if key != "meta":
        raise ConfigError('proxy.meta_mark_mask: only used with key = "meta"; remove it')
    value = proxy["meta_mark_mask"]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 0xFFFFFFFF:
        raise ConfigError(f"proxy.meta_mark_mask: {toml_repr(value)} is not a 32-bit mask; set e.g. 0xffff0000")
    low = value & -value
    if (value + low) & value:  # adding the lowest bit carries through a contiguous run only
        raise ConfigError(f"proxy.meta_mark_mask: {value:#010x} is not one contiguous run of bits; "
                          "set e.g. 0xffff0000")
    if value.bit_count() < MIN_META_MARK_BITS:
        raise ConfigError(f"proxy.meta_mark_mask: {value:#010x} has {value.bit_count()} bits; the key needs at "
                          f"least {MIN_META_MARK_BITS} contiguous bits, e.g. 0xffff0000")
    return value


def meta_mark_layout(mask: int, ncpus: int) -> tuple[int, int]:
    """(shift, sequence bits) of the meta key in mask: the key is ((cpu + 1) << seq_bits | seq)
    << shift, with room above the sequence for CPU numbers 1..ncpus."""
    shift = (mask & -mask).bit_length() - 1
    return shift, mask.bit_count() - ncpus.bit_length()


def _xsk_knobs(proxy: dict[str, Any], backend: str) -> dict[str, Any]:
    """queues, ring_size, frame_size, batch_size, bind_mode: afxdp only."""
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
        raise ConfigError(f"proxy.frame_size: {toml_repr(frame)} is not 2048 or 4096")
    return {
        "queues": _int(proxy, "proxy", "queues", 1, MAX_QUEUES, DEFAULT_QUEUES, absent="all of net_in's queues"),
        "ring_size": ring,
        "frame_size": frame,
        "batch_size": _int(proxy, "proxy", "batch_size", 1, ring, DEFAULT_BATCH_SIZE),
        "bind_mode": _choice(proxy, "proxy", "bind_mode", BIND_MODES, "auto"),
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
