"""textrace daemon and its store: real daemon processes, real BPF loads, the real kernel."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys

import textrace.store
from textrace.bpf.prog_info import read_prog_info

from bpfprogs import load_trivial, load_with_subprograms
from daemon_proc import DaemonProc


def textrace_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "textrace", *argv], capture_output=True,
                          text=True)


def test_daemon_captures_each_load_with_exact_bytes_and_lifetimes(tmp_path):
    store = str(tmp_path / "store")
    with DaemonProc(store) as d:
        fds = [load_with_subprograms(3, name="tr_d_sub"), load_trivial("tr_d_triv")]
        infos = [read_prog_info(fd) for fd in fds]
        d.settle()
        os.close(fds[1])  # unloaded while the daemon runs
        d.settle()
        code, log = d.stop()
    assert code == 0, log
    assert "stopped" in log
    st = textrace.store.open(store)
    for info in infos:
        [load] = st.loads(prog_id=info.id)
        got = st.prog_info(load)
        assert got.jited_insns == info.jited_insns          # rebuilt for its addresses
        assert got.jited_ksyms == info.jited_ksyms
        assert got.xlated_insns == info.xlated_insns
        assert got.jited_line_info == info.jited_line_info
        assert load.tag == info.tag and load.name == info.name
        assert load.method == "kernel" and load.load_ns is not None
        assert load.ksyms[0] == f"bpf_prog_{info.tag.hex()}_{info.name}"
    sub, triv = (st.loads(prog_id=i.id)[0] for i in infos)
    assert triv.unload_ns is not None and triv.unload_ns > triv.load_ns
    assert sub.unload_ns is None  # still loaded when the daemon stopped
    os.close(fds[0])
    # the time is perf's default clock: what `perf record` stamps; the daemon logged it
    assert st.boots()[-1].boot_id == open("/proc/sys/kernel/random/boot_id").read().strip()


def test_identical_programs_are_stored_once(tmp_path):
    """Three runs of the feature probe: each distinct image once, however placed."""
    store = str(tmp_path / "store")
    with DaemonProc(store) as d:
        for _ in range(3):
            subprocess.run(["bpftool", "feature", "probe", "kernel"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        d.settle()
        code, log = d.stop()
    assert code == 0, log
    con = sqlite3.connect(os.path.join(store, "store.db"))
    loads, images = con.execute("SELECT COUNT(*), COUNT(DISTINCT image) FROM loads "
                                "WHERE image IS NOT NULL").fetchone()
    assert loads >= 3 * 300, loads
    assert images <= loads / 2, (loads, images)
    # same image, different places: every load's bytes are rebuilt from the one form
    st = textrace.store.open(store)
    by_image: dict[int, set] = {}
    for ld in st.loads():
        if ld.image is not None:
            by_image.setdefault(ld.image, set()).add(ld.addrs)
    assert any(len(places) > 1 for places in by_image.values())
    summary = json.loads(textrace_cli("store", store, "--json").stdout)
    assert summary["programs"] == loads and summary["images"] >= images
    assert summary["bytes"] > 0 and summary["evicted"] == 0
    assert summary["boots"] and summary["time_span"]["first_ns"] <= summary["time_span"]["last_ns"]


def test_second_daemon_on_a_store_is_refused(tmp_path):
    store = str(tmp_path / "store")
    with DaemonProc(store) as d:
        second = subprocess.run([sys.executable, "-m", "textrace", "daemon", "--store",
                                 store], capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert f"in use by another textrace daemon (pid {d.proc.pid})" in second.stderr
        assert "Traceback" not in second.stderr
        assert d.proc.poll() is None  # the first one is untouched
        assert d.stop()[0] == 0


def test_sigkill_loses_at_most_the_last_second_and_restart_carries_on(tmp_path):
    store = str(tmp_path / "store")
    d = DaemonProc(store)
    keep = load_trivial("tr_d_keep")       # alive across the kill and the restart
    gone = load_trivial("tr_d_gone")       # unloaded while no daemon runs
    keep_id, gone_id = (read_prog_info(fd).id for fd in (keep, gone))
    d.settle()
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    st = textrace.store.open(store)
    assert [ld.method for ld in st.loads(prog_id=keep_id)] == ["kernel"]
    assert [ld.unload_ns for ld in st.loads(prog_id=gone_id)] == [None]
    st.close()
    os.close(gone)
    with DaemonProc(store) as d2:              # the lock died with the killed daemon
        assert "carrying on" in d2.lines[-1]
        later = load_trivial("tr_d_later")
        later_id = read_prog_info(later).id
        d2.settle()
        os.close(later)
        d2.settle()
        assert d2.stop()[0] == 0
    st = textrace.store.open(store)
    [k] = st.loads(prog_id=keep_id)            # one load, carried on, not a second
    assert k.unload_ns is None and k.method == "kernel"
    [g] = st.loads(prog_id=gone_id)
    assert g.unload_ns is not None             # closed at the restart
    [lt] = st.loads(prog_id=later_id)
    assert lt.unload_ns is not None and lt.image is not None
    os.close(keep)


def test_store_of_a_directory_without_one_is_a_clear_error(tmp_path):
    r = textrace_cli("store", str(tmp_path), "--json")
    assert r.returncode == 2
    assert "no textrace store here" in r.stderr and "Traceback" not in r.stderr


def test_store_files_are_private(tmp_path):
    store = str(tmp_path / "store")
    with DaemonProc(store) as d:
        assert d.stop()[0] == 0
    assert os.stat(store).st_mode & 0o777 == 0o700
    for name in os.listdir(store):
        assert os.stat(os.path.join(store, name)).st_mode & 0o077 == 0, name


def test_symbolize_names_programs_by_time_and_kernel_symbols(tmp_path):
    """An address reused by two programs resolves to the one alive at each time."""
    store = str(tmp_path / "store")
    with DaemonProc(store) as d:
        fd = load_trivial("tr_sym_one")
        first = read_prog_info(fd)
        d.settle()
        os.close(fd)
        d.settle()
        assert d.stop()[0] == 0
    st = textrace.store.open(store)
    [ld] = st.loads(prog_id=first.id)
    addr = first.jited_ksyms[0]
    kernel = st.kallsyms()
    text = kernel.address_of("_text")
    queries = [{"addr": addr + 4, "time": ld.load_ns + 1},        # while it lived
               {"addr": addr + 4, "time": ld.unload_ns + 1},      # after: not it
               {"addr": text, "time": ld.load_ns}]
    r = subprocess.run([sys.executable, "-m", "textrace", "symbolize", "--store", store],
                       input="".join(json.dumps(q) + "\n" for q in queries),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert rows[0]["name"] == f"bpf_prog_{first.tag.hex()}_tr_sym_one"
    assert (rows[0]["id"], rows[0]["tag"], rows[0]["offset"]) == (first.id,
                                                                   first.tag.hex(), 4)
    assert rows[1]["id"] != first.id
    at_text = {line.split()[2] for line in open("/proc/kallsyms")
               if int(line.split()[0], 16) == text}
    assert rows[2]["name"] in at_text and rows[2]["kind"] == "kernel"
    # the Python API: numpy arrays in and out
    import numpy as np
    got = st.symbolize(np.array([addr, addr], dtype=np.uint64),
                       np.array([ld.load_ns + 1, ld.load_ns - 1], dtype=np.int64))
    assert list(got["prog_id"]) [0] == first.id and got["prog_id"][1] != first.id
    bad = subprocess.run([sys.executable, "-m", "textrace", "symbolize", "--store", store],
                         input="{\"addr\": 1}\n", capture_output=True, text=True)
    assert bad.returncode == 2 and "line 1" in bad.stderr and "Traceback" not in bad.stderr


def test_systemd_unit_runs_the_daemon_and_is_told_when_it_is_ready(tmp_path):
    """The shipped unit's ExecStart is a daemon command line textrace accepts, and the
    daemon sends READY=1 to $NOTIFY_SOCKET (Type=notify) once it captures."""
    import configparser
    import shlex
    import socket

    import textrace
    from textrace.cli import build_parser
    unit = os.path.join(os.path.dirname(textrace.__file__), "systemd", "textrace.service")
    cfg = configparser.ConfigParser(strict=False, interpolation=None)
    cfg.read(unit)
    subprocess.run(["systemd-analyze", "verify", unit], check=True)
    assert cfg["Service"]["Type"] == "notify"
    argv = shlex.split(cfg["Service"]["ExecStart"])
    assert argv[:2] == ["/usr/bin/env", "textrace"]
    args = build_parser().parse_args(argv[2:])
    assert args.func.__name__ == "cmd_daemon" and args.store == "/var/lib/textrace"
    assert args.max_mb >= args.min_mb > 0
    # what systemd would see, with the unit's options on a store of the test's own
    sock_path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(60)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path)
    store = str(tmp_path / "store")
    proc = subprocess.Popen([sys.executable, "-m", "textrace", argv[2], "--store", store,
                             *argv[5:]], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert sock.recv(64) == b"READY=1"
        proc.send_signal(signal.SIGTERM)           # the unit's KillSignal
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "ready" in err
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_user_space_capture_when_asked(tmp_path):
    """--capture user: the id scanner's path (what auto falls back to, saying so)."""
    store = str(tmp_path / "store")
    with DaemonProc(store, "--capture", "user") as d:
        assert "user space" in d.lines[-1]
        fd = load_with_subprograms(2, name="tr_d_user")
        info = read_prog_info(fd)
        d.settle()
        os.close(fd)
        d.settle()
        assert d.stop()[0] == 0
    st = textrace.store.open(store)
    [ld] = st.loads(prog_id=info.id)
    assert ld.method == "user" and ld.unload_ns is not None
    got = st.prog_info(ld)
    assert got.jited_insns == info.jited_insns and got.load_time == info.load_time
