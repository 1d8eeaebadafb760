"""Traffic inside namespaces: iperf3 (TCP/UDP throughput, retransmits, stalls),
ping without the ping binary, a one-shot TCP echo (opens? stalls?), an RTP-like
UDP sender with a sink, and raw Ethernet frames for bad-input tests.

Every function takes a namespace *name* (``tb.ns_src``; None means the current
one), so it works with a :class:`~afxdp_proxy.lab.testbed.Testbed` or with any
namespace. Sockets are created inside the namespace and then used from the
calling thread: a socket stays in the namespace it was created in.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import struct
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from afxdp_proxy.lab import netns

IPERF_PORT = 5201


# ---------------------------------------------------------------------- iperf3


@dataclass
class IperfResult:
    """One iperf3 run. Throughput is the receiver's view; intervals too, when the
    server's report came back (``--get-server-output``), else the sender's."""

    bits_per_second: float
    sent_bits_per_second: float
    retransmits: int | None  # TCP only
    interval_bits: list[float]  # bits per interval, ~1 s each
    interval_seconds: list[float]
    lost_packets: int | None = None  # UDP only
    packets: int | None = None  # UDP only
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def stalls(self) -> int:
        """Intervals of a second or more with zero bytes: the connection stood still."""
        return sum(1 for b, s in zip(self.interval_bits, self.interval_seconds, strict=True) if b == 0 and s >= 0.9)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IperfResult:
        if "error" in data and not data.get("end"):
            raise RuntimeError(f"iperf3: {data['error']}")
        end = data.get("end", {})
        udp = data.get("start", {}).get("test_start", {}).get("protocol") == "UDP"
        sent = end.get("sum_sent") or end.get("sum") or {}
        recv = end.get("sum_received") or end.get("sum") or {}
        server = data.get("server_output_json") or {}
        intervals = server.get("intervals") or data.get("intervals") or []
        sums = [iv.get("sum", {}) for iv in intervals]
        return cls(
            bits_per_second=float(recv.get("bits_per_second", 0.0)),
            sent_bits_per_second=float(sent.get("bits_per_second", 0.0)),
            retransmits=None if udp else int(sent.get("retransmits", 0)),
            interval_bits=[8.0 * s.get("bytes", 0) for s in sums],
            interval_seconds=[float(s.get("seconds", 0.0)) for s in sums],
            lost_packets=int(end["sum"].get("lost_packets", 0)) if udp and "sum" in end else None,
            packets=int(end["sum"].get("packets", 0)) if udp and "sum" in end else None,
            raw=data,
        )


class IperfServer:
    """``iperf3 -s`` inside a namespace, ready (listening) when start() returns."""

    def __init__(self, ns: str | None, port: int = IPERF_PORT, one_off: bool = True) -> None:
        self.ns, self.port, self.one_off = ns, port, one_off
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 5.0) -> IperfServer:
        argv = ["iperf3", "-s", "-p", str(self.port)] + (["-1"] if self.one_off else [])
        self.proc = netns.popen(self.ns, argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"iperf3 server exited ({proc.returncode}): {err.strip()}")
            return netns.listening(proc.pid, self.port)

        netns.wait_until(ready, timeout, what=f"iperf3 server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            netns.stop(self.proc)
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None

    def __enter__(self) -> IperfServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def iperf3_client(
    ns: str | None,
    server: str,
    seconds: float = 3.0,
    port: int = IPERF_PORT,
    udp: bool = False,
    bitrate: str | None = None,
    length: int | None = None,
    parallel: int = 1,
    reverse: bool = False,
    affinity: tuple[int, int] | None = None,
    extra: Sequence[str] = (),
    timeout: float | None = None,
) -> IperfResult:
    """Run an iperf3 client in ns against server; parse its JSON report.

    affinity = (client CPU, server CPU) pins both ends (iperf3 -A). On veth
    paths, a sender whose packets leave from two CPUs (process context and
    ACK-driven softirq) lands them in two per-CPU backlogs, which reorders
    them: hundreds of spurious retransmits a second. (0, 0) avoids that.
    """
    argv = ["iperf3", "-c", server, "-p", str(port), "-t", str(seconds), "-J", "--get-server-output"]
    if udp:
        argv.append("-u")
    if bitrate:
        argv += ["-b", bitrate]
    if length:
        argv += ["-l", str(length)]
    if parallel > 1:
        argv += ["-P", str(parallel)]
    if reverse:
        argv.append("-R")
    if affinity is not None:
        argv += ["-A", f"{affinity[0]},{affinity[1]}"]
    argv += list(extra)
    res = netns.run(ns, argv, timeout=timeout or seconds + 15)
    try:
        data = json.loads(res.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(
            f"iperf3 client failed ({res.returncode}): {res.stderr.strip() or res.stdout[:500]}"
        ) from None
    return IperfResult.from_json(data)


def iperf3(
    client_ns: str | None, server_ns: str | None, server_addr: str, seconds: float = 3.0, **kw: Any
) -> IperfResult:
    """One iperf3 test: a one-off server in server_ns, the client in client_ns."""
    port = kw.pop("port", IPERF_PORT)
    with IperfServer(server_ns, port):
        return iperf3_client(client_ns, server_addr, seconds, port=port, **kw)


# ---------------------------------------------------------------------- ping


@dataclass
class PingResult:
    sent: int
    received: int
    rtts_ms: list[float]

    @property
    def ok(self) -> bool:
        return self.sent > 0 and self.received == self.sent


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(
    ns: str | None, dst: str, count: int = 3, interval: float = 0.1, timeout: float = 1.0, size: int = 56
) -> PingResult:
    """ICMP/ICMPv6 echo from inside ns over a raw socket (no ping binary needed).
    Waits up to `timeout` after the last request for outstanding replies."""
    v6 = ":" in dst
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    req_type, rep_type = (128, 129) if v6 else (8, 0)
    ident = (os.getpid() ^ int.from_bytes(os.urandom(2), "big")) & 0xFFFF
    sent_at: dict[int, float] = {}
    rtts: list[float] = []
    with netns.socket_in(ns, fam, socket.SOCK_RAW, proto) as s:
        s.setblocking(False)
        deadline = None
        seq = 0
        next_send = time.monotonic()
        while True:
            now = time.monotonic()
            if seq < count and now >= next_send:
                payload = struct.pack("!d", time.time()).ljust(size, b"\xa5")
                hdr = struct.pack("!BBHHH", req_type, 0, 0, ident, seq)
                # the kernel fills the ICMPv6 checksum (it needs the pseudo-header)
                csum = 0 if v6 else _checksum(hdr + payload)
                s.sendto(struct.pack("!BBHHH", req_type, 0, csum, ident, seq) + payload, (dst, 0))
                sent_at[seq] = now
                seq += 1
                next_send = now + interval
                if seq == count:
                    deadline = now + timeout
            if deadline is not None and (now >= deadline or len(rtts) == count):
                break
            wait = (deadline if seq == count else next_send) - now
            r, _, _ = select.select([s], [], [], max(wait, 0))
            while r:
                try:
                    pkt = s.recv(65535)
                except BlockingIOError:
                    break
                icmp = pkt if v6 else pkt[(pkt[0] & 0x0F) * 4 :]
                if len(icmp) < 8:
                    continue
                t, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
                if t == rep_type and rid == ident and rseq in sent_at:
                    rtts.append((time.monotonic() - sent_at.pop(rseq)) * 1e3)
    return PingResult(count, len(rtts), rtts)


# ---------------------------------------------------------------------- UDP / RTP


def rtp_packet(seq: int, timestamp: int, ssrc: int, payload: bytes = b"", pt: int = 96, marker: bool = False) -> bytes:
    """An RTP v2 header (no CSRC, no extension) and payload."""
    return struct.pack("!BBHII", 0x80, (int(marker) << 7) | pt, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc) + payload


def send_rtp(
    ns: str | None,
    dst: str,
    port: int = 5004,
    count: int = 100,
    pps: float = 1000.0,
    payload_len: int = 160,
    ssrc: int = 0x1234ABCD,
    ts_step: int = 160,
    sport: int = 0,
    first_seq: int = 0,
) -> int:
    """An RTP-like stream: `count` packets at `pps`, sequence +1 and timestamp
    +ts_step each (20 ms of 8 kHz audio by default). Returns packets sent."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with netns.socket_in(ns, fam, socket.SOCK_DGRAM) as s:
        if sport:
            s.bind(("", sport))
        gap = 1.0 / pps if pps > 0 else 0.0
        start = time.monotonic()
        for i in range(count):
            if gap:
                delay = start + i * gap - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            pkt = rtp_packet(first_seq + i, i * ts_step, ssrc, bytes([i & 0xFF]) * payload_len)
            s.sendto(pkt, (dst, port))
    return count


