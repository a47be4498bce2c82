"""textrace: make the Linux kernel's changing executable code traceable."""

from .errors import FormatError, TextraceError

__all__ = ["open", "TextraceError", "FormatError"]
__version__ = "0.1.0"


def open(path, *, salvage: bool = False):  # noqa: A001 - mirrors builtins.open on purpose
    """Open a recording (perf.data, either mode) for scripting; see textrace.api.Recording."""
    from .api import Recording
    return Recording.open(path, salvage=salvage)
