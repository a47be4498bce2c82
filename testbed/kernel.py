"""Debian's stock 6.1 kernel, fetched once with apt and kept in a cache.

The testbed boots the kernel users run (Debian 12's linux-image-6.1.0-NN-amd64), not one built
here: its config, text pokes and BPF JIT are what textrace meets in the field.  The -unsigned
package holds the same vmlinuz and modules as the signed one without the signing shim.
The package ships no modules.dep (depmod runs in its postinst), so module dependencies are
read from each module's .modinfo section.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import struct
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import TestbedError

PACKAGE_RE = re.compile(r"^linux-image-(6\.1\.0-(\d+)-amd64)-unsigned$")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "textrace" / "testbed"


@dataclass(frozen=True)
class Kernel:
    """An extracted kernel package: paths on the host."""
    release: str        # uname -r in the guest, e.g. "6.1.0-56-amd64"
    root: Path          # where the .deb was extracted
    vmlinuz: Path
    config: Path
    system_map: Path | None
    modules: Path       # lib/modules/<release>

    def module_files(self) -> dict[str, Path]:
        """Module name (as the kernel spells it, '-' as '_') -> its .ko file."""
        return {p.name.removesuffix(".ko").replace("-", "_"): p
                for p in (self.modules / "kernel").rglob("*.ko")}

    def load_order(self, wanted: list[str]) -> list[Path]:
        """The .ko files to insmod, dependencies first, for the modules named."""
        files = self.module_files()
        order: list[Path] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            if name not in files:
                raise TestbedError(f"kernel {self.release} has no module {name} "
                                   f"(built in, or not configured?)")
            for dep in modinfo(files[name]).get("depends", "").split(","):
                if dep:
                    visit(dep)
            order.append(files[name])

        for name in wanted:
            visit(name)
        return order


def modinfo(ko: Path) -> dict[str, str]:
    """The key=value strings of an ELF64 module's .modinfo section (what modinfo prints)."""
    data = ko.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise TestbedError(f"{ko}: not a little-endian ELF64 module")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, off, size = struct.unpack_from(
            "<IIQQQQ", data, shoff + i * shentsize)
        return name, off, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name, off, size = section(i)
        if data[stroff + name:data.index(b"\0", stroff + name)] == b".modinfo":
            pairs = (s.split(b"=", 1) for s in data[off:off + size].split(b"\0") if b"=" in s)
            return {k.decode(): v.decode() for k, v in pairs}
    return {}


@contextmanager
def _locked(path: Path):
    """Serialise preparation between processes (parallel test runs share the cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _from_root(root: Path) -> Kernel:
    release = next(root.glob("boot/vmlinuz-*")).name.removeprefix("vmlinuz-")
    system_map = root / "boot" / f"System.map-{release}"
    return Kernel(release=release, root=root, vmlinuz=root / "boot" / f"vmlinuz-{release}",
                  config=root / "boot" / f"config-{release}",
                  system_map=system_map if system_map.exists() else None,
                  modules=root / "lib" / "modules" / release)


def _cached() -> list[Path]:
    """Extracted kernels in the cache, newest ABI number last."""
    roots = [p.parent for p in (cache_dir() / "kernels").glob("*/.complete")]
    return sorted(roots, key=lambda p: int(p.name.split("-")[1]))


def _newest_package() -> str:
    """The newest linux-image-6.1.0-NN-amd64-unsigned that apt knows."""
    def search() -> list[tuple[int, str]]:
        out = subprocess.run(
            ["apt-cache", "search", "--names-only", r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$"],
            capture_output=True, text=True, check=True).stdout
        found = []
        for line in out.splitlines():
            m = PACKAGE_RE.match(line.split(" - ")[0].strip())
            if m:
                found.append((int(m.group(2)), m.group(0)))
        return found

    found = search()
    if not found:  # a fresh machine whose package lists were never fetched
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        found = search()
    if not found:
        raise TestbedError("apt knows no linux-image-6.1.0-NN-amd64-unsigned package "
                           "(is this Debian 12 with bookworm's main and security archives?)")
    return max(found)[1]


def kernel(*, refresh: bool = False) -> Kernel:
    """The testbed kernel, downloading and extracting it on first use.

    Uses the newest kernel already in the cache without asking the network; with refresh,
    asks apt for the newest one and fetches it if it is not cached.
    """
    cached = _cached()
    if cached and not refresh:
        return _from_root(cached[-1])
    with _locked(cache_dir() / "kernels.lock"):
        package = _newest_package() if (refresh or not _cached()) else None
        if package is None:
            return _from_root(_cached()[-1])
        release = PACKAGE_RE.match(package).group(1)
        root = cache_dir() / "kernels" / release
        if (root / ".complete").exists():
            return _from_root(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root.parent, prefix=".fetch-") as tmp:
            # apt's download sandbox user (_apt) cannot write into root's cache: stay root
            r = subprocess.run(["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download",
                                package], cwd=tmp, capture_output=True, text=True)
            if r.returncode != 0:
                raise TestbedError(f"apt-get download {package} failed: {r.stderr.strip()[-500:]}")
            deb = next(Path(tmp).glob("*.deb"))
            extracted = Path(tmp) / "root"
            subprocess.run(["dpkg-deb", "-x", str(deb), str(extracted)], check=True)
            (extracted / ".complete").write_text(package + "\n")
            if root.exists():
                shutil.rmtree(root)
            extracted.rename(root)
        return _from_root(root)
