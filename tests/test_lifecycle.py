"""A proxy that reloads and restarts without losing a packet: SIGHUP reloads the configuration
(SFs added, removed, changed while traffic flows; a broken file or a change that needs a
restart is refused and the proxy goes on), and `run --keep-cache` keeps the cache across a
restart (SIGTERM, or a SIGKILL crash), so packets held inside an SF (afxdp_proxy.lab.delay_sf)
while no proxy runs come back with their own stacks."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import harness
import pytest

from afxdp_proxy import keep, state
from afxdp_proxy.lab import delay_sf, netns
from afxdp_proxy.lab.proxyproc import ProxyProcess
from afxdp_proxy.lab.testbed import Testbed, dynamic_stacks
from afxdp_proxy.mpls import make_stack

pytestmark = [pytest.mark.root, pytest.mark.e2e]

SF = 1000
RATE = 300  # packets a second
MARGIN = 0.1  # seconds either side of a restart a packet must clear to count as inside the SF


@pytest.fixture(scope="module")
def tb() -> Iterator[Testbed]:
    keep.ensure_pinfs()
    bed = Testbed("attached").up()
    yield bed
    assert bed.down() == []
    assert not [n for n in keep.kept() if n.startswith(bed.prefix)], "testbed down forgets what its proxies kept"


@pytest.fixture(scope="module")
def delay(tb: Testbed) -> float:
    """Seconds the SF holds each packet: a few times what a restart takes on this machine now
    (about 1 s idle, 3 s on a busy 2-core box), at least 2 s."""
    proxy = _proxy(tb, "measure", max_dwell_ms=1000)
    t0 = time.monotonic()
    proxy.start()
    proxy.stop(signal.SIGTERM)
    return min(8.0, max(2.0, 2 * (time.monotonic() - t0)))


def _proxy(tb: Testbed, suffix: str, backend: str = "kernel", args: tuple[str, ...] = (), max_dwell_ms: int = 60_000,
           **kw: object) -> ProxyProcess:
    # max_dwell_ms: packets held longer would be presumed lost (and their entries reclaimed)
    return ProxyProcess(tb.ns_proxy, tb.proxy_config(backend=backend, max_dwell_ms=max_dwell_ms, **kw),
                        name=f"{tb.prefix}-{suffix}", quiet=False, args=args)


def _cache_packets(proxy: ProxyProcess) -> int:
    """Packets the cache of a running proxy holds, counted in its sets."""
    info = state.running()[proxy.name]
    if info["backend"] == "afxdp":
        return harness.afxdp_cache_packets(info["kept"])
    return harness.kernel_cache_packets(info["maps"]["cache"])


@dataclass
class Restart:
    """What a restart did to a stream of packets through a delay SF."""

    inside: list[int]  # frames in the SF for the whole time no proxy ran
    wrong: dict[int, tuple[tuple[int, ...], tuple[int, ...] | None]]  # of those: expected, arrived
    restored: int  # of those, the ones with labels to restore (not plain IP) that arrived with them
    window: float  # seconds from the signal to the new proxy attached (an upper bound)
    lost: int  # frames that never arrived (sent while nothing was attached at net_in)
    unlabelled: int  # frames that came out of the SF while nothing was attached at from_sf
    delay: float  # seconds the SF held each packet


def _restart_through_delay_sf(tb: Testbed, proxy: ProxyProcess, sig: int, delay: float) -> Restart:
    """_restart_once, and once more with the SF holding packets twice as long when the restart
    took too long for packets to stay inside throughout: the machine got busier than when `delay`
    was measured, which says nothing of the proxy. What the proxy kept is forgotten in between."""
    r = _restart_once(tb, proxy, sig, delay)
    if r is None:
        proxy.stop(keep_config=True)
        keep.forget(proxy.name)
        r = _restart_once(tb, proxy, sig, 2 * delay)
    if r is None:
        pytest.fail(f"the restart took longer than the SF holds packets ({2 * delay:.1f} s), twice")
    return r


def _restart_once(tb: Testbed, proxy: ProxyProcess, sig: int, delay: float) -> Restart | None:
    """A dynamic chain (per-packet stacks) into an SF that holds every packet `delay` seconds;
    half a second into it the proxy is stopped by sig and started again, while packets are
    inside; the stream goes on for half a second after, and its tail is waited for. None when
    the restart left fewer than RATE * MARGIN packets inside the SF throughout (too slow)."""
    n = int(RATE * (delay + 3))  # more than it takes; stopped half a second after the restart
    stream = harness.PacedFrames(tb, dynamic_stacks(SF), n, RATE)
    tb.set_recording(True)
    with delay_sf.running(tb, delay):
        proxy.start()
        stream.start()
        netns.wait_until(lambda: len(stream.sent_at) >= RATE / 2, 10, what="packets to enter the SF")
        t_signal = time.monotonic()
        proxy.stop(sig, keep_config=True)
        proxy.start()
        t_attached = time.monotonic()
        # inside: sent from t_signal - 0.5 to t_signal - MARGIN, out after t_attached + MARGIN
        if t_attached - t_signal > delay - 3 * MARGIN:
            stream.stop()
            print(f"the restart took {t_attached - t_signal:.1f} s, the SF holds packets {delay:.1f} s")
            return None
        time.sleep(0.5)
        stream.stop()
        sent = len(stream.sent_at)
        last = stream.keys[sent - 1]
        netns.wait_until(lambda: last in tb.received(), delay + 5, raise_=False, what="the last packet")
        time.sleep(0.2)
    tb.set_recording(False, clear=False)
    got = tb.received()
    inside = [i for i, t in enumerate(stream.sent_at) if t < t_signal - MARGIN and t + delay > t_attached + MARGIN]
    wrong = {i: (stream.expected(i), got.get(stream.keys[i])) for i in inside
             if got.get(stream.keys[i]) != stream.expected(i)}
    restored = sum(1 for i in inside if stream.expected(i) and got.get(stream.keys[i]) == stream.expected(i))
    lost = sum(1 for k in stream.keys[:sent] if k not in got)
    unlabelled = sum(1 for i, k in enumerate(stream.keys[:sent]) if k in got and got[k] != stream.expected(i))
    return Restart(inside, wrong, restored, t_attached - t_signal, lost, unlabelled, delay)


@pytest.mark.parametrize(("backend", "sig"), [("kernel", signal.SIGTERM), ("kernel", signal.SIGKILL),
                                              ("afxdp", signal.SIGKILL)], ids=["kernel-sigterm", "kernel-sigkill",
                                                                              "afxdp-sigkill"])
def test_restart_keeps_the_stacks_of_packets_inside_the_sf(tb: Testbed, delay: float, sig: int, backend: str) -> None:
    # a dot in the name, which a bpffs refuses in the pins' directory (keep.pin_dir escapes it)
    proxy = _proxy(tb, f"keep.{backend}-{sig}", backend=backend, args=("--keep-cache",))
    try:
        r = _restart_through_delay_sf(tb, proxy, sig, delay)
        c, held = harness.settled_books(proxy.counters, lambda: _cache_packets(proxy))
        out = proxy.output
    finally:
        proxy.stop()
    print(f"{backend} restart by {signal.Signals(sig).name}: {r.window:.2f} s without a proxy "
          f"({r.delay:.1f} s delay SF), {r.lost} packets lost at net_in, {r.unlabelled} routed unlabelled "
          f"from from_sf, {len(r.inside)} inside the SF throughout")
    assert len(r.inside) >= RATE * MARGIN, r
    assert not r.wrong, f"{len(r.wrong)} of {len(r.inside)} packets inside the SF lost their stack: {r.wrong}"
    assert "reusing the cache" in out, out
    # the counters were kept with the cache: across the restart, what they say is in flight is
    # what the cache holds (the packets that came back while no proxy ran, never taken)
    assert harness.assert_counters_add_up(c) == held, c
    assert held <= r.unlabelled


def test_without_keep_cache_a_restart_forgets_and_nothing_is_left(tb: Testbed, delay: float) -> None:
    proxy = _proxy(tb, "nokeep")
    try:
        r = _restart_through_delay_sf(tb, proxy, signal.SIGTERM, delay)
        info = state.running()[proxy.name]
    finally:
        proxy.stop()
    # the packets inside the SF came back to a proxy that never saw them: sent on unlabelled
    assert r.inside and r.wrong and r.restored == 0, r
    assert not keep.pin_dir(proxy.name).exists() and keep.read(proxy.name) is None
    harness.wait_maps_freed(info["maps"].values())


# ---- reload (SIGHUP) ------------------------------------------------------------------------------

FW2_RX, FW2_PEER = "p_sf2_rx", "sf2_out"  # a second return path from the SF namespace, for fw2


def _fw2(tb: Testbed, label: int = SF + 1) -> str:
    from afxdp_proxy.lab.testbed import DST0, SF_IN

    return (f'\n[[sf]]\nname = "fw2"\nlabel = {label}\nnet_in = "{tb.net_in}"\nnet_out = "{tb.net_out}"\n'
            f'to_sf = "{tb.to_sf}"\nfrom_sf = "{FW2_RX}"\nsf_mac = "{SF_IN.mac}"\nnext_hop_mac = "{DST0.mac}"\n')


def _xdp(tb: Testbed, *ifnames: str) -> dict[str, int]:
    from afxdp_proxy import bpf

    with netns.enter(tb.ns_proxy):
        return {n: bpf.xdp_prog_id(tb.ifindex("proxy", n)) for n in ifnames}


@pytest.mark.parametrize("backend", ["kernel", "afxdp"])
def test_reload_adds_and_removes_an_sf_while_traffic_flows(tb: Testbed, backend: str) -> None:
    """fw1 serves a dynamic chain; fw2 (its own label, its own from_sf) is added by SIGHUP while
    traffic flows, a broken file and a change that needs a restart are refused, fw2 is removed
    again: no packet of fw1 is lost or mislabelled throughout, fw2 serves from its reload on."""
    if not tb.ns("proxy").ipr.get_links(ifname=FW2_RX):
        netns.add_veth(tb.ns("proxy"), FW2_RX, tb.ns("sf"), FW2_PEER, mtu=1500)
        tb.ns("proxy").link_up(FW2_RX)
        tb.ns("sf").link_up(FW2_PEER)
        tb.ns("proxy").wait_up(FW2_RX)
    fw1, fw2 = dynamic_stacks(SF), [make_stack([SF + 1, 2101], [1, 2]), make_stack([SF + 1, 2102, 3102], [3, 4, 5])]
    base = tb.proxy_config(backend=backend, max_dwell_ms=500)
    proxy = _proxy(tb, f"reload-{backend}", backend=backend, max_dwell_ms=500)
    stream = harness.PacedFrames(tb, [fw1[0], fw2[0], fw1[1], fw1[2], fw2[1], fw1[3]], int(RATE * 7), RATE)
    tb.set_recording(True)
    try:
        proxy.start()
        before = _xdp(tb, tb.net_in, tb.from_sf, FW2_RX)
        stream.start()
        netns.wait_until(lambda: len(stream.sent_at) >= RATE, 10, what="a second of traffic")
        line = proxy.reload(base + _fw2(tb))
        t_added, n_added = time.monotonic(), len(stream.sent_at)
        assert "reloaded" in line and "1 added" in line, proxy.output
        assert "SF fw2 added: label 1001" in proxy.output
        after = _xdp(tb, tb.net_in, tb.from_sf, FW2_RX)
        # the others' programs stay as they were; fw2's return path is attached
        assert after[tb.net_in] == before[tb.net_in] and after[tb.from_sf] == before[tb.from_sf], (before, after)
        assert not before[FW2_RX] and after[FW2_RX]
        assert state.running()[proxy.name]["sfs"] == ["fw1", "fw2"]
        # a broken file, then a change only a restart can apply: refused, one line naming the field
        line = proxy.reload(base + _fw2(tb, label=3))
        assert "reload refused: sf[1].label: 3 is out of range" in line, line
        line = proxy.reload((base + _fw2(tb)).replace("cache_entries = 65536", "cache_entries = 1024"))
        assert "reload refused: proxy.cache_entries: 65536 -> 1024" in line and "restart" in line, line
        # fw2 serves for 2.5 s of traffic counted from its reload, however long that took (a third
        # of the stream is fw2's: about 250 packets, against the 150 asserted below)
        netns.wait_until(lambda: len(stream.sent_at) >= n_added + RATE * 2.5, 10, what="more traffic")
        t_removed = time.monotonic()  # from the SIGHUP on, fw2 may be gone: how soon its log line shows is load
        line = proxy.reload(base)
        assert "1 removed" in line and "SF fw2 removed" in proxy.output, proxy.output
        proxy.wait_for("SF fw2 drained", 5)
        assert _xdp(tb, FW2_RX)[FW2_RX] == 0, "fw2's return path must be detached once drained"
        stream.join(20)
        last = stream.keys[-1]
        netns.wait_until(lambda: last in tb.received(), 5, raise_=False, what="the last packet")
        time.sleep(0.2)
        st = proxy.stats()
    finally:
        stream.stop()
        tb.set_recording(False, clear=False)
        proxy.stop()
    got = tb.received()
    is_fw1 = [s[0].label == SF for s in stream.stacks]
    fw1_wrong = {i: (stream.expected(i), got.get(k)) for i, k in enumerate(stream.keys)
                 if is_fw1[i] and got.get(k) != stream.expected(i)}
    assert not fw1_wrong, f"{len(fw1_wrong)} of fw1's {sum(is_fw1)} packets lost or mislabelled: {fw1_wrong}"
    served = [i for i, t in enumerate(stream.sent_at) if not is_fw1[i] and t_added + MARGIN < t < t_removed - MARGIN]
    fw2_wrong = {i: (stream.expected(i), got.get(stream.keys[i])) for i in served
                 if got.get(stream.keys[i]) != stream.expected(i)}
    assert len(served) > RATE / 2 and not fw2_wrong, fw2_wrong
    # before it was added and after it was removed, fw2's label was not ours: those packets died
    # in the proxy namespace (no MPLS routing)
    early = [i for i, t in enumerate(stream.sent_at) if not is_fw1[i] and t < t_added - 1]
    assert early and not any(stream.keys[i] in got for i in early)
    assert st["sfs"]["fw2"]["rx_popped"] >= len(served) and st["sfs"]["fw1"]["tx_pushed"] > 0, st["sfs"]


@pytest.mark.parametrize("backend", ["kernel", "afxdp"])
def test_a_kept_cache_of_another_layout_is_replaced_and_forget_drops_one(tb: Testbed, backend: str) -> None:
    import sys

    proxy = _proxy(tb, f"layout-{backend}", backend=backend, args=("--keep-cache",))
    name = proxy.name
    kept = (lambda: (keep.pin_dir(name) / "axp_cache").exists()) if backend == "kernel" else \
        (lambda: keep.file_path(name, "cache").exists())
    forget = [sys.executable, "-m", "afxdp_proxy", "forget", name]
    try:
        proxy.start()
        proxy.stop(signal.SIGTERM, keep_config=True)
        assert kept() and keep.read(name)["layout"]["sets"] == 8192
        # another cache size: what was kept does not fit, and is replaced
        proxy.write_config(tb.proxy_config(backend=backend, cache_entries=1024, max_dwell_ms=60_000))
        proxy.start()
        line = proxy.wait_for("does not fit")
        assert "(sets 8192 -> 128)" in line and "starting with an empty cache" in line, line
        # forget is refused while a proxy of the name runs
        r = tb.run("proxy", forget)
        assert r.returncode == 1 and "is running" in r.stderr, r.stderr
        info = state.running()[name]
        proxy.stop(signal.SIGTERM, keep_config=True)
        assert kept() and keep.read(name)["layout"]["sets"] == 128
        r = tb.run("proxy", forget)
        assert r.returncode == 0 and r.stdout.startswith(f"{name}: forgot "), r.stdout + r.stderr
        assert not kept() and keep.read(name) is None and name not in keep.kept()
        if backend == "kernel":
            harness.wait_maps_freed(info["maps"].values())  # the pins held the last references
    finally:
        proxy.stop()
        keep.forget(name)


def test_keep_cache_without_the_bpffs_warns_and_runs(tb: Testbed, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AXP_PIN_DIR", str(tmp_path))  # a directory, no bpffs: as under `ip netns exec` alone
    proxy = _proxy(tb, "nopinfs", args=("--keep-cache",))
    try:
        proxy.start()
        line = proxy.wait_for("--keep-cache")
        assert line.startswith("afxdp-proxy: warning: --keep-cache: no bpffs mounted at ") and "pinfs" in line, line
        assert tb.ping(count=2).ok
    finally:
        proxy.stop()
    assert keep.read(proxy.name) is None and not list(tmp_path.iterdir())
