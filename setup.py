"""setuptools entry for what pyproject.toml cannot say: the cffi extension (native/build_native.py)
and the BPF objects, which build_py compiles with clang from bpf/*.bpf.c (the proxy's) and
bpf/lab/*.bpf.c (the lab's) into the package, afxdp_proxy/bpf_objects/, so an installed proxy
needs no checkout. An editable install compiles them into build/ instead, where `make bpf` puts
them and where a checkout's afxdp_proxy.bpf looks."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACKAGED = Path("afxdp_proxy", "bpf_objects")


def bpf_sources() -> list[Path]:
    return sorted([*ROOT.glob("bpf/*.bpf.c"), *ROOT.glob("bpf/lab/*.bpf.c")])


def compile_bpf(out: Path) -> list[Path]:
    """Each .bpf.c into out/NAME.bpf.o with the Makefile's BPF_CFLAGS (keep the two alike)."""
    clang = os.environ.get("CLANG", "clang")
    if shutil.which(clang) is None:
        raise SystemExit(f"{clang} not found: the BPF objects are compiled with clang (Debian: apt install clang llvm)")
    flags = ["-target", "bpf", "-g", "-O2", "-Wall", "-Werror", f"-I{ROOT / 'bpf' / 'include'}",
             f"-I{ROOT / 'bpf' / 'lab'}", f"-I/usr/include/{platform.machine()}-linux-gnu"]
    out.mkdir(parents=True, exist_ok=True)
    objs = []
    for src in bpf_sources():
        obj = out / src.name.replace(".bpf.c", ".bpf.o")
        subprocess.run([clang, *flags, "-c", str(src), "-o", str(obj)], check=True)
        objs.append(obj)
    return objs


class BuildPyWithBpf(build_py):
    """build_py, then the BPF objects as package data."""

    def _objects_dir(self) -> Path:
        return ROOT / "build" if self.editable_mode else Path(self.build_lib) / PACKAGED

    def run(self) -> None:
        super().run()
        compile_bpf(self._objects_dir())

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if not self.editable_mode:
            outputs += [str(self._objects_dir() / s.name.replace(".bpf.c", ".bpf.o")) for s in bpf_sources()]
        return outputs


setup(cffi_modules=["native/build_native.py:ffibuilder"], cmdclass={"build_py": BuildPyWithBpf})
