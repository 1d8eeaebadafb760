"""End to end through real namespaces, veths, BPF programs and iperf3: the kernel backend
as an operator runs it (`afxdp-proxy run` inside the proxy namespace)."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterator

import harness
import pytest

from afxdp_proxy import state
from afxdp_proxy.lab import netns
from afxdp_proxy.lab.proxyproc import ProxyProcess
from afxdp_proxy.lab.testbed import Testbed, dynamic_stacks
from afxdp_proxy.mpls import Lse, make_stack, tx_words

pytestmark = [pytest.mark.root, pytest.mark.e2e]

MODES = [("inline", "hash"), ("inline", "meta"), ("attached", "hash")]
SF = 1000
RETRY_DWELL_MS = 4000


@pytest.fixture(scope="module")
def beds() -> Iterator[Callable[..., Testbed]]:
    """One testbed per topology (and sf_nd: the SF's neighbours learned, not permanent) for the
    whole module, brought up on first use."""
    made: dict[tuple[str, bool], Testbed] = {}

    def get(topology: str, sf_nd: bool = False) -> Testbed:
        if (topology, sf_nd) not in made:
            made[topology, sf_nd] = Testbed(topology, sf_nd=sf_nd).up()
        return made[topology, sf_nd]

    yield get
    for tb in made.values():
        assert tb.down() == []


def _proxy(tb: Testbed, key: str = "hash", **kw: object) -> ProxyProcess:
    return ProxyProcess(tb.ns_proxy, tb.proxy_config(key=key, **kw), name=f"{tb.prefix}-{key}")


def _nothing_left(tb: Testbed, name: str, info: dict) -> None:
    """The programs, maps, state file and XDP of a stopped proxy go away (polled: the kernel
    frees programs, maps and a killed process's links asynchronously). Only this proxy's own
    objects count, by the IDs its state file named, so other proxies on the machine do not."""
    harness.wait_programs_unloaded(info["progs"])
    harness.wait_maps_freed(info["maps"].values())
    harness.wait_not_running(name)
    harness.wait_no_xdp(tb.ns_proxy, (tb.net_in, tb.net_out, tb.from_sf))


@pytest.mark.parametrize(("topology", "key"), MODES)
def test_iperf3_tcp_three_labels(beds: Callable[[str], Testbed], topology: str, key: str) -> None:
    tb = beds(topology)
    tb.set_stacks([make_stack([SF, 2000, 3000], [1, 2, 3])])
    tb.reset_counters()
    link_drops, sf_drops = tb.delivery_drops(), tb.sf_drops()
    with _proxy(tb, key) as proxy:
        info = state.running()[proxy.name]
        gro = netns.get_features(tb.ns_proxy, tb.net_in).get("rx-gro")
        res = tb.iperf3(seconds=5)
        st = proxy.stats()
        c = st["counters"]
    assert gro is False, "GRO must be off on net_in while the proxy runs"
    assert res.stalls == 0, f"iperf3 stalled: {res.interval_bits}"
    assert res.bits_per_second > 10e6
    assert c["rx_popped"] > 1000
    # every popped packet came back through TX with its stack (a few may be in flight), but for
    # those the veths to and from the SF dropped (a full ring at the SF's XDP under load)
    sf_drops = tb.sf_drops() - sf_drops
    assert c["tx_pushed"] >= c["rx_popped"] - 64 - sf_drops, (c["tx_pushed"], c["rx_popped"], sf_drops)
    assert c["rx_malformed"] == c["rx_not_ip"] == c["tx_gso_drop"] == c["tx_push_failed"] == 0
    depths = tb.depth_histogram()
    # what the proxy pushed reached the receiver, but for frames the veth to it dropped (its
    # peer's XDP ring full: TCP retransmits them, and the proxy pushes those again)
    link_drops = tb.delivery_drops() - link_drops
    assert depths.get(2, 0) >= c["tx_pushed"] - 64 - link_drops, (depths, link_drops)  # stack minus the top label
    assert depths.get(0, 0) < depths[2] / 100, depths  # nothing got through unlabelled
    # per SF: the one SF's row holds every proxied packet; its dwell histogram the timed cache
    # hits (1 in dwell_sample, 16, by the keys' hashes), which the stats count
    fw1 = st["sfs"]["fw1"]
    assert fw1["rx_popped"] == c["rx_popped"] and fw1["tx_pushed"] == c["tx_pushed"]
    assert st["sfs"]["-"]["rx_popped"] == 0
    timed = sum(st["dwell_histogram_ns"]["fw1"].values())
    assert timed == c["tx_dwell_timed"] and fw1["cache_takes"] / 64 < timed < fw1["cache_takes"] / 4
    assert fw1["cache_takes"] >= c["tx_pushed"]
    assert proxy.stop() == 0
    _nothing_left(tb, proxy.name, info)


@pytest.mark.parametrize(("topology", "key"), MODES)
def test_dynamic_chain_every_packet_keeps_its_stack(beds: Callable[[str], Testbed], topology: str, key: str) -> None:
    tb = beds(topology)
    stacks = dynamic_stacks(SF)
    tb.set_stacks(stacks)
    tb.reset_counters()
    with _proxy(tb, key) as proxy:
        tb.set_recording(True)
        res = tb.iperf3(seconds=2, bitrate="40M")
        tb.set_recording(False, clear=False)
        c = proxy.counters()
    assert res.stalls == 0
    check = tb.check_chain()
    assert check.compared >= 500, (len(tb.sent()), len(tb.received()))
    assert not check.wrong, f"{len(check.wrong)} packets got another stack, e.g. {next(iter(check.wrong.values()))}"
    assert check.arrived == {tx_words([e.encode() for e in s]) for s in stacks}, "not every stack of the chain arrived"
    assert c["tx_plain"] > 0 and c["tx_pushed"] > 0  # the one-label stack leaves as plain IP
    proxy.stop()


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_static_proxy_loses_the_dynamic_chain(beds: Callable[[str], Testbed], topology: str) -> None:
    """The baseline: a static proxy pushes its one configured stack whatever the packet carried."""
    tb = beds(topology)
    tb.set_stacks(dynamic_stacks(SF))
    cfg = tb.proxy_config(backend="static").replace("[[sf]]\n", "[[sf]]\nstatic_stack = [2001]\n")
    with ProxyProcess(tb.ns_proxy, cfg, name=f"{tb.prefix}-static") as proxy:
        tb.set_recording(True)
        tb.iperf3(seconds=1, bitrate="20M")
        tb.set_recording(False, clear=False)
        proxy.stop()
    check = tb.check_chain()
    assert check.compared >= 100
    assert check.arrived == {(Lse(2001, bos=True).encode(),)}
    assert check.kept < check.compared / 2  # only packets whose stack happened to match


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_start_stop_cycles_and_sigkill_leave_nothing(beds: Callable[[str], Testbed], topology: str) -> None:
    tb = beds(topology)
    tb.set_stacks([make_stack([SF, 2000])])
    gro = netns.get_features(tb.ns_proxy, tb.net_in).get("rx-gro")
    for _ in range(3):
        p = _proxy(tb).start()
        info = state.running()[p.name]
        assert tb.ping(count=2).ok
        assert p.stop() == 0
        _nothing_left(tb, p.name, info)
    # SIGTERM and even SIGKILL: BPF links die with the process
    for sig in (signal.SIGTERM, signal.SIGKILL):
        p = _proxy(tb).start()
        info = state.running()[p.name]
        p.stop(sig)
        _nothing_left(tb, p.name, info)
    assert netns.get_features(tb.ns_proxy, tb.net_in).get("rx-gro") == gro


def test_what_a_killed_proxy_turned_off_goes_back_on(beds: Callable[[str], Testbed]) -> None:
    """GRO and VLAN tag stripping, which the proxy turns off on net_in, go back on after a SIGKILL:
    `stats` (any command that looks for running proxies, the next `run` too) puts back what the dead
    proxy wrote down before it changed them; the next proxy so finds them on and leaves them on."""
    tb = beds("attached")
    tb.set_stacks([make_stack([SF, 2000])])
    ns = tb.ns("proxy")
    before = ns.get_features(tb.net_in)
    assert before["rx-vlan-hw-parse"], "veth strips VLAN tags unless told not to"
    ns.set_features(tb.net_in, rx_gro=True)
    want = {"rx-gro": True, "rx-vlan-hw-parse": True}

    def now() -> dict[str, bool]:
        feats = ns.get_features(tb.net_in)
        return {k: feats[k] for k in want}

    try:
        p = _proxy(tb).start()
        assert now() == {"rx-gro": False, "rx-vlan-hw-parse": False}
        p.stop(signal.SIGKILL)
        tb.run("proxy", [sys.executable, "-m", "afxdp_proxy", "stats"])  # no proxy runs: it says so, and sweeps
        netns.wait_until(lambda: now() == want, harness.RELEASE_TIMEOUT, what=f"{want} on {tb.net_in} again")
        # from another namespace (this test's): the sweep enters the dead proxy's
        p = _proxy(tb).start()
        p.stop(signal.SIGKILL)
        assert now() != want and state.netns_name() != tb.ns_proxy
        state.running()
        netns.wait_until(lambda: now() == want, harness.RELEASE_TIMEOUT, what=f"{want} on {tb.net_in} again")
        # and by the next start, before it turns them off again
        p = _proxy(tb).start()
        p.stop(signal.SIGKILL)
        p = _proxy(tb).start()
        assert now() == {"rx-gro": False, "rx-vlan-hw-parse": False}
        assert p.stop() == 0
        assert now() == want
        assert not list(state.STATE_DIR.glob(f"*.{p.pid}.*.restore"))
        # a record of a namespace whose inode another one took (a bench run made its testbed again,
        # same names, same ifindex): only the cookie tells them apart, and nothing is put back
        p = _proxy(tb).start()
        p.stop(signal.SIGKILL)
        (rec,) = state.STATE_DIR.glob(f"*.{p.pid}.*.restore")
        data = json.loads(rec.read_text())
        for e in data["features"]:
            e["netns"]["cookie"] += 1
        rec.write_text(json.dumps(data))
        state.running()
        assert not rec.exists() and now() == {"rx-gro": False, "rx-vlan-hw-parse": False}
    finally:
        ns.set_features(tb.net_in, rx_gro=before["rx-gro"], rx_vlan_hw_parse=before["rx-vlan-hw-parse"])


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_bad_input_is_counted_and_forwarding_goes_on(beds: Callable[[str], Testbed], topology: str) -> None:
    from afxdp_proxy.lab import traffic
    from afxdp_proxy.lab.frames import ipv4_tcp, mpls_frame

    tb = beds(topology)
    tb.set_stacks([make_stack([SF, 2000])])
    dst_mac, src_mac = bytes.fromhex(tb.macs[tb.net_in].replace(":", "")), bytes.fromhex(
        tb.macs[tb.src_wire].replace(":", ""))
    ip = ipv4_tcp(tb.src_ip, tb.dst_ip, 1, 1, 2, 3, 4)
    bad = [
        mpls_frame([Lse(SF, bos=False)], b""),  # stack ends without bottom of stack: truncated
        mpls_frame([Lse(5000 + i, bos=False) for i in range(17)], ip),  # too deep, not ours: passes
        mpls_frame([Lse(SF)] + [Lse(3000 + i) for i in range(16)], ip),  # ours, no BoS within 16
        mpls_frame([Lse(SF, bos=True)], b"\x00" * 40),  # no IP below the stack
        mpls_frame([Lse(SF, bos=True)], ip[:30]),  # truncated TCP
    ]
    bad = [dst_mac + src_mac + f[12:] for f in bad]
    with _proxy(tb) as proxy:
        traffic.send_raw_frames(tb.ns_src, tb.src_wire, bad)  # behind the classifier
        netns.wait_until(lambda: proxy.counters()["rx_not_ip"], 5, what="bad frames to be counted")
        c = proxy.counters()
        assert tb.ping(count=3).ok, "forwarding must go on after bad input"
    assert c["rx_malformed"] == 2
    assert c["rx_too_many_labels"] == 1
    assert c["rx_not_ip"] == 1
    assert c["rx_other_label"] >= 1


@pytest.mark.parametrize(("topology", "vlan_out", "on_ttl_expired"), [("attached", 20, "drop"), ("inline", 0, "pass")])
def test_vlan_tagged_sr_mpls_reserved_labels_and_ttl(beds: Callable[[str], Testbed], topology: str, vlan_out: int,
                                                     on_ttl_expired: str) -> None:
    """An SF on VLAN 10: tagged SR-MPLS (QinQ too, explicit null and ELI + EL on top) reaches the
    receiver with its stack and its tags (or vlan_out's); another VLAN's frames, a router alert and
    TTL 1 and 0 are counted. VLAN stripping is off on net_in while the proxy runs, as it was after."""
    tb = beds(topology)
    tb.set_stacks([])
    strip = netns.get_features(tb.ns_proxy, tb.net_in).get("rx-vlan-hw-parse")
    kw = {"vlan_in": 10, "on_ttl_expired": on_ttl_expired, **({"vlan_out": vlan_out} if vlan_out else {})}
    with _proxy(tb, **kw) as proxy:
        assert netns.get_features(tb.ns_proxy, tb.net_in).get("rx-vlan-hw-parse") is False
        harness.check_real_links(tb, proxy.counters, SF, 10, vlan_out, on_ttl_expired)
        c = proxy.counters()
    assert c["rx_malformed"] == c["rx_not_ip"] == c["tx_push_failed"] == 0, c
    assert netns.get_features(tb.ns_proxy, tb.net_in).get("rx-vlan-hw-parse") == strip


def test_two_sfs_served_by_one_proxy(beds: Callable[[str], Testbed]) -> None:
    """Inline, two [[sf]] tables with their own labels on the same interfaces: each packet
    is popped for its own SF and gets its own stack back."""
    tb = beds("inline")
    stacks = [make_stack([SF, 2000], [1, 2]), make_stack([SF + 1, 2001, 3001], [3, 4, 5])]
    tb.set_stacks(stacks)
    cfg = tb.proxy_config() + f'\n[[sf]]\nname = "fw2"\nlabel = {SF + 1}\nnet_in = "{tb.net_in}"\n' \
        f'net_out = "{tb.net_out}"\n'
    with ProxyProcess(tb.ns_proxy, cfg, name=f"{tb.prefix}-two") as proxy:
        tb.set_recording(True)
        tb.iperf3(seconds=1, bitrate="20M")
        tb.set_recording(False, clear=False)
        c = proxy.counters()
    check = tb.check_chain()
    assert check.compared >= 200
    assert not check.wrong
    assert check.arrived == {tx_words([e.encode() for e in s]) for s in stacks}
    assert c["rx_other_label"] == 0


def test_macs_are_learned_or_the_error_names_the_key(beds: Callable[[str], Testbed], tmp_path) -> None:
    tb = beds("attached")
    tb.set_stacks([make_stack([SF, 2000])])
    # no sf_mac / next_hop_mac: learned from the proxy namespace's neighbour table
    cfg = "\n".join(line for line in tb.proxy_config().splitlines()
                    if not line.startswith(("sf_mac", "next_hop_mac")))
    with ProxyProcess(tb.ns_proxy, cfg + "\n", name=f"{tb.prefix}-learn") as proxy:
        assert tb.ping(count=3).ok
        assert proxy.counters()["tx_pushed"] >= 3
    # an interface with no neighbour and no veth peer: the error names sf_mac
    path = tmp_path / "p.toml"
    path.write_text(cfg.replace(f'to_sf = "{tb.to_sf}"', 'to_sf = "lo"') + "\n")
    r = tb.run("proxy", [sys.executable, "-m", "afxdp_proxy", "run", "-c", str(path), "-d", "1"])
    assert r.returncode == 2
    assert r.stderr.strip().startswith("afxdp-proxy: error: sf[0].sf_mac:"), r.stderr
    harness.wait_no_xdp(tb.ns_proxy, (tb.net_in, tb.net_out, tb.from_sf))


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_ipv6_tcp_with_a_dynamic_chain(beds: Callable[[str], Testbed], topology: str) -> None:
    tb = beds(topology)
    tb.set_stacks(dynamic_stacks(SF))
    with _proxy(tb) as proxy:
        tb.set_recording(True)
        res = tb.iperf3(seconds=2, v6=True, bitrate="40M")
        tb.set_recording(False, clear=False)
        c = proxy.counters()
    assert res.stalls == 0 and res.bits_per_second > 10e6
    check = tb.check_chain(family=6)
    assert check.compared >= 500
    assert not check.wrong
    assert c["rx_popped"] >= check.compared


# ---- the cache under packets the SF drops, retries and load ------------------------------------


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_lost_packets_fill_a_small_cache_and_a_chain_keeps_its_stacks(beds: Callable[[str], Testbed],
                                                                      topology: str) -> None:
    """64 entries filled with runs of packets the SF dropped: each new insert evicts (or
    reclaims) exactly what it needs, and a dynamic chain afterwards keeps every stack.
    on_miss = drop: an evicted live packet would be dropped, never sent with a wrong stack."""
    tb = beds(topology)
    tb.set_stacks([])
    with harness.sf_drops(tb), _proxy(tb, cache_entries=64, on_miss="drop") as proxy:
        harness.check_lost_packets_then_chain(tb, proxy.counters, 64, SF)


@pytest.mark.parametrize("topology", ["inline", "attached"])
def test_a_retry_after_max_dwell_gets_through(beds: Callable[[str], Testbed], topology: str) -> None:
    tb = beds(topology)
    tb.set_stacks([])
    # long enough that reading counters through `stats` (a process each) on a loaded machine
    # still fits twice into it, short enough for the test to wait it out
    with _proxy(tb, max_dwell_ms=RETRY_DWELL_MS, max_per_key=1) as proxy:
        harness.check_retry_after_max_dwell(tb, proxy.counters, RETRY_DWELL_MS, SF)


def test_parallel_flows_on_both_cpus_keep_their_stacks_and_the_books_balance(beds: Callable[[str], Testbed]) -> None:
    """iperf3 with 4 flows, unpinned: RX and TX run on both CPUs at once on shared sets. No
    packet leaves with another's stack (on_miss = drop: a miss could not even leave
    unlabelled); afterwards the counters' in_flight is exactly what the cache's sets hold."""
    tb = beds("attached")
    stacks = dynamic_stacks(SF)
    tb.set_stacks(stacks)
    rsts = harness.tcp_resets_sent(tb.ns_src)
    with _proxy(tb, on_miss="drop") as proxy:
        info = state.running()[proxy.name]
        tb.set_recording(True)
        res = tb.iperf3(seconds=3, parallel=4)
        tb.set_recording(False, clear=False)
        c, held = harness.settled_books(proxy.counters, lambda: harness.kernel_cache_packets(info["maps"]["cache"]))
    assert res.bits_per_second > 10e6
    check = tb.check_chain()
    assert check.compared >= 2000
    assert not check.wrong, f"{len(check.wrong)} packets got another stack, e.g. {next(iter(check.wrong.values()))}"
    assert harness.assert_counters_add_up(c) == held
    assert c["cache_inserts"] > 10000
    # only the sender's identical resets (harness.tcp_resets_sent) fill a set with one key's runs
    rsts = harness.tcp_resets_sent(tb.ns_src) - rsts
    assert c["rx_key_full"] <= rsts and c["evictions"] <= rsts, (rsts, c)


# ---- the proxy in a network ----------------------------------------------------------------------


def _static(tb: Testbed, stack: list[Lse]) -> str:
    labels = ", ".join(str(e.label) for e in stack[1:])
    return tb.proxy_config(backend="static").replace("[[sf]]\n", f"[[sf]]\nstatic_stack = [{labels}]\n")


@pytest.mark.parametrize("backend", ["kernel", "static"])
def test_ipv6_through_an_sf_that_finds_its_neighbours(beds: Callable[..., Testbed], backend: str) -> None:
    """No permanent neighbours on the SF's links: the SF resolves the proxy, its next hop, by
    neighbour discovery. Its solicitations arrive on from_sf and go to the proxy host's kernel
    (tx_host), which answers; ping6 and iperf3 -6 then go through with every packet's stack, and
    the SF reaches the proxy host's own addresses."""
    tb = beds("attached", sf_nd=True)
    stack = make_stack([SF, 2000, 3000], [1, 2, 3])
    stacks = dynamic_stacks(SF) if backend == "kernel" else [make_stack([SF, 2000, 3000])]
    tb.set_stacks(stacks)
    cfg = tb.proxy_config() if backend == "kernel" else _static(tb, stack)
    harness.forget_sf_neighbours(tb)
    with ProxyProcess(tb.ns_proxy, cfg, name=f"{tb.prefix}-nd-{backend}") as proxy:
        ttl_model = "uniform" if backend == "kernel" else "pipe"  # static pushes its own TTLs (64)
        harness.check_ipv6_through_nd_sf(tb, proxy.counters, stacks, ttl_model)


@pytest.mark.parametrize("on_miss", ["pass", "last"])
def test_a_masquerading_sf(beds: Callable[..., Testbed], on_miss: str) -> None:
    """An nftables NAT in the SF rewrites every source: no packet finds its entry. With on_miss =
    last a static chain survives (each packet gets the stack last sent to the SF); with pass every
    packet leaves unlabelled, routed by the proxy host's kernel."""
    tb = beds("attached", sf_nd=True)
    harness.check_nat_sf(tb, lambda: _proxy(tb, on_miss=on_miss), on_miss, SF)


def test_a_redirect_the_kernel_refuses_counts_as_a_drop(beds: Callable[..., Testbed]) -> None:
    """A redirect target whose veth peer runs no NAPI (no XDP, GRO off) drops every frame after
    the program counted it popped or pushed; the tracepoint program counts each in the SF's row
    (rx_redirect_err to to_sf, tx_redirect_err to net_out), and traffic resumes afterwards."""
    tb = beds("attached")
    tb.set_stacks([make_stack([SF, 2000])])
    with _proxy(tb) as proxy:
        info = state.running()[proxy.name]
        assert tb.ping(count=2).ok
        with harness.without_xdp(tb, "sf", tb.sf_in or "", "tb_xdp_pass"):
            assert tb.ping(count=5, timeout=0.5).received == 0
            rx = proxy.stats()
        with harness.without_xdp(tb, "dst", tb.dst_if, "tb_xdp_decap"):
            assert tb.ping(count=5, timeout=0.5).received == 0
            tx = proxy.stats()
        assert tb.ping(count=2).ok
        proxy.stop()
    fw1 = rx["sfs"]["fw1"]
    assert (fw1["rx_popped"], fw1["rx_redirect_err"], fw1["tx_pushed"]) == (7, 5, 2), fw1
    fw1 = tx["sfs"]["fw1"]
    assert (fw1["rx_popped"], fw1["tx_pushed"], fw1["tx_redirect_err"]) == (12, 7, 5), fw1
    assert tx["counters"]["rx_redirect_err"] == 5
    _nothing_left(tb, proxy.name, info)  # the tracepoint program too


def test_meta_keys_leave_the_sfs_own_mark_bits(beds: Callable[..., Testbed]) -> None:
    """Inline, key meta: the SF (the proxy namespace's nftables) marks every packet for itself, as
    kube-proxy does (0x4000, 0x8000) and more, at every hook. The key lives in meta_mark_mask
    (0xffff0000): every packet keeps its own stack. A rule that sets the whole mark erases the key:
    such packets miss (the README says so)."""
    tb = beds("inline")
    stacks = dynamic_stacks(SF)
    tb.set_stacks(stacks)
    table = "axp_marks"
    harness.nft(tb.ns_proxy, f"""table inet {table} {{
  chain mark_pre {{ type filter hook prerouting priority mangle; meta mark set meta mark | 0x4000; }}
  chain mark_fwd {{ type filter hook forward priority filter; meta mark set meta mark | 0x8000; }}
  chain mark_post {{ type filter hook postrouting priority mangle; meta mark set meta mark | 0xc0de; }}
}}
""")
    try:
        with _proxy(tb, "meta") as proxy:
            tb.set_recording(True)
            res = tb.iperf3(seconds=2, bitrate="40M")
            tb.set_recording(False, clear=False)
            kept = proxy.counters()
            harness.nft(tb.ns_proxy, f"add rule inet {table} mark_fwd meta mark set 0x4000\n")
            assert tb.ping(count=3).ok
            erased = proxy.counters()
    finally:
        tb.run("proxy", ["nft", "delete", "table", "inet", table])
    assert res.stalls == 0
    check = tb.check_chain()
    assert check.compared >= 500
    assert not check.wrong, f"{len(check.wrong)} packets got another stack, e.g. {next(iter(check.wrong.values()))}"
    assert check.arrived == {tx_words([e.encode() for e in s]) for s in stacks}
    assert kept["tx_miss_pass"] == 0
    assert erased["tx_miss_pass"] >= 3
