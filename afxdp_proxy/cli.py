"""The afxdp-proxy command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from typing import TYPE_CHECKING

from afxdp_proxy.config import ConfigError, ProxyConfig, load_config
from afxdp_proxy.entry import EXIT_SIGINT
from afxdp_proxy.log import FORMATS, fields
from afxdp_proxy.log import LOGGER as log
from afxdp_proxy.log import setup as setup_log

if TYPE_CHECKING:
    from afxdp_proxy.check import Report

EPILOG = """\
examples:
  ip netns exec proxy afxdp-proxy check --config proxy.toml
  ip netns exec proxy afxdp-proxy run --config proxy.toml
  kill -HUP <pid>                      # reload proxy.toml: SFs added, removed, changed
  ip netns exec proxy afxdp-proxy stats --json
  ip netns exec proxy afxdp-proxy trace --sample 1024 --count 5   # follow packets through it
  systemctl start afxdp-proxy@proxy    # /etc/afxdp-proxy/proxy.toml in namespace proxy
  afxdp-proxy testbed up --topology attached && afxdp-proxy testbed status
  afxdp-proxy testbed up --sf firewall --bidirectional   # replies through the SF too
  afxdp-proxy demo
  afxdp-proxy bench --quick
"""

RUN_HELP = """\
Attach the proxy described by --config to the interfaces of the current network
namespace (run it with `ip netns exec NS ...`, or from the systemd unit), and
detach everything on SIGINT/SIGTERM, after --duration, or on any error.
Programs are attached through BPF links, so even a killed proxy leaves nothing
attached.

SIGHUP reloads --config: SFs ([[sf]] tables, known by name) are added, removed
or changed without detaching the others and without touching the cache, so
packets in flight keep their stacks; a removed SF takes no new packets, and
its return path stays for max_dwell_ms for the packets inside it. Each change
is logged. A file with an error, or a change that cannot apply live (anything
outside [[sf]]: backend, key, topology, cache size, rings, ...), is refused
with one line naming the field, and the running configuration stays.

--keep-cache keeps the cache (kernel: pinned in the bpffs at
/run/afxdp-proxy/bpf, which `afxdp-proxy pinfs` mounts; afxdp: a file under
/run/afxdp-proxy/kept) when the proxy stops or dies, for the next proxy of the
same name: packets inside an SF during a restart come back with their own
stacks. A kept cache of another layout is replaced (one log line says why);
`afxdp-proxy forget NAME` drops one. Without --keep-cache nothing is left.

Before attaching anything, run makes the checks of `afxdp-proxy check` and
refuses to start, with exit status 2 and one line per problem
(afxdp-proxy: error: <field or interface>: <problem>; <fix>), when one would
make it fail or lose packets. It says what it puts right itself (GRO and VLAN
tag stripping on net_in) and warns of the rest.

