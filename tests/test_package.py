"""The package an operator installs: `python -m build` makes an sdist and, from it, a wheel that
carries the BPF objects (product and lab) and the extension; installed into a fresh virtualenv
outside the checkout, `afxdp-proxy` works from any directory: --help, check, and a short run
on a testbed that passes traffic, and the lab's commands read their constants from the wheel.

The wheel is built once per content of the sources it is made of (cached under build/wheels/),
so a second run of the suite only installs it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from afxdp_proxy import state
from afxdp_proxy.lab import netns
from afxdp_proxy.lab.testbed import Testbed, dynamic_stacks

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "wheels"
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "afxdp_proxy", "bpf", "native", "contrib")
OBJECTS = {"proxy", "xsk", "redirect", "probe", "testbed", "gen", "floor"}


def _source_digest() -> str:
    h = hashlib.sha256()
    for top in SOURCES:
        p = ROOT / top
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        for f in files:
            if f.suffix in (".so", ".o", ".pyc") or "__pycache__" in f.parts or "bpf_objects" in f.parts:
                continue
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _env() -> dict[str, str]:
    """The environment without anything that would point the installed package at the checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("AXP_BPF_DIR", "PYTHONPATH", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def wheel() -> Path:
    out = CACHE / _source_digest()
    found = sorted(out.glob("afxdp_proxy-*.whl"))
    if not found:
        out.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], capture_output=True,
                           text=True, timeout=600, env=_env())
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        found = sorted(out.glob("afxdp_proxy-*.whl"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv outside the checkout with the wheel (and its dependencies) installed."""
    v = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(v)], check=True, timeout=120, env=_env())
    r = subprocess.run([str(v / "bin" / "pip"), "install", "-q", str(wheel)], capture_output=True, text=True,
                       timeout=600, env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    return v


def _in(v: Path, cwd: Path, *argv: str, ns: str | None = None) -> subprocess.CompletedProcess:
    return netns.run(ns, [str(v / "bin" / argv[0]), *argv[1:]], timeout=60, cwd=cwd, env=_env())


def test_the_wheel_carries_what_the_proxy_needs(wheel: Path) -> None:
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert {f"afxdp_proxy/bpf_objects/{o}.bpf.o" for o in OBJECTS} <= set(names)
    assert any(n.startswith("afxdp_proxy/_native") and n.endswith(".so") for n in names)
    assert not any(n.startswith(("bpf/", "native/", "tests/")) for n in names)


def test_installed_it_works_from_anywhere(venv: Path, tmp_path: Path) -> None:
    r = _in(venv, tmp_path, "afxdp-proxy", "--help")
    assert r.returncode == 0, r.stderr
    assert "check" in r.stdout and "run" in r.stdout and "testbed" in r.stdout
    r = _in(venv, tmp_path, "python", "-c", "import json, afxdp_proxy, afxdp_proxy.bpf as b; "
            "from afxdp_proxy.lab.bench import gen; from afxdp_proxy._native import lib; "
            f"print(json.dumps([afxdp_proxy.__file__, [str(b.object_path(n)) for n in {sorted(OBJECTS)}], "
            "lib.TB_HIST_NOT_IP, lib.GEN_TMPL_MAX]))")
    assert r.returncode == 0, r.stderr
    module, objects, tb_const, gen_const = json.loads(r.stdout)
    assert module.startswith(str(venv)) and all(o.startswith(str(venv)) for o in objects), (module, objects)
    assert (tb_const, gen_const) == (17, 128)


@pytest.fixture
def bed() -> Iterator[Testbed]:
    tb = Testbed("attached").up()
    yield tb
    assert tb.down() == []


def test_check_and_run_on_a_testbed(venv: Path, bed: Testbed, tmp_path: Path) -> None:
    name = f"{bed.prefix}-pkg"
    config = tmp_path / "proxy.toml"
    config.write_text(bed.proxy_config().replace("[proxy]\n", f'[proxy]\nname = "{name}"\n', 1))
    r = _in(venv, tmp_path, "afxdp-proxy", "check", "--config", str(config), ns=bed.ns_proxy)
    assert r.returncode == 0, r.stdout + r.stderr
    bed.set_stacks(dynamic_stacks(bed.sf_label))
    duration = 4  # seconds: the ping's 0.25 s and then some, on a loaded machine too
    argv = [str(venv / "bin" / "afxdp-proxy"), "run", "--config", str(config), "--duration", str(duration),
            "--log-format", "json"]
    proc = netns.popen(bed.ns_proxy, argv, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    try:
        netns.wait_until(lambda: name in state.running() or proc.poll() is not None, 15, what="the proxy to attach")
        t0 = time.monotonic()
        ping = bed.ping(count=5, interval=0.05)
        assert time.monotonic() - t0 < duration, "the proxy may have stopped before the ping ended"
        out, err = proc.communicate(timeout=30)
    finally:
        netns.stop(proc)
    assert proc.returncode == 0, err
    assert out == ""  # no terminal: no live line, the counters go to the log
    assert ping.ok, ping
    stopped = json.loads(err.splitlines()[-1])
    assert stopped["event"] == "stopped", err
    assert stopped["rx_popped"] >= 5 and stopped["tx_pushed"] + stopped["tx_plain"] >= 5, stopped
    # the lab from the wheel reads the testbed's counters with the constants the extension exports
    r = _in(venv, tmp_path, "afxdp-proxy", "testbed", "status", "--prefix", bed.prefix, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["counters"]["tc_pushed"] >= 5
