"""What a configuration reload (SIGHUP) may change in a running proxy, and the SF slots.

Only the ``[[sf]]`` tables change live: SFs are added, removed or changed, each known by its
``name``. Every other field (backend, key, topology, cache size, max_dwell_ms, the afxdp
rings, and any table added later) is fixed for the life of the process: a reload that changes
one is refused with :class:`RestartNeeded`, and the running configuration stays.

An SF's *slot* is the index its cache entries and its counter row carry (``struct axp_entry``
``.sf``, ``axp_sfs``, the engine's SF table). It must not move while packets of the SF are in
flight, so slots are given by name, not by position in the file: an SF keeps its slot across
reloads (and across a restart that keeps the cache), a new SF takes a slot no SF has used yet
in this proxy's life, and a removed SF's slot stays its own (its counter row keeps its name)
until every slot has been used once and a new SF needs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from afxdp_proxy.config import MAX_SFS, ConfigError, ProxyConfig, SfConfig


class RestartNeeded(ConfigError):
    """A change a running proxy cannot apply; str() names the field."""


@dataclass(frozen=True)
class SfChange:
    """One SF added, removed or changed by a reload, in its slot."""

    kind: str  # "added" | "removed" | "changed"
    slot: int
    old: SfConfig | None
    new: SfConfig | None

    @property
    def name(self) -> str:
        sf = self.new or self.old
        assert sf is not None
        return sf.name

    def line(self) -> str:
        """The log line of the change."""
        if self.kind == "changed":
            assert self.old and self.new
            return f"SF {self.name} changed: {'; '.join(sf_diff(self.old, self.new))}"
        sf = self.new or self.old
        assert sf is not None
        return f"SF {self.name} {self.kind}: {describe(sf)}"


def describe(sf: SfConfig) -> str:
    """An SF's label and interfaces, for a log line."""
    parts = [f"label {sf.label}", f"net_in {sf.net_in}", f"net_out {sf.net_out}"]
    if sf.to_sf:
        parts += [f"to_sf {sf.to_sf}", f"from_sf {sf.from_sf}"]
    return ", ".join(parts)


def sf_diff(old: SfConfig, new: SfConfig) -> list[str]:
    """``field old -> new`` for every field of an SF that differs."""
    out = []
    for f in dataclasses.fields(SfConfig):
        if not f.compare:
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a != b:
            out.append(f"{f.name} {_show(a)} -> {_show(b)}")
    return out


def _show(v: object) -> str:
    if v is None:
        return "(none)"
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return " ".join(f"{k}={_show(x)}" for k, x in dataclasses.asdict(v).items())
    if isinstance(v, tuple):
        return "[" + ", ".join(map(str, v)) + "]"
    return str(v)


def restart_fields(cfg: ProxyConfig) -> dict[str, str]:
    """Every field outside ``[[sf]]``, which a reload cannot change, as a configuration says
    it and shown as text: ``{"proxy.cache_entries": "65536", ..., "metrics": "host=... port=..."}``
    (a table under its own name). The running proxy's state file keeps them, so `check` of
    an edited file can say what a SIGHUP would refuse."""
    out = {}
    for f in dataclasses.fields(ProxyConfig):
        if f.name != "sfs":
            out[f.name if f.name in _TABLES else f"proxy.{f.name}"] = _show(getattr(cfg, f.name))
    return out


_TABLES = {"metrics"}  # fields that are tables of their own ([metrics]), not [proxy] keys


def restart_changes(running: dict[str, str], new: ProxyConfig) -> list[tuple[str, str, str]]:
    """(field, running value, new value) for each field of `running` (restart_fields of the
    running configuration) that new changes, in the order of ProxyConfig."""
    return [(k, running[k], v) for k, v in restart_fields(new).items() if k in running and running[k] != v]


def check_live(old: ProxyConfig, new: ProxyConfig) -> None:
    """Raise RestartNeeded for the first field outside ``[[sf]]`` that differs."""
    for where, a, b in restart_changes(restart_fields(old), new)[:1]:
        shown = "" if where in _TABLES else f" {a} -> {b}"
        raise RestartNeeded(f"{where}:{shown} cannot change while the proxy runs; restart it to apply "
                            "(the running configuration stays)")


def assign_slots(sfs: Sequence[SfConfig], rows: Sequence[str], busy: Iterable[int] = ()) -> dict[str, int]:
    """Slot of every SF by name. rows: the name each slot was last given ("" never used);
    busy: slots that must not be handed to another SF (still draining)."""
    taken = set(busy)
    last = {name: i for i, name in enumerate(rows) if name}
    out: dict[str, int] = {}
    for sf in sfs:
        if sf.name in last:
            out[sf.name] = last[sf.name]
            taken.add(last[sf.name])
    fresh = [i for i in range(MAX_SFS) if i >= len(rows) or not rows[i]]
    # once every slot has been used: those of SFs that are gone, lowest first
    reused = [i for i in range(min(len(rows), MAX_SFS)) if rows[i] and rows[i] not in out]
    free = [i for i in fresh + reused if i not in taken]
    for sf in sfs:
        if sf.name in out:
            continue
        if not free:
            raise ConfigError(f"sf: no free SF slot for {sf.name!r}: {MAX_SFS} slots, some held by removed SFs "
                              "whose packets are still in flight; reload again after max_dwell_ms")
        out[sf.name] = free.pop(0)
    return out


def changes(old: Sequence[SfConfig], new: Sequence[SfConfig], slots_old: dict[str, int],
            slots_new: dict[str, int]) -> list[SfChange]:
    """What a reload does to the SFs: removed, changed, added (in that order)."""
    before = {sf.name: sf for sf in old}
    after = {sf.name: sf for sf in new}
    out = [SfChange("removed", slots_old[n], sf, None) for n, sf in before.items() if n not in after]
    out += [SfChange("changed", slots_new[n], before[n], sf) for n, sf in after.items()
            if n in before and before[n] != sf]
    out += [SfChange("added", slots_new[n], None, sf) for n, sf in after.items() if n not in before]
    return out


def rows_after(rows: Sequence[str], slots: dict[str, int]) -> list[str]:
    """The names of the counter rows once slots are given: each slot keeps its last name."""
    out = list(rows)
    for name, i in slots.items():
        out += [""] * (i + 1 - len(out))
        out[i] = name
    return out
