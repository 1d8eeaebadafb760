"""An SF that holds every packet for a while: what is inside an SF while the proxy restarts.

This kernel has no netem (its qdiscs: pfifo, htb, tbf), so the delay is made in user space,
on raw sockets: every IP frame read on the SF's input (an AF_PACKET socket on sf_in) is kept
for `delay` seconds, then sent out of the SF's output (sf_out) unchanged but for its MACs,
rewritten as a router would (to the proxy's from_sf, from sf_out). The SF namespace's kernel
must not forward its own copy meanwhile: :func:`running` turns forwarding off there for as
long as the SF runs (the copy is then dropped, not for this host) and back on afterwards.

Run it in the SF namespace of an attached testbed::

    python -m afxdp_proxy.lab.delay_sf --in sf_in --out sf_out --delay 1.5 \\
        --dst-mac 02:00:00:00:04:fe --src-mac 02:00:00:00:04:01

It prints ``ready`` once its sockets are bound, and what it held and sent when it stops
(SIGTERM or SIGINT).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

ETH_P_ALL = 0x0003
IP_TYPES = (b"\x08\x00", b"\x86\xdd")  # IPv4, IPv6: everything else (ARP, ...) is not the SF's
RCVBUF = 8 << 20  # a burst of a few thousand frames waits here while the loop sends others


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def serve(in_if: str, out_if: str, delay: float, dst_mac: bytes, src_mac: bytes,
          stopped: Any = lambda: False) -> tuple[int, int]:
    """Hold and forward until stopped() is true. Returns (frames held, frames sent)."""
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        rx.bind((in_if, 0))
        tx.bind((out_if, 0))
        rx.setblocking(False)
        poller = select.poll()
        poller.register(rx, select.POLLIN)
        held: collections.deque[tuple[float, bytes]] = collections.deque()  # constant delay: FIFO
        n_held = n_sent = 0
        print("ready", flush=True)
        while not stopped():
            now = time.monotonic()
            while held and held[0][0] <= now:
                frame = held.popleft()[1]
                tx.send(dst_mac + src_mac + frame[12:])
                n_sent += 1
            timeout = 200 if not held else max(0, int((held[0][0] - now) * 1000))
            if not poller.poll(min(timeout, 200)):
                continue
            while True:
                try:
                    frame, addr = rx.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING or frame[12:14] not in IP_TYPES:
                    continue
                held.append((time.monotonic() + delay, frame))
                n_held += 1
        return n_held, n_sent
    finally:
        rx.close()
        tx.close()


@contextlib.contextmanager
def running(tb: Any, delay: float) -> Iterator[subprocess.Popen]:
    """The delay SF in an attached testbed's SF namespace, its kernel forwarding off meanwhile."""
    from afxdp_proxy.lab import netns, testbed

    assert tb.ns_sf, "the delay SF needs the attached topology"
    keys = ["net.ipv4.ip_forward"] + (["net.ipv6.conf.all.forwarding"] if tb.ipv6 else [])
    before = {k: netns.sysctl_get(tb.ns_sf, k) for k in keys}
    for k in keys:
        netns.sysctl(tb.ns_sf, k, 0)
    argv = [sys.executable, "-m", "afxdp_proxy.lab.delay_sf", "--in", tb.sf_in, "--out", tb.sf_out,
            "--delay", str(delay), "--dst-mac", testbed.P_SF_RX.mac, "--src-mac", testbed.SF_OUT.mac]
    proc = tb.popen("sf", argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the delay SF did not start: {line}{proc.stdout.read() if proc.poll() else ''}")
        yield proc
    finally:
        netns.stop(proc)
        for k, v in before.items():
            netns.sysctl(tb.ns_sf, k, v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m afxdp_proxy.lab.delay_sf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--in", dest="in_if", required=True, help="interface the SF reads from (sf_in)")
    p.add_argument("--out", dest="out_if", required=True, help="interface the SF sends out of (sf_out)")
    p.add_argument("--delay", type=float, required=True, metavar="S", help="seconds each frame is held")
    p.add_argument("--dst-mac", required=True, help="destination MAC of what leaves (the proxy's from_sf)")
    p.add_argument("--src-mac", required=True, help="source MAC of what leaves (the SF's output)")
    args = p.parse_args(argv)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    held, sent = serve(args.in_if, args.out_if, args.delay, _mac(args.dst_mac), _mac(args.src_mac), lambda: stop)
    print(f"held {held}, sent {sent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
