"""End to end through real namespaces, veths, AF_XDP sockets (copy mode on veth) and iperf3:
the AF_XDP backend as an operator runs it (`afxdp-proxy run` in the proxy namespace), and
in-process where a test measures the process itself (fds, threads, memory) or its queues."""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator

import harness
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from afxdp_proxy import bpf, state
from afxdp_proxy.backends.afxdp import ROLE_FROM_SF, AfxdpProxy, _Port, queue_threads
from afxdp_proxy.config import ConfigError, parse_config
from afxdp_proxy.counters import in_flight_of
from afxdp_proxy.iface import Iface
from afxdp_proxy.lab import netns, traffic
from afxdp_proxy.lab.bench import metrics, null
from afxdp_proxy.lab.bench.gen import Generator
from afxdp_proxy.lab.frames import ipv4_tcp, mpls_frame
from afxdp_proxy.lab.proxyproc import ProxyProcess
from afxdp_proxy.lab.testbed import Testbed, dynamic_stacks
from afxdp_proxy.mpls import Lse, make_stack, tx_words

pytestmark = [pytest.mark.root, pytest.mark.e2e]

SF = 1000
RETRY_DWELL_MS = 4000
DROPS = ("rx_malformed", "rx_not_ip", "rx_too_many_labels", "tx_malformed", "tx_push_failed", "tx_errors",
         "xdp_no_socket", "tx_ring_full")


@pytest.fixture(scope="module")
def beds() -> Iterator[Callable[..., Testbed]]:
    """Attached testbeds by veth queue count (and sf_nd: the SF's neighbours learned, not
    permanent), brought up on first use, kept for the module."""
    made: dict[tuple[int, bool], Testbed] = {}

    def get(queues: int = 1, sf_nd: bool = False) -> Testbed:
        if (queues, sf_nd) not in made:
            made[queues, sf_nd] = Testbed("attached", queues=queues, sf_nd=sf_nd).up()
        return made[queues, sf_nd]

    yield get
    for tb in made.values():
        assert tb.down() == []


def _proxy(tb: Testbed, **kw: object) -> ProxyProcess:
    return ProxyProcess(tb.ns_proxy, tb.proxy_config(backend="afxdp", **kw), name=f"{tb.prefix}-afxdp")


def _in_process(tb: Testbed, **kw: object) -> AfxdpProxy:
    return AfxdpProxy(parse_config(tomllib.loads(tb.proxy_config(backend="afxdp", **kw))))


def _start(tb: Testbed, px: AfxdpProxy) -> AfxdpProxy:
    with netns.enter(tb.ns_proxy):
        px.start()
    return px


# A stop is prompt: a few hundred ms here, idle or under iperf3; the bound leaves a loaded 2-CPU
# machine room and still fails a stop that waits for a timeout (ProxyProcess.stop's is 10 s).
PROMPT_STOP_S = 3.0


def _stop(tb: Testbed, px: AfxdpProxy) -> float:
    t0 = time.monotonic()
    with netns.enter(tb.ns_proxy):
        px.stop()
    return time.monotonic() - t0


def _xdp_attached(tb: Testbed) -> dict[str, int]:
    with netns.enter(tb.ns_proxy):
        return {n: bpf.xdp_prog_id(tb.ifindex("proxy", n)) for n in (tb.net_in, tb.net_out, tb.to_sf, tb.from_sf)
                if n and bpf.xdp_prog_id(tb.ifindex("proxy", n))}


def _gone(info: dict) -> None:
    """The programs, maps and counter file a proxy's state named go away (the kernel frees
    maps after an RCU grace period: polled, never checked once)."""
    harness.wait_programs_unloaded(info["progs"])
    harness.wait_maps_freed(info["maps"]["xsk_counters"])
    harness.wait_file_gone(info["counters_file"])


def _nothing_left(tb: Testbed, proxy: ProxyProcess, info: dict) -> None:
    _gone(info)
    harness.wait_not_running(proxy.name)
    harness.wait_no_xdp(tb.ns_proxy, (tb.net_in, tb.net_out, tb.to_sf, tb.from_sf))


def _drops(c: dict[str, int]) -> dict[str, int]:
    return {k: c[k] for k in DROPS if c[k]}


