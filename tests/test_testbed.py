"""The qemu testbed boots each of Debian's kernels (5.10, 6.1, 6.12, 7.2) and runs the
host's own tools in it.

One guest boot per kernel answers the questions (a boot costs seconds under TCG): a probe
script reports what it sees, writes into the shared directory and out of it, runs the host's
Python with this checkout, and exits 3.
"""

from __future__ import annotations

import time

import pytest

import testbed
import textrace
from conftest import guest_kernels

PROBE = """
uname -r
test -e /proc/kcore && echo kcore
test -e /sys/kernel/btf/vmlinux && echo btf
echo 'written in the guest' > {shared}/from-guest.txt
echo x > /etc/testbed-probe && echo host-root-writable
python3 -c 'import textrace; print("textrace", textrace.__file__)'
exit 3
"""


@pytest.fixture(scope="module", params=guest_kernels())
def probe(guest, tmp_path_factory, request) -> testbed.GuestRun:
    shared = tmp_path_factory.mktemp("probe")
    return guest.run(["sh", "-c", PROBE.format(shared=shared)], shared=shared,
                     kernel=request.param)


def test_guest_runs_debians_kernel_of_the_series_asked_for(probe, request):
    series = request.node.callspec.params["probe"]
    release = probe.stdout.splitlines()[0]
    assert release.startswith(series + ".") and release.endswith("-amd64")
    assert release == probe.kernel_release == testbed.kernel(series).release


def test_the_default_kernel_is_61():
    assert testbed.DEFAULT_SERIES == "6.1"
    assert testbed.kernel().release.startswith("6.1.")


def test_exit_code_comes_back(probe):
    assert probe.returncode == 3


def test_file_written_in_shared_dir_is_on_host_at_same_path(probe):
    assert (probe.shared / "from-guest.txt").read_text() == "written in the guest\n"


def test_guest_has_kcore_and_btf(probe):
    assert {"kcore", "btf"} <= set(probe.stdout.split())


def test_host_root_is_read_only_in_guest(probe):
    assert "host-root-writable" not in probe.stdout
    assert "Read-only file system" in probe.stderr


def test_host_python_and_textrace_run_in_guest(probe):
    # this checkout, through PYTHONPATH
    assert f"textrace {textrace.__file__}" in probe.stdout.splitlines()


def test_timeout_kills_guest_and_raises(guest):
    """The testbed's own mechanism, the same on every kernel: tested on the default one."""
    start = time.monotonic()
    with pytest.raises(testbed.TestbedTimeout, match="still running after 15 s"):
        guest.run(["sleep", "600"], timeout=15)
    assert time.monotonic() - start < 30


def test_a_guest_that_dies_while_booting_is_booted_once_more_and_said_so(guest, capfd):
    """A kernel that cannot boot (40 MiB is too little for Debian's initramfs and kernel)
    never starts the command: the testbed boots it a second time, says so, and then names
    the boot, not the command, in its error."""
    with pytest.raises(testbed.TestbedError, match=r"no exit code \(while booting, twice"):
        guest.run(["true"], memory="40M", timeout=60)
    err = capfd.readouterr().err
    assert err.count("died while booting") == 1 and "booting it once more" in err
