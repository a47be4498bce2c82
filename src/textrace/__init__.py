"""textrace: make the Linux kernel's changing executable code traceable."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import FormatError, TextraceError
from .version import __version__  # noqa: F401 (textrace.__version__)

if TYPE_CHECKING:
    import os

    from .api import Recording

__all__ = ["open", "TextraceError", "FormatError"]


def open(path: str | os.PathLike[str], *,  # noqa: A001 - mirrors builtins.open on purpose
         salvage: bool = False) -> Recording:
    """Open a recording (perf.data, either mode) for scripting; see textrace.api.Recording."""
    from .api import Recording
    return Recording.open(path, salvage=salvage)
