"""Thin, typed access to libbpf through the native extension.

One choke point (:func:`check`) turns negative errno returns into
:class:`BpfError`; everything else here is objects, maps, hooks and
``BPF_PROG_TEST_RUN``. Struct layouts come from the C headers via cffi.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afxdp_proxy._native import ffi, lib

XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7
BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK = 0, 1, 2, 4
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH = 2, 5, 6, 10

# Where the compiled BPF objects are: AXP_BPF_DIR when set; else installed with the package
# (pip install ., a wheel); else the build/ folder of a checkout (`make bpf`, editable install).
PACKAGED_OBJECTS = Path(__file__).resolve().parent / "bpf_objects"
CHECKOUT_OBJECTS = Path(__file__).resolve().parent.parent / "build"


class BpfError(OSError):
    """A libbpf or bpf(2) call failed; ``errno`` says why, ``log`` has libbpf's words."""

    def __init__(self, err: int, what: str, log: str = "") -> None:
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.log = log

    @property
    def not_supported(self) -> bool:
        return self.errno in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS)


def check(rc: int, what: str) -> int:
    """Return rc, or raise BpfError for a negative errno (with libbpf's log)."""
    if rc < 0:
        raise BpfError(-rc, what, ffi.string(lib.axp_log_text()).decode(errors="replace"))
    return rc


def object_dirs() -> list[Path]:
    """The folders object_path() searches, in order."""
    env = os.environ.get("AXP_BPF_DIR")
    return [Path(env)] if env else [PACKAGED_OBJECTS, CHECKOUT_OBJECTS]


def object_path(name: str) -> Path:
    """Path of a compiled BPF object, e.g. ``proxy`` -> .../bpf_objects/proxy.bpf.o."""
    dirs = object_dirs()
    for d in dirs:
        path = d / f"{name}.bpf.o"
        if path.exists():
            return path
    where = ("in neither " if len(dirs) > 1 else "not in ") + " nor ".join(str(d) for d in dirs)
    raise FileNotFoundError(f"{name}.bpf.o is {where}: reinstall the package (pip install .), "
                            "run `make bpf` in a checkout, or point AXP_BPF_DIR at the objects")


NCPUS = lib.axp_num_possible_cpus()


