"""`afxdp-proxy check` and the checks `run` makes first: on a testbed a good configuration passes;
every kind of failure, provoked for real, gives its one line and exit status 2, and `run` refuses
with the same line; what run fixes itself (GRO) it says; --json parses."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyroute2.ethtool import Ethtool

from afxdp_proxy import bpf
from afxdp_proxy.check import ERROR, FIXED, OK, STATUSES, WARN, Finding, Report
from afxdp_proxy.lab import netns
from afxdp_proxy.lab.testbed import Testbed

QUEUES = 2  # veths with 2 queues, so that one end can be given fewer than its peer


def _cli(tb: Testbed, *args: str, config: str, tmp_path: Path,
         wrap: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    path = tmp_path / "proxy.toml"
    path.write_text(config)
    argv = [*wrap, sys.executable, "-m", "afxdp_proxy", args[0], "--config", str(path), *args[1:]]
    return netns.run(tb.ns_proxy, argv, timeout=60)


@pytest.fixture(scope="module")
def tb() -> Iterator[Testbed]:
    bed = Testbed("attached", queues=QUEUES).up()
    yield bed
    assert bed.down() == []


def _findings(r: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    """(status, line) of each finding printed by `check`, the summary line left out."""
    out = []
    for line in r.stdout.splitlines():
        status, _, rest = line.partition(" ")
        if status in STATUSES:
            out.append((status, rest.strip()))
    return out


def _refuses_alike(tb: Testbed, tmp_path: Path, config: str) -> str:
    """`check` exits 2 with exactly one error line, and `run` refuses with that line: the line."""
    r = _cli(tb, "check", config=config, tmp_path=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [line for status, line in _findings(r) if status == ERROR]
    assert len(errors) == 1, r.stdout
    assert r.stdout.splitlines()[-1].endswith("run would refuse")
    run = _cli(tb, "run", "-d", "2", config=config, tmp_path=tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.strip().splitlines() == [f"afxdp-proxy: error: {errors[0]}"]
    return errors[0]


@pytest.mark.parametrize("backend", ["kernel", "afxdp"])
@pytest.mark.root
def test_a_good_configuration_passes(tb: Testbed, tmp_path: Path, backend: str) -> None:
    r = _cli(tb, "check", config=tb.proxy_config(backend=backend), tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    found = _findings(r)
    assert [f for f in found if f[0] != OK] == [], r.stdout
    checks = {line.split(":")[0] for _, line in found}
    assert {"privileges", "bpf", "bpffs", "sf[0].net_in", "sf[0].to_sf", "sf[0].sf_mac"} <= checks
    assert ("af_xdp" in checks) == (backend == "afxdp")
    assert ("proxy.frame_size" in checks) == (backend == "afxdp")


@pytest.mark.root
def test_json_parses(tb: Testbed, tmp_path: Path) -> None:
    r = _cli(tb, "check", "--json", config=tb.proxy_config(), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["exit_code"] == 0
    assert doc["counts"]["ok"] == len(doc["checks"])
    for c in doc["checks"]:
        assert set(c) == {"check", "subject", "status", "message", "fix", "line"}
        assert c["line"].startswith(c["subject"] + ": ")
    # and a failing one says why in the same form
    r = _cli(tb, "check", "--json", config=tb.proxy_config(net_out="nope0"), tmp_path=tmp_path)
    doc = json.loads(r.stdout)
    assert r.returncode == 2 and doc["ok"] is False and doc["exit_code"] == 2
    (bad,) = [c for c in doc["checks"] if c["status"] == ERROR]
    assert bad["check"] == "interface" and bad["subject"] == "sf[0].net_out"


# ---- each failure, provoked for real -------------------------------------------------------------


@contextlib.contextmanager
def _peer_mtu(tb: Testbed, mtu: int) -> Iterator[None]:
    tb.ns("src").link_set(tb.src_wire, mtu=mtu)
    try:
        yield
    finally:
        tb.ns("src").link_set(tb.src_wire, mtu=tb.link_mtu)


@contextlib.contextmanager
def _down(tb: Testbed, ifname: str) -> Iterator[None]:
    tb.ns("proxy").link_set(ifname, state="down")
    try:
        yield
    finally:
        tb.ns("proxy").link_up(ifname)
        tb.ns("proxy").wait_up(ifname)


@contextlib.contextmanager
def _sf_without_xdp(tb: Testbed) -> Iterator[None]:
    """The SF's interface without its XDP_PASS program (and GRO off, as the testbed keeps it):
    p_sf_tx's peer runs no NAPI, so frames redirected to p_sf_tx would vanish."""
    fd = bpf.check(bpf.lib.axp_prog_fd_by_id(tb.prog_ids["tb_xdp_pass"]), "tb_xdp_pass")  # keeps it loaded
    index = tb.ifindex("sf", tb.sf_in)
    try:
        with netns.enter(tb.ns_sf):
            # with the program's ID: axp_xdp_detach without one asks libbpf to replace "no program"
            bpf.xdp_detach(index, prog_id=tb.prog_ids["tb_xdp_pass"], flags=bpf.XDP_FLAGS_DRV_MODE)
        assert tb.ns("sf").get_features(tb.sf_in)["rx-gro"] is False
        yield
    finally:
        with netns.enter(tb.ns_sf):
            bpf.xdp_attach(index, fd)
        bpf.lib.axp_close_fd(fd)


