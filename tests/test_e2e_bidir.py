"""End to end, both directions of a chain through one SF ([sf.reverse]): iperf3 through an
nftables stateful firewall for every backend, each packet of each direction with its own
stack, counters per direction; the same firewall without the reverse direction fails; the
masquerading NAT with on_miss = "pass"; an interface with both XDP roles; the reverse
direction added and removed by SIGHUP, and kept across a restart with --keep-cache.

One bidirectional testbed per topology for the module (the receiver's replies classified
and recorded too), its SF a stateful firewall unless a test says otherwise.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import harness
import pytest

from afxdp_proxy import bpf, keep, state
from afxdp_proxy.key import derive_key
from afxdp_proxy.lab import netns, traffic
from afxdp_proxy.lab.frames import ether, ipv4_tcp, mpls_frame
from afxdp_proxy.lab.proxyproc import ProxyProcess
from afxdp_proxy.lab.testbed import Testbed, dynamic_stacks
from afxdp_proxy.mpls import make_stack, tx_words

pytestmark = [pytest.mark.root, pytest.mark.e2e]

SF, SF_REV = 1000, 1001
# (backend, topology) pairs that serve a chain in both directions
BACKENDS = [("kernel", "attached"), ("kernel", "inline"), ("afxdp", "attached")]


@pytest.fixture(scope="module")
def beds() -> Iterator[Callable[[str], Testbed]]:
    made: dict[str, Testbed] = {}

    def get(topology: str) -> Testbed:
        if topology not in made:
            made[topology] = Testbed(topology, sf="firewall", bidirectional=True, sf_label=SF,
                                     reverse_label=SF_REV).up()
        tb = made[topology]
        tb.set_stacks(dynamic_stacks(SF))
        tb.set_stacks(dynamic_stacks(SF_REV), reverse=True)
        return tb

    yield get
    for tb in made.values():
        assert tb.down() == []


def _proxy(tb: Testbed, backend: str, quiet: bool = True, **kw: object) -> ProxyProcess:
    """quiet False: the proxy logs its info lines too (a reload's)."""
    return ProxyProcess(tb.ns_proxy, tb.proxy_config(backend=backend, **kw), name=f"{tb.prefix}-{backend}",
                        quiet=quiet)


@contextmanager
def _sf(tb: Testbed, kind: str) -> Iterator[None]:
    """The testbed's SF as another kind for a while, the firewall again afterwards."""
    tb.set_sf(kind)
    try:
        yield
    finally:
        tb.set_sf("firewall")


def _arrived(stacks: list) -> set[tuple[int, ...]]:
    """The stacks a dynamic chain's packets leave with: below the SF label, the TTL on top by the
    uniform model."""
    return {tx_words([e.encode() for e in s]) for s in stacks}


def _rows_add_up(st: dict) -> tuple[dict[str, int], dict[str, int]]:
    """The forward and reverse rows of `stats --json`: each balances its own books, and with
    the row of frames of no SF they make up the totals."""
    rows = st["sfs"]
    assert set(rows) == {"fw1", "fw1.reverse", "-"}
    fwd, rev = rows["fw1"], rows["fw1.reverse"]
    for row in (fwd, rev):
        harness.assert_counters_add_up(row)
    for name, total in st["counters"].items():
        assert total == fwd[name] + rev[name] + rows["-"][name], name
    assert rows["-"]["rx_popped"] == rows["-"]["cache_inserts"] == 0
    return fwd, rev


@pytest.mark.parametrize("backend", ["kernel", "afxdp"])
def test_check_knows_the_reverse_direction(beds: Callable[[str], Testbed], tmp_path: Path, backend: str) -> None:
    """`afxdp-proxy check` on the bidirectional testbed: every interface of both directions
    passes in its roles (the reverse direction's net_in p_out gets native XDP, its net_out
    p_in and to_sf p_sf_rx take redirected frames)."""
    tb = beds("attached")
    path = tmp_path / "proxy.toml"
    path.write_text(tb.proxy_config(backend=backend))
    r = netns.run(tb.ns_proxy, [sys.executable, "-m", "afxdp_proxy", "check", "--json", "--config", str(path)],
                  timeout=60)
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["ok"], r.stdout
    assert {c["status"] for c in doc["checks"]} == {"ok"}, [c["line"] for c in doc["checks"] if c["status"] != "ok"]
    subjects = {c["subject"] for c in doc["checks"]}
    assert {"sf[0].reverse.net_in", "sf[0].reverse.from_sf", "sf[0].reverse.sf_mac",
            "sf[0].reverse.next_hop_mac"} <= subjects
    if backend == "kernel":
        assert {"sf[0].reverse.net_out", "sf[0].reverse.to_sf"} <= subjects  # redirect targets


@pytest.mark.parametrize(("backend", "topology"), BACKENDS, ids=lambda v: v)
def test_iperf3_through_a_stateful_firewall_both_directions(beds: Callable[[str], Testbed], backend: str,
                                                            topology: str) -> None:
    """TCP through nftables conntrack (new flows only from the sender, policy drop): the
    firewall sees both directions, each packet of each direction leaves with its own stack
    (a dynamic chain both ways), and the counters of each direction add up."""
    tb = beds(topology)
    dropped = tb.sf_dropped()
    with _proxy(tb, backend) as proxy:
        tb.set_recording(True)
        res = tb.iperf3(seconds=2, bitrate="40M")
        tb.set_recording(False, clear=False)
        st = proxy.stats()
    assert res.stalls == 0 and res.bits_per_second > 10e6, res.interval_bits
    assert tb.sf_dropped() == dropped, "the firewall dropped packets of the flow"
    fwd_check, rev_check = tb.check_chain(), tb.check_chain(reverse=True)
    assert fwd_check.compared >= 500 and rev_check.compared >= 100, (fwd_check.compared, rev_check.compared)
    for check in (fwd_check, rev_check):
        assert not check.wrong, f"{len(check.wrong)} packets got another stack, e.g. {next(iter(check.wrong.values()))}"
    assert fwd_check.arrived == _arrived(dynamic_stacks(SF))
    assert rev_check.arrived == _arrived(dynamic_stacks(SF_REV))
    fwd, rev = _rows_add_up(st)
    assert fwd["rx_popped"] >= fwd_check.compared and rev["rx_popped"] >= rev_check.compared
    for row in (fwd, rev):
        assert row["tx_pushed"] > 0 and row["tx_plain"] > 0  # the one-label stack leaves as plain IP
        assert row["tx_miss_pass"] == row["rx_key_full"] == row["evictions"] == 0, row


def test_static_proxy_both_directions(beds: Callable[[str], Testbed]) -> None:
    """The static baseline serves both directions too, each with its configured stack."""
    tb = beds("attached")
    with _proxy(tb, "static", static_stack=[2001, 3001], reverse={"static_stack": [2101]}) as proxy:
        tb.set_recording(True)
        res = tb.iperf3(seconds=1, bitrate="20M")
        tb.set_recording(False, clear=False)
        st = proxy.stats()
    assert res.stalls == 0 and res.bits_per_second > 5e6
    assert tb.check_chain().arrived == {tuple(e.encode() for e in make_stack([2001, 3001]))}
    assert tb.check_chain(reverse=True).arrived == {tuple(e.encode() for e in make_stack([2101]))}
    assert st["sfs"]["fw1"]["tx_pushed"] > 0 and st["sfs"]["fw1.reverse"]["tx_pushed"] > 0


def test_without_the_reverse_direction_tcp_fails(beds: Callable[[str], Testbed]) -> None:
    """The negative control: the same testbed and firewall, a proxy with the forward direction
    only. The SYN gets through; the labelled SYN-ACK has no proxy to take it through the SF
    and dies in the proxy namespace, so iperf3 cannot even connect. (With replies routed
    around the SF instead, the firewall stalls the flow: test_testbed.py shows that.)"""
    tb = beds("attached")
    tb.reset_counters()
    with _proxy(tb, "kernel", reverse=False) as proxy:
        with pytest.raises(RuntimeError, match="unable to connect"):
            tb.iperf3(seconds=1, extra=["--connect-timeout", "1000"])
        assert not traffic.tcp_echo(tb.ns_src, tb.ns_dst, tb.dst_ip, timeout=0.5).connected
        st = proxy.stats()
    assert set(st["sfs"]) == {"fw1", "-"}
    assert st["sfs"]["fw1"]["tx_pushed"] + st["sfs"]["fw1"]["tx_plain"] >= 1  # the SYNs went through the SF
    assert tb.counters(reverse=True)["tc_pushed"] >= 1  # and were answered, labelled
    assert tb.depth_histogram(reverse=True) == {}  # but no reply came back


@pytest.mark.parametrize("backend", ["kernel", "afxdp"])
def test_nat_with_on_miss_pass_sends_unlabelled(beds: Callable[[str], Testbed], backend: str) -> None:
    """A masquerading NAT rewrites key fields: today's on_miss = "pass" sends every packet on
    unlabelled, in both directions, counted as misses (on_miss = "last", which keeps the
    labels of a NAT's packets, has its own end-to-end test where it is built)."""
    tb = beds("attached")
    with _sf(tb, "nat"):
        tb.reset_counters()
        with _proxy(tb, backend) as proxy:
            res = tb.iperf3(seconds=1, bitrate="10M")
            st = proxy.stats()
    assert res.stalls == 0 and res.bits_per_second > 5e6
    assert set(tb.depth_histogram()) == {0} and set(tb.depth_histogram(reverse=True)) == {0}
    for name in ("fw1", "fw1.reverse"):
        row = st["sfs"][name]
        assert row["rx_popped"] > 0 and row["tx_pushed"] == row["tx_plain"] == row["cache_takes"] == 0, row
        assert row["tx_miss_pass"] >= row["rx_popped"] - 8, row  # a few may be on their way


@pytest.mark.parametrize("backend", ["kernel", "afxdp"])
def test_an_interface_with_both_xdp_roles(beds: Callable[[str], Testbed], backend: str) -> None:
    """p_sf_rx as the forward direction's from_sf and the reverse direction's net_in (and
    to_sf): labelled frames of the reverse SF and bare frames from the SF arrive on it mixed
    in one burst. The labelled ones are popped and sent to the SF, come back bare on the same
    interface, get their stacks back and leave by p_in; the bare ones (no entry) leave
    unlabelled by p_out."""
    tb = beds("attached")
    assert tb.from_sf and tb.sf_out and tb.ns_sf
    mac = {n: bytes.fromhex(m.replace(":", "")) for n, m in tb.macs.items()}
    n = 32
    stacks = [make_stack([SF_REV, 2100 + i, 3100 + i], [i % 8, 1, 2]) for i in range(n)]
    labelled = [ipv4_tcp(tb.src_ip, tb.dst_ip, 1, 7000, 80, i, 0) for i in range(n)]
    bare = [ipv4_tcp(tb.src_ip, tb.dst_ip, 1, 7001, 80, i, 0) for i in range(n)]
    frames = [f for i in range(n) for f in (mpls_frame(stacks[i], labelled[i], mac[tb.from_sf], mac[tb.sf_out]),
                                            ether(bare[i], dst=mac[tb.from_sf], src=mac[tb.sf_out]))]
    with _sf(tb, "forward"), _proxy(tb, backend, reverse={"net_in": tb.from_sf}) as proxy:
        tb.set_recording(True)
        traffic.send_raw_frames(tb.ns_sf, tb.sf_out, frames)
        back = {derive_key(ip)[1]: s for ip, s in zip(labelled, stacks, strict=True)}
        out = {derive_key(ip)[1] for ip in bare}
        netns.wait_until(lambda: back.keys() <= tb.received(reverse=True).keys() and out <= tb.received().keys(),
                         5, what="both kinds of frame to arrive")
        st = proxy.stats()
        tb.set_recording(False, clear=False)
    got = tb.received(reverse=True)
    assert {k: got[k] for k in back} == {k: tx_words([e.encode() for e in s]) for k, s in back.items()}
    assert {tb.received()[k] for k in out} == {()}
    fwd, rev = st["sfs"]["fw1"], st["sfs"]["fw1.reverse"]
    assert (rev["rx_popped"], rev["tx_pushed"]) == (n, n), rev
    assert fwd["tx_miss_pass"] == n and fwd["rx_popped"] == 0, fwd


# ---- reload (SIGHUP) of the reverse direction ------------------------------------------------------


def _xdp_ids(tb: Testbed, *ifnames: str) -> dict[str, int]:
    """The XDP program ID attached to each interface of the proxy namespace (0: none)."""
    with netns.enter(tb.ns_proxy):
        return {n: bpf.xdp_prog_id(tb.ifindex("proxy", n)) for n in ifnames}


def test_sighup_adds_and_removes_the_reverse_direction(beds: Callable[[str], Testbed]) -> None:
    """(kernel) [sf.reverse] added by SIGHUP to a proxy that served the forward direction only:
    fw1.reverse takes a slot of its own, fw1's links stay, its own are attached, and TCP opens
    through the firewall, each reply with its own stack; removed again, it drains, its links
    go, and TCP fails as it did before."""
    tb = beds("attached")
    assert tb.to_sf and tb.from_sf
    ifs = (tb.net_in, tb.net_out, tb.to_sf, tb.from_sf)
    with _proxy(tb, "kernel", quiet=False, reverse=False, max_dwell_ms=300) as proxy:
        before = _xdp_ids(tb, *ifs)
        assert not traffic.tcp_echo(tb.ns_src, tb.ns_dst, tb.dst_ip, timeout=0.5).connected
        line = proxy.reload(tb.proxy_config(max_dwell_ms=300))
        assert "1 added" in line and f"SF fw1.reverse added: label {SF_REV}" in proxy.output, proxy.output
        assert state.running()[proxy.name]["sfs"] == ["fw1", "fw1.reverse"]
        added = _xdp_ids(tb, *ifs)
        # fw1's programs stay; the reverse direction's net_in p_out and from_sf p_sf_tx get theirs
        assert [added[n] for n in (tb.net_in, tb.from_sf)] == [before[n] for n in (tb.net_in, tb.from_sf)]
        assert not before[tb.net_out] and added[tb.net_out] and not before[tb.to_sf] and added[tb.to_sf]
        tb.set_recording(True)
        res = tb.iperf3(seconds=1, bitrate="20M")
        tb.set_recording(False, clear=False)
        st = proxy.stats()
        line = proxy.reload(tb.proxy_config(reverse=False, max_dwell_ms=300))
        assert "1 removed" in line, proxy.output
        proxy.wait_for("SF fw1.reverse drained", 5)
        assert _xdp_ids(tb, *ifs) == before
        assert not traffic.tcp_echo(tb.ns_src, tb.ns_dst, tb.dst_ip, timeout=0.5).connected
    assert res.stalls == 0 and res.bits_per_second > 5e6, res.interval_bits
    rev_check = tb.check_chain(reverse=True)
    assert rev_check.compared >= 50 and not rev_check.wrong, rev_check.compared
    assert rev_check.arrived == _arrived(dynamic_stacks(SF_REV))
    _rows_add_up(st)


def test_a_reload_is_checked_as_run_checks_a_start(beds: Callable[[str], Testbed]) -> None:
    """(kernel) A SIGHUP that adds an SF whose to_sf would swallow its frames (a veth whose peer
    runs no XDP program and has GRO off: the kernel drops what XDP redirects there) is refused
    with the line `check` gives, and fw1 goes on; the interfaces fw1 runs on are no obstacle."""
    tb = beds("attached")
    base = tb.proxy_config()
    fw3 = base[base.index("[[sf]]"):base.index("[sf.reverse]")].replace('name = "fw1"', 'name = "fw3"').replace(
        f"label = {SF}", f"label = {SF + 3}").replace(f'to_sf = "{tb.to_sf}"', 'to_sf = "x3_tx"').replace(
        f'from_sf = "{tb.from_sf}"', 'from_sf = "x3_rx"')
    assert 'to_sf = "x3_tx"' in fw3 and 'from_sf = "x3_rx"' in fw3
    for a, b in (("x3_tx", "x3_tp"), ("x3_rx", "x3_rp")):
        tb.run("proxy", ["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
        for ifname in (a, b):
            tb.run("proxy", ["ip", "link", "set", ifname, "up"], check=True)
    try:
        with _proxy(tb, "kernel", quiet=False) as proxy:
            line = proxy.reload(base + "\n" + fw3, expect="reload refused")
            assert "error: reload refused: sf[1].to_sf: frames redirected to x3_tx vanish" in line, proxy.output
            assert "warning: check: sf[1].from_sf: its veth peer x3_rp" in proxy.output  # what run warns of too
            assert "(the running configuration stays)" in line
            assert state.running()[proxy.name]["sfs"] == ["fw1", "fw1.reverse"]
            # check, run on the edited file beforehand, says the same; the running proxy's own
            # programs are no obstacle in it
            checked = netns.run(tb.ns_proxy, [sys.executable, "-m", "afxdp_proxy", "check", "--config",
                                              str(proxy.config_path)], timeout=60)
            assert checked.returncode == 2, checked.stdout
            errors = [line for line in checked.stdout.splitlines() if line.startswith("error")]
            assert len(errors) == 1 and "sf[1].to_sf: frames redirected to x3_tx vanish" in errors[0], errors
            proxy.write_config(base)
            checked = netns.run(tb.ns_proxy, [sys.executable, "-m", "afxdp_proxy", "check", "--config",
                                              str(proxy.config_path)], timeout=60)
            assert checked.returncode == 0, checked.stdout
            assert checked.stdout.splitlines()[-1].endswith(f"a SIGHUP to proxy {proxy.name} can apply it")
            # a field only a restart changes: an error naming it (a SIGHUP would refuse the file)
            proxy.write_config(base.replace("cache_entries = 65536", "cache_entries = 4096"))
            checked = netns.run(tb.ns_proxy, [sys.executable, "-m", "afxdp_proxy", "check", "--config",
                                              str(proxy.config_path)], timeout=60)
            assert checked.returncode == 2, checked.stdout
            errors = [line for line in checked.stdout.splitlines() if line.startswith("error")]
            assert len(errors) == 1 and "proxy.cache_entries: 65536 -> 4096 cannot change while proxy" in errors[0]
            assert "restart the proxy to apply it" in errors[0], errors
            assert checked.stdout.splitlines()[-1].endswith(f"a SIGHUP to proxy {proxy.name} would refuse it")
            proxy.write_config(base)
            res = tb.iperf3(seconds=1, bitrate="10M")
        assert res.bits_per_second > 5e6
        # the reload logged the new SF's findings, not the host's again
        assert all("warning: check: sf[" in w for w in proxy.output.splitlines() if "warning: check:" in w), \
            proxy.output
    finally:
        for a in ("x3_tx", "x3_rx"):
            tb.run("proxy", ["ip", "link", "del", a])


def test_sighup_and_an_interface_with_both_xdp_roles(beds: Callable[[str], Testbed]) -> None:
    """(kernel) An interface whose XDP roles change by SIGHUP keeps its link, the program of its
    new roles swapped in: p_sf_rx, from_sf of fw1 and net_in of fw1.reverse (axp_xdp_rx_tx),
    becomes fw1.reverse's to_sf instead (axp_xdp_tx) and TCP flows both ways, then both again.
    A proxy that started without axp_xdp_rx_tx refuses that reload, naming the SF."""
    tb = beds("attached")
    assert tb.from_sf
    both = tb.proxy_config(reverse={"net_in": tb.from_sf})
    with _proxy(tb, "kernel", quiet=False, reverse={"net_in": tb.from_sf}) as proxy:
        progs = state.running()[proxy.name]["progs"]
        rx_tx = _xdp_ids(tb, tb.from_sf)[tb.from_sf]
        assert rx_tx in progs
        assert "0 changed" not in proxy.reload(tb.proxy_config())
        tx = _xdp_ids(tb, tb.from_sf)[tb.from_sf]
        assert tx in progs and tx != rx_tx
        res = tb.iperf3(seconds=1, bitrate="20M")
        assert "1 changed" in proxy.reload(both)
        assert _xdp_ids(tb, tb.from_sf)[tb.from_sf] == rx_tx
    assert res.stalls == 0 and res.bits_per_second > 5e6, res.interval_bits
    with _proxy(tb, "kernel", quiet=False) as proxy:
        line = proxy.reload(both).strip()
        assert line.endswith("the running configuration stays)"), line
        assert f"reload refused: sf[0].reverse.net_in: SF fw1.reverse makes {tb.from_sf} both a net_in and a " \
               "from_sf, which needs axp_xdp_rx_tx" in line, line
        assert tb.iperf3(seconds=1, bitrate="20M").stalls == 0


def test_afxdp_refuses_a_reload_that_changes_an_interfaces_roles(beds: Callable[[str], Testbed]) -> None:
    """The afxdp backend opened its sockets for each interface's roles: adding [sf.reverse],
    which gives each interface another role (p_out a net_in, ...), is refused as needing a
    restart, naming a field of the reverse direction, and the proxy goes on."""
    tb = beds("attached")
    with _proxy(tb, "afxdp", reverse=False) as proxy:
        line = proxy.reload(tb.proxy_config(backend="afxdp"))
        assert re.search(r"reload refused: sf\[0\]\.reverse\.\w+: \S+ changes roles", line), line
        assert "restart" in line and state.running()[proxy.name]["sfs"] == ["fw1"]


@pytest.mark.parametrize("backend", ["kernel", "afxdp"])
def test_a_restart_with_keep_cache_keeps_both_directions(beds: Callable[[str], Testbed], backend: str) -> None:
    """run --keep-cache with [sf.reverse]: the next proxy of the name reuses the cache, each
    direction in the slot it had, and TCP flows both ways with each packet's own stack."""
    tb = beds("attached")
    keep.ensure_pinfs()
    proxy = ProxyProcess(tb.ns_proxy, tb.proxy_config(backend=backend), name=f"{tb.prefix}-keep-{backend}",
                         quiet=False, args=("--keep-cache",))
    try:
        proxy.start()
        assert state.running()[proxy.name]["sfs"] == ["fw1", "fw1.reverse"]
        proxy.stop(signal.SIGTERM, keep_config=True)
        assert keep.read(proxy.name)["rows"] == ["fw1", "fw1.reverse"]
        proxy.start()
        proxy.wait_for("reusing the cache")
        assert state.running()[proxy.name]["sfs"] == ["fw1", "fw1.reverse"]
        tb.set_recording(True)
        res = tb.iperf3(seconds=1, bitrate="20M")
        tb.set_recording(False, clear=False)
        st = proxy.stats()
    finally:
        proxy.stop()
        keep.forget(proxy.name)
    assert res.stalls == 0 and res.bits_per_second > 5e6, res.interval_bits
    for check in (tb.check_chain(), tb.check_chain(reverse=True)):
        assert check.compared >= 50 and not check.wrong, check.compared
    _rows_add_up(st)
