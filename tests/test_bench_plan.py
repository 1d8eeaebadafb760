"""What `afxdp-proxy bench` plans to measure, without measuring: which variants a request brings
along (baselines, the afxdp floor) and which slots each one gets. No root, no traffic; the run
itself is tests/test_bench_quick.py's."""

from __future__ import annotations

from afxdp_proxy.cli import build_parser
from afxdp_proxy.lab.bench import null
from afxdp_proxy.lab.bench.suite import DYNAMIC, Run, plan, settings_from
from afxdp_proxy.lab.bench.variants import VARIANTS, config_problem, select
from afxdp_proxy.lab.testbed import Testbed


def _names(names: list[str]) -> list[str]:
    return [v.name for v in select(names)]


def test_afxdp_brings_its_floor_and_the_floor_runs_alone() -> None:
    assert _names(["afxdp"]) == ["baseline", "afxdp", "afxdp-null"]
    assert _names(["kernel-hash", "afxdp", "afxdp-2q"]) == ["baseline", "kernel-hash", "afxdp", "afxdp-null",
                                                            "afxdp-2q"]
    assert _names(["afxdp-null"]) == ["baseline", "afxdp-null"]
    assert _names(["afxdp-null", "afxdp"]) == ["baseline", "afxdp-null", "afxdp"]  # asked first: not moved


def test_the_floor_is_measured_at_every_depth_on_plain_ip_and_never_for_fidelity() -> None:
    args = build_parser().parse_args(["bench", "--variants", "afxdp-null,kernel-hash", "--depths", "3,8",
                                      "--reps", "2"])
    s = settings_from(args)
    slots = [(rep, depth, v.name) for rep, depth, v in plan(Run(s, select(list(s.variants))))]
    for rep in (0, 1):
        assert [d for r, d, n in slots if r == rep and n == "afxdp-null"] == [3, 8]
        assert [d for r, d, n in slots if r == rep and n == "kernel-hash"] == [3, 8, DYNAMIC]
    floor = VARIANTS["afxdp-null"]
    assert not floor.labelled and not floor.is_baseline and VARIANTS["afxdp"].labelled
    assert floor.runner == null.MODULE and VARIANTS["afxdp"].runner == "afxdp_proxy"


def test_the_floor_runs_the_afxdp_configuration() -> None:
    tb = Testbed("attached")  # names only: nothing is brought up
    assert VARIANTS["afxdp-null"].config(tb, 3) == VARIANTS["afxdp"].config(tb, 3)
    assert config_problem(VARIANTS["afxdp-null"].config(tb, 3)) is None
