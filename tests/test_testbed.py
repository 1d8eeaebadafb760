"""The namespace testbed: it comes up and goes away cleanly, carries plain traffic
without a proxy, needs a proxy for labelled traffic, and its classifier and
decapsulator do what the end-to-end tests rely on."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys

import pytest
from pyroute2 import IPRoute

from afxdp_proxy import bpf
from afxdp_proxy.key import Key, KeyKind, derive_key
from afxdp_proxy.lab import netns, traffic
from afxdp_proxy.lab.frames import ETH_P_MPLS_UC, ether, ipv4_tcp, mpls_frame
from afxdp_proxy.lab.testbed import Testbed, dynamic_stacks, register_cli
from afxdp_proxy.lab.traffic import RawCapture, UdpSink, send_raw_frames, send_rtp
from afxdp_proxy.mpls import make_stack

pytestmark = pytest.mark.root
TOPOLOGIES = ["inline", "attached"]


def _host_links() -> set[str]:
    with IPRoute() as ipr:
        return {str(link.get("ifname")) for link in ipr.get_links()}


def _assert_gone(tb: Testbed) -> None:
    assert netns.list_ns(f"{tb.prefix}-") == []
    assert not tb.state_file.exists()


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_up_and_down_leave_nothing(topology: str, uid: str) -> None:
    before = _host_links()
    tb = Testbed(topology, prefix=f"tbt-{uid}")
    with tb:
        assert netns.list_ns(f"{tb.prefix}-") == sorted(tb.namespaces)
        assert tb.state_file.exists()
        proxy = tb.ns("proxy")
        expected = {"lo", "p_in", "p_out"} | ({"p_sf_tx", "p_sf_rx"} if topology == "attached" else set())
        assert set(proxy.links()) == expected
        assert proxy.mac("p_in") == tb.macs["p_in"] == "02:00:00:00:01:fe"
        assert tb.ns("src").get_features("src0")["tx-checksum-ip-generic"] is False
        assert proxy.get_features("p_in")["rx-gro"] is False
        # the proxy namespace's interfaces are left to the proxy under test
        with netns.enter(tb.ns_proxy):
            for ifname in expected - {"lo"}:
                idx = proxy.ifindex(ifname)
                assert bpf.xdp_prog_id(idx) == 0 and bpf.tc_prog_id(idx, egress=True) == 0
        hooks = tb.status()["programs"]
        assert hooks["src/src_cls/tc"] == tb.prog_ids["tb_tc_classify"]
        assert hooks["src/src_out/tc"] == tb.prog_ids["tb_tc_return"]
        assert hooks["dst/dst0/xdp"] == tb.prog_ids["tb_xdp_decap"]
        if topology == "attached":
            assert hooks["sf/sf_in/xdp"] == tb.prog_ids["tb_xdp_pass"]
        assert "[[sf]]" in tb.proxy_config()
    _assert_gone(tb)
    assert _host_links() == before


def test_failed_up_leaves_nothing(uid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Testbed) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(Testbed, "_load_programs", boom)
    tb = Testbed("attached", prefix=f"tbt-{uid}")
    with pytest.raises(RuntimeError, match="injected"):
        tb.up()
    _assert_gone(tb)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_plain_traffic_flows_without_proxy(topology: str, uid: str) -> None:
    with Testbed(topology, prefix=f"tbt-{uid}") as tb:
        assert tb.ping().ok
        assert tb.ping(tb.dst_ip6).ok
        r = tb.iperf3(3)
        assert r.bits_per_second > 1e7, r
        assert len(r.interval_bits) >= 3 and r.stalls == 0, r.interval_bits
        assert set(tb.depth_histogram()) == {0}
        c = tb.counters()
        # the classifier saw TCP one packet at a time (GSO skbs could not be labelled)
        assert c["tc_seen"] > 10000 and c["tc_gso"] == 0 and c["tc_pushed"] == 0, c
        if topology == "attached":
            # the baseline's forward path really crosses the SF namespace
            sf = tb.ns("sf")
            stats = sf.ipr.get_links(sf.ifindex("sf_in"))[0].get("IFLA_STATS64")
            assert stats["rx_packets"] > 10000


def test_sf_nd_links_learn_their_neighbours(uid: str) -> None:
    """sf_nd: the SF's links have link-local addresses and no permanent neighbours; plain IPv4
    and IPv6 through the SF (no proxy) find them by ARP and neighbour discovery. The other links
    keep their permanent entries. The state file remembers the option."""
    with pytest.raises(ValueError, match="attached"):
        Testbed("inline", sf_nd=True)
    with Testbed("attached", prefix=f"tbt-{uid}", sf_nd=True) as tb:
        neigh = {role: tb.run(role, ["ip", "neigh", "show"]).stdout for role in ("sf", "proxy")}
        assert "PERMANENT" not in neigh["sf"]
        assert "p_sf_tx" not in neigh["proxy"] and "p_sf_rx" not in neigh["proxy"]
        assert "PERMANENT" in neigh["proxy"]  # p_in, p_out
        assert "fe80::" in tb.run("sf", ["ip", "-6", "addr", "show", "dev", "sf_out"]).stdout
        assert tb.ping().ok and tb.ping(tb.dst_ip6).ok
        learned = tb.run("sf", ["ip", "neigh", "show"]).stdout
        assert "fd00:0:0:4::fe" in learned and "10.0.4.254" in learned, learned
        assert json.loads(tb.state_file.read_text())["sf_nd"] is True  # what Testbed.load reads


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_labelled_traffic_needs_the_proxy(topology: str, uid: str) -> None:
    with Testbed(topology, prefix=f"tbt-{uid}", ipv6=False) as tb:
        tb.set_stacks(dynamic_stacks(tb.sf_label))
        assert tb.ping(count=3, timeout=0.3).received == 0
        with UdpSink(tb.ns_dst, 5004) as sink:
            send_rtp(tb.ns_src, tb.dst_ip, 5004, count=20, pps=0)
            assert sink.collect(timeout=0.3, idle=0.3) == []
        c = tb.counters()
        assert c["tc_pushed"] >= 23 and c["tc_push_failed"] == 0
        assert tb.depth_histogram() == {}  # the proxy namespace's kernel dropped every one
        tb.set_stacks([])
        assert tb.ping().ok


def test_classifier_rotates_stacks_per_packet(uid: str) -> None:
    with Testbed("inline", prefix=f"tbt-{uid}", ipv6=False) as tb:
        stacks = [*dynamic_stacks(tb.sf_label), []]  # the empty one sends its packet plain
        tb.set_stacks(stacks)
        tb.set_recording(True)
        n, first = 3 * len(stacks), 100
        with UdpSink(tb.ns_dst, 5004) as sink:
            send_rtp(tb.ns_src, tb.dst_ip, 5004, count=n, pps=0, first_seq=first)
            got = sink.collect(expect=3, timeout=2.0)
        assert len(got) == 3

        sent = {k: v for k, v in tb.sent().items() if Key.from_bytes(k).kind == KeyKind.RTP}
        by_seq = {Key.from_bytes(k).w[0] & 0xFFFF: v for k, v in sent.items()}
        assert sorted(by_seq) == list(range(first, first + n))
        for seq, lses in by_seq.items():
            assert lses == tuple(e.encode() for e in stacks[(seq - first) % len(stacks)])
        # one flow, different labels and TC bits per packet
        assert len({v for v in by_seq.values() if v}) == len(stacks) - 1

        # only the plain ones arrive, recorded with depth 0 under the sender's keys
        received = {k: v for k, v in tb.received().items() if Key.from_bytes(k).kind == KeyKind.RTP}
        assert received == {k: () for k, v in sent.items() if v == ()}
        assert tb.depth_histogram() == {0: 3}
        k = Key.from_bytes(next(iter(received)))
        assert (k.family, k.dport, k.saddr[:4]) == (4, 5004, bytes([10, 0, 1, 1]))

        # the same packet twice, each with the next stack: its key is mixed, and not compared
        assert not tb.sent_mixed()
        twice = ether(ipv4_tcp(tb.src_ip, tb.dst_ip, 1, 5555, 80, 900, 0))
        assert send_raw_frames(tb.ns_src, tb.src_if, [twice, twice]) == 2
        [mixed] = netns.wait_until(tb.sent_mixed, 2, what="the mixed record")
        assert Key.from_bytes(mixed).kind == KeyKind.TCP
        assert mixed not in tb.check_chain().pairs


def test_raw_frames_leave_the_sender_unchanged(uid: str) -> None:
    with Testbed("inline", prefix=f"tbt-{uid}", ipv6=False) as tb:
        l3 = ipv4_tcp(tb.src_ip, tb.dst_ip, 1, 1, 2, 3, 4)
        mac = bytes.fromhex(tb.macs["p_in"].replace(":", ""))
        frames = [
            ether(make_stack([1000])[0].to_bytes()[:3], ETH_P_MPLS_UC, dst=mac),  # truncated stack
            ether(b"".join(e.to_bytes() for e in make_stack([1000] * 20)) + l3, ETH_P_MPLS_UC, dst=mac),
            mpls_frame(make_stack([1000, 2000]), l3, dst=mac),
        ]
        with RawCapture(tb.ns_proxy, "p_in") as cap:
            # src_out is the sender's wire side: no classifier on that way out
            assert send_raw_frames(tb.ns_src, tb.src_wire, frames) == 3
            assert cap.collect(expect=3, timeout=2.0) == frames


def _load_testbed_object() -> bpf.BpfObject:
    obj = bpf.BpfObject(bpf.object_path("testbed"))
    obj.load()
    return obj


def test_programs_push_and_pop_one_whole_stack() -> None:
    """The classifier and the decapsulator on BPF_PROG_TEST_RUN, recording on."""
    from afxdp_proxy._native import ffi, lib

    stack = make_stack([1000, 2000, 3000], tc=[1, 2, 3])
    l3 = ipv4_tcp("10.0.1.1", "10.0.2.1", 7, 1234, 80, 1, 2, b"x" * 20)
    plain = ether(l3)
    with _load_testbed_object() as obj:
        cfg = obj.map("tb_cfg", "uint32_t", "uint32_t")
        stacks = obj.map("tb_stacks", "uint32_t", "struct axp_entry")
        entry = ffi.new("struct axp_entry *")
        for i, e in enumerate(stack):
            entry.labels[i] = int.from_bytes(e.to_bytes(), "little")  # wire order in memory
        entry.depth = len(stack)
        stacks.update(0, entry)
        cfg.update(lib.TB_CFG_N_STACKS, 1)
        cfg.update(lib.TB_CFG_RECORD, 1)

        pushed = bpf.test_run(obj.prog_fd("tb_tc_classify"), plain)
        assert pushed.retval == bpf.TC_ACT_OK
        assert pushed.data == mpls_frame(stack, l3)
        popped = bpf.test_run(obj.prog_fd("tb_xdp_decap"), pushed.data)
        assert (popped.retval, popped.data) == (bpf.XDP_PASS, plain)

        key = derive_key(l3)[1]
        for name in ("tb_sent", "tb_received"):
            rec = obj.map(name, "struct axp_key", "struct axp_entry").lookup(key)
            assert rec is not None and rec.depth == 3, name

        # bad input is passed unchanged and counted, never dropped silently
        no_ip = ether(make_stack([1000])[0].to_bytes() + b"\x00" * 40, ETH_P_MPLS_UC)
        too_deep = ether(b"".join(e.to_bytes() for e in make_stack(list(range(100, 117)))[:-1]) + l3, ETH_P_MPLS_UC)
        arp = ether(b"\x00\x01" + b"\x00" * 26, 0x0806)
        truncated = ether(b"\x00\x3e", ETH_P_MPLS_UC)
        for frame in (no_ip, too_deep, arp, truncated):
            r = bpf.test_run(obj.prog_fd("tb_xdp_decap"), frame)
            assert (r.retval, r.data) == (bpf.XDP_PASS, frame)
        depths = obj.map("tb_depths", "uint32_t", "uint64_t")
        assert sum(depths.lookup(3)) == 1
        assert sum(depths.lookup(lib.TB_HIST_BAD)) == 3
        assert sum(depths.lookup(lib.TB_HIST_NOT_IP)) == 1


def test_state_survives_the_process_and_cli(uid: str, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"tbt-{uid}"
    code = f"from afxdp_proxy.lab.testbed import Testbed; Testbed('inline', prefix='{prefix}', ipv6=False).up()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))

    def cli(*argv: str) -> str:
        args = parser.parse_args(["testbed", *argv, "--prefix", prefix])
        assert args.func(args) == 0
        return capsys.readouterr().out

    try:
        tb = Testbed.load(prefix)
        assert prefix in Testbed.saved()
        # maps reopened by id: the classifier is still configurable from here
        tb.set_stacks(dynamic_stacks())
        assert tb.ping(count=2, timeout=0.3).received == 0
        tb.set_stacks([])
        assert tb.ping(count=2).ok
        # and from the CLI: labelled (no proxy: the proxy namespace's kernel drops them), then plain
        assert "pushes 1000/2001, -, rotating" in cli("stacks", "1000/2001", "-")
        assert tb.ping(count=4, timeout=0.3).received == 2  # every other one plain
        # read back from the classifier's map, as status shows it
        assert [[e.label for e in st] for st in tb.stacks()] == [[1000, 2001], []]
        assert [e.bos for e in tb.stacks()[0]] == [False, True]
        assert "classifier pushes: 1000/2001, -, rotating per packet" in cli("status")
        assert cli("stacks").endswith("pushes nothing: plain IP\n")
        deep = "/".join(str(1000 + i) for i in range(17))
        bad = parser.parse_args(["testbed", "stacks", "1000", deep, "--prefix", prefix])
        assert bad.func(bad) == 2 and "stack 2 has 17 labels; at most 16" in capsys.readouterr().err
        assert tb.ping(count=2).ok
        bad = parser.parse_args(["testbed", "stacks", "1000/x", "--prefix", prefix])
        assert bad.func(bad) == 2 and "1000/x" in capsys.readouterr().err
        # up again with that prefix, or options that do not go together: one line, exit 2
        for argv in (["up", "--prefix", prefix], ["up", "--topology", "inline", "--sf-nd", "--prefix", f"{prefix}n"]):
            again = parser.parse_args(["testbed", *argv])
            assert again.func(again) == 2
            err = capsys.readouterr().err
            assert err.startswith("afxdp-proxy: error: ") and err.count("\n") == 1, err
        assert "src/src_cls/tc: program" in cli("status")
        assert 'topology = "inline"' in cli("config")
        assert "sf_mac" not in cli("config")
        assert "static_stack = [2000, 3000]" in cli("config", "--backend", "static")  # a config run takes
        assert 'key = "meta"' in cli("config", "--key", "meta")  # inline: meta keys work here
        # what this testbed cannot run (afxdp wants it attached): one line, exit 2, no traceback
        afxdp = parser.parse_args(["testbed", "config", "--backend", "afxdp", "--prefix", prefix])
        assert afxdp.func(afxdp) == 2
        err = capsys.readouterr().err
        assert err.startswith("afxdp-proxy: error: --backend afxdp: ") and err.count("\n") == 1, err
    finally:
        cli("down")
    _assert_gone(tb)


# ---- both directions and real SFs --------------------------------------------------------


def _cli_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    return parser


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_bidirectional_firewall_testbed(topology: str, uid: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`testbed up --sf firewall --bidirectional`: the receiver's replies are classified and
    recorded at the sender by programs of their own, plain traffic passes the firewall both
    ways, new flows only from the sender; labelled replies need a proxy."""
    prefix = f"tbt-{uid}"
    parser = _cli_parser()

    def cli(*argv: str) -> str:
        args = parser.parse_args(["testbed", *argv, "--prefix", prefix])
        assert args.func(args) == 0
        return capsys.readouterr().out

    assert "SF firewall, both directions classified" in cli("up", "--topology", topology, "--sf", "firewall",
                                                             "--bidirectional")
    try:
        tb = Testbed.load(prefix)
        assert (tb.sf, tb.bidirectional, tb.reverse_label) == ("firewall", True, tb.sf_label + 1)
        hooks = tb.status()["programs"]
        assert hooks["dst/dst_cls/tc"] == tb.prog_ids["reverse.tb_tc_classify"]
        assert hooks["dst/dst_out/tc"] == tb.prog_ids["reverse.tb_tc_return"]
        assert hooks["dst/dst_out/xdp"] == tb.prog_ids["tb_xdp_decap"]
        assert hooks["src/src_out/xdp"] == tb.prog_ids["reverse.tb_xdp_decap"]
        if topology == "attached":
            assert hooks["sf/sf_out/xdp"] == tb.prog_ids["reverse.tb_xdp_pass"]
        config = cli("config")
        assert f"[sf.reverse]\nlabel = {tb.reverse_label}\n" in config
        # plain IP through the firewall both ways; a new flow only from the sender's side
        assert tb.ping().ok and tb.ping(tb.dst_ip6).ok
        assert traffic.tcp_echo(tb.ns_src, tb.ns_dst, tb.dst_ip).ok
        assert traffic.tcp_echo(tb.ns_src, tb.ns_dst, tb.dst_ip6).ok
        assert not traffic.tcp_echo(tb.ns_dst, tb.ns_src, tb.src_ip, timeout=0.5).connected
        assert tb.sf_dropped() >= 1
        # the replies, recorded where they arrive (at the sender), plain
        tb.set_recording(True)
        assert tb.ping(count=3).ok
        back = tb.check_chain(family=4, reverse=True)
        assert back.compared >= 3 and back.arrived == {()} and not back.wrong
        assert tb.depth_histogram(reverse=True)[0] >= 3
        # labelled replies die in the proxy namespace without a proxy (no MPLS routing)
        tb.set_stacks(dynamic_stacks(tb.reverse_label), reverse=True)
        assert tb.ping(count=2, timeout=0.3).received == 0
        assert tb.counters(reverse=True)["tc_pushed"] >= 2 and tb.counters()["tc_pushed"] == 0
    finally:
        cli("down")
    _assert_gone(tb)


