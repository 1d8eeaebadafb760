"""Run `afxdp-proxy run` as an operator would, inside a namespace, from tests,
the demo and the benchmarks: start, wait until attached, read counters, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from afxdp_proxy import state
from afxdp_proxy.lab import netns


class ProxyProcess:
    """`afxdp-proxy run --config <tmp> ` in namespace `ns`, named `name` for `stats`."""

    def __init__(self, ns: str, config_toml: str, name: str, quiet: bool = True) -> None:
        self.ns = ns
        self.name = name
        if "\nname =" not in config_toml.split("[[sf]]")[0]:
            config_toml = config_toml.replace("[proxy]\n", f'[proxy]\nname = "{name}"\n', 1)
        fd, path = tempfile.mkstemp(prefix="afxdp-proxy-", suffix=".toml")
        with os.fdopen(fd, "w") as f:
            f.write(config_toml)
        self.config_path = Path(path)
        self.quiet = quiet
        self.proc: subprocess.Popen | None = None
        self.output = ""

    def start(self, timeout: float = 15.0) -> ProxyProcess:
        argv = [sys.executable, "-m", "afxdp_proxy", "run", "--config", str(self.config_path)]
        if self.quiet:
            argv.append("--quiet")
        self.proc = netns.popen(self.ns, argv, die_with_parent=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

        def attached() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}: {self.proc.stdout.read()}")
            info = state.running().get(self.name)
            return bool(info and info.get("pid") == self.proc.pid)

        try:
            netns.wait_until(attached, timeout, what=f"proxy {self.name} to attach")
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stats(self) -> dict[str, Any]:
        """Counters through the operator's command, `afxdp-proxy stats --json`."""
        import json

        r = netns.run(self.ns, [sys.executable, "-m", "afxdp_proxy", "stats", "--json", "--name", self.name],
                      timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"stats failed: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def counters(self) -> dict[str, int]:
        return self.stats()["counters"]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int | None:
        """Signal the proxy, wait for it, keep its output; returns the exit code."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                t0 = time.monotonic()
                try:
                    self.output += self.proc.communicate(timeout=timeout)[0] or ""
                except subprocess.TimeoutExpired:
                    netns.stop(self.proc)
                    self.output += self.proc.communicate()[0] or ""
                self.stop_seconds = time.monotonic() - t0
            elif self.proc.stdout and not self.proc.stdout.closed:
                self.output += self.proc.stdout.read()
                self.proc.stdout.close()
            rc = self.proc.returncode
        self.config_path.unlink(missing_ok=True)
        return rc

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
