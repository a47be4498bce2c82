"""The bpf syscall ABI against the real kernel, with bpftool, /proc/kallsyms, perf and the C
headers as oracles.

Programs are loaded here and held for the module: raw instructions through our own
BPF_PROG_LOAD (a program returning 0, one with a bpf-to-bpf call, one using a map), and a
clang-built program with BTF, func_info and line_info loaded through libbpf.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest

from bpfprogs import EXIT, call_pseudo, insn, mov_r0
from textrace.bpf import btf as btfmod
from textrace.bpf import syscall as sc
from textrace.bpf.btf import Btf, read_btf, read_btf_info
from textrace.bpf.insn import decode, disassemble, render
from textrace.bpf.prog_info import (ALL_ARRAYS, PERF_ARRAYS, PROG_INFO, ProgInfo,
                                    prog_type_name, read_prog_by_id, read_prog_info)
from textrace.errors import FormatError, KernelError, PermissionProblem
from textrace.perf.abi import Feature
from textrace.perf.reader import PerfData

BPF_FUNC_map_lookup_elem = 1

CLANG_SOURCE = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} tr_abi_counts SEC(".maps");

static __attribute__((noinline)) int tr_bump(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&tr_abi_counts, &k);
	if (!v)
		return 0;
	__sync_fetch_and_add(v, 1);
	return 1;
}

SEC("socket")
int tr_abi_btf(struct __sk_buff *skb)
{
	int r = tr_bump(skb->len & 3);
	return r + tr_bump(1) - 2;
}

char LICENSE[] SEC("license") = "GPL";
"""


def bpftool(*args: str):
    r = subprocess.run(["bpftool", *args, "--json"], capture_output=True, text=True,
                       check=True)
    return json.loads(r.stdout)


def kallsyms_bpf() -> dict[str, int]:
    out = {}
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 4 and parts[3] == "[bpf]":
                out[parts[2]] = int(parts[0], 16)
    return out


class Libbpf:
    """Just enough of the system libbpf to load an object file and keep it loaded."""

    def __init__(self):
        lib = ctypes.CDLL("libbpf.so.1")
        lib.bpf_object__open_file.restype = ctypes.c_void_p
        lib.bpf_object__open_file.argtypes = (ctypes.c_char_p, ctypes.c_void_p)
        lib.bpf_object__load.argtypes = (ctypes.c_void_p,)
        lib.bpf_object__close.argtypes = (ctypes.c_void_p,)
        lib.bpf_object__find_program_by_name.restype = ctypes.c_void_p
        lib.bpf_object__find_program_by_name.argtypes = (ctypes.c_void_p, ctypes.c_char_p)
        lib.bpf_program__fd.argtypes = (ctypes.c_void_p,)
        lib.libbpf_get_error.argtypes = (ctypes.c_void_p,)
        lib.libbpf_get_error.restype = ctypes.c_long
        self.lib = lib

    def load(self, path: str, prog_name: str) -> tuple[int, int]:
        """(object handle, program fd)"""
        obj = self.lib.bpf_object__open_file(path.encode(), None)
        assert obj and not self.lib.libbpf_get_error(obj), f"libbpf cannot open {path}"
        assert self.lib.bpf_object__load(obj) == 0, f"libbpf cannot load {path}"
        prog = self.lib.bpf_object__find_program_by_name(obj, prog_name.encode())
        return obj, self.lib.bpf_program__fd(prog)


@dataclasses.dataclass
class Held:
    fds: dict[str, int]
    map_fd: int
    map_id: int

    def info(self, name: str, arrays: int = ALL_ARRAYS) -> ProgInfo:
        return read_prog_info(self.fds[name], arrays)

    def id(self, name: str) -> int:
        return self.info(name, 0).id