# ---- traffic ---------------------------------------------------------------------------------


def test_iperf3_tcp_three_labels(beds: Callable[[int], Testbed]) -> None:
    tb = beds(1)
    tb.set_stacks([make_stack([SF, 2000, 3000], [1, 2, 3])])
    tb.reset_counters()
    link_drops, sf_drops = tb.delivery_drops(), tb.sf_drops()
    with _proxy(tb) as proxy:
        info = state.running()[proxy.name]
        assert info["xsk"]["mode"] == "copy"  # veth: AF_XDP in copy mode
        res = tb.iperf3(seconds=5)
        netns.wait_until(lambda: in_flight_of(proxy.counters()) <= 64, 3, raise_=False)  # the tail drains
        c = proxy.counters()
        assert proxy.stop() == 0
    assert res.stalls == 0, f"iperf3 stalled: {res.interval_bits}"
    assert res.bits_per_second > 10e6
    assert c["rx_popped"] > 1000
    # every popped packet came back (a few may be in flight), or the kernel counted it dropped at
    # a full RX ring: a worker starved of CPU, which other load on a 2-core box can cause
    # (or the veths to and from the SF dropped it)
    sf_drops = tb.sf_drops() - sf_drops
    assert c["tx_pushed"] >= c["rx_popped"] - 64 - c["xsk_rx_ring_full"] - c["xsk_rx_dropped"] - sf_drops, c
    assert _drops(c) == {}
    depths = tb.depth_histogram()
    # what the proxy pushed reached the receiver, but for frames the veth to it dropped (its
    # peer's XDP ring full: TCP retransmits them, and the proxy pushes those again)
    link_drops = tb.delivery_drops() - link_drops
    assert depths.get(2, 0) >= c["tx_pushed"] - 64 - link_drops, (depths, link_drops)  # the stack minus the top label
    assert depths.get(0, 0) < depths[2] / 100, depths
    # the batch loop: frames per RX batch, sendto() per batch
    assert c["rx_batches"] > 0 and c["tx_kicks"] <= 4 * c["rx_batches"]
    _nothing_left(tb, proxy, info)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_dynamic_chain_every_packet_keeps_its_stack(beds: Callable[[int], Testbed], v6: bool) -> None:
    tb = beds(1)
    stacks = dynamic_stacks(SF)
    tb.set_stacks(stacks)
    with _proxy(tb) as proxy:
        tb.set_recording(True)
        res = tb.iperf3(seconds=2, bitrate="40M", v6=v6)
        tb.set_recording(False, clear=False)
        c = proxy.counters()
    assert res.stalls == 0
    check = tb.check_chain()
    assert check.compared >= 500, (len(tb.sent()), len(tb.received()))
    assert not check.wrong, f"{len(check.wrong)} packets got another stack, e.g. {next(iter(check.wrong.values()))}"
    assert check.arrived == {tx_words([e.encode() for e in s]) for s in stacks}
    assert c["tx_plain"] > 0 and c["tx_pushed"] > 0
    assert _drops(c) == {}


def test_rtp_like_udp(beds: Callable[[int], Testbed]) -> None:
    """An RTP stream with per-packet stacks: every datagram arrives, in order, with its own stack."""
    tb = beds(1)
    stacks = dynamic_stacks(SF)
    tb.set_stacks(stacks)
    n = 400
    with _proxy(tb) as proxy, traffic.UdpSink(tb.ns_dst, port=5004) as sink:
        tb.set_recording(True)
        traffic.send_rtp(tb.ns_src, tb.dst_ip, port=5004, count=n, pps=4000, payload_len=160)
        got = sink.collect(expect=n, timeout=5)
        tb.set_recording(False, clear=False)
        c = proxy.counters()
    assert len(got) == n
    assert [int.from_bytes(p[2:4], "big") for p in got] == list(range(n))  # RTP sequence numbers
    check = tb.check_chain()
    assert check.compared >= n
    assert not check.wrong
    assert c["rx_popped"] >= n and _drops(c) == {}


