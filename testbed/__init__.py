"""The real-kernel testbed: Debian's stock kernels (11's 5.10, 12's 6.1 by default, 13's 6.12,
unstable's 7.2) booted in qemu, running commands from the host's own root filesystem
(read-only over 9p) as root.

textrace meets kernels other than the one it is developed on; this boots the ones Debian
users run, with their configs and text-poking behaviour, and runs the project's own tools in
them.

    import testbed
    r = testbed.run(["uname", "-r"])                  # GuestRun(returncode, stdout, ...)
    r = testbed.run(["uname", "-r"], kernel="5.10")   # another series of KERNELS
    testbed.kernel("7.2").vmlinuz                     # a kernel's files on the host
"""

from .errors import TestbedError, TestbedTimeout
from .kernel import DEFAULT_SERIES, SERIES, Kernel, find_kernel as kernel
from .qemu import GuestRun, run

KERNELS = tuple(SERIES)  # the matrix: "5.10", "6.1", "6.12", "7.2"

__all__ = ["DEFAULT_SERIES", "GuestRun", "KERNELS", "Kernel", "TestbedError", "TestbedTimeout",
           "kernel", "prepare", "run"]


def prepare(name: str = DEFAULT_SERIES, *, refresh: bool = False) -> Kernel:
    """Check for qemu, download and extract the kernel of series name and build its
    initramfs, so that run() needs no network."""
    from . import initramfs
    from .qemu import find_qemu
    find_qemu()
    k = kernel(name, refresh=refresh)
    initramfs.build(k)
    return k
