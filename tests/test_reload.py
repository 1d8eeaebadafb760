"""Reload without a kernel: what may change live (afxdp_proxy.reload), SF slots that never move
under packets in flight, and the runner's signals: SIGHUP reloads (a file with an error keeps
the running configuration, one line naming the field), SIGTERM stops."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from afxdp_proxy import keep, runner, state
from afxdp_proxy.config import ConfigError, ProxyConfig, SfConfig
from afxdp_proxy.log import LOGGER
from afxdp_proxy.reload import RestartNeeded, SfChange, assign_slots, changes, check_live, rows_after


def _sf(name: str, label: int, **kw: object) -> SfConfig:
    return SfConfig(name=name, label=label, net_in="p_in", net_out="p_out", to_sf="p_sf_tx",
                    from_sf=f"rx_{name}", **kw)  # type: ignore[arg-type]


def _cfg(*sfs: SfConfig, **kw: object) -> ProxyConfig:
    return ProxyConfig(sfs=tuple(sfs), **kw)  # type: ignore[arg-type]


def test_only_the_sfs_change_live() -> None:
    old = _cfg(_sf("fw1", 1000))
    check_live(old, _cfg(_sf("fw1", 1001), _sf("fw2", 1002)))  # any SF change is live
    with pytest.raises(RestartNeeded, match=r"^proxy\.cache_entries: 65536 -> 1024 cannot change while"):
        check_live(old, replace(old, cache_entries=1024))
    with pytest.raises(RestartNeeded, match=r"^proxy\.backend: kernel -> afxdp .*restart"):
        check_live(old, replace(old, backend="afxdp"))
    with pytest.raises(RestartNeeded, match=r"^proxy\.max_dwell_ms: "):
        check_live(old, replace(old, max_dwell_ms=5))
    assert issubclass(RestartNeeded, ConfigError)  # the runner reports it like any config error


def test_an_sf_keeps_its_slot_by_name_and_a_new_one_takes_a_fresh_slot() -> None:
    fw1, fw2, fw3 = _sf("fw1", 1000), _sf("fw2", 1001), _sf("fw3", 1002)
    slots = assign_slots([fw1, fw2], [])
    assert slots == {"fw1": 0, "fw2": 1}
    rows = rows_after([], slots)
    # reordered, fw1 removed, fw3 added: fw2 stays in 1; fw3 does not take fw1's slot 0
    slots = assign_slots([fw3, fw2], rows)
    assert slots == {"fw2": 1, "fw3": 2}
    rows = rows_after(rows, slots)
    assert rows == ["fw1", "fw2", "fw3"]  # fw1's row keeps its name (and counters)
    # fw1 back: its old slot again
    assert assign_slots([fw1, fw2, fw3], rows)["fw1"] == 0


def test_slots_of_draining_sfs_are_not_handed_out_and_run_out_cleanly() -> None:
    rows = [f"old{i}" for i in range(64)]
    new = _sf("new", 2000)
    # every slot used once: a gone SF's slot is reused, but not one still draining
    assert assign_slots([new], rows, busy={0, 1}) == {"new": 2}
    with pytest.raises(ConfigError, match=r"^sf: no free SF slot for 'new'"):
        assign_slots([new], rows, busy=set(range(64)))


def test_changes_name_what_a_reload_does() -> None:
    fw1, fw2 = _sf("fw1", 1000), _sf("fw2", 1001)
    fw1b = replace(fw1, label=1005, next_hop_mac="02:00:00:00:02:01")
    done = changes([fw1, fw2], [fw1b], {"fw1": 0, "fw2": 1}, {"fw1": 0})
    assert [(c.kind, c.name, c.slot) for c in done] == [("removed", "fw2", 1), ("changed", "fw1", 0)]
    assert done[1].line() == "SF fw1 changed: label 1000 -> 1005; next_hop_mac (none) -> 02:00:00:00:02:01"
    assert done[0].line().startswith("SF fw2 removed: label 1001, net_in p_in")
    assert changes([fw1], [fw1], {"fw1": 0}, {"fw1": 0}) == []
    # an SF that only moves in the file (another removed before it) is not changed
    moved = replace(fw2, where="sf[0]")
    assert changes([replace(fw1, where="sf[0]"), replace(fw2, where="sf[1]")], [moved],
                   {"fw1": 0, "fw2": 1}, {"fw2": 1}) == [SfChange("removed", 0, replace(fw1, where="sf[0]"), None)]


def test_a_kept_layout_that_differs_says_how() -> None:
    assert keep.mismatch({"sets": 8192, "key": "hash"}, {"sets": 128, "key": "hash"}) == ["sets 8192 -> 128"]
    assert keep.mismatch({}, {"layout": 1}) == ["layout None -> 1"]


# ---- the runner: SIGHUP reloads, SIGTERM stops --------------------------------------------------


class FakeBackend:
    """What the runner drives, without a kernel: records the configurations it is given."""

    name = "fake"

    def __init__(self, cfg: ProxyConfig, **_: object) -> None:
        self.cfg = cfg
        self.reloads: list[ProxyConfig] = []
        self.stopped = False

    def start(self) -> None: ...

    def stop(self) -> None:
        self.stopped = True

    def reload(self, cfg: ProxyConfig) -> list[SfChange]:
        check_live(self.cfg, cfg)
        self.reloads.append(cfg)
        old = {sf.name: i for i, sf in enumerate(self.cfg.sfs)}
        new = {sf.name: i for i, sf in enumerate(cfg.sfs)}
        done = changes(self.cfg.sfs, cfg.sfs, old, new)
        self.cfg = cfg
        return done

    def tick(self) -> list[str]:
        return []

    def counters(self) -> dict[str, int]:
        return {}

    def in_flight(self) -> int:
        return 0

    def state(self) -> dict[str, object]:
        return {"sfs": [sf.name for sf in self.cfg.sfs]}


TOML = """[proxy]
name = "reload-test"
cache_entries = {entries}

