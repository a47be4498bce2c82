"""Text pokes: what each TEXT_POKE was, the INT3 window around it, and reads across it.

This host's kernel emits no TEXT_POKE for perf to record, so the records are crafted: real
encodings (NOP5, jmp/call rel32 to real targets, INT3) at real kernel text addresses from
/proc/kallsyms and inside crafted BPF program regions, written with PerfDataWriter, and
every crafted file is first read by perf (`perf script --show-text-poke-events`, `perf
report -D`): the address, lengths, bytes and time perf prints are the ones meant.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import dataclass

import pytest

from oracle import perf_report_dump, perf_script_sideband
from textrace.history.code_history import (INT3_WINDOW_NS, CodeHistory, Image, Poke,
                                           UnknownCode)
from textrace.history.pokes import KINDS, NOP2, NOP5, classify
from textrace.history.regions import Region, RegionTable
from textrace.load import load_history
from textrace.perf.abi import BpfEventType, KsymbolType, RecordType
from textrace.perf.reader import PerfData
from textrace.perf.records import BpfEventRecord, KsymbolRecord, TextPokeRecord
from textrace.perf.sampleid import SampleId
from textrace.perf.writer import PerfDataWriter
from textrace.sources.kallsyms import read_proc_kallsyms
from textrace.views.pokes import kind_counts, poke_rows
from textrace.views.show import show

W = INT3_WINDOW_NS
MS = 1_000_000
T0 = 1_000_000_000
KSYMS = read_proc_kallsyms()


def kaddr(name: str) -> int:
    addr = KSYMS.address_of(name)
    assert addr is not None, f"{name} is not in /proc/kallsyms"
    return addr


def size_of(name: str) -> int:
    """A kallsyms symbol's extent: up to the next symbol, as perf takes it."""
    i = KSYMS.names.index(name)
    return int(KSYMS.addrs[i + 1]) - int(KSYMS.addrs[i])


def rel32(op: int, site: int, target: int) -> bytes:
    return bytes([op]) + struct.pack("<i", target - (site + 5))


def jmp32(site: int, target: int) -> bytes:
    return rel32(0xE9, site, target)


def call32(site: int, target: int) -> bytes:
    return rel32(0xE8, site, target)


def jmp8(site: int, target: int) -> bytes:
    return bytes([0xEB]) + struct.pack("<b", target - (site + 2))


# --- the crafted recording ------------------------------------------------------------------

TAG_A, TAG_B = bytes.fromhex("a1a2a3a4a5a6a7a8"), bytes.fromhex("b1b2b3b4b5b6b7b8")
PROG_A = (0xFFFFFFFFC0101000, 0x100, f"bpf_prog_{TAG_A.hex()}_tr_caller", 901)
PROG_B = (0xFFFFFFFFC0102000, 0x80, f"bpf_prog_{TAG_B.hex()}_tr_callee", 902)
INSN_PAGE = (0xFFFFFFFFC0103000, 0x1000, "kprobe_insn_page")
X86_TAIL_CALL_OFFSET = 11  # the target program's prologue a direct tail call skips


@dataclass(frozen=True)
class Crafted:
    """One crafted poke: what it is meant to be and what textrace must call it."""
    name: str
    time: int
    addr: int
    old: bytes
    new: bytes
    kind: str
    symbol: str
    old_insn: list[str]
    new_insn: list[str]