def _map_id(map_fd: int) -> int:
    buf = ctypes.create_string_buffer(80)  # struct bpf_map_info: u32 type, u32 id, ...
    sc.obj_info(map_fd, buf)
    return int.from_bytes(buf.raw[4:8], "little")


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    src = tmp_path_factory.mktemp("bpfsrc") / "tr_abi.bpf.c"
    src.write_text(CLANG_SOURCE)
    obj_path = src.with_suffix(".o")
    multiarch = "/usr/include/x86_64-linux-gnu"  # <asm/types.h> for -target bpf
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", f"-I{multiarch}", "-c",
                    str(src), "-o", str(obj_path)], check=True, capture_output=True)
    libbpf = Libbpf()
    obj, btf_fd = libbpf.load(str(obj_path), "tr_abi_btf")

    map_fd = sc.map_create(sc.BPF_MAP_TYPE_ARRAY, 4, 8, 1, name="tr_abi_map")
    sc.map_update_elem(map_fd, b"\0" * 4, (7).to_bytes(8, "little"))
    # *(u32 *)(r10 - 4) = 0; r2 = r10 - 4; r1 = map; call map_lookup_elem; r0 = 0; exit
    map_prog = (insn(0x62, dst=10, off=-4, imm=0) + insn(0xbf, dst=2, src=10)
                + insn(0x07, dst=2, imm=-4)
                + insn(0x18, dst=1, src=sc.BPF_PSEUDO_MAP_FD, imm=map_fd) + insn(0)
                + insn(0x85, imm=BPF_FUNC_map_lookup_elem) + mov_r0(0) + EXIT)
    fds = {
        "tr_abi_zero": sc.prog_load(mov_r0(0) + EXIT, name="tr_abi_zero"),
        # main: call the subprogram, exit; subprogram: r0 = 1, exit
        "tr_abi_call": sc.prog_load(call_pseudo(1) + EXIT + mov_r0(1) + EXIT,
                                    name="tr_abi_call"),
        "tr_abi_map": sc.prog_load(map_prog, name="tr_abi_map"),
        "tr_abi_btf": btf_fd,
    }
    yield Held(fds, map_fd, _map_id(map_fd))
    for name, fd in fds.items():
        if name != "tr_abi_btf":
            os.close(fd)
    os.close(map_fd)
    libbpf.lib.bpf_object__close(obj)


@pytest.fixture(scope="module")
def perf_file(held, tmp_path_factory) -> PerfData:
    """perf record -a while every test program is loaded: perf's own reader stores their
    bpf_prog_info in HEADER_BPF_PROG_INFO."""
    out = tmp_path_factory.mktemp("perf") / "held.data"
    subprocess.run(["perf", "record", "-q", "-a", "-o", str(out), "--", "sleep", "0.2"],
                   check=True, capture_output=True)
    return PerfData.open(out)


def perf_entries(data: PerfData) -> dict[int, tuple]:
    out = {}
    for e in data.feature(Feature.BPF_PROG_INFO).programs:
        entry = (e.info_len, e.data_len, e.arrays, bytes(e.info), bytes(e.data))
        out[int.from_bytes(e.info[4:8], "little")] = entry  # bpf_prog_info.id
    return out


def xlated_from_bpftool(prog_id: int) -> bytes:
    """The xlated program rebuilt from bpftool's per-instruction opcodes (ld_imm64 is one
    entry with 12 imm bytes: its own imm, then the second slot's code, regs, off, imm)."""
    out = b""
    for e in bpftool("prog", "dump", "xlated", "id", str(prog_id), "opcodes"):
        o = e["opcodes"]
        regs = int(o["src_reg"], 16) << 4 | int(o["dst_reg"], 16)
        out += bytes([int(o["code"], 16), regs, *(int(b, 16) for b in o["off"]),
                      *(int(b, 16) for b in o["imm"])])
    return out


PROGS = ["tr_abi_zero", "tr_abi_call", "tr_abi_map", "tr_abi_btf"]


# --- layouts ----------------------------------------------------------------------------

def _c_expr(layout, name):
    """How the C headers spell a Layout's struct and field."""
    if layout is sc.ATTR_INFO:
        return "union bpf_attr", f"info.{name}"
    if layout.cname.startswith("bpf_attr"):
        return "union bpf_attr", name
    if layout is btfmod.BTF_TYPE and name == "size_or_type":
        return "struct btf_type", "size"
    return layout.cname, name


