"""textrace daemon on Debian's stock 6.1 kernel (the qemu testbed): the kernel there emits
TEXT_POKE records and registers out-of-line code (ftrace and kprobe pages, a BPF
trampoline), and has /proc/kcore to read that code through.  One boot: the daemon runs in
the background while tests/guest/pokes_workload.py patches the kernel every way it can."""

from __future__ import annotations

import os

import pytest

import textrace.store

TESTS = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(TESTS), "src")

SCRIPT = """
set -e
export PYTHONPATH={src}
# the store on the guest's own tmpfs (SQLite's WAL maps its -shm file: not over 9p), copied
# to the shared directory once the daemon has stopped
python3 -m textrace daemon --store /tmp/store 2> {shared}/daemon.err &
pid=$!
i=0
until grep -q ready {shared}/daemon.err; do
    i=$((i + 1)); [ $i -lt 600 ] || exit 3; kill -0 $pid || exit 4; sleep 0.5
done
python3 {tests}/guest/pokes_workload.py {shared} > /dev/null
bpftool feature probe kernel > /dev/null
sleep 2
kill -TERM $pid
wait $pid
cp -r /tmp/store {shared}/store
"""


@pytest.fixture(scope="module")
def store(guest, tmp_path_factory):
    shared = tmp_path_factory.mktemp("guest-daemon")
    r = guest.run(["sh", "-c", SCRIPT.format(src=SRC, tests=TESTS, shared=shared)],
                  shared=shared, timeout=900)
    err = (shared / "daemon.err").read_text() if (shared / "daemon.err").exists() else ""
    assert r.returncode == 0, f"{r.stderr}\n{err}"
    assert "stopped" in err, err
    return textrace.store.open(str(shared / "store"))


def test_daemon_keeps_every_text_poke_of_the_guest(store):
    pokes = store.pokes()
    reported = [p for p in pokes if p["reported"]]
    assert len(reported) >= 20
    assert all(len(p["old"]) + len(p["new"]) and p["time_ns"] > 0 for p in reported)
    assert sum(len(p["old"]) == len(p["new"]) == 5 for p in reported) >= 10  # jmp/nop5/call
    t0, t1 = store.boots()[-1].first_ns, store.boots()[-1].last_ns
    assert all(t0 <= p["time_ns"] <= t1 for p in reported)   # perf's clock, as the boot's


def test_daemon_reads_out_of_line_code_when_it_is_registered(store):
    ool = store.ool()
    assert ool, "no out-of-line code registered"
    read = [o for o in ool if o["code"]]
    assert read and all(len(o["code"]) == o["len"] for o in read)
    names = {o["name"].rstrip("_0123456789") for o in ool}
    assert {"ftrace_trampoline", "kprobe_insn_page", "bpf_trampoline"} <= names, names
    assert any(o["unreg_ns"] is not None for o in ool)      # the detach ended one


def test_daemon_captures_the_guests_programs(store):
    s = store.summary()
    assert s["programs"] >= 250 and s["captured"] == s["programs"]
    assert s["images"] <= s["programs"]
    assert store.boots()[-1].release.startswith("6.1.")
