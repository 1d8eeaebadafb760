"""Run a backend in the foreground: live counters or periodic log records, clean exit on
SIGINT/SIGTERM, configuration reload on SIGHUP."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from afxdp_proxy import metrics, signals, state
from afxdp_proxy.backends import Backend, make_backend
from afxdp_proxy.config import ConfigError, ProxyConfig, load_config
from afxdp_proxy.counters import DROPS, in_flight_of, mean_dwell_us
from afxdp_proxy.log import LOGGER as log
from afxdp_proxy.log import fields
from afxdp_proxy.reload import RestartNeeded

# counters shown in the live line, in order, with short labels
LIVE = (
    ("rx_packets", "rx"), ("rx_popped", "popped"), ("tx_pushed", "pushed"), ("tx_plain", "plain"),
    ("tx_miss_pass", "miss"), ("tx_miss_drop", "miss-drop"), ("rx_key_full", "key-full"),
    ("evictions", "evicted"), ("expired", "expired"),
)
# shown once they count: what only some configurations do
LIVE_IF_ANY = (("tx_miss_last", "miss-last"), ("tx_host", "to-host"), ("rx_ttl_expired_pass", "ttl-pass"),
               ("rx_vlan_other", "other-vlan"), ("rx_reserved_label", "reserved"))


def live_line(now: dict[str, int], before: dict[str, int], dt: float, in_flight: int) -> str:
    parts = []
    for key, label in LIVE + tuple(kl for kl in LIVE_IF_ANY if now.get(kl[0])):
        rate = (now.get(key, 0) - before.get(key, 0)) / dt if dt > 0 else 0.0
        parts.append(f"{label} {now.get(key, 0)} ({rate:,.0f}/s)")
    drops = sum(now.get(k, 0) for k in DROPS)
    parts.append(f"drops {drops}")
    parts.append(f"in-flight {in_flight}")
    dwell = mean_dwell_us(now)
    if dwell is not None:
        parts.append(f"dwell {dwell:.1f}us")
    return " | ".join(parts)


def summary(counters: dict[str, int], in_flight: int) -> str:
    """Every counter, the packets in flight (cache_inserts - cache_takes - evictions - expired)
    and the SF's mean dwell time."""
    lines = [f"{name:22} {value}" for name, value in counters.items() if name != "tx_dwell_ns"]
    lines.append(f"{'in_flight':22} {in_flight}")
    dwell = mean_dwell_us(counters)
    if dwell is not None:
        lines.append(f"{'mean_dwell_us':22} {dwell:.1f}")
    return "\n".join(lines)


def instance_name(cfg: ProxyConfig) -> str:
    return cfg.name or state.default_instance()