def test_a_stateful_firewall_stalls_tcp_when_replies_bypass_it(uid: str) -> None:
    """The problem a proxy without the reverse direction leaves (attached, replies routed
    around the SF): the connection opens, and then the firewall, which saw only the SYN,
    drops the flow's next packets as invalid."""
    with Testbed("attached", prefix=f"tbt-{uid}", ipv6=False, sf="firewall") as tb:
        ex = traffic.tcp_echo(tb.ns_src, tb.ns_dst, tb.dst_ip)
        assert ex.connected and not ex.echoed, ex
        assert tb.sf_dropped() >= 1


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_nat_sf_masquerades_both_ways(topology: str, uid: str) -> None:
    """The masquerading NAT: the receiver sees the SF's address (recorded keys), replies are
    turned back to the sender's."""
    with Testbed(topology, prefix=f"tbt-{uid}", sf="nat", bidirectional=True) as tb:
        assert traffic.tcp_echo(tb.ns_src, tb.ns_dst, tb.dst_ip).ok
        assert traffic.tcp_echo(tb.ns_src, tb.ns_dst, tb.dst_ip6).ok
        tb.set_recording(True)
        assert tb.ping(count=3).ok
        nat4 = "10.0.4.1" if topology == "attached" else "10.0.2.254"  # sf_out's / p_out's address
        there, back = ([k for k in map(Key.from_bytes, tb.received(reverse=rev))
                        if k.kind == KeyKind.ICMP and k.family == 4] for rev in (False, True))
        assert len(there) >= 3 and {k.saddr[:4] for k in there} == {socket.inet_aton(nat4)}
        assert len(back) >= 3 and {k.daddr[:4] for k in back} == {socket.inet_aton(tb.src_ip)}
        assert "masquerade" in tb.status()["sf_ruleset"]
