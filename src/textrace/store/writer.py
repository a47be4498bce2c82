"""StoreWriter: what the daemon saw, into the store, deduplicated and within a budget.

Every call adds to the transaction in progress; `commit()` ends it (the daemon commits at
least once a second, so a SIGKILL loses at most that).  Programs are tracked by the
kernel's program id while they live (a load row per load), images by content.

The budget (`max_bytes`, `min_bytes`) works like xc_retain's: the store's files (database
and its log) are kept under max_bytes; code of live programs is never evicted; the code of
unloaded programs and unregistered out-of-line code goes oldest first (by when it went
away) until the files are back under LOW_WATER of the budget, but never the most recent
min_bytes of it.  An evicted image keeps its row and its loads keep their lifetimes; its
code is gone, and every eviction is counted in meta (evicted, evicted_bytes).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
import time
from collections import OrderedDict

from ..bpf.prog_info import ProgInfo
from .db import CHECKPOINT_SECONDS, DB_NAME, connect, s64
from .images import InfoForm, funcs_match, image_form, rest_digest

HIGH_WATER = 0.80     # evict when the files pass this share of the budget...
LOW_WATER = 0.65      # ...down to this share
BURST = 0.02         # commit (and look at the budget) after this share of it is added
_CACHE = 4096         # recent images remembered for the fast path


class StoreWriter:
    def __init__(self, directory: str, *, max_bytes: int | None = None,
                 min_bytes: int = 0):
        self.directory = directory
        self.con = connect(directory, create=True)
        self.con.row_factory = sqlite3.Row
        self.max_bytes, self.min_bytes = max_bytes, min_bytes
        if max_bytes:
            # the log must stay a small part of the budget: checkpoint it often, keep it short
            pages = max(16, int(max_bytes * 0.05) // 4096)
            self.con.execute(f"PRAGMA wal_autocheckpoint={pages}")
            self.con.execute(f"PRAGMA journal_size_limit={pages * 4096}")
        self.boot: int | None = None
        self.live: dict[int, int] = {}        # prog id -> load row, while it lives
        self.gone: OrderedDict[int, int] = OrderedDict()  # recently unloaded, not captured
        self.cache: OrderedDict[tuple, tuple[int, object]] = OrderedDict()
        self.infos: dict[bytes, int] = {}    # info digest -> row
        self.btf_ids: dict[int, bytes] = {}   # this boot's BTF ids already stored
        self.in_tx = False
        self.dirty = 0
        self.added = 0                        # content bytes added since the last commit
        self.last_checkpoint = time.monotonic()
        self.stats = {"loads": 0, "new_images": 0, "new_btf": 0, "evicted": 0,
                      "fast_path": 0}

    # --- transactions -------------------------------------------------------------------
    def _x(self, sql: str, args=()) -> sqlite3.Cursor:
        if not self.in_tx:
            self.con.execute("BEGIN")
            self.in_tx = True
        self.dirty += 1
        return self.con.execute(sql, args)

    def commit(self) -> None:
        if self.in_tx:
            self.con.execute("COMMIT")
            self.in_tx = False
            self.added = 0
            if self.max_bytes and self.disk_bytes() > HIGH_WATER * self.max_bytes:
                self.enforce_budget()
        if time.monotonic() - self.last_checkpoint > CHECKPOINT_SECONDS:
            self.con.execute("PRAGMA wal_checkpoint(PASSIVE)")  # fsyncs the log
            self.last_checkpoint = time.monotonic()

    def close(self) -> None:
        self.commit()
        self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.con.close()

    def disk_bytes(self) -> int:
        path = os.path.join(self.directory, DB_NAME)
        return sum(os.path.getsize(p) for p in (path, path + "-wal")
                   if os.path.exists(p))

    # --- boots and kernel symbols -------------------------------------------------------
    def begin_boot(self, boot_id: str, release: str, now_ns: int, clock: str) -> bool:
        """This boot's row; True if the store already knew the boot (a restart)."""
        row = self.con.execute("SELECT id FROM boots WHERE boot_id=?", (boot_id,)).fetchone()
        if row:
            self.boot = row[0]
            self._x("UPDATE boots SET last_ns=? WHERE id=?", (now_ns, self.boot))
        else:
            self.boot = self._x("INSERT INTO boots(boot_id, release, first_ns, last_ns, "
                                "clock) VALUES(?,?,?,?,?)",
                                (boot_id, release, now_ns, now_ns, clock)).lastrowid
        self.commit()
        return bool(row)

    def close_other_boots(self) -> None:
        """Loads and code of earlier boots still open ended with their boot: at its last
        time seen (the store knows no later moment of that boot)."""
        for table, col in (("loads", "unload_ns"), ("ool", "unreg_ns")):
            self._x(f"UPDATE {table} SET {col}=(SELECT last_ns FROM boots WHERE "
                    f"boots.id={table}.boot) WHERE boot!=? AND {col} IS NULL", (self.boot,))
        self.commit()

    def seen_until(self, now_ns: int) -> None:
        self._x("UPDATE boots SET last_ns=? WHERE id=?", (now_ns, self.boot))

    def kallsyms(self, text: bytes, now_ns: int) -> None:
        """A kallsyms snapshot (programs' own lines dropped), stored if it changed."""
        digest = hashlib.sha256(text).digest()
        if self.con.execute("SELECT 1 FROM kallsyms WHERE boot=? AND digest=?",
                            (self.boot, digest)).fetchone():
            return
        import zstandard
        self._x("INSERT INTO kallsyms(boot, time_ns, digest, data) VALUES(?,?,?,?)",
                (self.boot, now_ns, digest, zstandard.ZstdCompressor(level=6).compress(text)))

    # --- programs -----------------------------------------------------------------------
    def open_loads(self) -> dict[int, int]:
        """Loads of this boot still open in the store (a restart carries them on)."""
        return {r[0]: r[1] for r in self.con.execute(
            "SELECT prog_id, id FROM loads WHERE boot=? AND unload_ns IS NULL", (self.boot,))}

    def adopt(self, prog_id: int, load_id: int) -> None:
        self.live[prog_id] = load_id

    def _load_row(self, prog_id: int, tag: bytes) -> int:
        load_id = self.live.get(prog_id)
        if load_id is None:
            load_id = self._x("INSERT INTO loads(boot, prog_id, tag) VALUES(?,?,?)",
                              (self.boot, prog_id, tag)).lastrowid
            self.live[prog_id] = load_id
            self.stats["loads"] += 1
        return load_id

    def program_loaded(self, prog_id: int, tag: bytes, load_ns: int | None) -> None:
        """BPF_EVENT(PROG_LOAD) (load_ns None: loaded before the daemon looked)."""
        load_id = self._load_row(prog_id, tag)
        self._x("UPDATE loads SET load_ns=?, tag=? WHERE id=?", (load_ns, tag, load_id))

    def program_unloaded(self, prog_id: int, unload_ns: int) -> None:
        load_id = self.live.pop(prog_id, None)
        if load_id is None:
            return  # loaded before the store began, and never seen alive
        self._x("UPDATE loads SET unload_ns=? WHERE id=?", (unload_ns, load_id))
        if self.con.execute("SELECT image FROM loads WHERE id=?",
                            (load_id,)).fetchone()[0] is None:
            self.gone[prog_id] = load_id  # its capture may still be arriving
            while len(self.gone) > 4096:
                self.gone.popitem(last=False)

    def program_failed(self, prog_id: int, tag: bytes, reason: str) -> None:
        load_id = self.live.get(prog_id) or self.gone.get(prog_id) or \
            self._load_row(prog_id, tag)
        self._x("UPDATE loads SET reason=? WHERE id=? AND image IS NULL", (reason, load_id))

    def program_captured(self, info: ProgInfo, btf: bytes | None, method: str,
                         capture_ns: int | None, ksyms: list[str]) -> int:
        """A program's capture: its image found or stored, its load row completed.
        Returns the image's row id."""
        prog_id = info.id
        load_id = self.gone.pop(prog_id, None) or self._load_row(prog_id, info.tag)
        btf_digest = self._btf(info.info.get("btf_id", 0), btf)
        image_id = self._image(info, btf_digest)
        info_id = self._info(info, ksyms)
        funcs = info.funcs()
        self._x("UPDATE loads SET image=?, info=?, tag=?, addrs=?, capture_ns=?, method=?, "
                "reason=NULL, load_time=?, uid=?, btf_id=?, map_ids=? WHERE id=?",
                (image_id, info_id, info.tag, struct.pack(f"<{len(funcs)}Q", *(a for a, _, _ in funcs)),
                 capture_ns, method, info.info.get("load_time"),
                 info.info.get("created_by_uid"), info.info.get("btf_id"),
                 struct.pack(f"<{len(info.map_ids)}I", *info.map_ids), load_id))
        if self.max_bytes and self.added > BURST * self.max_bytes:
            self.commit()  # and see to the budget: a burst must not overrun it mid-round
        return image_id

    def _btf(self, btf_id: int, data: bytes | None) -> bytes | None:
        if not data:
            return None
        known = self.btf_ids.get(btf_id)
        digest = hashlib.sha256(data).digest()
        if known == digest:
            return digest
        if self._x("INSERT OR IGNORE INTO btf VALUES(?,?)", (digest, data)).rowcount:
            self.stats["new_btf"] += 1
        if len(self.btf_ids) > 65536:
            self.btf_ids.clear()
        self.btf_ids[btf_id] = digest
        return digest

    def _info(self, info: ProgInfo, ksyms: list[str]) -> int:
        form = InfoForm.of(info, ksyms)
        got = self.infos.get(form.digest)
        if got is None:
            row = self.con.execute("SELECT id FROM infos WHERE digest=?",
                                   (form.digest,)).fetchone()
            got = row[0] if row else self._x(
                "INSERT INTO infos(digest, name, type, info, info_len, arrays, ksyms) "
                "VALUES(?,?,?,?,?,?,?)", (form.digest, form.name, form.type, form.info,
                                          form.info_len, form.arrays, form.ksyms)).lastrowid
            if len(self.infos) > _CACHE:
                self.infos.clear()
            self.infos[form.digest] = got
        return got

    def _image(self, info: ProgInfo, btf_digest: bytes | None) -> int:
        rest = rest_digest(info, btf_digest)
        key = (rest, tuple(n for _a, n, _c in info.funcs()))
        hit = self.cache.get(key)
        if hit is not None and funcs_match(hit[1], info):  # same program, placed elsewhere
            self.cache.move_to_end(key)
            self.stats["fast_path"] += 1
            image_id = hit[0]
            if not self._evicted(image_id):
                return image_id
        form = image_form(info, btf_digest, rest=rest)
        row = self.con.execute("SELECT id, evicted FROM images WHERE digest=?",
                               (form.digest,)).fetchone()
        if row is not None and not row[1]:
            image_id = row[0]
        elif row is not None:  # evicted earlier, and here again: its code comes back
            image_id = row[0]
            self._x("UPDATE images SET code=?, relocs=?, xlated=?, line_info=?, "
                    "jited_line_info=?, func_info=?, evicted=0 WHERE id=?",
                    (form.code, form.norm.pack_relocs(), form.xlated, form.line_info,
                     form.jited_line_info, form.func_info, image_id))
        else:
            image_id = self._x(
                "INSERT INTO images(digest, tag, code, func_lens, relocs, xlated, func_info, "
                "line_info, jited_line_info, prog_tags, btf, bytes) "
                "VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                (form.digest, form.tag, form.code, form.func_lens, form.norm.pack_relocs(),
                 form.xlated, form.func_info, form.line_info, form.jited_line_info,
                 form.prog_tags, form.btf, form.size)).lastrowid
            self.stats["new_images"] += 1
            self.added += form.size
        self.cache[key] = (image_id, form.norm)
        if len(self.cache) > _CACHE:
            self.cache.popitem(last=False)
        return image_id

    def _evicted(self, image_id: int) -> bool:
        """Whether a cached image was evicted since (and so must be stored again)."""
        row = self.con.execute("SELECT evicted FROM images WHERE id=?", (image_id,)).fetchone()
        return bool(row and row[0])

    # --- other code ---------------------------------------------------------------------
    def ool_registered(self, addr: int, n: int, name: str, ksym_type: int, ns: int,
                       code: bytes | None, code_ns: int | None) -> None:
        self._x("INSERT INTO ool(boot, addr, len, name, ksym_type, reg_ns, code, code_ns) "
                "VALUES(?,?,?,?,?,?,?,?)", (self.boot, s64(addr), n, name, ksym_type, ns,
                                            code, code_ns))

    def ool_unregistered(self, addr: int, name: str, ns: int) -> None:
        self._x("UPDATE ool SET unreg_ns=? WHERE id=(SELECT MAX(id) FROM ool WHERE boot=? "
                "AND addr=? AND name=? AND unreg_ns IS NULL)", (ns, self.boot, s64(addr), name))

    def poke(self, time_ns: int, addr: int, old: bytes, new: bytes, *, reported: bool = True,
             after_ns: int | None = None, prog_id: int | None = None) -> None:
        self._x("INSERT INTO pokes(boot, time_ns, addr, old, new, reported, after_ns, "
                "prog_id) VALUES(?,?,?,?,?,?,?,?)",
                (self.boot, time_ns, s64(addr), old, new, int(reported), after_ns, prog_id))

    # --- the budget ---------------------------------------------------------------------
    def enforce_budget(self) -> int:
        """Evict unloaded code oldest first until the files are under LOW_WATER of the
        budget, keeping the most recent min_bytes; returns the number of evictions."""
        if not self.max_bytes:
            return 0
        evicted = 0
        for _round in range(8):
            excess = self.disk_bytes() - LOW_WATER * self.max_bytes
            if excess <= 0:
                break
            victims = self._victims(excess)
            if os.environ.get("TEXTRACE_BUDGET_DEBUG"):
                print(f"budget: disk {self.disk_bytes()} excess {excess:.0f} victims "
                      f"{len(victims)} {sum(v[2] for v in victims)}", flush=True)
            if not victims:
                break
            self.con.execute("BEGIN")
            freed = 0
            for kind, row_id, size in victims:
                if kind == "image":
                    self.con.execute("UPDATE images SET code=NULL, relocs=NULL, xlated=NULL, "
                                     "line_info=NULL, jited_line_info=NULL, func_info=NULL, "
                                     "evicted=1 WHERE id=?", (row_id,))
                else:
                    self.con.execute("UPDATE ool SET code=NULL, evicted=1 WHERE id=?",
                                     (row_id,))
                freed += size
            self.con.execute("DELETE FROM btf WHERE digest NOT IN (SELECT btf FROM images "
                             "WHERE evicted=0 AND btf IS NOT NULL)")
            self.con.execute("UPDATE meta SET value=value+? WHERE key='evicted'",
                             (len(victims),))
            self.con.execute("UPDATE meta SET value=value+? WHERE key='evicted_bytes'",
                             (freed,))
            self.con.execute("COMMIT")
            evicted += len(victims)
            # to completion: through execute() each step frees one page
            self.con.executescript("PRAGMA incremental_vacuum;")
            self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.stats["evicted"] += evicted
        self.cache.clear()
        return evicted

    def _victims(self, excess: float) -> list[tuple[str, int, int]]:
        """Unloaded code, oldest first, past the protected most recent min_bytes, enough
        to free `excess` bytes (measured by content; the loop measures the files again)."""
        rows = [("image", r[0], r[1], (r[2], r[3])) for r in self.con.execute(
            "SELECT i.id, i.bytes + COALESCE(length(b.data), 0), MAX(l.boot), "
            "MAX(l.unload_ns) FROM images i JOIN loads l ON l.image = i.id "
            "LEFT JOIN btf b ON b.digest = i.btf WHERE i.evicted = 0 "
            "GROUP BY i.id HAVING SUM(l.unload_ns IS NULL) = 0")]
        rows += [("ool", r[0], r[1], (r[2], r[3])) for r in self.con.execute(
            "SELECT id, length(code), boot, unreg_ns FROM ool WHERE evicted = 0 AND "
            "code IS NOT NULL AND unreg_ns IS NOT NULL")]
        rows.sort(key=lambda r: r[3], reverse=True)   # most recent first
        kept, out = 0, []
        for kind, row_id, size, _when in rows:
            if kept < self.min_bytes:
                kept += size
                continue
            out.append((kind, row_id, size))
        out.reverse()                                  # oldest first
        chosen, freed = [], 0
        for v in out:
            if freed >= excess:
                break
            chosen.append(v)
            freed += v[2]
        return chosen
