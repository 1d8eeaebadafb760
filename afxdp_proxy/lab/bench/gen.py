"""The live-frames packet generator (bpf/lab/gen.bpf.c) driven from Python.

``BPF_PROG_RUN`` with ``BPF_F_TEST_XDP_LIVE_FRAMES`` runs ``gen_xdp_tx`` on
frames from a kernel page pool; each returns ``XDP_TX`` and so leaves by the
interface given as the run's ``ingress_ifindex``, which the kernel looks up in
the calling thread's network namespace: runs happen inside the sender's
namespace. A veth hands such frames to its peer only while the peer runs NAPI
(an XDP program there); the receiver counts what arrives.

The frames are UDP over IPv4 with an optional SR-MPLS stack in front; their
size is given without the stack (64 B is the bare Ethernet frame a plain-IP
baseline would send, the stack comes on top). A 64-bit sequence number in the
payload makes every frame's cache key distinct. Several flows (``flows``) cycle the UDP
source port; generators on several CPUs (``cpus``) reach several of a veth's queues,
since a veth hands an XDP frame to its peer's queue of the sending CPU
(drivers/net/veth.c, veth_select_rxq).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from afxdp_proxy import bpf
from afxdp_proxy._native import ffi, lib
from afxdp_proxy.lab import netns
from afxdp_proxy.lab.frames import _csum, mpls_frame
from afxdp_proxy.mpls import Lse

ETH_HLEN, IP_HLEN, UDP_HLEN = 14, 20, 8
SEQ_PAYLOAD_OFF = 4  # payload byte 0 stays 0: never taken for an RTP header (version 2)
DISCARD_PORT = lib.GEN_UDP_DPORT  # the receiver counts frames to it as the generator's
MIN_FRAME = ETH_HLEN + IP_HLEN + UDP_HLEN + SEQ_PAYLOAD_OFF + 8  # room for the sequence number


def udp_frame(stack: Sequence[Lse], size: int, src_mac: str, dst_mac: str, src_ip: str, dst_ip: str,
              sport: int = 40000, dport: int = DISCARD_PORT) -> tuple[bytes, int]:
    """A frame of `size` bytes before the stack, and the offset of its sequence number."""
    if size < MIN_FRAME:
        raise ValueError(f"frames must be at least {MIN_FRAME} bytes, not {size}")
    payload = bytes(size - ETH_HLEN - IP_HLEN - UDP_HLEN)
    udp = struct.pack("!HHHH", sport, dport, UDP_HLEN + len(payload), 0) + payload  # no UDP checksum
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, IP_HLEN + len(udp), 0, 0x4000, 64, 17, 0,
                      socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    frame = mpls_frame(list(stack), hdr + udp, bytes.fromhex(dst_mac.replace(":", "")),
                       bytes.fromhex(src_mac.replace(":", "")))
    return frame, ETH_HLEN + 4 * len(stack) + IP_HLEN + UDP_HLEN + SEQ_PAYLOAD_OFF


def _ctx(frame: bytes, ifindex: int) -> bytes:
    """The run's struct xdp_md (data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    egress_ifindex): the frame leaves by ingress_ifindex."""
    return struct.pack("=6I", 0, len(frame), 0, ifindex, 0, 0)


