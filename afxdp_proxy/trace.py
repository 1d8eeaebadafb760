"""Follow sampled packets through a running proxy: what ``afxdp-proxy trace`` reads and prints.

The data path's half is written once in C (``bpf/include/trace.shared.h``: the sampling rule,
the filters, ``struct axp_trace_event``); this module is the other half, for both backends:

* **What to sample** (:class:`Sampling`) becomes a ``struct axp_trace_ctl`` that :class:`Tracer`
  writes into the running proxy and clears when it leaves (:meth:`Tracer.stop`). Its ``owner``
  is the tracer's pid: a proxy clears a ctl whose owner is gone (:func:`release_orphan`, once a
  second), so even a ``trace`` killed by SIGKILL leaves sampling on for a second at most.
* **Where the events come from**: the kernel backend's BPF ring buffer
  (``BPF_MAP_TYPE_RINGBUF``, Documentation/bpf/ringbuf.rst) and ``.data.trace`` map, both opened
  by the IDs the proxy's state file gives (``maps.trace_events``, ``maps.trace_ctl``); the afxdp
  backend's :class:`TraceFile`, a ``struct axp_trace_area`` in a file under /run/afxdp-proxy
  that its workers write and the tracer maps too (``trace_file``). ``native/axp_trace.c`` reads
  either ring.
* **Packets** (:class:`Packets`) groups the events, which arrive stage by stage from any CPU, by
  the key hash RX and TX agree on: a packet opens with its RX event and its TX events join the
  oldest packet of that hash still in the SF (the cache's own order); :meth:`Packet.text` and
  :meth:`Packet.as_dict` render one.

Times are CLOCK_MONOTONIC ns (``bpf_ktime_get_ns``; the workers' ``axp_now_ns``).
"""

from __future__ import annotations

import ipaddress
import json
import mmap
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from afxdp_proxy import bpf, cache, counters, state
from afxdp_proxy._native import ffi, lib
from afxdp_proxy.key import Key, KeyKind, format_key
from afxdp_proxy.mpls import Lse

# enum axp_trace_stage, as the output names them
RX, INSERT, RX_DONE, TAKE, TX_DONE = (lib.AXP_TRACE_RX, lib.AXP_TRACE_INSERT, lib.AXP_TRACE_RX_DONE,
                                      lib.AXP_TRACE_TAKE, lib.AXP_TRACE_TX_DONE)
STAGES = {RX: "rx", INSERT: "insert", RX_DONE: "rx_verdict", TAKE: "take", TX_DONE: "tx_verdict"}
AREA_SLOTS = lib.AXP_TRACE_AREA_SLOTS
READ_BATCH = 256  # events copied out of a ring per call
MAX_SAMPLE = 1 << 31  # the hash bits above the tag: 48, of which the mask takes up to 31
DEFAULT_SAMPLE = 1024  # --sample without filters: cheap enough for a loaded production proxy

INSERT_RESULTS = {
    cache.OPENED: "a run of its own",
    cache.JOINED: "joined its key's newest run (same stack)",
    cache.KEY_FULL: "refused: max_per_key of its key in flight, or its set full of it",
    cache.MISS: "not cached: its set's lock was held too long",
}
PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "icmp": socket.IPPROTO_ICMP,
          "icmp6": socket.IPPROTO_ICMPV6, "icmpv6": socket.IPPROTO_ICMPV6}


class TraceError(RuntimeError):
    """What keeps a trace from starting or going on, in one line."""


# ---------------------------------------------------------------------- what to sample