def run(
    cfg: ProxyConfig,
    config_path: str,
    duration: float | None = None,
    live: bool = False,
    log_interval: float = 60.0,
    out: TextIO = sys.stdout,
    ready: Callable[[Backend], None] | None = None,
    stop_event: threading.Event | None = None,
    keep_cache: bool = False,
    backend: Backend | None = None,
) -> dict[str, int]:
    """Attach, report until a signal, the duration or stop_event, detach. Returns the counters.

    live: a line of counters on `out` every second and the full table at the end (a terminal);
    otherwise a counters record in the log every log_interval seconds (0: never), as a service
    wants. Either way the log says when the proxy started and stopped, with its counters.
    SIGHUP reloads config_path (see reload()). keep_cache: keep the cache for the next proxy
    of this name (afxdp_proxy/keep.py). backend: what to run instead of cfg's backend (the lab's
    null forwarder); it must serve cfg.
    """
    stop = stop_event or threading.Event()
    term = threading.Event()  # SIGINT/SIGTERM: stop; SIGHUP wakes the loop through `stop` too
    hup = threading.Event()
    name = instance_name(cfg)
    other = state.running().get(name)
    if other is not None:
        where = "in this network namespace" if other.get("netns") == state.netns_id() else \
            f"in network namespace {other.get('netns', '?')}"
        raise RuntimeError(f"a proxy named {name!r} is already running {where} (pid {other.get('pid', '?')}); "
                           "stop it or set proxy.name")
    old_handlers = {}
    if threading.current_thread() is threading.main_thread():

        def on_stop(*_: object) -> None:
            term.set()
            stop.set()

        def on_hup(*_: object) -> None:
            hup.set()
            stop.set()

        old_handlers = signals.install(on_stop, (signal.SIGINT, signal.SIGTERM))
        old_handlers.update(signals.install(on_hup, (signal.SIGHUP,)))
    backend = backend or make_backend(cfg, instance=name, keep_cache=keep_cache)
    exporter = metrics.Exporter(None)
    try:
        exporter = metrics.Exporter(cfg.metrics)  # [metrics]: bound before anything attaches
        backend.start()
        exporter.watch(backend, cfg, name)
        started = time.time()
        info = _state(cfg, config_path, backend, started)
        state.write(name, info)
        kept = f"; the cache is kept in {info['kept']} for the next proxy of this name" if info.get("kept") else ""
        log.info("%s backend, key %s, topology %s, %d SF(s) attached as %r%s%s", cfg.backend, cfg.key, cfg.topology,
                 len(cfg.sfs), name, kept, "; Ctrl-C to stop" if live else "",
                 extra=fields(event="started", name=name, backend=cfg.backend, key=cfg.key, topology=cfg.topology,
                              sfs=len(cfg.sfs), config=config_path, pid=os.getpid(), kept=info.get("kept")))
        if ready:
            ready(backend)
        t_start = time.monotonic()
        deadline = t_start + duration if duration else None
        before, t_before = backend.counters(), t_start
        first = before  # a kept cache brings its counters along: rates count from here
        logged, t_logged = before, t_start
        while not term.is_set():
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if wait <= 0:
                break
            if stop.wait(wait):
                if not hup.is_set():
                    break  # stop_event, or a signal
                hup.clear()
                stop.clear()
                if term.is_set():
                    break  # SIGTERM came while the flags were cleared
                cfg = reload(backend, cfg, config_path, name)
                exporter.watch(backend, cfg, name)  # the SFs' names and rows as they are now
                state.write(name, _state(cfg, config_path, backend, started))
                continue
            try:
                for sf in backend.tick():
                    log.info("SF %s drained: its return path is detached", sf, extra=fields(event="sf_drained", sf=sf))
                    state.write(name, _state(cfg, config_path, backend, started))
            except Exception as e:
                log.error("detaching what a removed SF used failed: %s", e, extra=fields(event="drain_failed",
                                                                                        error=str(e)))
            now, t_now = backend.counters(), time.monotonic()
            if live:
                print(live_line(now, before, t_now - t_before, in_flight_of(now)), file=out, flush=True)
                before, t_before = now, t_now
            elif log_interval and t_now - t_logged >= log_interval:
                in_flight = in_flight_of(now)
                log.info("counters: %s", live_line(now, logged, t_now - t_logged, in_flight),
                         extra=fields(event="counters", name=name, seconds=round(t_now - t_logged, 3),
                                      in_flight=in_flight, **now))
                logged, t_logged = now, t_now
        final = backend.counters()
        in_flight = in_flight_of(final)
        elapsed = time.monotonic() - t_start
        if live:
            print(summary(final, in_flight), file=out, flush=True)
        log.info("stopped after %.1f s: %s", elapsed, live_line(final, first, elapsed, in_flight),
                 extra=fields(event="stopped", name=name, seconds=round(elapsed, 3), in_flight=in_flight,
                              **final))
        return final
    finally:
        exporter.close()  # before the backend closes what a scrape reads
        backend.stop()
        state.remove(name)
        signals.restore(old_handlers)