def test_null_forwarder_moves_frames_untouched_but_their_macs(beds: Callable[[int], Testbed]) -> None:
    """The benchmark's floor (afxdp_proxy.lab.bench.null) on the proxy's sockets and loop: every IP
    frame from net_in leaves by to_sf and every one from from_sf by net_out, as it came but for the
    next hop's MACs. Plain IP, which a proxy hands to the kernel (its TTL would drop by one), and a
    header no router forwards (IHL past the packet) show that nothing parsed or routed them."""
    tb = beds(1)
    tb.set_stacks([])
    assert tb.ns_sf and tb.sf_in and tb.sf_out and tb.to_sf and tb.from_sf
    mac = {n: bytes.fromhex(m.replace(":", "")) for n, m in tb.macs.items()}

    def packets(tag: bytes) -> list[bytes]:
        """Each test frame from its ethertype on, tag in every payload."""
        v4, v6 = IP(src=tb.src_ip, dst=tb.dst_ip), IPv6(src=tb.src_ip6, dst=tb.dst_ip6)
        bad = bytearray(bytes(v4 / UDP(sport=4, dport=9) / (tag + b"ihl")))
        bad[0] = 0x4F  # IHL 15: a 60-byte header, longer than the packet has
        return [b"\x08\x00" + bytes(v4 / UDP(sport=1, dport=9) / (tag + b"udp")),
                b"\x08\x00" + bytes(v4 / TCP(sport=2, dport=9, flags="A") / (tag + bytes(1400))),
                b"\x86\xdd" + bytes(v6 / UDP(sport=3, dport=9) / (tag + b"udp6")),
                b"\x08\x00" + bytes(bad)]

    def tagged(frames: list[bytes], tag: bytes) -> list[bytes]:
        return sorted(f for f in frames if tag in f)

    into_net_in, from_the_sf = packets(b"leg-1:"), packets(b"leg-2:")
    with ProxyProcess(tb.ns_proxy, tb.proxy_config(backend="afxdp"), name=f"{tb.prefix}-null",
                      module=null.MODULE) as proxy, \
            traffic.RawCapture(tb.ns_sf, tb.sf_in) as at_sf, traffic.RawCapture(tb.ns_dst, tb.dst_if) as at_dst:
        assert proxy.stats()["xsk"]["forward"] == "null"

        def send() -> None:
            traffic.send_raw_frames(tb.ns_src, tb.src_wire,
                                    [mac[tb.net_in] + mac[tb.src_wire] + p for p in into_net_in])
            traffic.send_raw_frames(tb.ns_sf, tb.sf_out, [mac[tb.from_sf] + mac[tb.sf_out] + p for p in from_the_sf])
            at_sf.collect(timeout=5)
            at_dst.collect(timeout=5)

        # the bench's CPU per packet sums the run time of both of its programs, one name, two ids
        runs, _ = metrics.run_time_during(metrics.programs_of(proxy.pid), send)
        c = proxy.counters()
        assert proxy.stop() == 0
    assert runs["axp_xsk_from_sf"]["runs"] >= len(into_net_in) + len(from_the_sf), runs
    assert tagged(at_sf.frames, b"leg-1:") == sorted(mac[tb.sf_in] + mac[tb.to_sf] + p for p in into_net_in)
    assert tagged(at_dst.frames, b"leg-2:") == sorted(mac[tb.dst_if] + mac[tb.net_out] + p for p in from_the_sf)
    # no engine ran: nothing popped, cached or pushed (the XDP programs count only what they pass to
    # the kernel); the workers read their rings
    engine = ("rx_popped", "cache_inserts", "cache_takes", "tx_pushed", "tx_plain", "tx_miss_pass")
    assert [c[k] for k in engine] == [0] * len(engine) and c["rx_batches"] >= 2, c
    assert _drops(c) == {}, c