@dataclass(frozen=True)
class Flow:
    """A flow filter on the key: each field None matches anything. Addresses as on the wire;
    ``either``: ``src`` may be either address of the packet (an address given alone)."""

    proto: int | None = None
    src: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    sport: int | None = None
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    dport: int | None = None
    either: bool = False

    @classmethod
    def parse(cls, text: str) -> Flow:
        """``ADDR`` (either end) or ``PROTO,SRC,SPORT,DST,DPORT`` with ``*`` for any field, e.g.
        ``udp,10.0.1.1,4000,10.0.2.1,7777`` or ``tcp,*,*,10.0.2.1,5201``. ValueError says why not."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) == 1:
            return cls(src=_addr(parts[0]), either=True)
        if len(parts) != 5:
            raise ValueError(f"{text!r}: give an address, or PROTO,SRC,SPORT,DST,DPORT (* for any)")
        proto, src, sport, dst, dport = (None if p in ("*", "") else p for p in parts)
        flow = cls(_proto(proto), _addr(src), _port(sport), _addr(dst), _port(dport))
        if flow.src and flow.dst and flow.src.version != flow.dst.version:
            raise ValueError(f"{text!r}: an IPv{flow.src.version} and an IPv{flow.dst.version} address")
        return flow

    def __str__(self) -> str:
        if self.either:
            return f"{self.src} either way"
        fields_ = [_proto_name(self.proto), self.src, self.sport, self.dst, self.dport]
        return ",".join("*" if f is None else str(f) for f in fields_)


def _addr(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if text is None:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None


def _port(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"{text!r} is not a port (0..65535)")
    return int(text)


def _proto(text: str | None) -> int | None:
    if text is None:
        return None
    if text.lower() in PROTOS:
        return PROTOS[text.lower()]
    if text.isdigit() and int(text) < 256:
        return int(text)
    raise ValueError(f"{text!r} is not a protocol: tcp, udp, icmp, icmp6 or a number")


def _proto_name(proto: int | None) -> str | None:
    if proto is None:
        return None
    return next((n for n, p in PROTOS.items() if p == proto), str(proto))


def _words(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """An address as struct axp_key holds it: 16 bytes, IPv4 in the first 4."""
    return addr.packed.ljust(16, b"\0")


@dataclass(frozen=True)
class Sampling:
    """Which packets to follow: 1 in ``every`` (a power of two) by key hash, then, if given,
    only stacks holding ``label`` and only ``flow``."""

    every: int = 1
    label: int = 0
    flow: Flow | None = None

    def __post_init__(self) -> None:
        if self.every < 1 or self.every & (self.every - 1) or self.every > MAX_SAMPLE:
            raise ValueError(f"sample 1 in {self.every}: a power of two from 1 to {MAX_SAMPLE}")
        if not 0 <= self.label < 1 << 20:
            raise ValueError(f"label {self.label}: 0..1048575")

    @classmethod
    def nearest(cls, n: int, label: int = 0, flow: Flow | None = None) -> Sampling:
        """1 in the power of two nearest n (1000 -> 1024; a tie goes to the smaller), as --sample takes it."""
        if n < 1:
            raise ValueError(f"sample 1 in {n}: give a positive number")
        low = 1 << (n.bit_length() - 1)
        return cls(min(low * 2 if n - low > low * 2 - n else low, MAX_SAMPLE), label, flow)

    def ctl(self, owner: int) -> Any:
        """The struct axp_trace_ctl that turns this sampling on for tracer `owner` (a pid)."""
        c = ffi.new("struct axp_trace_ctl *")
        c.mask = self.every - 1
        c.label = self.label
        c.owner = owner
        f = self.flow
        if f is not None:
            bits = 0
            if f.proto is not None:
                bits |= lib.AXP_TRACE_FLOW_PROTO
                c.proto = f.proto
            for addr, bit, dest in ((f.src, lib.AXP_TRACE_FLOW_SADDR, c.saddr),
                                    (f.dst, lib.AXP_TRACE_FLOW_DADDR, c.daddr)):
                if addr is not None:
                    bits |= bit
                    c.family = addr.version
                    ffi.memmove(dest, _words(addr), 16)
            for port, bit, name in ((f.sport, lib.AXP_TRACE_FLOW_SPORT, "sport"),
                                    (f.dport, lib.AXP_TRACE_FLOW_DPORT, "dport")):
                if port is not None:
                    bits |= bit
                    setattr(c, name, socket.htons(port))
            if f.either:
                bits |= lib.AXP_TRACE_FLOW_EITHER
            c.flow = bits
        c.on = 1
        return c

    def __str__(self) -> str:
        out = f"1 in {self.every} packets (by key hash)" if self.every > 1 else "every packet"
        if self.label:
            out += f", stacks holding label {self.label}"
        if self.flow:
            out += f", flow {self.flow}"
        return out


# ---------------------------------------------------------------------- the data path's ctl


class Control:
    """A running proxy's struct axp_trace_ctl: the kernel backend's ``.data.trace`` map
    (``ctl_map``) or an afxdp backend's mapped area (``area``, a ``struct axp_trace_area *``;
    ``mapping``: the mmap it lies in, when this Control is to close it)."""

    def __init__(self, ctl_map: bpf.Map | None = None, area: Any = None, mapping: mmap.mmap | None = None) -> None:
        if (ctl_map is None) == (area is None):
            raise ValueError("a ctl map or an area")
        self._map = ctl_map
        self._area = area
        self._mapping = mapping

    @property
    def area(self) -> Any:
        return self._area

    @property
    def size(self) -> int:
        """Bytes of the area (0 for a map)."""
        return len(self._mapping) if self._mapping is not None else 0

    def read(self) -> Any:
        """A copy of the ctl (``struct axp_trace_ctl *``)."""
        if self._map is not None:
            return self._map.lookup(0)
        c = ffi.new("struct axp_trace_ctl *")
        ffi.memmove(c, ffi.addressof(self._area.ctl), ffi.sizeof(c[0]))
        return c

    def write(self, c: Any) -> None:
        """Set the ctl; the workers of an area see ``on`` last (x86 keeps stores in order)."""
        if self._map is not None:
            self._map.update(0, c)
            return
        live = self._area.ctl
        off = ffi.new("struct axp_trace_ctl *", c[0])
        off.on = 0
        live.on = 0
        ffi.memmove(ffi.addressof(live), off, ffi.sizeof(off[0]))
        live.on = c.on

    def clear(self) -> None:
        self.write(ffi.new("struct axp_trace_ctl *"))

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        if self._mapping is not None:
            ffi.release(self._area)
            self._mapping.close()
            self._mapping = None


def control_of(info: dict[str, Any]) -> Control:
    """The ctl of the running proxy a state file entry describes (``state.running()[name]``).
    TraceError when the backend has none (static, or a proxy of a version without trace)."""
    backend = info.get("backend")
    if backend == "static":
        raise TraceError("the static proxy has no key to follow a packet by: trace the kernel or afxdp backend")
    if backend == "afxdp":
        path = info.get("trace_file")
        if not path:
            raise TraceError("this afxdp proxy has no trace area: it was started by a version without trace")
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            mm = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        return Control(area=ffi.from_buffer("struct axp_trace_area *", mm), mapping=mm)
    maps = info.get("maps", {})
    if "trace_ctl" not in maps:
        raise TraceError("this proxy has no trace maps: it was started by a version without trace")
    return Control(ctl_map=bpf.Map.from_id(maps["trace_ctl"], "uint32_t", "struct axp_trace_ctl"))


def release_orphan(control: Control) -> int:
    """Clear the ctl when the trace that set it has gone (a killed `trace`): the proxies call
    it once a second. Returns the gone tracer's pid, or 0."""
    c = control.read()
    if c.on and c.owner and not state.alive(c.owner):
        control.clear()
        return int(c.owner)
    return 0


