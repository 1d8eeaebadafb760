"""Build the afxdp_proxy._native cffi extension (API mode).

The C lives in real files under native/ and bpf/include/; the cdef is the
preprocessed native/axp_native.h, so struct layouts and enums are declared
once, in C, for the BPF programs, the extension and Python alike. The lab's
slot constants (bpf/lab/*.shared.h) are exported too, so nothing reads a C
header at run time.

Run directly (``python native/build_native.py``) to build in place, or let
setuptools call it through ``cffi_modules`` at install time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"
INCLUDE = ROOT / "bpf" / "include"
LAB = ROOT / "bpf" / "lab"
# headers whose integer #defines (with these prefixes) become lib.NAME constants
CONSTANTS = (
    (INCLUDE / "proxy.shared.h", "AXP"),
    (INCLUDE / "cache.shared.h", "AXP"),
    (INCLUDE / "trace.shared.h", "AXP"),
    (NATIVE / "axp_trace.h", "AXP"),
    (LAB / "testbed.shared.h", "TB"),
    (LAB / "gen.shared.h", "GEN"),
)

CDEF_PRELUDE = """
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef unsigned long long __u64;  /* as linux/types.h has it */
typedef uint16_t __be16;
typedef uint32_t __be32;
"""


def _cdef() -> str:
    """The declarations cffi sees: axp_native.h through the preprocessor."""
    pre = subprocess.run(
        ["cc", "-E", "-P", "-DAXP_CDEF", f"-I{INCLUDE}", str(NATIVE / "axp_native.h")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # integer constants survive as cdef #defines so Python can read them
    defines = []
    for header, prefix in CONSTANTS:
        for name, value in re.findall(rf"^#define ({prefix}_\w+) (\d+)\b", header.read_text(), re.M):
            defines.append(f"#define {name} {value}")
    return CDEF_PRELUDE + pre + "\n".join(defines) + "\n"


def make_ffi(relative_to: Path) -> FFI:
    """The builder, with source paths relative to where the compiler will run."""
    ffi = FFI()
    ffi.cdef(_cdef())
    ffi.set_source(
        "afxdp_proxy._native",
        # the lab's headers too: the C compiler checks every constant the cdef declares
        '#include "axp_native.h"\n#include "testbed.shared.h"\n#include "gen.shared.h"\n',
        sources=[os.path.relpath(p, relative_to) for p in sorted(NATIVE.glob("*.c"))],
        include_dirs=[str(NATIVE), str(INCLUDE), str(LAB)],
        libraries=["xdp", "bpf", "elf", "z"],
        extra_compile_args=["-O3", "-Wall", "-Wno-unused-function", "-std=gnu11"],
    )
    return ffi


# setuptools (cffi_modules) builds from the project root and wants relative paths
ffibuilder = make_ffi(ROOT)


def main() -> int:
    """Build in place: afxdp_proxy/_native*.so next to the Python package."""
    build = ROOT / "build" / "native"
    build.mkdir(parents=True, exist_ok=True)
    so = Path(make_ffi(build).compile(tmpdir=str(build), verbose=False))
    for old in (ROOT / "afxdp_proxy").glob("_native*.so"):
        old.unlink()
    dest = ROOT / "afxdp_proxy" / so.name
    shutil.copy2(so, dest)
    print(f"built {dest.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
