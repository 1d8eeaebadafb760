"""What the comparative benchmark compares: a baseline per topology, the proxies, and the
floor of the AF_XDP path.

Every proxied variant runs as an operator runs it, ``afxdp-proxy run`` in the
proxy namespace (ProxyProcess), with the configuration the testbed writes for
it; the floor, afxdp-null, runs the same afxdp configuration through the lab's
null forwarder (afxdp_proxy.lab.bench.null) and comes with every run of afxdp.
A variant whose configuration is refused or whose proxy does not start is
reported as unavailable with the reason, never as a number.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from afxdp_proxy.config import MAX_QUEUES, ConfigError, parse_config
from afxdp_proxy.lab.bench import null
from afxdp_proxy.lab.bench.costs import chain
from afxdp_proxy.lab.testbed import Testbed, dynamic_stacks


@dataclass(frozen=True)
class Variant:
    name: str
    topology: str  # "inline" | "attached"
    backend: str | None  # None: no proxy at all (a baseline)
    key: str = "hash"
    queues: int | None = None  # afxdp: [proxy] queues
    about: str = ""
    runner: str = "afxdp_proxy"  # the module whose `run --config` starts it: the product, or a lab tool
    plain: bool = False  # the sender sends plain IP, as for a baseline, though a proxy runs
    floor: str | None = None  # the variant measured with this one, whose figures it is set against
    # "name:key=value:...": [proxy] keys this variant overrides, and the lab-only keys (LAB_KEYS)
    overrides: tuple[tuple[str, int | str], ...] = ()

    def lab(self, key: str) -> int | str | None:
        """A lab-only setting of this variant (LAB_KEYS), or None."""
        return dict(self.overrides).get(key)

    @property
    def is_baseline(self) -> bool:
        return self.backend is None

    @property
    def labelled(self) -> bool:
        """The sender pushes label stacks (depth slots, fidelity) for it."""
        return not self.is_baseline and not self.plain

    @property
    def bed(self) -> tuple[str, int | None]:
        """The testbed this variant runs on: its topology, and veths with `queues` queues if set
        (AF_XDP binds one socket per queue; a single flow still fills one of them)."""
        return (self.topology, self.queues)

    @property
    def baseline(self) -> str:
        """The baseline this variant's figures are divided by: same topology, same run."""
        return BASELINE_OF[self.topology]

    @property
    def cost_programs(self) -> tuple[str, str, str] | None:
        """(backend, key, topology) of the BPF programs BPF_PROG_TEST_RUN can time, if any."""
        if self.backend in ("kernel", "static"):
            return (self.backend, self.key, self.topology)
        return None

    def config(self, tb: Testbed, depth: int | None, **overrides: Any) -> str:
        """The proxy's TOML for `depth` labels (None: the dynamic-chain pattern); overrides as
        Testbed.proxy_config takes them."""
        assert self.backend is not None
        extra: dict[str, Any] = {"queues": self.queues} if self.queues else {}
        extra.update((k, x) for k, x in self.overrides if k not in LAB_KEYS)
        toml = tb.proxy_config(backend=self.backend, key=self.key, **extra, **overrides)
        if self.backend == "static":
            # the stack a static proxy is configured with: the chain after the SF's label
            # (for the dynamic chain, the first pattern's, as in the demo)
            tail = dynamic_stacks(tb.sf_label)[0][1:] if depth is None else chain(depth)[1:]
            labels = ", ".join(str(e.label) for e in tail)
            toml = toml.replace("[[sf]]\n", f"[[sf]]\nstatic_stack = [{labels}]\n", 1)
        return toml


BASELINE_OF = {"attached": "baseline", "inline": "baseline-inline"}

VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("baseline", "attached", None, about="plain IP through the attached topology: no labels, no proxy"),
    Variant("static", "attached", "static", about="static proxy: pushes its one configured stack"),
    Variant("kernel-hash", "attached", "kernel", "hash", about="caching proxy in XDP, key = header hash"),
    Variant("afxdp", "attached", "afxdp", about="caching proxy in user space over AF_XDP, 1 queue",
            floor="afxdp-null"),
    Variant("afxdp-null", "attached", "afxdp", runner=null.MODULE, plain=True,
            about="the floor of AF_XDP on this path: afxdp's sockets, rings and worker loop forwarding plain IP "
                  "untouched but for the MACs (no parse, no cache), same depths as afxdp, no labels"),
    Variant("afxdp-2q", "attached", "afxdp", queues=2,
            about="caching proxy over AF_XDP, 2 queues, on a testbed with 2-queue veths (vs the 1-queue baseline; "
                  "flows reach the second queue with --flows)"),
    Variant("afxdp-null-2q", "attached", "afxdp", queues=2, runner=null.MODULE, plain=True,
            about="the floor of AF_XDP with 2 queues: afxdp-null on the 2-queue testbed (asked for by name, "
                  "with --flows, to set afxdp-2q against)"),
    Variant("baseline-inline", "inline", None, about="plain IP through the inline topology: no labels, no proxy"),
    Variant("kernel-meta", "inline", "kernel", "meta", about="caching proxy, XDP RX + TC TX, key in skb->mark"),
    Variant("kernel-hash-inline", "inline", "kernel", "hash", about="caching proxy, XDP RX + TC TX, header hash"),
)}
# kernel-hash-inline is the control for kernel-meta: the same topology with the other key mode
DEFAULT = ("baseline", "static", "kernel-hash", "kernel-meta", "kernel-hash-inline", "afxdp", "afxdp-2q")