On a terminal (or with --live) it prints a line of live counters every second
and the whole table at the end. Otherwise (a service) it logs a counters record
every --log-interval seconds. Log records go to stderr: started, warnings,
counters, stopped with the final counters; --log-format json writes one JSON
object a line (time, level, message and the record's fields).

afxdp backend: bind_mode = "auto" (default) binds the AF_XDP sockets in
zero-copy mode where the driver has it and in copy mode otherwise (veth);
"zerocopy" refuses to start on a driver without it (one line naming the
interface and driver), "copy" forces copy mode. The mode in use is in the
start log line and in `stats`.

metrics: with a [metrics] table in the config (listen = "127.0.0.1:9464") run
serves every counter, per SF, and the SF's dwell-time histogram in the
Prometheus text format at http://<listen>/metrics, read from the data path at
each scrape (the numbers `stats` shows). An address it cannot listen on (in
use, not in this namespace) is an error naming metrics.listen, exit status 2,
before anything is attached. Metric names: README, section Metrics.

both directions through one SF (stateful SFs: firewalls, NATs, IDSs):
  an [sf.reverse] table under an [[sf]] gives the chain's reverse direction its own
  label (label = ..., required); it arrives on net_out, reaches the SF on from_sf,
  comes back on to_sf and leaves on net_in (each interface can be set apart there,
  and sf_mac, next_hop_mac, static_stack, name; vlan_in and vlan_out are its
  own, untagged unless given). It is an SF of its own, named
  <name>.reverse: its own counters and `stats` column. Programs go by interface
  role (XDP RX on net_in, XDP TX on from_sf or TC egress TX on an inline net_out);
  an interface that is net_in of one SF and from_sf of another sends bare IP down
  the TX path and all else down the RX path.

the cache (kernel and afxdp backends alike):
  RX caches each packet's stack under its key, TX takes it back. Packets with one
  key in flight (duplicate ACKs, retransmissions) are normal: with the same stack
  they share one cache entry and a count; with other stacks they queue, and TX hands
  the stacks out in arrival order. A set of 8 entries evicts exactly one entry, the
  oldest of another key, when a new one finds no room; an entry older than
  max_dwell_ms (config, default 1000) is presumed lost: the next insert into its set
  reclaims it, and an identical retry replaces it. At most max_per_key (default 64)
  packets with one key are in flight; past that RX drops (rx_key_full).

what RX reads in front of the SF label, and what TX puts back:
  VLAN tags: one or two (802.1Q 0x8100, 802.1ad 0x88A8). The SF is chosen by
  (VLAN of the tag nearest the stack, top label): [[sf]] vlan_in = 1..4094
  (default: untagged; a priority tag, VID 0, counts as untagged). Tags are removed
  before the SF (SFs are VLAN-unaware) and kept in the packet's cache entry; the
  frame leaves with one 802.1Q tag of the SF's vlan_out (PCP and DEI of the tag it
  came with), or with the tags it arrived with. Tagged frames on a VLAN no SF names,
  or not SR-MPLS, pass (rx_vlan_other). Run turns VLAN stripping off on net_in.
  Reserved labels on top of the SF label: explicit null (0, 2) and an entropy label
  indicator (7) with its entropy label are removed (at most 3 removals) and not
  restored; any other reserved label on top (router alert, GAL, OAM alert) passes
  to the host (rx_reserved_label).
  TTL: an SF label with TTL <= 1 never reaches the SF: on_ttl_expired = "drop"
  (default, rx_ttl_expired) or "pass" to the host (rx_ttl_expired_pass).
  ttl_model (RFC 3443): "uniform" (default) gives the label TX exposes on top the
  SF label's TTL minus one, so a loop through the proxy ends; "pipe" keeps its own.