class TraceFile:
    """The afxdp backend's area (``struct axp_trace_area``, AREA_SLOTS event slots) in a file
    under /run/afxdp-proxy, mapped shared: the proxy's workers write it, ``trace`` maps it too.
    Removed on close; a dead proxy's is removed by the next one's start (as counter files)."""

    def __init__(self, name: str, slots: int = AREA_SLOTS) -> None:
        state.STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.path = state.STATE_DIR / f"{name}.{os.getpid()}.{id(self):x}.trace"
        self.size = lib.axp_trace_area_size(slots)
        self.map = state.map_shared(self.path, self.size, mode=0o600)  # its ctl is what to sample
        self.area = ffi.from_buffer("struct axp_trace_area *", self.map)
        bpf.check(lib.axp_trace_area_init(self.area, self.size, slots), "trace area")
        self.control = Control(area=self.area)

    def close(self) -> None:
        ffi.release(self.area)
        self.map.close()
        self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    """One struct axp_trace_event (see trace.shared.h for what result and value mean by stage)."""

    stage: int
    ts_ns: int
    hash: int
    cpu: int
    sf: int
    result: int
    value: int
    key: bytes  # struct axp_key (RX and TAKE), else empty
    labels: tuple[int, ...]  # label stack entries, as ints, depth of them

    @classmethod
    def from_c(cls, ev: Any) -> Event:
        key = bytes(ffi.buffer(ffi.addressof(ev, "key"), ffi.sizeof("struct axp_key")))
        labels = tuple(int.from_bytes(ffi.buffer(ev.labels + i, 4), "big") for i in range(ev.depth))
        return cls(ev.stage, ev.ts_ns, ev.hash, ev.cpu, ev.sf, ev.result, ev.value,
                   key if any(key) else b"", labels)

    @property
    def name(self) -> str:
        return STAGES.get(self.stage, f"stage{self.stage}")

    @property
    def reason(self) -> str:
        """A verdict's counter name (rx_popped, tx_pushed, ...)."""
        return counters.slot_names().get(self.result, f"slot{self.result}")


