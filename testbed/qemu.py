"""Boot a testbed kernel in qemu (TCG: no KVM here), run one command, read its results.

The guest sees the host's root read-only, so the host's Python, perf and bpftool run in it
unchanged; the shared directory is the one writable place both sides see, at one path.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import initramfs
from .errors import TestbedError, TestbedTimeout
from .kernel import DEFAULT_SERIES, find_kernel

QEMU = "qemu-system-x86_64"
CPU = "max"  # TCG emulates most of it; the kernel patches its alternatives for what it sees
APPEND = "console=ttyS0 quiet panic=-1"


@dataclass(frozen=True)
class GuestRun:
    """One command's run in a fresh guest."""
    returncode: int
    stdout: str
    stderr: str
    console: str         # the serial console: kernel messages and the init script's lines
    seconds: float       # wall time from starting qemu to its exit (boot + run + poweroff)
    shared: Path         # the shared directory (same path in the guest)
    kernel_release: str


def find_qemu() -> str:
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise TestbedError(f"{QEMU} is missing: apt-get install qemu-system-x86")
    return qemu


def guest_path() -> str:
    """PATH in the guest: this Python's bin first (a pyenv shim re-execs through bash and
    pyenv: `python3 -c pass` takes 11 s under TCG that way, 1.3 s direct), then the host's
    PATH, then the sbin directories."""
    dirs = [os.path.dirname(sys.executable), *os.environ.get("PATH", "").split(":"),
            "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    return ":".join(dict.fromkeys(d for d in dirs if d))


def _command_script(argv: list[str], cwd: str, env: dict[str, str]) -> str:
    assigns = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    return (f"cd {shlex.quote(cwd)} || exit 127\n"
            f"exec /usr/bin/env -i {assigns} {shlex.join(argv)}\n")


def _under_tmp(env: dict[str, str]) -> list[str]:
    """Host directories under /tmp the guest must see although its /tmp is its own: this
    checkout (CI tests a clone there) and PYTHONPATH entries."""
    paths = [str(Path(__file__).resolve().parent.parent),
             *env.get("PYTHONPATH", "").split(":")]
    return [p for p in dict.fromkeys(paths)
            if p.startswith("/tmp/") and " " not in p and os.path.isdir(p)]


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run(argv: list[str], *, shared: Path | None = None, cwd: str | None = None,
        env: dict[str, str] | None = None, timeout: float = 180,
        memory: str = "2G", cpus: int = 2, kernel: str = DEFAULT_SERIES) -> GuestRun:
    """Boot Debian's stock kernel of series kernel ("5.10", "6.1", "6.12", "7.2"), run argv
    in the host's root (read-only) as root, power off.

    shared: a host directory the guest may write, mounted at the same path (a new temporary
    directory if None; it is left for the caller).  cwd defaults to shared.  env is added to
    a small default environment (PATH, HOME, LANG, PYTHONPATH from this process).  Raises
    TestbedTimeout if the guest is not done in timeout seconds, TestbedError if it could not
    run the command; a failing command is not an error (see returncode).
    """
    if not argv:
        raise ValueError("argv is empty")
    qemu = find_qemu()
    k = find_kernel(kernel)
    initrd = initramfs.build(k)
    shared = Path(shared if shared is not None else tempfile.mkdtemp(prefix="testbed-")).resolve()
    shared.mkdir(parents=True, exist_ok=True)
    full_env = {"PATH": guest_path(), "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
                "PYTHONDONTWRITEBYTECODE": "1", "TESTBED_SHARED": str(shared)}
    if os.environ.get("PYTHONPATH"):
        full_env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    full_env.update(env or {})

    with tempfile.TemporaryDirectory(prefix="testbed-ctl-") as ctl_dir:
        ctl = Path(ctl_dir)
        (ctl / "params").write_text(f"TB_SHARED={shlex.quote(str(shared))}\n"
                                    f"TB_EXPOSE={shlex.quote(' '.join(_under_tmp(full_env)))}\n")
        (ctl / "cmd.sh").write_text(_command_script(argv, cwd or str(shared), full_env))
        console = ctl / "console.log"

        def fsdev(tag: str, path: Path | str, *extra: str) -> list[str]:
            # multidevs=remap: the host root spans several filesystems; keep inodes unique
            # qemu's option syntax: a comma inside a value is written twice
            escaped = str(path).replace(",", ",,")
            opts = ",".join(("local", f"id={tag}", f"path={escaped}", "security_model=none",
                             "multidevs=remap", *extra))
            return ["-fsdev", opts, "-device", f"virtio-9p-pci,fsdev={tag},mount_tag={tag}"]

        cmd = [qemu, "-accel", "tcg", "-cpu", CPU, "-m", memory, "-smp", str(cpus),
               "-nodefaults", "-display", "none", "-no-reboot",
               "-serial", f"file:{console}", "-monitor", "none",
               "-kernel", str(k.vmlinuz), "-initrd", str(initrd), "-append", APPEND,
               *fsdev("hostroot", "/", "readonly=on"),
               *fsdev("boot", k.vmlinuz.parent, "readonly=on"),
               *fsdev("ctl", ctl), *fsdev("shared", shared)]
        # A guest kernel that dies while booting, before the command starts (an oops in
        # the idle loop under TCG was seen once in many hundred boots), is booted once
        # more, and said so; one that dies while the command runs is the command's result.
        for attempt in (1, 2):
            start = time.monotonic()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
            try:
                qemu_out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise TestbedTimeout(
                    f"guest still running after {timeout:g} s, killed: {shlex.join(argv)}\n"
                    f"--- console (last lines) ---\n{_tail(_read(console))}") from None
            finally:  # a timeout, or an interrupt: no qemu outlives its run
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            seconds = time.monotonic() - start
            text = _read(console)
            if (ctl / "rc").exists() or (ctl / "started").exists() or attempt == 2:
                break
            print(f"testbed: the {k.release} guest died while booting (qemu exited "
                  f"{proc.returncode}; console: {_tail(text, 1).strip()!r}): booting it "
                  f"once more", file=sys.stderr)
        rc_file = ctl / "rc"
        if not rc_file.exists():
            booted = "the command started" if (ctl / "started").exists() else \
                "while booting, twice"
            raise TestbedError(
                f"guest reported no exit code ({booted}; qemu exited {proc.returncode}): "
                f"{shlex.join(argv)}\n"
                f"--- qemu ---\n{_tail(qemu_out.decode(errors='replace'), 10)}\n"
                f"--- console (last lines) ---\n{_tail(text)}")
        return GuestRun(returncode=int(rc_file.read_text()), stdout=_read(ctl / "stdout"),
                        stderr=_read(ctl / "stderr"), console=text, seconds=seconds,
                        shared=shared, kernel_release=k.release)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