# Settings the bench applies around a proxy rather than in its configuration:
#   cpu          the proxy process and all its threads (the workers) pinned to this CPU
#   napi_defer   /sys/class/net/<if>/napi_defer_hard_irqs of the proxy's interfaces
#   gro_flush    /sys/class/net/<if>/gro_flush_timeout (ns) of the proxy's interfaces
#   busy_poll    afxdp: SO_PREFER_BUSY_POLL, SO_BUSY_POLL = usecs, SO_BUSY_POLL_BUDGET on its
#                sockets, "usecs" or "usecs/budget" (AXP_BUSY_POLL in native/axp_xsk.c)
LAB_KEYS = ("cpu", "napi_defer", "gro_flush", "busy_poll")


def variant(name: str) -> Variant:
    """A known variant, or one with overrides: "afxdp:ring_size=512:cpu=1" is afxdp with
    [proxy] ring_size = 512, its process pinned to CPU 1. Values are integers where they parse."""
    base, *pairs = name.split(":")
    if base not in VARIANTS:
        raise ValueError(f"unknown variant {base}; known: {', '.join(VARIANTS)}")
    v = VARIANTS[base]
    if not pairs:
        return v
    if v.is_baseline:
        raise ValueError(f"{name}: a baseline runs no proxy and takes no overrides")
    overrides: list[tuple[str, int | str]] = []
    for pair in pairs:
        key, eq, text = pair.partition("=")
        if not eq or not key or not text:
            raise ValueError(f"{name}: {pair!r} is not key=value")
        try:
            overrides.append((key, int(text)))
        except ValueError:
            overrides.append((key, text))
    about = f"{v.name} with {', '.join(f'{k} = {x}' for k, x in overrides)}"
    queues = dict(overrides).get("queues")
    if isinstance(queues, int) and queues > 0:
        # the proxy serves N queues of a veth only if it has them: the testbed's veths get N
        # (as afxdp-2q's); 0 and what is no number stay overrides, for parse_config to judge
        if not 1 <= queues <= MAX_QUEUES:
            raise ValueError(f"{name}: queues = {queues}: set 1..{MAX_QUEUES} "
                             "(the testbed's veths get as many)")
        overrides = [(k, x) for k, x in overrides if k != "queues"]
        # its floor runs on that testbed too: the same sockets and rings over as many queues
        floor = f"{v.floor}:queues={queues}" if v.floor else None
        return replace(v, name=name, queues=queues, overrides=tuple(overrides), floor=floor,
                       about=f"{about}, on a testbed with {queues}-queue veths")
    return replace(v, name=name, overrides=tuple(overrides), about=about)


def select(names: list[str]) -> list[Variant]:
    """The named variants plus the baselines and floors they need, baselines first, each floor
    after its variant, order kept otherwise."""
    chosen: dict[Variant, None] = {}
    for v in (variant(n) for n in dict.fromkeys(names)):
        chosen[v] = None
        if v.floor:
            chosen.setdefault(variant(v.floor))
    needed = dict.fromkeys(v.baseline for v in chosen)
    bases = [VARIANTS[b] for b in needed]
    return bases + [v for v in chosen if not v.is_baseline]


def config_problem(toml: str) -> str | None:
    """The one-line error the proxy would refuse this configuration with, or None."""
    try:
        parse_config(tomllib.loads(toml))
    except (ConfigError, tomllib.TOMLDecodeError) as e:
        return f"config refused: {e}"
    return None


# set by the variant's name: an override of them would contradict it (or, for backend and key,
# collide with the arguments Variant.config passes)
FIXED_KEYS = ("backend", "key", "topology")


def _lab_problem(key: str, value: int | str) -> str | None:
    """Why a lab-only setting cannot be applied, or None."""
    if key == "cpu":
        cpus = sorted(os.sched_getaffinity(0))
        if not isinstance(value, int) or value not in cpus:
            return f"set a CPU this process may run on: {', '.join(map(str, cpus))}"
    elif key in ("napi_defer", "gro_flush"):
        if not isinstance(value, int) or value < 0:
            return "set a whole number, 0 or more"
    elif key == "busy_poll" and not re.fullmatch(r"\d+(/\d+)?", str(value)):
        return "set USECS or USECS/BUDGET, whole numbers"
    return None


def problem(v: Variant, depths: Iterable[int]) -> str | None:
    """Why v's overrides would be refused, in one line naming the variant and the key, or None.
    Checked before any testbed is built, nothing started: the lab-only keys, and the configuration
    v's proxy would get at every depth (and the dynamic chain) through the proxy's own parse_config,
    with the testbed's interface names (Testbed() only names them)."""
    if v.is_baseline:
        return None
    for key, value in v.overrides:
        if key in FIXED_KEYS:
            return (f"{v.name}: {key} is set by the variant's name; pick the variant that has the {key} "
                    f"(known: {', '.join(VARIANTS)})")
        if key == "busy_poll" and v.backend != "afxdp":
            return f"{v.name}: busy_poll applies to AF_XDP sockets only (afxdp variants)"
        why = _lab_problem(key, value) if key in LAB_KEYS else None
        if why:
            return f"{v.name}: {key} = {value}: {why}"
    tb = Testbed(v.topology, queues=v.queues)
    for key, value in v.overrides:
        if key in LAB_KEYS:
            continue
        # proxy_config puts the SF's keys into [[sf]], which the bench wires to its testbed itself
        try:
            alone = tomllib.loads(replace(v, overrides=((key, value),)).config(tb, 1))
        except tomllib.TOMLDecodeError:
            alone = {}
        if key not in alone.get("proxy", {}):
            return (f"{v.name}: {key} is not a [proxy] key; the bench sets the SF's keys itself "
                    "(overrides take [proxy] keys and cpu, napi_defer, gro_flush, busy_poll)")
    for depth in (*depths, None) if v.labelled else tuple(depths):
        why = config_problem(v.config(tb, depth))
        if why:
            return f"{v.name}: {why}"
    return None