def _crafted_pokes() -> list[Crafted]:
    jl_fn, jl_size = "do_sys_openat2", size_of("do_sys_openat2")
    assert jl_size > 0x80
    jl = kaddr(jl_fn) + 0x21
    jl_to = kaddr(jl_fn) + 0x70
    jl2 = kaddr(jl_fn) + 0x40
    jl2_to = kaddr(jl_fn) + 0x52
    f1, f2 = kaddr("__x64_sys_getpid"), kaddr("__x64_sys_getppid")
    sct = kaddr("__SCT__might_resched")
    ret0, cond = kaddr("__static_call_return0"), kaddr("__cond_resched")
    a, b = PROG_A[0], PROG_B[0]
    kp = kaddr("vfs_read") + 0x13
    nop5 = "nop dword ptr [rax + rax]"
    return [
        Crafted("jump_label on", T0 + 1 * MS, jl, NOP5, jmp32(jl, jl_to), "jump_label",
                f"{jl_fn}+0x21", [nop5], [f"jmp {jl_to:#x} <{jl_fn}+0x70>"]),
        Crafted("jump_label off", T0 + 2 * MS, jl, jmp32(jl, jl_to), NOP5, "jump_label",
                f"{jl_fn}+0x21", [f"jmp {jl_to:#x} <{jl_fn}+0x70>"], [nop5]),
        Crafted("jump_label 2-byte", T0 + 3 * MS, jl2, NOP2, jmp8(jl2, jl2_to), "jump_label",
                f"{jl_fn}+0x40", ["nop"], [f"jmp {jl2_to:#x} <{jl_fn}+0x52>"]),
        # one text_poke_queue batch: two function entries, records ~1.5 us apart
        Crafted("ftrace __fentry__", T0 + 4 * MS, f1, NOP5, call32(f1, kaddr("__fentry__")),
                "ftrace", "__x64_sys_getpid", [nop5],
                [f"call {kaddr('__fentry__'):#x} <__fentry__>"]),
        Crafted("ftrace ftrace_caller", T0 + 4 * MS + 1500, f2, NOP5,
                call32(f2, kaddr("ftrace_caller")), "ftrace", "__x64_sys_getppid", [nop5],
                [f"call {kaddr('ftrace_caller'):#x} <ftrace_caller>"]),
        Crafted("static_call trampoline", T0 + 5 * MS, sct, jmp32(sct, ret0), jmp32(sct, cond),
                "static_call", "__SCT__might_resched",
                [f"jmp {ret0:#x} <__static_call_return0>"],
                [f"jmp {cond:#x} <__cond_resched>"]),
        # prog_array_map_poke_run: the poke site NOP becomes jmp to the callee past its
        # prologue, then the bypass jmp over it becomes a NOP
        Crafted("tail call target", T0 + 6 * MS, a + 0x40, NOP5,
                jmp32(a + 0x40, b + X86_TAIL_CALL_OFFSET), "tail_call", f"{PROG_A[2]}+0x40",
                [nop5], [f"jmp {b + X86_TAIL_CALL_OFFSET:#x} <{PROG_B[2]}+0xb>"]),
        Crafted("tail call bypass", T0 + 6 * MS + 2000, a + 0x30, jmp32(a + 0x30, a + 0x45),
                NOP5, "tail_call", f"{PROG_A[2]}+0x30", [f"jmp {a + 0x45:#x} <{PROG_A[2]}+0x45>"],
                [nop5]),
        # arch_prepare_kprobe: the probed instruction copied into a slot, INT3 after it
        Crafted("kprobe slot", T0 + 7 * MS, INSN_PAGE[0], b"", bytes.fromhex("4889e5cc"),
                "kprobe", "kprobe_insn_page", [], ["mov rbp, rsp", "int3"]),
        Crafted("kprobe arm", T0 + 8 * MS, kp, b"\x48", b"\xcc", "kprobe", "vfs_read+0x13",
                [".byte 0x48"], ["int3"]),
        Crafted("kprobe disarm", T0 + 9 * MS, kp, b"\xcc", b"\x48", "kprobe", "vfs_read+0x13",
                ["int3"], [".byte 0x48"]),
    ]


POKES = _crafted_pokes()
BY_NAME = {c.name: c for c in POKES}


def at(t: int) -> SampleId:
    return SampleId(pid=0, tid=0, time=t, cpu=0)


def _records():
    recs = []
    for (addr, size, name, prog_id), tag, t in ((PROG_A, TAG_A, T0), (PROG_B, TAG_B, T0 + 1000)):
        recs += [KsymbolRecord(addr=addr, len=size, ksym_type=KsymbolType.BPF, name=name,
                               sample_id=at(t)),
                 BpfEventRecord(event_type=BpfEventType.PROG_LOAD, prog_id=prog_id, tag=tag,
                                sample_id=at(t))]
    recs.append(KsymbolRecord(addr=INSN_PAGE[0], len=INSN_PAGE[1], ksym_type=KsymbolType.OOL,
                              name=INSN_PAGE[2], sample_id=at(T0 + 7 * MS - 1000)))
    recs += [TextPokeRecord(addr=c.addr, old_bytes=c.old, new_bytes=c.new, sample_id=at(c.time))
             for c in POKES]
    return sorted(recs, key=lambda r: r.sample_id.time)