def send_udp(ns: str | None, dst: str, port: int, payloads: Iterable[bytes], sport: int = 0) -> int:
    """Send each payload as one UDP datagram from inside ns."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    n = 0
    with netns.socket_in(ns, fam, socket.SOCK_DGRAM) as s:
        if sport:
            s.bind(("", sport))
        for p in payloads:
            s.sendto(p, (dst, port))
            n += 1
    return n


@dataclass
class TcpExchange:
    """One short TCP conversation: did the connection open, and did the data come back."""

    connected: bool
    echoed: bool
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.connected and self.echoed


def tcp_echo(client_ns: str | None, server_ns: str | None, server_addr: str, port: int = 5301,
             payload: bytes = b"afxdp-proxy", timeout: float = 1.0) -> TcpExchange:
    """Connect from client_ns to an echo listener in server_ns, send payload, wait up to
    `timeout` for it to come back. Tells a path that fails at once (no SYN-ACK: not
    connected) from one that opens and then stalls (connected, nothing echoed), as a
    stateful firewall that saw only half the handshake does; both in about `timeout`."""
    fam = socket.AF_INET6 if ":" in server_addr else socket.AF_INET
    with netns.socket_in(server_ns, fam, socket.SOCK_STREAM) as lsock, \
            netns.socket_in(client_ns, fam, socket.SOCK_STREAM) as csock:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port))
        lsock.listen(1)
        lsock.setblocking(False)
        csock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            csock.connect((server_addr, port))
        except OSError as e:
            return TcpExchange(False, False, str(e))
        csock.sendall(payload)
        got, conn = b"", None
        try:
            while len(got) < len(payload) and time.monotonic() < deadline:
                if conn is None:
                    with contextlib.suppress(BlockingIOError):
                        conn, _ = lsock.accept()
                        conn.setblocking(False)
                if conn is not None:
                    with contextlib.suppress(BlockingIOError):
                        data = conn.recv(4096)
                        if data:
                            conn.sendall(data)
                r, _, _ = select.select([csock], [], [], 0.01)
                if r:
                    got += csock.recv(4096)
        except OSError as e:
            return TcpExchange(True, False, str(e))
        finally:
            if conn is not None:
                conn.close()
        return TcpExchange(True, got == payload)


class _Collector:
    """A bound socket that keeps what it receives until told enough."""

    sock: socket.socket

    def __init__(self) -> None:
        self.items: list[bytes] = []

    def _accept(self) -> bytes | None:
        """One datagram/frame from the socket, or None to ignore it."""
        return self.sock.recv(65535)

    def collect(self, expect: int | None = None, timeout: float = 2.0, idle: float = 0.3) -> list[bytes]:
        """Read until `expect` items arrived, or nothing came for `idle` s, or `timeout`."""
        deadline = time.monotonic() + timeout
        while expect is None or len(self.items) < expect:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([self.sock], [], [], min(left, idle))
            if not r:
                break
            item = self._accept()
            if item is not None:
                self.items.append(item)
        return self.items

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> _Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class UdpSink(_Collector):
    """A UDP socket bound inside ns that collects datagrams (for RTP/UDP tests)."""

    def __init__(self, ns: str | None, port: int = 5004, v6: bool = False) -> None:
        super().__init__()
        fam = socket.AF_INET6 if v6 else socket.AF_INET
        self.sock = netns.socket_in(ns, fam, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("::" if v6 else "0.0.0.0", port))
        self.port = port

    @property
    def packets(self) -> list[bytes]:
        return self.items


# ---------------------------------------------------------------------- raw frames

ETH_P_ALL = 0x0003


def send_raw_frames(ns: str | None, ifname: str, frames: Iterable[bytes]) -> int:
    """Transmit whole Ethernet frames (from the destination MAC on) out of ifname
    in ns through an AF_PACKET socket: for malformed and hand-made input."""
    n = 0
    with netns.socket_in(ns, socket.AF_PACKET, socket.SOCK_RAW, 0) as s:
        s.bind((ifname, 0))
        for f in frames:
            s.send(f)
            n += 1
    return n


class RawCapture(_Collector):
    """An AF_PACKET socket on ifname in ns that keeps received frames (TX too with outgoing=True)."""

    def __init__(self, ns: str | None, ifname: str, outgoing: bool = False) -> None:
        super().__init__()
        self.sock = netns.socket_in(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, 0))
        self.outgoing = outgoing

    @property
    def frames(self) -> list[bytes]:
        return self.items

    def _accept(self) -> bytes | None:
        data, addr = self.sock.recvfrom(65535)
        if addr[2] == socket.PACKET_OUTGOING and not self.outgoing:
            return None
        return data
