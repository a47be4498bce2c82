"""What was there before the recording started, as the records the kernel would have made:
the kernel map, and each already-loaded program's KSYMBOLs and BPF_EVENT(PROG_LOAD).  The
recorder (recorder.py) decides when; these build the records."""

from __future__ import annotations

from ..bpf.btf import Btf
from ..bpf.prog_info import ProgInfo
from ..errors import TextraceError
from ..perf import rawrecord
from ..perf.abi import BpfEventType, KsymbolType, MISC_KERNEL, RecordType
from ..perf.rawrecord import record_type
from ..perf.records import BpfEventRecord, KsymbolRecord, MmapRecord
from ..perf.sampleid import SampleId


def kernel_ksym_names(info: ProgInfo, btf: bytes | None) -> list[str]:
    """The names the kernel gives a program's JIT'd functions in kallsyms and KSYMBOL records
    (bpf_get_prog_name, kernel/bpf/core.c): bpf_prog_<tag>_<name>.  The main function has the
    program's tag, each subprogram its own (prog_tags); the name is the BTF FUNC named by
    func_info when there is one, else the program's name for the main function and "F" for
    subprograms (checked against /proc/kallsyms on 6.18)."""
    funcs = info.funcs()
    tags = [info.tag] + [t for t in info.prog_tags[1:len(funcs)]]
    tags += [info.tag] * (len(funcs) - len(tags))
    btf_names: list[str] = []
    if btf and len(info.func_info) >= len(funcs):
        try:
            parsed = Btf.parse(btf)
            btf_names = [parsed.type_name(type_id) for _off, type_id in info.func_info]
        except TextraceError:
            btf_names = []
    out = []
    for i, tag in enumerate(tags):
        short = btf_names[i] if btf_names else (info.name if i == 0 else "F")
        out.append(f"bpf_prog_{tag.hex()}" + (f"_{short}" if short else ""))
    return out


def loaded_prog_id(raw: bytes) -> int:
    """The program id of a BPF_EVENT(PROG_LOAD) record as the ring holds it, else 0."""
    if record_type(raw) != RecordType.BPF_EVENT or len(raw) < rawrecord.BPF_EVENT_END:
        return 0
    event_type, _flags, prog_id, _tag = rawrecord.bpf_event(raw)
    return prog_id if event_type == BpfEventType.PROG_LOAD else 0


def kernel_map(kallsyms: str) -> tuple[int | None, int | None, dict[int, str]]:
    """From /proc/kallsyms' text: _text, _etext, and the BPF programs' symbols by address."""
    syms = {}
    text = etext = None
    for line in kallsyms.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            if parts[2] == "_text":
                text = int(parts[0], 16)
            elif parts[2] == "_etext":
                etext = int(parts[0], 16)
            elif parts[2].startswith("bpf_prog_"):
                syms[int(parts[0], 16)] = parts[2]
    return text, etext, syms


def kernel_mmap(text: int, etext: int, sid: SampleId) -> MmapRecord:
    """The kernel map perf synthesizes: [kernel.kallsyms]_text over _text.._etext."""
    return MmapRecord(misc=MISC_KERNEL, pid=-1, tid=0, addr=text, len=etext - text,
                      pgoff=text, filename="[kernel.kallsyms]_text", sample_id=sid)


def program_records(prog_id: int, info: ProgInfo, btf: bytes | None,
                    syms: dict[int, str], sid: SampleId) -> list:
    """A loaded program's KSYMBOLs (named as kallsyms has them, `syms`, else as the kernel
    names them) and its BPF_EVENT(PROG_LOAD), last."""
    names = kernel_ksym_names(info, btf)
    recs: list = [KsymbolRecord(addr=addr, len=n, ksym_type=KsymbolType.BPF, flags=0,
                                name=syms.get(addr, name), sample_id=sid)
                  for (addr, n, _code), name in zip(info.funcs(), names)]
    recs.append(BpfEventRecord(event_type=BpfEventType.PROG_LOAD, flags=0,
                               prog_id=prog_id, tag=info.tag, sample_id=sid))
    return recs
