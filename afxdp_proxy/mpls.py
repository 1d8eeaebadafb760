"""SR-MPLS label stack entries (RFC 3032): label(20) | TC(3) | S(1) | TTL(8)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

LABEL_MAX = (1 << 20) - 1
# 0-15 are reserved special-purpose labels; an SF label must be a plain one
LABEL_MIN_UNRESERVED = 16


@dataclass(frozen=True)
class Lse:
    label: int
    tc: int = 0
    bos: bool = False
    ttl: int = 64

    def __post_init__(self) -> None:
        if not 0 <= self.label <= LABEL_MAX:
            raise ValueError(f"label {self.label} is outside 0..{LABEL_MAX}")
        if not 0 <= self.tc <= 7 or not 0 <= self.ttl <= 255:
            raise ValueError(f"tc {self.tc} / ttl {self.ttl} out of range")

    def encode(self) -> int:
        return (self.label << 12) | (self.tc << 9) | (int(self.bos) << 8) | self.ttl

    @classmethod
    def decode(cls, word: int) -> Lse:
        return cls(word >> 12, (word >> 9) & 7, bool(word & 0x100), word & 0xFF)

    def to_bytes(self) -> bytes:
        return self.encode().to_bytes(4, "big")


def make_stack(labels: list[int], tc: list[int] | None = None, ttl: int = 64) -> list[Lse]:
    """A well-formed stack from label values: S set on the last entry only."""
    tcs = tc or [0] * len(labels)
    return [Lse(lab, t, i == len(labels) - 1, ttl) for i, (lab, t) in enumerate(zip(labels, tcs, strict=True))]


def stack_bytes(stack: list[Lse]) -> bytes:
    return b"".join(e.to_bytes() for e in stack)


def parse_stack(data: bytes) -> list[Lse]:
    """Decode label stack entries up to and including the bottom of stack."""
    out = []
    for off in range(0, len(data) - 3, 4):
        e = Lse.decode(int.from_bytes(data[off : off + 4], "big"))
        out.append(e)
        if e.bos:
            break
    return out


def tx_stack(stack: Sequence[Lse], ttl_model: str = "uniform") -> list[Lse]:
    """What the caching proxy pushes at TX for a packet that arrived with `stack` (its SF label
    first, explicit null and ELI + EL above it already removed): the entries below the SF label,
    label, TC and S as they came; the TTL of the one exposed on top is the SF label's minus one
    under the uniform model (RFC 3443 §3.1), its own under pipe (§3.3)."""
    rest = list(stack[1:])
    if rest and ttl_model == "uniform":
        rest[0] = replace(rest[0], ttl=max(stack[0].ttl - 1, 0))
    return rest


def tx_words(words: Sequence[int], ttl_model: str = "uniform") -> tuple[int, ...]:
    """tx_stack on label stack entries as ints (Lse.encode())."""
    return tuple(e.encode() for e in tx_stack([Lse.decode(w) for w in words], ttl_model))
