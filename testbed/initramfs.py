"""A busybox initramfs that mounts the host's root over 9p and runs one command.

Written here as a newc cpio (the format the kernel unpacks: a 110-byte ASCII header, the
name, the data, each padded to 4 bytes) so that no cpio tool is needed; cached by a hash of
everything in it.  Modules go in as ELF: Debian 11's and 12's kernels ship them uncompressed,
13's and sid's as .ko.xz (CONFIG_MODULE_COMPRESS_XZ), which are decompressed here because
busybox's insmod passes what it reads to init_module as it is.  Where a kernel has one built
in (6.12 builds virtio_pci and fscache in), there is nothing to load.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
from pathlib import Path

from .errors import TestbedError
from .kernel import Kernel, cache_dir, module_bytes

BUSYBOX = Path("/bin/busybox")
INIT = Path(__file__).with_name("init.sh")
# virtio-pci carries the 9p devices; 9p pulls in 9pnet, netfs and fscache
MODULES = ["virtio_pci", "9pnet_virtio", "9p"]
FORMAT = 1  # bump when the layout below changes


class Cpio:
    """A newc archive being written in memory."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 0

    def _entry(self, name: str, mode: int, data: bytes = b"",
               rdev: tuple[int, int] = (0, 0)) -> None:
        self.ino += 1
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self.out.write(b"\0" * (-self.out.tell() % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-self.out.tell() % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


def build(k: Kernel) -> Path:
    """The initramfs for kernel k, built unless the cache has it (gzip'd newc cpio)."""
    if not BUSYBOX.exists():
        raise TestbedError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    modules = k.load_order(MODULES)
    busybox = BUSYBOX.read_bytes()
    init = INIT.read_bytes()
    key = hashlib.sha256()
    for part in (str(FORMAT).encode(), k.release.encode(), busybox, init,
                 *(str(m.relative_to(k.modules)).encode() for m in modules)):
        key.update(hashlib.sha256(part).digest())
    path = cache_dir() / f"initramfs-{k.release}-{key.hexdigest()[:16]}.cpio.gz"
    if path.exists():
        return path

    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "host", "ctl", "modules"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3)
    c.file("bin/busybox", busybox, 0o755)
    c.file("init", init, 0o755)
    order = []
    for i, m in enumerate(modules):
        name = f"{i:02d}-{m.name.partition('.ko')[0]}.ko"
        c.file(f"modules/{name}", module_bytes(m))
        order.append(name)
    c.file("modules/order", ("\n".join(order) + "\n").encode())

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(gzip.compress(c.finish(), compresslevel=6, mtime=0))
    tmp.rename(path)
    return path
