"""perf of other Debian releases as test oracles: 6.12 (trixie) and 7.2 (sid), each in a
minimal root of its own release, made once with mmdebstrap from the machine's archive and
cached under ~/.cache/textrace/perf-roots/<suite>.  6.1 is the machine's own perf.

The root's perf runs on the host through the root's own dynamic loader and libraries (no
chroot), so it sees the host's files, processes and kernel as the host's perf does:

    from testbed import perfroot
    argv = perfroot.perf_command("7.2")        # [ld.so, --library-path, ..., perf]
    subprocess.run([*argv, "report", "-D", "-i", path])
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .aptconfig import machine_entries, registry
from .errors import TestbedError
from .kernel import _locked, cache_dir as testbed_cache

# perf version -> (suite, the suites its sources name); None: the machine's perf
PERFS: dict[str, tuple[str, tuple[str, ...]] | None] = {
    "6.1": None,
    "6.12": ("trixie", ("trixie", "trixie-security")),
    "7.2": ("sid", ("sid",)),
}
LIBDIRS = ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")


def cache_dir() -> Path:
    return testbed_cache().parent / "perf-roots"


def perf_root(version: str) -> Path | None:
    """The root holding perf `version`, made on first use (None for the machine's)."""
    if version not in PERFS:
        raise TestbedError(f"no perf {version!r} (known: {', '.join(PERFS)})")
    spec = PERFS[version]
    if spec is None:
        return None
    suite, suites = spec
    root = cache_dir() / suite
    if (root / ".complete").exists():
        return root
    if shutil.which("mmdebstrap") is None:
        raise TestbedError("mmdebstrap is missing: apt-get install mmdebstrap")
    with _locked(cache_dir() / f"{suite}.lock"):
        if (root / ".complete").exists():
            return root
        archive, security, keyring = registry(machine_entries())
        sources = [f"deb {security if s.endswith('-security') else archive} {s} main"
                   for s in suites]
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=f".{suite}-") as tmp:
            target = Path(tmp) / "root"
            r = subprocess.run(
                ["mmdebstrap", "--variant=essential", "--include=linux-perf", "--mode=root",
                 f"--keyring={keyring}", "--aptopt=Acquire::Check-Valid-Until \"false\"",
                 "--quiet", suite, str(target), *sources],
                capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                raise TestbedError(f"mmdebstrap {suite} (linux-perf) failed: "
                                   f"{r.stderr.strip()[-800:]}")
            (target / ".complete").write_text(f"linux-perf from {' '.join(suites)}\n")
            if root.exists():
                shutil.rmtree(root)
            target.rename(root)
    return root


def perf_command(version: str) -> list[str]:
    """argv that runs perf `version` on this host."""
    root = perf_root(version)
    if root is None:
        perf = shutil.which("perf")
        if perf is None:
            raise TestbedError("perf is missing: apt-get install linux-perf")
        return [perf]
    loader = root / "usr" / "lib64" / "ld-linux-x86-64.so.2"
    libs = ":".join(str(root / d) for d in LIBDIRS if (root / d).is_dir())
    return [str(loader), "--library-path", libs, str(root / "usr" / "bin" / "perf")]


def perf_env(version: str) -> dict[str, str]:
    """Environment for perf `version`: its embedded Python finds its own standard
    library (perf script's Python engine), not the host's."""
    root = perf_root(version)
    env = dict(os.environ)
    if root is not None:
        env["PYTHONHOME"] = str(root / "usr")
        env.pop("PYTHONPATH", None)
    return env
