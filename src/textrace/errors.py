"""The one exception family textrace raises for bad input.

Every error names the file, the byte offset and the field that was wrong, so the CLI can
print one line and exit 2 instead of a traceback.
"""

from __future__ import annotations


class TextraceError(Exception):
    """Base of every error textrace reports to a user."""

    def __init__(self, message: str, *, file: str | None = None,
                 offset: int | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.offset = offset
        self.field = field

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.offset is not None:
            where.append(f"offset {self.offset:#x}")
        if self.field is not None:
            where.append(self.field)
        return f"{': '.join(where)}: {self.message}" if where else self.message


class FormatError(TextraceError):
    """The bytes do not follow the format they claim (perf.data, BTF, bpf_prog_info...)."""


class TruncatedError(FormatError):
    """The file ends inside a structure; everything before `offset` is intact."""


class PermissionProblem(TextraceError):
    """The kernel refused an operation for lack of a capability."""


class KernelError(TextraceError):
    """A syscall failed for a reason other than permission."""
