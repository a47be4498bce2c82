"""The qemu testbed boots Debian's 6.1 kernel and runs the host's own tools in it.

One guest boot answers most questions (a boot costs seconds under TCG): a probe script
reports what it sees, writes into the shared directory and out of it, and exits 3.
"""

from __future__ import annotations

import time

import pytest

import testbed
import textrace

PROBE = """
uname -r
test -e /proc/kcore && echo kcore
test -e /sys/kernel/btf/vmlinux && echo btf
echo 'written in the guest' > {shared}/from-guest.txt
echo x > /etc/testbed-probe && echo host-root-writable
exit 3
"""


@pytest.fixture(scope="module")
def probe(guest, tmp_path_factory) -> testbed.GuestRun:
    shared = tmp_path_factory.mktemp("probe")
    return guest.run(["sh", "-c", PROBE.format(shared=shared)], shared=shared)


def test_guest_runs_debian_6_1_kernel(probe):
    release = probe.stdout.splitlines()[0]
    assert release.startswith("6.1.") and release.endswith("-amd64")
    assert release == probe.kernel_release == testbed.kernel().release


def test_exit_code_comes_back(probe):
    assert probe.returncode == 3


def test_file_written_in_shared_dir_is_on_host_at_same_path(probe):
    assert (probe.shared / "from-guest.txt").read_text() == "written in the guest\n"


def test_guest_has_kcore_and_btf(probe):
    assert {"kcore", "btf"} <= set(probe.stdout.split())


def test_host_root_is_read_only_in_guest(probe):
    assert "host-root-writable" not in probe.stdout
    assert "Read-only file system" in probe.stderr


def test_host_python_and_textrace_run_in_guest(guest):
    r = guest.run(["python3", "-c", "import textrace; print(textrace.__file__)"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == textrace.__file__  # this checkout, through PYTHONPATH


def test_timeout_kills_guest_and_raises(guest):
    start = time.monotonic()
    with pytest.raises(testbed.TestbedTimeout, match="still running after 15 s"):
        guest.run(["sleep", "600"], timeout=15)
    assert time.monotonic() - start < 30