def test_layouts_match_the_c_headers(tmp_path):
    layouts = [sc.ATTR_GET_ID, sc.ATTR_INFO, sc.ATTR_PROG_LOAD, sc.ATTR_MAP_CREATE,
               sc.ATTR_MAP_ELEM, PROG_INFO, btfmod.BTF_INFO, btfmod.BTF_HEADER,
               btfmod.BTF_TYPE]
    lines, expected = [], []
    for layout in layouts:
        for name in layout.names:
            if layout is PROG_INFO and name == "gpl_compatible":
                continue  # a bitfield: offsetof cannot name it
            cstruct, member = _c_expr(layout, name)
            lines.append(f'printf("%zu\\n", offsetof({cstruct}, {member}));')
            expected.append((layout.cname, name, layout.offset[name]))
        if not layout.cname.startswith("bpf_attr"):
            lines.append(f'printf("%zu\\n", sizeof({layout.cname}));')
            expected.append((layout.cname, "sizeof", layout.size))
    lines.append('printf("%zu\\n", sizeof(union bpf_attr));')
    expected.append(("union bpf_attr", "sizeof", sc.ATTR_SIZE))
    c = tmp_path / "offsets.c"
    c.write_text("#include <stdio.h>\n#include <stddef.h>\n#include <linux/bpf.h>\n"
                 "#include <linux/btf.h>\nint main(void) {\n" + "\n".join(lines)
                 + "\nreturn 0;\n}\n")
    subprocess.run(["clang", "-o", str(tmp_path / "offsets"), str(c)], check=True)
    got = subprocess.run([str(tmp_path / "offsets")], capture_output=True, text=True,
                         check=True).stdout.split()
    mismatches = [(s, n, ours, int(theirs)) for (s, n, ours), theirs in zip(expected, got)
                  if ours != int(theirs)]
    assert len(got) == len(expected) and not mismatches
    # the bitfield sits in the u32 right after ifindex
    assert PROG_INFO.offset["gpl_compatible"] == PROG_INFO.offset["ifindex"] + 4


# --- bpf_prog_info against bpftool, kallsyms and perf -------------------------------------

@pytest.mark.parametrize("name", PROGS)
def test_prog_info_matches_bpftool_show(held, name):
    p = held.info(name)
    show = bpftool("prog", "show", "id", str(p.id))
    assert (show["id"], show["name"], show["tag"]) == (p.id, p.name, p.tag.hex())
    assert show["type"] == prog_type_name(p.type) == "socket_filter"
    assert show["gpl_compatible"] is p.gpl_compatible is True
    assert show["uid"] == p.created_by_uid == 0
    assert show["bytes_xlated"] == p.xlated_prog_len == len(p.xlated_insns)
    assert show["bytes_jited"] == p.jited_prog_len == len(p.jited_insns) \
        == sum(p.jited_func_lens)
    assert show.get("map_ids", []) == list(p.map_ids)
    assert show.get("btf_id", 0) == p.btf_id
    # bpftool turns load_time (ns of CLOCK_BOOTTIME) into wall-clock seconds
    boot_wall = time.clock_gettime(time.CLOCK_REALTIME) - \
        time.clock_gettime(time.CLOCK_BOOTTIME)
    assert abs(show["loaded_at"] - (boot_wall + p.load_time / 1e9)) < 2


def test_map_ids_name_the_map_the_program_uses(held):
    assert held.info("tr_abi_map").map_ids == (held.map_id,)
    assert len(held.info("tr_abi_btf").map_ids) == 1


@pytest.mark.parametrize("name", PROGS)
def test_xlated_instructions_match_bpftool(held, name):
    p = held.info(name)
    assert p.xlated_insns == xlated_from_bpftool(p.id)


@pytest.mark.parametrize("name,funcs", [("tr_abi_zero", 1), ("tr_abi_call", 2),
                                        ("tr_abi_map", 1), ("tr_abi_btf", 2)])
def test_functions_match_kallsyms(held, name, funcs):
    """The main function's symbol carries the program's tag and name; each subprogram
    its own tag (prog_tags) and its BTF name, or "F" without BTF."""
    p = held.info(name)
    assert len(p.funcs()) == len(p.jited_ksyms) == len(p.prog_tags) == funcs
    syms = kallsyms_bpf()
    sub_name = "tr_bump" if name == "tr_abi_btf" else "F"
    for k, (addr, length, code) in enumerate(p.funcs()):
        tag, fname = (p.tag, p.name) if k == 0 else (p.prog_tags[k], sub_name)
        assert syms[f"bpf_prog_{tag.hex()}_{fname}"] == addr
        assert length == len(code) > 0


def test_jited_image_starts_each_function_with_the_x86_prologue(held):
    """Without /proc/kcore or libbfd the bytes themselves are checked against perf (below);
    here, that every cut lands on a function entry: x86-64 BPF functions open with a
    5-byte nop (patchable for trampolines), then push rbp."""
    for name in PROGS:
        for _addr, _n, code in held.info(name).funcs():
            assert code.startswith(bytes.fromhex("0f1f440000")), (name, code[:8].hex())
            assert bytes.fromhex("554889e5") in code[:16]