def test_bad_input_is_counted_and_forwarding_goes_on(beds: Callable[[int], Testbed]) -> None:
    tb = beds(1)
    tb.set_stacks([make_stack([SF, 2000])])
    mac = {n: bytes.fromhex(m.replace(":", "")) for n, m in tb.macs.items()}
    ip = ipv4_tcp(tb.src_ip, tb.dst_ip, 1, 1, 2, 3, 4)
    at_rx = [
        mpls_frame([Lse(SF, bos=False)], b""),  # the stack ends without bottom of stack: truncated
        mpls_frame([Lse(5000 + i, bos=False) for i in range(17)], ip),  # too deep, not ours: passes
        mpls_frame([Lse(SF)] + [Lse(3000 + i) for i in range(16)], ip),  # ours, no BoS within 16
        mpls_frame([Lse(SF, bos=True)], b"\x00" * 40),  # no IP below the stack
        mpls_frame([Lse(SF, bos=True)], ip[:30]),  # truncated TCP
    ]
    at_rx = [mac[tb.net_in] + mac[tb.src_wire] + f[12:] for f in at_rx]
    # what the SF might send back: ARP-like junk (passes), a cut IPv4 header (dropped), an IP
    # packet the proxy never saw (no entry: on unlabelled, on_miss = pass)
    at_tx = [
        bytes(12) + b"\x08\x06" + bytes(28),
        b"\x08\x00" + ip[:10],
        b"\x08\x00" + ipv4_tcp(tb.src_ip, tb.dst_ip, 77, 1, 2, 3, 4),
    ]
    assert tb.sf_out and tb.from_sf
    at_tx = [mac[tb.from_sf] + mac[tb.sf_out] + f for f in at_tx]
    with _proxy(tb) as proxy:
        traffic.send_raw_frames(tb.ns_src, tb.src_wire, at_rx)  # behind the classifier
        traffic.send_raw_frames(tb.ns_sf or "", tb.sf_out, at_tx)
        netns.wait_until(lambda: proxy.counters()["tx_miss_pass"] and proxy.counters()["rx_not_ip"], 5,
                         what="bad frames to be counted")
        assert tb.ping(count=3).ok, "forwarding must go on after bad input"
        res = tb.iperf3(seconds=1)
        c = proxy.counters()
    assert res.bits_per_second > 10e6
    assert (c["rx_malformed"], c["rx_too_many_labels"], c["rx_not_ip"]) == (2, 1, 1)
    assert c["rx_other_label"] >= 1
    assert c["tx_malformed"] == 1 and c["tx_not_ip"] >= 1 and c["tx_miss_pass"] >= 1


def test_vlan_tagged_sr_mpls_reserved_labels_and_ttl(beds: Callable[[int], Testbed]) -> None:
    """As the kernel backend's: an SF on VLAN 10 leaving on VLAN 20; TTL 1 and 0 passed to the host
    by the XDP program in front of the sockets (user space cannot pass), counted in the SF's row."""
    tb = beds(1)
    tb.set_stacks([])
    with _proxy(tb, vlan_in=10, vlan_out=20, on_ttl_expired="pass") as proxy:
        assert netns.get_features(tb.ns_proxy, tb.net_in).get("rx-vlan-hw-parse") is False
        harness.check_real_links(tb, proxy.counters, SF, 10, 20, "pass")
        st = proxy.stats()
    assert _drops(st["counters"]) == {}
    assert st["sfs"]["fw1"]["rx_ttl_expired_pass"] == st["counters"]["rx_ttl_expired_pass"] > 0


# ---- life cycle --------------------------------------------------------------------------------


def _rss_kib() -> int:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the system, so RSS means live memory
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _process_state() -> tuple[int, int, int]:
    """(fds, OS threads, Python threads) of live objects, once every OS thread is a Python one: a native thread
    that has just finished (a worker joined a moment ago) leaves /proc/self/task a little later,
    so this polls for that, with a deadline, rather than counting once."""
    def now() -> tuple[int, int, int]:
        return len(os.listdir("/proc/self/fd")), len(os.listdir("/proc/self/task")), threading.active_count()

    gc.collect()  # garbage in a cycle may still hold an fd: counted in neither the first nor the last count

    netns.wait_until(lambda: now()[1] == now()[2], harness.RELEASE_TIMEOUT, raise_=False)
    return now()