def sampled(h: int, every: int) -> bool:
    """The sampling rule (axp_trace_pick without filters): is a key of hash h sampled at 1 in
    `every`? dwell_sample's rule (cache.is_timed)."""
    return cache.is_timed(h, every - 1)


class Reader:
    """Events of one ring as they come: the kernel backend's BPF ring buffer (its map's fd) or
    an area (``struct axp_trace_area *`` and its size in bytes, kept mapped by the caller)."""

    def __init__(self, ringbuf_fd: int | None = None, area: Any = None, size: int = 0) -> None:
        err = ffi.new("int *")
        if ringbuf_fd is not None:
            r = lib.axp_trace_open_ringbuf(ringbuf_fd, err)
        else:
            r = lib.axp_trace_open_area(area, size, err)
        if r == ffi.NULL:
            bpf.check(err[0] or -22, "open the trace ring")
        self._r = r
        self._buf = ffi.new("struct axp_trace_event[]", READ_BATCH)

    def read(self) -> list[Event]:
        """Every event written since the last read, oldest first (never waits)."""
        out: list[Event] = []
        while True:
            n = bpf.check(lib.axp_trace_read(self._r, self._buf, READ_BATCH), "read the trace ring")
            out += [Event.from_c(self._buf[i]) for i in range(n)]
            if n < READ_BATCH:
                return out

    def close(self) -> None:
        if self._r != ffi.NULL:
            lib.axp_trace_close(self._r)
            self._r = ffi.NULL


# ---------------------------------------------------------------------- a running proxy


