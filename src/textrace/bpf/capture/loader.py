"""Load and attach the capture program with the system libbpf, and reassemble what it sends.

libbpf (libbpf.so.1, Debian's libbpf1) opens the CO-RE object, relocates it against the
running kernel's BTF, loads and attaches it; textrace reads its ring buffer through
libbpf's ring_buffer API from the recorder's own loop (the ring's epoll fd joins the
recorder's), and its counters from its .bss map.  The same object reads kernel code when
asked (`read_code`) and reports prog-array updates (`prog_array_updates`).

Which variant loads is decided by probing the kernel for bpf_loop (5.17): the bpf_loop one
where it is, the bounded-loop one where not (5.10); `variant_note` says which and why.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from dataclasses import dataclass, field

from ...errors import KernelError, TextraceError
from ..prog_info import (ALL_ARRAYS, INFO_SIZE, PROG_INFO, ProgInfo, from_blobs,
                         read_prog_by_id, read_prog_info)
from ..syscall import prog_load
from .build import VARIANTS, build

CHUNK = 2048
_CHUNK_HEADER = struct.Struct("<IIIIQQ8sII")  # kind prog_id index seq addr time tag total len
_META = struct.Struct("<8sIIIIII16sQ")
META, JIT, XLATED, LINFO, JLINFO, BTF, CODE, PROG_ARRAY = range(1, 9)
MAX_CODE = 1 << 20  # the capture program's bound on one code read
_CODE_REQUEST = struct.Struct("<QII")  # addr len seq

_SAMPLE_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


def _libbpf() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as e:  # the system's libbpf is a run-time requirement, not a wheel's
        raise KernelError(f"the system libbpf is missing ({e}); install it (Debian: "
                          f"apt-get install libbpf1)", field="capture") from None
    vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    for fn, res, args in (
            ("bpf_object__open_file", vp, (cp, vp)), ("bpf_object__load", ci, (vp,)),
            ("bpf_object__close", None, (vp,)),
            ("bpf_object__find_program_by_name", vp, (vp, cp)),
            ("bpf_object__find_map_by_name", vp, (vp, cp)),
            ("bpf_object__next_map", vp, (vp, vp)), ("bpf_map__name", cp, (vp,)),
            ("bpf_map__fd", ci, (vp,)), ("bpf_map__value_size", ctypes.c_uint32, (vp,)),
            ("bpf_map_lookup_elem", ci, (ci, vp, vp)),
            ("bpf_map_update_elem", ci, (ci, vp, vp, ctypes.c_uint64)),
            ("bpf_map__initial_value", vp, (vp, ctypes.POINTER(ctypes.c_size_t))),
            ("bpf_program__attach", vp, (vp,)), ("bpf_link__destroy", ci, (vp,)),
            ("ring_buffer__new", vp, (ci, _SAMPLE_CB, vp, vp)),
            ("ring_buffer__consume", ci, (vp,)), ("ring_buffer__epoll_fd", ci, (vp,)),
            ("ring_buffer__free", None, (vp,)), ("libbpf_set_print", vp, (vp,)),
            ("libbpf_probe_bpf_helper", ci, (ci, ci, vp))):
        f = getattr(lib, fn)
        f.restype, f.argtypes = res, args
    if not os.environ.get("TEXTRACE_LIBBPF_DEBUG"):
        lib.libbpf_set_print(None)  # libbpf's messages would go to stderr; errors are ours
    return lib


BPF_PROG_TYPE_TRACEPOINT = 5
BPF_FUNC_LOOP = 181  # bpf_loop, since 5.17


def choose_variant(lib: ctypes.CDLL) -> tuple[str, str]:
    """(variant, why): bpf_loop's where the kernel has the helper, else the bounded-loop
    one.  TEXTRACE_CAPTURE_VARIANT=bpf_loop|bounded overrides the probe."""
    forced = os.environ.get("TEXTRACE_CAPTURE_VARIANT")
    if forced:
        if forced not in VARIANTS:
            raise TextraceError(f"TEXTRACE_CAPTURE_VARIANT={forced}: not one of "
                                f"{', '.join(VARIANTS)}", field="capture")
        return forced, f"the {forced} variant, as TEXTRACE_CAPTURE_VARIANT asks"
    found = lib.libbpf_probe_bpf_helper(BPF_PROG_TYPE_TRACEPOINT, BPF_FUNC_LOOP, None)
    if found == 1:
        return "bpf_loop", "bpf_loop present, using the bpf_loop variant"
    if found == 0:
        return "bounded", "bpf_loop absent, using the bounded-loop variant"
    return "bounded", (f"probing for bpf_loop failed ({os.strerror(-found)}), "
                       "using the bounded-loop variant")


TRACEFS = "/sys/kernel/tracing"
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"  # the running kernel's BTF, which CO-RE relocates to


def ensure_tracefs() -> None:
    """libbpf attaches tracepoints through tracefs, which a fresh machine may not have
    mounted yet: mount it where the kernel provides its mount point, as perf does."""
    if os.path.isdir(os.path.join(TRACEFS, "events")):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", TRACEFS.encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise KernelError(f"tracefs is not mounted and mounting it failed: "
                          f"{os.strerror(err)}", file=TRACEFS, field="capture")


STALE_AFTER_PENDING = 256   # incomplete captures kept before old ones are dropped
STALE_NS = 10_000_000_000   # incomplete for 10 s: a chunk of it was refused (counted in lost)


@dataclass
class _Blob:
    total: int
    chunks: dict[int, bytes] = field(default_factory=dict)
    addr: int = 0
    tag: bytes = b""
    time: int = 0

    def done(self) -> bool:
        """Whether the chunks received add up to the blob's announced total."""
        return sum(len(c) for c in self.chunks.values()) >= self.total

    def data(self) -> bytes:
        """The chunks joined in sequence order."""
        return b"".join(self.chunks[k] for k in sorted(self.chunks))


