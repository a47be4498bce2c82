"""The one loader: a recording (PerfData, with textrace's own section when it has one)
turned into what the views ask for — its code history, the programs it saw and their
captured images, the kernel symbols that fit it.

Views get their history here and never from each other; the history itself stays pure
(records in, versions out), so reading files and choosing kallsyms happens here, once.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

import numpy as np

from .errors import FormatError, TextraceError
from .history.code_history import CodeHistory, Image
from .history.kallsyms import KernelSymbols
from .perf.abi import RecordType
from .perf.bulk import code_events, located, map_events, of_types, offsets_of
from .perf.reader import PerfData
# the views' way to the symbols of the ELF files samples name (read and cached there)
from .sources.elf_files import elf_symbols  # noqa: F401
from .sources.kallsyms import KallsymsReader, read_proc_kallsyms

if TYPE_CHECKING:
    from .bpf.btf import Btf
    from .bpf.prog_info import ProgInfo
    from .recorded import ProgInfos

# textrace's own section (recorded: its codecs, BTF, prog infos), the history's builder and
# the pack layout are imported by the functions that read them: `report` needs none of
# them, and they were ~15 ms of its start-up

KERNEL_DSO = "[kernel.kallsyms]"
CODE_RECORDS = frozenset({RecordType.KSYMBOL, RecordType.BPF_EVENT, RecordType.TEXT_POKE})


def captured_programs(data: PerfData) -> ProgInfos:
    """Programs whose info and JIT images the file holds (HEADER_BPF_PROG_INFO, or the
    stream of a recording never finished), by id; each decoded when first asked for."""
    from .recorded import recorded
    return recorded(data).infos


def capture_outcomes(data: PerfData) -> dict[int, dict] | None:
    """textrace's record of how each program was captured or why not; None for files
    textrace did not record."""
    from .recorded import recorded
    return recorded(data).outcomes


def _types_present(data: PerfData, types: frozenset) -> np.ndarray | None:
    """Offsets of the records of `types`, in file order, when the records could be located
    in bulk; None otherwise."""
    return offsets_of(data, types)


def start_kallsyms():
    """/proc/kallsyms read and parsed by a child process from now on
    (sources/kallsyms.KallsymsReader): `result()` gives the KernelSymbols, `close()` reaps
    the child."""
    return KallsymsReader()


def kernel_symbols_for(data: PerfData, live=read_proc_kallsyms) -> KernelSymbols | None:
    """kallsyms for the recording: the live one when the recording's kernel map starts
    where the running kernel's _text is (same boot, same KASLR slide), as perf uses it;
    else the snapshot `textrace record` keeps in the file, if that one matches; else None.
    `live()` reads /proc/kallsyms (start_kallsyms() gives one that started already)."""
    pgoff = _kernel_map_pgoff(data)
    try:
        kernel = live()
    except OSError:
        kernel = None
    if kernel is not None and (pgoff is None or pgoff == kernel.address_of("_text")):
        return kernel
    kernel = _recorded_kallsyms(data)
    if kernel is not None and (pgoff is None or pgoff == kernel.address_of("_text")):
        return kernel
    return None


def _recorded_kallsyms(data: PerfData) -> KernelSymbols | None:
    """The /proc/kallsyms text `textrace record` saved at the start (zstd), parsed; None
    in a file without it (perf's own)."""
    from .recorded import recorded
    from .perf.private import FEATURE_BIT
    if data.features and data.feature_bytes(FEATURE_BIT) is None:
        return None  # finished by perf, not textrace: no need to look in the stream
    text = recorded(data).kallsyms
    return KernelSymbols.parse(text) if text is not None else None


def _kernel_map_pgoff(data: PerfData) -> int | None:
    """pgoff of the first [kernel.kallsyms] MMAP record (where perf says _text is), or
    None without one."""
    offsets = _types_present(data, frozenset({RecordType.MMAP}))
    if offsets is not None:
        for ev in map_events(data, offsets, ordered=False):
            if ev.filename.startswith(KERNEL_DSO):
                return ev.pgoff
        return None
    for rec in data.records(frozenset({RecordType.MMAP})):
        if rec.filename.startswith(KERNEL_DSO):
            return rec.pgoff
    return None


def program_images(data: PerfData, programs, infos: dict | None = None) -> list[Image]:
    """An image per captured function, stamped with the time its bytes were read (the
    capture's time; the load time for a capture taken at load).  `infos`: the
    captured_programs() already read, if any."""
    infos = captured_programs(data) if infos is None else infos
    outcomes = capture_outcomes(data) or {}
    images = []
    for prog in programs:
        info = infos.get(prog.id)
        if info is None:
            continue
        when = outcomes.get(prog.id, {}).get("time") or prog.loaded_ns or 0
        if prog.loaded_ns is not None and when < prog.loaded_ns:
            when = prog.loaded_ns
        for addr, _n, code in info.funcs():
            images.append(Image(addr, code, when, f"bpf:{prog.id}"))
    return images


def code_records(data: PerfData):
    """The KSYMBOL, BPF_EVENT and TEXT_POKE records in time order.  From a file whose
    records are located in bulk, the program records (10k for 5000 programs) are read as
    perf.bulk.CodeEvents without the record classes, and merged by time with the TEXT_POKE
    records; else every one is decoded (compressed, pipe-mode or salvaged data)."""
    found = located(data) if not data.salvage else None
    if found is None:
        return data.records_by_time(CODE_RECORDS)
    programs = code_events(data, offsets_of(data, frozenset({RecordType.KSYMBOL,
                                                             RecordType.BPF_EVENT})))
    if not of_types(found[1], frozenset({RecordType.TEXT_POKE})).any():
        return programs  # no text poked: the program records alone, nothing decoded
    pokes = [r for r in data.records_by_time(frozenset({RecordType.TEXT_POKE}))
             if r.type == RecordType.TEXT_POKE]
    return heapq.merge(programs, pokes, key=lambda r: r.time or 0)


def load_history(data: PerfData, *, infos: dict | None = None, live=None,
                 images: bool = True, at: int | None = None) -> tuple[CodeHistory, list]:
    """The recording's code history: its records, the captured programs' images, the
    kernel code the recorder read, and its inferred changes with their intervals.
    `infos`: captured_programs() if already read; `live`: a KallsymsReader started
    earlier (kernel_symbols_for()).

    A view asks only for the code it reads (a program's info is decoded when its image is
    made, and a recording can hold thousands): `images=False` gives the regions, symbols
    and pokes alone, with no captured code and no pack layout (annotate, callsites and
    pokes name addresses but read no bytes from the history); `at`, a kernel address,
    gives the images of the programs that held it only (show), with the kernel code, and
    the pack layout built when a read first needs it (a read no image covers)."""
    from .recorded import recorded
    from .history.build import build_history, kernel_code_images, unreported_windows
    rec = recorded(data)
    kernel = kernel_symbols_for(data, live) if live is not None else kernel_symbols_for(data)
    history, programs = build_history(code_records(data), kernel=kernel,
                                      inferred=unreported_windows(rec.unreported))
    if not images:
        return history, programs
    chosen = programs if at is None else _programs_at(history, programs, at)
    history.add_images(program_images(data, chosen, infos)
                       + kernel_code_images(rec.kernel_code))
    if at is None:
        history.packs = pack_layout(data, history)
    else:  # every program's images (as the history would hold them: by address), should
        # a freed range's check need old code
        history.packs_later = lambda: pack_layout(data, history, lambda: _by_program(
            sorted(program_images(data, programs, infos), key=lambda im: im.addr)))
    return history, programs


def _programs_at(history: CodeHistory, programs: list, addr: int) -> list:
    """The programs whose code may have been at `addr`: those a region of which held it,
    and those the records gave no functions (where their image lies only their info
    says), in load order."""
    held = {r.prog_id for r in history.versions(addr) if r.prog_id is not None}
    return [p for p in programs if p.id in held or not p.funcs]


def _by_program(images: list[Image]) -> dict[int, list[tuple[int, bytes]]]:
    """Captured programs' images by program id: (addr, code) of each function."""
    out: dict[int, list] = {}
    for im in images:
        if im.source.startswith("bpf:"):
            out.setdefault(int(im.source[4:]), []).append((im.addr, im.data))
    return out


def pack_layout(data: PerfData, history: CodeHistory, images=None):
    """The bpf_prog_pack layout of a recording textrace made (None for others: without
    the recorder's reads no pack extent is known).  `images`: the captured programs'
    functions by id, or a function giving them (history/packs.build_layout); by default
    the history's images."""
    from .recorded import recorded
    from .perf.private import Kind
    from .history.packs import build_layout
    entries = [e for lines in recorded(data).decoded(Kind.PACKS) for e in lines]
    if not entries:
        return None
    if images is None:
        images = _by_program(history.images)
    try:
        return build_layout(history.table.regions, entries, images)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise FormatError(f"textrace's bpf_prog_pack entries are malformed ({type(e).__name__}: "
                          f"{e})", file=data.path, field="textrace.packs") from None


def find_program(data: PerfData, spec: str, live=None) -> tuple[ProgInfo, object]:
    """PROG as an id, a name or a tag; the most recently loaded match wins.  `live`: a
    KallsymsReader started earlier."""
    infos = captured_programs(data)
    history, programs = load_history(data, live=live, images=False)
    matches = [p for p in programs if str(p.id) == spec or p.name == spec
               or p.tag.hex() == spec.lower()]
    if not matches:
        raise TextraceError(f"no program {spec!r} in the recording", file=data.path,
                            field="PROG")
    prog = matches[-1]
    if prog.id not in infos:
        raise TextraceError(f"program {prog.id} ({prog.name or prog.tag.hex()}) was seen but "
                            f"its image was not captured", file=data.path, field="PROG")
    return infos[prog.id], (history, prog)


def btf_of(data: PerfData, info: ProgInfo) -> Btf | None:
    """The BTF a captured program's line_info and func_info refer to, from the recording;
    None when it has none."""
    from .recorded import recorded
    from .bpf.btf import Btf
    raw = recorded(data).btfs.get(info.btf_id) if info.btf_id else None
    return Btf.parse(raw, file=data.path) if raw is not None else None
