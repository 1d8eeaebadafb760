"""The afxdp-proxy command line."""

from __future__ import annotations

import argparse
import json
import sys

from afxdp_proxy.config import ConfigError, load_config

EPILOG = """\
examples:
  ip netns exec proxy afxdp-proxy run --config proxy.toml
  ip netns exec proxy afxdp-proxy stats --json
  afxdp-proxy testbed up --topology attached && afxdp-proxy testbed status
  afxdp-proxy demo
  afxdp-proxy bench --quick
"""

RUN_HELP = """\
Attach the proxy described by --config to the interfaces of the current network
namespace (run it with `ip netns exec NS ...`), print a line of live counters
every second, and detach everything on SIGINT/SIGTERM/SIGHUP, after --duration,
or on any error. Programs are attached through BPF links, so even a killed
proxy leaves nothing attached.

counters (also in `afxdp-proxy stats`):
  rx_popped            stack popped, cached, bare packet sent on to the SF
  rx_not_mpls          passed: not SR-MPLS (ARP, plain IP)
  rx_other_label       passed: top label addresses no SF of this proxy
  rx_malformed         dropped: truncated Ethernet/MPLS/IP/L4 header
  rx_too_many_labels   dropped: no bottom of stack within 16 labels
  rx_not_ip            dropped: no IPv4/IPv6 packet below the stack
  rx_conflict_drop     dropped: same key already in flight (on_conflict=drop)
  rx_conflict_replace  same key in flight, entry replaced (on_conflict=replace)
  rx_key_ext_limit     popped all the same: IPv6 with more than 6 extension
                       headers, keyed on what follows the sixth
  tx_pushed            cache hit, stack minus its top label pushed
  tx_plain             cache hit, no label left: sent as plain IP
  tx_miss_pass/_drop   packet from the SF without a cache entry (on_miss)
  tx_not_ip            passed: not IP
  tx_gso_drop          dropped: merged (GSO) skb, cannot carry per-packet stacks
  evicted_or_lost      popped - returned - replaced - in flight: entries of
                       packets the SF dropped or that the LRU cache evicted

afxdp backend only:
  evictions            cache entries pushed out before their packet returned
  xdp_no_socket        dropped: frame on a queue without a socket
  tx_ring_full         dropped: a TX ring stayed full
  xsk_rx_ring_full...  the kernel's AF_XDP socket statistics
"""


def _err(msg: str, code: int) -> int:
    print(f"afxdp-proxy: error: {msg}", file=sys.stderr)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    from afxdp_proxy.runner import run

    cfg = load_config(args.config)
    run(cfg, args.config, duration=args.duration, quiet=args.quiet)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from afxdp_proxy import bpf, state
    from afxdp_proxy.backends.kernel import read_counters
    from afxdp_proxy.runner import summary

    live = state.running()
    if args.name:
        if args.name not in live:
            return _err(f"no running proxy named {args.name!r} (running: {', '.join(live) or 'none'})", 1)
        name = args.name
    elif state.netns_id() in live:
        name = state.netns_id()
    elif len(live) == 1:
        name = next(iter(live))
    elif not live:
        return _err("no proxy is running", 1)
    else:
        return _err(f"several proxies run ({', '.join(live)}); pick one with --name", 1)
    info = live[name]
    if info["backend"] == "afxdp":
        # the workers' counters live in the proxy process, shared through a mapped file
        from afxdp_proxy.backends.afxdp import read_stats

        counters, in_flight = read_stats(info)
    else:
        counters_map = bpf.Map.from_id(info["maps"]["counters"], "uint32_t", "uint64_t")
        cache_map = bpf.Map.from_id(info["maps"]["cache"], "struct axp_key", "struct axp_entry")
        try:
            counters = read_counters(counters_map)
            in_flight = cache_map.count()
        finally:
            counters_map.close()
            cache_map.close()
    if args.json:
        print(json.dumps({"name": name, "backend": info["backend"], "key": info["key"],
                          "topology": info["topology"], "pid": info["pid"], "in_flight": in_flight,
                          "counters": counters}, indent=1))
    else:
        print(f"{name}: {info['backend']} backend, key {info['key']}, topology {info['topology']}, "
              f"pid {info['pid']}")
        print(summary(counters, in_flight))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="afxdp-proxy",
        description="A caching SFC proxy for SR-MPLS: strips each packet's label stack before an "
        "SFC-unaware service function and restores exactly that stack afterwards.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the proxy in the foreground", description=RUN_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--config", "-c", required=True, help="proxy TOML file (see README)")
    run.add_argument("--duration", "-d", type=float, metavar="S", help="stop after S seconds")
    run.add_argument("--quiet", "-q", action="store_true", help="no live counter lines")
    run.set_defaults(func=cmd_run)

    stats = sub.add_parser("stats", help="print the counters of a running proxy",
                           description="Counters of a running proxy: the one of this network namespace, "
                           "the only one running, or the one named with --name.")
    stats.add_argument("--name", help="instance name (proxy.name, or netns-<inode> by default)")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.set_defaults(func=cmd_stats)

    from afxdp_proxy.lab import demo, testbed
    from afxdp_proxy.lab.bench import suite

    testbed.register_cli(sub)
    demo.register_cli(sub)
    suite.register_cli(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from afxdp_proxy.bpf import BpfError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        return _err(str(e), 2)
    except BpfError as e:
        tail = "\n".join(e.log.strip().splitlines()[-15:])
        hint = " (needs root: CAP_BPF and CAP_NET_ADMIN)" if e.errno in (1, 13) and not tail else ""
        return _err(f"{e.strerror}{hint}" + (f"\nlibbpf said:\n{tail}" if tail else ""), 1)
    except PermissionError as e:
        return _err(f"{e}: run as root", 1)
    except (RuntimeError, FileNotFoundError) as e:
        return _err(str(e), 1)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
