"""`afxdp-proxy bench` as a user meets it, without measuring: its options refused in one line
(exit 2) before anything runs, its exit status and its last words, and what bench.md, the plots
and the ratios tool say of a run (built here from made-up samples). No root, no traffic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from afxdp_proxy import cli
from afxdp_proxy.lab.bench import ratios, report, suite
from afxdp_proxy.lab.bench.suite import Run, Settings, document, settings_from
from afxdp_proxy.lab.bench.variants import select
from afxdp_proxy.lab.testbed import Testbed

ENV = {"kernel": "6.8.0 #1", "cpu": "test CPU", "cpus": 2, "git": {"commit": "0" * 40, "dirty": False}}


def fake_doc(names: list[str], depths: tuple[int, ...], reps: int,
             value: Any = lambda v, d, r, m: 1.0, unavailable: dict[str, str] | None = None) -> dict[str, Any]:
    """The document a run of these variants would give, every TCP and 64 B sample value(v, d, r, m)."""
    run = Run(Settings(depths=depths, reps=reps, variants=tuple(names)), select(names))
    run.whole_run_unavailable.update(unavailable or {})
    for v in run.variants:
        if v.name in run.whole_run_unavailable:
            continue
        for r in range(reps):
            for d in depths:
                for m in ("tcp_gbps", "mpps_64"):
                    run.add(r, v, d, m, value(v.name, d, r, m))
    return document(run, ENV, 0.0)


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever gets this far must not measure: a refusal has to come first."""
    def refuse(*_a: Any, **_k: Any) -> None:
        raise AssertionError("the suite ran")

    monkeypatch.setattr(suite, "run_suite", refuse)
    monkeypatch.setattr(suite.signals, "install", lambda *_a: {})


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# ---------------------------------------------------------------------- options


@pytest.mark.parametrize("argv, says", [
    (["--reps", "0"], "--reps"), (["--reps", "-1"], "--reps"), (["--reps", "x"], "--reps"),
    (["--flows", "0"], "--flows"), (["--flows", "-3"], "--flows"),
    (["--seconds", "0"], "--seconds"), (["--seconds", "-1"], "--seconds"), (["--seconds", "2.5"], "whole"),
    (["--seconds", "nan"], "--seconds"), (["--seconds", "inf"], "--seconds"),
    (["--depths", "1,1"], "given twice"), (["--depths", "4,1,4"], "depth 4"),
])
def test_bad_numbers_are_refused_in_one_line(no_run: None, capsys: pytest.CaptureFixture[str], argv: list[str],
                                             says: str) -> None:
    assert says in _refused(capsys, [*argv, "--quick"])


def test_the_numbers_given_are_the_numbers_run() -> None:
    s = settings_from(cli.build_parser().parse_args(["bench", "--quick", "--reps", "2", "--seconds", "3",
                                                     "--flows", "1", "--depths", "16,1"]))
    assert (s.reps, s.tcp_seconds, s.flows, s.depths, s.quick) == (2, 3.0, 1, (16, 1), True)
    s = settings_from(cli.build_parser().parse_args(["bench", "--seconds", "4.0"]))
    assert s.tcp_seconds == 4.0 and s.reps == 3


@pytest.mark.parametrize("spec, says", [
    ("afxdp:bogus=1", "afxdp:bogus=1: config refused: proxy.bogus: unknown key"),
    ("afxdp:ring_size=abc", "proxy.ring_size: 'abc' is not an integer"),
    ("static:cache_entries=-3", "proxy.cache_entries"),
    ("static:static_stack=1", "static_stack is not a [proxy] key"),
    ("kernel-hash:key=meta", "key is set by the variant's name"),
    ("afxdp:cpu=999", "cpu = 999"),
    ("kernel-hash:busy_poll=50", "AF_XDP sockets only"),
    ("afxdp:busy_poll=5/x", "USECS/BUDGET"),
    ("nosuch", "unknown variant nosuch"),
    ("afxdp:queues=65", "queues = 65: set 1..64"),
    ("kernel-hash:queues=2", "proxy.queues"),  # AF_XDP's key, testbed or not
    (",", "name at least one"),
    ("kernel-hash,afxdp,kernel-hash", "kernel-hash given twice"),
])
def test_variant_overrides_are_checked_before_anything_runs(no_run: None, capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path, spec: str, says: str) -> None:
    line = _refused(capsys, ["--variants", f"kernel-hash,{spec}" if spec != "," else spec,
                             "--out", str(tmp_path / "out")])
    assert "--variants" in line and says in line


