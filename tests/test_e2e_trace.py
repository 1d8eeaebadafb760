"""`afxdp-proxy trace` end to end: a proxy of each tracing backend runs in the testbed's proxy
namespace as an operator runs it, iperf3 flows through it, and `afxdp-proxy trace` (a process of
its own, in that namespace) follows sampled packets. Each packet's stages come in order with the
stack the sender's classifier really pushed, and however trace ends (--count, Ctrl-C, SIGKILL)
the proxy's sampling is off afterwards."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from afxdp_proxy import state, trace
from afxdp_proxy.lab import netns
from afxdp_proxy.lab.proxyproc import ProxyProcess
from afxdp_proxy.lab.testbed import Testbed, dynamic_stacks
from afxdp_proxy.mpls import tx_words

pytestmark = [pytest.mark.root, pytest.mark.e2e]

SF = 1000
BACKENDS = [("kernel", "attached"), ("kernel", "inline"), ("afxdp", "attached")]
STAGES = ["rx", "insert", "rx_verdict", "take", "tx_verdict"]


@pytest.fixture(scope="module")
def beds() -> Iterator[Callable[[str], Testbed]]:
    made: dict[str, Testbed] = {}

    def get(topology: str) -> Testbed:
        if topology not in made:
            made[topology] = Testbed(topology).up()
        return made[topology]

    yield get
    for tb in made.values():
        assert tb.down() == []


def _proxy(tb: Testbed, backend: str) -> ProxyProcess:
    return ProxyProcess(tb.ns_proxy, tb.proxy_config(backend=backend), name=f"{tb.prefix}-{backend}")


def _trace_cmd(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "afxdp_proxy", "trace", "--name", name, *args]


def _sampling_on(name: str) -> int:
    """The running proxy's ctl: its `on` word (read as trace reads it)."""
    control = trace.control_of(state.running()[name])
    try:
        return int(control.read().on)
    finally:
        control.close()


def _word(lse: dict[str, int]) -> int:
    return lse["label"] << 12 | lse["tc"] << 9 | lse["s"] << 8 | lse["ttl"]


class Traffic:
    """iperf3 through the testbed in a thread, for as long as a trace needs packets."""

    def __init__(self, tb: Testbed, seconds: float = 8.0) -> None:
        self.thread = threading.Thread(target=tb.iperf3, kwargs={"seconds": seconds, "bitrate": "20M"},
                                       daemon=True)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(30)


@pytest.mark.parametrize(("backend", "topology"), BACKENDS)
def test_trace_follows_packets_with_their_own_stacks(beds: Callable[[str], Testbed], backend: str,
                                                       topology: str) -> None:
    tb = beds(topology)
    stacks = dynamic_stacks(SF)
    labels = {tuple(e.label for e in s) for s in stacks}
    tb.set_stacks(stacks)
    with _proxy(tb, backend) as proxy, Traffic(tb):
        netns.wait_until(lambda: proxy.counters()["tx_pushed"] > 100, 10, what="traffic through the proxy")
        r = netns.run(tb.ns_proxy, _trace_cmd(proxy.name, "--sample", "16", "--count", "20", "--json"), timeout=60)
        assert r.returncode == 0, r.stderr
        assert _sampling_on(proxy.name) == 0, "trace must leave sampling off"
    packets = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(packets) == 20
    assert "tracing" in r.stderr and "20 packets traced" in r.stderr
    whole = [p for p in packets if [s["stage"] for s in p["stages"]] == STAGES]
    assert len(whole) >= 10, [[s["stage"] for s in p["stages"]] for p in packets]
    for p in whole:
        rx, ins, rx_done, take, tx_done = p["stages"]
        assert p["sf"] == "fw1" and p["flow"].startswith("tcp ")
        assert tuple(rx["stack"]) in labels, rx["stack"]  # a stack the classifier pushed
        assert take["result"] == "hit" and take["stack"] == rx["stack"], "TX gets the packet's own stack back"
        assert ins["result"] in ("opened", "joined") and rx_done["reason"] == "rx_popped"
        want = list(tx_words([_word(lse) for lse in rx["lse"]]))
        got = [_word(lse) for lse in tx_done["lse"]][1:]
        assert tx_done["reason"] == ("tx_pushed" if len(rx["stack"]) > 1 else "tx_plain")
        assert got == want, "what TX pushed is the stack it arrived with, minus the SF label"
        times = [s["ts_ns"] for s in p["stages"]]
        assert times == sorted(times) and rx["t_us"] == 0


@pytest.mark.parametrize(("backend", "topology"), [BACKENDS[0], BACKENDS[2]])
def test_trace_leaves_nothing_on_however_it_ends(beds: Callable[[str], Testbed], backend: str, topology: str) -> None:
    tb = beds(topology)
    tb.set_stacks(dynamic_stacks(SF))
    with _proxy(tb, backend) as proxy, Traffic(tb, seconds=12):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            p = netns.popen(tb.ns_proxy, _trace_cmd(proxy.name, "--sample", "4"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
            try:
                netns.wait_until(lambda: _sampling_on(proxy.name), 15, what="trace to turn sampling on")
                p.send_signal(sig)
                _, err = p.communicate(timeout=15)
            finally:
                netns.stop(p)
            if sig != signal.SIGKILL:
                assert p.returncode == 0, err
                assert " traced, " in err
                assert _sampling_on(proxy.name) == 0, f"after {sig.name}"
            else:
                # nobody cleans up after a SIGKILL but the proxy, once a second
                netns.wait_until(lambda: not _sampling_on(proxy.name), 5, what="the proxy to turn sampling off")
        # and a second trace while one runs is refused, in one line
        p = netns.popen(tb.ns_proxy, _trace_cmd(proxy.name), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True)
        try:
            netns.wait_until(lambda: _sampling_on(proxy.name), 15, what="trace to turn sampling on")
            r = netns.run(tb.ns_proxy, _trace_cmd(proxy.name), timeout=30)
            assert r.returncode == 2 and "another trace" in r.stderr and len(r.stderr.splitlines()) == 1
        finally:
            p.send_signal(signal.SIGINT)
            p.communicate(timeout=15)
    assert p.returncode == 0


def test_trace_says_why_not_in_one_line(beds: Callable[[str], Testbed]) -> None:
    tb = beds("attached")
    r = netns.run(tb.ns_proxy, _trace_cmd("no-such-proxy"), timeout=30)
    assert r.returncode == 2 and "no running proxy named 'no-such-proxy'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    cfg = tb.proxy_config(backend="static").replace("[[sf]]\n", "[[sf]]\nstatic_stack = [2001]\n")
    with ProxyProcess(tb.ns_proxy, cfg, name=f"{tb.prefix}-static") as proxy:
        r = netns.run(tb.ns_proxy, _trace_cmd(proxy.name), timeout=30)
    assert r.returncode == 2 and "static proxy has no key" in r.stderr
