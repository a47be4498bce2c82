"""Session setup: the machine must have what the tests need, or the run fails (never skips).

This project's tests run on a real kernel as root, with perf and bpftool as oracles and
workloads.  A machine without them is a broken CI machine, not a reason to skip: the session
stops before the first test, naming every missing capability, and any skip a test asks for
is reported as a failure.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile

import pytest

from corpus import Corpus, Recording

REQUIRED_TOOLS = ("perf", "bpftool", "clang")
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

# `python3 -m textrace` in subprocesses runs this checkout, whatever is installed
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
SYS_BPF, SYS_PERF_EVENT_OPEN = 321, 298  # x86_64


def _perf_event_open(pid: int, cpu: int) -> str | None:
    """Open a cpu-clock counter (struct perf_event_attr, PERF_ATTR_SIZE_VER0 = 64 bytes);
    None if the kernel allows it, else why not."""
    attr = (ctypes.c_uint8 * 128)()
    ctypes.memmove(attr, (1).to_bytes(4, "little") + (64).to_bytes(4, "little"), 8)
    fd = _libc.syscall(SYS_PERF_EVENT_OPEN, attr, pid, cpu, -1, 0)
    if fd < 0:
        return os.strerror(ctypes.get_errno())
    os.close(fd)
    return None


def _bpf_prog_load() -> str | None:
    """Load the smallest socket filter (r0 = 0; exit); None if it loads, else why not."""
    insns = (ctypes.c_uint64 * 2)(0x00000000000000b7, 0x0000000000000095)
    license = ctypes.create_string_buffer(b"GPL")
    attr = (ctypes.c_uint8 * 128)()
    for off, val, size in ((0, 1, 4),                              # BPF_PROG_TYPE_SOCKET_FILTER
                           (4, 2, 4),                              # insn_cnt
                           (8, ctypes.addressof(insns), 8),
                           (16, ctypes.addressof(license), 8)):
        ctypes.memmove(ctypes.addressof(attr) + off, val.to_bytes(size, "little"), size)
    fd = _libc.syscall(SYS_BPF, 5, attr, ctypes.sizeof(attr))  # BPF_PROG_LOAD
    if fd < 0:
        return os.strerror(ctypes.get_errno())
    os.close(fd)
    return None


def _run(cmd: list[str], **kw) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL, **kw)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`{' '.join(cmd)}`: {e}"
    if r.returncode != 0:
        return f"`{' '.join(cmd)}` exited {r.returncode}: {r.stderr.strip()[-300:]}"
    return None


def capability_problems() -> list[str]:
    """Everything this machine lacks that the tests need, one sentence each."""
    problems = []
    if os.geteuid() != 0:
        problems.append("tests must run as root (system-wide perf_event_open, bpf syscall)")
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        problems.append(f"not installed: {', '.join(missing)} (run scripts/setup.sh)")
    for pid, cpu, what in ((0, -1, "on this process"), (-1, 0, "system-wide on CPU 0")):
        err = _perf_event_open(pid, cpu)
        if err:
            problems.append(f"perf_event_open {what} is refused: {err}")
    err = _bpf_prog_load()
    if err:
        problems.append(f"the bpf syscall cannot load a program: {err}")
    with open("/proc/kallsyms") as f:
        if int(f.readline().split()[0], 16) == 0:
            problems.append("/proc/kallsyms hides addresses (kptr_restrict)")
    if shutil.which("perf"):
        with tempfile.TemporaryDirectory() as d:
            err = _run(["perf", "record", "-q", "-a", "-e", "dummy", "-o",
                        os.path.join(d, "check.data"), "--", "true"])
        if err:
            problems.append(f"perf record does not work: {err}")
    if shutil.which("bpftool"):
        err = _run(["bpftool", "prog", "show"])
        if err:
            problems.append(f"bpftool does not work: {err}")
    if shutil.which("clang"):
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "check.bpf.c")
            with open(src, "w") as f:
                f.write("#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
                        'SEC("socket") int check(void *ctx) { return 0; }\n')
            err = _run(["clang", "-O2", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                        "-c", src, "-o", os.path.join(d, "check.o")])
        if err:
            problems.append(f"clang cannot build a BPF object with libbpf's headers: {err}")
    return problems


def pytest_sessionstart(session):
    problems = capability_problems()
    if problems:
        pytest.exit("this machine lacks what the tests need (they fail rather than skip):\n  "
                    + "\n  ".join(problems), returncode=1)


def pytest_report_header(config):
    def first_line(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=30).stdout.splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not available"
    return [f"kernel {os.uname().release}; {first_line(['perf', '--version'])}; "
            f"bpftool {first_line(['bpftool', 'version'])}; "
            f"testbed kernels {', '.join(guest_kernels())}"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skip is a failure here: a test that cannot run on this machine is a broken
    machine or a broken test.  (xfail is not a skip and stays as it is.)"""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and not hasattr(rep, "wasxfail"):
        if call.excinfo is not None and isinstance(call.excinfo.value, pytest.skip.Exception):
            reason = call.excinfo.value.msg
        else:
            reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"this suite does not skip; the test asked to: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    rep = outcome.get_result()
    if rep.outcome == "skipped":
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"this suite does not skip; {collector.nodeid} asked to: {reason}"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    """The session's perf recordings; each is made when a test first asks for it."""
    return Corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def recording(corpus, request) -> Recording:
    """One corpus entry, named by indirect parametrization:
    @pytest.mark.parametrize("recording", ["cpu-clock"], indirect=True)."""
    return corpus.entry(request.param)


# --- the real-kernel testbed (testbed/ at the repository root) -------------------------------

ROOT = os.path.dirname(SRC)
if ROOT not in __import__("sys").path:
    __import__("sys").path.insert(0, ROOT)


def guest_kernels() -> list[str]:
    """The kernel matrix the guest tests run on: every series the testbed boots, or those
    TEXTRACE_TESTBED_KERNELS names (comma-separated: a developer's quicker run)."""
    import testbed
    chosen = os.environ.get("TEXTRACE_TESTBED_KERNELS")
    if not chosen:
        return list(testbed.KERNELS)
    names = [k.strip() for k in chosen.split(",") if k.strip()]
    unknown = [k for k in names if k not in testbed.KERNELS]
    if unknown:
        raise pytest.UsageError(f"TEXTRACE_TESTBED_KERNELS: no kernel series {unknown} "
                                f"(known: {', '.join(testbed.KERNELS)})")
    return names


class Guest:
    """Boots the testbed once per run() call; each call gets a fresh shared directory.
    run(argv, kernel="5.10") boots that series (prepared on first use)."""

    def __init__(self, tmp_path_factory) -> None:
        self._tmp = tmp_path_factory
        self._prepared: set[str] = set()

    def run(self, argv: list[str], *, shared=None, kernel: str | None = None, **kw):
        import testbed
        kernel = kernel or testbed.DEFAULT_SERIES
        if kernel not in self._prepared:
            testbed.prepare(kernel)
            self._prepared.add(kernel)
        return testbed.run(argv, shared=shared or self._tmp.mktemp("guest"), kernel=kernel,
                           **kw)


@pytest.fixture(scope="session")
def guest(tmp_path_factory) -> Guest:
    """Debian's stock kernels in qemu (12's 6.1 unless run(kernel=) names another),
    running commands from this host's root (read-only) as root: guest.run(argv, cwd=,
    env=, timeout=, kernel=) -> testbed.GuestRun.  Preparing a kernel fails (never skips)
    when qemu or its package is missing."""
    import testbed
    testbed.prepare()
    return Guest(tmp_path_factory)
