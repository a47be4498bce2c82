"""The in-kernel capture program on this kernel: every program, synchronously at load."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from textrace.bpf.capture.loader import CaptureProgram

TESTS = os.path.dirname(os.path.abspath(__file__))

# A loader in another process (the capture program never captures the recorder's own
# loads): N programs with `subs` subprograms each, closed at once unless `hold`, and the
# kernel's own account of each one read through BPF_OBJ_GET_INFO_BY_FD while held.
LOADER = r"""
import json, os, sys
sys.path.insert(0, {tests!r})
from bpfprogs import load_trivial, load_with_subprograms
from textrace.bpf.prog_info import read_prog_info
out = []
for k in range({n}):
    name = "{prefix}%d" % k
    fd = load_with_subprograms({subs}, name=name) if {subs} else load_trivial(name)
    if {hold}:
        t = read_prog_info(fd)
        out.append({{"id": t.id, "tag": t.tag.hex(), "name": t.name,
                    "funcs": [[a, n, c.hex()] for a, n, c in t.funcs()],
                    "xlated": t.xlated_insns.hex()}})
    os.close(fd)
print(json.dumps(out))
"""


def load_elsewhere(n: int, subs: int, hold: bool, prefix: str) -> list[dict]:
    code = LOADER.format(tests=TESTS, n=n, subs=subs, hold=hold, prefix=prefix)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(params=["bpf_loop", "bounded"])
def capture(request):
    """Both variants on this kernel: the bounded-loop one (for kernels without bpf_loop,
    tested there in the testbed's 5.10) must capture the same as the bpf_loop one."""
    cp = CaptureProgram(variant=request.param)
    yield cp
    cp.close()


def test_the_variant_is_chosen_by_probing_for_bpf_loop(monkeypatch):
    monkeypatch.delenv("TEXTRACE_CAPTURE_VARIANT", raising=False)
    cp = CaptureProgram()
    try:
        assert cp.variant == "bpf_loop"  # this kernel (6.18) has it, since 5.17
        assert cp.variant_note == "bpf_loop present, using the bpf_loop variant"
    finally:
        cp.close()


def drain(cp: CaptureProgram, prefix: str, want: int, rounds: int = 50) -> list:
    """This test's programs (the capture is system-wide: other loaders show up too)."""
    got = []
    for _ in range(rounds):
        got += [c for c in cp.poll() if c.prog_info().name.startswith(prefix)]
        if len(got) >= want:
            break
    return got


def unique_prefix() -> str:
    return "k" + os.urandom(3).hex()  # names are at most 15 characters


def test_captured_bytes_equal_the_kernels_account(capture):
    prefix = unique_prefix()
    truth = load_elsewhere(3, subs=11, hold=True, prefix=prefix)
    caps = {c.prog_id: c for c in drain(capture, prefix, 3)}
    assert len(caps) == 3 and capture.lost == 0
    for t in truth:
        info = caps[t["id"]].prog_info()
        assert info.tag.hex() == t["tag"] and info.name == t["name"]
        assert len(info.jited_ksyms) == 12  # main program and 11 subprograms
        assert [[a, n, c.hex()] for a, n, c in info.funcs()] == t["funcs"]
        # no maps or helper calls: the kernel's xlated dump is its insnsi as they are
        assert info.xlated_insns.hex() == t["xlated"]


def test_a_storm_of_short_lived_programs_is_captured_completely(capture):
    prefix = unique_prefix()
    load_elsewhere(500, subs=0, hold=False, prefix=prefix)
    caps = drain(capture, prefix, 500)
    assert capture.lost == 0
    assert len(caps) == 500
    assert all(c.prog_info().jited_insns for c in caps)
    assert capture.counter("captured") >= 500


def test_the_recorders_own_loads_are_not_captured(capture):
    from bpfprogs import load_trivial
    prefix = unique_prefix()
    os.close(load_trivial(prefix))
    assert not [c for c in capture.poll() if c.prog_info().name.startswith(prefix)]
