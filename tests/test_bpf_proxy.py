"""build/proxy.bpf.o under BPF_PROG_TEST_RUN: verdicts, exact output bytes, cache and counters.

Every row of tests/cases.py goes through axp_xdp_rx and, when popped, back through the TX
program of the topology (inline: TC axp_tc_tx; attached: XDP axp_xdp_tx). Then the modes one
by one: misses, one key in flight more than once, ageing, eviction, meta keys, the static
proxy, bad TX input. tests/test_cache.py holds these programs' cache to the Python model.

Test-run facts this relies on: XDP and TC runs happen on the loopback device (ifindex 1), so
``axp_tx_sf`` maps ifindex 1; XDP_REDIRECT is returned, not carried out, so bpf_redirect needs
no real target; XDP output is the adjusted frame, preceded by the metadata when there is some;
frames shorter than an Ethernet header are refused (EINVAL) before any program runs.
"""

from __future__ import annotations

import errno
import itertools
import os
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from afxdp_proxy._native import ffi, lib
from cases import (
    BY_NAME,
    CASES,
    HOST4,
    HOST6,
    HOST_TX,
    POPPED,
    SF_KEYS,
    SF_VLAN_OUT,
    Case,
    Verdict,
    expected_rx,
    nat,
    sf_rewrite,
    stack_of,
)
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from afxdp_proxy import bpf, cache, counters, hostaddrs
from afxdp_proxy.backends.kernel import ONE_ROLE_PROGRAMS, ProxyObject, label_keys, meta_layout
from afxdp_proxy.config import DEFAULT_META_MARK_MASK, ProxyConfig
from afxdp_proxy.key import ETH_HLEN, KEY_SIZE, derive_key, format_key, meta_key, parse_mpls_frame
from afxdp_proxy.lab.frames import ether, ipv4_tcp, mpls_frame
from afxdp_proxy.mpls import Lse, stack_bytes, tx_stack

pytestmark = pytest.mark.root

TX_IFINDEX = 1  # test runs see the loopback device: skb->ifindex and ingress_ifindex are 1
MAX_LABELS = lib.AXP_MAX_LABELS
# struct __sk_buff (UAPI, ABI-stable) offsets of the fields a TC test run may preset
SKB_CTX_SIZE, SKB_MARK, SKB_GSO_SEGS = 192, 8, 164


def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


@dataclass(frozen=True)
class Sf:
    """One served SF as the loader would describe it (ifindexes need not exist in test runs)."""

    label: int
    sf_mac: bytes
    to_sf_mac: bytes
    next_hop_mac: bytes
    net_out_mac: bytes
    static: tuple[Lse, ...]
    to_sf_ifindex: int
    net_out_ifindex: int
    vlan_in: int = 0
    vlan_out: int = 0

    def struct(self) -> object:
        s = ffi.new("struct axp_sf *")
        s.label = self.label
        s.vlan_in, s.vlan_out = self.vlan_in, self.vlan_out
        s.to_sf_ifindex = self.to_sf_ifindex
        s.from_sf_ifindex = TX_IFINDEX
        s.net_out_ifindex = self.net_out_ifindex
        for name in ("sf_mac", "to_sf_mac", "next_hop_mac", "net_out_mac"):
            ffi.memmove(getattr(s, name), getattr(self, name), 6)
        ffi.memmove(s.static_stack, stack_bytes(list(self.static)), 4 * len(self.static))
        s.static_depth = len(self.static)
        return s


def _sf(n: int, vlan_in: int, label: int, static: tuple[Lse, ...] = ()) -> Sf:
    """SF n of cases.SF_KEYS, with MACs and interfaces of its own (none need exist in test runs)."""
    return Sf(label, mac(f"02:5f:00:00:00:{n + 1:02x}"), mac(f"02:70:00:00:00:{n + 1:02x}"),
              mac(f"02:4e:00:00:00:{n + 1:02x}"), mac(f"02:0e:00:00:00:{n + 1:02x}"), static, 11 + n, 21 + n,
              vlan_in, SF_VLAN_OUT.get(n, 0))


SFS = {n: _sf(n, vlan, label) for (vlan, label), n in SF_KEYS.items()}
SFS[0] = _sf(0, 0, 100, (Lse(500, 1, False, 33), Lse(600, 6, False, 44), Lse(700, 3, True, 55)))  # static stack


def add_sfs(sf_map: bpf.Map, label_map: bpf.Map) -> None:
    """The test SFs into a loaded object's SF table and label map, as the loaders put them."""
    for idx, sf in SFS.items():
        sf_map.update(idx, sf.struct())
        for key in label_keys(sf.vlan_in, sf.label):
            label_map.update(key, idx)


@dataclass(frozen=True)
class Cfg:
    key_mode: str = "hash"
    topology: str = "inline"
    on_miss: str = "pass"
    static: bool = False
    cache_entries: int = 1024
    max_dwell_ms: int = 1000
    max_per_key: int = 64
    ttl_model: str = "uniform"
    on_ttl_expired: str = "drop"
    meta_mark_mask: int = DEFAULT_META_MARK_MASK
    dwell_sample: int = 1  # every packet timed: exact RX stamps and dwell times to check

    def proxy_config(self) -> ProxyConfig:
        return ProxyConfig(
            backend="static" if self.static else "kernel", key=self.key_mode, topology=self.topology,
            cache_entries=self.cache_entries, on_miss=self.on_miss, max_dwell_ms=self.max_dwell_ms,
            max_per_key=self.max_per_key, ttl_model=self.ttl_model, on_ttl_expired=self.on_ttl_expired,
            meta_mark_mask=self.meta_mark_mask, dwell_sample=self.dwell_sample,
        )

    def __str__(self) -> str:
        mode = "static" if self.static else "cache"
        return f"{self.key_mode}-{self.topology}-miss_{self.on_miss}-{mode}"


# every mode the programs prune by .rodata; on_miss = last only where the config allows it
ALL_CONFIGS = [
    Cfg(k, t, m, s)
    for k, t, m, s in itertools.product(("hash", "meta"), ("inline", "attached"), ("pass", "drop"), (False, True))
] + [Cfg("hash", "attached", "last")]
PROGRAMS = ("axp_xdp_rx", "axp_tc_meta", "axp_tc_tx", "axp_xdp_tx", "axp_xdp_rx_tx")


@dataclass(frozen=True)
class Entry:
    """struct axp_entry copied out of the map."""

    labels: bytes  # the 16 __be32 slots as stored
    rx_ns: int
    depth: int
    sf: int


