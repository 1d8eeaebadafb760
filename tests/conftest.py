"""Shared fixtures. Tests that need root, BPF or namespaces carry the `root` marker:
outside CI they skip with the reason when the machine cannot run them; under CI=true
they fail instead, because there a skip would hide a defect."""

from __future__ import annotations

import os
import uuid

import pytest
from hypothesis import settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Under CI, hypothesis derives each test's examples from the test itself instead of drawing them
# afresh: a red run is then the code's doing and comes again, never a draw's luck. Elsewhere every
# run explores new inputs (and the local example database replays what failed).
settings.register_profile("ci", derandomize=True, database=None)
if IN_CI:
    settings.load_profile("ci")


def _root_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "needs a kernel with BTF"
    try:
        from afxdp_proxy import bpf  # noqa: F401  (the native extension must be built)
    except ImportError as e:
        return f"native extension not built ({e}): run `make`"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is None:
        return
    problem = _root_problem()
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true but this test cannot run: {problem}", pytrace=False)
    pytest.skip(problem)


@pytest.fixture
def uid() -> str:
    """A short unique token for namespace and interface names."""
    return uuid.uuid4().hex[:6]