class Tracer:
    """Trace the running proxy a state file entry describes (``state.running()[name]``):
    :meth:`start` turns sampling on, :meth:`read` returns events, :meth:`stop` turns it off
    (idempotent; call it from a ``finally``). TraceError when the backend cannot be traced
    or another trace holds it."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.pid = os.getpid()
        self.started = False
        self.control = control_of(info)
        try:
            if self.control.area is not None:
                self.reader = Reader(area=self.control.area, size=self.control.size)
            else:
                fd = bpf.check(lib.axp_map_fd_by_id(info["maps"]["trace_events"]), "the trace ring buffer")
                try:
                    self.reader = Reader(ringbuf_fd=fd)
                finally:
                    lib.axp_close_fd(fd)
        except BaseException:
            self.control.close()
            raise

    def start(self, sampling: Sampling) -> None:
        """Drop what an earlier trace left in the ring, then sample. TraceError while another
        live trace holds the proxy."""
        c = self.control.read()
        if c.on and c.owner and c.owner != self.pid and state.alive(c.owner):
            raise TraceError(f"another trace (pid {c.owner}) is following packets through this proxy; "
                             "one at a time")
        self.reader.read()
        self.control.write(sampling.ctl(self.pid))
        self.started = True

    def read(self) -> list[Event]:
        return self.reader.read()

    def lost(self) -> int:
        """Events the data path dropped since start: its ring was full."""
        return int(self.control.read().lost)

    def stop(self) -> None:
        """Sampling off, unless another trace has taken over since."""
        if self.started and self.control.read().owner == self.pid:
            self.control.clear()
        self.started = False

    def close(self) -> None:
        self.stop()
        self.reader.close()
        self.control.close()


# ---------------------------------------------------------------------- packets


@dataclass
class Packet:
    """The events of one sampled packet, in the order of its stages."""

    hash: int
    events: list[Event] = field(default_factory=list)
    opened: float = 0.0  # the reader's time.monotonic() at its first event

    def stage(self, stage: int) -> Event | None:
        return next((e for e in self.events if e.stage == stage), None)

    @property
    def in_sf(self) -> bool:
        """Popped, and its TX side not seen yet."""
        done = self.stage(RX_DONE)
        return done is not None and done.result == lib.AXP_CNT_RX_POPPED and self.stage(TAKE) is None

    @property
    def complete(self) -> bool:
        """Its last stage seen: TX's verdict, or an RX verdict that was not a pop."""
        rx = self.stage(RX_DONE)
        return self.stage(TX_DONE) is not None or (rx is not None and rx.result != lib.AXP_CNT_RX_POPPED)

    @property
    def key(self) -> bytes:
        return next((e.key for e in self.events if e.key), b"")

    @property
    def sf(self) -> int:
        return next((e.sf for e in self.events if e.sf != counters.NONE_ROW), counters.NONE_ROW)

    def dwell(self) -> tuple[int, str] | None:
        """Its time in the SF (ns) and where that comes from: the data path's measure ("cache":
        RX to TX as the dwell histogram has it), else the RX verdict's and the take's times
        ("trace": a packet dwell_sample left unmeasured); None before a hit."""
        take, rx_done = self.stage(TAKE), self.stage(RX_DONE)
        if take is None or take.result != cache.HIT:
            return None
        if take.value:
            return take.value, "cache"
        return (take.ts_ns - rx_done.ts_ns, "trace") if rx_done is not None else None

    def as_dict(self, sf_names: Sequence[str] = ()) -> dict[str, Any]:
        """One JSON line: the packet, then each stage with its time relative to the first (µs)."""
        t0 = self.events[0].ts_ns
        dwell = self.dwell()
        return {"hash": f"{self.hash:#018x}", "sf": _sf_name(self.sf, sf_names), "flow": flow_of(self.key),
                "key": format_key(self.key) if self.key else None, "complete": self.complete,
                "dwell_ns": dwell[0] if dwell else None, "dwell_from": dwell[1] if dwell else None,
                "stages": [_stage_dict(e, t0, sf_names) for e in self.events]}

    def text(self, sf_names: Sequence[str] = (), why: str = "") -> str:
        """A head line (flow, SF, hash), then one line per stage with µs since the first."""
        t0 = self.events[0].ts_ns
        head = f"{flow_of(self.key) or 'no key seen'}  SF {_sf_name(self.sf, sf_names)}  hash {self.hash:#018x}"
        why = why or (no_rx_reason(self) if self.stage(RX) is None else "")
        lines = [head + (f"  ({why})" if why else "")]
        dwell = self.dwell()
        for e in self.events:
            if e.stage == TAKE and dwell is not None:
                how = "RX to TX" if dwell[1] == "cache" else "from the trace's times: dwell_sample left it unmeasured"
                lines.append(f"  {'':>10}  {'sf':10} {'':6} {dwell[0] / 1000:.1f} µs in the SF ({how})")
            lines.append(f"  {(e.ts_ns - t0) / 1000:>+10.1f}  {e.name:10} cpu {e.cpu:<2} {_what(e, sf_names)}")
        return "\n".join(lines)


def _sf_name(row: int, sf_names: Sequence[str]) -> str:
    if row == counters.NONE_ROW:
        return "-"
    return sf_names[row] if row < len(sf_names) and sf_names[row] else f"#{row}"


def stack_text(labels: Iterable[int]) -> str:
    """Label stack entries as "1000/2001/3001" (labels only); "-" for none."""
    return "/".join(str(w >> 12) for w in labels) or "-"


def flow_of(key: bytes) -> str:
    """A key's flow in a few words: "udp 10.0.1.1:4000 > 10.0.2.1:7777 id=0x1234"."""
    if not key:
        return ""
    k = Key.from_bytes(key)
    text = format_key(key)
    if k.kind == KeyKind.META:
        return text
    # format_key's line without the protocol number and the kind's words
    head, _, _ = text.partition(" w=[")
    return head.replace(f" proto={k.proto}", "", 1)