class Proxy:
    """The loaded object for one configuration, with SFs configured and run helpers."""

    def __init__(self, cfg: Cfg) -> None:
        self.cfg = cfg
        try:
            # the loader the proxy itself uses; axp_xdp_rx_tx serves attached interfaces only
            programs = PROGRAMS if cfg.topology == "attached" else ONE_ROLE_PROGRAMS
            self.obj = ProxyObject(cfg.proxy_config(), programs=programs)
        except bpf.BpfError as e:  # show the verifier's words, not just the errno
            pytest.fail(f"{cfg}: {e}\n{e.log[-4000:]}", pytrace=False)
        self.fds = {p: self.obj.prog_fd(p) for p in self.obj.programs}
        self.cache = self.obj.cache
        self.counter_map = self.obj.counters
        self.sfs = self.obj.sfs
        self.labels = self.obj.labels
        self.tx_sf = self.obj.tx_sf
        self.host_addrs = self.obj.host_addrs
        self.last = self.obj.obj.map("axp_last", "uint32_t", "uint8_t[72]")  # struct axp_last_stack (BPF only)
        self.rows = [*SFS, counters.NONE_ROW]  # the counter rows this configuration uses
        add_sfs(self.sfs, self.labels)

    def reset(self) -> None:
        self.obj.clear_cache()
        self.obj.set_clock_skew(0)
        zeros = ffi.new("uint64_t[]", bpf.NCPUS)
        for row in self.rows:
            for slot in range(counters.SLOTS):
                self.counter_map.update(row * counters.SLOTS + slot, zeros)
        self.tx_sf.clear()
        self.tx_sf.update(TX_IFINDEX, 0)
        self.host_addrs.clear()
        zero = ffi.new(f"uint8_t[{self.last.value_size}]")
        for sf in range(self.last.max_entries):
            self.last.update(sf, zero)  # no stack went to any SF yet (the spin lock is not copied)

    def close(self) -> None:
        self.obj.close()

    # -- runs ---------------------------------------------------------------------------
    def rx(self, frame: bytes) -> bpf.RunResult:
        return bpf.test_run(self.fds["axp_xdp_rx"], frame)

    def tc_tx(self, frame: bytes, mark: int = 0, gso_segs: int = 0) -> bpf.RunResult:
        ctx = None
        if mark or gso_segs:
            buf = bytearray(SKB_CTX_SIZE)
            struct.pack_into("=I", buf, SKB_MARK, mark)
            struct.pack_into("=I", buf, SKB_GSO_SEGS, gso_segs)
            ctx = bytes(buf)
        return bpf.test_run(self.fds["axp_tc_tx"], frame, ctx=ctx)

    def xdp_tx(self, frame: bytes) -> bpf.RunResult:
        return bpf.test_run(self.fds["axp_xdp_tx"], frame)

    def rx_tx(self, frame: bytes) -> bpf.RunResult:
        """XDP on an interface that is net_in of one SF and from_sf of another."""
        return bpf.test_run(self.fds["axp_xdp_rx_tx"], frame)

    def tx(self, frame: bytes, mark: int = 0) -> bpf.RunResult:
        """The TX program of the topology: TC egress inline, XDP on from_sf attached."""
        return self.tc_tx(frame, mark) if self.cfg.topology == "inline" else self.xdp_tx(frame)

    # -- state ----------------------------------------------------------------------------
    def snapshot(self) -> counters.Snapshot:
        return counters.read_map(self.counter_map, self.rows)

    def counters(self) -> dict[str, int]:
        """Non-zero counters by name, summed over SFs and CPUs."""
        return {k: v for k, v in self.snapshot().total().items() if v}

    def runs(self) -> list[cache.Run]:
        """Every run in the cache, set by set, way by way (read under the sets' locks)."""
        return [r for s in self.obj.cache_sets() for r in s.ways if r]

    def entries(self) -> dict[bytes, Entry]:
        """{key: entry} of a cache holding at most one packet per key."""
        out = {}
        for r in self.runs():
            assert r.key not in out and r.count == 1, f"{format_key(r.key)}: {r}"
            e = r.entry
            out[r.key] = Entry(e.labels, e.rx_ns, e.depth, e.sf)
        return out

    def packets(self) -> int:
        """Packets whose stacks the cache holds, counted in its sets."""
        return sum(r.count for r in self.runs())

    def seed(self, key: bytes, entry: cache.Entry) -> None:
        """Put one run into the cache as no RX could have (its set rewritten between packets)."""
        model = cache.CacheModel(self.cache.max_entries)
        model.insert(key, entry)
        i = model.set_of(key)
        buf = ffi.new("struct axp_cache_set *")
        cache.encode_set(buf, model.sets[i])
        self.cache.update(i, buf)


@pytest.fixture(scope="module")
def pool() -> Iterator[dict[Cfg, Proxy]]:
    loaded: dict[Cfg, Proxy] = {}
    yield loaded
    for p in loaded.values():
        p.close()


@pytest.fixture
def make(pool: dict[Cfg, Proxy]) -> Callable[..., Proxy]:
    """make(**cfg) -> a loaded proxy for that configuration, with an empty cache and zero counters."""

    def get(**kw: object) -> Proxy:
        cfg = Cfg(**kw)  # type: ignore[arg-type]
        if cfg not in pool:
            pool[cfg] = Proxy(cfg)
        pool[cfg].reset()
        return pool[cfg]

    return get


@pytest.fixture
def one_cpu() -> Iterator[int]:
    """Pin this thread to one CPU, so per-CPU state (the meta sequence) is predictable."""
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    yield cpu
    os.sched_setaffinity(0, before)


# ---- expectations --------------------------------------------------------------------------


def frame_for(key_n: int, stack_n: int) -> tuple[bytes, bytes, list[Lse]]:
    """(labelled frame, its bare frame, its stack) of packet `key_n` of one TCP flow (its TCP
    sequence number is key_n) carrying stack `stack_n` (stack_of(2 + stack_n), top label 100)."""
    stack = stack_of(2 + stack_n)
    ip = ipv4_tcp("10.9.0.1", "10.9.0.2", 7, 1000, 80, key_n, 0)
    return mpls_frame(stack, ip), ether(ip), stack


def with_macs(frame: bytes, dst: bytes, src: bytes) -> bytes:
    return dst + src + frame[12:]


def labelled(bare: bytes, stack: list[Lse] | tuple[Lse, ...]) -> bytes:
    """A bare Ethernet+IP frame with a label stack pushed (plain IP when the stack is empty)."""
    if not stack:
        return bare
    return bare[:12] + b"\x88\x47" + stack_bytes(list(stack)) + bare[14:]


def entry_labels(stack: tuple[int, ...]) -> bytes:
    return struct.pack(f"!{len(stack)}I", *stack).ljust(4 * MAX_LABELS, b"\0")


def assert_frame(got: bytes, want: bytes) -> None:
    if got != want:
        pytest.fail(
            f"frames differ\n got  {got.hex()}\n want {want.hex()}\n"
            f"--- got ---\n{Ether(got).show(dump=True)}--- want ---\n{Ether(want).show(dump=True)}",
            pytrace=False,
        )


def assert_counters(px: Proxy, want: dict[str, int]) -> int:
    """Exact non-zero counters, apart from tx_dwell_ns, which is returned."""
    got = px.counters()
    dwell = got.pop("tx_dwell_ns", 0)
    assert got == want
    return dwell


def assert_one_entry(px: Proxy, key: bytes, stack: tuple[int, ...], sf: int, after_ns: int) -> Entry:
    entries = px.entries()
    assert list(entries) == [key], f"cache keys {[format_key(k) for k in entries]}, want [{format_key(key)}]"
    e = entries[key]
    assert e.labels == entry_labels(stack)
    assert (e.depth, e.sf) == (len(stack), sf)
    assert after_ns < e.rx_ns <= time.monotonic_ns()  # bpf_ktime_get_ns is CLOCK_MONOTONIC
    return e


def rx_expect(case: Case, topology: str) -> tuple[int, bytes]:
    if case.rx == Verdict.POP:
        assert case.popped is not None and case.sf is not None
        if topology == "attached":
            sf = SFS[case.sf]
            return bpf.XDP_REDIRECT, with_macs(case.popped, sf.sf_mac, sf.to_sf_mac)
        return bpf.XDP_PASS, case.popped
    return (bpf.XDP_PASS if case.rx == Verdict.PASS else bpf.XDP_DROP), case.frame


def tx_expect(case: Case, topology: str) -> tuple[int, bytes]:
    assert case.pushed is not None and case.sf is not None
    if topology == "attached":
        sf = SFS[case.sf]
        return bpf.XDP_REDIRECT, with_macs(case.pushed, sf.next_hop_mac, sf.net_out_mac)
    return bpf.TC_ACT_OK, case.pushed