def test_twenty_start_stop_cycles_leave_nothing(beds: Callable[[int], Testbed]) -> None:
    """In-process, so fds, threads and memory are the test's own: a leaked socket, UMEM
    (32 MiB a cycle) or worker would show."""
    tb = beds(1)
    tb.set_stacks([make_stack([SF, 2000])])
    for _ in range(2):  # warm-up: imports, libbpf and pyroute2 caches
        _stop(tb, _start(tb, _in_process(tb)))
    fds, tasks, threads = _process_state()
    rss = _rss_kib()
    infos = []
    for i in range(20):
        px = _start(tb, _in_process(tb))
        infos.append(px.state())
        assert len(queue_threads()) == 1 and _xdp_attached(tb)
        if i % 5 == 0:
            assert tb.ping(count=2).ok
        assert _stop(tb, px) < PROMPT_STOP_S
        assert px.worker_results() == {0: 0}
        assert queue_threads() == []
        harness.wait_no_xdp(tb.ns_proxy, (tb.net_in, tb.net_out, tb.to_sf, tb.from_sf))
    assert _process_state() == (fds, tasks, threads)
    grown = _rss_kib() - rss
    assert grown < 2048, f"RSS grew by {grown} KiB over 20 cycles"
    for info in infos:
        _gone(info)


def test_cli_cycles_and_signals_leave_nothing(beds: Callable[[int], Testbed]) -> None:
    tb = beds(1)
    tb.set_stacks([make_stack([SF, 2000])])
    for sig in (signal.SIGINT, signal.SIGTERM):
        p = _proxy(tb).start()
        info = state.running()[p.name]
        assert tb.ping(count=2).ok
        assert p.stop(sig) == 0
        _nothing_left(tb, p, info)
    # SIGKILL: the kernel closes sockets and links; the files it leaves, and VLAN tag stripping,
    # which it turned off on net_in, are for the next command that looks for running proxies:
    # `stats` here, and put back on before the next start turns it off again
    ns = tb.ns("proxy")
    strip = ns.get_features(tb.net_in)["rx-vlan-hw-parse"]
    assert strip, "veth strips VLAN tags unless told not to"
    p = _proxy(tb).start()
    info = state.running()[p.name]
    assert ns.get_features(tb.net_in)["rx-vlan-hw-parse"] is False
    p.stop(signal.SIGKILL)
    harness.wait_no_xdp(tb.ns_proxy, (tb.net_in, tb.net_out, tb.to_sf, tb.from_sf))
    left = [info["counters_file"], info["trace_file"], *map(str, state.STATE_DIR.glob(f"*.{p.pid}.*.restore"))]
    assert len(left) == 3 and all(os.path.exists(f) for f in left), left
    tb.run("proxy", [sys.executable, "-m", "afxdp_proxy", "stats"])  # no proxy runs: it says so, and sweeps
    for f in left:
        harness.wait_file_gone(f)
    netns.wait_until(lambda: ns.get_features(tb.net_in)["rx-vlan-hw-parse"], harness.RELEASE_TIMEOUT,
                     what=f"VLAN tag stripping on {tb.net_in} again")
    p = _proxy(tb).start()
    assert tb.ping(count=2).ok
    assert p.stop() == 0
    assert ns.get_features(tb.net_in)["rx-vlan-hw-parse"] is True