@dataclass
class KernelCapture:
    """One program as the capture program saw it at load (time: CLOCK_MONOTONIC ns)."""

    prog_id: int
    time: int
    meta: tuple
    blobs: dict[tuple[int, int], _Blob] = field(default_factory=dict)
    swap_calls: bool = False  # this kernel keeps pseudo calls' off/imm swapped (7.2)

    def complete(self) -> bool:
        """Whether every blob the META record promised has arrived: each function's JIT
        image, the xlated instructions, line info if any, BTF if the program has some."""
        tag, ptype, func_cnt, jited_len, insn_cnt, nr_linfo, btf_id, name, func = self.meta
        need = [(JIT, i) for i in range(max(func_cnt, 1))] + [(XLATED, 0)]
        if nr_linfo:
            need += [(LINFO, 0), (JLINFO, 0)]
        if btf_id:
            need.append((BTF, 0))
        return all(k in self.blobs and self.blobs[k].done() for k in need)

    def prog_info(self) -> ProgInfo:
        """The capture as a ProgInfo, so it travels in HEADER_BPF_PROG_INFO like any."""
        tag, ptype, func_cnt, jited_len, insn_cnt, nr_linfo, btf_id, name, func = self.meta
        funcs = [self.blobs[(JIT, i)] for i in range(max(func_cnt, 1))
                 if (JIT, i) in self.blobs]
        jited = b"".join(b.data() for b in funcs)
        xlated = self.blobs[(XLATED, 0)].data() if (XLATED, 0) in self.blobs else b""
        if self.swap_calls:  # as the kernel's own dump shows them
            xlated = _swap_pseudo_calls(xlated)
        linfo = self.blobs[(LINFO, 0)].data() if (LINFO, 0) in self.blobs else b""
        jlinfo = self.blobs[(JLINFO, 0)].data() if (JLINFO, 0) in self.blobs else b""
        fields = {n: 0 for n in PROG_INFO.names}
        fields.update(type=ptype, id=self.prog_id, tag=tag, jited_prog_len=len(jited),
                      xlated_prog_len=len(xlated), name=name,
                      nr_jited_ksyms=len(funcs), nr_jited_func_lens=len(funcs),
                      btf_id=btf_id, nr_line_info=len(linfo) // 16, line_info_rec_size=16,
                      nr_jited_line_info=len(jlinfo) // 8, jited_line_info_rec_size=8,
                      func_info_rec_size=8, nr_prog_tags=len(funcs))
        blobs = {"jited_prog_insns": jited, "xlated_prog_insns": xlated,
                 "jited_ksyms": struct.pack(f"<{len(funcs)}Q", *(b.addr for b in funcs)),
                 "jited_func_lens": struct.pack(f"<{len(funcs)}I", *(b.total for b in funcs)),
                 "line_info": linfo, "jited_line_info": jlinfo,
                 # perf lists a program only when it has one tag per function
                 "prog_tags": b"".join(b.tag for b in funcs)}
        return from_blobs(fields, INFO_SIZE, ALL_ARRAYS, blobs, b"")

    @property
    def btf(self) -> bytes | None:
        """The program's raw BTF as captured, or None when it has none."""
        return self.blobs[(BTF, 0)].data() if (BTF, 0) in self.blobs else None


