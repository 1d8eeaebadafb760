"""The null AF_XDP forwarder: the benchmark's floor for the afxdp backend (variant afxdp-null).

It is the afxdp backend with the proxying taken out: the same XDP programs, AF_XDP sockets,
UMEM, rings and worker loop (native/axp_xsk.c, axp_xsk_opts.null_fwd), moving every IP frame
between the same interfaces (net_in -> to_sf, from_sf -> net_out) with only its Ethernet
addresses rewritten, as any hop must, and nothing else: no parse, no key, no cache, no
labels. What the afxdp proxy costs beyond it is the engine's; what it costs itself is
AF_XDP's on this path. It forwards plain IP: a label stack it left on would not get through
the SF, whose kernel does not route MPLS.

A lab tool, not a mode of the product: it takes the afxdp backend's configuration, runs in the
foreground like ``afxdp-proxy run`` (``stats`` reads it; SIGINT or SIGTERM stops it) and does
not reload::

    python -m afxdp_proxy.lab.bench.null run --config proxy.toml [--quiet] [--duration S]
"""

from __future__ import annotations

import argparse
import logging
import sys

from afxdp_proxy.cli import seconds_above_zero
from afxdp_proxy.config import ConfigError, load_config
from afxdp_proxy.log import LOGGER as log
from afxdp_proxy.log import setup as setup_log

MODULE = "afxdp_proxy.lab.bench.null"


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 when stopped, 2 for a configuration it cannot run, 1 for other failures."""
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="forward until stopped")
    run.add_argument("--config", "-c", required=True, help="the afxdp backend's proxy TOML")
    run.add_argument("--duration", "-d", type=seconds_above_zero, metavar="S", help="stop after S seconds")
    run.add_argument("--quiet", "-q", action="store_true", help="log only warnings and errors")
    args = p.parse_args(argv)
    setup_log("text", logging.WARNING if args.quiet else logging.INFO)

    from afxdp_proxy import runner
    from afxdp_proxy.backends.afxdp import AfxdpProxy

    try:
        cfg = load_config(args.config)
        if cfg.backend != "afxdp":
            raise ConfigError(f'proxy.backend: "{cfg.backend}"; the null forwarder runs an afxdp configuration')
        backend = AfxdpProxy(cfg, instance=runner.instance_name(cfg), null_forward=True)
        log.info("null forwarder: frames move untouched but for their MACs (no parse, no cache)")
        runner.run(cfg, args.config, duration=args.duration, backend=backend)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    except (RuntimeError, OSError) as e:
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