def _what(e: Event, sf_names: Sequence[str]) -> str:
    if e.stage == RX:
        label = e.labels[0] >> 12 if e.labels else "?"
        return (f"label {label} -> SF {_sf_name(e.sf, sf_names)}, stack {stack_text(e.labels)}, "
                f"{e.value} B to the SF")
    if e.stage == INSERT:
        expired, evicted = e.value >> 32, e.value & 0xFFFFFFFF
        freed = [f"{n} {w}" for n, w in ((expired, "expired"), (evicted, "evicted")) if n]
        return INSERT_RESULTS.get(e.result, f"result {e.result}") + (f" ({', '.join(freed)})" if freed else "")
    if e.stage == TAKE:
        if e.result == cache.HIT:
            return f"hit: stack {stack_text(e.labels)}"
        return "miss: no entry for its key"
    info = counters.INFO.get(e.reason)
    out = f"{e.reason} ({info.action if info else '?'})"
    if e.stage == TX_DONE and _pushed(e):
        out += f": pushed {stack_text(_pushed(e))}"
    return out


def _pushed(e: Event) -> tuple[int, ...]:
    """What a TX verdict put on the wire: its stack without the SF's label, when it pushed one."""
    return e.labels[1:] if e.reason in ("tx_pushed", "tx_miss_last") else ()


def _stage_dict(e: Event, t0: int, sf_names: Sequence[str]) -> dict[str, Any]:
    d: dict[str, Any] = {"stage": e.name, "t_us": round((e.ts_ns - t0) / 1000, 3), "ts_ns": e.ts_ns, "cpu": e.cpu,
                         "sf": _sf_name(e.sf, sf_names)}
    if e.stage in (RX_DONE, TX_DONE):
        d["reason"] = e.reason
        if e.stage == TX_DONE:
            d["pushed"] = [w >> 12 for w in _pushed(e)]
    elif e.stage == INSERT:
        d.update(result=cache.RESULTS.get(e.result, str(e.result)), expired=e.value >> 32,
                 evicted=e.value & 0xFFFFFFFF)
    elif e.stage == TAKE:
        d["result"] = cache.RESULTS.get(e.result, str(e.result))
        if e.result == cache.HIT and e.value:
            d["dwell_ns"] = e.value
    elif e.stage == RX:
        d["bytes"] = e.value
    if e.labels or e.stage in (RX, TAKE, TX_DONE):
        d["stack"] = [w >> 12 for w in e.labels]
        d["lse"] = [_lse(w) for w in e.labels]
    return d


def _lse(word: int) -> dict[str, int]:
    e = Lse.decode(word)
    return {"label": e.label, "tc": e.tc, "s": int(e.bos), "ttl": e.ttl}


class Packets:
    """Events grouped into packets. RX opens a packet; INSERT and the RX verdict join the newest
    packet of their hash still at RX; TAKE joins the oldest of its hash still in the SF (the
    cache hands stacks out in that order) or opens a packet whose RX was not seen; the TX verdict
    joins the newest of its hash taken but not sent. :meth:`feed` returns the packets it
    completed; :meth:`expire` the ones that waited longer than ``wait`` seconds."""

    def __init__(self, wait: float = 1.0) -> None:
        self.wait = wait
        self.open: list[Packet] = []

    def feed(self, events: Iterable[Event], now: float) -> list[Packet]:
        done: list[Packet] = []
        for e in events:
            p = self._place(e, now)
            if p.complete:
                self.open.remove(p)
                done.append(p)
        return done

    def _place(self, e: Event, now: float) -> Packet:
        same = [p for p in self.open if p.hash == e.hash]
        if e.stage in (INSERT, RX_DONE):
            p = next((p for p in reversed(same) if p.stage(RX) and not p.stage(RX_DONE)), None)
        elif e.stage == TAKE:
            p = next((p for p in same if p.in_sf), None)
        elif e.stage == TX_DONE:
            p = next((p for p in reversed(same) if p.stage(TAKE) and not p.stage(TX_DONE)), None)
        else:
            p = None
        if p is None:
            p = Packet(e.hash, opened=now)
            self.open.append(p)
        p.events.append(e)
        return p

    def expire(self, now: float) -> list[Packet]:
        old = [p for p in self.open if now - p.opened >= self.wait]
        for p in old:
            self.open.remove(p)
        return old

    def rest(self) -> list[Packet]:
        """Every packet still open, oldest first (the trace is ending)."""
        out, self.open = self.open, []
        return out


