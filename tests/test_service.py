"""contrib/afxdp-proxy@.service: systemd accepts it (`systemd-analyze verify`), and what it runs
works as systemd runs it (this machine has no systemd as PID 1 to start it for real): inside
the instance's network namespace, with only the unit's capabilities, `check` before `run`,
SIGTERM to stop, and log lines that journald reads, each with a syslog priority prefix."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from afxdp_proxy import keep, state
from afxdp_proxy.lab import netns
from afxdp_proxy.lab.testbed import Testbed, dynamic_stacks

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "afxdp-proxy@.service"
COMMAND = Path(sys.executable).parent / "afxdp-proxy"  # the checkout's, where the unit says afxdp-proxy


def _settings() -> list[tuple[str, str]]:
    """The [Service] settings in order (a key may repeat), the commented ones left out."""
    out: list[tuple[str, str]] = []
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and line and not line.startswith(("#", ";")) and "=" in line:
            key, value = line.split("=", 1)
            out.append((key, value))
    return out


def _service() -> dict[str, str]:
    """The [Service] settings; of a repeated key, the last."""
    return dict(_settings())


def _command(setting: str, instance: str, confdir: Path) -> list[str]:
    argv = setting.removeprefix("+").replace("%i", instance).replace("/etc/afxdp-proxy/", f"{confdir}/").split()
    assert argv[0] == "afxdp-proxy"
    return [str(COMMAND), *argv[1:]]


def test_the_unit_says_what_the_brief_asks() -> None:
    s = _service()
    assert s["NetworkNamespacePath"] == "/run/netns/%i"
    pre = [v for k, v in _settings() if k == "ExecStartPre"]
    # the bpffs for the kept cache first, as root outside the sandbox; then check
    assert pre == ["+afxdp-proxy pinfs", "afxdp-proxy check --config /etc/afxdp-proxy/%i.toml"]
    assert s["ExecStart"].startswith("afxdp-proxy run --config /etc/afxdp-proxy/%i.toml")
    assert s["ExecStart"].endswith(" --keep-cache")
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert (s["Restart"], s["KillSignal"]) == ("on-failure", "SIGTERM")


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (Debian: systemd) is needed to verify the unit"
    # verify wants the commands to exist: the checkout's afxdp-proxy stands in for the installed one
    text = UNIT.read_text().replace("=afxdp-proxy ", f"={COMMAND} ").replace("=+afxdp-proxy ", f"=+{COMMAND} ")
    (tmp_path / UNIT.name).write_text(text)
    (tmp_path / "afxdp-proxy@edge1.service").symlink_to(UNIT.name)
    r = subprocess.run([analyze, "verify", str(tmp_path / "afxdp-proxy@edge1.service")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr


@pytest.mark.root
def test_the_unit_runs_the_proxy_as_systemd_would(tmp_path: Path) -> None:
    s = _service()
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed"
    caps = ",".join("+" + c.removeprefix("CAP_").lower() for c in s["CapabilityBoundingSet"].split())
    wrap = [setpriv, f"--bounding-set=-all,{caps}", "--inh-caps=-all", "--"]
    pinfs, check = [v for k, v in _settings() if k == "ExecStartPre"]
    with Testbed("attached") as tb:
        instance = tb.ns_proxy  # NetworkNamespacePath=/run/netns/%i
        (tmp_path / f"{instance}.toml").write_text(tb.proxy_config())
        tb.set_stacks(dynamic_stacks(tb.sf_label))
        # "+": as root, in the host's namespaces
        r = subprocess.run(_command(pinfs, instance, tmp_path), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and keep.is_bpffs(keep.PIN_ROOT), r.stdout + r.stderr
        # journald's stream: JOURNAL_STREAM names the pipe the service's stderr is
        r_fd, w_fd = os.pipe()
        os.set_blocking(r_fd, False)
        st = os.fstat(w_fd)
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        pre = netns.run(instance, [*wrap, *_command(check, instance, tmp_path)], timeout=60, env=env)
        assert pre.returncode == 0, pre.stdout + pre.stderr
        proc = netns.popen(instance, [*wrap, *_command(s["ExecStart"], instance, tmp_path)], env=env,
                           stdout=w_fd, stderr=w_fd)
        os.close(w_fd)
        log, name = "", ""

        def said(text: str) -> bool:
            nonlocal log
            with contextlib.suppress(BlockingIOError):
                log += os.read(r_fd, 65536).decode()
            return text in log

        try:
            netns.wait_until(lambda: any(i["pid"] == proc.pid for i in state.running().values())
                             or proc.poll() is not None, 15, what="the proxy to attach")
            assert proc.poll() is None, "the proxy exited"
            # no proxy.name in the file: the instance is the namespace's name, the unit's %i
            name = next(n for n, i in state.running().items() if i["pid"] == proc.pid)
            assert tb.ping(count=3).ok
            # systemctl reload: ExecReload with $MAINPID
            reload = s["ExecReload"].replace("$MAINPID", str(proc.pid)).split()
            assert subprocess.run(reload, timeout=10).returncode == 0
            netns.wait_until(lambda: said("reloaded") or proc.poll() is not None, 15, what="the reload")
            assert proc.poll() is None, "the reload stopped the proxy"
            assert tb.ping(count=3).ok
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(float(s["TimeoutStopSec"].removesuffix("s")))
            said("")
            kept, pinned = keep.read(name), (keep.pin_dir(name) / "axp_cache").exists()
            # stopped for good as the unit's header says: `afxdp-proxy forget %i`, from the host
            forgot = subprocess.run(_command("afxdp-proxy forget %i", instance, tmp_path), capture_output=True,
                                    text=True, timeout=60)
        finally:
            netns.stop(proc)
            with os.fdopen(r_fd) as f, contextlib.suppress(BlockingIOError, TypeError):
                log += f.read() or ""
            if name:
                keep.forget(name)
    assert rc == 0, log
    # info only (the peers' offloads it cannot see without CAP_SYS_ADMIN are "unknown", not warnings)
    lines = log.splitlines()
    assert lines and all(line.startswith("<6>afxdp-proxy: ") for line in lines), log
    assert any(line.startswith("<6>afxdp-proxy: kernel backend") for line in lines)
    assert any(line.startswith("<6>afxdp-proxy: reloaded ") for line in lines), log
    assert lines[-1].startswith("<6>afxdp-proxy: stopped after"), log
    # --keep-cache, with the unit's capabilities only: the cache is pinned for the next start
    assert kept and kept["backend"] == "kernel" and pinned, kept
    assert name == instance, name
    assert forgot.returncode == 0 and keep.read(instance) is None, forgot.stdout + forgot.stderr
    assert not keep.pin_dir(instance).exists()