def _set_rx_queues(tb: Testbed, ifname: str, n: int) -> None:
    with netns.enter(tb.ns_proxy), Ethtool() as eth:
        eth.set_channels(ifname, {"rx_count": n})  # pyroute2 wants a dict of the fields to change


@contextlib.contextmanager
def _fewer_rx_queues(tb: Testbed) -> Iterator[None]:
    """p_in down to 1 RX queue while its peer keeps sending on 2 TX queues."""
    _set_rx_queues(tb, tb.net_in, 1)
    try:
        yield
    finally:
        _set_rx_queues(tb, tb.net_in, QUEUES)


@contextlib.contextmanager
def _mtu(tb: Testbed, ifname: str, mtu: int) -> Iterator[None]:
    tb.ns("proxy").link_set(ifname, mtu=mtu)
    try:
        yield
    finally:
        tb.ns("proxy").link_set(ifname, mtu=tb.link_mtu)


FAILURES: dict[str, tuple[Callable[[Testbed], contextlib.AbstractContextManager], dict, str, tuple[str, ...]]] = {
    # name: (provocation, config overrides, the line's start, words it must carry)
    "peer_mtu": (lambda tb: _peer_mtu(tb, 3600), {}, "sf[0].net_in: its veth peer src_out",
                 ("MTU 3600", "ERANGE", "ip link set src_out mtu 3506")),
    "missing_interface": (lambda tb: contextlib.nullcontext(), {"net_out": "nope0"},
                          "sf[0].net_out: no interface 'nope0'", ("no namespace under /run/netns has one",
                                                                  "check the name", "ip netns exec")),
    # the receiver's interface: in another namespace, which the line names
    "interface_elsewhere": (lambda tb: contextlib.nullcontext(), {"net_out": "dst0"},
                            "sf[0].net_out: no interface 'dst0'", ("it is in namespace", "-dst",
                                                                   "run the proxy ", "(ip netns exec ",
                                                                   " afxdp-proxy ...), or name an interface of this "
                                                                   "namespace")),
    "interface_down": (lambda tb: _down(tb, "p_out"), {}, "sf[0].net_out: p_out is down", ("ip link set p_out up",)),
    "redirect_target": (_sf_without_xdp, {}, "sf[0].to_sf: frames redirected to p_sf_tx vanish",
                        ("sf_in", "no XDP program", "GRO off", "link set dev sf_in xdp obj", "probe.bpf.o sec xdp")),
    "queues": (_fewer_rx_queues, {}, "sf[0].net_in: its veth peer src_out",
               ("2 TX queues", "1 RX queue", "ENOSPC", "ethtool -L src_out tx 1")),
    "frame_size": (lambda tb: _mtu(tb, "p_in", 1800), {"backend": "afxdp", "frame_size": 2048},
                   "proxy.frame_size: 2048 bytes", ("MTU 1800", "2134", "frame_size = 4096")),
    # an SF on a VLAN: two tags' room more (1710 + 14 + 8 + 64 + 256 = 2052 > 2048; untagged, 2044, fits)
    "frame_size_vlan": (lambda tb: _mtu(tb, "p_in", 1710), {"backend": "afxdp", "frame_size": 2048, "vlan_in": 10},
                        "proxy.frame_size: 2048 bytes", ("MTU 1710", "+ 22 +", "2052")),
}


