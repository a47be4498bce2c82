"""Types of textrace.compiled (compiled.c): the loops numpy cannot vectorize."""

from typing_extensions import Buffer

def walk_records(buf: Buffer, start: int, stop: int, end: int, known: Buffer,
                 offsets: Buffer | None, types: Buffer | None,
                 samples: tuple[tuple[int, ...], tuple[Buffer, ...], int, int,
                                Buffer | None, int] | None = None
                 ) -> tuple[int, int, bool, int]:
    """The perf.data records beginning in [start, stop), none past `end`: (count, next,
    whole, gathered); their offsets (int64) and types (uint16) written when given; with
    samples (fields, outs, width, chain, misc, first), the SAMPLE records met gathered as
    gather_samples gathers them into rows first on (gathered: how many, -1 once one
    failed its checks or the rows ran out)."""

def gather_samples(words: Buffer, base: Buffer, fields: tuple[int, ...],
                   outs: tuple[Buffer, ...], width: int, chain: int,
                   misc: Buffer | None) -> int:
    """outs[j][i] = words[base[i] + fields[j]] (u64 words, int64 base) for SAMPLE records
    of one layout, each checked to hold `width` words and its callchain (nr at word
    `chain`, if not negative); misc gets each header's misc.  The first record failing a
    check, else -1."""

def number_pairs(a: Buffer, b: Buffer, ids: Buffer, first: Buffer) -> int:
    """The distinct (a[i], b[i]) pairs (a u64, b int32) numbered in order of first
    occurrence: ids per element, first index per pair; their count."""

def kallsyms_lines(text: Buffer, is_text: Buffer, addrs: Buffer, spans: Buffer) -> int:
    """The symbol lines of /proc/kallsyms text: addresses (u64) and name and module spans
    (4 int64 a line), in the text's order; their count."""
