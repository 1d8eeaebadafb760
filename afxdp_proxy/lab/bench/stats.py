"""Small statistics for noisy samples: median with the spread, ratios side by side."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    median: float
    lo: float
    hi: float
    n: int

    def fmt(self, unit: str = "", digits: int = 1) -> str:
        return f"{self.median:.{digits}f}{unit} [{self.lo:.{digits}f}-{self.hi:.{digits}f}] n={self.n}"


def summarize(samples: list[float], spread: tuple[float, float] = (0.0, 1.0)) -> Summary:
    """Median and a spread: min-max by default, or the given quantiles (e.g. 0.1, 0.9)."""
    if not samples:
        raise ValueError("no samples")
    s = sorted(samples)

    def q(p: float) -> float:
        return s[min(len(s) - 1, max(0, round(p * (len(s) - 1))))]

    return Summary(statistics.median(s), q(spread[0]), q(spread[1]), len(s))
