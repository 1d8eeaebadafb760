"""Checks shared by the end-to-end tests, and the cache's traffic helpers (packets the SF
drops, labelled frames sent behind the classifier, books that must balance).

The kernel frees what a stopped proxy held asynchronously: a BPF program's ID goes
when its last reference does, but its maps live on until an RCU grace period and a
work item have run, and a killed process's links are released as its fds close.
So every "nothing is left" check polls with a deadline; none looks once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from afxdp_proxy import bpf, state
from afxdp_proxy.cache import decode_set
from afxdp_proxy.counters import in_flight_of
from afxdp_proxy.key import parse_mpls_frame
from afxdp_proxy.lab import netns, traffic
from afxdp_proxy.lab.frames import ipv4_tcp, mpls_frame
from afxdp_proxy.lab.proxyproc import ProxyProcess
from afxdp_proxy.lab.testbed import P_SF_RX, Testbed, dynamic_stacks
from afxdp_proxy.mpls import Lse, make_stack, tx_words

RELEASE_TIMEOUT = 10.0  # seconds; the kernel needs milliseconds, a loaded 2-core CI box more


def map_exists(map_id: int) -> bool:
    """True while a BPF map with this ID exists (opening it by ID works)."""
    fd = bpf.lib.axp_map_fd_by_id(map_id)
    if fd < 0:
        return False
    bpf.lib.axp_close_fd(fd)
    return True


def wait_programs_unloaded(ids: Iterable[int], timeout: float = RELEASE_TIMEOUT) -> None:
    """Wait until none of these program IDs is loaded."""
    ids = set(ids)
    netns.wait_until(lambda: not ids & set(bpf.loaded_programs()), timeout,
                     what=f"programs {sorted(ids)} to unload")


def wait_maps_freed(ids: Iterable[int], timeout: float = RELEASE_TIMEOUT) -> None:
    """Wait until none of these map IDs exists (maps outlive their programs for a grace period)."""
    ids = list(ids)
    netns.wait_until(lambda: not any(map_exists(i) for i in ids), timeout,
                     what=f"maps {ids} to be freed")


def wait_no_xdp(ns: str, ifnames: Iterable[str | None], timeout: float = RELEASE_TIMEOUT) -> None:
    """Wait until no XDP program is attached to these interfaces of namespace ns."""
    names = [n for n in ifnames if n]

    def attached() -> dict[str, int]:
        with netns.enter(ns):
            ids = {}
            for n in names:
                try:
                    prog = bpf.xdp_prog_id(socket.if_nametoindex(n))
                except OSError:  # the interface went away: nothing can be attached to it
                    continue
                if prog:
                    ids[n] = prog
            return ids

    netns.wait_until(lambda: not attached(), timeout, what=f"XDP to detach from {names} in {ns}")


def wait_not_running(name: str, timeout: float = RELEASE_TIMEOUT) -> None:
    """Wait until no live proxy state file carries this instance name."""
    netns.wait_until(lambda: name not in state.running(), timeout, what=f"proxy {name} to leave /run")


def wait_file_gone(path: str, timeout: float = RELEASE_TIMEOUT) -> None:
    netns.wait_until(lambda: not os.path.exists(path), timeout, what=f"{path} to be removed")


# ---- the cache under traffic: packets the SF drops, retries, counters -----------------------------

LOST_PORT = 9  # TCP port the SF drops (discard), for packets whose cache entries must age or be evicted


def nft(ns: str, script: str) -> None:
    """Load an nftables script in namespace ns."""
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
        f.write(script)
        f.flush()
        r = netns.run(ns, ["nft", "-f", f.name])
    assert r.returncode == 0, f"nft: {r.stderr.strip()}"


def tcp_resets_sent(ns: str) -> int:
    """TCP resets namespace ns has sent so far (OutRsts of /proc/net/snmp, RFC 4022 tcpOutRsts).

    When iperf3's sender closes its sockets, each ACK the receiver still sends gets a reset from
    no socket: IP ID 0 (DF), the seq that ACK acknowledged. Such a burst is the one run of
    identical packets (one key) that iperf3 traffic makes; the classifier gives them rotating
    stacks, so they open a run each, until their set holds only them (rx_key_full) or the
    set's oldest run is pushed out (evictions)."""
    lines = [line.split() for line in netns.run(ns, ["cat", "/proc/net/snmp"], check=True).stdout.splitlines()
             if line.startswith("Tcp:")]
    names, values = lines[0], lines[1]
    return int(values[names.index("OutRsts")])


