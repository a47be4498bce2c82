"""Debian's stock kernels (5.10, 6.1, 6.12, 7.2), fetched once with apt and kept in a cache.

The testbed boots the kernels users run, not ones built here: their configs, text pokes and
BPF JITs are what textrace meets in the field.  6.1 (Debian 12, this machine's release) comes
through the machine's own apt; the others through the testbed's private apt configuration
(aptconfig.py), which names their suites in the same archive and never touches the machine's
sources.  The -unsigned packages hold the same vmlinuz and modules as the signed ones without
the signing shim (sid's 7.2 is no longer split: its one package is unsigned).  The packages
ship no modules.dep (depmod runs in their postinst), so module dependencies are read from
each module's .modinfo section; 6.12 and 7.2 compress their modules (.ko.xz).
"""

from __future__ import annotations

import fcntl
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import aptconfig
from .errors import TestbedError

DEFAULT_SERIES = "6.1"


@dataclass(frozen=True)
class Series:
    """One kernel series of the matrix and how its Debian package is named."""
    name: str                   # "5.10"
    suites: tuple[str, ...]     # the private configuration's suites; () = the machine's apt
    release_re: str             # uname -r; its groups are the version numbers to sort by
    suffix: str                 # what the package name has after the release
    describe: str               # the package name with NN, for messages
    # the packages to fetch, if not the image package itself: sid's 7.2 image package is
    # empty and depends on these (vmlinuz; modules; config and modules.builtin)
    parts: tuple[str, ...] = ()

    @property
    def package(self) -> re.Pattern:
        """A package name of the series; group 1 is the release."""
        return re.compile(rf"^linux-image-({self.release_re}){self.suffix}$")

    @property
    def apt_pattern(self) -> str:
        """The same as a POSIX regex for apt-cache search (no \\d, no (?:)."""
        return self.package.pattern.replace(r"\d", "[0-9]").replace("(?:", "(")

    def has(self, release: str) -> bool:
        return re.fullmatch(self.release_re, release) is not None

    def order(self, release: str) -> tuple[int, ...]:
        """Sort key of a release: its ABI or patch number, then Debian's .N respin."""
        m = re.fullmatch(self.release_re, release)
        return tuple(int(g or 0) for g in m.groups()) if m else ()


SERIES: dict[str, Series] = {s.name: s for s in (
    # Debian 11: ring buffers (5.8) and TEXT_POKE (5.9), no bpf_loop (5.17)
    Series("5.10", ("bullseye", "bullseye-security"), r"5\.10\.0-(\d+)-amd64", "-unsigned",
           "linux-image-5.10.0-NN-amd64-unsigned"),
    Series("6.1", (), r"6\.1\.0-(\d+)-amd64", "-unsigned", "linux-image-6.1.0-NN-amd64-unsigned"),
    Series("6.12", ("trixie", "trixie-security"), r"6\.12\.(\d+)\+deb13(?:\.(\d+))?-amd64",
           "-unsigned", "linux-image-6.12.NN+deb13-amd64-unsigned"),
    Series("7.2", ("sid",), r"7\.2\.(\d+)\+deb14(?:\.(\d+))?-amd64", "",
           "linux-image-7.2.NN+deb14-amd64",
           ("linux-binary-{release}", "linux-modules-{release}", "linux-base-{release}")),
)}


def series(name: str) -> Series:
    try:
        return SERIES[name]
    except KeyError:
        raise TestbedError(f"no kernel series {name!r} (known: {', '.join(SERIES)})") from None


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
        """Module name (as the kernel spells it, '-' as '_') -> its .ko file (.ko.xz and
        .ko.zst where the kernel compresses them: 6.12, 7.2)."""
        files = {}
        for p in (self.modules / "kernel").rglob("*.ko*"):
            name, dot, ext = p.name.partition(".ko")
            if ext in ("", ".xz", ".zst", ".gz"):
                files[name.replace("-", "_")] = p
        return files

    def builtin(self) -> set[str]:
        """Modules built into the kernel (modules.builtin), which need no insmod."""
        path = self.modules / "modules.builtin"
        if not path.exists():
            return set()
        return {Path(line).name.removesuffix(".ko").replace("-", "_")
                for line in path.read_text().split()}

    def load_order(self, wanted: list[str]) -> list[Path]:
        """The .ko files to insmod, dependencies first, for the modules named."""
        files = self.module_files()
        builtin = self.builtin()
        order: list[Path] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            if name in builtin and name not in files:
                return
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