the proxy in a network:
  On from_sf (attached) only the SF's output for the network is proxied: what the SF
  sends the proxy host (neighbour discovery, multicast and broadcast, link-local
  addresses, the host's own addresses, ARP) goes to the host's kernel untouched
  (tx_host, tx_not_ip). The host's addresses are read at start and every second.
  A packet without a cache entry follows on_miss (config): "pass" hands it to the
  kernel, which routes it on unlabelled (afxdp: sent on unlabelled to the next hop;
  inline: it leaves as it is, like the host's own traffic), "drop" drops it, "last"
  (attached) pushes the stack RX last sent to its SF: for SFs that rewrite the key's
  fields (NAT), at the price of per-packet stacks through them (tx_miss_last).
  key = "meta" keeps its key in the meta_mark_mask bits of skb->mark (config,
  default 0xffff0000: 16 or more contiguous bits) and leaves the others to the SF.
  Redirects the kernel refuses (a target without XDP support) count as drops in
  rx_redirect_err and tx_redirect_err, besides the frame's reason.

counters (also in `afxdp-proxy stats`, per SF; "-" is the row of frames of no SF).
Every frame counts once in rx_packets/tx_packets and once in one reason:
{counters}
  tx_dwell_timed       packets whose dwell time tx_dwell_ns holds: 1 in
                       dwell_sample keys (the histogram's count)
  in_flight            cache_inserts - cache_takes - evictions - expired: packets
                       in the SF right now (exact, from the counters)

afxdp backend only:
{xsk_counters}
"""


CHECK_HELP = """\
Check, without attaching anything, that this host and the current network
namespace can run the proxy described by --config, as `run` does before it
starts. One line per precondition: ok, fixed (run puts it right itself),
unknown (this namespace cannot see it: the line says what to make sure of),
warn (run goes on; some packets may suffer), or error (run would fail or lose
packets; it refuses). Run it where `run` runs:
`ip netns exec NS afxdp-proxy check -c proxy.toml`. While a proxy of the
file's name runs in this namespace, check is about an edit before a SIGHUP:
that proxy's own XDP programs and metrics endpoint are no obstacle (a reload
makes the same checks and refuses on an error), a field outside [[sf]] that
differs from what it runs is an error (a SIGHUP refuses the file), and the
verdict is about a SIGHUP.

checks:
  config         the file parses and every field is valid
  privileges     CAP_BPF, CAP_NET_ADMIN, and CAP_PERFMON (kernel, static) or
                 CAP_NET_RAW and CAP_IPC_LOCK / RLIMIT_MEMLOCK (afxdp)
  bpf, tcx       a trivial XDP and TC program loads; TC attaches through TCX
                 (topology inline, key meta)
  af_xdp         socket(AF_XDP) opens (backend afxdp)
  bpffs          mounted at /sys/fs/bpf (bpftool wants it; run does not); kernel
                 backend: a bpffs at /run/afxdp-proxy/bpf for run --keep-cache
                 (afxdp-proxy pinfs); never a warning
  interface      every configured interface exists, is up, has carrier
  mac            sf_mac and next_hop_mac configured or learnable (attached)
  xdp, xdp_mtu   XDP interfaces (net_in, from_sf) run no XDP program yet; a
                 veth peer's MTU stays within native XDP's limit (3506 bytes
                 with 4 KiB pages)
  queues         a veth peer sends on no more TX queues than we have RX
                 queues; afxdp: proxy.queues against the interfaces' queues
  checksum, vlan the sender fills in TX checksums and keeps VLAN tags in the
  offloads       frame (a veth's peer); VLAN stripping on net_in (run turns it
                 off while it runs; an error where it is fixed and an SF names
                 a VLAN)
  gro            GRO on net_in (run turns it off while it runs)
  redirect       XDP_REDIRECT targets (attached: to_sf, net_out) take XDP
                 frames: a veth only while its peer runs XDP or GRO
  mtu            links that carry labels have room for 16 labels (64 bytes)
  frame_size     (afxdp) headroom + MTU + Ethernet + 64 bytes fit a frame
  reload         (a proxy of this name runs here) fields outside [[sf]]
                 unchanged: cache_entries, backend, rings, ... need a restart

exit status: 0 when run can start (warnings allowed), 2 when it would refuse
(while its proxy runs: when a SIGHUP would refuse the file).
"""


TRACE_HELP = """\
Follow sampled packets through a running proxy (kernel or afxdp backend), live:
each stage a packet passes, with its time, CPU and label stack. Sampling is
off until trace starts and off again when it ends, however it ends: Ctrl-C,
SIGTERM, --count, --seconds; a trace killed outright is noticed by the proxy,
which turns sampling off within a second. One trace at a time per proxy.

which packets:
  A packet is sampled by its cache key's hash, which RX and TX both compute,
  so every stage of a sampled packet is seen and every packet of a sampled key
  (its duplicates, retransmissions) is too. --sample N takes 1 in N, N rounded
  to the nearest power of two (default 1024, or 1 when --label or --flow is
  given). --label and --flow narrow that down: the label
  anywhere in the stack (at RX the stack the packet arrived with, at TX the
  one the cache hands back), the flow on the key's protocol, addresses and
  ports (a tunnel's outer ones; not with key = "meta", whose key holds none).
  Frames passed before their SF is known (not SR-MPLS, another node's label,
  malformed) are never sampled, nor is anything through the static proxy,
  which has no key to follow a packet by.

stages, one line each (time in us since the packet's first):
  rx          RX chose the SF: label -> SF, the stack it arrived with, the
              bytes of the frame that goes to the SF
  insert      the cache insert: a run of its own, joined its key's run, or
              refused (max_per_key; its set's lock held too long)
  rx_verdict  the counter RX counted it under (rx_popped, rx_key_full, ...)
  sf          its time in the SF (RX to TX, as the dwell histogram has it)
  take        the TX side's cache take: hit with the stack handed back, or miss
  tx_verdict  the counter TX counted it under (tx_pushed with the labels it
              pushed, tx_plain, tx_miss_pass, ...)
A packet still in the SF after 1 s is shown without its TX side. A packet
whose RX came before the trace shows its TX side only.

output: a block per packet (a head line: flow, SF, key hash; then its
stages); --json: one JSON object a line per packet, its stages with t_us,
ts_ns (CLOCK_MONOTONIC), cpu and each stage's fields. A summary line goes to
stderr at the end, with the events lost to a full ring, if any.

exit status: 0; 1 when the proxy stops meanwhile; 2 when no proxy runs, the
choice is ambiguous (--name), the backend cannot be traced, another trace
holds it, or an option is wrong.
"""


NAME_HELP = "instance name (proxy.name; by default its namespace's name under /run/netns, else netns-<inode>)"


def _err(msg: str, code: int) -> int:
    log.error("%s", msg)
    return code


def _checks(cfg: ProxyConfig) -> Report:
    from afxdp_proxy.check import run_checks

    return run_checks(cfg)


def _checks_against_running(cfg: ProxyConfig) -> Report:
    """`check` of a file whose proxy runs in this namespace (an edit before a SIGHUP): that
    proxy's own XDP programs and metrics endpoint are no obstacle, as on the reload; a field
    the reload cannot change is an error (a SIGHUP would refuse the file)."""
    from afxdp_proxy import state
    from afxdp_proxy.check import ERROR, Finding, run_checks
    from afxdp_proxy.reload import restart_changes
    from afxdp_proxy.runner import instance_name

    name = instance_name(cfg)
    info = state.running().get(name)
    if info is None or info.get("netns") != state.netns_id():
        return run_checks(cfg)
    report = run_checks(cfg, own=info.get("interfaces", ()), own_listen=info.get("metrics_listen"))
    for where, was, now in restart_changes(info.get("restart_fields") or {}, cfg):
        report.findings.append(Finding("reload", where, ERROR,
                                       f"{was} -> {now} cannot change while proxy {name} runs: a SIGHUP would refuse "
                                       "the whole file and keep the running configuration",
                                       f"restart the proxy to apply it (pid {info.get('pid')}), or put back {was}"))
    report.running = name
    return report


def cmd_check(args: argparse.Namespace) -> int:
    from afxdp_proxy.check import ERROR, Finding, Report

    try:
        report = _checks_against_running(load_config(args.config))
    except ConfigError as e:
        # the first precondition: a configuration that parses (same line as run's)
        subject, _, problem = str(e).partition(": ")
        report = Report([Finding("config", subject, ERROR, problem)])
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        print(report.text())
    return report.exit_code


def cmd_run(args: argparse.Namespace) -> int:
    from afxdp_proxy.check import ERROR, WARN
    from afxdp_proxy.runner import run

    cfg = load_config(args.config)
    report = _checks(cfg)
    if report.of(ERROR):
        for f in report.of(ERROR):
            log.error("%s", f.line(), extra=fields(event="check", check=f.check, subject=f.subject, status=f.status))
        return report.exit_code
    for f in report.said_at_run():
        level = logging.WARNING if f.status == WARN else logging.INFO
        log.log(level, "%s", f.line(), extra=fields(event="check", check=f.check, subject=f.subject,
                                                     status=f.status))
    live = args.live if args.live is not None else sys.stdout.isatty() and not args.quiet
    run(cfg, args.config, duration=args.duration, live=live, log_interval=args.log_interval,
        keep_cache=args.keep_cache)
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from afxdp_proxy import keep, state

    names = sorted(keep.kept()) if args.all else args.names
    if not names:
        print("nothing is kept" if args.all else "name a proxy, or --all")
        return 0 if args.all else 2
    live, code = state.running(), 0
    for name in names:
        if name in live:
            log.error("%s is running (pid %s): stop it first", name, live[name]["pid"])
            code = 1
            continue
        removed = keep.forget(name)
        print(f"{name}: {'forgot ' + ', '.join(removed) if removed else 'nothing kept'}")
    return code


def cmd_pinfs(args: argparse.Namespace) -> int:
    from afxdp_proxy import keep

    mounted = keep.ensure_pinfs()
    print(f"{keep.PIN_ROOT}: {'mounted a bpffs' if mounted else 'a bpffs is mounted already'}")
    return 0


def pick_instance(live: dict[str, dict], name: str | None, netns_id: str) -> str:
    """The proxy `stats` reports on: the one named, else the one of this network namespace
    (by its state file's netns, whatever proxy.name says). A proxy of another namespace is
    taken only by name: its counters are not this namespace's. LookupError says why none."""
    if name:
        if name not in live:
            raise LookupError(f"no running proxy named {name!r} (running: {', '.join(live) or 'none'})")
        return name
    here = [n for n, info in live.items() if n == netns_id or info.get("netns") == netns_id]
    if len(here) == 1:
        return here[0]
    if here:
        raise LookupError(f"several proxies run in this network namespace ({', '.join(here)}); pick one with --name")
    if not live:
        raise LookupError("no proxy is running")
    raise LookupError(f"no proxy runs in this network namespace; elsewhere: {', '.join(live)} "
                      "(pick one with --name, or run this inside its namespace: ip netns exec NS ...)")


def running_instance(name: str | None) -> tuple[str, dict]:
    """The running proxy a command is about (pick_instance) and its state file entry."""
    from afxdp_proxy import state

    live = state.running()
    name = pick_instance(live, name, state.netns_id())
    return name, live[name]


def cmd_stats(args: argparse.Namespace) -> int:
    from afxdp_proxy import bpf, counters
    from afxdp_proxy.runner import summary

    try:
        name, info = running_instance(args.name)
    except LookupError as e:
        return _err(str(e), 2)  # as trace says it
    sf_names = list(info.get("sfs", []))
    if info["backend"] == "afxdp":
        # the workers' counters live in the proxy process, shared through a mapped file
        from afxdp_proxy.backends.afxdp import read_snapshot

        snap = read_snapshot(info)
    else:
        counters_map = bpf.Map.from_id(info["maps"]["counters"], "uint32_t", "uint64_t")
        try:
            snap = counters.read_map(counters_map, counters.rows_of(len(sf_names)))
        finally:
            counters_map.close()
    total = counters.with_dwell_timed(snap)
    in_flight = counters.in_flight_of(total)
    per_sf = snap.by_sf(sf_names)
    if args.json:
        bounds = counters.dwell_bounds_ns()
        dwell = {sf: dict(zip([*map(str, bounds), "+Inf"], snap.dwell_hist(i), strict=True))
                 for i, sf in enumerate(sf_names) if sf}
        extra = {"xsk": info["xsk"]} if "xsk" in info else {}
        print(json.dumps({"name": name, "backend": info["backend"], "key": info["key"],
                          "topology": info["topology"], "pid": info["pid"], **extra, "in_flight": in_flight,
                          "counters": total, "sfs": per_sf, "dwell_histogram_ns": dwell}, indent=1))
    else:
        xsk = info.get("xsk")
        mode = f", AF_XDP {xsk['mode']}" if isinstance(xsk, dict) and "mode" in xsk else ""
        if isinstance(xsk, dict) and xsk.get("forward") == "null":
            mode += ", null forwarder (the lab's floor: no proxying)"
        print(f"{name}: {info['backend']} backend, key {info['key']}, topology {info['topology']}, "
              f"pid {info['pid']}{mode}")
        print(summary(total, in_flight))
        print(sf_table(per_sf))
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    import signal
    import threading

    from afxdp_proxy import signals, state, trace

    try:
        flow = trace.Flow.parse(args.flow) if args.flow else None
        every = args.sample or (1 if flow or args.label else trace.DEFAULT_SAMPLE)
        sampling = trace.Sampling.nearest(every, args.label, flow)
    except ValueError as e:
        return _err(f"trace: {e}", 2)
    try:
        name, info = running_instance(args.name)
    except LookupError as e:
        return _err(str(e), 2)
    if flow and info.get("key") == "meta":
        return _err('trace: --flow: key = "meta" holds no addresses or ports; trace by --label', 2)
    try:
        tracer = trace.Tracer(info)
    except trace.TraceError as e:
        return _err(f"trace: {name}: {e}", 2)
    stop = threading.Event()
    old = signals.install(lambda *_: stop.set(), (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)) \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        tracer.start(sampling)
        print(trace.describe(info, name, sampling), file=sys.stderr, flush=True)
        summary = trace.follow(tracer, sys.stdout, info.get("sfs", []), count=args.count, seconds=args.seconds,
                               as_json=args.json, stop=stop, alive=lambda: name in state.running())
    except trace.TraceError as e:
        return _err(f"trace: {name}: {e}", 2 if not tracer.started else 1)
    finally:
        tracer.close()  # sampling off before anything else can go wrong
        signals.restore(old)
    print(summary.line(), file=sys.stderr, flush=True)
    return 0


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text}: give a positive number")
    return n


def seconds_above_zero(text: str) -> float:
    """argparse type of --duration: seconds above 0 (0 ran forever once, -1 stopped at once)."""
    s = float(text)
    if not s > 0:
        raise argparse.ArgumentTypeError(f"{text}: give seconds above 0 (or leave it out to run until stopped)")
    return s


def sf_table(per_sf: dict[str, dict[str, int]]) -> str:
    """The counters that are not zero for some SF, one column per SF ("-": frames of no SF)."""
    rows = [n for n in next(iter(per_sf.values()), {}) if any(c.get(n) for c in per_sf.values())]
    head = f"{'per SF':22} " + " ".join(f"{sf:>12}" for sf in per_sf)
    return "\n".join([head] + [f"{n:22} " + " ".join(f"{c.get(n, 0):>12}" for c in per_sf.values())
                               for n in rows])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="afxdp-proxy",
        description="A caching SFC proxy for SR-MPLS: strips each packet's label stack before an "
        "SFC-unaware service function and restores exactly that stack afterwards.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from afxdp_proxy import counters

    run_help = RUN_HELP.format(counters=counters.help_text(), xsk_counters=counters.help_text(afxdp_only=True))
    run = sub.add_parser("run", help="run the proxy in the foreground", description=run_help,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--config", "-c", required=True, help="proxy TOML file (see README)")
    run.add_argument("--duration", "-d", type=seconds_above_zero, metavar="S",
                     help="stop after S seconds (default: run until SIGINT or SIGTERM)")
    run.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                     help="a line of live counters on stdout every second (default: when stdout is a terminal)")
    run.add_argument("--log-interval", type=float, default=60.0, metavar="S",
                     help="without --live: log the counters every S seconds; 0: only at the end (default 60)")
    run.add_argument("--log-format", choices=FORMATS, default="text",
                     help="text: one line a record; json: one JSON object a line (default text)")
    run.add_argument("--quiet", "-q", action="store_true", help="log only warnings and errors, no live line")
    run.add_argument("--keep-cache", action="store_true",
                     help="keep the cache when the proxy stops or dies, for the next proxy of the same name "
                          "(kernel: needs the bpffs of `afxdp-proxy pinfs`)")
    run.set_defaults(func=cmd_run)

    forget = sub.add_parser("forget", help="drop the cache a stopped proxy kept (run --keep-cache)",
                            description="Remove what `run --keep-cache` kept for the next proxy of a name: the "
                            "kernel backend's pins under /run/afxdp-proxy/bpf/NAME, the afxdp backend's files "
                            "under /run/afxdp-proxy/kept. Refused while a proxy of that name runs.")
    forget.add_argument("names", nargs="*", metavar="NAME", help=NAME_HELP)
    forget.add_argument("--all", action="store_true", help="every name with something kept")
    forget.set_defaults(func=cmd_forget)

    pinfs = sub.add_parser("pinfs", help="mount the bpffs in which --keep-cache pins the kernel backend's cache",
                           description="Mount a bpffs at /run/afxdp-proxy/bpf unless one is there. Run it in the "
                           "host's mount namespace (not under `ip netns exec`, whose mounts die with it), before "
                           "`run --keep-cache`: the systemd unit does, as root (ExecStartPre=+).")
    pinfs.set_defaults(func=cmd_pinfs)

    check = sub.add_parser("check", help="check that this host and namespace can run a configuration",
                           description=CHECK_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("--config", "-c", required=True, help="proxy TOML file (see README)")
    check.add_argument("--json", action="store_true", help="one JSON document: every finding with its status")
    check.set_defaults(func=cmd_check)

    stats = sub.add_parser("stats", help="print the counters of a running proxy",
                           description="Counters of a running proxy: the one of this network namespace, "
                           "or the one named with --name (a proxy of another namespace is taken by name only). "
                           "Exit status: 0; 2 when no proxy runs here or none has that name.")
    stats.add_argument("--name", help=NAME_HELP)
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.set_defaults(func=cmd_stats)

    tr = sub.add_parser("trace", help="follow sampled packets through a running proxy, stage by stage",
                        description=TRACE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    tr.add_argument("--name", help=NAME_HELP)
    tr.add_argument("--sample", "-s", type=_positive, metavar="N",
                    help="follow 1 in N packets, by key hash; N becomes the nearest power of two (default 1024; "
                         "1 with --label or --flow)")
    tr.add_argument("--label", "-l", type=int, default=0, metavar="L",
                    help="only packets whose stack holds label L")
    tr.add_argument("--flow", "-f", metavar="FLOW",
                    help="only packets of this flow: an address (either end), or PROTO,SRC,SPORT,DST,DPORT with "
                         "* for any field, e.g. udp,10.0.1.1,*,10.0.2.1,7777")
    tr.add_argument("--count", "-c", type=_positive, default=0, metavar="N", help="stop after N packets")
    tr.add_argument("--seconds", "-t", type=float, default=0.0, metavar="S", help="stop after S seconds")
    tr.add_argument("--json", action="store_true", help="one JSON object a line per packet")
    tr.set_defaults(func=cmd_trace)

    from afxdp_proxy.lab import demo, testbed
    from afxdp_proxy.lab.bench import suite

    testbed.register_cli(sub)
    demo.register_cli(sub)
    suite.register_cli(sub)
    for sp in sub.choices.values():  # its own usage errors name the command, not afxdp-proxy alone
        sp.set_defaults(command_parser=sp)
    return p


def _usage_parser(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The parser whose usage an error about args shows: the command's, or its action's (testbed)."""
    per_action = getattr(args, "action_parsers", {})
    return per_action.get(getattr(args, "action", None)) or getattr(args, "command_parser", parser)


def main(argv: list[str] | None = None) -> int:
    from afxdp_proxy.bpf import BpfError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "stacks", None), list) and all(a == "-" or a[:1] != "-" for a in extra):
        # `testbed stacks --prefix P S1 S2`: argparse hands out the positionals early (testbed's
        # own check then refuses stacks for an action that takes none, in its words)
        args.stacks += extra
    elif extra:
        _usage_parser(args, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    quiet = getattr(args, "quiet", False)
    setup_log(getattr(args, "log_format", "text"), logging.WARNING if quiet else logging.INFO)
    try:
        return args.func(args)
    except ConfigError as e:
        return _err(str(e), 2)
    except BpfError as e:
        tail = "\n".join(e.log.strip().splitlines()[-15:])
        hint = " (needs root: CAP_BPF and CAP_NET_ADMIN)" if e.errno in (1, 13) and not tail else ""
        return _err(f"{e.strerror}{hint}" + (f"\nlibbpf said:\n{tail}" if tail else ""), 1)
    except PermissionError as e:  # as root too: a bpffs refuses some names, a read-only mount all writes
        return _err(f"{e}: run as root" if os.geteuid() else str(e), 1)
    except (RuntimeError, FileNotFoundError) as e:
        return _err(str(e), 1)
    except KeyboardInterrupt:
        return EXIT_SIGINT
    except BrokenPipeError:  # `stats | head`: the reader is gone, and so is the point of writing
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
