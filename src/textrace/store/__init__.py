"""The code store: what `textrace daemon` kept, and its read API.

    import textrace.store
    st = textrace.store.open("/var/lib/textrace")
    st.summary()                 # {"programs", "images", "bytes", "evicted", "time_span", "boots"}
    for load in st.loads():      # Load: id, boot, prog_id, tag, name, type, image, addrs,
        ...                      #   load_ns, unload_ns, capture_ns, method, reason
    st.images()                  # ImageRow per distinct image: id, tag, name, type, bytes,
                                 #   loads, evicted
    st.prog_info(load)           # the load's exact bpf_prog_info (ProgInfo), JIT bytes rebuilt
    st.btf(load)                 # its BTF object, or None
    st.kallsyms(boot)            # KernelSymbols of that boot (the newest snapshot)
    st.ool(boot)                 # out-of-line code: addr, len, name, reg_ns, unreg_ns, code
    st.pokes(boot)               # code changes: time_ns, addr, old, new, reported
    st.symbolize(addrs, times)   # numpy in: (names, kinds, offsets, load ids) arrays out
    st.history(boot)             # a CodeHistory of the boot (symbol, read, at(t))

Times are ns on perf's default clock of their boot (perf_clock: what `perf record` stamps
records with), addresses are kernel virtual addresses (ints).  `boot` is the store's boot
row id; `st.boots()` lists them with the kernel's boot_id, and most calls default to the
newest boot.  The database is SQLite (db.py says why and holds the schema), readable while
a daemon writes it.
"""

from __future__ import annotations

from .reader import Boot, ImageRow, Load, Store


def open(directory: str) -> Store:  # noqa: A001  (textrace.store.open, like textrace.open)
    """Open the store a daemon keeps in `directory` for reading (it may be writing)."""
    return Store(directory)


__all__ = ["open", "Store", "Load", "ImageRow", "Boot"]