def module_bytes(ko: Path) -> bytes:
    """A module's ELF image, decompressed: busybox's insmod takes the ELF only."""
    data = ko.read_bytes()
    if ko.suffix == ".xz":
        return lzma.decompress(data)
    if ko.suffix == ".zst":
        import zstandard
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if ko.suffix == ".gz":
        import gzip
        return gzip.decompress(data)
    return data


def modinfo(ko: Path) -> dict[str, str]:
    """The key=value strings of an ELF64 module's .modinfo section (what modinfo prints)."""
    data = module_bytes(ko)
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
    modules = next(p for p in (root / "lib" / "modules" / release,
                               root / "usr" / "lib" / "modules" / release) if p.exists())
    return Kernel(release=release, root=root, vmlinuz=root / "boot" / f"vmlinuz-{release}",
                  config=root / "boot" / f"config-{release}",
                  system_map=system_map if system_map.exists() else None, modules=modules)


def _boot_layout(root: Path, release: str) -> None:
    """Give an extracted kernel the /boot its guest mounts: 7.2 keeps vmlinuz and config in
    /usr/lib/modules/<release>, where tools (bpftool feature probe) do not look.  Its
    System.map there is a placeholder (the real one is in the -dbg package): left out."""
    boot = root / "boot"
    if any(boot.glob("vmlinuz-*")):
        return
    modules = root / "usr" / "lib" / "modules" / release
    boot.mkdir(exist_ok=True)
    for name in ("vmlinuz", "config"):
        if not (modules / name).exists():
            raise TestbedError(f"kernel package {release} has no {name}")
        os.link(modules / name, boot / f"{name}-{release}")


def _cached(series: Series) -> list[Path]:
    """Extracted kernels of one series in the cache, newest last."""
    roots = [p.parent for p in (cache_dir() / "kernels").glob("*/.complete")]
    roots = [p for p in roots if series.has(p.name)]
    return sorted(roots, key=lambda p: series.order(p.name))


def _newest_package(series: Series) -> str:
    """The newest package of the series that apt knows (the machine's apt for 6.1, the
    testbed's private configuration for the others)."""
    apt = aptconfig.for_series(series)

    def search() -> list[tuple[tuple[int, ...], str]]:
        out = subprocess.run(["apt-cache", *apt.options, "search", "--names-only",
                              series.apt_pattern], capture_output=True, text=True, check=True).stdout
        names = (line.split(" - ")[0].strip() for line in out.splitlines())
        return [(series.order(m.group(1)), m.group(0))
                for m in map(series.package.match, names) if m]

    found = [] if apt.stale() else search()
    if not found:  # a fresh machine (or private configuration) whose lists were never fetched
        apt.update()
        found = search()
    if not found:
        raise TestbedError(f"apt knows no {series.describe} package ({apt.where})")
    return max(found)[1]


def find_kernel(name: str = DEFAULT_SERIES, *, refresh: bool = False) -> Kernel:
    """The testbed kernel of series name ("5.10", "6.1", "6.12", "7.2"), downloading and
    extracting it on first use.

    Uses the newest kernel of the series already in the cache without asking the network;
    with refresh, asks apt for the newest one and fetches it if it is not cached.
    """
    s = series(name)
    cached = _cached(s)
    if cached and not refresh:
        return _from_root(cached[-1])
    with _locked(cache_dir() / "kernels.lock"):
        package = _newest_package(s) if (refresh or not _cached(s)) else None
        if package is None:
            return _from_root(_cached(s)[-1])
        release = s.package.match(package).group(1)
        root = cache_dir() / "kernels" / release
        if (root / ".complete").exists():
            return _from_root(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root.parent, prefix=".fetch-") as tmp:
            packages = [p.format(release=release) for p in s.parts] or [package]
            extracted = Path(tmp) / "root"
            for deb in aptconfig.for_series(s).download(packages, Path(tmp)):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(extracted)], check=True)
            _boot_layout(extracted, release)
            (extracted / ".complete").write_text(package + "\n")
            if root.exists():
                shutil.rmtree(root)
            extracted.rename(root)
        return _from_root(root)


kernel = find_kernel  # testbed.kernel("5.10"): the package's name for it
