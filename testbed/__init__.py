"""The real-kernel testbed: Debian 12's stock 6.1 kernel booted in qemu, running commands
from the host's own root filesystem (read-only over 9p) as root.

textrace meets kernels other than the one it is developed on; this boots the one Debian
users run, with its config and text-poking behaviour, and runs the project's own tools in it.

    import testbed
    r = testbed.run(["uname", "-r"])      # GuestRun(returncode, stdout, stderr, console, ...)
    testbed.kernel().vmlinuz              # the kernel's files on the host
"""

from .errors import TestbedError, TestbedTimeout
from .kernel import Kernel, kernel
from .qemu import GuestRun, run

__all__ = ["GuestRun", "Kernel", "TestbedError", "TestbedTimeout", "kernel", "prepare", "run"]


def prepare(*, refresh: bool = False) -> Kernel:
    """Check for qemu, download and extract the kernel and build the initramfs, so that
    run() needs no network."""
    from . import initramfs
    from .qemu import find_qemu
    find_qemu()
    k = kernel(refresh=refresh)
    initramfs.build(k)
    return k
