"""The service functions the testbed can run where its SF lives (the SF namespace when
attached, the proxy namespace's own kernel inline): real, SFC-unaware network functions
that forward, filter or rewrite bare IP packets.

  forward   kernel routing only
  firewall  nftables, stateful: conntrack's established and related packets pass, a new
            flow only from the sender's subnet to the receiver's, everything else is
            dropped and counted (forward hook, policy drop). Replies that bypass it leave it with
            half a connection, so the flow's next packets are invalid to it: only a proxy
            that passes both directions through it keeps TCP alive.
  nat       nftables masquerade towards the receiver (postrouting): the receiver sees the
            SF's address, conntrack turns replies back. It rewrites key fields, so a
            proxy's per-packet keys miss at TX (on_miss decides).

Rules are one nftables table, ``inet axp_sf``, loaded with ``nft -f`` in the namespace and
gone with it.
"""

from __future__ import annotations

import re
import tempfile

from afxdp_proxy.lab import netns

KINDS = ("forward", "firewall", "nat")
TABLE = "axp_sf"


def firewall_rules(src4: str, dst4: str, src6: str | None, dst6: str | None) -> str:
    """The stateful firewall for subnets src -> dst ("10.0.1.0/24", ...)."""
    new6 = f"    ct state new ip6 saddr {src6} ip6 daddr {dst6} accept\n" if src6 and dst6 else ""
    return (f"table inet {TABLE} {{\n"
            "  chain forward {\n"
            "    type filter hook forward priority filter; policy drop;\n"
            "    ct state established,related accept\n"
            f"    ct state new ip saddr {src4} ip daddr {dst4} accept\n"
            f"{new6}"
            "    counter drop\n"
            "  }\n"
            "}\n")


def nat_rules(out_ifname: str) -> str:
    """Masquerade what leaves by out_ifname (towards the receiver), IPv4 and IPv6."""
    return (f"table inet {TABLE} {{\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    oifname "{out_ifname}" masquerade\n'
            "  }\n"
            "}\n")


def load(ns: str, rules: str) -> None:
    """Load an nftables script in namespace ns; a failure names nft's complaint."""
    with tempfile.NamedTemporaryFile("w", prefix="axp-sf-", suffix=".nft") as f:
        f.write(rules)
        f.flush()
        r = netns.run(ns, ["nft", "-f", f.name])
    if r.returncode != 0:
        raise RuntimeError(f"nft in {ns}: {r.stderr.strip() or r.returncode}")


def unload(ns: str) -> None:
    """Remove the SF's table from namespace ns (the SF forwards everything again)."""
    r = netns.run(ns, ["nft", "delete", "table", "inet", TABLE])
    if r.returncode != 0:
        raise RuntimeError(f"nft in {ns}: {r.stderr.strip() or r.returncode}")


def ruleset(ns: str) -> str:
    """The SF's table as nft lists it, with its counters ("" when there is none)."""
    r = netns.run(ns, ["nft", "list", "table", "inet", TABLE])
    return r.stdout if r.returncode == 0 else ""


def dropped(ns: str) -> int:
    """Packets the firewall dropped (its last rule counts them before the policy would)."""
    m = re.search(r"counter packets (\d+) bytes \d+ drop", ruleset(ns))
    return int(m.group(1)) if m else 0