@contextlib.contextmanager
def sf_drops(tb: Testbed, dport: int = LOST_PORT) -> Iterator[None]:
    """An nftables rule in the SF (its namespace attached; the proxy namespace's kernel inline)
    that drops forwarded TCP to dport: packets the proxy cached that never come back."""
    ns = tb.ns_sf or tb.ns_proxy
    table = f"axp_lost_{dport}"
    nft(ns, f"table inet {table} {{\n  chain lost {{\n    type filter hook forward priority 0;\n"
            f"    tcp dport {dport} drop\n  }}\n}}\n")
    try:
        yield
    finally:
        netns.run(ns, ["nft", "delete", "table", "inet", table])


@contextlib.contextmanager
def sf_nat(tb: Testbed) -> Iterator[None]:
    """(attached) The testbed's masquerading NAT SF (lab/sfs.py) for a while: what leaves sf_out
    takes sf_out's address as its source, so the packet's key no longer finds its stack; the
    receiver routes replies to that address back through the proxy and the SF."""
    before = tb.sf
    tb.set_sf("nat")
    try:
        yield
    finally:
        tb.set_sf(before)


def check_nat_sf(tb: Testbed, proxy: Callable[[], ProxyProcess], on_miss: str, sf_label: int) -> None:
    """(attached) A static chain through the testbed's masquerading NAT SF: no packet finds its
    entry at TX. With on_miss = "last" each gets the stack RX last sent to the SF (tx_miss_last);
    with "pass" every packet leaves unlabelled (tx_miss_pass)."""
    stack = make_stack([sf_label, 2000, 3000], [1, 2, 3])
    tb.set_stacks([stack])
    with sf_nat(tb), proxy() as px:
        tb.set_recording(True)
        res = tb.iperf3(seconds=2, bitrate="20M")
        ping6 = tb.ping(tb.dst_ip6, count=3)
        tb.set_recording(False, clear=False)
        c = px.counters()
    assert res.bits_per_second > 5e6 and ping6.ok
    arrived = list(tb.received().values())
    assert len(arrived) >= 500
    if on_miss == "last":
        assert set(arrived) == {tx_words([e.encode() for e in stack])}, "every packet with the chain's stack"
        assert c["tx_miss_last"] >= len(arrived) and c["tx_pushed"] == 0
    else:
        assert set(arrived) == {()}, "a NAT without on_miss = last: the chain is lost"
        assert c["tx_miss_pass"] >= len(arrived)


@contextlib.contextmanager
def without_xdp(tb: Testbed, role: str, ifname: str, prog: str) -> Iterator[None]:
    """The testbed's XDP program `prog` off interface `ifname` of namespace `role` for a while
    (GRO stays off there): a veth whose peer this is then cannot take redirected frames."""
    fd = bpf.check(bpf.lib.axp_prog_fd_by_id(tb.prog_ids[prog]), prog)  # keeps it loaded meanwhile
    index = tb.ifindex(role, ifname)
    try:
        with netns.enter(tb.nsname(role)):
            # with the program's ID: axp_xdp_detach without one asks libbpf to replace "no program"
            bpf.xdp_detach(index, prog_id=tb.prog_ids[prog], flags=bpf.XDP_FLAGS_DRV_MODE)
        assert tb.ns(role).get_features(ifname)["rx-gro"] is False
        yield
    finally:
        with netns.enter(tb.nsname(role)):
            bpf.xdp_attach(index, fd)
        bpf.lib.axp_close_fd(fd)


def forget_sf_neighbours(tb: Testbed) -> None:
    """(sf_nd) The SF and the proxy's SF-facing interfaces forget their neighbours: each must
    find the other again, by neighbour discovery and ARP, from now on."""
    for role, ifs in (("sf", (tb.sf_in, tb.sf_out)), ("proxy", (tb.to_sf, tb.from_sf))):
        for ifname in ifs:
            assert ifname
            r = tb.run(role, ["ip", "neigh", "flush", "dev", ifname])
            assert r.returncode == 0, r.stderr


