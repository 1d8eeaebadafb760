"""The ``afxdp-proxy`` command: :func:`afxdp_proxy.cli.main` behind an import that Ctrl-C may interrupt.

Loading the CLI's modules (the extension, prometheus_client, scapy on demand) takes a few hundred
milliseconds; a SIGINT then raised KeyboardInterrupt out of the console script's own import line,
a traceback. Here it exits 130, as a command the CLI runs does on SIGINT.
"""

from __future__ import annotations

EXIT_SIGINT = 130  # 128 + SIGINT, the shell's convention


def main() -> int:
    try:
        from afxdp_proxy.cli import main as cli_main

        return cli_main()  # its commands catch their own; this covers building the parser too
    except KeyboardInterrupt:
        return EXIT_SIGINT
