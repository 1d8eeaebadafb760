"""The bench's live-frames generator (bpf/lab/gen.bpf.c) on single test runs: every frame gets
the header template, a fresh sequence number, and with several flows a cycling UDP source port."""

from __future__ import annotations

import struct

import pytest
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from afxdp_proxy import bpf
from afxdp_proxy.lab.bench.gen import Generator, udp_frame
from afxdp_proxy.mpls import make_stack

pytestmark = [pytest.mark.root]

MACS = ("02:00:00:00:00:01", "02:00:00:00:00:02")


def _frames(flows: int, n: int) -> tuple[bytes, list[bytes]]:
    """The template and n frames the generator made of it (plain test runs, XDP_TX each)."""
    frame, seq_off = udp_frame(make_stack([1000, 2000, 3000]), 64, *MACS, "10.0.1.1", "10.0.2.1", sport=40000)
    with Generator() as gen:
        gen._load_frame(frame, seq_off, flows)
        gen.seq.update(0, 0)
        out = []
        for _ in range(n):
            r = bpf.test_run(gen.fd, bytes(len(frame)))  # the template must fill a blank frame
            assert r.retval == 3, r  # XDP_TX
            out.append(r.data)
    return frame, out


@pytest.mark.parametrize("flows", [1, 4])
def test_each_frame_has_a_fresh_sequence_number_and_its_flow(flows: int) -> None:
    template, frames = _frames(flows, 9)
    for i, f in enumerate(frames):
        udp = Ether(f)[MPLS][MPLS][MPLS][IP][UDP]
        assert udp.sport == 40000 + i % flows and udp.dport == 9
        assert struct.unpack("!Q", bytes(udp.payload)[4:12])[0] == i
        # nothing else differs from the template: not the IP header (its checksum holds), not the stack
        assert Ether(f)[IP].chksum == Ether(template)[IP].chksum
        same = bytes(Ether(f)[IP])[:20] == bytes(Ether(template)[IP])[:20] and f[:26] == template[:26]
        assert same


def test_flows_out_of_range_are_refused() -> None:
    frame, seq_off = udp_frame([], 64, *MACS, "10.0.1.1", "10.0.2.1")
    with Generator() as gen, pytest.raises(ValueError, match=r"flows must be 1\.\.65535"):
        gen._load_frame(frame, seq_off, 0)


def test_the_receiver_counts_the_generators_frames_and_nothing_else() -> None:
    """bench's packet rates count tb_gen_depths: a frame the generator made (plain, under a
    stack, behind a VLAN tag) is counted at its depth; other traffic arriving meanwhile is not,
    not even UDP to the same port in a shape the generator never sends (CI once saw a TCP test's
    late segments make a packet rate's 'received' exceed its 'sent')."""
    from afxdp_proxy._native import lib
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q

    stack = make_stack([1000, 2000, 3000])
    frame, _ = udp_frame(stack, 64, *MACS, "10.0.1.1", "10.0.2.1")
    plain, _ = udp_frame([], 64, *MACS, "10.0.1.1", "10.0.2.1")
    tagged = bytes(Ether(frame[:12] + b"\x81\x00\x00\x05" + frame[12:]))
    assert Ether(tagged)[Dot1Q].vlan == 5
    eth = Ether(src=MACS[0], dst=MACS[1])
    others = [
        bytes(eth / IP(src="10.0.1.1", dst="10.0.2.1") / TCP(sport=40000, dport=lib.GEN_UDP_DPORT)),
        bytes(eth / IP(src="10.0.1.1", dst="10.0.2.1") / UDP(sport=40000, dport=5201) / bytes(30)),
        bytes(eth / IP(src="10.0.1.1", dst="10.0.2.1", options=b"\x01\x01\x01\x00") /
              UDP(dport=lib.GEN_UDP_DPORT) / bytes(30)),  # options: never the generator's
        bytes(eth / IP(src="10.0.1.1", dst="10.0.2.1", frag=8) / bytes(30)),  # a later fragment
        bytes(eth / IPv6() / UDP(dport=lib.GEN_UDP_DPORT) / bytes(30)),
        bytes(eth / MPLS(label=1000, s=1) / IP(src="10.0.1.1", dst="10.0.2.1") / TCP(dport=9)),
        frame[:40],  # cut short before the UDP header
    ]
    with bpf.BpfObject(bpf.object_path("testbed")) as obj:
        obj.load()
        decap = obj.prog_fd("tb_xdp_decap")
        for f in [frame, frame, plain, tagged, *others]:
            assert bpf.test_run(decap, f).retval == bpf.XDP_PASS
        gen = obj.map("tb_gen_depths", "uint32_t", "uint64_t")
        counted = {d: n for d in range(lib.TB_GEN_SLOTS) if (n := sum(gen.lookup(d)))}
        every = obj.map("tb_depths", "uint32_t", "uint64_t")
        seen = sum(sum(every.lookup(d)) for d in range(lib.TB_HIST_NOT_IP))
    assert counted == {3: 3, 0: 1}
    assert seen == 4 + len(others)  # every frame counted among all the receiver saw