[[sf]]
name = "fw1"
label = 1000
net_in = "p_in"
net_out = "p_out"
to_sf = "p_sf_tx"
from_sf = "p_sf_rx"
"""
FW2 = """
[[sf]]
name = "fw2"
label = {label}
net_in = "p_in"
net_out = "p_out"
to_sf = "p_sf_tx"
from_sf = "p_sf2_rx"
"""


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname.lower()}: {record.getMessage()}")

    def wait(self, text: str, after: int = 0, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if text in line:
                    return line
            time.sleep(0.01)
        raise TimeoutError(f"no log line with {text!r}: {self.lines}")


def test_sighup_reloads_and_a_broken_file_keeps_the_proxy_running(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "STATE_DIR", tmp_path)
    backends: list[FakeBackend] = []

    def make(cfg: ProxyConfig, **kw: object) -> FakeBackend:
        backends.append(FakeBackend(cfg, **kw))
        return backends[-1]

    monkeypatch.setattr(runner, "make_backend", make)
    # its interfaces exist nowhere: the checks a reload makes are tested on a testbed (test_e2e_bidir)
    monkeypatch.setattr(runner, "_check_reload", lambda *_: None)
    path = tmp_path / "proxy.toml"
    path.write_text(TOML.format(entries=65536))
    from afxdp_proxy.config import load_config

    handler = Lines()
    LOGGER.addHandler(handler)
    level = LOGGER.level
    LOGGER.setLevel(logging.INFO)
    steps: list[str] = []

    def operator() -> None:
        """Edits the file and sends signals, as an operator would, while the runner runs."""
        try:
            mark = len(handler.lines)
            path.write_text(TOML.format(entries=65536) + FW2.format(label=1001))
            os.kill(os.getpid(), signal.SIGHUP)
            steps.append(handler.wait("reloaded", mark))
            steps.append(handler.wait("SF fw2 added", mark))
            mark = len(handler.lines)
            path.write_text(TOML.format(entries=65536) + FW2.format(label=3))
            os.kill(os.getpid(), signal.SIGHUP)
            steps.append(handler.wait("reload refused", mark))
            mark = len(handler.lines)
            path.write_text(TOML.format(entries=1024) + FW2.format(label=1001))
            os.kill(os.getpid(), signal.SIGHUP)
            steps.append(handler.wait("reload refused", mark))
            assert state.running()["reload-test"]["sfs"] == ["fw1", "fw2"]
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=operator)
    try:
        runner.run(load_config(path), str(path), log_interval=0, ready=lambda _: helper.start())
    finally:
        helper.join(10)
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(level)
    assert steps[0].startswith("info: reloaded ") and steps[0].endswith(": 1 added, 0 removed, 0 changed"), steps
    assert steps[1] == "info: SF fw2 added: label 1001, net_in p_in, net_out p_out, to_sf p_sf_tx, from_sf p_sf2_rx"
    assert steps[2].startswith("error: reload refused: sf[1].label: 3 is out of range"), steps
    assert steps[2].endswith("(the running configuration stays)")
    assert steps[3].startswith("error: reload refused: proxy.cache_entries: 65536 -> 1024 cannot change"), steps
    [backend] = backends
    assert [len(c.sfs) for c in backend.reloads] == [2]  # neither refused file reached the backend's SFs
    assert backend.stopped and handler.lines[-1].startswith("info: stopped after")
    assert "reload-test" not in state.running()


def test_a_second_proxy_of_one_name_is_refused_with_where_the_first_runs(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal names the namespace and pid of the proxy that holds the name."""
    monkeypatch.setattr(state, "STATE_DIR", tmp_path)
    path = tmp_path / "proxy.toml"
    path.write_text(TOML.format(entries=65536))
    from afxdp_proxy.config import load_config

    state.write("reload-test", {"kind": "proxy", "pid": os.getpid(), "netns": "netns-4026532999"})
    with pytest.raises(RuntimeError, match=r"a proxy named 'reload-test' is already running in network namespace "
                                           rf"netns-4026532999 \(pid {os.getpid()}\); stop it or set proxy.name"):
        runner.run(load_config(path), str(path), log_interval=0)
    state.write("reload-test", {"kind": "proxy", "pid": os.getpid(), "netns": state.netns_id()})
    with pytest.raises(RuntimeError, match=r"already running in this network namespace \(pid "):
        runner.run(load_config(path), str(path), log_interval=0)