# ---- loading -------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", ALL_CONFIGS, ids=str)
def test_every_configuration_loads_and_pops(make: Callable[..., Proxy], cfg: Cfg) -> None:
    assert len(ALL_CONFIGS) == 17
    px = make(**cfg.__dict__)  # a verifier rejection raises BpfError here, with the log
    assert all(fd >= 0 for fd in px.fds.values())
    case = POPPED[1]
    r = px.rx(case.frame)
    assert r.retval == (bpf.XDP_REDIRECT if cfg.topology == "attached" else bpf.XDP_PASS)
    meta = 4 if cfg.key_mode == "meta" and not cfg.static else 0
    assert r.data[meta + 14 :] == case.frame[14 + 4 * case.depth :]
    assert_counters(px, {"rx_packets": 1, "rx_popped": 1, **({} if cfg.static else {"cache_inserts": 1})})
    assert px.packets() == (0 if cfg.static else 1)


def test_counter_names_cover_the_table() -> None:
    names = counters.names()
    assert len(names) == lib.AXP_CNT_TX_DWELL_HIST == lib.AXP_CNT_MAX - lib.AXP_DWELL_BUCKETS
    assert names[0] == "rx_packets" and names[-1] == "tx_redirect_err"
    used = {c.rx_counter for c in CASES} | {c.tx_counter for c in POPPED} | {n for c in CASES for n in c.rx_also}
    assert used <= set(names)


def test_struct_sizes() -> None:
    assert ffi.sizeof("struct axp_key") == KEY_SIZE
    assert ffi.sizeof("struct axp_entry") == 4 * MAX_LABELS + 16


# ---- the table, hash keys ------------------------------------------------------------------


