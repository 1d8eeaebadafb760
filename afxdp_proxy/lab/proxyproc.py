"""Run `afxdp-proxy run` as an operator would, inside a namespace, from tests,
the demo and the benchmarks: start, wait until attached, read counters, reload
(SIGHUP), stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from afxdp_proxy import state
from afxdp_proxy.lab import netns


class ProxyProcess:
    """`afxdp-proxy run --config <tmp> [args]` in namespace `ns`, named `name` for `stats`.
    Its output (stdout and stderr, the log) is read as it comes: `output`, wait_for().
    module: the Python module whose `run --config` is started (a lab tool that runs like the
    proxy: afxdp_proxy.lab.bench.null)."""

    def __init__(self, ns: str, config_toml: str, name: str, quiet: bool = True,
                 args: Sequence[str] = (), module: str = "afxdp_proxy",
                 env: dict[str, str] | None = None) -> None:
        self.ns = ns
        self.env = {**os.environ, **env} if env else None
        self.name = name
        self.module = module
        fd, path = tempfile.mkstemp(prefix="afxdp-proxy-", suffix=".toml")
        os.close(fd)
        self.config_path = Path(path)
        self.write_config(config_toml)
        self.quiet = quiet
        self.args = list(args)
        self.proc: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    def write_config(self, config_toml: str) -> None:
        """(Re)write the config file, with proxy.name set to this process's name."""
        if "\nname =" not in config_toml.split("[[sf]]")[0]:
            config_toml = config_toml.replace("[proxy]\n", f'[proxy]\nname = "{self.name}"\n', 1)
        self.config_path.write_text(config_toml)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._lines.append(line)

    def start(self, timeout: float = 15.0) -> ProxyProcess:
        argv = [sys.executable, "-m", self.module, "run", "--config", str(self.config_path), *self.args]
        if self.quiet:
            argv.append("--quiet")
        self._lines = []
        self.proc = netns.popen(self.ns, argv, die_with_parent=True, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True,
                                        name=f"proxy-output-{self.name}")
        self._reader.start()

        def attached() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                self._join()
                raise RuntimeError(f"proxy exited with {self.proc.returncode}: {self.output}")
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

    def wait_for(self, text: str, timeout: float = 10.0, after: int = 0) -> str:
        """The first output line from line `after` on that contains text (polled; the proxy
        must not exit meanwhile)."""
        def found() -> str | None:
            for line in self._lines[after:]:
                if text in line:
                    return line
            if self.proc is not None and self.proc.poll() is not None:
                self._join()
                raise RuntimeError(f"proxy exited with {self.proc.returncode} before saying {text!r}: {self.output}")
            return None

        return str(netns.wait_until(found, timeout, what=f"the proxy to say {text!r}"))

    def reload(self, config_toml: str | None = None, expect: str = "reload", timeout: float = 10.0) -> str:
        """Write config_toml (if given), send SIGHUP, and return the first line the proxy logs
        from then on that contains expect ("reloaded ..." or "reload refused ...")."""
        if config_toml is not None:
            self.write_config(config_toml)
        mark = len(self._lines)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        return self.wait_for(expect, timeout, after=mark)

    def _join(self) -> None:
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None
        if self.proc is not None and self.proc.stdout and not self.proc.stdout.closed:
            self.proc.stdout.close()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0, keep_config: bool = False) -> int | None:
        """Signal the proxy, wait for it, keep its output; returns the exit code. keep_config:
        leave the config file for a start() again (a restart)."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                t0 = time.monotonic()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    netns.stop(self.proc)
                self.stop_seconds = time.monotonic() - t0
            self._join()
            rc = self.proc.returncode
        if not keep_config:
            self.config_path.unlink(missing_ok=True)
        return rc

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