def test_every_proxy_name_has_a_pin_directory_a_bpffs_takes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A bpffs refuses '.' in a name (EPERM), which proxy and namespace names may hold: a trial's
    `kernel-hash:cache_entries=4096` bench variant could not start ("run as root", as root)."""
    monkeypatch.setattr(keep, "PIN_ROOT", tmp_path)
    monkeypatch.setattr(keep, "KEPT_DIR", tmp_path / "kept")  # no records: the names come from the pins
    names = ["fw", "a.b", "a+b", "a+2Eb", "a.+.b", "x-y_z.1"]
    dirs = [keep.pin_dir(n) for n in names]
    assert all(d.parent == tmp_path and "." not in d.name for d in dirs), dirs
    assert len(set(dirs)) == len(names), dirs
    for d in dirs:
        d.mkdir()
    assert sorted(keep.kept()) == sorted(names)


def test_a_dead_proxys_record_goes_whatever_kind_is_asked_for(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`testbed down` (which asks for testbeds) after a SIGKILL left the proxy's record behind until
    a command asking for proxies came by (a trial)."""
    import json
    import subprocess

    monkeypatch.setattr(state, "STATE_DIR", tmp_path)
    dead = subprocess.Popen(["true"])  # its pid, once reaped, is no process's
    dead.wait()
    (tmp_path / "edge.json").write_text(json.dumps({"kind": "proxy", "pid": dead.pid}))
    (tmp_path / "testbed-t.json").write_text(json.dumps({"kind": "testbed", "prefix": "t"}))
    assert list(state.running("testbed")) == ["testbed-t"]
    assert not (tmp_path / "edge.json").exists()