@dataclass
class GenRun:
    frames: int  # frames the generator produced
    seconds: float  # wall time of the runs, set-up and tear-down included
    window_received: int = 0  # counted at the receiver inside the runs' steady state
    window_seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Frames per second at the receiver in steady state (0 when never sampled)."""
        return self.window_received / self.window_seconds if self.window_seconds > 0 else 0.0


class _Sampler(threading.Thread):
    """Reads a counter every `period` s while a run goes on: the rate between samples taken
    strictly inside one BPF_PROG_RUN call leaves out its set-up and tear-down (tens of ms
    of mostly idle wait here, which would otherwise count as time without packets)."""

    def __init__(self, count: Callable[[], int], period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.count, self.period = count, period
        self.points: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.points.append((time.perf_counter(), self.count()))
            self.stop.wait(self.period)


class Generator:
    """gen.bpf.o loaded once; send() runs it inside a namespace out of one interface."""

    def __init__(self) -> None:
        self.obj = bpf.BpfObject(bpf.object_path("gen"))
        try:
            self.obj.load()
            self.cfg = self.obj.map("gen_cfg", "uint32_t", "uint32_t")
            self.tmpl = self.obj.map("gen_tmpl", "uint32_t", f"uint8_t[{lib.GEN_TMPL_MAX}]")
            self.seq = self.obj.map("gen_seq", "uint32_t", "uint64_t")
            self.stats = self.obj.map("gen_stats", "uint32_t", "uint64_t")
            self.fd = self.obj.prog_fd("gen_xdp_tx")
            self._rate = 200_000.0  # frames/s, a first guess; each run refines it
        except BaseException:
            self.obj.close()
            raise

    def close(self) -> None:
        self.obj.close()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def counts(self) -> dict[str, int]:
        return {"sent": sum(self.stats.lookup(lib.GEN_STAT_SENT) or [0]),
                "failed": sum(self.stats.lookup(lib.GEN_STAT_FAILED) or [0])}

    def _load_frame(self, frame: bytes, seq_off: int, flows: int = 1) -> None:
        # the headers up to the sequence number, rounded up to whole words (the program copies words)
        n = -(-(seq_off + 8) // 8) * 8
        if n > min(len(frame), lib.GEN_TMPL_MAX):
            raise ValueError(f"headers of {seq_off + 8} bytes do not fit the template or the frame")
        if not 1 <= flows <= 0xFFFF:
            raise ValueError(f"flows must be 1..65535, not {flows}")
        self.tmpl.update(0, ffi.new(f"uint8_t[{lib.GEN_TMPL_MAX}]", frame[:n]))
        self.cfg.update(lib.GEN_CFG_SEQ_OFF, seq_off)
        sport_off = seq_off - SEQ_PAYLOAD_OFF - UDP_HLEN  # udp_frame's layout
        self.cfg.update(lib.GEN_CFG_SPORT_OFF, sport_off)
        self.cfg.update(lib.GEN_CFG_SPORT, int.from_bytes(frame[sport_off:sport_off + 2], "big"))
        self.cfg.update(lib.GEN_CFG_FLOWS, flows)
        self.cfg.update(lib.GEN_CFG_TMPL_LEN, n)

    def send_spread(self, ns: str, ifname: str, frame: bytes, seq_off: int, seconds: float, cpus: Sequence[int],
                    count: Callable[[], int], flows: int = 1, batch: int = 64) -> GenRun:
        """Send copies of frame out of ifname in ns from one thread per CPU in cpus at once,
        for `seconds`, cycling `flows` UDP source ports; the steady-state rate is sampled
        from count (the receiver's total) between the threads' first and last chunks."""
        self._load_frame(frame, seq_off, flows)
        stop = threading.Event()
        sent: list[int] = []
        errors: list[BaseException] = []
        chunk = 20_000  # about 10-50 ms a call here: the threads notice stop soon

        def blast(cpu: int) -> None:
            try:
                os.sched_setaffinity(0, {cpu})  # this thread only
                with netns.enter(ns):
                    ifindex = socket.if_nametoindex(ifname)
                    ctx = _ctx(frame, ifindex)
                    n = 0
                    while not stop.is_set():
                        bpf.test_run(self.fd, frame, repeat=chunk, ctx=ctx, flags=bpf.BPF_F_TEST_XDP_LIVE_FRAMES,
                                     batch_size=batch, out_size=0)
                        n += chunk
                    sent.append(n)
            except BaseException as e:  # handed to the caller
                errors.append(e)

        threads = [threading.Thread(target=blast, args=(c,), name=f"axp-gen-cpu{c}", daemon=True) for c in cpus]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(min(0.2, seconds / 4))  # every thread under way
        start = (time.perf_counter(), count())
        time.sleep(seconds)
        end = (time.perf_counter(), count())
        stop.set()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return GenRun(sum(sent), time.perf_counter() - t0, end[1] - start[1], end[0] - start[0])

    def send(self, ns: str, ifname: str, frame: bytes, seq_off: int, seconds: float,
             count: Callable[[], int] | None = None, batch: int = 64, cpu: int | None = 0) -> GenRun:
        """Send copies of frame out of ifname in ns for about `seconds`.

        One BPF_PROG_RUN call sends a chunk of frames and blocks until done; chunks are
        sized from the rate seen so far to last about `seconds`, and more follow while
        the steady-state window is short. With `count` (the receiver's total), a thread
        samples it (from another CPU than `cpu`) to measure the steady-state rate.

        cpu pins the calling thread while it runs: the frames' whole path runs in
        softirq on the CPU that generates them (veth schedules its peer's NAPI locally).
        """
        self._load_frame(frame, seq_off)
        saved = os.sched_getaffinity(0)
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        run = GenRun(0, 0.0)
        try:
            with netns.enter(ns):
                ifindex = socket.if_nametoindex(ifname)
                ctx = _ctx(frame, ifindex)
                t0, calls = time.perf_counter(), 0
                period = max(0.01, min(0.05, seconds / 10))
                while calls < 5 and (run.seconds < seconds or (count and run.window_seconds < seconds / 2)):
                    calls += 1
                    chunk = max(1_000, int(self._rate * max(seconds - run.seconds, seconds / 2)))
                    sampler = _Sampler(count, period) if count else None
                    if sampler:
                        sampler.start()
                    t1 = time.perf_counter()
                    bpf.test_run(self.fd, frame, repeat=chunk, ctx=ctx, flags=bpf.BPF_F_TEST_XDP_LIVE_FRAMES,
                                 batch_size=batch, out_size=0)
                    took = time.perf_counter() - t1
                    run.frames += chunk
                    run.seconds = time.perf_counter() - t0
                    self._rate = chunk / took
                    if sampler:
                        sampler.stop.set()
                        sampler.join()
                        inside = sampler.points[1:-1]  # the first and last may straddle set-up/tear-down
                        if len(inside) >= 2:
                            run.window_received += inside[-1][1] - inside[0][1]
                            run.window_seconds += inside[-1][0] - inside[0][0]
                            self._rate = max(self._rate, (inside[-1][1] - inside[0][1]) /
                                             (inside[-1][0] - inside[0][0]))
        finally:
            os.sched_setaffinity(0, saved)
        return run