def test_queues_given_to_a_variant_are_the_testbeds_too() -> None:
    """`afxdp:queues=2` ran on the 1-queue testbed and failed as its proxy started (a trial):
    the veths get the queues the proxy is told to serve, as afxdp-2q's do."""
    [base, v, floor] = select(["afxdp:queues=2"])
    assert (base.name, v.name, v.queues, v.bed, v.overrides) == ("baseline", "afxdp:queues=2", 2,
                                                                    ("attached", 2), ())
    assert (v.floor, floor.name, floor.bed, floor.plain) == ("afxdp-null:queues=2",) * 2 + (("attached", 2), True)
    assert "queues = 2" in v.config(Testbed("attached", queues=2), 3)
    [_, v, _] = select(["afxdp:queues=0:ring_size=512"])  # 0 (all of net_in's): the testbed's default
    assert (v.queues, v.overrides) == (None, (("queues", 0), ("ring_size", 512)))


def test_out_must_be_a_directory_one_can_write(no_run: None, capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    assert "that is a file" in _refused(capsys, ["--out", str(f)])
    assert "cannot create it" in _refused(capsys, ["--out", str(f / "sub")])
    assert "cannot write there" in _refused(capsys, ["--out", "/proc"])  # read-only even for root


# ---------------------------------------------------------------------- exit status, Ctrl-C


def _stub(monkeypatch: pytest.MonkeyPatch, run: Any) -> None:
    monkeypatch.setattr(suite, "run_suite", run)
    monkeypatch.setattr(suite.signals, "install", lambda *_a: {})
    monkeypatch.setattr(report, "write", lambda doc, out: [])


def test_exit_1_and_one_line_when_a_variant_was_not_measured(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    doc = fake_doc(["kernel-hash", "afxdp"], (1,), 1, unavailable={"afxdp": "proxy did not start: no AF_XDP"})
    _stub(monkeypatch, lambda *_a, **_k: doc)
    assert cli.main(["bench", "--variants", "kernel-hash,afxdp", "--depths", "1", "--out", str(tmp_path)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("afxdp-proxy bench: not everything was measured: ") and "no AF_XDP" in last
    assert "afxdp-null" not in last  # measured

    _stub(monkeypatch, lambda *_a, **_k: fake_doc(["kernel-hash"], (1,), 1))
    assert cli.main(["bench", "--variants", "kernel-hash", "--depths", "1", "--out", str(tmp_path)]) == 0


def test_ctrl_c_says_what_was_kept_and_whose_the_other_files_are(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path) -> None:
    (tmp_path / "bench.json").write_text("{}")  # an earlier run's
    (tmp_path / "bench.partial.json").write_text("{}")  # an earlier interrupted run's

    def interrupted(_s: Settings, checkpoint: Any = None, **_k: Any) -> None:
        assert not (tmp_path / "bench.partial.json").exists(), "a stale partial file was left"
        checkpoint({"samples": []})
        raise KeyboardInterrupt

    _stub(monkeypatch, interrupted)
    assert cli.main(["bench", "--quick", "--out", str(tmp_path)]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"what was measured is in {tmp_path / 'bench.partial.json'}" in last
    assert "bench.json there are from an earlier run" in last

    def at_once(*_a: Any, **_k: Any) -> None:
        raise KeyboardInterrupt

    _stub(monkeypatch, at_once)
    assert cli.main(["bench", "--quick", "--out", str(tmp_path)]) == 130
    assert "nothing was measured" in capsys.readouterr().err
    assert not (tmp_path / "bench.partial.json").exists()


def test_help_gives_units_brackets_and_what_quick_takes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for s in ("Gbit/s", "Mpps", "µs", "ns per packet", "median [min–max] over the repetitions", "1 m 40 s",
              "exit status", "whole seconds"):
        assert s in out, s
    assert "under two minutes" not in out and "about a minute" not in out


# ---------------------------------------------------------------------- what the report says


def _tcp(v: str, d: int, r: int, m: str) -> float:
    """baseline 10; kernel-hash 9.5 at 1 label, 9.0 / 8.3 at 8 and 16 (drops 5.3% and 12.6%)."""
    if m != "tcp_gbps" or v == "baseline":
        return 10.0
    return 9.5 if d == 1 else (9.0, 8.3)[r]


def test_the_drop_is_set_against_its_target_only_from_1_to_16_labels() -> None:
    md = report.markdown(fake_doc(["kernel-hash"], (1, 16), 2, _tcp))
    line = next(x for x in md.splitlines() if "TCP drop from 1 to 16" in x)
    assert "relative change" in line and "in share of baseline" not in line
    assert "median meets it; 1 of 2 repetitions does not" in line, line
    md = report.markdown(fake_doc(["kernel-hash"], (1, 8), 2, _tcp))
    line = next(x for x in md.splitlines() if "TCP drop from 1 to 8" in x)
    assert "not the target's measure" in line and "median meets" not in line


def test_an_overridden_variant_is_set_against_its_floor_and_one_depth_has_no_drop() -> None:
    """A trial's `--variants afxdp:queues=2 --depths 1` gave a bench.md with no comparison at all
    (the pairs knew plain names only) and, beside kernel-hash, a drop "from 1 to 1 labels"."""
    doc = fake_doc(["afxdp:queues=2", "kernel-hash"], (1,), 1,
                   lambda v, d, r, m: {"afxdp:queues=2": 2.0, "afxdp-null:queues=2": 4.0}.get(v, 8.0))
    h = report.headline(doc)
    pair = h["pairs"]["afxdp:queues=2 / afxdp-null:queues=2"]
    assert pair["tcp_gbps"]["1"]["median"] == pair["mpps_64"]["1"]["median"] == 0.5
    assert "kernel_hash_tcp_drop" not in h
    md = report.markdown(doc)
    assert "afxdp:queues=2 / afxdp-null:queues=2, TCP by labels: 1: 0.50" in md
    assert "drop from" not in md


def test_verdict_never_says_met_when_the_spread_crosses() -> None:
    e = report.stat_reps([0.05, 0.16])
    assert report.verdict(e, lambda x: x < 0.1) == "median misses it; 1 of 2 repetitions does not"
    assert report.verdict(report.stat_reps([0.05, 0.06, 0.2]), lambda x: x < 0.1) == \
        "median meets it; 1 of 3 repetitions does not"
    assert report.verdict(report.stat_reps([0.05, 0.06]), lambda x: x < 0.1) == "met by all 2 repetitions"
    # --quick's one repetition: a bare "met" read as a result a trial took for settled
    assert report.verdict(report.stat_reps([0.05]), lambda x: x < 0.1) == "met by its one repetition, no spread"
    assert report.verdict(report.stat_reps([0.5]), lambda x: x < 0.1) == \
        "not met by its one repetition, no spread"
    assert report.verdict(None, lambda x: True) == "not measured"


def test_bench_md_warns_of_two_reps_and_of_drift_between_slots() -> None:
    def drift(v: str, d: int, r: int, m: str) -> float:
        return {1: 0.85, 16: 1.10}[d] if v == "afxdp-null" else 1.0

    md = report.markdown(fake_doc(["afxdp"], (1, 16), 2, drift))
    assert "the median of two samples is their mean" in md
    assert "compare absolute figures within a slot only" in md
    assert "afxdp-null, the same plain IP in every slot, gave TCP medians of 0.85–1.10 Gbit/s (29% apart)" in md
    assert "median of two" not in report.markdown(fake_doc(["afxdp"], (1, 16), 3))


def test_the_floor_is_a_flat_reference_not_a_point_per_depth(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    labels: dict[str, list[str]] = {}
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **_k: labels.setdefault(
        Path(path).name, fig.axes[0].get_legend_handles_labels()[1]))
    report.plots(fake_doc(["afxdp"], (1, 16), 1), tmp_path)
    assert "afxdp" in labels["throughput.png"]
    assert "afxdp-null" not in labels["throughput.png"]
    assert "afxdp-null (plain IP, no labels; all slots)" in labels["throughput.png"]


def test_ratios_name_the_depths_the_file_has(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bench.json"
    f.write_text(json.dumps(fake_doc(["afxdp"], (1, 16), 1)))
    with pytest.raises(SystemExit) as e:
        ratios.main([str(f)])  # --depth 3 by default
    assert e.value.code == 2
    assert "--depth 3: the file has no samples at that depth; it has 1, 16" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ratios.main([str(f), "--depth", "16", "--to", "nosuch"])
    assert "--to nosuch: no such variant" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ratios.main([str(tmp_path / "none.json")])
    assert "No such file" in capsys.readouterr().err
    assert ratios.main([str(f), "--depth", "16"]) == 0
    assert "`afxdp-null`" in capsys.readouterr().out