def check_ipv6_through_nd_sf(tb: Testbed, counters: Callable[[], dict[str, int]],
                             stacks: Sequence[Sequence[Lse]], ttl_model: str = "uniform") -> dict[str, int]:
    """(sf_nd, after forget_sf_neighbours, with a proxy running) ping6 and iperf3 -6 through an SF
    that finds the proxy by neighbour discovery: both go through with every packet's stack (the
    TTLs as ttl_model sets them), the SF reaches the proxy host's own addresses (tx_host) and has
    learned the proxy's address. Returns the proxy's counters."""
    tb.set_recording(True)
    ping6 = tb.ping(tb.dst_ip6, count=5)
    res = tb.iperf3(seconds=2, v6=True, bitrate="40M")
    tb.set_recording(False, clear=False)
    to_host = (tb.ping(P_SF_RX.ip6, ns="sf", count=2), tb.ping(P_SF_RX.ip4, ns="sf", count=2))
    c = counters()
    assert ping6.ok, "IPv6 through the SF: its neighbour solicitations for the proxy must be answered"
    assert res.stalls == 0 and res.bits_per_second > 10e6
    check = tb.check_chain(family=6, ttl_model=ttl_model)
    assert check.compared >= 500
    assert not check.wrong, f"{len(check.wrong)} packets got another stack, e.g. {next(iter(check.wrong.values()))}"
    assert check.arrived == {tx_words([e.encode() for e in s], ttl_model) for s in stacks}
    assert all(p.ok for p in to_host), "the SF must reach the proxy host's own addresses"
    assert c["tx_host"] >= 5  # solicitations (multicast, then unicast) and the pings to the host
    assert learned(tb, "sf", tb.sf_out or "", P_SF_RX.ip6)
    return c


def learned(tb: Testbed, role: str, ifname: str, addr: str) -> bool:
    """Namespace role has a neighbour entry for addr on ifname that it learned (not permanent)."""
    out = tb.run(role, ["ip", "neigh", "show", "dev", ifname, "to", addr]).stdout
    return "lladdr" in out and "PERMANENT" not in out


def labelled_tcp(tb: Testbed, stack: list[Lse], n: int, dport: int = LOST_PORT, sport: int = 4242,
                 first: int = 0) -> list[bytes]:
    """n labelled TCP frames from the sender to the receiver, each with its own key (the TCP
    sequence number), addressed to net_in from the sender's wire side (behind its classifier)."""
    dst = bytes.fromhex(tb.macs[tb.net_in].replace(":", ""))
    src = bytes.fromhex(tb.macs[tb.src_wire].replace(":", ""))
    return [mpls_frame(stack, ipv4_tcp(tb.src_ip, tb.dst_ip, 1, sport, dport, first + i, 0), dst, src)
            for i in range(n)]


def send_behind_classifier(tb: Testbed, frames: list[bytes]) -> None:
    traffic.send_raw_frames(tb.ns_src, tb.src_wire, frames)


def assert_counters_add_up(c: dict[str, int], bound: int | None = None) -> int:
    """The cache's books balance: every packet RX cached was taken by TX, evicted, expired or is
    still in flight (never negative, at most `bound`); RX cached what it popped, TX took what
    it sent with a stack. Returns the packets in flight."""
    in_flight = in_flight_of(c)
    assert in_flight >= 0, c
    if bound is not None:
        assert in_flight <= bound, c
    assert c["cache_inserts"] == c["rx_popped"], c
    assert c["cache_takes"] == c["tx_pushed"] + c["tx_plain"] + c["tx_gso_drop"] + c["tx_push_failed"], c
    return in_flight


def settled_books(counters: Callable[[], dict[str, int]], held: Callable[[], int],
                  timeout: float = 5.0) -> tuple[dict[str, int], int]:
    """(counters, packets the cache holds), read again until the counters' in-flight figure is what
    the cache holds: a late packet (a TCP retransmit after its RTO) that crosses between the two
    reads makes them differ for a moment. The last pair read when they never agree, for the
    caller's assertion to show."""
    c, n = counters(), held()
    deadline = time.monotonic() + timeout
    while in_flight_of(c) != n and time.monotonic() < deadline:
        time.sleep(0.05)
        c, n = counters(), held()
    return c, n


def kernel_cache_packets(map_id: int) -> int:
    """Packets a running kernel-backend proxy's cache holds, counted in its sets through the
    map's ID (exact once no packet is passing: user space does not take the sets' locks)."""
    m = bpf.Map.from_id(map_id, "uint32_t", "struct axp_cache_set")
    try:
        return sum(decode_set(m.lookup(i)).packets() for i in range(m.max_entries))
    finally:
        m.close()