@pytest.mark.parametrize("name", PROGS)
def test_perf_reads_the_same_info(held, perf_file, name):
    """perf's own reader (perf record's HEADER_BPF_PROG_INFO) and ours agree on every
    array perf asks for, the JIT image included."""
    ours = held.info(name, PERF_ARRAYS)
    entry = perf_entries(perf_file)[ours.id]
    theirs = ProgInfo.from_bpil(*entry)
    assert entry[2] == PERF_ARRAYS
    assert theirs.jited_insns == ours.jited_insns
    assert theirs.funcs() == ours.funcs()
    for f in ("jited_ksyms", "jited_func_lens", "func_info", "line_info", "jited_line_info",
              "prog_tags", "info_len", "arrays"):
        assert getattr(theirs, f) == getattr(ours, f), f
    varying = {"run_time_ns", "run_cnt", "recursion_misses"}
    assert {k: v for k, v in theirs.info.items() if k not in varying} == \
        {k: v for k, v in ours.info.items() if k not in varying}
    # and ours in perf's layout has perf's lengths and offsets
    mine = ours.to_bpil()
    assert mine[:3] == entry[:3]
    assert ProgInfo.from_bpil(*mine) == ours


def test_perf_bytes_round_trip_exactly(perf_file):
    entries = perf_entries(perf_file)
    assert entries
    for entry in entries.values():
        assert ProgInfo.from_bpil(*entry).to_bpil() == entry


@pytest.mark.parametrize("name", PROGS)
def test_our_bytes_round_trip(held, name):
    p = held.info(name)
    assert ProgInfo.from_bpil(*p.to_bpil()) == p
    assert ProgInfo.from_bpil(*p.to_bpil()).to_bpil() == p.to_bpil()


def test_a_changed_info_is_not_written_from_stale_bytes(held, perf_file):
    entry = perf_entries(perf_file)[held.id("tr_abi_call")]
    p = ProgInfo.from_bpil(*entry)
    changed = dataclasses.replace(p, jited_insns=bytes(len(p.jited_insns)))
    assert changed.to_bpil() != entry
    assert ProgInfo.from_bpil(*changed.to_bpil()) == changed


def test_bpil_with_arrays_overrunning_data_is_a_format_error(held):
    info_len, data_len, arrays, info, data = held.info("tr_abi_call").to_bpil()
    with pytest.raises(FormatError) as e:
        ProgInfo.from_bpil(info_len, data_len - 8, arrays, info, data[:-8], file="x.data",
                           offset=0x40)
    assert e.value.field == "bpf_prog_info.prog_tags" and e.value.offset == 0x40
    with pytest.raises(FormatError):
        ProgInfo.from_bpil(info_len, data_len, arrays | 1 << 12, info, data)


def test_read_prog_by_id_of_an_unloaded_program_is_no_such_object():
    fd = sc.prog_load(mov_r0(0) + EXIT, name="tr_abi_gone")
    prog_id = read_prog_info(fd, 0).id
    os.close(fd)
    deadline = time.monotonic() + 5  # the kernel frees the program after an RCU grace
    while time.monotonic() < deadline:
        try:
            read_prog_by_id(prog_id)
        except sc.NoSuchObject as e:
            assert isinstance(e, KernelError) and e.errno == 2
            return
        time.sleep(0.05)
    pytest.fail(f"program {prog_id} still readable 5 s after its last fd closed")


# --- BTF, func_info and line_info -----------------------------------------------------------

def test_line_info_matches_bpftool_linum(held):
    p = held.info("tr_abi_btf")
    btf = Btf.from_kernel(p.btf_id)
    entries = bpftool("prog", "dump", "xlated", "id", str(p.id), "linum")
    insns = decode(p.xlated_insns)
    assert len(entries) == len(insns)
    theirs = {i.index: e for i, e in zip(insns, entries) if "file" in e}
    ours = {li.insn_off: li for li in p.line_info}
    assert sorted(theirs) == sorted(ours) and len(ours) == len(p.line_info) > 5
    for off, li in ours.items():
        e = theirs[off]
        assert btf.string_at(li.file_name_off) == e["file"]
        assert btf.string_at(li.line_off).strip() == e["src"]
        assert (li.line, li.col) == (e.get("line_num", 0), e.get("line_col", 0))


