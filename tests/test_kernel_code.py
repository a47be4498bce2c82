"""Kernel code on demand and unreported code changes, on this host's 6.18 kernel.

This kernel has no /proc/kcore and emits no TEXT_POKE records: the capture program reads
kernel memory for the recorder, and JIT images that the kernel patches silently (tail-call
sites, when a prog-array slot changes) are re-read and recorded as changes.  The oracle for
kernel memory is the kernel's own account of a program held open (BPF_OBJ_GET_INFO_BY_FD);
for the changes, the workload's own reads of the image before and after its map update,
and perf's reading of the TEXT_POKE records textrace writes.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from bpfobj import record_workload
from bpfprogs import load_with_subprograms
from textrace import open as open_recording
from textrace.bpf.capture.loader import MAX_CODE, CaptureProgram
from textrace.bpf.prog_info import read_prog_info
from textrace.errors import KernelError
from textrace.history.build import kernel_code_images
from textrace.recorder.code_reads import function_extent
from textrace.perf.private import Kind, private_section
from textrace.recorded import recorded
from textrace.recorder.image_watch import UnreportedChange, changed_ranges
from textrace.sources.kallsyms import read_proc_kallsyms

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def capture():
    cp = CaptureProgram()
    yield cp
    cp.close()


def test_code_read_on_demand_equals_the_kernels_account_of_a_jit_image(capture):
    fd = load_with_subprograms(3, name="tr_coderead")
    try:
        info = read_prog_info(fd)
        funcs = info.funcs()
        assert len(funcs) == 4
        for addr, n, code in funcs:
            t, data = capture.read_code(addr, n)
            assert data == code
            assert t > 0
    finally:
        os.close(fd)


def test_code_reads_are_bounded_and_failures_counted(capture):
    before = capture.counter("code_failed")
    with pytest.raises(KernelError, match="unreadable"):
        capture.read_code(0x1000, 16)       # user-space address: not kernel memory
    with pytest.raises(KernelError, match="1..1048576"):
        capture.read_code(0xffffffff81000000, MAX_CODE + 1)
    assert capture.counter("code_failed") == before + 1
    # a whole MiB of kernel text arrives in one request, complete
    kernel = read_proc_kallsyms()
    _t, text = capture.read_code(kernel.address_of("_text"), MAX_CODE)
    assert len(text) == MAX_CODE and text.count(0) < MAX_CODE // 2


def test_changed_ranges_cover_whole_instructions():
    nop5, jmp = bytes.fromhex("0f1f440000"), bytes.fromhex("e90b000000")
    head, tail = bytes.fromhex("4889e5"), bytes.fromhex("c3")
    old, new = head + jmp + nop5 + tail, head + nop5 + jmp + tail
    # bytes 3..5 and 8..10 differ (the trailing zeros coincide): one range per instruction
    assert changed_ranges(old, new) == [(3, 8), (8, 13)]
    # an instruction boundary that moves (a 2-byte nop becomes part of a longer one) is
    # covered by the union of both decodings
    assert changed_ranges(bytes.fromhex("6690c3c3c3"), bytes.fromhex("eb01c3c3c3")) == [(0, 2)]
    assert changed_ranges(old, old) == []


def test_reported_pokes_are_kept_only_where_and_while_an_image_may_need_them():
    """The TEXT_POKEs kept for images learned later: none in the kernel's own text, and
    only the last REPORTED_HORIZON_NS of the others, however many pokes arrive."""
    from textrace.recorder.image_watch import REPORTED_HORIZON_NS, ImageWatch
    watch = ImageWatch()
    watch.kernel_text = (0xffffffff81000000, 0xffffffff82000000)
    for k in range(50_000):      # the function tracer turned on: pokes all over the text
        watch.apply(k, 0xffffffff81000000 + 16 * k, b"\x0f\x1f\x44\x00\x00")
    assert watch.reported == []
    step = 10**7                 # a poke every 10 ms outside the text, for 200 s
    most = 0
    for k in range(20_000):
        watch.apply(k * step, 0xffffffffa0000000 + 16 * (k % 64), b"\xe9\0\0\0\0")
        most = max(most, len(watch.reported))
    per_horizon = REPORTED_HORIZON_NS // step
    assert most <= 2 * per_horizon + 1024
    last = 19_999 * step
    kept = {t for t, _a, _n in watch.reported}
    assert all(k * step in kept for k in range(20_000) if k * step >= last - REPORTED_HORIZON_NS)


TAIL_WORKLOAD = r"""
import ctypes, json, sys, time
sys.path.insert(0, {tests!r})
from bpfobj import build, LoadedObject
from bpfprogs import load_trivial
from textrace.bpf.prog_info import read_prog_info
obj = LoadedObject(build("tail", {tmp!r}))
fd = obj.prog_fd("tr_tail")
target = load_trivial("tr_tail_target")
jmp = obj.lib.bpf_map__fd(obj.lib.bpf_object__find_map_by_name(obj.obj, b"jmp"))
before = read_prog_info(fd)
time.sleep(1.0)  # user-space capture reads the image some time after the load: let it
t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
key, value = ctypes.c_uint32(0), ctypes.c_uint32(target)
assert obj.lib.bpf_map_update_elem(jmp, ctypes.byref(key), ctypes.byref(value), 0) == 0
t1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
after = read_prog_info(fd)
time.sleep(0.3)
print(json.dumps({{"id": before.id, "addr": before.jited_ksyms[0], "t0": t0, "t1": t1,
                  "before": before.jited_insns.hex(), "after": after.jited_insns.hex()}}))