def afxdp_cache_packets(path: str) -> int:
    """Packets the kept cache file of a running afxdp proxy holds, counted in its sets (read
    while the workers write: exact once the traffic has stopped)."""
    from afxdp_proxy._native import ffi

    with open(path, "rb") as f:
        data = f.read()
    size = ffi.sizeof("struct axp_cache_set")
    sets = ffi.from_buffer("struct axp_cache_set[]", data)
    return sum(decode_set(sets[i]).packets() for i in range(len(data) // size))


def check_lost_packets_then_chain(tb: Testbed, counters: Callable[[], dict[str, int]], entries: int,
                                  sf_label: int) -> None:
    """With the SF dropping them (sf_drops), 4 x `entries` labelled packets fill a cache of
    `entries` with runs that never come back; a dynamic chain through it afterwards must
    keep every packet's own stack, and the books must balance throughout."""
    n = 4 * entries
    send_behind_classifier(tb, labelled_tcp(tb, make_stack([sf_label, 2000]), n))
    netns.wait_until(lambda: counters()["rx_popped"] >= n, 10, what=f"{n} lost packets to be cached")
    c = counters()
    assert c["evictions"] + c["expired"] >= n - entries, c  # the cache kept at most `entries` of them
    assert assert_counters_add_up(c, bound=entries) > 0
    stacks = dynamic_stacks(sf_label)
    tb.set_stacks(stacks)
    tb.set_recording(True)
    tb.iperf3(seconds=2, bitrate="40M")
    tb.set_recording(False, clear=False)
    check = tb.check_chain()
    assert check.compared >= 500, (len(tb.sent()), len(tb.received()))
    assert not check.wrong, f"{len(check.wrong)} packets got another stack, e.g. {next(iter(check.wrong.values()))}"
    assert check.arrived == {tx_words([e.encode() for e in s]) for s in stacks}
    c = counters()
    assert c["evictions"] + c["expired"] >= n - entries
    assert_counters_add_up(c, bound=entries)


def check_retry_after_max_dwell(tb: Testbed, counters: Callable[[], dict[str, int]], max_dwell_ms: int,
                                sf_label: int) -> None:
    """(max_per_key = 1) A packet the SF drops; its identical retry at once is refused, its
    twin being presumed in flight (rx_key_full); a retry after max_dwell_ms replaces the stale
    run (expired) and reaches the receiver with its own stack."""
    stack = make_stack([sf_label, 2000, 3000], [1, 2, 3])
    [frame] = labelled_tcp(tb, stack, 1, first=777)
    tb.set_recording(True)
    with sf_drops(tb):
        t0 = time.monotonic()
        send_behind_classifier(tb, [frame])
        time.sleep(0.05)
        send_behind_classifier(tb, [frame])
        # the retry left within max_dwell_ms; reading the counters (a `stats` process) may take longer
        assert time.monotonic() - t0 < max_dwell_ms / 1000, "too slow to test a retry within max_dwell_ms"
        netns.wait_until(lambda: counters()["rx_key_full"] >= 1, 5, what="the early retry to be refused")
        cached_by = time.monotonic()  # the first one was cached by now, however late it got there
    c = counters()
    assert (c["rx_popped"], c["rx_key_full"], c["expired"]) == (1, 1, 0), c
    key = parse_mpls_frame(frame).key
    assert key not in tb.received()  # (other stray packets a receiver records do not matter here)
    time.sleep(max(0.0, cached_by + max_dwell_ms / 1000 + 0.2 - time.monotonic()))
    send_behind_classifier(tb, [frame])
    netns.wait_until(lambda: key in tb.received(), 5, what="the late retry to arrive")
    assert tb.received()[key] == tx_words([e.encode() for e in stack])
    c = counters()
    assert (c["rx_popped"], c["rx_key_full"], c["expired"], c["cache_takes"]) == (2, 1, 1, 1), c
    assert assert_counters_add_up(c) == 0


# ---- what real SR-MPLS links carry: VLAN tags, reserved labels on top, TTL --------------------------

C_TAG, S_TAG = 0x8100, 0x88A8


def tagged(frames: Iterable[bytes], tags: Sequence[tuple[int, int]]) -> list[bytes]:
    """Ethernet frames with VLAN tags (TPID, TCI), outermost first, put in after their MACs."""
    head = b"".join(struct.pack("!HH", tpid, tci) for tpid, tci in tags)
    return [f[:12] + head + f[12:] for f in frames]


def check_real_links(tb: Testbed, counters: Callable[[], dict[str, int]], sf_label: int, vlan: int,
                     vlan_out: int = 0, on_ttl_expired: str = "drop") -> None:
    """(A proxy whose one SF has vlan_in = vlan.) Tagged SR-MPLS sent behind the classifier, one
    C-tag or an S-tag over it, some with explicit null and ELI + EL on top of the SF label, reaches
    the receiver with the stack below the SF label (uniform TTL), behind the tags it came with or
    one C-tag of vlan_out; interleaved with them, another VLAN's frames, a router alert on top, and
    the SF label with TTL 1 and 0 are passed or dropped, and counted each in its counter."""
    n = 6
    stack = make_stack([sf_label, 2000, 3000], [1, 2, 3])
    c_tag, qinq = [(C_TAG, 3 << 13 | vlan)], [(S_TAG, 77), (C_TAG, 5 << 13 | vlan)]
    removed = [Lse(0), Lse(7), Lse(0x12345)]  # explicit null, ELI, entropy label
    good = {1000: (c_tag, []), 2000: (qinq, []), 3000: (c_tag, removed)}
    frames, want = [], {}
    for first, (tags, above) in good.items():
        sent = labelled_tcp(tb, [*above, *stack], n, first=first)
        frames += tagged(sent, tags)
        out = [(C_TAG, tags[-1][1] & 0xF000 | vlan_out)] if vlan_out else tags
        want.update({parse_mpls_frame(f).key: (tx_words([e.encode() for e in stack]), tuple(out)) for f in sent})
    other_vlan = tagged(labelled_tcp(tb, stack, n, first=4000), [(C_TAG, vlan + 1)])
    router_alert = tagged(labelled_tcp(tb, [Lse(1), *stack], n, first=5000), c_tag)
    expiring = [dataclasses.replace(stack[0], ttl=ttl) for ttl in (1, 0)]
    expired = tagged([f for e in expiring for f in labelled_tcp(tb, [e, *stack[1:]], n // 2, first=6000 + 10 * e.ttl)],
                     c_tag)
    mixed = [f for group in zip(frames[:n], other_vlan, router_alert, expired, strict=True) for f in group]
    tb.set_recording(True)
    send_behind_classifier(tb, mixed + frames[n:])
    netns.wait_until(lambda: want.keys() <= tb.received().keys(), 5, raise_=False)
    received, tags = tb.received(), tb.received_tags()
    tb.set_recording(False)
    assert {k: (received.get(k), tags.get(k)) for k in want} == want
    c = counters()
    ttl = "rx_ttl_expired_pass" if on_ttl_expired == "pass" else "rx_ttl_expired"
    assert (c["rx_popped"], c["rx_vlan_other"], c["rx_reserved_label"], c[ttl]) == (3 * n, n, n, n), c


# ---- a steady stream of labelled packets, each with its own key and stack ------------------------


class PacedFrames(threading.Thread):
    """Labelled TCP frames behind the sender's classifier, `rate` a second from a thread, each
    with its own key (the TCP sequence number) and the next stack of `stacks`; `sent_at[i]` is
    when frame i left (time.monotonic()). stop() ends it early."""

    def __init__(self, tb: Testbed, stacks: list[list[Lse]], n: int, rate: float, dport: int = 5001) -> None:
        super().__init__(daemon=True, name="paced-frames")
        self.tb = tb
        self.stacks = [stacks[i % len(stacks)] for i in range(n)]
        self.frames = [labelled_tcp(tb, stack, 1, dport=dport, first=i)[0] for i, stack in enumerate(self.stacks)]
        self.keys = [parse_mpls_frame(f).key for f in self.frames]
        self.rate = rate
        self.sent_at: list[float] = []
        self._halt = threading.Event()

    def expected(self, i: int) -> tuple[int, ...]:
        """The stack frame i must arrive with: its own minus the SF's label."""
        return tx_words([e.encode() for e in self.stacks[i]])

    def run(self) -> None:
        batch = max(1, int(self.rate / 100))  # a batch every 10 ms
        with netns.socket_in(self.tb.ns_src, socket.AF_PACKET, socket.SOCK_RAW, 0) as s:
            s.bind((self.tb.src_wire, 0))
            t0 = time.monotonic()
            for i in range(0, len(self.frames), batch):
                if self._halt.wait(max(0.0, t0 + i / self.rate - time.monotonic())):
                    return
                for f in self.frames[i:i + batch]:
                    s.send(f)
                    self.sent_at.append(time.monotonic())

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join()
