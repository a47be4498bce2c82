"""A captured program as a stored image (shared by every identical load) plus what is its
load's own (id, addresses, load time, uid, BTF id, map ids), and back.

The image holds bpf_prog_info's scalar fields with the per-load ones zeroed (`PER_LOAD`),
the JIT functions up to placement (normalize.py), the xlated instructions, func and line
info, jited_line_info as (function, offset) pairs, prog_tags and the BTF's digest: what
makes two loads the same program.  `prog_info()` rebuilds the exact ProgInfo of one load.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass

from ..bpf.prog_info import BPIL_ARRAYS, PROG_INFO, ProgInfo, from_blobs
from .normalize import RELOC, Normalized, normalize_checked, rebuild

# fields of struct bpf_prog_info that differ between loads of one program (or say how it
# ran), zeroed in the image and kept per load where they matter
PER_LOAD = ("id", "load_time", "created_by_uid", "btf_id", "netns_dev", "netns_ino",
            "run_time_ns", "run_cnt", "recursion_misses")
_PAIR = struct.Struct("<II")


@dataclass
class ImageForm:
    """What an image row holds (blobs as stored) and its digest: the program's code."""

    digest: bytes
    tag: bytes
    norm: Normalized
    xlated: bytes
    func_info: bytes
    line_info: bytes
    jited_line_info: bytes
    prog_tags: bytes
    btf: bytes | None      # digest of the BTF object

    @property
    def code(self) -> bytes:
        """Every JIT function's normalized code, concatenated (func_lens splits it)."""
        return b"".join(self.norm.code)

    @property
    def func_lens(self) -> bytes:
        """Each function's code length, as u32 little-endian."""
        return struct.pack(f"<{len(self.norm.code)}I", *(len(c) for c in self.norm.code))

    @property
    def size(self) -> int:
        """Bytes of content this image stores (its BTF counted apart)."""
        return (len(self.code) + 4 * len(self.norm.code) + RELOC.size * len(self.norm.relocs)
                + len(self.xlated) + len(self.func_info) + len(self.line_info)
                + len(self.jited_line_info) + len(self.prog_tags))


@dataclass
class InfoForm:
    """What an infos row holds: the scalar fields loads of a program share."""

    digest: bytes
    name: str
    type: int
    info: bytes
    info_len: int
    arrays: int
    ksyms: str

    @classmethod
    def of(cls, info: ProgInfo, ksyms: list[str]) -> "InfoForm":
        """The row for a captured bpf_prog_info and its functions' ksym names; the
        per-load fields are zeroed so that loads of one program share it."""
        template = _template(info)
        names = json.dumps(ksyms, separators=(",", ":"))
        digest = hashlib.sha256(template + struct.pack("<IQ", info.info_len, info.arrays)
                                + names.encode()).digest()
        return cls(digest, info.name, info.type, template, info.info_len, info.arrays, names)


def _array(info: ProgInfo, name: str) -> bytes:
    for a in BPIL_ARRAYS:
        if a.ptr == name:
            return info._array_bytes(a) if info.arrays >> BPIL_ARRAYS.index(a) & 1 else b""
    raise KeyError(name)


def _template(info: ProgInfo) -> bytes:
    fields = dict(info.info)
    for k in PER_LOAD:
        fields[k] = 0
    return PROG_INFO.struct.pack(*(fields[n] for n in PROG_INFO.names))[:info.info_len]


def _line_pairs(info: ProgInfo) -> bytes:
    spans = [(a, a + n) for a, n, _ in info.funcs()]
    out = []
    for addr in info.jited_line_info:
        for k, (lo, hi) in enumerate(spans):
            if lo <= addr < hi:
                out.append(_PAIR.pack(k, addr - lo))
                break
        else:
            out.append(_PAIR.pack(0xFFFFFFFF, addr & 0xFFFFFFFF))  # outside every function
    return b"".join(out)


def rest_digest(info: ProgInfo, btf_digest: bytes | None) -> bytes:
    """Everything of an image but its JIT code: cheap, and with the code's lengths the key
    of the writer's cache of recent images."""
    h = hashlib.sha256()
    for part in (info.tag, info.xlated_insns,
                 _array(info, "func_info"), _array(info, "line_info"), _line_pairs(info),
                 b"".join(info.prog_tags), btf_digest or b""):
        h.update(struct.pack("<I", len(part)) + part)
    return h.digest()


def image_form(info: ProgInfo, btf_digest: bytes | None, norm: Normalized | None = None,
               rest: bytes | None = None) -> ImageForm:
    """The images row for a captured program: its digest covers the code up to
    placement, so reloads of one program at other addresses share one row.  `norm` and
    `rest` are passed when the caller has already computed them."""
    if norm is None:
        norm = normalize_checked([(a, c) for a, _n, c in info.funcs()])
    rest = rest or rest_digest(info, btf_digest)
    digest = hashlib.sha256(rest + norm.digest()).digest()
    return ImageForm(digest, info.tag, norm, info.xlated_insns, _array(info, "func_info"),
                     _array(info, "line_info"), _line_pairs(info), b"".join(info.prog_tags),
                     btf_digest)


def funcs_match(norm: Normalized, info: ProgInfo) -> bool:
    """Whether `norm` placed at this load's addresses gives its JIT bytes exactly."""
    funcs = info.funcs()
    if len(funcs) != len(norm.code) or any(len(c) != n for (_a, n, _c), c in
                                             zip(funcs, norm.code)):
        return False
    return rebuild(norm, [a for a, _n, _c in funcs]) == [c for _a, _n, c in funcs]


def rebuild_prog_info(row: dict, info_row: dict, load: dict) -> ProgInfo:
    """The exact ProgInfo of one load from its image, infos and loads rows."""
    info_len = info_row["info_len"]
    fields = PROG_INFO.unpack(bytes(info_row["info"]).ljust(PROG_INFO.size, b"\0"))
    addrs = struct.unpack(f"<{len(load['addrs']) // 8}Q", load["addrs"])
    fields.update(id=load["prog_id"], load_time=load["load_time"] or 0,
                  created_by_uid=load["uid"] or 0, btf_id=load["btf_id"] or 0)
    lens = struct.unpack(f"<{len(row['func_lens']) // 4}I", row["func_lens"])
    code, pos = [], 0
    for n in lens:
        code.append(bytes(row["code"][pos:pos + n]))
        pos += n
    norm = Normalized(tuple(code), Normalized.unpack_relocs(row["relocs"]))
    jited = b"".join(rebuild(norm, list(addrs)))
    jli = []
    for k, off in _PAIR.iter_unpack(row["jited_line_info"]):
        jli.append(addrs[k] + off if k < len(addrs) else off)
    blobs = {"jited_prog_insns": jited, "xlated_prog_insns": bytes(row["xlated"]),
             "map_ids": bytes(load["map_ids"] or b""),
             "jited_ksyms": bytes(load["addrs"]), "jited_func_lens": bytes(row["func_lens"]),
             "func_info": bytes(row["func_info"]), "line_info": bytes(row["line_info"]),
             "jited_line_info": struct.pack(f"<{len(jli)}Q", *jli),
             "prog_tags": bytes(row["prog_tags"])}
    return from_blobs(fields, info_len, info_row["arrays"], blobs, b"")
