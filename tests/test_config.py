"""Config validation: every error is one line naming the field, and the CLI exits non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from afxdp_proxy.config import ConfigError, load_config, meta_mark_layout, parse_config

GOOD = {
    "proxy": {"backend": "kernel", "key": "hash", "topology": "attached"},
    "sf": [{"name": "fw1", "label": 1000, "net_in": "p_in", "net_out": "p_out",
            "to_sf": "p_sf_tx", "from_sf": "p_sf_rx", "sf_mac": "02:00:00:00:00:01"}],
}


def _meta(mask: object) -> dict:
    return {"proxy": {"key": "meta", "topology": "inline", "meta_mark_mask": mask},
            "sf": [{"label": 1000, "net_in": "a", "net_out": "b"}]}


def _with(proxy: dict | None = None, sf: dict | None = None, drop: str | None = None) -> dict:
    data = {"proxy": {**GOOD["proxy"], **(proxy or {})}, "sf": [{**GOOD["sf"][0], **(sf or {})}]}
    if drop:
        data["sf"][0].pop(drop)
    return data


def test_good_config_and_defaults() -> None:
    cfg = parse_config(GOOD)
    assert (cfg.backend, cfg.key, cfg.topology) == ("kernel", "hash", "attached")
    assert (cfg.cache_entries, cfg.on_miss, cfg.max_dwell_ms, cfg.max_per_key) == (65536, "pass", 1000, 64)
    assert cfg.cache_sets == 8192
    assert cfg.sfs[0].label == 1000 and cfg.sfs[0].sf_mac == "02:00:00:00:00:01"
    assert cfg.sfs[0].next_hop_mac is None


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (_with(proxy={"backend": "dpdk"}), "proxy.backend"),
        (_with(proxy={"key": "random"}), "proxy.key"),
        (_with(proxy={"key": "meta"}), "proxy.key"),  # meta needs inline
        (_with(proxy={"topology": "mesh"}), "proxy.topology"),
        (_with(proxy={"cache_entries": 0}), "proxy.cache_entries"),
        (_with(proxy={"cache_entries": "many"}), "proxy.cache_entries"),
        (_with(proxy={"on_miss": "ignore"}), "proxy.on_miss"),
        # last: attached (inline the host's own traffic has no entry either), caching backends only
        ({"proxy": {"topology": "inline", "on_miss": "last"}, "sf": [{"label": 1000, "net_in": "a", "net_out": "b"}]},
         "proxy.on_miss"),
        (_with(proxy={"backend": "static", "on_miss": "last"}, sf={"static_stack": [2000]}), "proxy.on_miss"),
        # meta_mark_mask: meta keys only, one contiguous run of 16 bits or more
        (_with(proxy={"meta_mark_mask": 0xFFFF0000}), "proxy.meta_mark_mask"),
        (_meta(0x0000F000), "proxy.meta_mark_mask"),
        (_meta(0xFF00FF00), "proxy.meta_mark_mask"),
        (_meta(0), "proxy.meta_mark_mask"),
        (_meta(1 << 32), "proxy.meta_mark_mask"),
        (_meta("0xffff0000"), "proxy.meta_mark_mask"),
        (_with(proxy={"on_conflict": "drop"}), "proxy.on_conflict"),  # removed: the message says what replaced it
        (_with(proxy={"max_dwell_ms": 0}), "proxy.max_dwell_ms"),
        (_with(proxy={"max_dwell_ms": 3_600_001}), "proxy.max_dwell_ms"),
        (_with(proxy={"max_dwell_ms": 1.5}), "proxy.max_dwell_ms"),
        (_with(proxy={"max_per_key": 0}), "proxy.max_per_key"),
        (_with(proxy={"max_per_key": 256}), "proxy.max_per_key"),
        (_with(proxy={"dwell_sample": 0}), "proxy.dwell_sample"),
        (_with(proxy={"dwell_sample": 12}), "proxy.dwell_sample"),  # not a power of two
        (_with(proxy={"dwell_sample": 1 << 17}), "proxy.dwell_sample"),
        (_with(proxy={"colour": "blue"}), "proxy.colour"),
        # the name heads files under /run/afxdp-proxy: '.' and '..' made hidden ones (a trial)
        (_with(proxy={"name": "."}), "proxy.name"),
        (_with(proxy={"name": ".."}), "proxy.name"),
        (_with(proxy={"name": ".edge"}), "proxy.name"),
        (_with(proxy={"name": "a/b"}), "proxy.name"),
        (_with(sf={"label": 1 << 20}), "sf[0].label"),
        (_with(sf={"label": 3}), "sf[0].label"),  # reserved label
        (_with(sf={"label": True}), "sf[0].label"),
        (_with(drop="label"), "sf[0].label"),
        (_with(drop="net_in"), "sf[0].net_in"),
        (_with(drop="to_sf"), "sf[0].to_sf"),
        (_with(sf={"net_out": "a very long interface name"}), "sf[0].net_out"),
        (_with(sf={"sf_mac": "02:00:00:00:00"}), "sf[0].sf_mac"),
        (_with(sf={"next_hop_mac": "zz:00:00:00:00:00"}), "sf[0].next_hop_mac"),
        (_with(sf={"static_stack": [2000]}), "sf[0].static_stack"),  # kernel backend
        (_with(sf={"speed": 1}), "sf[0].speed"),
        ({"proxy": {"topology": "inline"}, "sf": [{"label": 1000, "net_in": "a", "net_out": "b",
                                                   "to_sf": "c"}]}, "sf[0].to_sf"),
        ({"proxy": {"backend": "static", "topology": "inline"},
          "sf": [{"label": 1000, "net_in": "a", "net_out": "b"}]}, "sf[0].static_stack"),
        ({"proxy": {}}, "sf"),
        ({"proxy": {}, "sf": [GOOD["sf"][0], GOOD["sf"][0]]}, "sf[1].label"),
        ({"proxy": {}, "sf": [GOOD["sf"][0], {**GOOD["sf"][0], "label": 1001}]}, "sf[1].name"),
        ({"proxy": {}, "sf": [GOOD["sf"][0], {**GOOD["sf"][0], "label": 1001, "name": "x"}]}, "sf[1].from_sf"),
        ({"proxy": {}, "sf": GOOD["sf"], "extra": {}}, "config.extra"),
        # the AF_XDP backend: attached only, its knobs validated, and only for it
        (_with(proxy={"backend": "afxdp", "topology": "inline"}, drop="to_sf"), "proxy.topology"),
        (_with(proxy={"backend": "afxdp", "queues": 0}), "proxy.queues"),
        (_with(proxy={"backend": "afxdp", "queues": 65}), "proxy.queues"),
        (_with(proxy={"backend": "afxdp", "ring_size": 1000}), "proxy.ring_size"),
        (_with(proxy={"backend": "afxdp", "ring_size": 32}), "proxy.ring_size"),
        (_with(proxy={"backend": "afxdp", "frame_size": 8192}), "proxy.frame_size"),
        (_with(proxy={"backend": "afxdp", "frame_size": True}), "proxy.frame_size"),
        (_with(proxy={"backend": "afxdp", "batch_size": 0}), "proxy.batch_size"),
        (_with(proxy={"backend": "afxdp", "ring_size": 64, "batch_size": 65}), "proxy.batch_size"),
        (_with(proxy={"queues": 2}), "proxy.queues"),  # kernel backend
        (_with(proxy={"bind_mode": "copy"}), "proxy.bind_mode"),  # kernel backend
        (_with(proxy={"backend": "afxdp", "bind_mode": "zero-copy"}), "proxy.bind_mode"),
        # what real SR-MPLS links carry: VLANs, TTL
        (_with(proxy={"ttl_model": "short-pipe"}), "proxy.ttl_model"),
        (_with(proxy={"on_ttl_expired": "reply"}), "proxy.on_ttl_expired"),
        ({"proxy": {"backend": "static", "ttl_model": "pipe"},
          "sf": [{**GOOD["sf"][0], "static_stack": [2000]}]}, "proxy.ttl_model"),
        (_with(sf={"vlan_in": 0}), "sf[0].vlan_in"),
        (_with(sf={"vlan_in": 4095}), "sf[0].vlan_in"),
        (_with(sf={"vlan_in": "10"}), "sf[0].vlan_in"),
        (_with(sf={"vlan_out": 5000}), "sf[0].vlan_out"),
        (_with(sf={"vlan_out": True}), "sf[0].vlan_out"),
        ({"proxy": {}, "sf": [{**GOOD["sf"][0], "vlan_in": 10},
                              {**GOOD["sf"][0], "vlan_in": 10, "name": "x", "from_sf": "y"}]}, "sf[1].label"),
        (_with(proxy={"backend": "static", "batch_size": 32}, sf={"static_stack": [2000]}), "proxy.batch_size"),
        # the reverse direction: a table of its own, its own label, errors name its fields
        (_with(sf={"reverse": 1001}), "sf[0].reverse"),
        (_with(sf={"reverse": {}}), "sf[0].reverse.label"),
        (_with(sf={"reverse": {"label": 1000}}), "sf[0].reverse.label"),  # the forward direction's
        (_with(sf={"reverse": {"label": 1001, "colour": 1}}), "sf[0].reverse.colour"),
        (_with(sf={"reverse": {"label": 1001, "reverse": {}}}), "sf[0].reverse.reverse"),
        (_with(sf={"reverse": {"label": 1001, "name": "fw1"}}), "sf[0].reverse.name"),
        (_with(sf={"reverse": {"label": 1001, "sf_mac": "02:00"}}), "sf[0].reverse.sf_mac"),
        (_with(sf={"reverse": {"label": 1001, "from_sf": "p_sf_rx"}}), "sf[0].reverse.from_sf"),  # returns sf[0]
        (_with(proxy={"backend": "static"}, sf={"static_stack": [2000], "reverse": {"label": 1001}}),
         "sf[0].reverse.static_stack"),
        ({"proxy": {"topology": "inline"}, "sf": [{"label": 1000, "net_in": "a", "net_out": "b",
                                                   "reverse": {"label": 1001, "to_sf": "c"}}]},
         "sf[0].reverse.to_sf"),
        ({"proxy": {}, "sf": [{**GOOD["sf"][0], "name": f"s{i}", "label": 1000 + 2 * i, "from_sf": f"r{i}",
                               "to_sf": f"t{i}", "reverse": {"label": 1001 + 2 * i}} for i in range(33)]}, "sf"),
    ],
)
def test_bad_field_is_named(data: dict, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    msg = str(e.value)
    assert msg.startswith(f"{field}:"), msg
    assert "\n" not in msg


def test_vlans_and_ttl() -> None:
    cfg = parse_config(GOOD)
    assert (cfg.ttl_model, cfg.on_ttl_expired) == ("uniform", "drop")
    assert (cfg.sfs[0].vlan_in, cfg.sfs[0].vlan_out) == (0, 0)  # untagged in, out as it came
    # one label on two VLANs (and untagged): three SFs
    sfs = [{**GOOD["sf"][0], "name": f"fw{i}", "from_sf": f"r{i}", **vlan}
           for i, vlan in enumerate([{}, {"vlan_in": 10}, {"vlan_in": 4094, "vlan_out": 1}])]
    cfg = parse_config({"proxy": {"ttl_model": "pipe", "on_ttl_expired": "pass"}, "sf": sfs})
    assert (cfg.ttl_model, cfg.on_ttl_expired) == ("pipe", "pass")
    assert [(sf.vlan_in, sf.vlan_out, sf.label) for sf in cfg.sfs] == [(0, 0, 1000), (10, 0, 1000), (4094, 1, 1000)]
    static = parse_config({"proxy": {"backend": "static", "on_ttl_expired": "pass"},
                           "sf": [{**GOOD["sf"][0], "static_stack": [2000], "vlan_out": 7}]})
    assert static.on_ttl_expired == "pass" and static.sfs[0].vlan_out == 7
def test_reverse_direction_is_an_sf_with_the_interfaces_swapped() -> None:
    cfg = parse_config(_with(sf={"reverse": {"label": 1001}}))
    fwd, rev = cfg.sfs
    assert (fwd.name, fwd.where, rev.name, rev.where) == ("fw1", "sf[0]", "fw1.reverse", "sf[0].reverse")
    assert (rev.label, rev.net_in, rev.net_out, rev.to_sf, rev.from_sf) == (1001, "p_out", "p_in", "p_sf_rx", "p_sf_tx")
    assert rev.sf_mac is None and rev.next_hop_mac is None  # the other side's MACs: learned, not inherited
    assert rev.field("from_sf") == "sf[0].reverse.from_sf"
    # each interface can be set apart, and the name too
    cfg = parse_config(_with(sf={"reverse": {"label": 1001, "name": "fw1-back", "net_out": "p_back",
                                             "sf_mac": "02:00:00:00:00:02"}}))
    rev = cfg.sfs[1]
    assert (rev.name, rev.net_in, rev.net_out, rev.sf_mac) == ("fw1-back", "p_out", "p_back", "02:00:00:00:00:02")
    # inline: only net_in and net_out; static: its own stack; more SFs keep their order
    cfg = parse_config({"proxy": {"backend": "static", "topology": "inline"},
                        "sf": [{"label": 1000, "net_in": "a", "net_out": "b", "static_stack": [2000],
                                "reverse": {"label": 1001, "static_stack": []}},
                               {"name": "x", "label": 1002, "net_in": "a", "net_out": "b", "static_stack": [7]}]})
    assert [(s.name, s.net_in, s.net_out, s.to_sf, s.static_stack) for s in cfg.sfs] == [
        ("sf-1000", "a", "b", None, (2000,)), ("sf-1000.reverse", "b", "a", None, ()), ("x", "a", "b", None, (7,))]
    # an unnamed SF is named by what addresses it, not by its place: it keeps its name on a
    # reload that removes an SF above it
    two = [{"label": 1002, "net_in": "a", "net_out": "b"}, {"label": 1004, "vlan_in": 7, "net_in": "a", "net_out": "b"}]
    inline = {"topology": "inline"}
    assert [s.name for s in parse_config({"proxy": inline, "sf": two}).sfs] == ["sf-1002", "sf-1004-vlan7"]
    assert [s.name for s in parse_config({"proxy": inline, "sf": two[1:]}).sfs] == ["sf-1004-vlan7"]


def test_cache_knobs() -> None:
    cfg = parse_config(_with(proxy={"cache_entries": 17, "max_dwell_ms": 3_600_000, "max_per_key": 255}))
    assert (cfg.cache_sets, cfg.max_dwell_ms, cfg.max_per_key) == (3, 3_600_000, 255)  # whole sets of 8
    assert parse_config(GOOD).dwell_sample == 16
    assert parse_config(_with(proxy={"dwell_sample": 1})).dwell_sample == 1
    with pytest.raises(ConfigError) as e:
        parse_config(_with(proxy={"on_conflict": "replace"}))
    assert "max_per_key" in str(e.value) and "max_dwell_ms" in str(e.value)


def test_static_and_inline_meta_are_valid() -> None:
    cfg = parse_config({"proxy": {"backend": "static", "topology": "inline"},
                        "sf": [{"label": 1000, "net_in": "a", "net_out": "b", "static_stack": [2000, 3000]}]})
    assert cfg.sfs[0].static_stack == (2000, 3000)
    cfg = parse_config({"proxy": {"backend": "static", "topology": "inline"},
                        "sf": [{"label": 1000, "net_in": "a", "net_out": "b", "static_stack": []}]})
    assert cfg.sfs[0].static_stack == ()  # nothing after the SF: plain IP
    cfg = parse_config({"proxy": {"key": "meta", "topology": "inline"},
                        "sf": [{"label": 1000, "net_in": "a", "net_out": "b"}]})
    assert cfg.key == "meta"


def test_on_miss_last_and_meta_mark_mask() -> None:
    assert parse_config(_with(proxy={"on_miss": "last"})).on_miss == "last"
    assert parse_config(_with(proxy={"backend": "afxdp", "on_miss": "last"})).on_miss == "last"
    assert parse_config(_meta(0xFFFF0000)).meta_mark_mask == 0xFFFF0000 == parse_config(GOOD).meta_mark_mask
    for mask in (0x00FFFF00, 0xFFFFFFFF, 0x0001FFFE):
        assert parse_config(_meta(mask)).meta_mark_mask == mask
    assert meta_mark_layout(0x00FFFF00, 2) == (8, 14)  # 2 bits number CPUs 1..2, 14 count packets
    assert meta_mark_layout(0xFFFFFFFF, 64) == (0, 25)


def test_afxdp_knobs_and_defaults() -> None:
    cfg = parse_config(_with(proxy={"backend": "afxdp"}))
    # queues 0: as many as net_in has RX queues
    assert (cfg.queues, cfg.ring_size, cfg.frame_size, cfg.batch_size) == (0, 2048, 4096, 64)
    cfg = parse_config(_with(proxy={"backend": "afxdp", "queues": 2, "ring_size": 512, "frame_size": 2048,
                                    "batch_size": 512}))
    assert (cfg.queues, cfg.ring_size, cfg.frame_size, cfg.batch_size) == (2, 512, 2048, 512)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[proxy\nkey = ")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "afxdp_proxy", *args], capture_output=True, text=True, timeout=60)


def test_cli_config_error_is_one_line_and_nonzero(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('[proxy]\nkey = "meta"\n[[sf]]\nlabel = 1000\nnet_in = "a"\nnet_out = "b"\n'
                   'to_sf = "c"\nfrom_sf = "d"\n')
    r = _cli("run", "--config", str(cfg))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "proxy.key" in r.stderr


@pytest.mark.root
def test_cli_missing_interface_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('[proxy]\ntopology = "inline"\n[[sf]]\nlabel = 1000\nnet_in = "nosuchif0"\nnet_out = "lo"\n')
    r = _cli("run", "--config", str(cfg), "--duration", "1")
    assert r.returncode == 2, r.stderr
    assert "sf[0].net_in" in r.stderr and "nosuchif0" in r.stderr


def test_help_explains_counters() -> None:
    r = _cli("run", "--help")
    assert r.returncode == 0
    for word in ("rx_popped", "tx_miss", "--duration", "--config", "rx_key_full", "cache_inserts", "cache_takes",
                 "evictions", "expired", "in_flight", "max_dwell_ms", "max_per_key", "vlan_in", "vlan_out",
                 "rx_vlan_other", "rx_reserved_label", "rx_ttl_expired", "on_ttl_expired", "ttl_model", "tx_host",
                 "tx_miss_last", "rx_redirect_err", "on_miss", "meta_mark_mask", "[sf.reverse]", ".reverse"):
        assert word in r.stdout


def test_stats_picks_the_proxy_of_this_namespace() -> None:
    """A proxy with proxy.name set is still the one of its namespace (its state file's netns),
    however many others run on the host; another namespace's proxy only by its name."""
    from afxdp_proxy.cli import pick_instance

    live = {"edge1": {"netns": "netns-1"}, "edge2": {"netns": "netns-2"}, "netns-3": {"netns": "netns-3"}}
    assert pick_instance(live, None, "netns-2") == "edge2"
    assert pick_instance(live, None, "netns-3") == "netns-3"
    assert pick_instance(live, "edge1", "netns-2") == "edge1"
    for args in ((live, None, "netns-9"), (live, "nope", "netns-1"), ({}, None, "netns-1")):
        with pytest.raises(LookupError):
            pick_instance(*args)
    # the only proxy running, but in another namespace: taken by name only, not by default
    with pytest.raises(LookupError, match=r"no proxy runs in this network namespace; elsewhere: edge1 \(pick"):
        pick_instance({"edge1": {"netns": "netns-1"}}, None, "netns-9")
    assert pick_instance({"edge1": {"netns": "netns-1"}}, "edge1", "netns-9") == "edge1"


def test_testbed_stacks_take_the_prefix_anywhere() -> None:
    """`testbed stacks --prefix P S1 S2` and `testbed stacks S1 S2 --prefix P` mean the same,
    also with - (plain IP) among the stacks, which a fresh user's try had refused."""
    from afxdp_proxy import cli

    for argv in (["testbed", "stacks", "--prefix", "axp-none", "1000/2001", "1000"],
                 ["testbed", "stacks", "1000/2001", "1000", "--prefix", "axp-none"],
                 ["testbed", "stacks", "--prefix", "axp-none", "1000/2001", "-"],
                 ["testbed", "stacks", "1000/2001", "--prefix", "axp-none", "-"]):
        assert cli.main(argv) == 1  # parsed, then no such testbed (a usage error would exit 2)



@pytest.mark.parametrize(("action", "shown", "hidden"), [
    ("up", ["--topology", "--sf ", "--bidirectional", "--prefix"], ["--backend", "--reverse", "--all", "STACK"]),
    ("down", ["--all", "--prefix"], ["--topology", "--json", "STACK"]),
    ("status", ["--json"], ["--sf ", "--key"]),
    ("config", ["--backend", "--key"], ["--topology", "--reverse"]),
    ("stacks", ["STACK", "--reverse"], ["--sf ", "--backend", "--all"]),
    (None, ["actions:", "--topology", "--backend", "--reverse", "STACK"], []),
])
def test_testbed_help_shows_the_options_of_its_action(capsys: pytest.CaptureFixture[str], action: str | None,
                                                      shown: list[str], hidden: list[str]) -> None:
    """`testbed ACTION --help` lists what that action takes (a trial found every action's help
    was the whole testbed's); `testbed --help` lists every action and option."""
    from afxdp_proxy import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["testbed", *([action] if action else []), "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: afxdp-proxy testbed {action or ''}".rstrip()), out
    assert all(s in out for s in shown) and not any(h in out for h in hidden), out


@pytest.mark.parametrize(("argv", "said"), [
    (["status", "--prefix", "axp-none", "extra"], "testbed status: takes no stacks (extra)"),
    (["stacks", "1000", "--topology", "inline", "--prefix", "axp-none"], "testbed stacks: --topology is for up only"),
    (["config", "--sf", "nat", "--prefix", "axp-none"], "testbed config: --sf is for up only"),
    (["up", "--backend", "static"], "testbed up: --backend is for config only"),
    # given with its default value, still not this action's (a trial's `status --sf forward` ran)
    (["status", "--prefix", "axp-none", "--sf", "forward"], "testbed status: --sf is for up only"),
    (["stacks", "1000", "--prefix", "axp-none", "--topology", "attached"], "testbed stacks: --topology is for up"),
    # a trial's `down --all --prefix t15` took every testbed down, the other users' too
    (["down", "--all", "--prefix", "axp-none"], "testbed down: --all takes every testbed down, --prefix one"),
])
def test_testbed_refuses_what_an_action_does_not_take(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                     said: str) -> None:
    """An option or stack an action ignores is refused in one line, exit 2 (a trial's
    `testbed config --sf nat` exited 0 and did nothing with it)."""
    from afxdp_proxy import cli

    assert cli.main(["testbed", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err, err


@pytest.mark.parametrize(("argv", "usage"), [
    (["run", "--config", "x.toml", "--bogus"], "afxdp-proxy run"),
    (["stats", "--frob"], "afxdp-proxy stats"),
    (["testbed", "up", "--depth", "3"], "afxdp-proxy testbed up"),
    (["testbed", "status", "--what"], "afxdp-proxy testbed status"),
])
def test_an_unknown_option_names_its_command(capsys: pytest.CaptureFixture[str], argv: list[str],
                                             usage: str) -> None:
    """An option no parser knows is reported with the usage of the command (and testbed action)
    it was given to; it showed `afxdp-proxy [-h] COMMAND ...`, which lists no option at all."""
    from afxdp_proxy import cli

    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {usage} [-h]"), err
    assert f"{usage}: error: unrecognized arguments: {' '.join(argv[-2 if argv[-1] == '3' else -1:])}" in err, err


def test_testbed_down_of_no_testbed_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`testbed down --prefix TYPO`, with neither a state file nor a namespace of that prefix,
    exits 1 in one line naming the testbeds that are up (it used to exit 0)."""
    from afxdp_proxy import cli

    assert cli.main(["testbed", "down", "--prefix", "axp-no-such-bed"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no testbed 'axp-no-such-bed' is up" in err and "testbeds up:" in err, err


def test_testbed_without_an_action_asks_for_the_action_only(capsys: pytest.CaptureFixture[str]) -> None:
    from afxdp_proxy import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["testbed"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("the following arguments are required: action")


@pytest.mark.parametrize("seconds", ["0", "-1", "nan"])
def test_run_duration_must_be_above_zero(tmp_path: Path, seconds: str) -> None:
    """--duration 0 used to run forever and -1 to stop at once: both are refused, one line, exit 2."""
    r = _cli("run", "--config", str(tmp_path / "none.toml"), "--duration", seconds)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (f"afxdp-proxy run: error: argument --duration/-d: {seconds}: "
                                                 "give seconds above 0 (or leave it out to run until stopped)")


def test_stats_and_trace_without_a_proxy_exit_alike() -> None:
    """No proxy of that name: stats and trace both say so in one line and exit 2."""
    for cmd in ("stats", "trace"):
        r = _cli(cmd, "--name", "axp-no-such-proxy")
        assert r.returncode == 2, (cmd, r.stderr)
        assert r.stderr.strip().count("\n") == 0 and "axp-no-such-proxy" in r.stderr, (cmd, r.stderr)


class _InterruptedImport:
    """A meta path finder that raises KeyboardInterrupt on importing one module: Ctrl-C while it loads."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname == self.name:
            raise KeyboardInterrupt


def test_ctrl_c_while_the_cli_loads_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the first few hundred ms of `afxdp-proxy`, while its modules load, printed a
    traceback from the console script's import line (a trial); the command's entry point exits 130."""
    import tomllib

    from afxdp_proxy import entry

    monkeypatch.delitem(sys.modules, "afxdp_proxy.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_InterruptedImport("afxdp_proxy.cli"), *sys.meta_path])
    assert entry.main() == entry.EXIT_SIGINT == 130
    scripts = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["afxdp-proxy"] == "afxdp_proxy.entry:main"


def test_an_inherited_ignored_sigint_is_honoured_from_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A script's `afxdp-proxy run &` starts with SIGINT ignored; a SIGINT before the proxy set
    its own handler was lost (a trial), one after it stopped the proxy. The entry point makes
    SIGINT raise KeyboardInterrupt before it loads anything."""
    import signal

    from afxdp_proxy import cli, entry

    seen = []
    monkeypatch.setattr(cli, "main", lambda: seen.append(signal.getsignal(signal.SIGINT)) or 0)
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # main wraps them; the wrappers go with the test
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert entry.main() == 0
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == [signal.default_int_handler]


@pytest.mark.parametrize(("data", "line"), [
    ({"proxy": {}, "sf": [GOOD["sf"][0], {**GOOD["sf"][0], "name": "fw2", "from_sf": "r2"}]},
     "sf[1].label: 1000 is already used by sf[0]; give sf[1] a label of its own (or another vlan_in)"),
    ({"proxy": {}, "sf": [GOOD["sf"][0], {**GOOD["sf"][0], "label": 1001, "from_sf": "r2"}]},
     "sf[1].name: 'fw1' is already used by sf[0]; give sf[1] a name of its own (stats and reloads know an SF by it)"),
    ({"proxy": {}, "sf": [GOOD["sf"][0], {**GOOD["sf"][0], "label": 1001, "name": "fw2"}]},
     "sf[1].from_sf: p_sf_rx already returns sf[0]; give sf[1] a from_sf of its own (TX tells SFs apart by it)"),
    (_with(sf={"reverse": {"label": 1001, "from_sf": "p_sf_rx"}}),
     "sf[0].reverse.from_sf: p_sf_rx already returns sf[0]; give sf[0].reverse a from_sf of its own "
     "(TX tells SFs apart by it)"),
    # a one-armed SF has one interface to return both directions by
    (_with(sf={"from_sf": "p_sf_tx", "reverse": {"label": 1001}}),
     "sf[0].reverse.from_sf: p_sf_tx already returns sf[0]; give sf[0].reverse a from_sf of its own "
     "(TX tells SFs apart by it)"),
], ids=["label", "name", "from_sf", "from_sf_reverse", "one_armed_sf_both_ways"])
def test_a_field_two_sfs_share_says_what_to_do(data: dict, line: str) -> None:
    """A label, name or from_sf two SFs (or an SF's two directions) share is refused; a trial's
    errors said what was wrong and not what to do about it."""
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert str(e.value) == line


@pytest.mark.parametrize(("data", "line"), [
    (_with(sf={"label": True}), "sf[0].label: true is not an integer; set an integer in 16..1048575"),
    (_with(sf={"label": 1.5}), "sf[0].label: 1.5 is not an integer; set an integer in 16..1048575"),
    (_with(sf={"label": "1000"}), "sf[0].label: '1000' is not an integer; set an integer in 16..1048575"),
    (_with(sf={"vlan_in": [True, 2]}), "sf[0].vlan_in: [true, 2] is not an integer; set an integer in 1..4094"),
    (_with(proxy={"backend": False}), 'proxy.backend: false is not one of "kernel" | "static" | "afxdp"'),
    (_with(sf={"net_in": True}), "sf[0].net_in: true is not an interface name (1-15 characters, no spaces)"),
    (_with(proxy={"backend": "afxdp", "frame_size": True}), "proxy.frame_size: true is not 2048 or 4096"),
    # "all of net_in's queues" is no number: the fix says how to ask for it (a trial wrote queues = 0)
    (_with(proxy={"backend": "afxdp", "queues": 0}),
     "proxy.queues: 0 is out of range; set an integer in 1..64, or leave queues out (all of net_in's queues)"),
], ids=["bool", "float", "string", "list", "choice", "ifname", "frame_size", "queues_all"])
def test_values_are_echoed_as_toml_spells_them(data: dict, line: str) -> None:
    """`label = true` was echoed as Python's True."""
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert str(e.value) == line


def test_toml_values_are_echoed_as_written(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[[sf]]\nlabel = 1979-05-27\nnet_in = "a"\nnet_out = "b"\nto_sf = "c"\nfrom_sf = "d"\n')
    with pytest.raises(ConfigError, match=r"^sf\[0\]\.label: 1979-05-27 is not an integer;"):
        load_config(path)


# One interface in two roles. Every pair is served: an interface runs one XDP program, picked by
# all its roles (net_in: RX; from_sf: TX; both: axp_xdp_rx_tx / axp_xsk_rx_tx, which sorts bare IP
# to TX), and to_sf, net_out are redirect targets (TX sockets). What cannot be is one from_sf
# returning two SFs: TX knows the SF by the interface (axp_tx_sf).
SAME_SF = [("net_in", "net_out"), ("net_in", "to_sf"), ("net_in", "from_sf"), ("net_out", "to_sf"),
           ("net_out", "from_sf"), ("to_sf", "from_sf")]


@pytest.mark.parametrize("backend", ["kernel", "afxdp"])
@pytest.mark.parametrize(("a", "b"), SAME_SF, ids=[f"{a}={b}" for a, b in SAME_SF])
def test_one_interface_in_two_roles_of_an_sf_is_allowed(a: str, b: str, backend: str) -> None:
    cfg = parse_config(_with(proxy={"backend": backend}, sf={b: GOOD["sf"][0][a]}))
    assert getattr(cfg.sfs[0], a) == getattr(cfg.sfs[0], b)


def test_inline_one_armed_proxy_is_allowed() -> None:
    cfg = parse_config({"proxy": {"topology": "inline"}, "sf": [{"label": 1000, "net_in": "a", "net_out": "a"}]})
    assert cfg.sfs[0].net_in == cfg.sfs[0].net_out == "a"


SF1 = {**GOOD["sf"][0], "name": "fw2", "label": 1002, "net_in": "q_in", "net_out": "q_out", "to_sf": "q_sf_tx",
       "from_sf": "q_sf_rx"}
ACROSS = [(a, b) for a in ("net_in", "net_out", "to_sf", "from_sf") for b in ("net_in", "net_out", "to_sf", "from_sf")
          if (a, b) != ("from_sf", "from_sf")]


@pytest.mark.parametrize(("a", "b"), ACROSS, ids=[f"sf1.{b}=sf0.{a}" for a, b in ACROSS])
def test_an_interface_of_one_sf_in_a_role_of_another_is_allowed(a: str, b: str) -> None:
    """sf[1].net_in = sf[0].from_sf and the like: served (shared net_in and net_out are
    the common case: the label tells the SFs apart)."""
    cfg = parse_config({"proxy": {}, "sf": [GOOD["sf"][0], {**SF1, b: GOOD["sf"][0][a]}]})
    assert getattr(cfg.sfs[1], b) == getattr(cfg.sfs[0], a)


def test_a_reader_that_goes_away_does_not_end_the_command(tmp_path: Path) -> None:
    """`afxdp-proxy bench 2>&1 | head -2` ended the bench at its third line, status 0, nothing
    measured (a trial): output whose reader has gone goes to /dev/null, and the command goes on."""
    import subprocess

    r, w = os.pipe()
    os.close(r)  # the reader gone before the first write
    try:
        p = subprocess.run([sys.executable, "-m", "afxdp_proxy", "run", "--help"], stdout=w,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        assert p.returncode == 0 and not p.stderr, p.stderr  # argparse's help, then exit 0: no traceback
        went_on = tmp_path / "went-on"
        code = ("import sys; from afxdp_proxy import entry; "
                "sys.stdout, sys.stderr = entry.ReaderGone(sys.stdout), entry.ReaderGone(sys.stderr); "
                "print('x' * 100000, flush=True); print('y', file=sys.stderr, flush=True); "
                f"open({str(went_on)!r}, 'w').write('ok')")
        p = subprocess.run([sys.executable, "-c", code], stdout=w, stderr=w, timeout=60)
        assert p.returncode == 0 and went_on.read_text() == "ok"
    finally:
        os.close(w)
