"""The store's budget (like xc_retain's min/max): a real daemon fills a small one."""

from __future__ import annotations

import os
import struct
import threading
import time

import textrace.store
from textrace.bpf.prog_info import read_prog_info
from textrace.bpf.syscall import prog_load

from daemon_proc import DaemonProc

MAX_MB, MIN_MB = 4.0, 1.0


def load_big(seed: int, n: int = 3000) -> int:
    """A distinct program of n `r0 = imm` instructions (~15 KB of JIT, 24 KB xlated)."""
    body = b"".join(struct.pack("<BBhi", 0xb7, 0, 0, (seed * 7919 + k) & 0x7FFFFFFF)
                    for k in range(n))
    return prog_load(body + struct.pack("<BBhi", 0x95, 0, 0, 0), name=f"tr_big{seed}")


def disk_bytes(store: str) -> int:
    db = os.path.join(store, "store.db")
    return sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))


def test_budget_evicts_unloaded_code_oldest_first_within_both_bounds(tmp_path):
    store = str(tmp_path / "store")
    peak = [0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            try:
                peak[0] = max(peak[0], disk_bytes(store))
            except FileNotFoundError:  # the log, truncated or removed as it was looked at
                pass
            time.sleep(0.002)

    with DaemonProc(store, "--max-mb", str(MAX_MB), "--min-mb", str(MIN_MB)) as d:
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        live = [load_big(10_000 + k) for k in range(3)]      # alive throughout
        live_ids = [read_prog_info(fd).id for fd in live]
        gone_ids = []
        for seed in range(300):                              # ~12 MB of distinct code
            fd = load_big(seed)
            gone_ids.append(read_prog_info(fd).id)
            os.close(fd)
            time.sleep(0.01)
        d.settle()
        code, log = d.stop()
        done.set()
        watcher.join()
    assert code == 0, log
    assert peak[0] <= MAX_MB * 1e6, peak[0]                 # never more than --max-mb
    st = textrace.store.open(store)
    summary = st.summary()
    assert summary["evicted"] > 0 and summary["evicted_bytes"] > 0
    for prog_id in live_ids:                                 # live code is never evicted
        [ld] = st.loads(prog_id=prog_id)
        assert not ld.evicted and st.prog_info(ld) is not None
    # evicted oldest first, and never below --min-mb of the most recent
    images = {im.id: im for im in st.images()}
    unloaded = sorted((ld for ld in st.loads() if ld.prog_id in set(gone_ids)),
                      key=lambda ld: ld.unload_ns)
    kept = [ld for ld in unloaded if not ld.evicted]
    evicted = [ld for ld in unloaded if ld.evicted]
    assert evicted and kept
    assert max(ld.unload_ns for ld in evicted) < min(ld.unload_ns for ld in kept)
    # what is kept of unloaded code (other processes' programs count too: they are code
    # the store holds like ours)
    live_images = {ld.image for ld in st.loads() if ld.unload_ns is None}
    recent = sum(im.bytes for im in images.values()
                 if not im.evicted and im.id not in live_images)
    assert recent >= MIN_MB * 1e6, recent
    # lifetimes stay for evicted loads; their code is gone
    assert all(ld.load_ns is not None and ld.unload_ns is not None for ld in evicted)
    assert st.prog_info(evicted[0]) is None
