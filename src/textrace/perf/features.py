"""perf.data header feature sections (HEADER_*): one frozen dataclass per feature.

Each dataclass declares its on-disk layout once, in its fields: every field carries the codec
that reads and writes it (`_count(U32)`, `_field(_Array(STR, "nr"))`...), in file order.
`parse()` and `pack()` both walk that one list, so they cannot drift apart.

Formats are the ones perf 6.1 writes (tools/perf/util/header.c, write_* / process_*):
- strings are do_write_string's: `u32 len; char str[len]`, len = strlen + NUL rounded up to
  64 (NAME_ALIGN), zero padded.  `PerfStr` keeps the stored bytes so a rewrite is exact;
- counts are fields of their own (named as perf names them: `nr`, `pmu_num`, `cnt`...).
  Left as None when building an object, they are filled in from the data they count;
  given, they must agree with it (except BPF_PROG_INFO's and BPF_BTF's `count`, which perf
  itself gets wrong under load: see _Entries);
- every count and length is checked against what is left of the section before anything is
  read or allocated, and bytes left over after the last field are an error: perf writes
  none.  A FormatError names the file, the absolute offset of the bad number and the field,
  e.g. "CMDLINE.nr" or "BPF_PROG_INFO.programs[3].data_len".

TRACING_DATA, AUXTRACE, STAT and ids this module does not know stay `RawFeature` bytes.
BPF_PROG_INFO keeps each struct bpf_prog_info as bytes: decoding it is bpf/'s business
(perf/ depends on nothing of ours).
"""

from __future__ import annotations

import dataclasses
import struct
from collections import ChainMap
from dataclasses import dataclass
from functools import cache
from typing import Callable, ClassVar, NoReturn

from ..errors import FormatError
from .abi import Feature
from .attr import ATTR_SIZE_MAX, ATTR_SIZE_VER0, EventAttr

NAME_ALIGN = 64                 # perf pads strings and build-id file names to this
BUILD_ID_RECORD_HEADER = 36     # perf_record_header_build_id without its file name
MISC_BUILD_ID_SIZE = 1 << 15    # header.misc: byte 20 of the build id holds its length


def feature_name(feature_id: int) -> str:
    """perf's name for a header feature bit (HOSTNAME, BPF_PROG_INFO), or "feature_N" for
    an id newer than the Feature enum."""
    try:
        return Feature(feature_id).name
    except ValueError:
        return f"feature_{feature_id}"


