"""Store: reading a code store (see the package docstring for the API)."""

from __future__ import annotations

import json
import sqlite3
import struct
from dataclasses import dataclass
from functools import lru_cache

from ..bpf.prog_info import ProgInfo, prog_type_name
from .db import connect, u64
from .images import rebuild_prog_info


@dataclass(frozen=True)
class Boot:
    """One boot the daemon ran in: `boot_id` from /proc/sys/kernel/random/boot_id,
    `release` the kernel's uname -r, first and last times seen (ns, perf's clock)."""

    id: int
    boot_id: str
    release: str
    first_ns: int
    last_ns: int


@dataclass(frozen=True)
class Load:
    """One load of a program (ns, perf's clock of its boot; load_ns None: loaded before
    the daemon looked; unload_ns None: still loaded when last seen).  `image` None: not
    captured (`reason` says why)."""

    id: int
    boot: int
    prog_id: int
    tag: bytes
    name: str
    type: str | None
    image: int | None
    addrs: tuple[int, ...]
    lens: tuple[int, ...]
    ksyms: tuple[str, ...]
    load_ns: int | None
    unload_ns: int | None
    capture_ns: int | None
    method: str | None
    reason: str | None
    evicted: bool

    def alive_at(self, t: int) -> bool:
        """Whether the program was loaded at t (ns, perf's clock of its boot)."""
        return (self.load_ns is None or self.load_ns <= t) and \
            (self.unload_ns is None or t < self.unload_ns)


@dataclass(frozen=True)
class ImageRow:
    """One distinct image: `names` the program names its loads had (comma-separated)."""

    id: int
    tag: bytes
    names: str
    bytes: int
    loads: int
    evicted: bool
    types: str


KERNEL_SYMBOL_REACH = 1 << 20   # no kernel function is longer; beyond is unknown code
_LOADS = ("SELECT l.id, l.boot, l.prog_id, l.tag, f.name, f.type, l.image, l.addrs, "
          "i.func_lens, f.ksyms, l.load_ns, l.unload_ns, l.capture_ns, l.method, l.reason, "
          "i.evicted FROM loads l LEFT JOIN images i ON i.id = l.image "
          "LEFT JOIN infos f ON f.id = l.info")