@pytest.fixture(scope="module")
def poked(corpus, tmp_path_factory):
    """The crafted file, in the attrs of a real system-wide sideband recording and after
    its kernel map (perf's synthesized MMAP of [kernel.kallsyms]_text: with it perf, like
    textrace, names kernel addresses from this boot's kallsyms)."""
    base = PerfData.open(corpus.path("sideband"))
    assert base.attrs[0].attr.sample_id_all
    kmap = next(r for r in base.records(frozenset({RecordType.MMAP}))
                if r.filename.startswith("[kernel.kallsyms]"))
    assert kmap.pgoff == kaddr("_text")
    out = tmp_path_factory.mktemp("pokes") / "poked.data"
    with PerfDataWriter(out, base.attrs[:1]) as w:
        w.write(kmap)
        w.write_all(_records())
    return out


@pytest.fixture(scope="module")
def history(poked):
    return load_history(PerfData.open(poked))[0]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "textrace", *args], capture_output=True,
                          text=True, timeout=120)


# --- perf reads the crafted file as meant ---------------------------------------------------

def test_perf_reads_every_crafted_poke(poked):
    shown = [r for r in perf_script_sideband(poked) if r["type"] == "TEXT_POKE"]
    dumped = [r for r in perf_report_dump(poked).records if r["type_name"] == "TEXT_POKE"]
    assert len(shown) == len(dumped) == len(POKES)
    for s, d, c in zip(shown, dumped, POKES):
        for r in (s, d):
            assert (r["addr"], r["old_len"], r["new_len"]) == (c.addr, len(c.old), len(c.new))
            assert (r["old_bytes"], r["new_bytes"]) == (c.old, c.new), c.name
            assert r["time"] == c.time, c.name


def test_perf_names_each_site_as_textrace_does(poked):
    """perf resolves each poked address (kallsyms, and the crafted KSYMBOLs) to the symbol
    textrace reports."""
    shown = [r for r in perf_script_sideband(poked) if r["type"] == "TEXT_POKE"]
    rows = poke_rows(PerfData.open(poked))
    for s, row, c in zip(shown, rows, POKES):
        assert row.symbol == c.symbol, c.name
        assert s["symbol"].removesuffix("+0x0") == c.symbol, c.name  # perf prints +0x0


# --- kinds, symbols, disassembly ------------------------------------------------------------

def test_rows_in_time_order_with_kind_symbol_and_disassembly(poked):
    rows = poke_rows(PerfData.open(poked))
    assert [r.time for r in rows] == [c.time for c in POKES]
    for row, c in zip(rows, POKES):
        assert (row.addr, row.kind, row.symbol) == (c.addr, c.kind, c.symbol), c.name
        assert (row.old, row.new) == (c.old.hex(), c.new.hex())
        assert row.old_insn == c.old_insn and row.new_insn == c.new_insn, c.name
        assert row.why


def test_kind_filter_and_counts(poked):
    data = PerfData.open(poked)
    assert [r.time for r in poke_rows(data, kind="ftrace")] == \
        [c.time for c in POKES if c.kind == "ftrace"]
    assert kind_counts(poke_rows(data)) == {"jump_label": 3, "ftrace": 2, "static_call": 1,
                                            "tail_call": 2, "kprobe": 3}


def test_json_lines(poked):
    r = cli("pokes", "-i", str(poked), "--json")
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(got) == len(POKES)
    for g, c in zip(got, POKES):
        assert set(g) == {"time", "addr", "symbol", "kind", "why", "old", "new", "old_insn",
                          "new_insn", "ambiguous", "batch", "reported"}
        assert g["reported"] is True  # all are the kernel's records here
        # addresses are JSON numbers, as in show, progs, callsites and events
        assert (g["time"], g["addr"], g["kind"], g["symbol"]) == (c.time, c.addr, c.kind,
                                                                  c.symbol)
        assert (g["old"], g["new"]) == (c.old.hex(), c.new.hex())
        assert g["old_insn"] == c.old_insn and g["new_insn"] == c.new_insn
        lo, hi = g["ambiguous"]
        assert lo <= c.time - W and c.time + W <= hi
    f1, f2 = got[3], got[4]
    assert f1["batch"] == f2["batch"] == 2 and f1["ambiguous"] == f2["ambiguous"]
    assert got[0]["batch"] == 1 and got[0]["ambiguous"] == [POKES[0].time - W,
                                                            POKES[0].time + W]
    r = cli("pokes", "-i", str(poked), "--json", "--kind", "tail_call")
    assert [json.loads(x)["kind"] for x in r.stdout.splitlines()] == ["tail_call"] * 2