"""


@pytest.mark.parametrize("mode", ["kernel", "user"])
def test_silent_tail_call_patches_are_recorded_as_changes(tmp_path, mode):
    out = tmp_path / f"tail-{mode}.data"
    w = record_workload(out, TAIL_WORKLOAD.format(tests=TESTS, tmp=str(tmp_path)),
                        "--capture", mode)
    before, after = bytes.fromhex(w["before"]), bytes.fromhex(w["after"])
    assert before != after, "the map update did not patch the image"
    rec = open_recording(out)
    pokes = [r for r in rec.records() if r.type_name == "TEXT_POKE"]
    mine = [p for p in pokes if w["addr"] <= p.addr < w["addr"] + len(before)]
    # the x86 JIT patches two 5-byte sites: the bypass jmp becomes a nop, the target
    # nop becomes a jmp to the new program
    assert len(mine) == 2
    for p in mine:
        off = p.addr - w["addr"]
        assert p.old_bytes == before[off:off + p.old_len] and p.old_len == 5
        assert p.new_bytes == after[off:off + p.new_len] and p.new_len == 5
        assert p.time >= w["t0"]
        if mode == "kernel":  # stamped by the update syscall's exit, seen by the capture
            assert p.time <= w["t1"]
    # textrace's section lists them as unreported, with the interval
    changes = [UnreportedChange.from_json(line)
               for blob in private_section(rec.data).get(Kind.UNREPORTED)
               for line in blob.splitlines()]
    assert sorted(c.addr for c in changes if c.prog_id == w["id"]) == sorted(
        p.addr for p in mine)
    # the history replays them: the image as captured, then as patched
    history = rec.history
    for p in mine:
        off = p.addr - w["addr"]
        assert history.read(p.addr, 5, p.time - 1) == before[off:off + 5]
        assert history.read(p.addr, 5, p.time) == after[off:off + 5]
    # textrace pokes names them tail calls the kernel did not report, with the interval
    r = subprocess.run(["python3", "-m", "textrace", "pokes", "-i", str(out), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = {row["addr"]: row for row in map(json.loads, r.stdout.splitlines())}
    for p in mine:
        row = rows[p.addr]
        assert row["kind"] == "tail_call" and row["reported"] is False
        assert row["ambiguous"][0] <= w["t0"] and row["ambiguous"][1] == p.time
    # perf reads the records textrace wrote and names the program they patch
    r = subprocess.run(["perf", "script", "--show-text-poke-events", "-i", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if "PERF_RECORD_TEXT_POKE" in ln]
    for p in mine:
        line = next(ln for ln in lines if f"{p.addr:x}" in ln)
        assert "_tr_tail+0x" in line and "old len 5 new len 5" in line


def test_record_reads_sampled_kernel_functions(tmp_path):
    """With samples, the functions they hit are read at the end (through the capture
    program on this host): the history then has bytes for kernel text."""
    out = tmp_path / "sampled.data"
    r = subprocess.run(["python3", "-m", "textrace", "record", "-a", "-e", "cpu-clock",
                        "-F", "999", "-o", str(out), "--", "dd", "if=/dev/zero",
                        "of=/dev/null", "bs=4k", "count=300000"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "kernel code:" in r.stderr
    rec = open_recording(out)
    section = private_section(rec.data)
    info = json.loads(section.get(Kind.RECORD_INFO)[0])
    assert info["kernel_code"]["source"] == "capture program"
    images = kernel_code_images(recorded(rec.data).kernel_code)
    assert images and info["kernel_code"]["images"] == len(images)
    kernel = read_proc_kallsyms()
    samples = rec.samples()
    kips = {int(ip) for ip in samples.ip if ip >= 0xffff800000000000}
    covered = [ip for ip in kips if any(im.addr <= ip < im.end for im in images)]
    in_functions = [ip for ip in kips if function_extent(kernel, ip)]
    assert len(covered) == len(in_functions) > 0
    for im in images[:20]:  # each image is a function per kallsyms, read whole
        assert kernel.symbol(im.addr)[1] == 0