@pytest.mark.parametrize("topology", ["inline", "attached"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_table(make: Callable[..., Proxy], case: Case, topology: str) -> None:
    px = make(topology=topology, **case.settings)
    if len(case.frame) < ETH_HLEN:
        with pytest.raises(bpf.BpfError) as err:
            px.rx(case.frame)
        assert err.value.errno == errno.EINVAL  # the kernel refuses it before the program runs
        assert px.counters() == {}
        return

    before = time.monotonic_ns()
    r = px.rx(case.frame)
    want_verdict, want_frame = rx_expect(case, topology)
    assert r.retval == want_verdict
    assert_frame(r.data, want_frame)
    also = dict.fromkeys(case.rx_also, 1)
    cached = {"cache_inserts": 1} if case.rx == Verdict.POP else {}
    assert_counters(px, {"rx_packets": 1, case.rx_counter: 1, **cached, **also})
    if case.rx != Verdict.POP:
        assert px.entries() == {}
        return

    key = parse_mpls_frame(case.frame).key
    assert key is not None
    assert case.sf is not None
    assert_one_entry(px, key, case.stack, case.sf, before)

    t = px.tx(r.data)
    want_verdict, want_frame = tx_expect(case, topology)
    assert t.retval == want_verdict
    assert_frame(t.data, want_frame)
    assert case.tx_counter is not None
    dwell = assert_counters(px, {"rx_packets": 1, "rx_popped": 1, "tx_packets": 1, case.tx_counter: 1,
                                 "cache_inserts": 1, "cache_takes": 1, **also})
    assert 0 < dwell < time.monotonic_ns() - before
    assert px.entries() == {}, "TX must take the entry out of the cache"


def _bare_ip(frame: bytes) -> bool:
    return frame[12:14] in (b"\x08\x00", b"\x86\xdd")


@pytest.mark.parametrize("case", [c for c in CASES if len(c.frame) >= ETH_HLEN], ids=lambda c: c.name)
def test_both_xdp_roles_on_one_interface(make: Callable[..., Proxy], case: Case) -> None:
    """axp_xdp_rx_tx (net_in of one SF and from_sf of another, attached) gives every frame of the
    table exactly what the program of its role would: bare IP the TX path's verdict, bytes and
    counters, all else the RX path's; a popped frame coming back takes the TX path."""
    px = make(topology="attached")
    ref = px.xdp_tx if _bare_ip(case.frame) else px.rx
    want, want_counters = ref(case.frame), px.counters()
    want_entries = {k: (e.labels, e.depth, e.sf) for k, e in px.entries().items()}
    px.reset()
    got = px.rx_tx(case.frame)
    assert got.retval == want.retval
    assert_frame(got.data, want.data)
    assert px.counters().keys() == want_counters.keys()
    assert {k: v for k, v in px.counters().items() if k != "tx_dwell_ns"} == \
        {k: v for k, v in want_counters.items() if k != "tx_dwell_ns"}
    assert {k: (e.labels, e.depth, e.sf) for k, e in px.entries().items()} == want_entries
    if case.rx != Verdict.POP or _bare_ip(case.frame):
        return
    back = px.rx_tx(got.data)  # the bare packet back from the SF, on the same interface
    assert (back.retval, back.data) == tx_expect(case, "attached")
    assert px.entries() == {}


@pytest.mark.parametrize("topology", ["inline", "attached"])
@pytest.mark.parametrize("case", POPPED, ids=lambda c: c.name)
def test_table_pipe_ttl(make: Callable[..., Proxy], case: Case, topology: str) -> None:
    """ttl_model = "pipe" (RFC 3443 §3.3): every entry TX pushes keeps the TTL it arrived with."""
    px = make(topology=topology, ttl_model="pipe")
    r = px.rx(case.frame)
    assert case.pushed_pipe is not None and case.sf is not None
    t = px.tx(r.data)
    want = case.pushed_pipe
    if topology == "attached":
        want = with_macs(want, SFS[case.sf].next_hop_mac, SFS[case.sf].net_out_mac)
    assert_frame(t.data, want)
    assert px.entries() == {}


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_counts_land_in_the_row_of_their_sf(make: Callable[..., Proxy], topology: str) -> None:
    """A packet of the second SF counts in its row, RX and TX, with its dwell time in that row's
    histogram; a frame of no SF (not SR-MPLS) in the last row."""
    px = make(topology=topology)
    case = BY_NAME["tcp4_sf1"]
    assert case.sf == 1
    t = px.tx(px.rx(case.frame).data)
    assert t.retval in (bpf.TC_ACT_OK, bpf.XDP_REDIRECT)
    px.rx(BY_NAME["ipv4_plain"].frame)
    snap = px.snapshot()
    nonzero = {r: {k: v for k, v in snap.row(r).items() if v and k != "tx_dwell_ns"} for r in px.rows}
    assert nonzero == {
        **{r: {} for r in SFS},
        1: {"rx_packets": 1, "rx_popped": 1, "cache_inserts": 1, "tx_packets": 1, "tx_pushed": 1, "cache_takes": 1},
        counters.NONE_ROW: {"rx_packets": 1, "rx_not_mpls": 1},
    }
    dwell = snap.row(1)["tx_dwell_ns"]
    hist = snap.dwell_hist(1)
    assert sum(hist) == 1 and hist[counters.dwell_bucket(dwell)] == 1
    assert sum(snap.dwell_hist(0)) == sum(snap.dwell_hist(counters.NONE_ROW)) == 0


def test_dwell_is_measured_for_the_sampled_keys_only(make: Callable[..., Proxy]) -> None:
    """dwell_sample = 4: the packets whose key hash is_timed (1 in 4) get an RX stamp and a
    dwell time at TX, counted in the histogram; the others neither (the cache ages them by
    jiffies all the same). Every packet still gets its own stack back."""
    px = make(dwell_sample=4)
    keys, timed = [], 0
    before = time.monotonic_ns()
    for n in range(64):
        frame, _, _ = frame_for(n, 0)
        assert px.rx(frame).retval != bpf.XDP_DROP
        key = parse_mpls_frame(frame).key
        assert key is not None
        keys.append(key)
        timed += cache.is_timed(cache.key_hash(key), 3)
    assert 4 <= timed <= 32  # about 16 of 64, by the hash
    entries = px.entries()
    for key in keys:
        rx_ns = entries[key].rx_ns
        if cache.is_timed(cache.key_hash(key), 3):
            assert before < rx_ns <= time.monotonic_ns()
        else:
            assert rx_ns == 0
    ageing = [run.rx_ns for run in px.runs()]  # jiffies in ns, the same few ticks for all
    assert len(ageing) == 64 and max(ageing) - min(ageing) < SECOND
    for n in range(64):
        _, bare, stack = frame_for(n, 0)
        assert_frame(px.tx(bare).data, _tx_want(bare, stack, "inline"))
    snap = px.snapshot()
    assert sum(snap.dwell_hist()) == timed
    assert counters.with_dwell_timed(snap)[counters.DWELL_TIMED] == timed
    assert 0 < snap.total()["tx_dwell_ns"] < timed * (time.monotonic_ns() - before)
    assert snap.total()["cache_takes"] == 64


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_each_packet_gets_its_own_stack_back(make: Callable[..., Proxy], topology: str) -> None:
    """The caching property: one flow, three different stacks, returned out of order."""
    px = make(topology=topology)
    stacks = [stack_of(2), stack_of(5), [Lse(100, 7, False, 9), Lse(42, 0, False, 2), Lse(43, 4, True, 3)]]
    ips = [IP(src="10.9.0.1", dst="10.9.0.2", id=1) / TCP(sport=7, dport=8, seq=n) for n in range(3)]
    eth = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")
    popped = []
    for stack, ip in zip(stacks, ips, strict=True):
        frame = labelled(bytes(eth / ip), stack)
        popped.append(px.rx(frame).data)
    assert px.packets() == 3
    for i in (2, 0, 1):
        t = px.tx(popped[i])
        want = labelled(bytes(eth / ips[i]), tx_stack(stacks[i]))
        if topology == "attached":
            want = with_macs(want, SFS[0].next_hop_mac, SFS[0].net_out_mac)
        assert_frame(t.data, want)
    assert_counters(px, {"rx_packets": 3, "rx_popped": 3, "tx_packets": 3, "tx_pushed": 3, "cache_inserts": 3,
                         "cache_takes": 3})


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_sf_rewrites_do_not_lose_the_entry(make: Callable[..., Proxy], topology: str) -> None:
    """The SF decrements TTL / hop limit, remarks DSCP and fixes checksums: TX still finds the stack."""
    px = make(topology=topology)
    names = ("tcp4_8", "rtp4", "icmp4", "tcp6", "udp6")
    for name in names:
        case = next(c for c in POPPED if c.name == name)
        assert case.popped is not None
        assert px.rx(case.frame).retval in (bpf.XDP_PASS, bpf.XDP_REDIRECT)
        rewritten = sf_rewrite(case.popped)
        assert rewritten[14:] != case.popped[14:]
        want = labelled(rewritten, tx_stack([Lse.decode(w) for w in case.stack]))
        if topology == "attached":
            want = with_macs(want, SFS[0].next_hop_mac, SFS[0].net_out_mac)
        assert_frame(px.tx(rewritten).data, want)
    n = len(names)
    assert_counters(px, {"rx_packets": n, "rx_popped": n, "tx_packets": n, "tx_pushed": n, "cache_inserts": n,
                         "cache_takes": n})
    assert px.entries() == {}


# ---- TX without a cache entry, or with a bad one -----------------------------------------------


@pytest.mark.parametrize("on_miss", ["pass", "drop"])
def test_tc_miss(make: Callable[..., Proxy], on_miss: str) -> None:
    px = make(on_miss=on_miss)
    case = POPPED[2]
    assert case.popped is not None
    t = px.tc_tx(case.popped)
    if on_miss == "pass":
        assert t.retval == bpf.TC_ACT_OK
        assert_frame(t.data, case.popped)
    else:
        assert t.retval == bpf.TC_ACT_SHOT
    assert_counters(px, {"tx_packets": 1, f"tx_miss_{on_miss}": 1})


@pytest.mark.parametrize("on_miss", ["pass", "drop", "last"])
def test_xdp_miss(make: Callable[..., Proxy], on_miss: str) -> None:
    """pass: to the host's kernel, which routes it; last, while no stack went to the SF yet: the same."""
    px = make(topology="attached", on_miss=on_miss)
    case = POPPED[2]
    assert case.popped is not None
    t = px.xdp_tx(case.popped)
    if on_miss in ("pass", "last"):
        assert t.retval == bpf.XDP_PASS
        assert_frame(t.data, case.popped)
        on_miss = "pass"
    else:
        assert t.retval == bpf.XDP_DROP
    assert_counters(px, {"tx_packets": 1, f"tx_miss_{on_miss}": 1})


def test_xdp_miss_on_unknown_interface_passes(make: Callable[..., Proxy]) -> None:
    px = make(topology="attached", on_miss="pass")
    px.tx_sf.clear()
    case = POPPED[2]
    assert case.popped is not None
    t = px.xdp_tx(case.popped)
    assert t.retval == bpf.XDP_PASS
    assert_frame(t.data, case.popped)
    assert_counters(px, {"tx_packets": 1, "tx_miss_pass": 1})


@pytest.mark.parametrize("topology", ["inline", "attached"])
@pytest.mark.parametrize("depth", [0, MAX_LABELS + 1])
def test_tx_refuses_an_impossible_entry(make: Callable[..., Proxy], depth: int, topology: str) -> None:
    """An entry no RX could have written (no labels, or more than fit) is dropped, not pushed."""
    px = make(topology=topology)
    case = POPPED[1]
    assert case.popped is not None
    _, key = derive_key(case.popped[14:])
    assert key is not None
    px.seed(key, cache.Entry(b"\xff" * 4 + bytes(60), depth, 0, time.monotonic_ns()))
    t = px.tx(case.popped)
    assert t.retval == (bpf.TC_ACT_SHOT if topology == "inline" else bpf.XDP_DROP)
    assert_counters(px, {"tx_packets": 1, "tx_malformed": 1, "cache_takes": 1})
    assert px.entries() == {}


def test_tc_drops_a_gso_skb(make: Callable[..., Proxy]) -> None:
    """A merged skb (gso_segs > 1) cannot take one packet's stack: dropped and counted."""
    px = make()
    case = POPPED[1]
    r = px.rx(case.frame)
    t = px.tc_tx(r.data, gso_segs=2)
    assert t.retval == bpf.TC_ACT_SHOT
    assert_counters(px, {"rx_packets": 1, "rx_popped": 1, "tx_packets": 1, "tx_gso_drop": 1, "cache_inserts": 1,
                         "cache_takes": 1})
    assert px.entries() == {}  # the entry was taken before the GSO check


TCP4_BARE = POPPED[0].popped or b""
TCP6_BARE = next(c.popped or b"" for c in POPPED if c.name == "tcp6")
BAD_TX = [
    ("arp", bytes.fromhex("ffffffffffff02aa0000000108060001080006040001") + bytes(20), "not_ip"),
    ("mpls", CASES[1].frame, "not_ip"),
    ("ip_type_nibble0", bytes(12) + b"\x08\x00" + bytes(40), "not_ip"),
    ("tcp4_truncated", TCP4_BARE[:40], "malformed"),
    ("ipv4_ihl4", TCP4_BARE[:14] + b"\x44" + TCP4_BARE[15:], "malformed"),
    ("ipv4_ihl_past_end", TCP4_BARE[:14] + b"\x4f" + TCP4_BARE[15:50], "malformed"),
    ("tcp6_truncated", TCP6_BARE[: 14 + 40 + 19], "malformed"),
]


@pytest.mark.parametrize(("name", "frame", "what"), BAD_TX, ids=[b[0] for b in BAD_TX])
def test_bad_tx_input(make: Callable[..., Proxy], name: str, frame: bytes, what: str) -> None:
    tc = make()
    t = tc.tc_tx(frame)
    assert t.retval == (bpf.TC_ACT_OK if what == "not_ip" else bpf.TC_ACT_SHOT)
    if what == "not_ip":
        assert_frame(t.data, frame)
    assert_counters(tc, {"tx_packets": 1, f"tx_{what}": 1})
    xdp = make(topology="attached")
    x = xdp.xdp_tx(frame)
    assert x.retval == (bpf.XDP_PASS if what == "not_ip" else bpf.XDP_DROP)
    if what == "not_ip":
        assert_frame(x.data, frame)
    assert_counters(xdp, {"tx_packets": 1, f"tx_{what}": 1})


SHORT_IP_TX = [
    ("ipv4_10", TCP4_BARE[:24], "malformed"),
    ("ipv6_30", TCP6_BARE[:44], "malformed"),
    ("no_ip_byte", TCP4_BARE[:14], "not_ip"),
]


@pytest.mark.parametrize(("name", "frame", "what"), SHORT_IP_TX, ids=[b[0] for b in SHORT_IP_TX])
def test_short_ip_header_at_tx(make: Callable[..., Proxy], name: str, frame: bytes, what: str) -> None:
    """XDP TX counts a cut IP header; the TC test run refuses such an skb before the program
    (on a real egress path the stack always hands TC a whole IP header)."""
    px = make(topology="attached")
    with pytest.raises(bpf.BpfError) as err:
        px.tc_tx(frame)
    assert err.value.errno == errno.EINVAL
    x = px.xdp_tx(frame)
    assert x.retval == (bpf.XDP_PASS if what == "not_ip" else bpf.XDP_DROP)
    assert_counters(px, {"tx_packets": 1, f"tx_{what}": 1})


def test_tx_refuses_frames_shorter_than_ethernet(make: Callable[..., Proxy]) -> None:
    px = make()
    for fd in (px.fds["axp_tc_tx"], px.fds["axp_xdp_tx"]):
        with pytest.raises(bpf.BpfError) as err:
            bpf.test_run(fd, bytes(10))
        assert err.value.errno == errno.EINVAL
    assert px.counters() == {}


# ---- what the SF sends the proxy host, on from_sf ---------------------------------------------


def host_addresses(m: bpf.Map) -> None:
    """The proxy host's addresses in a from_sf program's map, as the loader puts them."""
    for addr in (HOST4, HOST6):
        m.update(hostaddrs.key_of(addr), 1)


@pytest.mark.parametrize("static", [False, True], ids=["cache", "static"])
@pytest.mark.parametrize(("name", "frame"), HOST_TX, ids=[h[0] for h in HOST_TX])
def test_what_the_sf_sends_the_host_goes_to_its_kernel(make: Callable[..., Proxy], name: str, frame: bytes,
                                                       static: bool) -> None:
    """Neighbour discovery, multicast, broadcast, link-local and the host's own addresses: the
    host's kernel gets them untouched (XDP_PASS), counted tx_host; nothing is looked up or pushed."""
    px = make(topology="attached", static=static)
    host_addresses(px.host_addrs)
    t = px.xdp_tx(frame)
    assert t.retval == bpf.XDP_PASS
    assert_frame(t.data, frame)
    assert_counters(px, {"tx_packets": 1, "tx_host": 1})


def test_an_address_the_host_does_not_hold_is_sf_output(make: Callable[..., Proxy]) -> None:
    """The map decides: to an address not (or no longer) the host's, a unicast packet is the SF's
    output for the network, looked up (here a miss: to the kernel, which routes it)."""
    px = make(topology="attached")
    frame = dict(HOST_TX)["ping_host4"]
    t = px.xdp_tx(frame)
    assert t.retval == bpf.XDP_PASS
    assert_counters(px, {"tx_packets": 1, "tx_miss_pass": 1})
    host_addresses(px.host_addrs)
    px.xdp_tx(frame)
    assert px.counters()["tx_host"] == 1


@pytest.mark.parametrize(("name", "frame"), HOST_TX, ids=[h[0] for h in HOST_TX])
def test_inline_the_hosts_own_traffic_leaves_as_it_is(make: Callable[..., Proxy], name: str, frame: bytes) -> None:
    """TC egress on net_out sees what the host sends too: it has no entry, and leaves untouched."""
    px = make(topology="inline")
    host_addresses(px.host_addrs)
    t = px.tc_tx(frame)
    assert t.retval == bpf.TC_ACT_OK
    assert_frame(t.data, frame)
    assert_counters(px, {"tx_packets": 1, "tx_miss_pass": 1})


# ---- on_miss = last: the NAT-tolerant fallback ----------------------------------------------------


def test_on_miss_last_pushes_the_stack_last_sent_to_the_sf(make: Callable[..., Proxy]) -> None:
    """A NAT rewrote the key: the packet gets the stack RX last sent to its SF (the one whose
    from_sf it came back on), counted tx_miss_last; another SF's stacks do not count; a packet
    the NAT left alone still finds its own stack in the cache."""
    px = make(topology="attached", on_miss="last")
    out = (SFS[0].next_hop_mac, SFS[0].net_out_mac)
    f1, bare1, s1 = frame_for(1, 0)
    t = px.xdp_tx(nat(bare1))  # no stack went to the SF yet: as on_miss = pass
    assert t.retval == bpf.XDP_PASS
    assert px.counters() == {"tx_packets": 1, "tx_miss_pass": 1}
    px.rx(f1)
    t = px.xdp_tx(nat(bare1))
    assert t.retval == bpf.XDP_REDIRECT
    assert_frame(t.data, with_macs(labelled(nat(bare1), tx_stack(s1)), *out))
    f2, bare2, s2 = frame_for(2, 2)
    px.rx(f2)
    px.rx(BY_NAME["tcp4_sf1"].frame)  # SF 1's stack: SF 0's last stays s2
    assert_frame(px.xdp_tx(nat(bare2)).data, with_macs(labelled(nat(bare2), tx_stack(s2)), *out))
    assert_frame(px.xdp_tx(bare2).data, with_macs(labelled(bare2, tx_stack(s2)), *out))  # its own entry
    plain = mpls_frame(stack_of(1), ipv4_tcp("10.9.0.1", "10.9.0.2", 7, 1000, 80, 3, 0))
    px.rx(plain)  # the SF's label alone: a miss leaves as plain IP
    bare3 = ether(ipv4_tcp("10.9.0.1", "10.9.0.2", 7, 1000, 80, 3, 0))
    t = px.xdp_tx(nat(bare3))
    assert_frame(t.data, with_macs(nat(bare3), *out))
    c = px.counters()
    c.pop("tx_dwell_ns")
    assert c == {"rx_packets": 4, "rx_popped": 4, "cache_inserts": 4, "tx_packets": 5, "tx_miss_pass": 1,
                 "tx_miss_last": 3, "tx_pushed": 1, "cache_takes": 1}
    assert px.packets() == 3  # the NATed packets' own entries stay behind, to age out


# ---- one key in flight more than once, ageing, eviction ---------------------------------------
# (the rules are in bpf/include/cache.shared.h; tests/test_cache.py holds them to the model)

SECOND = 1_000_000_000


def _tx_want(bare: bytes, stack: list[Lse] | tuple[Lse, ...], topology: str, sf: int = 0) -> bytes:
    want = labelled(bare, tx_stack(stack))
    return with_macs(want, SFS[sf].next_hop_mac, SFS[sf].net_out_mac) if topology == "attached" else want


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_same_key_and_stack_share_a_run(make: Callable[..., Proxy], topology: str) -> None:
    """A duplicate (retransmission, duplicate ACK) is no reason to drop: both packets pass,
    one run counts them, and both get the stack back."""
    px = make(topology=topology)
    frame, bare, stack = frame_for(1, 0)
    assert px.rx(frame).retval != bpf.XDP_DROP and px.rx(frame).retval != bpf.XDP_DROP
    [run] = px.runs()
    assert run.count == 2
    for _ in range(2):
        assert_frame(px.tx(bare).data, _tx_want(bare, stack, topology))
    assert px.runs() == []
    assert_counters(px, {"rx_packets": 2, "rx_popped": 2, "cache_inserts": 2, "tx_packets": 2, "tx_pushed": 2,
                         "cache_takes": 2})


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_same_key_other_stacks_leave_in_arrival_order(make: Callable[..., Proxy], topology: str) -> None:
    """One key, three stacks (the second twice): four packets in flight, and TX hands the
    stacks out oldest first; the first packet never leaves with the second's stack."""
    px = make(topology=topology)
    order = [0, 1, 1, 2]
    for n in order:
        assert px.rx(frame_for(1, n)[0]).retval != bpf.XDP_DROP
    assert [r.count for r in px.runs()] == [1, 2, 1]
    _, bare, _ = frame_for(1, 0)
    for n in order:
        assert_frame(px.tx(bare).data, _tx_want(bare, frame_for(1, n)[2], topology))
    t = px.tx(bare)  # nothing left for the key: a miss, unlabelled
    assert_counters(px, {"rx_packets": 4, "rx_popped": 4, "cache_inserts": 4, "tx_packets": 5, "tx_pushed": 4,
                         "cache_takes": 4, "tx_miss_pass": 1})
    assert t.retval == (bpf.TC_ACT_OK if topology == "inline" else bpf.XDP_PASS)


def tagged_frames(prios: list[int]) -> tuple[list[bytes], list[bytes], bytes]:
    """One packet (one key, one stack) on VLAN 10 (SF 2) with each PCP: (frames, the frames TX
    sends for them, uniform TTL, before the MACs are rewritten), and the bare packet."""
    stack = stack_of(3)
    ip = IP(src="10.9.0.1", dst="10.9.0.2", id=1) / TCP(sport=7, dport=8, seq=99)
    eth = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")

    def tagged(prio: int, lses: list[Lse]) -> bytes:
        return bytes(eth / Dot1Q(prio=prio, vlan=10, type=0x8847)) + stack_bytes(lses) + bytes(ip)

    return [tagged(p, stack) for p in prios], [tagged(p, tx_stack(stack)) for p in prios], bytes(eth / ip)


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_same_key_other_tags_keep_their_tags(make: Callable[..., Proxy], topology: str) -> None:
    """The tags come back from the cache entry with the stack: two packets with one key and one
    stack but other PCPs are two runs, and each leaves with its own tag, in arrival order."""
    px = make(topology=topology)
    frames, wants, bare = tagged_frames([1, 5, 5])
    for f in frames:
        assert px.rx(f).retval != bpf.XDP_DROP
    assert [r.count for r in px.runs()] == [1, 2]
    for want in wants:
        if topology == "attached":
            want = with_macs(want, SFS[2].next_hop_mac, SFS[2].net_out_mac)
        assert_frame(px.tx(bare).data, want)
    assert px.runs() == []


def test_max_per_key_bounds_one_key(make: Callable[..., Proxy]) -> None:
    px = make(max_per_key=3)
    verdicts = [px.rx(frame_for(1, n % 2)[0]).retval for n in range(5)]
    assert verdicts == [bpf.XDP_PASS] * 3 + [bpf.XDP_DROP] * 2
    assert_counters(px, {"rx_packets": 5, "rx_popped": 3, "cache_inserts": 3, "rx_key_full": 2})
    assert px.packets() == 3


def test_a_key_cannot_take_every_way_of_its_set(make: Callable[..., Proxy]) -> None:
    px = make(max_per_key=255)
    verdicts = [px.rx(frame_for(1, n % 2)[0]).retval for n in range(cache.WAYS + 1)]
    assert verdicts == [bpf.XDP_PASS] * cache.WAYS + [bpf.XDP_DROP]
    assert len(px.runs()) == cache.WAYS
    assert px.counters()["rx_key_full"] == 1


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_a_lost_packets_retry_gets_through_after_max_dwell(make: Callable[..., Proxy], topology: str) -> None:
    """The SF dropped a packet; an identical retry (same key) before max_dwell_ms queues
    behind it (max_per_key 1 refuses it), and after max_dwell_ms replaces its stale run."""
    px = make(topology=topology, max_per_key=1)
    frame, bare, stack = frame_for(1, 0)
    assert px.rx(frame).retval != bpf.XDP_DROP  # ... and the SF drops it
    assert px.rx(frame).retval == bpf.XDP_DROP  # still presumed in flight
    px.obj.set_clock_skew(2 * SECOND)  # max_dwell_ms is 1000
    assert px.rx(frame).retval != bpf.XDP_DROP
    [run] = px.runs()
    assert run.count == 1
    assert_frame(px.tx(bare).data, _tx_want(bare, stack, topology))
    c = px.counters()
    assert (c["expired"], c["rx_key_full"], c["cache_inserts"], c["cache_takes"]) == (1, 1, 2, 1)
    assert counters.in_flight_of(c) == px.packets() == 0
    dwell = c["tx_dwell_ns"]
    assert 0 < dwell < SECOND  # measured on the skewed clock on both sides


def test_stale_runs_go_before_younger_ones_are_evicted(make: Callable[..., Proxy]) -> None:
    """Fill the one set of an 8-entry cache, age it, fill it again: every old run is reclaimed
    as expired (counted in packets), none evicted, and every young packet gets its stack."""
    px = make(cache_entries=cache.WAYS)
    for n in range(cache.WAYS):
        px.rx(frame_for(n, 0)[0])
        px.rx(frame_for(n, 0)[0])  # two packets per run
    px.obj.set_clock_skew(2 * SECOND)
    for n in range(100, 100 + cache.WAYS):
        assert px.rx(frame_for(n, 1)[0]).retval == bpf.XDP_PASS
    c = px.counters()
    assert (c.get("expired", 0), c.get("evictions", 0)) == (2 * cache.WAYS, 0)
    for n in range(100, 100 + cache.WAYS):
        _, bare, stack = frame_for(n, 1)
        assert_frame(px.tx(bare).data, _tx_want(bare, stack, "inline"))
    assert counters.in_flight_of(px.counters()) == px.packets() == 0


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_a_full_cache_evicts_exactly_one_run_per_insert(make: Callable[..., Proxy], topology: str) -> None:
    """64 entries (8 sets), 200 distinct packets: each insert into a full set evicts one run
    (the LRU map evicted in batches), counted; an evicted packet misses at TX and leaves
    unlabelled, never with another packet's stack; every survivor gets its own."""
    px = make(topology=topology, cache_entries=64, max_dwell_ms=3_600_000)  # evictions, not ageing
    n = 200
    for i in range(n):
        before = px.counters().get("evictions", 0)
        full_before = px.packets() == 64
        assert px.rx(frame_for(i, i % 3)[0]).retval != bpf.XDP_DROP
        evicted = px.counters().get("evictions", 0) - before
        assert evicted <= 1 and px.packets() <= 64
        if full_before:
            assert evicted == 1
    c = px.counters()
    assert c["evictions"] == n - px.packets() >= n - 64
    survivors = {r.key for r in px.runs()}
    hits = 0
    for i in range(n):
        _, bare, stack = frame_for(i, i % 3)
        t = px.tx(bare)
        _, key = derive_key(bare[14:])
        if key in survivors:
            assert_frame(t.data, _tx_want(bare, stack, topology))
            hits += 1
        else:
            assert_frame(t.data, bare)  # the miss: unlabelled (on_miss = pass), routed by the kernel
    c = px.counters()
    assert hits == len(survivors) == c["tx_pushed"] and c["tx_miss_pass"] == n - hits
    assert counters.in_flight_of(c) == px.packets() == 0


# ---- meta keys -----------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [DEFAULT_META_MARK_MASK, 0x00FFFF00, 0xFFFFFFFF], ids=hex)
def test_meta_mode_inline(make: Callable[..., Proxy], one_cpu: int, mask: int) -> None:
    """RX hands the artificial key over in data_meta, within meta_mark_mask; TC finds the stack
    by those bits of skb->mark alone: the SF's own bits around them do not matter."""
    px = make(key_mode="meta", meta_mark_mask=mask)
    shift, seq_bits = meta_layout(px.cfg.proxy_config())
    assert (shift, seq_bits) == ((mask & -mask).bit_length() - 1, mask.bit_count() - bpf.NCPUS.bit_length())
    seq = None
    for case in POPPED[:4]:
        assert case.popped is not None and case.pushed is not None and case.sf is not None
        before = time.monotonic_ns()
        r = px.rx(case.frame)
        assert r.retval == bpf.XDP_PASS
        assert len(r.data) == 4 + len(case.popped)  # test-run output starts at data_meta
        assert_frame(r.data[4:], case.popped)
        mark = int.from_bytes(r.data[:4], sys.byteorder)
        assert mark & ~mask == 0 and mark >> shift >> seq_bits == one_cpu + 1
        if seq is not None:
            assert (mark >> shift) & ((1 << seq_bits) - 1) == seq + 1, "sequence numbers follow each other on a CPU"
        seq = (mark >> shift) & ((1 << seq_bits) - 1)
        assert_one_entry(px, meta_key(mark), case.stack, case.sf, before)

        assert px.tc_tx(case.popped, mark=mark ^ (1 << shift)).retval == bpf.TC_ACT_OK  # another key
        assert px.packets() == 1
        theirs = ~mask & 0xC000C0DE  # bits an SF set for itself (kube-proxy's 0x4000, 0x8000, ...)
        t = px.tc_tx(case.popped, mark=mark | theirs)
        assert t.retval == bpf.TC_ACT_OK
        assert_frame(t.data, case.pushed)
        assert px.entries() == {}
    n = len(POPPED[:4])
    tx_kinds = {c.tx_counter for c in POPPED[:4]}
    want = {"rx_packets": n, "rx_popped": n, "tx_packets": 2 * n, "tx_miss_pass": n, "cache_inserts": n,
            "cache_takes": n}
    for k in tx_kinds:
        want[k] = sum(1 for c in POPPED[:4] if c.tx_counter == k)
    assert_counters(px, want)


def test_a_meta_key_that_comes_round_again_replaces_its_stale_run(make: Callable[..., Proxy], one_cpu: int) -> None:
    """The SF dropped a packet; when its CPU's sequence comes round to that key again (after
    2^meta_seq_bits packets: 2^14 with the default mask on 2 CPUs), the stale run goes
    (expired) and the new packet gets its own stack, not the lost one's."""
    px = make(key_mode="meta")
    seq = px.obj.obj.map("axp_seq", "uint32_t", "uint32_t")
    start = ffi.new("uint32_t[]", bpf.NCPUS)
    for cpu in range(bpf.NCPUS):
        start[cpu] = 41
    seq.update(0, start)
    lost, _, _ = frame_for(1, 0)
    r = px.rx(lost)  # ... and the SF drops it
    mark = int.from_bytes(r.data[:4], sys.byteorder)
    _, seq_bits = meta_layout(px.cfg.proxy_config())
    for cpu in range(bpf.NCPUS):
        start[cpu] = 41 + (1 << seq_bits)  # a full round later
    seq.update(0, start)
    frame, bare, stack = frame_for(2, 1)
    r = px.rx(frame)
    assert int.from_bytes(r.data[:4], sys.byteorder) == mark
    [run] = px.runs()
    assert run.count == 1
    t = px.tc_tx(bare, mark=mark)
    assert_frame(t.data, labelled(bare, tx_stack(stack)))
    c = px.counters()
    assert (c["expired"], c["cache_inserts"], c["cache_takes"], c["tx_pushed"]) == (1, 2, 1, 1)
    assert counters.in_flight_of(c) == px.packets() == 0


def test_meta_mode_has_no_key_at_xdp_tx(make: Callable[..., Proxy]) -> None:
    """Attached + meta cannot work (the mark does not cross namespaces): XDP TX always misses."""
    px = make(key_mode="meta", topology="attached", on_miss="drop")
    case = POPPED[1]
    r = px.rx(case.frame)
    assert r.retval == bpf.XDP_REDIRECT
    assert px.xdp_tx(r.data[4:]).retval == bpf.XDP_DROP
    assert_counters(px, {"rx_packets": 1, "rx_popped": 1, "tx_packets": 1, "tx_miss_drop": 1, "cache_inserts": 1})
    assert px.packets() == 1  # left to age out (max_dwell_ms)


# ---- the static proxy ------------------------------------------------------------------------


@pytest.mark.parametrize("topology", ["inline", "attached"])
@pytest.mark.parametrize("case", POPPED, ids=lambda c: c.name)
def test_static_pushes_the_configured_stack(make: Callable[..., Proxy], case: Case, topology: str) -> None:
    px = make(static=True, topology=topology)
    r = px.rx(case.frame)
    want_verdict, want_frame = rx_expect(case, topology)
    assert r.retval == want_verdict
    assert_frame(r.data, want_frame)
    assert px.entries() == {}, "the static proxy caches nothing"
    assert case.popped is not None
    t = px.tx(r.data)
    sf = SFS[0]  # the SF of the TX interface, whatever the packet carried
    want = labelled(r.data, sf.static)
    if topology == "attached":
        assert t.retval == bpf.XDP_REDIRECT
        want = with_macs(want, sf.next_hop_mac, sf.net_out_mac)
    else:
        assert t.retval == bpf.TC_ACT_OK
    assert_frame(t.data, want)
    assert_counters(px, {"rx_packets": 1, "rx_popped": 1, "tx_packets": 1, "tx_pushed": 1})


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_static_pushes_onto_any_ip_it_popped(make: Callable[..., Proxy], topology: str) -> None:
    """The static proxy keys nothing: a packet whose TCP header is cut short, which its RX pops
    (it only checks that IP follows the stack), is pushed at TX too, not dropped as malformed."""
    px = make(static=True, topology=topology)
    ip = bytes(IP(src="10.9.0.1", dst="10.9.0.2") / TCP(sport=7, dport=8))[:30]
    eth = bytes(Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b"))[:12] + b"\x08\x00"
    r = px.rx(labelled(eth + ip, stack_of(2)))
    t = px.tx(r.data)
    assert t.retval == (bpf.XDP_REDIRECT if topology == "attached" else bpf.TC_ACT_OK)
    assert_counters(px, {"rx_packets": 1, "rx_popped": 1, "tx_packets": 1, "tx_pushed": 1})


def test_ext_limit_is_counted_only_for_a_popped_packet(make: Callable[..., Proxy]) -> None:
    """rx_key_ext_limit is a companion of rx_popped: a twin refused as rx_key_full is not counted."""
    px = make(max_per_key=1)
    frame = BY_NAME["ext6_limit"].frame
    px.rx(frame)
    px.rx(frame)
    assert_counters(px, {"rx_packets": 2, "rx_popped": 1, "rx_key_full": 1, "rx_key_ext_limit": 1,
                         "cache_inserts": 1})


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_static_empty_stack_sends_plain_ip(make: Callable[..., Proxy], topology: str) -> None:
    px = make(static=True, topology=topology)
    px.tx_sf.update(TX_IFINDEX, 1)  # SF 1 has no static stack
    case = POPPED[1]
    assert case.popped is not None
    t = px.tx(case.popped)
    if topology == "attached":
        assert t.retval == bpf.XDP_REDIRECT
        assert_frame(t.data, with_macs(case.popped, SFS[1].next_hop_mac, SFS[1].net_out_mac))
    else:
        assert t.retval == bpf.TC_ACT_OK
        assert_frame(t.data, case.popped)
    assert_counters(px, {"tx_packets": 1, "tx_plain": 1})


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_static_leaves_on_vlan_out(make: Callable[..., Proxy], topology: str) -> None:
    """The static proxy keeps no entry, so no arriving tags: its frames leave with the one tag of
    the TX interface's SF's vlan_out (PCP 0), here behind no configured stack."""
    px = make(static=True, topology=topology)
    px.tx_sf.update(TX_IFINDEX, 3)  # SF 3: vlan_out 30
    case = BY_NAME["vlan_out"]
    r = px.rx(case.frame)
    assert r.retval == (bpf.XDP_REDIRECT if topology == "attached" else bpf.XDP_PASS)
    t = px.tx(r.data)
    want = r.data[:12] + bytes.fromhex("8100001e") + r.data[12:]
    if topology == "attached":
        want = with_macs(want, SFS[3].next_hop_mac, SFS[3].net_out_mac)
    assert_frame(t.data, want)
    assert_counters(px, {"rx_packets": 1, "rx_popped": 1, "tx_packets": 1, "tx_plain": 1})


@pytest.mark.parametrize("on_miss", ["pass", "drop"])
def test_static_unknown_interface_is_a_miss(make: Callable[..., Proxy], on_miss: str) -> None:
    px = make(static=True, on_miss=on_miss)
    px.tx_sf.clear()
    case = POPPED[1]
    assert case.popped is not None
    t = px.tc_tx(case.popped)
    assert t.retval == (bpf.TC_ACT_OK if on_miss == "pass" else bpf.TC_ACT_SHOT)
    assert_counters(px, {"tx_packets": 1, f"tx_miss_{on_miss}": 1})


UNPARSED_BELOW = [c for c in CASES if c.rx_counter == "rx_malformed" and c.frame[12:14] == b"\x88\x47"]


@pytest.mark.parametrize("static", [False, True], ids=["meta", "static"])
def test_modes_without_hash_key_look_no_deeper_than_the_ip_version(make: Callable[..., Proxy], static: bool) -> None:
    """Meta and static modes need no key, so they check only that IPv4/IPv6 follows the stack:
    a truncated IP or L4 header below a good stack is popped (the SF or kernel judges it), while
    a bad stack is still dropped. Hash mode drops these as rx_malformed (see test_table)."""
    px = make(key_mode="meta", static=static)
    popped = dropped = 0
    for case in UNPARSED_BELOW:
        depth = parse_mpls_frame(case.frame).depth
        r = px.rx(case.frame)
        if depth:
            assert r.retval == bpf.XDP_PASS, case.name
            popped += 1
        else:
            assert r.retval == bpf.XDP_DROP, case.name
            dropped += 1
    assert popped >= 8 and dropped >= 2
    want = {"rx_packets": popped + dropped, "rx_popped": popped, "rx_malformed": dropped}
    if not static:
        want["cache_inserts"] = popped
    assert_counters(px, want)


def test_bpf_key_equals_oracle_on_random_frames(make: Callable[..., Proxy]) -> None:
    """Generated frames through the real RX program: verdict and cached key as the oracle says,
    rx_key_ext_limit counted as the key's flag says; then TC egress finds the entry by its own key.
    The frames of test_key's generator first, then UDP tunnels (good and bad) below our label."""
    import random

    from test_key import _random_tunnel, random_frame

    from afxdp_proxy.key import Key, KeyFlag, KeyKind

    px = make()
    rng = random.Random(0xB9F)
    ours = sorted({label for _, label in SF_KEYS})  # the served top labels, on some VLAN
    kinds: dict[KeyKind, int] = {}
    verdicts: dict[str, int] = {}
    ext_limit = 0

    def count(name: str) -> int:  # one counter over the rows: cheaper than all of them, per frame
        slot = counters.slot_of(name)
        return sum(sum(px.counter_map.lookup(row * counters.SLOTS + slot) or []) for row in px.rows)

    def check(frame: bytearray) -> None:
        nonlocal ext_limit
        want = parse_mpls_frame(bytes(frame))
        verdict, counter, _ = expected_rx(bytes(frame))
        verdicts[counter] = verdicts.get(counter, 0) + 1
        before, limit_before = count(counter), count("rx_key_ext_limit")
        r = px.rx(bytes(frame))
        assert count(counter) == before + 1, (frame.hex(), counter, px.counters())
        if verdict == Verdict.POP:
            assert want.key is not None
            assert r.retval == bpf.XDP_PASS, frame.hex()
            assert list(px.entries()) == [want.key], (frame.hex(), format_key(want.key))
            key = Key.from_bytes(want.key)
            limit = int(bool(key.flags & KeyFlag.EXT_LIMIT))
            assert count("rx_key_ext_limit") == limit_before + limit, frame.hex()
            assert px.tc_tx(r.data).retval == bpf.TC_ACT_OK
            assert px.entries() == {}, ("TC did not find the entry", frame.hex(), format_key(want.key))
            kinds[key.kind] = kinds.get(key.kind, 0) + 1
            ext_limit += limit
        else:
            assert px.entries() == {}, frame.hex()
            assert r.retval == (bpf.XDP_DROP if verdict == Verdict.DROP else bpf.XDP_PASS), frame.hex()

    for _ in range(3000):
        frame = bytearray(random_frame(rng))
        if len(frame) < ETH_HLEN + 4:
            continue  # test runs refuse frames shorter than Ethernet
        head = parse_mpls_frame(bytes(frame))
        top = head.top_off
        if top and rng.random() < 0.7:  # mostly our top label, on a VLAN some SF is served on
            frame[top : top + 3] = ((rng.choice(ours) << 4) | (frame[top + 2] & 0x0F)).to_bytes(3, "big")
            if rng.random() < 0.05:
                frame[top + 3] = rng.choice([0, 1])  # a TTL that ends here
            if head.tags:
                at = 12 + 4 * len(head.tags) - 2  # the TCI nearest the stack
                vid = rng.choice([vid for vid, _ in SF_KEYS])
                frame[at : at + 2] = ((frame[at] & 0xF0) << 8 | vid).to_bytes(2, "big")
        check(frame)
    for _ in range(1000):
        ip = bytes(IP(proto=17, id=rng.getrandbits(16))) if rng.random() < 0.5 else bytes(IPv6(nh=17))
        check(bytearray(labelled(bytes(Ether() / Raw(ip + _random_tunnel(rng))), stack_of(2))))
    # the generators reached the interesting paths often enough
    assert sum(kinds.values()) >= 1000 and ext_limit >= 3 and kinds[KeyKind.TUNNEL] >= 300, kinds
    assert all(verdicts.get(c, 0) >= 10 for c in ("rx_vlan_other", "rx_reserved_label", "rx_other_label",
                                                   "rx_ttl_expired")), verdicts