def test_table_and_summary(poked):
    r = cli("pokes", "-i", str(poked))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == ("11 pokes: jump_label 3, ftrace 2, static_call 1, tail_call 2, "
                         "kprobe 3")
    row = next(line for line in lines if f"{POKES[0].addr:#x}" in line)
    assert "jump_label" in row and "do_sys_openat2+0x21" in row
    assert "nop dword ptr [rax + rax] -> jmp" in row and "<do_sys_openat2+0x70>" in row
    assert "[batch of 2]" in next(line for line in lines if "__x64_sys_getppid" in line)


def test_unknown_kind_is_a_one_line_error(poked):
    r = cli("pokes", "-i", str(poked), "--kind", "alternatives")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "unknown poke kind 'alternatives'" in r.stderr


# --- reading across each poke ---------------------------------------------------------------

@pytest.mark.parametrize("name", [c.name for c in POKES if c.old and c.new])
def test_read_forwards_and_backwards_around_each_poke(history, name):
    """The poke's own bytes are an image: just before its time the old bytes, from it the
    new ones; further away, the neighbouring pokes replayed."""
    c = BY_NAME[name]
    n = len(c.new)
    assert history.read(c.addr, n, c.time - 1) == c.old
    assert history.read(c.addr, n, c.time) == c.new
    later = [d for d in POKES if d.addr == c.addr and d.time > c.time]
    until = later[0].time - 1 if later else c.time + 100 * MS
    assert history.read(c.addr, n, until) == c.new
    earlier = [d for d in POKES if d.addr == c.addr and d.time < c.time]
    if earlier:  # backwards through this poke and the one before it
        assert history.read(c.addr, n, earlier[-1].time - 1) == earlier[-1].old