def _swap_pseudo_calls(xlated: bytes) -> bytes:
    """xlated with off and imm of every bpf-to-bpf call (BPF_JMP|BPF_CALL, src_reg
    BPF_PSEUDO_CALL) exchanged: see CaptureProgram._probe_pseudo_calls."""
    out = bytearray(xlated)
    for pos in range(0, len(out) - 7, 8):
        if out[pos] == 0x85 and out[pos + 1] >> 4 == 1:
            off, imm = struct.unpack_from("<hi", out, pos + 2)
            struct.pack_into("<Hi", out, pos + 2, imm & 0xFFFF, off)
    return bytes(out)


class CaptureProgram:
    """The loaded and attached capture program.  `poll()` hands back the programs whose
    every chunk has arrived; `lost` counts chunks the kernel could not queue."""

    def __init__(self, obj_path: str | None = None, variant: str | None = None):
        if not os.path.exists(VMLINUX_BTF):
            raise KernelError("the kernel has no BTF, which the CO-RE capture program needs "
                              "(a kernel built with CONFIG_DEBUG_INFO_BTF=y)", file=VMLINUX_BTF,
                              field="capture")
        self.lib = _libbpf()
        ensure_tracefs()
        if obj_path:
            self.variant, self.variant_note = variant or "given", f"the object {obj_path}"
        elif variant:
            self.variant, self.variant_note = variant, f"the {variant} variant"
        else:
            self.variant, self.variant_note = choose_variant(self.lib)
        path = obj_path or build(source=VARIANTS[self.variant])
        self.obj = self.lib.bpf_object__open_file(path.encode(), None)
        if not self.obj:
            raise KernelError(f"libbpf cannot open {path}: {os.strerror(ctypes.get_errno())}",
                              file=path, field="capture")
        self.links = []
        self.rb = None
        self.pending: dict[int, KernelCapture] = {}
        self.code: dict[int, _Blob] = {}         # request seq -> the bytes arriving
        self.prog_array_updates: list[tuple[int, int]] = []  # (time, map id), until taken
        self._seq = 0
        self._cb = _SAMPLE_CB(self._on_chunk)  # kept referenced while libbpf may call it
        try:
            self._set_rodata("self_tgid", os.getpid(), path)
            err = self.lib.bpf_object__load(self.obj)
            if err:
                root = " (it needs root: CAP_BPF and CAP_PERFMON)" if -err == errno.EPERM else ""
                raise KernelError(f"loading the capture program failed: "
                                  f"{os.strerror(-err)}{root}", file=path, field="capture")
            self.lib.bpf_program__fd.restype = ctypes.c_int
            self.lib.bpf_program__fd.argtypes = (ctypes.c_void_p,)
            self.own_prog_ids: set[int] = set()
            for name in (b"on_enter", b"on_exit"):
                prog = self.lib.bpf_object__find_program_by_name(self.obj, name)
                self.own_prog_ids.add(read_prog_info(self.lib.bpf_program__fd(prog), 0).id)
                link = self.lib.bpf_program__attach(prog)
                if not link:
                    raise KernelError(f"attaching {name.decode()} failed: "
                                      f"{os.strerror(ctypes.get_errno())}", field="capture")
                self.links.append(link)
            ring = self.lib.bpf_object__find_map_by_name(self.obj, b"chunks")
            self.rb = self.lib.ring_buffer__new(self.lib.bpf_map__fd(ring), self._cb, None,
                                                None)
            if not self.rb:
                raise KernelError("libbpf cannot open the capture ring", field="capture")
            self._bss = self._map_ending(".bss")
            self._request_fd = self.lib.bpf_map__fd(
                self.lib.bpf_object__find_map_by_name(self.obj, b"code_request"))
            self._calibrate()
            self.pseudo_calls_swapped = self._probe_pseudo_calls()
            if self.pseudo_calls_swapped:
                self.variant_note += ("; this kernel keeps bpf-to-bpf calls' off and imm "
                                      "swapped, restored as its dump shows them")
        except BaseException:
            self.close()
            raise

    # --- globals ------------------------------------------------------------------------
    def _symbol_offsets(self, path: str) -> dict[str, int]:
        from elftools.elf.elffile import ELFFile
        with open(path, "rb") as f:
            elf = ELFFile(f)
            symtab = elf.get_section_by_name(".symtab")
            return {s.name: s["st_value"] for s in symtab.iter_symbols()
                    if s["st_info"]["type"] == "STT_OBJECT"}

    def _map_ending(self, suffix: str):
        m = self.lib.bpf_object__next_map(self.obj, None)
        while m:
            if self.lib.bpf_map__name(m).decode().endswith(suffix):
                return m
            m = self.lib.bpf_object__next_map(self.obj, m)
        raise TextraceError(f"capture object has no {suffix} map", field="capture")

    def _set_rodata(self, name: str, value: int, path: str) -> None:
        self.offsets = self._symbol_offsets(path)
        size = ctypes.c_size_t()
        ptr = self.lib.bpf_map__initial_value(self._map_ending(".rodata"), ctypes.byref(size))
        ctypes.memmove(ptr + self.offsets[name], struct.pack("<I", value), 4)

    def counter(self, name: str) -> int:
        """A u64 global of the program's .bss, read from the kernel's copy (libbpf 1.1
        keeps its own pre-load buffer behind bpf_map__initial_value)."""
        size = self.lib.bpf_map__value_size(self._bss)
        value = ctypes.create_string_buffer(size)
        key = ctypes.c_uint32(0)
        if self.lib.bpf_map_lookup_elem(self.lib.bpf_map__fd(self._bss), ctypes.byref(key),
                                        value):
            raise KernelError("cannot read the capture program's counters", field="capture")
        return struct.unpack_from("<Q", value.raw, self.offsets[name])[0]

    @property
    def lost(self) -> int:
        """Chunks the capture program could not put in its full ring, since it loaded."""
        return self.counter("lost")

    def _calibrate(self) -> None:
        """Load one program ourselves: the capture program learns from it which f_op marks
        a BPF program's file (bpf_prog_fops is not in kallsyms without KALLSYMS_ALL)."""
        os.close(prog_load(bytes.fromhex("b700000000000000" "9500000000000000"),
                           name="textrace_calib"))
        if not self.counter("prog_fops"):
            raise KernelError("the capture program saw no calibration load", field="capture")

    # main: call +2, call +3, exit; two subprograms: r0 = 1; exit and r0 = 2; exit.  A call's
    # relative offset (2, 3) differs from its subprogram's index (1, 2).
    _PROBE_PROG = bytes.fromhex("8510000002000000" "8510000003000000" "9500000000000000"
                                "b700000001000000" "9500000000000000"
                                "b700000002000000" "9500000000000000")

    def _probe_pseudo_calls(self) -> bool:
        """Whether this kernel keeps a JIT'd program's bpf-to-bpf calls with off and imm
        the other way round from its own xlated dump.  Up to 6.18 the kernel's insnsi
        holds them as the dump shows them (off: the relative offset, imm: the
        subprogram's index); Debian's 7.2 holds off = index, imm = offset, and its
        BPF_OBJ_GET_INFO_BY_FD swaps them back.  Learned from one program a child
        process loads (the recorder's own loads are not captured) and holds while its
        capture is compared with the kernel's dump."""
        rd, wr = os.pipe()
        go_rd, go_wr = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: load, say the id, wait, exit
            try:
                os.close(rd)
                os.close(go_wr)
                fd = prog_load(self._PROBE_PROG, name="textrace_probe")
                os.write(wr, str(read_prog_info(fd, 0).id).encode())
                os.read(go_rd, 1)
            finally:
                os._exit(0)
        os.close(wr)
        os.close(go_rd)
        try:
            prog_id = int(os.read(rd, 32) or b"0")
            if not prog_id:
                raise KernelError("the pseudo-call probe program did not load",
                                  field="capture")
            cap = None
            for _ in range(1000):
                self.lib.ring_buffer__consume(self.rb)
                cap = self.pending.get(prog_id)
                if cap is not None and cap.complete():
                    break
            if cap is None or not cap.complete():
                raise KernelError("the capture program did not capture its probe program",
                                  field="capture")
            del self.pending[prog_id]
            dumped = read_prog_by_id(prog_id).xlated_insns
        finally:
            os.close(go_wr)
            os.close(rd)
            os.waitpid(pid, 0)
        raw = cap.blobs[(XLATED, 0)].data()
        if raw == dumped:
            return False
        if _swap_pseudo_calls(raw) == dumped:
            return True
        raise KernelError(f"the captured instructions of a probe program differ from the "
                          f"kernel's dump: {raw.hex()} against {dumped.hex()}",
                          field="capture")

    # --- the ring -----------------------------------------------------------------------
    @property
    def epoll_fd(self) -> int:
        """An fd that polls readable when the capture ring has data (libbpf's epoll fd)."""
        return self.lib.ring_buffer__epoll_fd(self.rb)

    def _on_chunk(self, _ctx, data, size) -> int:
        raw = ctypes.string_at(data, size)
        kind, prog_id, index, seq, addr, time, tag, total, n = _CHUNK_HEADER.unpack_from(raw, 0)
        body = raw[_CHUNK_HEADER.size:_CHUNK_HEADER.size + n]
        if kind == META:
            self.pending[prog_id] = KernelCapture(prog_id, time, _META.unpack_from(body, 0))
            return 0
        if kind == CODE:
            blob = self.code.setdefault(prog_id, _Blob(total, addr=addr, tag=tag))
            blob.chunks[seq] = body
            blob.time = time
            return 0
        if kind == PROG_ARRAY:
            self.prog_array_updates.append((time, prog_id))
            return 0
        cap = self.pending.get(prog_id)
        if cap is None:
            return 0  # its META was lost: counted in `lost`
        blob = cap.blobs.setdefault((kind, index), _Blob(total, addr=addr, tag=tag))
        blob.chunks[seq] = body
        return 0

    def poll(self) -> list[KernelCapture]:
        """Drain the ring and return the captures now complete; incomplete ones older than
        STALE_NS are dropped once more than STALE_AFTER_PENDING wait (a chunk was lost)."""
        self.lib.ring_buffer__consume(self.rb)
        ready = [c for c in self.pending.values() if c.complete()]
        for c in ready:
            del self.pending[c.prog_id]
            c.swap_calls = self.pseudo_calls_swapped
        if len(self.pending) > STALE_AFTER_PENDING:  # chunks the ring refused never come
            newest = max(c.time for c in self.pending.values())
            for c in [c for c in self.pending.values() if c.time < newest - STALE_NS]:
                del self.pending[c.prog_id]
        return ready

    # --- kernel code on demand ----------------------------------------------------------
    def read_code(self, addr: int, n: int) -> tuple[int, bytes]:
        """The n bytes of kernel memory at addr, read by the capture program inside our
        own map update (so they are in its ring when the update returns), and the time of
        the read (CLOCK_MONOTONIC ns).  Raises KernelError if the kernel would not read
        them (unmapped, or longer than MAX_CODE)."""
        if not 0 < n <= MAX_CODE:
            raise KernelError(f"a kernel code read is 1..{MAX_CODE} bytes, not {n}",
                              field="capture.code")
        self._seq += 1
        seq = self._seq
        failed = self.counter("code_failed")
        key = ctypes.c_uint32(0)
        req = ctypes.create_string_buffer(_CODE_REQUEST.pack(addr, n, seq), _CODE_REQUEST.size)
        if self.lib.bpf_map_update_elem(self._request_fd, ctypes.byref(key), req, 0):
            raise KernelError(f"code request failed: {os.strerror(ctypes.get_errno())}",
                              field="capture.code")
        self.lib.ring_buffer__consume(self.rb)
        blob = self.code.pop(seq, None)
        # reads are one at a time: chunks of another seq belong to a read that gave up
        # (its chunks were refused, then came late), and would otherwise stay forever
        self.code.clear()
        if blob is None or not blob.done() or any(not c for c in blob.chunks.values()):
            why = ("unreadable" if self.counter("code_failed") > failed
                   else "its chunks did not arrive (ring full)")
            raise KernelError(f"kernel code at {addr:#x}+{n} was not read: {why}",
                              field="capture.code")
        return blob.time, blob.data()[:n]

    def take_prog_array_updates(self) -> list[tuple[int, int]]:
        """(time, map id) of every prog-array update or delete since the last call."""
        self.lib.ring_buffer__consume(self.rb)
        out, self.prog_array_updates = self.prog_array_updates, []
        return out

    def close(self) -> None:
        """Free the ring, detach the probes and unload the capture program; idempotent."""
        if self.rb:
            self.lib.ring_buffer__free(self.rb)
            self.rb = None
        for link in self.links:
            self.lib.bpf_link__destroy(link)
        self.links = []
        if self.obj:
            self.lib.bpf_object__close(self.obj)
            self.obj = None
