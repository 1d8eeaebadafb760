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