def test_kprobe_site_reads_int3_only_while_armed(history):
    arm, disarm = BY_NAME["kprobe arm"], BY_NAME["kprobe disarm"]
    assert history.read(arm.addr, 1, arm.time - 10 * MS) == b"\x48"
    assert history.read(arm.addr, 1, (arm.time + disarm.time) // 2) == b"\xcc"
    assert history.read(arm.addr, 1, disarm.time + 10 * MS) == b"\x48"


def test_kprobe_slot_has_no_bytes_before_it_was_written(history):
    slot = BY_NAME["kprobe slot"]
    assert history.read(slot.addr, 4, slot.time + MS) == slot.new
    code = history.at(slot.time + MS).disassemble(slot.addr, 4)
    assert [i.mnemonic for i in code] == ["mov", "int3"]


def test_a_captured_image_replays_forwards_and_backwards(poked):
    """Prog A's JIT image read at load (NOPs at both sites) moves forwards through the tail
    call pokes; one read after them moves backwards."""
    a, size = PROG_A[0], PROG_A[1]
    tgt, byp = BY_NAME["tail call target"], BY_NAME["tail call bypass"]
    at_load = bytearray(b"\xcc" * size)
    at_load[0x30:0x35] = byp.old
    at_load[0x40:0x45] = tgt.old
    after = bytearray(at_load)
    after[0x30:0x35] = byp.new
    after[0x40:0x45] = tgt.new
    data = PerfData.open(poked)

    fwd, _ = load_history(data)
    fwd.add_images([Image(a, bytes(at_load), T0, "bpf:901")])
    assert fwd.read(a, size, T0 + MS) == at_load
    assert fwd.read(a, size, byp.time + 10 * MS) == after
    assert fwd.read(a + 0x40, 5, tgt.time) == tgt.new and fwd.read(a + 0x30, 5, tgt.time) == \
        byp.old

    back, _ = load_history(data)
    back.add_images([Image(a, bytes(after), byp.time + 50 * MS, "bpf:901")])
    assert back.read(a, size, T0 + MS) == at_load
    assert back.read(a, size, byp.time) == after


def test_untouched_static_text_stays_unknown(history):
    with pytest.raises(UnknownCode):
        history.read(kaddr("do_sys_openat2") + 0x100, 4, T0)


# --- the INT3 window ------------------------------------------------------------------------

def test_ambiguous_inside_the_window_only(history):
    c = BY_NAME["jump_label on"]
    p = Poke(c.time, c.addr, c.old, c.new)
    for t in (c.time - W, c.time - 1, c.time, c.time + W):
        assert history.ambiguity(c.addr, 5, t) == [p], t
        got = history.read_exact(c.addr, 5, t)
        assert got.ambiguous and got.pokes == [p]
        assert got.data == (c.new if t >= c.time else c.old)
    for t in (c.time - W - 1, c.time + W + 1, c.time + MS // 2):
        assert history.ambiguity(c.addr, 5, t) == [], t
        assert not history.read_exact(c.addr, 5, t).ambiguous
    # only bytes the poke touched: the byte after the NOP5 is not mid-change
    assert history.ambiguity(c.addr + 5, 1, c.time) == []
    assert history.ambiguity(c.addr + 4, 1, c.time) == [p]
    # a wider window is a parameter
    assert history.ambiguity(c.addr, 5, c.time + 3 * W, window_ns=4 * W) == [p]


def test_a_batch_shares_one_window(history):
    """text_poke_bp_batch writes every INT3 before its first record and every first byte
    after its last: the first function's entry is mid-change until the batch is done."""
    f1, f2 = BY_NAME["ftrace __fentry__"], BY_NAME["ftrace ftrace_caller"]
    span = f2.time - f1.time
    assert span < W
    w = history.window_of(Poke(f1.time, f1.addr, f1.old, f1.new))
    assert (w.start, w.end) == (f1.time - W - span, f2.time + W + span)
    assert len(w.pokes) == 2 and w == history.window_of(Poke(f2.time, f2.addr, f2.old, f2.new))
    late = f1.time + W + span  # outside f1's own window, inside the batch's
    assert [p.addr for p in history.ambiguity(f1.addr, 5, late)] == [f1.addr]
    assert history.ambiguity(f1.addr, 5, w.end + 1) == []
    assert history.ambiguity(f2.addr, 5, w.start) != []


def test_code_view_carries_the_window(history):
    c = BY_NAME["kprobe arm"]
    view = history.at(c.time + 5)
    assert view.read(c.addr, 1) == b"\xcc"
    assert view.read_exact(c.addr, 1).ambiguous and len(view.ambiguity(c.addr, 1)) == 1
    assert not history.at(c.time + 5, window_ns=2).read_exact(c.addr, 1).ambiguous


# --- show -----------------------------------------------------------------------------------

def test_show_lists_each_state_of_a_poked_kernel_address(poked):
    c_on, c_off = BY_NAME["jump_label on"], BY_NAME["jump_label off"]
    versions = show(PerfData.open(poked), c_on.addr)
    assert [(v.born_ns, v.died_ns) for v in versions] == [(None, c_on.time),
                                                          (c_on.time, c_off.time),
                                                          (c_off.time, None)]
    assert [bytes.fromhex(v.bytes) for v in versions] == [NOP5, c_on.new, NOP5]
    assert all(not v.ambiguous for v in versions)
    assert versions[1].insns == [f"{c_on.addr:#x}: {c_on.new_insn[0].replace(' <', '  <')}"]


def test_show_flags_a_version_inside_the_window(poked):
    c = BY_NAME["tail call target"]
    data = PerfData.open(poked)
    inside, = show(data, c.addr, at=c.time + 100)
    assert inside.ambiguous and inside.name == PROG_A[2]
    assert [p["time"] for p in inside.pokes] == [c.time]
    outside, = show(data, c.addr, at=c.time + MS)
    assert not outside.ambiguous and outside.pokes == []
    jl = BY_NAME["jump_label on"]
    v, = show(data, jl.addr, at=jl.time - 3)
    assert v.ambiguous and bytes.fromhex(v.bytes) == NOP5


def test_show_cli_says_ambiguous(poked):
    c = BY_NAME["kprobe arm"]
    r = cli("show", f"{c.addr:#x}", "--at", str(c.time + 1), "-i", str(poked))
    assert r.returncode == 0, r.stderr
    assert "AMBIGUOUS" in r.stdout and "int3" in r.stdout
    r = cli("show", f"{c.addr:#x}", "--at", str(c.time + MS // 2), "-i", str(poked), "--json")
    v, = [json.loads(line) for line in r.stdout.splitlines()]
    assert v["ambiguous"] is False and v["bytes"] == "cc"


# --- kinds the crafted file does not hold ---------------------------------------------------

def _history(regions: list[Region], pokes: list[Poke]) -> CodeHistory:
    return CodeHistory(RegionTable(regions), KSYMS, [], pokes)


def test_ftrace_site_after_endbr64():
    site = kaddr("__x64_sys_getuid") + 4
    p = Poke(T0, site, NOP5, call32(site, kaddr("ftrace_regs_caller")))
    info = classify(_history([], [p]), p)
    assert (info.kind, info.symbol) == ("ftrace", "__x64_sys_getuid+0x4")


def test_direct_call_to_a_bpf_trampoline():
    site = kaddr("__x64_sys_getuid")
    tramp = Region(0xFFFFFFFFC0200000, 0xFFFFFFFFC0201000, "bpf_trampoline_6442491234", "bpf",
                   T0 - 1)
    p = Poke(T0, site, NOP5, call32(site, tramp.start))
    info = classify(_history([tramp], [p]), p)
    assert info.kind == "bpf_trampoline"
    assert info.new_insns[0].text == f"call {tramp.start:#x} <bpf_trampoline_6442491234>"


def test_dispatcher_image_and_its_jump():
    disp = Region(0xFFFFFFFFC0300000, 0xFFFFFFFFC0301000, "bpf_dispatcher_xdp", "bpf", T0 - 1)
    site = kaddr("__x64_sys_getuid") + 0x10
    p = Poke(T0, site, NOP5, jmp32(site, disp.start + 0x800))
    inside = Poke(T0 + MS, disp.start + 0x20, NOP5, jmp32(disp.start + 0x20, disp.start))
    h = _history([disp], [p, inside])
    assert classify(h, p).kind == classify(h, inside).kind == "bpf_dispatcher"


def test_dispatcher_function_in_kernel_text():
    """bpf_dispatcher_change_prog: the dispatcher's function jumps to its image, even when
    the recording lost the image's KSYMBOL."""
    site = kaddr("bpf_dispatcher_xdp_func")
    p = Poke(T0, site, NOP5, jmp32(site, 0xFFFFFFFFC0300800))
    assert classify(_history([], [p]), p).kind == "bpf_dispatcher"


def test_a_kernel_function_named_like_a_trampoline_is_not_one():
    site = kaddr("bpf_trampoline_link_prog")
    p = Poke(T0, site, NOP5, call32(site, kaddr("ftrace_caller")))
    assert classify(_history([], [p]), p).kind == "ftrace"


def test_optimized_kprobe_jumps_into_its_slot():
    page = Region(0xFFFFFFFFC0400000, 0xFFFFFFFFC0401000, "kprobe_optinsn_page", "ool", T0 - 1)
    site = kaddr("vfs_read") + 0x20
    p = Poke(T0, site, bytes.fromhex("cc4889e548"), jmp32(site, page.start + 0x40))
    unopt = Poke(T0 + MS, site, jmp32(site, page.start + 0x40), bytes.fromhex("cc4889e548"))
    h = _history([page], [p, unopt])
    assert classify(h, p).kind == classify(h, unopt).kind == "kprobe"


def test_new_ftrace_trampoline_and_ftrace_call_update():
    tramp = Region(0xFFFFFFFFC0500000, 0xFFFFFFFFC0500100, "ftrace_trampoline", "ool", T0 - 1)
    created = Poke(T0, tramp.start, b"", bytes.fromhex("f30f1efa") + NOP5)
    call = kaddr("ftrace_call")
    update = Poke(T0 + MS, call, call32(call, kaddr("ftrace_stub")),
                  call32(call, kaddr("__x64_sys_getuid")))
    h = _history([tramp], [created, update])
    assert classify(h, created).kind == classify(h, update).kind == "ftrace"


def test_inline_static_call_site_and_unknown():
    site = kaddr("vfs_read") + 0x30
    callee = Poke(T0, site, call32(site, kaddr("__cond_resched")),
                  call32(site, kaddr("__static_call_return0")))
    odd = Poke(T0 + MS, site + 0x10, b"\x90\x90\x90", b"\x0f\x0b\x90")
    h = _history([], [callee, odd])
    assert classify(h, callee).kind == "static_call"
    assert classify(h, odd).kind == "unknown" and "unknown" in KINDS


def test_an_inferred_change_is_ambiguous_over_its_own_interval():
    """A change textrace inferred (re-read JIT image) carries the interval it happened in;
    it stands alone, not in a batch with pokes the kernel reported next to it."""
    site = PROG_A[0] + 0x40
    reported = Poke(T0, kaddr("vfs_read"), b"\x48", b"\xcc")
    inferred = Poke(T0 + 2000, site, NOP5, jmp32(site, PROG_B[0] + 11),
                    window=(T0 - 5 * MS, T0 + 2000))
    h = _history([], [reported, inferred])
    w = h.window_of(inferred)
    assert (w.start, w.end, w.pokes) == (T0 - 5 * MS, T0 + 2000, (inferred,))
    assert h.window_of(reported).pokes == (reported,)
    assert h.ambiguity(site, 5, T0 - 4 * MS) == [inferred]
    assert h.ambiguity(site, 5, T0 - 6 * MS) == [] == h.ambiguity(site, 5, T0 + 2001)
