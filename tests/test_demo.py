"""`afxdp-proxy demo`, which `make demo` runs: one of the README's two first commands. The
real thing, short: a testbed, iperf3 through no proxy, the caching proxy and the static one,
the receiver's check of every recorded packet's stack, and nothing left behind."""

from __future__ import annotations

import io

import pytest

from afxdp_proxy.lab import netns
from afxdp_proxy.lab.demo import run_demo

pytestmark = pytest.mark.root


@pytest.mark.parametrize("backend", ["kernel", "afxdp"])
def test_demo_keeps_every_stack_with_the_cache_and_none_without(backend: str) -> None:
    out = io.StringIO()
    plain, caching, static = run_demo(seconds=1.0, out=out, backend=backend)
    text = out.getvalue()
    assert plain.result.bits_per_second > 10e6, text
    assert caching.compared > 100 and caching.kept == caching.compared, text
    row = [line for line in text.splitlines() if line.startswith(f"caching proxy ({backend}, hash)")]
    assert len(row) == 1 and row[0].endswith("100.0%"), text
    assert static.compared > 100 and static.kept < static.compared, text  # one fixed stack for a dynamic chain
    assert "packets checked: those the sender recorded" in text and "stacks cached" in text, text
    # its own namespaces, as it names them: another suite on the machine may make namespaces meanwhile
    line = next(x for x in text.splitlines() if x.strip().startswith("namespaces: "))
    mine = set(line.split(": ", 1)[1].split(", "))
    assert len(mine) >= 4, line
    netns.wait_until(lambda: not mine & set(netns.list_ns()), 10, what=f"the demo's namespaces {mine} to go")