@pytest.mark.root
@pytest.mark.parametrize("kind", list(FAILURES))
def test_each_failure_gives_its_line_and_run_refuses_alike(tb: Testbed, tmp_path: Path, kind: str) -> None:
    provoke, overrides, start, words = FAILURES[kind]
    with provoke(tb):
        line = _refuses_alike(tb, tmp_path, tb.proxy_config(**overrides))
    assert line.startswith(start), line
    for word in words:
        assert word in line, (word, line)
    # put back, the testbed passes again
    r = _cli(tb, "check", config=tb.proxy_config(backend=overrides.get("backend", "kernel")), tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout


@pytest.mark.root
def test_the_reverse_direction_is_checked_in_its_roles(tb: Testbed, tmp_path: Path) -> None:
    """[sf.reverse] on this testbed, which classifies one direction only: its net_out (p_in) and
    to_sf (p_sf_rx) are redirect targets whose peers (the sender's src_out, the SF's sf_out) run
    no XDP program, so frames sent there would vanish: check names both by their reverse fields;
    its net_in (p_out) gets the XDP checks of a net_in."""
    r = _cli(tb, "check", config=tb.proxy_config(reverse=True), tmp_path=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    errors = sorted(line for status, line in _findings(r) if status == ERROR)
    assert len(errors) == 2, r.stdout
    assert errors[0].startswith("sf[0].reverse.net_out: frames redirected to p_in vanish: its veth peer src_out")
    assert errors[1].startswith("sf[0].reverse.to_sf: frames redirected to p_sf_rx vanish: its veth peer sf_out")
    oks = [line for status, line in _findings(r) if status == OK]
    assert any(line.startswith("sf[0].reverse.net_in: native XDP on p_out") for line in oks), r.stdout
    assert any(line.startswith("sf[0].reverse.sf_mac: ") for line in oks), r.stdout


@pytest.mark.root
def test_privileges_are_checked(tb: Testbed, tmp_path: Path) -> None:
    """Without CAP_PERFMON the verifier rejects the parser: check says so before run tries."""
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed"
    wrap = (setpriv, "--bounding-set=-all,+bpf,+net_admin", "--inh-caps=-all", "--")
    r = _cli(tb, "check", config=tb.proxy_config(), tmp_path=tmp_path, wrap=wrap)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = [x for s, x in _findings(r) if s == ERROR]
    assert line.startswith("privileges: missing CAP_PERFMON; "), line
    run = _cli(tb, "run", "-d", "1", config=tb.proxy_config(), tmp_path=tmp_path, wrap=wrap)
    assert run.returncode == 2 and run.stderr.strip() == f"afxdp-proxy: error: {line}"


@pytest.mark.root
def test_gro_is_fixed_by_run_and_said(tb: Testbed, tmp_path: Path) -> None:
    tb.ns("proxy").set_features(tb.net_in, rx_gro=True)
    try:
        r = _cli(tb, "check", config=tb.proxy_config(), tmp_path=tmp_path)
        assert r.returncode == 0
        line = ("sf[0].net_in: p_in has GRO on, which would merge packets whose stacks differ; run turns it off "
                "while it runs and back on when it stops")
        assert [f for f in _findings(r) if f[0] != OK] == [(FIXED, line)]
        run = _cli(tb, "run", "-d", "1", config=tb.proxy_config(), tmp_path=tmp_path)
        assert run.returncode == 0, run.stderr
        assert run.stderr.splitlines()[0] == f"afxdp-proxy: {line}"
        assert tb.ns("proxy").get_features(tb.net_in)["rx-gro"] is True  # put back on at exit
    finally:
        tb.ns("proxy").set_features(tb.net_in, rx_gro=False)


@pytest.mark.root
def test_run_logs_json_records(tb: Testbed, tmp_path: Path) -> None:
    r = _cli(tb, "run", "-d", "2.5", "--log-format", "json", "--log-interval", "1", config=tb.proxy_config(),
             tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # no live line: stdout is no terminal
    records = [json.loads(line) for line in r.stderr.splitlines()]
    assert records[0]["event"] == "started" and records[-1]["event"] == "stopped"
    assert any(x["event"] == "counters" for x in records)
    for x in records:
        assert {"time", "level", "message"} <= set(x) and x["level"] == "info"
    assert "rx_popped" in records[-1] and "in_flight" in records[-1]



@pytest.mark.root
def test_a_second_proxy_is_told_which_proxy_holds_the_interfaces(tb: Testbed, tmp_path: Path) -> None:
    """A trial started a config again while proxy tr16a ran on its interfaces: `run` said only
    'p_in already runs XDP program N'. Now it names the proxy and its pid, as check does."""
    from afxdp_proxy import state

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    config = tb.proxy_config().replace("[proxy]\n", '[proxy]\nname = "trialfix-first"\n', 1)
    (first / "proxy.toml").write_text(config)
    proxy = netns.popen(tb.ns_proxy, [sys.executable, "-m", "afxdp_proxy", "run", "--config",
                                      str(first / "proxy.toml"), "-q"], die_with_parent=True,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        netns.wait_until(lambda: "trialfix-first" in state.running() or proxy.poll() is not None, 30,
                         what="the first proxy to start")
        assert proxy.poll() is None, proxy.stderr.read() if proxy.stderr else ""
        again = config.replace('name = "trialfix-first"', 'name = "trialfix-second"')
        r = _cli(tb, "run", "-d", "1", config=again, tmp_path=second)
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        want = (f"proxy trialfix-first (pid {proxy.pid}) runs on {{}} (XDP program ", f"; stop it first "
                f"(kill {proxy.pid}) or give another interface")
        assert len(lines) == 2, lines  # XDP on net_in and on from_sf
        for line, field, name in zip(lines, ("sf[0].net_in", "sf[0].from_sf"), (tb.net_in, tb.from_sf), strict=True):
            assert line.startswith(f"afxdp-proxy: error: {field}: " + want[0].format(name)), line
            assert line.endswith(want[1]), line
    finally:
        netns.stop(proxy)
        if proxy.stderr:
            proxy.stderr.close()
    netns.wait_until(lambda: "trialfix-first" not in state.running(), 10, what="the first proxy to leave /run")


@pytest.mark.root
def test_interfaces_of_another_namespace_are_one_line_that_says_run_there(tmp_path: Path) -> None:
    """A trial ran the proxy in the host's namespace with a file for namespace tr16-proxy: four
    lines, one per interface, each telling to move the interface here. Now the interfaces found
    together in one namespace are one line, which says to run the proxy there; one found nowhere
    keeps its own line; check and run say the same."""
    import os

    ns, tag = f"axpt-{os.getpid()}", f"tfa{os.getpid() % 100000}"
    names = [f"{tag}{r}" for r in ("i", "o", "t")]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for a, b in ((names[0], names[1]), (names[2], f"{tag}u")):  # veth: this kernel has no dummy
            subprocess.run(["ip", "-n", ns, "link", "add", a, "type", "veth", "peer", "name", b], check=True)
        path = tmp_path / "p.toml"
        path.write_text(f'[[sf]]\nlabel = 1000\nnet_in = "{names[0]}"\nnet_out = "{names[1]}"\n'
                        f'to_sf = "{names[2]}"\nfrom_sf = "{tag}nowhere"\nsf_mac = "02:00:00:00:00:01"\n')
        argv = [sys.executable, "-m", "afxdp_proxy"]
        check = subprocess.run([*argv, "check", "--config", str(path)], capture_output=True, text=True, timeout=60)
        assert check.returncode == 2, check.stdout + check.stderr
        errors = [line for status, line in _findings(check) if status == ERROR]
        assert errors == [
            f"sf[0].net_in: no interface '{names[0]}', '{names[1]}' or '{names[2]}' in this network namespace; "
            f"they are in namespace {ns}: run the proxy there (ip netns exec {ns} afxdp-proxy ...), or name "
            "interfaces of this namespace",
            f"sf[0].from_sf: no interface '{tag}nowhere' in this network namespace; no namespace under /run/netns "
            "has one either: check the name (ip -br link), or run the proxy inside the namespace that holds it "
            "(ip netns exec NS ...)"], check.stdout
        run = subprocess.run([*argv, "run", "--config", str(path), "-d", "1"], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 2
        assert run.stderr.strip().splitlines() == [f"afxdp-proxy: error: {line}" for line in errors]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)

# ---- without a testbed ------------------------------------------------------------------------


def test_report_lines_and_exit_code() -> None:
    f = Finding("interface", "sf[0].net_out", ERROR, "p_out is down", "bring it up: ip link set p_out up")
    assert f.line() == "sf[0].net_out: p_out is down; bring it up: ip link set p_out up"
    assert Finding("bpf", "bpf", OK, "XDP and TC programs load").line() == "bpf: XDP and TC programs load"
    ok = Report([Finding("bpf", "bpf", OK, "fine"), Finding("bpffs", "bpffs", WARN, "missing", "mount it")])
    assert ok.exit_code == 0
    assert ok.text().endswith("0 errors, 1 warning, 0 unknown, 0 fixed by run, 1 ok: run can start")
    bad = Report([*ok.findings, f])
    assert bad.exit_code == 2 and bad.as_dict()["ok"] is False
    assert bad.text().splitlines()[2] == "error   " + f.line()


@pytest.mark.parametrize(("features", "fixed", "vlan_in", "want"), [
    ({"rx-vlan-hw-parse": False, "rx-vlan-stag-hw-parse": False}, set(), 0, OK),
    ({"rx-vlan-hw-parse": True, "rx-vlan-stag-hw-parse": False}, set(), 10, FIXED),
    ({"rx-vlan-hw-parse": True}, {"rx-vlan-hw-parse"}, 0, WARN),
    ({"rx-vlan-hw-parse": False, "rx-vlan-stag-hw-parse": True}, {"rx-vlan-stag-hw-parse"}, 10, ERROR),
], ids=["off", "run_turns_it_off", "fixed_no_vlans", "fixed_with_vlans"])
def test_vlan_stripping_on_net_in(features: dict[str, bool], fixed: set[str], vlan_in: int, want: str) -> None:
    """A NIC that strips VLAN tags on net_in: run turns it off; where the driver cannot, an error
    when an SF names a VLAN, a warning otherwise, one line naming the interface."""
    from afxdp_proxy.check import _If, check_vlan_stripping
    from afxdp_proxy.config import parse_config

    sf = {"label": 1000, "net_in": "eth1", "net_out": "eth2", **({"vlan_in": vlan_in} if vlan_in else {})}
    cfg = parse_config({"proxy": {"topology": "inline"}, "sf": [sf]})
    f = check_vlan_stripping(cfg, _If("eth1", "sf[0].net_in", {"net_in"}, features=features, fixed=fixed))
    assert f.status == want and f.subject == "sf[0].net_in" and "\n" not in f.line()
    if want in (WARN, ERROR):
        assert f.line().startswith(f"sf[0].net_in: eth1 strips VLAN tags before XDP sees the frame and cannot stop "
                                   f"({next(iter(fixed))} fixed on)")


def test_check_help_lists_every_check() -> None:
    r = subprocess.run([sys.executable, "-m", "afxdp_proxy", "check", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0
    for word in ("privileges", "bpffs", "xdp_mtu", "queues", "redirect", "frame_size", "exit status"):
        assert word in r.stdout


def test_a_configuration_that_does_not_parse_is_the_first_finding(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[proxy]\nkey = "meta"\n[[sf]]\nlabel = 1000\nnet_in = "a"\nnet_out = "b"\n')
    argv = [sys.executable, "-m", "afxdp_proxy", "check", "--config", str(path)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stdout.splitlines()[0].startswith('error   proxy.key: "meta" needs topology = "inline"')
    doc = json.loads(subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=60).stdout)
    assert doc["exit_code"] == 2 and [c["check"] for c in doc["checks"]] == ["config"]


@pytest.mark.root
def test_metrics_listen_is_checked_as_run_binds_it(tb: Testbed, tmp_path: Path) -> None:
    """A [metrics] port something else holds: check says so in the line run refuses with; free,
    it is an ok line."""
    port = 9471
    config = tb.proxy_config() + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
    holder = netns.socket_in(tb.ns_proxy, socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        line = _refuses_alike(tb, tmp_path, config)
        assert line.startswith(f"metrics.listen: cannot listen on 127.0.0.1:{port}: Address already in use"), line
    finally:
        holder.close()
    r = _cli(tb, "check", config=config, tmp_path=tmp_path)
    assert r.returncode == 0 and (OK, f"metrics.listen: 127.0.0.1:{port} can be listened on") in _findings(r)


@pytest.mark.root
def test_mtu_headroom_names_the_end_that_limits_it(tb: Testbed, tmp_path: Path) -> None:
    """A veth takes what fits its receiving end: when net_out's peer has the lower MTU, the
    warning gives that MTU and the command that raises it there, in its namespace."""
    tb.ns("dst").link_set("dst0", mtu=1500)
    try:
        r = _cli(tb, "check", config=tb.proxy_config(), tmp_path=tmp_path)
    finally:
        tb.ns("dst").link_set("dst0", mtu=tb.link_mtu)
    [line] = [line for status, line in _findings(r) if status == WARN and line.startswith("sf[0].net_out: MTU")]
    assert line.startswith(f"sf[0].net_out: MTU 1500 (of its veth peer dst0 (namespace {tb.nsname('dst')})) "
                           "cannot carry the SF links' 1500-byte packets"), line
    assert line.endswith(f"raise it to 1564 or more (ip netns exec {tb.nsname('dst')} ip link set dst0 mtu 1564), "
                         "or lower the SF links' MTU to 1436"), line
    # both ends too low: one round of fixes raises both (a trial raised p_out, then was told of dst0)
    tb.ns("dst").link_set("dst0", mtu=1500)
    tb.ns("proxy").link_set("p_out", mtu=1500)
    try:
        r = _cli(tb, "check", config=tb.proxy_config(), tmp_path=tmp_path)
    finally:
        tb.ns("proxy").link_set("p_out", mtu=tb.link_mtu)
        tb.ns("dst").link_set("dst0", mtu=tb.link_mtu)
    [line] = [line for status, line in _findings(r) if status == WARN and line.startswith("sf[0].net_out: MTU")]
    assert (f"raise it to 1564 or more (ip link set p_out mtu 1564; ip netns exec {tb.nsname('dst')} ip link set "
            "dst0 mtu 1564)") in line, line


@pytest.mark.root
def test_a_next_hop_mac_is_learned_from_a_veth_peer_in_another_namespace(tb: Testbed, tmp_path: Path) -> None:
    """With no neighbour entry on net_out (flushed), the next hop's MAC is its veth peer's,
    read across the namespace boundary: a configuration without next_hop_mac checks and runs
    however long the neighbour table has been quiet."""
    from pyroute2 import IPRoute

    from afxdp_proxy import iface as ifc
    from afxdp_proxy.lab.testbed import DST0

    kept = json.loads(tb.run("proxy", ["ip", "-j", "neigh", "show", "dev", tb.net_out]).stdout or "[]")
    assert tb.run("proxy", ["ip", "neigh", "flush", "dev", tb.net_out, "nud", "all"]).returncode == 0
    try:
        with netns.enter(tb.nsname("proxy")), IPRoute() as ipr:
            out = ifc.resolve(ipr, tb.net_out, "sf[0].net_out")
            assert ifc.neighbour_mac(ipr, out) is None
            assert ifc.learn_mac(ipr, out) == DST0.mac
        config = tb.proxy_config().replace(f'next_hop_mac = "{DST0.mac}"\n', "")
        assert "next_hop_mac" not in config
        r = _cli(tb, "check", config=config, tmp_path=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        for n in kept:  # the testbed's permanent entries, as they were
            if "lladdr" in n:
                tb.run("proxy", ["ip", "neigh", "replace", n["dst"], "lladdr", n["lladdr"], "dev", tb.net_out,
                                 "nud", "permanent"])


_SF0 = {"name": "fw1", "label": 1000, "net_in": "p_in", "net_out": "p_out", "to_sf": "p_sf_tx", "from_sf": "p_sf_rx"}


@pytest.mark.parametrize(("sfs", "lines"), [
    ([{**_SF0, "net_out": "p_in"}],
     ["sf[0].net_out: p_in is also sf[0].net_in: frames leave by the interface they arrived on (a one-armed proxy)"]),
    ([{**_SF0, "from_sf": "p_sf_tx"}],
     ["sf[0].from_sf: p_sf_tx is also sf[0].to_sf: the SF takes and returns frames on one interface "
      "(a one-armed SF)"]),
    ([{**_SF0, "from_sf": "p_in"}],
     ["sf[0].from_sf: p_in is also sf[0].net_in: one XDP program serves both roles: bare IP arriving there, "
      "whoever sends it, is taken for the SF's return (looked up, pushed, sent to net_out), all else for the "
      "network's"]),
    ([_SF0, {**_SF0, "name": "fw2", "label": 1002, "net_in": "p_sf_rx", "from_sf": "q"}],
     ["sf[0].from_sf: p_sf_rx is also sf[1].net_in: one XDP program serves both roles: bare IP arriving there, "
      "whoever sends it, is taken for the SF's return (looked up, pushed, sent to net_out), all else for the "
      "network's"]),
    ([_SF0, {**_SF0, "name": "fw2", "label": 1002, "from_sf": "q"}], []),  # a shared net_in and net_out: common
    ([{**_SF0, "reverse": {"label": 1001}}], []),  # the reverse direction's swapped roles: what it is for
], ids=["one_armed_proxy", "one_armed_sf", "net_in_is_from_sf", "across_sfs", "shared", "reverse"])
def test_an_interface_in_two_roles_is_said(sfs: list[dict], lines: list[str]) -> None:
    """A trial gave net_out = net_in's name and from_sf = net_in's name and heard nothing of it
    (both are served): check says so, and how."""
    from afxdp_proxy.check import check_shared_roles
    from afxdp_proxy.config import parse_config

    found = list(check_shared_roles(parse_config({"sf": sfs})))
    assert [f.line() for f in found] == lines
    assert all(f.status == OK for f in found)


def test_run_says_an_interface_in_two_roles_and_what_needs_seeing() -> None:
    """A typo (to_sf = net_in's name) is served as written: run logs it as check says it, with
    what was fixed, unknown or a warning; other ok lines and bpffs stay check's."""
    from afxdp_proxy.check import ERROR, FIXED, UNKNOWN, WARN, Finding, Report

    report = Report([Finding("roles", "sf[0].to_sf", OK, "p_in is also sf[0].net_in: ..."),
                     Finding("interface", "sf[0].net_in", OK, "p_in is up"),
                     Finding("gro", "sf[0].net_in", FIXED, "GRO turned off"),
                     Finding("link", "sf[0].net_out", UNKNOWN, "speed unknown"),
                     Finding("mtu", "sf[0].to_sf", WARN, "MTU 1500 leaves no room"),
                     Finding("bpffs", "/sys/fs/bpf", WARN, "none mounted"),
                     Finding("privileges", "process", ERROR, "not root")])
    assert [f.check for f in report.said_at_run()] == ["roles", "gro", "link", "mtu"]


@pytest.mark.parametrize(("backend", "key", "mounted", "says", "not_says"), [
    ("kernel", "hash", set(), ["none at /sys/fs/bpf: run does not need one",
                               "none at /run/afxdp-proxy/bpf, where run --keep-cache pins the cache",
                               "afxdp-proxy pinfs mounts one: run it in the host's mount namespace"], []),
    ("kernel", "hash", {"/sys/fs/bpf", "/run/afxdp-proxy/bpf"},
     ["mounted at /sys/fs/bpf; mounted at /run/afxdp-proxy/bpf"], ["pinfs"]),
    ("afxdp", "hash", set(), ["none at /sys/fs/bpf"], ["pinfs", "keep-cache"]),  # it keeps a file
    ("kernel", "meta", set(), ["none at /sys/fs/bpf"], ["pinfs"]),  # nothing to keep
], ids=["none", "both", "afxdp", "meta"])
def test_bpffs_is_never_a_warning(monkeypatch: pytest.MonkeyPatch, backend: str, key: str, mounted: set[str],
                                  says: list[str], not_says: list[str]) -> None:
    """Under `ip netns exec` check warned of /sys/fs/bpf with a mount that dies with the command;
    run needs no bpffs, --keep-cache (kernel) the one `afxdp-proxy pinfs` mounts."""
    from afxdp_proxy import check, keep
    from afxdp_proxy.config import parse_config

    monkeypatch.setattr(keep, "PIN_ROOT", Path("/run/afxdp-proxy/bpf"))
    monkeypatch.setattr(keep, "is_bpffs", lambda p: str(p) in mounted)
    sf = {"label": 1000, "net_in": "a", "net_out": "b"}
    topology = {"topology": "inline"} if key == "meta" else {}
    cfg = parse_config({"proxy": {"backend": backend, "key": key, **topology},
                        "sf": [sf if key == "meta" else {**sf, "to_sf": "c", "from_sf": "d"}]})
    f = check.check_bpffs(cfg)
    assert (f.status, f.fix) == (OK, ""), f
    for words in says:
        assert words in f.line(), (words, f.line())
    for words in not_says:
        assert words not in f.line(), (words, f.line())


def test_an_interface_a_running_proxy_holds_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A second proxy on interfaces in use was told of 'XDP program 268710' only: the running
    proxy's record (/run/afxdp-proxy/<name>.json) names it, by program ID (global) or, in this
    network namespace, by interface; a dead one's record or another namespace's p_in does not."""
    import os

    from afxdp_proxy import state
    from afxdp_proxy.check import xdp_taken

    monkeypatch.setattr(state, "STATE_DIR", tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    here, pid = state.netns_id(), os.getpid()
    state.write("gone", {"kind": "proxy", "pid": dead.pid, "netns": here, "interfaces": ["p_in"], "progs": [7]})
    state.write("away", {"kind": "proxy", "pid": pid, "netns": "netns-1", "interfaces": ["p_in"], "progs": [8]})
    fallback = ("sf[0].net_in: p_in already runs XDP program 7; stop the proxy or tool that attached it "
                "(bpftool net show dev p_in)")
    assert xdp_taken("sf[0].net_in", "p_in", 7).line() == fallback
    # by program ID, whatever its namespace
    assert xdp_taken("sf[0].net_in", "p_in", 8).line() == (
        f"sf[0].net_in: proxy away (pid {pid}) runs on p_in (XDP program 8); stop it first (kill {pid}) or give "
        "another interface")
    state.write("tr16a", {"kind": "proxy", "pid": pid, "netns": here, "interfaces": ["p_in", "p_out"], "progs": []})
    f = xdp_taken("sf[0].net_in", "p_in", 268710)
    assert f.status == ERROR and f.line() == (
        f"sf[0].net_in: proxy tr16a (pid {pid}) runs on p_in (XDP program 268710); stop it first (kill {pid}) or "
        "give another interface")
    assert not (tmp_path / "gone.json").exists()  # a dead proxy's record is dropped on the way
