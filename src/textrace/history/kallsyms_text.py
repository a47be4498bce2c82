"""Which lines of /proc/kallsyms' text are text symbols, and where their parts are.

"ffffffff81000000 T _text" or "ffffffffc0a01000 t fn\t[module]": 16 lowercase hex digits,
a space, the type, a space, the name, and for a module's symbol a tab and "[module]".
Only text symbols count (t/T/w/W: code, not data); addresses shown as zeros
(kptr_restrict) are skipped.  The lines are split by compiled code (122k lines in ~3 ms,
where numpy took ~20 ms in passes), into plain buffers: this module imports no numpy, so
that the kallsyms child (sources/kallsyms.py) can parse before or without it.
"""

from __future__ import annotations

from ..compiled import kallsyms_lines

TEXT_TYPES = b"tTwW"
_IS_TEXT = bytes(c in TEXT_TYPES for c in range(256))


def symbol_lines(text: bytes) -> tuple[int, bytearray, bytearray]:
    """(count, addresses, spans) of the symbol lines of `text`, in its order: `count`
    little-endian u64 addresses, and four little-endian i64 per line: name start and end,
    module start and end (-1, -1 for vmlinux), byte offsets into `text`."""
    lines = text.count(b"\n") + 1
    addrs, spans = bytearray(8 * lines), bytearray(32 * lines)
    count = kallsyms_lines(text, _IS_TEXT, addrs, spans)
    del addrs[8 * count:], spans[32 * count:]
    return count, addrs, spans
