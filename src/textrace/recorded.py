"""What textrace saved in a recording, finished or not: one loader for every view.

A finished file (the recorder's end, or `textrace recover`) holds it in perf's features
(HEADER_BPF_PROG_INFO, HEADER_BPF_BTF) and textrace's own section; a file whose recorder was
killed holds it only in the data stream (perf/stream.py), where each entry was written as it
arrived.  Either way the views get the same thing from `recorded(data)`.  Every entry is
decoded through its codec (entries.py): a damaged one is a FormatError naming file, offset
and entry, or with --salvage (`data.salvage`) it is skipped and said in `data.warnings`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from functools import cached_property

from .bpf.prog_info import ProgInfo, bpil_id
from .entries import decode
from .errors import FormatError
from .perf.abi import Feature, RecordType
from .perf.private import FEATURE_BIT, Kind, PrivateSection
from .perf.reader import PerfData
from .perf.stream import StreamDamage, read_entries

_CACHE: "weakref.WeakKeyDictionary[PerfData, Recorded]" = weakref.WeakKeyDictionary()


def recorded(data: PerfData) -> "Recorded":
    """The Recorded of this PerfData, read once."""
    got = _CACHE.get(data)
    if got is None:
        got = _CACHE[data] = Recorded(data)
    return got


class Recorded:
    """`finished`: the file has textrace's section; `streamed`: entries were read from the
    data stream (an unfinished file); `textrace`: either (a file textrace made)."""

    def __init__(self, data: PerfData):
        self.data = data
        self.damage: list[str] = []
        self.entries: dict[int, list[tuple[bytes, int]]] = {}
        self.finished = FEATURE_BIT in data.features
        self.streamed = False
        if self.finished:
            raw = data.feature_bytes(FEATURE_BIT)
            section = PrivateSection.parse(raw, file=data.path,
                                           offset=data.feature_offset(FEATURE_BIT),
                                           salvage=data.salvage)
            for msg in section.damage:
                self._damaged(msg)
            for kind, blob, off in section.items():
                self.entries.setdefault(kind, []).append((blob, off))
        elif not data.features:  # a file nobody finished: what the stream holds
            for e in self.stream_entries():
                self.entries.setdefault(e.kind, []).append((e.data, e.offset))
            self.streamed = bool(self.entries)
        self.textrace = self.finished or self.streamed

    def stream_entries(self):
        """The entries in the data stream (FINISHED_INIT chunks), for files never
        finished; an entry cut short by a kill is noted as damage, not raised."""
        damage: list[StreamDamage] = []
        chunks = self.data.raw_records(frozenset({RecordType.FINISHED_INIT}))
        yield from read_entries(chunks, damage)
        for d in damage:  # a kill cuts the last entry short: said, never fatal
            self._damaged(f"{self.data.path}: offset {d.offset:#x}: {d.message}")

    def _damaged(self, msg: str) -> None:
        self.damage.append(msg)
        self.data.warnings.append(msg)

    def decoded(self, kind: int) -> list:
        """Every entry of `kind`, decoded; damaged ones raise, or are skipped with salvage."""
        out = []
        for blob, off in self.entries.get(kind, ()):
            try:
                out.append(decode(kind, blob, file=self.data.path, offset=off))
            except FormatError as e:
                if not self.data.salvage:
                    raise
                self._damaged(f"{e} (entry skipped)")
        return out

    # --- what the views ask -------------------------------------------------------------
    @cached_property
    def captures(self) -> list:
        """ProgCaptures streamed (unfinished files); later ones win."""
        return self.decoded(Kind.CAPTURE)

    @cached_property
    def infos(self) -> "ProgInfos":
        """Programs whose info and JIT images the file holds, by id; each decoded when
        first asked for (ProgInfos)."""
        out: dict[int, object] = {}
        feat = self.data.feature(Feature.BPF_PROG_INFO)
        for e in feat.programs if feat is not None else ():
            out[bpil_id(e.info)] = e
        for cap in self.captures:
            if cap.info is not None:
                out[cap.prog_id] = cap.info
        return ProgInfos(out, self.data.path, self.data.feature_offset(Feature.BPF_PROG_INFO))

    @cached_property
    def btfs(self) -> dict[int, bytes]:
        """Raw BTF by the kernel's BTF id: HEADER_BPF_BTF, then textrace's BTF entries,
        then streamed captures, later sources winning."""
        out = {}
        feat = self.data.feature(Feature.BPF_BTF)
        for entry in feat.btfs if feat is not None else ():
            out[entry.id] = entry.data
        for btf_id, raw in self.decoded(Kind.BTF):
            out[btf_id] = raw
        for cap in self.captures:
            if cap.info is not None and cap.btf:
                out[cap.info.btf_id] = cap.btf
        return out

    @cached_property
    def outcomes(self) -> dict[int, dict] | None:
        """How each program was captured or why not; None for files textrace did not make."""
        if not self.textrace:
            return None
        out: dict[int, dict] = {}
        for blob in self.decoded(Kind.CAPTURES):
            out.update(blob)
        for cap in self.captures:
            if cap.prog_id not in out or out[cap.prog_id].get("method") is None:
                out[cap.prog_id] = cap.outcome()
        return out

    @cached_property
    def kallsyms(self) -> bytes | None:
        """/proc/kallsyms as taken at record start, or None if the file has none."""
        got = self.decoded(Kind.KALLSYMS)
        return got[0] if got else None

    @cached_property
    def kernel_code(self) -> list[tuple[int, int, bytes]]:
        """Kernel code read while recording: (kernel virtual address, time in ns, bytes)."""
        return self.decoded(Kind.KERNEL_CODE)

    @cached_property
    def unreported(self) -> list[dict]:
        """Code changes no TEXT_POKE reported (recorder.image_watch.UnreportedChange's JSON)."""
        return [d for blob in self.decoded(Kind.UNREPORTED) for d in blob]

    @cached_property
    def info(self) -> dict:
        """RECORD_INFO, the later entries' keys over the earlier ones'."""
        out: dict = {}
        for d in self.decoded(Kind.RECORD_INFO):
            out.update(d)
        return out


class ProgInfos(Mapping):
    """The captured programs' ProgInfo by program id, in the file's order (a later entry of
    an id wins, as a dict built in order would have it).  An entry of HEADER_BPF_PROG_INFO
    is decoded when its program is first asked for, not before: a view of one program in a
    recording of thousands decodes one.  A damaged entry raises the FormatError
    ProgInfo.from_bpil gives (file, the section's offset, the field) when it is asked for;
    `in`, len() and iterating the ids decode nothing."""

    def __init__(self, sources: dict[int, object], path: str | None, offset: int):
        # id -> ProgInfo (decoded, or streamed whole) or the feature's BpfProgInfoEntry
        self._sources = sources
        self._path = path
        self._offset = offset

    def __getitem__(self, prog_id: int) -> ProgInfo:
        got = self._sources[prog_id]
        if not isinstance(got, ProgInfo):
            got = self._sources[prog_id] = ProgInfo.from_bpil(
                got.info_len, got.data_len, got.arrays, got.info, got.data, file=self._path,
                offset=self._offset)
        return got

    def __contains__(self, prog_id: object) -> bool:
        return prog_id in self._sources

    def __iter__(self) -> Iterator[int]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)
