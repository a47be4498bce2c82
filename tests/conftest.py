"""Session setup: the machine must have what the tests need, or the run fails (never skips).

This project's tests run on a real kernel as root, with perf and bpftool as oracles and
workloads; a machine without them is a broken CI machine, not a reason to skip.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import pytest

from corpus import Corpus

REQUIRED_TOOLS = ("perf", "bpftool", "clang")
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

# `python3 -m textrace` in subprocesses runs this checkout, whatever is installed
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))


def _capability_problems() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("tests must run as root (perf_event_open system-wide, bpf syscall)")
    for tool in REQUIRED_TOOLS:
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not installed (run scripts/setup.sh)")
    if shutil.which("perf"):
        r = subprocess.run(["perf", "record", "-q", "-o", "/dev/null", "-e", "dummy", "--",
                            "true"], capture_output=True, text=True)
        if r.returncode != 0:
            problems.append(f"perf record does not work here: {r.stderr.strip()[-300:]}")
    # bpf(BPF_PROG_GET_NEXT_ID) answers ENOENT or an id when the syscall is allowed
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 12)()
    if libc.syscall(321, 11, ctypes.byref(attr), ctypes.sizeof(attr)) < 0 and \
            ctypes.get_errno() in (1, 13, 38):
        problems.append(f"the bpf syscall is refused: {os.strerror(ctypes.get_errno())}")
    return problems


def pytest_configure(config):
    problems = _capability_problems()
    if problems:
        pytest.exit("this machine lacks what the tests need:\n  " + "\n  ".join(problems),
                    returncode=1)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    return Corpus(tmp_path_factory.mktemp("corpus"))
