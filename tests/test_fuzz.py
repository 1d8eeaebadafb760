"""Differential fuzzing in the test suite: generated frames through BPF (every configuration),
the AF_XDP engine's C and the Python reference, which must agree frame by frame
(tests/differential.py). A few thousand frames here; ``make fuzz`` runs 100,000 or more.

Without root: the reference against the packet table (it must say what tests/cases.py says)
and the generator's reach and determinism.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import pytest
from cases import CASES, SF_KEYS, Verdict, nat
from fuzz import MAX_FRAME, SERVED_LABELS, SERVED_VIDS, FrameGen, cuts, rx_frames, tx_frames
from hypothesis import HealthCheck, given, settings
from reference import DROP, PASS, REDIRECT, RX_REASONS, TX_REASONS, Mode, Reference
from test_bpf_proxy import SFS

from afxdp_proxy.key import Key, KeyFlag, KeyKind, parse_mpls_frame

FRAMES = 3000  # generated RX frames in `make test` (about 900 more go straight into TX, and 150 bursts)
SEED = 0xF022
CACHE_SETS = 128
UNREACHABLE_RX = {"rx_cache_error", "rx_pop_failed"}  # need a loader or a helper that fails
UNREACHABLE_TX = {"tx_gso_drop", "tx_push_failed"}  # need a GSO skb or a failing helper


# ---- the reference against the table (no root) ------------------------------------------------


@pytest.mark.parametrize("topology", ["inline", "attached"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_reference_agrees_with_table(case: object, topology: str) -> None:
    from cases import Case

    assert isinstance(case, Case)
    ref = Reference(Mode(topology=topology, **dict(case.config)), SFS, CACHE_SETS)
    o = ref.rx(case.frame)
    attached = topology == "attached"
    if case.rx == Verdict.POP:
        assert o.verdict == (REDIRECT if attached else PASS)
        assert case.popped is not None and case.sf is not None and case.pushed is not None
        sf = SFS[case.sf]
        assert o.data == (sf.sf_mac + sf.to_sf_mac + case.popped[12:] if attached else case.popped)
        assert o.key == parse_mpls_frame(case.frame).key
        assert o.counters == {"rx_packets": 1, "rx_popped": 1, "cache_inserts": 1, **dict.fromkeys(case.rx_also, 1)}
        t = ref.tx(o.data)
        assert t.verdict == (REDIRECT if attached else PASS)
        assert t.data == (sf.next_hop_mac + sf.net_out_mac + case.pushed[12:] if attached else case.pushed)
        assert t.counters == {"tx_packets": 1, case.tx_counter: 1, "cache_takes": 1}
        assert ref.cache.packets() == 0
    else:
        assert o.verdict == (PASS if case.rx == Verdict.PASS else DROP)
        assert o.counters == {"rx_packets": 1, case.rx_counter: 1}
        assert o.data == (case.frame if o.verdict == PASS else None)


def test_reference_tx_without_an_entry() -> None:
    """On a miss: on_miss decides; attached, the BPF program passes the frame to the host's
    kernel, which routes it; the AF_XDP engine sends it on by the interface's SF (it cannot
    hand it to the kernel), or passes it when no SF uses that interface."""
    bare = next(c.popped for c in CASES if c.name == "tcp4_2")
    assert bare is not None
    attached = Mode(topology="attached")
    for mode, afxdp, tx_sf, verdict in ((Mode(), False, 0, PASS), (Mode(on_miss="drop"), False, 0, DROP),
                                        (attached, False, 0, PASS), (attached, True, 0, REDIRECT),
                                        (attached, True, None, PASS),
                                        (Mode(topology="attached", on_miss="drop"), True, None, DROP)):  # fmt: skip
        t = Reference(mode, SFS, CACHE_SETS, afxdp=afxdp).tx(bare, tx_sf=tx_sf)
        assert t.verdict == verdict, mode
        assert t.counters == {"tx_packets": 1, f"tx_miss_{mode.on_miss}": 1}
        if verdict == REDIRECT:
            assert t.data == SFS[0].next_hop_mac + SFS[0].net_out_mac + bare[12:]


def test_reference_on_miss_last() -> None:
    """on_miss = "last": a packet the SF rewrote gets the stack RX last sent to that SF (the TTL
    on top by the uniform model), counted tx_miss_last; before any, it passes as a miss."""
    case = next(c for c in CASES if c.name == "tcp4_2")
    ref = Reference(Mode(topology="attached", on_miss="last"), SFS, CACHE_SETS)
    assert case.popped is not None
    other = nat(case.popped)  # the SF rewrote the source address: another key
    assert ref.tx(other, tx_sf=0).counters == {"tx_packets": 1, "tx_miss_pass": 1}
    o = ref.rx(case.frame)
    assert o.sf == 0
    t = ref.tx(other, tx_sf=0)
    assert t.counters == {"tx_packets": 1, "tx_miss_last": 1}
    hit = ref.tx(o.bare, tx_sf=0)  # the packet itself still finds its own entry
    assert hit.counters["cache_takes"] == 1
    assert t.data is not None and hit.data is not None
    assert t.data[:18] == hit.data[:18]  # the same stack (one label) pushed
    assert ref.tx(other, tx_sf=1).counters == {"tx_packets": 1, "tx_miss_pass": 1}  # SF 1 had none


# ---- the generator (no root) ----------------------------------------------------------------------


def _sample(seed: int, n: int) -> list[object]:
    gen = FrameGen(random.Random(seed))
    return [gen.rx_frame() for _ in range(n)]


def test_generator_is_seeded() -> None:
    assert [f.data for f in _sample(7, 200)] == [f.data for f in _sample(7, 200)]  # type: ignore[attr-defined]
    assert [f.data for f in _sample(7, 200)] != [f.data for f in _sample(8, 200)]  # type: ignore[attr-defined]


def test_generator_reaches_every_outcome() -> None:
    """Seeded frames reach every parse outcome, key kind and flag, every RX reason the frame
    decides, every ethertype family, extension chains below, at and beyond the walk limit,
    every tunnel, and stay within what a test run takes."""
    ref = Reference(Mode(), SFS, CACHE_SETS)
    ref_pass = Reference(Mode(on_ttl_expired="pass"), SFS, CACHE_SETS)
    reasons: Counter[str] = Counter()
    kinds: Counter[KeyKind] = Counter()
    flags: Counter[KeyFlag] = Counter()
    parts: Counter[str] = Counter()
    for f in _sample(SEED, 6000):
        assert len(f.data) <= MAX_FRAME  # type: ignore[attr-defined]
        o = ref.rx(f.data)  # type: ignore[attr-defined]
        reasons.update(k for k in o.counters if k in RX_REASONS)
        if "rx_ttl_expired" in o.counters:
            reasons.update(k for k in ref_pass.rx(f.data).counters if k in RX_REASONS)  # type: ignore[attr-defined]
        if o.key is not None:
            k = Key.from_bytes(o.key)
            kinds[k.kind] += 1
            flags.update(x for x in KeyFlag if k.flags & x)
            ref.cache.clear()
        parts.update(f.shape.replace("/", "-").split("-"))  # type: ignore[attr-defined]
    assert set(reasons) == set(RX_REASONS) - UNREACHABLE_RX - {"rx_key_full"}, reasons  # (a cache's business)
    assert set(kinds) == set(KeyKind) - {KeyKind.NONE, KeyKind.META}, kinds
    assert set(flags) == set(KeyFlag), flags
    assert reasons["rx_popped"] > 1500 and kinds[KeyKind.TUNNEL] > 30 and kinds[KeyKind.RTP] > 5, (reasons, kinds)
    want = {"mpls0", "mpls1", "mpls16", "mpls17", "nobos", "earlybos", "ip4", "ip6", "arp", "vlan1", "vlan2",
            "mpls_mc", "len802_3", "random", "pwcw", "opts", "frag", "mf", "ip6+ext0", "ip6+ext6", "ip6+ext>max",
            "fragl", "tcp", "udp", "icmp", "icmp6", "other", "vxlan", "geneve", "gtpu", "mplsudp", "cut", "flip"}
    assert want <= set(parts), want - set(parts)


def test_cuts() -> None:
    assert cuts(b"abc") == [b"", b"a", b"ab", b"abc"]


# ---- BPF, C and the reference (root) -------------------------------------------------------------


@pytest.fixture(scope="module")
def diff() -> Iterator[object]:
    from differential import Differential

    d = Differential()  # loads every configuration: a verifier rejection fails here
    yield d
    d.close()


def _report(failed: list[object], limit: int = 10) -> str:
    lines = [f"{d}\n  frame {d.frame.hex()}" for d in failed[:limit]]  # type: ignore[attr-defined]
    return f"{len(failed)} disagreements:\n" + "\n".join(lines)


@pytest.mark.root
def test_every_configuration_loads(diff: object) -> None:
    from differential import ALL_MODES

    assert len(ALL_MODES) == 19 and set(diff.bpf) == set(ALL_MODES)  # type: ignore[attr-defined]


@pytest.mark.root
def test_table_cut_at_every_offset(diff: object) -> None:
    """Every row of the packet table, cut at every offset, through RX (and TX when popped)."""
    from differential import table_frames

    failed = []
    for i, f in enumerate(table_frames()):
        failed += diff.check_rx(f, i, "table-cut")  # type: ignore[attr-defined]
    assert not failed, _report(failed)
    assert not diff.check_counted()  # type: ignore[attr-defined]


@pytest.mark.root
def test_seeded_frames_agree(diff: object) -> None:
    """FRAMES generated frames for RX (and back through TX when popped), about 0.3 x FRAMES
    straight into TX and FRAMES / 20 bursts into a small cache: no disagreement, every frame
    counted, every reason and companion counter reached."""
    from differential import run

    failed = run(diff, FRAMES, SEED, sweep=False)  # type: ignore[arg-type]
    assert not failed, _report(failed)
    assert not diff.check_counted()  # type: ignore[attr-defined]
    s = diff.stats  # type: ignore[attr-defined]
    assert set(s.rx_reasons) == set(RX_REASONS) - UNREACHABLE_RX, s.rx_reasons
    assert set(s.tx_reasons) == set(TX_REASONS) - UNREACHABLE_TX, s.tx_reasons
    assert set(s.key_kinds) == {k.name for k in KeyKind} - {"NONE", "META"}, s.key_kinds
    assert {"cache_inserts", "cache_takes", "evictions", "rx_key_ext_limit"} <= set(s.companions), s.companions


@pytest.mark.root
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(frame=rx_frames())
def test_hypothesis_rx_frames_agree(diff: object, frame: object) -> None:
    """Hypothesis draws the generator's decisions, every target sees the frame; a failure
    shrinks to the plainest frame that still disagrees."""
    failed = diff.check_rx(frame.data)  # type: ignore[attr-defined]
    assert not failed, _report(failed)


@pytest.mark.root
@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(frame=tx_frames())
def test_hypothesis_tx_frames_agree(diff: object, frame: object) -> None:
    failed = diff.check_tx(frame.data)  # type: ignore[attr-defined]
    assert not failed, _report(failed)


@pytest.mark.root
def test_failures_file_replays(diff: object, tmp_path: object) -> None:
    """What make fuzz writes on a disagreement, replay runs again (through every target)."""
    from pathlib import Path

    from differential import Disagreement, replay, write_failures

    frame = next(c.frame for c in CASES if c.name == "tcp4_2")
    tx = bytes(14)[:12] + b"\x08\x06" + bytes(28)
    path = Path(str(tmp_path)) / "f.txt"
    burst = (frame, frame[:40], frame)
    write_failures(path, [Disagreement("rx", (frame,), "bpf:x", "verdict", "made up"),
                          Disagreement("tx", (tx,), "c:x", "output", "made up"),
                          Disagreement("burst", burst, "c:x", "cache", "made up")], "test")  # fmt: skip
    assert path.read_text().splitlines()[2:] == [f"rx {frame.hex()}", "#   bpf:x verdict: made up",
                                                 f"tx {tx.hex()}", "#   c:x output: made up",
                                                 f"burst {frame.hex()} {frame[:40].hex()} {frame.hex()}",
                                                 "#   c:x cache: made up"]  # fmt: skip
    s = diff.stats  # type: ignore[attr-defined]
    before = s.rx_frames, s.tx_frames, s.bursts
    assert replay(diff, path) == []  # type: ignore[arg-type]
    assert (s.rx_frames, s.tx_frames, s.bursts) == (before[0] + 4, before[1] + 1, before[2] + 1)


def test_generator_serves_the_tables_labels() -> None:
    assert set(SERVED_LABELS) == {label for _, label in SF_KEYS} == {sf.label for sf in SFS.values()}
    assert set(SERVED_VIDS) == {vid for vid, _ in SF_KEYS} - {0}