def test_stop_while_traffic_flows(beds: Callable[[int], Testbed]) -> None:
    tb = beds(1)
    tb.set_stacks([make_stack([SF, 2000, 3000])])
    with traffic.IperfServer(tb.ns_dst, one_off=False):
        client = netns.popen(tb.ns_src, ["iperf3", "-c", tb.dst_ip, "-t", "30", "-P", "2"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # the operator's way: SIGINT to `afxdp-proxy run`
            proxy = _proxy(tb).start()
            info = state.running()[proxy.name]
            netns.wait_until(lambda: proxy.counters()["rx_popped"] > 10000, 10, what="traffic")
            assert proxy.stop() == 0
            assert proxy.stop_seconds < PROMPT_STOP_S, f"stopping took {proxy.stop_seconds:.2f} s"
            _nothing_left(tb, proxy, info)
            # in-process: stop() itself, under the same load
            px = _start(tb, _in_process(tb))
            netns.wait_until(lambda: px.counters()["rx_popped"] > 10000, 10, what="traffic")
            assert _stop(tb, px) < PROMPT_STOP_S
            assert px.worker_results() == {0: 0} and queue_threads() == []
            harness.wait_no_xdp(tb.ns_proxy, (tb.net_in, tb.net_out, tb.to_sf, tb.from_sf))
        finally:
            netns.stop(client)


# ---- queues ------------------------------------------------------------------------------------


def test_two_queues(beds: Callable[[int], Testbed]) -> None:
    """veths with 2 queues: one socket per interface and one worker per queue, both busy,
    one shared cache, every packet with its own stack."""
    tb = beds(2)
    stacks = dynamic_stacks(SF)
    tb.set_stacks(stacks)
    px = _start(tb, _in_process(tb))
    try:
        assert px.queues == 2 and sorted(queue_threads()) == ["axp-xsk-q0", "axp-xsk-q1"]
        tb.set_recording(True)
        # flows land on queues by hash: 16 of them miss a queue with odds of 2 in 65536
        res = tb.iperf3(seconds=3, parallel=16)
        tb.set_recording(False, clear=False)
        # iperf3 returns before the tail of its data has crossed the SF: let that drain
        netns.wait_until(lambda: px.in_flight() <= 64, 3, raise_=False)
        per_queue = px.queue_counters()
        c = px.counters()
    finally:
        _stop(tb, px)
    assert px.worker_results() == {0: 0, 1: 0}
    assert res.stalls == 0 and res.bits_per_second > 10e6
    assert all(q["rx_popped"] > 1000 for q in per_queue), [q["rx_popped"] for q in per_queue]
    assert sum(q["rx_popped"] for q in per_queue) == c["rx_popped"]
    # every popped packet came back, or the kernel counted it dropped at a full RX ring
    # (a worker starved of CPU on this 2-core box), or is in flight
    lost = c["rx_popped"] - c["tx_pushed"] - c["tx_plain"]
    assert lost <= 64 + c["xsk_rx_ring_full"] + c["xsk_rx_dropped"], {k: v for k, v in c.items() if v}
    assert in_flight_of(c) <= 64 + c["xsk_rx_ring_full"] + c["xsk_rx_dropped"]
    check = tb.check_chain()
    assert check.compared >= 1000
    assert not check.wrong
    assert _drops(c) == {}


def test_the_bench_spread_reaches_both_queues(beds: Callable[[int], Testbed]) -> None:
    """`bench --flows N`'s packet rate: generators on both CPUs send 64 B frames of 4 UDP flows,
    which a veth hands to the queue of the sending CPU: both workers of a 2-queue proxy pop
    their share, and the receiver counts them at their stack minus the SF's label."""
    tb = beds(2)
    stack = make_stack([SF, 2000, 3000])
    px = _start(tb, _in_process(tb))
    try:
        before, drops = tb.generator_histogram(), tb.delivery_drops()
        with Generator() as gen:
            frame, seq_off = metrics.frame_for(tb, stack, 64)
            run = gen.send_spread(tb.ns_src, tb.src_wire, frame, seq_off, 0.5, [0, 1],
                                  lambda: sum(tb.generator_histogram().values()), flows=4)
        netns.wait_until(lambda: px.in_flight() <= 64, 3, raise_=False)
        per_queue = px.queue_counters()
        c = px.counters()
    finally:
        _stop(tb, px)
    assert run.frames > 10_000 and run.window_seconds > 0.4 and run.rate > 0, run
    assert all(q["rx_popped"] > 1000 for q in per_queue), [q["rx_popped"] for q in per_queue]
    got = {d: n - before.get(d, 0) for d, n in tb.generator_histogram().items()}
    # what the proxy pushed arrived with two labels; the rest it counted (a full ring, mostly)
    assert got.get(2, 0) >= c["tx_pushed"] - 64 - (tb.delivery_drops() - drops), (got, c["tx_pushed"])


# ---- errors an operator sees -----------------------------------------------------------------


def _run_cli(tb: Testbed, toml: str) -> subprocess.CompletedProcess:
    path = f"/tmp/afxdp-proxy-test-{tb.prefix}.toml"
    with open(path, "w") as f:
        f.write(toml)
    try:
        return netns.run(tb.ns_proxy, [sys.executable, "-m", "afxdp_proxy", "run", "-c", path, "-d", "1", "-q"])
    finally:
        os.unlink(path)


@pytest.mark.parametrize(("override", "field"), [
    ({"net_in": "nope0"}, "sf[0].net_in"),
    ({"queues": 2}, "proxy.queues"),
    ({"topology": "inline", "to_sf": None, "from_sf": None, "sf_mac": None}, "proxy.topology"),
    ({"ring_size": 1000}, "proxy.ring_size"),
    ({"bind_mode": "zerocopy"}, "proxy.bind_mode"),  # veth has no zero-copy
], ids=["no_interface", "queues", "inline", "ring_size", "zerocopy_on_veth"])
def test_errors_are_one_line_naming_the_field(beds: Callable[[int], Testbed], override: dict, field: str) -> None:
    tb = beds(1)
    r = _run_cli(tb, tb.proxy_config(backend="afxdp", **override))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"afxdp-proxy: error: {field}:"), r.stderr
    harness.wait_no_xdp(tb.ns_proxy, (tb.net_in, tb.net_out, tb.to_sf, tb.from_sf))


def test_a_queue_count_refusal_names_the_interface_and_the_fix(beds: Callable[[int], Testbed]) -> None:
    """proxy.queues given, and more than the interfaces have: the fix is their count, or none
    given (queues 4 on 1-queue veths once said "give the interfaces the same number of queues
    or set queues", set already)."""
    tb = beds(1)
    r = _run_cli(tb, tb.proxy_config(backend="afxdp", queues=4))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (f"afxdp-proxy: error: proxy.queues: 4, but {tb.net_in} (sf[0].net_in) has 1 RX "
                                "queue(s), and every RX queue needs a socket: set queues = 1 (its queue count) or "
                                "leave queues out"), r.stderr
    # the other phrasings, by what gave the count: interfaces that disagree, queues left out, a reload
    rx = _Port(Iface(tb.from_sf, 7, "02:00:00:00:00:07", 1500), "sf[0].from_sf", ROLE_FROM_SF)
    with pytest.raises(ConfigError) as e:
        _in_process(tb, queues=4)._check_queues(rx, 4, (1, 1), tb.net_in, frozenset({1, 2}))
    assert str(e.value).endswith(": give the interfaces the same number of RX queues (ethtool -L), then set queues "
                                 "to it or leave queues out"), e.value
    px = _in_process(tb)
    with pytest.raises(ConfigError) as e:
        px._check_queues(rx, 2, (1, 1), tb.net_in, frozenset({1, 2}))
    assert str(e.value) == (f"proxy.queues: {tb.net_in} has 2 RX queue(s), but {tb.from_sf} (sf[0].from_sf) has 1 "
                            "RX queue(s), and every RX queue needs a socket: give the interfaces the same number of "
                            "RX queues (ethtool -L)"), e.value
    with pytest.raises(ConfigError) as e:
        px._check_queues(rx, 2, (1, 1), None)
    assert str(e.value).startswith("proxy.queues: the running proxy serves 2 queue(s), but ") and \
        str(e.value).endswith(f": give {tb.from_sf} 2 RX queue(s) (ethtool -L); the proxy's own count changes only "
                              "with a restart"), e.value


def test_zerocopy_refusal_names_interface_and_driver(beds: Callable[[int], Testbed]) -> None:
    tb = beds(1)
    r = _run_cli(tb, tb.proxy_config(backend="afxdp", bind_mode="zerocopy"))
    assert r.returncode == 2
    assert "(driver veth) has no AF_XDP zero-copy support" in r.stderr and 'bind_mode = "auto"' in r.stderr


@pytest.mark.parametrize("mode", ["auto", "copy"])
def test_bind_mode_in_use_is_logged_and_in_stats(beds: Callable[[int], Testbed], mode: str) -> None:
    """auto falls back to copy on veth; copy forces it: the start line and `stats` say which."""
    tb = beds(1)
    proxy = ProxyProcess(tb.ns_proxy, tb.proxy_config(backend="afxdp", bind_mode=mode), name=f"{tb.prefix}-bind",
                         quiet=False)
    with proxy:
        out = netns.run(tb.ns_proxy, [sys.executable, "-m", "afxdp_proxy", "stats", "--name", proxy.name])
        info = state.running()[proxy.name]
    assert f"AF_XDP sockets in copy mode (bind_mode = {mode})" in proxy.output
    assert "AF_XDP copy" in out.stdout.splitlines()[0] and info["xsk"]["mode"] == "copy"


def test_inline_topology_is_refused_in_process() -> None:
    cfg = parse_config({"proxy": {"backend": "afxdp", "topology": "attached"},
                        "sf": [{"label": 1000, "net_in": "a", "net_out": "b", "to_sf": "c", "from_sf": "d"}]})
    with pytest.raises(ConfigError, match=r"^proxy\.topology:"):
        AfxdpProxy(cfg.__class__(**{**cfg.__dict__, "topology": "inline"}))


# ---- the cache under packets the SF drops, retries and load ------------------------------------


def test_lost_packets_fill_a_small_cache_and_a_chain_keeps_its_stacks(beds: Callable[[int], Testbed]) -> None:
    """As for the kernel backend (test_e2e_kernel.py): the same cache, the same books."""
    tb = beds(1)
    tb.set_stacks([])
    with harness.sf_drops(tb), _proxy(tb, cache_entries=64, on_miss="drop") as proxy:
        harness.check_lost_packets_then_chain(tb, proxy.counters, 64, SF)


def test_a_retry_after_max_dwell_gets_through(beds: Callable[[int], Testbed]) -> None:
    tb = beds(1)
    tb.set_stacks([])
    # long enough that reading counters through `stats` (a process each) on a loaded machine
    # still fits twice into it, short enough for the test to wait it out
    with _proxy(tb, max_dwell_ms=RETRY_DWELL_MS, max_per_key=1) as proxy:
        harness.check_retry_after_max_dwell(tb, proxy.counters, RETRY_DWELL_MS, SF)


def test_parallel_flows_on_both_cpus_keep_their_stacks_and_the_books_balance(beds: Callable[[int], Testbed]) -> None:
    """Two queues, two workers on one cache, 16 flows (spread over the queues by hash, as in
    test_two_queues): no packet leaves with another's stack (on_miss = drop: a miss could not
    even leave unlabelled), and in_flight from the counters is exactly what the sets hold."""
    tb = beds(2)
    tb.set_stacks(dynamic_stacks(SF))
    rsts = harness.tcp_resets_sent(tb.ns_src)
    px = _start(tb, _in_process(tb, on_miss="drop"))
    try:
        tb.set_recording(True)
        res = tb.iperf3(seconds=3, parallel=16)
        tb.set_recording(False, clear=False)
        engine = px.engine
        assert engine is not None
        c, held = harness.settled_books(px.counters, engine.in_flight)
        per_queue = px.queue_counters()
    finally:
        _stop(tb, px)
    assert res.bits_per_second > 10e6
    assert all(q["cache_inserts"] > 1000 for q in per_queue), [q["cache_inserts"] for q in per_queue]
    check = tb.check_chain()
    assert check.compared >= 2000
    assert not check.wrong
    assert harness.assert_counters_add_up(c) == held
    # only the sender's identical resets (harness.tcp_resets_sent) fill a set with one key's runs
    rsts = harness.tcp_resets_sent(tb.ns_src) - rsts
    assert c["rx_key_full"] <= rsts and c["evictions"] <= rsts, (rsts, c)


# ---- the proxy in a network ----------------------------------------------------------------------


def test_ipv6_through_an_sf_that_finds_its_neighbours(beds: Callable[..., Testbed]) -> None:
    """As for the kernel backend: the SF resolves the proxy by neighbour discovery; axp_xsk_from_sf
    hands its solicitations (and its pings to the proxy host) to the kernel before any socket, and
    ping6 and iperf3 -6 go through with every packet's stack."""
    tb = beds(1, sf_nd=True)
    stacks = dynamic_stacks(SF)
    tb.set_stacks(stacks)
    harness.forget_sf_neighbours(tb)
    with _proxy(tb) as proxy:
        c = harness.check_ipv6_through_nd_sf(tb, proxy.counters, stacks)
    assert _drops(c) == {}


@pytest.mark.parametrize("on_miss", ["pass", "last"])
def test_a_masquerading_sf(beds: Callable[..., Testbed], on_miss: str) -> None:
    """An nftables NAT in the SF: with on_miss = last the static chain survives (the engine's
    per-SF last stack); with pass the packets go on unlabelled, straight to the next hop."""
    tb = beds(1, sf_nd=True)
    harness.check_nat_sf(tb, lambda: _proxy(tb, on_miss=on_miss), on_miss, SF)
