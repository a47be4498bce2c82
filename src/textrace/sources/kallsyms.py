"""/proc/kallsyms as a source: read and parsed by a child process while the caller works
(the history parses, history/kallsyms.py; the fork is here, outside it), or by the caller
itself (read_proc_kallsyms).

The kernel formats /proc/kallsyms a page per read(2): 1300+ reads, ~30 ms of system time
for 122k lines, then ~10 ms to split the lines (compiled code, history/kallsyms_text.py).
A thread would hold the GIL after each read and wait for it before the next, so behind a
busy main thread it finishes late; a forked child runs on another CPU with no such wait.
The child writes the parsed symbols to a memfd (header, addresses, name spans, the text
itself) and the parent maps them and reads them in place (sorted only if the kernel's
order is not the addresses').

Neither this module nor the child imports numpy: the child starts before the parent
imports it, and its CPU goes to reading, not to numpy's import.
"""

from __future__ import annotations

import mmap
import os
import struct

from ..history.kallsyms_text import symbol_lines

_HEADER = struct.Struct("<8sqqq")   # magic, errno (0: parsed), symbols, text or message bytes
_MAGIC = b"TRKSYM01"
_PATH = "/proc/kallsyms"


def read_proc_kallsyms(path: str = _PATH):
    """/proc/kallsyms read here and now, parsed (history's KernelSymbols.parse); OSError
    as reading it raises."""
    from ..history.kallsyms import KernelSymbols
    with open(path, "rb") as f:
        return KernelSymbols.parse(f.read())


class KallsymsReader:
    """Start reading now; `result()` (or calling it) returns the KernelSymbols, raising
    OSError as reading /proc/kallsyms would.  If the child dies before it is done, the
    parent reads the file itself."""

    def __init__(self, path: str = _PATH):
        self.path = path
        self.fd = os.memfd_create("textrace-kallsyms", os.MFD_CLOEXEC)
        self.pid = os.fork()
        if self.pid == 0:   # the child: never returns to the caller's code
            code = 1
            try:
                _child(path, self.fd)
                code = 0
            finally:
                os._exit(code)
        self._symbols = None

    def result(self):
        """The child's KernelSymbols (waiting for it), or the parent's own read if the child
        failed."""
        if self._symbols is None:
            self._symbols = self._collect()
        return self._symbols

    __call__ = result

    def close(self) -> None:
        """Reap the child (result() does too); the symbols already returned stay valid."""
        if self.pid:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = 0
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _collect(self):
        from ..history.kallsyms import KernelSymbols
        _pid, status = os.waitpid(self.pid, 0)
        self.pid = 0
        try:
            size = os.fstat(self.fd).st_size
            view = mmap.mmap(self.fd, size, prot=mmap.PROT_READ) \
                if not status and size >= _HEADER.size else None
        finally:
            self.close()
        if view is None or _HEADER.unpack_from(view, 0)[0] != _MAGIC:
            # the child died before it was done (killed, out of memory): read it here
            return read_proc_kallsyms(self.path)
        _magic, errno, n, text_len = _HEADER.unpack_from(view, 0)
        if errno:
            message = bytes(view[_HEADER.size:_HEADER.size + text_len]).decode()
            raise OSError(errno, message, self.path)
        at, mv = _HEADER.size, memoryview(view)   # views: an mmap's slices are copies
        return KernelSymbols.from_lines(mv[at + 40 * n:at + 40 * n + text_len],
                                        mv[at:at + 8 * n], mv[at + 8 * n:at + 40 * n])


def _child(path: str, fd: int) -> None:
    """Read and parse `path`, write the result (or the OSError) to `fd`."""
    try:
        chunks = []
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(1 << 16):
                chunks.append(chunk)
    except OSError as e:
        message = (e.strerror or str(e)).encode()
        _write_all(fd, _HEADER.pack(_MAGIC, e.errno or 5, 0, len(message)) + message)
        return
    text = b"".join(chunks)
    n, addrs, spans = symbol_lines(text)
    _write_all(fd, _HEADER.pack(_MAGIC, 0, n, len(text)))
    _write_all(fd, addrs)
    _write_all(fd, spans)
    _write_all(fd, text)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