def no_rx_reason(p: Packet) -> str:
    """Why a packet shows no RX side: a miss at TX was never popped (plain IP through the SF,
    or a key the SF changed); a hit was popped before the trace began."""
    take = p.stage(TAKE)
    if take is not None and take.result != cache.HIT:
        return "TX only: no cache entry, so not popped here (plain IP through the SF) or its key changed in the SF"
    return "its RX came before the trace"


def wait_reason(p: Packet, wait: float) -> str:
    """Why an expired or left-over packet has no TX side: a line's note."""
    if p.stage(RX) is None:
        return no_rx_reason(p)
    if p.in_sf:
        return f"no TX within {wait:g} s: still in the SF, dropped by it, or its key changed there"
    return "incomplete"


def describe(info: dict[str, Any], name: str, sampling: Sampling) -> str:
    """The line `trace` starts with: which proxy, what it samples."""
    return (f"tracing {name} ({info['backend']} backend, pid {info['pid']}): {sampling}; "
            "Ctrl-C to stop")



# ---------------------------------------------------------------------- the command's loop

WAIT = 1.0  # seconds a popped packet's TX side is waited for before it is shown without
POLL = 0.02  # seconds between reads of the ring: events carry their own times


@dataclass
class Summary:
    """What a trace saw: packets shown, how many of them complete, events the data path lost."""

    packets: int = 0
    complete: int = 0  # seen to their last stage: TX's verdict, or an RX verdict that was not a pop
    from_rx: int = 0  # of those, seen from RX on
    lost: int = 0

    def line(self) -> str:
        lost = f"; {self.lost} events lost (the ring was full: sample fewer)" if self.lost else ""
        packets = f"{self.packets} packet{'s' if self.packets != 1 else ''}"
        tx_only = self.complete - self.from_rx
        rest = f" ({tx_only} seen at TX only)" if tx_only else ""
        return f"{packets} traced, {self.from_rx} followed from RX to TX or to their drop{rest}{lost}"


def follow(tracer: Tracer, out: TextIO, sf_names: Sequence[str] = (), count: int = 0, seconds: float = 0.0,
           as_json: bool = False, stop: threading.Event | None = None,
           alive: Callable[[], bool] | None = None) -> Summary:
    """Print sampled packets as they complete (text: a block per packet; as_json: an object a
    line) until `count` packets (0: no limit), `seconds` (0: no limit) or `stop`; then the
    packets still open. The tracer must be started. TraceError when `alive` (asked about once
    a second) says the proxy has gone."""
    stop = stop or threading.Event()
    packets, summary = Packets(WAIT), Summary()
    t0 = checked = time.monotonic()

    def show(ps: Iterable[Packet], why: Callable[[Packet], str] = lambda p: "") -> bool:
        for p in ps:
            if as_json:
                out.write(json.dumps(p.as_dict(sf_names)) + "\n")
            else:
                out.write(p.text(sf_names, why(p)) + "\n\n")
            summary.packets += 1
            summary.complete += p.complete
            summary.from_rx += p.complete and p.stage(RX) is not None
            if count and summary.packets >= count:
                out.flush()
                return True
        out.flush()
        return False

    done = False
    while not done:
        now = time.monotonic()
        done = show(packets.feed(tracer.read(), now)) or show(packets.expire(now), lambda p: wait_reason(p, WAIT))
        if done or (seconds and now - t0 >= seconds) or stop.wait(POLL):
            break
        if alive is not None and now - checked >= 1.0:
            checked = now
            if not alive():
                raise TraceError("the proxy has stopped")
    if not done:
        show(packets.feed(tracer.read(), time.monotonic()))
        show(packets.rest(), lambda p: "the trace ended before its TX" if p.in_sf else wait_reason(p, WAIT))
    summary.lost = tracer.lost()
    return summary