class PerfStr(str):
    """A string as perf stored it: the text up to the first NUL, plus `raw`, the exact
    stored bytes (NUL and padding included), so packing gives back the file's bytes.
    Built from plain text it gets do_write_string's padding."""

    raw: bytes

    def __new__(cls, text: str = "", raw: bytes | None = None):
        encoded = text.encode("utf-8", "surrogateescape")
        if raw is None:
            raw = _padded(encoded + b"\0")
        elif raw.split(b"\0", 1)[0] != encoded:
            raise ValueError(f"stored bytes {raw[:40]!r} do not hold the text {text!r}")
        obj = super().__new__(cls, text)
        obj.raw = bytes(raw)
        return obj

    @classmethod
    def from_raw(cls, raw: bytes) -> "PerfStr":
        """The string as stored, NUL and padding kept so that packing gives them back."""
        return cls(raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape"), raw)


def _padded(data: bytes) -> bytes:
    return data.ljust(-(-len(data) // NAME_ALIGN) * NAME_ALIGN, b"\0")


# --- reading ---------------------------------------------------------------------------

class _Cursor:
    """A bounds-checked position in one feature section; errors carry absolute offsets."""

    def __init__(self, buf, *, file: str | None, offset: int, feature: str):
        self.buf = memoryview(buf).cast("B")
        self.pos = 0
        self.base = offset
        self.file = file
        self.feature = feature

    def left(self) -> int:
        return len(self.buf) - self.pos

    def fail(self, message: str, path: str, pos: int | None = None) -> NoReturn:
        where = self.pos if pos is None else pos
        raise FormatError(message, file=self.file, offset=self.base + where,
                          field=f"{self.feature}.{path}" if path else self.feature)

    def take(self, n: int, path: str) -> bytes:
        if n > self.left():
            self.fail(f"{n} bytes needed, {self.left()} left in the section", path)
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out


def _where(scope: ChainMap, name: str) -> tuple[int, str]:
    """(section-relative offset, field path) of a field read earlier in this struct or an
    enclosing one: errors about a count or length point at the number itself."""
    return scope["@" + name]


# --- codecs: how one field is stored ---------------------------------------------------

class _Codec:
    min_size = 0                   # fewest bytes one value takes (to bound counts)
    len_field: str | None = None   # sibling field that holds this field's length or count
    len_exact = True               # ... exactly (else: at most)

    def read(self, cur: _Cursor, path: str, scope: ChainMap):
        """One value from `cur`; `scope` holds the fields read before it (for counts)."""
        raise NotImplementedError

    def write(self, out: list, value, scope: ChainMap) -> None:
        """Append the value's bytes to `out`, exactly as read() would take them."""
        raise NotImplementedError

    def normalize(self, value):
        """The value in its stored type (a str becomes a PerfStr), or TypeError/ValueError."""
        return value

    def measure(self, value) -> int:
        """What `len_field` must hold for this value."""
        raise NotImplementedError

    def verify(self, value, fields: dict) -> None:
        """Raise ValueError when the value contradicts other fields of its struct."""


class _Scalar(_Codec):
    def __init__(self, fmt: str):
        self.st = struct.Struct("<" + fmt)
        self.min_size = self.st.size

    def read(self, cur, path, scope):
        return self.st.unpack(cur.take(self.st.size, path))[0]

    def write(self, out, value, scope):
        out.append(self.st.pack(value))


U8, U16, U32, I32, U64 = (_Scalar(f) for f in "BHIiQ")


class _Str(_Codec):
    """do_write_string: u32 length (NUL and padding included), then the bytes."""

    min_size = 4

    def read(self, cur, path, scope):
        at = cur.pos
        n = U32.read(cur, path, scope)
        if n > cur.left():
            cur.fail(f"string of {n} bytes overruns the section ({cur.left()} left)", path, at)
        return PerfStr.from_raw(cur.take(n, path))

    def write(self, out, value, scope):
        out.append(struct.pack("<I", len(value.raw)))
        out.append(value.raw)

    def normalize(self, value):
        if isinstance(value, PerfStr):
            return value
        if isinstance(value, str):
            return PerfStr(value)
        raise TypeError(f"expected a string, got {type(value).__name__}")


STR = _Str()


class _Sized(_Codec):
    """Bytes whose length is held by an earlier field (minus a fixed header, `less`)."""

    def __init__(self, len_field: str, less: int = 0, text: bool = False):
        self.len_field = len_field
        self.less = less
        self.text = text

    def read(self, cur, path, scope):
        at, lpath = _where(scope, self.len_field)
        n = scope[self.len_field] - self.less
        if n < 0:
            cur.fail(f"{scope[self.len_field]} is smaller than the {self.less}-byte header",
                     lpath, at)
        if n > cur.left():
            cur.fail(f"{n} bytes announced, {cur.left()} left in the section", lpath, at)
        raw = cur.take(n, path)
        return PerfStr.from_raw(raw) if self.text else raw

    def write(self, out, value, scope):
        out.append(value.raw if self.text else value)

    def normalize(self, value):
        if self.text:
            return STR.normalize(value)
        return bytes(value)

    def measure(self, value):
        return len(value.raw if self.text else value) + self.less


class _Fixed(_Codec):
    def __init__(self, n: int):
        self.n = self.min_size = n

    def read(self, cur, path, scope):
        return cur.take(self.n, path)

    def write(self, out, value, scope):
        out.append(value)

    def normalize(self, value):
        value = bytes(value)
        if len(value) != self.n:
            raise ValueError(f"expected {self.n} bytes, got {len(value)}")
        return value


UNTIL_END = "until the end of the section"
Count = Callable[[dict, "_Cursor | None"], "int | None"]


class _Array(_Codec):
    """`count` values of one codec.  count: the name of an earlier field holding it, a
    function (fields, cursor) -> count (cursor None when checking a built object; None
    back means "cannot tell"), or UNTIL_END."""

    def __init__(self, elem: _Codec, count: str | Count, source: str | None = None):
        self.elem = elem
        self.count = count
        self.source = source   # for a computed count: the field errors should name
        if isinstance(count, str) and count != UNTIL_END:
            self.len_field = count

    def read(self, cur, path, scope):
        if self.count == UNTIL_END:
            out = []
            while cur.left():
                out.append(self.elem.read(cur, f"{path}[{len(out)}]", scope))
            return tuple(out)
        if callable(self.count):
            n = self.count(scope, cur)
            at, cpath = _where(scope, self.source) if self.source else (cur.pos, path)
        else:
            n = scope[self.count]
            at, cpath = _where(scope, self.count)
        if n * self.elem.min_size > cur.left():
            cur.fail(f"count {n} of {self.elem.min_size}-byte entries cannot fit in the "
                     f"{cur.left()} bytes left", cpath, at)
        return tuple(self.elem.read(cur, f"{path}[{i}]", scope) for i in range(n))

    def write(self, out, value, scope):
        for v in value:
            self.elem.write(out, v, scope)

    def normalize(self, value):
        return tuple(self.elem.normalize(v) for v in value)

    def measure(self, value):
        return len(value)

    def verify(self, value, fields):
        if callable(self.count):
            want = self.count(fields, None)
            if want is not None and want != len(value):
                raise ValueError(f"{len(value)} entries where {want} are due")


class _Entries(_Array):
    """Entries to the section's end, their number announced by an earlier field that may
    undercount them: perf 6.1.192 (on Linux 6.18) recording while programs load and unload
    by the thousand writes more BPF_PROG_INFO entries than the infos_cnt it writes first
    (3411 announced, 3515 written; an increment lost between its threads).  perf's reader
    stops at the announced count; we keep every entry, and the count as written."""

    len_exact = False

    def __init__(self, elem: _Codec, announced: str):
        super().__init__(elem, UNTIL_END)
        self.len_field = announced

    def read(self, cur, path, scope):
        out = super().read(cur, path, scope)
        if scope[self.len_field] > len(out):
            at, cpath = _where(scope, self.len_field)
            cur.fail(f"{scope[self.len_field]} entries announced, {len(out)} in the section",
                     cpath, at)
        return out

    def verify(self, value, fields):
        if fields[self.len_field] > len(value):
            raise ValueError(f"{fields[self.len_field]} announced, {len(value)} present")


class _Struct(_Codec):
    def __init__(self, cls):
        self.cls = cls

    @property
    def min_size(self):
        return self.cls._min_size()

    def read(self, cur, path, scope):
        return self.cls._read(cur, path, scope)

    def write(self, out, value, scope):
        value._write(out, scope)

    def normalize(self, value):
        if not isinstance(value, self.cls):
            raise TypeError(f"expected {self.cls.__name__}, got {type(value).__name__}")
        return value


class _Attr(_Codec):
    """A perf_event_attr cut to the size an earlier field gives (EVENT_DESC's attr_size,
    not the attr's own size field: perf reads `sz` bytes whatever attr.size says)."""

    def __init__(self, size_field: str):
        self.size_field = size_field

    def read(self, cur, path, scope):
        at, spath = _where(scope, self.size_field)
        n = scope[self.size_field]
        if n < ATTR_SIZE_VER0:
            cur.fail(f"attr size {n} is below PERF_ATTR_SIZE_VER0 ({ATTR_SIZE_VER0})",
                     spath, at)
        if n > cur.left():
            cur.fail(f"attr of {n} bytes overruns the section ({cur.left()} left)", spath, at)
        start = cur.pos
        raw = cur.take(n, path)
        if any(raw[ATTR_SIZE_MAX:]):
            cur.fail(f"perf_event_attr fields past byte {ATTR_SIZE_MAX} are not known here",
                     path, start + ATTR_SIZE_MAX)
        own_size = raw[4:8]
        full = raw[:4] + struct.pack("<I", ATTR_SIZE_MAX) + raw[8:ATTR_SIZE_MAX]
        attr = EventAttr.parse(full.ljust(ATTR_SIZE_MAX, b"\0"), 0, file=cur.file)
        return attr.replace(size=struct.unpack("<I", own_size)[0])

    def write(self, out, value, scope):
        n = scope[self.size_field]
        full = bytearray(value.replace(size=ATTR_SIZE_MAX).pack())
        full[4:8] = struct.pack("<I", value.size)  # the attr's own size, as it was
        out.append(bytes(full[:n]).ljust(n, b"\0"))

    def normalize(self, value):
        if not isinstance(value, EventAttr):
            raise TypeError(f"expected EventAttr, got {type(value).__name__}")
        return value


class _Tail(_Codec):
    """An optional trailing part, present when the section has bytes left.  Older perf
    wrote shorter sections (CPU_TOPOLOGY before its per-cpu ids, before its die part)."""

    def __init__(self, inner: _Codec):
        self.inner = inner
        self.len_field = inner.len_field

    def measure(self, value):
        return self.inner.measure(value)

    def read(self, cur, path, scope):
        return self.inner.read(cur, path, scope) if cur.left() else None

    def write(self, out, value, scope):
        if value is not None:
            self.inner.write(out, value, scope)

    def normalize(self, value):
        return None if value is None else self.inner.normalize(value)

    def verify(self, value, fields):
        if value is not None:
            self.inner.verify(value, fields)


def _field(codec: _Codec, **kw):
    """A dataclass field stored with `codec`; its place in the class is its place on disk."""
    return dataclasses.field(metadata={"codec": codec}, **kw)


def _count(codec: _Codec):
    """A count or length field; None (the default) means "fill in from the data it
    measures" when an object is built."""
    return _field(codec, default=None)


# --- the layout machinery shared by every feature and entry ------------------------------

class _Layout:
    """Mixin for a frozen dataclass whose fields carry codecs (see _field)."""

    @classmethod
    @cache
    def _layout(cls) -> tuple[tuple[str, _Codec], ...]:
        return tuple((f.name, f.metadata["codec"]) for f in dataclasses.fields(cls)
                     if "codec" in f.metadata)

    @classmethod
    def _min_size(cls) -> int:
        return sum(codec.min_size for _, codec in cls._layout())

    def __post_init__(self):
        name_of = type(self).__name__
        layout = self._layout()
        fields = {name: getattr(self, name) for name, _ in layout}

        def put(name, value):
            fields[name] = value
            object.__setattr__(self, name, value)

        for name, codec in layout:          # plain values in, counts filled in
            value = codec.normalize(fields[name])
            put(name, value)
            if codec.len_field is not None and value is not None:
                n = codec.measure(value)
                if fields[codec.len_field] is None:
                    put(codec.len_field, n)
                elif fields[codec.len_field] != n and codec.len_exact:
                    raise ValueError(f"{name_of}.{codec.len_field} is "
                                     f"{fields[codec.len_field]} but {name} needs {n}")
        absent = None
        for name, codec in layout:          # then what the file could not express
            if isinstance(codec, _Tail):
                if fields[name] is None:
                    absent = absent or name
                elif absent:
                    raise ValueError(f"{name_of}.{name} cannot follow the absent {absent}")
            try:
                codec.verify(fields[name], fields)
            except ValueError as e:
                raise ValueError(f"{name_of}.{name}: {e}") from None

    @classmethod
    @cache
    def _unread(cls) -> tuple[dataclasses.Field, ...]:
        """The fields no codec stores (count_omitted...): _read gives them their defaults."""
        return tuple(f for f in dataclasses.fields(cls) if "codec" not in f.metadata)

    @classmethod
    @cache
    def _plan(cls) -> tuple | None:
        """The layout as steps read without a codec call per field, when every field is a
        number or bytes counted by an earlier number of the struct (each entry of
        BPF_PROG_INFO, 5000 in a big recording): ("numbers", struct, names) and ("bytes",
        name, length field).  None for any other layout."""
        steps: list[tuple] = []
        run: list[tuple[str, str]] = []
        seen: set[str] = set()
        for name, codec in cls._layout():
            if type(codec) is _Scalar:
                run.append((name, codec.st.format[1:]))
            elif type(codec) is _Sized and not codec.text and not codec.less \
                    and codec.len_field in seen:
                if run:
                    steps.append(("numbers", struct.Struct("<" + "".join(f for _, f in run)),
                                  tuple(n for n, _ in run)))
                    run = []
                steps.append(("bytes", name, codec.len_field))
            else:
                return None
            seen.add(name)
        if run:
            steps.append(("numbers", struct.Struct("<" + "".join(f for _, f in run)),
                          tuple(n for n, _ in run)))
        return tuple(steps)

    @classmethod
    def _read_planned(cls, cur: _Cursor, plan: tuple):
        """The struct read by its plan, or None (the cursor unmoved) when some field does
        not fit: the codecs then read it again and say which, where."""
        buf, pos, end = cur.buf, cur.pos, len(cur.buf)
        values: dict = {}
        for kind, what, how in plan:
            if kind == "numbers":
                if what.size > end - pos:
                    return None
                values.update(zip(how, what.unpack_from(buf, pos)))
                pos += what.size
            else:
                n = values[how]
                if n > end - pos:
                    return None
                values[what] = bytes(buf[pos:pos + n])
                pos += n
        cur.pos = pos
        return cls._built(values)

    @classmethod
    def _built(cls, values: dict):
        """An object of the values read, set as __init__ would, without __post_init__: the
        codecs read every value in its stored type and every count and length as the data
        they count, so normalising and checking have nothing to do."""
        obj = object.__new__(cls)
        for name, value in values.items():
            object.__setattr__(obj, name, value)
        for f in cls._unread():
            object.__setattr__(obj, f.name, f.default if f.default is not dataclasses.MISSING
                               else f.default_factory())
        return obj

    @classmethod
    def _read(cls, cur: _Cursor, path: str, scope: ChainMap):
        plan = cls._plan()
        if plan is not None:
            got = cls._read_planned(cur, plan)
            if got is not None:
                return got
        scope = scope.new_child()
        values = {}
        for name, codec in cls._layout():
            fpath = f"{path}.{name}" if path else name
            scope["@" + name] = (cur.pos, fpath)
            values[name] = scope[name] = codec.read(cur, fpath, scope)
        return cls._built(values)

    def _write(self, out: list, scope: ChainMap) -> None:
        layout = self._layout()
        scope = scope.new_child({name: getattr(self, name) for name, _ in layout})
        for name, codec in layout:
            codec.write(out, getattr(self, name), scope)


class _Feature(_Layout):
    """A whole feature section."""

    feature_id: ClassVar[int]

    @classmethod
    def parse(cls, buf, *, file: str | None = None, offset: int = 0):
        """Decode one section; `offset` is where it starts in the file (for errors)."""
        return cls._parse(buf, file, offset, {})

    @classmethod
    def _parse(cls, buf, file, offset, options: dict):
        cur = _Cursor(buf, file=file, offset=offset, feature=feature_name(cls.feature_id))
        obj = cls._read(cur, "", ChainMap(options))
        if cur.left():
            cur.fail(f"{cur.left()} bytes left over after the last field (perf writes none)",
                     "trailing")
        return obj

    def pack(self) -> bytes:
        """The section's bytes, as perf writes them."""
        out: list[bytes] = []
        self._write(out, ChainMap())
        return b"".join(out)


@dataclass(frozen=True, kw_only=True)
class RawFeature:
    """A section kept as bytes: TRACING_DATA, AUXTRACE, STAT and unknown ids."""

    feature_id: int
    data: bytes

    @classmethod
    def parse(cls, buf, *, feature_id: int, file: str | None = None, offset: int = 0):
        """Keep the section's bytes as they are (nothing to check)."""
        return cls(feature_id=feature_id, data=bytes(buf))

    def pack(self) -> bytes:
        """The bytes as read."""
        return self.data


# --- the features -----------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class BuildIdEntry(_Layout):
    """perf_record_header_build_id: header, pid, 20-byte build id plus (perf >= 5.11,
    misc & MISC_BUILD_ID_SIZE) its length in byte 20, then the file name padded to 64."""

    type: int = _field(U32, default=0)
    misc: int = _field(U16)
    size: int | None = _count(U16)   # header.size: the whole record
    pid: int = _field(I32)
    data: bytes = _field(_Fixed(20))
    id_size: int = _field(U8, default=0)
    reserved1: int = _field(U8, default=0)
    reserved2: int = _field(U16, default=0)
    filename: str = _field(_Sized("size", less=BUILD_ID_RECORD_HEADER, text=True))

    @property
    def build_id(self) -> bytes:
        """The id itself: `id_size` bytes when perf recorded the size, else all 20."""
        if self.misc & MISC_BUILD_ID_SIZE and 0 < self.id_size <= len(self.data):
            return self.data[:self.id_size]
        return self.data


@dataclass(frozen=True, kw_only=True)
class BuildIds(_Feature):
    """BUILD_ID: build-id records back to back up to the section's end."""

    feature_id: ClassVar[int] = Feature.BUILD_ID
    entries: tuple[BuildIdEntry, ...] = _field(_Array(_Struct(BuildIdEntry), UNTIL_END))


@dataclass(frozen=True, kw_only=True)
class Hostname(_Feature):
    """HOSTNAME: the recording machine's uname nodename."""

    feature_id: ClassVar[int] = Feature.HOSTNAME
    value: str = _field(STR)           # uname nodename


@dataclass(frozen=True, kw_only=True)
class OsRelease(_Feature):
    """OSRELEASE: the recording kernel's uname release ("6.1.0-27-amd64")."""

    feature_id: ClassVar[int] = Feature.OSRELEASE
    value: str = _field(STR)           # uname release


@dataclass(frozen=True, kw_only=True)
class Version(_Feature):
    """VERSION: the writer's version string."""

    feature_id: ClassVar[int] = Feature.VERSION
    value: str = _field(STR)           # the writer's version, "6.1.192" for perf


@dataclass(frozen=True, kw_only=True)
class Arch(_Feature):
    """ARCH: the recording machine's uname machine ("x86_64")."""

    feature_id: ClassVar[int] = Feature.ARCH
    value: str = _field(STR)           # uname machine


@dataclass(frozen=True, kw_only=True)
class CpuDesc(_Feature):
    """CPUDESC: the CPU's model name from /proc/cpuinfo."""

    feature_id: ClassVar[int] = Feature.CPUDESC
    value: str = _field(STR)           # /proc/cpuinfo "model name", spaces squashed


@dataclass(frozen=True, kw_only=True)
class CpuId(_Feature):
    """CPUID: the string perf matches its per-CPU event tables against."""

    feature_id: ClassVar[int] = Feature.CPUID
    value: str = _field(STR)           # x86: "vendor,family,model,stepping"


@dataclass(frozen=True, kw_only=True)
class NrCpus(_Feature):
    """NRCPUS: perf writes the highest present cpu + 1 ("avail") before the online count."""

    feature_id: ClassVar[int] = Feature.NRCPUS
    nr_cpus_available: int = _field(U32)
    nr_cpus_online: int = _field(U32)


@dataclass(frozen=True, kw_only=True)
class TotalMem(_Feature):
    """TOTAL_MEM: the machine's memory, kB (MemTotal)."""

    feature_id: ClassVar[int] = Feature.TOTAL_MEM
    total_mem_kb: int = _field(U64)    # MemTotal of /proc/meminfo, kB


@dataclass(frozen=True, kw_only=True)
class Cmdline(_Feature):
    """CMDLINE: argv of the recording; perf puts its own executable's path first."""

    feature_id: ClassVar[int] = Feature.CMDLINE
    nr: int | None = _count(U32)
    argv: tuple[str, ...] = _field(_Array(STR, "nr"))


@dataclass(frozen=True, kw_only=True)
class EventDescEntry(_Layout):
    """One event of EVENT_DESC: its attr, name and the sample ids the kernel gave it."""

    attr: EventAttr = _field(_Attr("attr_size"))
    nr_ids: int | None = _count(U32)
    name: str = _field(STR)
    ids: tuple[int, ...] = _field(_Array(U64, "nr_ids"))


@dataclass(frozen=True, kw_only=True)
class EventDesc(_Feature):
    """EVENT_DESC: every event's attr (attr_size bytes each), name and sample ids."""

    feature_id: ClassVar[int] = Feature.EVENT_DESC
    nr_events: int | None = _count(U32)
    attr_size: int = _field(U32, default=128)  # sizeof(perf_event_attr) in perf 6.1
    events: tuple[EventDescEntry, ...] = _field(_Array(_Struct(EventDescEntry), "nr_events"))


@dataclass(frozen=True, kw_only=True)
class CpuTopologyCpu(_Layout):
    """One cpu's core and socket ids (CPU_TOPOLOGY's per-cpu part)."""

    core_id: int = _field(I32)
    socket_id: int = _field(I32)


def _nr_cpus(fields, cur: _Cursor | None) -> int | None:
    """The per-cpu count: NRCPUS's nr_cpus_available when the caller has it (perf uses
    that), else the one count the rest of the section can be read with."""
    if fields.get("nr_cpus") is not None or cur is None:
        return fields.get("nr_cpus")
    return _guess_nr_cpus(cur)


def _guess_nr_cpus(cur: _Cursor) -> int:
    """The n for which the rest of the section is n (core, socket) pairs followed by the
    die part (u32 nr, nr strings, n die ids) ending exactly at the section's end, as
    perf >= 5.4 writes it; failing that, n pairs alone (older perf)."""
    buf, start, end = cur.buf, cur.pos, len(cur.buf)
    for n in range((end - start) // 12 + 1):
        pos = start + 8 * n
        if pos + 4 > end:
            break
        nr = struct.unpack_from("<I", buf, pos)[0]
        pos += 4
        for _ in range(nr):
            if pos + 4 > end:
                break
            pos += 4 + struct.unpack_from("<I", buf, pos)[0]
        else:
            if end - pos == 4 * n:
                return n
    return (end - start) // 8


@dataclass(frozen=True, kw_only=True)
class CpuTopology(_Feature):
    """CPU_TOPOLOGY: sibling cpu lists (perf prints them as "sibling sockets" = the
    kernel's package_cpus_list, "sibling threads" = core_cpus_list, "sibling dies" =
    die_cpus_list), then per cpu (core, socket) ids, then the die part.  Both per-cpu parts
    are absent in files of older perf; each is present iff the section has bytes left,
    as perf's reader decides.  Their length is NRCPUS's nr_cpus_available."""

    feature_id: ClassVar[int] = Feature.CPU_TOPOLOGY
    nr_sibling_sockets: int | None = _count(U32)
    sibling_sockets: tuple[str, ...] = _field(_Array(STR, "nr_sibling_sockets"))
    nr_sibling_threads: int | None = _count(U32)
    sibling_threads: tuple[str, ...] = _field(_Array(STR, "nr_sibling_threads"))
    cpus: tuple[CpuTopologyCpu, ...] | None = _field(
        _Tail(_Array(_Struct(CpuTopologyCpu), _nr_cpus)), default=None)
    nr_sibling_dies: int | None = _count(_Tail(U32))
    sibling_dies: tuple[str, ...] | None = _field(
        _Tail(_Array(STR, "nr_sibling_dies")), default=None)
    die_ids: tuple[int, ...] | None = _field(
        _Tail(_Array(I32, lambda f, cur: len(f["cpus"] or ()))), default=None)

    @classmethod
    def parse(cls, buf, *, file: str | None = None, offset: int = 0,
              nr_cpus: int | None = None):
        """`nr_cpus`: NRCPUS's nr_cpus_available; without it the count is worked out from
        the section's length."""
        return cls._parse(buf, file, offset, {"nr_cpus": nr_cpus})


@dataclass(frozen=True, kw_only=True)
class NumaNode(_Layout):
    """One NUMA node: memory total and free (kB) and its cpus."""

    node: int = _field(U32)
    mem_total_kb: int = _field(U64)
    mem_free_kb: int = _field(U64)
    cpus: str = _field(STR)            # cpu list, "0-3,8"


@dataclass(frozen=True, kw_only=True)
class NumaTopology(_Feature):
    """NUMA_TOPOLOGY: every NUMA node's memory and cpu list."""

    feature_id: ClassVar[int] = Feature.NUMA_TOPOLOGY
    nr: int | None = _count(U32)
    nodes: tuple[NumaNode, ...] = _field(_Array(_Struct(NumaNode), "nr"))


@dataclass(frozen=True, kw_only=True)
class BranchStack(_Feature):
    """BRANCH_STACK: a flag; perf writes an empty section."""

    feature_id: ClassVar[int] = Feature.BRANCH_STACK


@dataclass(frozen=True, kw_only=True)
class PmuMapping(_Layout):
    """One PMU: its perf_event_attr.type and sysfs name."""

    type: int = _field(U32)            # perf_event_attr.type of this PMU
    name: str = _field(STR)


@dataclass(frozen=True, kw_only=True)
class PmuMappings(_Feature):
    """PMU_MAPPINGS: which attr.type each PMU has, to name events of dynamic PMUs."""

    feature_id: ClassVar[int] = Feature.PMU_MAPPINGS
    pmu_num: int | None = _count(U32)
    pmus: tuple[PmuMapping, ...] = _field(_Array(_Struct(PmuMapping), "pmu_num"))


@dataclass(frozen=True, kw_only=True)
class GroupDescEntry(_Layout):
    """One event group: name, leader (index into the attrs) and member count."""

    name: str = _field(STR)            # "{anon_group}" for a group without a name
    leader_idx: int = _field(U32)      # index of the leader in EVENT_DESC / the attrs
    nr_members: int = _field(U32)


@dataclass(frozen=True, kw_only=True)
class GroupDesc(_Feature):
    """GROUP_DESC: the event groups (perf record -e '{a,b}')."""

    feature_id: ClassVar[int] = Feature.GROUP_DESC
    nr_groups: int | None = _count(U32)
    groups: tuple[GroupDescEntry, ...] = _field(_Array(_Struct(GroupDescEntry), "nr_groups"))


@dataclass(frozen=True, kw_only=True)
class CacheLevel(_Layout):
    """One CPU cache as sysfs describes it (/sys/devices/system/cpu/cpuN/cache/indexM)."""

    level: int = _field(U32)
    line_size: int = _field(U32)
    sets: int = _field(U32)
    ways: int = _field(U32)
    type: str = _field(STR)            # "Data", "Instruction", "Unified"
    size: str = _field(STR)            # as sysfs says it, "48K"
    map: str = _field(STR)             # shared_cpu_list


@dataclass(frozen=True, kw_only=True)
class Cache(_Feature):
    """CACHE: the CPU caches, each level and type once."""

    feature_id: ClassVar[int] = Feature.CACHE
    version: int = _field(U32, default=1)
    cnt: int | None = _count(U32)
    caches: tuple[CacheLevel, ...] = _field(_Array(_Struct(CacheLevel), "cnt"))


@dataclass(frozen=True, kw_only=True)
class SampleTime(_Feature):
    """SAMPLE_TIME: first and last sample times, ns on the recording's clock (perf_clock,
    or CLOCKID's clock); both 0 when there were no samples."""

    feature_id: ClassVar[int] = Feature.SAMPLE_TIME
    first_sample_time: int = _field(U64)
    last_sample_time: int = _field(U64)


def _bitmap_words(fields, cur) -> int | None:
    nbits = fields.get("bitmap_size")
    return None if nbits is None else -(-nbits // 64)


@dataclass(frozen=True, kw_only=True)
class MemoryNode(_Layout):
    """One NUMA node's memory blocks: bit i set = /sys/devices/system/memory/memory<i>.
    perf writes the bit count twice: as the node's size, then as do_write_bitmap's own
    header in front of the u64 words."""

    node: int = _field(U64)
    size: int = _field(U64)            # bits: highest block index + 1
    bitmap_size: int = _field(U64)     # the same, as the bitmap's header
    bitmap: tuple[int, ...] = _field(_Array(U64, _bitmap_words, "bitmap_size"))

    def blocks(self) -> list[int]:
        """Indices of the set bits: the node's memory blocks."""
        return [w * 64 + b for w, word in enumerate(self.bitmap) for b in range(64)
                if word >> b & 1 and w * 64 + b < self.bitmap_size]


@dataclass(frozen=True, kw_only=True)
class MemTopology(_Feature):
    """MEM_TOPOLOGY: memory blocks per NUMA node (block_size bytes each)."""

    feature_id: ClassVar[int] = Feature.MEM_TOPOLOGY
    version: int = _field(U64, default=1)
    block_size: int = _field(U64)      # bytes per memory block
    nr: int | None = _count(U64)
    nodes: tuple[MemoryNode, ...] = _field(_Array(_Struct(MemoryNode), "nr"))


@dataclass(frozen=True, kw_only=True)
class Clockid(_Feature):
    """CLOCKID: the resolution of the clock given to --clockid, in ns (perf prints
    res * 1000 as "clockid frequency ... MHz")."""

    feature_id: ClassVar[int] = Feature.CLOCKID
    clockid_res_ns: int = _field(U64)


@dataclass(frozen=True, kw_only=True)
class ClockData(_Feature):
    """CLOCK_DATA: one instant read on two clocks, to turn sample times into wall time."""

    feature_id: ClassVar[int] = Feature.CLOCK_DATA
    version: int = _field(U32, default=1)
    clockid: int = _field(U32)         # the clock of sample times (CLOCK_MONOTONIC = 1...)
    tod_ns: int = _field(U64)          # CLOCK_REALTIME (gettimeofday), ns since the epoch
    clockid_ns: int = _field(U64)      # the same instant on `clockid`, ns


@dataclass(frozen=True, kw_only=True)
class DirFormat(_Feature):
    """DIR_FORMAT: version of a perf.data directory (perf record --threads)."""

    feature_id: ClassVar[int] = Feature.DIR_FORMAT
    version: int = _field(U64)


@dataclass(frozen=True, kw_only=True)
class BpfProgInfoEntry(_Layout):
    """One program in perf's linear layout (struct perf_bpil, tools/perf/util/bpf-utils.h):
    `info` is a struct bpf_prog_info of info_len bytes whose array pointers perf rewrote
    as offsets into `data`; `arrays` is the bitmap of arrays that `data` holds."""

    info_len: int | None = _count(U32)
    data_len: int | None = _count(U32)
    arrays: int = _field(U64)
    info: bytes = _field(_Sized("info_len"))
    data: bytes = _field(_Sized("data_len"))


class _OmittedWhenEmpty(_Feature):
    """A section that some perf versions write empty, without its count, when they have no
    entries (BPF_PROG_INFO and BPF_BTF; 6.1 writes a zero count).
    `count_omitted` says which of the two a file had, so it is written back the same."""

    @classmethod
    def _parse(cls, buf, file, offset, options: dict):
        if len(buf) == 0:
            return cls(count_omitted=True)
        return super()._parse(buf, file, offset, options)

    def pack(self) -> bytes:
        """Empty when the file had the section empty and there is still nothing in it."""
        if self.count_omitted and not self.count:
            return b""
        return super().pack()


@dataclass(frozen=True, kw_only=True)
class BpfProgInfo(_OmittedWhenEmpty):
    """BPF_PROG_INFO: every program perf saw, by ascending id.  `count` is the number perf
    announced, which can be lower than len(programs) (see _Entries); perf itself reads
    only the first `count`."""

    feature_id: ClassVar[int] = Feature.BPF_PROG_INFO
    count: int | None = _count(U32)
    programs: tuple[BpfProgInfoEntry, ...] = _field(
        _Entries(_Struct(BpfProgInfoEntry), "count"), default=())
    count_omitted: bool = False


@dataclass(frozen=True, kw_only=True)
class BtfEntry(_Layout):
    """One BTF object of BPF_BTF: the kernel's id and the raw BTF."""

    id: int = _field(U32)              # BTF object id in the kernel
    data_size: int | None = _count(U32)
    data: bytes = _field(_Sized("data_size"))   # raw BTF, starting with magic 0xeb9f



def btf_safe_for_perf(nr_func_info: int, nr_jited_ksyms: int) -> bool:
    """May a program's BTF go into HEADER_BPF_BTF?  perf 6.1 names a program from its BTF
    whenever that BTF is there, reading func_info[i] for each function unchecked
    (synthesize_bpf_prog_name): a program with fewer func_info records than functions (the
    capture program does not copy func_info) makes `perf report --header-only` crash.
    Such BTF goes to textrace's own section (Kind.BTF) instead."""
    return nr_func_info >= max(1, nr_jited_ksyms)


@dataclass(frozen=True, kw_only=True)
class BpfBtf(_OmittedWhenEmpty):
    """BPF_BTF: the BTF of those programs, by ascending id; `count` as in BpfProgInfo."""

    feature_id: ClassVar[int] = Feature.BPF_BTF
    count: int | None = _count(U32)
    btfs: tuple[BtfEntry, ...] = _field(_Entries(_Struct(BtfEntry), "count"), default=())
    count_omitted: bool = False


@dataclass(frozen=True, kw_only=True)
class Compressed(_Feature):
    """COMPRESSED: how COMPRESSED records were made (perf record -z)."""

    feature_id: ClassVar[int] = Feature.COMPRESSED
    version: int = _field(U32, default=0)
    type: int = _field(U32, default=1)        # 1 = PERF_COMP_ZSTD
    level: int = _field(U32)
    ratio: int = _field(U32)
    mmap_len: int = _field(U32)               # bytes one decompressed record may take


@dataclass(frozen=True, kw_only=True)
class PmuCap(_Layout):
    """One capability file of a PMU's caps/ directory: name and contents."""

    name: str = _field(STR)
    value: str = _field(STR)


@dataclass(frozen=True, kw_only=True)
class CpuPmuCaps(_Feature):
    """CPU_PMU_CAPS: the "cpu" PMU's /sys/bus/event_source/devices/cpu/caps/*."""

    feature_id: ClassVar[int] = Feature.CPU_PMU_CAPS
    nr_caps: int | None = _count(U32)
    caps: tuple[PmuCap, ...] = _field(_Array(_Struct(PmuCap), "nr_caps"))


@dataclass(frozen=True, kw_only=True)
class HybridNode(_Layout):
    """One PMU of a hybrid CPU (cpu_core, cpu_atom) and the cpus it covers."""

    pmu_name: str = _field(STR)
    cpus: str = _field(STR)


@dataclass(frozen=True, kw_only=True)
class HybridTopology(_Feature):
    """HYBRID_TOPOLOGY: the core PMUs of a hybrid CPU and their cpus."""

    feature_id: ClassVar[int] = Feature.HYBRID_TOPOLOGY
    nr: int | None = _count(U32)
    nodes: tuple[HybridNode, ...] = _field(_Array(_Struct(HybridNode), "nr"))


@dataclass(frozen=True, kw_only=True)
class PmuCapsEntry(_Layout):
    """One PMU's capabilities in PMU_CAPS (its name written after them)."""

    nr_caps: int | None = _count(U32)
    caps: tuple[PmuCap, ...] = _field(_Array(_Struct(PmuCap), "nr_caps"))
    pmu_name: str = _field(STR)        # written after the caps


@dataclass(frozen=True, kw_only=True)
class PmuCaps(_Feature):
    """PMU_CAPS: capabilities of every PMU other than "cpu" that has any."""

    feature_id: ClassVar[int] = Feature.PMU_CAPS
    nr_pmu: int | None = _count(U32)
    pmus: tuple[PmuCapsEntry, ...] = _field(_Array(_Struct(PmuCapsEntry), "nr_pmu"))


@dataclass(frozen=True, kw_only=True)
class EMachine(_Feature):
    """E_MACHINE (perf 7.x): the recording machine's ELF e_machine (62 = EM_X86_64) and
    e_flags; perf --header-only prints "e_machine : 62"."""

    feature_id: ClassVar[int] = Feature.E_MACHINE
    e_machine: int = _field(U32)
    e_flags: int = _field(U32)


@dataclass(frozen=True, kw_only=True)
class ClnSize(_Feature):
    """CLN_SIZE (perf 7.x): the cache line size, bytes ("cacheline size: 64")."""

    feature_id: ClassVar[int] = Feature.CLN_SIZE
    cacheline_size: int = _field(U32)


FEATURE_CLASSES: dict[int, type] = {cls.feature_id: cls for cls in (
    BuildIds, Hostname, OsRelease, Version, Arch, NrCpus, CpuDesc, CpuId, TotalMem, Cmdline,
    EventDesc, CpuTopology, NumaTopology, BranchStack, PmuMappings, GroupDesc, Cache,
    SampleTime, MemTopology, Clockid, DirFormat, BpfProgInfo, BpfBtf, Compressed,
    CpuPmuCaps, ClockData, HybridTopology, PmuCaps, EMachine, ClnSize)}


def parse_feature(feature_id: int, data, *, file: str | None = None, offset: int = 0,
                  nr_cpus: int | None = None):
    """The section decoded by its feature's class, or RawFeature for kinds kept as bytes.
    `nr_cpus` (NRCPUS's nr_cpus_available) is used by CPU_TOPOLOGY only."""
    cls = FEATURE_CLASSES.get(feature_id)
    if cls is None:
        return RawFeature(feature_id=feature_id, data=bytes(data))
    if cls is CpuTopology:
        return CpuTopology.parse(data, file=file, offset=offset, nr_cpus=nr_cpus)
    return cls.parse(data, file=file, offset=offset)


def pack_feature(obj) -> bytes:
    """The section's bytes, as perf would write them."""
    return obj.pack()


def _plain(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, str):
        return str(value)
    if isinstance(value, EventAttr):
        return value.to_dict()
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def feature_to_json(obj) -> dict:
    """A JSON-safe dict: the feature's name, then its fields (bytes as hex)."""
    out = {"feature": feature_name(obj.feature_id)}
    out.update(_plain(obj))
    if isinstance(obj, BuildIds):
        for entry, row in zip(obj.entries, out["entries"]):
            row["build_id"] = entry.build_id.hex()
    return out
