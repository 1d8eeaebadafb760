"""Checks shared by the end-to-end tests.

The kernel frees what a stopped proxy held asynchronously: a BPF program's ID goes
when its last reference does, but its maps live on until an RCU grace period and a
work item have run, and a killed process's links are released as its fds close.
So every "nothing is left" check polls with a deadline; none looks once.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

from afxdp_proxy import bpf, state
from afxdp_proxy.lab import netns

RELEASE_TIMEOUT = 10.0  # seconds; the kernel needs milliseconds, a loaded 2-core CI box more


def map_exists(map_id: int) -> bool:
    """True while a BPF map with this ID exists (opening it by ID works)."""
    fd = bpf.lib.axp_map_fd_by_id(map_id)
    if fd < 0:
        return False
    bpf.lib.axp_close_fd(fd)
    return True


def wait_programs_unloaded(ids: Iterable[int], timeout: float = RELEASE_TIMEOUT) -> None:
    """Wait until none of these program IDs is loaded."""
    ids = set(ids)
    netns.wait_until(lambda: not ids & set(bpf.loaded_programs()), timeout,
                     what=f"programs {sorted(ids)} to unload")


def wait_new_programs_gone(before: dict[int, str], prefix: str = "axp_",
                           timeout: float = RELEASE_TIMEOUT) -> None:
    """Wait until no program named prefix* is loaded that was not loaded at `before`."""
    def gone() -> bool:
        return not {i for i in bpf.loaded_programs(prefix) if i not in before}

    netns.wait_until(gone, timeout, what=f"{prefix}* programs loaded since the test began to unload")


def wait_maps_freed(ids: Iterable[int], timeout: float = RELEASE_TIMEOUT) -> None:
    """Wait until none of these map IDs exists (maps outlive their programs for a grace period)."""
    ids = list(ids)
    netns.wait_until(lambda: not any(map_exists(i) for i in ids), timeout,
                     what=f"maps {ids} to be freed")


def wait_no_xdp(ns: str, ifnames: Iterable[str | None], timeout: float = RELEASE_TIMEOUT) -> None:
    """Wait until no XDP program is attached to these interfaces of namespace ns."""
    names = [n for n in ifnames if n]

    def attached() -> dict[str, int]:
        with netns.enter(ns):
            ids = {}
            for n in names:
                try:
                    prog = bpf.xdp_prog_id(socket.if_nametoindex(n))
                except OSError:  # the interface went away: nothing can be attached to it
                    continue
                if prog:
                    ids[n] = prog
            return ids

    netns.wait_until(lambda: not attached(), timeout, what=f"XDP to detach from {names} in {ns}")


def wait_not_running(name: str, timeout: float = RELEASE_TIMEOUT) -> None:
    """Wait until no live proxy state file carries this instance name."""
    netns.wait_until(lambda: name not in state.running(), timeout, what=f"proxy {name} to leave /run")


def wait_file_gone(path: str, timeout: float = RELEASE_TIMEOUT) -> None:
    netns.wait_until(lambda: not os.path.exists(path), timeout, what=f"{path} to be removed")
