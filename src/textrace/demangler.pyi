"""Types of textrace.demangler (demangler.c): names demangled as perf prints them."""

def perf_demangle(name: str) -> str | None:
    """libiberty's cplus_demangle(name, DMGL_NO_OPTS), perf report's default; None when
    `name` does not demangle."""