def test_func_info_names_the_functions_and_their_first_instructions(held):
    p = held.info("tr_abi_btf")
    btf = Btf.from_kernel(p.btf_id)
    assert [(btf.kind(t), btf.type_name(t)) for _, t in p.func_info] == \
        [("FUNC", "tr_abi_btf"), ("FUNC", "tr_bump")]
    calls = {i.call_target() for i in decode(p.xlated_insns) if i.call_target() is not None}
    assert calls == {p.func_info[1][0]}


def test_jited_line_info_lies_in_the_function_of_its_line(held):
    p = held.info("tr_abi_btf")
    assert len(p.jited_line_info) == len(p.line_info)
    starts = [off for off, _ in p.func_info]
    for li, addr in zip(p.line_info, p.jited_line_info):
        func = max(k for k, s in enumerate(starts) if s <= li.insn_off)
        start, n, _ = p.funcs()[func]
        assert start <= addr < start + n


def test_btf_info_matches_bpftool(held):
    p = held.info("tr_abi_btf")
    shown = {b["id"]: b for b in bpftool("btf", "show")}
    for btf_id in (1, p.btf_id):
        info = read_btf_info(btf_id)
        b = shown[btf_id]
        assert (info.id, info.size, info.kernel_btf, info.name) == \
            (b["id"], b["size"], b["kernel"], b.get("name", ""))
        assert len(read_btf(btf_id)) == info.size
    assert read_btf_info(1).name == "vmlinux"
    assert btf_id in set(sc.next_ids(sc.Cmd.BTF_GET_NEXT_ID))


@pytest.mark.parametrize("which", ["program", "vmlinux"])
def test_btf_types_match_bpftool_dump(held, which):
    btf_id = held.info("tr_abi_btf").btf_id if which == "program" else 1
    btf = Btf.from_kernel(btf_id)
    out = subprocess.run(["bpftool", "btf", "dump", "id", str(btf_id)], capture_output=True,
                         text=True, check=True).stdout
    rows = [l.split(" ", 2) for l in out.splitlines() if l.startswith("[")]
    assert btf.type_count == len(rows) > 0
    for type_id, kind, rest in rows:
        k = int(type_id[1:-1])
        name = rest.split("'")[1]
        assert (btf.kind(k), btf.type_name(k) or "(anon)") == (kind, name), k


def test_bad_btf_is_a_format_error_naming_the_field(held):
    raw = read_btf(held.info("tr_abi_btf").btf_id)
    cases = {
        "btf.header": raw[:10],
        "btf.magic": b"\xeb\x9f" + raw[2:],  # big-endian BTF
        "btf.str_len": raw[:-1],
        "btf.hdr_len": raw[:4] + (len(raw) + 1).to_bytes(4, "little") + raw[8:],
    }
    for fieldname, blob in cases.items():
        with pytest.raises(FormatError) as e:
            Btf.parse(blob, file="f.data", offset=100)
        assert e.value.field == fieldname and e.value.file == "f.data"
    btf = Btf.parse(raw)
    with pytest.raises(FormatError) as e:
        btf.string_at(btf.str_len)
    assert e.value.field == "btf.name_off"
    with pytest.raises(FormatError):
        btf.type_name(btf.type_count + 1)


# --- instructions -------------------------------------------------------------------------

@pytest.mark.parametrize("name", PROGS)
def test_decoded_instructions_match_bpftool_one_for_one(held, name):
    p = held.info(name)
    insns = decode(p.xlated_insns)
    entries = bpftool("prog", "dump", "xlated", "id", str(p.id), "opcodes")
    assert len(insns) == len(entries)
    for i, e in zip(insns, entries):
        o = e["opcodes"]
        imm = bytes(int(b, 16) for b in o["imm"])
        assert e["disasm"].startswith(f"({i.code:02x}) ")
        assert (i.code, i.dst, i.src) == (int(o["code"], 16), int(o["dst_reg"], 16),
                                          int(o["src_reg"], 16))
        assert i.off == int.from_bytes(bytes(int(b, 16) for b in o["off"]), "little",
                                       signed=True)
        assert i.imm == int.from_bytes(imm[:4], "little", signed=True)
        if i.imm64 is not None:  # the second slot's imm is the upper half
            assert i.imm64 == int.from_bytes(imm[:4] + imm[8:12], "little")
    assert b"".join(i.pack() for i in insns) == p.xlated_insns
    assert sum(i.slots for i in insns) * 8 == len(p.xlated_insns)