class Map:
    """A BPF map by fd, with cffi types for its key and value."""

    def __init__(self, fd: int, key_type: str, value_type: str, owned: bool = False) -> None:
        self.fd = fd
        self.key_type = key_type
        self.value_type = value_type
        self._owned = owned
        info = ffi.new("struct axp_map_info *")
        check(lib.axp_map_info(fd, info), "map info")
        self.id = info.id
        self.type = info.type
        self.max_entries = info.max_entries
        self.key_size = info.key_size
        self.value_size = info.value_size
        self.percpu = info.type in (
            BPF_MAP_TYPE_PERCPU_HASH,
            BPF_MAP_TYPE_PERCPU_ARRAY,
            BPF_MAP_TYPE_LRU_PERCPU_HASH,
        )
        # a build whose structs differ from the loaded object's would read garbage: refuse it
        for what, ctype, size in (("key", key_type, info.key_size), ("value", value_type, info.value_size)):
            if ffi.sizeof(ctype) != size:
                raise ValueError(f"map {info.id}: {what} is {size} bytes, {ctype} is {ffi.sizeof(ctype)}")

    @classmethod
    def from_id(cls, map_id: int, key_type: str, value_type: str) -> Map:
        return cls(check(lib.axp_map_fd_by_id(map_id), f"map id {map_id}"), key_type, value_type, True)

    def close(self) -> None:
        if self._owned and self.fd >= 0:
            lib.axp_close_fd(self.fd)
            self.fd = -1

    def _key(self, key: Any) -> Any:
        if isinstance(key, int):
            return ffi.new(f"{self.key_type} *", key)
        if isinstance(key, (bytes, bytearray)):
            buf = ffi.new(f"{self.key_type} *")
            ffi.memmove(buf, key, self.key_size)
            return buf
        return key

    def _value_buf(self) -> Any:
        if not self.percpu:
            return ffi.new(f"{self.value_type} *")
        return ffi.new(f"{self.value_type}[]", NCPUS)

    def lookup(self, key: Any, flags: int = 0) -> Any:
        """The value (a list per CPU for per-CPU maps), or None when absent. flags
        BPF_F_LOCK: copied under the value's bpf_spin_lock (a consistent snapshot)."""
        val = self._value_buf()
        rc = lib.axp_map_lookup(self.fd, self._key(key), val, flags)
        if rc == -errno.ENOENT:
            return None
        check(rc, "map lookup")
        if self.percpu:
            return list(val)
        # a struct or array is returned as the owning pointer: val[0] would not keep the buffer alive
        return val if ffi.typeof(self.value_type).kind in ("struct", "union", "array") else val[0]

    def lookup_range(self, first: int, n: int) -> list[Any]:
        """Values of keys first..first+n-1 of an array map in one syscall (BPF_MAP_LOOKUP_BATCH);
        a per-CPU map gives a list per key."""
        per = NCPUS if self.percpu else 1
        vals = ffi.new(f"{self.value_type}[]", n * per)
        check(lib.axp_map_lookup_range(self.fd, first, n, vals), f"map batch lookup {first}..{first + n - 1}")
        if self.percpu:
            return [list(vals[i * per:(i + 1) * per]) for i in range(n)]
        return [vals[i] for i in range(n)]

    def update(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        if isinstance(value, int):
            value = ffi.new(f"{self.value_type} *", value)
        check(lib.axp_map_update(self.fd, self._key(key), value, flags), "map update")

    def delete(self, key: Any) -> bool:
        rc = lib.axp_map_delete(self.fd, self._key(key))
        if rc == -errno.ENOENT:
            return False
        check(rc, "map delete")
        return True

    def keys(self) -> Iterator[Any]:
        cur = ffi.NULL
        while True:
            nxt = ffi.new(f"{self.key_type} *")
            rc = lib.axp_map_next_key(self.fd, cur, nxt)
            if rc == -errno.ENOENT:
                return
            check(rc, "map next key")
            yield nxt
            cur = nxt

    def items(self) -> Iterator[tuple[Any, Any]]:
        for key in self.keys():
            val = self.lookup(key)
            if val is not None:
                yield key, val

    def count(self) -> int:
        return check(lib.axp_map_count(self.fd, self.key_size), "map count")

    def clear(self) -> None:
        for key in list(self.keys()):
            self.delete(key)


class BpfObject:
    """A BPF object file: configure (.rodata, map sizes), load, then use its fds."""

    def __init__(self, path: Path | str) -> None:
        lib.axp_log_capture(0)
        lib.axp_log_clear()
        err = ffi.new("int *")
        self._obj = lib.axp_obj_open(str(path).encode(), err)
        if self._obj == ffi.NULL:
            check(err[0] if err[0] < 0 else -errno.EINVAL, f"open {path}")
        self.path = Path(path)
        self.loaded = False

    def set_rodata(self, value: Any) -> None:
        """Copy a struct pointer (e.g. ``struct axp_config *``) into .rodata before load."""
        check(lib.axp_obj_set_rodata(self._obj, value, ffi.sizeof(value[0])), ".rodata")

    def set_max_entries(self, map_name: str, n: int) -> None:
        check(lib.axp_obj_set_max_entries(self._obj, map_name.encode(), n), f"resize {map_name}")

    def set_autoload(self, prog: str, autoload: bool) -> None:
        check(lib.axp_obj_set_autoload(self._obj, prog.encode(), int(autoload)), f"autoload {prog}")

    def reuse_map(self, map_name: str, fd: int) -> None:
        """Before load: the object's map `map_name` is the existing map `fd` (shared state)."""
        check(lib.axp_obj_reuse_map(self._obj, map_name.encode(), fd), f"reuse map {map_name}")

    def set_pin_path(self, map_name: str, path: Path | str) -> None:
        """Before load: reuse the map pinned at path, or create it and pin it there."""
        check(lib.axp_obj_set_pin_path(self._obj, map_name.encode(), str(path).encode()), f"pin path of {map_name}")

    def load(self) -> None:
        lib.axp_log_clear()
        check(lib.axp_obj_load(self._obj), f"load {self.path.name}")
        self.loaded = True

    def prog_fd(self, name: str) -> int:
        return check(lib.axp_obj_prog_fd(self._obj, name.encode()), f"program {name}")

    def prog_id(self, name: str) -> int:
        info = ffi.new("struct axp_prog_info *")
        check(lib.axp_prog_info(self.prog_fd(name), info), f"info {name}")
        return info.id

    def map(self, name: str, key_type: str, value_type: str) -> Map:
        return Map(check(lib.axp_obj_map_fd(self._obj, name.encode()), f"map {name}"), key_type, value_type)

    def map_id(self, name: str) -> int:
        """The ID of a map of any type (a ring buffer has no key or value to type)."""
        info = ffi.new("struct axp_map_info *")
        check(lib.axp_map_info(check(lib.axp_obj_map_fd(self._obj, name.encode()), f"map {name}"), info),
              f"info {name}")
        return info.id

    def close(self) -> None:
        if self._obj != ffi.NULL:
            lib.axp_obj_close(self._obj)
            self._obj = ffi.NULL

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def obj_get(path: Path | str) -> int:
    """An fd of the object pinned at path (the caller closes it)."""
    return check(lib.axp_obj_get(str(path).encode()), f"open pinned {path}")


def mount_bpffs(path: Path | str) -> None:
    """Mount a bpffs instance on the directory path."""
    check(lib.axp_mount_bpffs(str(path).encode()), f"mount bpffs on {path}")


@dataclass
class RunResult:
    retval: int
    data: bytes
    duration_ns: int


def test_run(
    prog_fd: int,
    data: bytes,
    repeat: int = 1,
    ctx: bytes | None = None,
    flags: int = 0,
    batch_size: int = 0,
    out_size: int | None = None,
) -> RunResult:
    """BPF_PROG_TEST_RUN: run the program on data, return verdict, output bytes, ns per run."""
    size = out_size if out_size is not None else len(data) + 256
    out = ffi.new("uint8_t[]", max(size, 1))
    out_len = ffi.new("uint32_t *", size)
    retval = ffi.new("uint32_t *")
    duration = ffi.new("uint32_t *")
    ctx_buf = ffi.from_buffer(ctx) if ctx else ffi.NULL
    check(
        lib.axp_prog_test_run(
            prog_fd, data, len(data), out if out_size != 0 else ffi.NULL,
            out_len if out_size != 0 else ffi.NULL, ctx_buf, len(ctx) if ctx else 0,
            repeat, flags, batch_size, retval, duration,
        ),
        "test run",
    )
    return RunResult(retval[0], bytes(ffi.buffer(out, out_len[0])) if out_size != 0 else b"", duration[0])


def prog_info(prog_fd: int) -> Any:
    info = ffi.new("struct axp_prog_info *")
    check(lib.axp_prog_info(prog_fd, info), "prog info")
    return info


def loaded_programs(prefix: str = "") -> dict[int, str]:
    """{id: name} of every BPF program loaded in the system whose name starts with prefix."""
    out: dict[int, str] = {}
    cur = ffi.new("uint32_t *", 0)
    nxt = ffi.new("uint32_t *")
    while lib.axp_prog_next_id(cur[0], nxt) == 0:
        cur[0] = nxt[0]
        fd = lib.axp_prog_fd_by_id(nxt[0])
        if fd < 0:
            continue  # unloaded meanwhile
        try:
            info = ffi.new("struct axp_prog_info *")
            if lib.axp_prog_info(fd, info) == 0:
                name = ffi.string(info.name).decode()
                if name.startswith(prefix):
                    out[info.id] = name
        finally:
            lib.axp_close_fd(fd)
    return out


def xdp_attach(ifindex: int, prog_fd: int, flags: int = XDP_FLAGS_DRV_MODE) -> None:
    check(lib.axp_xdp_attach(ifindex, prog_fd, flags), f"attach XDP to ifindex {ifindex}")


def xdp_detach(ifindex: int, prog_id: int = 0, flags: int = 0) -> None:
    check(lib.axp_xdp_detach(ifindex, flags, prog_id), f"detach XDP from ifindex {ifindex}")


def xdp_prog_id(ifindex: int) -> int:
    out = ffi.new("uint32_t *")
    check(lib.axp_xdp_query(ifindex, out), f"query XDP on ifindex {ifindex}")
    return out[0]


def tc_attach(ifindex: int, prog_fd: int, egress: bool) -> bool:
    """Attach at clsact ingress/egress; True when we created the clsact qdisc."""
    created = ffi.new("int *")
    where = "egress" if egress else "ingress"
    check(lib.axp_tc_attach(ifindex, int(egress), prog_fd, created), f"attach TC {where} to ifindex {ifindex}")
    return bool(created[0])


def tc_detach(ifindex: int, egress: bool, destroy_hook: bool) -> None:
    where = "egress" if egress else "ingress"
    rc = lib.axp_tc_detach(ifindex, int(egress), int(destroy_hook))
    if rc not in (0, -errno.ENOENT, -errno.ENODEV, -errno.EINVAL):
        check(rc, f"detach TC {where} from ifindex {ifindex}")


def tc_prog_id(ifindex: int, egress: bool) -> int:
    out = ffi.new("uint32_t *")
    rc = lib.axp_tc_query(ifindex, int(egress), out)
    return out[0] if rc == 0 else 0


class Link:
    """A BPF link (XDP or TCX): attached while open, detached on close or process exit."""

    def __init__(self, fd: int, what: str) -> None:
        self.fd = fd
        self.what = what

    @classmethod
    def xdp(cls, prog_fd: int, ifindex: int) -> Link:
        return cls(check(lib.axp_link_xdp(prog_fd, ifindex), f"attach XDP to ifindex {ifindex}"),
                   f"xdp@{ifindex}")

    @classmethod
    def tcx(cls, prog_fd: int, ifindex: int, egress: bool) -> Link:
        where = "egress" if egress else "ingress"
        return cls(check(lib.axp_link_tcx(prog_fd, ifindex, int(egress)),
                         f"attach TC {where} to ifindex {ifindex}"), f"tcx-{where}@{ifindex}")

    @classmethod
    def raw_tp(cls, prog_fd: int, what: str) -> Link:
        """A tp_btf program on the tracepoint it names."""
        return cls(check(lib.axp_link_raw_tp(prog_fd), f"attach to tracepoint {what}"), f"tp-{what}")

    def update(self, prog_fd: int) -> None:
        """Run prog_fd in place of the link's program, atomically (BPF_LINK_UPDATE)."""
        check(lib.axp_link_update(self.fd, prog_fd), f"replace the program of {self.what}")

    def close(self) -> None:
        if self.fd >= 0:
            lib.axp_link_detach(self.fd)
            self.fd = -1


def enable_run_stats() -> int:
    """Turn on kernel per-program run-time stats while the returned fd is open."""
    return check(lib.axp_enable_run_stats(), "enable BPF run-time stats")