def _state(cfg: ProxyConfig, config_path: str, backend: Backend, started: float) -> dict[str, object]:
    """What /run/afxdp-proxy/<name>.json says about a running proxy (the backend's state()
    names its SFs by counter row: "sfs")."""
    from afxdp_proxy.check import interfaces_of
    from afxdp_proxy.reload import restart_fields

    return {"kind": "proxy", "pid": os.getpid(), "backend": cfg.backend, "key": cfg.key,
            "topology": cfg.topology, "config": config_path, "sfs": [sf.name for sf in cfg.sfs],
            "netns": state.netns_id(), "started": started, "interfaces": interfaces_of(cfg),
            "metrics_listen": cfg.metrics.listen if cfg.metrics else None, "restart_fields": restart_fields(cfg),
            **backend.state()}


def _check_reload(new: ProxyConfig, running: ProxyConfig, config_path: str) -> None:
    """The checks run makes at start, on the configuration a reload would apply: a warning is
    logged, an error refuses the reload (ConfigError naming the field, as run's refusal does)."""
    from afxdp_proxy.check import ERROR, WARN, interfaces_of, run_checks

    report = run_checks(new, own=interfaces_of(running), own_listen=running.metrics.listen if running.metrics else None)
    for f in report.of(WARN):
        if not f.subject.startswith("sf["):
            continue  # the host's (bpffs, ...): said at start, and a reload changes none of it
        log.warning("check: %s", f.line(), extra=fields(event="check", check=f.check, subject=f.subject,
                                                         status=f.status, config=config_path))
    errors = report.of(ERROR)
    if errors:
        ns = state.netns_name()
        where = f"ip netns exec {ns} " if ns else ""
        more = (f" (and {len(errors) - 1} more: {where}afxdp-proxy check --config {config_path})"
                if len(errors) > 1 else "")
        raise ConfigError(errors[0].line() + more)


def reload(backend: Backend, cfg: ProxyConfig, config_path: str, name: str) -> ProxyConfig:
    """SIGHUP: read config_path again and apply what changed to the SFs. Returns the
    configuration now running: the new one, or, when the file has an error or a change
    that needs a restart, the old one, with one log line naming the field."""
    try:
        new = load_config(config_path)
        if instance_name(new) != name:
            raise RestartNeeded(f"proxy.name: {name} -> {instance_name(new)} cannot change while the proxy runs; "
                                "restart it to apply (the running configuration stays)")
        if new.metrics != cfg.metrics:
            raise RestartNeeded("metrics: the endpoint cannot move while the proxy runs; restart it to apply "
                                "(the running configuration stays)")
        _check_reload(new, cfg, config_path)
        done = backend.reload(new)
    except RestartNeeded as e:
        log.error("reload refused: %s", e, extra=fields(event="reload_refused", config=config_path, error=str(e),
                                                        restart_needed=True))
        return cfg
    except ConfigError as e:
        log.error("reload refused: %s (the running configuration stays)", e,
                  extra=fields(event="reload_refused", config=config_path, error=str(e), restart_needed=False))
        return cfg
    except Exception as e:
        # a link that would not attach (the links attached for it are detached again), netlink
        log.error("reload failed: %s (the running configuration stays)", e,
                  extra=fields(event="reload_failed", config=config_path, error=str(e)))
        return cfg
    for c in done:
        tail = f"; its return path stays {new.max_dwell_ms} ms for the packets inside it" if c.kind == "removed" else ""
        log.info("%s%s", c.line(), tail, extra=fields(event=f"sf_{c.kind}", sf=c.name, slot=c.slot))
    pause = getattr(backend, "last_pause_us", None)
    log.info("reloaded %s: %s%s", config_path,
             ", ".join(f"{sum(c.kind == k for c in done)} {k}" for k in ("added", "removed", "changed"))
             if done else "no SF changed", f" (AF_XDP workers paused {pause:.0f} us)" if done and pause else "",
             extra=fields(event="reloaded", config=config_path, sfs=len(new.sfs),
                          **{k: sum(c.kind == k for c in done) for k in ("added", "removed", "changed")}))
    return new
