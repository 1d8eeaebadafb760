"""Minimal frame builders for benchmarks and generators (tests use scapy instead)."""

from __future__ import annotations

import socket
import struct

from afxdp_proxy.mpls import Lse, stack_bytes

ETH_P_IP, ETH_P_MPLS_UC = 0x0800, 0x8847
MAC_A, MAC_B = bytes.fromhex("020000000a01"), bytes.fromhex("020000000a02")


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_tcp(src: str, dst: str, ip_id: int, sport: int, dport: int, seq: int, ack: int,
             payload: bytes = b"", ttl: int = 64) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, 0x10, 65535, 0, 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ip_id, 0x4000, ttl, 6, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + tcp


def ether(l3: bytes, ethertype: int = ETH_P_IP, dst: bytes = MAC_B, src: bytes = MAC_A) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + l3


def mpls_frame(stack: list[Lse], l3: bytes, dst: bytes = MAC_B, src: bytes = MAC_A) -> bytes:
    if not stack:
        return ether(l3, ETH_P_IP, dst, src)
    return ether(stack_bytes(stack) + l3, ETH_P_MPLS_UC, dst, src)


def pad_to(frame: bytes, size: int) -> bytes:
    """Grow a frame to size bytes (payload of zeros), for fixed-size packet-rate tests."""
    return frame + b"\0" * max(0, size - len(frame))
