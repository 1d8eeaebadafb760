"""The cost bench's options (afxdp_proxy.lab.bench.costs): bad input is refused in one line naming the option,
exit 2, before anything is measured; options a mode does not use are refused in it. No root needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from afxdp_proxy.lab.bench import costs


@pytest.fixture(autouse=True)
def nothing_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    def measured(*_a: object, **_k: object) -> None:
        raise AssertionError("measured despite bad options")

    monkeypatch.setattr(costs, "measure", measured)
    monkeypatch.setattr(costs, "in_place", measured)


@pytest.mark.parametrize(("argv", "names"), [
    (["--depth", "0"], "--depth"),
    (["--depth", "17"], "--depth"),
    (["--packets", "0"], "--packets"),
    (["--in-flight", "-1"], "--in-flight"),
    (["--cache-entries", "3"], "--cache-entries"),
    (["--cache-entries", str((1 << 24) + 1)], "--cache-entries"),
    (["--cache-entries", "64"], "--cache-entries"),  # fewer than --in-flight 100: TX could never find its entry
    (["--reps", "0"], "--reps"),
    (["--in-place", "--seconds", "0"], "--seconds"),
    (["--in-place", "--seconds", "nan"], "--seconds"),
    (["--in-place", "--seconds", "inf"], "--seconds"),
    (["--in-place", "--trace", "0"], "--trace"),
    (["--in-place", "--trace", "3"], "--trace"),
    (["--in-place", "--trace", "4", "--vs-static"], "--trace"),
    # options one mode does not use: refused there, not silently ignored
    (["--seconds", "2"], "--seconds"),
    (["--load", "tcp"], "--load"),
    (["--trace", "4"], "--trace"),
    (["--in-place", "--packets", "10"], "--packets"),
    (["--in-place", "--in-flight", "10"], "--in-flight"),
    (["--backend", "static", "--key", "meta"], "--key"),
    (["--backend", "static", "--cache-entries", "1024"], "--cache-entries"),
    (["--key", "meta", "--topology", "attached"], "--key"),
    (["--vs-static", "--backend", "static"], "--vs-static"),
])
def test_bad_options_are_refused_in_one_line(argv: list[str], names: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert costs.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"costs: error: {names}"), err


@pytest.mark.parametrize("where", ["missing/dir/out.json", "."])
def test_an_unwritable_json_path_is_refused_before_measuring(tmp_path: Path, where: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert costs.main(["--json", str(tmp_path / where)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("costs: error: --json"), err


def test_a_json_file_there_is_kept_until_the_results_replace_it(tmp_path: Path) -> None:
    """The check opens it without truncating: a refused run leaves the last results alone."""
    out = tmp_path / "costs.json"
    out.write_text("{}")
    assert costs.main(["--json", str(out), "--depth", "0"]) == 2
    assert costs._writable(str(out)) is None and out.read_text() == "{}"
    assert costs._writable(str(tmp_path / "new.json")) is None and not (tmp_path / "new.json").exists()


def test_help_states_the_defaults_and_the_spreads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        costs.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default inline)", "(default kernel)", "(default hash)", "(default 1)", "(default gen)",
                    "(default 2000)", "(default 100)", "(default 65536)", "(default 8)"):
        assert default in text, default
    assert "seconds of load per measurement (default 1)" in text
    assert "p10, p90" in text and "min, max" in text