def test_ld_imm64_of_a_map_decodes_to_the_map_id(held):
    """The kernel's xlated dump replaces the map's address with its id (src_reg stays
    BPF_PSEUDO_MAP_FD), as bpftool's map[id:N] shows."""
    p = held.info("tr_abi_map")
    (ld,) = [i for i in decode(p.xlated_insns) if i.imm64 is not None]
    assert (ld.index, ld.dst, ld.src, ld.imm64) == (3, 1, sc.BPF_PSEUDO_MAP_FD, held.map_id)
    texts = [e["disasm"] for e in bpftool("prog", "dump", "xlated", "id", str(p.id))]
    assert f"r1 = map[id:{held.map_id}]" in texts[3]
    assert render(ld) == f"lddw r1, {held.map_id:#x}  ; map_fd"


@pytest.mark.parametrize("name", PROGS)
def test_capstone_renders_every_instruction(held, name):
    for i, text in disassemble(decode(held.info(name).xlated_insns)):
        assert text and not text.startswith(".insn"), (i, text)


def test_rendering_of_forms_capstone5_lacks_or_misprints():
    cases = {
        insn(0x16, dst=1, off=2, imm=5): "jeq32 r1, 0x5, +0x2",       # JMP32
        insn(0x06, imm=-5): "gotol -0x5",
        insn(0x15, dst=1, off=-3): "jeq r1, 0x0, -0x3",               # negative offset
        insn(0x05, off=-1): "jmp -0x1",
        insn(0xbf, dst=1, src=2, off=8): "movsx64 r1, (s8)r2",
        insn(0x3f, dst=1, src=2, off=1): "sdiv64 r1, r2",
        insn(0xd7, dst=1, imm=16): "bswap16 r1",
        insn(0x91, dst=1, src=2, off=-4): "ldxsb r1, [r2-0x4]",
        insn(0xdb, dst=1, src=2, imm=0x01): "atomic_fetch_add64 [r1], r2",
        insn(0xdb, dst=1, src=2, off=8, imm=0xe1): "xchg64 [r1+0x8], r2",
        insn(0xc3, dst=1, src=2, imm=0xf1): "cmpxchg32 [r1], r2",
        insn(0x7b, dst=10, src=1, off=-8): "stxdw [r10-0x8], r1",     # signed off
        insn(0x07, dst=6, imm=-2): "add64 r6, -0x2",                  # signed imm
        insn(0xdb, dst=1, src=2): "xadddw [r1], r2",                  # capstone's own
        insn(0x85, src=1, imm=3): "call 0x3  ; subprog at insn 1",
    }
    for raw, text in cases.items():
        (i,) = decode(raw)
        assert render(i) == text


def test_a_truncated_instruction_stream_is_a_format_error():
    with pytest.raises(FormatError):
        decode(b"\0" * 12)
    with pytest.raises(FormatError):
        decode(insn(0x18, dst=1, imm=1))  # ld_imm64 without its second slot


# --- errors -------------------------------------------------------------------------------

def test_verifier_rejection_is_a_kernel_error_with_the_reason():
    with pytest.raises(sc.BpfError) as e:
        sc.prog_load(EXIT, name="tr_abi_bad")  # r0 never written
    assert not isinstance(e.value, PermissionProblem)
    assert e.value.errno == 13 and "R0 !read_ok" in str(e.value)


PROBE = """
import sys
from textrace.bpf.prog_info import read_prog_by_id
from textrace.bpf.syscall import next_ids
from textrace.errors import PermissionProblem
try:
    {call}
except PermissionProblem as e:
    print("PermissionProblem", e, sep="\\t")
"""


@pytest.mark.parametrize("who", [
    ["--reuid=65534", "--regid=65534", "--clear-groups"],           # nobody
    ["--inh-caps=-all", "--bounding-set=-all"],                     # root without caps
])
@pytest.mark.parametrize("call", ["list(next_ids())", "read_prog_by_id({id})"])
def test_without_capabilities_the_error_is_one_permission_line(held, who, call):
    code = PROBE.format(call=call.format(id=held.id("tr_abi_zero")))
    r = subprocess.run(["setpriv", *who, sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr, r.stderr
    kind, message = r.stdout.rstrip("\n").split("\t")
    assert kind == "PermissionProblem" and "\n" not in message
    assert message.startswith("bpf(PROG_GET_")
    assert "Operation not permitted" in message and "CAP_SYS_ADMIN" in message
