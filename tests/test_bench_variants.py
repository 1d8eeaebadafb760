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
    v = variant("afxdp:ring_size=512:bind_mode=copy:cpu=1:napi_defer=2")
    assert v.name == "afxdp:ring_size=512:bind_mode=copy:cpu=1:napi_defer=2"
    assert (v.backend, v.bed, v.baseline) == ("afxdp", ("attached", None), "baseline")
    assert v.lab("cpu") == 1 and v.lab("napi_defer") == 2 and v.lab("gro_flush") is None
    toml = v.config(FakeBed(), 3)  # type: ignore[arg-type]
    assert "('ring_size', 512)" in toml and "('bind_mode', 'copy')" in toml
    assert "cpu" not in toml and "napi_defer" not in toml


def test_queues_of_the_base_variant_stay() -> None:
    v = variant("afxdp-2q:batch_size=16")
    assert v.bed == ("attached", 2)
    assert "('queues', 2)" in v.config(FakeBed(), 3)  # type: ignore[arg-type]


def test_select_adds_the_baseline_once_and_keeps_the_order() -> None:
    names = [v.name for v in select(["afxdp:batch_size=16", "afxdp", "afxdp:batch_size=16"])]
    assert names == ["baseline", "afxdp:batch_size=16", "afxdp"]


@pytest.mark.parametrize("name, problem", [
    ("nosuch:ring_size=512", "unknown variant nosuch"),
    ("afxdp:ring_size", "is not key=value"),
    ("afxdp:=3", "is not key=value"),
    ("baseline:cpu=1", "takes no overrides"),
])
def test_bad_names_are_refused(name: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        variant(name)
