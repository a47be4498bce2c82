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
from .normalize import rebuild

LOAD_COLUMNS = ("id", "boot", "prog_id", "tag", "image", "info", "addrs", "load_ns",
                "unload_ns", "capture_ns", "method", "reason", "load_time", "uid", "btf_id",
                "map_ids")
_LOAD_UPSERT = (f"INSERT OR REPLACE INTO loads({', '.join(LOAD_COLUMNS)}) "
                f"VALUES({', '.join('?' * len(LOAD_COLUMNS))})")
HIGH_WATER = 0.80     # evict when the files pass this share of the budget...
LOW_WATER = 0.65      # ...down to this share
STEP = 0.04          # evict at most this share of it at a time
BURST = 0.02         # commit (and look at the budget) after this share of it is added
_CACHE = 4096         # recent images remembered for the fast path


class StoreWriter:
    """The daemon's side of a store: rows batched into transactions committed at least once
    a second; with `max_bytes`, unloaded code is evicted oldest first to stay in budget."""

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
        self.live: dict[int, dict] = {}       # prog id -> load row, while it lives
        self.gone: OrderedDict[int, dict] = OrderedDict()  # recently unloaded, not captured
        self.dirty_loads: dict[int, dict] = {}
        self.early_unloads: OrderedDict[int, int] = OrderedDict()  # unload before load
        self.next_load: int | None = None
        self.quick: OrderedDict[tuple, tuple] = OrderedDict()
        self._last_rest = b""
        self.evictions = bool(self.con.execute("SELECT 1 FROM images WHERE evicted=1 "
                                               "LIMIT 1").fetchone())
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
        """Write the loads touched and commit; enforce the budget when the files passed its
        high-water mark, and checkpoint the log every CHECKPOINT_SECONDS."""
        if self.in_tx:
            self._flush_loads()
            self.con.execute("COMMIT")
            self.in_tx = False
            self.added = 0
            if self.max_bytes and self.disk_bytes() > HIGH_WATER * self.max_bytes:
                self.enforce_budget()
        if time.monotonic() - self.last_checkpoint > CHECKPOINT_SECONDS:
            self.con.execute("PRAGMA wal_checkpoint(PASSIVE)")  # fsyncs the log
            self.last_checkpoint = time.monotonic()

    def close(self) -> None:
        """Commit, fold the write-ahead log into the database (leaving it empty) and close."""
        self.commit()
        self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.con.close()

    def disk_bytes(self) -> int:
        """Bytes the database and its write-ahead log take on disk: what the budget counts."""
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
        """The boot was still running at now_ns (ns, perf's clock): its last time seen."""
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
    # A load's row is kept here while it changes (capture, load and unload records arrive
    # apart) and written once per commit: one INSERT OR REPLACE per load touched, not one
    # statement per event.  Row ids are ours (the table's largest at start, counted up).

    def _next_load_id(self) -> int:
        if self.next_load is None:
            self.next_load = (self.con.execute("SELECT MAX(id) FROM loads").fetchone()[0]
                              or 0) + 1
        self.next_load += 1
        return self.next_load - 1

    def open_loads(self) -> dict[int, int]:
        """Loads of this boot still open in the store (a restart carries them on)."""
        return {r[0]: r[1] for r in self.con.execute(
            "SELECT prog_id, id FROM loads WHERE boot=? AND unload_ns IS NULL", (self.boot,))}

    def adopt(self, prog_id: int, load_id: int) -> None:
        """Carry on an open load row of this boot after a restart (see open_loads)."""
        row = self.con.execute(f"SELECT {', '.join(LOAD_COLUMNS)} FROM loads WHERE id=?",
                               (load_id,)).fetchone()
        self.live[prog_id] = dict(zip(LOAD_COLUMNS, row))

    def _touch(self, load: dict) -> dict:
        self.dirty_loads[load["id"]] = load
        if not self.in_tx:
            self.con.execute("BEGIN")
            self.in_tx = True
        return load

    def _find(self, prog_id: int) -> dict | None:
        return self.live.get(prog_id) or self.gone.get(prog_id)

    def _load_row(self, prog_id: int, tag: bytes) -> dict:
        load = self._find(prog_id)
        if load is None:
            load = dict.fromkeys(LOAD_COLUMNS)
            load.update(id=self._next_load_id(), boot=self.boot, prog_id=prog_id, tag=tag)
            self.stats["loads"] += 1
            early = self.early_unloads.pop(prog_id, None)
            if early is not None:  # its unload was read first (another CPU's ring)
                load["unload_ns"] = early
                self._gone(prog_id, load)
            else:
                self.live[prog_id] = load
        return self._touch(load)

    def _gone(self, prog_id: int, load: dict) -> None:
        """Unloaded, but its capture or its load record may still be arriving."""
        if load["image"] is None or load["load_ns"] is None:
            self.gone[prog_id] = load
            while len(self.gone) > 4096:
                self.gone.popitem(last=False)
        else:
            self.gone.pop(prog_id, None)

    def _flush_loads(self) -> None:
        if self.dirty_loads:
            self.con.executemany(_LOAD_UPSERT, [tuple(ld[c] for c in LOAD_COLUMNS)
                                                for ld in self.dirty_loads.values()])
            self.dirty_loads = {}

    def program_loaded(self, prog_id: int, tag: bytes, load_ns: int | None) -> None:
        """BPF_EVENT(PROG_LOAD) (load_ns None: loaded before the daemon looked)."""
        load = self._load_row(prog_id, tag)
        load["load_ns"], load["tag"] = load_ns, tag
        if prog_id in self.gone:
            self._gone(prog_id, load)

    def program_unloaded(self, prog_id: int, unload_ns: int) -> None:
        """BPF_EVENT(PROG_UNLOAD) at unload_ns; kept aside when it arrives before the
        program's load record or capture (the rings are read one after another)."""
        load = self.live.pop(prog_id, None)
        if load is None:
            if prog_id not in self.gone:
                # read before its load record or capture (rings are read one after
                # another), or loaded before the store began and never seen alive
                self.early_unloads[prog_id] = unload_ns
                while len(self.early_unloads) > 4096:
                    self.early_unloads.popitem(last=False)
            return
        self._touch(load)["unload_ns"] = unload_ns
        self._gone(prog_id, load)

    def program_failed(self, prog_id: int, tag: bytes, reason: str) -> None:
        """The program could not be captured, for `reason`; ignored once it was."""
        load = self._find(prog_id) or self._load_row(prog_id, tag)
        if load["image"] is None:
            self._touch(load)["reason"] = reason

    def _captured(self, prog_id: int, tag: bytes, image_id: int, info_id: int,
                  addrs: list[int], capture_ns, method, fields: dict, map_ids) -> None:
        load = self._load_row(prog_id, tag)
        load.update(image=image_id, info=info_id, tag=tag, capture_ns=capture_ns,
                    method=method, reason=None,
                    addrs=struct.pack(f"<{len(addrs)}Q", *addrs),
                    load_time=fields.get("load_time"), uid=fields.get("created_by_uid"),
                    btf_id=fields.get("btf_id"),
                    map_ids=struct.pack(f"<{len(map_ids)}I", *map_ids))
        if prog_id in self.gone:
            self._gone(prog_id, load)
        if self.max_bytes and self.added > BURST * self.max_bytes:
            self.commit()  # and see to the budget: a burst must not overrun it mid-round

    def program_captured(self, info: ProgInfo, btf: bytes | None, method: str,
                         capture_ns: int | None, ksyms: list[str],
                         quick_key: tuple | None = None) -> int:
        """A program's capture: its image found or stored, its load row completed.
        `quick_key`, when given, remembers the result for `program_captured_again`.
        Returns the image's row id."""
        btf_digest = self._btf(info.info.get("btf_id", 0), btf)
        image_id = self._image(info, btf_digest)
        info_id = self._info(info, ksyms)
        funcs = info.funcs()
        self._captured(info.id, info.tag, image_id, info_id, [a for a, _, _ in funcs],
                       capture_ns, method, info.info, info.map_ids)
        if quick_key is not None and not info.jited_line_info:
            norm = self.cache.get((self._last_rest, tuple(n for _a, n, _c in funcs)))
            if norm is not None:
                self.quick[quick_key] = (image_id, info_id, norm[1])
                if len(self.quick) > _CACHE:
                    self.quick.popitem(last=False)
        return image_id

    def program_captured_again(self, quick_key: tuple, prog_id: int, tag: bytes,
                               funcs: list[tuple[int, bytes]], btf_id: int,
                               capture_ns: int | None, method: str) -> bool:
        """The fast path for a program captured before (the same `quick_key`: everything
        but its JIT bytes and addresses, e.g. the capture program's raw blobs): True if its
        image still holds and this load's bytes are that image placed at `funcs`."""
        hit = self.quick.get(quick_key)
        if hit is None:
            return False
        image_id, info_id, norm = hit
        if len(norm.code) != len(funcs) or \
                rebuild(norm, [a for a, _ in funcs]) != [c for _, c in funcs] or \
                self._evicted(image_id):
            del self.quick[quick_key]
            return False
        self.stats["fast_path"] += 1
        self._captured(prog_id, tag, image_id, info_id, [a for a, _ in funcs], capture_ns,
                       method, {"btf_id": btf_id}, ())
        return True

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
        rest = self._last_rest = rest_digest(info, btf_digest)
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
            self._store_code(image_id, form)
            self._x("UPDATE images SET evicted=0 WHERE id=?", (image_id,))
        else:
            image_id = self._x(
                "INSERT INTO images(digest, tag, func_lens, prog_tags, btf, bytes) "
                "VALUES(?,?,?,?,?,?)", (form.digest, form.tag, form.func_lens,
                                        form.prog_tags, form.btf, form.size)).lastrowid
            self._store_code(image_id, form)
            self.stats["new_images"] += 1
            self.added += form.size
        self.cache[key] = (image_id, form.norm)
        if len(self.cache) > _CACHE:
            self.cache.popitem(last=False)
        return image_id

    def _store_code(self, image_id: int, form) -> None:
        self._x("INSERT OR REPLACE INTO image_code VALUES(?,?,?,?,?,?,?)",
                (image_id, form.code, form.norm.pack_relocs(), form.xlated, form.func_info,
                 form.line_info, form.jited_line_info))

    def _evicted(self, image_id: int) -> bool:
        """Whether a cached image was evicted since (and so must be stored again)."""
        if not self.evictions:
            return False  # nothing was ever evicted by this writer or found so
        row = self.con.execute("SELECT evicted FROM images WHERE id=?", (image_id,)).fetchone()
        return bool(row and row[0])

    # --- other code ---------------------------------------------------------------------
    def ool_registered(self, addr: int, n: int, name: str, ksym_type: int, ns: int,
                       code: bytes | None, code_ns: int | None) -> None:
        """KSYMBOL registering out-of-line code at `ns`, with its bytes when they were read
        (at code_ns)."""
        self._x("INSERT INTO ool(boot, addr, len, name, ksym_type, reg_ns, code, code_ns) "
                "VALUES(?,?,?,?,?,?,?,?)", (self.boot, s64(addr), n, name, ksym_type, ns,
                                            code, code_ns))

    def ool_unregistered(self, addr: int, name: str, ns: int) -> None:
        """KSYMBOL unregistering out-of-line code: closes the newest open row at addr."""
        self._x("UPDATE ool SET unreg_ns=? WHERE id=(SELECT MAX(id) FROM ool WHERE boot=? "
                "AND addr=? AND name=? AND unreg_ns IS NULL)", (ns, self.boot, s64(addr), name))

    def poke(self, time_ns: int, addr: int, old: bytes, new: bytes, *, reported: bool = True,
             after_ns: int | None = None, prog_id: int | None = None) -> None:
        """A code change at kernel virtual address `addr`: a TEXT_POKE (`reported`), or one
        the daemon found, known to lie in (after_ns, time_ns]."""
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
        # in steps of at most STEP of the budget, the log emptied around each vacuum: the
        # pages a step rewrites pass through the log, which counts against the budget too
        for _round in range(int(1 / STEP) * 2):
            excess = self.disk_bytes() - LOW_WATER * self.max_bytes
            if excess <= 0:
                break
            victims = self._victims(min(excess, STEP * self.max_bytes))
            if not victims:
                break
            self.con.execute("BEGIN")
            freed = 0
            for kind, row_id, size in victims:
                if kind == "image":
                    self.con.execute("DELETE FROM image_code WHERE image=?", (row_id,))
                    self.con.execute("UPDATE images SET evicted=1 WHERE id=?", (row_id,))
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
            self.evictions = True
            self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            # to completion: through execute() each step frees one page
            self.con.executescript("PRAGMA incremental_vacuum;")
            self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.stats["evicted"] += evicted
        self.cache.clear()
        self.quick.clear()
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
