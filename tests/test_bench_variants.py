"""Bench variants with overrides, "afxdp:ring_size=512:cpu=1": parsed, configured, refused."""

from __future__ import annotations

import pytest

from afxdp_proxy.lab.bench.variants import VARIANTS, select, variant


class FakeBed:
    """What Variant.config asks of a testbed: the keyword arguments it passes."""

    def proxy_config(self, **kw: object) -> str:
        return repr(sorted(kw.items()))


def test_a_known_name_is_the_variant_itself() -> None:
    assert variant("afxdp") is VARIANTS["afxdp"]


def test_overrides_go_to_the_config_and_lab_keys_do_not() -> None:
    v = variant("afxdp:ring_size=512:bind_mode=copy:cpu=1:napi_defer=2:busy_poll=50/64")
    assert v.name == "afxdp:ring_size=512:bind_mode=copy:cpu=1:napi_defer=2:busy_poll=50/64"
    assert (v.backend, v.bed, v.baseline) == ("afxdp", ("attached", None), "baseline")
    assert v.lab("cpu") == 1 and v.lab("napi_defer") == 2 and v.lab("gro_flush") is None
    assert v.lab("busy_poll") == "50/64"
    toml = v.config(FakeBed(), 3)  # type: ignore[arg-type]
    assert "('ring_size', 512)" in toml and "('bind_mode', 'copy')" in toml
    assert "cpu" not in toml and "napi_defer" not in toml and "busy_poll" not in toml


def test_queues_of_the_base_variant_stay() -> None:
    v = variant("afxdp-2q:batch_size=16")
    assert v.bed == ("attached", 2)
    assert "('queues', 2)" in v.config(FakeBed(), 3)  # type: ignore[arg-type]


def test_select_adds_the_baseline_and_the_floor_once_and_keeps_the_order() -> None:
    names = [v.name for v in select(["afxdp:batch_size=16", "afxdp", "afxdp:batch_size=16"])]
    assert names == ["baseline", "afxdp:batch_size=16", "afxdp-null", "afxdp"]


@pytest.mark.parametrize("name, problem", [
    ("nosuch:ring_size=512", "unknown variant nosuch"),
    ("afxdp:ring_size", "is not key=value"),
    ("afxdp:=3", "is not key=value"),
    ("baseline:cpu=1", "takes no overrides"),
])
def test_bad_names_are_refused(name: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        variant(name)


def test_ratios_divide_within_a_repetition() -> None:
    from afxdp_proxy.lab.bench.ratios import table

    samples = [{"rep": r, "variant": v, "depth": 3, "metric": "mpps_64", "value": x}
               for r, v, x in ((0, "afxdp", 1.0), (0, "afxdp:cpu=1", 2.0), (1, "afxdp", 4.0), (1, "afxdp:cpu=1", 2.0))]
    doc = {"variants": {"afxdp": {}, "afxdp:cpu=1": {}}, "samples": samples}
    rows = table(doc).splitlines()
    assert rows[2].startswith("| `afxdp` | – | – | 2.500 [1.000–4.000] | 1.00 [1.00–1.00] |")
    assert rows[3].startswith("| `afxdp:cpu=1` | – | – | 2.000 [2.000–2.000] | 1.25 [0.50–2.00] |")
