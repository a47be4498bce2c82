"""textrace: make the Linux kernel's changing executable code traceable."""

from .errors import FormatError, TextraceError
from .version import __version__  # noqa: F401 (textrace.__version__)

__all__ = ["open", "TextraceError", "FormatError"]


def open(path, *, salvage: bool = False):  # noqa: A001 - mirrors builtins.open on purpose
    """Open a recording (perf.data, either mode) for scripting; see textrace.api.Recording."""
    from .api import Recording
    return Recording.open(path, salvage=salvage)