class Store:
    """A code store read through its SQLite database; `boot` arguments take a row id,
    a kernel boot_id, or None for the newest boot."""

    def __init__(self, directory: str):
        self.directory = directory
        self.con = connect(directory)
        self.con.row_factory = sqlite3.Row

    def close(self) -> None:
        """Close the database connection."""
        self.con.close()

    # --- rows ---------------------------------------------------------------------------
    def boots(self) -> list[Boot]:
        """Every boot in the store, oldest first."""
        return [Boot(r["id"], r["boot_id"], r["release"], r["first_ns"], r["last_ns"])
                for r in self.con.execute("SELECT * FROM boots ORDER BY id")]

    def boot_of(self, boot: int | str | None = None) -> int | None:
        """A boot row id from a row id, a kernel boot_id, or None (the newest)."""
        if isinstance(boot, int):
            return boot
        if isinstance(boot, str):
            r = self.con.execute("SELECT id FROM boots WHERE boot_id=?", (boot,)).fetchone()
            return r[0] if r else None
        r = self.con.execute("SELECT MAX(id) FROM boots").fetchone()
        return r[0]

    def loads(self, boot: int | str | None = None, *, all_boots: bool = False,
              prog_id: int | None = None) -> list[Load]:
        """The boot's loads (every boot's with `all_boots`), of one program id if given,
        in the order the daemon saw them."""
        where, args = [], []
        if not all_boots:
            where.append("l.boot=?")
            args.append(self.boot_of(boot))
        if prog_id is not None:
            where.append("l.prog_id=?")
            args.append(prog_id)
        sql = _LOADS + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY l.id"
        return [self._load(r) for r in self.con.execute(sql, args)]

    @staticmethod
    def _load(r) -> Load:
        addrs = struct.unpack(f"<{len(r[7]) // 8}Q", r[7]) if r[7] else ()
        lens = struct.unpack(f"<{len(r[8]) // 4}I", r[8]) if r[8] else ()
        return Load(r[0], r[1], r[2], bytes(r[3] or b""), r[4] or "",
                    prog_type_name(r[5]) if r[5] is not None else None, r[6], addrs, lens,
                    tuple(json.loads(r[9])) if r[9] else (), r[10], r[11], r[12], r[13],
                    r[14], bool(r[15]))

    def images(self) -> list[ImageRow]:
        """Every distinct image, across boots, with how many loads used it."""
        return [ImageRow(r[0], bytes(r[1]), r[2] or "", r[3], r[4], bool(r[5]), r[6] or "")
                for r in self.con.execute(
            "SELECT i.id, i.tag, (SELECT GROUP_CONCAT(DISTINCT f.name) FROM loads l2 JOIN "
            "infos f ON f.id = l2.info WHERE l2.image = i.id), i.bytes, "
            "(SELECT COUNT(*) FROM loads l WHERE l.image = i.id), i.evicted, "
            "(SELECT GROUP_CONCAT(DISTINCT f.type) FROM loads l3 JOIN infos f ON "
            "f.id = l3.info WHERE l3.image = i.id) FROM images i ORDER BY i.id")]

    def prog_info(self, load: Load) -> ProgInfo | None:
        """The load's bpf_prog_info as captured, its JIT bytes rebuilt for its addresses;
        None if it was not captured or its image was evicted."""
        if load.image is None:
            return None
        row = self.con.execute("SELECT * FROM images i JOIN image_code c ON c.image = i.id "
                               "WHERE i.id=?", (load.image,)).fetchone()
        if row is None or row["evicted"]:
            return None
        lrow = self.con.execute("SELECT * FROM loads WHERE id=?", (load.id,)).fetchone()
        irow = self.con.execute("SELECT * FROM infos WHERE id=?", (lrow["info"],)).fetchone()
        return rebuild_prog_info(row, irow, lrow)

    def btf(self, load: Load) -> bytes | None:
        """The raw BTF object captured with the load's image, or None."""
        r = self.con.execute("SELECT b.data FROM images i JOIN btf b ON b.digest = i.btf "
                             "WHERE i.id=?", (load.image,)).fetchone()
        return bytes(r[0]) if r else None

    def btf_id(self, load: Load) -> int | None:
        """The kernel's BTF object id the program had (bpf_prog_info.btf_id); None when
        it had none (0).  Valid only in that boot and while the object lived."""
        r = self.con.execute("SELECT btf_id FROM loads WHERE id=?", (load.id,)).fetchone()
        return r[0] if r and r[0] else None

    def kallsyms_text(self, boot: int | str | None = None) -> bytes | None:
        """The boot's newest /proc/kallsyms snapshot (BPF program lines left out), or None."""
        r = self.con.execute("SELECT data FROM kallsyms WHERE boot=? ORDER BY id DESC LIMIT 1",
                             (self.boot_of(boot),)).fetchone()
        if r is None:
            return None
        import zstandard
        return zstandard.ZstdDecompressor().decompress(r[0])

    def kallsyms(self, boot: int | str | None = None):
        """KernelSymbols of the boot (its newest snapshot), or None."""
        return _kernel_symbols(self.kallsyms_text(boot))

    def ool(self, boot: int | str | None = None) -> list[dict]:
        """The boot's out-of-line code (trampolines, dispatchers, ...): KSYMBOL's address,
        length, name and ksym_type, register/unregister times (ns), and the code read
        (`code`, None if not read or evicted) with its read time `code_ns`."""
        return [{"addr": u64(r["addr"]), "len": r["len"], "name": r["name"],
                 "ksym_type": r["ksym_type"], "reg_ns": r["reg_ns"], "unreg_ns": r["unreg_ns"],
                 "code": bytes(r["code"]) if r["code"] is not None else None,
                 "code_ns": r["code_ns"]}
                for r in self.con.execute("SELECT * FROM ool WHERE boot=? ORDER BY id",
                                          (self.boot_of(boot),))]

    def pokes(self, boot: int | str | None = None) -> list[dict]:
        """The boot's code changes in time order: TEXT_POKE records (`reported`) and the
        changes the daemon found itself, known to lie in (after_ns, time_ns]."""
        return [{"time_ns": r["time_ns"], "addr": u64(r["addr"]), "old": bytes(r["old"]),
                 "new": bytes(r["new"]), "reported": bool(r["reported"]),
                 "after_ns": r["after_ns"], "prog_id": r["prog_id"]}
                for r in self.con.execute("SELECT * FROM pokes WHERE boot=? ORDER BY time_ns",
                                          (self.boot_of(boot),))]

    def summary(self) -> dict:
        """Counts, bytes held (content and on disk), evictions and boots, as `textrace
        store` prints them."""
        one = lambda sql: self.con.execute(sql).fetchone()[0]  # noqa: E731
        meta = dict(self.con.execute("SELECT key, value FROM meta").fetchall())
        span = self.con.execute("SELECT MIN(first_ns), MAX(last_ns) FROM boots").fetchone()
        from .db import DB_NAME
        import os
        path = os.path.join(self.directory, DB_NAME)
        disk = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
        return {
            "programs": one("SELECT COUNT(*) FROM loads"),
            "captured": one("SELECT COUNT(*) FROM loads WHERE image IS NOT NULL"),
            "live": one("SELECT COUNT(*) FROM loads WHERE unload_ns IS NULL"),
            "images": one("SELECT COUNT(*) FROM images"),
            "images_evicted": one("SELECT COUNT(*) FROM images WHERE evicted=1"),
            "bytes": (one("SELECT COALESCE(SUM(bytes), 0) FROM images WHERE evicted=0")
                      + one("SELECT COALESCE(SUM(length(data)), 0) FROM btf")
                      + one("SELECT COALESCE(SUM(length(code)), 0) FROM ool")),
            "disk_bytes": disk,
            "btf": one("SELECT COUNT(*) FROM btf"),
            "ool": one("SELECT COUNT(*) FROM ool"),
            "pokes": one("SELECT COUNT(*) FROM pokes"),
            "unreported": one("SELECT COUNT(*) FROM pokes WHERE reported=0"),
            "evicted": int(meta.get("evicted", 0)),
            "evicted_bytes": int(meta.get("evicted_bytes", 0)),
            "time_span": {"first_ns": span[0], "last_ns": span[1]},
            "boots": [{"id": b.id, "boot_id": b.boot_id, "release": b.release,
                       "first_ns": b.first_ns, "last_ns": b.last_ns} for b in self.boots()],
        }

    # --- the centre ---------------------------------------------------------------------
    def history(self, boot: int | str | None = None):
        """The boot's CodeHistory: every load's functions and the out-of-line code as
        regions with lifetimes, over its kallsyms; images of captured programs and of the
        out-of-line code read; its pokes."""
        from ..history.code_history import CodeHistory, Image, Poke
        from ..history.regions import Region, RegionTable
        b = self.boot_of(boot)
        regions, images = [], []
        for ld in self.loads(b):
            names = ld.ksyms or tuple(f"bpf_prog_{ld.tag.hex()}" for _ in ld.addrs)
            for addr, n, name in zip(ld.addrs, ld.lens, names):
                regions.append(Region(addr, addr + n, name, "bpf", ld.load_ns, ld.unload_ns,
                                      ld.prog_id))
        for o in self.ool(b):
            regions.append(Region(o["addr"], o["addr"] + o["len"], o["name"], "ool",
                                  o["reg_ns"], o["unreg_ns"]))
            if o["code"]:
                images.append(Image(o["addr"], o["code"], o["code_ns"], "ool"))
        pokes = [Poke(p["time_ns"], p["addr"], p["old"], p["new"],
                      window=None if p["reported"] else (p["after_ns"], p["time_ns"]))
                 for p in self.pokes(b)]
        history = CodeHistory(RegionTable(regions), self.kallsyms(b), images, pokes)
        return history

    def symbolize(self, addrs, times, boot: int | str | None = None) -> dict:
        """Bulk: for numpy arrays of kernel addresses and times (ns, perf's clock of the
        boot), arrays of the symbol name (None where nothing is known), kind ("bpf",
        "ool", "kernel", "module"), offset into the symbol, and the program id and load
        row (-1 where not a program)."""
        import numpy as np
        from ..history.regions import Region, RegionTable
        b = self.boot_of(boot)
        addrs = np.asarray(addrs, dtype=np.uint64)
        times = np.asarray(times, dtype=np.int64)
        regions, load_of = [], []
        for ld in self.loads(b):
            names = ld.ksyms or tuple(f"bpf_prog_{ld.tag.hex()}" for _ in ld.addrs)
            for addr, n, name in zip(ld.addrs, ld.lens, names):
                regions.append(Region(addr, addr + n, name, "bpf", ld.load_ns, ld.unload_ns,
                                      ld.prog_id))
                load_of.append(ld)
        for o in self.ool(b):
            regions.append(Region(o["addr"], o["addr"] + o["len"], o["name"], "ool",
                                  o["reg_ns"], o["unreg_ns"]))
            load_of.append(None)
        table = RegionTable(regions)
        hit = table.lookup(addrs, times)
        n = len(addrs)
        names = np.full(n, None, dtype=object)
        kinds = np.full(n, None, dtype=object)
        offsets = np.zeros(n, dtype=np.int64)
        prog_ids = np.full(n, -1, dtype=np.int64)
        load_ids = np.full(n, -1, dtype=np.int64)
        tags = np.full(n, None, dtype=object)
        for k in np.flatnonzero(hit >= 0):
            r = regions[hit[k]]
            names[k], kinds[k], offsets[k] = r.name, r.kind, int(addrs[k]) - r.start
            ld = load_of[hit[k]]
            if ld is not None:
                prog_ids[k], load_ids[k], tags[k] = ld.prog_id, ld.id, ld.tag.hex()
        kernel = self.kallsyms(b)
        miss = np.flatnonzero(hit < 0)
        if kernel is not None and len(miss):
            idx = kernel.lookup(addrs[miss])
            for k, i in zip(miss, idx):
                # past the last symbol of a region is nobody's (a freed program's pack)
                if i >= 0 and int(addrs[k]) - int(kernel.addrs[i]) < KERNEL_SYMBOL_REACH:
                    module = kernel.modules[i]
                    names[k] = kernel.name(int(i))
                    kinds[k] = "module" if module else "kernel"
                    offsets[k] = int(addrs[k]) - int(kernel.addrs[i])
        return {"name": names, "kind": kinds, "offset": offsets, "prog_id": prog_ids,
                "load": load_ids, "tag": tags}


@lru_cache(maxsize=4)
def _kernel_symbols(text: bytes | None):
    if text is None:
        return None
    from ..history.kallsyms import KernelSymbols
    return KernelSymbols.parse(text)
